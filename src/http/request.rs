//! Parsing one request head from a byte buffer, without copying, and deciding its body framing.
//!
//! Owns the request-smuggling defences: Content-Length together with Transfer-Encoding,
//! differing or malformed Content-Lengths, any Transfer-Encoding other than a single `chunked`,
//! Transfer-Encoding on HTTP/1.0, bare-LF line endings, duplicated Authorization or Content-Type,
//! and targets other than origin-form. Every such head is refused (the server answers 400 and
//! closes); nothing ambiguous is ever passed on. It counts `Host` headers; `check_host` applies
//! RFC 9112 §3.2 (an HTTP/1.1 request has exactly one, an HTTP/1.0 one at most one), which the
//! server checks after the head parses. It reads at most `max_head_bytes` of the buffer,
//! uses a stack array of `MAX_REQUEST_HEADERS` header slots, and never allocates or does IO.
//!
//! Empty lines before the request line: httparse skips any number of them (CRLF or bare LF)
//! as RFC 9112 §2.2 allows. A CRLF one is accepted and counted in `head_len` (and against the
//! head limit); a bare LF one is refused like any other bare LF in the head.

use std::mem::MaybeUninit;

use crate::limits::MAX_REQUEST_HEADERS;

/// The request method; `Other` for any valid token not listed (methods are case-sensitive).
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
    /// Neither Content-Length nor Transfer-Encoding: no body.
    None,
    /// Exactly this many body bytes follow the head (`Content-Length: 0` gives `ContentLength(0)`).
    ContentLength(u64),
    /// `Transfer-Encoding: chunked`; decode with `chunked::ChunkedDecoder`.
    Chunked,
}

/// A parsed request head; every field borrows from the read buffer.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RequestHead<'buf> {
    pub method: Method,
    pub method_str: &'buf str,
    /// The target before the first '?'; always starts with '/'; valid UTF-8, not percent-decoded.
    pub path: &'buf str,
    /// The target after the first '?', or "".
    pub query: &'buf str,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1 (no other version parses).
    pub minor_version: u8,
    /// Bytes of the head (including skipped leading CRLFs and the blank line that ends it); the
    /// body or the next pipelined request starts here.
    pub head_len: usize,
    pub framing: BodyFraming,
    /// HTTP/1.1: true unless a Connection header lists `close`. HTTP/1.0: true only when one
    /// lists `keep-alive` and none lists `close`.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request (HTTP/1.0 ones are ignored, RFC 9110 §10.1.1).
    pub expect_continue: bool,
    /// The Authorization value, surrounding whitespace trimmed by the parser.
    pub authorization: Option<&'buf [u8]>,
    /// The Content-Type value, surrounding whitespace trimmed by the parser.
    pub content_type: Option<&'buf [u8]>,
    /// How many `Host` header lines the head has (counting stops at 2: "more than one").
    pub host_headers: u8,
    /// The `Origin` value (a browser's cross-origin request); empty when repeated, so a
    /// repeated one matches no allowed origin.
    pub origin: Option<&'buf [u8]>,
    /// `Access-Control-Request-Method`: present on a CORS preflight.
    pub cors_request_method: Option<&'buf [u8]>,
    /// `Access-Control-Request-Headers` of a CORS preflight.
    pub cors_request_headers: Option<&'buf [u8]>,
}

impl RequestHead<'_> {
    /// RFC 9112 §3.2: an HTTP/1.1 request without exactly one `Host` header, or an HTTP/1.0
    /// one with several, is refused with 400 (HTTP/1.0 clients need not send one).
    pub fn check_host(&self) -> Result<(), HeadError> {
        match (self.host_headers, self.minor_version) {
            (0, 1) => Err(MALFORMED_MISSING_HOST),
            (0 | 1, _) => Ok(()),
            _ => Err(MALFORMED_DUPLICATE_HOST),
        }
    }
}

/// Why a head is refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// The head is longer than the limit (431).
    TooLarge,
    /// More header lines than `MAX_REQUEST_HEADERS` (431).
    TooManyHeaders,
    /// Not valid HTTP/1.x, or a shape refused as a smuggling risk (400); the text is client-facing.
    Malformed(&'static str),
    /// Content-Length together with Transfer-Encoding, or differing Content-Lengths (400).
    ConflictingFraming,
    /// A Transfer-Encoding other than exactly one `chunked` (400).
    UnsupportedTransferEncoding,
    /// An `Expect` other than `100-continue` (417).
    UnsupportedExpectation,
}

