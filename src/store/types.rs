//! The store's vocabulary: every type that passes between the request pipeline and a store
//! (keys, accounts, limits, admission, settlement, leases, usage records, errors).
//!
//! Plain data and the few pure rules that belong to it (`LimitPolicy::limits_for`). It is a
//! leaf: the store implementations (`embedded`, `redis`) import from here and never from
//! `store` itself, so the store module tree has no import cycle. It never does IO, never reads
//! the clock, and never does floating point: amounts are `Nanos`, times `*_ms`.

use std::sync::Arc;

use crate::money::{Nanos, NanosPerToken, TokenUsage};
pub use crate::store::spend_cap::{CapPeriod, SpendCap};

/// Live keys bill the wallet; test keys are served by the sandbox and never touch it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    Live,
    Test,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Live => "live",
            KeyKind::Test => "test",
        }
    }
}

/// SHA-256 of a plain API key.
pub type KeyHash = [u8; 32];

/// What the store knows about one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    pub key_id: Arc<str>,
    pub account_id: Arc<str>,
    pub kind: KeyKind,
    pub name: Option<Arc<str>>,
    pub revoked: bool,
    /// The key's own spend cap (SPEC §10), if the operator set one.
    pub spend_cap: Option<SpendCap>,
}

/// The limits of one tier (or of one account override).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierLimits {
    pub requests_per_minute: u64,
    pub tokens_per_minute: u64,
    /// Whether prompt tokens the upstream served from its cache count against TPM (default
    /// false, as Groq counts them). A tier setting: account overrides keep their tier's.
    pub count_cached_tokens: bool,
}

impl TierLimits {
    /// Limits per minute that do not count cached prompt tokens against TPM.
    pub const fn per_minute(requests_per_minute: u64, tokens_per_minute: u64) -> TierLimits {
        TierLimits { requests_per_minute, tokens_per_minute, count_cached_tokens: false }
    }
}

/// Tier names with a meaning to the store: new accounts start `unverified`; the first
/// successful top-up moves them to `trusted` for good.
pub const TIER_UNVERIFIED: &str = "unverified";
pub const TIER_TRUSTED: &str = "trusted";

/// How a store finds the limits of an account: its tier's, unless the operator overrode them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitPolicy {
    /// Every configured tier by name; must contain `unverified` and `trusted`.
    pub tiers: Vec<(Arc<str>, TierLimits)>,
    /// Per-account overrides by account id.
    pub account_overrides: Vec<(Arc<str>, TierLimits)>,
}

impl LimitPolicy {
    /// The limits that apply to `account_id` in `tier`; test keys always get `unverified`.
    pub fn limits_for(&self, account_id: &str, tier: &str, kind: KeyKind) -> TierLimits {
        if kind == KeyKind::Test {
            return self.tier(TIER_UNVERIFIED);
        }
        if let Some((_, limits)) = self.account_overrides.iter().find(|(id, _)| &**id == account_id) {
            return limits.clone();
        }
        self.tier(tier)
    }

    /// Whether usage in `tier` (test keys: always `unverified`) counts cached prompt tokens
    /// against TPM.
    pub fn counts_cached_tokens(&self, tier: &str, kind: KeyKind) -> bool {
        let tier = if kind == KeyKind::Test { TIER_UNVERIFIED } else { tier };
        self.tier(tier).count_cached_tokens
    }

    fn tier(&self, name: &str) -> TierLimits {
        self.tiers
            .iter()
            .find(|(tier, _)| &**tier == name)
            .or_else(|| self.tiers.iter().find(|(tier, _)| &**tier == TIER_UNVERIFIED))
            .map(|(_, limits)| limits.clone())
            .unwrap_or(TierLimits::per_minute(30, 40_000))
    }

    /// SPEC §4's reference tiers.
    pub fn reference() -> LimitPolicy {
        LimitPolicy {
            tiers: vec![
                (TIER_UNVERIFIED.into(), TierLimits::per_minute(30, 40_000)),
                (TIER_TRUSTED.into(), TierLimits::per_minute(100, 160_000)),
            ],
            account_overrides: Vec::new(),
        }
    }
}

/// An account as the admin API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountView {
    pub id: Arc<str>,
    pub tier: Arc<str>,
    pub balance: Nanos,
    pub held: Nanos,
    pub created_at_ms: u64,
}

