//! `POST /v1/responses` over real sockets: validation, the unary and streamed answers translated
//! from chat (sandbox and a scripted chat upstream), billing, clamping and failures.

// Tests measure real time on purpose, and the recording upstream's threads share what they saw
// through a lock: clippy.toml's clock and lock policies are for the gateway.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod support;

use std::io::{BufReader, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::gateway::*;
use support::http::*;
use support::responses::{assert_charged, post, responses_request, typed_events};
use support::scripted_upstream::{SECRET_MODEL, read_request_body, respond, respond_sse, upstream_model_config};
use support::wait::wait_for;

/// The first four events of every stream that writes text.
const OPENING: [&str; 4] =
    ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"];

/// An upstream that records every request body it gets and answers the n-th with
/// `answer(n, stream)`; returns its base URL and the recorded bodies.
fn recording_upstream(
    answer: impl Fn(usize, &mut std::net::TcpStream) + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (recorded, answer) = (bodies.clone(), Arc::new(answer));
    std::thread::spawn(move || {
        for stream in listener.incoming().take(50) {
            let Ok(mut stream) = stream else { return };
            let (recorded, answer) = (recorded.clone(), answer.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                while let Some(body) = read_request_body(&mut reader) {
                    let n = {
                        let mut all = recorded.lock().unwrap();
                        all.push(serde_json::from_slice(&body).unwrap());
                        all.len() - 1
                    };
                    answer(n, &mut stream);
                }
            });
        }
    });
    (format!("http://{addr}/v1"), bodies)
}

/// A recording upstream whose every answer is the SSE stream `events`.
fn sse_upstream(events: Vec<String>) -> (String, Arc<Mutex<Vec<Value>>>) {
    recording_upstream(move |_, stream| respond_sse(stream, &events))
}

fn chunk(delta: Value, finish: Option<&str>) -> String {
    let event = json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":SECRET_MODEL,
        "choices":[{"index":0,"delta":delta,"finish_reason":finish}]});
    format!("data: {event}\n\n")
}

fn usage_chunk(usage: Value) -> String {
    let event =
        json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":SECRET_MODEL,"choices":[],"usage":usage});
    format!("data: {event}\n\n")
}

fn assert_no_secret(response: &Response) {
    assert!(!response.text().contains(SECRET_MODEL), "{}", response.text());
    assert!(response.headers.iter().all(|(_, v)| !v.contains(SECRET_MODEL)));
}

