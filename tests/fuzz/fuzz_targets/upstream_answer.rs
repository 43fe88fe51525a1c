//! The upstream-answer rewrite on arbitrary bytes, as a unary object and as an SSE event: it
//! never panics, and when the answer is a JSON object the rewrite is JSON too, with the public
//! id as every top-level `model` and no string or key anywhere equal to the upstream's name.
//! Every `@` in the input becomes the upstream's name, so the fuzzer meets it often.
#![no_main]

use fikra_gateway::backend::upstream::rewrite::{EventKind, ModelNames, rewrite_event, rewrite_object};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const NAMES: ModelNames<'static> = ModelNames { public: "fikra-flash", upstream: "vendor/secret" };

/// Whether `value` holds the upstream's name as a whole string or key, anywhere.
fn leaks(value: &Value) -> bool {
    match value {
        Value::String(text) => text == NAMES.upstream,
        Value::Array(items) => items.iter().any(leaks),
        Value::Object(members) => members.iter().any(|(key, value)| key == NAMES.upstream || leaks(value)),
        _ => false,
    }
}

fn check_rewrite(original: &Value, rewritten: &[u8]) {
    let rewritten: Value = serde_json::from_slice(rewritten).expect("the rewrite of a JSON object is JSON");
    assert!(!leaks(&rewritten), "{rewritten}");
    if let (Value::Object(before), Value::Object(after)) = (original, &rewritten) {
        if before.contains_key("model") {
            assert_eq!(after["model"], NAMES.public);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut json = Vec::with_capacity(data.len());
    for &byte in data {
        if byte == b'@' {
            json.extend_from_slice(NAMES.upstream.as_bytes());
        } else {
            json.push(byte);
        }
    }
    let original: Option<Value> = serde_json::from_slice(&json).ok().filter(Value::is_object);
    let mut out = Vec::new();
    if rewrite_object(&json, &NAMES, &mut out).is_some()
        && let Some(original) = &original
    {
        check_rewrite(original, &out);
    }
    if json.contains(&b'\n') {
        return;
    }
    let mut event = b"data: ".to_vec();
    event.extend_from_slice(&json);
    event.extend_from_slice(b"\n\n");
    let mut usage = None;
    out.clear();
    let kind = rewrite_event(&event, &NAMES, true, &mut usage, &mut out);
    if kind == EventKind::Chunk
        && let Some(original) = &original
    {
        let data = out.strip_prefix(b"data: ").expect("an event starts with data:");
        check_rewrite(original, data.strip_suffix(b"\n\n").expect("an event ends with a blank line"));
    }
});
