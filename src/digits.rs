//! Integers written as decimal ASCII on the stack: response heads, upstream request heads and
//! Redis commands write their numbers with this instead of `write!`, whose formatting
//! machinery costs several times more per number on the request path.

/// A number formatted in decimal on the stack.
pub struct Num {
    bytes: [u8; 20],
    start: usize,
}

/// "00" to "99": two digits per division, half the divisions of one digit at a time.
const DIGIT_PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

impl Num {
    pub fn new(mut value: u64) -> Num {
        let mut bytes = [0u8; 20];
        let mut start = 20;
        while value >= 100 {
            let pair = (value % 100) as usize * 2;
            value /= 100;
            start -= 2;
            bytes[start..start + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
        }
        if value >= 10 {
            let pair = value as usize * 2;
            start -= 2;
            bytes[start..start + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
        } else {
            start -= 1;
            bytes[start] = b'0' + value as u8;
        }
        Num { bytes, start }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[self.start..]
    }
}

/// Appends `value` in decimal to `out`. Up to four digits (statuses, lengths, most counts) are
/// written as a fixed-size copy, which compiles to a store instead of a `memcpy` call.
pub fn push_decimal(out: &mut Vec<u8>, value: u64) {
    let digit = |value: u64| b'0' + (value % 10) as u8;
    match value {
        0..=9 => out.push(digit(value)),
        10..=99 => out.extend_from_slice(&[digit(value / 10), digit(value)]),
        100..=999 => out.extend_from_slice(&[digit(value / 100), digit(value / 10), digit(value)]),
        1_000..=9_999 => {
            out.extend_from_slice(&[digit(value / 1_000), digit(value / 100), digit(value / 10), digit(value)])
        }
        _ => out.extend_from_slice(Num::new(value).as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_width_exactly() {
        for value in [0, 7, 9, 10, 42, 99, 100, 101, 999, 1_000, 65_535, 1_000_000_007, 10u64.pow(19), u64::MAX] {
            assert_eq!(Num::new(value).as_bytes(), value.to_string().as_bytes());
        }
        for value in (0..=100_000u64).chain((1..20).flat_map(|power| {
            let ten = 10u64.pow(power);
            [ten - 1, ten, ten + 1]
        })) {
            assert_eq!(Num::new(value).as_bytes(), value.to_string().as_bytes());
        }
        for value in (0..20_000).chain([99_999, 100_000, u64::MAX]) {
            let mut out = Vec::new();
            push_decimal(&mut out, value);
            assert_eq!(out, value.to_string().as_bytes(), "{value}");
        }
        let mut out = b"n=".to_vec();
        push_decimal(&mut out, 42);
        assert_eq!(out, b"n=42");
    }
}
