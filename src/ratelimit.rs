//! Token-bucket arithmetic for RPM and TPM, exact in integers, with time passed in.
//!
//! A bucket holds one minute's limit and refills continuously at `capacity` tokens per 60,000
//! ms. The level is kept in units of 1/60,000 token so one elapsed millisecond adds exactly
//! `capacity` units: no rounding drift, no floating point. A refused take changes nothing; a
//! clock that steps backwards neither panics nor mints tokens. After every refill, take, give
//! back or resize the level is within `0..=capacity` (asserted in debug builds; the lower bound
//! holds by type).
//!
//! A leaf: the stores (which own the shared buckets), the fallback buckets and the response
//! headers all use it; it uses nothing of the crate.

/// The state of both rate buckets of an account, for the `x-ratelimit-*` headers.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct RateSnapshot {
    pub requests_limit: u64,
    pub requests_remaining: u64,
    /// Time until the requests bucket is full again, in milliseconds (rounded up).
    pub requests_reset_ms: u64,
    pub tokens_limit: u64,
    pub tokens_remaining: u64,
    pub tokens_reset_ms: u64,
}

/// Units per token: one minute in milliseconds.
pub const UNITS_PER_TOKEN: u128 = 60_000;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    capacity: u64,
    level_units: u128,
    updated_at_ms: u64,
}

