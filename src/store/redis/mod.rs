//! The Redis store: the `Store` calls on a Redis 7 server or Redis Cluster shared by any number
//! of gateway nodes.
//!
//! Every decision about money and limits runs inside Redis as one Function call per step
//! (`fikra.lua`): admission (RPM + TPM + wallet hold) is one `FCALL`, settlement (charge,
//! release, TPM true-up, ledger append to the account's Stream) is one `FCALL`, a top-up is one
//! `FCALL` after a global claim of its payment reference. Each function touches one account's
//! keys only, all under the hash tag `{account}`, so it runs on one Cluster slot.
//!
//! The files, by job: `address` (settings, URLs, DNS at start-up), `library` (the function
//! library and its loading), `connections` (one owner's clients, per node), `cluster` (the slot
//! map and the road of a command through redirects), `replies` (every reply decoded into a
//! type), `accounts`, `admission` and `ledger` (the calls: what each sends), `subscriber` (the
//! revocation, top-up and key channels), `directory` (the node's test keys, for outages),
//! `recovery` (undoing admissions whose answer was lost, and node liveness). This file holds
//! the store itself and its key names.
//!
//! Failure: every command has a short deadline; an unreachable Redis makes calls fail at once
//! with `StoreError::Unavailable` (the client's reconnect backoff is the circuit breaker: one
//! probe at a time, no pile-up), and service resumes by itself when Redis answers again. An
//! admission whose answer was lost is undone once Redis answers (`recovery`), and the holds of a
//! node whose heartbeat stopped are released by the reaper of any other. It never does
//! floating point, never reads a plain API key, and never blocks a worker (the
//! blocking start-up work runs before workers start).

mod accounts;
mod address;
mod admission;
mod args;
mod cluster;
mod connections;
mod directory;
mod ledger;
mod library;
mod payments;
mod recovery;
mod replies;
mod subscriber;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use address::{RedisStoreSettings, resolve};
pub use connections::Connections;
pub use library::{FUNCTION_LIBRARY, library_version};
#[doc(hidden)]
pub use replies::decode_with_every_reader;

use crate::digits::Num;
use crate::metrics::StoreMetrics;
use crate::redis::{Frame, Reply};
use crate::store::types::{LimitPolicy, StoreError};
use cluster::Router;
use connections::ClientRecipe;
use replies::FromReply;

pub use crate::limits::REDIS_LEDGER_MAX_RECORDS_PER_ACCOUNT as LEDGER_MAX_RECORDS_PER_ACCOUNT;

/// Unique id per store instance, to keep their clients apart in one owner's `Connections`.
static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(1);

pub struct RedisStore {
    settings: RedisStoreSettings,
    policy: LimitPolicy,
    /// The nodes, the slot map and how clients to them are made.
    router: Router,
    /// `PREFIX:{`, how every key name of the store starts (see `key`).
    key_start: Box<[u8]>,
    events: Arc<subscriber::Events>,
    /// Counters of voids and of dead nodes' holds released.
    pub metrics: StoreMetrics,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.events.stop.store(true, Ordering::Release);
    }
}

