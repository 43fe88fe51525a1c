//! The key holder's own view of its money (SPEC §8.2): `GET /v1/account` and `GET /v1/usage`
//! with exact bodies on both stores, and the charge of every admitted answer: the
//! `x-fikra-cost-usd` header of unary answers and the `cost_usd` of the usage a stream shows,
//! each equal to the ledger's charge to the nano-USD.

mod support;

use serde_json::{Value, json};
use support::error_cases::RATE_HEADERS;
use support::gateway::*;
use support::http::*;
use support::redis_server::{self, unique_prefix};

const FLASH_NANOS_PER_TOKEN: u64 = 500;

fn get(gateway: &TestGateway, method: &str, path: &str, key: &str) -> Response {
    let request = format!("{method} {path} HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {key}\r\n\r\n");
    send_one(gateway.api, request.as_bytes())
}

/// Everything the gateway sends for `HEAD path` until it closes.
fn head_bytes(gateway: &TestGateway, path: &str, key: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = connect(gateway.api);
    let request =
        format!("HEAD {path} HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {key}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).unwrap();
    String::from_utf8(bytes).unwrap()
}

fn post(gateway: &TestGateway, path: &str, key: &str, body: &Value) -> Response {
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    send_one(gateway.api, request.as_bytes())
}

/// A key named `name` of `kind` on `account`: (key id, key).
fn named_key(gateway: &TestGateway, account: &str, kind: &str, name: &str) -> (String, String) {
    let body = json!({"kind": kind, "name": name}).to_string();
    let created = gateway.admin_json("POST", &format!("/admin/accounts/{account}/keys"), &body, 201);
    (created["key_id"].as_str().unwrap().to_string(), created["key"].as_str().unwrap().to_string())
}

fn redis_store_config(test: &str) -> String {
    format!(
        "[store]\nredis_url = \"redis://{}\"\nkey_prefix = \"{}\"\n",
        redis_server::shared_server(),
        unique_prefix(test)
    )
}

fn nanos_text(nanos: u64) -> String {
    format!("{}.{:09}", nanos / 1_000_000_000, nanos % 1_000_000_000)
}

/// The headers every answer to a recognised key carries (SPEC §1, §8.3).
fn assert_client_headers(response: &Response) {
    for name in RATE_HEADERS {
        assert!(response.header(name).is_some(), "{name} missing: {:?}", response.headers);
    }
}

// Goal: the account body is exact for a named live key and an unnamed test key, on both stores;
// after one paid answer it shows the new balance, and /v1/usage lists the same records the
// admin usage call does, rendered the same way.
fn account_and_usage_bodies_are_exact(gateway: &TestGateway) {
    gateway.create_account("acct_view", "2.50");
    let (live_id, live) = named_key(gateway, "acct_view", "live", "ci runner");
    let (test_id, test) = gateway.create_key("acct_view", "test");

    let response = get(gateway, "GET", "/v1/account", &live);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_client_headers(&response);
    // An uncapped key shows its lifetime spend and what its open requests hold.
    let key_view = |id: &str, kind: &str, name: Value| json!({"id": id, "kind": kind, "name": name, "spend_cap_usd": null, "spend_cap_period": null, "spent_usd": "0.000000000", "held_usd": "0.000000000"});
    assert_eq!(
        response.json(),
        json!({
            "object": "account", "id": "acct_view", "tier": "unverified",
            "balance_usd": "2.500000000", "held_usd": "0.000000000", "available_usd": "2.500000000",
            "limits": {"rpm": 30, "tpm": 40000},
            "key": key_view(&live_id, "live", json!("ci runner")),
        })
    );
    let test_view = get(gateway, "GET", "/v1/account", &test);
    assert_eq!(test_view.status, 200);
    assert_eq!(test_view.json()["key"], key_view(&test_id, "test", Value::Null));
    assert_eq!(test_view.json()["balance_usd"], "2.500000000");

    let chat = gateway.chat(&live, &simple_chat("fikra-flash", "count my money"));
    assert_eq!(chat.status, 200, "{}", chat.text());
    let usage = chat.json()["usage"].clone();
    let tokens = usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap();
    let cost = tokens * FLASH_NANOS_PER_TOKEN;
    let after = get(gateway, "GET", "/v1/account", &live).json();
    let left = nanos_text(2_500_000_000 - cost);
    assert_eq!(
        (&after["balance_usd"], &after["held_usd"], &after["available_usd"]),
        (&json!(left), &json!("0.000000000"), &json!(left))
    );
    // The key that paid shows what it spent; the test key spent nothing.
    assert_eq!(
        (&after["key"]["spent_usd"], &after["key"]["held_usd"]),
        (&json!(nanos_text(cost)), &json!("0.000000000"))
    );
    assert_eq!(get(gateway, "GET", "/v1/account", &test).json()["key"]["spent_usd"], "0.000000000");

    let own = get(gateway, "GET", "/v1/usage", &test);
    assert_eq!(own.status, 200);
    assert_client_headers(&own);
    let admin = gateway.admin_json("GET", "/admin/accounts/acct_view/usage", "", 200);
    assert_eq!(own.json(), admin);
    let data = own.json()["data"].as_array().unwrap().clone();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["key_id"], json!(live_id));
    assert_eq!(data[0]["cost_usd"], json!(nanos_text(cost)));
    assert_eq!(data[0]["request_id"].as_str(), chat.header("x-request-id"));
    let limited = get(gateway, "GET", "/v1/usage?limit=1", &live);
    assert_eq!(limited.json(), admin);

    // HEAD is GET without a body; a bad limit is a 400 naming it.
    let head = head_bytes(gateway, "/v1/account", &live);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("\r\nx-request-id: ") && head.contains("\r\nx-ratelimit-remaining-requests: "), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "no body after a HEAD answer's head: {head}");
    for bad in ["limit=0", "limit=1001", "limit=x", "page=2"] {
        let refused = get(gateway, "GET", &format!("/v1/usage?{bad}"), &live);
        assert_eq!(refused.status, 400, "{bad}");
        assert_eq!(refused.error(), ("invalid_request_error".into(), "invalid_parameter".into(), Some("limit".into())));
        assert_client_headers(&refused);
    }
    let posted = post(gateway, "/v1/account", &live, &json!({}));
    assert_eq!(posted.status, 405);
    assert_eq!(posted.header("allow"), Some("GET, HEAD"));
    let unknown = get(gateway, "GET", "/v1/account", "fk_live_00000000000000000000000000000000");
    assert_eq!(unknown.status, 401);
}

