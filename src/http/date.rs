//! The `Date` header value, cached per thread and refreshed once per second.
//!
//! Formatting a date per response would cost a syscall and a conversion; instead each worker
//! thread keeps the current IMF-fixdate (RFC 9110 §5.6.7) and reformats it only when the wall
//! clock has moved to a new second. Never allocates after the first call on a thread.

use std::cell::Cell;

use crate::clock::Clock;

/// Length of an IMF-fixdate such as `Sun, 06 Nov 1994 08:49:37 GMT`.
pub const HTTP_DATE_LEN: usize = 29;

thread_local! {
    static CACHED: Cell<(u64, [u8; HTTP_DATE_LEN])> = const { Cell::new((u64::MAX, [0; HTTP_DATE_LEN])) };
}

/// Appends the current date as an IMF-fixdate.
pub fn write_http_date(out: &mut Vec<u8>) {
    // The real time is the point of a `Date` header: the system clock, never a test's clock.
    let now_s = Clock::System.now_ms() / 1000;
    let (cached_s, mut text) = CACHED.with(Cell::get);
    if cached_s != now_s {
        text = format_http_date(now_s);
        CACHED.with(|cell| cell.set((now_s, text)));
    }
    out.extend_from_slice(&text);
}

/// Formats Unix seconds as an IMF-fixdate.
pub fn format_http_date(unix_s: u64) -> [u8; HTTP_DATE_LEN] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] =
        [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
    let days_since_epoch = unix_s / 86_400;
    let second_of_day = unix_s % 86_400;
    let (year, month, day) = civil_from_days(days_since_epoch as i64);
    let mut text = [b' '; HTTP_DATE_LEN];
    text[0..3].copy_from_slice(DAYS[(days_since_epoch % 7) as usize]);
    text[3] = b',';
    put_two(&mut text[5..7], day as u64);
    text[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    put_two(&mut text[12..14], (year / 100) as u64);
    put_two(&mut text[14..16], (year % 100) as u64);
    put_two(&mut text[17..19], second_of_day / 3600);
    text[19] = b':';
    put_two(&mut text[20..22], second_of_day / 60 % 60);
    text[22] = b':';
    put_two(&mut text[23..25], second_of_day % 60);
    text[26..29].copy_from_slice(b"GMT");
    text
}

fn put_two(slot: &mut [u8], value: u64) {
    slot[0] = b'0' + (value / 10 % 10) as u8;
    slot[1] = b'0' + (value % 10) as u8;
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31), proleptic Gregorian.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: known instants format exactly as RFC 9110's example and a leap day.
    #[test]
    fn formats_known_dates() {
        assert_eq!(&format_http_date(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&format_http_date(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&format_http_date(1_709_210_096), b"Thu, 29 Feb 2024 12:34:56 GMT");
    }
}
