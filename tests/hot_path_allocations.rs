//! The hot path does not allocate per request once warm. A counting global allocator measures
//! every allocation in the process while a client (which itself does not allocate in the
//! measured loop: pre-built request bytes, a fixed read buffer) sends requests over one
//! keep-alive connection.

// Tests may lock (a std Mutex serialises measurements): clippy.toml's lock policy is for the
// gateway.
#![allow(clippy::disallowed_types)]

mod support;

use std::io::{Read, Write};

use support::counting_allocator::{CountingAllocator, allocations};
use support::gateway::*;
use support::http::*;
use support::scripted_upstream::fixed_answer_upstream;

/// The counter is process-wide: tests that read it take turns.
static MEASURING: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Sends `request` `count` times on one connection, reading each response of known length
/// into a fixed buffer; returns the allocations counted meanwhile.
fn allocations_for(stream: &mut std::net::TcpStream, request: &[u8], response_len: usize, count: usize) -> u64 {
    let mut buffer = vec![0u8; response_len];
    let before = allocations();
    for _ in 0..count {
        stream.write_all(request).unwrap();
        stream.read_exact(&mut buffer).unwrap();
    }
    allocations() - before
}

/// The exact byte length of the response to `request` (so the loop can read it without parsing).
fn response_len(gateway: &TestGateway, request: &[u8]) -> usize {
    let response = send_one(gateway.api, request);
    let head_len = {
        let mut text = format!("HTTP/1.1 {} x\r\n", response.status);
        for (name, value) in &response.headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.len() + 2
    };
    // Reason phrases differ in length from "x": measure the real status line instead.
    let reason_len = match response.status {
        200 => "OK".len(),
        400 => "Bad Request".len(),
        401 => "Unauthorized".len(),
        404 => "Not Found".len(),
        _ => panic!("unexpected status {}", response.status),
    };
    head_len - 1 + reason_len + response.body.len()
}

// Goal: once warm, refusing an unknown key (401), answering an unknown path (404), refusing bad
// JSON (400) and listing models (200) allocate nothing at all, anywhere in the process.
#[test]
fn refusals_and_model_listing_do_not_allocate_once_warm() {
    let _turn = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let gateway = TestGateway::start_config(config_with("workers = 1\n"));
    let key = gateway.account_with_key("alloc", "1.00", "live");
    let unknown_key = format!("fk_live_{}", "Z".repeat(32));
    let cases = [
        ("401 unknown key", chat_request(&unknown_key, &simple_chat("fikra-flash", "hi"))),
        ("404 unknown path", "GET /v1/nothing HTTP/1.1\r\nhost: t\r\n\r\n".to_string()),
        ("400 invalid json", chat_request(&key, "{not json")),
        ("200 models", format!("GET /v1/models HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {key}\r\n\r\n")),
    ];
    for (name, request) in cases {
        let length = response_len(&gateway, request.as_bytes());
        let mut stream = connect(gateway.api);
        // Warm up: connection buffers, the worker's key cache, the date cache.
        allocations_for(&mut stream, request.as_bytes(), length, 50);
        let counted = allocations_for(&mut stream, request.as_bytes(), length, 500);
        assert_eq!(counted, 0, "{name}: {counted} allocations over 500 requests");
    }
}

// Goal: a full completion (auth, parse, admit, sandbox answer, settle) allocates nothing once
// warm, though the embedded store keeps a hold and a ledger line per request: the request id
// is kept inline and the key id is interned (the one its spend entry holds).
#[test]
fn completion_does_not_allocate_once_warm() {
    let _turn = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let gateway = TestGateway::start_config(config_with(
        "workers = 1\n[[account_overrides]]\naccount = \"alloc2\"\nrpm = 1000000\ntpm = 1000000000\n",
    ));
    let key = gateway.account_with_key("alloc2", "1000", "live");
    let request = chat_request(&key, &simple_chat("fikra-flash", "how many allocations?"));
    let length = response_len(&gateway, request.as_bytes());
    let mut stream = connect(gateway.api);
    allocations_for(&mut stream, request.as_bytes(), length, 50);
    let counted = allocations_for(&mut stream, request.as_bytes(), length, 500);
    println!("completion: {counted} allocations over 500 requests");
    // What does allocate is no request's own: the account's ledger (a deque up to its cap of
    // records) doubles as it fills, 4 times over these 500 (at 64, 128, 256 and 512 lines).
    assert_eq!(per_request(counted, 500), 0, "{counted} allocations over 500 requests");
    assert!(counted <= 4, "{counted} allocations over 500 requests");
}

