//! Proxying to real upstreams over sockets: the standalone sandbox as an OpenAI-compatible
//! upstream, and scripted upstreams that misbehave in specific ways.

// Tests measure real time on purpose: clippy.toml's clock policy is for the gateway.
#![allow(clippy::disallowed_methods)]

mod support;

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fikra_gateway::config::SandboxSettings;
use fikra_gateway::sandbox_server::SandboxServer;
use support::gateway::*;
use support::http::*;
use support::scripted_upstream::{SECRET_MODEL, respond, upstream_model_config};
use support::wait::{wait_for, wait_until};

fn upstream_config(base_url: &str, extra_upstream: &str) -> String {
    upstream_model_config(base_url, extra_upstream, "")
}

fn sandbox_upstream(output_tokens: u64) -> SandboxServer {
    let settings =
        SandboxSettings { time_to_first_token_ms: 0, tokens_per_second: 0, output_tokens, stamp_events: false };
    SandboxServer::start("127.0.0.1:0".parse().unwrap(), 1, settings).unwrap()
}

// Goal: a unary completion through a real upstream: the public model id replaces the upstream's,
// usage comes from the upstream and is billed exactly, nothing carries the upstream name.
#[test]
fn unary_through_upstream_is_rewritten_and_billed_from_its_usage() {
    let sandbox = sandbox_upstream(7);
    let gateway = TestGateway::start(&upstream_config(&format!("http://{}/v1", sandbox.addr), ""));
    let key = gateway.account_with_key("u1", "1.00", "live");
    let response = gateway.chat(&key, &simple_chat("fikra-flash", "hello there"));
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(!response.text().contains(SECRET_MODEL));
    assert!(response.headers.iter().all(|(_, v)| !v.contains(SECRET_MODEL)));
    let value = response.json();
    assert_eq!(value["model"], "fikra-flash");
    let (prompt, completion) =
        (value["usage"]["prompt_tokens"].as_u64().unwrap(), value["usage"]["completion_tokens"].as_u64().unwrap());
    assert_eq!(completion, 7);
    let records = gateway.usage("u1");
    assert_eq!(records.len(), 1);
    assert_eq!(
        (records[0]["prompt_tokens"].as_u64(), records[0]["completion_tokens"].as_u64()),
        (Some(prompt), Some(completion))
    );
    assert_eq!(gateway.balance_nanos("u1"), 1_000_000_000 - (prompt + completion) * 500);
    assert_eq!(gateway.account("u1")["held_usd"], "0.000000000");
    sandbox.shutdown();
}

// Goal: a stream through a real upstream: every chunk carries the public id, usage is always
// asked of the upstream but shown only when the client asked, [DONE] ends it, billing is exact.
#[test]
fn stream_through_upstream_relays_events_and_bills_usage() {
    let sandbox = sandbox_upstream(12);
    let gateway = TestGateway::start(&upstream_config(&format!("http://{}/v1", sandbox.addr), ""));
    let key = gateway.account_with_key("s1", "1.00", "live");
    for include_usage in [false, true] {
        let body = serde_json::json!({
            "model": "fikra-flash", "stream": true,
            "stream_options": {"include_usage": include_usage},
            "messages": [{"role": "user", "content": "stream please"}]
        })
        .to_string();
        let response = gateway.chat(&key, &body);
        assert_eq!(response.status, 200);
        let text = response.text();
        assert!(!text.contains(SECRET_MODEL), "{text}");
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(*events.last().unwrap(), "data: [DONE]");
        let usage_events = events.iter().filter(|e| e.contains("\"usage\"")).count();
        assert_eq!(usage_events, usize::from(include_usage), "{text}");
        let contents =
            events.iter().filter(|e| e.contains("\"content\":\"") && !e.contains("\"content\":\"\"")).count();
        assert_eq!(contents, 12);
    }
    let records = gateway.usage("s1");
    assert_eq!(records.len(), 2);
    let charged: u64 = records.iter().map(|r| usd_to_nanos(r["cost_usd"].as_str().unwrap())).sum();
    let tokens: u64 =
        records.iter().map(|r| r["prompt_tokens"].as_u64().unwrap() + r["completion_tokens"].as_u64().unwrap()).sum();
    assert_eq!(charged, tokens * 500);
    assert!(records.iter().all(|r| r["completion_tokens"] == 12 && r["outcome"] == "completed"));
    sandbox.shutdown();
}

