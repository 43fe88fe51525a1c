//! What one worker remembers about refusals so it can skip the shared store: "denied until"
//! entries.
//!
//! A deny entry is written when the store refuses a request. Until the entry runs out, a
//! request of the same account and key kind that the store would refuse for the same reason
//! is refused here, with no store call:
//! - RPM: every request, until the bucket holds one request again (the store's retry time).
//! - TPM: requests at least as large as the refused one, until its retry time.
//! - Wallet (402): requests that need more than the available balance the store reported; when
//!   the account had holds in flight (their settlement frees money), for a quarter of a second
//!   only. With no holds in flight the balance can only grow through a top-up, so the entry
//!   lasts until one (with a one-minute backstop).
//!
//! An entry answers with the figures of the request it refuses, never those of the request that
//! wrote it: a request larger than the whole TPM bucket is told so (non-retryable) before any
//! rate entry is consulted, as the store would, and a TPM refusal names this request's tokens,
//! the bucket's use aged to now and the wait for this request's size.
//!
//! Every entry ends when a top-up is announced (any account: the store's top-up generation
//! moves), since a top-up raises the balance and can move the account to a higher tier.
//!
//! An entry only ever refuses; it never admits, so it cannot cause over-admission.

use std::collections::HashMap;
use std::sync::Arc;

use crate::errors::Bucket;
use crate::limits::{DENY_CACHE_MAX_ENTRIES, QUOTA_DENY_BACKSTOP_MS, QUOTA_DENY_WITH_HOLDS_MS, RATE_DENY_NEVER_MS};
use crate::store::{Admission, AdmitRequest, KeyKind, RateSnapshot};

#[derive(Copy, Clone, Debug)]
struct DenyEntry {
    decided_at_ms: u64,
    until_ms: u64,
    /// The refused request's size.
    input_tokens: u64,
    requested_output_tokens: u64,
    client_set_output_cap: bool,
    /// The store's top-up generation when the entry was written: a top-up anywhere ends it.
    topup_generation: u64,
    refusal: Admission,
}

#[derive(Default)]
pub struct DenyCache {
    entries: HashMap<(Arc<str>, KeyKind), DenyEntry>,
}

