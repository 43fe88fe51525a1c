//! Client-side helpers for `POST /v1/responses` tests: the raw request, its typed SSE events
//! parsed (each `event:` line agreeing with its data's `type`), and the exact-ledger check.

use serde_json::Value;

use crate::support::gateway::TestGateway;
use crate::support::http::{Response, send_one};

pub fn responses_request(key: &str, body: &str) -> String {
    format!(
        "POST /v1/responses HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

pub fn post(gateway: &TestGateway, key: &str, body: &Value) -> Response {
    send_one(gateway.api, responses_request(key, &body.to_string()).as_bytes())
}

/// The typed events of a streamed answer: (event line, parsed data), checking each pairs up
/// and that no `[DONE]` is sent.
pub fn typed_events(body: &[u8]) -> Vec<(String, Value)> {
    let text = std::str::from_utf8(body).unwrap();
    assert!(!text.contains("[DONE]"), "{text}");
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|event| {
            let (kind_line, data_line) = event.split_once('\n').expect("two lines");
            let kind = kind_line.strip_prefix("event: ").expect("event line").to_string();
            let data: Value = serde_json::from_str(data_line.strip_prefix("data: ").expect("data line")).unwrap();
            assert_eq!(data["type"], kind.as_str());
            (kind, data)
        })
        .collect()
}

/// The account's ledger is exactly `charges` (nano-USD, newest first), nothing is held, and the
/// balance is its 1 USD credit less those charges.
pub fn assert_charged(gateway: &TestGateway, account: &str, charges: &[u64]) {
    assert_eq!(gateway.usage_costs(account), charges);
    assert_eq!(gateway.account(account)["held_usd"], "0.000000000");
    assert_eq!(gateway.balance_nanos(account), 1_000_000_000 - charges.iter().sum::<u64>());
}

/// The (path, status, error_code) of each access-log line a gateway process wrote so far (its
/// log holds its standard output, where `[log] access = "json"` writes), waiting up to 5 s for
/// `count` of them (a quiet worker hands its lines over within its 1 s sweep).
pub fn access_log_codes(
    node: &crate::support::gateway_process::GatewayProcess,
    count: usize,
) -> Vec<(String, u64, Option<String>)> {
    let read = || -> Vec<(String, u64, Option<String>)> {
        node.log_text()
            .lines()
            .filter(|line| line.starts_with('{'))
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .map(|line| {
                let code = line["error_code"].as_str().map(str::to_string);
                (line["path"].as_str().unwrap_or("").to_string(), line["status"].as_u64().unwrap_or(0), code)
            })
            .collect()
    };
    crate::support::wait::wait_for(std::time::Duration::from_secs(5), || {
        let lines = read();
        (lines.len() >= count).then_some(lines)
    })
    .unwrap_or_else(|| panic!("{count} access-log lines; the node wrote:\n{}", node.log_text()))
}

/// The wire answers of a native Responses upstream (`responses = true`) for one short reply
/// carrying `usage` (a Responses usage object) and its own model name `upstream_model`: the
/// unary `200` with the Response object, and the chunked SSE stream (`response.created`, two
/// text deltas, `response.completed` with the usage), each built once.
pub fn native_answers(upstream_model: &str, usage: &str) -> (&'static [u8], &'static [u8]) {
    let object = |status: &str, usage: &str| {
        format!(
            r#"{{"id":"resp_up1","object":"response","status":"{status}","model":"{upstream_model}","output":[],"usage":{usage}}}"#
        )
    };
    let body = object("completed", usage);
    let unary =
        format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len());
    let delta = |number: u64, text: &str| {
        format!(
            r#"{{"type":"response.output_text.delta","sequence_number":{number},"item_id":"msg_up1","output_index":0,"content_index":0,"delta":"{text}"}}"#
        )
    };
    let events = [
        (
            "response.created",
            format!(
                r#"{{"type":"response.created","sequence_number":0,"response":{}}}"#,
                object("in_progress", "null")
            ),
        ),
        ("response.output_text.delta", delta(1, "Hel")),
        ("response.output_text.delta", delta(2, "lo")),
        (
            "response.completed",
            format!(r#"{{"type":"response.completed","sequence_number":3,"response":{}}}"#, object("completed", usage)),
        ),
    ];
    let mut streamed =
        String::from("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n");
    for (kind, data) in events {
        let event = format!("event: {kind}\ndata: {data}\n\n");
        streamed.push_str(&format!("{:x}\r\n{event}\r\n", event.len()));
    }
    streamed.push_str("0\r\n\r\n");
    (unary.leak().as_bytes(), streamed.leak().as_bytes())
}
