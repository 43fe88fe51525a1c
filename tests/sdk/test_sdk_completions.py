"""OpenAI-SDK conformance, answers: the official `openai` Python package, pointed at fikra-gateway
by changing only its base URL, gets unary and streamed completions and the model list exactly as
from api.openai.com, each billed to the nano-dollar.

Each test states its goal in its docstring. The server side of every claim is checked too:
balances and ledgers through the admin API (integer nano-USD, no floats), and "how many times
did the SDK send it" through `fikra_requests_total` on /metrics, read before and after the call.
"""

from __future__ import annotations

import time
from decimal import Decimal

import openai

from error_cases import error_case
from gateway_harness import SDK_TIMEOUT_S, Gateway, RequestCounter, Tenant, nanos_to_usd, usd_to_nanos
from sdk_checks import (
    CHAT,
    MESSAGES,
    MODEL,
    REFERENCE_REGISTRY,
    SANDBOX_OUTPUT_TOKENS,
    UNVERIFIED_RPM,
    UNVERIFIED_TPM,
    assert_rate_headers,
    expect_case,
    flash_cost,
)


# ----- 1. unary ----------------------------------------------------------------------------------


def test_unary_completion_is_billed_exactly_and_ledgered(tenant: Tenant):
    """A unary completion through the SDK returns the public model id, consistent usage and
    content; the wallet drops by exactly (prompt + completion) x 500 nano-USD; the ledger holds
    one `completed` record with that cost whose request id is the response's x-request-id; the
    seven rate headers are present, canonical, and show one request taken from a full bucket."""
    gateway = tenant.gateway
    before = tenant.account()
    assert before["balance_usd"] == "1.000000000" and before["held_usd"] == "0.000000000", before
    assert before["tier"] == "unverified", before

    with RequestCounter(gateway) as seen:
        raw = tenant.client().chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    completion = raw.parse()
    assert seen.diff == {(CHAT, "200"): 1}
    assert raw.status_code == 200
    assert raw.headers["content-type"] == "application/json"

    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content.strip()
    assert choice.finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens == SANDBOX_OUTPUT_TOKENS
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    rates = assert_rate_headers(raw.headers, limit_requests=UNVERIFIED_RPM, limit_tokens=UNVERIFIED_TPM)
    assert rates["remaining_requests"] == UNVERIFIED_RPM - 1
    # One request out of a 30/min bucket refills in exactly 2 s.
    assert rates["reset_requests_ms"] == 2000, raw.headers["x-ratelimit-reset-requests"]
    # TPM is charged at admission with at least the content bytes plus the 8192-token output cap.
    content_bytes = len(MESSAGES[0]["content"].encode())
    assert rates["remaining_tokens"] <= UNVERIFIED_TPM - content_bytes - 8192, dict(raw.headers)

    cost = flash_cost(usage.prompt_tokens, usage.completion_tokens)
    after = gateway.settled_account(tenant.account_id)
    assert after["held_usd"] == "0.000000000", after
    assert usd_to_nanos(before["balance_usd"]) - usd_to_nanos(after["balance_usd"]) == cost, (before, after, cost)
    assert after["balance_usd"] == nanos_to_usd(1_000_000_000 - cost)

    records = gateway.usage_records(tenant.account_id, 1)
    assert len(records) == 1, records
    record = records[0]
    assert record["request_id"] == raw.headers["x-request-id"], (record, dict(raw.headers))
    assert record["key_id"] == tenant.key_id
    assert record["model"] == MODEL
    assert (record["prompt_tokens"], record["completion_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)
    assert record["cost_usd"] == nanos_to_usd(cost)
    assert record["outcome"] == "completed"
    assert isinstance(record["created_at"], int) and abs(record["created_at"] - time.time()) < 120, record


# ----- 2. streaming -------------------------------------------------------------------------------


def test_streaming_matches_unary_and_usage_chunk_only_on_request(tenant: Tenant):
    """A stream through the SDK delivers the same text as the unary answer to the same prompt
    (the sandbox is deterministic), one chunk per token; with stream_options.include_usage the
    last chunk (and only it) carries usage equal to the unary usage and has no choices; without
    it no chunk carries usage. All three requests are billed at exactly the same cost."""
    gateway = tenant.gateway
    client = tenant.client()
    unary = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    expected_text = unary.choices[0].message.content
    assert expected_text

    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    assert raw.headers["content-type"].startswith("text/event-stream"), dict(raw.headers)
    assert_rate_headers(raw.headers, limit_requests=UNVERIFIED_RPM, limit_tokens=UNVERIFIED_TPM)
    stream_request_id = raw.headers["x-request-id"]
    chunks = list(raw.parse())
    assert chunks, "no chunks"
    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"}
    assert {chunk.model for chunk in chunks} == {MODEL}
    assert len({chunk.id for chunk in chunks}) == 1, [chunk.id for chunk in chunks]
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) == SANDBOX_OUTPUT_TOKENS
    text = "".join(c.choices[0].delta.content for c in content_chunks)
    assert text == expected_text
    finish_reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish_reasons == ["stop"]
    with_usage = [index for index, chunk in enumerate(chunks) if chunk.usage is not None]
    assert with_usage == [len(chunks) - 1], f"usage on chunks {with_usage} of {len(chunks)}"
    last = chunks[-1]
    assert last.choices == []
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (
        unary.usage.prompt_tokens,
        unary.usage.completion_tokens,
        unary.usage.total_tokens,
    )

    plain = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    assert [chunk.usage for chunk in plain if chunk.usage is not None] == []
    assert "".join(c.choices[0].delta.content or "" for c in plain if c.choices) == expected_text

    cost = flash_cost(unary.usage.prompt_tokens, unary.usage.completion_tokens)
    records = gateway.usage_records(tenant.account_id, 3)
    assert len(records) == 3, records
    assert [(r["cost_usd"], r["outcome"], r["model"]) for r in records] == [(nanos_to_usd(cost), "completed", MODEL)] * 3
    assert records[1]["request_id"] == stream_request_id, records  # newest first
    after = gateway.settled_account(tenant.account_id)
    assert after["held_usd"] == "0.000000000"
    assert after["balance_usd"] == nanos_to_usd(1_000_000_000 - 3 * cost)


# ----- 3. models ----------------------------------------------------------------------------------


def test_models_list_and_retrieve(tenant: Tenant):
    """models.list() returns exactly the seven reference models with their prices;
    models.retrieve() returns the same entry; an unknown id raises NotFoundError (404,
    model_not_found, param "model") after exactly one request."""
    gateway = tenant.gateway
    client = tenant.client()
    with RequestCounter(gateway) as seen:
        raw = client.models.with_raw_response.list()
    assert seen.diff == {("/v1/models", "200"): 1}
    assert_rate_headers(raw.headers, limit_requests=UNVERIFIED_RPM, limit_tokens=UNVERIFIED_TPM)
    models = list(raw.parse())
    ids = [model.id for model in models]
    assert sorted(ids) == sorted(REFERENCE_REGISTRY), ids
    entries = {}
    for model in models:
        entry = model.to_dict()
        entries[model.id] = entry
        assert entry["object"] == "model"
        assert entry["owned_by"] == "fikra"
        assert isinstance(entry["created"], int)
        pricing = entry["pricing"]
        assert sorted(pricing) == ["input", "output", "unit"], entry
        assert pricing["unit"] == "USD_PER_1M_TOKENS"
        expected_in, expected_out = REFERENCE_REGISTRY[model.id]
        assert (Decimal(str(pricing["input"])), Decimal(str(pricing["output"]))) == (
            Decimal(expected_in),
            Decimal(expected_out),
        ), entry

    with RequestCounter(gateway) as seen:
        flash = client.models.retrieve(MODEL)
    assert seen.diff == {("/v1/models/{id}", "200"): 1}
    assert flash.to_dict() == entries[MODEL]

    case = error_case("retrieve_unknown_model")
    assert case.route == "/v1/models/{id}"
    expect_case(gateway, case, client, tenant.key)


def test_account_override_limits_show_in_headers(gateway: Gateway):
    """The [[account_overrides]] entry for account "bulk" replaces its tier's limits, and the
    rate headers report the override (100000 RPM, 100000000 TPM)."""
    gateway.create_account(account_id="bulk")
    key = gateway.create_key("bulk")["key"]
    client = openai.OpenAI(base_url=gateway.base_url, api_key=key, timeout=SDK_TIMEOUT_S)
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    assert raw.parse().model == MODEL
    rates = assert_rate_headers(raw.headers, limit_requests=100000, limit_tokens=100000000)
    assert rates["remaining_requests"] == 100000 - 1