#[test]
fn account_and_usage_on_the_embedded_store() {
    account_and_usage_bodies_are_exact(&TestGateway::start(""));
}

#[test]
fn account_and_usage_on_redis() {
    account_and_usage_bodies_are_exact(&TestGateway::start(&redis_store_config("account_and_usage_on_redis")));
}

// Goal: reading the account spends nothing and is never refused for want of money or
// requests: an empty wallet (402 on chat) and an exhausted RPM bucket (429 on chat) still read
// their account, and the reads leave the RPM bucket where it was. Maintenance refuses it (503),
// the metrics count it under its own route.
#[test]
fn reading_the_account_is_free_and_never_refused_for_money_or_rate() {
    let gateway = TestGateway::start("[[account_overrides]]\naccount = \"tight\"\nrpm = 2\ntpm = 100000\n");
    let broke = gateway.account_with_key("broke", "0", "live");
    assert_eq!(gateway.chat(&broke, &simple_chat("fikra-flash", "hi")).status, 402);
    let view = get(&gateway, "GET", "/v1/account", &broke);
    assert_eq!(view.status, 200);
    assert_eq!(view.json()["available_usd"], "0.000000000");

    let tight = gateway.account_with_key("tight", "1.00", "live");
    for _ in 0..2 {
        assert_eq!(gateway.chat(&tight, &simple_chat("fikra-flash", "hi")).status, 200);
    }
    assert_eq!(gateway.chat(&tight, &simple_chat("fikra-flash", "hi")).status, 429);
    for _ in 0..5 {
        let view = get(&gateway, "GET", "/v1/account", &tight);
        assert_eq!(view.status, 200);
        assert_eq!(view.header("x-ratelimit-remaining-requests"), Some("0"));
        assert_eq!(view.json()["limits"], json!({"rpm": 2, "tpm": 100000}));
        assert_eq!(get(&gateway, "GET", "/v1/usage", &tight).status, 200);
    }
    assert_eq!(metric(gateway.admin, "fikra_requests_total{route=\"/v1/account\",status=\"200\"}"), 6);
    assert_eq!(metric(gateway.admin, "fikra_requests_total{route=\"/v1/usage\",status=\"200\"}"), 5);

    gateway.admin_json("PUT", "/admin/maintenance", r#"{"enabled":true}"#, 200);
    let during = get(&gateway, "GET", "/v1/account", &tight);
    assert_eq!(during.status, 503);
    assert_eq!(during.error().1, "service_unavailable");
    assert_client_headers(&during);
    assert_eq!(get(&gateway, "GET", "/v1/usage", &tight).status, 503);
    gateway.admin_json("PUT", "/admin/maintenance", r#"{"enabled":false}"#, 200);
    assert_eq!(get(&gateway, "GET", "/v1/account", &tight).status, 200);
}

/// The ledger charge of the request `response` answered, in nano-USD.
fn ledger_charge(gateway: &TestGateway, account: &str, response: &Response) -> u64 {
    let request_id = response.header("x-request-id").expect("request id");
    let record = gateway.usage(account).into_iter().find(|r| r["request_id"] == request_id).expect("ledger record");
    usd_to_nanos(record["cost_usd"].as_str().unwrap())
}

/// The `usage` objects of the SSE events in `text` (chat chunks, or Responses terminal events).
fn stream_usages(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|event| event.lines().find_map(|line| line.strip_prefix("data: ")))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str::<Value>(data).unwrap())
        .filter_map(|event| {
            let usage = event.get("usage").or_else(|| event.get("response").and_then(|r| r.get("usage")));
            usage.filter(|u| !u.is_null()).cloned()
        })
        .collect()
}