// Goal: the SDK's first example on the sandbox with a live key: an exact Responses object,
// usage as the sandbox counts it (15 in: 13 content bytes / 4 rounded up + 4 per message x 2
// + 3; 5 out), the exact charge of 20 tokens x 500 nano-USD, nothing left held.
#[test]
fn unary_on_the_sandbox_is_a_response_object_billed_exactly() {
    let gateway = TestGateway::start("[sandbox]\noutput_tokens = 5\n");
    let key = gateway.account_with_key("u", "1.00", "live");
    let response = post(&gateway, &key, &json!({"model":"fikra-flash","input":"hello","instructions":"be brief"}));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    let request_id = response.header("x-request-id").unwrap().to_string();
    assert_eq!(response.header("x-ratelimit-limit-requests"), Some("30"));
    assert_eq!(response.header("x-fikra-max-tokens-clamped"), None);
    let value = response.json();
    let text = value["output"][0]["content"][0]["text"].as_str().unwrap().to_string();
    assert_eq!(text.split(' ').count(), 5);
    let created_at = value["created_at"].as_u64().unwrap();
    assert_eq!(
        value,
        json!({
            "id": format!("resp_{request_id}"), "object": "response", "created_at": created_at,
            "status": "completed", "error": null, "incomplete_details": null,
            "instructions": "be brief", "max_output_tokens": null, "model": "fikra-flash",
            "output": [{"type": "message", "id": format!("msg_{request_id}"), "status": "completed",
                "role": "assistant", "content": [{"type": "output_text", "text": text, "annotations": []}]}],
            "parallel_tool_calls": true, "previous_response_id": null,
            "reasoning": {"effort": null, "summary": null}, "store": false, "temperature": 1,
            "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "top_p": 1,
            "truncation": "disabled", "metadata": {},
            "usage": {"input_tokens": 15, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 5,
                "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 20}
        })
    );
    assert_charged(&gateway, "u", &[20 * 500]);
}

// Goal: a test key gets the same answer from the sandbox and never touches the wallet; a
// `max_output_tokens` below the sandbox's length makes the response incomplete.
#[test]
fn test_key_and_max_output_tokens_make_an_incomplete_response_for_free() {
    let gateway = TestGateway::start("[sandbox]\noutput_tokens = 5\n");
    let key = gateway.account_with_key("t", "1.00", "test");
    let response = post(&gateway, &key, &json!({"model":"fikra-flash","input":"hello","max_output_tokens":3}));
    assert_eq!(response.status, 200, "{}", response.text());
    let value = response.json();
    assert_eq!(value["status"], "incomplete");
    assert_eq!(value["incomplete_details"], json!({"reason": "max_output_tokens"}));
    assert_eq!(value["max_output_tokens"], 3);
    assert_eq!(value["usage"]["output_tokens"], 3);
    assert_eq!(value["usage"]["input_tokens"], 9);
    assert_eq!(gateway.usage_costs("t"), [0]);
    assert_eq!(gateway.balance_nanos("t"), 1_000_000_000);
}

// Goal: a stream on the sandbox is the exact typed event sequence, numbered from 0, ending
// with response.completed carrying the whole response and usage (9 in, 5 out); no [DONE].
#[test]
fn stream_on_the_sandbox_is_the_exact_event_sequence() {
    let gateway = TestGateway::start("[sandbox]\noutput_tokens = 5\n");
    let key = gateway.account_with_key("s", "1.00", "live");
    let response = post(&gateway, &key, &json!({"model":"fikra-flash","input":"hello","stream":true}));
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    let events = typed_events(&response.body);
    let kinds: Vec<&str> = events.iter().map(|(kind, _)| kind.as_str()).collect();
    let mut expected = OPENING.to_vec();
    expected.extend(["response.output_text.delta"; 5]);
    expected.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(kinds, expected);
    for (number, (_, data)) in events.iter().enumerate() {
        assert_eq!(data["sequence_number"], number as u64);
    }
    let deltas: String = events[4..9].iter().map(|(_, d)| d["delta"].as_str().unwrap()).collect();
    let request_id = response.header("x-request-id").unwrap();
    for (_, data) in &events[2..12] {
        assert_eq!(data["output_index"], 0);
    }
    assert_eq!(events[4].1["item_id"], format!("msg_{request_id}"));
    assert_eq!(events[9].1["text"], deltas.as_str());
    assert_eq!(events[1].1["response"]["status"], "in_progress");
    let done = &events[12].1["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["content"][0]["text"], deltas.as_str());
    assert_eq!(done["usage"]["input_tokens"], 9);
    assert_eq!(done["usage"]["output_tokens"], 5);
    assert_eq!(done["usage"]["total_tokens"], 14);
    assert_charged(&gateway, "s", &[14 * 500]);
}

// Goal: each parameter the gateway cannot honour, and each malformed one, is refused before
// admission with the exact code and param, and costs nothing.
#[test]
fn refused_parameters_name_their_param() {
    let gateway = TestGateway::start(
        "[[models]]\nid = \"fikra-text\"\nupstream = \"sandbox\"\ninput_usd_per_million = \"0.5\"\noutput_usd_per_million = \"0.5\"\nmax_output_tokens = 100\n",
    );
    let key = gateway.account_with_key("r", "1.00", "live");
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"model":"fikra-text","input":"x","previous_response_id":"resp_1"}),
            "unsupported_parameter",
            "previous_response_id",
        ),
        (json!({"model":"fikra-text","input":"x","conversation":"conv_1"}), "unsupported_parameter", "conversation"),
        (json!({"model":"fikra-text","input":"x","background":true}), "unsupported_parameter", "background"),
        (json!({"model":"fikra-text","input":"x","prompt":{"id":"p"}}), "unsupported_parameter", "prompt"),
        (
            json!({"model":"fikra-text","input":"x","tools":[{"type":"function","name":"f"},{"type":"web_search"}]}),
            "unsupported_parameter",
            "tools[1]",
        ),
        (
            json!({"model":"fikra-text","input":"x","tools":[{"type":"file_search","vector_store_ids":["v"]}]}),
            "unsupported_parameter",
            "tools[0]",
        ),
        (json!({"model":"fikra-text","input":"x","frobnicate":1}), "unsupported_parameter", "frobnicate"),
        (
            json!({"model":"fikra-text","input":[{"type":"reasoning","summary":[]}]}),
            "unsupported_parameter",
            "input[0]",
        ),
        (
            json!({"model":"fikra-text","input":[{"role":"user","content":[{"type":"input_text","text":"a"},{"type":"input_image","image_url":"https://x.test/a.png"}]}]}),
            "unsupported_parameter",
            "input[0].content[1]",
        ),
        (
            json!({"model":"fikra-text","input":[{"role":"user","content":[{"type":"input_image","file_id":"file_1"}]}]}),
            "unsupported_parameter",
            "input[0].content[0]",
        ),
        (json!({"model":"fikra-text","input":[{"role":"robot","content":"a"}]}), "invalid_parameter", "input[0].role"),
        (
            json!({"model":"fikra-text","input":[{"type":"function_call","call_id":"c","name":"f"}]}),
            "invalid_parameter",
            "input[0].arguments",
        ),
        (json!({"model":"fikra-text","input":[]}), "invalid_parameter", "input"),
        (json!({"model":"fikra-text","input":"x","max_output_tokens":0}), "invalid_parameter", "max_output_tokens"),
        (json!({"model":"fikra-text","input":"x","max_output_tokens":101}), "invalid_parameter", "max_output_tokens"),
        (json!({"model":"fikra-text","input":"x","temperature":2.5}), "invalid_parameter", "temperature"),
        (json!({"model":"fikra-text","input":"x","top_p":1.5}), "invalid_parameter", "top_p"),
        (json!({"model":"fikra-text","input":"x","stream":"yes"}), "invalid_parameter", "stream"),
        (json!({"model":"fikra-text"}), "missing_required_parameter", "input"),
        (json!({"input":"x"}), "missing_required_parameter", "model"),
        (json!({"model":"fikra-txt","input":"x"}), "model_not_found", "model"),
    ];
    for (body, code, param) in cases {
        let response = post(&gateway, &key, &body);
        assert_eq!(response.status, 400, "{body}: {}", response.text());
        let (kind, got_code, got_param) = response.error();
        assert_eq!(
            (kind.as_str(), got_code.as_str(), got_param.as_deref()),
            ("invalid_request_error", code, Some(param)),
            "{body}"
        );
        assert!(response.header("x-request-id").is_some());
    }
    let repeated = r#"{"model":"fikra-text","input":"x","model":"fikra-text"}"#;
    let response = send_one(gateway.api, responses_request(&key, repeated).as_bytes());
    assert_eq!(response.error(), ("invalid_request_error".into(), "invalid_parameter".into(), Some("model".into())));
    let response = send_one(gateway.api, responses_request(&key, "{\"model\":").as_bytes());
    assert_eq!(response.error().1, "invalid_json");
    assert!(gateway.usage("r").is_empty());
    assert_eq!(gateway.balance_nanos("r"), 1_000_000_000);
}

