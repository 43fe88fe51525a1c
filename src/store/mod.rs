//! The state store interface: accounts, keys, wallet holds, rate buckets and the usage ledger.
//!
//! Everything that must be consistent across workers (and, with Redis, across gateway nodes)
//! lives behind `Store`. The types in `types` (re-exported here) are the whole contract between
//! the request pipeline and a store; `embedded` keeps them in process (one node, demo and
//! tests), and `redis` implements the same calls on a Redis server or Cluster shared by nodes.
//!
//! A `Store` is shared by every thread; the connections to it are not. Whoever calls the store
//! (a worker, the admin handler, the hold reaper, the CLI, a test) owns a `StoreConnections`
//! and calls through a `StoreClient`, the pair of both, borrowed for the call: a worker's
//! connections are a field of its `Worker`, never a thread-local. Stores never see plain API
//! keys (only SHA-256 hashes) and never do floating point. Time is passed in (`now_ms`, Unix
//! milliseconds) so behaviour tests can drive the clock; a store backed by a server may use the
//! server's clock instead.

pub mod embedded;
pub mod payments;
pub mod redis;
pub mod spend_cap;
pub mod types;
pub mod views;

use std::sync::Arc;

use crate::money::Nanos;
pub use types::*;

/// The store a gateway runs on. An enum rather than a trait object: the set is closed and the
/// calls are async on a thread-per-core runtime (no `Send` bounds wanted).
#[derive(Clone)]
pub enum Store {
    Embedded(Arc<embedded::EmbeddedStore>),
    Redis(Arc<redis::RedisStore>),
}

impl Store {
    pub fn embedded(policy: LimitPolicy) -> Store {
        Store::Embedded(Arc::new(embedded::EmbeddedStore::new(policy)))
    }

    /// The counters of a shared store's failure paths (none for the embedded store).
    pub fn failure_metrics(&self) -> Option<&crate::metrics::StoreMetrics> {
        match self {
            Store::Embedded(_) => None,
            Store::Redis(store) => Some(&store.metrics),
        }
    }

    /// This store as seen through `connections` (the caller's own).
    pub fn client<'a>(&'a self, connections: &'a StoreConnections) -> StoreClient<'a> {
        StoreClient { store: self, connections }
    }
}

/// The connections one owner holds to the store, made on first use: empty for the embedded
/// store, one pipelined client per Redis node otherwise. Owned by one thread (not `Send`).
#[derive(Default)]
pub struct StoreConnections {
    redis: redis::Connections,
}

/// The store and one owner's connections to it: every store call goes through one. Borrowed
/// and cheap to copy (two references); get a worker's with `Worker::store`.
#[derive(Copy, Clone)]
pub struct StoreClient<'a> {
    store: &'a Store,
    connections: &'a StoreConnections,
}

