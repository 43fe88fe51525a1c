"""What the OpenAI-SDK conformance tests share: the module gateway's registry and limits, the
checks of the seven per-request headers (Go-style reset durations), costs in nano-USD, and
`expect_case`, which runs one SPEC §2 error case of tests/cases/errors.json through the SDK and
asserts both the exception and how many times the server received the request.
"""

from __future__ import annotations

import re

import httpx2
import openai
import pytest

from error_cases import ErrorCase
from gateway_harness import Gateway, RequestCounter

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


def expect_case(gateway: Gateway, case: ErrorCase, client: openai.OpenAI, arranged_key: str) -> openai.APIStatusError:
    """Sends `case`'s request with `client`, which must raise exactly the case's error after the
    server received it exactly once, or 1 + max_retries times if the SDK retries this answer (all
    answered with the case's status)."""
    sent = 1 + client.max_retries if case.sdk_retried else 1
    with RequestCounter(gateway) as seen:
        with pytest.raises(openai.APIStatusError) as info:
            case.sdk_call(client)()
    error = info.value
    case.check(error, arranged_key)
    expected = {(case.route, str(case.status)): sent}
    assert seen.diff == expected, f"server counted {seen.diff}, expected {sent} x {case.status} on {case.route}"
    return error


def exhaust_rpm(gateway: Gateway, key: str, count: int = UNVERIFIED_RPM) -> None:
    """Spends `count` requests of the key's account quickly (raw HTTP, 1-token answers)."""
    with httpx2.Client(base_url=gateway.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as http:
        for index in range(count):
            response = http.post("/chat/completions", json={"model": MODEL, "messages": MESSAGES, "max_tokens": 1})
            assert response.status_code == 200, f"request {index + 1} of {count}: {response.status_code} {response.text}"
