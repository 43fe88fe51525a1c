//! This worker's own share of an account's limits while the shared store is unreachable.
//!
//! Used only for test keys (paid requests fail closed with 503, SPEC §7): each worker enforces
//! `limit / (gateway nodes x workers)` on its own buckets, so the node group as a whole stays
//! within the limit without talking to anyone. It never touches money: what it admits has a
//! zero hold and is never settled.

use std::collections::HashMap;
use std::sync::Arc;

use crate::errors::Bucket;
use crate::limits::FALLBACK_MAX_ACCOUNTS;
use crate::ratelimit::TokenBucket;
use crate::store::{Admission, AdmitRequest, Admitted, RateSnapshot, TierLimits};

/// This worker's own buckets for test keys while the store is unreachable.
#[derive(Default)]
pub struct FallbackBuckets {
    accounts: HashMap<Arc<str>, (TokenBucket, TokenBucket)>,
}

impl FallbackBuckets {
    /// Admits `request` against `limits` divided by `share` (nodes x workers), or refuses it
    /// with the time the local bucket needs.
    pub fn admit(
        &mut self,
        account: &Arc<str>,
        request: &AdmitRequest<'_>,
        limits: &TierLimits,
        share: u64,
    ) -> Admission {
        let now_ms = request.now_ms;
        let share = share.max(1);
        let rpm = (limits.requests_per_minute / share).max(1);
        let tpm = (limits.tokens_per_minute / share).max(1);
        if self.accounts.len() >= FALLBACK_MAX_ACCOUNTS {
            self.accounts.clear();
        }
        let (requests, tokens) = self
            .accounts
            .entry(account.clone())
            .or_insert_with(|| (TokenBucket::full(rpm, now_ms), TokenBucket::full(tpm, now_ms)));
        let mut output_cap = request.requested_output_tokens;
        if !request.client_set_output_cap {
            output_cap = output_cap.min(tpm.saturating_sub(request.input_tokens_upper));
        }
        let needed = request.input_tokens_upper.saturating_add(output_cap);
        let snapshot = |requests: &mut TokenBucket, tokens: &mut TokenBucket| RateSnapshot {
            requests_limit: rpm,
            requests_remaining: requests.available(now_ms),
            requests_reset_ms: requests.reset_after_ms(now_ms),
            tokens_limit: tpm,
            tokens_remaining: tokens.available(now_ms),
            tokens_reset_ms: tokens.reset_after_ms(now_ms),
        };
        if output_cap == 0 || needed > tpm {
            let rates = snapshot(requests, tokens);
            return Admission::TooLargeForTokenLimit { limit: tpm, requested: needed.max(1), rates };
        }
        if request.refuse_clamp && output_cap < request.requested_output_tokens {
            return Admission::WouldClamp { output_cap_tokens: output_cap };
        }
        for (bucket, amount) in [(Bucket::Requests, 1), (Bucket::Tokens, needed)] {
            let target = if bucket == Bucket::Requests { &mut *requests } else { &mut *tokens };
            if let Err(denied) = target.check(amount, now_ms) {
                let limit = target.capacity();
                let used = limit - target.available(now_ms);
                let rates = snapshot(requests, tokens);
                return Admission::RateLimited {
                    bucket,
                    limit,
                    used,
                    requested: amount,
                    retry_after_ms: denied.retry_after_ms,
                    rates,
                };
            }
        }
        let _ = requests.try_take(1, now_ms);
        let _ = tokens.try_take(needed, now_ms);
        let rates = snapshot(requests, tokens);
        Admission::Admitted(Admitted {
            hold: crate::money::Nanos::ZERO,
            output_cap_tokens: output_cap,
            tokens_charged: needed,
            rates,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(now_ms: u64, input_tokens: u64) -> AdmitRequest<'static> {
        AdmitRequest::for_tests(now_ms, input_tokens)
    }

    #[test]
    fn fallback_share_divides_the_limit_per_worker() {
        let account: Arc<str> = Arc::from("acct_1");
        let mut buckets = FallbackBuckets::default();
        let limits = TierLimits::per_minute(60, 1_000_000);
        // 3 nodes x 2 workers: 10 requests per minute here.
        let admitted = (0..20)
            .filter(|_| matches!(buckets.admit(&account, &request(0, 5), &limits, 6), Admission::Admitted(_)))
            .count();
        assert_eq!(admitted, 10);
    }
}