impl StoreClient<'_> {
    pub async fn create_account(
        &self,
        id: Option<&str>,
        signup_credit: Nanos,
        now_ms: u64,
    ) -> Result<AccountView, StoreError> {
        match self.store {
            Store::Embedded(store) => store.create_account(id, signup_credit, now_ms),
            Store::Redis(store) => store.create_account(&self.connections.redis, id, signup_credit, now_ms).await,
        }
    }

    pub async fn account(&self, id: &str) -> Result<AccountView, StoreError> {
        match self.store {
            Store::Embedded(store) => store.account(id),
            Store::Redis(store) => store.account(&self.connections.redis, id).await,
        }
    }

    /// Stores a new key under `hash` for `record.account_id` (which must exist).
    pub async fn insert_key(&self, hash: KeyHash, record: KeyRecord) -> Result<(), StoreError> {
        match self.store {
            Store::Embedded(store) => store.insert_key(hash, record),
            Store::Redis(store) => store.insert_key(&self.connections.redis, hash, record).await,
        }
    }

    /// The key with this hash, revoked or not; `NotFound` if unknown.
    pub async fn resolve_key(&self, hash: &KeyHash) -> Result<KeyRecord, StoreError> {
        match self.store {
            Store::Embedded(store) => store.resolve_key(hash),
            Store::Redis(store) => store.resolve_key(&self.connections.redis, hash).await,
        }
    }

    /// Revokes a key; `NotFound` if no key has this id. Revoking twice is not an error.
    pub async fn revoke_key(&self, key_id: &str) -> Result<(), StoreError> {
        match self.store {
            Store::Embedded(store) => store.revoke_key(key_id),
            Store::Redis(store) => store.revoke_key(&self.connections.redis, key_id).await,
        }
    }

    /// The key with this hash as this node's key directory knows it, synced or not, for when
    /// the store cannot answer (SPEC §13). The embedded store always answers, so it keeps none.
    pub fn directory_lookup(&self, hash: &KeyHash) -> Option<KeyRecord> {
        match self.store {
            Store::Embedded(_) => None,
            Store::Redis(store) => store.directory_lookup(hash),
        }
    }

    /// The key with this hash from this node's key directory when it may stand in for the
    /// store (synced and subscribed): authentication then needs no store call. `None` for the
    /// embedded store (it is in process anyway).
    pub fn directory_lookup_trusted(&self, hash: &KeyHash) -> Option<KeyRecord> {
        match self.store {
            Store::Embedded(_) => None,
            Store::Redis(store) => store.directory_lookup_trusted(hash),
        }
    }

    /// Whether the key directory needs a full read now (never for the embedded store).
    pub fn key_directory_needs_sync(&self) -> bool {
        match self.store {
            Store::Embedded(_) => false,
            Store::Redis(store) => !store.key_directory_trusted(),
        }
    }

    /// How many keys this node's key directory holds.
    pub fn key_directory_len(&self) -> usize {
        match self.store {
            Store::Embedded(_) => 0,
            Store::Redis(store) => store.key_directory_len(),
        }
    }

    /// Reads every key record into this node's key directory; returns how many keys it holds
    /// (0 for the embedded store, which needs none).
    pub async fn sync_key_directory(&self) -> Result<usize, StoreError> {
        match self.store {
            Store::Embedded(_) => Ok(0),
            Store::Redis(store) => store.sync_key_directory(&self.connections.redis).await,
        }
    }

    /// Bumped on every credited top-up (any account, any node); workers drop their "no
    /// balance" deny entries when it changes.
    pub fn topup_generation(&self) -> u64 {
        match self.store {
            Store::Embedded(store) => store.topup_generation(),
            Store::Redis(store) => store.topup_generation(),
        }
    }

    /// Whether this store is shared with other nodes (Redis) rather than in process.
    pub fn is_shared(&self) -> bool {
        matches!(self.store, Store::Redis(_))
    }

    /// Bumped on every revocation; workers drop their key caches when it changes.
    pub fn revocation_generation(&self) -> u64 {
        match self.store {
            Store::Embedded(store) => store.revocation_generation(),
            Store::Redis(store) => store.revocation_generation(),
        }
    }

    pub async fn topup(
        &self,
        account_id: &str,
        amount: Nanos,
        reference: &str,
        now_ms: u64,
    ) -> Result<TopupResult, StoreError> {
        match self.store {
            Store::Embedded(store) => store.topup(account_id, amount, reference, now_ms),
            Store::Redis(store) => store.topup(&self.connections.redis, account_id, amount, reference, now_ms).await,
        }
    }

    /// Sets or clears (`None`) the spend cap of the key `key_id`; the key's record as it is now.
    /// Every worker of every node sees the change within a second (the keys channel).
    pub async fn set_key_cap(&self, key_id: &str, cap: Option<SpendCap>) -> Result<KeyRecord, StoreError> {
        match self.store {
            Store::Embedded(store) => store.set_key_cap(key_id, cap),
            Store::Redis(store) => store.set_key_cap(&self.connections.redis, key_id, cap).await,
        }
    }

    /// What the key has spent in the period of `now_ms` of `period`, and holds open.
    pub async fn key_spend(
        &self,
        account_id: &str,
        key_id: &str,
        period: CapPeriod,
        now_ms: u64,
    ) -> Result<KeySpend, StoreError> {
        match self.store {
            Store::Embedded(store) => store.key_spend(account_id, key_id, period, now_ms),
            Store::Redis(store) => store.key_spend(&self.connections.redis, account_id, key_id, period, now_ms).await,
        }
    }

    pub async fn admit(&self, request: &AdmitRequest<'_>) -> Result<Admission, StoreError> {
        match self.store {
            Store::Embedded(store) => store.admit(request),
            Store::Redis(store) => store.admit(&self.connections.redis, request).await,
        }
    }

    pub async fn settle(&self, settlement: &Settlement<'_>) -> Result<Settled, StoreError> {
        match self.store {
            Store::Embedded(store) => store.settle(settlement),
            Store::Redis(store) => store.settle(&self.connections.redis, settlement).await,
        }
    }

    /// Whether one of these connections to the store was lost (and not yet made again): paid
    /// requests then fail closed rather than spend leases the store cannot hear about.
    pub fn seems_down(&self) -> bool {
        match self.store {
            Store::Embedded(_) => false,
            Store::Redis(store) => store.seems_down(&self.connections.redis),
        }
    }

    /// One lease call (Redis only: the embedded store is one node and needs no leases).
    pub async fn lease(&self, call: &LeaseCall) -> Result<LeaseReply, StoreError> {
        match self.store {
            Store::Embedded(_) => Err(StoreError::Unavailable),
            Store::Redis(store) => store.lease(&self.connections.redis, call).await,
        }
    }

    /// The buckets' state without taking anything (headers on responses that were not admitted).
    pub async fn peek_rates(&self, account_id: &str, kind: KeyKind, now_ms: u64) -> Result<RateSnapshot, StoreError> {
        match self.store {
            Store::Embedded(store) => store.peek_rates(account_id, kind, now_ms),
            Store::Redis(store) => store.peek_rates(&self.connections.redis, account_id, kind, now_ms).await,
        }
    }

    /// Newest first, at most `limit` records.
    pub async fn usage(&self, account_id: &str, limit: usize) -> Result<Vec<UsageRecord>, StoreError> {
        match self.store {
            Store::Embedded(store) => store.usage(account_id, limit),
            Store::Redis(store) => store.usage(&self.connections.redis, account_id, limit).await,
        }
    }

    /// Releases holds older than their TTL (a request that never settled); returns how many.
    pub async fn reap_expired_holds(&self, now_ms: u64) -> Result<usize, StoreError> {
        match self.store {
            Store::Embedded(store) => Ok(store.reap_expired_holds(now_ms)),
            Store::Redis(store) => store.reap_expired_holds(&self.connections.redis, now_ms).await,
        }
    }

    /// Releases expired holds and the holds `dead` nodes took before they were presumed dead
    /// (their last heartbeat plus `dead_after_ms`). The embedded store has one node: only the
    /// expired ones.
    pub async fn reap_holds(&self, now_ms: u64, dead: &[DeadNode], dead_after_ms: u64) -> Result<Reaped, StoreError> {
        match self.store {
            Store::Embedded(store) => Ok(Reaped { expired: store.reap_expired_holds(now_ms), of_dead_nodes: 0 }),
            Store::Redis(store) => store.reap_holds(&self.connections.redis, now_ms, dead, dead_after_ms).await,
        }
    }

    /// Node liveness (shared store only): records node `tag`'s heartbeat (or, `leaving`,
    /// removes it; an empty `tag`: neither) and returns the other nodes whose last heartbeat is
    /// older than `dead_after_ms`, by the store's clock.
    pub async fn heartbeat(
        &self,
        tag: &str,
        dead_after_ms: u64,
        leaving: bool,
        now_ms: u64,
    ) -> Result<Vec<DeadNode>, StoreError> {
        match self.store {
            Store::Embedded(_) => Ok(Vec::new()),
            Store::Redis(store) => store.heartbeat(&self.connections.redis, tag, dead_after_ms, leaving, now_ms).await,
        }
    }

    /// Undoes this owner's admissions whose answer was lost (see `store::redis::recovery`);
    /// returns how many the store answered, or the error that stopped it (the rest stay
    /// queued). The embedded store never loses an answer.
    pub async fn send_voids(&self) -> Result<usize, StoreError> {
        match self.store {
            Store::Embedded(_) => Ok(0),
            Store::Redis(store) => store.send_voids(&self.connections.redis).await,
        }
    }

    /// How many of this owner's admissions are waiting to be undone.
    pub fn pending_voids(&self) -> usize {
        match self.store {
            Store::Embedded(_) => 0,
            Store::Redis(store) => store.pending_voids(&self.connections.redis),
        }
    }

    /// Whether the store answers and, for Redis, the revocation and top-up subscription is
    /// live (readiness): without it a revoked key could stay usable until its cache TTL.
    pub async fn ping(&self) -> bool {
        match self.store {
            Store::Embedded(_) => true,
            Store::Redis(store) => store.ping(&self.connections.redis).await && store.subscribed(),
        }
    }
}