const MALFORMED_HEAD: HeadError = HeadError::Malformed("The request head is not valid HTTP/1.1.");
const MALFORMED_HEADER_NAME: HeadError =
    HeadError::Malformed("A header name is not a valid token (no spaces before the colon, no line folding).");
const MALFORMED_HEADER_VALUE: HeadError = HeadError::Malformed("A header value contains a control character.");
const MALFORMED_LINE_ENDING: HeadError = HeadError::Malformed("Lines of the request head must end with CRLF.");
const MALFORMED_REQUEST_LINE: HeadError =
    HeadError::Malformed("The request line must be 'METHOD /path HTTP/1.1' with single spaces.");
const MALFORMED_VERSION: HeadError = HeadError::Malformed("Unsupported HTTP version; send HTTP/1.1.");
const MALFORMED_TARGET: HeadError = HeadError::Malformed("The request target must be a path starting with '/'.");
const MALFORMED_CONTENT_LENGTH: HeadError =
    HeadError::Malformed("Content-Length must be a non-negative decimal integer.");
const MALFORMED_TRANSFER_ENCODING_HTTP10: HeadError =
    HeadError::Malformed("Transfer-Encoding is not allowed in HTTP/1.0 requests.");
const MALFORMED_DUPLICATE_AUTHORIZATION: HeadError = HeadError::Malformed("More than one Authorization header.");
const MALFORMED_DUPLICATE_CONTENT_TYPE: HeadError = HeadError::Malformed("More than one Content-Type header.");
const MALFORMED_MISSING_HOST: HeadError = HeadError::Malformed("An HTTP/1.1 request must have a Host header.");
const MALFORMED_DUPLICATE_HOST: HeadError = HeadError::Malformed("More than one Host header.");

/// Parses the head at the start of `buf`, looking at no more than `max_head_bytes` of it.
///
/// `Ok(None)`: incomplete, read more. `TooLarge` once `buf` holds `max_head_bytes` or more
/// without a complete head within them: a head of exactly `max_head_bytes` is accepted.
/// Bytes after the head (a body, pipelined requests) are never looked at.
///
/// When several problems exist the first found wins, in this order: head syntax (httparse, in
/// byte order; then bare LF, target), Content-Length syntax and duplicates of singleton headers
/// (in header order), then framing (Content-Length with Transfer-Encoding; Transfer-Encoding on
/// HTTP/1.0; Transfer-Encoding other than one `chunked`), then the expectation.
pub fn parse_head(buf: &[u8], max_head_bytes: usize) -> Result<Option<RequestHead<'_>>, HeadError> {
    let window = &buf[..buf.len().min(max_head_bytes)];
    // Left uninitialised: httparse writes the slots it fills, and only those are read.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_REQUEST_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let head_len = match request.parse_with_uninit_headers(window, &mut slots) {
        Ok(httparse::Status::Complete(head_len)) => head_len,
        // The window is all of `buf` when it is shorter than the limit: then more may come.
        Ok(httparse::Status::Partial) if buf.len() < max_head_bytes => return Ok(None),
        Ok(httparse::Status::Partial) => return Err(HeadError::TooLarge),
        Err(error) => return Err(head_error(error)),
    };
    let (Some(method_str), Some(target), Some(minor_version)) = (request.method, request.path, request.version) else {
        return Err(MALFORMED_HEAD);
    };
    if has_bare_lf(&window[..head_len]) {
        return Err(MALFORMED_LINE_ENDING);
    }
    // Origin-form only: no absolute-form (`http://host/`), authority-form or asterisk-form.
    // httparse checked the target is UTF-8 without spaces or control bytes.
    if !target.starts_with('/') {
        return Err(MALFORMED_TARGET);
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));

    let mut content_length: Option<u64> = None;
    let mut transfer_encoding_headers: u32 = 0;
    let mut transfer_encoding_is_chunked = false;
    let mut connection_close = false;
    let mut connection_keep_alive = false;
    let mut expect_continue = false;
    let mut expect_unsupported = false;
    let mut authorization = None;
    let mut content_type = None;
    let mut host_headers: u8 = 0;
    let (mut origin, mut cors_request_method, mut cors_request_headers) = (None, None, None);
    for header in request.headers.iter() {
        let name = header.name;
        let value = header.value;
        if name.eq_ignore_ascii_case("content-length") {
            // A list (`5, 5`) or repeated headers are fine only when every value is the same.
            for element in value.split(|&byte| byte == b',') {
                let length = parse_content_length(trim(element))?;
                if content_length.is_some_and(|previous| previous != length) {
                    return Err(HeadError::ConflictingFraming);
                }
                content_length = Some(length);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding_headers += 1;
            transfer_encoding_is_chunked = trim(value).eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            for option in value.split(|&byte| byte == b',') {
                let option = trim(option);
                connection_close |= option.eq_ignore_ascii_case(b"close");
                connection_keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("expect") {
            // A list; empty elements (an empty value included) expect nothing.
            for expectation in value.split(|&byte| byte == b',') {
                let expectation = trim(expectation);
                if expectation.eq_ignore_ascii_case(b"100-continue") {
                    expect_continue = true;
                } else if !expectation.is_empty() {
                    expect_unsupported = true;
                }
            }
        } else if name.eq_ignore_ascii_case("authorization") {
            if authorization.replace(value).is_some() {
                return Err(MALFORMED_DUPLICATE_AUTHORIZATION);
            }
        } else if name.eq_ignore_ascii_case("content-type") {
            if content_type.replace(value).is_some() {
                return Err(MALFORMED_DUPLICATE_CONTENT_TYPE);
            }
        } else if name.eq_ignore_ascii_case("host") {
            host_headers = (host_headers + 1).min(2);
        } else if name.eq_ignore_ascii_case("origin") {
            origin = if origin.is_some() { Some(&b""[..]) } else { Some(value) };
        } else if name.eq_ignore_ascii_case("access-control-request-method") {
            cors_request_method = Some(value);
        } else if name.eq_ignore_ascii_case("access-control-request-headers") {
            cors_request_headers = Some(value);
        }
    }

    let framing = match (transfer_encoding_headers, content_length) {
        (0, None) => BodyFraming::None,
        (0, Some(length)) => BodyFraming::ContentLength(length),
        (_, Some(_)) => return Err(HeadError::ConflictingFraming),
        _ if minor_version == 0 => return Err(MALFORMED_TRANSFER_ENCODING_HTTP10),
        (1, None) if transfer_encoding_is_chunked => BodyFraming::Chunked,
        _ => return Err(HeadError::UnsupportedTransferEncoding),
    };
    if expect_unsupported {
        return Err(HeadError::UnsupportedExpectation);
    }
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
        host_headers,
        origin,
        cors_request_method,
        cors_request_headers,
    }))
}

