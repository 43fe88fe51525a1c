use super::*;
use crate::errors::ErrorKind;

fn error_of(body: &str) -> (ErrorKind, Option<String>) {
    let error = parse_chat_request(body.as_bytes()).expect_err(body);
    (error.kind, error.param.map(str::to_string))
}

const OK: &str = r#"{"model":"fikra-flash","messages":[{"role":"user","content":"hi"}]}"#;

// Goal: the facts of valid requests of every documented shape come out exactly.
#[test]
fn extracts_facts() {
    let body = r#" {"model": "fikra-flash", "stream": true, "max_tokens": 100,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "system", "content": "be brief"},
                     {"role": "user", "content": [{"type": "text", "text": "caf\u00e9"}]},
                     {"role": "assistant", "content": null, "tool_calls": [{"id": "c1"}]},
                     {"role": "tool", "tool_call_id": "c1", "content": "42"},
                     {"role": "user", "content": "last"}],
        "tools": [{"type": "function"}], "temperature": 0.7, "top_p": 1, "seed": 5, "n": 1} "#;
    let request = parse_chat_request(body.as_bytes()).unwrap();
    assert_eq!(request.model, "fikra-flash");
    assert!(request.stream && request.include_usage_requested);
    assert_eq!(request.max_tokens, Some(100));
    assert_eq!(request.message_count, 5);
    let raw_array = r#"[{"type": "text", "text": "caf\u00e9"}]"#.len() as u64;
    let tool_calls = r#"[{"id": "c1"}]"#.len() as u64;
    assert_eq!(request.content_bytes, 8 + raw_array + tool_calls + 4 + 2 + 4);
    assert_eq!(request.extra_input_bytes, r#"[{"type": "function"}]"#.len() as u64);
    assert_eq!(request.last_user_content.slice(body.as_bytes()), b"last");
    assert_eq!(request.model_value_span.slice(body.as_bytes()), b"\"fikra-flash\"");
    let keys: Vec<&str> = top_level_keys(&request, body.as_bytes()).collect();
    assert_eq!(
        keys,
        ["model", "stream", "max_tokens", "stream_options", "messages", "tools", "temperature", "top_p", "seed", "n"]
    );
    let both = r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":50,"max_completion_tokens":20}"#;
    assert_eq!(parse_chat_request(both.as_bytes()).unwrap().max_tokens, Some(20));
}