// Goal: a function-tool round trip through a chat upstream: the exact chat request the
// upstream sees (instructions first, items as messages, tools nested, json_schema as
// response_format, the granted cap as max_tokens), and its tool call returned as a
// function_call item; billing from the upstream's usage, cached and reasoning included.
#[test]
fn function_tool_round_trip_through_a_chat_upstream() {
    let (base_url, bodies) = recording_upstream(|_, stream| {
        let body = json!({"id":"c1","object":"chat.completion","created":1,"model":SECRET_MODEL,
            "choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[
                {"id":"call_9","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Nairobi\"}"}}]},
                "finish_reason":"tool_calls"}],
            "usage":{"prompt_tokens":40,"completion_tokens":12,"total_tokens":52,
                "prompt_tokens_details":{"cached_tokens":8},"completion_tokens_details":{"reasoning_tokens":4}}});
        respond(stream, "200 OK", "", &body.to_string());
    });
    let gateway = TestGateway::start(&upstream_model_config(&base_url, "", ""));
    let key = gateway.account_with_key("f", "1.00", "live");
    let tool = json!({"type":"function","name":"get_weather","description":"Weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}},"strict":true});
    let request = json!({
        "model": "fikra-flash", "instructions": "Use tools.", "max_output_tokens": 64, "temperature": 0.2,
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {"role": "developer", "content": "Be brief."}
        ],
        "tools": [tool], "tool_choice": {"type": "function", "name": "get_weather"},
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true}},
        "reasoning": {"effort": "low"}, "metadata": {"k": "v"}, "store": false, "parallel_tool_calls": false
    });
    let response = post(&gateway, &key, &request);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_no_secret(&response);
    let sent = bodies.lock().unwrap()[0].clone();
    assert_eq!(
        sent,
        json!({
            "model": SECRET_MODEL,
            "messages": [
                {"role": "system", "content": "Use tools."},
                {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {"role": "system", "content": "Be brief."}
            ],
            "max_tokens": 64, "temperature": 0.2, "parallel_tool_calls": false,
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": true}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": true}},
            "reasoning_effort": "low"
        })
    );
    let value = response.json();
    assert_eq!(
        value["output"],
        json!([{"type": "function_call", "id": "fc_call_9", "call_id": "call_9", "name": "get_weather",
            "arguments": "{\"city\":\"Nairobi\"}", "status": "completed"}])
    );
    assert_eq!(value["status"], "completed");
    assert_eq!(value["tools"], json!([tool]));
    assert_eq!(
        value["usage"],
        json!({"input_tokens": 40, "input_tokens_details": {"cached_tokens": 8}, "output_tokens": 12,
            "output_tokens_details": {"reasoning_tokens": 4}, "total_tokens": 52})
    );
    let record = &gateway.usage("f")[0];
    assert_eq!((record["cached_tokens"].as_u64(), record["reasoning_tokens"].as_u64()), (Some(8), Some(4)));
    assert_charged(&gateway, "f", &[52 * 500]);
}