/// A take that would overdraw the bucket.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Denied {
    /// Milliseconds until the bucket holds the requested tokens (rounded up).
    pub retry_after_ms: u64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(capacity: u64, now_ms: u64) -> TokenBucket {
        TokenBucket { capacity, level_units: u128::from(capacity) * UNITS_PER_TOKEN, updated_at_ms: now_ms }
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    fn max_units(&self) -> u128 {
        u128::from(self.capacity) * UNITS_PER_TOKEN
    }

    /// The bucket's invariant: never more than one minute's limit (never below empty by type).
    fn debug_check_level(&self) {
        debug_assert!(
            self.level_units <= self.max_units(),
            "bucket level {} units above its capacity of {} tokens",
            self.level_units,
            self.capacity
        );
    }

    /// Adds what has dripped in since the last update.
    pub fn refill(&mut self, now_ms: u64) {
        if now_ms > self.updated_at_ms {
            let elapsed_ms = u128::from(now_ms - self.updated_at_ms);
            self.level_units = (self.level_units + elapsed_ms * u128::from(self.capacity)).min(self.max_units());
            self.updated_at_ms = now_ms;
        }
        self.debug_check_level();
    }

    /// Whole tokens available now.
    pub fn available(&mut self, now_ms: u64) -> u64 {
        self.refill(now_ms);
        (self.level_units / UNITS_PER_TOKEN) as u64
    }

    /// Checks that `tokens` could be taken now, without taking them.
    pub fn check(&mut self, tokens: u64, now_ms: u64) -> Result<(), Denied> {
        self.refill(now_ms);
        let needed = u128::from(tokens) * UNITS_PER_TOKEN;
        if needed <= self.level_units {
            return Ok(());
        }
        if self.capacity == 0 {
            return Err(Denied { retry_after_ms: u64::MAX });
        }
        let missing = needed - self.level_units;
        let retry_after_ms = missing.div_ceil(u128::from(self.capacity));
        Err(Denied { retry_after_ms: u64::try_from(retry_after_ms).unwrap_or(u64::MAX) })
    }

    /// Takes `tokens` if available; a denial takes nothing.
    pub fn try_take(&mut self, tokens: u64, now_ms: u64) -> Result<(), Denied> {
        self.check(tokens, now_ms)?;
        self.level_units -= u128::from(tokens) * UNITS_PER_TOKEN;
        self.debug_check_level();
        Ok(())
    }

    /// Takes up to `tokens`, stopping at empty (settlement true-up when usage beat the estimate).
    pub fn take_saturating(&mut self, tokens: u64, now_ms: u64) {
        self.refill(now_ms);
        self.level_units = self.level_units.saturating_sub(u128::from(tokens) * UNITS_PER_TOKEN);
        self.debug_check_level();
    }

    /// Returns `tokens` (settlement true-up when the estimate beat usage), never above capacity.
    pub fn give_back(&mut self, tokens: u64, now_ms: u64) {
        self.refill(now_ms);
        self.level_units = (self.level_units + u128::from(tokens) * UNITS_PER_TOKEN).min(self.max_units());
        self.debug_check_level();
    }

    /// Milliseconds until the bucket is full again, rounded up.
    pub fn reset_after_ms(&mut self, now_ms: u64) -> u64 {
        self.refill(now_ms);
        if self.capacity == 0 {
            return 0;
        }
        let missing = self.max_units() - self.level_units;
        u64::try_from(missing.div_ceil(u128::from(self.capacity))).unwrap_or(u64::MAX)
    }

    /// Changes the capacity (tier change or override). A larger capacity adds the difference to
    /// the level (an upgrade is usable at once); a smaller one clamps the level.
    pub fn set_capacity(&mut self, capacity: u64, now_ms: u64) {
        if capacity == self.capacity {
            return;
        }
        self.refill(now_ms);
        if capacity > self.capacity {
            self.level_units += u128::from(capacity - self.capacity) * UNITS_PER_TOKEN;
        }
        self.capacity = capacity;
        self.level_units = self.level_units.min(self.max_units());
        self.debug_check_level();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: taking, refilling, retry and reset times are exact to the millisecond.
    #[test]
    fn exact_refill_and_retry() {
        let mut bucket = TokenBucket::full(30, 1_000);
        for _ in 0..30 {
            bucket.try_take(1, 1_000).unwrap();
        }
        assert_eq!(bucket.available(1_000), 0);
        // 30 per minute: one token every 2,000 ms.
        assert_eq!(bucket.try_take(1, 1_000), Err(Denied { retry_after_ms: 2_000 }));
        assert_eq!(bucket.try_take(1, 2_000), Err(Denied { retry_after_ms: 1_000 }));
        assert_eq!(bucket.available(2_999), 0);
        assert_eq!(bucket.available(3_000), 1);
        assert_eq!(bucket.reset_after_ms(3_000), 58_000);
        bucket.try_take(1, 3_000).unwrap();
        assert_eq!(bucket.reset_after_ms(3_000), 60_000);
        assert_eq!(bucket.available(61_000), 29);
        assert_eq!(bucket.available(1_000_000), 30);
        assert_eq!(bucket.reset_after_ms(1_000_000), 0);
    }

    // Goal: a refused take consumes nothing; partial refills round the retry time up.
    #[test]
    fn denial_consumes_nothing() {
        let mut bucket = TokenBucket::full(40_000, 0);
        bucket.try_take(39_000, 0).unwrap();
        let before = bucket;
        assert_eq!(bucket.try_take(1_001, 0), Err(Denied { retry_after_ms: 2 }));
        assert_eq!(bucket, before);
        // 40,000 per minute = 2/3 token per ms: 1 missing token needs 1.5 ms -> 2 ms.
        let mut bucket = TokenBucket::full(40_000, 0);
        bucket.try_take(40_000, 0).unwrap();
        assert_eq!(bucket.check(1, 0), Err(Denied { retry_after_ms: 2 }));
        assert_eq!(bucket.check(2, 0), Err(Denied { retry_after_ms: 3 }));
    }

    // Goal: a clock stepping backwards mints nothing and does not panic.
    #[test]
    fn clock_backwards_is_harmless() {
        let mut bucket = TokenBucket::full(10, 10_000);
        bucket.try_take(10, 10_000).unwrap();
        assert_eq!(bucket.available(5_000), 0);
        assert_eq!(bucket.available(10_000), 0);
        assert_eq!(bucket.available(16_000), 1);
    }

    // Goal: true-ups and capacity changes stay within [0, capacity].
    #[test]
    fn give_back_take_and_resize() {
        let mut bucket = TokenBucket::full(100, 0);
        bucket.try_take(60, 0).unwrap();
        bucket.give_back(100, 0);
        assert_eq!(bucket.available(0), 100);
        bucket.take_saturating(150, 0);
        assert_eq!(bucket.available(0), 0);
        let mut bucket = TokenBucket::full(30, 0);
        bucket.try_take(30, 0).unwrap();
        bucket.set_capacity(100, 0);
        assert_eq!(bucket.available(0), 70);
        bucket.set_capacity(50, 0);
        assert_eq!(bucket.available(0), 50);
    }

    // Goal: a bucket whose level was corrupted above its capacity is caught at its next take
    // (debug builds), instead of admitting more than one minute's limit.
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "above its capacity")]
    fn a_level_above_capacity_is_caught() {
        let mut bucket = TokenBucket { capacity: 10, level_units: 11 * UNITS_PER_TOKEN, updated_at_ms: 0 };
        let _ = bucket.try_take(1, 0);
    }
}
