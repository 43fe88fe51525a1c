//! `POST /v1/responses` proxied natively to an upstream marked `responses = true`, against a
//! scripted stand-in that speaks the Responses API as OpenAI documents it (objects and typed
//! events carrying the upstream model name everywhere, usage with cached and reasoning tokens):
//! what reaches the upstream, what reaches the client (never the upstream name), event order,
//! the exact charges of every way an answer can end, and a client that leaves.

// The stand-in upstream paces its events with real sleeps and shares what it saw through a
// lock: clippy.toml's clock and lock policies are for the gateway.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::gateway::*;
use support::http::*;
use support::redis_server;
use support::responses::{assert_charged, post, responses_request, typed_events};
use support::scripted_upstream::{SECRET_MODEL, respond, respond_sse, upstream_model_config};
use support::wait::wait_for;

/// What the client must never see in any spelling (`vendor\/secret-model-9b` included).
const SECRET_PART: &str = "secret-model";

/// Input at 0.5 USD per million, cached input at 0.25, output at 0.5 (nano-USD per token).
const INPUT_NANOS: u64 = 500;
const CACHED_NANOS: u64 = 250;
const OUTPUT_NANOS: u64 = 500;

/// The upstream's usage in every completed answer: 1000 in (600 cached), 50 out (20 reasoning).
fn upstream_usage() -> Value {
    json!({"input_tokens":1000,"input_tokens_details":{"cached_tokens":600},
        "output_tokens":50,"output_tokens_details":{"reasoning_tokens":20},"total_tokens":1050})
}

/// What `upstream_usage` costs: uncached input, cached input and output at their prices.
const USAGE_COST_NANOS: u64 = 400 * INPUT_NANOS + 600 * CACHED_NANOS + 50 * OUTPUT_NANOS;

/// A gateway on the embedded store (`store` empty) or the `[store]` section `store` names.
fn gateway_on(base_url: &str, store: &str) -> TestGateway {
    let models = upstream_model_config(base_url, "responses = true", "cached_input_usd_per_million = \"0.25\"");
    TestGateway::start(&format!("{store}\n{models}"))
}

fn gateway_for(base_url: &str) -> TestGateway {
    gateway_on(base_url, "")
}

/// A `[store]` section on the suite's own redis-server, keys under a prefix of `test`'s own.
fn redis_store(test: &str) -> String {
    let (redis, prefix) = (redis_server::shared_server(), redis_server::unique_prefix(test));
    format!("[store]\nredis_url = \"redis://{redis}\"\nkey_prefix = \"{prefix}\"\n")
}

/// One request as the upstream got it: the request line and the JSON body.
#[derive(Clone, Debug)]
struct Seen {
    request_line: String,
    body: Value,
}

fn read_seen<R: BufRead>(reader: &mut R) -> Option<Seen> {
    let (mut request_line, mut length, mut line) = (String::new(), 0usize, String::new());
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if request_line.is_empty() {
            request_line = line.trim_end().to_string();
        } else if line == "\r\n" {
            break;
        } else if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Seen { request_line, body: serde_json::from_slice(&body).ok()? })
}

/// A native Responses upstream that records every request and answers the n-th with
/// `answer(n, stream)`; returns its base URL and what it saw.
fn native_upstream(answer: impl Fn(usize, &mut TcpStream) + Send + Sync + 'static) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (recorded, answer) = (seen.clone(), Arc::new(answer));
    std::thread::spawn(move || {
        for stream in listener.incoming().take(100) {
            let Ok(mut stream) = stream else { return };
            let (recorded, answer) = (recorded.clone(), answer.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                while let Some(request) = read_seen(&mut reader) {
                    let n = {
                        let mut all = recorded.lock().unwrap();
                        all.push(request);
                        all.len() - 1
                    };
                    answer(n, &mut stream);
                }
            });
        }
    });
    (format!("http://{addr}/v1"), seen)
}

/// The message item of the upstream's answer, text `text`.
fn message_item(status: &str, text: &str) -> Value {
    let content =
        if status == "in_progress" { json!([]) } else { json!([{"type":"output_text","text":text,"annotations":[]}]) };
    json!({"id":"msg_up1","type":"message","status":status,"role":"assistant","content":content})
}

