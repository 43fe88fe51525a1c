//! Waiting for real external state: a process that starts, a port that opens, a log line a
//! server writes after its answer, a message that crosses processes through Redis. Each wait is
//! a bounded poll of a condition, so a test never sleeps a fixed time and hopes.
//!
//! What the gateway does because time passed (bucket refills, hold expiry, cache TTLs) is not
//! waited for here: in-process gateways run on a manual clock (`Clock::manual`) that the test
//! advances instead.

use std::time::{Duration, Instant};

/// How often a condition is polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Polls `condition` until it holds or `within` has passed; whether it held. The condition is
/// always tried once more after the deadline, so a check that starts late still counts.
pub fn wait_until(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    wait_for(within, || condition().then_some(())).is_some()
}

/// Polls `probe` until it returns `Some` or `within` has passed; the value, if any. As
/// `wait_until`, the probe is always tried once more after the deadline.
pub fn wait_for<T>(within: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        let last_try = Instant::now() >= deadline;
        if let Some(value) = probe() {
            return Some(value);
        }
        if last_try {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// `wait_until` inside a monoio runtime, for conditions that are themselves async (a call on a
/// client that lives on the runtime): polls with the runtime's timer instead of blocking it.
pub async fn wait_until_async<F: std::future::Future<Output = bool>>(
    within: Duration,
    mut condition: impl FnMut() -> F,
) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let last_try = Instant::now() >= deadline;
        if condition().await {
            return true;
        }
        if last_try {
            return false;
        }
        monoio::time::sleep(POLL_INTERVAL).await;
    }
}
