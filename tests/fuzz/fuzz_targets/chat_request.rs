//! The chat-request scanner and the backend rewrite on arbitrary bodies: neither panics; a body
//! the scanner accepts is JSON (the gateway forwards bytes an upstream must parse); and its
//! rewrite is JSON with the backend model, the granted cap and, for streams, usage switched on,
//! every other member unchanged.
#![no_main]

use fikra_gateway::errors::{Detail, ErrorKind};
use fikra_gateway::openai::chat::{parse_chat_request, write_backend_body};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const BACKEND_MODEL: &str = "vendor/model-\"x\"";
const CAP: u64 = 123;

/// JSON faults the scanner may raise on JSON serde_json accepts: its own limits, and a body
/// that is JSON but not an object.
const LIMIT_FAULTS: [&str; 3] = [
    "The request body is nested too deeply.",
    "The request body has too many top-level keys.",
    "The request body must be a JSON object.",
];

fuzz_target!(|data: &[u8]| {
    let judged: Result<Value, _> = serde_json::from_slice(data);
    let request = match parse_chat_request(data) {
        Ok(request) => request,
        // Differential: the scanner calls a body invalid JSON exactly when serde_json does,
        // but for the scanner's own limits.
        Err(error) if error.kind == ErrorKind::InvalidJson => {
            if judged.is_ok() {
                let Detail::Text(message) = error.detail else { panic!("a JSON fault without its text") };
                assert!(LIMIT_FAULTS.contains(&message), "valid JSON refused: {message}");
            }
            return;
        }
        // A parameter refusal: the body was JSON.
        Err(error) => {
            assert!(judged.is_ok(), "a parameter refusal ({:?}) of a body serde_json rejects", error.kind);
            return;
        }
    };
    let original: Value = judged.expect("an accepted body is JSON");
    // The facts the gateway prices and routes on match serde_json's reading.
    assert_eq!(request.stream, original["stream"] == Value::Bool(true));
    if !request.model.contains('\\') {
        assert_eq!(original["model"], request.model);
    }
    let mut out = Vec::new();
    write_backend_body(data, &request, BACKEND_MODEL, CAP, &mut out);
    let rewritten: Value = serde_json::from_slice(&out).expect("the rewrite is JSON");
    let (Value::Object(before), Value::Object(after)) = (&original, &rewritten) else {
        panic!("an accepted body is an object");
    };
    assert_eq!(after["model"], BACKEND_MODEL);
    let caps = ["max_tokens", "max_completion_tokens"];
    assert!(caps.iter().any(|cap| after.get(*cap) == Some(&Value::from(CAP))), "{after:?}");
    for cap in caps {
        if before.contains_key(cap) {
            assert_eq!(after[cap], CAP, "{cap}");
        }
    }
    if request.stream {
        assert_eq!(after["stream_options"]["include_usage"], true);
    }
    for (key, value) in before {
        if !matches!(key.as_str(), "model" | "max_tokens" | "max_completion_tokens" | "stream_options") {
            assert_eq!(after.get(key), Some(value), "{key}");
        }
    }
});
