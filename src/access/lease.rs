//! Leases: a worker's own slice of a busy account's shared rate buckets and wallet, so most of
//! the account's requests on this worker are admitted and settled with no store call.
//!
//! A lease holds request tokens and TPM tokens already taken out of the account's buckets in
//! the store, and an escrow already taken out of its wallet (a hold in the store under the
//! lease's id). A request is admitted locally only if the lease covers all of it: one request
//! token, its tokens, and its full hold from the free escrow; otherwise it goes to the store as
//! usual (which may clamp or refuse it). Settling locally charges the escrow in this worker's
//! books and queues a usage record; one lease call (`fk_lease`) then pays for the queued
//! records, gives back what is unused and takes the next period's grant, atomically.
//!
//! Bounds (see `crate::limits` for the numbers):
//! - Money: the escrow leaves the wallet before it is spent, a request's hold must fit in the
//!   free escrow, and the store charges a call from the escrow first and never below zero. The
//!   wallet never goes negative; a customer is charged only for records the store applied.
//! - Rate: every leased token was taken from the shared bucket, so the cluster admits no more
//!   than the bucket allowed, except that a token may be spent up to `LEASE_MAX_AGE_MS` after
//!   it was taken. In any window the cluster admits at most `rpm x LEASE_MAX_AGE_MS / 60000`
//!   requests (and TPM likewise) beyond what the bucket alone would have.
//! - Each grant is at most `1/LEASE_SHARE` of what is left, so leases never drain a bucket or a
//!   wallet: near a limit, requests go to the store one by one and its answers are exact.
//! - A node that dies loses its queued records (the customer is not charged for them: an
//!   operator loss of at most one call's worth) and its leased tokens (the account is briefly
//!   under-served); its escrow is released by the reaper once `LEASE_ESCROW_TTL_MS` passes.
//!
//! Calls are made by one task per worker (`run_leases`), one at a time per lease, and retried
//! with the same sequence number until the store answers, so each is applied exactly once.
//!
//! Asserted in debug builds: a local admission takes only tokens the lease holds and its hold
//! fits in the free escrow; a local settlement charges at most its hold; a store answer grants
//! no more requests, tokens or escrow than the call asked for, and pays only charges this lease
//! queued.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use crate::limits::{
    LEASE_HORIZON_MS, LEASE_IDLE_MS, LEASE_MAX_AGE_MS, LEASE_MAX_BACKLOG_RECORDS, LEASE_MAX_RECORDS_PER_CALL,
    LEASE_MIN_REQUESTS_PER_S, LEASE_MIN_RPM, LEASE_RATE_WINDOW_MS, LEASE_RETRY_MS, LEASE_SHARE, LEASE_STARVED_PAUSE_MS,
    LEASE_TRACKED_ACCOUNTS_MAX,
};
use crate::money::Nanos;
use crate::store::{
    AdmitRequest, Admitted, KeyKind, LeaseCall, LeaseRecord, LeaseReply, LimitPolicy, RateSnapshot, StoreError,
    TIER_TRUSTED, TIER_UNVERIFIED,
};

/// Tokens granted by one lease call, spent oldest first and given back once too old.
#[derive(Copy, Clone, Debug)]
struct Grant {
    granted_at_ms: u64,
    requests: u64,
    tokens: u64,
}

/// One account's lease on this worker (or just its recent traffic, while it has none).
#[derive(Debug, Default)]
struct AccountLease {
    lease_id: Option<Arc<str>>,
    grants: VecDeque<Grant>,
    /// The escrow the store holds for this lease, as of the last call applied.
    escrow: Nanos,
    /// Holds of requests admitted from the lease and not settled yet.
    committed: Nanos,
    /// Charges settled locally and not yet applied by the store (the call in flight included).
    unpaid: Nanos,
    in_flight: u64,
    /// Waiting for the next call.
    records: Vec<LeaseRecord>,
    tokens_delta: i64,
    /// The call in flight, or the one that failed and must be retried as it is.
    pending: Option<Rc<LeaseCall>>,
    seq: u64,
    last_call_ms: u64,
    last_used_ms: u64,
    /// The account's tier was trusted at the last call (whether cached tokens count for TPM).
    account_trusted: bool,
    /// The store's view after the last call, and what was taken locally since.
    rates: Option<RateSnapshot>,
    requests_since_call: u64,
    tokens_since_call: u64,
    /// Sizing: admissions counted over the current window, and the rate of the last one.
    window_start_ms: u64,
    window_admissions: u64,
    requests_per_s: u64,
    hold_per_request: Nanos,
    tokens_per_request: u64,
    requests_limit: u64,
    /// The last call granted no requests though some were wanted (the bucket is low): running
    /// low does not call again before this time.
    starved_until_ms: u64,
}

