//! What the gateway changes in an upstream's answers, and what it learns from them, as pure
//! functions over bytes: the public model id put in place of the upstream's, the usage read
//! out, the usage-only SSE event dropped unless the client asked for it, SSE events found in a
//! byte stream, and upstream error messages made safe to show.
//!
//! Nothing here does IO; everything writes into caller buffers. The upstream model name must
//! never survive into anything written here.

use crate::json::write_json_escaped;
use crate::openai::chat::{Span, object_members};

/// Token counts an upstream reported.
pub use crate::money::TokenUsage as ReportedUsage;

/// The end (exclusive) of the first complete SSE event in `buffer`, including its blank line.
pub fn next_event_end(buffer: &[u8]) -> Option<usize> {
    let mut index = 0;
    while index + 1 < buffer.len() {
        if buffer[index] == b'\n' {
            if buffer[index + 1] == b'\n' {
                return Some(index + 2);
            }
            if buffer[index + 1] == b'\r' && buffer.get(index + 2) == Some(&b'\n') {
                return Some(index + 3);
            }
        }
        index += 1;
    }
    None
}

/// Reads `{"prompt_tokens":..,"completion_tokens":..}` from a usage object.
fn parse_usage(json: &[u8]) -> Option<ReportedUsage> {
    let mut usage = ReportedUsage::default();
    let mut seen = (false, false);
    object_members(json, |key, value| {
        let number = std::str::from_utf8(value.slice(json)).ok().and_then(|t| t.parse::<u64>().ok());
        match (key, number) {
            (b"prompt_tokens", Some(n)) => {
                usage.prompt_tokens = n;
                seen.0 = true;
            }
            (b"completion_tokens", Some(n)) => {
                usage.completion_tokens = n;
                seen.1 = true;
            }
            _ => {}
        }
    })?;
    (seen.0 && seen.1).then_some(usage)
}

/// What `rewrite_object` found.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectFacts {
    pub usage: Option<ReportedUsage>,
    /// `choices` is present and an empty array (a usage-only chunk).
    pub choices_empty: bool,
    /// The object is an error (`{"error":...}`).
    pub is_error: bool,
}

/// Copies the JSON object `json` to `out` with its top-level `model` replaced by
/// `public_model`, and reports its usage. `None` if `json` is not a JSON object.
pub fn rewrite_object(json: &[u8], public_model: &str, out: &mut Vec<u8>) -> Option<ObjectFacts> {
    let mut facts = ObjectFacts::default();
    let mut model_span: Option<Span> = None;
    object_members(json, |key, value| match key {
        b"model" => model_span = Some(value),
        b"usage" => facts.usage = parse_usage(value.slice(json)),
        b"choices" => {
            facts.choices_empty = value.slice(json).iter().filter(|b| !b.is_ascii_whitespace()).eq(b"[]".iter())
        }
        b"error" => facts.is_error = true,
        _ => {}
    })?;
    match model_span {
        Some(span) => {
            out.extend_from_slice(&json[..span.start as usize]);
            out.push(b'"');
            write_json_escaped(out, public_model);
            out.push(b'"');
            out.extend_from_slice(&json[span.end as usize..]);
        }
        None => out.extend_from_slice(json),
    }
    Some(facts)
}

/// What one SSE event was.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A chunk, written to `out` (rewritten).
    Chunk,
    /// The usage-only chunk the client did not ask for: nothing written.
    DroppedUsage,
    /// `data: [DONE]`, written.
    Done,
    /// An error object from the upstream: nothing written (the caller ends the stream itself).
    Error,
    /// A comment or an event without data: nothing written.
    Ignored,
    /// Data that is not JSON: nothing written.
    Malformed,
}

/// Rewrites one SSE event (`event` ends with its blank line) into `out` as `data: ...\n\n`,
/// capturing usage into `usage`.
pub fn rewrite_event(
    event: &[u8],
    public_model: &str,
    include_usage_requested: bool,
    usage: &mut Option<ReportedUsage>,
    out: &mut Vec<u8>,
) -> EventKind {
    let mut data: Option<&[u8]> = None;
    for line in event.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(rest) = line.strip_prefix(b"data:") {
            data = Some(rest.strip_prefix(b" ").unwrap_or(rest));
        }
    }
    let Some(data) = data else { return EventKind::Ignored };
    if data == b"[DONE]" {
        out.extend_from_slice(b"data: [DONE]\n\n");
        return EventKind::Done;
    }
    let start = out.len();
    out.extend_from_slice(b"data: ");
    let Some(facts) = rewrite_object(data, public_model, out) else {
        out.truncate(start);
        return EventKind::Malformed;
    };
    if facts.is_error {
        out.truncate(start);
        return EventKind::Error;
    }
    if facts.usage.is_some() {
        *usage = facts.usage;
    }
    if facts.usage.is_some() && facts.choices_empty && !include_usage_requested {
        out.truncate(start);
        return EventKind::DroppedUsage;
    }
    out.extend_from_slice(b"\n\n");
    EventKind::Chunk
}

