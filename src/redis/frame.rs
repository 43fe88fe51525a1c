//! RESP2, the Redis wire format of replies, read in place: `reply_len` finds where one whole
//! reply ends in a buffer (or says it is not all there yet), and `Frame` is a view of a reply
//! that borrows its bytes, so a reply is read where it was received, without allocating.
//!
//! Owns the wire shapes the client can receive (RESP2, since it never asks for RESP3 with
//! `HELLO 3`): simple strings, errors, integers, bulk strings, arrays and both nulls (`$-1`,
//! `*-1`), and `Reply`, the same as an owned tree for the callers that keep a reply. Nesting is
//! bounded (`REDIS_MAX_REPLY_DEPTH`) and checked without recursion, so no reply from a server
//! (or from something in its place) can overflow the stack. It never does IO, never allocates
//! (except `Frame::to_reply` and `Reply::encode`) and never panics on any input.

use crate::limits::REDIS_MAX_REPLY_DEPTH;

/// Bytes that are not RESP2, or nest deeper than `REDIS_MAX_REPLY_DEPTH`: the connection is
/// out of step and must not be read further.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProtocolError;

/// How long the whole reply at the start of `bytes` is; `None` while some of it is still to
/// come.
pub fn reply_len(bytes: &[u8]) -> Result<Option<usize>, ProtocolError> {
    value_end(bytes, 0)
}

/// One reply (or one item of an array), borrowed from the bytes it was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    SimpleString(&'a [u8]),
    Error(&'a [u8]),
    Integer(i64),
    BulkString(&'a [u8]),
    Array(Items<'a>),
    /// `$-1` or `*-1`.
    Null,
}

/// The items of an array: read one after the other from their bytes, each when asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Items<'a> {
    /// The items' bytes, one whole value after the other (checked by `reply_len`).
    bytes: &'a [u8],
    len: usize,
}

impl<'a> Frame<'a> {
    /// The reply that `bytes` holds, exactly one whole value (as `reply_len` measured it);
    /// `None` if they are not.
    pub fn of_reply(bytes: &'a [u8]) -> Option<Frame<'a>> {
        match Frame::read(bytes, 0) {
            Some((frame, end)) if end == bytes.len() => Some(frame),
            _ => None,
        }
    }

    /// The reply `bytes` holds as `reply_len` just measured it, not walked again (bytes that
    /// are not one whole value read as fewer items, never as a panic).
    pub fn of_measured(bytes: &'a [u8]) -> Option<Frame<'a>> {
        match head(bytes, 0).ok()?? {
            (Head::Array(len), next) => Some(Frame::Array(Items { bytes: &bytes[next..], len })),
            _ => Frame::read(bytes, 0).map(|(frame, _)| frame),
        }
    }

    /// The value at `at` in `bytes` and where it ends; `None` if it is not whole or not RESP2.
    fn read(bytes: &'a [u8], at: usize) -> Option<(Frame<'a>, usize)> {
        let (head, next) = head(bytes, at).ok()??;
        Some(match head {
            Head::Simple(text) => (Frame::SimpleString(text), next),
            Head::Error(text) => (Frame::Error(text), next),
            Head::Integer(value) => (Frame::Integer(value), next),
            Head::Null => (Frame::Null, next),
            Head::Bulk(len) => {
                let end = bulk_end(bytes, next, len).ok()??;
                (Frame::BulkString(&bytes[next..end - 2]), end)
            }
            Head::Array(len) => {
                let end = value_end(bytes, at).ok()??;
                (Frame::Array(Items { bytes: &bytes[next..end], len }), end)
            }
        })
    }

    /// The same reply as an owned tree (allocates: off the request path).
    pub fn to_reply(self) -> Reply {
        match self {
            Frame::SimpleString(text) => Reply::SimpleString(text.to_vec()),
            Frame::Error(text) => Reply::Error(String::from_utf8_lossy(text).into_owned()),
            Frame::Integer(value) => Reply::Integer(value),
            Frame::BulkString(bytes) => Reply::BulkString(bytes.to_vec()),
            // Nesting was bounded by `reply_len`: so is this recursion.
            Frame::Array(items) => Reply::Array(items.iter().map(Frame::to_reply).collect()),
            Frame::Null => Reply::Null,
        }
    }
}

impl<'a> Items<'a> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Item `index`, read past the ones before it (arrays here are short).
    pub fn get(&self, index: usize) -> Option<Frame<'a>> {
        self.iter().nth(index)
    }

    pub fn iter(&self) -> ItemsIter<'a> {
        ItemsIter { bytes: self.bytes, at: 0, left: self.len }
    }

    /// The items read once into an index, for readers that pick them by position.
    pub fn indexed(self) -> Indexed<'a> {
        let mut first = [Frame::Null; INDEXED_ITEMS];
        let mut read = 0;
        for (slot, item) in first.iter_mut().zip(self.iter()) {
            *slot = item;
            read += 1;
        }
        Indexed { first, read, items: self }
    }
}