/// What `records` charge together; saturating, so no list of charges can wrap to a small sum.
pub fn total_cost(records: &[LeaseRecord]) -> Nanos {
    records.iter().fold(Nanos::ZERO, |total, record| total.saturating_add(record.cost))
}

impl AccountLease {
    fn requests(&self) -> u64 {
        self.grants.iter().fold(0u64, |total, g| total.saturating_add(g.requests))
    }

    fn tokens(&self) -> u64 {
        self.grants.iter().fold(0u64, |total, g| total.saturating_add(g.tokens))
    }

    fn free_escrow(&self) -> Nanos {
        Nanos(self.escrow.0.saturating_sub(self.committed.0).saturating_sub(self.unpaid.0))
    }

    fn holds_anything(&self) -> bool {
        self.escrow.0 > 0 || !self.grants.is_empty() || self.in_flight > 0 || !self.records.is_empty()
    }

    /// Admissions per second: the last full window's rate, or the current window's if it is
    /// higher (traffic that just started, or resumed after a pause, is seen within 50 ms).
    fn rate_per_s(&self, now_ms: u64) -> u64 {
        let elapsed_ms = now_ms.saturating_sub(self.window_start_ms);
        let current =
            if elapsed_ms >= LEASE_RATE_WINDOW_MS / 5 { self.window_admissions * 1000 / elapsed_ms } else { 0 };
        self.requests_per_s.max(current)
    }

    fn eligible(&self, now_ms: u64) -> bool {
        self.rate_per_s(now_ms) >= LEASE_MIN_REQUESTS_PER_S && self.requests_limit >= LEASE_MIN_RPM
    }

    /// Requests the next grant should cover: the horizon's worth of the recent rate.
    fn target_requests(&self, now_ms: u64) -> u64 {
        (self.rate_per_s(now_ms) * LEASE_HORIZON_MS / 1000).max(LEASE_MIN_REQUESTS_PER_S / 2)
    }

    fn idle(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_used_ms) >= LEASE_IDLE_MS && self.in_flight == 0
    }

    fn take(&mut self, tokens: u64) {
        let mut requests_left = 1;
        let mut tokens_left = tokens;
        for grant in self.grants.iter_mut() {
            let requests = grant.requests.min(requests_left);
            grant.requests -= requests;
            requests_left -= requests;
            let taken = grant.tokens.min(tokens_left);
            grant.tokens -= taken;
            tokens_left -= taken;
            if requests_left == 0 && tokens_left == 0 {
                break;
            }
        }
        debug_assert!(
            requests_left == 0 && tokens_left == 0,
            "a local admission takes only tokens the lease was granted ({requests_left} requests, {tokens_left} tokens short)"
        );
        self.grants.retain(|g| g.requests > 0 || g.tokens > 0);
    }
}

/// What a worker settles for a request admitted from its lease; `record.cost` is the actual
/// cost, charged up to `hold`.
pub struct LeaseSettlement {
    pub hold: Nanos,
    pub tokens_charged: u64,
    pub record: LeaseRecord,
}

/// One worker's leases.
pub struct LeaseBook {
    /// Prefix of this worker's lease ids: node tag and worker index.
    owner: Box<str>,
    accounts: HashMap<Arc<str>, AccountLease>,
}

impl LeaseBook {
    pub fn new(owner: &str) -> LeaseBook {
        LeaseBook { owner: owner.into(), accounts: HashMap::new() }
    }

