//! The hot path does not allocate per request once warm. A counting global allocator measures
//! every allocation in the process while a client (which itself does not allocate in the
//! measured loop: pre-built request bytes, a fixed read buffer) sends requests over one
//! keep-alive connection: on the embedded and on the Redis store, for an account the worker
//! leases and for one it never does, from the sandbox and through socket upstreams, chat and
//! Responses, unary and streamed. What a path still allocates is named in
//! `expected_per_request`; `support::counting_allocator::trace_allocations` shows where from.

// Tests may lock (a std Mutex serialises measurements): clippy.toml's lock policy is for the
// gateway.
#![allow(clippy::disallowed_types)]

mod support;

use std::io::{Read, Write};

use support::counting_allocator::{CountingAllocator, allocations};
use support::gateway::*;
use support::http::*;
use support::scripted_upstream::{fixed_answer_upstream, upstream_model_config};

/// The counter is process-wide: tests that read it take turns.
static MEASURING: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Sends `request` `count` times on one connection, reading each response into a fixed buffer
/// (`read_response`); returns the allocations counted meanwhile. Every answer must be `status`.
fn allocations_for(stream: &mut std::net::TcpStream, request: &[u8], status: u16, count: usize) -> u64 {
    let mut buffer = vec![0u8; RESPONSE_BUFFER_BYTES];
    let before = allocations();
    for _ in 0..count {
        stream.write_all(request).unwrap();
        let answered = read_response(stream, &mut buffer);
        assert_eq!(answered, status);
    }
    allocations() - before
}

/// Room for any answer of this test, head and body.
const RESPONSE_BUFFER_BYTES: usize = 64 * 1024;