// Goal: pooled connections are reused: 300 sequential and 4x50 concurrent requests open at
// most workers x concurrency connections to the upstream.
#[test]
fn upstream_connections_are_pooled() {
    let sandbox = sandbox_upstream(3);
    let overrides = "[[account_overrides]]\naccount = \"pool\"\nrpm = 1000000\ntpm = 1000000000\n";
    let gateway =
        TestGateway::start(&format!("{}{overrides}", upstream_config(&format!("http://{}/v1", sandbox.addr), "")));
    let key = gateway.account_with_key("pool", "100", "live");
    let request = chat_request(&key, &simple_chat("fikra-flash", "pool"));
    send_many(gateway.api, &request, 300, 4, 50);
    let streamed = chat_request(
        &key,
        &serde_json::json!({"model": "fikra-flash", "stream": true, "messages": [{"role": "user", "content": "s"}]})
            .to_string(),
    );
    send_many(gateway.api, &streamed, 100, 0, 0);
    let opened = sandbox.metrics.workers[0].connections_accepted.load(Ordering::Relaxed);
    // 2 gateway workers x 4 concurrent clients at most, streams included.
    assert!((1..=8).contains(&opened), "{opened} upstream connections for 600 requests");
    sandbox.shutdown();
}

fn scripted_upstream(script: impl Fn(usize, &mut TcpStream) + Send + Sync + 'static) -> SocketAddr {
    support::scripted_upstream::scripted_upstream(SECRET_MODEL, script)
}

fn read_request(stream: &mut TcpStream) -> bool {
    support::scripted_upstream::read_request(stream, SECRET_MODEL)
}

// Goal: upstream refusals map to the error table: 429 -> 503 with the upstream's retry-after,
// 401 -> 502 without a word of the upstream's body, 400 -> 400 with the upstream model name
// replaced by the public id; each settles at zero.
#[test]
fn upstream_statuses_map_to_the_error_table() {
    let addr = scripted_upstream(|n, stream| match n % 3 {
        0 => respond(stream, "429 Too Many Requests", "retry-after: 7\r\n", r#"{"error":{"message":"slow down"}}"#),
        1 => respond(stream, "401 Unauthorized", "", r#"{"error":{"message":"Invalid API Key gsk_live_secret"}}"#),
        _ => respond(
            stream,
            "400 Bad Request",
            "",
            &format!(
                r#"{{"error":{{"message":"model {SECRET_MODEL} does not support logit_bias","type":"invalid_request_error"}}}}"#
            ),
        ),
    });
    let gateway = TestGateway::start(&upstream_config(&format!("http://{addr}/v1"), ""));
    let key = gateway.account_with_key("st", "1.00", "live");
    let body = simple_chat("fikra-flash", "x");
    let busy = gateway.chat(&key, &body);
    assert_eq!(busy.status, 503);
    assert_eq!(busy.error().1, "service_unavailable");
    assert_eq!(busy.header("retry-after"), Some("7"));
    assert_eq!(busy.header("x-should-retry"), Some("true"));
    let unauthorized = gateway.chat(&key, &body);
    assert_eq!(unauthorized.status, 502);
    assert_eq!(unauthorized.error().1, "upstream_unavailable");
    assert!(!unauthorized.text().contains("gsk_live_secret") && !unauthorized.text().contains("Invalid API Key"));
    let rejected = gateway.chat(&key, &body);
    assert_eq!(rejected.status, 400);
    assert_eq!(rejected.error().0, "invalid_request_error");
    assert_eq!(rejected.message(), "model fikra-flash does not support logit_bias");
    assert_eq!(gateway.balance_nanos("st"), 1_000_000_000);
    assert_eq!(gateway.account("st")["held_usd"], "0.000000000");
}

// Goal: an upstream that accepts but never answers gets 504 at the response deadline, fast.
#[test]
fn silent_upstream_times_out_with_504() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // The upstream holds its connection, unanswered, until the test ends (`release` dropped).
    let (release, released) = std::sync::mpsc::channel::<()>();
    let _holder = std::thread::spawn(move || {
        let connections: Vec<_> = listener.incoming().take(1).collect();
        let _ = released.recv();
        drop(connections);
    });
    let gateway = TestGateway::start(&upstream_config(&format!("http://{addr}/v1"), "response_timeout_ms = 300"));
    let key = gateway.account_with_key("slow", "1.00", "live");
    let started = Instant::now();
    let response = gateway.chat(&key, &simple_chat("fikra-flash", "anyone?"));
    let waited = started.elapsed();
    assert_eq!(response.status, 504);
    assert_eq!(response.error().1, "upstream_timeout");
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(3), "{waited:?}");
    assert_eq!(gateway.account("slow")["held_usd"], "0.000000000");
    drop(release);
}

