"""OpenAI-SDK conformance, accounts and lifecycle: a top-up lifts an account to the trusted tier at
once and once per payment reference, test keys are served without touching the wallet, and
SIGTERM lets an in-flight stream finish before the process exits 0.
"""

from __future__ import annotations

import socket

import openai
import pytest

from error_cases import error_case
from gateway_harness import SDK_TIMEOUT_S, Gateway, RequestCounter, Tenant, make_tenant, nanos_to_usd, usd_to_nanos
from sdk_checks import (
    CHAT,
    MESSAGES,
    MODEL,
    UNVERIFIED_RPM,
    UNVERIFIED_TPM,
    assert_rate_headers,
    exhaust_rpm,
    expect_case,
    flash_cost,
)


# ----- 5. top-up ----------------------------------------------------------------------------------


def test_topup_moves_account_to_trusted_once_per_reference(tenant: Tenant):
    """An unverified account is limited at 30 RPM; a 1300 KES top-up (130 KES/USD) credits exactly
    10 USD and makes it trusted; the same payment reference again is a duplicate that credits
    nothing; the next request is admitted at once under the trusted limit (100 RPM)."""
    gateway = tenant.gateway
    exhaust_rpm(gateway, tenant.key)
    case = error_case("rpm_exhausted")
    client = case.client(gateway, tenant.key, max_retries=0)
    expect_case(gateway, case, client, tenant.key)
    before = gateway.settled_account(tenant.account_id)
    assert before["tier"] == "unverified" and before["held_usd"] == "0.000000000"
    expected = nanos_to_usd(usd_to_nanos(before["balance_usd"]) + 10_000_000_000)

    first = gateway.topup(tenant.account_id, "1300", "KES", "MPESA-ABC123")
    assert first == {"balance_usd": expected, "tier": "trusted", "duplicate": False}
    assert tenant.account()["balance_usd"] == expected
    again = gateway.topup(tenant.account_id, "1300", "KES", "MPESA-ABC123")
    assert again == {"balance_usd": expected, "tier": "trusted", "duplicate": True}
    account = tenant.account()
    assert (account["tier"], account["balance_usd"]) == ("trusted", expected)

    with RequestCounter(gateway) as seen:
        raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    assert seen.diff == {(CHAT, "200"): 1}
    assert raw.parse().model == MODEL
    assert raw.headers["x-ratelimit-limit-requests"] == "100"
    assert_rate_headers(raw.headers, limit_requests=100, limit_tokens=160000)


# ----- 6. test keys -------------------------------------------------------------------------------