// Goal: a stream through a chat upstream: text and a streamed tool call become their typed
// events with exact sequence numbers, the upstream's usage lands in response.completed and
// the ledger, and the upstream asked for usage; the model name never shows.
#[test]
fn stream_through_a_chat_upstream_translates_text_and_tool_calls() {
    let (base_url, bodies) = sse_upstream(vec![
        chunk(json!({"role":"assistant","content":""}), None),
        chunk(json!({"content":"Hi"}), None),
        chunk(json!({"content":" there"}), None),
        chunk(
            json!({"tool_calls":[{"index":0,"id":"call_7","type":"function","function":{"name":"f","arguments":""}}]}),
            None,
        ),
        chunk(json!({"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":"}}]}), None),
        chunk(json!({"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]}), None),
        chunk(json!({}), Some("tool_calls")),
        usage_chunk(json!({"prompt_tokens":20,"completion_tokens":6,"total_tokens":26})),
        "data: [DONE]\n\n".to_string(),
    ]);
    let gateway = TestGateway::start(&upstream_model_config(&base_url, "", ""));
    let key = gateway.account_with_key("st", "1.00", "live");
    let response = post(&gateway, &key, &json!({"model":"fikra-flash","input":"hi","stream":true}));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_no_secret(&response);
    assert_eq!(bodies.lock().unwrap()[0]["stream_options"], json!({"include_usage": true}));
    let events = typed_events(&response.body);
    let kinds: Vec<&str> = events.iter().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            OPENING[0],
            OPENING[1],
            OPENING[2],
            OPENING[3],
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    for (number, (_, data)) in events.iter().enumerate() {
        assert_eq!(data["sequence_number"], number as u64);
    }
    assert_eq!(
        events[9].1["item"],
        json!({"type":"function_call","id":"fc_call_7","call_id":"call_7","name":"f","arguments":"","status":"in_progress"})
    );
    assert_eq!(events[10].1["item_id"], "fc_call_7");
    assert_eq!(events[10].1["output_index"], 1);
    assert_eq!(events[12].1["arguments"], "{\"a\":1}");
    let done = &events[14].1["response"];
    assert_eq!(done["output"][0]["content"][0]["text"], "Hi there");
    assert_eq!(
        done["output"][1],
        json!({"type":"function_call","id":"fc_call_7","call_id":"call_7","name":"f","arguments":"{\"a\":1}","status":"completed"})
    );
    assert_eq!(done["usage"]["total_tokens"], 26);
    assert_charged(&gateway, "st", &[26 * 500]);
}

// Goal: an upstream that fails after its first chunk ends the stream with exactly one `error`
// event (SDK ResponseErrorEvent shape), no response.completed, charged for what was delivered.
#[test]
fn upstream_failure_after_the_first_chunk_is_one_error_event() {
    let (base_url, _) = sse_upstream(vec![
        chunk(json!({"role":"assistant","content":"Hel"}), None),
        "data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n".to_string(),
    ]);
    let gateway = TestGateway::start(&upstream_model_config(&base_url, "", ""));
    let key = gateway.account_with_key("e", "1.00", "live");
    let response = post(&gateway, &key, &json!({"model":"fikra-flash","input":"hi","stream":true}));
    assert_eq!(response.status, 200);
    let events = typed_events(&response.body);
    let kinds: Vec<&str> = events.iter().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(kinds, [OPENING[0], OPENING[1], OPENING[2], OPENING[3], "response.output_text.delta", "error"]);
    assert_eq!(
        events[5].1,
        json!({"type":"error","sequence_number":5,"code":"upstream_unavailable",
            "message":"The model backend failed in the middle of the answer.","param":null})
    );
    let record = &gateway.usage("e")[0];
    assert_eq!(record["outcome"], "backend_failed");
    assert_eq!(record["completion_tokens"], 1);
    assert_eq!(gateway.account("e")["held_usd"], "0.000000000");
}

// Goal: an upstream that fails before its first chunk is an ordinary 502 JSON error, free.
#[test]
fn upstream_failure_before_the_first_chunk_is_a_plain_502() {
    let (base_url, _) = sse_upstream(vec!["data: {\"error\":{\"message\":\"boom\"}}\n\n".to_string()]);
    let gateway = TestGateway::start(&upstream_model_config(&base_url, "", ""));
    let key = gateway.account_with_key("p", "1.00", "live");
    let response = post(&gateway, &key, &json!({"model":"fikra-flash","input":"hi","stream":true}));
    assert_eq!(response.status, 502);
    assert_eq!(response.error().1, "upstream_unavailable");
    assert_eq!(gateway.usage_costs("p"), [0]);
}

// Goal: a wallet that cannot pay for the model's whole output cap gets a lowered cap, sent
// upstream as max_tokens and announced in x-fikra-max-tokens-clamped with the same figure.
#[test]
fn an_unaffordable_cap_is_clamped_and_announced() {
    let (base_url, bodies) = recording_upstream(|_, stream| {
        let body = json!({"id":"c1","object":"chat.completion","created":1,"model":SECRET_MODEL,
            "choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],
            "usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}});
        respond(stream, "200 OK", "", &body.to_string());
    });
    let gateway = TestGateway::start(&upstream_model_config(&base_url, "", ""));
    let key = gateway.account_with_key("c", "0.001", "live");
    let response = post(&gateway, &key, &json!({"model":"fikra-flash","input":"hi"}));
    assert_eq!(response.status, 200, "{}", response.text());
    let clamped: u64 = response.header("x-fikra-max-tokens-clamped").unwrap().parse().unwrap();
    assert!(clamped < 8192);
    assert_eq!(bodies.lock().unwrap()[0]["max_tokens"], clamped);
    assert_eq!(response.json()["output"][0]["content"][0]["text"], "ok");
    assert_eq!(gateway.usage_costs("c"), [6 * 500]);
}

// Goal: a client that leaves a Responses stream is settled within a second for what it got.
#[test]
fn client_leaving_a_stream_is_settled_quickly() {
    let gateway =
        TestGateway::start("[sandbox]\ntime_to_first_token_ms = 0\ntokens_per_second = 20\noutput_tokens = 20\n");
    let key = gateway.account_with_key("l", "1.00", "live");
    let body = json!({"model":"fikra-flash","input":"tell me","stream":true}).to_string();
    let stream = connect(gateway.api);
    (&stream).write_all(responses_request(&key, &body).as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut deltas = 0;
    while deltas < 3 {
        let data = next_sse_data(&mut reader).unwrap();
        deltas += usize::from(data.contains("\"response.output_text.delta\""));
    }
    drop(reader);
    let left_at = Instant::now();
    let record = wait_for(Duration::from_secs(2), || gateway.usage("l").first().cloned()).expect("settled");
    assert!(left_at.elapsed() < Duration::from_millis(1500), "settled after {:?}", left_at.elapsed());
    assert_eq!(record["outcome"], "client_aborted");
    let completion = record["completion_tokens"].as_u64().unwrap();
    assert!((3..20).contains(&completion), "{completion}");
    let prompt = record["prompt_tokens"].as_u64().unwrap();
    assert_charged(&gateway, "l", &[(prompt + completion) * 500]);
}

// Goal: an upstream context-length refusal is a free 400 context_length_exceeded naming
// `input` (what a Responses client sent), not the chat `messages`.
#[test]
fn context_length_refusal_names_input() {
    let (base_url, _) = recording_upstream(|_, stream| {
        let body = r#"{"error":{"message":"Please reduce the length of the messages or completion.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
        respond(stream, "400 Bad Request", "", body);
    });
    let gateway = TestGateway::start(&upstream_model_config(&base_url, "", ""));
    let key = gateway.account_with_key("x", "1.00", "live");
    let response = post(&gateway, &key, &json!({"model":"fikra-flash","input":"hi"}));
    assert_eq!(response.status, 400);
    assert_eq!(
        response.error(),
        ("invalid_request_error".into(), "context_length_exceeded".into(), Some("input".into()))
    );
    assert_no_secret(&response);
    assert_charged(&gateway, "x", &[0]);
}

// Goal: the stream flag is the gateway's parameter, not input: `{"input":"hi"}` with a cap of 4
// is held for the same input bound streamed or not, exactly 63 tokens (the translated body's 82
// bytes less its `"model":"fikra-flash"` and `"max_tokens":4` members, 21 and 14 bytes, plus 8
// for its one message and 8 for the request). The upstream reports no usage, so the ledger's
// prompt tokens are that bound.
#[test]
fn the_stream_flag_adds_nothing_to_the_input_bound() {
    let (base_url, _) = recording_upstream(|n, stream| {
        if n == 0 {
            let body = json!({"id":"c1","object":"chat.completion","created":1,"model":SECRET_MODEL,
                "choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]});
            respond(stream, "200 OK", "", &body.to_string());
        } else {
            respond_sse(stream, &[chunk(json!({"content":"ok"}), Some("stop")), "data: [DONE]\n\n".to_string()]);
        }
    });
    let gateway = TestGateway::start(&upstream_model_config(&base_url, "", ""));
    let key = gateway.account_with_key("sf", "1.00", "live");
    let unary = post(&gateway, &key, &json!({"model":"fikra-flash","input":"hi","max_output_tokens":4}));
    assert_eq!(unary.status, 200, "{}", unary.text());
    let streamed =
        post(&gateway, &key, &json!({"model":"fikra-flash","input":"hi","max_output_tokens":4,"stream":true}));
    assert_eq!(streamed.status, 200, "{}", streamed.text());
    let prompts: Vec<u64> = gateway.usage("sf").iter().map(|r| r["prompt_tokens"].as_u64().unwrap()).collect();
    // Newest first: the stream, then the unary request.
    assert_eq!(prompts, [63, 63]);
    // Unary: the bound and the whole cap of 4; streamed: the bound and the one chunk delivered.
    assert_charged(&gateway, "sf", &[(63 + 1) * 500, (63 + 4) * 500]);
}

// Goal: a translated stream the upstream cuts after its first chunk ends with an `error` event
// whose code, `upstream_unavailable`, is also the access log's `error_code` for that request
// (status 200: the head was sent).
#[test]
fn a_failed_stream_logs_its_error_code() {
    let (base_url, _) = sse_upstream(vec![chunk(json!({"role":"assistant","content":"Hel"}), None)]);
    let node = support::gateway_process::GatewayProcess::start(
        "resp-log",
        "",
        &format!("[log]\naccess = \"json\"\n{}", upstream_model_config(&base_url, "", "")),
    );
    let key = node.account_with_key("lg", "1.00", "live");
    let response = post(&node, &key, &json!({"model":"fikra-flash","input":"hi","stream":true}));
    assert_eq!(response.status, 200);
    let events = typed_events(&response.body);
    assert_eq!(events.last().unwrap().1["code"], "upstream_unavailable");
    let lines = support::responses::access_log_codes(&node, 1);
    assert_eq!(lines, [("/v1/responses".to_string(), 200, Some("upstream_unavailable".to_string()))]);
}