// Goal: an upstream closing mid-stream ends the client's stream with one error event and no
// [DONE]; the request is settled (held back to zero, a backend_failed ledger line).
#[test]
fn upstream_closing_mid_stream_ends_with_an_error_event() {
    let addr = scripted_upstream(|_, stream| {
        let _ =
            write!(stream, "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n");
        let event = format!(
            "data: {{\"id\":\"c\",\"model\":\"{SECRET_MODEL}\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"half\"}}}}]}}\n\n"
        );
        let _ = write!(stream, "{:x}\r\n{event}\r\n", event.len());
        let _ = stream.flush();
        let _ = stream.shutdown(std::net::Shutdown::Both);
    });
    let gateway = TestGateway::start(&upstream_config(&format!("http://{addr}/v1"), ""));
    let key = gateway.account_with_key("cut", "1.00", "live");
    let body =
        serde_json::json!({"model": "fikra-flash", "stream": true, "messages": [{"role": "user", "content": "go"}]})
            .to_string();
    let response = gateway.chat(&key, &body);
    assert_eq!(response.status, 200);
    let text = response.text();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 2, "{text}");
    assert!(events[0].contains("\"model\":\"fikra-flash\"") && events[0].contains("half"));
    assert!(events[1].starts_with("data: {\"error\":{"), "{}", events[1]);
    assert!(!text.contains("[DONE]") && !text.contains(SECRET_MODEL));
    let records = gateway.usage("cut");
    assert_eq!(records[0]["outcome"], "backend_failed");
    assert_eq!(gateway.account("cut")["held_usd"], "0.000000000");
}

// Goal: a pooled connection the upstream closed while idle does not fail the next request.
#[test]
fn connection_closed_while_idle_is_retried_on_a_fresh_one() {
    let closed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let upstream_closed = closed.clone();
    let addr = scripted_upstream(move |_, stream| {
        let body = format!(
            r#"{{"id":"c","object":"chat.completion","model":"{SECRET_MODEL}","choices":[],"usage":{{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}}}"#
        );
        respond(stream, "200 OK", "", &body);
        // Keep-alive was promised, but the upstream drops the connection right after.
        let _ = stream.shutdown(std::net::Shutdown::Both);
        upstream_closed.fetch_add(1, Ordering::SeqCst);
    });
    let gateway = TestGateway::start_config(config_with(&format!(
        "workers = 1\n{}",
        upstream_config(&format!("http://{addr}/v1"), "")
    )));
    let key = gateway.account_with_key("idle", "1.00", "live");
    for served in 1..=3 {
        let response = gateway.chat(&key, &simple_chat("fikra-flash", "again"));
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.json()["model"], "fikra-flash");
        // The next request must find its pooled connection already closed by the upstream.
        let closed_in_time = wait_until(Duration::from_secs(5), || closed.load(Ordering::SeqCst) == served);
        assert!(closed_in_time, "the upstream closed connection {served}");
    }
    assert_eq!(gateway.balance_nanos("idle"), 1_000_000_000 - 3 * 5 * 500);
}

