//! The embedded store: every account, key, bucket, hold and ledger line of one node, in process.
//!
//! For the single-node demo and the tests. All state sits behind one `Mutex`: each call takes
//! it once, checks everything, then writes, so admission (RPM + TPM + wallet hold) and
//! settlement are atomic by construction. The lock is held for microseconds and never across
//! an await; the Redis store replaces it where more than one node shares state. Invariant after
//! every call, for every account: `0 <= held <= balance` (`Nanos` is unsigned, so the first half
//! holds by type) and `held` is the sum of the account's holds. Each money mutation asserts,
//! in debug builds, what it may change: a hold raises `held` by its amount and fits in the
//! available balance; a settlement charges at most its hold and lowers the balance by exactly
//! the charge; a top-up raises the balance by exactly its amount; the reaper only releases.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
// The one `std::sync::Mutex` in the gateway (clippy.toml bans it elsewhere): this store serves
// the single-node demo and the tests, and each call takes the lock once, for microseconds, never
// across an await. Shared state of a real deployment lives in Redis, not behind a lock.
#[allow(clippy::disallowed_types)]
use std::sync::Mutex;
use std::sync::{Arc, MutexGuard};

use crate::errors::Bucket;
use crate::ids::IdText;
use crate::limits::{EMBEDDED_LEDGER_MAX_RECORDS_PER_ACCOUNT, HOLD_TTL_MS, MAX_USAGE_QUERY_LIMIT};
use crate::money::{Nanos, TokenUsage};
use crate::ratelimit::TokenBucket;
use crate::store::spend_cap::PeriodSpend;
use crate::store::types::*;

mod payments;

/// Characters of a generated account id after `acct_`.
const GENERATED_ACCOUNT_ID_CHARS: usize = 16;

struct Buckets {
    requests: TokenBucket,
    tokens: TokenBucket,
}

impl Buckets {
    fn new(limits: &TierLimits, now_ms: u64) -> Buckets {
        Buckets {
            requests: TokenBucket::full(limits.requests_per_minute, now_ms),
            tokens: TokenBucket::full(limits.tokens_per_minute, now_ms),
        }
    }

    fn fit(&mut self, limits: &TierLimits, now_ms: u64) {
        self.requests.set_capacity(limits.requests_per_minute, now_ms);
        self.tokens.set_capacity(limits.tokens_per_minute, now_ms);
    }

    fn snapshot(&mut self, now_ms: u64) -> RateSnapshot {
        RateSnapshot {
            requests_limit: self.requests.capacity(),
            requests_remaining: self.requests.available(now_ms),
            requests_reset_ms: self.requests.reset_after_ms(now_ms),
            tokens_limit: self.tokens.capacity(),
            tokens_remaining: self.tokens.available(now_ms),
            tokens_reset_ms: self.tokens.reset_after_ms(now_ms),
        }
    }
}

struct Account {
    id: Arc<str>,
    tier: Arc<str>,
    balance: Nanos,
    held: Nanos,
    created_at_ms: u64,
    live_buckets: Buckets,
    /// Test-key traffic has its own Unverified-tier buckets.
    test_buckets: Buckets,
    ledger: VecDeque<UsageRecord>,
}

impl Account {
    fn view(&self) -> AccountView {
        AccountView {
            id: self.id.clone(),
            tier: self.tier.clone(),
            balance: self.balance,
            held: self.held,
            created_at_ms: self.created_at_ms,
        }
    }

    fn buckets(&mut self, kind: KeyKind, policy: &LimitPolicy, now_ms: u64) -> &mut Buckets {
        let limits = policy.limits_for(&self.id, &self.tier, kind);
        let buckets = match kind {
            KeyKind::Live => &mut self.live_buckets,
            KeyKind::Test => &mut self.test_buckets,
        };
        buckets.fit(&limits, now_ms);
        buckets
    }

