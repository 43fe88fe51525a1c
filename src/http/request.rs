//! Parsing one request head from a byte buffer, without copying, and deciding its body framing.
//!
//! Owns the request-smuggling defences: conflicting or malformed Content-Length, any
//! Transfer-Encoding other than a single `chunked`, Transfer-Encoding on HTTP/1.0, absolute-form
//! targets. Every such head is refused (the server answers 400 and closes); nothing ambiguous is
//! ever passed on. Uses a stack array of `MAX_REQUEST_HEADERS` header slots; never allocates.

use crate::limits::MAX_REQUEST_HEADERS;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
    Head,
    Options,
    Patch,
    Other,
}

impl Method {
    fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "HEAD" => Method::Head,
            "OPTIONS" => Method::Options,
            "PATCH" => Method::Patch,
            _ => Method::Other,
        }
    }
}

/// How the request body is delimited.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    ContentLength(u64),
    Chunked,
}

/// A parsed request head; every field borrows from the read buffer.
#[derive(Copy, Clone, Debug)]
pub struct RequestHead<'buf> {
    pub method: Method,
    pub method_str: &'buf str,
    /// The target before any '?'.
    pub path: &'buf str,
    /// The target after the first '?', or "".
    pub query: &'buf str,
    pub minor_version: u8,
    /// Bytes of the head, including the blank line that ends it.
    pub head_len: usize,
    pub framing: BodyFraming,
    pub keep_alive: bool,
    pub expect_continue: bool,
    pub authorization: Option<&'buf [u8]>,
    pub content_type: Option<&'buf [u8]>,
}

/// Why a head is refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// The head is longer than the limit (431).
    TooLarge,
    /// More header lines than `MAX_REQUEST_HEADERS` (431).
    TooManyHeaders,
    /// Not valid HTTP/1.x (400).
    Malformed(&'static str),
    /// Content-Length together with Transfer-Encoding, or differing Content-Lengths (400).
    ConflictingFraming,
    /// A Transfer-Encoding other than exactly `chunked` (400).
    UnsupportedTransferEncoding,
    /// An `Expect` other than `100-continue` (417).
    UnsupportedExpectation,
}

