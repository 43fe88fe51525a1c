//! Response heads and bodies written into a reused per-connection buffer.
//!
//! Owns the byte layout of every response the gateway sends: status line, the fixed headers,
//! the per-request ones (`x-request-id`, the six `x-ratelimit-*`, `retry-after`), JSON error
//! bodies from the start-up catalog, and the framing of streamed bodies (chunked for HTTP/1.1,
//! close-delimited for HTTP/1.0: `StreamFraming`). It writes into `Vec<u8>`s the caller keeps
//! warm, so a warm connection answers without allocating. It never performs IO. Which framing a
//! response gets, and what HEAD and HTTP/1.0 change, is decided once per request by
//! `http::server::ResponseSink`, never by a handler.

use std::io::Write;

use crate::digits::push_decimal;
use crate::errors::{self, ApiError};
use crate::http::date;
use crate::http::duration::write_go_duration;
use crate::ratelimit::RateSnapshot;

/// The per-request facts every response head may carry.
#[derive(Copy, Clone, Debug, Default)]
pub struct ResponseContext<'a> {
    /// `x-request-id` (authenticated requests and everything after routing).
    pub request_id: Option<&'a str>,
    /// Rate-limit state for the `x-ratelimit-*` headers (authenticated requests only).
    pub rates: Option<&'a RateSnapshot>,
    /// `false` adds `connection: close`.
    pub keep_alive: bool,
}

/// Extra header values some errors need.
#[derive(Copy, Clone, Debug, Default)]
pub struct ErrorExtras {
    /// Milliseconds until a retry can succeed (429 and 503): `retry-after` and `retry-after-ms`.
    pub retry_after_ms: Option<u64>,
    /// Methods for `allow` (405).
    pub allow: Option<&'static str>,
}

/// The `x-fikra-max-tokens-clamped` header of one response, rendered on the stack.
pub struct ClampHeader {
    digits: [u8; 20],
    len: usize,
}

impl ClampHeader {
    pub const NAME: &'static str = "x-fikra-max-tokens-clamped";

    /// The header for an output cap lowered to `clamped_to`; nothing when `None`.
    pub fn new(clamped_to: Option<u64>) -> ClampHeader {
        let mut header = ClampHeader { digits: [0; 20], len: 0 };
        if let Some(cap) = clamped_to {
            let mut cursor = std::io::Cursor::new(&mut header.digits[..]);
            let _ = write!(cursor, "{cap}");
            header.len = cursor.position() as usize;
        }
        header
    }

