//! Every row of the SPEC §2 error table that the core can produce, over real sockets: status,
//! type, code, param, exact body shape, and the headers each row promises. The cases (request
//! and expected answer) are those of `tests/cases/errors.json`, which the Python SDK suite
//! drives too; each test here arranges a case's `given` and sends its request as raw bytes.

mod support;

use support::error_cases::{ErrorCase, case, rust_cases};
use support::gateway::*;
use support::http::*;

/// Sends `case`'s request with `key` (the key the test arranged for it), checks the answer
/// against the case, and returns it.
fn send_case(gateway: &TestGateway, case: &ErrorCase, key: &str) -> Response {
    let response = send_one(gateway.api, case.raw_request(key).as_bytes());
    case.check(&response, key);
    response
}

/// The Rust cases that a test below drives by name; every other one is a 400 row, which
/// `bad_requests_get_400_with_param` drives all of.
const DRIVEN_BY_NAME: [&str; 16] = [
    "missing_api_key",
    "unknown_live_key",
    "foreign_key",
    "key_with_inner_space",
    "revoked_key",
    "insufficient_quota",
    "doubled_v1_prefix",
    "missing_v1_prefix",
    "method_not_allowed",
    "method_not_allowed_with_key",
    "retrieve_unknown_model",
    "request_larger_than_tpm",
    "rpm_exhausted",
    "maintenance",
    "maintenance_models",
    "upstream_unreachable",
];

/// The Rust cases that need a scripted upstream, driven by name in `tests/upstream_realism.rs`.
const DRIVEN_ELSEWHERE: [&str; 1] = ["upstream_context_length_exceeded"];

/// Whether a test drives `case` by its name (here or in another file).
fn driven_by_name(case: &ErrorCase) -> bool {
    DRIVEN_BY_NAME.contains(&case.name.as_str()) || DRIVEN_ELSEWHERE.contains(&case.name.as_str())
}

// Goal: no Rust case of the table goes undriven: each is a 400 row or named by a test here
// (and the table parses, field by field).
#[test]
fn every_rust_case_is_driven() {
    let cases = rust_cases();
    for case in &cases {
        let by_name = driven_by_name(case);
        let by_bad_requests = case.status == 400 && !DRIVEN_ELSEWHERE.contains(&case.name.as_str());
        assert!(by_name != by_bad_requests, "{}: driven by name xor a 400 row", case.name);
    }
    for name in DRIVEN_BY_NAME.into_iter().chain(DRIVEN_ELSEWHERE) {
        assert!(cases.iter().any(|case| case.name == name), "{name} is not a Rust case of the table");
    }
}

// Goal: 400 rows: invalid_json, missing/invalid/unsupported parameter, model_not_found with a
// suggestion; each with the account headers since the key was valid.
#[test]
fn bad_requests_get_400_with_param() {
    let extra = r#"
[[models]]
id = "fikra-flash"
upstream = "sandbox"
input_usd_per_million = "0.5"
output_usd_per_million = "0.5"
max_output_tokens = 8192
unsupported_parameters = ["logprobs"]
"#;
    let gateway = TestGateway::start(extra);
    let key = gateway.account_with_key("bad", "1.00", "live");
    let cases: Vec<ErrorCase> =
        rust_cases().into_iter().filter(|case| case.status == 400 && !driven_by_name(case)).collect();
    assert_eq!(cases.len(), 10, "the table's 400 rows");
    for case in &cases {
        send_case(&gateway, case, &key);
    }
    // Nothing was charged or held for refused requests.
    assert_eq!(gateway.balance_nanos("bad"), 1_000_000_000);
}

// Goal: 401 rows: missing, malformed, unknown and revoked keys; never echoing the key.
#[test]
fn authentication_failures_get_401() {
    let gateway = TestGateway::start("");
    let key = gateway.account_with_key("auth", "1.00", "live");
    for name in ["missing_api_key", "unknown_live_key", "foreign_key", "key_with_inner_space"] {
        send_case(&gateway, &case(name), &key);
    }

    let body = simple_chat("fikra-flash", "hi");
    let (key_id, revoked_key) = gateway.create_key("auth", "live");
    assert_eq!(gateway.chat(&revoked_key, &body).status, 200);
    assert_eq!(gateway.admin_call("DELETE", &format!("/admin/keys/{key_id}"), "").status, 200);
    send_case(&gateway, &case("revoked_key"), &revoked_key);
    // The other key of the account still works.
    assert_eq!(gateway.chat(&key, &body).status, 200);
}

