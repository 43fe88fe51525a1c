//! Incremental decoding of a chunked body (RFC 9112 §7.1), byte-exact and bounded.
//!
//! Owns the chunked wire format only: bytes may arrive split anywhere (inside a size line, a
//! CRLF, chunk data or a trailer) and the decoder keeps its place between calls. Extensions and
//! trailer fields are accepted and ignored but bounded in size; bare LFs, control bytes, bad hex,
//! size overflow, missing CRLFs after data and payloads over the body limit are refused. Once the
//! body ends, `consumed` stops exactly after its last CRLF, so pipelined bytes stay for the next
//! request. It never allocates (payload goes into the caller's `Vec`) and never looks past the
//! end of the body.

use crate::limits::{CHUNKED_MAX_SIZE_LINE_BYTES, CHUNKED_MAX_TRAILER_BYTES};

/// Most hex digits in a chunk size (leading zeros count); 16 digits always fit a u64.
const MAX_SIZE_HEX_DIGITS: u8 = 16;

const MALFORMED_SIZE: ChunkedError = ChunkedError::Malformed("Chunked body: a chunk size is not valid hex.");
const MALFORMED_SIZE_TOO_LONG: ChunkedError =
    ChunkedError::Malformed("Chunked body: a chunk size has more than 16 hex digits.");
const MALFORMED_SIZE_LINE_TOO_LONG: ChunkedError =
    ChunkedError::Malformed("Chunked body: a chunk-size line (with extensions) is too long.");
const MALFORMED_BARE_LF: ChunkedError = ChunkedError::Malformed("Chunked body: line endings must be CRLF.");
const MALFORMED_CONTROL_BYTE: ChunkedError =
    ChunkedError::Malformed("Chunked body: a control byte appears in a chunk extension or trailer.");
const MALFORMED_DATA_END: ChunkedError = ChunkedError::Malformed("Chunked body: chunk data must be followed by CRLF.");
const MALFORMED_TRAILERS_TOO_LONG: ChunkedError =
    ChunkedError::Malformed("Chunked body: the trailer section is too long.");

/// Why a chunked body is refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ChunkedError {
    /// The payload would exceed the decoder's byte limit (413 for a request body).
    TooLarge,
    /// Not valid chunked framing (400 and close for a request body).
    Malformed(&'static str),
}

/// What one `decode` call did.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the input used; on `done`, exactly up to the end of the body.
    pub consumed: usize,
    /// The final CRLF of the trailer section was consumed; the body is complete.
    pub done: bool,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size (`digits` read so far).
    SizeDigits { digits: u8 },
    /// Spaces or tabs after the size digits, before `;` or CR.
    SizeWhitespace,
    /// Inside chunk extensions, until CR.
    Extensions,
    /// Saw the CR ending a size line; expect LF.
    SizeLf,
    /// Copying `remaining` payload bytes.
    Data,
    /// Payload done; expect CR.
    DataCr,
    /// Expect the LF after the payload's CR.
    DataLf,
    /// After the last chunk: at the start of a trailer line or of the final CRLF.
    TrailerLineStart,
    /// Inside a trailer field line, until CR.
    TrailerLine,
    /// Saw a CR in the trailer section; expect LF. `ends_body`: the line was empty.
    TrailerLf { ends_body: bool },
    /// The body is complete; nothing more is consumed.
    Done,
    /// An error was returned; every later call returns it again.
    Failed(ChunkedError),
}

/// Incremental decoder of one chunked body; create one per body.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: State,
    /// Size of the chunk whose size line is being read.
    chunk_size: u64,
    /// Payload bytes of the current chunk not yet copied.
    remaining: u64,
    /// Bytes of the current size line so far (CRLF not counted).
    size_line_bytes: usize,
    /// Bytes of the trailer section so far.
    trailer_bytes: usize,
    /// Payload bytes announced by all size lines read so far.
    announced_bytes: u64,
    max_body_bytes: u64,
}

impl ChunkedDecoder {
    /// A decoder for one body whose payload may total at most `max_body_bytes`.
    pub fn new(max_body_bytes: usize) -> Self {
        ChunkedDecoder {
            state: State::SizeDigits { digits: 0 },
            chunk_size: 0,
            remaining: 0,
            size_line_bytes: 0,
            trailer_bytes: 0,
            announced_bytes: 0,
            max_body_bytes: max_body_bytes as u64,
        }
    }

