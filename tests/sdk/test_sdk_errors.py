"""OpenAI-SDK conformance, errors: for each SPEC §2 row the official `openai` package meets, the
exception class, its fields, the headers, and exactly how often the SDK sent the request
(counted by the server's `fikra_requests_total`), including its retries and their waits.

The cases (request and expected answer) are those of tests/cases/errors.json, which
tests/api_errors.rs drives too; each test arranges a case's `given` and adds what only the SDK
shows (retry timing, request ids, the rate headers' values).
"""

from __future__ import annotations

import math
import re
import time

import httpx2
import openai
import pytest

from error_cases import error_case
from gateway_harness import Gateway, RequestCounter, Tenant, make_tenant, wait_until
from sdk_checks import (
    CHAT,
    MESSAGES,
    MODEL,
    UNVERIFIED_RPM,
    UNVERIFIED_TPM,
    assert_rate_headers,
    exhaust_rpm,
    expect_case,
)


def test_400_model_not_found_suggests_closest_id(tenant: Tenant):
    """A misspelt model is a 400 BadRequestError (model_not_found, param "model") whose message
    suggests "fikra-flash"; the SDK does not retry it; the rate headers show nothing consumed."""
    case = error_case("model_not_found")
    error = expect_case(tenant.gateway, case, case.client(tenant.gateway, tenant.key), tenant.key)
    rates = assert_rate_headers(error.response.headers, limit_requests=UNVERIFIED_RPM, limit_tokens=UNVERIFIED_TPM)
    assert (rates["remaining_requests"], rates["remaining_tokens"]) == (UNVERIFIED_RPM, UNVERIFIED_TPM)
    assert error.request_id == error.response.headers["x-request-id"]


def test_400_invalid_temperature(tenant: Tenant):
    """temperature 3.5 (allowed 0.0-2.0) is a 400 BadRequestError, invalid_parameter, param
    "temperature", sent exactly once."""
    case = error_case("temperature_out_of_range")
    assert case.body["temperature"] == 3.5
    error = expect_case(tenant.gateway, case, case.client(tenant.gateway, tenant.key), tenant.key)
    assert_rate_headers(error.response.headers, limit_requests=UNVERIFIED_RPM, limit_tokens=UNVERIFIED_TPM)


def test_400_missing_messages(tenant: Tenant):
    """A request without `messages` is a 400 BadRequestError, missing_required_parameter, param
    "messages", sent exactly once."""
    case = error_case("missing_messages")
    assert "messages" not in case.body
    error = expect_case(tenant.gateway, case, case.client(tenant.gateway, tenant.key), tenant.key)
    assert_rate_headers(error.response.headers, limit_requests=UNVERIFIED_RPM, limit_tokens=UNVERIFIED_TPM)


def test_401_unknown_well_formed_key(gateway: Gateway):
    """A well-formed but unknown live key is a 401 AuthenticationError (invalid_api_key, param
    null), not retried, and the message never echoes the key."""
    case = error_case("unknown_live_key")
    key = case.key_sent("")
    assert key.startswith("fk_live_") and len(key) == 40
    expect_case(gateway, case, case.client(gateway, key), key)


def test_401_revoked_key(tenant: Tenant):
    """A key that worked and was then revoked is a 401 AuthenticationError with code
    revoked_api_key (SPEC: revocation takes effect within 1 s), sent exactly once."""
    case = error_case("revoked_key")
    client = case.client(tenant.gateway, tenant.key)
    assert client.chat.completions.create(model=MODEL, messages=MESSAGES).model == MODEL
    revoked = tenant.gateway.revoke_key(tenant.key_id)
    assert revoked["key_id"] == tenant.key_id
    # Within 1 s every worker refuses the key (a bounded poll, before the counted SDK call).
    with httpx2.Client(base_url=tenant.gateway.base_url, headers={"Authorization": f"Bearer {tenant.key}"}) as http:

        def refused() -> bool:
            return http.post("/chat/completions", json={"model": MODEL, "messages": MESSAGES}).status_code == 401

        assert wait_until(1.0, refused), "the revoked key was still served 1 s after its revocation"
    expect_case(tenant.gateway, case, client, tenant.key)


def test_401_foreign_garbage_key(gateway: Gateway):
    """An OpenAI-style "sk-..." key is a 401 AuthenticationError (invalid_api_key), sent exactly
    once, and the message does not echo it."""
    case = error_case("foreign_key")
    key = case.key_sent("")
    assert key.startswith("sk-proj-")
    expect_case(gateway, case, case.client(gateway, key), key)