/// Parses the head at the start of `buf`. `Ok(None)`: incomplete, read more.
pub fn parse_head(buf: &[u8], max_head_bytes: usize) -> Result<Option<RequestHead<'_>>, HeadError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_REQUEST_HEADERS];
    let mut request = httparse::Request::new(&mut slots);
    let head_len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= max_head_bytes { Err(HeadError::TooLarge) } else { Ok(None) };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(httparse::Error::Version) => return Err(HeadError::Malformed("Unsupported HTTP version; send HTTP/1.1.")),
        Err(_) => return Err(HeadError::Malformed("The request head is not valid HTTP/1.1.")),
    };
    if head_len > max_head_bytes {
        return Err(HeadError::TooLarge);
    }
    let method_str = request.method.unwrap_or("");
    let target = request.path.unwrap_or("");
    let minor_version = request.version.unwrap_or(1);
    if !target.starts_with('/') {
        return Err(HeadError::Malformed("The request target must be a path starting with '/'."));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));

    let mut content_length: Option<u64> = None;
    let mut transfer_encoding_seen = false;
    let mut chunked = false;
    let mut connection_close = false;
    let mut connection_keep_alive = false;
    let mut expect_continue = false;
    let mut authorization = None;
    let mut content_type = None;
    for header in request.headers.iter() {
        let name = header.name;
        let value = header.value;
        if name.eq_ignore_ascii_case("content-length") {
            for part in value.split(|&b| b == b',') {
                let length = parse_content_length(trim(part))?;
                match content_length {
                    Some(previous) if previous != length => return Err(HeadError::ConflictingFraming),
                    _ => content_length = Some(length),
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if transfer_encoding_seen || !trim(value).eq_ignore_ascii_case(b"chunked") {
                return Err(HeadError::UnsupportedTransferEncoding);
            }
            transfer_encoding_seen = true;
            chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(|&b| b == b',') {
                let token = trim(token);
                connection_close |= token.eq_ignore_ascii_case(b"close");
                connection_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("expect") {
            if !trim(value).eq_ignore_ascii_case(b"100-continue") {
                return Err(HeadError::UnsupportedExpectation);
            }
            expect_continue = true;
        } else if name.eq_ignore_ascii_case("authorization") {
            authorization = Some(value);
        } else if name.eq_ignore_ascii_case("content-type") {
            content_type = Some(value);
        }
    }
    if transfer_encoding_seen && minor_version == 0 {
        return Err(HeadError::Malformed("Transfer-Encoding is not allowed in HTTP/1.0 requests."));
    }
    if chunked && content_length.is_some() {
        return Err(HeadError::ConflictingFraming);
    }
    let framing = match (chunked, content_length) {
        (true, _) => BodyFraming::Chunked,
        (false, Some(0)) | (false, None) => BodyFraming::None,
        (false, Some(length)) => BodyFraming::ContentLength(length),
    };
    let keep_alive = if minor_version == 0 { connection_keep_alive && !connection_close } else { !connection_close };
    Ok(Some(RequestHead {
        method: Method::from_token(method_str),
        method_str,
        path,
        query,
        minor_version,
        head_len,
        framing,
        keep_alive,
        expect_continue: expect_continue && minor_version == 1,
        authorization,
        content_type,
    }))
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !matches!(b, b' ' | b'\t')).map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// Digits only: no sign, no inner spaces, at most 19 digits (fits u64 with room).
fn parse_content_length(text: &[u8]) -> Result<u64, HeadError> {
    const MALFORMED: HeadError = HeadError::Malformed("Content-Length must be a non-negative decimal integer.");
    if text.is_empty() || text.len() > 19 || !text.iter().all(u8::is_ascii_digit) {
        return Err(MALFORMED);
    }
    Ok(text.iter().fold(0u64, |value, digit| value * 10 + u64::from(digit - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<RequestHead<'_>>, HeadError> {
        parse_head(text.as_bytes(), 32 * 1024)
    }

    // Goal: framing, keep-alive and the borrowed fields come out exactly.
    #[test]
    fn parses_valid_heads() {
        let head = parse("POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer k\r\nContent-Length: 12\r\n\r\nbody")
            .unwrap()
            .unwrap();
        assert_eq!(head.method, Method::Post);
        assert_eq!((head.path, head.query), ("/v1/chat/completions", "x=1"));
        assert_eq!(head.framing, BodyFraming::ContentLength(12));
        assert_eq!(head.authorization, Some(&b"Bearer k"[..]));
        assert!(head.keep_alive);
        assert_eq!(head.head_len, 96);
        let chunked = parse("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n").unwrap().unwrap();
        assert_eq!(chunked.framing, BodyFraming::Chunked);
    }

    // Goal: keep-alive follows the version and the Connection token list.
    #[test]
    fn keep_alive_rules() {
        let cases = [
            ("GET / HTTP/1.1\r\n\r\n", true),
            ("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
            ("GET / HTTP/1.1\r\nConnection: Keep-Alive, Upgrade\r\n\r\n", true),
            ("GET / HTTP/1.1\r\nConnection: upgrade, Close\r\n\r\n", false),
            ("GET / HTTP/1.0\r\n\r\n", false),
            ("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
        ];
        for (text, keep_alive) in cases {
            assert_eq!(parse(text).unwrap().unwrap().keep_alive, keep_alive, "{text:?}");
        }
    }

    // Goal: every smuggling-shaped head is refused with the right reason.
    #[test]
    fn refuses_ambiguous_framing() {
        let cases = [
            (
                "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                HeadError::ConflictingFraming,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                HeadError::ConflictingFraming,
            ),
            ("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", HeadError::ConflictingFraming),
            ("POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n", HeadError::ConflictingFraming),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", HeadError::UnsupportedTransferEncoding),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", HeadError::UnsupportedTransferEncoding),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                HeadError::UnsupportedTransferEncoding,
            ),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n", HeadError::UnsupportedTransferEncoding),
            ("POST / HTTP/1.1\r\nExpect: something\r\n\r\n", HeadError::UnsupportedExpectation),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text).unwrap_err(), expected, "{text:?}");
        }
        let malformed = [
            "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5 5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET http://example.com/ HTTP/1.1\r\n\r\n",
            "GET * HTTP/1.1\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        ];
        for text in malformed {
            assert!(
                matches!(parse(text), Err(HeadError::Malformed(_))),
                "{text:?}: {:?}",
                parse(text).map(|h| h.map(|h| h.framing))
            );
        }
        assert_eq!(
            parse("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n").unwrap().unwrap().framing,
            BodyFraming::ContentLength(5)
        );
    }

    // Goal: a head split at any byte is incomplete until its last byte arrives.
    #[test]
    fn incomplete_until_the_blank_line() {
        let text = b"GET /v1/models HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer x\r\n\r\n";
        for cut in 0..text.len() {
            assert_eq!(parse_head(&text[..cut], 1024).map(|h| h.is_some()), Ok(false), "cut at {cut}");
        }
        assert_eq!(parse_head(text, 1024).unwrap().unwrap().head_len, text.len());
    }

    // Goal: the size limit is exact: a head of exactly the limit passes, one byte more is refused.
    #[test]
    fn head_limit_is_exact() {
        let head = "GET / HTTP/1.1\r\nX: aaaaaaaaaa\r\n\r\n";
        assert!(parse_head(head.as_bytes(), head.len()).unwrap().is_some());
        assert_eq!(parse_head(head.as_bytes(), head.len() - 1).unwrap_err(), HeadError::TooLarge);
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nX: aaaa", 10).unwrap_err(), HeadError::TooLarge);
        let many: String = (0..=MAX_REQUEST_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(parse(&format!("GET / HTTP/1.1\r\n{many}\r\n")).unwrap_err(), HeadError::TooManyHeaders);
    }

    // Goal: pipelined requests: head_len stops at the first head's end.
    #[test]
    fn pipelined_heads() {
        let text = "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        let first = parse(text).unwrap().unwrap();
        assert_eq!((first.path, first.head_len), ("/a", 19));
        assert_eq!(parse(&text[19..]).unwrap().unwrap().path, "/b");
    }
}
