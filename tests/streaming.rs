//! Streaming: events reach the client as they are produced, and a client that leaves
//! mid-stream is settled at once for what it received.

// Tests measure real time on purpose: clippy.toml's clock policy is for the gateway.
#![allow(clippy::disallowed_methods)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use support::gateway::*;
use support::http::*;
use support::wait::wait_for;

const PACED_SANDBOX: &str = "[sandbox]\ntime_to_first_token_ms = 0\ntokens_per_second = 20\noutput_tokens = 20\n";

fn stream_body() -> String {
    serde_json::json!({"model": "fikra-flash", "stream": true, "messages": [{"role": "user", "content": "tell me"}]})
        .to_string()
}

/// Reads the response head of a streamed answer, then returns the reader positioned at the body.
fn open_stream(gateway: &TestGateway, key: &str) -> BufReader<std::net::TcpStream> {
    let stream = connect(gateway.api);
    (&stream).write_all(chat_request(key, &stream_body()).as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    reader
}

// Goal: with the sandbox emitting 20 chunks 50 ms apart, the client holds the first content
// chunk while the sandbox has produced fewer than all 20 (order of events, not a time budget),
// and the stream ends with [DONE] after 20 content chunks.
#[test]
fn first_chunk_arrives_before_the_last_is_produced() {
    let gateway = TestGateway::start(PACED_SANDBOX);
    let key = gateway.account_with_key("streamer", "1.00", "live");
    let mut reader = open_stream(&gateway, &key);
    let role = next_sse_data(&mut reader).unwrap();
    assert!(role.contains("\"role\":\"assistant\""), "{role}");
    let first = next_sse_data(&mut reader).unwrap();
    assert!(first.contains("\"content\""), "{first}");
    let produced = metric(gateway.admin, "fikra_sandbox_chunks_emitted_total");
    assert!(produced < 20, "sandbox had produced {produced} chunks when the client got the first");
    let mut contents = 1;
    let mut saw_done = false;
    while let Some(event) = next_sse_data(&mut reader) {
        if event == "[DONE]" {
            saw_done = true;
            break;
        }
        let value: serde_json::Value = serde_json::from_str(&event).unwrap();
        assert_eq!(value["model"], "fikra-flash");
        if value["choices"][0]["delta"]["content"].is_string() {
            contents += 1;
        }
        assert!(value.get("usage").is_none() || value["usage"].is_null(), "usage only when asked: {event}");
    }
    assert!(saw_done);
    assert_eq!(contents, 20);
}

// Goal: a client that disconnects mid-stream is settled within a second, charged for what it
// was delivered, and the hold is fully released.
#[test]
fn client_disconnect_mid_stream_is_settled_quickly() {
    let gateway = TestGateway::start(PACED_SANDBOX);
    let key = gateway.account_with_key("leaver", "1.00", "live");
    let mut reader = open_stream(&gateway, &key);
    for _ in 0..4 {
        next_sse_data(&mut reader).unwrap();
    }
    drop(reader);
    let left_at = Instant::now();
    let record = wait_for(Duration::from_secs(2), || gateway.usage("leaver").first().cloned())
        .expect("settled within the deadline");
    assert!(left_at.elapsed() < Duration::from_millis(1500), "settled after {:?}", left_at.elapsed());
    assert_eq!(record["outcome"], "client_aborted");
    let completion = record["completion_tokens"].as_u64().unwrap();
    assert!((3..20).contains(&completion), "{completion}");
    let prompt = record["prompt_tokens"].as_u64().unwrap();
    assert_eq!(usd_to_nanos(record["cost_usd"].as_str().unwrap()), (prompt + completion) * 500);
    let account = gateway.account("leaver");
    assert_eq!(account["held_usd"], "0.000000000");
    assert_eq!(usd_to_nanos(account["balance_usd"].as_str().unwrap()), 1_000_000_000 - (prompt + completion) * 500);
}