    fn record(&mut self, record: UsageRecord) {
        if self.ledger.len() >= EMBEDDED_LEDGER_MAX_RECORDS_PER_ACCOUNT {
            self.ledger.pop_front();
        }
        self.ledger.push_back(record);
    }

    /// SPEC §3.6 after every mutation: `0 <= held <= balance` (the lower bound by type).
    fn check_invariant(&self) {
        debug_assert!(self.held <= self.balance, "account {}: held {} > balance {}", self.id, self.held, self.balance);
    }
}

struct Hold {
    account_id: Arc<str>,
    key_id: Arc<str>,
    kind: KeyKind,
    model: Arc<str>,
    amount: Nanos,
    tokens_charged: u64,
    expires_at_ms: u64,
}

/// A key's spend, kept for every key whether capped or not (so a cap set later counts what the
/// key already spent in its period): what its open holds hold and what it spent, by period.
/// Test keys hold and spend nothing.
#[derive(Default)]
struct KeySpendState {
    held: Nanos,
    spend: PeriodSpend,
}

impl KeySpendState {
    /// A hold of `amount` ends (settled, released or reaped).
    fn release(&mut self, amount: Nanos) {
        debug_assert!(self.held >= amount, "a key holds {} < a hold of {amount}", self.held);
        self.held = self.held.saturating_sub(amount);
    }
}

#[derive(Default)]
struct State {
    accounts: HashMap<Arc<str>, Account>,
    keys_by_hash: HashMap<KeyHash, KeyRecord>,
    key_hash_by_id: HashMap<Arc<str>, KeyHash>,
    /// Open holds by request id (kept inline: taking a hold allocates no id).
    holds: HashMap<IdText, Hold>,
    /// Payment references ever credited (globally unique per payment provider).
    payment_references: HashSet<String>,
    /// Model ids interned for ledger records.
    models: HashSet<Arc<str>>,
    /// Every key's spend by key id (the map's keys are the interned ids holds and ledger
    /// records share).
    key_spend: HashMap<Arc<str>, KeySpendState>,
    /// M-Pesa payment records (`store::payments`).
    payments: crate::store::payments::PaymentBook,
}

pub struct EmbeddedStore {
    policy: LimitPolicy,
    #[allow(clippy::disallowed_types)] // see the import
    state: Mutex<State>,
    revocations: AtomicU64,
    topups: AtomicU64,
}

