//! What the gateway changes in an upstream's answers, and what it learns from them, as pure
//! functions over bytes: the public model id put in place of the upstream's, the usage read
//! out (top-level `usage`, else Groq's `x_groq.usage`, with cached and reasoning tokens), whether
//! an answer is a real result or a failure in disguise, the usage-only SSE event dropped unless
//! the client asked for it, SSE events found in a byte stream in linear time, and upstream error
//! messages made safe to show.
//!
//! Nothing here does IO; everything writes into caller buffers and nothing allocates.
//!
//! What the model rewrite guarantees, for every JSON object it copies (a unary answer, or the
//! data of each SSE event), whatever the spelling (escapes are decoded before comparing, so
//! `"m\u006fdel"` is `model` and `"vendor\/x"` is `vendor/x`):
//! - every top-level member whose key is `model`, repeated ones included, gets the public id as
//!   its value, whatever the value was;
//! - at any depth (`x_groq.usage_breakdown.models[].model`, ...), a member named `model` whose
//!   value is a string gets the public id;
//! - at any depth, any string (value or key) equal to the upstream model name becomes the public
//!   id.
//!
//! The walk is one pass over the bytes, comparisons stop at the first differing byte, and the
//! rest is copied untouched. Not guaranteed: the upstream name as a *part* of a longer string
//! (generated text, ids, messages); rewriting inside those would corrupt the model's output.
//! Error messages the gateway shows are cleaned of it separately (`write_replacing`).

use crate::limits::UPSTREAM_MAX_SSE_EVENT_BYTES;
use crate::openai::chat::json_scan::{Span, content_eq, object_members, text_members};

mod usage;
mod walk;

use self::usage::parse_usage;
pub use self::walk::Choices;
use self::walk::copy_rewritten;

/// Token counts an upstream reported.
pub use crate::money::TokenUsage as ReportedUsage;

/// The two names of the model being served: the one the client sees and the one the upstream
/// knows it by (which must never reach the client).
#[derive(Copy, Clone, Debug)]
pub struct ModelNames<'a> {
    pub public: &'a str,
    pub upstream: &'a str,
}

/// The end (exclusive) of the first complete SSE event in `buffer`, including its blank line.
pub fn next_event_end(buffer: &[u8]) -> Option<usize> {
    EventFinder::default().next_end(buffer)
}

/// Finds SSE event boundaries in a buffer that grows at its end, without looking at a byte
/// twice: it remembers how far it searched, so a large event arriving in many pieces costs
/// time linear in its size.
#[derive(Copy, Clone, Debug, Default)]
pub struct EventFinder {
    searched: usize,
}

impl EventFinder {
    /// The end (exclusive) of the first complete event in `pending`, its blank line included.
    /// After `None`, the next call must pass the same bytes, possibly more of them; after
    /// `Some(end)`, the bytes after the event (`&pending[end..]` and what arrives next).
    pub fn next_end(&mut self, pending: &[u8]) -> Option<usize> {
        let mut index = self.searched.min(pending.len());
        while let Some(offset) = pending[index..].iter().position(|&byte| byte == b'\n') {
            let newline = index + offset;
            let end = match pending.get(newline + 1) {
                Some(b'\n') => newline + 2,
                Some(b'\r') => match pending.get(newline + 2) {
                    Some(b'\n') => newline + 3,
                    Some(_) => {
                        index = newline + 1;
                        continue;
                    }
                    // `\n\r` at the end: the next piece may complete the blank line.
                    None => break,
                },
                Some(_) => {
                    index = newline + 1;
                    continue;
                }
                None => break,
            };
            self.searched = 0;
            return Some(end);
        }
        // The last two bytes may begin a boundary the next piece completes.
        self.searched = pending.len().saturating_sub(2);
        None
    }
}

/// Whether `pending` (bytes with no complete event yet) already breaks the single-event limit.
pub fn event_too_large(pending_len: usize) -> bool {
    pending_len > UPSTREAM_MAX_SSE_EVENT_BYTES
}

/// What `rewrite_object` found.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectFacts {
    /// From the top-level `usage`, else from `x_groq.usage`.
    pub usage: Option<ReportedUsage>,
    pub choices: Choices,
    /// A top-level `error` that is not `null`, or an `x_groq.error` (Groq stopping a stream).
    pub is_error: bool,
}

impl ObjectFacts {
    /// A real result: a `choices` array and no error. Anything else from an upstream that said
    /// 200 is a failure in disguise.
    pub fn is_result(&self) -> bool {
        !self.is_error && matches!(self.choices, Choices::Empty | Choices::NonEmpty)
    }
}

/// Copies the JSON object `json` to `out` with the model names rewritten (see the module
/// doc), and reports what it is. `None` (and nothing written) if `json` is not one valid JSON
/// object.
pub fn rewrite_object(json: &[u8], names: &ModelNames<'_>, out: &mut Vec<u8>) -> Option<ObjectFacts> {
    if u32::try_from(json.len()).is_err() {
        return None;
    }
    let text = std::str::from_utf8(json).ok()?;
    let start = out.len();
    let top = copy_rewritten(json, names.public, names.upstream, out);
    let Some(top) = top else {
        out.truncate(start);
        return None;
    };
    let mut facts = ObjectFacts { usage: None, choices: top.choices, is_error: top.error };
    facts.usage = top.usage;
    if let Some(span) = top.x_groq {
        let x_groq = span.text(text);
        text_members(x_groq, |key, value| {
            if key.is(x_groq.as_bytes(), b"usage") && facts.usage.is_none() {
                facts.usage = parse_usage(value.text(x_groq));
            } else if key.is(x_groq.as_bytes(), b"error") && value.text(x_groq) != "null" {
                facts.is_error = true;
            }
        });
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
    /// An error object, an `x_groq.error` or an `event: error`: nothing written (the caller
    /// ends the stream itself).
    Error,
    /// A comment or an event without data: nothing written.
    Ignored,
    /// A JSON object that is neither a chunk nor an error (no `choices` array): nothing
    /// written; its usage, if any, is kept.
    NoResult,
    /// Not SSE (an unknown field line, several data lines), data that is not a JSON object, or
    /// an event over the size limit: nothing written.
    Malformed,
}

/// The fields of one SSE event the gateway reads; either may be absent.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SseFields<'e> {
    /// The `event:` name.
    pub name: Option<&'e [u8]>,
    /// The one `data:` line.
    pub data: Option<&'e [u8]>,
}

