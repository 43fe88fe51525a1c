//! Every row of the SPEC §2 error table that the core can produce, over real sockets: status,
//! type, code, param, exact body shape, and the headers each row promises.

mod support;

use support::gateway::*;
use support::http::*;

const ACCOUNT_HEADERS: [&str; 7] = [
    "x-request-id",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
];

fn assert_account_headers(response: &Response) {
    for name in ACCOUNT_HEADERS {
        assert!(response.header(name).is_some(), "missing {name}: {:?}", response.headers);
    }
}

fn expect(response: &Response, status: u16, error_type: &str, code: &str, param: Option<&str>) {
    assert_eq!(response.status, status, "{}", response.text());
    let (actual_type, actual_code, actual_param) = response.error();
    assert_eq!((actual_type.as_str(), actual_code.as_str(), actual_param.as_deref()), (error_type, code, param));
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
    let cases: [(&str, &str, Option<&str>); 10] = [
        ("not json", "invalid_json", None),
        ("[1,2]", "invalid_json", None),
        (r#"{"messages":[{"role":"user","content":"x"}]}"#, "missing_required_parameter", Some("model")),
        (r#"{"model":"fikra-flash"}"#, "missing_required_parameter", Some("messages")),
        (r#"{"model":"fikra-flash","messages":[]}"#, "invalid_parameter", Some("messages")),
        (
            r#"{"model":"fikra-flash","messages":[{"role":"user","content":"x"}],"temperature":3.5}"#,
            "invalid_parameter",
            Some("temperature"),
        ),
        (
            r#"{"model":"fikra-flash","messages":[{"role":"user","content":"x"}],"max_tokens":0}"#,
            "invalid_parameter",
            Some("max_tokens"),
        ),
        (
            r#"{"model":"fikra-flash","messages":[{"role":"user","content":"x"}],"max_tokens":9000}"#,
            "invalid_parameter",
            Some("max_tokens"),
        ),
        (
            r#"{"model":"fikra-flash","messages":[{"role":"user","content":"x"}],"logprobs":true}"#,
            "unsupported_parameter",
            Some("logprobs"),
        ),
        (r#"{"model":"fikra-flsh","messages":[{"role":"user","content":"x"}]}"#, "model_not_found", Some("model")),
    ];
    for (body, code, param) in cases {
        let response = gateway.chat(&key, body);
        expect(&response, 400, "invalid_request_error", code, param);
        assert_account_headers(&response);
        if code == "model_not_found" {
            assert!(response.message().contains("'fikra-flash'"), "{}", response.message());
        }
    }
    // Nothing was charged or held for refused requests.
    assert_eq!(gateway.balance_nanos("bad"), 1_000_000_000);
}

// Goal: 401 rows: missing, malformed, unknown and revoked keys; never echoing the key.
#[test]
fn authentication_failures_get_401() {
    let gateway = TestGateway::start("");
    let key = gateway.account_with_key("auth", "1.00", "live");
    let body = simple_chat("fikra-flash", "hi");
    let no_header =
        format!("POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n\r\n{body}", body.len());
    expect(&send_one(gateway.api, no_header.as_bytes()), 401, "authentication_error", "missing_api_key", None);
    let unknown = format!("fk_live_{}", "A".repeat(32));
    expect(&gateway.chat(&unknown, &body), 401, "authentication_error", "invalid_api_key", None);
    expect(&gateway.chat("sk-proj-abc", &body), 401, "authentication_error", "invalid_api_key", None);
    let spaced = format!("{} {}", &key[..20], &key[20..]);
    let response = gateway.chat(&spaced, &body);
    expect(&response, 401, "authentication_error", "invalid_api_key", None);
    assert!(!response.text().contains(&key[8..20]));

    let usage = gateway.admin_call("POST", "/admin/accounts/auth/keys", r#"{"kind":"live","name":"to revoke"}"#).json();
    let (revoked_key, key_id) = (usage["key"].as_str().unwrap(), usage["key_id"].as_str().unwrap());
    assert_eq!(gateway.chat(revoked_key, &body).status, 200);
    assert_eq!(gateway.admin_call("DELETE", &format!("/admin/keys/{key_id}"), "").status, 200);
    expect(&gateway.chat(revoked_key, &body), 401, "authentication_error", "revoked_api_key", None);
    // The other key of the account still works.
    assert_eq!(gateway.chat(&key, &body).status, 200);
}

// Goal: 402 when the wallet cannot pay even a one-token answer, with the balance in the message
// and x-should-retry: false; and a clamped answer (x-fikra-max-tokens-clamped) when it can pay some.
#[test]
fn wallet_refusals_and_clamps() {
    let gateway = TestGateway::start("");
    let key = gateway.account_with_key("poor", "0.000010000", "live");
    // Input bound: 2 content bytes + 8 per message + 8 per request = 18 tokens = 9,000 nanos at
    // 500 nanos/token; 10,000 nanos leave 1,000 = 2 output tokens.
    let body = r#"{"model":"fikra-flash","messages":[{"role":"user","content":"hi"}],"max_tokens":100}"#;
    let response = gateway.chat(&key, body);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("x-fikra-max-tokens-clamped"), Some("2"));
    assert_eq!(response.json()["usage"]["completion_tokens"], 2);
    let response = gateway.chat(&key, body);
    expect(&response, 402, "billing_error", "insufficient_quota", None);
    assert_eq!(response.header("x-should-retry"), Some("false"));
    assert!(response.message().contains("M-Pesa"), "{}", response.message());
    assert_account_headers(&response);
}

// Goal: 404 unknown endpoints (doubled and missing /v1 spotted) and 405 with `allow`.
#[test]
fn routing_errors() {
    let gateway = TestGateway::start("");
    let key = gateway.account_with_key("route", "1.00", "live");
    let doubled = send_one(gateway.api, chat_request(&key, "{}").replace("/v1/chat", "/v1/v1/chat").as_bytes());
    expect(&doubled, 404, "invalid_request_error", "unknown_endpoint", None);
    assert!(doubled.message().contains("repeats '/v1'"));
    let missing = send_one(gateway.api, chat_request(&key, "{}").replace("/v1/chat", "/chat").as_bytes());
    expect(&missing, 404, "invalid_request_error", "unknown_endpoint", None);
    assert!(missing.message().contains("missing the '/v1' prefix"));
    let wrong_method = send_one(gateway.api, b"GET /v1/chat/completions HTTP/1.1\r\nhost: t\r\n\r\n");
    expect(&wrong_method, 405, "invalid_request_error", "method_not_allowed", None);
    assert_eq!(wrong_method.header("allow"), Some("POST"));
    let retrieve = send_one(
        gateway.api,
        format!("GET /v1/models/gpt-4o HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {key}\r\n\r\n").as_bytes(),
    );
    expect(&retrieve, 404, "invalid_request_error", "model_not_found", Some("model"));
}

// Goal: 429 for an empty RPM bucket (retry headers, x-should-retry: true) and for a request
// larger than the whole TPM bucket (x-should-retry: false).
#[test]
fn rate_limit_errors() {
    let gateway = TestGateway::start("");
    let key = gateway.account_with_key("rl", "1.00", "live");
    let huge = simple_chat("fikra-flash", &"a".repeat(45_000));
    let too_large = gateway.chat(&key, &huge);
    expect(&too_large, 429, "rate_limit_error", "rate_limit_exceeded", None);
    assert_eq!(too_large.header("x-should-retry"), Some("false"));
    assert_eq!(too_large.header("retry-after"), None);
    let body = simple_chat("fikra-flash", "hi");
    for _ in 0..30 {
        assert_eq!(gateway.chat(&key, &body).status, 200);
    }
    let limited = gateway.chat(&key, &body);
    expect(&limited, 429, "rate_limit_error", "rate_limit_exceeded", None);
    assert_eq!(limited.header("x-should-retry"), Some("true"));
    assert_eq!(limited.header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(limited.header("x-ratelimit-limit-requests"), Some("30"));
    let retry_after_ms: u64 = limited.header("retry-after-ms").unwrap().parse().unwrap();
    assert!((1..=2000).contains(&retry_after_ms), "{retry_after_ms}");
    assert_eq!(limited.header("retry-after"), Some(if retry_after_ms > 1000 { "2" } else { "1" }));
    assert!(
        limited.message().starts_with("Rate limit reached for requests per min (RPM): Limit 30, Used 30, Requested 1.")
    );
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
    let on = gateway.admin_call("PUT", "/admin/maintenance", r#"{"enabled":true,"retry_after_s":7}"#);
    assert_eq!(on.status, 200);
    let response = gateway.chat(&key, &body);
    expect(&response, 503, "api_error", "service_unavailable", None);
    assert_eq!(response.header("retry-after"), Some("7"));
    assert_eq!(response.header("x-should-retry"), Some("true"));
    assert_eq!(gateway.admin_call("PUT", "/admin/maintenance", r#"{"enabled":false}"#).status, 200);
    assert_eq!(gateway.chat(&key, &body).status, 200);

    let before = gateway.account("maint");
    let remote = gateway.chat(&key, &simple_chat("fikra-remote", "hi"));
    expect(&remote, 502, "api_error", "upstream_unavailable", None);
    assert_eq!(remote.header("x-should-retry"), Some("true"));
    assert!(!remote.text().contains("secret/upstream-model"));
    let after = gateway.account("maint");
    assert_eq!(after["balance_usd"], before["balance_usd"]);
    assert_eq!(after["held_usd"], "0.000000000");
}
