//! Go-style duration text (`time.Duration.String`) for whole milliseconds, as the
//! `x-ratelimit-reset-*` headers carry it: `0s`, `12ms`, `1.5s`, `1m12s`, `6m0s`, `1h0m0s`.
//!
//! Owns only the formatting. It writes digits straight into the caller's buffer and never
//! allocates beyond that buffer's growth; it never prints units finer than milliseconds, never
//! rounds, and never uses floating point.

const MS_PER_SECOND: u64 = 1_000;
const MS_PER_MINUTE: u64 = 60 * MS_PER_SECOND;
const MS_PER_HOUR: u64 = 60 * MS_PER_MINUTE;

/// Appends `duration_ms` the way Go's `time.Duration.String` prints that many milliseconds.
///
/// Below one second: `<n>ms` (`0s` for zero). From one second on: optional `<h>h`, then `<m>m`
/// (always present once there are hours), then seconds with the milliseconds as a fraction
/// stripped of trailing zeros, then `s`.
pub fn write_go_duration(out: &mut Vec<u8>, duration_ms: u64) {
    if duration_ms == 0 {
        out.extend_from_slice(b"0s");
        return;
    }
    if duration_ms < MS_PER_SECOND {
        write_decimal(out, duration_ms);
        out.extend_from_slice(b"ms");
        return;
    }
    let hours = duration_ms / MS_PER_HOUR;
    let minutes = duration_ms % MS_PER_HOUR / MS_PER_MINUTE;
    let seconds = duration_ms % MS_PER_MINUTE / MS_PER_SECOND;
    let millis = duration_ms % MS_PER_SECOND;
    if hours > 0 {
        write_decimal(out, hours);
        out.push(b'h');
    }
    if hours > 0 || minutes > 0 {
        write_decimal(out, minutes);
        out.push(b'm');
    }
    write_decimal(out, seconds);
    if millis > 0 {
        // Three fixed digits, then drop the trailing zeros: 500 -> ".5", 40 -> ".04".
        let digits = [digit(millis / 100), digit(millis / 10 % 10), digit(millis % 10)];
        let kept = digits.iter().rposition(|&d| d != b'0').map_or(0, |last| last + 1);
        out.push(b'.');
        out.extend_from_slice(&digits[..kept]);
    }
    out.push(b's');
}

/// ASCII digit for a value below ten.
fn digit(value: u64) -> u8 {
    debug_assert!(value < 10);
    b'0' + value as u8
}

/// Appends `value` in decimal without a sign or leading zeros.
fn write_decimal(out: &mut Vec<u8>, mut value: u64) {
    // u64::MAX has 20 decimal digits.
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = digit(value % 10);
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(duration_ms: u64) -> String {
        let mut out = Vec::new();
        write_go_duration(&mut out, duration_ms);
        String::from_utf8(out).unwrap()
    }

    // Goal: every shape Go's Duration.String prints for whole milliseconds, exactly; the last row is
    // past Go's int64-nanosecond range and shows the same rule carried on (hours keep growing).
    #[test]
    fn formats_like_go() {
        let cases: [(u64, &str); 24] = [
            (0, "0s"),
            (1, "1ms"),
            (12, "12ms"),
            (999, "999ms"),
            (1_000, "1s"),
            (1_001, "1.001s"),
            (1_010, "1.01s"),
            (1_100, "1.1s"),
            (1_146, "1.146s"),
            (1_500, "1.5s"),
            (59_999, "59.999s"),
            (60_000, "1m0s"),
            (60_001, "1m0.001s"),
            (72_000, "1m12s"),
            (72_500, "1m12.5s"),
            (360_000, "6m0s"),
            (3_599_999, "59m59.999s"),
            (3_600_000, "1h0m0s"),
            (3_600_500, "1h0m0.5s"),
            (3_661_000, "1h1m1s"),
            (3_723_004, "1h2m3.004s"),
            (86_400_000, "24h0m0s"),
            (90_061_020, "25h1m1.02s"),
            (u64::MAX, "5124095576030h25m51.615s"),
        ];
        for (duration_ms, expected) in cases {
            assert_eq!(text(duration_ms), expected, "{duration_ms} ms");
        }
    }

    // Goal: the formatter appends after existing bytes and never touches them.
    #[test]
    fn appends_to_existing_bytes() {
        let mut out = b"x-ratelimit-reset-tokens: ".to_vec();
        write_go_duration(&mut out, 72_500);
        write_go_duration(&mut out, 7);
        assert_eq!(out, b"x-ratelimit-reset-tokens: 1m12.5s7ms");
    }

    // Goal: decimal digits come out without leading zeros at the digit-count boundaries.
    #[test]
    fn decimal_boundaries() {
        let cases: [(u64, &str); 6] =
            [(0, "0"), (9, "9"), (10, "10"), (99, "99"), (100, "100"), (u64::MAX, "18446744073709551615")];
        for (value, expected) in cases {
            let mut out = Vec::new();
            write_decimal(&mut out, value);
            assert_eq!(out, expected.as_bytes(), "{value}");
        }
    }
}
