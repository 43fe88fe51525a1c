//! Writing JSON text by hand on the data path: string escaping, without allocating.
//!
//! Owns the escaping rules (RFC 8259: quote, backslash and control characters) used by every
//! body the gateway writes itself (errors, model lists, sandbox answers, rewritten upstream
//! fields), and the word-at-a-time test for the bytes a JSON string cannot hold as they are,
//! which the escaping here and the scanner's string walk share. It never parses JSON; reading
//! is `openai::chat::json_scan`'s job.

/// The high bit of each byte of `word` (read little-endian) that may be `"`, `\\` or below
/// 0x20: the bytes a JSON string cannot hold as they are (SWAR). No false negatives, and the
/// lowest set bit is always exact, since a borrow only flags bytes above one that really
/// matched: `trailing_zeros() / 8` is the index of the first such byte.
pub fn special_bytes(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let quote = has_zero(word ^ (ONES * u64::from(b'"')));
    let backslash = has_zero(word ^ (ONES * u64::from(b'\\')));
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    quote | backslash | control
}

/// Appends `text` to `out` as the inside of a JSON string (no surrounding quotes).
pub fn write_json_escaped(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut index = 0;
    while index < bytes.len() {
        // Plain bytes eight at a time, then straight to the first one that needs escaping.
        if let Some(word) = bytes.get(index..).and_then(<[u8]>::first_chunk::<8>) {
            let special = special_bytes(u64::from_le_bytes(*word));
            if special == 0 {
                index += 8;
                continue;
            }
            index += (special.trailing_zeros() / 8) as usize;
        } else if let Some(last) = bytes.last_chunk::<8>() {
            // Fewer than eight left: the last eight bytes as one word, those already looked at
            // masked off (`bytes.len() - index` < 8, so the shift is below 64).
            let seen = 8 - (bytes.len() - index);
            let special = special_bytes(u64::from_le_bytes(*last)) & (u64::MAX << (8 * seen));
            if special == 0 {
                break;
            }
            index = bytes.len() - 8 + (special.trailing_zeros() / 8) as usize;
        } else {
            // Fewer than eight bytes in all: those left as one word, padded with spaces (which
            // need no escape).
            let mut padded = [b' '; 8];
            for (slot, &byte) in padded.iter_mut().zip(&bytes[index..]) {
                *slot = byte;
            }
            let special = special_bytes(u64::from_le_bytes(padded));
            if special == 0 {
                break;
            }
            index += (special.trailing_zeros() / 8) as usize;
        }
        let byte = bytes[index];
        let escape: Option<&[u8]> = match byte {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0..=0x1f => None,
            _ => {
                index += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..index]);
        match escape {
            Some(sequence) => out.extend_from_slice(sequence),
            None => {
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(byte >> 4) as usize], HEX[(byte & 15) as usize]])
            }
        }
        index += 1;
        start = index;
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the word scan lands exactly on the first special byte of every position and kind,
    // whatever plain bytes (ASCII, UTF-8 lead and continuation bytes) surround it.
    #[test]
    fn special_bytes_find_the_first_exactly() {
        for special in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
            for filler in [b'a', 0xc3, 0xff, 0x21, 0x20] {
                for at in 0..8 {
                    let mut word = [filler; 8];
                    word[at] = special;
                    // Bytes after it may be special too (a borrow must not move the first).
                    for (after, byte) in word.iter_mut().enumerate().skip(at + 1) {
                        *byte = if after % 2 == 0 { b'"' } else { 0x01 };
                    }
                    let found = special_bytes(u64::from_le_bytes(word));
                    assert_eq!(found.trailing_zeros() / 8, at as u32, "{word:?}");
                }
                assert_eq!(special_bytes(u64::from_le_bytes([filler; 8])), 0);
            }
        }
    }

    /// The escaping as a plain byte-by-byte loop: what the word scan must agree with.
    fn escaped_slowly(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for character in text.chars() {
            match character {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                '\0'..='\u{1f}' => out.extend_from_slice(format!("\\u{:04x}", character as u32).as_bytes()),
                other => out.extend_from_slice(other.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        out
    }

    // Goal: every special character is escaped at every offset and string length (inside a
    // word, at its edges, in the tail shorter than a word), and everything else is copied.
    #[test]
    fn escapes_at_every_offset() {
        for special in ["\"", "\\", "\n", "\r", "\t", "\u{1}", "\u{1f}", "é", "😀", " "] {
            for before in 0..18 {
                for after in 0..10 {
                    let text = format!("{}{special}{}", "x".repeat(before), "y".repeat(after));
                    let mut out = b"[".to_vec();
                    write_json_escaped(&mut out, &text);
                    assert_eq!(out[1..], escaped_slowly(&text), "{text:?}");
                }
            }
        }
        let mut out = Vec::new();
        write_json_escaped(&mut out, "a\"b\\c\u{0}d\ne\u{7f}");
        assert_eq!(out, b"a\\\"b\\\\c\\u0000d\\ne\x7f");
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
                    assert_eq!(out[1..], escaped_slowly(&text), "{text:?}");
                }
            }
        }
        let mut out = Vec::new();
        write_json_escaped(&mut out, "Habari ya asubuhi? «ok» \u{7f}\u{1} done, \"quoted\"");
        assert_eq!(String::from_utf8(out).unwrap(), "Habari ya asubuhi? «ok» \u{7f}\\u0001 done, \\\"quoted\\\"");
    }
}
