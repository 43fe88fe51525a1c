"""OpenAI-SDK conformance: the official `openai` Python package, pointed at fikra-gateway by
changing only its base URL, must behave exactly as it does against api.openai.com.

Each test states its goal in its docstring. The server side of every claim is checked too:
balances and ledgers through the admin API (integer nano-USD, no floats), and "how many times
did the SDK send it" through `fikra_requests_total` on /metrics, read before and after the call.
"""

from __future__ import annotations

import math
import re
import socket
import time
from decimal import Decimal

import httpx2
import openai
import pytest

from gateway_harness import (
    SDK_TIMEOUT_S,
    Gateway,
    RequestCounter,
    Tenant,
    make_tenant,
    nanos_to_usd,
    random_base62,
    usd_to_nanos,
)

CHAT = "/v1/chat/completions"
MODEL = "fikra-flash"
FLASH_NANOS_PER_TOKEN = 500  # 0.5 USD per 1M tokens, input and output (SPEC §3)
SANDBOX_OUTPUT_TOKENS = 16  # [sandbox] output_tokens of the module gateway
MESSAGES = [{"role": "user", "content": "Habari! Tell me about Nairobi."}]
RATE_HEADERS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
)
# SPEC §3's reference registry: id -> (input, output) USD per 1M tokens.
REFERENCE_REGISTRY = {
    "fikra-flash": ("0.5", "0.5"),
    "fikra-fast-8b": ("0.5", "0.5"),
    "fikra-pro-20b": ("2.0", "2.0"),
    "fikra-pro-120b": ("3.0", "3.0"),
    "fikra-qwen-max": ("5.0", "5.0"),
    "fikra-auto": ("2.0", "2.0"),
    "fikra-auto-pro": ("5.0", "5.0"),
}
UNVERIFIED_RPM = 30
UNVERIFIED_TPM = 40000


# ----- helpers ---------------------------------------------------------------------------------


def go_duration(ms: int) -> str:
    """Go's time.Duration.String() of a whole number of milliseconds."""
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    text = str(seconds) + ("." + f"{millis:03d}".rstrip("0") if millis else "") + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    if minutes:
        return f"{minutes}m{text}"
    return text


_DURATION = re.compile(r"^(?:(\d+)ms|(?:(\d+)h)?(?:(\d+)m)?(\d+)(?:\.(\d{1,3}))?s)$")


def parse_go_duration_ms(text: str) -> int:
    """Milliseconds of a reset header; fails unless it is Go's canonical spelling of whole ms."""
    match = _DURATION.match(text)
    assert match, f"not a Go-style duration of whole milliseconds: {text!r}"
    if match.group(1) is not None:
        ms = int(match.group(1))
    else:
        hours, minutes, seconds, fraction = match.group(2, 3, 4, 5)
        ms = int(hours or 0) * 3_600_000 + int(minutes or 0) * 60_000 + int(seconds) * 1000
        ms += int((fraction or "").ljust(3, "0") or 0)
    assert go_duration(ms) == text, f"reset header {text!r} is not canonical (Go writes {go_duration(ms)!r})"
    return ms


def assert_rate_headers(headers, *, limit_requests: int, limit_tokens: int) -> dict[str, int]:
    """The seven per-request headers of SPEC §1 are present and well-formed; returns them parsed."""
    assert re.fullmatch(r"[A-Za-z0-9_\-]{4,128}", headers.get("x-request-id", "")), dict(headers)
    for name in RATE_HEADERS:
        assert name in headers, f"missing {name}: {dict(headers)}"
    parsed = {
        "limit_requests": int(headers["x-ratelimit-limit-requests"]),
        "remaining_requests": int(headers["x-ratelimit-remaining-requests"]),
        "reset_requests_ms": parse_go_duration_ms(headers["x-ratelimit-reset-requests"]),
        "limit_tokens": int(headers["x-ratelimit-limit-tokens"]),
        "remaining_tokens": int(headers["x-ratelimit-remaining-tokens"]),
        "reset_tokens_ms": parse_go_duration_ms(headers["x-ratelimit-reset-tokens"]),
    }
    assert parsed["limit_requests"] == limit_requests, dict(headers)
    assert parsed["limit_tokens"] == limit_tokens, dict(headers)
    assert 0 <= parsed["remaining_requests"] <= limit_requests, dict(headers)
    assert 0 <= parsed["remaining_tokens"] <= limit_tokens, dict(headers)
    return parsed


def flash_cost(prompt_tokens: int, completion_tokens: int) -> int:
    return prompt_tokens * FLASH_NANOS_PER_TOKEN + completion_tokens * FLASH_NANOS_PER_TOKEN


