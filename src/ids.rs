//! Identifiers the gateway makes: random base62 text (keys, key ids, account ids, node tags) and
//! request ids on the stack.
//!
//! Owns the alphabet, the CSPRNG use and the request-id layout (`req_` + node tag + 16 hex
//! digits of worker and counter). It never stores or looks anything up.

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
        id[4..4 + NODE_TAG_LEN].copy_from_slice(node_tag);
        for (i, slot) in id[4 + NODE_TAG_LEN..].iter_mut().enumerate() {
            *slot = HEX[((value >> (60 - 4 * i)) & 0xf) as usize];
        }
        RequestId(id)
    }

    pub fn as_str(&self) -> &str {
        // Built only from ASCII in `new`.
        std::str::from_utf8(&self.0).unwrap_or("req_invalid")
    }
}
