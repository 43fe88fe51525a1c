//! Upstreams as they really answer (SPEC §9), scripted byte for byte on raw sockets in the
//! OpenAI and Groq wire formats: failures in disguise (error-shaped 200s, `{}`, non-SSE streams,
//! streams that fail before or after their first chunk) cost nothing or only what was
//! delivered; Groq's `x_groq.usage`, `x_groq.error`, 498 and 424; context-length refusals; the
//! model name however it is spelled; cached and reasoning tokens priced exactly (embedded store
//! and a real Redis); and bodies up to the documented limits.
//!
//! Every test checks the books the same way: the exact ledger records (cost in nano-USD,
//! outcome, tokens), nothing left held, the balance moved by exactly the ledger's sum, and the
//! operator-loss counter unchanged.

// A test upstream may lock on purpose (it holds connections until the test ends): clippy.toml's
// lock policy is for the gateway.
#![allow(clippy::disallowed_types)]

mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};

use fikra_gateway::openai::chat::parse_chat_request;
use fikra_gateway::openai::chat::{MediaAllowance, input_tokens_upper_bound};
use serde_json::{Value, json};
use support::error_cases::case;
use support::gateway::*;
use support::http::*;
use support::scripted_upstream::{SECRET_MODEL, respond, respond_sse, scripted_upstream, upstream_model_config};

/// The same name as an upstream may escape it in JSON.
const SECRET_MODEL_ESCAPED: &str = r"vendor\/secret-model-9b";
/// 0.5 USD per million tokens: input and output.
const PRICE_NANOS: u64 = 500;
/// 0.25 USD per million: cached input, half the input price.
const CACHED_PRICE_NANOS: u64 = 250;
const CREDIT_NANOS: u64 = 1_000_000_000;

fn config(addr: SocketAddr, store: &str) -> String {
    let model = upstream_model_config(&format!("http://{addr}/v1"), "", "cached_input_usd_per_million = \"0.25\"");
    format!("{store}\n{model}")
}

fn gateway_for(addr: SocketAddr) -> TestGateway {
    TestGateway::start(&config(addr, ""))
}

fn chat_body(content: &str, stream: bool, max_tokens: u64) -> String {
    json!({"model": "fikra-flash", "stream": stream, "max_tokens": max_tokens,
           "messages": [{"role": "user", "content": content}]})
    .to_string()
}

/// The gateway's own input bound for `body` (what it charges when the upstream never says).
fn input_bound(body: &str) -> u64 {
    // Text only: no media allowance is needed.
    let no_media = MediaAllowance { image_tokens: None, audio_tokens: None };
    input_tokens_upper_bound(&parse_chat_request(body.as_bytes()).unwrap(), no_media)
}

/// One expected ledger record.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Record {
    outcome: &'static str,
    cost_nanos: u64,
    prompt: u64,
    cached: u64,
    completion: u64,
    reasoning: u64,
}

impl Record {
    /// A request that failed before anything was delivered: free.
    const FREE_FAILURE: Record =
        Record { outcome: "backend_failed", cost_nanos: 0, prompt: 0, cached: 0, completion: 0, reasoning: 0 };

    /// A completed request billed from its usage at 500 nano-USD per token.
    fn billed(prompt: u64, completion: u64) -> Record {
        let cost_nanos = (prompt + completion) * PRICE_NANOS;
        Record { outcome: "completed", cost_nanos, prompt, cached: 0, completion, reasoning: 0 }
    }

    fn of(record: &Value) -> (String, u64, [u64; 4]) {
        let tokens = ["prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens"]
            .map(|name| record[name].as_u64().unwrap_or_else(|| panic!("{name} in {record}")));
        (record["outcome"].as_str().unwrap().to_string(), usd_to_nanos(record["cost_usd"].as_str().unwrap()), tokens)
    }
}

/// The books of one account before a test's requests.
struct Books {
    account: &'static str,
    balance_nanos: u64,
    loss_nanos: u64,
}