/// Items an `Indexed` holds on the stack; later ones are read in place when asked for (the
/// store's replies by position have at most 13).
const INDEXED_ITEMS: usize = 16;

/// An array's items by position: the first `INDEXED_ITEMS` read once (so picking item `i`
/// does not read the `i` before it again), the rest read in place.
#[derive(Clone, Copy, Debug)]
pub struct Indexed<'a> {
    first: [Frame<'a>; INDEXED_ITEMS],
    /// How many of `first` were read (fewer than `INDEXED_ITEMS` only at the array's end).
    read: usize,
    items: Items<'a>,
}

impl<'a> Indexed<'a> {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<Frame<'a>> {
        if index < self.read {
            return Some(self.first[index]);
        }
        if index < INDEXED_ITEMS {
            return None;
        }
        self.items.get(index)
    }

    pub fn iter(&self) -> ItemsIter<'a> {
        self.items.iter()
    }
}

impl<'a> IntoIterator for Items<'a> {
    type Item = Frame<'a>;
    type IntoIter = ItemsIter<'a>;
    fn into_iter(self) -> ItemsIter<'a> {
        self.iter()
    }
}

/// The items of an array, in order.
pub struct ItemsIter<'a> {
    bytes: &'a [u8],
    at: usize,
    left: usize,
}

impl<'a> Iterator for ItemsIter<'a> {
    type Item = Frame<'a>;

    fn next(&mut self) -> Option<Frame<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let (frame, end) = Frame::read(self.bytes, self.at)?;
        self.at = end;
        Some(frame)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

/// A reply as an owned tree, for the calls that keep one (or match on it) off the request path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    SimpleString(Vec<u8>),
    Error(String),
    Integer(i64),
    BulkString(Vec<u8>),
    Array(Vec<Reply>),
    Null,
}

impl Reply {
    /// Appends the reply's RESP2 bytes (as a server sends them; `Null` as `$-1`).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let line = |out: &mut Vec<u8>, kind: u8, text: &[u8]| {
            out.push(kind);
            out.extend_from_slice(text);
            out.extend_from_slice(b"\r\n");
        };
        match self {
            Reply::SimpleString(text) => line(out, b'+', text),
            Reply::Error(text) => line(out, b'-', text.as_bytes()),
            Reply::Integer(value) => line(out, b':', value.to_string().as_bytes()),
            Reply::BulkString(bytes) => {
                line(out, b'$', bytes.len().to_string().as_bytes());
                out.extend_from_slice(bytes);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Array(items) => {
                line(out, b'*', items.len().to_string().as_bytes());
                for item in items {
                    item.encode(out);
                }
            }
            Reply::Null => line(out, b'$', b"-1"),
        }
    }
}