    /// Counts one admission of `account` (from the store or the lease) for sizing its lease.
    pub fn observe(&mut self, account: &Arc<str>, now_ms: u64, admitted: &Admitted) {
        if !self.accounts.contains_key(account) && self.accounts.len() >= LEASE_TRACKED_ACCOUNTS_MAX {
            self.accounts.retain(|_, lease| lease.holds_anything() || lease.pending.is_some());
        }
        let lease = self.accounts.entry(account.clone()).or_default();
        if now_ms.saturating_sub(lease.window_start_ms) >= LEASE_RATE_WINDOW_MS {
            let elapsed_ms = now_ms.saturating_sub(lease.window_start_ms).max(1);
            // A window long past says nothing about now.
            lease.requests_per_s =
                if elapsed_ms >= 2 * LEASE_RATE_WINDOW_MS { 0 } else { lease.window_admissions * 1000 / elapsed_ms };
            lease.window_start_ms = now_ms;
            lease.window_admissions = 0;
        }
        lease.window_admissions += 1;
        lease.last_used_ms = now_ms;
        lease.hold_per_request = lease.hold_per_request.max(admitted.hold);
        lease.tokens_per_request = lease.tokens_per_request.max(admitted.tokens_charged);
        lease.requests_limit = admitted.rates.requests_limit;
    }

    /// Admits `request` from the account's lease if the lease covers all of it.
    pub fn try_admit(&mut self, request: &AdmitRequest<'_>) -> Option<Admitted> {
        // A capped key's spend is known to the store only: never served from a lease.
        if request.spend_cap.is_some() {
            return None;
        }
        let lease = self.accounts.get_mut(request.account_id)?;
        let rates = lease.rates?;
        // Backpressure: while the store pays records slower than they come, requests take the
        // per-request path (which waits for the store) instead of growing the backlog.
        if lease.records.len() >= LEASE_MAX_BACKLOG_RECORDS {
            return None;
        }
        let mut output_cap = request.requested_output_tokens;
        if !request.client_set_output_cap {
            output_cap = output_cap.min(rates.tokens_limit.saturating_sub(request.input_tokens_upper));
        }
        // The first stage of a counted model never clamps here: the store answers `WouldClamp`.
        if request.refuse_clamp && output_cap < request.requested_output_tokens {
            return None;
        }
        let tokens = request.input_tokens_upper.checked_add(output_cap)?;
        let hold = request
            .input_price
            .cost_of(request.input_tokens_upper)?
            .0
            .checked_add(request.output_price.cost_of(output_cap)?.0)
            .map(Nanos)?;
        if output_cap == 0 || lease.requests() == 0 || lease.tokens() < tokens || lease.free_escrow() < hold {
            return None;
        }
        lease.take(tokens);
        lease.committed = lease.committed.saturating_add(hold);
        // The hold came out of the free escrow: what is committed and owed still fits in it.
        debug_assert!(
            hold == Nanos::ZERO || lease.committed.saturating_add(lease.unpaid) <= lease.escrow,
            "a local hold must fit in the escrow: committed {} + unpaid {} > escrow {}",
            lease.committed,
            lease.unpaid,
            lease.escrow
        );
        lease.in_flight += 1;
        lease.requests_since_call += 1;
        lease.tokens_since_call = lease.tokens_since_call.saturating_add(tokens);
        let rates = RateSnapshot {
            requests_remaining: rates.requests_remaining.saturating_sub(lease.requests_since_call),
            tokens_remaining: rates.tokens_remaining.saturating_sub(lease.tokens_since_call),
            ..rates
        };
        Some(Admitted { hold, output_cap_tokens: output_cap, tokens_charged: tokens, rates })
    }

    /// Settles a request admitted from the lease: the charge (at most its hold) is queued for
    /// the next call. Returns the operator loss (the cost above the hold).
    pub fn settle(&mut self, account: &str, settlement: LeaseSettlement, policy: &LimitPolicy) -> Nanos {
        let Some(lease) = self.accounts.get_mut(account) else { return Nanos::ZERO };
        let cost = settlement.record.cost;
        let (charged, loss) = crate::money::charge_within_hold(cost, settlement.hold);
        lease.committed = Nanos(lease.committed.0.saturating_sub(settlement.hold.0));
        lease.unpaid = lease.unpaid.saturating_add(charged);
        lease.in_flight = lease.in_flight.saturating_sub(1);
        let tier = if lease.account_trusted { TIER_TRUSTED } else { TIER_UNVERIFIED };
        let actual = settlement.record.tokens.rate_limited_tokens(policy.counts_cached_tokens(tier, KeyKind::Live));
        if actual < settlement.tokens_charged {
            // Unused tokens stay in the lease (they were taken from the bucket already).
            let back = settlement.tokens_charged - actual;
            match lease.grants.back_mut() {
                Some(grant) => grant.tokens = grant.tokens.saturating_add(back),
                None => lease.tokens_delta = lease.tokens_delta.saturating_add(back as i64),
            }
        } else {
            lease.tokens_delta = lease.tokens_delta.saturating_sub((actual - settlement.tokens_charged) as i64);
        }
        let mut record = settlement.record;
        record.cost = charged;
        // What is queued for the store never charges more than the request's hold (SPEC §3.4).
        debug_assert!(record.cost <= settlement.hold, "a lease charge above its hold");
        lease.records.push(record);
        loss
    }