def test_402_insufficient_quota_is_plain_api_status_error(gateway: Gateway):
    """An account with 0.000001 USD cannot pay even a minimal answer: 402 billing_error /
    insufficient_quota, which openai-python raises as a plain APIStatusError (no subclass); the
    response says x-should-retry: false so the SDK sends it exactly once; the message gives the
    balance and says to top up by M-Pesa or card; nothing is held, charged or ledgered."""
    poor = make_tenant(gateway, signup_credit_usd="0.000001")
    assert poor.account()["balance_usd"] == "0.000001000"
    case = error_case("insufficient_quota")
    error = expect_case(gateway, case, case.client(gateway, poor.key), poor.key)
    assert_rate_headers(error.response.headers, limit_requests=UNVERIFIED_RPM, limit_tokens=UNVERIFIED_TPM)
    message = error.body["message"]
    assert "0.000001" in message, message
    account = poor.account()
    assert (account["balance_usd"], account["held_usd"]) == ("0.000001000", "0.000000000")
    assert gateway.usage(poor.account_id) == []


def test_404_base_url_without_v1(tenant: Tenant):
    """A client whose base URL lacks /v1 gets a 404 NotFoundError (unknown_endpoint) whose message
    points at the missing '/v1', sent exactly once."""
    case = error_case("missing_v1_prefix")
    client = case.client(tenant.gateway, tenant.key)
    assert str(client.base_url).rstrip("/") == tenant.gateway.root_url
    expect_case(tenant.gateway, case, client, tenant.key)


def test_429_rpm_exhausted_headers_and_message(tenant: Tenant):
    """After 30 quick requests an unverified account's 31st is a 429 RateLimitError
    (rate_limit_exceeded) with the SPEC message, retry-after / retry-after-ms that agree,
    x-should-retry: true and x-ratelimit-remaining-requests: 0 (max_retries=0: sent once)."""
    exhaust_rpm(tenant.gateway, tenant.key)
    case = error_case("rpm_exhausted")
    error = expect_case(tenant.gateway, case, case.client(tenant.gateway, tenant.key, max_retries=0), tenant.key)
    headers = error.response.headers
    retry_after_ms = int(headers["retry-after-ms"])
    assert 1 <= retry_after_ms <= 2000, retry_after_ms
    assert headers["retry-after"] == str(min(60, max(1, math.ceil(retry_after_ms / 1000))))
    rates = assert_rate_headers(headers, limit_requests=UNVERIFIED_RPM, limit_tokens=UNVERIFIED_TPM)
    assert rates["reset_requests_ms"] > 58_000  # nearly a whole minute to refill 30
    match = re.fullmatch(
        r"Rate limit reached for requests per min \(RPM\): Limit 30, Used 30, Requested 1\. "
        r"Please try again in (\d+(?:\.\d{1,3})?)s\.",
        error.body["message"],
    )
    assert match, error.body["message"]
    assert round(float(match.group(1)) * 1000) == retry_after_ms


def test_429_sdk_retries_exactly_twice_then_raises(tenant: Tenant):
    """With the default client (2 retries), a 429 with x-should-retry: true is sent exactly three
    times, each waiting retry-after-ms, then RateLimitError is raised. The bucket refills one
    request every 2 s, so right before each retry a second key of the same account takes the
    refilled request: each of the SDK's three attempts meets an empty bucket."""
    gateway = tenant.gateway
    drain_key = gateway.create_key(tenant.account_id)["key"]
    exhaust_rpm(gateway, drain_key)
    drained = {"200": 0, "429": 0}
    attempts = []
    drain = httpx2.Client(base_url=gateway.base_url, headers={"Authorization": f"Bearer {drain_key}"}, timeout=10)

    def empty_the_bucket() -> None:
        # Take every whole request the bucket holds until it answers 429 with >= 300 ms to wait.
        while True:
            response = drain.post("/chat/completions", json={"model": MODEL, "messages": MESSAGES, "max_tokens": 1})
            drained[str(response.status_code)] += 1
            if response.status_code == 429:
                wait_ms = int(response.headers["retry-after-ms"])
                if wait_ms >= 300:
                    return
                time.sleep(wait_ms / 1000)

    def on_request(request) -> None:
        if request.url.path.endswith("/chat/completions"):
            attempts.append(time.monotonic())
            if len(attempts) > 1:
                empty_the_bucket()

    http_client = httpx2.Client(event_hooks={"request": [on_request]})
    client = tenant.client(http_client=http_client)
    assert client.max_retries == 2
    try:
        started = time.monotonic()
        with RequestCounter(gateway) as seen:
            with pytest.raises(openai.APIStatusError) as info:
                client.chat.completions.create(model=MODEL, messages=MESSAGES)
        elapsed = time.monotonic() - started
    finally:
        drain.close()
        http_client.close()
    error_case("rpm_exhausted").check(info.value, tenant.key)
    assert len(attempts) == 3, f"the SDK sent {len(attempts)} attempts"
    # The server saw the SDK's three 429s plus what the drain key sent, and nothing else.
    expected = {(CHAT, "429"): 3 + drained["429"]}
    if drained["200"]:
        expected[(CHAT, "200")] = drained["200"]
    assert seen.diff == expected, (seen.diff, drained)
    # The second retry waited for a whole refill (about 2 s), as its 429's retry-after-ms asked.
    assert elapsed >= 1.9, elapsed