/// Reads one whole answer into `buffer` without allocating: the head, then a Content-Length
/// body or chunks up to the last one. Returns its status. (Parsed rather than read to a known
/// length: rate headers change length as the buckets drain.)
fn read_response(stream: &mut std::net::TcpStream, buffer: &mut [u8]) -> u16 {
    let mut filled = 0;
    loop {
        let read = stream.read(&mut buffer[filled..]).unwrap();
        assert!(read > 0, "closed before a whole answer");
        filled += read;
        let Some(head_end) = find(&buffer[..filled], b"\r\n\r\n") else { continue };
        let complete = match content_length(&buffer[..head_end]) {
            Some(length) => filled >= head_end + 4 + length,
            None => buffer[..filled].ends_with(b"\r\n0\r\n\r\n"),
        };
        if complete {
            return buffer[9..12].iter().fold(0, |n, digit| n * 10 + u16::from(digit - b'0'));
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// The Content-Length of a response head, if it has one.
fn content_length(head: &[u8]) -> Option<usize> {
    let name = b"\r\ncontent-length:";
    let at = head.windows(name.len()).position(|window| window.eq_ignore_ascii_case(name))? + name.len();
    let digits = head[at..].iter().skip_while(|b| **b == b' ').take_while(|b| b.is_ascii_digit());
    Some(digits.fold(0, |n, digit| n * 10 + usize::from(digit - b'0')))
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
        ("401 unknown key", 401, chat_request(&unknown_key, &simple_chat("fikra-flash", "hi"))),
        ("404 unknown path", 404, "GET /v1/nothing HTTP/1.1\r\nhost: t\r\n\r\n".to_string()),
        ("400 invalid json", 400, chat_request(&key, "{not json")),
        ("200 models", 200, format!("GET /v1/models HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {key}\r\n\r\n")),
    ];
    for (name, status, request) in cases {
        let mut stream = connect(gateway.api);
        // Warm up: connection buffers, the worker's key cache, the date cache.
        allocations_for(&mut stream, request.as_bytes(), status, 50);
        let counted = allocations_for(&mut stream, request.as_bytes(), status, 500);
        assert_eq!(counted, 0, "{name}: {counted} allocations over 500 requests");
    }
}

// Goal: the access log costs no allocation per request once warm: a worker's line goes into its
// reused buffer and full buffers travel to the writer and back. The output discards, and counts
// its flushes (one per batch) so the test hands a batch over only once the writer has written
// the ones before: the writer is never behind here, however busy the machine.
#[test]
fn access_log_lines_do_not_allocate_once_warm() {
    use fikra_gateway::access_log::{ACCESS_LOG_BATCH_BYTES, AccessRecord, start, write_json_line};
    use std::sync::atomic::{AtomicUsize, Ordering};
    struct CountingSink(std::sync::Arc<AtomicUsize>);
    impl std::io::Write for CountingSink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }
    let _turn = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let dropped = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let flushed = std::sync::Arc::new(AtomicUsize::new(0));
    let workers = start(1, CountingSink(flushed.clone()), dropped.clone()).unwrap();
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
    let handed = std::cell::Cell::new(0usize);
    let log = |count: usize| {
        let before = allocations();
        for _ in 0..count {
            let full = {
                let mut lines = lines.borrow_mut();
                write_json_line(&mut lines, &record);
                lines.len() >= ACCESS_LOG_BATCH_BYTES
            };
            if full {
                // The writer has written every earlier batch (at most one buffer is on its way
                // back; spares remain), as it would between a worker's other requests.
                let mut waits_ms = 0;
                while flushed.load(Ordering::SeqCst) < handed.get() {
                    assert!(waits_ms < 30_000, "the access-log writer wrote nothing for 30 s");
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    waits_ms += 1;
                }
                workers[0].hand_over(&lines);
                handed.set(handed.get() + 1);
            }
        }
        allocations() - before
    };
    log(2_000);
    let counted = log(20_000);
    assert_eq!(counted, 0, "{counted} allocations over 20,000 access-log lines");
    assert_eq!(dropped.load(std::sync::atomic::Ordering::Relaxed), 0);
}

/// Requests sent on one connection before counting: the connection's buffers, the worker's
/// caches and, on a busy Redis account, the worker's lease are all in place by then.
const WARM_UP_REQUESTS: usize = 300;
/// Requests counted per path.
const MEASURED_REQUESTS: u64 = 500;
/// Allocations in a measured window that are no request's own: the embedded store's ledger (a
/// deque up to its cap of lines) doubling as it fills, at most 4 times over one window.
const STRAY_ALLOCATIONS: u64 = 4;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum StoreKind {
    Embedded,
    /// The suite's own redis-server, keys under a prefix of the test's.
    Redis,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Backend {
    /// The sandbox in process.
    Sandbox,
    /// A socket upstream that allocates nothing per request (`fixed_answer_upstream`).
    Upstream,
    /// The same, with `responses = true`: `/v1/responses` passed on natively.
    NativeResponses,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Account {
    /// Limits far above the traffic: on Redis the worker leases it (checked by the lease metric).
    Busy,
    /// An RPM limit below `LEASE_MIN_RPM` (1,200): never leased, every request goes to the store.
    Small,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Call {
    ChatUnary,
    ChatStream,
    ResponsesUnary,
    ResponsesStream,
}

impl Call {
    fn request(self, key: &str) -> String {
        use support::responses::responses_request;
        let input = "how many allocations?";
        match self {
            Call::ChatUnary => chat_request(key, &simple_chat("fikra-flash", input)),
            Call::ChatStream => chat_request(
                key,
                &format!(
                    r#"{{"model":"fikra-flash","messages":[{{"role":"user","content":"{input}"}}],"stream":true}}"#
                ),
            ),
            Call::ResponsesUnary => responses_request(key, &format!(r#"{{"model":"fikra-flash","input":"{input}"}}"#)),
            Call::ResponsesStream => {
                responses_request(key, &format!(r#"{{"model":"fikra-flash","input":"{input}","stream":true}}"#))
            }
        }
    }
}

/// The allocations a warm request makes on each path, and why.
fn expected_per_request(store: StoreKind, account: Account) -> u64 {
    match (store, account) {
        (StoreKind::Embedded, _) => 0,
        // Admitted and settled on the worker's lease: nothing (the queued `LeaseRecord` keeps
        // its ids inline; the lease calls that pay for the records are strays).
        (StoreKind::Redis, Account::Busy) => 0,
        // Admitted and settled by `fk_hold` and `fk_charge`: nothing either (each reply is
        // read where it lies in the connection's read buffer, `redis::Frame`).
        (StoreKind::Redis, Account::Small) => 0,
    }
}

/// Requests of the busy account that may miss the lease and go to the store.
const LEASE_MISSES: u64 = 5;

/// Allocations in a measured window that are no request's own, by store: the embedded
/// ledger's doubling (`STRAY_ALLOCATIONS`); on Redis also the worker's background calls
/// (each lease call builds its arguments and ledger lines; heartbeats and the reaper's scans)
/// and the store calls of the `LEASE_MISSES`.
fn stray_allocations(store: StoreKind) -> u64 {
    match store {
        StoreKind::Embedded => STRAY_ALLOCATIONS,
        StoreKind::Redis => 200,
    }
}

/// The answers of a chat upstream that allocates nothing per request: a completion, and the
/// same as two SSE chunks (the second with usage) and `[DONE]`.
fn chat_upstream_answers() -> (&'static [u8], &'static [u8]) {
    let model = support::scripted_upstream::SECRET_MODEL;
    let usage = r#""usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}"#;
    let body = format!(
        r#"{{"id":"c1","object":"chat.completion","created":1,"model":"{model}","choices":[{{"index":0,"message":{{"role":"assistant","content":"ok"}},"finish_reason":"stop"}}],{usage}}}"#
    );
    let unary =
        format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len());
    let chunk = |delta: &str, finish: &str, usage: &str| {
        format!(
            r#"data: {{"id":"c1","object":"chat.completion.chunk","created":1,"model":"{model}","choices":[{{"index":0,"delta":{delta},"finish_reason":{finish}}}]{usage}}}"#
        ) + "\n\n"
    };
    let events = [
        chunk(r#"{"role":"assistant","content":"ok"}"#, "null", ""),
        chunk("{}", r#""stop""#, &format!(",{usage}")),
        "data: [DONE]\n\n".to_string(),
    ];
    let mut streamed =
        String::from("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n");
    for event in events {
        streamed.push_str(&format!("{:x}\r\n{event}\r\n", event.len()));
    }
    streamed.push_str("0\r\n\r\n");
    (unary.leak().as_bytes(), streamed.leak().as_bytes())
}

/// A one-worker gateway on `store` serving `fikra-flash` from `backend`, with the busy account
/// `busy` and the small accounts `small0`..`small3` (one per call, so none runs out of RPM).
fn gateway_for(store: StoreKind, backend: Backend, test: &str) -> TestGateway {
    let mut config =
        String::from("workers = 1\n[[account_overrides]]\naccount = \"busy\"\nrpm = 1000000\ntpm = 1000000000\n");
    for small in 0..4 {
        config.push_str(&format!("[[account_overrides]]\naccount = \"small{small}\"\nrpm = 1100\ntpm = 1000000000\n"));
    }
    match backend {
        Backend::Sandbox => {}
        Backend::Upstream => {
            let (unary, streamed) = chat_upstream_answers();
            config.push_str(&upstream_model_config(&fixed_answer_upstream(unary, streamed), "", ""));
        }
        Backend::NativeResponses => {
            let usage = r#"{"input_tokens":12,"input_tokens_details":{"cached_tokens":0},"output_tokens":2,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":14}"#;
            let (unary, streamed) = support::responses::native_answers(support::scripted_upstream::SECRET_MODEL, usage);
            config.push_str(&upstream_model_config(&fixed_answer_upstream(unary, streamed), "responses = true", ""));
        }
    }
    if store == StoreKind::Redis {
        let (redis, prefix) = (support::redis_server::shared_server(), support::redis_server::unique_prefix(test));
        config.push_str(&format!("[store]\nredis_url = \"redis://{redis}\"\nkey_prefix = \"{prefix}\"\n"));
    }
    TestGateway::start_config(config_with(&config))
}

/// Counts the allocations of `MEASURED_REQUESTS` warm `call`s of one account, on each path of
/// `calls`, and checks them against `expected_per_request`: the whole count in requests, and no
/// more than `stray_allocations` beyond. On Redis, the busy account's requests must all have
/// been admitted from the worker's lease, the small accounts' none.
fn check_paths(store: StoreKind, backend: Backend, calls: &[Call]) {
    let _turn = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let gateway = gateway_for(store, backend, "alloc");
    let busy_key = gateway.account_with_key("busy", "1000", "live");
    for account in [Account::Busy, Account::Small] {
        for (index, call) in calls.iter().enumerate() {
            let key = match account {
                Account::Busy => busy_key.clone(),
                Account::Small => gateway.account_with_key(&format!("small{index}"), "1000", "live"),
            };
            let request = call.request(&key);
            let mut stream = connect(gateway.api);
            allocations_for(&mut stream, request.as_bytes(), 200, WARM_UP_REQUESTS);
            let leased_before = metric(gateway.admin, "fikra_lease_admissions_total");
            let counted = allocations_for(&mut stream, request.as_bytes(), 200, MEASURED_REQUESTS as usize);
            let leased = metric(gateway.admin, "fikra_lease_admissions_total") - leased_before;
            let path = format!("{store:?} store, {backend:?}, {account:?} account, {call:?}");
            println!("{path}: {counted} allocations over {MEASURED_REQUESTS} requests, {leased} leased");
            let expected = expected_per_request(store, account);
            assert_eq!(counted / MEASURED_REQUESTS, expected, "{path}: {counted} allocations");
            let strays = counted - expected * MEASURED_REQUESTS;
            assert!(strays <= stray_allocations(store), "{path}: {counted} allocations");
            if store == StoreKind::Redis && account == Account::Busy {
                // Nearly all: a lease that runs low while its next grant is on the way sends a
                // request or two to the store (within the strays).
                assert!(leased >= MEASURED_REQUESTS - LEASE_MISSES, "{path}: {leased} leased");
            } else {
                assert_eq!(leased, 0, "{path}: leased");
            }
        }
    }
}

const ALL_CALLS: [Call; 4] = [Call::ChatUnary, Call::ChatStream, Call::ResponsesUnary, Call::ResponsesStream];
const RESPONSES_CALLS: [Call; 2] = [Call::ResponsesUnary, Call::ResponsesStream];

// Goal: on the embedded store, a chat completion and a Responses request (translated to chat),
// unary and streamed, answered by the sandbox, allocate nothing once warm: the parse, the
// admission, the hold, the answer (object, SSE chunks or typed events), the settlement and the
// ledger line included.
#[test]
fn sandbox_answers_on_the_embedded_store_do_not_allocate() {
    check_paths(StoreKind::Embedded, Backend::Sandbox, &ALL_CALLS);
}

// Goal: the same through a socket upstream (the pooled connection, the request rewrite, the
// relay of the object or of each SSE event with the public model id, the usage read from it),
// and a Responses request passed natively to an upstream with `responses = true`.
#[test]
fn upstream_relays_on_the_embedded_store_do_not_allocate() {
    check_paths(StoreKind::Embedded, Backend::Upstream, &ALL_CALLS);
    check_paths(StoreKind::Embedded, Backend::NativeResponses, &RESPONSES_CALLS);
}

// Goal: on the Redis store, a busy account admitted and settled on the worker's lease and a
// small account admitted and settled by the store's functions, every call kind, answered by the
// sandbox, allocate only what `expected_per_request` names.
#[test]
fn sandbox_answers_on_the_redis_store_allocate_only_what_is_named() {
    check_paths(StoreKind::Redis, Backend::Sandbox, &ALL_CALLS);
}

// Goal: the same through a socket upstream, chat and native Responses.
#[test]
fn upstream_relays_on_the_redis_store_allocate_only_what_is_named() {
    check_paths(StoreKind::Redis, Backend::Upstream, &ALL_CALLS);
    check_paths(StoreKind::Redis, Backend::NativeResponses, &RESPONSES_CALLS);
}

// Goal: a model with `tokenizer = "o200k_base"` whose requests the byte bound admits in full
// allocates nothing more (the tokenizer is never reached).
#[test]
fn a_tokenizer_model_admitted_by_the_byte_bound_does_not_allocate() {
    let _turn = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let tokenized = "workers = 1\n[[account_overrides]]\naccount = \"tok\"\nrpm = 1000000\ntpm = 1000000000\n\
        [[models]]\nid = \"fikra-flash\"\nupstream = \"sandbox\"\n\
        input_usd_per_million = \"0.5\"\noutput_usd_per_million = \"0.5\"\nmax_output_tokens = 64\n\
        tokenizer = \"o200k_base\"\n";
    let gateway = TestGateway::start_config(config_with(tokenized));
    let key = gateway.account_with_key("tok", "1000", "live");
    for call in ALL_CALLS {
        let request = call.request(&key);
        let mut stream = connect(gateway.api);
        allocations_for(&mut stream, request.as_bytes(), 200, WARM_UP_REQUESTS);
        let counted = allocations_for(&mut stream, request.as_bytes(), 200, MEASURED_REQUESTS as usize);
        println!("o200k_base model, {call:?}: {counted} allocations over {MEASURED_REQUESTS} requests");
        assert!(counted <= STRAY_ALLOCATIONS, "{call:?}: {counted} allocations");
    }
}

// Goal: the zeros above are not vacuous: the counter sees what the gateway's own threads
// allocate (the admin API builds each answer's JSON as a tree, off the data path).
#[test]
fn the_counter_sees_the_gateways_allocations() {
    let _turn = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let gateway = TestGateway::start_config(config_with("workers = 1\n"));
    gateway.create_account("seen", "1.00");
    let request =
        format!("GET /admin/accounts/seen HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {ADMIN_TOKEN}\r\n\r\n");
    let mut stream = connect(gateway.admin);
    allocations_for(&mut stream, request.as_bytes(), 200, 10);
    let counted = allocations_for(&mut stream, request.as_bytes(), 200, 10);
    println!("admin account reads: {counted} allocations over 10");
    assert!(counted >= 10, "{counted} allocations: the gateway's allocations are not seen");
}
