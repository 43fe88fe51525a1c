//! Raw-bytes HTTP/1.1 behaviour over real sockets: keep-alive, pipelining, limits,
//! smuggling-shaped inputs, slow and half-closed clients, 100-continue.

// Tests measure real time on purpose: clippy.toml's clock policy is for the gateway.
#![allow(clippy::disallowed_methods)]

mod support;

use std::io::{BufReader, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use support::gateway::*;
use support::http::*;

fn models_request(key: &str) -> String {
    format!("GET /v1/models HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {key}\r\n\r\n")
}

/// Reads until the server closes; true if it closed (EOF) within the socket timeout.
fn closed_by_server(reader: &mut BufReader<std::net::TcpStream>) -> bool {
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).is_ok() && rest.is_empty()
}

// Goal: three pipelined requests in one write get three responses, in order, on one connection.
#[test]
fn pipelined_requests_are_answered_in_order() {
    let gateway = TestGateway::start("");
    let key = gateway.account_with_key("pipe", "1.00", "live");
    let stream = connect(gateway.api);
    let body = simple_chat("fikra-flash", "first");
    let batch =
        format!("{}{}{}", models_request(&key), chat_request(&key, &body), "GET /nope HTTP/1.1\r\nhost: t\r\n\r\n");
    (&stream).write_all(batch.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let first = read_response(&mut reader).unwrap();
    let second = read_response(&mut reader).unwrap();
    let third = read_response(&mut reader).unwrap();
    assert_eq!((first.status, second.status, third.status), (200, 200, 404));
    assert_eq!(first.json()["object"], "list");
    assert_eq!(second.json()["object"], "chat.completion");
    assert_eq!(third.error().1, "unknown_endpoint");
}

// Goal: a head over 32 KiB gets 431 headers_too_large and the connection closes.
#[test]
fn oversized_head_gets_431() {
    let gateway = TestGateway::start("");
    let stream = connect(gateway.api);
    let request = format!("GET /v1/models HTTP/1.1\r\nhost: t\r\nx-padding: {}\r\n\r\n", "a".repeat(33 * 1024));
    let _ = (&stream).write_all(request.as_bytes());
    let mut reader = BufReader::new(stream);
    let response = read_response(&mut reader).unwrap();
    assert_eq!(response.status, 431);
    assert_eq!(response.error(), ("invalid_request_error".into(), "headers_too_large".into(), None));
    assert_eq!(response.header("connection"), Some("close"));
}

// Goal: a declared body over 4 MiB gets 413 request_too_large without the body being read.
#[test]
fn oversized_body_gets_413() {
    let gateway = TestGateway::start("");
    let key = gateway.account_with_key("big", "1.00", "live");
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {key}\r\ncontent-length: {}\r\n\r\n",
        4 * 1024 * 1024 + 1
    );
    let response = send_one(gateway.api, request.as_bytes());
    assert_eq!(response.status, 413);
    assert_eq!(response.error().1, "request_too_large");
}

