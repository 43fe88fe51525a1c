//! The quick road through an upstream's response head, for heads written the plain way:
//! `HTTP/1.0` or `HTTP/1.1`, a three-digit status, a reason of visible ASCII, header lines of
//! a token name, a colon and a visible-ASCII value, every line ending in CRLF. Such a head is
//! read in one pass, a word at a time through the values, and only the headers the client
//! reads (`HeaderKind`) are kept.
//!
//! Owns only that recognition. Every head it accepts, httparse accepts too and reads the same
//! (version, status, each header's value with the whitespace around it trimmed); anything else
//! (bare LF, obsolete line folding, bytes above 0x7E, a partial head, more headers than the
//! client's httparse slots, ...) it declines, and the client hands the head to httparse, which
//! decides whether to refuse it. So it never refuses anything itself, never allocates and never
//! panics.

use crate::limits::MAX_REQUEST_HEADERS;
use crate::words::skip_unmarked_words;

/// The response headers the client reads.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum HeaderKind {
    ContentLength,
    TransferEncoding,
    Connection,
    RetryAfter,
    ContentType,
}

impl HeaderKind {
    /// The kind of the header named `name` (any case), if the client reads it. `name` is a
    /// token (both parsers check that), so setting bit 0x20 of each byte folds its case exactly:
    /// among token bytes only the letters change, and `-` already has the bit.
    #[inline]
    pub fn of(name: &[u8]) -> Option<HeaderKind> {
        // The five names differ in length: the length picks the one to compare.
        let (kind, lower): (HeaderKind, &[u8]) = match name.len() {
            14 => (HeaderKind::ContentLength, b"content-length"),
            17 => (HeaderKind::TransferEncoding, b"transfer-encoding"),
            10 => (HeaderKind::Connection, b"connection"),
            11 => (HeaderKind::RetryAfter, b"retry-after"),
            12 => (HeaderKind::ContentType, b"content-type"),
            _ => return None,
        };
        // Eight bytes at a time, the last eight overlapping (every name is over eight long).
        let folded_word_at = |at: usize| {
            let word =
                |bytes: &[u8]| bytes.get(at..).and_then(<[u8]>::first_chunk::<8>).map(|w| u64::from_le_bytes(*w));
            word(name).map(|w| w | 0x2020_2020_2020_2020) == word(lower)
        };
        let mut at = 0;
        while at + 8 < name.len() {
            if !folded_word_at(at) {
                return None;
            }
            at += 8;
        }
        folded_word_at(name.len() - 8).then_some(kind)
    }
}

/// The most headers of the kinds the client reads that a plain head may hold; a head with more
/// goes to httparse.
const READ_HEADERS_MAX: usize = 8;

/// A head recognised as plain.
#[derive(Copy, Clone, Debug)]
pub struct PlainHead<'b> {
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub status: u16,
    /// Bytes of the head, its blank line included.
    pub head_len: usize,
    /// The head as text (a plain head is ASCII).
    text: &'b str,
    /// The headers read: kind and value span in `text`.
    read: [(HeaderKind, u32, u32); READ_HEADERS_MAX],
    read_count: usize,
}

