//! Writing JSON text by hand on the data path: string escaping, without allocating.
//!
//! Owns the escaping rules (RFC 8259: quote, backslash and control characters) used by every
//! body the gateway writes itself (errors, model lists, sandbox answers, rewritten upstream
//! fields). It never parses JSON; reading is `openai::chat::json_scan`'s job.

/// Appends `text` to `out` as the inside of a JSON string (no surrounding quotes).
pub fn write_json_escaped(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    let mut start = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        let escape: Option<&[u8]> = match byte {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..index]);
        match escape {
            Some(sequence) => out.extend_from_slice(sequence),
            None => {
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(byte >> 4) as usize], HEX[(byte & 15) as usize]])
            }
        }
        start = index + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}
