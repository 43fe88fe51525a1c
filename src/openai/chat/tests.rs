//! Tests of chat request validation and measurement: accepted shapes, every refusal with its
//! param, and the byte counts the hold is priced on.

use super::*;
use crate::errors::ErrorKind::{self, *};
use crate::limits::MAX_JSON_DEPTH;

/// The kind and param of the error `body` is refused with.
fn error_of(body: &[u8]) -> (ErrorKind, Option<String>) {
    match parse_chat_request(body) {
        Ok(_) => panic!("accepted: {}", String::from_utf8_lossy(body)),
        Err(error) => (error.kind, error.param.map(str::to_string)),
    }
}

/// The invalid_json message `body` is refused with.
fn json_fault_of(body: &[u8]) -> &'static str {
    match parse_chat_request(body) {
        Err(ApiError { kind: InvalidJson, param: None, detail: Detail::Text(text) }) => text,
        other => panic!("{}: {other:?}", String::from_utf8_lossy(body)),
    }
}

/// A valid request with one extra top-level member `"x": value`.
fn with_extra(value: &str) -> String {
    format!(r#"{{"model":"fikra-flash","messages":[{{"role":"user","content":"hi"}}],"x":{value}}}"#)
}

/// A valid request with one extra top-level member (the given raw member text).
fn with_member(member: &str) -> String {
    format!(r#"{{"model":"fikra-flash","messages":[{{"role":"user","content":"hi"}}],{member}}}"#)
}

/// A valid request with the given messages array text.
fn with_messages(messages: &str) -> String {
    format!(r#"{{"model":"fikra-flash","messages":{messages}}}"#)
}

/// The facts of a parsed request that the tests compare.
#[derive(Debug, PartialEq, Eq)]
struct Facts<'a> {
    model: &'a str,
    stream: bool,
    max_tokens: Option<u64>,
    messages: usize,
    content_bytes: u64,
    input_bytes: u64,
    include_usage: bool,
    last_user: &'a str,
}

/// Expected facts; `counts` is (messages, content bytes, input bytes).
fn facts<'a>(
    model: &'a str,
    stream: bool,
    max_tokens: Option<u64>,
    counts: (usize, u64, u64),
    include_usage: bool,
    last_user: &'a str,
) -> Facts<'a> {
    let (messages, content_bytes, input_bytes) = counts;
    Facts { model, stream, max_tokens, messages, content_bytes, input_bytes, include_usage, last_user }
}

fn facts_of(body: &str) -> Facts<'_> {
    let request = parse_chat_request(body.as_bytes()).unwrap_or_else(|error| panic!("{body}: {error:?}"));
    Facts {
        model: request.model,
        stream: request.stream,
        max_tokens: request.max_tokens,
        messages: request.message_count,
        content_bytes: request.content_bytes,
        input_bytes: request.input_bytes,
        include_usage: request.include_usage_requested,
        last_user: std::str::from_utf8(request.last_user_content.slice(body.as_bytes())).unwrap(),
    }
}