/// Payment records (`store::payments`).
impl StoreClient<'_> {
    /// Writes `record` (new or changed) under its account, and for an STK Push its checkout
    /// index; a new record beyond `payments::MAX_PAYMENTS_KEPT` drops the account's oldest.
    pub async fn put_payment(&self, record: &payments::PaymentRecord) -> Result<(), StoreError> {
        self.write_payment(record, false).await.map(|_| ())
    }

    /// Writes `record` unless the account has one with its id; whether it did.
    pub async fn add_payment(&self, record: &payments::PaymentRecord) -> Result<bool, StoreError> {
        self.write_payment(record, true).await
    }

    async fn write_payment(&self, record: &payments::PaymentRecord, only_new: bool) -> Result<bool, StoreError> {
        match self.store {
            Store::Embedded(store) => store.put_payment(record, only_new),
            Store::Redis(store) => store.put_payment(&self.connections.redis, record, only_new).await,
        }
    }

    /// The account a payment reference was credited to, where the store keeps it: Redis does
    /// (the reference's claim); the embedded store answers `None` (it never loses a listing, so
    /// it never needs to tell).
    pub async fn reference_owner(&self, reference: &str) -> Result<Option<String>, StoreError> {
        match self.store {
            Store::Embedded(_) => Ok(None),
            Store::Redis(store) => store.reference_owner(&self.connections.redis, reference).await,
        }
    }

    /// The STK Push payment with this `CheckoutRequestID`; `NotFound` if none.
    pub async fn checkout_payment(&self, checkout_request_id: &str) -> Result<payments::PaymentRecord, StoreError> {
        match self.store {
            Store::Embedded(store) => store.checkout_payment(checkout_request_id),
            Store::Redis(store) => store.checkout_payment(&self.connections.redis, checkout_request_id).await,
        }
    }

    /// The account's payments, newest first, at most `payments::MAX_PAYMENTS_LISTED`.
    pub async fn payments(&self, account_id: &str) -> Result<Vec<payments::PaymentRecord>, StoreError> {
        let mut records = match self.store {
            Store::Embedded(store) => store.payments(account_id),
            Store::Redis(store) => store.payments(&self.connections.redis, account_id).await?,
        };
        records.sort_by(payments::PaymentRecord::newest_first);
        records.truncate(payments::MAX_PAYMENTS_LISTED);
        Ok(records)
    }
}