// Goal: `[server] max_body_bytes` bounds every listener the config serves, the admin one too:
// a 2 KiB admin body under a 1 KiB limit gets 413 and creates nothing; a small one passes.
#[test]
fn the_configured_body_limit_applies_to_the_admin_listener() {
    let gateway = TestGateway::start_config(config_with("max_body_bytes = 1024\n"));
    let padding = "x".repeat(2048);
    let body = format!("{{\"id\":\"padded\",\"signup_credit_usd\":\"1.00\",\"pad\":\"{padding}\"}}");
    let request = format!(
        "POST /admin/accounts HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {ADMIN_TOKEN}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = send_one(gateway.admin, request.as_bytes());
    assert_eq!(response.status, 413, "{}", response.text());
    assert_eq!(response.error().1, "request_too_large");
    gateway.admin_json("GET", "/admin/accounts/padded", "", 404);
    gateway.admin_json("POST", "/admin/accounts", r#"{"id":"small","signup_credit_usd":"1.00"}"#, 201);
}

// Goal: a chunked body over the limit is refused with 413 as soon as a chunk size says so.
#[test]
fn oversized_chunked_body_gets_413() {
    let gateway = TestGateway::start("");
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n",
        4 * 1024 * 1024 + 1
    );
    let response = send_one(gateway.api, request.as_bytes());
    assert_eq!(response.status, 413);
}

// Goal: smuggling-shaped framing is refused with 400 and the connection closed, never forwarded.
#[test]
fn conflicting_framing_is_refused_and_closed() {
    let gateway = TestGateway::start("");
    let cases = [
        "POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
        "POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-length: +5\r\n\r\nhello",
        "POST /v1/chat/completions HTTP/1.0\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        "GET http://evil/v1/models HTTP/1.1\r\nhost: t\r\n\r\n",
    ];
    for case in cases {
        let stream = connect(gateway.api);
        (&stream).write_all(case.as_bytes()).unwrap();
        let mut reader = BufReader::new(stream);
        let response = read_response(&mut reader).unwrap_or_else(|| panic!("no response to {case:?}"));
        assert_eq!(response.status, 400, "{case:?}: {}", response.text());
        assert_eq!(response.error().0, "invalid_request_error");
        assert_eq!(response.header("connection"), Some("close"), "{case:?}");
        assert!(closed_by_server(&mut reader), "{case:?} left the connection open");
    }
}

// Goal: identical duplicate Content-Length headers are fine; the request is served.
#[test]
fn identical_duplicate_content_length_is_accepted() {
    let gateway = TestGateway::start("");
    let key = gateway.account_with_key("dup", "1.00", "live");
    let body = simple_chat("fikra-flash", "hi");
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {key}\r\ncontent-length: {0}\r\ncontent-length: {0}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(send_one(gateway.api, request.as_bytes()).status, 200);
}

// Goal: a chunked request body (with an extension and a trailer) is decoded and served.
#[test]
fn chunked_request_body_is_served() {
    let gateway = TestGateway::start("");
    let key = gateway.account_with_key("chunky", "1.00", "live");
    let body = simple_chat("fikra-flash", "chunked hello");
    let (a, b) = body.split_at(10);
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {key}\r\ntransfer-encoding: chunked\r\n\r\n{:x};ext=1\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\nx-trailer: 1\r\n\r\n",
        a.len(),
        b.len()
    );
    let response = send_one(gateway.api, request.as_bytes());
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["model"], "fikra-flash");
}