// Goal: request shapes from the OpenAI docs are accepted and their facts come out exactly.
#[test]
fn extracts_facts_from_documented_shapes() {
    let cases: [(&str, Facts); 9] = [
        // system + user: 28 + 6 content bytes; the input bound counts the 130-byte body less
        // `"model":"fikra-flash"` (21).
        (
            r#"{"model":"fikra-flash","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hello!"}]}"#,
            facts("fikra-flash", false, None, (2, 28 + 6, 130 - 21), false, "Hello!"),
        ),
        // Multimodal content parts count whole, except the image's payload
        // `{"url":"https://x.test/a.png"}` (30 bytes, counted by the model's image allowance
        // instead): 5 + 112 - 30 content bytes; 228 body bytes less the model (23), max_tokens
        // (16) and the payload. The last user message wins the seed span.
        (
            r#"{"model":"fikra-pro-20b","messages":[{"role":"user","content":"first"},{"role":"user","content":[{"type":"text","text":"What's in this image?"},{"type":"image_url","image_url":{"url":"https://x.test/a.png"}}]}],"max_tokens":300}"#,
            facts(
                "fikra-pro-20b",
                false,
                Some(300),
                (2, 5 + 112 - 30, 228 - 23 - 16 - 30),
                false,
                r#"[{"type":"text","text":"What's in this image?"},{"type":"image_url","image_url":{"url":"https://x.test/a.png"}}]"#,
            ),
        ),
        // Tool calls: null content counts 0; tool_calls, tool_call_id and name count; tools and
        // tool_choice count in the bound like every byte but the model member (21 of 433).
        (
            r#"{"model":"fikra-flash","messages":[{"role":"user","content":"Weather in Nairobi?"},{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Nairobi\"}"}}]},{"role":"tool","tool_call_id":"call_1","name":"get_weather","content":"22C"}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}],"tool_choice":"auto"}"#,
            facts("fikra-flash", false, None, (3, 19 + 106 + 6 + 11 + 3, 433 - 21), false, "Weather in Nairobi?"),
        ),
        // Assistant tool-call message without a content key at all.
        (
            r#"{"model":"fikra-flash","messages":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[]}]}"#,
            facts("fikra-flash", false, None, (2, 1 + 2, 103 - 21), false, "x"),
        ),
        // Streaming with include_usage; whitespace everywhere (counted, outside the gateway's
        // members); 254 bytes less model (22), stream (15) and stream_options (45), key to value.
        (
            " {\n \"model\" : \"fikra-auto\" ,\r\n \"stream\" : true , \"stream_options\" : { \"include_usage\" : true } ,\n\t\"messages\" : [ { \"role\" : \"developer\" , \"content\" : \"be brief\" } , { \"role\" : \"user\" , \"content\" : \"go\" } ] , \"response_format\" : {\"type\":\"json_object\"} } \n",
            facts("fikra-auto", true, None, (2, 8 + 2, 254 - 22 - 15 - 45), true, "go"),
        ),
        // Both caps: the smaller wins; nulls are defaults; escapes count raw; the gateway's seven
        // members (21 + 15 + 26 + 18 + 12 + 8 + 13 bytes) leave the bound, the unknown seed stays.
        (
            r#"{"model":"fikra-flash","messages":[{"role":"user","content":"caf\u00e9 \ud83d\ude00"}],"max_tokens":50,"max_completion_tokens":20,"temperature":null,"top_p":null,"n":null,"stream":null,"seed":1}"#,
            facts("fikra-flash", false, Some(20), (1, 22, 194 - 113), false, r"caf\u00e9 \ud83d\ude00"),
        ),
        // Edge values in range: temperature -0, top_p 0.0, n 1, include_usage false, u64::MAX cap.
        (
            r#"{"model":"m","messages":[{"role":"user","content":""}],"temperature":-0,"top_p":0.0,"n":1,"stream":false,"stream_options":{"include_usage":false},"max_tokens":18446744073709551615}"#,
            facts("m", false, Some(u64::MAX), (1, 0, 180 - 130), false, ""),
        ),
        // Escaped keys are read by their decoded names (and their raw members, 31 + 19 + 18 bytes,
        // leave the bound); an escaped model value stays raw.
        (
            r#"{"m\u006fdel":"fikra\u002dflash","messages":[{"r\u006fle":"user","c\u006fntent":"abc"}],"max_t\u006fkens":7,"\u0073tream":true}"#,
            facts(r"fikra\u002dflash", true, Some(7), (1, 3, 127 - 68), false, "abc"),
        ),
        // Unknown message members count too (the upstream may render them); role never does.
        (
            r#"{"model":"m","messages":[{"role":"function","name":"f","content":"out","extra":{"k":1}}]}"#,
            facts("m", false, None, (1, 1 + 3 + 7, 89 - 11), false, ""),
        ),
    ];
    for (body, expected) in cases {
        assert_eq!(facts_of(body), expected, "{body}");
    }
}

