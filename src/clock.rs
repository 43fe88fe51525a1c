//! Wall-clock time as the gateway reads it: injected, never read ad hoc.
//!
//! Production uses the system clock; tests build a gateway on a manual clock they advance by
//! hand, so bucket refills and hold expiry are tested without sleeping. Only this module reads
//! the system clocks (`SystemTime::now`, `Instant::now`, monoio's `Instant::now`, and their
//! `elapsed`); `clippy.toml` refuses them everywhere else. Code that needs a monoio timer
//! deadline gets it here (`deadline_after_ms`, `time_left`), never by reading a clock itself.

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