def test_test_keys_work_and_never_touch_the_wallet(gateway: Gateway):
    """A fk_test_ key is served (unary and stream) even when its account cannot pay for a live
    request, always with unverified limits, and never changes the balance or holds anything,
    before or after the account becomes trusted."""
    poor = make_tenant(gateway, signup_credit_usd="0.000001")
    test_key = gateway.create_key(poor.account_id, kind="test")
    assert test_key["key"].startswith("fk_test_") and len(test_key["key"]) == 40
    assert poor.key.startswith("fk_live_") and len(poor.key) == 40
    with pytest.raises(openai.APIStatusError) as info:
        poor.client().chat.completions.create(model=MODEL, messages=MESSAGES)
    assert info.value.status_code == 402

    test_client = poor.client(key=test_key["key"])
    with RequestCounter(gateway) as seen:
        raw = test_client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    assert seen.diff == {(CHAT, "200"): 1}
    completion = raw.parse()
    assert completion.model == MODEL and completion.choices[0].message.content
    assert_rate_headers(raw.headers, limit_requests=UNVERIFIED_RPM, limit_tokens=UNVERIFIED_TPM)
    chunks = list(test_client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == completion.choices[0].message.content
    account = gateway.settled_account(poor.account_id)
    assert (account["balance_usd"], account["held_usd"]) == ("0.000001000", "0.000000000")

    topped = gateway.topup(poor.account_id, "2.5", "USD", "CARD-TESTKEYS-1")
    assert topped == {"balance_usd": "2.500001000", "tier": "trusted", "duplicate": False}
    live = poor.client().chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    assert live.headers["x-ratelimit-limit-requests"] == "100"
    live_usage = live.parse().usage
    live_cost = flash_cost(live_usage.prompt_tokens, live_usage.completion_tokens)
    after_live = gateway.settled_account(poor.account_id)
    assert after_live["balance_usd"] == nanos_to_usd(2_500_001_000 - live_cost)

    raw = test_client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    assert raw.parse().model == MODEL
    assert raw.headers["x-ratelimit-limit-requests"] == str(UNVERIFIED_RPM)
    assert_rate_headers(raw.headers, limit_requests=UNVERIFIED_RPM, limit_tokens=UNVERIFIED_TPM)
    account = gateway.settled_account(poor.account_id)
    assert (account["balance_usd"], account["held_usd"]) == (after_live["balance_usd"], "0.000000000")


# ----- 7. graceful shutdown -----------------------------------------------------------------------


@pytest.fixture
def slow_gateway(tmp_path_factory):
    """A second gateway whose sandbox streams 20 tokens at 20 tokens/s (a one-second stream)."""
    gw = Gateway(tmp_path_factory.mktemp("slow"), name="slow-gateway", tokens_per_second=20, output_tokens=20).start()
    try:
        yield gw
    finally:
        gw.kill()
        gw.admin.close()


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def test_sigterm_lets_an_in_flight_stream_finish_then_exits_0(slow_gateway: Gateway):
    """SIGTERM during a stream: the gateway stops accepting new connections while the stream is
    still running, the stream still delivers all 20 content chunks, the finish reason and the
    usage chunk, and then the process exits 0 within 10 s."""
    gateway = slow_gateway
    account = gateway.create_account()
    key = gateway.create_key(account["id"])["key"]
    client = openai.OpenAI(base_url=gateway.base_url, api_key=key, timeout=SDK_TIMEOUT_S, max_retries=0)
    stream = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    content = []
    finish_reasons = []
    usage = None
    after_sigterm = 0
    signalled = False
    refused_during_stream = False
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices:
            if chunk.choices[0].delta.content:
                content.append(chunk.choices[0].delta.content)
                if signalled:
                    after_sigterm += 1
                    if not refused_during_stream and len(content) < 20:
                        refused_during_stream = not accepts_connections(gateway.port)
                else:
                    gateway.terminate()
                    signalled = True
            if chunk.choices[0].finish_reason:
                finish_reasons.append(chunk.choices[0].finish_reason)
    assert signalled
    assert len(content) == 20, content
    assert after_sigterm == 19
    assert finish_reasons == ["stop"]
    assert usage is not None and usage.completion_tokens == 20
    assert refused_during_stream, "the gateway still accepted new connections after SIGTERM, while draining"
    code = gateway.wait_exit(10.0)
    assert code == 0, f"exit code {code} after SIGTERM:\n{gateway.log_tail()}"


# ----- the key holder's own account (SPEC §8.2) ---------------------------------------------------


def test_own_account_usage_and_cost_through_the_sdk(tenant: Tenant):
    """`client.get("/account", cast_to=object)` gives the key holder's account in the SPEC §8.2
    shape; a unary answer's `x-fikra-cost-usd` is exactly what the ledger charged, and the account
    and `/usage` read through the SDK show that charge."""
    client = tenant.client(max_retries=0)
    before = client.get("/account", cast_to=object)
    assert before == {
        "object": "account",
        "id": tenant.account_id,
        "tier": "unverified",
        "balance_usd": "1.000000000",
        "held_usd": "0.000000000",
        "available_usd": "1.000000000",
        "limits": {"rpm": UNVERIFIED_RPM, "tpm": UNVERIFIED_TPM},
        "key": {
            "id": tenant.key_id,
            "kind": "live",
            "name": None,
            "spend_cap_usd": None,
            "spend_cap_period": None,
            "spent_usd": "0.000000000",
            "held_usd": "0.000000000",
        },
    }

    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    usage = raw.parse().usage
    cost_nanos = flash_cost(usage.prompt_tokens, usage.completion_tokens)
    assert raw.headers["x-fikra-cost-usd"] == nanos_to_usd(cost_nanos)

    left = nanos_to_usd(1_000_000_000 - cost_nanos)
    after = client.get("/account", cast_to=object)
    assert (after["balance_usd"], after["held_usd"], after["available_usd"]) == (left, "0.000000000", left)
    # The uncapped key shows its lifetime spend: this one answer.
    assert (after["key"]["spent_usd"], after["key"]["held_usd"]) == (nanos_to_usd(cost_nanos), "0.000000000")
    listing = client.get("/usage", cast_to=object, options={"params": {"limit": 1}})
    assert listing["object"] == "list"
    assert listing["data"] == tenant.gateway.usage(tenant.account_id, limit=1)
    assert len(listing["data"]) == 1 and listing["data"][0]["cost_usd"] == nanos_to_usd(cost_nanos)
