//! A parsed request head kept as byte ranges of the read buffer instead of borrowed slices, so
//! the connection loop parses each head exactly once: `read_head` parses and checks it, the
//! body is then read into the same buffer (which may grow and move), and the handler gets the
//! head back from the spans without a second parse.
//!
//! Owns only the conversion both ways. It must never be applied to a buffer whose first
//! `head_len` bytes changed since the head was parsed (the server only appends past the head
//! until the request is answered); `view` checks that in debug builds.

use crate::http::request::{BodyFraming, Method, RequestHead};

/// A range of the read buffer: `start..start + len`. An empty span is `0..0`, whatever buffer.
/// Sixteen bits suffice: a head is never longer than `MAX_REQUEST_HEAD_BYTES` (the spans are
/// held by every connection across its awaits, so they are kept small).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
struct Span {
    start: u16,
    len: u16,
}

const _: () = assert!(crate::limits::MAX_REQUEST_HEAD_BYTES <= u16::MAX as usize, "head offsets fit in 16 bits");

impl Span {
    /// Where `part` lies inside `buffer`. `part` is a sub-slice of `buffer`, or empty (an empty
    /// slice may be a constant from elsewhere, e.g. the "repeated Origin" marker).
    fn of(buffer: &[u8], part: &[u8]) -> Span {
        if part.is_empty() {
            return Span::default();
        }
        let start = part.as_ptr() as usize - buffer.as_ptr() as usize;
        debug_assert!(start + part.len() <= buffer.len(), "a head field lies inside the head");
        Span { start: start as u16, len: part.len() as u16 }
    }

    fn bytes(self, buffer: &[u8]) -> &[u8] {
        let start = usize::from(self.start);
        &buffer[start..start + usize::from(self.len)]
    }

    /// The span as text. It was a `&str` when parsed and the head bytes have not changed, so
    /// the check cannot fail; if it ever did, the field reads as empty instead of panicking.
    fn text(self, buffer: &[u8]) -> &str {
        let text = std::str::from_utf8(self.bytes(buffer));
        debug_assert!(text.is_ok(), "a text field of the head is UTF-8");
        text.unwrap_or("")
    }
}

/// `RequestHead` without the borrow: the same fields, slices replaced by spans.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct HeadSpans {
    pub method: Method,
    pub minor_version: u8,
    /// As `RequestHead::head_len` (at most `MAX_REQUEST_HEAD_BYTES`).
    pub head_len: u16,
    pub framing: BodyFraming,
    pub keep_alive: bool,
    pub expect_continue: bool,
    method_str: Span,
    path: Span,
    query: Span,
    authorization: Option<Span>,
    content_type: Option<Span>,
    host_headers: u8,
    origin: Option<Span>,
    cors_request_method: Option<Span>,
    cors_request_headers: Option<Span>,
}

impl HeadSpans {
    /// The spans of `head`, which was parsed from the start of `buffer`.
    pub fn of(head: &RequestHead<'_>, buffer: &[u8]) -> HeadSpans {
        debug_assert!(head.head_len <= crate::limits::MAX_REQUEST_HEAD_BYTES);
        let span = |part: &[u8]| Span::of(buffer, part);
        HeadSpans {
            method: head.method,
            minor_version: head.minor_version,
            head_len: head.head_len as u16,
            framing: head.framing,
            keep_alive: head.keep_alive,
            expect_continue: head.expect_continue,
            method_str: span(head.method_str.as_bytes()),
            path: span(head.path.as_bytes()),
            query: span(head.query.as_bytes()),
            authorization: head.authorization.map(span),
            content_type: head.content_type.map(span),
            host_headers: head.host_headers,
            origin: head.origin.map(span),
            cors_request_method: head.cors_request_method.map(span),
            cors_request_headers: head.cors_request_headers.map(span),
        }
    }

    /// The head again, borrowing from `buffer` (the buffer it was parsed from, possibly moved
    /// or grown past the head since).
    pub fn view<'buf>(&self, buffer: &'buf [u8]) -> RequestHead<'buf> {
        RequestHead {
            method: self.method,
            method_str: self.method_str.text(buffer),
            path: self.path.text(buffer),
            query: self.query.text(buffer),
            minor_version: self.minor_version,
            head_len: usize::from(self.head_len),
            framing: self.framing,
            keep_alive: self.keep_alive,
            expect_continue: self.expect_continue,
            authorization: self.authorization.map(|span| span.bytes(buffer)),
            content_type: self.content_type.map(|span| span.bytes(buffer)),
            host_headers: self.host_headers,
            origin: self.origin.map(|span| span.bytes(buffer)),
            cors_request_method: self.cors_request_method.map(|span| span.bytes(buffer)),
            cors_request_headers: self.cors_request_headers.map(|span| span.bytes(buffer)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::parse_head;

    const LIMIT_BYTES: usize = 8 * 1024;

    #[test]
    fn a_head_survives_the_buffer_moving() {
        let heads: [&[u8]; 4] = [
            b"GET /v1/models HTTP/1.1\r\nHost: a\r\n\r\n",
            b"\r\nPOST /v1/chat/completions?x=1&y HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer fk_live_x\r\n\
              Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
            b"OPTIONS /v1/responses HTTP/1.1\r\nHost: a\r\nOrigin: https://app.example\r\n\
              Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization\r\n\r\n",
            // A repeated Origin reads as empty (a constant, not part of the buffer).
            b"GET / HTTP/1.0\r\nOrigin: a\r\nOrigin: b\r\nConnection: keep-alive\r\n\r\n",
        ];
        for text in heads {
            let parsed = parse_head(text, LIMIT_BYTES).unwrap().unwrap();
            let spans = HeadSpans::of(&parsed, text);
            // The same bytes in a new, longer allocation: as after reading a body.
            let mut moved = Vec::with_capacity(1);
            moved.extend_from_slice(text);
            moved.extend_from_slice(b"more body bytes");
            assert_eq!(spans.view(&moved), parsed, "{:?}", String::from_utf8_lossy(text));
            assert_eq!(spans.view(&moved).path.as_ptr(), moved[usize::from(spans.path.start)..].as_ptr());
        }
    }
}