// Goal: the access log costs no allocation per request once warm: a worker's line goes into its
// reused buffer and full buffers travel to the writer and back (the writer keeps up here: its
// output is a sink that discards).
#[test]
fn access_log_lines_do_not_allocate_once_warm() {
    use fikra_gateway::access_log::{ACCESS_LOG_BATCH_BYTES, AccessRecord, start, write_json_line};
    let _turn = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let dropped = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let workers = start(1, std::io::sink(), dropped.clone()).unwrap();
    let lines = std::cell::RefCell::new(Vec::with_capacity(ACCESS_LOG_BATCH_BYTES));
    let record = AccessRecord {
        time_ms: 1_796_170_812_345,
        request_id: Some("req_0123456789abcdef01234567"),
        account_id: Some("acct_1"),
        key_id: Some("key_1"),
        method: "POST",
        path: "/v1/chat/completions",
        status: 200,
        model: Some("fikra-flash"),
        duration_us: 1_234,
        ..AccessRecord::default()
    };
    let log = |count: usize| {
        let before = allocations();
        for _ in 0..count {
            let full = {
                let mut lines = lines.borrow_mut();
                write_json_line(&mut lines, &record);
                lines.len() >= ACCESS_LOG_BATCH_BYTES
            };
            if full {
                workers[0].hand_over(&lines);
                // Give the writer its turn, as the worker's other requests would.
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
        allocations() - before
    };
    log(2_000);
    let counted = log(20_000);
    assert_eq!(counted, 0, "{counted} allocations over 20,000 access-log lines");
    assert_eq!(dropped.load(std::sync::atomic::Ordering::Relaxed), 0);
}

/// The exact byte length of the raw answer to `request` on a fresh connection: a
/// content-length answer by its header, a chunked one (a stream) up to its last chunk.
fn raw_response_len(gateway: &TestGateway, request: &[u8]) -> usize {
    let mut stream = connect(gateway.api);
    stream.write_all(request).unwrap();
    let (mut raw, mut piece) = (Vec::new(), [0u8; 4096]);
    loop {
        let read = stream.read(&mut piece).unwrap();
        assert!(read > 0, "closed early: {}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&piece[..read]);
        let text = String::from_utf8_lossy(&raw).to_string();
        let Some(head_end) = text.find("\r\n\r\n") else { continue };
        let head = text[..head_end].to_ascii_lowercase();
        let length = head.lines().find_map(|line| line.strip_prefix("content-length: ").map(|v| v.trim().to_string()));
        match length {
            Some(length) if raw.len() >= head_end + 4 + length.parse::<usize>().unwrap() => {
                return head_end + 4 + length.parse::<usize>().unwrap();
            }
            None if text.ends_with("\r\n0\r\n\r\n") => return raw.len(),
            _ => {}
        }
    }
}

/// Allocations per request once warm (500 requests after 50), for `request` on `gateway`.
fn warm_allocations(gateway: &TestGateway, request: &str) -> u64 {
    let length = raw_response_len(gateway, request.as_bytes());
    let mut stream = connect(gateway.api);
    allocations_for(&mut stream, request.as_bytes(), length, 50);
    allocations_for(&mut stream, request.as_bytes(), length, 500)
}

const RESPONSES_LIMITS: &str =
    "workers = 1\n\n[[account_overrides]]\naccount = \"resp\"\nrpm = 1000000\ntpm = 1000000000\n";

/// The allocations the embedded store makes per completion (see
/// `completion_does_not_allocate_once_warm`).
const STORE_ALLOCATIONS_PER_REQUEST: u64 = 0;

/// Allocations per request over `count` requests, counted in whole requests: a stray buffer
/// growth or two among 500 requests does not make a per-request allocation.
fn per_request(counted: u64, count: u64) -> u64 {
    counted / count
}

// Goal: a Responses request translated to chat, unary and streamed, allocates per warm request
// exactly what the same chat completion allocates (nothing: see `completion_does_not_allocate_once_warm`)
// and nothing more: the parse, the translation, the answer's rewrite into a Response object or
// typed events, and the cost in the terminal usage add no allocation. The same holds for a
// model with `tokenizer = "o200k_base"` whose requests the byte bound admits in full (the
// tokenizer is never reached).
#[test]
fn responses_requests_allocate_only_what_the_store_does_once_warm() {
    use support::responses::responses_request;
    let _turn = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let tokenized = "[[models]]\nid = \"fikra-flash\"\nupstream = \"sandbox\"\n\
        input_usd_per_million = \"0.5\"\noutput_usd_per_million = \"0.5\"\nmax_output_tokens = 64\n\
        tokenizer = \"o200k_base\"\n";
    for (name, models) in [("reference registry", ""), ("o200k_base model", tokenized)] {
        let gateway = TestGateway::start_config(config_with(&format!("{RESPONSES_LIMITS}{models}")));
        let key = gateway.account_with_key("resp", "1000", "live");
        let unary = r#"{"model":"fikra-flash","input":"how many allocations?"}"#;
        let streamed = r#"{"model":"fikra-flash","input":"how many allocations?","stream":true}"#;
        let chat = simple_chat("fikra-flash", "how many allocations?");
        let chat_streamed =
            r#"{"model":"fikra-flash","messages":[{"role":"user","content":"how many allocations?"}],"stream":true}"#;
        let measured = [
            ("chat unary", warm_allocations(&gateway, &chat_request(&key, &chat))),
            ("chat stream", warm_allocations(&gateway, &chat_request(&key, chat_streamed))),
            ("responses unary", warm_allocations(&gateway, &responses_request(&key, unary))),
            ("responses stream", warm_allocations(&gateway, &responses_request(&key, streamed))),
        ];
        for (path, counted) in measured {
            println!("{name}, {path}: {counted} allocations over 500 requests");
            assert_eq!(per_request(counted, 500), STORE_ALLOCATIONS_PER_REQUEST, "{name}, {path}: {counted}");
        }
    }
}

// Goal: a Responses request passed natively to an upstream with `responses = true`, unary and
// streamed, allocates per warm request exactly what a chat completion through an upstream does
// (nothing, as the embedded store and the relay's read buffer allocate nothing once warm): the
// body rewrite, the relay of the object or of each typed event with the public id, and the
// cost in the terminal usage add no allocation.
#[test]
fn native_responses_allocate_only_what_the_store_does_once_warm() {
    use support::responses::responses_request;
    let _turn = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let model = "vendor/secret-model-9b";
    let usage = r#"{"input_tokens":12,"input_tokens_details":{"cached_tokens":0},"output_tokens":2,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":14}"#;
    let (unary, streamed) = support::responses::native_answers(model, usage);
    let chat_body = format!(
        r#"{{"id":"c1","object":"chat.completion","created":1,"model":"{model}","choices":[{{"index":0,"message":{{"role":"assistant","content":"ok"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}}}"#
    );
    let chat_answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{chat_body}",
        chat_body.len()
    );
    // The baseline: a chat completion through the same kind of upstream.
    let chat_on_upstream = {
        let base_url = fixed_answer_upstream(chat_answer.leak().as_bytes(), b"");
        let models = support::scripted_upstream::upstream_model_config(&base_url, "", "");
        let gateway = TestGateway::start_config(config_with(&format!("{RESPONSES_LIMITS}{models}")));
        let key = gateway.account_with_key("resp", "1000", "live");
        let request = chat_request(&key, &simple_chat("fikra-flash", "how many allocations?"));
        assert_eq!(send_one(gateway.api, request.as_bytes()).status, 200);
        let counted = warm_allocations(&gateway, &request);
        println!("chat through an upstream: {counted} allocations over 500 requests");
        per_request(counted, 500)
    };
    // The relay keeps its read buffers across exchanges (the worker's upstream pool).
    assert_eq!(chat_on_upstream, STORE_ALLOCATIONS_PER_REQUEST);
    for (name, answer, body) in [
        ("native unary", unary, r#"{"model":"fikra-flash","input":"how many allocations?"}"#),
        ("native stream", streamed, r#"{"model":"fikra-flash","input":"how many allocations?","stream":true}"#),
    ] {
        let base_url = fixed_answer_upstream(answer, answer);
        let models = support::scripted_upstream::upstream_model_config(&base_url, "responses = true", "");
        let gateway = TestGateway::start_config(config_with(&format!("{RESPONSES_LIMITS}{models}")));
        let key = gateway.account_with_key("resp", "1000", "live");
        let request = responses_request(&key, body);
        assert_eq!(send_one(gateway.api, request.as_bytes()).status, 200, "{name}");
        let counted = warm_allocations(&gateway, &request);
        println!("{name}: {counted} allocations over 500 requests");
        assert_eq!(per_request(counted, 500), chat_on_upstream, "{name}: {counted}");
    }
}