impl Books {
    fn open(gateway: &TestGateway, account: &'static str) -> (Books, String) {
        let key = gateway.account_with_key(account, "1.00", "live");
        let books = Books {
            account,
            balance_nanos: gateway.balance_nanos(account),
            loss_nanos: metric(gateway.admin, "fikra_operator_loss_nanos_total"),
        };
        assert_eq!(books.balance_nanos, CREDIT_NANOS);
        (books, key)
    }

    /// The ledger holds exactly `expected` (oldest first), nothing is held, the balance moved by
    /// the ledger's sum, and the operator lost nothing. Returns the total charged.
    fn check(&self, gateway: &TestGateway, expected: &[Record]) -> u64 {
        let mut records = gateway.usage(self.account);
        records.reverse();
        let seen: Vec<_> = records.iter().map(Record::of).collect();
        let wanted: Vec<_> = expected
            .iter()
            .map(|r| (r.outcome.to_string(), r.cost_nanos, [r.prompt, r.cached, r.completion, r.reasoning]))
            .collect();
        assert_eq!(seen, wanted, "ledger of {}", self.account);
        let charged: u64 = seen.iter().map(|(_, cost, _)| cost).sum();
        let account = gateway.account(self.account);
        assert_eq!(account["held_usd"], "0.000000000", "{account}");
        assert_eq!(gateway.balance_nanos(self.account), self.balance_nanos - charged);
        assert_eq!(metric(gateway.admin, "fikra_operator_loss_nanos_total"), self.loss_nanos, "operator loss");
        eprintln!(
            "{}: {} records, {charged} nano-USD charged, operator loss {} nano-USD (unchanged)",
            self.account,
            seen.len(),
            self.loss_nanos
        );
        charged
    }
}

/// Nothing of the upstream model name anywhere in the answer: head or body, plain or escaped.
fn assert_no_secret(response: &Response) {
    let text = response.text();
    for secret in [SECRET_MODEL, SECRET_MODEL_ESCAPED, "secret-model"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
        assert!(response.headers.iter().all(|(_, value)| !value.contains(secret)), "{secret} in a header");
    }
}

/// The 502 a failure before any byte becomes: the SPEC shape, retryable, nothing upstream in it.
fn assert_free_502(response: &Response) {
    assert_eq!(response.status, 502, "{}", response.text());
    assert_eq!(response.error(), ("api_error".into(), "upstream_unavailable".into(), None));
    assert_eq!(response.header("x-should-retry"), Some("true"));
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_no_secret(response);
}

/// The `data:` payloads of a streamed answer, in order.
fn sse_data(response: &Response) -> Vec<String> {
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    let text = response.text();
    text.split("\n\n").filter(|e| !e.is_empty()).map(|e| e.strip_prefix("data: ").unwrap_or(e).to_string()).collect()
}

fn chunk(content: &str) -> String {
    format!(
        "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"{SECRET_MODEL}\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{content}\"}},\"finish_reason\":null}}]}}\n\n"
    )
}

/// Groq's last chunk: the finish reason and, in `x_groq`, the usage (and, as Groq's compound
/// models do, a usage breakdown naming the upstream model).
fn groq_final_chunk(prompt: u64, cached: u64, completion: u64, reasoning: u64) -> String {
    let usage = format!(
        r#"{{"queue_time":0.02,"prompt_tokens":{prompt},"prompt_time":0.01,"completion_tokens":{completion},"completion_time":0.1,"total_tokens":{},"total_time":0.11,"prompt_tokens_details":{{"cached_tokens":{cached}}},"completion_tokens_details":{{"reasoning_tokens":{reasoning}}}}}"#,
        prompt + completion
    );
    format!(
        "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"{SECRET_MODEL}\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}],\"x_groq\":{{\"id\":\"req_01abc\",\"usage\":{usage},\"usage_breakdown\":{{\"models\":[{{\"model\":\"{SECRET_MODEL_ESCAPED}\",\"usage\":{usage}}}]}}}}}}\n\n"
    )
}

