//! The gateway's one logging facility: leveled lines on standard error, and rate-bounded lines
//! for failures that repeat.
//!
//! Owns the line format (`fikra-gateway LEVEL module: sentence`), the process-wide level and the
//! rate bound: a call site declared with `log_*_every!` writes at most one line per interval and
//! says how many it held back. A failing dependency therefore logs once per interval, never once
//! per request. It never writes a key, a body or a secret (callers pass ids, never those), and it
//! never allocates: lines are formatted straight into the locked stderr.

use std::io::Write;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// How serious a line is; lines above the process level are skipped before formatting.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
        }
    }

    /// `error`, `warn`, `info` or `debug`.
    pub fn parse(text: &str) -> Option<Level> {
        match text {
            "error" => Some(Level::Error),
            "warn" => Some(Level::Warn),
            "info" => Some(Level::Info),
            "debug" => Some(Level::Debug),
            _ => None,
        }
    }
}

static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Sets the most detailed level written from now on (process-wide).
pub fn set_max_level(level: Level) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Whether a line at `level` would be written.
pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
}

/// Writes one line. Use the macros; they skip disabled levels before formatting.
pub fn write_line(level: Level, module: &str, message: std::fmt::Arguments<'_>, held_back: u64) {
    let module = module.strip_prefix("fikra_gateway::").unwrap_or(module);
    let mut stderr = std::io::stderr().lock();
    let _ = if held_back > 0 {
        writeln!(stderr, "fikra-gateway {} {module}: {message} ({held_back} similar lines held back)", level.as_str())
    } else {
        writeln!(stderr, "fikra-gateway {} {module}: {message}", level.as_str())
    };
}

/// One call site's rate bound: at most one line per `interval_ms`, counting the ones held back.
pub struct RateBound {
    /// Monotonic ms (`clock::monotonic_ms`) of the last line written, plus one (0 = never).
    last_written_ms: AtomicU64,
    held_back: AtomicU64,
}

impl RateBound {
    pub const fn new() -> RateBound {
        RateBound { last_written_ms: AtomicU64::new(0), held_back: AtomicU64::new(0) }
    }

    /// `Some(lines held back since the last one)` if a line may be written at `now_ms`.
    pub fn admit(&self, now_ms: u64, interval_ms: u64) -> Option<u64> {
        let last = self.last_written_ms.load(Ordering::Relaxed);
        let due = last == 0 || now_ms.saturating_add(1) >= last.saturating_add(interval_ms);
        if due
            && self
                .last_written_ms
                .compare_exchange(last, now_ms.saturating_add(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.held_back.swap(0, Ordering::Relaxed))
        } else {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

impl Default for RateBound {
    fn default() -> Self {
        RateBound::new()
    }
}

/// Writes a line at `$level` (a `log::Level`).
#[macro_export]
macro_rules! log_at {
    ($level:expr, $($arg:tt)+) => {
        if $crate::log::enabled($level) {
            $crate::log::write_line($level, module_path!(), format_args!($($arg)+), 0);
        }
    };
}

/// Writes a line at `$level` at most once per `$interval_ms` from this call site.
#[macro_export]
macro_rules! log_at_every {
    ($level:expr, $interval_ms:expr, $($arg:tt)+) => {
        if $crate::log::enabled($level) {
            static BOUND: $crate::log::RateBound = $crate::log::RateBound::new();
            if let Some(held_back) = BOUND.admit($crate::clock::monotonic_ms(), $interval_ms) {
                $crate::log::write_line($level, module_path!(), format_args!($($arg)+), held_back);
            }
        }
    };
}

#[macro_export]
macro_rules! log_error { ($($arg:tt)+) => { $crate::log_at!($crate::log::Level::Error, $($arg)+) }; }
#[macro_export]
macro_rules! log_warn { ($($arg:tt)+) => { $crate::log_at!($crate::log::Level::Warn, $($arg)+) }; }
#[macro_export]
macro_rules! log_info { ($($arg:tt)+) => { $crate::log_at!($crate::log::Level::Info, $($arg)+) }; }
#[macro_export]
macro_rules! log_debug { ($($arg:tt)+) => { $crate::log_at!($crate::log::Level::Debug, $($arg)+) }; }

/// A warning from a call site that can fire per request or per retry: one line per
/// `limits::LOG_REPEAT_INTERVAL_MS` at most.
#[macro_export]
macro_rules! log_warn_every {
    ($($arg:tt)+) => {
        $crate::log_at_every!($crate::log::Level::Warn, $crate::limits::LOG_REPEAT_INTERVAL_MS, $($arg)+)
    };
}

/// An error from a call site that can fire per request: one line per
/// `limits::LOG_REPEAT_INTERVAL_MS` at most.
#[macro_export]
macro_rules! log_error_every {
    ($($arg:tt)+) => {
        $crate::log_at_every!($crate::log::Level::Error, $crate::limits::LOG_REPEAT_INTERVAL_MS, $($arg)+)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: a bound admits the first line, holds back repeats inside the interval and reports
    // how many it held back with the next line it admits.
    #[test]
    fn a_rate_bound_writes_once_per_interval_and_counts_the_rest() {
        let bound = RateBound::new();
        assert_eq!(bound.admit(0, 1000), Some(0));
        assert_eq!(bound.admit(10, 1000), None);
        assert_eq!(bound.admit(998, 1000), None);
        assert_eq!(bound.admit(999, 1000), None);
        assert_eq!(bound.admit(1000, 1000), Some(3));
        assert_eq!(bound.admit(1500, 1000), None);
        assert_eq!(bound.admit(2000, 1000), Some(1));
    }

    #[test]
    fn levels_parse_and_order() {
        assert_eq!(Level::parse("warn"), Some(Level::Warn));
        assert_eq!(Level::parse("loud"), None);
        assert!(Level::Error < Level::Debug);
    }
}