// Goal: every admitted answer names what it was charged, exactly the ledger's figure: the
// header on unary chat and Responses answers, `cost_usd` in the usage chunk of a stream that
// asked for usage (none without), and in the terminal event of a Responses stream; test keys
// show zero. `served_by_upstream` answers come through a real upstream.
fn cost_is_announced_and_equals_the_ledger(gateway: &TestGateway) {
    let key = gateway.account_with_key("payer", "1.00", "live");
    let test_key = gateway.new_key("payer", "test");
    let chat = |stream: bool, include_usage: bool| {
        let mut body = json!({"model": "fikra-flash", "messages": [{"role": "user", "content": "what did it cost"}]});
        if stream {
            body["stream"] = json!(true);
            body["stream_options"] = json!({"include_usage": include_usage});
        }
        body
    };

    let unary = post(gateway, "/v1/chat/completions", &key, &chat(false, false));
    assert_eq!(unary.status, 200, "{}", unary.text());
    let usage = &unary.json()["usage"];
    let tokens = usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap();
    let charged = ledger_charge(gateway, "payer", &unary);
    assert_eq!(charged, tokens * FLASH_NANOS_PER_TOKEN);
    assert_eq!(unary.header("x-fikra-cost-usd"), Some(nanos_text(charged).as_str()));
    assert!(unary.json()["usage"].get("cost_usd").is_none(), "a unary body is the upstream's own");

    let test_unary = post(gateway, "/v1/chat/completions", &test_key, &chat(false, false));
    assert_eq!(test_unary.status, 200);
    assert_eq!(test_unary.header("x-fikra-cost-usd"), Some("0.000000000"));

    let streamed = post(gateway, "/v1/chat/completions", &key, &chat(true, true));
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.header("x-fikra-cost-usd"), None, "a stream's head leaves before settlement");
    let usages = stream_usages(&streamed.text());
    assert_eq!(usages.len(), 1, "{}", streamed.text());
    let charged = ledger_charge(gateway, "payer", &streamed);
    assert!(charged > 0);
    assert_eq!(usages[0]["cost_usd"], json!(nanos_text(charged)));
    let tokens = usages[0]["prompt_tokens"].as_u64().unwrap() + usages[0]["completion_tokens"].as_u64().unwrap();
    assert_eq!(charged, tokens * FLASH_NANOS_PER_TOKEN);

    let quiet = post(gateway, "/v1/chat/completions", &key, &chat(true, false));
    assert_eq!(quiet.status, 200);
    assert_eq!(stream_usages(&quiet.text()).len(), 0, "{}", quiet.text());
    let test_stream = post(gateway, "/v1/chat/completions", &test_key, &chat(true, true));
    assert_eq!(stream_usages(&test_stream.text())[0]["cost_usd"], "0.000000000");

    let responses = json!({"model": "fikra-flash", "input": "and this one?"});
    let unary = post(gateway, "/v1/responses", &key, &responses);
    assert_eq!(unary.status, 200, "{}", unary.text());
    let charged = ledger_charge(gateway, "payer", &unary);
    assert_eq!(unary.header("x-fikra-cost-usd"), Some(nanos_text(charged).as_str()));
    let usage = &unary.json()["usage"];
    assert_eq!(charged, usage["total_tokens"].as_u64().unwrap() * FLASH_NANOS_PER_TOKEN);

    let mut stream = responses.clone();
    stream["stream"] = json!(true);
    let streamed = post(gateway, "/v1/responses", &key, &stream);
    assert_eq!(streamed.status, 200);
    let usages = stream_usages(&streamed.text());
    assert_eq!(usages.len(), 1, "only the terminal event carries usage: {}", streamed.text());
    let charged = ledger_charge(gateway, "payer", &streamed);
    assert_eq!(usages[0]["cost_usd"], json!(nanos_text(charged)));
    assert_eq!(charged, usages[0]["total_tokens"].as_u64().unwrap() * FLASH_NANOS_PER_TOKEN);
}

#[test]
fn cost_on_sandbox_answers_embedded_store() {
    cost_is_announced_and_equals_the_ledger(&TestGateway::start(""));
}

#[test]
fn cost_on_sandbox_answers_redis_store() {
    cost_is_announced_and_equals_the_ledger(&TestGateway::start(&redis_store_config("cost_on_sandbox_redis")));
}

#[test]
fn cost_on_upstream_answers() {
    use fikra_gateway::config::SandboxSettings;
    use fikra_gateway::sandbox_server::SandboxServer;
    let settings =
        SandboxSettings { time_to_first_token_ms: 0, tokens_per_second: 0, output_tokens: 9, stamp_events: false };
    let upstream = SandboxServer::start("127.0.0.1:0".parse().unwrap(), 1, settings).unwrap();
    let config = support::scripted_upstream::upstream_model_config(&format!("http://{}/v1", upstream.addr), "", "");
    cost_is_announced_and_equals_the_ledger(&TestGateway::start(&config));
    upstream.shutdown();
}