// Goal: the spans the rewrite and the unsupported-parameter check rely on are exact.
#[test]
fn records_spans_and_keys() {
    let body = r#"{ "model" : "fikra-flash", "max_tokens":null, "stream_options":{"x":1,"include_usage":true}, "messages":[{"role":"user","content":"q"}], "l\u006fgprobs":true }"#;
    let request = parse_chat_request(body.as_bytes()).unwrap();
    let bytes = body.as_bytes();
    assert_eq!(request.model_value_span.slice(bytes), b"\"fikra-flash\"");
    assert_eq!(request.members_start, 1);
    assert_eq!(request.max_tokens, None);
    assert_eq!(request.max_tokens_value_spans[0].map(|s| s.slice(bytes)), Some(b"null".as_slice()));
    assert_eq!(request.max_tokens_value_spans[1], None);
    let options = request.stream_options.unwrap();
    assert_eq!(options.member.slice(bytes), br#""stream_options":{"x":1,"include_usage":true}"#);
    assert_eq!(options.value.slice(bytes), br#"{"x":1,"include_usage":true}"#);
    assert!(options.has_members);
    assert_eq!(options.include_usage_value.map(|s| s.slice(bytes)), Some(b"true".as_slice()));
    let keys: Vec<&str> = top_level_keys(&request, bytes).collect();
    assert_eq!(keys, ["model", "max_tokens", "stream_options", "messages", r"l\u006fgprobs"]);
}

// Goal: every validation rule refuses with its exact kind and param.
#[test]
fn validation_errors_have_exact_kind_and_param() {
    let user = r#"[{"role":"user","content":"x"}]"#;
    let cases: Vec<(String, ErrorKind, Option<&str>)> = vec![
        (format!(r#"{{"messages":{user}}}"#), MissingRequiredParameter, Some("model")),
        (r#"{"model":"m"}"#.into(), MissingRequiredParameter, Some("messages")),
        ("{}".into(), MissingRequiredParameter, Some("model")),
        (format!(r#"{{"model":5,"messages":{user}}}"#), InvalidParameter, Some("model")),
        (format!(r#"{{"model":null,"messages":{user}}}"#), InvalidParameter, Some("model")),
        (format!(r#"{{"model":["m"],"messages":{user}}}"#), InvalidParameter, Some("model")),
        (with_messages("[]"), InvalidParameter, Some("messages")),
        (with_messages("{}"), InvalidParameter, Some("messages")),
        (with_messages("null"), InvalidParameter, Some("messages")),
        (with_messages(r#""hi""#), InvalidParameter, Some("messages")),
        (with_messages(r#"["hi"]"#), InvalidParameter, Some("messages")),
        (with_messages(r#"[{"role":"user","content":"x"},null]"#), InvalidParameter, Some("messages")),
        (with_messages(r#"[{"content":"x"}]"#), MissingRequiredParameter, Some("messages")),
        (with_messages(r#"[{"role":"user"}]"#), MissingRequiredParameter, Some("messages")),
        (with_messages(r#"[{"role":"system","content":null}]"#), InvalidParameter, Some("messages")),
        (with_messages(r#"[{"role":"user","content":null}]"#), InvalidParameter, Some("messages")),
        (with_messages(r#"[{"role":"wizard","content":"x"}]"#), InvalidParameter, Some("messages")),
        (with_messages(r#"[{"role":"User","content":"x"}]"#), InvalidParameter, Some("messages")),
        (with_messages(r#"[{"role":7,"content":"x"}]"#), InvalidParameter, Some("messages")),
        (with_messages(r#"[{"role":"user","content":5}]"#), InvalidParameter, Some("messages")),
        (with_messages(r#"[{"role":"user","content":{"text":"x"}}]"#), InvalidParameter, Some("messages")),
        (with_messages(r#"[{"role":"user","content":"a","content":"b"}]"#), InvalidParameter, Some("messages")),
        (with_messages(r#"[{"role":"user","role":"system","content":"a"}]"#), InvalidParameter, Some("messages")),
        (with_member(r#""stream":"true""#), InvalidParameter, Some("stream")),
        (with_member(r#""stream":1"#), InvalidParameter, Some("stream")),
        (with_member(r#""temperature":2.0001"#), InvalidParameter, Some("temperature")),
        (with_member(r#""temperature":-0.1"#), InvalidParameter, Some("temperature")),
        (with_member(r#""temperature":1e400"#), InvalidParameter, Some("temperature")),
        (with_member(r#""temperature":"1""#), InvalidParameter, Some("temperature")),
        (with_member(r#""top_p":1.5"#), InvalidParameter, Some("top_p")),
        (with_member(r#""top_p":true"#), InvalidParameter, Some("top_p")),
        (with_member(r#""max_tokens":0"#), InvalidParameter, Some("max_tokens")),
        (with_member(r#""max_tokens":-5"#), InvalidParameter, Some("max_tokens")),
        (with_member(r#""max_tokens":1.5"#), InvalidParameter, Some("max_tokens")),
        (with_member(r#""max_tokens":1.0"#), InvalidParameter, Some("max_tokens")),
        (with_member(r#""max_tokens":1e3"#), InvalidParameter, Some("max_tokens")),
        (with_member(r#""max_tokens":"100""#), InvalidParameter, Some("max_tokens")),
        (with_member(r#""max_tokens":18446744073709551616"#), InvalidParameter, Some("max_tokens")),
        (with_member(r#""max_completion_tokens":-0"#), InvalidParameter, Some("max_completion_tokens")),
        (with_member(r#""n":2"#), InvalidParameter, Some("n")),
        (with_member(r#""n":1.0"#), InvalidParameter, Some("n")),
        (with_member(r#""stream_options":true"#), InvalidParameter, Some("stream_options")),
        (with_member(r#""stream_options":[]"#), InvalidParameter, Some("stream_options")),
        (with_member(r#""stream_options":{"include_usage":"yes"}"#), InvalidParameter, Some("stream_options")),
        (with_member(r#""stream_options":{"include_usage":null}"#), InvalidParameter, Some("stream_options")),
        (
            with_member(r#""stream_options":{"include_usage":true,"include_usage":false}"#),
            InvalidParameter,
            Some("stream_options"),
        ),
        (format!(r#"{{"model":"a","messages":{user},"model":"b"}}"#), InvalidParameter, Some("model")),
        (format!(r#"{{"model":"a","messages":{user},"m\u006fdel":"b"}}"#), InvalidParameter, Some(r"m\u006fdel")),
        (with_member(r#""max_tokens":5,"max_t\u006fkens":9000"#), InvalidParameter, Some(r"max_t\u006fkens")),
        (with_member(r#""seed":1,"seed":2"#), InvalidParameter, Some("seed")),
        // The first parameter error in body order wins over later ones and over missing keys.
        (r#"{"stream":1,"temperature":9}"#.into(), InvalidParameter, Some("stream")),
        (r#"{"model":"m","messages":[],"n":3}"#.into(), InvalidParameter, Some("messages")),
    ];
    for (body, kind, param) in cases {
        assert_eq!(error_of(body.as_bytes()), (kind, param.map(str::to_string)), "{body}");
    }
}

// Goal: the message-count limit is inclusive, and one more message is refused.
#[test]
fn limits_message_count() {
    let messages = |count: usize| format!("[{}]", vec![r#"{"role":"user","content":"x"}"#; count].join(","));
    assert_eq!(
        parse_chat_request(with_messages(&messages(MAX_MESSAGES)).as_bytes()).unwrap().message_count,
        MAX_MESSAGES
    );
    assert_eq!(
        error_of(with_messages(&messages(MAX_MESSAGES + 1)).as_bytes()),
        (InvalidParameter, Some("messages".into()))
    );
}

// Goal: the top-level key limit is inclusive, and one more key is invalid_json.
#[test]
fn limits_top_level_keys() {
    let body = |keys: usize| with_member(&(0..keys - 2).map(|i| format!("\"k{i}\":0")).collect::<Vec<_>>().join(","));
    assert_eq!(
        top_level_keys(&parse_chat_request(body(MAX_TOP_LEVEL_KEYS).as_bytes()).unwrap(), body(64).as_bytes()).count(),
        64
    );
    assert_eq!(json_fault_of(body(MAX_TOP_LEVEL_KEYS + 1).as_bytes()), JsonFault::TooManyKeys.message());
}

// Goal: malformed JSON anywhere is invalid_json with the fault's message, before any parameter error.
#[test]
fn malformed_json_is_invalid_json() {
    use JsonFault::*;
    let cases: Vec<(Vec<u8>, JsonFault)> = vec![
        (b"".to_vec(), Syntax),
        (b"   ".to_vec(), Syntax),
        (b"[]".to_vec(), NotAnObject),
        (b"\"model\"".to_vec(), NotAnObject),
        (b"1".to_vec(), NotAnObject),
        (b"null".to_vec(), NotAnObject),
        (b"{\"model\":\"m\"".to_vec(), Syntax),
        (with_extra(r#""\x""#).into_bytes(), BadString),
        (with_extra(r#""\u00G0""#).into_bytes(), BadString),
        (with_extra(r#""\ud800""#).into_bytes(), BadString),
        (with_extra(r#""\udc00""#).into_bytes(), BadString),
        (with_extra(r#""\ud800\u0041""#).into_bytes(), BadString),
        (with_extra("\"tab\there\"").into_bytes(), BadString),
        (with_extra("01").into_bytes(), BadNumber),
        (with_extra("1.").into_bytes(), BadNumber),
        (with_extra(".5").into_bytes(), Syntax),
        (with_extra("-").into_bytes(), BadNumber),
        (with_extra("+1").into_bytes(), Syntax),
        (with_extra("[1,]").into_bytes(), Syntax),
        (with_extra("{\"a\":1,}").into_bytes(), Syntax),
        (with_extra("True").into_bytes(), Syntax),
        (with_extra("/* c */ 1").into_bytes(), Syntax),
        (br#"{"model":"m","messages":[{"role":"user","content":"x"}],}"#.to_vec(), Syntax),
        (br#"{"model":"m","messages":[{"role":"user","content":"x"},]}"#.to_vec(), Syntax),
        (br#"{"model":"m","messages":[{"role":"user","content":"x",}]}"#.to_vec(), Syntax),
        (br#"{"model":"m","messages":[{"role":"user","content":"x"}]} x"#.to_vec(), TrailingData),
        (br#"{"model":"m","messages":[{"role":"user","content":"x"}]}{}"#.to_vec(), TrailingData),
        (br#"{"model":"m","messages":[{"role":"user","content":"x"}]},"#.to_vec(), TrailingData),
        // A later JSON fault wins over an earlier parameter error.
        (br#"{"model":5,"messages":[],"n":2,"x":01}"#.to_vec(), BadNumber),
        (br#"{"model":5,"messages":[{"role":"user","content":"\u12"}]}"#.to_vec(), BadString),
        // Invalid UTF-8: a stray byte, an overlong '/', a UTF-8-encoded surrogate, a truncated sequence.
        (b"{\"model\":\"\xff\",\"messages\":[]}".to_vec(), NotUtf8),
        (b"{\"model\":\"\xc0\xaf\",\"messages\":[]}".to_vec(), NotUtf8),
        (b"{\"model\":\"\xed\xa0\x80\",\"messages\":[]}".to_vec(), NotUtf8),
        (b"{\"model\":\"\xe2\x82\",\"messages\":[]}".to_vec(), NotUtf8),
        (
            b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\xf8\x88\x80\x80\x80\"}]}".to_vec(),
            NotUtf8,
        ),
    ];
    for (body, fault) in cases {
        assert_eq!(json_fault_of(&body), fault.message(), "{}", String::from_utf8_lossy(&body));
    }
}

// Goal: valid JSON values of every kind pass through an unknown member untouched.
#[test]
fn accepts_valid_json_values() {
    let values = [
        "-0",
        "0.5e-3",
        "1E+2",
        "1e400",
        "-12.75",
        r#""\ud83d\ude00 \u00e9 \" \\ \/ \b \f \n \r \t""#,
        "\"caf\u{e9} \u{1F600}\"",
        "[]",
        "{}",
        "[[[]]]",
        r#"{"a":[1,{"b":null}],"c":false}"#,
        "true",
        "null",
    ];
    for value in values {
        assert_eq!(parse_chat_request(with_extra(value).as_bytes()).map(|r| r.message_count), Ok(1), "{value}");
    }
}

// Goal: nesting to MAX_JSON_DEPTH (the body's object counting as 1) passes, one deeper is
// refused, and absurd depth is refused without exhausting the stack, in any member.
#[test]
fn bounds_nesting_depth() {
    let deep_extra = |levels: usize| with_extra(&format!("{}{}", "[".repeat(levels - 1), "]".repeat(levels - 1)));
    let deep_content = |levels: usize| {
        // body object 1, messages 2, message 3, content array 4.
        let arrays = levels - 3;
        with_messages(&format!(r#"[{{"role":"user","content":{}{}}}]"#, "[".repeat(arrays), "]".repeat(arrays)))
    };
    let deep_options = |levels: usize| {
        let objects = levels - 2;
        with_member(&format!(r#""stream_options":{{"x":{}1{}}}"#, r#"{"y":"#.repeat(objects), "}".repeat(objects)))
    };
    for body in [deep_extra, deep_content, deep_options] {
        assert!(parse_chat_request(body(MAX_JSON_DEPTH).as_bytes()).is_ok());
        assert_eq!(json_fault_of(body(MAX_JSON_DEPTH + 1).as_bytes()), JsonFault::TooDeep.message());
        assert_eq!(json_fault_of(body(10_000).as_bytes()), JsonFault::TooDeep.message());
    }
    let unclosed = format!("{}{}", r#"{"a":"#.repeat(100_000), "[".repeat(100_000));
    assert_eq!(json_fault_of(unclosed.as_bytes()), JsonFault::TooDeep.message());
}

/// Parses `body`, rewrites it, and returns the output bytes.
fn rewrite(body: &str, backend_model: &str, cap: u64) -> Vec<u8> {
    let request = parse_chat_request(body.as_bytes()).unwrap_or_else(|error| panic!("{body}: {error:?}"));
    let mut out = Vec::new();
    write_backend_body(body.as_bytes(), &request, backend_model, cap, &mut out);
    out
}

// Goal: the backend body changes only the model, the caps and include_usage, and parses to
// exactly the expected object.
#[test]
fn rewrites_for_the_backend() {
    let msgs = r#"[{"role":"user","content":"hi"}]"#;
    let cases: Vec<(String, &str, u64, serde_json::Value)> = vec![
        // No cap given: max_tokens is added; no stream: stream_options untouched.
        (
            format!(r#"{{"model":"fikra-flash","messages":{msgs},"stream_options":{{"include_usage":false}}}}"#),
            "openai/gpt-oss-20b",
            8192,
            serde_json::json!({"max_tokens":8192,"model":"openai/gpt-oss-20b","messages":[{"role":"user","content":"hi"}],"stream_options":{"include_usage":false}}),
        ),
        // Both caps (one null) are replaced.
        (
            format!(r#"{{"model":"fikra-flash","max_tokens":null,"messages":{msgs},"max_completion_tokens":900}}"#),
            "up",
            120,
            serde_json::json!({"model":"up","max_tokens":120,"messages":[{"role":"user","content":"hi"}],"max_completion_tokens":120}),
        ),
        // Stream without stream_options: one is added with include_usage.
        (
            format!(r#"{{"model":"fikra-flash","messages":{msgs},"stream":true,"max_tokens":10}}"#),
            "up",
            10,
            serde_json::json!({"model":"up","messages":[{"role":"user","content":"hi"}],"stream":true,"max_tokens":10,"stream_options":{"include_usage":true}}),
        ),
        // Stream with null, empty and include_usage-only stream_options: the value is replaced.
        (
            format!(
                r#"{{"model":"fikra-flash","messages":{msgs},"stream":true,"stream_options":null,"max_tokens":5}}"#
            ),
            "up",
            5,
            serde_json::json!({"model":"up","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true},"max_tokens":5}),
        ),
        (
            format!(
                r#"{{"model":"fikra-flash","messages":{msgs},"stream":true,"stream_options":{{ }},"max_tokens":5}}"#
            ),
            "up",
            5,
            serde_json::json!({"model":"up","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true},"max_tokens":5}),
        ),
        (
            format!(
                r#"{{"model":"fikra-flash","messages":{msgs},"stream":true,"stream_options":{{"include_usage":false}},"max_tokens":5}}"#
            ),
            "up",
            5,
            serde_json::json!({"model":"up","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true},"max_tokens":5}),
        ),
        // Other stream options are kept; include_usage is set or added.
        (
            format!(
                r#"{{"model":"fikra-flash","messages":{msgs},"stream":true,"stream_options":{{"a":1,"include_usage":false,"b":[2]}},"max_tokens":5}}"#
            ),
            "up",
            5,
            serde_json::json!({"model":"up","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"a":1,"include_usage":true,"b":[2]},"max_tokens":5}),
        ),
        (
            format!(
                r#"{{"model":"fikra-flash","messages":{msgs},"stream":true,"stream_options":{{"continuous_usage_stats":true}},"max_tokens":5}}"#
            ),
            "up",
            5,
            serde_json::json!({"model":"up","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true,"continuous_usage_stats":true},"max_tokens":5}),
        ),
        // An escaped model key is still the model; the backend name is JSON-escaped.
        (
            format!(r#"{{"m\u006fdel":"fikra-flash","messages":{msgs},"max_tokens":3}}"#),
            "we\"ird\\name\u{1}",
            3,
            serde_json::json!({"model":"we\"ird\\name\u{1}","messages":[{"role":"user","content":"hi"}],"max_tokens":3}),
        ),
    ];
    for (body, backend, cap, expected) in cases {
        let out = rewrite(&body, backend, cap);
        let value: serde_json::Value =
            serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{body}: {e}: {}", String::from_utf8_lossy(&out)));
        assert_eq!(value, expected, "{body}");
    }
}

// Goal: untouched bytes (spacing, key order, the model name inside content) are copied as they are.
#[test]
fn rewrite_changes_only_the_model_member() {
    let body = r#"{ "messages" : [ {"role":"user","content":"model \"fikra-flash\": \"model\":\"fikra-flash\""} ],
  "model" : "fikra-flash", "stream" : true, "stream_options" : {"include_usage" : false}, "max_tokens" : 99 }"#;
    let expected = r#"{ "messages" : [ {"role":"user","content":"model \"fikra-flash\": \"model\":\"fikra-flash\""} ],
  "model" : "openai/gpt-oss-120b", "stream" : true, "stream_options" : {"include_usage" : true}, "max_tokens" : 64 }"#;
    assert_eq!(String::from_utf8(rewrite(body, "openai/gpt-oss-120b", 64)).unwrap(), expected);

    let bare = r#"{"model":"fikra-flash","messages":[{"role":"user","content":"fikra-flash"}],"stream":true}"#;
    let expected = r#"{"max_tokens":7,"stream_options":{"include_usage":true},"model":"up","messages":[{"role":"user","content":"fikra-flash"}],"stream":true}"#;
    let out = rewrite(bare, "up", 7);
    assert_eq!(String::from_utf8(out).unwrap(), expected);
}

// Goal: the rewrite appends to the caller's buffer and reuses its capacity.
#[test]
fn rewrite_appends_to_the_buffer() {
    let body = r#"{"model":"fikra-flash","messages":[{"role":"user","content":"x"}],"max_tokens":1}"#;
    let request = parse_chat_request(body.as_bytes()).unwrap();
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(b"HEAD");
    let capacity = out.capacity();
    write_backend_body(body.as_bytes(), &request, "u", 18446744073709551615, &mut out);
    assert_eq!(
        out,
        br#"HEAD{"model":"u","messages":[{"role":"user","content":"x"}],"max_tokens":18446744073709551615}"#
    );
    assert_eq!(out.capacity(), capacity);
}

/// `{"type":"image_url","image_url":{"url":"<url>"}}`
fn image_part(url: &str) -> String {
    format!(r#"{{"type":"image_url","image_url":{{"url":"{url}"}}}}"#)
}

/// A one-message request whose user content is `parts` (a JSON array's elements).
fn with_parts(parts: &[String]) -> String {
    with_messages(&format!(r#"[{{"role":"user","content":[{}]}}]"#, parts.join(",")))
}

const IMAGES_1105: MediaAllowance = MediaAllowance { image_tokens: Some(1105), audio_tokens: None };
const BOTH: MediaAllowance = MediaAllowance { image_tokens: Some(1105), audio_tokens: Some(3000) };

// Goal: the input bound of SPEC §9 is exact: every body byte but the gateway's own scalars and
// the media payloads, each media part at its allowance, 8 tokens per message and 8 per request.
#[test]
fn input_bound_counts_the_body_and_media_allowances() {
    let text = r#"{"type":"text","text":"Describe these."}"#.to_string();
    // 20 short remote images (issue 10: held 1,727 tokens, billed 22,100). Each payload
    // `{"url":"https://x.test/NN.png"}` is 31 bytes; the body is 1,405 bytes, less the model
    // member (21) and the 20 payloads (620): 764 bytes, + 20 x 1,105 + 8 + 8 = 22,880.
    let mut twenty = vec![text.clone()];
    twenty.extend((0..20).map(|n| image_part(&format!("https://x.test/{n:02}.png"))));
    let twenty = with_parts(&twenty);
    // A 100,000-byte base64 data URL counts its allowance, not its bytes: the 100,130-byte body
    // less the model (21) and the 100,032-byte payload is 77 bytes, + 1,105 + 16.
    let data_url = with_parts(&[image_part(&format!("data:image/png;base64,{}", "A".repeat(100_000)))]);
    // Audio at its own allowance; the part's `type` and `format` bytes still count.
    let audio = with_parts(&[r#"{"type":"input_audio","input_audio":{"data":"UklGRg==","format":"wav"}}"#.into()]);
    // Keys the gateway does not know count whole, key and all: 1,000 + 1,000 bytes of text.
    let unknown = with_member(&format!(
        r#""prediction":{{"type":"content","content":"{}"}},"documents":[{{"text":"{}"}}]"#,
        "p".repeat(1000),
        "d".repeat(1000)
    ));
    // An escaped type is still an image; a text part that names an image_url member is text.
    let escaped = with_parts(&[r#"{"type":"image\u005furl","image_url":{"url":"u"}}"#.into()]);
    let not_media = with_parts(&[r#"{"type":"text","text":"t","image_url":{"url":"u"}}"#.into()]);
    // (name, body, allowance, (images, audio parts), input bytes, bound in tokens)
    type Case<'c> = (&'c str, &'c String, MediaAllowance, (u64, u64), u64, u64);
    let cases: [Case; 6] = [
        ("twenty images", &twenty, IMAGES_1105, (20, 0), 1405 - 21 - 20 * 31, 22_880),
        ("data url", &data_url, IMAGES_1105, (1, 0), 100_130 - 21 - 100_032, 77 + 1105 + 16),
        ("audio", &audio, BOTH, (0, 1), 136 - 21 - 34, 81 + 3000 + 16),
        ("prediction and documents", &unknown, MediaAllowance::default(), (0, 0), 2138 - 21, 2117 + 16),
        ("escaped type", &escaped, IMAGES_1105, (1, 0), 114 - 21 - 11, 82 + 1105 + 16),
        ("text part", &not_media, MediaAllowance::default(), (0, 0), 115 - 21, 94 + 16),
    ];
    for (name, body, allowance, (images, audio), input_bytes, bound) in cases {
        let request = parse_chat_request(body.as_bytes()).unwrap_or_else(|error| panic!("{name}: {error:?}"));
        let measured = (request.media.image_parts, request.media.audio_parts, request.input_bytes);
        assert_eq!(measured, (images, audio, input_bytes), "{name}: {} body bytes", body.len());
        assert_eq!(input_tokens_upper_bound(&request, allowance), bound, "{name}");
        assert!(request.content_bytes <= request.input_bytes, "{name}");
    }
    // Parts of a kind the model has no allowance for are unbounded: no bucket admits them.
    let request = parse_chat_request(twenty.as_bytes()).unwrap();
    assert_eq!(input_tokens_upper_bound(&request, MediaAllowance::default()), u64::MAX);
}

// Goal: the first media part a model has no allowance for is named exactly, in body order,
// as `messages[i].content[j]` (both from 0).
#[test]
fn names_the_first_unsupported_media_part() {
    let audio = r#"{"type":"input_audio","input_audio":{"data":"AA==","format":"mp3"}}"#.to_string();
    let text = r#"{"type":"text","text":"t"}"#.to_string();
    let image = image_part("https://x.test/a.png");
    let body = with_messages(&format!(
        r#"[{{"role":"system","content":"s"}},{{"role":"user","content":[{text},{image}]}},{{"role":"user","content":[{text},{text},{audio},{image}]}}]"#
    ));
    let request = parse_chat_request(body.as_bytes()).unwrap();
    let named = |allowance| unsupported_media_part(&request, allowance).map(|(media, at)| (media, at.to_string()));
    assert_eq!(named(MediaAllowance::default()), Some((Media::Image, "messages[1].content[1]".into())));
    assert_eq!(named(IMAGES_1105), Some((Media::Audio, "messages[2].content[2]".into())));
    let audio_only = MediaAllowance { image_tokens: None, audio_tokens: Some(1) };
    assert_eq!(named(audio_only), Some((Media::Image, "messages[1].content[1]".into())));
    assert_eq!(named(BOTH), None);
    assert_eq!((request.media.image_parts, request.media.audio_parts), (2, 1));
    // Audio before any image is named first when neither is allowed; a part that is not an
    // object still takes its place in the count.
    let body = with_messages(&format!(r#"[{{"role":"user","content":["plain",{audio},{image}]}}]"#));
    let request = parse_chat_request(body.as_bytes()).unwrap();
    let first = unsupported_media_part(&request, MediaAllowance::default()).map(|(media, at)| (media, at.to_string()));
    assert_eq!(first, Some((Media::Audio, "messages[0].content[1]".into())));
}

// Goal: a content part that repeats a key deciding what it is (type, image_url, input_audio)
// is refused, so the gateway and the upstream cannot read different parts.
#[test]
fn refuses_content_parts_with_repeated_keys() {
    let parts = [
        r#"{"type":"image_url","type":"text","text":"x"}"#,
        r#"{"type":"image_url","image_url":{"url":"a"},"image_u\u0072l":{"url":"b"}}"#,
        r#"{"type":"input_audio","input_audio":{},"input_audio":{}}"#,
    ];
    for part in parts {
        let body = with_parts(&[part.to_string()]);
        assert_eq!(error_of(body.as_bytes()), (InvalidParameter, Some("messages".into())), "{part}");
    }
}