fn completion_body(content: &str, prompt: u64, cached: u64, completion: u64, reasoning: u64) -> String {
    format!(
        r#"{{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"{SECRET_MODEL}","choices":[{{"index":0,"message":{{"role":"assistant","content":"{content}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{},"prompt_tokens_details":{{"cached_tokens":{cached}}},"completion_tokens_details":{{"reasoning_tokens":{reasoning}}}}},"system_fingerprint":"fp_1"}}"#,
        prompt + completion
    )
}

// Goal (Seen: an upstream 200 whose body is an error naming the upstream model, or `{}`, was
// relayed verbatim and billed at the full hold): a 200 that is not a result (error object,
// `{}`, `choices` not an array, not JSON) is a 502 in the SPEC shape without a word of the
// upstream body, settled at zero as backend_failed.
#[test]
fn error_shaped_and_empty_200s_are_free_502s() {
    let bodies = [
        format!(
            r#"{{"error":{{"message":"{SECRET_MODEL} is over capacity","type":"server_error","code":"overloaded"}}}}"#
        ),
        "{}".to_string(),
        format!(r#"{{"model":"{SECRET_MODEL}","choices":{{"index":0}}}}"#),
        "<html>502 Bad Gateway</html>".to_string(),
    ];
    let count = bodies.len();
    let addr = scripted_upstream(SECRET_MODEL, move |n, stream| respond(stream, "200 OK", "", &bodies[n % count]));
    let gateway = gateway_for(addr);
    let (books, key) = Books::open(&gateway, "disguised");
    for _ in 0..count {
        let response = gateway.chat(&key, &chat_body("hello", false, 64));
        assert_free_502(&response);
        assert!(!response.text().contains("over capacity"));
    }
    books.check(&gateway, &[Record::FREE_FAILURE; 4]);
}

/// One scripted answer of an upstream.
type Answer = dyn Fn(&mut TcpStream) + Send + Sync;

// Goal (Seen: a stream whose first event is an error was charged the input bound; a stream
// answered with plain JSON gave an empty 200 stream billed as completed): whatever fails before
// the first chunk (an error event after a keep-alive comment, Groq's x_groq.error, an
// `event: error`, a JSON body for a stream, text/event-stream carrying plain JSON, a stream
// that ends without any event) is a plain JSON 502 (the SDKs retry it), settled at zero.
#[test]
fn streams_failing_before_their_first_chunk_are_free_502s() {
    let error_event =
        format!("data: {{\"error\":{{\"message\":\"{SECRET_MODEL} failed\",\"type\":\"server_error\"}}}}\n\n");
    let groq_error = format!(
        "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"{SECRET_MODEL}\",\"choices\":[],\"x_groq\":{{\"id\":\"req_1\",\"error\":\"stream stopped: over capacity\"}}}}\n\n"
    );
    let scripts: Vec<Box<Answer>> = vec![
        Box::new(move |s| respond_sse(s, &[": keep-alive\n\n".into(), error_event.clone()])),
        Box::new(move |s| respond_sse(s, std::slice::from_ref(&groq_error))),
        Box::new(|s| respond_sse(s, &["event: error\ndata: {\"message\":\"boom\"}\n\n".into()])),
        Box::new(|s| respond(s, "200 OK", "", &format!(r#"{{"error":{{"message":"{SECRET_MODEL} down"}}}}"#))),
        Box::new(|s| {
            let body = format!(r#"{{"error":{{"message":"{SECRET_MODEL} down"}}}}"#);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
        }),
        Box::new(|s| respond_sse(s, &[": keep-alive\n\n".into()])),
    ];
    let count = scripts.len();
    let addr = scripted_upstream(SECRET_MODEL, move |n, stream| scripts[n % count](stream));
    let gateway = gateway_for(addr);
    let (books, key) = Books::open(&gateway, "early");
    for _ in 0..count {
        let response = gateway.chat(&key, &chat_body("stream please", true, 64));
        assert_free_502(&response);
    }
    books.check(&gateway, &vec![Record::FREE_FAILURE; count]);
}

// Goal: a stream that fails after delivering tokens (Groq's x_groq.error, an error event, an
// event over the 8 MiB limit, a cut without [DONE]) ends with the chunks, then exactly one error event and no [DONE], and is
// charged for what was delivered: the input bound plus one token per delivered chunk (the
// upstream reported no usage), as backend_failed.
#[test]
fn streams_failing_after_tokens_charge_what_was_delivered() {
    let groq_error = format!(
        "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"{SECRET_MODEL}\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":null}}],\"x_groq\":{{\"id\":\"req_1\",\"error\":\"stream stopped early\"}}}}\n\n"
    );
    let error_event = "data: {\"error\":{\"message\":\"internal\",\"type\":\"server_error\"}}\n\n".to_string();
    let addr = scripted_upstream(SECRET_MODEL, move |n, stream| {
        let mut events = vec![chunk("Habari"), chunk(" ya")];
        match n % 4 {
            0 => events.push(groq_error.clone()),
            1 => events.push(error_event.clone()),
            // One byte over the single-event limit.
            2 => events.push(large_chunk(8 * MIB + 1 - chunk("").len())),
            _ => {} // ends without [DONE]
        }
        respond_sse(stream, &events);
    });
    let gateway = gateway_for(addr);
    let (books, key) = Books::open(&gateway, "late");
    let body = chat_body("stream please", true, 64);
    for _ in 0..4 {
        let response = gateway.chat(&key, &body);
        assert_eq!(response.status, 200);
        assert_no_secret(&response);
        let events = sse_data(&response);
        assert_eq!(events.len(), 3, "{events:?}");
        assert!(events[0].contains("\"model\":\"fikra-flash\"") && events[1].contains(" ya"));
        let error: Value = serde_json::from_str(&events[2]).unwrap();
        assert_eq!(error["error"]["code"], "upstream_unavailable");
        assert_eq!(error["error"]["type"], "api_error");
    }
    let bound = input_bound(&body);
    let charged = books.check(&gateway, &[delivered(&body, 2); 4]);
    assert_eq!(charged, 4 * (bound + 2) * PRICE_NANOS);
}

/// What a stream that failed after `chunks` content chunks costs when the upstream never said
/// its usage: the input bound and one token per chunk.
fn delivered(body: &str, chunks: u64) -> Record {
    let bound = input_bound(body);
    Record {
        outcome: "backend_failed",
        cost_nanos: (bound + chunks) * PRICE_NANOS,
        prompt: bound,
        cached: 0,
        completion: chunks,
        reasoning: 0,
    }
}

/// 1,000 prompt tokens of which 600 cached, 50 completion tokens of which 20 reasoning:
/// 400 x 500 + 600 x 250 + 50 x 500 nano-USD.
const CACHED_USAGE: [u64; 4] = [1_000, 600, 50, 20];
const CACHED_COST_NANOS: u64 = 400 * PRICE_NANOS + 600 * CACHED_PRICE_NANOS + 50 * PRICE_NANOS;

fn cached_record() -> Record {
    let [prompt, cached, completion, reasoning] = CACHED_USAGE;
    Record { outcome: "completed", cost_nanos: CACHED_COST_NANOS, prompt, cached, completion, reasoning }
}

/// A prompt of 1,200 bytes: its input bound (above the 1,000 tokens the upstream reports) keeps
/// the hold above the cost, so nothing is an operator loss.
fn cached_prompt_body(stream: bool) -> String {
    chat_body(&"habari ".repeat(172)[..1_200], stream, 100)
}

// Goal (Seen: Groq's usage in x_groq.usage on the final chunk was not read, nor cached and
// reasoning tokens): a Groq stream whose usage comes only in x_groq.usage of its last chunk
// (beside a usage breakdown naming the upstream model) is charged exactly from it, cached input
// at half price, reasoning recorded; the client gets every chunk with the public id and [DONE].
#[test]
fn groq_stream_is_charged_from_x_groq_usage() {
    let addr = scripted_upstream(SECRET_MODEL, |_, stream| {
        let [prompt, cached, completion, reasoning] = CACHED_USAGE;
        let events = [
            chunk("Habari"),
            chunk(" rafiki"),
            groq_final_chunk(prompt, cached, completion, reasoning),
            "data: [DONE]\n\n".to_string(),
        ];
        respond_sse(stream, &events);
    });
    let gateway = gateway_for(addr);
    let (books, key) = Books::open(&gateway, "groq");
    let response = gateway.chat(&key, &cached_prompt_body(true));
    assert_eq!(response.status, 200);
    assert_no_secret(&response);
    let events = sse_data(&response);
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(events[3], "[DONE]");
    for event in &events[..3] {
        assert_eq!(serde_json::from_str::<Value>(event).unwrap()["model"], "fikra-flash");
    }
    let charged = books.check(&gateway, &[cached_record()]);
    assert_eq!(charged, 375_000);
}

/// A unary answer and an OpenAI-style stream (usage-only last chunk), both reporting
/// `CACHED_USAGE`, through `gateway`; checks the books.
fn cached_tokens_are_priced_exactly(gateway: &TestGateway, account: &'static str) {
    let (books, key) = Books::open(gateway, account);
    let unary = gateway.chat(&key, &cached_prompt_body(false));
    assert_eq!(unary.status, 200, "{}", unary.text());
    assert_no_secret(&unary);
    assert_eq!(unary.json()["usage"]["prompt_tokens_details"]["cached_tokens"], 600);
    let streamed = gateway.chat(&key, &cached_prompt_body(true));
    assert_eq!(streamed.status, 200);
    assert_no_secret(&streamed);
    let events = sse_data(&streamed);
    assert_eq!(events.len(), 3, "content, finish, [DONE]; the usage chunk not asked for: {events:?}");
    let charged = books.check(gateway, &[cached_record(), cached_record()]);
    assert_eq!(charged, 2 * 375_000);
}

fn cached_usage_upstream() -> SocketAddr {
    scripted_upstream(SECRET_MODEL, |n, stream| {
        let [prompt, cached, completion, reasoning] = CACHED_USAGE;
        if n % 2 == 0 {
            respond(stream, "200 OK", "", &completion_body("Habari!", prompt, cached, completion, reasoning));
            return;
        }
        let finish = format!(
            "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"{SECRET_MODEL}\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}],\"usage\":null}}\n\n"
        );
        let usage = format!(
            "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"{SECRET_MODEL}\",\"choices\":[],\"usage\":{{\"prompt_tokens\":{prompt},\"completion_tokens\":{completion},\"total_tokens\":{},\"prompt_tokens_details\":{{\"cached_tokens\":{cached}}},\"completion_tokens_details\":{{\"reasoning_tokens\":{reasoning}}}}}}}\n\n",
            prompt + completion
        );
        respond_sse(stream, &[chunk("Habari!"), finish, usage, "data: [DONE]\n\n".into()]);
    })
}

// Goal: cached input tokens are priced at cached_input_usd_per_million (half the input price
// here) and reasoning tokens recorded, unary and streamed, on the embedded store: 375,000
// nano-USD each.
#[test]
fn cached_tokens_are_priced_exactly_on_the_embedded_store() {
    let gateway = gateway_for(cached_usage_upstream());
    cached_tokens_are_priced_exactly(&gateway, "cached");
}

// Goal: the same exact charges on a real Redis store.
#[test]
fn cached_tokens_are_priced_exactly_on_redis() {
    let redis = support::redis_server::shared_server();
    let prefix = support::redis_server::unique_prefix("realism");
    let store = format!("[store]\nredis_url = \"redis://{redis}\"\nkey_prefix = \"{prefix}\"\n");
    let gateway = TestGateway::start(&config(cached_usage_upstream(), &store));
    cached_tokens_are_priced_exactly(&gateway, "cached-redis");
}

// Goal (Seen: Groq's 498 and 424 were not handled, nor context-length refusals): 498 is a 503
// with the upstream's retry-after (else 1 s), 424 a 502, a 400 about the context length (by
// Groq's message or OpenAI's code) a 400 context_length_exceeded with param "messages" and the
// public model id in its message; all free.
#[test]
fn groq_statuses_and_context_length_refusals() {
    let addr = scripted_upstream(SECRET_MODEL, |n, stream| match n % 5 {
        0 => respond(
            stream,
            "498 Flex Tier Capacity Exceeded",
            "retry-after: 3\r\n",
            r#"{"error":{"message":"flex tier at capacity","type":"tokens"}}"#,
        ),
        1 => respond(stream, "498 Flex Tier Capacity Exceeded", "", r#"{"error":{"message":"flex tier at capacity"}}"#),
        2 => respond(
            stream,
            "424 Failed Dependency",
            "",
            r#"{"error":{"message":"tool call failed","type":"invalid_request_error"}}"#,
        ),
        3 => respond(
            stream,
            "400 Bad Request",
            "",
            r#"{"error":{"message":"Please reduce the length of the messages or completion.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
        ),
        _ => respond(
            stream,
            "400 Bad Request",
            "",
            &format!(
                r#"{{"error":{{"message":"This model's maximum context length is 8192 tokens. However, you requested 9000 tokens of {SECRET_MODEL}.","type":"invalid_request_error","param":"messages","code":null}}}}"#
            ),
        ),
    });
    let gateway = gateway_for(addr);
    let (books, key) = Books::open(&gateway, "statuses");
    let body = chat_body("hi", false, 64);
    for retry_after in ["3", "1"] {
        let busy = gateway.chat(&key, &body);
        assert_eq!(busy.status, 503, "{}", busy.text());
        assert_eq!(busy.error(), ("api_error".into(), "service_unavailable".into(), None));
        assert_eq!(busy.header("retry-after"), Some(retry_after));
        assert_eq!(busy.header("x-should-retry"), Some("true"));
        assert!(!busy.text().contains("flex tier"));
        assert_no_secret(&busy);
    }
    let failed = gateway.chat(&key, &body);
    assert_free_502(&failed);
    assert!(!failed.text().contains("tool call failed"));
    let context_case = case("upstream_context_length_exceeded");
    let by_code = send_one(gateway.api, context_case.raw_request(&key).as_bytes());
    context_case.check(&by_code, &key);
    assert_no_secret(&by_code);
    assert_eq!(by_code.message(), "Please reduce the length of the messages or completion.");
    let by_message = send_one(gateway.api, context_case.raw_request(&key).as_bytes());
    context_case.check(&by_message, &key);
    assert_no_secret(&by_message);
    assert_eq!(
        by_message.message(),
        "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens of fikra-flash."
    );
    books.check(&gateway, &[Record::FREE_FAILURE; 5]);
}

// Goal (Seen: the upstream model name reached the client when written "m\u006fdel", repeated,
// or nested): unary answers and stream events with an escaped `model` key, a repeated one,
// the name escaped in nested `model` members and as a plain nested value all reach the client
// with the public id only (checked raw and decoded), billed from their usage.
#[test]
fn model_name_never_leaks_however_spelled() {
    let spellings = [
        format!(r#""m\u006fdel":"{SECRET_MODEL}""#),
        format!(r#""model":"{SECRET_MODEL}","object":"chat.completion","model":"{SECRET_MODEL_ESCAPED}""#),
        format!(
            r#""model":"fikra","x_groq":{{"id":"req_1","usage_breakdown":{{"models":[{{"model":"\u0076endor/secret-model-9b"}}]}},"served_by":["{SECRET_MODEL}"]}}"#
        ),
    ];
    let events: Vec<String> = spellings
        .iter()
        .map(|members| {
            format!("data: {{{members},\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"hi\"}}}}]}}\n\n")
        })
        .collect();
    let unary: Vec<String> = spellings
        .iter()
        .map(|members| format!(r#"{{{members},"choices":[{{"index":0,"message":{{"role":"assistant","content":"hi"}}}}],"usage":{{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}}}"#))
        .collect();
    let addr = scripted_upstream(SECRET_MODEL, move |n, stream| {
        if n < unary.len() {
            respond(stream, "200 OK", "", &unary[n]);
            return;
        }
        let usage =
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3,\"total_tokens\":8}}\n\n";
        let mut stream_events = events.clone();
        stream_events.extend([usage.to_string(), "data: [DONE]\n\n".to_string()]);
        respond_sse(stream, &stream_events);
    });
    let gateway = gateway_for(addr);
    let (books, key) = Books::open(&gateway, "names");
    for _ in 0..spellings.len() {
        let response = gateway.chat(&key, &chat_body("who are you?", false, 64));
        assert_eq!(response.status, 200, "{}", response.text());
        assert_no_secret(&response);
        let decoded = response.json();
        assert_eq!(decoded["model"], "fikra-flash");
        assert!(!decoded.to_string().contains("secret-model"), "{decoded}");
    }
    let streamed = gateway.chat(&key, &chat_body("who are you?", true, 64));
    assert_eq!(streamed.status, 200);
    assert_no_secret(&streamed);
    let data = sse_data(&streamed);
    assert_eq!(data.len(), spellings.len() + 1, "{data:?}");
    for event in &data[..spellings.len()] {
        let decoded: Value = serde_json::from_str(event).unwrap();
        assert_eq!(decoded["model"], "fikra-flash");
        assert!(!decoded.to_string().contains("secret-model"), "{decoded}");
    }
    books.check(&gateway, &vec![Record::billed(5, 3); spellings.len() + 1]);
}

const MIB: usize = 1024 * 1024;

/// A completion whose content is `content_bytes` of text, as the upstream (`model`) writes it.
fn large_completion(model: &str, content_bytes: usize) -> String {
    format!(
        r#"{{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"{model}","choices":[{{"index":0,"message":{{"role":"assistant","content":"{}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30}}}}"#,
        "a".repeat(content_bytes)
    )
}

/// Answers with `body` in chunks of 1 MiB (what a streaming proxy in front of an upstream does).
fn respond_chunked(stream: &mut TcpStream, body: &[u8]) {
    let _ = write!(stream, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n");
    for piece in body.chunks(MIB) {
        if write!(stream, "{:x}\r\n", piece.len())
            .and_then(|_| stream.write_all(piece))
            .and_then(|_| stream.write_all(b"\r\n"))
            .is_err()
        {
            return;
        }
    }
    let _ = write!(stream, "0\r\n\r\n");
}

// Goal (Seen: a unary answer over about 1.4 MiB failed with 502, the body count growing
// quadratically): a 60 MiB answer is relayed byte for byte (public model id in place) and
// billed from its usage; one declared 1 byte over 64 MiB, and a chunked one running past
// 64 MiB, are free 502s.
#[test]
fn unary_answers_up_to_64_mib_are_relayed() {
    const LIMIT: usize = 64 * MIB;
    let addr = scripted_upstream(SECRET_MODEL, |n, stream| match n {
        0 => respond(stream, "200 OK", "", &large_completion(SECRET_MODEL, 60 * MIB)),
        1 => {
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{{",
                LIMIT + 1
            );
        }
        _ => {
            let body = large_completion(SECRET_MODEL, LIMIT);
            respond_chunked(stream, body.as_bytes());
        }
    });
    let gateway = gateway_for(addr);
    let (books, key) = Books::open(&gateway, "large");
    let body = chat_body("a long answer please", false, 64);
    let response = gateway.chat(&key, &body);
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body[..response.body.len().min(300)]));
    let expected = large_completion("fikra-flash", 60 * MIB);
    assert_eq!(response.body.len(), expected.len());
    assert!(response.body == expected.as_bytes(), "the answer is relayed byte for byte");
    eprintln!("relayed a {} byte unary answer", response.body.len());
    for _ in 0..2 {
        assert_free_502(&gateway.chat(&key, &body));
    }
    let billed = Record::billed(10, 20);
    books.check(&gateway, &[billed, Record::FREE_FAILURE, Record::FREE_FAILURE]);
}

/// One SSE chunk whose content is `content_bytes` of text.
fn large_chunk(content_bytes: usize) -> String {
    chunk(&"b".repeat(content_bytes))
}

// Goal (Seen: one SSE event over about 1 MiB failed): a stream carrying a 7.5 MiB event relays
// it whole, in order, billed from the stream's usage; a stream whose first event is 1 byte over
// 8 MiB is a free 502.
#[test]
fn sse_events_up_to_8_mib_are_relayed() {
    const LIMIT: usize = 8 * MIB;
    let overhead = chunk("").len();
    let addr = scripted_upstream(SECRET_MODEL, move |n, stream| {
        if n == 0 {
            let usage = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":3,\"total_tokens\":13}}\n\n";
            let events =
                [chunk("Habari"), large_chunk(7 * MIB + MIB / 2), chunk("!"), usage.into(), "data: [DONE]\n\n".into()];
            respond_sse(stream, &events);
        } else {
            respond_sse(stream, &[large_chunk(LIMIT + 1 - overhead), "data: [DONE]\n\n".into()]);
        }
    });
    let gateway = gateway_for(addr);
    let (books, key) = Books::open(&gateway, "large-events");
    let body = chat_body("a long answer please", true, 64);
    let response = gateway.chat(&key, &body);
    assert_eq!(response.status, 200);
    assert_no_secret(&response);
    let events = sse_data(&response);
    assert_eq!(events.len(), 4, "three chunks and [DONE]");
    let large: Value = serde_json::from_str(&events[1]).unwrap();
    assert_eq!(large["model"], "fikra-flash");
    assert_eq!(large["choices"][0]["delta"]["content"].as_str().unwrap().len(), 7 * MIB + MIB / 2);
    assert_eq!(events[3], "[DONE]");
    assert_eq!(large_chunk(LIMIT + 1 - overhead).len(), LIMIT + 1);
    assert_free_502(&gateway.chat(&key, &body));
    let billed = Record::billed(10, 3);
    books.check(&gateway, &[billed, Record::FREE_FAILURE]);
}

// Goal: an upstream that stops sending (past its response timeout, 300 ms here) before the
// first chunk of a stream, or in the middle of a unary body, gets a plain 504
// upstream_timeout, settled at zero. The upstream holds its connections open until the test
// ends; nothing here sleeps.
#[test]
fn upstreams_stalling_before_anything_is_relayed_get_free_504s() {
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = std::sync::Mutex::new(released);
    let addr = scripted_upstream(SECRET_MODEL, move |n, stream| {
        if n % 2 == 0 {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
            let _ = write!(stream, "{head}e\r\n: keep-alive\n\n\r\n");
        } else {
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"id\":"
            );
        }
        let _ = stream.flush();
        // Hold the connection, unanswered, until the test is over.
        let _ = released.lock().map(|receiver| receiver.recv_timeout(std::time::Duration::from_secs(10)));
    });
    let upstream = upstream_model_config(&format!("http://{addr}/v1"), "response_timeout_ms = 300", "");
    let gateway = TestGateway::start(&upstream);
    let (books, key) = Books::open(&gateway, "stalled");
    for stream in [true, false] {
        let response = gateway.chat(&key, &chat_body("anyone?", stream, 64));
        assert_eq!(response.status, 504, "{}", response.text());
        assert_eq!(response.error(), ("api_error".into(), "upstream_timeout".into(), None));
        assert_no_secret(&response);
    }
    books.check(&gateway, &[Record::FREE_FAILURE; 2]);
    drop(release);
}
