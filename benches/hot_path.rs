//! Criterion benches for the pure pieces of one request, each with the allocations it makes
//! per iteration (counted by a global allocator and printed after the timings): request head
//! parse, key check and cache hit, chat body extraction for 1 KiB and 32 KiB bodies against a
//! serde_json baseline, error rendering, the rate-limit decision, the SSE relay (event scan and
//! model rewrite over a Groq-style stream arriving in TCP-sized pieces), the duration formatter,
//! and the Responses path: a body parsed and translated to chat, the Groq stream translated
//! into typed events, and a native Responses stream rewritten (with the terminal `cost_usd`).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use fikra_gateway::access::auth::{KeyCache, hash_key, parse_authorization};
use fikra_gateway::backend::upstream::responses_native::{NativeEvent, rewrite_native_event};
use fikra_gateway::backend::upstream::rewrite::{EventKind, ModelNames, ReportedUsage, next_event_end, rewrite_event};
use fikra_gateway::errors::{ApiError, Bucket, Detail, ErrorKind};
use fikra_gateway::http::duration::write_go_duration;
use fikra_gateway::http::request::parse_head;
use fikra_gateway::http::response::{ErrorExtras, ResponseContext, frame_chunk_in_place, write_error};
use fikra_gateway::money::{ChargeRule, Nanos, NanosPerToken, Prices};
use fikra_gateway::openai::chat::parse_chat_request;
use fikra_gateway::openai::responses::answer::ResponseShape;
use fikra_gateway::openai::responses::parse_responses_request;
use fikra_gateway::openai::responses::translate::write_chat_body;
use fikra_gateway::ratelimit::TokenBucket;
use fikra_gateway::store::{KeyKind, KeyRecord, RateSnapshot};

#[path = "../tests/support/counting_allocator.rs"]
mod counting_allocator;
use counting_allocator::{CountingAllocator, allocations};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Runs `work` 1,000 times after a warm-up and prints its allocations per call.
fn report_allocations(name: &str, mut work: impl FnMut()) {
    for _ in 0..100 {
        work();
    }
    let before = allocations();
    for _ in 0..1000 {
        work();
    }
    let per_call = (allocations() - before) as f64 / 1000.0;
    println!("allocations per call: {name}: {per_call}");
}

const HEAD: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.fikraapi.co.ke\r\nUser-Agent: OpenAI/Python 3.57.0\r\nAuthorization: Bearer fk_live_0123456789abcdefghijABCDEFGHIJ01\r\nContent-Type: application/json\r\nAccept: application/json\r\nX-Stainless-Retry-Count: 0\r\nContent-Length: 1024\r\n\r\n";

fn chat_body(target_bytes: usize) -> String {
    let filler = "habari ".repeat(target_bytes / 7);
    serde_json::json!({
        "model": "fikra-flash",
        "max_tokens": 256,
        "temperature": 0.7,
        "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": filler}
        ]
    })
    .to_string()
}

/// Content chunks in the benched stream (plus a role chunk, a finish chunk, a usage-only chunk
/// and `[DONE]`).
const STREAM_CONTENT_CHUNKS: usize = 64;
/// How the stream arrives: pieces of one Ethernet-MSS-sized read each, cutting events anywhere.
const STREAM_PIECE_BYTES: usize = 1448;