impl DenyCache {
    /// The refusal the store would give `request` now, if an entry says so.
    pub fn check(
        &mut self,
        account: &Arc<str>,
        request: &AdmitRequest<'_>,
        topup_generation: u64,
    ) -> Option<Admission> {
        let now_ms = request.now_ms;
        let key = (account.clone(), request.key_kind);
        let entry = *self.entries.get(&key)?;
        // A top-up may have raised the balance or the tier (and with it the limits).
        let topped_up_since = entry.topup_generation != topup_generation;
        if now_ms >= entry.until_ms || now_ms < entry.decided_at_ms || topped_up_since {
            self.entries.remove(&key);
            return None;
        }
        let elapsed_ms = now_ms - entry.decided_at_ms;
        let age = |rates: RateSnapshot| RateSnapshot {
            requests_reset_ms: rates.requests_reset_ms.saturating_sub(elapsed_ms),
            tokens_reset_ms: rates.tokens_reset_ms.saturating_sub(elapsed_ms),
            ..rates
        };
        // The store checks "too large for the bucket" before the buckets: so does an entry.
        if let Admission::RateLimited { rates, .. } = entry.refusal
            && let Some(requested) = too_large_for(request, rates.tokens_limit)
        {
            return Some(Admission::TooLargeForTokenLimit { limit: rates.tokens_limit, requested, rates: age(rates) });
        }
        let at_least_as_large = request.input_tokens_upper >= entry.input_tokens
            && request.requested_output_tokens >= entry.requested_output_tokens
            && request.client_set_output_cap == entry.client_set_output_cap;
        let answer = match entry.refusal {
            Admission::RateLimited { bucket: Bucket::Requests, limit, used, requested, rates, .. } => {
                Some(Admission::RateLimited {
                    bucket: Bucket::Requests,
                    limit,
                    used,
                    requested,
                    retry_after_ms: entry.until_ms - now_ms,
                    rates: age(rates),
                })
            }
            Admission::RateLimited { bucket: Bucket::Tokens, limit, used, rates, .. } if at_least_as_large => {
                // This request's own figures: its tokens, the use the bucket has refilled since,
                // and the wait until the bucket holds this request (never shorter than the
                // entry's, which other admissions may have lengthened).
                let requested = tokens_needed(request, limit);
                let refilled = (u128::from(elapsed_ms) * u128::from(limit) / 60_000) as u64;
                let used = used.saturating_sub(refilled);
                let short = requested.saturating_sub(limit.saturating_sub(used));
                let refill_wait_ms = (u128::from(short) * 60_000).div_ceil(u128::from(limit.max(1)));
                let retry_after_ms = (entry.until_ms - now_ms).max(refill_wait_ms.min(u128::from(u64::MAX)) as u64);
                Some(Admission::RateLimited {
                    bucket: Bucket::Tokens,
                    limit,
                    used,
                    requested,
                    retry_after_ms,
                    rates: age(rates),
                })
            }
            Admission::InsufficientQuota { balance, available, rates, .. } => {
                let needed = request
                    .input_price
                    .cost_of(request.input_tokens_upper)
                    .and_then(|input| input.checked_add(crate::money::Nanos(request.output_price.0)))?;
                (needed > available).then(|| Admission::InsufficientQuota {
                    balance,
                    available,
                    needed,
                    rates: age(rates),
                })
            }
            _ => None,
        };
        // An entry only refuses, and only what the store would refuse now: a wait that has not
        // run out yet, or a need above what the store said was available.
        debug_assert!(
            match &answer {
                None => true,
                Some(Admission::RateLimited { retry_after_ms, .. }) => *retry_after_ms > 0,
                Some(Admission::InsufficientQuota { needed, available, .. }) => needed > available,
                Some(_) => false,
            },
            "a deny entry answered {answer:?}"
        );
        answer
    }

    /// Remembers a refusal from the store (a `WouldClamp` answer refused nothing: not kept).
    pub fn record(
        &mut self,
        account: &Arc<str>,
        request: &AdmitRequest<'_>,
        refusal: &Admission,
        topup_generation: u64,
    ) {
        debug_assert!(!matches!(refusal, Admission::Admitted(_)), "only a refusal is remembered");
        let now_ms = request.now_ms;
        let lasts_ms = match *refusal {
            Admission::RateLimited { retry_after_ms: u64::MAX, .. } => RATE_DENY_NEVER_MS,
            Admission::RateLimited { retry_after_ms, .. } => retry_after_ms,
            Admission::InsufficientQuota { balance, available, .. } if balance == available => QUOTA_DENY_BACKSTOP_MS,
            Admission::InsufficientQuota { .. } => QUOTA_DENY_WITH_HOLDS_MS,
            _ => return,
        };
        if self.entries.len() >= DENY_CACHE_MAX_ENTRIES {
            self.entries.clear();
        }
        self.entries.insert(
            (account.clone(), request.key_kind),
            DenyEntry {
                decided_at_ms: now_ms,
                until_ms: now_ms.saturating_add(lasts_ms),
                input_tokens: request.input_tokens_upper,
                requested_output_tokens: request.requested_output_tokens,
                client_set_output_cap: request.client_set_output_cap,
                topup_generation,
                refusal: *refusal,
            },
        );
    }
}

/// The tokens the store would take for `request` from a TPM bucket of `limit`: the input bound
/// plus the output cap, lowered to what the bucket can hold when the client set no cap.
fn tokens_needed(request: &AdmitRequest<'_>, limit: u64) -> u64 {
    let mut output_cap = request.requested_output_tokens;
    if !request.client_set_output_cap {
        output_cap = output_cap.min(limit.saturating_sub(request.input_tokens_upper));
    }
    request.input_tokens_upper.saturating_add(output_cap.max(1))
}