fn head_error(error: httparse::Error) -> HeadError {
    match error {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        httparse::Error::HeaderName => MALFORMED_HEADER_NAME,
        httparse::Error::HeaderValue => MALFORMED_HEADER_VALUE,
        httparse::Error::NewLine => MALFORMED_LINE_ENDING,
        httparse::Error::Token => MALFORMED_REQUEST_LINE,
        httparse::Error::Version => MALFORMED_VERSION,
        httparse::Error::Status => MALFORMED_HEAD,
    }
}

/// An LF not preceded by CR. httparse accepts bare LF line endings (RFC 9112 §2.2 "MAY"); an
/// intermediary that does not would see different header lines, so they are refused. Eight bytes
/// at a time: each word is compared with itself shifted by one byte, its bytes' predecessors.
fn has_bare_lf(head: &[u8]) -> bool {
    const LOW_BITS: u64 = u64::from_le_bytes([0x7f; 8]);
    const LFS: u64 = u64::from_le_bytes([b'\n'; 8]);
    const CRS: u64 = u64::from_le_bytes([b'\r'; 8]);
    // The high bit of each zero byte of `word`, exactly (no carry crosses bytes).
    let zero_bytes = |word: u64| !(((word & LOW_BITS) + LOW_BITS) | word | LOW_BITS);
    let words = head.chunks_exact(8);
    let tail_start = head.len() - words.remainder().len();
    // The byte before the current word (none before the head: not a CR).
    let mut before = 0u64;
    for word in words {
        let word = u64::from_le_bytes(<[u8; 8]>::try_from(word).unwrap_or_default());
        let predecessors = (word << 8) | before;
        if zero_bytes(word ^ LFS) & !zero_bytes(predecessors ^ CRS) != 0 {
            return true;
        }
        before = word >> 56;
    }
    (tail_start..head.len()).any(|index| head[index] == b'\n' && (index == 0 || head[index - 1] != b'\r'))
}

