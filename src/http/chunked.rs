//! Incremental decoding of a chunked request body (RFC 9112 §7.1), byte-exact and bounded.
//!
//! Bytes may arrive split anywhere (inside a size line, a CRLF or a trailer); the decoder keeps
//! its place between calls. Extensions and trailers are accepted and ignored but bounded in
//! size; bare LFs, bad hex, missing CRLFs and payloads over the body limit are refused. Once the
//! body ends, `consumed` stops exactly after it, so pipelined bytes stay for the next request.

/// Longest chunk-size line (size, extensions) accepted, in bytes.
const MAX_SIZE_LINE_BYTES: usize = 4096;
/// Most bytes of trailer fields accepted after the last chunk.
const MAX_TRAILER_BYTES: usize = 8192;
/// Most hex digits in a chunk size.
const MAX_SIZE_HEX_DIGITS: u32 = 16;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ChunkedError {
    TooLarge,
    Malformed(&'static str),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    pub consumed: usize,
    pub done: bool,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size {
        digits: u32,
    },
    /// After the size: extensions until CR.
    Extension,
    /// Saw CR ending the size line; expect LF.
    SizeLf,
    /// Reading `remaining` payload bytes.
    Data,
    /// After the payload: expect CR.
    DataCr,
    /// Expect LF after the payload's CR.
    DataLf,
    /// After the last chunk: at the start of a trailer line (or the final CRLF).
    TrailerLineStart,
    /// Inside a trailer line.
    TrailerLine,
    /// Saw CR inside/ending a trailer line; expect LF.
    TrailerLf {
        empty_line: bool,
    },
    Done,
}

pub struct ChunkedDecoder {
    state: State,
    chunk_size: u64,
    remaining: u64,
    line_bytes: usize,
    trailer_bytes: usize,
    body_bytes: u64,
    max_body_bytes: u64,
}

const BARE_LF: ChunkedError = ChunkedError::Malformed("Chunked body: line endings must be CRLF.");

impl ChunkedDecoder {
    pub fn new(max_body_bytes: usize) -> Self {
        ChunkedDecoder {
            state: State::Size { digits: 0 },
            chunk_size: 0,
            remaining: 0,
            line_bytes: 0,
            trailer_bytes: 0,
            body_bytes: 0,
            max_body_bytes: max_body_bytes as u64,
        }
    }

    /// Decodes as much of `input` as possible, appending payload bytes to `out`.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Progress, ChunkedError> {
        let mut position = 0;
        while position < input.len() {
            if self.state == State::Done {
                break;
            }
            if self.state == State::Data {
                let available = (input.len() - position) as u64;
                let take = available.min(self.remaining) as usize;
                out.extend_from_slice(&input[position..position + take]);
                position += take;
                self.remaining -= take as u64;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let byte = input[position];
            position += 1;
            self.step(byte)?;
        }
        Ok(Progress { consumed: position, done: self.state == State::Done })
    }

    fn step(&mut self, byte: u8) -> Result<(), ChunkedError> {
        match self.state {
            State::Size { digits } => {
                self.count_line_byte()?;
                match hex_value(byte) {
                    Some(value) => {
                        if digits == MAX_SIZE_HEX_DIGITS || self.chunk_size > (u64::MAX >> 4) {
                            return Err(ChunkedError::Malformed("Chunked body: chunk size too large."));
                        }
                        self.chunk_size = (self.chunk_size << 4) | u64::from(value);
                        self.state = State::Size { digits: digits + 1 };
                    }
                    None if digits == 0 => return Err(ChunkedError::Malformed("Chunked body: bad chunk size.")),
                    None => match byte {
                        b';' | b' ' | b'\t' => self.state = State::Extension,
                        b'\r' => self.state = State::SizeLf,
                        b'\n' => return Err(BARE_LF),
                        _ => return Err(ChunkedError::Malformed("Chunked body: bad chunk size.")),
                    },
                }
            }
            State::Extension => {
                self.count_line_byte()?;
                match byte {
                    b'\r' => self.state = State::SizeLf,
                    b'\n' => return Err(BARE_LF),
                    _ => {}
                }
            }
            State::SizeLf => {
                if byte != b'\n' {
                    return Err(BARE_LF);
                }
                self.line_bytes = 0;
                self.body_bytes = self.body_bytes.saturating_add(self.chunk_size);
                if self.body_bytes > self.max_body_bytes {
                    return Err(ChunkedError::TooLarge);
                }
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
                    return Err(ChunkedError::Malformed("Chunked body: chunk data must be followed by CRLF."));
                }
                self.state = State::DataLf;
            }
            State::DataLf => {
                if byte != b'\n' {
                    return Err(BARE_LF);
                }
                self.state = State::Size { digits: 0 };
            }
            State::TrailerLineStart => {
                self.count_trailer_byte()?;
                match byte {
                    b'\r' => self.state = State::TrailerLf { empty_line: true },
                    b'\n' => return Err(BARE_LF),
                    _ => self.state = State::TrailerLine,
                }
            }
            State::TrailerLine => {
                self.count_trailer_byte()?;
                match byte {
                    b'\r' => self.state = State::TrailerLf { empty_line: false },
                    b'\n' => return Err(BARE_LF),
                    _ => {}
                }
            }
            State::TrailerLf { empty_line } => {
                if byte != b'\n' {
                    return Err(BARE_LF);
                }
                self.state = if empty_line { State::Done } else { State::TrailerLineStart };
            }
            State::Data | State::Done => {}
        }
        Ok(())
    }

    fn count_line_byte(&mut self) -> Result<(), ChunkedError> {
        self.line_bytes += 1;
        if self.line_bytes > MAX_SIZE_LINE_BYTES {
            return Err(ChunkedError::Malformed("Chunked body: chunk-size line too long."));
        }
        Ok(())
    }

    fn count_trailer_byte(&mut self) -> Result<(), ChunkedError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILER_BYTES {
            return Err(ChunkedError::Malformed("Chunked body: trailers too long."));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], limit: usize) -> Result<(Vec<u8>, usize), ChunkedError> {
        let mut decoder = ChunkedDecoder::new(limit);
        let mut out = Vec::new();
        let progress = decoder.decode(input, &mut out)?;
        assert!(progress.done, "not done: {input:?}");
        Ok((out, progress.consumed))
    }

    // Goal: valid bodies decode exactly, with extensions and trailers ignored, and `consumed`
    // stops at the end of the body.
    #[test]
    fn decodes_valid_bodies() {
        let cases: [(&[u8], &[u8]); 4] = [
            (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
            (b"A\r\n0123456789\r\n0\r\nx-trailer: 1\r\nother: 2\r\n\r\n", b"0123456789"),
            (b"0\r\n\r\n", b""),
        ];
        for (input, expected) in cases {
            let mut with_next = input.to_vec();
            with_next.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            let (out, consumed) = decode_all(&with_next, 1024).unwrap();
            assert_eq!(out, expected);
            assert_eq!(consumed, input.len());
        }
    }

    // Goal: feeding one byte at a time gives the same payload as feeding everything at once.
    #[test]
    fn byte_by_byte_equals_whole() {
        let input = b"3;x=y\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nt: v\r\n\r\n";
        let mut decoder = ChunkedDecoder::new(1024);
        let mut out = Vec::new();
        let mut done = false;
        for (index, byte) in input.iter().enumerate() {
            let progress = decoder.decode(std::slice::from_ref(byte), &mut out).unwrap();
            assert_eq!(progress.consumed, 1);
            done = progress.done;
            assert_eq!(done, index == input.len() - 1);
        }
        assert!(done);
        assert_eq!(out, b"abc0123456789abcdef");
    }

    // Goal: malformed bodies are refused, oversized ones as TooLarge as soon as a size says so.
    #[test]
    fn refuses_bad_bodies() {
        let malformed: [&[u8]; 7] = [
            b"zz\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"0\r\nx\n\r\n",
            b"\r\n",
        ];
        for input in malformed {
            let mut decoder = ChunkedDecoder::new(1024);
            assert!(matches!(decoder.decode(input, &mut Vec::new()), Err(ChunkedError::Malformed(_))), "{input:?}");
        }
        let mut decoder = ChunkedDecoder::new(10);
        assert_eq!(decoder.decode(b"b\r\n", &mut Vec::new()), Err(ChunkedError::TooLarge));
        let mut decoder = ChunkedDecoder::new(10);
        assert_eq!(decoder.decode(b"5\r\nhello\r\n6\r\n", &mut Vec::new()), Err(ChunkedError::TooLarge));
        let long_extension = format!("1;{}\r\n", "x".repeat(MAX_SIZE_LINE_BYTES));
        assert!(ChunkedDecoder::new(10).decode(long_extension.as_bytes(), &mut Vec::new()).is_err());
    }
}