fn paced_sandbox() -> SandboxServer {
    let settings =
        SandboxSettings { time_to_first_token_ms: 0, tokens_per_second: 20, output_tokens: 20, stamp_events: false };
    SandboxServer::start("127.0.0.1:0".parse().unwrap(), 1, settings).unwrap()
}

fn stream_request(key: &str) -> String {
    chat_request(key, &serde_json::json!({"model": "fikra-flash", "stream": true, "messages": [{"role": "user", "content": "slowly"}]}).to_string())
}

// Goal: through an upstream emitting 20 chunks 50 ms apart, the client holds the first content
// chunk while the upstream has produced fewer than all 20 (order of events, not a time budget).
#[test]
fn upstream_stream_reaches_the_client_as_it_is_generated() {
    let sandbox = paced_sandbox();
    let gateway = TestGateway::start(&upstream_config(&format!("http://{}/v1", sandbox.addr), ""));
    let key = gateway.account_with_key("live-stream", "1.00", "live");
    let stream = connect(gateway.api);
    (&stream).write_all(stream_request(&key).as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    next_sse_data(&mut reader).unwrap();
    let first_content = next_sse_data(&mut reader).unwrap();
    assert!(first_content.contains("\"content\""), "{first_content}");
    let produced = sandbox.metrics.workers[0].sandbox_chunks_emitted.load(Ordering::Relaxed);
    assert!(produced < 20, "upstream had produced {produced} chunks");
    let mut rest = 0;
    while let Some(data) = next_sse_data(&mut reader) {
        if data == "[DONE]" {
            break;
        }
        rest += 1;
    }
    assert_eq!(rest, 19 + 1, "19 more content chunks and the finish chunk");
    sandbox.shutdown();
}

// Goal: a client leaving mid-stream is settled within a second, from the upstream's own usage
// (the gateway keeps reading the upstream briefly) or from what was delivered, never above the hold.
#[test]
fn client_leaving_an_upstream_stream_is_settled_within_a_second() {
    let sandbox = paced_sandbox();
    let gateway = TestGateway::start(&upstream_config(&format!("http://{}/v1", sandbox.addr), ""));
    let key = gateway.account_with_key("leaver", "1.00", "live");
    let stream = connect(gateway.api);
    (&stream).write_all(stream_request(&key).as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    for _ in 0..4 {
        next_sse_data(&mut reader).unwrap();
    }
    drop(reader);
    let left = Instant::now();
    let record = wait_for(Duration::from_secs(3), || gateway.usage("leaver").first().cloned()).expect("settled");
    let settled_after = left.elapsed();
    assert!(settled_after < Duration::from_millis(1500), "settled after {settled_after:?}");
    assert_eq!(record["outcome"], "client_aborted");
    let cost = usd_to_nanos(record["cost_usd"].as_str().unwrap());
    let tokens = record["prompt_tokens"].as_u64().unwrap() + record["completion_tokens"].as_u64().unwrap();
    assert_eq!(cost, tokens * 500);
    assert!((3..=20).contains(&record["completion_tokens"].as_u64().unwrap()), "{record}");
    assert_eq!(gateway.account("leaver")["held_usd"], "0.000000000");
    sandbox.shutdown();
}

// Goal: a close-delimited upstream answer (no Content-Length, no chunking, then EOF) is read to
// its end, relayed and billed, and the closed connection is not pooled.
#[test]
fn close_delimited_upstream_answer_is_relayed() {
    let addr = scripted_upstream(|_, stream| {
        let body = format!(
            r#"{{"id":"c","object":"chat.completion","model":"{SECRET_MODEL}","choices":[],"usage":{{"prompt_tokens":4,"completion_tokens":6,"total_tokens":10}}}}"#
        );
        let _ = write!(stream, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{body}");
        let _ = stream.shutdown(std::net::Shutdown::Both);
    });
    let gateway = TestGateway::start(&upstream_config(&format!("http://{addr}/v1"), ""));
    let key = gateway.account_with_key("eof", "1.00", "live");
    for _ in 0..2 {
        let response = gateway.chat(&key, &simple_chat("fikra-flash", "until eof"));
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.json()["model"], "fikra-flash");
    }
    assert_eq!(gateway.balance_nanos("eof"), 1_000_000_000 - 2 * 10 * 500);
}

// Goal: idle pooled connections are closed once their idle timeout passes, without any further
// request: 8 concurrent requests open exactly 8 upstream connections, and after the upstream's
// 200 ms `pool_idle_timeout_ms` the worker's sweep closes all 8 (the upstream sees EOF on each)
// and counts them in `fikra_upstream_idle_closed_total`.
#[test]
fn idle_pooled_connections_are_closed_after_their_idle_timeout() {
    const CONCURRENT: usize = 8;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = std::sync::Arc::new([(); 3].map(|_| std::sync::atomic::AtomicUsize::new(0)));
    let [opened, in_flight, closed] = [0, 1, 2];
    let upstream_counts = counts.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(CONCURRENT) {
            let Ok(mut stream) = stream else { return };
            let counts = upstream_counts.clone();
            counts[opened].fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                while read_request(&mut stream) {
                    // Hold every answer until all requests are in flight, so none shares a connection.
                    counts[in_flight].fetch_add(1, Ordering::SeqCst);
                    wait_until(Duration::from_secs(10), || counts[in_flight].load(Ordering::SeqCst) >= CONCURRENT);
                    let body = format!(
                        r#"{{"id":"c","object":"chat.completion","model":"{SECRET_MODEL}","choices":[],"usage":{{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}}}"#
                    );
                    respond(&mut stream, "200 OK", "", &body);
                }
                // EOF: the gateway closed this connection.
                counts[closed].fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    let overrides = "[[account_overrides]]\naccount = \"sweep\"\nrpm = 1000000\ntpm = 1000000000\n";
    let upstream = upstream_config(&format!("http://{addr}/v1"), "pool_idle_timeout_ms = 200");
    let gateway = TestGateway::start(&format!("{upstream}{overrides}"));
    let key = gateway.account_with_key("sweep", "1.00", "live");
    let clients: Vec<_> = (0..CONCURRENT)
        .map(|_| {
            let (api, request) = (gateway.api, chat_request(&key, &simple_chat("fikra-flash", "idle")));
            std::thread::spawn(move || send_one(api, request.as_bytes()).status)
        })
        .collect();
    let statuses: Vec<u16> = clients.into_iter().map(|client| client.join().unwrap()).collect();
    assert_eq!(statuses, [200; CONCURRENT]);
    assert_eq!(counts[opened].load(Ordering::SeqCst), CONCURRENT);
    let all_closed = wait_until(Duration::from_secs(10), || counts[closed].load(Ordering::SeqCst) == CONCURRENT);
    assert!(all_closed, "{} of {CONCURRENT} idle connections closed", counts[closed].load(Ordering::SeqCst));
    let counted = wait_for(Duration::from_secs(5), || {
        let swept = metric(gateway.admin, "fikra_upstream_idle_closed_total");
        (swept == CONCURRENT as u64).then_some(swept)
    });
    assert_eq!(counted, Some(CONCURRENT as u64));
    assert_eq!(counts[opened].load(Ordering::SeqCst), CONCURRENT);
}