/// A streamed answer as Groq sends it: `data: {...}\n\n` events with its model name,
/// `system_fingerprint` and `x_groq` ids, then a usage-only chunk and `data: [DONE]`.
fn groq_stream() -> Vec<u8> {
    let head = r#"{"id":"chatcmpl-7f3c2a1b-9d4e-4c8a-b1f2-0a9e8d7c6b5a","object":"chat.completion.chunk","created":1764547200,"model":"llama-3.3-70b-versatile","system_fingerprint":"fp_3f9a8b7c6d","choices":[{"index":0,"delta":"#;
    let mut stream = Vec::new();
    let mut event = |delta: &str, finish: &str, extra: &str| {
        stream.extend_from_slice(b"data: ");
        stream.extend_from_slice(head.as_bytes());
        stream.extend_from_slice(delta.as_bytes());
        stream.extend_from_slice(br#","logprobs":null,"finish_reason":"#);
        stream.extend_from_slice(finish.as_bytes());
        stream.extend_from_slice(b"}]");
        stream.extend_from_slice(extra.as_bytes());
        stream.extend_from_slice(b"}\n\n");
    };
    event(r#"{"role":"assistant","content":""}"#, "null", r#","x_groq":{"id":"req_01jq8k2m3n4p5q6r7s8t9v0w1x"}"#);
    for index in 0..STREAM_CONTENT_CHUNKS {
        let word = ["habari", "ya", "asubuhi,", "karibu", "sana", "rafiki"][index % 6];
        event(&format!(r#"{{"content":" {word}"}}"#), "null", "");
    }
    event("{}", r#""stop""#, "");
    stream.extend_from_slice(br#"data: {"id":"chatcmpl-7f3c2a1b-9d4e-4c8a-b1f2-0a9e8d7c6b5a","object":"chat.completion.chunk","created":1764547200,"model":"llama-3.3-70b-versatile","system_fingerprint":"fp_3f9a8b7c6d","choices":[],"usage":{"queue_time":0.01,"prompt_tokens":21,"prompt_time":0.002,"completion_tokens":64,"completion_time":0.21,"total_tokens":85,"total_time":0.212},"x_groq":{"id":"req_01jq8k2m3n4p5q6r7s8t9v0w1x"}}"#);
    stream.extend_from_slice(b"\n\ndata: [DONE]\n\n");
    stream
}

/// The names of the streamed model: what the client sees, and the Groq model behind it.
const STREAM_NAMES: ModelNames<'static> = ModelNames { public: "fikra-flash", upstream: "llama-3.3-70b-versatile" };

/// Finds every event of `stream` (the scan alone).
fn scan_events(stream: &[u8]) -> usize {
    let (mut rest, mut events) = (stream, 0);
    while let Some(end) = next_event_end(rest) {
        rest = &rest[end..];
        events += 1;
    }
    events
}

/// Relays `stream` the way `proxy::relay_stream` does: each piece is appended to `payload`, every
/// complete event is rewritten (public model id) and framed as an HTTP chunk into `out`, and the
/// consumed bytes are drained from `payload`; `out` is emptied after each piece (the flush).
fn relay_stream(stream: &[u8], payload: &mut Vec<u8>, out: &mut Vec<u8>) -> (usize, Option<ReportedUsage>) {
    payload.clear();
    let (mut delivered, mut usage) = (0, None);
    for piece in stream.chunks(STREAM_PIECE_BYTES) {
        payload.extend_from_slice(piece);
        while let Some(end) = next_event_end(payload) {
            let start = out.len();
            if rewrite_event(&payload[..end], &STREAM_NAMES, false, &mut usage, out) == EventKind::Chunk {
                delivered += 1;
            }
            frame_chunk_in_place(out, start);
            payload.drain(..end);
        }
        out.clear();
    }
    (delivered, usage)
}

/// What a plain serde_json parse of the same request costs (the baseline).
fn serde_baseline(body: &[u8]) -> usize {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap();
    value["messages"].as_array().map_or(0, |m| m.iter().map(|m| m["content"].as_str().map_or(0, str::len)).sum())
}

fn benches(c: &mut Criterion) {
    c.bench_function("head_parse", |b| b.iter(|| parse_head(black_box(HEAD), 32 * 1024).unwrap().unwrap().head_len));
    report_allocations("head_parse", || {
        black_box(parse_head(black_box(HEAD), 32 * 1024).unwrap());
    });

    let key = b"Bearer fk_live_0123456789abcdefghijABCDEFGHIJ01";
    let mut cache = KeyCache::default();
    let record = KeyRecord {
        key_id: "key_1".into(),
        account_id: "acct".into(),
        kind: KeyKind::Live,
        name: None,
        revoked: false,
        spend_cap: None,
    };
    cache.put(hash_key(&key[7..]), record, 1_000, 0);
    c.bench_function("auth_cache_hit", |b| {
        b.iter(|| {
            let presented = parse_authorization(Some(black_box(&key[..]))).unwrap();
            cache.get(&hash_key(presented.key), 1_001, 0).is_some()
        })
    });
    report_allocations("auth_cache_hit", || {
        let presented = parse_authorization(Some(&key[..])).unwrap();
        black_box(cache.get(&hash_key(presented.key), 1_001, 0).map(|entry| entry.record.clone()));
    });

    for size in [1024, 32 * 1024] {
        let body = chat_body(size);
        let label = format!("{}KiB", size / 1024);
        c.bench_function(&format!("chat_extract_{label}"), |b| {
            b.iter(|| parse_chat_request(black_box(body.as_bytes())).unwrap().content_bytes)
        });
        c.bench_function(&format!("chat_serde_json_baseline_{label}"), |b| {
            b.iter(|| serde_baseline(black_box(body.as_bytes())))
        });
        report_allocations(&format!("chat_extract_{label}"), || {
            black_box(parse_chat_request(body.as_bytes()).unwrap().content_bytes);
        });
        report_allocations(&format!("chat_serde_json_baseline_{label}"), || {
            black_box(serde_baseline(body.as_bytes()));
        });
    }

    let rates = RateSnapshot {
        requests_limit: 30,
        requests_remaining: 0,
        requests_reset_ms: 1146,
        tokens_limit: 40_000,
        tokens_remaining: 39_000,
        tokens_reset_ms: 1500,
    };
    let error = ApiError {
        kind: ErrorKind::RateLimitExceeded,
        param: None,
        detail: Detail::RateLimited {
            bucket: Bucket::Requests,
            limit: 30,
            used: 30,
            requested: 1,
            retry_after_ms: 1146,
        },
    };
    let (mut out, mut scratch) = (Vec::with_capacity(2048), Vec::with_capacity(1024));
    let context =
        ResponseContext { request_id: Some("req_0123456789abcdef01234567"), rates: Some(&rates), keep_alive: true };
    let extras = ErrorExtras { retry_after_ms: Some(1146), allow: None };
    c.bench_function("error_render_429", |b| {
        b.iter(|| {
            out.clear();
            write_error(&mut out, &mut scratch, black_box(&error), &extras, &context);
            out.len()
        })
    });
    report_allocations("error_render_429", || {
        out.clear();
        write_error(&mut out, &mut scratch, &error, &extras, &context);
    });

    let mut bucket = TokenBucket::full(100, 0);
    let mut now_ms = 0u64;
    c.bench_function("rate_limit_decision", |b| {
        b.iter(|| {
            now_ms += 1;
            bucket.try_take(black_box(1), now_ms).is_ok()
        })
    });
    report_allocations("rate_limit_decision", || {
        now_ms += 1;
        black_box(bucket.try_take(1, now_ms).is_ok());
    });

    let stream = groq_stream();
    let events = scan_events(&stream);
    println!("sse stream: {} bytes, {events} events, {STREAM_PIECE_BYTES}-byte pieces", stream.len());
    c.bench_function("sse_event_scan_stream", |b| b.iter(|| scan_events(black_box(&stream))));
    report_allocations("sse_event_scan_stream", || {
        black_box(scan_events(&stream));
    });
    let (mut payload, mut relayed) = (Vec::with_capacity(16 * 1024), Vec::with_capacity(16 * 1024));
    let (delivered, usage) = relay_stream(&stream, &mut payload, &mut relayed);
    assert_eq!(delivered, STREAM_CONTENT_CHUNKS + 2, "role, content and finish chunks; usage chunk dropped");
    assert_eq!(usage, Some(ReportedUsage::new(21, 64)));
    c.bench_function("sse_relay_rewrite_stream", |b| {
        b.iter(|| relay_stream(black_box(&stream), &mut payload, &mut relayed).0)
    });
    report_allocations("sse_relay_rewrite_stream", || {
        black_box(relay_stream(&stream, &mut payload, &mut relayed));
    });

    let mut text = Vec::with_capacity(32);
    c.bench_function("go_duration_format", |b| {
        b.iter(|| {
            text.clear();
            write_go_duration(&mut text, black_box(72_500));
            text.len()
        })
    });
    report_allocations("go_duration_format", || {
        text.clear();
        write_go_duration(&mut text, 72_500);
    });
}

/// A Responses body as the OpenAI SDKs send one: instructions, a message item, a tool.
const RESPONSES_BODY: &str = r#"{"model":"fikra-flash","instructions":"You are a helpful assistant.","input":[{"role":"user","content":[{"type":"input_text","text":"habari ya asubuhi, karibu sana rafiki"}]}],"tools":[{"type":"function","name":"weather","description":"The weather in a city","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}],"max_output_tokens":256,"temperature":0.7,"stream":true}"#;

/// Parses a Responses body, writes its chat translation into `translated` and parses that
/// (what `api::responses` does before admission); returns the translation's input bytes.
fn translate_responses(body: &[u8], translated: &mut Vec<u8>) -> u64 {
    let request = parse_responses_request(body).unwrap();
    write_chat_body(body, &request, translated);
    parse_chat_request(translated).unwrap().input_bytes
}

/// Translates the Groq chat stream into Responses typed events the way the stream relay does:
/// each complete event rewritten into `scratch` (usage kept), then turned into events in `out`.
fn responses_stream(stream: &[u8], shape: &ResponseShape<'_>, scratch: &mut Vec<u8>, out: &mut Vec<u8>) -> usize {
    let mut responses = shape.start_stream();
    let (mut rest, mut usage, mut written) = (stream, None, 0);
    while let Some(end) = next_event_end(rest) {
        scratch.clear();
        rewrite_event(&rest[..end], &STREAM_NAMES, true, &mut usage, scratch);
        responses.chat_events(shape, scratch, out);
        written += out.len();
        out.clear();
        rest = &rest[end..];
    }
    shape.give_back_stream(responses);
    written
}

/// A native Responses stream: opening events, `deltas` text deltas, the done events and the
/// terminal `response.completed` with usage, all naming the upstream model.
fn native_stream(deltas: usize) -> Vec<u8> {
    let response = |status: &str, usage: &str| {
        format!(
            r#"{{"id":"resp_up1","object":"response","status":"{status}","model":"llama-3.3-70b-versatile","output":[],"usage":{usage}}}"#
        )
    };
    let mut events = Vec::new();
    let mut event = |kind: &str, number: usize, fields: &str| {
        let line = format!("event: {kind}\ndata: {{\"type\":\"{kind}\",\"sequence_number\":{number},{fields}}}\n\n");
        events.extend_from_slice(line.as_bytes());
    };
    event("response.created", 0, &format!(r#""response":{}"#, response("in_progress", "null")));
    event("response.in_progress", 1, &format!(r#""response":{}"#, response("in_progress", "null")));
    for number in 0..deltas {
        event(
            "response.output_text.delta",
            number + 2,
            r#""item_id":"msg_up1","output_index":0,"content_index":0,"delta":" habari""#,
        );
    }
    let usage = r#"{"input_tokens":21,"input_tokens_details":{"cached_tokens":0},"output_tokens":64,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":85}"#;
    event("response.completed", deltas + 2, &format!(r#""response":{}"#, response("completed", usage)));
    events
}

/// Rewrites every event of a native stream into `out` (emptied per event, as a flush would);
/// returns the deltas seen and whether the terminal event came.
fn native_relay(stream: &[u8], rule: &ChargeRule, out: &mut Vec<u8>) -> (usize, bool) {
    let (mut rest, mut deltas, mut finished) = (stream, 0, false);
    while let Some(end) = next_event_end(rest) {
        match rewrite_native_event(&rest[..end], &STREAM_NAMES, Some(rule), out).kind {
            NativeEvent::Output { delta: true } => deltas += 1,
            NativeEvent::Finished => finished = true,
            _ => {}
        }
        out.clear();
        rest = &rest[end..];
    }
    (deltas, finished)
}

fn responses_benches(c: &mut Criterion) {
    let mut translated = Vec::with_capacity(4096);
    assert!(translate_responses(RESPONSES_BODY.as_bytes(), &mut translated) > 0);
    c.bench_function("responses_parse_translate", |b| {
        b.iter(|| translate_responses(black_box(RESPONSES_BODY.as_bytes()), &mut translated))
    });
    report_allocations("responses_parse_translate", || {
        black_box(translate_responses(RESPONSES_BODY.as_bytes(), &mut translated));
    });

    let body = br#"{"model":"fikra-flash","input":"habari","stream":true}"#;
    let request = parse_responses_request(body).unwrap();
    let buffers = std::cell::RefCell::new(Vec::new());
    let shape = ResponseShape {
        request_id: "req_0123456789abcdef01234567",
        model_id: "fikra-flash",
        created_unix_s: 1_764_547_200,
        body,
        request: &request,
        buffers: &buffers,
    };
    let stream = groq_stream();
    let (mut scratch, mut out) = (Vec::with_capacity(16 * 1024), Vec::with_capacity(16 * 1024));
    assert!(responses_stream(&stream, &shape, &mut scratch, &mut out) > 0);
    c.bench_function("responses_stream_translate", |b| {
        b.iter(|| responses_stream(black_box(&stream), &shape, &mut scratch, &mut out))
    });
    report_allocations("responses_stream_translate", || {
        black_box(responses_stream(&stream, &shape, &mut scratch, &mut out));
    });

    let native = native_stream(STREAM_CONTENT_CHUNKS);
    let prices = Prices { input: NanosPerToken(500), cached_input: NanosPerToken(250), output: NanosPerToken(500) };
    let rule = ChargeRule { prices, hold: Nanos(1_000_000) };
    assert_eq!(native_relay(&native, &rule, &mut out), (STREAM_CONTENT_CHUNKS, true));
    c.bench_function("responses_native_relay", |b| b.iter(|| native_relay(black_box(&native), &rule, &mut out)));
    report_allocations("responses_native_relay", || {
        black_box(native_relay(&native, &rule, &mut out));
    });
}

criterion_group!(hot_path, benches, responses_benches);
criterion_main!(hot_path);
