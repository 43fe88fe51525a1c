//! Go-style duration text (`time.Duration.String`) for whole milliseconds, as the
//! `x-ratelimit-reset-*` headers carry it: `0s`, `12ms`, `1.5s`, `1m12s`, `6m0s`, `1h0m0s`.
//!
//! Writes digits straight into the caller's buffer; never allocates, never prints microseconds.

use std::io::Write;

/// Appends `duration_ms` formatted the way Go formats a duration of that many milliseconds.
pub fn write_go_duration(out: &mut Vec<u8>, duration_ms: u64) {
    if duration_ms == 0 {
        out.extend_from_slice(b"0s");
        return;
    }
    if duration_ms < 1000 {
        let _ = write!(out, "{duration_ms}ms");
        return;
    }
    let hours = duration_ms / 3_600_000;
    let minutes = duration_ms / 60_000 % 60;
    let seconds = duration_ms / 1000 % 60;
    let millis = duration_ms % 1000;
    if hours > 0 {
        let _ = write!(out, "{hours}h{minutes}m");
    } else if minutes > 0 {
        let _ = write!(out, "{minutes}m");
    }
    let _ = write!(out, "{seconds}");
    if millis > 0 {
        let digits = [b'0' + (millis / 100) as u8, b'0' + (millis / 10 % 10) as u8, b'0' + (millis % 10) as u8];
        let len = if digits[2] != b'0' {
            3
        } else if digits[1] != b'0' {
            2
        } else {
            1
        };
        out.push(b'.');
        out.extend_from_slice(&digits[..len]);
    }
    out.push(b's');
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: every shape Go produces for whole milliseconds, exactly.
    #[test]
    fn formats_like_go() {
        let cases = [
            (0, "0s"),
            (1, "1ms"),
            (12, "12ms"),
            (999, "999ms"),
            (1000, "1s"),
            (1500, "1.5s"),
            (1146, "1.146s"),
            (1050, "1.05s"),
            (59_999, "59.999s"),
            (60_000, "1m0s"),
            (72_000, "1m12s"),
            (72_500, "1m12.5s"),
            (360_000, "6m0s"),
            (3_600_000, "1h0m0s"),
            (3_723_004, "1h2m3.004s"),
        ];
        for (ms, expected) in cases {
            let mut out = Vec::new();
            write_go_duration(&mut out, ms);
            assert_eq!(String::from_utf8(out).unwrap(), expected, "{ms} ms");
        }
    }
}