// Goal: 402 when the wallet cannot pay even a one-token answer, with the balance in the message
// and x-should-retry: false; and a clamped answer (x-fikra-max-tokens-clamped) when it can pay some.
#[test]
fn wallet_refusals_and_clamps() {
    let gateway = TestGateway::start("");
    let key = gateway.account_with_key("poor", "0.000032500", "live");
    // Input bound (SPEC §9): the 84-byte body less `"model":"fikra-flash"` (21) and
    // `"max_tokens":100` (16) = 47 bytes, + 8 per message + 8 per request = 63 tokens = 31,500
    // nanos at 500 nanos/token; 32,500 nanos leave 1,000 = 2 output tokens.
    let body = r#"{"model":"fikra-flash","messages":[{"role":"user","content":"hi"}],"max_tokens":100}"#;
    let response = gateway.chat(&key, body);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("x-fikra-max-tokens-clamped"), Some("2"));
    assert_eq!(response.json()["usage"]["completion_tokens"], 2);
    // The same request again: the wallet cannot pay a one-token answer any more.
    case("insufficient_quota").check(&gateway.chat(&key, body), &key);
}

// Goal: 404 unknown endpoints (doubled and missing /v1 spotted) and 405 with `allow`; with a
// recognised key both carry the request id and the account's rate headers (SPEC §8.3), without
// one they stay 404/405 (never a 401 in their place).
#[test]
fn routing_errors() {
    let gateway = TestGateway::start("");
    let key = gateway.account_with_key("route", "1.00", "live");
    let names = ["doubled_v1_prefix", "missing_v1_prefix", "method_not_allowed", "method_not_allowed_with_key"];
    for name in names.into_iter().chain(["retrieve_unknown_model"]) {
        send_case(&gateway, &case(name), &key);
    }
    let anonymous = send_one(gateway.api, b"GET /v1/nothing HTTP/1.1\r\nhost: x\r\n\r\n");
    assert_eq!((anonymous.status, anonymous.header("x-request-id")), (404, None));
    let unknown_key = "fk_live_0000000000000000000000000000000X";
    let guessed = send_one(
        gateway.api,
        format!("GET /v1/nothing HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {unknown_key}\r\n\r\n").as_bytes(),
    );
    assert_eq!((guessed.status, guessed.header("x-request-id")), (404, None));
}

// Goal: 429 for an empty RPM bucket (retry headers, x-should-retry: true) and for a request
// larger than the whole TPM bucket (x-should-retry: false).
#[test]
fn rate_limit_errors() {
    let gateway = TestGateway::start("");
    let key = gateway.account_with_key("rl", "1.00", "live");
    send_case(&gateway, &case("request_larger_than_tpm"), &key);
    let body = simple_chat("fikra-flash", "hi");
    for _ in 0..30 {
        assert_eq!(gateway.chat(&key, &body).status, 200);
    }
    let limited = send_case(&gateway, &case("rpm_exhausted"), &key);
    let retry_after_ms: u64 = limited.header("retry-after-ms").unwrap().parse().unwrap();
    assert!((1..=2000).contains(&retry_after_ms), "{retry_after_ms}");
    assert_eq!(limited.header("retry-after"), Some(if retry_after_ms > 1000 { "2" } else { "1" }));
}

// Goal: maintenance mode answers 503 with retry-after; off again restores service. A model on a
// named upstream that cannot be reached answers 502 and releases its hold.
#[test]
fn service_and_upstream_unavailable() {
    let extra = r#"
[[upstreams]]
name = "nowhere"
base_url = "http://127.0.0.1:9/v1"

[[models]]
id = "fikra-flash"
upstream = "sandbox"
input_usd_per_million = "0.5"
output_usd_per_million = "0.5"
max_output_tokens = 8192

[[models]]
id = "fikra-remote"
upstream = "nowhere"
upstream_model = "secret/upstream-model"
input_usd_per_million = "1"
output_usd_per_million = "1"
max_output_tokens = 1024
"#;
    let gateway = TestGateway::start(extra);
    let key = gateway.account_with_key("maint", "1.00", "live");
    let body = simple_chat("fikra-flash", "hi");
    let on = gateway.admin_call("PUT", "/admin/maintenance", r#"{"enabled":true,"retry_after_s":1}"#);
    assert_eq!(on.status, 200);
    send_case(&gateway, &case("maintenance"), &key);
    send_case(&gateway, &case("maintenance_models"), &key);
    assert_eq!(gateway.admin_call("PUT", "/admin/maintenance", r#"{"enabled":false}"#).status, 200);
    assert_eq!(gateway.chat(&key, &body).status, 200);

    let before = gateway.account("maint");
    let remote = send_case(&gateway, &case("upstream_unreachable"), &key);
    assert!(!remote.text().contains("secret/upstream-model"));
    let after = gateway.account("maint");
    assert_eq!(after["balance_usd"], before["balance_usd"]);
    assert_eq!(after["held_usd"], "0.000000000");
}