    /// Accounts whose lease needs a call now.
    pub fn due(&self, now_ms: u64) -> Vec<Arc<str>> {
        self.accounts
            .iter()
            .filter(|(_, lease)| {
                if lease.pending.is_some() {
                    return now_ms.saturating_sub(lease.last_call_ms) >= LEASE_RETRY_MS;
                }
                if lease.rates.is_none() {
                    return lease.eligible(now_ms) && !lease.idle(now_ms);
                }
                let oldest_ms = lease.grants.front().map_or(now_ms, |g| g.granted_at_ms);
                lease.records.len() >= LEASE_MAX_RECORDS_PER_CALL / 2
                    || (lease.requests() * 2 < lease.target_requests(now_ms) && now_ms >= lease.starved_until_ms)
                    || now_ms.saturating_sub(oldest_ms) >= LEASE_MAX_AGE_MS
                    || now_ms.saturating_sub(lease.last_call_ms) >= LEASE_MAX_AGE_MS
                    || lease.idle(now_ms)
            })
            .map(|(account, _)| account.clone())
            .collect()
    }

    /// The next call for `account`'s lease (the failed one again, if any). One task per worker
    /// makes the calls, one at a time, so a call is applied before the next is prepared.
    pub fn prepare_call(&mut self, account: &Arc<str>, now_ms: u64) -> Option<Rc<LeaseCall>> {
        let owner = &self.owner;
        let lease = self.accounts.get_mut(account)?;
        lease.last_call_ms = now_ms;
        if let Some(call) = &lease.pending {
            return Some(Rc::clone(call));
        }
        let lease_id = lease.lease_id.get_or_insert_with(|| Arc::from(format!("{owner}:{account}"))).clone();
        // Tokens older than the age bound go back; with an idle lease, everything does.
        let ending = lease.idle(now_ms) || (!lease.eligible(now_ms) && lease.rates.is_some() && lease.in_flight == 0);
        let (mut return_requests, mut return_tokens) = (0u64, 0u64);
        while let Some(grant) = lease.grants.front() {
            if !ending && now_ms.saturating_sub(grant.granted_at_ms) < LEASE_MAX_AGE_MS {
                break;
            }
            return_requests = return_requests.saturating_add(grant.requests);
            return_tokens = return_tokens.saturating_add(grant.tokens);
            lease.grants.pop_front();
        }
        let take = lease.records.len().min(LEASE_MAX_RECORDS_PER_CALL);
        let records: Vec<LeaseRecord> = lease.records.drain(..take).collect();
        let paying = total_cost(&records);
        let tokens_delta = std::mem::take(&mut lease.tokens_delta).saturating_add(return_tokens as i64);
        let (want_requests, want_tokens, want_escrow) = if ending {
            // Unpaid charges left out of this call (more than one call's worth) keep their escrow.
            (0, 0, lease.committed.saturating_add(lease.unpaid.saturating_sub(paying)))
        } else {
            let target = lease.target_requests(now_ms).min(lease.requests_limit / LEASE_SHARE);
            let want_requests = target.saturating_sub(lease.requests());
            let want_tokens = target.saturating_mul(lease.tokens_per_request).saturating_sub(lease.tokens());
            let escrow = lease
                .committed
                .saturating_add(lease.unpaid.saturating_sub(paying))
                .saturating_add(Nanos(target.saturating_mul(lease.hold_per_request.0)));
            (want_requests, want_tokens, escrow)
        };
        lease.seq += 1;
        let call = LeaseCall {
            account_id: account.clone(),
            lease_id,
            seq: lease.seq,
            now_ms,
            return_requests,
            tokens_delta,
            want_requests,
            want_tokens,
            want_escrow,
            share: LEASE_SHARE,
            records,
        };
        // Shared with the caller, not copied: the records are only read until the store answers.
        let call = Rc::new(call);
        lease.pending = Some(Rc::clone(&call));
        Some(call)
    }