    /// Extra headers for a response head: `(pairs, count)`, use `&pairs[..count]`.
    pub fn pairs(&self) -> ([(&'static str, &[u8]); 1], usize) {
        ([(Self::NAME, &self.digits[..self.len])], usize::from(self.len > 0))
    }
}

/// Writes `HTTP/1.1 <status> <reason>\r\n`.
pub fn write_status_line(out: &mut Vec<u8>, status: u16) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(errors::reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Writes the headers every response carries after the status line (date, connection, request
/// id, rate limits), without the terminating blank line.
pub fn write_common_headers(out: &mut Vec<u8>, context: &ResponseContext<'_>) {
    out.extend_from_slice(b"date: ");
    date::write_http_date(out);
    out.extend_from_slice(b"\r\n");
    if !context.keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if let Some(request_id) = context.request_id {
        out.extend_from_slice(b"x-request-id: ");
        out.extend_from_slice(request_id.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(rates) = context.rates {
        write_rate_headers(out, rates);
    }
}

/// Writes the six `x-ratelimit-*` headers of SPEC §1.
pub fn write_rate_headers(out: &mut Vec<u8>, rates: &RateSnapshot) {
    out.extend_from_slice(b"x-ratelimit-limit-requests: ");
    push_decimal(out, rates.requests_limit);
    out.extend_from_slice(b"\r\nx-ratelimit-remaining-requests: ");
    push_decimal(out, rates.requests_remaining);
    out.extend_from_slice(b"\r\nx-ratelimit-reset-requests: ");
    write_go_duration(out, rates.requests_reset_ms);
    out.extend_from_slice(b"\r\nx-ratelimit-limit-tokens: ");
    push_decimal(out, rates.tokens_limit);
    out.extend_from_slice(b"\r\nx-ratelimit-remaining-tokens: ");
    push_decimal(out, rates.tokens_remaining);
    out.extend_from_slice(b"\r\nx-ratelimit-reset-tokens: ");
    write_go_duration(out, rates.tokens_reset_ms);
    out.extend_from_slice(b"\r\n");
}

/// Writes `name: value` lines.
fn write_headers(out: &mut Vec<u8>, headers: &[(&str, &[u8])]) {
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
}

/// Writes a complete response with a body of known length: head, then `body`.
pub fn write_full(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    extra_headers: &[(&str, &[u8])],
    context: &ResponseContext<'_>,
    body: &[u8],
) {
    write_status_line(out, status);
    out.extend_from_slice(b"content-type: ");
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(b"\r\ncontent-length: ");
    push_decimal(out, body.len() as u64);
    out.extend_from_slice(b"\r\n");
    write_headers(out, extra_headers);
    write_common_headers(out, context);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// How a streamed (SSE) body is delimited on the wire.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum StreamFraming {
    /// HTTP/1.1: `transfer-encoding: chunked`, each event one chunk, a last chunk at the end.
    Chunked,
    /// HTTP/1.0 (no chunked coding, RFC 9112 §6.1): the raw bytes, the end is the close.
    CloseDelimited,
}

impl StreamFraming {
    /// Frames the payload the caller wrote at `out[start..]` (nothing to do when close-delimited).
    pub fn frame_in_place(self, out: &mut Vec<u8>, start: usize) {
        if self == StreamFraming::Chunked {
            frame_chunk_in_place(out, start);
        }
    }

    /// Ends the body (the last chunk; when close-delimited, the close does it).
    pub fn write_end(self, out: &mut Vec<u8>) {
        if self == StreamFraming::Chunked {
            write_last_chunk(out);
        }
    }
}

/// Writes `error` as one SSE event (`data: {"error":...}`), framed by `framing`: how a stream
/// that already started ends on a failure (SPEC §1), instead of `[DONE]`.
pub fn write_error_event(out: &mut Vec<u8>, error: &ApiError<'_>, framing: StreamFraming) {
    let start = out.len();
    out.extend_from_slice(b"data: ");
    errors::write_body(out, error);
    out.extend_from_slice(b"\n\n");
    framing.frame_in_place(out, start);
}

/// Writes a complete JSON error response. `scratch` is a reused buffer for the body.
pub fn write_error(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    error: &ApiError<'_>,
    extras: &ErrorExtras,
    context: &ResponseContext<'_>,
) {
    scratch.clear();
    errors::write_body(scratch, error);
    let rendered = errors::catalog().get(error.kind);
    out.extend_from_slice(&rendered.head_fixed);
    out.extend_from_slice(b"content-length: ");
    push_decimal(out, scratch.len() as u64);
    match extras.retry_after_ms {
        Some(retry_after_ms) => {
            out.extend_from_slice(b"\r\nretry-after: ");
            push_decimal(out, errors::retry_after_seconds(retry_after_ms));
            out.extend_from_slice(b"\r\nretry-after-ms: ");
            push_decimal(out, retry_after_ms);
        }
        None if error.kind.spec().has_retry_after => out.extend_from_slice(b"\r\nretry-after: 1"),
        None => {}
    }
    out.extend_from_slice(b"\r\n");
    if let Some(allow) = extras.allow {
        out.extend_from_slice(b"allow: ");
        out.extend_from_slice(allow.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    write_common_headers(out, context);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(scratch);
}

/// Writes the head of a streamed response framed by `framing` (a close-delimited one must also
/// have `context.keep_alive` false).
pub fn write_stream_head(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    extra_headers: &[(&str, &[u8])],
    context: &ResponseContext<'_>,
    framing: StreamFraming,
) {
    debug_assert!(framing == StreamFraming::Chunked || !context.keep_alive, "a close-delimited body ends by the close");
    write_status_line(out, status);
    let _ = write!(out, "content-type: {content_type}\r\n");
    if framing == StreamFraming::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"cache-control: no-cache\r\n");
    write_headers(out, extra_headers);
    write_common_headers(out, context);
    out.extend_from_slice(b"\r\n");
}

/// Frames `payload` as one HTTP/1.1 chunk (nothing for an empty payload: that would end the body).
pub fn write_chunk(out: &mut Vec<u8>, payload: &[u8]) {
    if payload.is_empty() {
        return;
    }
    let _ = write!(out, "{:x}\r\n", payload.len());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// Ends a chunked body.
pub fn write_last_chunk(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n\r\n");
}

/// Writes `payload` as one chunk, framing it in place: the caller wrote the payload at
/// `out[start..]`, and this inserts the size line before it and the CRLF after. Used by the SSE
/// relay to render an event straight into the output buffer.
pub fn frame_chunk_in_place(out: &mut Vec<u8>, start: usize) {
    let payload_len = out.len() - start;
    if payload_len == 0 {
        return;
    }
    let mut size_line = [0u8; 18];
    let mut cursor = std::io::Cursor::new(&mut size_line[..]);
    let _ = write!(cursor, "{payload_len:x}\r\n");
    let size_len = cursor.position() as usize;
    out.splice(start..start, size_line[..size_len].iter().copied());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: &[u8]) -> String {
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    // Goal: a 429 carries every SPEC header with exact values.
    #[test]
    fn rate_limit_error_has_spec_headers() {
        let rates = RateSnapshot {
            requests_limit: 30,
            requests_remaining: 0,
            requests_reset_ms: 1146,
            tokens_limit: 40000,
            tokens_remaining: 39000,
            tokens_reset_ms: 1500,
        };
        let error = ApiError {
            kind: errors::ErrorKind::RateLimitExceeded,
            param: None,
            detail: errors::Detail::RateLimited {
                bucket: errors::Bucket::Requests,
                limit: 30,
                used: 30,
                requested: 1,
                retry_after_ms: 1146,
            },
        };
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        let context = ResponseContext { request_id: Some("req_1"), rates: Some(&rates), keep_alive: true };
        write_error(&mut out, &mut scratch, &error, &ErrorExtras { retry_after_ms: Some(1146), allow: None }, &context);
        let response = text(&out);
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let lines: Vec<&str> = head.split("\r\n").collect();
        assert_eq!(lines[0], "HTTP/1.1 429 Too Many Requests");
        for expected in [
            "content-type: application/json",
            "x-should-retry: true",
            "retry-after: 2",
            "retry-after-ms: 1146",
            "x-request-id: req_1",
            "x-ratelimit-limit-requests: 30",
            "x-ratelimit-remaining-requests: 0",
            "x-ratelimit-reset-requests: 1.146s",
            "x-ratelimit-limit-tokens: 40000",
            "x-ratelimit-remaining-tokens: 39000",
            "x-ratelimit-reset-tokens: 1.5s",
        ] {
            assert!(lines.contains(&expected), "missing {expected:?} in {lines:?}");
        }
        assert!(lines.contains(&format!("content-length: {}", body.len()).as_str()));
        assert!(!lines.iter().any(|l| l.starts_with("connection:")));
    }

    // Goal: in-place chunk framing equals framing a copy.
    #[test]
    fn frames_chunk_in_place() {
        let mut out = b"HEAD".to_vec();
        out.extend_from_slice(b"data: {}\n\n");
        frame_chunk_in_place(&mut out, 4);
        let mut expected = b"HEAD".to_vec();
        write_chunk(&mut expected, b"data: {}\n\n");
        assert_eq!(out, expected);
        assert_eq!(text(&expected), "HEADa\r\ndata: {}\n\n\r\n");
    }
}