impl RedisStore {
    /// Builds the store, loads the function library into every node it can reach and starts
    /// the subscriber. A Redis that is down now does not stop the gateway from starting: calls
    /// fail (503 for paid requests, readiness false) until it answers.
    pub fn connect(settings: RedisStoreSettings, policy: LimitPolicy) -> Arc<RedisStore> {
        let recipe = ClientRecipe {
            store_id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed),
            password: settings.password.clone(),
            command_timeout: settings.command_timeout,
        };
        let router = Router::new(settings.cluster, settings.nodes.clone(), recipe);
        let key_start = [settings.prefix.as_bytes(), b":{"].concat().into_boxed_slice();
        let store = Arc::new(RedisStore {
            settings,
            policy,
            router,
            key_start,
            events: Arc::new(subscriber::Events::default()),
            metrics: StoreMetrics::default(),
        });
        if store.settings.cluster
            && let Err(error) = store.router.refresh_slots_blocking()
        {
            crate::log_warn!("redis cluster: cannot read the slot map yet: {error}");
        }
        let timeout = store.settings.command_timeout.max(Duration::from_secs(1));
        for addr in store.router.masters() {
            match library::load_blocking(addr, store.settings.password.as_deref(), timeout) {
                Ok(message) => crate::log_info!("redis {addr}: {message}"),
                Err(error) => crate::log_warn!("redis {addr}: functions not loaded yet: {error}"),
            }
        }
        let mut nodes = store.router.masters();
        nodes.extend(store.settings.nodes.iter().copied());
        let channels = subscriber::Channels {
            revocations: store.revocations_channel(),
            topups: store.topups_channel(),
            keys: store.keys_channel(),
        };
        subscriber::start(store.events.clone(), nodes, store.settings.password.clone(), channels);
        store
    }

    /// Runs `args` on the node serving `routing_key` (see `Router::command`) and keeps its
    /// reply as an owned tree (allocates: for calls off the request path).
    async fn command(
        &self,
        connections: &Connections,
        routing_key: &[u8],
        args: &[&[u8]],
    ) -> Result<Reply, StoreError> {
        self.router.command(connections, routing_key, args, |frame: Frame<'_>| frame.to_reply()).await
    }

    /// Runs `args` like `command` and reads its reply as a `T` where it was received: nothing
    /// is allocated unless `T` keeps text.
    async fn read<T: FromReply>(
        &self,
        connections: &Connections,
        routing_key: &[u8],
        args: &[&[u8]],
    ) -> Result<T, StoreError> {
        self.router.command(connections, routing_key, args, T::from_reply).await?
    }

    /// `PREFIX:{ACCOUNT}:SUFFIX` (the braces make the account the Cluster hash tag); built
    /// by hand on the stack (`KeyName`), since a `String` per key was most of what a store call
    /// allocated.
    fn key(&self, account_id: &str, suffix: &str) -> KeyName {
        KeyName::new([self.settings.prefix.as_str(), ":{", account_id, "}:", suffix])
    }

    /// The name `key(account_id, suffix)` spells, as the parts a call writes one after the
    /// other (no name assembled on the way); `tail` is `}:` and the suffix, one constant part.
    fn key_parts<'a>(&'a self, account_id: &'a str, tail: &'static str) -> [&'a [u8]; 3] {
        debug_assert!(tail.starts_with("}:"), "a key's tail closes its hash tag");
        [&self.key_start, account_id.as_bytes(), tail.as_bytes()]
    }

    /// The Cluster slot of the account's keys (all under one hash tag): for `Router::send`.
    fn account_slot(&self, account_id: &str) -> u16 {
        crate::redis::key_slot(self.key(account_id, "acct").as_bytes())
    }

    /// The clock argument of a function: `0` tells it to read Redis's `TIME`.
    fn now_arg(&self, now_ms: u64) -> Num {
        Num::new(self.now_value(now_ms))
    }

    /// The `now` a function is given: the caller's clock if the store uses it, else 0 (Redis TIME).
    fn now_value(&self, now_ms: u64) -> u64 {
        if self.settings.caller_clock { now_ms } else { 0 }
    }

    fn revocations_channel(&self) -> String {
        format!("{}:revocations", self.settings.prefix)
    }

    fn topups_channel(&self) -> String {
        format!("{}:topups", self.settings.prefix)
    }

    fn keys_channel(&self) -> String {
        format!("{}:keys", self.settings.prefix)
    }

    pub fn revocation_generation(&self) -> u64 {
        self.events.revocations.load(Ordering::Acquire)
    }

    pub fn topup_generation(&self) -> u64 {
        self.events.topups.load(Ordering::Acquire)
    }

    /// Whether the owner has lost a connection of this store and not made a new one yet.
    pub fn seems_down(&self, connections: &Connections) -> bool {
        self.router.seems_down(connections)
    }

    /// Whether the revocation subscriber is connected (readiness detail).
    pub fn subscribed(&self) -> bool {
        self.events.subscribed.load(Ordering::Acquire)
    }

    /// Whether every master answers `PING` now.
    pub async fn ping(&self, connections: &Connections) -> bool {
        let masters: Vec<SocketAddr> = self.router.masters();
        if masters.is_empty() {
            if self.settings.cluster {
                self.router.refresh_slots(connections).await;
            }
            return false;
        }
        for addr in masters {
            if !matches!(self.router.client(connections, addr).call(&[b"PING"]).await, Ok(Reply::SimpleString(_))) {
                return false;
            }
        }
        true
    }
}

/// Key names up to this long are built on the stack (a 64-byte prefix and a 64-byte account id
/// with the longest fixed suffix fit); longer ones go on the heap.
const INLINE_KEY_NAME_BYTES: usize = 160;

/// One Redis key's name, built without allocating when it fits in `INLINE_KEY_NAME_BYTES`.
pub(crate) struct KeyName(KeyRepr);

enum KeyRepr {
    Inline { len: usize, bytes: [u8; INLINE_KEY_NAME_BYTES] },
    Heap(String),
}

impl KeyName {
    /// The name `parts` spell, in order.
    fn new<const N: usize>(parts: [&str; N]) -> KeyName {
        let len: usize = parts.iter().map(|part| part.len()).sum();
        if len > INLINE_KEY_NAME_BYTES {
            return KeyName(KeyRepr::Heap(parts.concat()));
        }
        let mut bytes = [0u8; INLINE_KEY_NAME_BYTES];
        let mut at = 0;
        for part in parts {
            bytes[at..at + part.len()].copy_from_slice(part.as_bytes());
            at += part.len();
        }
        KeyName(KeyRepr::Inline { len, bytes })
    }

    pub(crate) fn as_str(&self) -> &str {
        match &self.0 {
            // Whole `str`s copied end to end in `new`: valid UTF-8.
            KeyRepr::Inline { len, bytes } => std::str::from_utf8(&bytes[..*len]).unwrap_or(""),
            KeyRepr::Heap(name) => name,
        }
    }
}

impl std::ops::Deref for KeyName {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for KeyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for KeyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}