    /// Applies the store's answer to `call`.
    pub fn apply(&mut self, call: &LeaseCall, result: Result<LeaseReply, StoreError>, now_ms: u64) {
        let Some(lease) = self.accounts.get_mut(&call.account_id) else { return };
        let paying = total_cost(&call.records);
        // The call pays charges settled on this lease and not yet applied (retries included).
        debug_assert!(
            result.is_err() || paying <= lease.unpaid,
            "lease {} pays {paying} but owes only {}",
            call.lease_id,
            lease.unpaid
        );
        match result {
            Ok(LeaseReply::Granted { requests, tokens, escrow, rates, account_trusted, .. }) => {
                // After the store's answer: never more than was asked (the store grants at most
                // 1/LEASE_SHARE of what is left, and caps the escrow at the one wanted).
                debug_assert!(
                    requests <= call.want_requests && tokens <= call.want_tokens && escrow <= call.want_escrow,
                    "lease {} was granted {requests} requests, {tokens} tokens, escrow {escrow} for {} / {} / {}",
                    call.lease_id,
                    call.want_requests,
                    call.want_tokens,
                    call.want_escrow
                );
                lease.pending = None;
                lease.account_trusted = account_trusted;
                lease.unpaid = lease.unpaid.saturating_sub(paying);
                lease.escrow = escrow;
                if requests > 0 || tokens > 0 {
                    lease.grants.push_back(Grant { granted_at_ms: now_ms, requests, tokens });
                }
                if requests == 0 && call.want_requests > 0 {
                    lease.starved_until_ms = now_ms + LEASE_STARVED_PAUSE_MS;
                }
                lease.rates = Some(rates);
                lease.requests_since_call = 0;
                lease.tokens_since_call = 0;
                if call.want_requests == 0 && call.want_tokens == 0 && escrow.0 == 0 && lease.records.is_empty() {
                    // Ended: back to counting traffic only.
                    lease.rates = None;
                    lease.grants.clear();
                    lease.requests_per_s = 0;
                }
            }
            Ok(LeaseReply::Superseded) | Err(StoreError::NotFound) => {
                // Nothing more can be applied for this lease: start over with a fresh one.
                lease.pending = None;
                lease.unpaid = lease.unpaid.saturating_sub(paying);
                lease.lease_id = None;
                lease.rates = None;
                lease.grants.clear();
                lease.escrow = Nanos::ZERO;
            }
            Err(_) => {
                // Retried as it is (same sequence number) after LEASE_RETRY_MS.
            }
        }
    }

    /// Calls that end every lease (shutdown): everything unused given back, the escrow released.
    pub fn end_all(&mut self, now_ms: u64) -> Vec<Rc<LeaseCall>> {
        let accounts: Vec<Arc<str>> = self
            .accounts
            .iter()
            .filter(|(_, lease)| lease.rates.is_some() || lease.pending.is_some())
            .map(|(account, _)| account.clone())
            .collect();
        accounts
            .into_iter()
            .filter_map(|account| {
                let lease = self.accounts.get_mut(&account)?;
                lease.last_used_ms = 0;
                lease.in_flight = 0;
                self.prepare_call(&account, now_ms.max(LEASE_IDLE_MS))
            })
            .collect()
    }

    /// Whether some lease has at least half a call's worth of records waiting (the lease task
    /// then calls again at once instead of waiting for its next tick).
    pub fn backlogged(&self) -> bool {
        self.accounts
            .values()
            .any(|lease| lease.pending.is_none() && lease.records.len() >= LEASE_MAX_RECORDS_PER_CALL / 2)
    }

