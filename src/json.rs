//! Writing JSON text by hand on the data path: string escaping, without allocating.
//!
//! Owns the escaping rules (RFC 8259: quote, backslash and control characters) used by every
//! body the gateway writes itself (errors, model lists, sandbox answers, rewritten upstream
//! fields). It never parses JSON; reading is `openai::chat::json_scan`'s job.

/// Appends `text` to `out` as the inside of a JSON string (no surrounding quotes).
pub fn write_json_escaped(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    // Most text needs no escape at all: copy its clean words in one piece.
    let clean = clean_prefix_len(bytes);
    out.extend_from_slice(&bytes[..clean]);
    let bytes = &bytes[clean..];
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

/// The length of the leading whole 8-byte words of `bytes` that hold no byte needing an escape
/// (a quote, a backslash or a control character), found a word at a time.
fn clean_prefix_len(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH_BITS: u64 = u64::from_ne_bytes([0x80; 8]);
    const QUOTES: u64 = u64::from_ne_bytes([b'"'; 8]);
    const BACKSLASHES: u64 = u64::from_ne_bytes([b'\\'; 8]);
    // Whether some byte of `word` is zero / below 0x20 (exact as a yes-or-no).
    let has_zero = |word: u64| word.wrapping_sub(ONES) & !word & HIGH_BITS != 0;
    let has_control = |word: u64| word.wrapping_sub(ONES * 0x20) & !word & HIGH_BITS != 0;
    let mut clean = 0;
    for word in bytes.chunks_exact(8) {
        let word = u64::from_ne_bytes(<[u8; 8]>::try_from(word).unwrap_or_default());
        if has_control(word) || has_zero(word ^ QUOTES) || has_zero(word ^ BACKSLASHES) {
            break;
        }
        clean += 8;
    }
    clean
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The escaping rules applied one character at a time: what the fast path must equal.
    fn escaped_one_by_one(text: &str) -> String {
        text.chars()
            .map(|c| match c {
                '"' => "\\\"".to_string(),
                '\\' => "\\\\".to_string(),
                '\n' => "\\n".to_string(),
                '\r' => "\\r".to_string(),
                '\t' => "\\t".to_string(),
                c if (c as u32) < 0x20 => format!("\\u{:04x}", c as u32),
                c => c.to_string(),
            })
            .collect()
    }

    // Goal: every ASCII byte, at every position around the word boundaries, and non-ASCII text
    // are escaped exactly as the rules say.
    #[test]
    fn escapes_every_byte_at_every_position() {
        for byte in 0u8..0x80 {
            for len in 1..20 {
                for at in 0..len {
                    let mut text = vec![b'x'; len];
                    text[at] = byte;
                    let text = String::from_utf8(text).unwrap();
                    let mut out = b"<".to_vec();
                    write_json_escaped(&mut out, &text);
                    assert_eq!(out, format!("<{}", escaped_one_by_one(&text)).into_bytes(), "{text:?}");
                }
            }
        }
        let mut out = Vec::new();
        write_json_escaped(&mut out, "Habari ya asubuhi? «ok» \u{7f}\u{1} done, \"quoted\"");
        assert_eq!(String::from_utf8(out).unwrap(), "Habari ya asubuhi? «ok» \u{7f}\\u0001 done, \\\"quoted\\\"");
    }
}
