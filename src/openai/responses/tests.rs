//! Table tests of the Responses request parser, its chat translation and the answer translator.

use std::cell::RefCell;

use super::answer::{ResponseShape, ResponsesStream, write_unary};
use super::translate::write_chat_body;
use super::*;

fn parse(body: &str) -> Result<ResponsesRequest<'_>, Fault<'_>> {
    parse_responses_request(body.as_bytes())
}

fn param_of(body: &str) -> (ErrorKind, Option<String>) {
    let mut text = String::new();
    let error = parse(body).expect_err(body).into_error(&mut text);
    (error.kind, error.param.map(str::to_string))
}

// Goal: every refusal names the exact param, in body order, escapes seen through.
#[test]
fn refusals_name_their_param() {
    let cases = [
        (
            r#"{"model":"m","input":"x","previous_response_id":"r"}"#,
            ErrorKind::UnsupportedParameter,
            "previous_response_id",
        ),
        (r#"{"model":"m","input":"x","background":true}"#, ErrorKind::UnsupportedParameter, "background"),
        (r#"{"model":"m","input":"x","tools":[{"type":"web_search"}]}"#, ErrorKind::UnsupportedParameter, "tools[0]"),
        (
            r#"{"model":"m","input":"x","tool_choice":{"type":"file_search"}}"#,
            ErrorKind::UnsupportedParameter,
            "tool_choice",
        ),
        (
            r#"{"model":"m","input":[{"role":"user","content":[{"type":"input_audio"}]}]}"#,
            ErrorKind::UnsupportedParameter,
            "input[0].content[0]",
        ),
        (r#"{"model":"m","input":"x","m\u006fdel":"n"}"#, ErrorKind::InvalidParameter, "m\\u006fdel"),
        (r#"{"model":"m","input":7}"#, ErrorKind::InvalidParameter, "input"),
        (r#"{"model":"m","input":"x","max_output_tokens":1.5}"#, ErrorKind::InvalidParameter, "max_output_tokens"),
        (
            r#"{"model":"m","input":[{"type":"function_call_output","call_id":"c"}]}"#,
            ErrorKind::InvalidParameter,
            "input[0].output",
        ),
    ];
    for (body, kind, param) in cases {
        assert_eq!(param_of(body), (kind, Some(param.to_string())), "{body}");
    }
    // Null is the same as absent for what the gateway refuses.
    assert!(parse(r#"{"model":"m","input":"x","previous_response_id":null,"background":false}"#).is_ok());
    assert_eq!(param_of(r#"{"model":"m"}"#), (ErrorKind::MissingRequiredParameter, Some("input".into())));
    assert_eq!(param_of(r#"{"model":"m","input":"x",}"#).0, ErrorKind::InvalidJson);
}

// Goal: the facts the gateway routes on, and the first image's position.
#[test]
fn facts_of_a_valid_request() {
    let body = r#"{"model":"fikra-flash","stream":true,"max_output_tokens":77,"input":[{"role":"user","content":"a"},{"role":"user","content":[{"type":"input_text","text":"b"},{"type":"input_image","image_url":"https://x.test/i.png"}]}]}"#;
    let request = parse(body).unwrap();
    assert_eq!(request.model, "fikra-flash");
    assert!(request.stream);
    assert_eq!(request.max_output_tokens, Some(77));
    assert_eq!(request.first_image, Some(PartAt { item: 1, part: 1 }));
}

// Goal: the exact chat body of a translated request, images and merged tool calls included.
#[test]
fn translation_is_exact() {
    let body = r#"{"model":"fikra-flash","input":[{"role":"user","content":[{"type":"input_image","image_url":"data:x","detail":"low"}]},{"type":"function_call","call_id":"a","name":"f","arguments":"{}"},{"type":"function_call","call_id":"b","name":"g","arguments":"[]"},{"type":"function_call_output","call_id":"a","output":"1"}],"stream":true,"text":{"format":{"type":"json_object"}},"tool_choice":"required"}"#;
    let request = parse(body).unwrap();
    let mut out = Vec::new();
    write_chat_body(body.as_bytes(), &request, &mut out);
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        concat!(
            r#"{"model":"fikra-flash","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:x","detail":"low"}}]},"#,
            r#"{"role":"assistant","content":null,"tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"{}"}},{"id":"b","type":"function","function":{"name":"g","arguments":"[]"}}]},"#,
            r#"{"role":"tool","tool_call_id":"a","content":"1"}],"stream":true,"stream_options":{"include_usage":true},"tool_choice":"required","response_format":{"type":"json_object"}}"#
        )
    );
    let chat = crate::openai::chat::parse_chat_request(&out).unwrap();
    assert_eq!(chat.media.image_parts, 1);
    assert!(chat.include_usage_requested);
}

fn shape<'a>(
    request: &'a ResponsesRequest<'a>,
    body: &'a [u8],
    buffers: &'a RefCell<Vec<Vec<u8>>>,
) -> ResponseShape<'a> {
    ResponseShape { request_id: "r1", model_id: "fikra-flash", created_unix_s: 7, body, request, buffers }
}

// Goal: a unary chat answer with escaped text becomes the Responses object, text copied as is.
#[test]
fn unary_translation() {
    let body = br#"{"model":"fikra-flash","input":"x"}"#;
    let request = parse_responses_request(body).unwrap();
    let buffers = RefCell::default();
    let shape = shape(&request, body, &buffers);
    let chat = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"a \"q\"\n"},"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#;
    let (mut items, mut out) = (Vec::new(), Vec::new());
    assert_eq!(write_unary(chat, &shape, &mut items, &mut out), Some(()));
    let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(value["output"][0]["content"][0]["text"], "a \"q\"\n");
    assert_eq!(value["status"], "incomplete");
    assert_eq!(value["usage"]["total_tokens"], 5);
    assert_eq!(write_unary(br#"{"error":{}}"#, &shape, &mut items, &mut out), None);
}

// Goal: chat events split across calls still give one numbered sequence; an error ends it.
#[test]
fn stream_translation_and_error() {
    let chunk = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"A\"}}]}\n\n".to_string();
    let (text, finished) = translate_stream(&[chunk], Some(("upstream_unavailable", "gone")));
    let numbers: Vec<&str> =
        text.match_indices("\"sequence_number\":").map(|(at, _)| &text[at + 18..at + 19]).collect();
    assert_eq!(numbers, ["0", "1", "2", "3", "4", "5"]);
    assert!(text.ends_with(
        "event: error\ndata: {\"type\":\"error\",\"sequence_number\":5,\"code\":\"upstream_unavailable\",\"message\":\"gone\",\"param\":null}\n\n"
    ));
    assert!(finished);
}

/// The Responses events a stream translates `chunks` (chat SSE events) into, then an error if
/// given; and whether the stream counts as finished.
fn translate_stream(chunks: &[String], error: Option<(&str, &str)>) -> (String, bool) {
    let body = br#"{"model":"fikra-flash","input":"x","stream":true}"#;
    let request = parse_responses_request(body).unwrap();
    let buffers = RefCell::default();
    let shape = shape(&request, body, &buffers);
    let mut stream = ResponsesStream::new(Vec::new(), Vec::new(), Vec::new());
    let mut out = Vec::new();
    for chunk in chunks {
        stream.chat_events(&shape, chunk.as_bytes(), &mut out);
    }
    if let Some((code, message)) = error {
        stream.write_error(&mut out, code, message);
    }
    (String::from_utf8(out).unwrap(), stream.finished())
}

// Goal: parallel tool calls whose deltas the upstream interleaves (index 0, 1, 0, 1) become two
// function calls with their own whole arguments, in output order, not four split ones; every
// event is valid JSON and sequence numbers count up by one.
#[test]
fn interleaved_parallel_calls_keep_their_own_arguments() {
    let delta =
        |calls: &str| format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"tool_calls\":[{calls}]}}}}]}}\n\n");
    let events = [
        delta(r#"{"index":0,"id":"a","type":"function","function":{"name":"f","arguments":""}}"#),
        delta(r#"{"index":1,"id":"b","type":"function","function":{"name":"g","arguments":"[1"}}"#),
        delta(r#"{"index":0,"function":{"arguments":"{\"x\":"}}"#),
        delta(r#"{"index":1,"function":{"arguments":",2"}},{"index":0,"function":{"arguments":"1}"}}"#),
        delta(r#"{"index":1,"function":{"arguments":"]"}}"#),
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n"
            .to_string(),
    ];
    let (text, finished) = translate_stream(&events, None);
    assert!(finished);
    let parsed: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}")))
        .collect();
    for (n, event) in parsed.iter().enumerate() {
        assert_eq!(event["sequence_number"], n as u64, "{event}");
    }
    let of_type = |kind: &str| parsed.iter().filter(|e| e["type"] == kind).cloned().collect::<Vec<_>>();
    let added = of_type("response.output_item.added");
    assert_eq!(added.len(), 2);
    let done: Vec<(String, u64, String)> = of_type("response.function_call_arguments.done")
        .iter()
        .map(|e| {
            (
                e["item_id"].as_str().unwrap().to_string(),
                e["output_index"].as_u64().unwrap(),
                e["arguments"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(done, [("fc_a".to_string(), 0, "{\"x\":1}".to_string()), ("fc_b".to_string(), 1, "[1,2]".to_string())]);
    let deltas: Vec<(u64, String)> = of_type("response.function_call_arguments.delta")
        .iter()
        .map(|e| (e["output_index"].as_u64().unwrap(), e["delta"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(deltas, [(1, "[1".into()), (0, "{\"x\":".into()), (1, ",2".into()), (0, "1}".into()), (1, "]".into())]);
    let completed = of_type("response.completed");
    let output = &completed[0]["response"]["output"];
    assert_eq!(
        *output,
        serde_json::json!([
            {"type":"function_call","id":"fc_a","call_id":"a","name":"f","arguments":"{\"x\":1}","status":"completed"},
            {"type":"function_call","id":"fc_b","call_id":"b","name":"g","arguments":"[1,2]","status":"completed"},
        ])
    );
    let items_done = of_type("response.output_item.done");
    assert_eq!(items_done.iter().map(|e| e["item"].clone()).collect::<Vec<_>>(), output.as_array().unwrap().clone());
}