// Goal: each validation rule gives its exact kind and param.
#[test]
fn validation_errors() {
    use ErrorKind::*;
    let cases: [(&str, ErrorKind, Option<&str>); 22] = [
        ("", InvalidJson, None),
        ("[]", InvalidJson, None),
        ("\"text\"", InvalidJson, None),
        (r#"{"messages":[{"role":"user","content":"x"}]}"#, MissingRequiredParameter, Some("model")),
        (r#"{"model":"m"}"#, MissingRequiredParameter, Some("messages")),
        (r#"{"model":5,"messages":[{"role":"user","content":"x"}]}"#, InvalidParameter, Some("model")),
        (r#"{"model":"m","messages":[]}"#, InvalidParameter, Some("messages")),
        (r#"{"model":"m","messages":{}}"#, InvalidParameter, Some("messages")),
        (r#"{"model":"m","messages":["hi"]}"#, InvalidParameter, Some("messages")),
        (r#"{"model":"m","messages":[{"content":"x"}]}"#, MissingRequiredParameter, Some("messages")),
        (r#"{"model":"m","messages":[{"role":"user"}]}"#, MissingRequiredParameter, Some("messages")),
        (r#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#, InvalidParameter, Some("messages")),
        (r#"{"model":"m","messages":[{"role":"user","content":5}]}"#, InvalidParameter, Some("messages")),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#,
            InvalidParameter,
            Some("stream"),
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":2.5}"#,
            InvalidParameter,
            Some("temperature"),
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":1e400}"#,
            InvalidParameter,
            Some("temperature"),
        ),
        (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"top_p":-0.1}"#, InvalidParameter, Some("top_p")),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1.5}"#,
            InvalidParameter,
            Some("max_tokens"),
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_completion_tokens":0}"#,
            InvalidParameter,
            Some("max_completion_tokens"),
        ),
        (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":2}"#, InvalidParameter, Some("n")),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":5}"#,
            InvalidParameter,
            Some("stream_options"),
        ),
        (r#"{"model":"m","model":"n","messages":[{"role":"user","content":"x"}]}"#, InvalidParameter, Some("model")),
    ];
    for (body, kind, param) in cases {
        assert_eq!(error_of(body), (kind, param.map(str::to_string)), "{body}");
    }
    assert!(
        parse_chat_request(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":0,"top_p":1.0,"max_tokens":null}"#
                .as_bytes()
        )
        .is_ok()
    );
}

// Goal: strict JSON: every malformed input is invalid_json, never accepted, never a panic.
#[test]
fn strict_json() {
    let wrap = |value: &str| format!(r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],"extra":{value}}}"#);
    for value in [
        "01",
        "1.",
        ".5",
        "-",
        "+1",
        "1e",
        "tru",
        "nul",
        "\"\\x\"",
        "\"\\ud800\"",
        "\"\\udc00\"",
        "\"\\ud800\\u0041\"",
        "[1,]",
        "{\"a\":1,}",
        "{\"a\"}",
        "\"a\nb\"",
        "'a'",
    ] {
        assert_eq!(error_of(&wrap(value)).0, ErrorKind::InvalidJson, "{value}");
    }
    for value in ["-0", "0.5e-3", "1E+2", "\"\\ud83d\\ude00\"", "\"\\u00e9\"", "[]", "{}", "[[[]]]", "\"é\""] {
        assert!(parse_chat_request(wrap(value).as_bytes()).is_ok(), "{value}");
    }
    assert_eq!(error_of(&format!("{OK} x")).0, ErrorKind::InvalidJson);
    assert_eq!(error_of(&format!("{OK},")).0, ErrorKind::InvalidJson);
    assert_eq!(error_of(r#"{"model":"m""#).0, ErrorKind::InvalidJson);
    let invalid_utf8 = [b"{\"model\":\"\xff\",\"messages\":[]}".as_slice(), b"{\"model\":\"\xc0\xaf\"}".as_slice()];
    for body in invalid_utf8 {
        assert_eq!(parse_chat_request(body).unwrap_err().kind, ErrorKind::InvalidJson);
    }
}

// Goal: nesting up to the limit passes, one deeper fails, and absurd depth cannot overflow the stack.
#[test]
fn depth_limit() {
    let nested = |depth: usize| wrap_depth(depth);
    assert!(parse_chat_request(nested(MAX_JSON_DEPTH - 1).as_bytes()).is_ok());
    assert_eq!(parse_chat_request(nested(MAX_JSON_DEPTH).as_bytes()).unwrap_err().kind, ErrorKind::InvalidJson);
    assert_eq!(parse_chat_request(nested(100_000).as_bytes()).unwrap_err().kind, ErrorKind::InvalidJson);
}

/// A valid request whose `extra` member is `depth` nested arrays (depth 1 at top level + arrays).
fn wrap_depth(arrays: usize) -> String {
    format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],"extra":{}{}}}"#,
        "[".repeat(arrays),
        "]".repeat(arrays)
    )
}

// Goal: the backend body changes only the model, the cap and stream_options, and parses.
#[test]
fn rewrites_for_the_backend() {
    let body = r#"{"model":"fikra-flash","messages":[{"role":"user","content":"say fikra-flash"}],"max_tokens":500,"stream":true,"stream_options":{"include_usage":false},"seed":7}"#;
    let request = parse_chat_request(body.as_bytes()).unwrap();
    let mut out = Vec::new();
    write_backend_body(body.as_bytes(), &request, "openai/gpt-oss-20b", 120, &mut out);
    let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let expected = serde_json::json!({"model":"openai/gpt-oss-20b","messages":[{"role":"user","content":"say fikra-flash"}],
        "max_tokens":120,"stream":true,"stream_options":{"include_usage":true},"seed":7});
    assert_eq!(value, expected);

    let plain = r#"{ "messages":[{"role":"user","content":"x"}], "model":"a\"b", "stream":true }"#;
    let request = parse_chat_request(plain.as_bytes()).unwrap();
    let mut out = Vec::new();
    write_backend_body(plain.as_bytes(), &request, "up/model", 64, &mut out);
    let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        value,
        serde_json::json!({"messages":[{"role":"user","content":"x"}],"model":"up/model","stream":true,"max_tokens":64,"stream_options":{"include_usage":true}})
    );
}