def expect_api_error(
    gateway: Gateway,
    call,
    *,
    exc_class: type,
    status: int,
    code: str,
    error_type: str,
    param,
    route: str = CHAT,
    sent: int = 1,
    check_param: bool = True,
) -> openai.APIStatusError:
    """Runs `call`, which must raise exactly `exc_class` with this status/code/type/param after the
    server received it exactly `sent` times (all answered with `status`)."""
    with RequestCounter(gateway) as seen:
        with pytest.raises(openai.APIStatusError) as info:
            call()
    error = info.value
    assert type(error) is exc_class, f"SDK raised {type(error).__name__}, expected {exc_class.__name__}: {error!r}"
    assert error.status_code == status
    assert isinstance(error.body, dict), f"error body is not the JSON error object: {error.body!r}"
    assert sorted(error.body) == ["code", "message", "param", "type"], error.body
    assert isinstance(error.body["message"], str) and error.body["message"], error.body
    assert (error.code, error.type) == (code, error_type), error.body
    if check_param:
        assert error.param == param, error.body
    assert error.response.headers.get("content-type") == "application/json", dict(error.response.headers)
    assert seen.diff == {(route, str(status)): sent}, f"server counted {seen.diff}, expected {sent} x {status} on {route}"
    return error


def exhaust_rpm(gateway: Gateway, key: str, count: int = UNVERIFIED_RPM) -> None:
    """Spends `count` requests of the key's account quickly (raw HTTP, 1-token answers)."""
    with httpx2.Client(base_url=gateway.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as http:
        for index in range(count):
            response = http.post("/chat/completions", json={"model": MODEL, "messages": MESSAGES, "max_tokens": 1})
            assert response.status_code == 200, f"request {index + 1} of {count}: {response.status_code} {response.text}"


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

    error = expect_api_error(
        gateway,
        lambda: client.models.retrieve("fikra-nonexistent"),
        exc_class=openai.NotFoundError,
        status=404,
        code="model_not_found",
        error_type="invalid_request_error",
        param="model",
        route="/v1/models/{id}",
    )
    assert "fikra-nonexistent" in error.body["message"]


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


# ----- 4. errors: class, fields, and exactly how often the SDK sent it -----------------------------


def test_400_model_not_found_suggests_closest_id(tenant: Tenant):
    """A misspelt model is a 400 BadRequestError (model_not_found, param "model") whose message
    suggests "fikra-flash"; the SDK does not retry it; the rate headers show nothing consumed."""
    error = expect_api_error(
        tenant.gateway,
        lambda: tenant.client().chat.completions.create(model="fikra-flsh", messages=MESSAGES),
        exc_class=openai.BadRequestError,
        status=400,
        code="model_not_found",
        error_type="invalid_request_error",
        param="model",
    )
    assert "fikra-flsh" in error.body["message"]
    assert "fikra-flash" in error.body["message"]
    rates = assert_rate_headers(error.response.headers, limit_requests=UNVERIFIED_RPM, limit_tokens=UNVERIFIED_TPM)
    assert (rates["remaining_requests"], rates["remaining_tokens"]) == (UNVERIFIED_RPM, UNVERIFIED_TPM)
    assert error.request_id == error.response.headers["x-request-id"]


def test_400_invalid_temperature(tenant: Tenant):
    """temperature 3.5 (allowed 0.0-2.0) is a 400 BadRequestError, invalid_parameter, param
    "temperature", sent exactly once."""
    error = expect_api_error(
        tenant.gateway,
        lambda: tenant.client().chat.completions.create(model=MODEL, messages=MESSAGES, temperature=3.5),
        exc_class=openai.BadRequestError,
        status=400,
        code="invalid_parameter",
        error_type="invalid_request_error",
        param="temperature",
    )
    assert "temperature" in error.body["message"]
    assert_rate_headers(error.response.headers, limit_requests=UNVERIFIED_RPM, limit_tokens=UNVERIFIED_TPM)


def test_400_missing_messages(tenant: Tenant):
    """A request without `messages` is a 400 BadRequestError, missing_required_parameter, param
    "messages", sent exactly once."""
    error = expect_api_error(
        tenant.gateway,
        lambda: tenant.client().chat.completions.create(model=MODEL, messages=openai.omit),
        exc_class=openai.BadRequestError,
        status=400,
        code="missing_required_parameter",
        error_type="invalid_request_error",
        param="messages",
    )
    assert "messages" in error.body["message"]
    assert_rate_headers(error.response.headers, limit_requests=UNVERIFIED_RPM, limit_tokens=UNVERIFIED_TPM)


def test_401_unknown_well_formed_key(gateway: Gateway):
    """A well-formed but unknown live key is a 401 AuthenticationError (invalid_api_key, param
    null), not retried, and the message never echoes the key."""
    key = "fk_live_" + random_base62(32)
    client = openai.OpenAI(base_url=gateway.base_url, api_key=key, timeout=SDK_TIMEOUT_S)
    error = expect_api_error(
        gateway,
        lambda: client.chat.completions.create(model=MODEL, messages=MESSAGES),
        exc_class=openai.AuthenticationError,
        status=401,
        code="invalid_api_key",
        error_type="authentication_error",
        param=None,
    )
    assert key[8:] not in error.body["message"] and key[-12:] not in error.body["message"]


def test_401_revoked_key(tenant: Tenant):
    """A key that worked and was then revoked is a 401 AuthenticationError with code
    revoked_api_key (SPEC: revocation takes effect within 1 s), sent exactly once."""
    client = tenant.client()
    assert client.chat.completions.create(model=MODEL, messages=MESSAGES).model == MODEL
    revoked = tenant.gateway.revoke_key(tenant.key_id)
    assert revoked["key_id"] == tenant.key_id
    time.sleep(1.0)
    error = expect_api_error(
        tenant.gateway,
        lambda: client.chat.completions.create(model=MODEL, messages=MESSAGES),
        exc_class=openai.AuthenticationError,
        status=401,
        code="revoked_api_key",
        error_type="authentication_error",
        param=None,
    )
    assert tenant.key[8:] not in error.body["message"]


def test_401_foreign_garbage_key(gateway: Gateway):
    """An OpenAI-style "sk-..." key is a 401 AuthenticationError (invalid_api_key), sent exactly
    once, and the message does not echo it."""
    key = "sk-proj-" + random_base62(40)
    client = openai.OpenAI(base_url=gateway.base_url, api_key=key, timeout=SDK_TIMEOUT_S)
    error = expect_api_error(
        gateway,
        lambda: client.chat.completions.create(model=MODEL, messages=MESSAGES),
        exc_class=openai.AuthenticationError,
        status=401,
        code="invalid_api_key",
        error_type="authentication_error",
        param=None,
    )
    assert key not in error.body["message"] and key[8:] not in error.body["message"]


def test_402_insufficient_quota_is_plain_api_status_error(gateway: Gateway):
    """An account with 0.000001 USD cannot pay even a minimal answer: 402 billing_error /
    insufficient_quota, which openai-python raises as a plain APIStatusError (no subclass); the
    response says x-should-retry: false so the SDK sends it exactly once; the message gives the
    balance and says to top up by M-Pesa or card; nothing is held, charged or ledgered."""
    poor = make_tenant(gateway, signup_credit_usd="0.000001")
    assert poor.account()["balance_usd"] == "0.000001000"
    error = expect_api_error(
        gateway,
        lambda: poor.client().chat.completions.create(model=MODEL, messages=MESSAGES),
        exc_class=openai.APIStatusError,
        status=402,
        code="insufficient_quota",
        error_type="billing_error",
        param=None,
    )
    headers = error.response.headers
    assert headers["x-should-retry"] == "false"
    assert_rate_headers(headers, limit_requests=UNVERIFIED_RPM, limit_tokens=UNVERIFIED_TPM)
    message = error.body["message"]
    assert "0.000001" in message and "M-Pesa" in message and "card" in message, message
    account = poor.account()
    assert (account["balance_usd"], account["held_usd"]) == ("0.000001000", "0.000000000")
    assert gateway.usage(poor.account_id) == []


def test_404_base_url_without_v1(tenant: Tenant):
    """A client whose base URL lacks /v1 gets a 404 NotFoundError (unknown_endpoint) whose message
    points at the missing '/v1', sent exactly once."""
    client = openai.OpenAI(base_url=tenant.gateway.root_url, api_key=tenant.key, timeout=SDK_TIMEOUT_S)
    error = expect_api_error(
        tenant.gateway,
        lambda: client.chat.completions.create(model=MODEL, messages=MESSAGES),
        exc_class=openai.NotFoundError,
        status=404,
        code="unknown_endpoint",
        error_type="invalid_request_error",
        param=None,
        route="unknown",
    )
    message = error.body["message"]
    assert "'/v1'" in message and "missing" in message, message


def test_429_rpm_exhausted_headers_and_message(tenant: Tenant):
    """After 30 quick requests an unverified account's 31st is a 429 RateLimitError
    (rate_limit_exceeded) with the SPEC message, retry-after / retry-after-ms that agree,
    x-should-retry: true and x-ratelimit-remaining-requests: 0 (max_retries=0: sent once)."""
    exhaust_rpm(tenant.gateway, tenant.key)
    error = expect_api_error(
        tenant.gateway,
        lambda: tenant.client(max_retries=0).chat.completions.create(model=MODEL, messages=MESSAGES),
        exc_class=openai.RateLimitError,
        status=429,
        code="rate_limit_exceeded",
        error_type="rate_limit_error",
        param=None,
    )
    headers = error.response.headers
    assert headers["x-should-retry"] == "true"
    retry_after_ms = int(headers["retry-after-ms"])
    assert 1 <= retry_after_ms <= 2000, retry_after_ms
    assert headers["retry-after"] == str(min(60, max(1, math.ceil(retry_after_ms / 1000))))
    rates = assert_rate_headers(headers, limit_requests=UNVERIFIED_RPM, limit_tokens=UNVERIFIED_TPM)
    assert headers["x-ratelimit-remaining-requests"] == "0"
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
    error = info.value
    assert type(error) is openai.RateLimitError, repr(error)
    assert (error.status_code, error.code, error.type, error.param) == (429, "rate_limit_exceeded", "rate_limit_error", None)
    assert error.response.headers["x-should-retry"] == "true"
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
    big = [{"role": "user", "content": "jambo " * 7500}]
    assert len(big[0]["content"].encode()) == 45000
    error = expect_api_error(
        tenant.gateway,
        lambda: tenant.client().chat.completions.create(model=MODEL, messages=big),
        exc_class=openai.RateLimitError,
        status=429,
        code="rate_limit_exceeded",
        error_type="rate_limit_error",
        param=None,
        check_param=False,  # SPEC §2 names no param for this row
    )
    headers = error.response.headers
    assert headers["x-should-retry"] == "false"
    rates = assert_rate_headers(headers, limit_requests=UNVERIFIED_RPM, limit_tokens=UNVERIFIED_TPM)
    assert (rates["remaining_requests"], rates["remaining_tokens"]) == (UNVERIFIED_RPM, UNVERIFIED_TPM)
    assert "40000" in error.body["message"], error.body["message"]
    account = tenant.account()
    assert (account["balance_usd"], account["held_usd"]) == ("1.000000000", "0.000000000")


def test_503_maintenance_is_retried_twice(tenant: Tenant):
    """In maintenance mode (retry_after_s=1) a request is a 503 InternalServerError
    (service_unavailable, api_error) with retry-after: 1 and x-should-retry: true; the default
    client sends it exactly three times, waiting 1 s between attempts. Leaving maintenance
    restores service."""
    gateway = tenant.gateway
    client = tenant.client()
    try:
        assert gateway.set_maintenance(True, retry_after_s=1)["enabled"] is True
        started = time.monotonic()
        error = expect_api_error(
            gateway,
            lambda: client.chat.completions.create(model=MODEL, messages=MESSAGES),
            exc_class=openai.InternalServerError,
            status=503,
            code="service_unavailable",
            error_type="api_error",
            param=None,
            sent=3,
        )
        elapsed = time.monotonic() - started
    finally:
        gateway.set_maintenance(False)
    headers = error.response.headers
    assert headers["retry-after"] == "1"
    assert headers.get("retry-after-ms", "1000") == "1000"
    assert headers["x-should-retry"] == "true"
    assert_rate_headers(headers, limit_requests=UNVERIFIED_RPM, limit_tokens=UNVERIFIED_TPM)
    assert elapsed >= 1.95, elapsed
    with RequestCounter(gateway) as seen:
        assert client.chat.completions.create(model=MODEL, messages=MESSAGES).model == MODEL
    assert seen.diff == {(CHAT, "200"): 1}


# ----- 5. top-up ----------------------------------------------------------------------------------


def test_topup_moves_account_to_trusted_once_per_reference(tenant: Tenant):
    """An unverified account is limited at 30 RPM; a 1300 KES top-up (130 KES/USD) credits exactly
    10 USD and makes it trusted; the same payment reference again is a duplicate that credits
    nothing; the next request is admitted at once under the trusted limit (100 RPM)."""
    gateway = tenant.gateway
    exhaust_rpm(gateway, tenant.key)
    client = tenant.client(max_retries=0)
    expect_api_error(
        gateway,
        lambda: client.chat.completions.create(model=MODEL, messages=MESSAGES),
        exc_class=openai.RateLimitError,
        status=429,
        code="rate_limit_exceeded",
        error_type="rate_limit_error",
        param=None,
    )
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
