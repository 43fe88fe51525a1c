//! The chat-request scanner and the backend rewrite on arbitrary bodies: neither panics; a body
//! the scanner accepts is JSON (the gateway forwards bytes an upstream must parse); and its
//! rewrite is JSON with the backend model, the granted cap and, for streams, usage switched on,
//! every other member unchanged.
#![no_main]

use fikra_gateway::openai::chat::{parse_chat_request, write_backend_body};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const BACKEND_MODEL: &str = "vendor/model-\"x\"";
const CAP: u64 = 123;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = parse_chat_request(data) else { return };
    let original: Value = serde_json::from_slice(data).expect("an accepted body is JSON");
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
