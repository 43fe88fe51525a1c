//! Wall-clock time as the gateway reads it: injected, never read ad hoc.
//!
//! Production uses the system clock; tests build a gateway on a manual clock they advance by
//! hand, so bucket refills and hold expiry are tested without sleeping. Only this module reads
//! the system clocks (`SystemTime::now`, `Instant::now`, monoio's `Instant::now`, and their
//! `elapsed`); `clippy.toml` refuses them everywhere else. Code that needs a monoio timer
//! deadline gets it here (`deadline_after_ms`, `time_left`), never by reading a clock itself.
//! The UTC calendar arithmetic (days to dates and back, RFC 3339 text) is here too: pure
//! functions of an instant, no clock read.
//!
//! One read of each clock per event: while a connection task is polled (`ReadOncePerPoll`),
//! the first read of the monotonic clock and of the system clock is kept and every later read
//! in the same poll returns it, so a request's auth, admission, deadlines and log stamps cost
//! one `clock_gettime` each instead of one per use. The kept values are dropped when the poll
//! ends; nothing outside a poll (other tasks, threads) ever sees them. A span timed inside one
//! poll (CPU work with no await between) takes `stopwatch_us`, which always reads.

use std::cell::Cell;
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
            Clock::System => event_or(&EVENT_UNIX_MS, || since_unix_epoch().as_millis() as u64),
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

thread_local! {
    /// Whether this thread is inside a `ReadOncePerPoll` poll.
    static IN_EVENT: Cell<bool> = const { Cell::new(false) };
    /// The monotonic instant this poll read first, while `IN_EVENT`.
    static EVENT_INSTANT: Cell<Option<std::time::Instant>> = const { Cell::new(None) };
    /// The system clock (Unix ms) this poll read first, while `IN_EVENT`.
    static EVENT_UNIX_MS: Cell<Option<u64>> = const { Cell::new(None) };
}

/// The kept value of `slot` during an event (read with `read` the first time), else `read()`.
fn event_or<T: Copy + 'static>(slot: &'static std::thread::LocalKey<Cell<Option<T>>>, read: impl FnOnce() -> T) -> T {
    if !IN_EVENT.get() {
        return read();
    }
    slot.get().unwrap_or_else(|| {
        let now = read();
        slot.set(Some(now));
        now
    })
}

/// Now on the monotonic clock, once per event.
fn instant_now() -> std::time::Instant {
    #[allow(clippy::disallowed_methods)] // the one reader of the monotonic clock
    event_or(&EVENT_INSTANT, std::time::Instant::now)
}

/// Polls `F` with each clock read at most once per poll (see the module doc).
pub struct ReadOncePerPoll<F>(pub F);

impl<F: std::future::Future + Unpin> std::future::Future for ReadOncePerPoll<F> {
    type Output = F::Output;

    fn poll(mut self: std::pin::Pin<&mut Self>, context: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        // Nested (a wrapped future inside another): the outer poll owns the kept values.
        if IN_EVENT.replace(true) {
            return std::pin::Pin::new(&mut self.0).poll(context);
        }
        /// Ends the event even if the poll panics (a caught panic must not leave stale time).
        struct EndEvent;
        impl Drop for EndEvent {
            fn drop(&mut self) {
                IN_EVENT.set(false);
                EVENT_INSTANT.set(None);
                EVENT_UNIX_MS.set(None);
            }
        }
        let _end = EndEvent;
        std::pin::Pin::new(&mut self.0).poll(context)
    }
}

fn process_start() -> std::time::Instant {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *START.get_or_init(instant_now)
}

/// Milliseconds since the process first asked, from the monotonic clock: for intervals that
/// have nothing to do with money or limits (log rate bounds, deadlines of local loops).
pub fn monotonic_ms() -> u64 {
    let start = process_start();
    instant_now().saturating_duration_since(start).as_millis() as u64
}

/// Microseconds since the process first asked, from the monotonic clock: for latency
/// measurements across events (histograms, the access log), never for money or limits.
pub fn monotonic_us() -> u64 {
    let start = process_start();
    instant_now().saturating_duration_since(start).as_micros() as u64
}

/// `monotonic_us` read now, even inside an event: for timing work done within one poll.
pub fn stopwatch_us() -> u64 {
    let start = process_start();
    #[allow(clippy::disallowed_methods)] // the one reader of the monotonic clock
    let now = std::time::Instant::now();
    now.saturating_duration_since(start).as_micros() as u64
}

/// Microseconds since the Unix epoch, read now (never kept per poll): for stamps that another
/// process on the same machine compares with its own clock readings (the sandbox's event stamps
/// for the load generator), never for money, limits or deadlines.
pub fn wall_stopwatch_us() -> u64 {
    since_unix_epoch().as_micros() as u64
}

/// The wall clock read now (zero if it is set before 1970).
fn since_unix_epoch() -> Duration {
    #[allow(clippy::disallowed_methods)] // the one reader of the wall clock
    let now = SystemTime::now();
    now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO)
}

/// Now on monoio's timer clock, for IO deadlines (`timeout_at`, `sleep_until`) and nothing that
/// touches money or limits (those take `Clock::now_ms`).
pub fn timer_now() -> monoio::time::Instant {
    monoio::time::Instant::from_std(instant_now())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    /// Spins until the monotonic clock has visibly moved past `since_us` (a real clock: this is
    /// what the event cache must hide).
    fn wait_past(since_us: u64) {
        while stopwatch_us() <= since_us {
            std::hint::spin_loop();
        }
    }

    // Goal: inside one poll every read of a clock returns the first one (monotonic, timer and
    // system clock alike), `stopwatch_us` still reads; after the poll reads are fresh again,
    // and the next poll keeps a new first read.
    #[test]
    fn each_clock_is_read_once_per_poll() {
        let seen: std::cell::RefCell<Vec<(u64, u64, monoio::time::Instant, u64)>> = Default::default();
        let mut task = ReadOncePerPoll(std::future::poll_fn(|context: &mut Context<'_>| {
            let first = (monotonic_us(), Clock::System.now_ms(), timer_now());
            wait_past(first.0);
            let again = (monotonic_us(), Clock::System.now_ms(), timer_now());
            assert_eq!(first, again, "a second read in the same poll");
            assert!(stopwatch_us() > first.0, "the stopwatch reads the clock");
            let mut seen = seen.borrow_mut();
            seen.push((first.0, first.1, first.2, stopwatch_us()));
            if seen.len() == 2 {
                return Poll::Ready(());
            }
            context.waker().wake_by_ref();
            Poll::Pending
        }));
        let mut context = Context::from_waker(Waker::noop());
        assert!(std::pin::Pin::new(&mut task).poll(&mut context).is_pending());
        let outside = monotonic_us();
        assert!(outside >= seen.borrow()[0].3, "outside a poll the clock is read");
        wait_past(outside);
        assert!(monotonic_us() > outside);
        assert!(std::pin::Pin::new(&mut task).poll(&mut context).is_ready());
        let seen = seen.borrow();
        assert!(seen[1].0 > seen[0].0 && seen[1].2 > seen[0].2, "the next poll reads anew");
        assert!(!IN_EVENT.get() && EVENT_INSTANT.get().is_none() && EVENT_UNIX_MS.get().is_none());
    }
}