/// The rate-limit headers' facts (defined with the bucket arithmetic; every store reports them).
pub use crate::ratelimit::RateSnapshot;

/// One request asking to be admitted: RPM, TPM and the wallet hold, decided in one atomic step.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct AdmitRequest<'a> {
    pub request_id: &'a str,
    pub account_id: &'a str,
    pub key_id: &'a str,
    pub key_kind: KeyKind,
    pub model: &'a str,
    /// Upper bound of the prompt's tokens (content bytes plus per-message overhead).
    pub input_tokens_upper: u64,
    /// The client's `max_tokens` if it gave one, else the model's output cap.
    pub requested_output_tokens: u64,
    /// Whether `requested_output_tokens` came from the client (for the clamp header).
    pub client_set_output_cap: bool,
    /// Answer `WouldClamp` instead of admitting with an output cap below
    /// `requested_output_tokens`: the first stage of a model with a tokenizer, whose count may
    /// admit the request in full (`api::admit`). Nothing is taken then.
    pub refuse_clamp: bool,
    pub input_price: NanosPerToken,
    pub output_price: NanosPerToken,
    pub now_ms: u64,
    /// The key's spend cap: the key's spend in the period of `now_ms` plus its open holds
    /// never exceeds it (checked in the same atomic step as the wallet).
    pub spend_cap: Option<SpendCap>,
}

#[cfg(test)]
impl AdmitRequest<'static> {
    /// A live request of account `acct_1` for model `m` (100 output tokens asked, input at
    /// 1,000 and output at 2,000 nano-USD per token): the admission tests' common case.
    pub fn for_tests(now_ms: u64, input_tokens_upper: u64) -> AdmitRequest<'static> {
        AdmitRequest {
            request_id: "req_1",
            account_id: "acct_1",
            key_id: "key_1",
            key_kind: KeyKind::Live,
            model: "m",
            input_tokens_upper,
            requested_output_tokens: 100,
            client_set_output_cap: false,
            refuse_clamp: false,
            input_price: crate::money::NanosPerToken(1_000),
            output_price: crate::money::NanosPerToken(2_000),
            now_ms,
            spend_cap: None,
        }
    }
}

/// A successful admission: the hold taken, the output cap granted, the tokens taken from TPM.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Admitted {
    pub hold: Nanos,
    /// The output cap the backend must be given (never above `requested_output_tokens`).
    pub output_cap_tokens: u64,
    /// Tokens taken out of the TPM bucket (input upper bound + output cap).
    pub tokens_charged: u64,
    pub rates: RateSnapshot,
}

/// The answer to an `AdmitRequest`. A denial consumes nothing.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    Admitted(Admitted),
    /// A bucket is empty now; `retry_after_ms` is when it will hold `requested` again.
    RateLimited {
        bucket: crate::errors::Bucket,
        limit: u64,
        used: u64,
        requested: u64,
        retry_after_ms: u64,
        rates: RateSnapshot,
    },
    /// The request alone needs more tokens than the TPM bucket can ever hold.
    TooLargeForTokenLimit {
        limit: u64,
        requested: u64,
        rates: RateSnapshot,
    },
    /// Asked with `refuse_clamp`: it fits, but only with the output cap lowered to
    /// `output_cap_tokens`. Nothing was taken; the caller counts its input exactly and asks again.
    WouldClamp {
        output_cap_tokens: u64,
    },
    /// Not even a one-token answer is affordable. `available` is balance minus other holds;
    /// `needed` is the cost of the input bound plus one output token.
    InsufficientQuota {
        balance: Nanos,
        available: Nanos,
        needed: Nanos,
        rates: RateSnapshot,
    },
    /// The key's spend cap leaves not even a one-token answer: `spent` in the current period
    /// plus `held` by the key's open requests, against `cap`; `needed` as for the wallet.
    KeySpendLimitReached {
        cap: SpendCap,
        spent: Nanos,
        held: Nanos,
        needed: Nanos,
        rates: RateSnapshot,
    },
}

/// What a key has spent (settled) in one period, and what its open requests hold.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct KeySpend {
    pub spent: Nanos,
    pub held: Nanos,
}

/// How a request ended, as recorded in the ledger.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The backend answered and the client received it all.
    Completed,
    /// The client went away before the answer was delivered.
    ClientAborted,
    /// The backend failed after admission.
    BackendFailed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::ClientAborted => "client_aborted",
            Outcome::BackendFailed => "backend_failed",
        }
    }
}

