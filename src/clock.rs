//! Wall-clock time as the gateway reads it: injected, never read ad hoc.
//!
//! Production uses the system clock; tests build a gateway on a manual clock they advance by
//! hand, so bucket refills and hold expiry are tested without sleeping. Only this module calls
//! `SystemTime::now()` for business logic (the `Date` header cache is the one other reader).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

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