    /// Decodes as much of `input` as possible, appending payload bytes to `out`. May be called
    /// repeatedly as bytes arrive; `input` is the bytes not consumed before plus any new ones.
    /// Once done, `consumed` stops exactly after the final CRLF of the trailer section so
    /// pipelined bytes after it are left for the next request; later calls consume nothing.
    /// After an error, later calls return the same error.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Progress, ChunkedError> {
        let mut position = 0;
        while position < input.len() {
            match self.state {
                State::Done => break,
                State::Failed(error) => return Err(error),
                State::Data => {
                    let available = input.len() - position;
                    // `take` is at most `available`, a usize, so the cast back is exact.
                    let take = self.remaining.min(available as u64) as usize;
                    out.extend_from_slice(&input[position..position + take]);
                    position += take;
                    self.remaining -= take as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                }
                _ => {
                    let byte = input[position];
                    position += 1;
                    if let Err(error) = self.step(byte) {
                        self.state = State::Failed(error);
                        return Err(error);
                    }
                }
            }
        }
        match self.state {
            State::Failed(error) => Err(error),
            state => Ok(Progress { consumed: position, done: state == State::Done }),
        }
    }

    /// Advances the state machine by one framing byte (never called in `Data`).
    fn step(&mut self, byte: u8) -> Result<(), ChunkedError> {
        match self.state {
            State::SizeDigits { digits } => {
                self.count_size_line_byte(byte)?;
                if let Some(value) = hex_value(byte) {
                    if digits == MAX_SIZE_HEX_DIGITS {
                        return Err(MALFORMED_SIZE_TOO_LONG);
                    }
                    // Cannot overflow within 16 digits; checked all the same.
                    self.chunk_size = self
                        .chunk_size
                        .checked_mul(16)
                        .and_then(|size| size.checked_add(u64::from(value)))
                        .ok_or(MALFORMED_SIZE_TOO_LONG)?;
                    // A size only grows with more digits: refuse as soon as it passes the limit.
                    if self.announced_bytes.saturating_add(self.chunk_size) > self.max_body_bytes {
                        return Err(ChunkedError::TooLarge);
                    }
                    self.state = State::SizeDigits { digits: digits + 1 };
                    return Ok(());
                }
                if digits == 0 {
                    return Err(if byte == b'\n' { MALFORMED_BARE_LF } else { MALFORMED_SIZE });
                }
                self.after_size(byte)?;
            }
            State::SizeWhitespace => {
                self.count_size_line_byte(byte)?;
                self.after_size(byte)?;
            }
            State::Extensions => {
                self.count_size_line_byte(byte)?;
                match byte {
                    b'\r' => self.state = State::SizeLf,
                    b'\n' => return Err(MALFORMED_BARE_LF),
                    _ if is_control(byte) => return Err(MALFORMED_CONTROL_BYTE),
                    _ => {}
                }
            }
            State::SizeLf => {
                if byte != b'\n' {
                    return Err(MALFORMED_BARE_LF);
                }
                self.size_line_bytes = 0;
                // The digits already kept the running total within the limit.
                self.announced_bytes += self.chunk_size;
                if self.chunk_size == 0 {
                    self.state = State::TrailerLineStart;
                } else {
                    self.remaining = self.chunk_size;
                    self.chunk_size = 0;
                    self.state = State::Data;
                }
            }
            State::DataCr => {
                if byte != b'\r' {
                    return Err(if byte == b'\n' { MALFORMED_BARE_LF } else { MALFORMED_DATA_END });
                }
                self.state = State::DataLf;
            }
            State::DataLf => {
                if byte != b'\n' {
                    return Err(MALFORMED_DATA_END);
                }
                self.state = State::SizeDigits { digits: 0 };
            }
            State::TrailerLineStart | State::TrailerLine => {
                self.count_trailer_byte()?;
                let line_start = self.state == State::TrailerLineStart;
                match byte {
                    b'\r' => self.state = State::TrailerLf { ends_body: line_start },
                    b'\n' => return Err(MALFORMED_BARE_LF),
                    _ if is_control(byte) => return Err(MALFORMED_CONTROL_BYTE),
                    _ => self.state = State::TrailerLine,
                }
            }
            State::TrailerLf { ends_body } => {
                self.count_trailer_byte()?;
                if byte != b'\n' {
                    return Err(MALFORMED_BARE_LF);
                }
                self.state = if ends_body { State::Done } else { State::TrailerLineStart };
            }
            State::Data | State::Done | State::Failed(_) => unreachable!("decode handles {:?}", self.state),
        }
        Ok(())
    }

    /// The byte after a size's digits (or after whitespace following them): whitespace, the
    /// start of extensions, or the CR ending the line.
    fn after_size(&mut self, byte: u8) -> Result<(), ChunkedError> {
        self.state = match byte {
            b' ' | b'\t' => State::SizeWhitespace,
            b';' => State::Extensions,
            b'\r' => State::SizeLf,
            b'\n' => return Err(MALFORMED_BARE_LF),
            _ => return Err(MALFORMED_SIZE),
        };
        Ok(())
    }

    /// Counts one byte of a size line (not its CR's LF); refuses a line past the bound.
    fn count_size_line_byte(&mut self, byte: u8) -> Result<(), ChunkedError> {
        if byte != b'\r' {
            self.size_line_bytes += 1;
            if self.size_line_bytes > CHUNKED_MAX_SIZE_LINE_BYTES {
                return Err(MALFORMED_SIZE_LINE_TOO_LONG);
            }
        }
        Ok(())
    }

    fn count_trailer_byte(&mut self) -> Result<(), ChunkedError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > CHUNKED_MAX_TRAILER_BYTES {
            return Err(MALFORMED_TRAILERS_TOO_LONG);
        }
        Ok(())
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Control bytes other than HTAB (CR and LF are handled before this is asked).
fn is_control(byte: u8) -> bool {
    (byte < 0x20 && byte != b'\t') || byte == 0x7f
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (payload, consumed, done) or the error.
    type Decoded = Result<(Vec<u8>, usize, bool), ChunkedError>;

    /// Feeds `input` in pieces of `piece_bytes`, re-offering unconsumed bytes with the next
    /// piece as a server would, until done or an error. Returns (payload, consumed, done).
    fn decode_in_pieces(input: &[u8], piece_bytes: usize, max_body_bytes: usize) -> Decoded {
        let mut decoder = ChunkedDecoder::new(max_body_bytes);
        let mut out = Vec::new();
        let mut consumed = 0;
        let mut available = 0;
        while available < input.len() {
            available = (available + piece_bytes).min(input.len());
            let progress = decoder.decode(&input[consumed..available], &mut out)?;
            consumed += progress.consumed;
            if progress.done {
                return Ok((out, consumed, true));
            }
        }
        Ok((out, consumed, false))
    }

    // Goal: valid bodies decode exactly (extensions and trailers ignored), and `consumed` stops
    // at the body's end with the pipelined bytes after it untouched, for every piece size.
    #[test]
    fn decodes_valid_bodies() {
        let cases: [(&[u8], &[u8]); 12] = [
            (b"0\r\n\r\n", b""),
            (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
            (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
            (b"a\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
            (b"0005\r\nhello\r\n000\r\n\r\n", b"hello"),
            (b"5;name=value\r\nhello\r\n0;last\r\n\r\n", b"hello"),
            (b"5 ;a=\"b;c\"; d\r\nhello\r\n0\t\r\n\r\n", b"hello"),
            (b"5\t \r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"3\r\n\r\n\r\r\n0\r\n\r\n", b"\r\n\r"),
            (b"5\r\nhello\r\n0\r\nx-checksum: 1\r\nother: two words\r\n\r\n", b"hello"),
            (b"2\r\n\xc3\xa9\r\n0\r\nx: \xc3\xa9\r\n\r\n", "é".as_bytes()),
        ];
        let pipelined = b"GET /next HTTP/1.1\r\n\r\n";
        for (body, expected) in cases {
            let mut input = body.to_vec();
            input.extend_from_slice(pipelined);
            for piece_bytes in [1, 2, 3, 7, input.len()] {
                let decoded = decode_in_pieces(&input, piece_bytes, 1024);
                assert_eq!(decoded, Ok((expected.to_vec(), body.len(), true)), "{body:?} in pieces of {piece_bytes}");
            }
        }
    }

    // Goal: fed one byte per call, every byte is consumed, `done` turns true exactly on the last
    // byte, and the payload equals the one decoded in a single call.
    #[test]
    fn byte_by_byte_equals_whole() {
        let input = b"3;x=y\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nt: v\r\n\r\n";
        let mut whole_out = Vec::new();
        let whole = ChunkedDecoder::new(1024).decode(input, &mut whole_out);
        assert_eq!(whole, Ok(Progress { consumed: input.len(), done: true }));

        let mut decoder = ChunkedDecoder::new(1024);
        let mut out = Vec::new();
        for (index, byte) in input.iter().enumerate() {
            let progress = decoder.decode(std::slice::from_ref(byte), &mut out);
            assert_eq!(progress, Ok(Progress { consumed: 1, done: index == input.len() - 1 }), "byte {index}");
        }
        assert_eq!(out, whole_out);
        assert_eq!(out, b"abc0123456789abcdef");
        // Done: nothing more is consumed.
        assert_eq!(decoder.decode(b"GET", &mut out), Ok(Progress { consumed: 0, done: true }));
    }

    // Goal: an incomplete body consumes everything offered and reports not done; empty input is
    // a no-op.
    #[test]
    fn incomplete_bodies_wait() {
        let cases: [(&[u8], &[u8]); 6] = [
            (b"", b""),
            (b"5", b""),
            (b"5\r\nhel", b"hel"),
            (b"5\r\nhello\r", b"hello"),
            (b"5\r\nhello\r\n0\r\n", b"hello"),
            (b"5\r\nhello\r\n0\r\nx: y\r\n", b"hello"),
        ];
        for (input, expected) in cases {
            let mut out = Vec::new();
            let progress = ChunkedDecoder::new(1024).decode(input, &mut out);
            assert_eq!(progress, Ok(Progress { consumed: input.len(), done: false }), "{input:?}");
            assert_eq!(out, expected, "{input:?}");
        }
    }

    // Goal: each kind of malformed framing is refused with its exact reason, whether the bytes
    // come at once or one per call.
    #[test]
    fn refuses_malformed_bodies() {
        let cases: [(&[u8], ChunkedError); 24] = [
            (b"zz\r\nhello\r\n0\r\n\r\n", MALFORMED_SIZE),
            (b"+5\r\nhello\r\n0\r\n\r\n", MALFORMED_SIZE),
            (b"-5\r\nhello\r\n0\r\n\r\n", MALFORMED_SIZE),
            (b" 5\r\nhello\r\n0\r\n\r\n", MALFORMED_SIZE),
            (b"0x5\r\nhello\r\n0\r\n\r\n", MALFORMED_SIZE),
            (b"5 5\r\nhello\r\n0\r\n\r\n", MALFORMED_SIZE),
            (b"5g\r\nhello\r\n0\r\n\r\n", MALFORMED_SIZE),
            (b"\r\n", MALFORMED_SIZE),
            (b";ext\r\n", MALFORMED_SIZE),
            (b"10000000000000000\r\n", MALFORMED_SIZE_TOO_LONG),
            (b"0000000000000000a\r\n", MALFORMED_SIZE_TOO_LONG),
            (b"5\nhello\r\n0\r\n\r\n", MALFORMED_BARE_LF),
            (b"5;x\nhello\r\n0\r\n\r\n", MALFORMED_BARE_LF),
            (b"5\rhello\r\n0\r\n\r\n", MALFORMED_BARE_LF),
            (b"\n", MALFORMED_BARE_LF),
            (b"5\r\nhello\n0\r\n\r\n", MALFORMED_BARE_LF),
            (b"5\r\nhelloXX0\r\n\r\n", MALFORMED_DATA_END),
            (b"5\r\nhello\rX0\r\n\r\n", MALFORMED_DATA_END),
            (b"5\r\nhello0\r\n\r\n", MALFORMED_DATA_END),
            (b"0\r\nx: y\n\r\n", MALFORMED_BARE_LF),
            (b"0\r\n\n", MALFORMED_BARE_LF),
            (b"0\r\n\rX", MALFORMED_BARE_LF),
            (b"5;a\x00b\r\nhello\r\n0\r\n\r\n", MALFORMED_CONTROL_BYTE),
            (b"0\r\nx: a\x7fb\r\n\r\n", MALFORMED_CONTROL_BYTE),
        ];
        for (input, expected) in cases {
            assert_eq!(decode_in_pieces(input, input.len(), usize::MAX), Err(expected), "{input:?} at once");
            assert_eq!(decode_in_pieces(input, 1, usize::MAX), Err(expected), "{input:?} byte by byte");
        }
    }

    // Goal: the payload limit is exact, and an over-limit size is refused as soon as its digits
    // say so, before any of its data arrives.
    #[test]
    fn payload_limit() {
        let cases: [(&[u8], usize, Decoded); 9] = [
            (b"a\r\n0123456789\r\n0\r\n\r\n", 10, Ok((b"0123456789".to_vec(), 20, true))),
            (b"b\r\n", 10, Err(ChunkedError::TooLarge)),
            // Refused at the second digit, with no CRLF yet.
            (b"10", 10, Err(ChunkedError::TooLarge)),
            (b"5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n", 10, Ok((b"helloworld".to_vec(), 25, true))),
            (b"5\r\nhello\r\n6\r\n", 10, Err(ChunkedError::TooLarge)),
            // Refused at the third digit: 0xfff > 1024.
            (b"ffffffffffffffff\r\n", 1024, Err(ChunkedError::TooLarge)),
            // The largest size that fits the digits is accepted when the limit allows it.
            (b"ffffffffffffffff\r\nab", usize::MAX, Ok((b"ab".to_vec(), 20, false))),
            (b"0\r\n\r\n", 0, Ok((Vec::new(), 5, true))),
            (b"1\r\n", 0, Err(ChunkedError::TooLarge)),
        ];
        for (input, max_body_bytes, expected) in cases {
            assert_eq!(decode_in_pieces(input, 1, max_body_bytes), expected, "{input:?} limit {max_body_bytes}");
            assert_eq!(decode_in_pieces(input, input.len(), max_body_bytes), expected, "{input:?} at once");
        }
    }

    // Goal: the size-line and trailer bounds are exact: at the bound passes, one byte more fails.
    #[test]
    fn line_and_trailer_bounds() {
        // "1;" + padding makes a size line of exactly `line_bytes` bytes before its CRLF.
        let size_line = |line_bytes: usize| format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(line_bytes - 2));
        // One trailer line plus the final CRLF making exactly `section_bytes` bytes.
        let trailers = |section_bytes: usize| format!("0\r\nx:{}\r\n\r\n", "t".repeat(section_bytes - 6));
        let cases: [(String, Decoded); 4] = [
            (size_line(CHUNKED_MAX_SIZE_LINE_BYTES), Ok((b"x".to_vec(), CHUNKED_MAX_SIZE_LINE_BYTES + 10, true))),
            (size_line(CHUNKED_MAX_SIZE_LINE_BYTES + 1), Err(MALFORMED_SIZE_LINE_TOO_LONG)),
            (trailers(CHUNKED_MAX_TRAILER_BYTES), Ok((Vec::new(), CHUNKED_MAX_TRAILER_BYTES + 3, true))),
            (trailers(CHUNKED_MAX_TRAILER_BYTES + 1), Err(MALFORMED_TRAILERS_TOO_LONG)),
        ];
        for (input, expected) in cases {
            assert_eq!(decode_in_pieces(input.as_bytes(), 1, 1024), expected, "{} bytes", input.len());
            assert_eq!(decode_in_pieces(input.as_bytes(), input.len(), 1024), expected, "{} bytes", input.len());
        }
    }

    // Goal: after an error the decoder stays failed and returns the same error.
    #[test]
    fn errors_are_sticky() {
        let mut decoder = ChunkedDecoder::new(1024);
        let mut out = Vec::new();
        assert_eq!(decoder.decode(b"zz", &mut out), Err(MALFORMED_SIZE));
        assert_eq!(decoder.decode(b"0\r\n\r\n", &mut out), Err(MALFORMED_SIZE));
        assert_eq!(decoder.decode(b"", &mut out), Err(MALFORMED_SIZE));
        assert!(out.is_empty());
    }

    // Goal: a body split at every byte offset into two calls decodes the same as whole.
    #[test]
    fn split_at_every_offset() {
        let input = b"4;e=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nt: v\r\n\r\nNEXT";
        let body_bytes = input.len() - 4;
        for cut in 0..=input.len() {
            let mut decoder = ChunkedDecoder::new(1024);
            let mut out = Vec::new();
            let first = decoder.decode(&input[..cut], &mut out).unwrap();
            let second = decoder.decode(&input[first.consumed..], &mut out).unwrap();
            assert_eq!(first.consumed + second.consumed, body_bytes, "cut {cut}");
            assert!(second.done, "cut {cut}");
            assert_eq!(out, b"Wikipedia in\r\n\r\nchunks.", "cut {cut}");
        }
    }
}