/// The fields of one SSE event (`event` ends with its blank line); `Err(())` for lines that are
/// not SSE fields.
pub(super) fn event_fields(event: &[u8]) -> Result<SseFields<'_>, ()> {
    let (mut name, mut data): (Option<&[u8]>, Option<&[u8]>) = (None, None);
    for line in event.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || line[0] == b':' {
            continue;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => (&line[..colon], &line[colon + 1..]),
            None => (line, &[][..]),
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        match field {
            // One data line per event is what every upstream sends; several would have to be
            // joined, and relaying only one of them would corrupt the event.
            b"data" if data.is_none() => data = Some(value),
            // The last `event:` line names the event (SSE), but any `error` among them sticks.
            b"event" if name != Some(b"error") => name = Some(value),
            b"event" => {}
            b"id" | b"retry" => {}
            _ => return Err(()),
        }
    }
    Ok(SseFields { name, data })
}

/// Rewrites one SSE event (`event` ends with its blank line) into `out` as `data: ...\n\n`,
/// capturing usage into `usage` (the last reported wins).
pub fn rewrite_event(
    event: &[u8],
    names: &ModelNames<'_>,
    include_usage_requested: bool,
    usage: &mut Option<ReportedUsage>,
    out: &mut Vec<u8>,
) -> EventKind {
    if event.len() > UPSTREAM_MAX_SSE_EVENT_BYTES {
        return EventKind::Malformed;
    }
    let data = match event_fields(event) {
        Ok(SseFields { name: Some(b"error"), .. }) => return EventKind::Error,
        Ok(SseFields { data: Some(data), .. }) => data,
        Ok(SseFields { data: None, .. }) => return EventKind::Ignored,
        Err(()) => return EventKind::Malformed,
    };
    if data == b"[DONE]" {
        out.extend_from_slice(b"data: [DONE]\n\n");
        return EventKind::Done;
    }
    let start = out.len();
    out.extend_from_slice(b"data: ");
    let Some(facts) = rewrite_object(data, names, out) else {
        out.truncate(start);
        return EventKind::Malformed;
    };
    if facts.usage.is_some() {
        *usage = facts.usage;
    }
    if facts.is_error {
        out.truncate(start);
        return EventKind::Error;
    }
    if !facts.is_result() {
        out.truncate(start);
        return EventKind::NoResult;
    }
    if facts.usage.is_some() && facts.choices == Choices::Empty && !include_usage_requested {
        out.truncate(start);
        return EventKind::DroppedUsage;
    }
    out.extend_from_slice(b"\n\n");
    EventKind::Chunk
}

/// The parts of an upstream error body the gateway looks at.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamError<'b> {
    /// `error.message` as written between its quotes (escapes left in).
    pub message: Option<&'b str>,
    /// `error.code` decodes to `context_length_exceeded`.
    pub code_is_context_length: bool,
}

impl UpstreamError<'_> {
    /// The upstream refused the request because the prompt and the output cap do not fit the
    /// model's context (OpenAI and Groq: `context_length_exceeded`, or a message saying so).
    pub fn is_context_length(&self) -> bool {
        const PHRASES: [&[u8]; 4] = [b"context length", b"context_length", b"context window", b"reduce the length"];
        self.code_is_context_length
            || self.message.is_some_and(|m| PHRASES.iter().any(|p| contains_ignore_ascii_case(m.as_bytes(), p)))
    }
}

fn contains_ignore_ascii_case(text: &[u8], phrase: &[u8]) -> bool {
    phrase.is_empty() || text.windows(phrase.len()).any(|window| window.eq_ignore_ascii_case(phrase))
}

/// The `error` object of an upstream error body: its message and whether its code says the
/// context length was exceeded. `None` if the body is not `{"error":{...}}`.
pub fn upstream_error(body: &[u8]) -> Option<UpstreamError<'_>> {
    let mut error_span: Option<Span> = None;
    object_members(body, |key, value| {
        if content_eq(key, b"error") {
            error_span = Some(value);
        }
    })?;
    let error = error_span?.slice(body);
    let mut found = UpstreamError::default();
    object_members(error, |key, value| {
        let raw = value.slice(error);
        let is_string = raw.first() == Some(&b'"');
        if content_eq(key, b"message") && is_string {
            found.message = std::str::from_utf8(value.inner().slice(error)).ok();
        } else if content_eq(key, b"code") && is_string {
            found.code_is_context_length = content_eq(value.inner().slice(error), b"context_length_exceeded");
        }
    })?;
    Some(found)
}

/// The `error.message` of an upstream error body, if it has one.
pub fn upstream_error_message(body: &[u8]) -> Option<&str> {
    upstream_error(body)?.message
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
mod tests;
