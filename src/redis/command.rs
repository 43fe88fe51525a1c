//! Commands as RESP bytes: a command is whatever can append its own encoding to a connection's
//! outgoing buffer (`Command`). Most are a list of arguments (`Args`); the per-request Function
//! calls are an `Fcall`, whose constant start (`FCALL`, the function's name, its number of keys,
//! the array's length) is encoded at compile time (`FcallHead`) and whose arguments are written
//! from their parts (a key's prefix, account and suffix; a text's numbers and spaces) straight
//! into the buffer, with no key names or texts assembled on the way.
//!
//! Owns the RESP2 encoding of requests (arrays of bulk strings). It never does IO, never decides
//! what a command says, and allocates only by growing the buffer it is given.

use crate::digits::push_decimal;

/// Something that appends itself as one RESP command to `out`; encoding it again (a command
/// sent again after a Cluster redirect) appends the same bytes.
pub trait Command {
    fn encode(&self, out: &mut Vec<u8>);
}

/// A command as its arguments (`0` is its name).
pub struct Args<'a>(pub &'a [&'a [u8]]);

impl Command for Args<'_> {
    fn encode(&self, out: &mut Vec<u8>) {
        encode_command(out, self.0);
    }
}

/// Appends `args` as a RESP array of bulk strings.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let payload: usize = args.iter().map(|arg| arg.len() + 16).sum();
    out.reserve(payload + 16);
    out.push(b'*');
    push_decimal(out, args.len() as u64);
    out.extend_from_slice(b"\r\n");
    for arg in args {
        push_bulk_head(out, arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// `$len\r\n`, the head of a bulk string of `len` bytes.
fn push_bulk_head(out: &mut Vec<u8>, len: usize) {
    out.push(b'$');
    push_decimal(out, len as u64);
    out.extend_from_slice(b"\r\n");
}

/// The constant start of every call of one Function: the array's length, `FCALL`, the name and
/// the number of keys, as RESP bytes, encoded at compile time (`const`).
pub struct FcallHead {
    bytes: [u8; FCALL_HEAD_MAX_BYTES],
    len: usize,
    /// How many arguments (keys included) follow the head.
    arguments: usize,
}

/// Room for a head: `*NN`, `$5 FCALL`, a name of up to 32 bytes, a number of keys below 100.
const FCALL_HEAD_MAX_BYTES: usize = 80;

impl FcallHead {
    /// The head of `FCALL function keys` followed by `arguments` arguments, `keys` of which
    /// are keys (a name longer than 32 bytes, or more than 99 arguments, fail to compile).
    pub const fn new(function: &str, keys: usize, arguments: usize) -> FcallHead {
        assert!(keys <= arguments && arguments + 3 < 100 && function.len() <= 32);
        let mut head = FcallHead { bytes: [0; FCALL_HEAD_MAX_BYTES], len: 0, arguments };
        head.put(b"*");
        head.put_two_digits(arguments + 3);
        head.put(b"\r\n$5\r\nFCALL\r\n$");
        head.put_two_digits(function.len());
        head.put(b"\r\n");
        head.put(function.as_bytes());
        head.put(if keys >= 10 { b"\r\n$2\r\n" } else { b"\r\n$1\r\n" });
        head.put_two_digits(keys);
        head.put(b"\r\n");
        head
    }

    const fn put(&mut self, part: &[u8]) {
        let mut i = 0;
        while i < part.len() {
            self.bytes[self.len] = part[i];
            self.len += 1;
            i += 1;
        }
    }

    /// `value` (below 100) in decimal.
    const fn put_two_digits(&mut self, value: usize) {
        if value >= 10 {
            self.put(&[b'0' + (value / 10) as u8]);
        }
        self.put(&[b'0' + (value % 10) as u8]);
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// One call of a Function: its head, then `N` arguments (its keys first), each given as the
/// parts it is made of, in order.
pub struct Fcall<'a, const N: usize> {
    pub head: &'a FcallHead,
    pub args: [&'a [&'a [u8]]; N],
}

impl<const N: usize> Command for Fcall<'_, N> {
    /// Written into room made once (one capacity check and one length update for the whole
    /// command, not one per part), then cut to what was written.
    fn encode(&self, out: &mut Vec<u8>) {
        debug_assert_eq!(self.head.arguments, N, "a call has as many arguments as its head says");
        let mut lens = [0usize; N];
        let mut room = self.head.as_bytes().len();
        for (len, parts) in lens.iter_mut().zip(&self.args) {
            *len = parts.iter().map(|part| part.len()).sum();
            room += *len + BULK_FRAMING_MAX_BYTES;
        }
        let start = out.len();
        out.resize(start + room, 0);
        let mut writer = SliceWriter { bytes: &mut out[start..], at: 0 };
        writer.put(self.head.as_bytes());
        for (len, parts) in lens.into_iter().zip(&self.args) {
            writer.put_bulk_head(len);
            for part in *parts {
                writer.put(part);
            }
            writer.put(b"\r\n");
        }
        let written = writer.at;
        out.truncate(start + written);
    }
}

/// The most bytes around one bulk string: `$`, a length of up to 20 digits, two `\r\n`.
const BULK_FRAMING_MAX_BYTES: usize = 1 + 20 + 4;

/// Bytes written one after the other into room already made.
struct SliceWriter<'a> {
    bytes: &'a mut [u8],
    at: usize,
}

