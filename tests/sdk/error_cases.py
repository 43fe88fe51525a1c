"""The SPEC §2 error cases of tests/cases/errors.json, the one table this suite and
tests/api_errors.rs (through tests/support/error_cases.rs) both read.

Each case is a request shape and exactly what must come back. Here a case becomes an SDK call
(`case.client(...)` and `case.sdk_call(client)`), and `case.check(error, key)` asserts that the
exception the SDK raised is exactly what the case expects: class, status, body shape, type,
code, param, headers and message. A field the table does not know is an error, so a typo in the
table fails the suite instead of checking nothing.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import openai

TABLE_PATH = Path(__file__).resolve().parent.parent / "cases" / "errors.json"
# x-request-id and the six rate headers every answer to a valid key carries (SPEC §1).
ACCOUNT_HEADERS = (
    "x-request-id",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
)
CASE_FIELDS = {
    "name", "suites", "given", "request", "status", "type", "code", "param", "headers",
    "headers_present", "headers_absent", "rate_headers", "message_contains",
    "message_starts_with", "never_echoes_key", "sdk",
}
REQUEST_FIELDS = {"method", "path", "key", "body", "raw_body", "content_repeated"}


@dataclasses.dataclass(frozen=True)
class ErrorCase:
    name: str
    suites: tuple[str, ...]
    method: str
    path: str
    # "account" (the key the test arranged; for "revoked" that key, revoked), "split", "none",
    # or ("literal", KEY).
    key: object
    body: dict | None
    raw_body: str | None
    status: int
    type: str
    code: str
    param: str | None
    headers: dict[str, str]
    headers_present: tuple[str, ...]
    headers_absent: tuple[str, ...]
    rate_headers: bool
    message_contains: tuple[str, ...]
    message_starts_with: str | None
    never_echoes_key: bool
    sdk_error: str | None
    sdk_retried: bool

    @property
    def exc_class(self) -> type:
        return getattr(openai, self.sdk_error)

    @property
    def route(self) -> str:
        """The `route` label /metrics counts this request under."""
        if self.path.startswith("/v1/models/"):
            return "/v1/models/{id}"
        return self.path if self.path.startswith("/v1/") else "unknown"

    def key_sent(self, arranged_key: str) -> str | None:
        if isinstance(self.key, tuple):
            return self.key[1]
        return {"account": arranged_key, "split": f"{arranged_key[:20]} {arranged_key[20:]}", "none": None}[self.key]

    def client(self, gateway, arranged_key: str, **options) -> openai.OpenAI:
        """An SDK client for this case: the key it sends, and a base URL its path is under."""
        from gateway_harness import SDK_TIMEOUT_S

        options.setdefault("timeout", SDK_TIMEOUT_S)
        base_url = gateway.base_url if self.path.startswith("/v1/") else gateway.root_url
        return openai.OpenAI(base_url=base_url, api_key=self.key_sent(arranged_key), **options)

    def sdk_call(self, client: openai.OpenAI):
        """The SDK call that sends this case's request with `client`."""
        if self.method == "GET" and self.path.startswith("/v1/models/"):
            model_id = self.path.rsplit("/", 1)[1]
            return lambda: client.models.retrieve(model_id)
        if self.method == "GET" and self.path == "/v1/models":
            return lambda: client.models.list()
        assert self.method == "POST" and self.path.endswith("/chat/completions"), self
        assert self.body is not None and self.raw_body is None, f"{self.name}: the SDK only sends JSON objects"
        rest = {k: v for k, v in self.body.items() if k not in ("model", "messages")}
        model = self.body.get("model", openai.omit)
        messages = self.body.get("messages", openai.omit)
        return lambda: client.chat.completions.create(model=model, messages=messages, **rest)

    def check(self, error: openai.APIStatusError, arranged_key: str) -> None:
        """Asserts `error` is exactly what this case expects."""
        name = self.name
        assert type(error) is self.exc_class, f"{name}: SDK raised {type(error).__name__}, expected {self.sdk_error}"
        assert error.status_code == self.status, (name, error.status_code)
        assert isinstance(error.body, dict), f"{name}: error body is not the JSON error object: {error.body!r}"
        assert sorted(error.body) == ["code", "message", "param", "type"], error.body
        message = error.body["message"]
        assert isinstance(message, str) and message, error.body
        assert (error.code, error.type, error.param) == (self.code, self.type, self.param), (name, error.body)
        headers = error.response.headers
        assert headers.get("content-type") == "application/json", dict(headers)
        for header, value in self.headers.items():
            assert headers.get(header) == value, (name, header, dict(headers))
        for header in self.headers_present + (ACCOUNT_HEADERS if self.rate_headers else ()):
            assert header in headers, (name, f"missing {header}", dict(headers))
        for header in self.headers_absent:
            assert header not in headers, (name, header, dict(headers))
        for part in self.message_contains:
            assert part in message, (name, part, message)
        if self.message_starts_with is not None:
            assert message.startswith(self.message_starts_with), (name, message)
        if self.never_echoes_key:
            key = self.key_sent(arranged_key)
            text = error.response.text
            assert key[8:20] not in text and key[-12:] not in text, f"{name} echoed the key: {text}"


def _parse(case: dict) -> ErrorCase:
    name = case["name"]
    assert set(case) <= CASE_FIELDS, f"case {name}: unknown fields {set(case) - CASE_FIELDS}"
    request = case.get("request", {})
    assert set(request) <= REQUEST_FIELDS, f"case {name}: unknown request fields {set(request) - REQUEST_FIELDS}"
    key = request.get("key", "account")
    if isinstance(key, dict):
        key = ("literal", key["literal"])
    elif key == "revoked":
        key = "account"
    assert isinstance(key, tuple) or key in ("account", "split", "none"), f"case {name}: key {key!r}"
    body = json.loads(json.dumps(request["body"])) if "body" in request else None
    if "content_repeated" in request:
        text, times = request["content_repeated"]
        body["messages"][0]["content"] = text * times
    sdk = case.get("sdk", {})
    if "sdk" in case.get("suites", []):
        assert "error" in sdk and "retried" in sdk, f"case {name}: an SDK case names its exception and retry"
    return ErrorCase(
        name=name,
        suites=tuple(case.get("suites", [])),
        method=request.get("method", "POST"),
        path=request.get("path", "/v1/chat/completions"),
        key=key,
        body=body,
        raw_body=request.get("raw_body"),
        status=case["status"],
        type=case["type"],
        code=case["code"],
        param=case.get("param"),
        headers=dict(case.get("headers", {})),
        headers_present=tuple(case.get("headers_present", [])),
        headers_absent=tuple(case.get("headers_absent", [])),
        rate_headers=bool(case.get("rate_headers", False)),
        message_contains=tuple(case.get("message_contains", [])),
        message_starts_with=case.get("message_starts_with"),
        never_echoes_key=bool(case.get("never_echoes_key", False)),
        sdk_error=sdk.get("error"),
        sdk_retried=bool(sdk.get("retried", False)),
    )


def _load() -> dict[str, ErrorCase]:
    cases = [_parse(case) for case in json.loads(TABLE_PATH.read_text())["cases"]]
    by_name = {case.name: case for case in cases}
    assert len(by_name) == len(cases), "case names repeat"
    return by_name


ERROR_CASES = _load()


def error_case(name: str) -> ErrorCase:
    """The case named `name`; it must be one the SDK suite drives."""
    case = ERROR_CASES[name]
    assert "sdk" in case.suites, f"{name} is not an SDK case of {TABLE_PATH}"
    return case