def test_429_retry_after_is_honest_so_the_first_retry_succeeds(tenant: Tenant):
    """retry-after-ms is the real time until the RPM bucket holds a request again (rounded up):
    with the default client, the 31st request gets one 429, the SDK waits exactly retry-after-ms,
    and its first retry is admitted (server: one 429, one 200; the call succeeds)."""
    gateway = tenant.gateway
    exhaust_rpm(gateway, tenant.key)
    responses = []
    attempts = []

    def on_request(request) -> None:
        attempts.append(time.monotonic())

    def on_response(response) -> None:
        responses.append((time.monotonic(), response.status_code, dict(response.headers)))

    http_client = httpx2.Client(event_hooks={"request": [on_request], "response": [on_response]})
    try:
        with RequestCounter(gateway) as seen:
            completion = tenant.client(http_client=http_client).chat.completions.create(model=MODEL, messages=MESSAGES)
    finally:
        http_client.close()
    assert completion.model == MODEL
    assert seen.diff == {(CHAT, "429"): 1, (CHAT, "200"): 1}, seen.diff
    assert [status for _, status, _ in responses] == [429, 200]
    first_429_at, _, headers = responses[0]
    assert headers["x-should-retry"] == "true"
    wait_ms = int(headers["retry-after-ms"])
    assert 1 <= wait_ms <= 2000
    assert attempts[1] - first_429_at >= wait_ms / 1000 - 0.005


def test_429_request_larger_than_tpm_is_not_retried(tenant: Tenant):
    """A request whose ~45,000-byte message alone exceeds the 40,000 TPM bucket is a 429
    RateLimitError (rate_limit_exceeded) with x-should-retry: false, so the SDK sends it exactly
    once; being denied, it consumes nothing from either bucket."""
    case = error_case("request_larger_than_tpm")
    assert len(case.body["messages"][0]["content"].encode()) == 45000
    error = expect_case(tenant.gateway, case, case.client(tenant.gateway, tenant.key), tenant.key)
    rates = assert_rate_headers(error.response.headers, limit_requests=UNVERIFIED_RPM, limit_tokens=UNVERIFIED_TPM)
    assert (rates["remaining_requests"], rates["remaining_tokens"]) == (UNVERIFIED_RPM, UNVERIFIED_TPM)
    account = tenant.account()
    assert (account["balance_usd"], account["held_usd"]) == ("1.000000000", "0.000000000")


def test_503_maintenance_is_retried_twice(tenant: Tenant):
    """In maintenance mode (retry_after_s=1) a request is a 503 InternalServerError
    (service_unavailable, api_error) with retry-after: 1 and x-should-retry: true; the default
    client sends it exactly three times, waiting 1 s between attempts. Leaving maintenance
    restores service."""
    gateway = tenant.gateway
    case = error_case("maintenance")
    client = case.client(gateway, tenant.key)
    assert client.max_retries == 2
    try:
        assert gateway.set_maintenance(True, retry_after_s=1)["enabled"] is True
        started = time.monotonic()
        error = expect_case(gateway, case, client, tenant.key)
        elapsed = time.monotonic() - started
    finally:
        gateway.set_maintenance(False)
    headers = error.response.headers
    assert headers.get("retry-after-ms", "1000") == "1000"
    assert_rate_headers(headers, limit_requests=UNVERIFIED_RPM, limit_tokens=UNVERIFIED_TPM)
    assert elapsed >= 1.95, elapsed
    with RequestCounter(gateway) as seen:
        assert client.chat.completions.create(model=MODEL, messages=MESSAGES).model == MODEL
    assert seen.diff == {(CHAT, "200"): 1}


def test_503_maintenance_covers_the_models_list(tenant: Tenant):
    """Maintenance answers every client route, the models list included: `models.list()` gets
    the same retried 503 (with the caller's rate headers), and the list is back once it ends."""
    gateway = tenant.gateway
    case = error_case("maintenance_models")
    client = case.client(gateway, tenant.key)
    try:
        assert gateway.set_maintenance(True, retry_after_s=1)["enabled"] is True
        error = expect_case(gateway, case, client, tenant.key)
    finally:
        gateway.set_maintenance(False)
    assert_rate_headers(error.response.headers, limit_requests=UNVERIFIED_RPM, limit_tokens=UNVERIFIED_TPM)
    assert MODEL in [model.id for model in client.models.list().data]