/// A whole Response object as the upstream writes it (its own model name inside).
fn response_object(status: &str, output: Value, usage: Value) -> Value {
    json!({"id":"resp_up1","object":"response","created_at":1741476542,"status":status,"error":null,
        "incomplete_details":if status == "incomplete" { json!({"reason":"max_output_tokens"}) } else { json!(null) },
        "instructions":null,"max_output_tokens":null,"model":SECRET_MODEL,"output":output,
        "parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},
        "store":false,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],
        "top_p":1.0,"truncation":"disabled","usage":usage,"user":null,"metadata":{}})
}

/// One typed event: `event: <type>` and its data with `type` and `sequence_number`.
fn event(kind: &str, sequence_number: u64, mut fields: Value) -> String {
    fields["type"] = json!(kind);
    fields["sequence_number"] = json!(sequence_number);
    format!("event: {kind}\ndata: {fields}\n\n")
}

/// The documented events of a one-message answer "Hello" (`response.created` through the
/// terminal `end_kind` carrying `usage`), the in-progress event spelling its model key with an
/// escape and its name with an escaped slash, as JSON allows.
fn message_stream(deltas: &[&str], end_kind: &str, usage: Value) -> Vec<String> {
    let text: String = deltas.concat();
    let address = json!({"item_id":"msg_up1","output_index":0,"content_index":0});
    let with = |extra: Value| {
        let mut fields = address.clone();
        fields.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        fields
    };
    let mut events = vec![
        event("response.created", 0, json!({"response":response_object("in_progress", json!([]), json!(null))})),
        event("response.in_progress", 1, json!({"response":response_object("in_progress", json!([]), json!(null))}))
            .replace("\"model\":\"vendor/secret-model-9b\"", "\"m\\u006fdel\":\"vendor\\/secret-model-9b\""),
        event("response.output_item.added", 2, json!({"output_index":0,"item":message_item("in_progress", "")})),
        event(
            "response.content_part.added",
            3,
            with(json!({"part":{"type":"output_text","text":"","annotations":[]}})),
        ),
    ];
    let mut number = 4;
    for delta in deltas {
        events.push(event("response.output_text.delta", number, with(json!({"delta":delta,"logprobs":[]}))));
        number += 1;
    }
    let status = if end_kind == "response.incomplete" { "incomplete" } else { "completed" };
    events.push(event("response.output_text.done", number, with(json!({"text":text,"logprobs":[]}))));
    events.push(event(
        "response.content_part.done",
        number + 1,
        with(json!({"part":{"type":"output_text","text":text,"annotations":[]}})),
    ));
    events.push(event(
        "response.output_item.done",
        number + 2,
        json!({"output_index":0,"item":message_item(status, &text)}),
    ));
    let output = json!([message_item(status, &text)]);
    events.push(event(end_kind, number + 3, json!({"response":response_object(status, output, usage)})));
    events
}

fn kinds(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(kind, _)| kind.as_str()).collect()
}

fn assert_no_secret(response: &Response) {
    assert!(!response.text().contains(SECRET_PART), "{}", response.text());
    assert!(response.headers.iter().all(|(_, v)| !v.contains(SECRET_PART)));
}

/// (prompt, cached, completion, reasoning) tokens and outcome of a ledger record.
fn record_tokens(record: &Value) -> (u64, u64, u64, u64, String) {
    let count = |name: &str| record[name].as_u64().unwrap();
    let outcome = record["outcome"].as_str().unwrap().to_string();
    (count("prompt_tokens"), count("cached_tokens"), count("completion_tokens"), count("reasoning_tokens"), outcome)
}

// Goal: a unary request goes to `{base}/responses` with the upstream model name, `store:false`
// (the client's `true` replaced), the model's cap as `max_output_tokens` and every other member
// as sent; the answer is the upstream's object with the public id wherever the name was (top
// level, nested, as a key), and the charge is the upstream's usage to the nano-USD, cached
// tokens at the cached price.
#[test]
fn unary_goes_natively_and_is_billed_from_the_upstream_usage() {
    unary_goes_natively_and_is_billed_from_the_upstream_usage_on("");
}