/// Actual usage of an admitted request, to settle its hold.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Settlement<'a> {
    pub request_id: &'a str,
    /// The account the request was admitted for (the Redis store keeps holds per account).
    pub account_id: &'a str,
    pub tokens: TokenUsage,
    /// What `tokens` cost at the model's prices (`Prices::cost_of`); the store charges at most
    /// the hold of it and counts the rest as the operator's loss.
    pub cost: Nanos,
    pub outcome: Outcome,
    pub now_ms: u64,
}

/// One call of a worker's lease on an account's shared buckets and wallet (see `crate::access::lease`):
/// pay for what was served from the lease, give back what is unused, take the next period's
/// share. Idempotent per (`lease_id`, `seq`).
#[derive(Debug)]
pub struct LeaseCall {
    pub account_id: Arc<str>,
    /// Names the lease in the store (node tag, worker, account): its escrow is a hold by this id.
    pub lease_id: Arc<str>,
    pub seq: u64,
    pub now_ms: u64,
    /// Leased request tokens given back unused.
    pub return_requests: u64,
    /// Leased TPM tokens given back (> 0) or owed after a true-up above the estimate (< 0).
    pub tokens_delta: i64,
    pub want_requests: u64,
    pub want_tokens: u64,
    /// The escrow the lease should hold after this call; zero ends the lease.
    pub want_escrow: Nanos,
    /// Grants are at most 1/`share` of what is left in each bucket and in the wallet.
    pub share: u64,
    pub records: Vec<LeaseRecord>,
}

/// A request served from a lease, waiting to be charged and written to the ledger. Queuing one
/// allocates nothing: the ids are kept inline (as `IdText`s) and the key id is the caller's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    pub request_id: crate::ids::IdText,
    pub key_id: Arc<str>,
    pub model: crate::ids::IdText,
    pub tokens: TokenUsage,
    pub cost: Nanos,
    pub outcome: Outcome,
}

/// What a lease call changed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LeaseReply {
    Granted {
        requests: u64,
        tokens: u64,
        /// The escrow the lease holds now.
        escrow: Nanos,
        /// Charged for the records of this call (less than their sum only on an operator loss).
        charged: Nanos,
        operator_loss: Nanos,
        rates: RateSnapshot,
        /// The account is in the trusted tier (with the tier policy: whether cached prompt
        /// tokens count against its TPM).
        account_trusted: bool,
    },
    /// A later call of this lease was applied already; this one changed nothing.
    Superseded,
}

/// What settling did.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Settled {
    /// Charged `charged` (never more than the hold) and released the rest of the hold.
    /// `operator_loss` is what actual usage cost beyond the hold (not charged to anyone).
    Charged { charged: Nanos, released: Nanos, operator_loss: Nanos },
    /// No hold under this request id: it was already settled (or reaped). Nothing changed.
    AlreadySettled,
}

/// A gateway node whose heartbeat stopped: its holds may be released (Redis store only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadNode {
    /// The node tag inside its request ids and lease ids.
    pub tag: Box<str>,
    /// Its last heartbeat, in the store's clock (ms).
    pub last_beat_ms: u64,
}

/// What one reaper pass released.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Holds past their TTL.
    pub expired: usize,
    /// Holds and lease escrows of nodes presumed dead.
    pub of_dead_nodes: usize,
}

/// One line of an account's usage ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRecord {
    /// Inline for the gateway's own ids: a ledger line costs no allocation for it.
    pub request_id: crate::ids::IdText,
    pub key_id: Arc<str>,
    pub model: Arc<str>,
    pub tokens: TokenUsage,
    pub cost: Nanos,
    pub outcome: &'static str,
    pub created_at_ms: u64,
}

/// The result of a top-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopupResult {
    pub balance: Nanos,
    pub tier: Arc<str>,
    /// The payment reference was seen before; nothing was credited this time.
    pub duplicate: bool,
}

/// Why a store call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    NotFound,
    AlreadyExists,
    /// The store could not be reached in time (Redis down): fail closed for money.
    Unavailable,
    /// Arithmetic would overflow (absurd balances); nothing was changed.
    Overflow,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            StoreError::NotFound => "not found",
            StoreError::AlreadyExists => "already exists",
            StoreError::Unavailable => "store unavailable",
            StoreError::Overflow => "amount out of range",
        };
        f.write_str(text)
    }
}