impl SliceWriter<'_> {
    #[inline]
    fn put(&mut self, part: &[u8]) {
        let end = self.at + part.len();
        self.bytes[self.at..end].copy_from_slice(part);
        self.at = end;
    }

    /// `$len\r\n` (see `push_bulk_head`): one fixed-size store below 100 bytes.
    #[inline]
    fn put_bulk_head(&mut self, len: usize) {
        if len < 10 {
            self.put(&[b'$', b'0' + len as u8, b'\r', b'\n']);
        } else if len < 100 {
            self.put(&[b'$', b'0' + (len / 10) as u8, b'0' + (len % 10) as u8, b'\r', b'\n']);
        } else {
            self.put(b"$");
            self.put(crate::digits::Num::new(len as u64).as_bytes());
            self.put(b"\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: commands encode as RESP arrays of bulk strings, byte for byte.
    #[test]
    fn encodes_commands() {
        let mut out = Vec::new();
        Args(&[b"SET", b"k", b"v a"]).encode(&mut out);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv a\r\n");
    }

    // Goal: a call written from its precomputed head and its arguments' parts is byte for byte
    // the same command written from whole arguments, and encoding it twice repeats it.
    #[test]
    fn a_call_from_parts_is_the_command_from_whole_arguments() {
        const HEAD: FcallHead = FcallHead::new("fk_hold", 2, 3);
        let head = HEAD;
        let call = Fcall {
            head: &head,
            args: [&[b"fk:{", b"acct_1", b"}:", b"acct"], &[b"fk:{acct_1}:holds"], &[b"", b"12", b" ", b"", b"l "]],
        };
        let mut out = Vec::new();
        call.encode(&mut out);
        let mut whole = Vec::new();
        encode_command(&mut whole, &[b"FCALL", b"fk_hold", b"2", b"fk:{acct_1}:acct", b"fk:{acct_1}:holds", b"12 l "]);
        assert_eq!(out, whole);
        call.encode(&mut out);
        assert_eq!(out.len(), 2 * whole.len());
        assert_eq!(out[whole.len()..], whole[..]);
        // Two-digit counts: twelve arguments, ten of them keys.
        const LONG: FcallHead = FcallHead::new("fk_long_name", 10, 12);
        let args = [&b"FCALL"[..], b"fk_long_name", b"10"].into_iter().chain([&b"k"[..]; 12]).collect::<Vec<_>>();
        let mut whole = Vec::new();
        encode_command(&mut whole, &args);
        assert!(whole.starts_with(LONG.as_bytes()), "{:?}", String::from_utf8_lossy(LONG.as_bytes()));
        assert_eq!(whole.len() - LONG.as_bytes().len(), 12 * b"$1\r\nk\r\n".len());
    }
}