/// Strips spaces and tabs at both ends.
fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&byte| byte != b' ' && byte != b'\t').unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|&byte| byte != b' ' && byte != b'\t').map_or(start, |last| last + 1);
    &bytes[start..end]
}

/// ASCII digits only (no sign, no inner spaces, not empty), overflow-checked into a u64.
fn parse_content_length(text: &[u8]) -> Result<u64, HeadError> {
    if text.is_empty() {
        return Err(MALFORMED_CONTENT_LENGTH);
    }
    text.iter().try_fold(0u64, |length, &byte| {
        if !byte.is_ascii_digit() {
            return Err(MALFORMED_CONTENT_LENGTH);
        }
        length
            .checked_mul(10)
            .and_then(|length| length.checked_add(u64::from(byte - b'0')))
            .ok_or(MALFORMED_CONTENT_LENGTH)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT_BYTES: usize = 32 * 1024;

    /// `head_len` of a complete head, `None` if incomplete, or the error.
    type HeadLenOutcome = Result<Option<usize>, HeadError>;

    fn parse(text: &str) -> Result<Option<RequestHead<'_>>, HeadError> {
        parse_head(text.as_bytes(), LIMIT_BYTES)
    }

    fn framing(text: &str) -> Result<BodyFraming, HeadError> {
        parse(text).map(|head| head.expect("complete head").framing)
    }

    // Goal: every field of a valid head comes out exactly, borrowed from the buffer.
    #[test]
    fn parses_every_field() {
        let text = "POST /v1/chat/completions?a=1&b=?2 HTTP/1.1\r\nHost: gw\r\nauthorization:  Bearer sk-1 \r\n\
                    Content-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"a\":\"bcde\"}";
        let expected = RequestHead {
            method: Method::Post,
            method_str: "POST",
            path: "/v1/chat/completions",
            query: "a=1&b=?2",
            minor_version: 1,
            head_len: text.len() - 12,
            framing: BodyFraming::ContentLength(12),
            keep_alive: true,
            expect_continue: false,
            authorization: Some(b"Bearer sk-1"),
            content_type: Some(b"application/json"),
            host_headers: 1,
            origin: None,
            cors_request_method: None,
            cors_request_headers: None,
        };
        assert_eq!(parse(text), Ok(Some(expected)));
    }

    // Goal: methods map to their variant, case-sensitively; any other token is `Other`.
    #[test]
    fn methods() {
        let cases = [
            ("GET", Method::Get),
            ("POST", Method::Post),
            ("PUT", Method::Put),
            ("DELETE", Method::Delete),
            ("HEAD", Method::Head),
            ("OPTIONS", Method::Options),
            ("PATCH", Method::Patch),
            ("get", Method::Other),
            ("TRACE", Method::Other),
            ("X-CUSTOM!", Method::Other),
        ];
        for (method, expected) in cases {
            let text = format!("{method} / HTTP/1.1\r\n\r\n");
            let head = parse(&text).unwrap().unwrap();
            assert_eq!((head.method, head.method_str), (expected, method));
        }
    }

    // Goal: the target splits at the first '?'; UTF-8 paths pass through undecoded.
    #[test]
    fn targets() {
        let cases: [(&[u8], &str, &str); 6] = [
            (b"/", "/", ""),
            (b"/v1/models", "/v1/models", ""),
            (b"/v1/models?", "/v1/models", ""),
            (b"/a?b?c", "/a", "b?c"),
            (b"/caf\xc3\xa9?q=%20", "/café", "q=%20"),
            (b"//double/slash#frag", "//double/slash#frag", ""),
        ];
        for (target, path, query) in cases {
            let text = [b"GET ", target, b" HTTP/1.1\r\n\r\n"].concat();
            let head = parse_head(&text, LIMIT_BYTES).unwrap().unwrap();
            assert_eq!((head.path, head.query), (path, query), "{target:?}");
        }
    }

    // Goal: framing follows Content-Length / Transfer-Encoding exactly, including equal repeats.
    #[test]
    fn framing_choices() {
        let cases = [
            ("GET / HTTP/1.1\r\n\r\n", BodyFraming::None),
            ("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", BodyFraming::ContentLength(0)),
            ("POST / HTTP/1.1\r\nContent-Length: 007\r\n\r\n", BodyFraming::ContentLength(7)),
            ("POST / HTTP/1.1\r\ncontent-length:\t42 \r\n\r\n", BodyFraming::ContentLength(42)),
            ("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", BodyFraming::ContentLength(5)),
            ("POST / HTTP/1.1\r\nContent-Length: 5 , 5,5\r\n\r\n", BodyFraming::ContentLength(5)),
            ("POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n", BodyFraming::ContentLength(u64::MAX)),
            ("POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\n", BodyFraming::ContentLength(3)),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", BodyFraming::Chunked),
            ("POST / HTTP/1.1\r\nTransfer-Encoding:  ChUnKeD \r\n\r\n", BodyFraming::Chunked),
        ];
        for (text, expected) in cases {
            assert_eq!(framing(text), Ok(expected), "{text:?}");
        }
    }

    // Goal: every smuggling-shaped or invalid head is refused with its exact reason.
    #[test]
    fn refuses_smuggling_shapes() {
        let cases = [
            // Content-Length together with Transfer-Encoding, in either order, whatever the TE.
            (
                "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                HeadError::ConflictingFraming,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                HeadError::ConflictingFraming,
            ),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nContent-Length: 0\r\n\r\n", HeadError::ConflictingFraming),
            (
                "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                HeadError::ConflictingFraming,
            ),
            // Differing Content-Lengths, as repeats or a list.
            ("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", HeadError::ConflictingFraming),
            ("POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n", HeadError::ConflictingFraming),
            (
                "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 05\r\nContent-Length: 6\r\n\r\n",
                HeadError::ConflictingFraming,
            ),
            // Content-Length syntax.
            ("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", MALFORMED_CONTENT_LENGTH),
            ("POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n", MALFORMED_CONTENT_LENGTH),
            ("POST / HTTP/1.1\r\nContent-Length: 5 5\r\n\r\n", MALFORMED_CONTENT_LENGTH),
            ("POST / HTTP/1.1\r\nContent-Length: \r\n\r\n", MALFORMED_CONTENT_LENGTH),
            ("POST / HTTP/1.1\r\nContent-Length: 5,\r\n\r\n", MALFORMED_CONTENT_LENGTH),
            ("POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n", MALFORMED_CONTENT_LENGTH),
            ("POST / HTTP/1.1\r\nContent-Length: 5.0\r\n\r\n", MALFORMED_CONTENT_LENGTH),
            ("POST / HTTP/1.1\r\nContent-Length: \u{663}\r\n\r\n", MALFORMED_CONTENT_LENGTH),
            ("POST / HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n", MALFORMED_CONTENT_LENGTH),
            ("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", MALFORMED_CONTENT_LENGTH),
            ("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: x\r\n\r\n", MALFORMED_CONTENT_LENGTH),
            // Transfer-Encoding other than exactly one `chunked`.
            ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", HeadError::UnsupportedTransferEncoding),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", HeadError::UnsupportedTransferEncoding),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                HeadError::UnsupportedTransferEncoding,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
                HeadError::UnsupportedTransferEncoding,
            ),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n", HeadError::UnsupportedTransferEncoding),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", HeadError::UnsupportedTransferEncoding),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n", HeadError::UnsupportedTransferEncoding),
            ("POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n", HeadError::UnsupportedTransferEncoding),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", HeadError::UnsupportedTransferEncoding),
            // Transfer-Encoding on HTTP/1.0.
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", MALFORMED_TRANSFER_ENCODING_HTTP10),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: gzip\r\n\r\n", MALFORMED_TRANSFER_ENCODING_HTTP10),
            // Header syntax httparse refuses: space before the colon, line folding, control bytes.
            ("POST / HTTP/1.1\r\nContent-Length : 5\r\n\r\n", MALFORMED_HEADER_NAME),
            ("POST / HTTP/1.1\r\nTransfer-Encoding\t: chunked\r\n\r\n", MALFORMED_HEADER_NAME),
            ("GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", MALFORMED_HEADER_NAME),
            ("GET / HTTP/1.1\r\n: empty-name\r\n\r\n", MALFORMED_HEADER_NAME),
            ("GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n", MALFORMED_HEADER_NAME),
            ("GET / HTTP/1.1\r\n Transfer-Encoding: chunked\r\n\r\n", MALFORMED_HEADER_NAME),
            ("GET / HTTP/1.1\r\nX-A: a\0b\r\n\r\n", MALFORMED_HEADER_VALUE),
            ("GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n", MALFORMED_HEADER_VALUE),
            ("GET / HTTP/1.1\r\nX-A: a\x7fb\r\n\r\n", MALFORMED_HEADER_VALUE),
            // Line endings: bare LF anywhere in the head, bare CR.
            ("GET / HTTP/1.1\nHost: a\r\n\r\n", MALFORMED_LINE_ENDING),
            ("GET / HTTP/1.1\r\nHost: a\n\r\n", MALFORMED_LINE_ENDING),
            ("GET / HTTP/1.1\r\nX: a\nTransfer-Encoding: chunked\r\n\r\n", MALFORMED_LINE_ENDING),
            ("GET / HTTP/1.1\r\n\n", MALFORMED_LINE_ENDING),
            ("\nGET / HTTP/1.1\r\n\r\n", MALFORMED_LINE_ENDING),
            ("\r\n\nGET / HTTP/1.1\r\n\r\n", MALFORMED_LINE_ENDING),
            ("GET / HTTP/1.1\rX", MALFORMED_LINE_ENDING),
            // Request line: targets other than origin-form, versions, spacing, method tokens.
            ("GET http://example.com/ HTTP/1.1\r\n\r\n", MALFORMED_TARGET),
            ("OPTIONS * HTTP/1.1\r\n\r\n", MALFORMED_TARGET),
            ("CONNECT example.com:443 HTTP/1.1\r\n\r\n", MALFORMED_TARGET),
            ("GET ?q HTTP/1.1\r\n\r\n", MALFORMED_TARGET),
            ("GET / HTTP/2.0\r\n\r\n", MALFORMED_VERSION),
            ("GET / HTTP/1.2\r\n\r\n", MALFORMED_VERSION),
            ("GET / http/1.1\r\n\r\n", MALFORMED_VERSION),
            ("GET /\r\n\r\n", MALFORMED_REQUEST_LINE),
            ("GET  / HTTP/1.1\r\n\r\n", MALFORMED_REQUEST_LINE),
            ("GET / x HTTP/1.1\r\n\r\n", MALFORMED_VERSION),
            ("G(T / HTTP/1.1\r\n\r\n", MALFORMED_REQUEST_LINE),
            (" GET / HTTP/1.1\r\n\r\n", MALFORMED_REQUEST_LINE),
            ("GET /a\tb HTTP/1.1\r\n\r\n", MALFORMED_REQUEST_LINE),
            // Duplicated singletons the gateway acts on.
            (
                "GET / HTTP/1.1\r\nAuthorization: Bearer a\r\nauthorization: Bearer b\r\n\r\n",
                MALFORMED_DUPLICATE_AUTHORIZATION,
            ),
            ("POST / HTTP/1.1\r\nContent-Type: a/b\r\nContent-Type: a/b\r\n\r\n", MALFORMED_DUPLICATE_CONTENT_TYPE),
            // Expectations other than 100-continue.
            ("POST / HTTP/1.1\r\nExpect: something\r\n\r\n", HeadError::UnsupportedExpectation),
            ("POST / HTTP/1.1\r\nExpect: 100-continue, x\r\n\r\n", HeadError::UnsupportedExpectation),
            ("POST / HTTP/1.1\r\nExpect: 100-continue\r\nExpect: 200-ok\r\n\r\n", HeadError::UnsupportedExpectation),
            ("POST / HTTP/1.0\r\nExpect: something\r\n\r\n", HeadError::UnsupportedExpectation),
            // Framing is judged before the expectation.
            ("POST / HTTP/1.1\r\nExpect: x\r\nTransfer-Encoding: gzip\r\n\r\n", HeadError::UnsupportedTransferEncoding),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text), Err(expected), "{text:?}");
        }
    }

    // Goal: a target that is not UTF-8 is refused (httparse checks, we rely on it).
    #[test]
    fn refuses_non_utf8_target() {
        assert_eq!(parse_head(b"GET /\xff HTTP/1.1\r\n\r\n", LIMIT_BYTES), Err(MALFORMED_REQUEST_LINE));
        assert_eq!(parse_head(b"GET /\xc3 HTTP/1.1\r\n\r\n", LIMIT_BYTES), Err(MALFORMED_REQUEST_LINE));
    }

    // Goal: keep-alive follows the version and the Connection option lists, case-insensitively.
    #[test]
    fn keep_alive_rules() {
        let cases = [
            ("GET / HTTP/1.1\r\n\r\n", true),
            ("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
            ("GET / HTTP/1.1\r\nConnection: CLOSE\r\n\r\n", false),
            ("GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n", true),
            ("GET / HTTP/1.1\r\nConnection: Keep-Alive, Upgrade\r\n\r\n", true),
            ("GET / HTTP/1.1\r\nConnection: upgrade, Close\r\n\r\n", false),
            ("GET / HTTP/1.1\r\nConnection: upgrade,close\r\n\r\n", false),
            ("GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n", false),
            ("GET / HTTP/1.1\r\nConnection: closed\r\n\r\n", true),
            ("GET / HTTP/1.1\r\nConnection:\r\n\r\n", true),
            ("GET / HTTP/1.0\r\n\r\n", false),
            ("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
            ("GET / HTTP/1.0\r\nConnection: Keep-Alive, Upgrade\r\n\r\n", true),
            ("GET / HTTP/1.0\r\nConnection: Upgrade\r\nConnection: KEEP-ALIVE\r\n\r\n", true),
            ("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", false),
            ("GET / HTTP/1.0\r\nConnection: keep-alives\r\n\r\n", false),
            ("GET / HTTP/1.0\r\nKeep-Alive: timeout=5\r\n\r\n", false),
        ];
        for (text, keep_alive) in cases {
            assert_eq!(parse(text).unwrap().unwrap().keep_alive, keep_alive, "{text:?}");
        }
    }

    // Goal: the Host rule: HTTP/1.1 needs exactly one Host header, HTTP/1.0 at most one; the
    // name is case-insensitive and an empty value still counts as present.
    #[test]
    fn host_rules() {
        let cases = [
            ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", Ok(())),
            ("GET / HTTP/1.1\r\nhOST: a\r\n\r\n", Ok(())),
            ("GET / HTTP/1.1\r\nHost:\r\n\r\n", Ok(())),
            ("GET / HTTP/1.1\r\n\r\n", Err(MALFORMED_MISSING_HOST)),
            ("GET / HTTP/1.1\r\nX-Host: a\r\n\r\n", Err(MALFORMED_MISSING_HOST)),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", Err(MALFORMED_DUPLICATE_HOST)),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\nhost: b\r\nHOST: c\r\n\r\n", Err(MALFORMED_DUPLICATE_HOST)),
            ("GET / HTTP/1.0\r\n\r\n", Ok(())),
            ("GET / HTTP/1.0\r\nHost: a\r\n\r\n", Ok(())),
            ("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", Err(MALFORMED_DUPLICATE_HOST)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text).unwrap().unwrap().check_host(), expected, "{text:?}");
        }
    }

    // Goal: `expect_continue` is set only by 100-continue on HTTP/1.1; empty Expect lists are fine.
    #[test]
    fn expect_rules() {
        let cases = [
            ("POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\n", false),
            ("POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n", true),
            ("POST / HTTP/1.1\r\nexpect: 100-Continue\r\nTransfer-Encoding: chunked\r\n\r\n", true),
            ("POST / HTTP/1.1\r\nExpect: 100-continue, 100-continue\r\n\r\n", true),
            ("POST / HTTP/1.1\r\nExpect:\r\n\r\n", false),
            ("POST / HTTP/1.1\r\nExpect: ,\r\n\r\n", false),
            ("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n", false),
        ];
        for (text, expect_continue) in cases {
            assert_eq!(parse(text).unwrap().unwrap().expect_continue, expect_continue, "{text:?}");
        }
    }

    // Goal: a head split at any byte is incomplete (`Ok(None)`) until its last byte arrives,
    // then parses with `head_len` equal to its full length; the same with leading CRLFs.
    #[test]
    fn incomplete_until_the_blank_line() {
        let heads: [&[u8]; 3] = [
            b"GET /v1/models HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer x\r\n\r\n",
            b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n",
            b"\r\n\r\nGET / HTTP/1.0\r\n\r\n",
        ];
        for text in heads {
            for cut in 0..text.len() {
                assert_eq!(parse_head(&text[..cut], 1024), Ok(None), "{text:?} cut at {cut}");
            }
            assert_eq!(parse_head(text, 1024).unwrap().unwrap().head_len, text.len(), "{text:?}");
        }
    }

    // Goal: leading empty CRLF lines are skipped and counted in `head_len`.
    #[test]
    fn leading_empty_lines() {
        let head = parse("\r\n\r\nGET /x HTTP/1.1\r\n\r\nrest").unwrap().unwrap();
        assert_eq!((head.path, head.head_len), ("/x", 23));
    }

    // Goal: pipelined requests in one buffer: each head_len ends exactly at its own head, and
    // walking the buffer by head_len plus the body yields every request in order.
    #[test]
    fn pipelined_heads() {
        let text = "GET /a HTTP/1.1\r\n\r\n\
                    POST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
                    POST /c?x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
                    GET /d HTTP/1.1\r\nConnection: close\r\n\r\n";
        let expected = [
            ("/a", "", 19, BodyFraming::None, 0),
            ("/b", "", 39, BodyFraming::ContentLength(5), 5),
            ("/c", "x", 50, BodyFraming::Chunked, 5),
            ("/d", "", 38, BodyFraming::None, 0),
        ];
        let mut offset = 0;
        for (path, query, head_len, framing, body_len) in expected {
            let head = parse(&text[offset..]).unwrap().unwrap();
            assert_eq!((head.path, head.query, head.head_len, head.framing), (path, query, head_len, framing));
            offset += head_len + body_len;
        }
        assert_eq!(offset, text.len());
    }

    // Goal: the size limit is exact: a head of exactly the limit passes, one byte more is 431;
    // a partial head is `Ok(None)` one byte short of the limit and TooLarge at it; bytes after a
    // complete head never count.
    #[test]
    fn head_limit_is_exact() {
        let head = b"GET / HTTP/1.1\r\nX: aaaaaaaaaa\r\n\r\n";
        let len = head.len();
        let with_body = [&head[..], &[b'b'; 100][..]].concat();
        let cases: [(&[u8], usize, HeadLenOutcome); 8] = [
            (head, len, Ok(Some(len))),
            (head, len - 1, Err(HeadError::TooLarge)),
            (head, len + 1, Ok(Some(len))),
            (&with_body, len, Ok(Some(len))),
            (&head[..len - 1], len, Ok(None)),
            (&head[..len - 1], len - 1, Err(HeadError::TooLarge)),
            (&head[..10], 11, Ok(None)),
            (&head[..10], 10, Err(HeadError::TooLarge)),
        ];
        for (buf, max_head_bytes, expected) in cases {
            let result = parse_head(buf, max_head_bytes).map(|head| head.map(|head| head.head_len));
            assert_eq!(result, expected, "{} bytes, limit {max_head_bytes}", buf.len());
        }
        // Leading CRLFs count against the limit.
        let padded = [&b"\r\n"[..], head].concat();
        assert_eq!(parse_head(&padded, len + 1), Err(HeadError::TooLarge));
        assert_eq!(parse_head(&padded, len + 2).unwrap().unwrap().head_len, len + 2);
    }

    // Goal: exactly MAX_REQUEST_HEADERS header lines pass; one more is TooManyHeaders.
    #[test]
    fn header_count_limit() {
        let head = |count: usize| {
            let lines: String = (0..count).map(|index| format!("X-{index}: v\r\n")).collect();
            format!("GET / HTTP/1.1\r\n{lines}\r\n")
        };
        let at_limit = head(MAX_REQUEST_HEADERS);
        assert_eq!(parse(&at_limit).unwrap().unwrap().head_len, at_limit.len());
        assert_eq!(parse(&head(MAX_REQUEST_HEADERS + 1)), Err(HeadError::TooManyHeaders));
    }

    // Goal: the word-at-a-time bare-LF scan agrees with the byte-by-byte definition for every
    // length and every position of an LF, with and without its CR, word boundaries included.
    #[test]
    fn bare_lf_scan_matches_the_definition() {
        let naive = |head: &[u8]| {
            head.first() == Some(&b'\n') || head.windows(2).any(|pair| pair[1] == b'\n' && pair[0] != b'\r')
        };
        for len in 0..40 {
            for at in 0..len {
                for with_cr in [false, true] {
                    let mut head = vec![b'a'; len];
                    head[at] = b'\n';
                    if with_cr && at > 0 {
                        head[at - 1] = b'\r';
                    }
                    assert_eq!(has_bare_lf(&head), naive(&head), "{head:?}");
                }
            }
            let clean: Vec<u8> = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n".iter().copied().cycle().take(len).collect();
            assert_eq!(has_bare_lf(&clean), naive(&clean), "{clean:?}");
        }
    }
}