/// `Some(tokens requested)` when `request` is larger than a TPM bucket of `limit` can ever hold
/// (the store's "too large" test, in its words).
fn too_large_for(request: &AdmitRequest<'_>, limit: u64) -> Option<u64> {
    let requested = tokens_needed(request, limit);
    (requested > limit).then_some(requested)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Nanos;

    fn request(now_ms: u64, input_tokens: u64) -> AdmitRequest<'static> {
        AdmitRequest::for_tests(now_ms, input_tokens)
    }

    fn rates() -> RateSnapshot {
        RateSnapshot {
            requests_limit: 30,
            requests_remaining: 0,
            requests_reset_ms: 2_000,
            tokens_limit: 1_000,
            tokens_remaining: 0,
            tokens_reset_ms: 60_000,
        }
    }

    fn rpm_refusal(retry_after_ms: u64) -> Admission {
        Admission::RateLimited {
            bucket: Bucket::Requests,
            limit: 30,
            used: 30,
            requested: 1,
            retry_after_ms,
            rates: rates(),
        }
    }

    #[test]
    fn rpm_entry_refuses_until_the_retry_time_with_the_time_left() {
        let account: Arc<str> = Arc::from("acct_1");
        let mut cache = DenyCache::default();
        cache.record(&account, &request(10_000, 5), &rpm_refusal(2_000), 7);
        match cache.check(&account, &request(10_500, 5), 7) {
            Some(Admission::RateLimited { retry_after_ms, rates, .. }) => {
                assert_eq!(retry_after_ms, 1_500);
                assert_eq!(rates.requests_reset_ms, 1_500);
                assert_eq!(rates.tokens_reset_ms, 59_500);
            }
            other => panic!("expected a cached refusal, got {other:?}"),
        }
        assert_eq!(cache.check(&account, &request(12_000, 5), 7), None);
        // The entry is gone once expired.
        assert_eq!(cache.check(&account, &request(10_600, 5), 7), None);
    }

    #[test]
    fn any_topup_ends_every_entry() {
        let account: Arc<str> = Arc::from("acct_1");
        let mut cache = DenyCache::default();
        cache.record(&account, &request(10_000, 5), &rpm_refusal(50_000), 7);
        assert_eq!(cache.check(&account, &request(10_001, 5), 8), None);
        assert_eq!(cache.check(&account, &request(10_002, 5), 7), None, "removed, not just skipped");
    }

    #[test]
    fn tpm_entry_refuses_only_requests_at_least_as_large() {
        let account: Arc<str> = Arc::from("acct_1");
        let mut cache = DenyCache::default();
        let refusal = Admission::RateLimited {
            bucket: Bucket::Tokens,
            limit: 1_000,
            used: 950,
            requested: 105,
            retry_after_ms: 3_000,
            rates: rates(),
        };
        cache.record(&account, &request(0, 5), &refusal, 1);
        assert_eq!(cache.check(&account, &request(10, 4), 1), None, "a smaller request asks the store");
        assert!(matches!(cache.check(&account, &request(10, 6), 1), Some(Admission::RateLimited { .. })));
    }

    // Goal (issue 15): while a TPM entry stands, each later request gets its own figures: one
    // larger than the whole bucket is told "too large" (non-retryable), and a refused one is
    // told its own tokens, the use aged to now and the wait for its own size.
    #[test]
    fn tpm_entry_answers_each_request_with_its_own_figures() {
        let account: Arc<str> = Arc::from("acct_1");
        let mut cache = DenyCache::default();
        let tpm_rates = RateSnapshot { tokens_limit: 40_000, tokens_remaining: 32_477, ..rates() };
        // 39,032 tokens asked (38,932 input + 100 output) with 7,523 used: wait 9,832 ms.
        let refusal = Admission::RateLimited {
            bucket: Bucket::Tokens,
            limit: 40_000,
            used: 7_523,
            requested: 39_032,
            retry_after_ms: 9_833,
            rates: tpm_rates,
        };
        cache.record(&account, &request(0, 38_932), &refusal, 1);
        match cache.check(&account, &request(1_500, 41_000), 1) {
            Some(Admission::TooLargeForTokenLimit { limit, requested, rates }) => {
                assert_eq!((limit, requested), (40_000, 41_001), "41,000 input + the minimal answer");
                assert_eq!(rates.tokens_reset_ms, 58_500);
            }
            other => panic!("expected too large, got {other:?}"),
        }
        // 1.5 s later the bucket has refilled 1,000 tokens: 6,523 used; this request needs
        // 39,600, 6,123 more than the 33,477 free: 9,184.5 ms, rounded up, at 40,000 a minute.
        match cache.check(&account, &request(1_500, 39_500), 1) {
            Some(Admission::RateLimited { bucket, limit, used, requested, retry_after_ms, .. }) => {
                assert_eq!((bucket, limit, used, requested), (Bucket::Tokens, 40_000, 6_523, 39_600));
                assert_eq!(retry_after_ms, 9_185);
            }
            other => panic!("expected a rate refusal, got {other:?}"),
        }
        // The request that wrote the entry, asked again: the same wait, by either reckoning.
        match cache.check(&account, &request(1_500, 38_932), 1) {
            Some(Admission::RateLimited { requested, retry_after_ms, .. }) => {
                assert_eq!((requested, retry_after_ms), (39_032, 8_333));
            }
            other => panic!("expected a rate refusal, got {other:?}"),
        }
    }

    #[test]
    fn wallet_entry_refuses_only_what_the_available_balance_cannot_pay() {
        let account: Arc<str> = Arc::from("acct_1");
        let mut cache = DenyCache::default();
        // 5 input tokens at 1,000 + one output token at 2,000 = 7,000 needed; 6,999 available.
        let refusal = Admission::InsufficientQuota {
            balance: Nanos(6_999),
            available: Nanos(6_999),
            needed: Nanos(7_000),
            rates: rates(),
        };
        cache.record(&account, &request(0, 5), &refusal, 1);
        assert_eq!(cache.check(&account, &request(10, 4), 1), None, "6,000 is affordable");
        match cache.check(&account, &request(10, 5), 1) {
            Some(Admission::InsufficientQuota { needed, available, .. }) => {
                assert_eq!(needed, Nanos(7_000));
                assert_eq!(available, Nanos(6_999));
            }
            other => panic!("expected a cached 402, got {other:?}"),
        }
        // No holds in flight: the entry lasts until a top-up (or the one-minute backstop).
        assert!(cache.check(&account, &request(QUOTA_DENY_BACKSTOP_MS - 1, 5), 1).is_some());
        assert!(cache.check(&account, &request(QUOTA_DENY_BACKSTOP_MS, 5), 1).is_none());
    }

    // Goal: an admission handed to the cache as if it were a refusal is caught (debug builds):
    // an entry that could answer "admitted" would admit without the store.
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "only a refusal is remembered")]
    fn an_admission_is_never_remembered() {
        let account: Arc<str> = Arc::from("acct_1");
        let admitted = Admission::Admitted(crate::store::Admitted {
            hold: Nanos(1),
            output_cap_tokens: 1,
            tokens_charged: 6,
            rates: rates(),
        });
        DenyCache::default().record(&account, &request(0, 5), &admitted, 1);
    }

    #[test]
    fn wallet_entry_with_holds_in_flight_is_short() {
        let account: Arc<str> = Arc::from("acct_1");
        let mut cache = DenyCache::default();
        let refusal = Admission::InsufficientQuota {
            balance: Nanos(50_000),
            available: Nanos(10),
            needed: Nanos(7_000),
            rates: rates(),
        };
        cache.record(&account, &request(0, 5), &refusal, 1);
        assert!(cache.check(&account, &request(QUOTA_DENY_WITH_HOLDS_MS - 1, 5), 1).is_some());
        assert!(cache.check(&account, &request(QUOTA_DENY_WITH_HOLDS_MS, 5), 1).is_none());
    }
}