    /// Whether `account` has a lease that is not fully applied (tests, shutdown).
    pub fn has_unsettled(&self) -> bool {
        self.accounts.values().any(|lease| lease.pending.is_some() || !lease.records.is_empty() || lease.escrow.0 > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::NanosPerToken;
    use crate::store::{KeyKind, Outcome};

    const ACCOUNT: &str = "busy";

    fn request(now_ms: u64) -> AdmitRequest<'static> {
        AdmitRequest {
            request_id: "req",
            account_id: ACCOUNT,
            key_id: "k1",
            key_kind: KeyKind::Live,
            model: "m",
            input_tokens_upper: 10,
            requested_output_tokens: 6,
            client_set_output_cap: true,
            refuse_clamp: false,
            input_price: NanosPerToken(100),
            output_price: NanosPerToken(200),
            now_ms,
            spend_cap: None,
        }
    }

    fn rates() -> RateSnapshot {
        RateSnapshot {
            requests_limit: 6_000,
            requests_remaining: 5_000,
            requests_reset_ms: 0,
            tokens_limit: 1_000_000,
            tokens_remaining: 900_000,
            tokens_reset_ms: 0,
        }
    }

    fn admitted() -> Admitted {
        Admitted { hold: Nanos(2_200), output_cap_tokens: 6, tokens_charged: 16, rates: rates() }
    }

    /// A book whose account has been busy enough to lease (40 admissions a second).
    fn busy_book() -> (LeaseBook, Arc<str>) {
        let mut book = LeaseBook::new("node-0");
        let account: Arc<str> = Arc::from(ACCOUNT);
        for n in 0..=40 {
            book.observe(&account, n * 25, &admitted());
        }
        (book, account)
    }

    fn grant(requests: u64, tokens: u64, escrow: u64) -> LeaseReply {
        LeaseReply::Granted {
            requests,
            tokens,
            escrow: Nanos(escrow),
            charged: Nanos::ZERO,
            operator_loss: Nanos::ZERO,
            rates: rates(),
            account_trusted: false,
        }
    }

    fn settlement(request_id: &str) -> LeaseSettlement {
        LeaseSettlement {
            hold: Nanos(2_200),
            tokens_charged: 16,
            record: LeaseRecord {
                request_id: request_id.into(),
                key_id: Arc::from("k1"),
                model: "m".into(),
                tokens: crate::money::TokenUsage::new(8, 4),
                cost: Nanos(1_600),
                outcome: Outcome::Completed,
            },
        }
    }

    #[test]
    fn a_busy_account_asks_for_a_lease_sized_from_its_rate() {
        let (mut book, account) = busy_book();
        assert_eq!(book.due(1_000), vec![account.clone()]);
        let call = book.prepare_call(&account, 1_000).unwrap();
        // 40 requests/s over a one-second horizon: 40 requests of 16 tokens and 2,200 nano-USD each.
        assert_eq!((call.seq, call.want_requests, call.want_tokens, call.want_escrow), (1, 40, 640, Nanos(88_000)));
        assert_eq!(call.lease_id.as_ref(), "node-0:busy");
        assert!(book.due(1_000).is_empty(), "one call at a time");
    }

    #[test]
    fn admits_locally_only_what_the_lease_fully_covers() {
        let (mut book, account) = busy_book();
        let call = book.prepare_call(&account, 1_000).unwrap();
        book.apply(&call, Ok(grant(3, 40, 5_000)), 1_000);
        // Two holds of 2,200 fit in 5,000; the third does not (the store decides it).
        assert!(book.try_admit(&request(1_001)).is_some());
        let second = book.try_admit(&request(1_002)).unwrap();
        assert_eq!((second.hold, second.output_cap_tokens, second.tokens_charged), (Nanos(2_200), 6, 16));
        assert_eq!(second.rates.requests_remaining, 4_998);
        assert!(book.try_admit(&request(1_003)).is_none());
        // Settling frees the hold's unused part: 2,200 - 1,600 = 600 back in the free escrow.
        book.settle(&account, settlement("r1"), &LimitPolicy::reference());
        let lease = &book.accounts[&account];
        assert_eq!((lease.committed, lease.unpaid, lease.free_escrow()), (Nanos(2_200), Nanos(1_600), Nanos(1_200)));
        // 16 tokens taken, 12 used: 4 stay in the lease (40 - 32 + 4).
        assert_eq!(lease.tokens(), 12);
    }

    #[test]
    fn a_failed_call_is_retried_unchanged_and_its_records_are_paid_once() {
        let (mut book, account) = busy_book();
        let first = book.prepare_call(&account, 1_000).unwrap();
        book.apply(&first, Ok(grant(5, 100, 10_000)), 1_000);
        book.try_admit(&request(1_001)).unwrap();
        book.settle(&account, settlement("r1"), &LimitPolicy::reference());
        let mut now = 1_100;
        while !book.due(now).contains(&account) {
            now += 20;
        }
        let second = book.prepare_call(&account, now).unwrap();
        assert_eq!(second.records.len(), 1);
        book.apply(&second, Err(StoreError::Unavailable), now);
        assert!(book.due(now + LEASE_RETRY_MS - 1).is_empty());
        let retried = book.prepare_call(&account, now + LEASE_RETRY_MS).unwrap();
        assert_eq!((retried.seq, retried.records.clone()), (second.seq, second.records.clone()));
        book.apply(&retried, Ok(grant(0, 0, 8_400)), now + LEASE_RETRY_MS);
        assert_eq!(book.accounts[&account].unpaid, Nanos::ZERO);
    }

    #[test]
    fn tokens_older_than_the_age_bound_go_back() {
        let (mut book, account) = busy_book();
        let call = book.prepare_call(&account, 1_000).unwrap();
        book.apply(&call, Ok(grant(20, 320, 44_000)), 1_000);
        // Used once a second: not idle, but the grant is a second old.
        book.observe(&account, 1_500, &admitted());
        book.observe(&account, 1_999, &admitted());
        assert!(book.due(1_999).is_empty());
        assert_eq!(book.due(2_000), vec![account.clone()]);
        let renewal = book.prepare_call(&account, 2_000).unwrap();
        assert_eq!((renewal.return_requests, renewal.tokens_delta), (20, 320));
    }

    #[test]
    fn ending_a_lease_with_a_backlog_pays_it_all_over_several_calls() {
        // Busy at 600 requests a second (150 in the first quarter second), so the first call
        // asks for the 600 requests, 9,600 tokens and 1,320,000 nano-USD it is granted.
        let mut book = LeaseBook::new("node-0");
        let account: Arc<str> = Arc::from(ACCOUNT);
        for n in 0..150 {
            book.observe(&account, n, &admitted());
        }
        book.observe(&account, 250, &admitted());
        let call = book.prepare_call(&account, 1_000).unwrap();
        assert_eq!((call.want_requests, call.want_tokens, call.want_escrow), (600, 9_600, Nanos(1_320_000)));
        book.apply(&call, Ok(grant(600, 9_600, 1_320_000)), 1_000);
        for n in 0..600 {
            book.try_admit(&request(1_001)).unwrap();
            book.settle(&account, settlement(&format!("r{n}")), &LimitPolicy::reference());
        }
        let mut escrow = 1_320_000;
        let mut paid = 0;
        for round in 0..600usize.div_ceil(LEASE_MAX_RECORDS_PER_CALL) {
            let calls = book.end_all(1_500);
            assert_eq!(calls.len(), 1, "round {round}");
            let call = &calls[0];
            assert_eq!(call.records.len(), (600 - paid).min(LEASE_MAX_RECORDS_PER_CALL));
            paid += call.records.len();
            // The escrow kept covers exactly what is still unpaid.
            assert_eq!(call.want_escrow, Nanos((600 - paid as u64) * 1_600), "round {round}");
            escrow = call.want_escrow.0.min(escrow);
            book.apply(call, Ok(grant(0, 0, escrow)), 1_500);
        }
        assert_eq!(paid, 600);
        assert!(book.end_all(1_500).is_empty());
        assert!(!book.has_unsettled());
    }

    // Goal: a store answer granting more than the call asked for is caught (debug builds): the
    // worker would otherwise admit requests the shared bucket never gave up.
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "was granted")]
    fn a_grant_above_what_was_asked_is_caught() {
        let (mut book, account) = busy_book();
        let call = book.prepare_call(&account, 1_000).unwrap();
        assert_eq!(call.want_requests, 40);
        book.apply(&call, Ok(grant(41, 640, 88_000)), 1_000);
    }

    #[test]
    fn an_idle_lease_ends_and_releases_its_escrow() {
        let (mut book, account) = busy_book();
        let call = book.prepare_call(&account, 1_000).unwrap();
        book.apply(&call, Ok(grant(20, 320, 44_000)), 1_000);
        let idle_at = 1_000 + LEASE_IDLE_MS;
        assert_eq!(book.due(idle_at), vec![account.clone()]);
        let end = book.prepare_call(&account, idle_at).unwrap();
        assert_eq!((end.want_requests, end.want_tokens, end.want_escrow), (0, 0, Nanos::ZERO));
        assert_eq!((end.return_requests, end.tokens_delta), (20, 320));
        book.apply(&end, Ok(grant(0, 0, 0)), idle_at);
        assert!(!book.has_unsettled());
        assert!(book.due(idle_at + 1).is_empty());
    }
}
