use std::cell::RefCell;

use super::*;
use crate::openai::responses::parse_responses_request;

const NAMES: ModelNames<'static> = ModelNames { public: "fikra-flash", upstream: "vendor/secret" };

fn shape_of<'a>(
    body: &'a [u8],
    request: &'a ResponsesRequest<'a>,
    buffers: &'a RefCell<Vec<Vec<u8>>>,
) -> ResponseShape<'a> {
    ResponseShape { request_id: "r1", model_id: "fikra-flash", created_unix_s: 1, body, request, buffers }
}

// Goal: the native body sets model, store and the cap first and copies every other member as
// written; the client's own model, store and cap (an escaped key included) are dropped.
#[test]
fn native_body_replaces_model_store_and_cap() {
    let body = br#"{"model":"fikra-flash","input":"hi","st\u006fre":true,"max_output_tokens":99,"metadata":{"a":"b"}}"#;
    let request = parse_responses_request(body).unwrap();
    let buffers = RefCell::new(Vec::new());
    let mut out = Vec::new();
    write_native_body(&shape_of(body, &request, &buffers), "vendor/secret", 40, &mut out);
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        r#"{"model":"vendor/secret","store":false,"max_output_tokens":40,"input":"hi","metadata":{"a":"b"}}"#
    );
}

// Goal: the hold's byte count for a native body leaves out only the gateway's scalar members
// (keys, values and their own punctuation) and the image payloads.
#[test]
fn native_input_bytes_leave_out_scalars_and_image_payloads() {
    let body = br#"{"model":"m","input":[{"role":"user","content":[{"type":"input_image","image_url":"data:xyz"}]}],"temperature":1}"#;
    let request = parse_responses_request(body).unwrap();
    // Each scalar member with its quotes, colon and one comma (`"model":"m",`, `,"temperature":1`).
    let excluded = "\"model\":\"m\",".len() + ",\"temperature\":1".len() + "\"data:xyz\"".len();
    assert_eq!(native_input_bytes(body, &request), (body.len() - excluded) as u64);
    // The stream flag counts nothing, wherever it stands.
    let plain = br#"{"model":"m","input":"hi","metadata":{"k":"v"}}"#;
    let counted = native_input_bytes(plain, &parse_responses_request(plain).unwrap());
    for streamed in [
        &br#"{"model":"m","input":"hi","metadata":{"k":"v"},"stream":true}"#[..],
        br#"{"stream":true,"model":"m","input":"hi","metadata":{"k":"v"}}"#,
    ] {
        assert_eq!(native_input_bytes(streamed, &parse_responses_request(streamed).unwrap()), counted);
    }
}

fn rewritten(event: &str) -> (EventFacts, String) {
    let mut out = Vec::new();
    let facts = rewrite_native_event(event.as_bytes(), &NAMES, None, &mut out);
    (facts, String::from_utf8(out).unwrap())
}

// Goal: each event kind is classified, relayed events are written with their type as the
// event line and the public id in place of the upstream's, and failures write nothing.
#[test]
fn events_are_classified_and_rewritten() {
    let usage = r#"{"input_tokens":9,"input_tokens_details":{"cached_tokens":4},"output_tokens":3,"output_tokens_details":{"reasoning_tokens":1}}"#;
    let created = r#"{"type":"response.created","sequence_number":0,"response":{"model":"vendor\/secret"}}"#;
    let (facts, text) = rewritten(&format!("event: response.created\ndata: {created}\n\n"));
    assert_eq!(facts, EventFacts { kind: NativeEvent::Opening, usage: None, sequence_number: Some(0) });
    assert_eq!(
        text,
        "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"model\":\"fikra-flash\"}}\n\n"
    );
    let delta = r#"data: {"type":"response.output_text.delta","sequence_number":4,"delta":"x"}"#;
    assert_eq!(rewritten(&format!("{delta}\n\n")).0.kind, NativeEvent::Output { delta: true });
    let done = r#"data: {"type":"response.output_item.done","sequence_number":5}"#;
    assert_eq!(rewritten(&format!("{done}\n\n")).0.kind, NativeEvent::Output { delta: false });
    let completed =
        format!(r#"data: {{"type":"response.completed","sequence_number":6,"response":{{"usage":{usage}}}}}"#);
    let (facts, text) = rewritten(&format!("{completed}\n\n"));
    assert_eq!(facts.kind, NativeEvent::Finished);
    assert_eq!(
        facts.usage,
        Some(ReportedUsage { prompt_tokens: 9, cached_prompt_tokens: 4, completion_tokens: 3, reasoning_tokens: 1 })
    );
    assert!(text.starts_with("event: response.completed\ndata: "));
    let failed = format!(r#"data: {{"type":"response.failed","sequence_number":6,"response":{{"usage":{usage}}}}}"#);
    let (facts, text) = rewritten(&format!("{failed}\n\n"));
    assert_eq!((facts.kind, facts.usage.map(|u| u.prompt_tokens), text.as_str()), (NativeEvent::Failed, Some(9), ""));
    for (event, kind) in [
        ("event: error\ndata: {\"type\":\"error\",\"message\":\"x\"}\n\n", NativeEvent::Error),
        ("data: {\"type\":\"error\",\"message\":\"x\"}\n\n", NativeEvent::Error),
        ("data: {\"type\":\"response.in_progress\",\"error\":{\"m\":1}}\n\n", NativeEvent::Error),
        (": keep-alive\n\n", NativeEvent::Ignored),
        ("data: {\"no_type\":1}\n\n", NativeEvent::Malformed),
        ("data: [1]\n\n", NativeEvent::Malformed),
        ("data: {\"type\":\"response.created\"\n\n", NativeEvent::Malformed),
        ("bogus: 1\n\n", NativeEvent::Malformed),
    ] {
        let (facts, text) = rewritten(event);
        assert_eq!((facts.kind, text.as_str()), (kind, ""), "{event}");
    }
}

// Goal: only an object with an `output` array, no error and not failed is a unary result.
#[test]
fn unary_results_are_told_from_failures() {
    let usage = r#""usage":{"input_tokens":2,"output_tokens":1}"#;
    let ok = format!(r#"{{"status":"completed","output":[],{usage}}}"#);
    assert_eq!(unary_result(ok.as_bytes(), false), Some(Some(ReportedUsage::new(2, 1))));
    assert_eq!(unary_result(br#"{"status":"incomplete","output":[]}"#, false), Some(None));
    assert_eq!(unary_result(ok.as_bytes(), true), None);
    assert_eq!(unary_result(br#"{"status":"failed","output":[]}"#, false), None);
    assert_eq!(unary_result(br#"{"status":"completed","output":{}}"#, false), None);
    assert_eq!(unary_result(br#"{"status":"completed"}"#, false), None);
}