impl<'b> PlainHead<'b> {
    /// The headers of the kinds the client reads, in order, each value with the spaces and
    /// tabs around it trimmed (as httparse gives it; a plain value holds no other whitespace).
    pub fn read_headers(&self) -> impl Iterator<Item = (HeaderKind, &'b str)> + '_ {
        let text = self.text;
        let read = self.read.get(..self.read_count).unwrap_or(&[]);
        read.iter().map(move |&(kind, start, end)| (kind, text.get(start as usize..end as usize).unwrap_or("")))
    }
}

/// Whether `byte` may be in a header name (an RFC 9110 token character).
const fn is_token_byte(byte: u8) -> bool {
    matches!(byte,
        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9'
        | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

const TOKEN_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = is_token_byte(byte as u8);
        byte += 1;
    }
    table
};

/// The high bit of each byte of `word` (read little-endian) below 0x20 or above 0x7E: the
/// bytes that end a plain value (CR) or that a plain value cannot hold. The lowest set bit is
/// exact (a borrow only flags bytes above one that really matched).
#[inline(always)]
fn unplain_bytes(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let control = word.wrapping_sub(ONES * 0x20);
    let delete = (word ^ (ONES * 0x7f)).wrapping_sub(ONES);
    ((control | delete) & !word & HIGHS) | (word & HIGHS)
}

/// Where the line of visible ASCII, spaces and tabs starting at `at` ends: the index of its
/// CR, which an LF follows. `None` for any other byte below 0x20 or above 0x7E, or no CRLF.
#[inline(always)]
fn plain_line_end(buffer: &[u8], mut at: usize) -> Option<usize> {
    loop {
        at = skip_unmarked_words(buffer, at, unplain_bytes);
        match *buffer.get(at)? {
            b'\r' => return (buffer.get(at + 1) == Some(&b'\n')).then_some(at),
            b'\t' => at += 1,
            0x20..=0x7e => at += 1,
            _ => return None,
        }
    }
}

/// The span `start..end` of `buffer` without the spaces and tabs at either end.
fn trim_blanks(buffer: &[u8], mut start: usize, mut end: usize) -> (u32, u32) {
    let is_blank = |at: usize| matches!(buffer.get(at), Some(b' ' | b'\t'));
    while start < end && is_blank(start) {
        start += 1;
    }
    while end > start && is_blank(end - 1) {
        end -= 1;
    }
    (start as u32, end as u32)
}

/// The head at the start of `buffer` if it is complete and plain (see the module doc).
pub fn plain_head(buffer: &[u8]) -> Option<PlainHead<'_>> {
    let minor_version = match buffer.first_chunk::<9>()? {
        b"HTTP/1.1 " => 1,
        b"HTTP/1.0 " => 0,
        _ => return None,
    };
    let mut status = 0u16;
    for &digit in buffer.get(9..12)? {
        if !digit.is_ascii_digit() {
            return None;
        }
        status = status * 10 + u16::from(digit - b'0');
    }
    if buffer.get(12) != Some(&b' ') {
        return None;
    }
    let mut at = plain_line_end(buffer, 13)? + 2;
    // Longer heads are not plain (offsets in 32 bits).
    let buffer = buffer.get(..buffer.len().min(u32::MAX as usize))?;
    let mut head = PlainHead {
        minor_version,
        status,
        head_len: 0,
        text: "",
        read: [(HeaderKind::ContentLength, 0, 0); READ_HEADERS_MAX],
        read_count: 0,
    };
    let mut headers = 0usize;
    loop {
        let name_start = at;
        while TOKEN_BYTES[usize::from(*buffer.get(at)?)] {
            at += 1;
        }
        if at == name_start {
            // The blank line, or a line that is no header.
            if buffer.get(at..at + 2)? != b"\r\n" {
                return None;
            }
            head.head_len = at + 2;
            head.text = std::str::from_utf8(buffer.get(..head.head_len)?).ok()?;
            return Some(head);
        }
        if buffer.get(at) != Some(&b':') {
            return None;
        }
        headers += 1;
        if headers > MAX_REQUEST_HEADERS {
            return None;
        }
        let name = buffer.get(name_start..at)?;
        let value_start = at + 1;
        let line_end = plain_line_end(buffer, value_start)?;
        if let Some(kind) = HeaderKind::of(name) {
            let slot = head.read.get_mut(head.read_count)?;
            let (start, end) = trim_blanks(buffer, value_start, line_end);
            *slot = (kind, start, end);
            head.read_count += 1;
        }
        at = line_end + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A head as both readers compare it: version, status, length and the headers read.
    type Read = (u8, u16, usize, Vec<(HeaderKind, Vec<u8>)>);

    /// What httparse reads of `buffer`, in the shape `plain_head` gives: only complete heads.
    fn by_httparse(buffer: &[u8]) -> Option<Read> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_REQUEST_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(len)) = response.parse(buffer) else { return None };
        let read = response
            .headers
            .iter()
            .filter_map(|header| HeaderKind::of(header.name.as_bytes()).map(|kind| (kind, header.value.to_vec())))
            .collect();
        Some((response.version?, response.code?, len, read))
    }

    fn by_plain(buffer: &[u8]) -> Option<Read> {
        let head = plain_head(buffer)?;
        let read = head.read_headers().map(|(kind, value)| (kind, value.as_bytes().to_vec())).collect();
        Some((head.minor_version, head.status, head.head_len, read))
    }

    const HEADS: [&[u8]; 6] = [
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 406\r\ndate: Thu, 03 Dec 2026 13:53:13 GMT\r\nx-request-id: sbx-0-1\r\n\r\n{}",
        b"HTTP/1.0 429 Too Many Requests\r\nRetry-After:\t7 \r\nConnection: keep-alive, close\r\nX-Empty:\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream; charset=utf-8\r\n\r\n",
        b"HTTP/1.1 503 \r\ncontent-length: 0\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nx-long-header-value: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa bbbbbbbbbbbbbbbbbbbb\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
    ];

    // Goal: every plain head reads exactly as httparse reads it.
    #[test]
    fn plain_heads_read_as_httparse_reads_them() {
        for head in HEADS {
            assert!(plain_head(head).is_some(), "{}", String::from_utf8_lossy(head));
            assert_eq!(by_plain(head), by_httparse(head), "{}", String::from_utf8_lossy(head));
        }
    }

    // Goal: whatever the recogniser accepts among every prefix and every one-byte edit of the
    // heads, httparse accepts and reads the same; a refusal is always httparse's to make.
    #[test]
    fn accepts_only_what_httparse_reads_the_same() {
        let edits = b"\r\n\t :\x7f\x80\x00aZ0-,";
        let mut accepted = 0;
        for head in HEADS {
            for len in 0..head.len() {
                if let Some(plain) = by_plain(&head[..len]) {
                    assert_eq!(Some(plain), by_httparse(&head[..len]));
                }
            }
            for at in 0..head.len() {
                for &byte in edits {
                    let mut edited = head.to_vec();
                    edited[at] = byte;
                    if let Some(plain) = by_plain(&edited) {
                        accepted += 1;
                        assert_eq!(Some(plain), by_httparse(&edited), "{}", String::from_utf8_lossy(&edited));
                    }
                }
            }
        }
        assert!(accepted > 500, "{accepted}");
    }

    // Goal: heads that are not plain are declined (httparse then decides), more headers than
    // the slots included.
    #[test]
    fn declines_what_is_not_plain() {
        let many = format!("HTTP/1.1 200 OK\r\n{}\r\n", "a: b\r\n".repeat(MAX_REQUEST_HEADERS + 1));
        let read_many = format!("HTTP/1.1 200 OK\r\n{}\r\n", "connection: x\r\n".repeat(READ_HEADERS_MAX + 1));
        let declined: [&[u8]; 10] = [
            b"HTTP/1.1 200 OK\nContent-Length: 1\n\n",
            b"\r\nHTTP/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 200\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nA : b\r\n\r\n",
            b"HTTP/1.1 200 \xc3\xa9\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nA: \xc3\xa9\r\n\r\n",
            b"HTTP/2.0 200 OK\r\n\r\n",
            many.as_bytes(),
            read_many.as_bytes(),
        ];
        for head in declined {
            assert!(plain_head(head).is_none(), "{}", String::from_utf8_lossy(head));
        }
    }
}