// Goal: `Expect: 100-continue` gets an interim 100 before the body is sent, then the answer.
#[test]
fn expect_continue_gets_100_first() {
    let gateway = TestGateway::start("");
    let key = gateway.account_with_key("cont", "1.00", "live");
    let body = simple_chat("fikra-flash", "continue");
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {key}\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let stream = connect(gateway.api);
    (&stream).write_all(head.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let interim = read_response(&mut reader).unwrap();
    assert_eq!(interim.status, 100);
    (&stream).write_all(body.as_bytes()).unwrap();
    let response = read_response(&mut reader).unwrap();
    assert_eq!(response.status, 200);
    // Any other expectation is refused with 417 and the connection closed.
    let other = send_one(
        gateway.api,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\nexpect: 200-ok\r\ncontent-length: 2\r\n\r\n{}",
    );
    assert_eq!(other.status, 417);
    assert_eq!(other.error(), ("invalid_request_error".into(), "unsupported_expectation".into(), None));
    assert_eq!(other.header("connection"), Some("close"));
}

// Goal: `Connection: close` is honoured: one answer carrying `connection: close`, then EOF.
#[test]
fn connection_close_is_honoured() {
    let gateway = TestGateway::start("");
    let key = gateway.account_with_key("closer", "1.00", "live");
    let stream = connect(gateway.api);
    let request =
        format!("GET /v1/models HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {key}\r\nconnection: close\r\n\r\n");
    (&stream).write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let response = read_response(&mut reader).unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(closed_by_server(&mut reader));
}

// Goal: a client that half-closes after sending its request still receives the answer.
#[test]
fn half_closed_client_still_gets_its_answer() {
    let gateway = TestGateway::start("");
    let key = gateway.account_with_key("half", "1.00", "live");
    let stream = connect(gateway.api);
    (&stream).write_all(chat_request(&key, &simple_chat("fikra-flash", "bye")).as_bytes()).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut reader = BufReader::new(stream);
    let response = read_response(&mut reader).unwrap();
    assert_eq!(response.status, 200);
    assert!(closed_by_server(&mut reader));
}

// Goal: a slow client that never finishes its head is cut off at the head timeout (lowered to
// 300 ms here), and the worker keeps serving others meanwhile.
#[test]
fn slow_head_is_cut_off_at_the_timeout() {
    let gateway = TestGateway::start_config(config_with("head_timeout_ms = 300\n"));
    let key = gateway.account_with_key("slow", "1.00", "live");
    let stream = connect(gateway.api);
    (&stream).write_all(b"GET /v1/models HTTP/1.1\r\nhost: t\r\n").unwrap();
    let started = Instant::now();
    let other =
        send_one(gateway.api, models_request(&key).replace("\r\n\r\n", "\r\nconnection: close\r\n\r\n").as_bytes());
    assert_eq!(other.status, 200);
    let mut reader = BufReader::new(stream);
    assert!(closed_by_server(&mut reader));
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(10), "closed after {waited:?}");
}

// Goal: keep-alive connections are closed at the keep-alive timeout (lowered to 400 ms here),
// counted from the last answer, whether they never sent a byte or were served and went quiet
// (past the read grace, when the idle deadline is the worker's, not the connection's); and a
// client that pauses past the grace but not the timeout still gets its next request answered.
#[test]
fn quiet_keep_alive_connections_close_at_the_idle_timeout() {
    let gateway = TestGateway::start_config(config_with("keepalive_timeout_ms = 400\n"));
    let key = gateway.account_with_key("quiet", "1.00", "live");
    let started = Instant::now();
    let fresh = connect(gateway.api);
    let served = connect(gateway.api);
    let paused = connect(gateway.api);
    for stream in [&served, &paused] {
        let mut stream = stream;
        stream.write_all(models_request(&key).as_bytes()).unwrap();
        assert_eq!(read_response(&mut BufReader::new(stream)).unwrap().status, 200);
    }
    let answered = Instant::now();
    std::thread::sleep(Duration::from_millis(250));
    (&paused).write_all(models_request(&key).as_bytes()).unwrap();
    assert_eq!(read_response(&mut BufReader::new(&paused)).unwrap().status, 200, "the paused client's request");
    assert!(closed_by_server(&mut BufReader::new(fresh)), "the fresh connection");
    assert!(started.elapsed() >= Duration::from_millis(400), "closed after {:?}", started.elapsed());
    assert!(closed_by_server(&mut BufReader::new(served)), "the served connection");
    let waited = answered.elapsed();
    assert!(waited >= Duration::from_millis(400), "the served connection closed {waited:?} after its answer");
    assert!(waited < Duration::from_secs(5), "the served connection closed {waited:?} after its answer");
}

// Goal: garbage that is not HTTP gets a 400 JSON error, and the server stays up.
#[test]
fn garbage_gets_400_and_server_survives() {
    let gateway = TestGateway::start("");
    let response = send_one(gateway.api, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n");
    assert_eq!(response.status, 400);
    assert_eq!(response.error().1, "malformed_request");
    let key = gateway.account_with_key("after", "1.00", "live");
    assert_eq!(send_one(gateway.api, models_request(&key).as_bytes()).status, 200);
}