impl EmbeddedStore {
    #[allow(clippy::disallowed_types)] // see the import
    pub fn new(policy: LimitPolicy) -> EmbeddedStore {
        EmbeddedStore {
            policy,
            state: Mutex::new(State::default()),
            revocations: AtomicU64::new(0),
            topups: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-written change (all writes come
        // after all checks), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn create_account(
        &self,
        id: Option<&str>,
        signup_credit: Nanos,
        now_ms: u64,
    ) -> Result<AccountView, StoreError> {
        let id: Arc<str> = match id {
            Some(id) => id.into(),
            None => format!("acct_{}", crate::ids::random_base62(GENERATED_ACCOUNT_ID_CHARS)).into(),
        };
        let mut state = self.lock();
        if state.accounts.contains_key(&id) {
            return Err(StoreError::AlreadyExists);
        }
        let tier: Arc<str> = TIER_UNVERIFIED.into();
        let live = self.policy.limits_for(&id, &tier, KeyKind::Live);
        let test = self.policy.limits_for(&id, &tier, KeyKind::Test);
        let account = Account {
            id: id.clone(),
            tier,
            balance: signup_credit,
            held: Nanos::ZERO,
            created_at_ms: now_ms,
            live_buckets: Buckets::new(&live, now_ms),
            test_buckets: Buckets::new(&test, now_ms),
            ledger: VecDeque::new(),
        };
        let view = account.view();
        state.accounts.insert(id, account);
        Ok(view)
    }

    pub fn account(&self, id: &str) -> Result<AccountView, StoreError> {
        self.lock().accounts.get(id).map(Account::view).ok_or(StoreError::NotFound)
    }

    pub fn insert_key(&self, hash: KeyHash, record: KeyRecord) -> Result<(), StoreError> {
        let mut state = self.lock();
        if !state.accounts.contains_key(&record.account_id) {
            return Err(StoreError::NotFound);
        }
        if state.keys_by_hash.contains_key(&hash) || state.key_hash_by_id.contains_key(&record.key_id) {
            return Err(StoreError::AlreadyExists);
        }
        state.key_hash_by_id.insert(record.key_id.clone(), hash);
        state.keys_by_hash.insert(hash, record);
        Ok(())
    }

    pub fn resolve_key(&self, hash: &KeyHash) -> Result<KeyRecord, StoreError> {
        self.lock().keys_by_hash.get(hash).cloned().ok_or(StoreError::NotFound)
    }

    pub fn revoke_key(&self, key_id: &str) -> Result<(), StoreError> {
        let mut state = self.lock();
        let hash = *state.key_hash_by_id.get(key_id).ok_or(StoreError::NotFound)?;
        if let Some(record) = state.keys_by_hash.get_mut(&hash) {
            record.revoked = true;
        }
        self.revocations.fetch_add(1, Ordering::Release);
        Ok(())
    }

    pub fn set_key_cap(&self, key_id: &str, cap: Option<SpendCap>) -> Result<KeyRecord, StoreError> {
        let mut state = self.lock();
        let hash = *state.key_hash_by_id.get(key_id).ok_or(StoreError::NotFound)?;
        let record = state.keys_by_hash.get_mut(&hash).ok_or(StoreError::NotFound)?;
        record.spend_cap = cap;
        let record = record.clone();
        // Workers drop their cached key records, as for a revocation.
        self.revocations.fetch_add(1, Ordering::Release);
        Ok(record)
    }

    pub fn key_spend(
        &self,
        _account_id: &str,
        key_id: &str,
        period: CapPeriod,
        now_ms: u64,
    ) -> Result<KeySpend, StoreError> {
        let state = self.lock();
        Ok(state.key_spend.get(key_id).map_or(KeySpend::default(), |spend| KeySpend {
            spent: spend.spend.spent_in(period, period.start_ms(now_ms)),
            held: spend.held,
        }))
    }

    pub fn revocation_generation(&self) -> u64 {
        self.revocations.load(Ordering::Acquire)
    }

    /// Bumped on every credited top-up.
    pub fn topup_generation(&self) -> u64 {
        self.topups.load(Ordering::Acquire)
    }

    pub fn topup(
        &self,
        account_id: &str,
        amount: Nanos,
        reference: &str,
        _now_ms: u64,
    ) -> Result<TopupResult, StoreError> {
        let mut state = self.lock();
        let duplicate = state.payment_references.contains(reference);
        let account = state.accounts.get_mut(account_id).ok_or(StoreError::NotFound)?;
        if duplicate {
            return Ok(TopupResult { balance: account.balance, tier: account.tier.clone(), duplicate: true });
        }
        let (balance_before, held_before) = (account.balance, account.held);
        account.balance = account.balance.checked_add(amount).ok_or(StoreError::Overflow)?;
        debug_assert!(
            account.balance.0 - balance_before.0 == amount.0 && account.held == held_before,
            "a top-up credits exactly its amount and touches no hold"
        );
        if &*account.tier == TIER_UNVERIFIED {
            account.tier = TIER_TRUSTED.into();
        }
        let result = TopupResult { balance: account.balance, tier: account.tier.clone(), duplicate: false };
        account.check_invariant();
        state.payment_references.insert(reference.to_string());
        self.topups.fetch_add(1, Ordering::AcqRel);
        Ok(result)
    }

    pub fn admit(&self, request: &AdmitRequest<'_>) -> Result<Admission, StoreError> {
        let now_ms = request.now_ms;
        let mut guard = self.lock();
        let state = &mut *guard;
        if state.holds.contains_key(request.request_id) {
            return Err(StoreError::AlreadyExists);
        }
        let account = state.accounts.get_mut(request.account_id).ok_or(StoreError::NotFound)?;
        let (balance, held) = (account.balance, account.held);
        let buckets = account.buckets(request.key_kind, &self.policy, now_ms);

        // 1. The wallet: how much output can be paid for (test keys never touch it).
        let mut output_cap = request.requested_output_tokens;
        let input_cost = request.input_price.cost_of(request.input_tokens_upper).ok_or(StoreError::Overflow)?;
        if request.key_kind == KeyKind::Live {
            let available = balance.saturating_sub(held);
            let needed = input_cost.checked_add(Nanos(request.output_price.0)).ok_or(StoreError::Overflow)?;
            if available < needed {
                let rates = buckets.snapshot(now_ms);
                return Ok(Admission::InsufficientQuota { balance, available, needed, rates });
            }
            if let Some(affordable) = (available.0 - input_cost.0).checked_div(request.output_price.0) {
                output_cap = output_cap.min(affordable);
            }
        }
        // 1b. The key's own cap: its spend in this period plus its open holds stay within it.
        let spend_cap = request.spend_cap.filter(|_| request.key_kind == KeyKind::Live);
        if let Some(cap) = spend_cap {
            let start_ms = cap.period.start_ms(now_ms);
            let (spent, key_held) = state
                .key_spend
                .get(request.key_id)
                .map_or((Nanos::ZERO, Nanos::ZERO), |spend| (spend.spend.spent_in(cap.period, start_ms), spend.held));
            let room = cap.limit.saturating_sub(spent).saturating_sub(key_held);
            let needed = input_cost.checked_add(Nanos(request.output_price.0)).ok_or(StoreError::Overflow)?;
            if room < needed {
                let rates = buckets.snapshot(now_ms);
                return Ok(Admission::KeySpendLimitReached { cap, spent, held: key_held, needed, rates });
            }
            if let Some(affordable) = (room.0 - input_cost.0).checked_div(request.output_price.0) {
                output_cap = output_cap.min(affordable);
            }
        }
        // 2. TPM capacity: a request larger than the whole bucket can never pass.
        let tokens_capacity = buckets.tokens.capacity();
        if !request.client_set_output_cap {
            output_cap = output_cap.min(tokens_capacity.saturating_sub(request.input_tokens_upper));
        }
        let tokens_needed = request.input_tokens_upper.saturating_add(output_cap);
        if output_cap == 0 || tokens_needed > tokens_capacity {
            let rates = buckets.snapshot(now_ms);
            let requested = request.input_tokens_upper.saturating_add(output_cap.max(1));
            return Ok(Admission::TooLargeForTokenLimit { limit: tokens_capacity, requested, rates });
        }
        if request.refuse_clamp && output_cap < request.requested_output_tokens {
            return Ok(Admission::WouldClamp { output_cap_tokens: output_cap });
        }
        // 3. RPM, then TPM, both checked before anything is taken.
        for (bucket, tokens) in [(Bucket::Requests, 1), (Bucket::Tokens, tokens_needed)] {
            let target = match bucket {
                Bucket::Requests => &mut buckets.requests,
                Bucket::Tokens => &mut buckets.tokens,
            };
            if let Err(denied) = target.check(tokens, now_ms) {
                let limit = target.capacity();
                let used = limit - target.available(now_ms);
                let rates = buckets.snapshot(now_ms);
                return Ok(Admission::RateLimited {
                    bucket,
                    limit,
                    used,
                    requested: tokens,
                    retry_after_ms: denied.retry_after_ms,
                    rates,
                });
            }
        }
        // 4. Commit: everything checked, now write.
        let output_cost = request.output_price.cost_of(output_cap).ok_or(StoreError::Overflow)?;
        let hold = if request.key_kind == KeyKind::Live {
            input_cost.checked_add(output_cost).ok_or(StoreError::Overflow)?
        } else {
            Nanos::ZERO
        };
        // Before the hold is taken: it pays for the worst case of what is dispatched, fits in
        // what the wallet has free, and a test key holds nothing.
        debug_assert!(
            match request.key_kind {
                KeyKind::Live => hold <= balance.saturating_sub(held),
                KeyKind::Test => hold == Nanos::ZERO,
            },
            "account {}: hold {hold} does not fit the available {} (balance {balance}, held {held})",
            account.id,
            balance.saturating_sub(held)
        );
        let taken = buckets.requests.try_take(1, now_ms).and(buckets.tokens.try_take(tokens_needed, now_ms));
        debug_assert!(taken.is_ok(), "both buckets were checked before taking");
        let rates = buckets.snapshot(now_ms);
        account.held = account.held.saturating_add(hold);
        // After: `held` rose by exactly the hold, the balance did not move.
        debug_assert!(account.held.0 - held.0 == hold.0 && account.balance == balance, "a hold only adds to held");
        account.check_invariant();
        let account_id = account.id.clone();
        if !state.key_spend.contains_key(request.key_id) {
            state.key_spend.insert(request.key_id.into(), KeySpendState::default());
        }
        let key_id = state.key_spend.get_key_value(request.key_id).expect("inserted above").0.clone();
        let spend = state.key_spend.get_mut(request.key_id).expect("inserted above");
        spend.held = spend.held.saturating_add(hold);
        if let Some(cap) = spend_cap {
            // The key's spend plus its open holds stay within its cap (checked above).
            debug_assert!(
                spend.spend.spent_in(cap.period, cap.period.start_ms(now_ms)).saturating_add(spend.held) <= cap.limit,
                "key {}: spend and holds above its cap {}",
                request.key_id,
                cap.limit
            );
        }
        let model = intern(&mut state.models, request.model);
        state.holds.insert(
            request.request_id.into(),
            Hold {
                account_id,
                key_id,
                kind: request.key_kind,
                model,
                amount: hold,
                tokens_charged: tokens_needed,
                expires_at_ms: now_ms.saturating_add(HOLD_TTL_MS),
            },
        );
        Ok(Admission::Admitted(Admitted { hold, output_cap_tokens: output_cap, tokens_charged: tokens_needed, rates }))
    }

    pub fn settle(&self, settlement: &Settlement<'_>) -> Result<Settled, StoreError> {
        let now_ms = settlement.now_ms;
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(hold) = state.holds.remove(settlement.request_id) else {
            return Ok(Settled::AlreadySettled);
        };
        let Some(account) = state.accounts.get_mut(&hold.account_id) else {
            return Ok(Settled::AlreadySettled);
        };
        let tokens = settlement.tokens.consistent();
        let cost = settlement.cost;
        let (charged, operator_loss) = if hold.kind == KeyKind::Live {
            crate::money::charge_within_hold(cost, hold.amount)
        } else {
            (Nanos::ZERO, Nanos::ZERO)
        };
        // Before: the charge never exceeds the hold (SPEC §3.4), and the hold is part of `held`.
        debug_assert!(
            charged <= hold.amount,
            "request {}: charge {charged} > hold {}",
            settlement.request_id,
            hold.amount
        );
        debug_assert!(
            account.held >= hold.amount,
            "account {}: held {} < a hold of {}",
            account.id,
            account.held,
            hold.amount
        );
        let (balance_before, held_before) = (account.balance, account.held);
        account.held = account.held.saturating_sub(hold.amount);
        account.balance = account.balance.saturating_sub(charged);
        // After: the balance fell by exactly the charge and `held` by exactly the hold.
        debug_assert!(
            balance_before.0 - account.balance.0 == charged.0 && held_before.0 - account.held.0 == hold.amount.0,
            "request {}: the balance must fall by the charge {charged} and held by the hold {}",
            settlement.request_id,
            hold.amount
        );
        let actual_tokens = tokens.rate_limited_tokens(self.policy.counts_cached_tokens(&account.tier, hold.kind));
        let buckets = account.buckets(hold.kind, &self.policy, now_ms);
        if actual_tokens < hold.tokens_charged {
            buckets.tokens.give_back(hold.tokens_charged - actual_tokens, now_ms);
        } else {
            buckets.tokens.take_saturating(actual_tokens - hold.tokens_charged, now_ms);
        }
        if let Some(spend) = state.key_spend.get_mut(&*hold.key_id) {
            spend.release(hold.amount);
            spend.spend.charge(charged, now_ms);
        }
        account.record(UsageRecord {
            request_id: settlement.request_id.into(),
            key_id: hold.key_id,
            model: hold.model,
            tokens,
            cost: charged,
            outcome: settlement.outcome.as_str(),
            created_at_ms: now_ms,
        });
        account.check_invariant();
        Ok(Settled::Charged { charged, released: hold.amount.saturating_sub(charged), operator_loss })
    }

    pub fn peek_rates(&self, account_id: &str, kind: KeyKind, now_ms: u64) -> Result<RateSnapshot, StoreError> {
        let mut state = self.lock();
        let account = state.accounts.get_mut(account_id).ok_or(StoreError::NotFound)?;
        Ok(account.buckets(kind, &self.policy, now_ms).snapshot(now_ms))
    }

    pub fn usage(&self, account_id: &str, limit: usize) -> Result<Vec<UsageRecord>, StoreError> {
        let state = self.lock();
        let account = state.accounts.get(account_id).ok_or(StoreError::NotFound)?;
        Ok(account.ledger.iter().rev().take(limit.min(MAX_USAGE_QUERY_LIMIT)).cloned().collect())
    }

    /// Releases expired holds without charging (their TPM charge stays: the request may have
    /// run). Each leaves a ledger line with outcome `expired` and cost 0.
    pub fn reap_expired_holds(&self, now_ms: u64) -> usize {
        let mut guard = self.lock();
        let state = &mut *guard;
        let expired: Vec<IdText> =
            state.holds.iter().filter(|(_, hold)| hold.expires_at_ms <= now_ms).map(|(id, _)| id.clone()).collect();
        for request_id in &expired {
            let Some(hold) = state.holds.remove(request_id) else { continue };
            if let Some(spend) = state.key_spend.get_mut(&*hold.key_id) {
                spend.release(hold.amount);
            }
            if let Some(account) = state.accounts.get_mut(&hold.account_id) {
                debug_assert!(
                    account.held >= hold.amount,
                    "account {}: held {} < a hold of {}",
                    account.id,
                    account.held,
                    hold.amount
                );
                let balance_before = account.balance;
                account.held = account.held.saturating_sub(hold.amount);
                debug_assert!(account.balance == balance_before, "the reaper releases, it never charges");
                account.record(UsageRecord {
                    request_id: request_id.clone(),
                    key_id: hold.key_id,
                    model: hold.model,
                    tokens: TokenUsage::default(),
                    cost: Nanos::ZERO,
                    outcome: "expired",
                    created_at_ms: now_ms,
                });
                account.check_invariant();
            }
        }
        expired.len()
    }
}

fn intern(models: &mut HashSet<Arc<str>>, model: &str) -> Arc<str> {
    if let Some(existing) = models.get(model) {
        return existing.clone();
    }
    let interned: Arc<str> = model.into();
    models.insert(interned.clone());
    interned
}

#[cfg(test)]
mod tests {
    #[cfg(debug_assertions)]
    use super::*;

    // Goal: an account whose books were corrupted (more held than its balance) is caught at its
    // next mutation in debug builds, instead of letting the wallet go negative unnoticed.
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "held 0.000002000 > balance 0.000001000")]
    fn held_above_balance_is_caught_at_the_next_mutation() {
        let store = EmbeddedStore::new(LimitPolicy::reference());
        store.create_account(Some("acct_1"), Nanos(1_000), 0).unwrap();
        store.lock().accounts.get_mut("acct_1").unwrap().held = Nanos(2_000);
        let _ = store.topup("acct_1", Nanos(0), "ref-1", 0);
    }
}