/// A value's first line, read.
enum Head<'a> {
    Simple(&'a [u8]),
    Error(&'a [u8]),
    Integer(i64),
    /// A bulk string of this many bytes follows.
    Bulk(usize),
    /// This many items follow.
    Array(usize),
    Null,
}

/// The first line of the value at `at` and where what follows it starts; `None` if the line is
/// not all there yet.
fn head(bytes: &[u8], at: usize) -> Result<Option<(Head<'_>, usize)>, ProtocolError> {
    let Some(&kind) = bytes.get(at) else { return Ok(None) };
    let start = at + 1;
    let (value, next) = match kind {
        b'+' | b'-' => {
            let Some(cr) = memchr::memchr(b'\r', &bytes[start..]).map(|i| start + i) else { return Ok(None) };
            match bytes.get(cr + 1) {
                None => return Ok(None),
                Some(b'\n') => {}
                Some(_) => return Err(ProtocolError),
            }
            let text = &bytes[start..cr];
            let head = if kind == b'+' { Head::Simple(text) } else { Head::Error(text) };
            return Ok(Some((head, cr + 2)));
        }
        b':' | b'$' | b'*' => match number_line(bytes, start)? {
            Some(line) => line,
            None => return Ok(None),
        },
        _ => return Err(ProtocolError),
    };
    let head = match kind {
        b':' => Head::Integer(value),
        _ => match value {
            -1 => Head::Null,
            len if len < 0 => return Err(ProtocolError),
            len => {
                let len = usize::try_from(len).map_err(|_| ProtocolError)?;
                if kind == b'$' { Head::Bulk(len) } else { Head::Array(len) }
            }
        },
    };
    Ok(Some((head, next)))
}

/// The decimal integer of the line starting at `start` (an optional `-`, then digits, then
/// `\r\n`), read as its digits are found, and where the next line starts; `None` if the line is
/// not all there yet.
fn number_line(bytes: &[u8], start: usize) -> Result<Option<(i64, usize)>, ProtocolError> {
    let negative = bytes.get(start) == Some(&b'-');
    let digits_start = start + usize::from(negative);
    let mut at = digits_start;
    // Nineteen digits never overflow a u64: the digits are summed unchecked, the range checked once.
    let mut magnitude: u64 = 0;
    loop {
        let Some(&byte) = bytes.get(at) else { return Ok(None) };
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            break;
        }
        if at - digits_start == MAX_NUMBER_DIGITS {
            return Err(ProtocolError);
        }
        magnitude = magnitude * 10 + u64::from(digit);
        at += 1;
    }
    if at == digits_start {
        return Err(ProtocolError);
    }
    // In range: up to 2^63 - 1, or 2^63 when negative (`i64::MIN`).
    if magnitude > i64::MAX as u64 + u64::from(negative) {
        return Err(ProtocolError);
    }
    let value = if negative { (magnitude as i64).wrapping_neg() } else { magnitude as i64 };
    match bytes.get(at..at + 2) {
        Some(b"\r\n") => Ok(Some((value, at + 2))),
        Some(_) => Err(ProtocolError),
        None if bytes[at] == b'\r' => Ok(None),
        None => Err(ProtocolError),
    }
}

/// The most digits a RESP integer has (`i64::MIN` has 19).
const MAX_NUMBER_DIGITS: usize = 19;

/// Where a bulk string of `len` bytes starting at `at` ends, past its `\r\n`.
fn bulk_end(bytes: &[u8], at: usize, len: usize) -> Result<Option<usize>, ProtocolError> {
    let Some(end) = at.checked_add(len).and_then(|end| end.checked_add(2)) else { return Err(ProtocolError) };
    match bytes.get(end - 2..end) {
        None => Ok(None),
        Some(b"\r\n") => Ok(Some(end)),
        Some(_) => Err(ProtocolError),
    }
}

/// Where the whole value at `at` ends, its items and theirs included. Iterative: `pending[d]`
/// counts the items still to read at depth `d`.
fn value_end(bytes: &[u8], at: usize) -> Result<Option<usize>, ProtocolError> {
    let mut pending = [0usize; REDIS_MAX_REPLY_DEPTH + 1];
    pending[0] = 1;
    let mut depth = 0;
    let mut at = at;
    loop {
        while pending[depth] == 0 {
            if depth == 0 {
                return Ok(Some(at));
            }
            depth -= 1;
        }
        pending[depth] -= 1;
        let Some((head, next)) = head(bytes, at)? else { return Ok(None) };
        at = next;
        match head {
            Head::Bulk(len) => match bulk_end(bytes, at, len)? {
                Some(end) => at = end,
                None => return Ok(None),
            },
            Head::Array(len) if len > 0 => {
                if depth == REDIS_MAX_REPLY_DEPTH {
                    return Err(ProtocolError);
                }
                depth += 1;
                pending[depth] = len;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
