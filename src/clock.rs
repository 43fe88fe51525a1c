//! Wall-clock time as the gateway reads it: injected, never read ad hoc.
//!
//! Production uses the system clock; tests build a gateway on a manual clock they advance by
//! hand, so bucket refills and hold expiry are tested without sleeping. Only this module reads
//! the system clocks (`SystemTime::now`, `Instant::now`, monoio's `Instant::now`, and their
//! `elapsed`); `clippy.toml` refuses them everywhere else. Code that needs a monoio timer
//! deadline gets it here (`deadline_after_ms`, `time_left`), never by reading a clock itself.
//! The UTC calendar arithmetic (days to dates and back, RFC 3339 text) is here too: pure
//! functions of an instant, no clock read.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of Unix time in milliseconds.
#[derive(Clone, Debug)]
pub enum Clock {
    System,
    /// A clock that only moves when a test moves it.
    Manual(Arc<AtomicU64>),
}

impl Clock {
    pub fn manual(start_ms: u64) -> Clock {
        Clock::Manual(Arc::new(AtomicU64::new(start_ms)))
    }

    pub fn now_ms(&self) -> u64 {
        match self {
            #[allow(clippy::disallowed_methods)] // the one reader of the wall clock
            Clock::System => SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
            Clock::Manual(now_ms) => now_ms.load(Ordering::Relaxed),
        }
    }

    /// Moves a manual clock forward; a no-op on the system clock.
    pub fn advance_ms(&self, delta_ms: u64) {
        if let Clock::Manual(now_ms) = self {
            now_ms.fetch_add(delta_ms, Ordering::Relaxed);
        }
    }
}

/// Milliseconds since the first call in this process, from the monotonic clock: for intervals
/// that have nothing to do with money or limits (log rate bounds, deadlines of local loops).
pub fn monotonic_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    #[allow(clippy::disallowed_methods)] // the one reader of the monotonic clock
    let now = std::time::Instant::now();
    now.saturating_duration_since(*START.get_or_init(|| now)).as_millis() as u64
}

/// Microseconds since the first call in this process, from the monotonic clock: for latency
/// measurements (histograms, the access log), never for money or limits.
pub fn monotonic_us() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    #[allow(clippy::disallowed_methods)] // the one reader of the monotonic clock
    let now = std::time::Instant::now();
    now.saturating_duration_since(*START.get_or_init(|| now)).as_micros() as u64
}

/// Now on monoio's timer clock, for IO deadlines (`timeout_at`, `sleep_until`) and nothing that
/// touches money or limits (those take `Clock::now_ms`).
pub fn timer_now() -> monoio::time::Instant {
    #[allow(clippy::disallowed_methods)] // the one reader of monoio's timer clock
    monoio::time::Instant::now()
}

/// The timer-clock instant `ms` milliseconds from now: a deadline for monoio's timers.
pub fn deadline_after_ms(ms: u64) -> monoio::time::Instant {
    timer_now() + Duration::from_millis(ms)
}

/// Time left until `deadline` on the timer clock; zero once it has passed.
pub fn time_left(deadline: monoio::time::Instant) -> Duration {
    deadline.saturating_duration_since(timer_now())
}

/// Writes `YYYY-MM-DDTHH:MM:SSZ` of an instant (ms since the epoch, whole seconds shown).
pub fn write_utc(out: &mut impl std::io::Write, at_ms: u64) -> std::io::Result<()> {
    let seconds = at_ms / 1000;
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let in_day = seconds % 86_400;
    write!(out, "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", in_day / 3600, in_day / 60 % 60, in_day % 60)
}

/// `YYYY-MM-DDTHH:MM:SSZ` of an instant, as a string (off the hot path).
pub fn format_utc(at_ms: u64) -> String {
    let mut out = Vec::with_capacity(20);
    let _ = write_utc(&mut out, at_ms);
    String::from_utf8(out).unwrap_or_default()
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31), proleptic Gregorian.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u32;
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}

/// (year, month 1-12, day 1-31) to days since 1970-01-01, the inverse of `civil_from_days`.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}