fn unary_goes_natively_and_is_billed_from_the_upstream_usage_on(store: &str) {
    let (base_url, seen) = native_upstream(|_, stream| {
        let mut object = response_object("completed", json!([message_item("completed", "Hello")]), upstream_usage());
        object["metadata"] = json!({"served_by": SECRET_MODEL, SECRET_MODEL: 1});
        respond(stream, "200 OK", "", &object.to_string());
    });
    let gateway = gateway_on(&base_url, store);
    let key = gateway.account_with_key("u", "1.00", "live");
    let body = json!({"model":"fikra-flash","input":[{"role":"user","content":[{"type":"input_text","text":"hi"}]}],
        "instructions":"be brief","store":true,"metadata":{"k":"v"},"temperature":0.5});
    let response = post(&gateway, &key, &body);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_no_secret(&response);
    assert_eq!(response.header("x-fikra-max-tokens-clamped"), None);
    let value = response.json();
    assert_eq!(value["model"], "fikra-flash");
    assert_eq!(value["metadata"], json!({"served_by":"fikra-flash","fikra-flash":1}));
    assert_eq!(value["output"][0]["content"][0]["text"], "Hello");
    assert_eq!(value["usage"], upstream_usage());
    let seen = seen.lock().unwrap()[0].clone();
    assert_eq!(seen.request_line, "POST /v1/responses HTTP/1.1");
    assert_eq!(
        seen.body,
        json!({"model":SECRET_MODEL,"store":false,"max_output_tokens":8192,
            "input":[{"role":"user","content":[{"type":"input_text","text":"hi"}]}],
            "instructions":"be brief","metadata":{"k":"v"},"temperature":0.5})
    );
    let record = &gateway.usage("u")[0];
    assert_eq!(record_tokens(record), (1000, 600, 50, 20, "completed".into()));
    assert_charged(&gateway, "u", &[USAGE_COST_NANOS]);
}

// Goal: a stream relays the upstream's typed events in their order with their sequence numbers,
// the public id in every event (whatever the spelling upstream), no upstream name anywhere in
// the bytes, and the terminal event's usage billed exactly; the upstream got `stream:true`.
#[test]
fn stream_relays_every_event_in_order_with_the_public_id() {
    stream_relays_every_event_in_order_with_the_public_id_on("");
}

