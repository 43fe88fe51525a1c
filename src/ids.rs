//! Identifiers the gateway makes: random base62 text (keys, key ids, account ids, node tags),
//! request ids on the stack, and `IdText`, an id's text kept inline where it fits.
//!
//! Owns the alphabet, the CSPRNG use and the request-id layout (`req_` + node tag + 16 hex
//! digits of worker and counter). It never stores or looks anything up. Its one `unsafe` is
//! reading an id's bytes as `str` without checking them again: both id types keep their bytes
//! private and write only ASCII (`RequestId`) or a whole `str` (`IdText`).

use std::sync::Arc;

/// Length of the random per-process tag inside every request id.
pub const NODE_TAG_LEN: usize = 8;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `len` random base62 characters from the OS CSPRNG (rejection sampling: no modulo bias).
pub fn random_base62(len: usize) -> String {
    let mut text = String::with_capacity(len);
    let mut pool = [0u8; 64];
    while text.len() < len {
        getrandom::fill(&mut pool).expect("the OS random source is available");
        for byte in pool {
            // 248 = 4 * 62: bytes at or above it would bias the low characters.
            if byte < 248 && text.len() < len {
                text.push(BASE62[(byte % 62) as usize] as char);
            }
        }
    }
    text
}

/// `req_` + node tag + 16 hex digits of (worker, counter).
pub const REQUEST_ID_LEN: usize = 4 + NODE_TAG_LEN + 16;

/// A request id on the stack.
#[derive(Copy, Clone)]
pub struct RequestId([u8; REQUEST_ID_LEN]);

impl RequestId {
    /// The id of request number `counter` of worker `worker_index` on the node tagged `node_tag`.
    pub fn new(node_tag: &[u8; NODE_TAG_LEN], worker_index: usize, counter: u64) -> RequestId {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let value = ((worker_index as u64) << 48) | (counter & 0xffff_ffff_ffff);
        let mut id = [0u8; REQUEST_ID_LEN];
        id[..4].copy_from_slice(b"req_");
        // Only ASCII goes in (what lets `as_str` skip the UTF-8 check): the node tag is base62,
        // and a byte of it that were not ASCII would be written as `_`.
        for (slot, &byte) in id[4..4 + NODE_TAG_LEN].iter_mut().zip(node_tag) {
            *slot = if byte.is_ascii() { byte } else { b'_' };
        }
        for (i, slot) in id[4 + NODE_TAG_LEN..].iter_mut().enumerate() {
            *slot = HEX[((value >> (60 - 4 * i)) & 0xf) as usize];
        }
        RequestId(id)
    }

    #[allow(unsafe_code)]
    pub fn as_str(&self) -> &str {
        debug_assert!(self.0.is_ascii());
        // SAFETY: the bytes are private to this module and written only by `new`, which writes
        // ASCII alone; ASCII is UTF-8. (Checked, this was ~100 instructions per call, and an id
        // is read several times per request.)
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }
}

/// Ids up to this many bytes are kept inline by `IdText` (every request id, with room).
pub const INLINE_ID_MAX_BYTES: usize = 30;
const _: () = assert!(REQUEST_ID_LEN <= INLINE_ID_MAX_BYTES, "request ids must fit inline");

/// An id's text as stores keep it (a hold's request id, a ledger line's): inline, with no heap
/// allocation, when it fits in `INLINE_ID_MAX_BYTES` (all the gateway's request ids), shared on
/// the heap otherwise (ids a test or an old ledger line made). Compares, hashes and borrows as
/// its `str`, so maps keyed by it are looked up with a plain `&str`.
#[derive(Clone)]
pub struct IdText(IdRepr);

#[derive(Clone)]
enum IdRepr {
    Inline { len: u8, bytes: [u8; INLINE_ID_MAX_BYTES] },
    Shared(Arc<str>),
}

impl IdText {
    #[allow(unsafe_code)]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            IdRepr::Inline { len, bytes } => {
                let text = bytes.get(..usize::from(*len)).unwrap_or(&[]);
                debug_assert!(std::str::from_utf8(text).is_ok());
                // SAFETY: `IdRepr` is private to this module and `From<&str>` is its only
                // maker: it copies a whole `str` (all of its bytes, `len` of them) and nothing
                // writes them after. A whole `str` is valid UTF-8.
                unsafe { std::str::from_utf8_unchecked(text) }
            }
            IdRepr::Shared(text) => text,
        }
    }
}

impl From<&str> for IdText {
    fn from(text: &str) -> IdText {
        if text.len() > INLINE_ID_MAX_BYTES {
            return IdText(IdRepr::Shared(text.into()));
        }
        let mut bytes = [0u8; INLINE_ID_MAX_BYTES];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        IdText(IdRepr::Inline { len: text.len() as u8, bytes })
    }
}

impl std::ops::Deref for IdText {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for IdText {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for IdText {
    fn eq(&self, other: &IdText) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for IdText {}

impl std::hash::Hash for IdText {
    // As `str` hashes: `Borrow<str>` requires it.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl std::fmt::Debug for IdText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for IdText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    // Goal: an id is the same text whether it is kept inline (up to 30 bytes) or on the heap,
    // and a map keyed by it is looked up with the plain `str`.
    #[test]
    fn id_text_is_its_str_inline_or_shared() {
        let request_id = RequestId::new(b"NODETAG1", 3, 42);
        let long = "x".repeat(INLINE_ID_MAX_BYTES + 1);
        let fits = "y".repeat(INLINE_ID_MAX_BYTES);
        for text in [request_id.as_str(), "", "req_1", fits.as_str(), long.as_str()] {
            let id = IdText::from(text);
            assert_eq!((id.as_str(), &*id, id.to_string()), (text, text, text.to_string()));
            assert_eq!(format!("{id:?}"), format!("{text:?}"));
            let map: HashMap<IdText, u32> = [(id.clone(), 7)].into();
            assert_eq!(map.get(text), Some(&7));
        }
        assert!(matches!(IdText::from(fits.as_str()).0, IdRepr::Inline { len: 30, .. }));
        assert!(matches!(IdText::from(long.as_str()).0, IdRepr::Shared(_)));
        assert_eq!(IdText::from("req_1"), IdText::from("req_1"));
        assert_ne!(IdText::from("req_1"), IdText::from("req_2"));
    }
}