/// The `error.message` of an upstream error body, if it has one.
pub fn upstream_error_message(body: &[u8]) -> Option<&str> {
    let mut error_span: Option<Span> = None;
    object_members(body, |key, value| {
        if key == b"error" {
            error_span = Some(value);
        }
    })?;
    let error = error_span?.slice(body);
    let mut message: Option<&str> = None;
    object_members(error, |key, value| {
        let raw = value.slice(error);
        if key == b"message" && raw.first() == Some(&b'"') {
            message = std::str::from_utf8(&raw[1..raw.len() - 1]).ok();
        }
    })?;
    message
}

/// Appends `text` with every occurrence of `secret` replaced by `replacement`.
pub fn write_replacing(out: &mut Vec<u8>, text: &[u8], secret: &[u8], replacement: &[u8]) {
    if secret.is_empty() {
        out.extend_from_slice(text);
        return;
    }
    let mut rest = text;
    while let Some(index) = rest.windows(secret.len()).position(|window| window == secret) {
        out.extend_from_slice(&rest[..index]);
        out.extend_from_slice(replacement);
        rest = &rest[index + secret.len()..];
    }
    out.extend_from_slice(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: events are found whether split by LF LF or CRLF CRLF, and only when complete.
    #[test]
    fn finds_event_boundaries() {
        assert_eq!(next_event_end(b"data: 1\n\ndata: 2\n\n"), Some(9));
        assert_eq!(next_event_end(b"data: 1\r\n\r\ndata"), Some(11));
        assert_eq!(next_event_end(b"data: 1\n"), None);
        assert_eq!(next_event_end(b""), None);
    }

    // Goal: chunks get the public model, usage is captured, the usage-only chunk is dropped
    // unless asked for, [DONE] passes, errors are recognised.
    #[test]
    fn rewrites_events() {
        let mut usage = None;
        let mut out = Vec::new();
        let chunk = b"data: {\"id\":\"x\",\"model\":\"vendor/secret\",\"choices\":[{\"delta\":{\"content\":\"hi vendor/secret\"}}]}\n\n";
        assert_eq!(rewrite_event(chunk, "fikra-flash", false, &mut usage, &mut out), EventKind::Chunk);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "data: {\"id\":\"x\",\"model\":\"fikra-flash\",\"choices\":[{\"delta\":{\"content\":\"hi vendor/secret\"}}]}\n\n"
        );
        let usage_chunk = b"data: {\"model\":\"vendor/secret\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,\"total_tokens\":10}}\n\n";
        out.clear();
        assert_eq!(rewrite_event(usage_chunk, "fikra-flash", false, &mut usage, &mut out), EventKind::DroppedUsage);
        assert!(out.is_empty());
        assert_eq!(usage, Some(ReportedUsage::new(7, 3)));
        assert_eq!(rewrite_event(usage_chunk, "fikra-flash", true, &mut usage, &mut out), EventKind::Chunk);
        assert!(!String::from_utf8_lossy(&out).contains("vendor/secret"));
        out.clear();
        assert_eq!(rewrite_event(b"data: [DONE]\n\n", "m", false, &mut usage, &mut out), EventKind::Done);
        assert_eq!(out, b"data: [DONE]\n\n");
        out.clear();
        assert_eq!(
            rewrite_event(b"data: {\"error\":{\"message\":\"boom\"}}\n\n", "m", false, &mut usage, &mut out),
            EventKind::Error
        );
        assert_eq!(rewrite_event(b": keep-alive\n\n", "m", false, &mut usage, &mut out), EventKind::Ignored);
        assert_eq!(rewrite_event(b"data: {not json\n\n", "m", false, &mut usage, &mut out), EventKind::Malformed);
        assert!(out.is_empty());
    }

    // Goal: unary bodies get the public model and give their usage; error messages are found.
    #[test]
    fn rewrites_unary_and_reads_errors() {
        let body = br#"{"id":"c","object":"chat.completion","model":"vendor/secret","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46}}"#;
        let mut out = Vec::new();
        let facts = rewrite_object(body, "fikra-pro-120b", &mut out).unwrap();
        assert_eq!(facts.usage, Some(ReportedUsage::new(12, 34)));
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["model"], "fikra-pro-120b");
        assert!(rewrite_object(b"<html>", "m", &mut out).is_none());
        assert_eq!(
            upstream_error_message(br#"{"error":{"message":"model vendor/secret: bad temperature","type":"x"}}"#),
            Some("model vendor/secret: bad temperature")
        );
        assert_eq!(upstream_error_message(b"oops"), None);
        let mut replaced = Vec::new();
        write_replacing(&mut replaced, b"model vendor/secret: x vendor/secret", b"vendor/secret", b"fikra-flash");
        assert_eq!(replaced, b"model fikra-flash: x fikra-flash");
    }
}