fn stream_relays_every_event_in_order_with_the_public_id_on(store: &str) {
    let events = message_stream(&["Hel", "lo"], "response.completed", upstream_usage());
    let (base_url, seen) = native_upstream(move |_, stream| respond_sse(stream, &events));
    let gateway = gateway_on(&base_url, store);
    let key = gateway.account_with_key("s", "1.00", "live");
    let response = post(&gateway, &key, &json!({"model":"fikra-flash","input":"hi","stream":true}));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    assert_no_secret(&response);
    let events = typed_events(&response.body);
    assert_eq!(
        kinds(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    for (number, (_, data)) in events.iter().enumerate() {
        assert_eq!(data["sequence_number"], number as u64);
    }
    for index in [0, 1, 9] {
        assert_eq!(events[index].1["response"]["model"], "fikra-flash", "{index}");
    }
    assert_eq!(events[4].1["delta"], "Hel");
    // The terminal usage carries what was charged: 375 000 nano-USD.
    let mut charged_usage = upstream_usage();
    charged_usage["cost_usd"] = json!("0.000375000");
    assert_eq!(USAGE_COST_NANOS, 375_000);
    assert_eq!(events[9].1["response"]["usage"], charged_usage);
    let seen = seen.lock().unwrap()[0].clone();
    assert_eq!((seen.body["stream"].clone(), seen.body["store"].clone()), (json!(true), json!(false)));
    assert_eq!(seen.body["model"], SECRET_MODEL);
    assert_eq!(record_tokens(&gateway.usage("s")[0]), (1000, 600, 50, 20, "completed".into()));
    assert_charged(&gateway, "s", &[USAGE_COST_NANOS]);
}

// Goal: the first delta reaches the client while the upstream has not finished: the upstream
// holds the rest of its stream until the client has read that delta (or 5 s pass).
#[test]
fn the_first_delta_arrives_before_the_upstream_finishes() {
    let events = message_stream(&["Hel", "lo"], "response.completed", upstream_usage());
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = Arc::new(Mutex::new(released));
    let released_in_time = Arc::new(AtomicBool::new(false));
    let flag = released_in_time.clone();
    let (base_url, _) = native_upstream(move |_, stream| {
        let _ =
            write!(stream, "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n");
        for (index, event) in events.iter().enumerate() {
            if index == 5 {
                let waited = released.lock().unwrap().recv_timeout(Duration::from_secs(5));
                flag.store(waited.is_ok(), Ordering::SeqCst);
            }
            let _ = write!(stream, "{:x}\r\n{event}\r\n", event.len());
            let _ = stream.flush();
        }
        let _ = write!(stream, "0\r\n\r\n");
    });
    let gateway = gateway_for(&base_url);
    let key = gateway.account_with_key("o", "1.00", "live");
    let body = json!({"model":"fikra-flash","input":"hi","stream":true}).to_string();
    let stream = connect(gateway.api);
    (&stream).write_all(responses_request(&key, &body).as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let data = next_sse_data(&mut reader).expect("an event");
        if data.contains("\"response.output_text.delta\"") {
            assert!(data.contains("\"Hel\""), "{data}");
            break;
        }
    }
    release.send(()).unwrap();
    loop {
        let data = next_sse_data(&mut reader).expect("an event");
        if data.contains("\"response.completed\"") {
            break;
        }
    }
    assert!(released_in_time.load(Ordering::SeqCst), "the upstream was never released: the relay buffered");
    wait_for(Duration::from_secs(2), || gateway.usage("o").first().cloned()).expect("settled");
    assert_charged(&gateway, "o", &[USAGE_COST_NANOS]);
}

// Goal: unary answers that are not results (an error object, not JSON, no `output`, a failed
// response) are each a free 502 upstream_unavailable with outcome backend_failed, and the
// upstream's text never shows.
#[test]
fn unary_failures_in_disguise_are_free_502s() {
    let bodies = [
        r#"{"error":{"message":"vendor/secret-model-9b is overloaded","type":"server_error"}}"#.to_string(),
        "<html>oops</html>".to_string(),
        json!({"id":"resp_up1","object":"response","model":SECRET_MODEL,"status":"completed"}).to_string(),
        {
            let mut failed = response_object("failed", json!([]), upstream_usage());
            failed["error"] = json!({"code":"server_error","message":"vendor/secret-model-9b crashed"});
            failed.to_string()
        },
    ];
    let count = bodies.len();
    let (base_url, _) = native_upstream(move |n, stream| respond(stream, "200 OK", "", &bodies[n]));
    let gateway = gateway_for(&base_url);
    let key = gateway.account_with_key("f", "1.00", "live");
    for _ in 0..count {
        let response = post(&gateway, &key, &json!({"model":"fikra-flash","input":"hi"}));
        assert_eq!(response.status, 502, "{}", response.text());
        assert_eq!(response.error(), ("api_error".into(), "upstream_unavailable".into(), None));
        assert_no_secret(&response);
    }
    for record in gateway.usage("f") {
        assert_eq!(record_tokens(&record), (0, 0, 0, 0, "backend_failed".into()));
    }
    assert_charged(&gateway, "f", &vec![0; count]);
}

// Goal: upstream statuses map as for chat: a context-length 400 names `input`, 498 is a 503
// with retry-after, 424 a 502; each is free.
#[test]
fn upstream_statuses_map_as_for_chat() {
    let (base_url, _) = native_upstream(|n, stream| match n {
        0 => respond(
            stream,
            "400 Bad Request",
            "",
            r#"{"error":{"message":"Your input exceeds the context window of this model.","type":"invalid_request_error","param":"input","code":"context_length_exceeded"}}"#,
        ),
        1 => respond(stream, "498 Flex Capacity Exceeded", "retry-after: 2\r\n", r#"{"error":{"message":"busy"}}"#),
        _ => respond(stream, "424 Failed Dependency", "", r#"{"error":{"message":"dependency"}}"#),
    });
    let gateway = gateway_for(&base_url);
    let key = gateway.account_with_key("m", "1.00", "live");
    let body = json!({"model":"fikra-flash","input":"hi"});
    let context = post(&gateway, &key, &body);
    assert_eq!(context.status, 400);
    assert_eq!(
        context.error(),
        ("invalid_request_error".into(), "context_length_exceeded".into(), Some("input".into()))
    );
    let busy = post(&gateway, &key, &body);
    assert_eq!(busy.status, 503);
    assert_eq!(busy.header("retry-after"), Some("2"));
    let dependency = post(&gateway, &key, &body);
    assert_eq!(dependency.status, 502);
    assert_eq!(dependency.error().1, "upstream_unavailable");
    assert_charged(&gateway, "m", &[0, 0, 0]);
}

// Goal: an `error` event, or a `response.failed`, before the first output is a plain JSON 502,
// free: the held-back opening events are never written.
#[test]
fn failure_before_the_first_output_is_a_plain_502() {
    failure_before_the_first_output_is_a_plain_502_on("");
}

fn failure_before_the_first_output_is_a_plain_502_on(store: &str) {
    let opening = message_stream(&["x"], "response.completed", upstream_usage())[..2].to_vec();
    let error_event = event("error", 2, json!({"code":"server_error","message":"boom","param":null}));
    let failed = event("response.failed", 2, json!({"response":response_object("failed", json!([]), json!(null))}));
    let scripts = [[opening.clone(), vec![error_event]].concat(), [opening, vec![failed]].concat()];
    let (base_url, _) = native_upstream(move |n, stream| respond_sse(stream, &scripts[n]));
    let gateway = gateway_on(&base_url, store);
    let key = gateway.account_with_key("b", "1.00", "live");
    for _ in 0..2 {
        let response = post(&gateway, &key, &json!({"model":"fikra-flash","input":"hi","stream":true}));
        assert_eq!(response.status, 502, "{}", response.text());
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(response.error().1, "upstream_unavailable");
    }
    assert_charged(&gateway, "b", &[0, 0]);
}

/// The first `cut` events of a three-delta stream, then `last`.
fn cut_stream(cut: usize, last: String) -> Vec<String> {
    let mut events = message_stream(&["a", "b", "c"], "response.completed", upstream_usage())[..cut].to_vec();
    events.push(last);
    events
}

// Goal: an `error` event after the first delta ends the client's stream with one `error`
// event of the gateway's own (numbered after the last relayed one, no upstream text), charged
// for what was delivered: the hold's input bound and the two deltas relayed.
#[test]
fn error_event_after_the_first_delta_is_charged_for_what_was_delivered() {
    error_event_after_the_first_delta_is_charged_for_what_was_delivered_on("");
}

fn error_event_after_the_first_delta_is_charged_for_what_was_delivered_on(store: &str) {
    let last =
        event("error", 6, json!({"code":"server_error","message":"vendor/secret-model-9b fell over","param":null}));
    let events = cut_stream(6, last);
    let (base_url, _) = native_upstream(move |_, stream| respond_sse(stream, &events));
    let gateway = gateway_on(&base_url, store);
    let key = gateway.account_with_key("e", "1.00", "live");
    let response = post(&gateway, &key, &json!({"model":"fikra-flash","input":"hi","stream":true}));
    assert_eq!(response.status, 200);
    assert_no_secret(&response);
    let events = typed_events(&response.body);
    assert_eq!(kinds(&events)[4..], ["response.output_text.delta", "response.output_text.delta", "error"]);
    assert_eq!(
        events[6].1,
        json!({"type":"error","sequence_number":6,"code":"upstream_unavailable",
            "message":"The model backend failed in the middle of the answer.","param":null})
    );
    let record = &gateway.usage("e")[0];
    let (prompt, cached, completion, reasoning, outcome) = record_tokens(record);
    assert_eq!((cached, completion, reasoning, outcome.as_str()), (0, 2, 0, "backend_failed"));
    assert!(prompt > 0);
    assert_charged(&gateway, "e", &[(prompt + 2) * OUTPUT_NANOS]);
}

// Goal: a `response.failed` after the first delta, carrying usage, is billed that usage exactly
// and ends the client's stream with one `error` event (the failed event itself is not relayed).
#[test]
fn response_failed_after_the_start_is_billed_its_usage() {
    response_failed_after_the_start_is_billed_its_usage_on("");
}

fn response_failed_after_the_start_is_billed_its_usage_on(store: &str) {
    let failed =
        event("response.failed", 5, json!({"response":response_object("failed", json!([]), upstream_usage())}));
    let events = cut_stream(5, failed);
    let (base_url, _) = native_upstream(move |_, stream| respond_sse(stream, &events));
    let gateway = gateway_on(&base_url, store);
    let key = gateway.account_with_key("rf", "1.00", "live");
    let response = post(&gateway, &key, &json!({"model":"fikra-flash","input":"hi","stream":true}));
    assert_eq!(response.status, 200);
    assert_no_secret(&response);
    let events = typed_events(&response.body);
    assert_eq!(kinds(&events)[4..], ["response.output_text.delta", "error"]);
    assert_eq!(events[5].1["sequence_number"], 5);
    assert_eq!(record_tokens(&gateway.usage("rf")[0]), (1000, 600, 50, 20, "backend_failed".into()));
    assert_charged(&gateway, "rf", &[USAGE_COST_NANOS]);
}

// Goal: an answer cut by the output cap ends in `response.incomplete` (relayed as is, reason
// max_output_tokens), billed its usage, outcome completed; the client's cap went upstream.
#[test]
fn response_incomplete_is_relayed_and_billed() {
    response_incomplete_is_relayed_and_billed_on("");
}

fn response_incomplete_is_relayed_and_billed_on(store: &str) {
    let usage = json!({"input_tokens":10,"input_tokens_details":{"cached_tokens":0},
        "output_tokens":3,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":13});
    let events = message_stream(&["a", "b", "c"], "response.incomplete", usage);
    let (base_url, seen) = native_upstream(move |_, stream| respond_sse(stream, &events));
    let gateway = gateway_on(&base_url, store);
    let key = gateway.account_with_key("i", "1.00", "live");
    let body = json!({"model":"fikra-flash","input":"hi","stream":true,"max_output_tokens":3});
    let response = post(&gateway, &key, &body);
    assert_eq!(response.status, 200);
    let events = typed_events(&response.body);
    let last = &events.last().unwrap().1;
    assert_eq!(last["type"], "response.incomplete");
    assert_eq!(last["response"]["incomplete_details"], json!({"reason":"max_output_tokens"}));
    assert_eq!(last["response"]["model"], "fikra-flash");
    // 13 tokens at 500 nano-USD: the charge, as the terminal usage says.
    assert_eq!(last["response"]["usage"]["cost_usd"], "0.000006500");
    assert_eq!(seen.lock().unwrap()[0].body["max_output_tokens"], 3);
    assert_eq!(record_tokens(&gateway.usage("i")[0]), (10, 0, 3, 0, "completed".into()));
    assert_charged(&gateway, "i", &[13 * INPUT_NANOS]);
}

// Goal: an upstream whose body ends before its terminal event ends the client's stream with
// one `error` event, charged for the deltas delivered.
#[test]
fn a_stream_cut_before_its_terminal_event_ends_with_an_error_event() {
    let mut events = message_stream(&["a", "b"], "response.completed", upstream_usage());
    events.truncate(6);
    let (base_url, _) = native_upstream(move |_, stream| respond_sse(stream, &events));
    let gateway = gateway_for(&base_url);
    let key = gateway.account_with_key("c", "1.00", "live");
    let response = post(&gateway, &key, &json!({"model":"fikra-flash","input":"hi","stream":true}));
    assert_eq!(response.status, 200);
    let events = typed_events(&response.body);
    assert_eq!(kinds(&events).last(), Some(&"error"));
    let (prompt, _, completion, _, outcome) = record_tokens(&gateway.usage("c")[0]);
    assert_eq!((completion, outcome.as_str()), (2, "backend_failed"));
    assert_charged(&gateway, "c", &[(prompt + 2) * OUTPUT_NANOS]);
}

// Goal: a wallet that cannot pay for the model's whole cap gets a lowered `max_output_tokens`
// upstream, announced in x-fikra-max-tokens-clamped with the same figure.
#[test]
fn an_unaffordable_cap_is_clamped_and_announced() {
    let (base_url, seen) = native_upstream(|_, stream| {
        let usage = json!({"input_tokens":5,"output_tokens":1,"total_tokens":6});
        let object = response_object("completed", json!([message_item("completed", "ok")]), usage);
        respond(stream, "200 OK", "", &object.to_string());
    });
    let gateway = gateway_for(&base_url);
    let key = gateway.account_with_key("cl", "0.001", "live");
    let response = post(&gateway, &key, &json!({"model":"fikra-flash","input":"hi"}));
    assert_eq!(response.status, 200, "{}", response.text());
    let clamped: u64 = response.header("x-fikra-max-tokens-clamped").unwrap().parse().unwrap();
    assert!(clamped < 8192);
    assert_eq!(seen.lock().unwrap()[0].body["max_output_tokens"], clamped);
    assert_eq!(gateway.usage_costs("cl"), [6 * 500]);
}

// Goal: a client that leaves a native stream is settled within a second, for what it got (no
// usage comes in time), and nothing stays held.
#[test]
fn client_leaving_a_native_stream_is_settled_quickly() {
    let deltas: Vec<String> = (0..60).map(|n| format!("w{n} ")).collect();
    let delta_refs: Vec<&str> = deltas.iter().map(String::as_str).collect();
    let events = message_stream(&delta_refs, "response.completed", upstream_usage());
    let (base_url, _) = native_upstream(move |_, stream| {
        let _ =
            write!(stream, "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n");
        for event in &events {
            if write!(stream, "{:x}\r\n{event}\r\n", event.len()).and_then(|()| stream.flush()).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = write!(stream, "0\r\n\r\n");
    });
    let gateway = gateway_for(&base_url);
    let key = gateway.account_with_key("l", "1.00", "live");
    let body = json!({"model":"fikra-flash","input":"tell me","stream":true}).to_string();
    let stream = connect(gateway.api);
    (&stream).write_all(responses_request(&key, &body).as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut seen_deltas = 0;
    while seen_deltas < 3 {
        let data = next_sse_data(&mut reader).unwrap();
        seen_deltas += usize::from(data.contains("\"response.output_text.delta\""));
    }
    drop(reader);
    let left_at = Instant::now();
    let record = wait_for(Duration::from_secs(3), || gateway.usage("l").first().cloned()).expect("settled");
    assert!(left_at.elapsed() < Duration::from_millis(1500), "settled after {:?}", left_at.elapsed());
    let (prompt, _, completion, _, outcome) = record_tokens(&record);
    assert_eq!(outcome, "client_aborted");
    assert!((3..60).contains(&completion), "{completion}");
    assert_charged(&gateway, "l", &[(prompt + completion) * OUTPUT_NANOS]);
}

// The core cases again with the balance, holds and ledger on a real Redis: the same exact
// charges.
mod on_redis {
    use super::*;

    #[test]
    fn unary_goes_natively_and_is_billed_from_the_upstream_usage() {
        unary_goes_natively_and_is_billed_from_the_upstream_usage_on(&redis_store("unary_goes_natively_and_"));
    }

    #[test]
    fn stream_relays_every_event_in_order_with_the_public_id() {
        stream_relays_every_event_in_order_with_the_public_id_on(&redis_store("stream_relays_every_even"));
    }

    #[test]
    fn error_event_after_the_first_delta_is_charged_for_what_was_delivered() {
        error_event_after_the_first_delta_is_charged_for_what_was_delivered_on(&redis_store(
            "error_event_after_the_fi",
        ));
    }

    #[test]
    fn response_failed_after_the_start_is_billed_its_usage() {
        response_failed_after_the_start_is_billed_its_usage_on(&redis_store("response_failed_after_th"));
    }

    #[test]
    fn response_incomplete_is_relayed_and_billed() {
        response_incomplete_is_relayed_and_billed_on(&redis_store("response_incomplete_is_r"));
    }

    #[test]
    fn failure_before_the_first_output_is_a_plain_502() {
        failure_before_the_first_output_is_a_plain_502_on(&redis_store("failure_before_the_first"));
    }
}

// Goal: the gateway's own `error` event closing a native stream (here after an upstream `error`
// event past the first delta) sets the access log's `error_code` for that request.
#[test]
fn a_failed_native_stream_logs_its_error_code() {
    let last = event("error", 5, json!({"code":"server_error","message":"boom","param":null}));
    let events = cut_stream(5, last);
    let (base_url, _) = native_upstream(move |_, stream| respond_sse(stream, &events));
    let models = upstream_model_config(&base_url, "responses = true", "");
    let node = support::gateway_process::GatewayProcess::start(
        "native-log",
        "",
        &format!("[log]\naccess = \"json\"\n{models}"),
    );
    let key = node.account_with_key("lg", "1.00", "live");
    let response = post(&node, &key, &json!({"model":"fikra-flash","input":"hi","stream":true}));
    assert_eq!(response.status, 200);
    assert_eq!(typed_events(&response.body).last().unwrap().1["code"], "upstream_unavailable");
    let lines = support::responses::access_log_codes(&node, 1);
    assert_eq!(lines, [("/v1/responses".to_string(), 200, Some("upstream_unavailable".to_string()))]);
}
