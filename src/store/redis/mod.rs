//! The Redis store: the `Store` calls on a Redis 7 server or Redis Cluster shared by any number
//! of gateway nodes.
//!
//! Every decision about money and limits runs inside Redis as one Function call per step
//! (`fikra.lua`): admission (RPM + TPM + wallet hold) is one `FCALL`, settlement (charge,
//! release, TPM true-up, ledger append to the account's Stream) is one `FCALL`, a top-up is one
//! `FCALL` after a global claim of its payment reference. Each function touches one account's
//! keys only, all under the hash tag `{account}`, so it runs on one Cluster slot.
//!
//! Connections: each worker thread has its own pipelined `RedisClient` per Redis node (made on
//! first use, on that thread's runtime). Cluster routing follows the slot map read with
//! `CLUSTER SLOTS`, corrects itself on `MOVED` (and refreshes the map) and follows `ASK`.
//! A function library missing on a node (a Redis restarted without persistence) is loaded again
//! on the spot. A dedicated thread subscribes to the revocation and top-up channels and bumps
//! generation counters that workers compare against their caches.
//!
//! Failure: every command has a short deadline; an unreachable Redis makes calls fail at once
//! with `StoreError::Unavailable` (the client's reconnect backoff is the circuit breaker: one
//! probe at a time, no pile-up), and service resumes by itself when Redis answers again.

// TODO(store split): these `eprintln!`s become `crate::log_*!` lines with the split.
#![allow(clippy::print_stderr)]

use std::cell::RefCell;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::*;
use crate::digits::Num;
use crate::errors::Bucket;
use crate::limits::{HOLD_TTL_MS, LEASE_ESCROW_TTL_MS, MAX_USAGE_QUERY_LIMIT};
use crate::redis::{RedisClient, RedisError, RedisSettings, Reply, blocking_call, key_slot};

/// The function library, loaded into every Redis (master) node at start-up.
pub const FUNCTION_LIBRARY: &str = include_str!("../fikra.lua");
/// Usage records kept per account in its ledger Stream (trimmed approximately beyond this).
pub const LEDGER_MAX_RECORDS_PER_ACCOUNT: u64 = 1_000_000;
/// Expired holds released per account per reaper call.
const REAP_BATCH: u64 = 1_000;
/// Keys a reaper `SCAN` step asks for.
const REAP_SCAN_COUNT: &str = "1000";
/// While a slot moves, a command whose keys are split between nodes gets `TRYAGAIN`: it is
/// asked again every `TRY_AGAIN_PAUSE_MS` for at most `TRY_AGAIN_MAX_WAIT_MS` in all.
const TRY_AGAIN_PAUSE_MS: u64 = 25;
const TRY_AGAIN_MAX_WAIT_MS: u64 = 1_000;
/// Redirects followed for one command before giving up.
const MAX_REDIRECTS: usize = 5;
/// Shortest time between two slot-map refreshes, in milliseconds.
const SLOT_REFRESH_MIN_INTERVAL_MS: u64 = 100;
/// How long the subscriber waits on a read before checking whether it should stop.
const SUBSCRIBER_POLL: Duration = Duration::from_millis(500);
const CLUSTER_SLOTS: usize = 16_384;

/// The version number the library declares (`local LIBRARY_VERSION = N`).
pub fn library_version() -> i64 {
    FUNCTION_LIBRARY
        .lines()
        .find_map(|line| line.strip_prefix("local LIBRARY_VERSION = "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Where the store is and how to talk to it.
#[derive(Clone, Debug)]
pub struct RedisStoreSettings {
    /// One address for a standalone server; seed nodes for a Cluster.
    pub nodes: Vec<SocketAddr>,
    pub cluster: bool,
    pub password: Option<String>,
    /// Every key starts with `prefix:`.
    pub prefix: String,
    pub command_timeout: Duration,
    /// Use the `now_ms` the gateway passes (manual clocks in tests) instead of Redis's `TIME`.
    pub caller_clock: bool,
}

impl RedisStoreSettings {
    /// Reads `redis://[user:password@]host:port[/db]`; only database 0 (Cluster has no other).
    pub fn from_url(url: &str) -> Result<(SocketAddr, Option<String>), String> {
        if url.starts_with("rediss://") {
            return Err(
                "rediss:// (TLS to Redis) is not supported by this build; use redis:// on a private network".into()
            );
        }
        let rest = url.strip_prefix("redis://").ok_or("redis_url must start with redis://")?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if !(path.is_empty() || path == "0") {
            return Err("only database 0 is supported (the same key layout works on Redis Cluster)".into());
        }
        let (password, host) = match authority.rsplit_once('@') {
            Some((credentials, host)) => {
                let password = credentials.split_once(':').map_or(credentials, |(_, password)| password);
                (Some(password.to_string()).filter(|p| !p.is_empty()), host)
            }
            None => (None, authority),
        };
        let addr = resolve(host)?;
        Ok((addr, password))
    }
}

/// Resolves `host:port` (default port 6379) to its first address.
pub fn resolve(host: &str) -> Result<SocketAddr, String> {
    let with_port = if host.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok()) {
        host.to_string()
    } else {
        format!("{host}:6379")
    };
    // TODO(store split): blocking DNS is allowed here because this runs at start-up, before the
    // workers (`runtime::build_store`, `RedisStoreSettings::from_url`); the split says so in place.
    #[allow(clippy::disallowed_methods)]
    let resolved = with_port.to_socket_addrs();
    resolved
        .map_err(|error| format!("cannot resolve {with_port}: {error}"))?
        .next()
        .ok_or_else(|| format!("{with_port} resolves to no address"))
}

/// Which node serves which slot.
struct SlotMap {
    nodes: Vec<SocketAddr>,
    /// Index into `nodes` per slot; `u16::MAX` for a slot no node serves.
    slot_node: Vec<u16>,
}

impl SlotMap {
    fn node_of(&self, slot: u16) -> Option<SocketAddr> {
        let index = *self.slot_node.get(usize::from(slot))?;
        self.nodes.get(usize::from(index)).copied()
    }

    /// From a `CLUSTER SLOTS` reply: `[[start, end, [ip, port, id], replicas...], ...]`.
    fn from_reply(reply: &Reply) -> Option<SlotMap> {
        let Reply::Array(ranges) = reply else { return None };
        let mut map = SlotMap { nodes: Vec::new(), slot_node: vec![u16::MAX; CLUSTER_SLOTS] };
        for range in ranges {
            let Reply::Array(parts) = range else { return None };
            let (Some(Reply::Integer(start)), Some(Reply::Integer(end)), Some(Reply::Array(master))) =
                (parts.first(), parts.get(1), parts.get(2))
            else {
                return None;
            };
            let (Some(Reply::BulkString(ip)), Some(Reply::Integer(port))) = (master.first(), master.get(1)) else {
                return None;
            };
            let ip = std::str::from_utf8(ip).ok()?.parse().ok()?;
            let addr = SocketAddr::new(ip, u16::try_from(*port).ok()?);
            let index = match map.nodes.iter().position(|known| *known == addr) {
                Some(index) => index,
                None => {
                    map.nodes.push(addr);
                    map.nodes.len() - 1
                }
            };
            let (start, end) = (usize::try_from(*start).ok()?, usize::try_from(*end).ok()?);
            for slot in map.slot_node.get_mut(start..=end)? {
                *slot = index as u16;
            }
        }
        Some(map)
    }
}

/// What the subscriber thread tells the workers.
#[derive(Default)]
struct Events {
    revocations: AtomicU64,
    topups: AtomicU64,
    subscribed: AtomicBool,
    stop: AtomicBool,
}

/// Unique id per store instance, to keep their per-thread clients apart.
static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(1);

struct ThreadClient {
    store_id: u64,
    addr: SocketAddr,
    epoch: u64,
    client: Rc<RedisClient>,
}

thread_local! {
    static THREAD_CLIENTS: RefCell<Vec<ThreadClient>> = const { RefCell::new(Vec::new()) };
}

pub struct RedisStore {
    id: u64,
    settings: RedisStoreSettings,
    policy: LimitPolicy,
    /// Cluster only.
    slots: RwLock<Option<SlotMap>>,
    last_slot_refresh_ms: AtomicU64,
    started: Instant,
    events: Arc<Events>,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.events.stop.store(true, Ordering::Release);
    }
}

/// Token counts beyond this are treated as this much (keeps Lua arithmetic exact; no real
/// request comes near it).
const MAX_SETTLED_TOKENS: u64 = 1_000_000_000;

fn unavailable(error: RedisError) -> StoreError {
    if let RedisError::Server(message) = &error {
        eprintln!("fikra-gateway: redis store: {message}");
    }
    StoreError::Unavailable
}

fn int_at(items: &[Reply], index: usize) -> Result<i64, StoreError> {
    match items.get(index) {
        Some(Reply::Integer(value)) => Ok(*value),
        Some(Reply::BulkString(text)) | Some(Reply::SimpleString(text)) => {
            std::str::from_utf8(text).ok().and_then(|t| t.parse().ok()).ok_or(StoreError::Unavailable)
        }
        _ => Err(StoreError::Unavailable),
    }
}

fn u64_at(items: &[Reply], index: usize) -> Result<u64, StoreError> {
    int_at(items, index).map(|value| value.max(0) as u64)
}

fn text_at(items: &[Reply], index: usize) -> Option<&str> {
    match items.get(index) {
        Some(Reply::BulkString(text)) | Some(Reply::SimpleString(text)) => std::str::from_utf8(text).ok(),
        _ => None,
    }
}

fn array(reply: Reply) -> Result<Vec<Reply>, StoreError> {
    match reply {
        Reply::Array(items) => Ok(items),
        _ => Err(StoreError::Unavailable),
    }
}

fn rates_at(items: &[Reply], start: usize) -> Result<RateSnapshot, StoreError> {
    Ok(RateSnapshot {
        requests_limit: u64_at(items, start)?,
        requests_remaining: u64_at(items, start + 1)?,
        requests_reset_ms: u64_at(items, start + 2)?,
        tokens_limit: u64_at(items, start + 3)?,
        tokens_remaining: u64_at(items, start + 4)?,
        tokens_reset_ms: u64_at(items, start + 5)?,
    })
}

impl RedisStore {
    /// Builds the store, loads the function library into every node it can reach and starts
    /// the subscriber. A Redis that is down now does not stop the gateway from starting: calls
    /// fail (503 for paid requests, readiness false) until it answers.
    pub fn connect(settings: RedisStoreSettings, policy: LimitPolicy) -> Arc<RedisStore> {
        let store = Arc::new(RedisStore {
            id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed),
            settings,
            policy,
            slots: RwLock::new(None),
            last_slot_refresh_ms: AtomicU64::new(0),
            // TODO(store split): read through `crate::clock::monotonic_ms` instead.
            #[allow(clippy::disallowed_methods)]
            started: Instant::now(),
            events: Arc::new(Events::default()),
        });
        if store.settings.cluster
            && let Err(error) = store.refresh_slots_blocking()
        {
            eprintln!("fikra-gateway: redis cluster: cannot read the slot map yet: {error}");
        }
        for addr in store.masters() {
            match store.load_functions_blocking(addr) {
                Ok(message) => eprintln!("fikra-gateway: redis {addr}: {message}"),
                Err(error) => eprintln!("fikra-gateway: redis {addr}: functions not loaded yet: {error}"),
            }
        }
        store.start_subscriber();
        store
    }

    /// `PREFIX:{ACCOUNT}:SUFFIX` (the braces make the account the Cluster hash tag); built
    /// by hand, since `format!` costs several times more on the admission path.
    fn key(&self, account_id: &str, suffix: &str) -> String {
        let prefix = &self.settings.prefix;
        let mut key = String::with_capacity(prefix.len() + account_id.len() + suffix.len() + 4);
        key.push_str(prefix);
        key.push_str(":{");
        key.push_str(account_id);
        key.push_str("}:");
        key.push_str(suffix);
        key
    }

    fn now_arg(&self, now_ms: u64) -> Num {
        Num::new(if self.settings.caller_clock { now_ms } else { 0 })
    }

    // TODO(store split): read through `crate::clock::monotonic_ms` instead.
    #[allow(clippy::disallowed_methods)]
    fn millis_since_start(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Every master node known now.
    fn masters(&self) -> Vec<SocketAddr> {
        if !self.settings.cluster {
            return self.settings.nodes.clone();
        }
        match &*self.slots.read().unwrap_or_else(|e| e.into_inner()) {
            Some(map) => map.nodes.clone(),
            None => Vec::new(),
        }
    }

    fn password(&self) -> Option<&str> {
        self.settings.password.as_deref()
    }

    /// Loads the library unless the node already has this version (or a newer one).
    fn load_functions_blocking(&self, addr: SocketAddr) -> Result<String, RedisError> {
        let timeout = self.settings.command_timeout.max(Duration::from_secs(1));
        let ours = library_version();
        if let Ok(Reply::Integer(loaded)) =
            blocking_call(addr, self.password(), timeout, &[b"FCALL", b"fk_version", b"0"])
            && loaded >= ours
        {
            return Ok(format!("function library fikra v{loaded} already loaded (this build: v{ours})"));
        }
        blocking_call(
            addr,
            self.password(),
            timeout,
            &[b"FUNCTION", b"LOAD", b"REPLACE", FUNCTION_LIBRARY.as_bytes()],
        )?;
        Ok(format!("loaded function library fikra v{ours}"))
    }

    fn refresh_slots_blocking(&self) -> Result<(), String> {
        let timeout = self.settings.command_timeout.max(Duration::from_secs(1));
        for seed in &self.settings.nodes {
            if let Ok(reply) = blocking_call(*seed, self.password(), timeout, &[b"CLUSTER", b"SLOTS"])
                && let Some(map) = SlotMap::from_reply(&reply)
            {
                *self.slots.write().unwrap_or_else(|e| e.into_inner()) = Some(map);
                return Ok(());
            }
        }
        Err("no seed node answered CLUSTER SLOTS".into())
    }

    /// This thread's client for `addr`, made on first use (and again after a runtime change).
    fn client(&self, addr: SocketAddr) -> Rc<RedisClient> {
        let epoch = crate::redis::runtime_epoch();
        THREAD_CLIENTS.with(|clients| {
            let mut clients = clients.borrow_mut();
            if let Some(position) = clients.iter().position(|c| c.store_id == self.id && c.addr == addr) {
                if clients[position].epoch == epoch {
                    return clients[position].client.clone();
                }
                // Bound to a runtime that has ended: its sockets must not be touched (not even
                // dropped) from another runtime.
                std::mem::forget(clients.swap_remove(position));
            }
            let client = Rc::new(RedisClient::new(RedisSettings {
                addr,
                password: self.settings.password.clone(),
                connect_timeout: self.settings.command_timeout,
                command_timeout: self.settings.command_timeout,
            }));
            clients.push(ThreadClient { store_id: self.id, addr, epoch, client: client.clone() });
            client
        })
    }

    /// Whether this thread has lost a connection of this store and not made a new one yet.
    pub fn seems_down(&self) -> bool {
        let epoch = crate::redis::runtime_epoch();
        THREAD_CLIENTS.with(|clients| {
            clients.borrow().iter().any(|c| c.store_id == self.id && c.epoch == epoch && c.client.is_failing())
        })
    }

    fn node_for(&self, routing_key: &[u8]) -> Option<SocketAddr> {
        if !self.settings.cluster {
            return self.settings.nodes.first().copied();
        }
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        slots.as_ref()?.node_of(key_slot(routing_key))
    }

    /// Re-reads the slot map from any node this thread can reach (at most every 100 ms).
    async fn refresh_slots(&self) {
        let now = self.millis_since_start();
        let last = self.last_slot_refresh_ms.load(Ordering::Acquire);
        if now.saturating_sub(last) < SLOT_REFRESH_MIN_INTERVAL_MS && last != 0 {
            return;
        }
        self.last_slot_refresh_ms.store(now.max(1), Ordering::Release);
        let mut candidates = self.masters();
        candidates.extend(self.settings.nodes.iter().copied());
        for addr in candidates {
            if let Ok(reply) = self.client(addr).call(&[b"CLUSTER", b"SLOTS"]).await
                && let Some(map) = SlotMap::from_reply(&reply)
            {
                *self.slots.write().unwrap_or_else(|e| e.into_inner()) = Some(map);
                return;
            }
        }
    }

    /// Runs `args` on the node serving `routing_key`, following redirects, reloading the
    /// function library where it is missing.
    async fn command(&self, routing_key: &[u8], args: &[&[u8]]) -> Result<Reply, StoreError> {
        let mut target = self.node_for(routing_key);
        if target.is_none() && self.settings.cluster {
            self.refresh_slots().await;
            target = self.node_for(routing_key);
        }
        let mut addr = target.ok_or(StoreError::Unavailable)?;
        let mut asking = false;
        let mut reloaded = false;
        let mut redirects = 0;
        let mut try_again_waited_ms = 0;
        while redirects < MAX_REDIRECTS {
            redirects += 1;
            let client = self.client(addr);
            let result = if asking { client.call_asking(args).await } else { client.call(args).await };
            asking = false;
            match result {
                Ok(reply) => return Ok(reply),
                Err(RedisError::Server(message)) => {
                    if let Some(rest) = message.strip_prefix("MOVED ") {
                        addr = redirect_target(rest).ok_or(StoreError::Unavailable)?;
                        self.refresh_slots().await;
                    } else if let Some(rest) = message.strip_prefix("ASK ") {
                        addr = redirect_target(rest).ok_or(StoreError::Unavailable)?;
                        asking = true;
                    } else if message.contains("Function not found") && !reloaded {
                        reloaded = true;
                        let library: &[u8] = FUNCTION_LIBRARY.as_bytes();
                        client.call(&[b"FUNCTION", b"LOAD", b"REPLACE", library]).await.map_err(unavailable)?;
                        eprintln!("fikra-gateway: redis {addr}: function library was missing; loaded it again");
                    } else if message.starts_with("TRYAGAIN") && try_again_waited_ms < TRY_AGAIN_MAX_WAIT_MS {
                        // The account's slot is moving and its keys are split between two
                        // nodes for a moment: ask the owner again shortly (not a redirect).
                        monoio::time::sleep(Duration::from_millis(TRY_AGAIN_PAUSE_MS)).await;
                        try_again_waited_ms += TRY_AGAIN_PAUSE_MS;
                        redirects = 0;
                        self.refresh_slots().await;
                        addr = self.node_for(routing_key).unwrap_or(addr);
                    } else if message.starts_with("TRYAGAIN") || message.starts_with("CLUSTERDOWN") {
                        return Err(StoreError::Unavailable);
                    } else {
                        return Err(unavailable(RedisError::Server(message)));
                    }
                }
                Err(error) => return Err(unavailable(error)),
            }
        }
        Err(StoreError::Unavailable)
    }

    /// The (unverified, trusted) limits for this account and key kind, as function arguments.
    fn limit_args(&self, account_id: &str, kind: KeyKind) -> [Num; 4] {
        let unverified = self.policy.limits_for(account_id, TIER_UNVERIFIED, kind);
        let trusted = self.policy.limits_for(account_id, TIER_TRUSTED, kind);
        [
            Num::new(unverified.requests_per_minute),
            Num::new(unverified.tokens_per_minute),
            Num::new(trusted.requests_per_minute),
            Num::new(trusted.tokens_per_minute),
        ]
    }

    pub async fn create_account(
        &self,
        id: Option<&str>,
        signup_credit: Nanos,
        now_ms: u64,
    ) -> Result<AccountView, StoreError> {
        let id: Arc<str> = match id {
            Some(id) => id.into(),
            None => format!("acct_{}", crate::ids::random_base62(16)).into(),
        };
        let acct = self.key(&id, "acct");
        let credit = Num::new(signup_credit.0);
        let now = self.now_arg(now_ms);
        let reply = self
            .command(
                acct.as_bytes(),
                &[b"FCALL", b"fk_create_account", b"1", acct.as_bytes(), credit.as_bytes(), now.as_bytes()],
            )
            .await?;
        let items = array(reply)?;
        match int_at(&items, 0)? {
            1 => Ok(AccountView {
                id,
                tier: TIER_UNVERIFIED.into(),
                balance: signup_credit,
                held: Nanos::ZERO,
                created_at_ms: u64_at(&items, 1)?,
            }),
            -2 => Err(StoreError::AlreadyExists),
            _ => Err(StoreError::Unavailable),
        }
    }

    pub async fn account(&self, id: &str) -> Result<AccountView, StoreError> {
        let acct = self.key(id, "acct");
        let reply = self
            .command(acct.as_bytes(), &[b"HMGET", acct.as_bytes(), b"tier", b"balance", b"held", b"created_at"])
            .await?;
        let items = array(reply)?;
        let tier = text_at(&items, 0).ok_or(StoreError::NotFound)?;
        Ok(AccountView {
            id: id.into(),
            tier: tier.into(),
            balance: Nanos(u64_at(&items, 1)?),
            held: Nanos(u64_at(&items, 2)?),
            created_at_ms: u64_at(&items, 3)?,
        })
    }

    fn key_record_key(&self, hash: &KeyHash) -> String {
        let mut key = format!("{}:key:", self.settings.prefix);
        for byte in hash {
            key.push_str(&format!("{byte:02x}"));
        }
        key
    }

    pub async fn insert_key(&self, hash: KeyHash, record: KeyRecord) -> Result<(), StoreError> {
        let acct = self.key(&record.account_id, "acct");
        match self.command(acct.as_bytes(), &[b"EXISTS", acct.as_bytes()]).await? {
            Reply::Integer(1) => {}
            _ => return Err(StoreError::NotFound),
        }
        let record_key = self.key_record_key(&hash);
        let id_key = format!("{}:keyid:{}", self.settings.prefix, record.key_id);
        let hex = &record_key[record_key.len() - 64..];
        let claimed = self.command(id_key.as_bytes(), &[b"SET", id_key.as_bytes(), hex.as_bytes(), b"NX"]).await?;
        if claimed == Reply::Null {
            return Err(StoreError::AlreadyExists);
        }
        let name = record.name.as_deref().unwrap_or("");
        let kind: &[u8] = if record.kind == KeyKind::Live { b"l" } else { b"t" };
        let args: [&[u8]; 8] = [
            b"FCALL",
            b"fk_put_key",
            b"1",
            record_key.as_bytes(),
            record.key_id.as_bytes(),
            record.account_id.as_bytes(),
            kind,
            name.as_bytes(),
        ];
        match self.command(record_key.as_bytes(), &args).await? {
            Reply::Integer(1) => Ok(()),
            _ => {
                let _ = self.command(id_key.as_bytes(), &[b"DEL", id_key.as_bytes()]).await;
                Err(StoreError::AlreadyExists)
            }
        }
    }

    pub async fn resolve_key(&self, hash: &KeyHash) -> Result<KeyRecord, StoreError> {
        let record_key = self.key_record_key(hash);
        let args: [&[u8]; 7] = [b"HMGET", record_key.as_bytes(), b"key_id", b"account", b"kind", b"name", b"revoked"];
        let items = array(self.command(record_key.as_bytes(), &args).await?)?;
        let key_id = text_at(&items, 0).ok_or(StoreError::NotFound)?;
        let account_id = text_at(&items, 1).ok_or(StoreError::NotFound)?;
        let kind = if text_at(&items, 2) == Some("l") { KeyKind::Live } else { KeyKind::Test };
        let name = text_at(&items, 3).filter(|name| !name.is_empty()).map(Arc::from);
        Ok(KeyRecord {
            key_id: key_id.into(),
            account_id: account_id.into(),
            kind,
            name,
            revoked: text_at(&items, 4) == Some("1"),
        })
    }

    pub async fn revoke_key(&self, key_id: &str) -> Result<(), StoreError> {
        let id_key = format!("{}:keyid:{key_id}", self.settings.prefix);
        let hex = match self.command(id_key.as_bytes(), &[b"GET", id_key.as_bytes()]).await? {
            Reply::BulkString(hex) => hex,
            _ => return Err(StoreError::NotFound),
        };
        let record_key = format!("{}:key:{}", self.settings.prefix, String::from_utf8_lossy(&hex));
        self.command(record_key.as_bytes(), &[b"HSET", record_key.as_bytes(), b"revoked", b"1"]).await?;
        // This node's workers drop their caches at once; the others when the message arrives
        // (or, should it be lost, when their cache entry's short TTL runs out).
        self.events.revocations.fetch_add(1, Ordering::AcqRel);
        let channel = format!("{}:revocations", self.settings.prefix);
        self.command(channel.as_bytes(), &[b"PUBLISH", channel.as_bytes(), key_id.as_bytes()]).await?;
        Ok(())
    }

    pub fn revocation_generation(&self) -> u64 {
        self.events.revocations.load(Ordering::Acquire)
    }

    pub fn topup_generation(&self) -> u64 {
        self.events.topups.load(Ordering::Acquire)
    }

    pub async fn topup(
        &self,
        account_id: &str,
        amount: Nanos,
        reference: &str,
        _now_ms: u64,
    ) -> Result<TopupResult, StoreError> {
        // 1. Claim the reference for this account, globally (a reference credits one account
        //    once). A claim left behind by a crash between the steps is completed by a retry.
        let claim = format!("{}:payref:{reference}", self.settings.prefix);
        let acct = self.key(account_id, "acct");
        if let Reply::Null =
            self.command(claim.as_bytes(), &[b"SET", claim.as_bytes(), account_id.as_bytes(), b"NX"]).await?
        {
            let owner = self.command(claim.as_bytes(), &[b"GET", claim.as_bytes()]).await?;
            if !matches!(&owner, Reply::BulkString(owner) if owner == account_id.as_bytes()) {
                let view = self.account(account_id).await?;
                return Ok(TopupResult { balance: view.balance, tier: view.tier, duplicate: true });
            }
        }
        // 2. Credit, once per reference, and flip the tier, in one call.
        let payrefs = self.key(account_id, "payrefs");
        let amount_arg = Num::new(amount.0);
        let args: [&[u8]; 7] = [
            b"FCALL",
            b"fk_topup",
            b"2",
            acct.as_bytes(),
            payrefs.as_bytes(),
            amount_arg.as_bytes(),
            reference.as_bytes(),
        ];
        let items = array(self.command(acct.as_bytes(), &args).await?)?;
        let status = int_at(&items, 0)?;
        match status {
            -1 => {
                let _ = self.command(claim.as_bytes(), &[b"DEL", claim.as_bytes()]).await;
                Err(StoreError::NotFound)
            }
            -4 => {
                let _ = self.command(claim.as_bytes(), &[b"DEL", claim.as_bytes()]).await;
                Err(StoreError::Overflow)
            }
            0 | 1 => {
                let result = TopupResult {
                    balance: Nanos(u64_at(&items, 1)?),
                    tier: text_at(&items, 2).unwrap_or(TIER_TRUSTED).into(),
                    duplicate: status == 0,
                };
                if status == 1 {
                    self.events.topups.fetch_add(1, Ordering::AcqRel);
                    let channel = format!("{}:topups", self.settings.prefix);
                    let _ = self
                        .command(channel.as_bytes(), &[b"PUBLISH", channel.as_bytes(), account_id.as_bytes()])
                        .await;
                }
                Ok(result)
            }
            _ => Err(StoreError::Unavailable),
        }
    }

    pub async fn admit(&self, request: &AdmitRequest<'_>) -> Result<Admission, StoreError> {
        let account = request.account_id;
        let acct = self.key(account, "acct");
        let rate = self.key(account, if request.key_kind == KeyKind::Live { "rate:live" } else { "rate:test" });
        let holds = self.key(account, "holds");
        let holdexp = self.key(account, "holdexp");
        let [u_rpm, u_tpm, t_rpm, t_tpm] = self.limit_args(account, request.key_kind);
        let (input, output) = (Num::new(request.input_tokens_upper), Num::new(request.requested_output_tokens));
        let (in_price, out_price) = (Num::new(request.input_price.0), Num::new(request.output_price.0));
        let now = self.now_arg(request.now_ms);
        let ttl = Num::new(HOLD_TTL_MS);
        let kind: &[u8] = if request.key_kind == KeyKind::Live { b"l" } else { b"t" };
        let client_cap: &[u8] = if request.client_set_output_cap { b"1" } else { b"0" };
        let args: [&[u8]; 22] = [
            b"FCALL",
            b"fk_admit",
            b"4",
            acct.as_bytes(),
            rate.as_bytes(),
            holds.as_bytes(),
            holdexp.as_bytes(),
            request.request_id.as_bytes(),
            request.key_id.as_bytes(),
            kind,
            request.model.as_bytes(),
            input.as_bytes(),
            output.as_bytes(),
            client_cap,
            in_price.as_bytes(),
            out_price.as_bytes(),
            now.as_bytes(),
            u_rpm.as_bytes(),
            u_tpm.as_bytes(),
            t_rpm.as_bytes(),
            t_tpm.as_bytes(),
            ttl.as_bytes(),
        ];
        let items = array(self.command(acct.as_bytes(), &args).await?)?;
        match int_at(&items, 0)? {
            1 => Ok(Admission::Admitted(Admitted {
                hold: Nanos(u64_at(&items, 1)?),
                output_cap_tokens: u64_at(&items, 2)?,
                tokens_charged: u64_at(&items, 3)?,
                rates: rates_at(&items, 4)?,
            })),
            2 => {
                let retry = int_at(&items, 5)?;
                Ok(Admission::RateLimited {
                    bucket: if int_at(&items, 1)? == 0 { Bucket::Requests } else { Bucket::Tokens },
                    limit: u64_at(&items, 2)?,
                    used: u64_at(&items, 3)?,
                    requested: u64_at(&items, 4)?,
                    retry_after_ms: if retry < 0 { u64::MAX } else { retry as u64 },
                    rates: rates_at(&items, 6)?,
                })
            }
            3 => Ok(Admission::TooLargeForTokenLimit {
                limit: u64_at(&items, 1)?,
                requested: u64_at(&items, 2)?,
                rates: rates_at(&items, 3)?,
            }),
            4 => Ok(Admission::InsufficientQuota {
                balance: Nanos(u64_at(&items, 1)?),
                available: Nanos(u64_at(&items, 2)?),
                needed: Nanos(u64_at(&items, 3)?),
                rates: rates_at(&items, 4)?,
            }),
            -1 => Err(StoreError::NotFound),
            -2 => Err(StoreError::AlreadyExists),
            _ => Err(StoreError::Unavailable),
        }
    }

    pub async fn settle(&self, settlement: &Settlement<'_>) -> Result<Settled, StoreError> {
        let account = settlement.account_id;
        let acct = self.key(account, "acct");
        let holds = self.key(account, "holds");
        let holdexp = self.key(account, "holdexp");
        let rate_live = self.key(account, "rate:live");
        let rate_test = self.key(account, "rate:test");
        let ledger = self.key(account, "ledger");
        let [u_rpm, u_tpm, t_rpm, t_tpm] = self.limit_args(account, KeyKind::Live);
        let test = self.policy.limits_for(account, TIER_UNVERIFIED, KeyKind::Test);
        let (test_rpm, test_tpm) = (Num::new(test.requests_per_minute), Num::new(test.tokens_per_minute));
        let prompt = Num::new(settlement.prompt_tokens.min(MAX_SETTLED_TOKENS));
        let completion = Num::new(settlement.completion_tokens.min(MAX_SETTLED_TOKENS));
        let now = self.now_arg(settlement.now_ms);
        let maxlen = Num::new(LEDGER_MAX_RECORDS_PER_ACCOUNT);
        let args: [&[u8]; 21] = [
            b"FCALL",
            b"fk_settle",
            b"6",
            acct.as_bytes(),
            holds.as_bytes(),
            holdexp.as_bytes(),
            rate_live.as_bytes(),
            rate_test.as_bytes(),
            ledger.as_bytes(),
            settlement.request_id.as_bytes(),
            prompt.as_bytes(),
            completion.as_bytes(),
            settlement.outcome.as_str().as_bytes(),
            now.as_bytes(),
            u_rpm.as_bytes(),
            u_tpm.as_bytes(),
            t_rpm.as_bytes(),
            t_tpm.as_bytes(),
            test_rpm.as_bytes(),
            test_tpm.as_bytes(),
            maxlen.as_bytes(),
        ];
        let items = array(self.command(acct.as_bytes(), &args).await?)?;
        match int_at(&items, 0)? {
            1 => Ok(Settled::Charged {
                charged: Nanos(u64_at(&items, 1)?),
                released: Nanos(u64_at(&items, 2)?),
                operator_loss: Nanos(u64_at(&items, 3)?),
            }),
            _ => Ok(Settled::AlreadySettled),
        }
    }

    pub async fn lease(&self, call: &LeaseCall) -> Result<LeaseReply, StoreError> {
        let account = &*call.account_id;
        let acct = self.key(account, "acct");
        let rate = self.key(account, "rate:live");
        let holds = self.key(account, "holds");
        let holdexp = self.key(account, "holdexp");
        let ledger = self.key(account, "ledger");
        let lease_key = self.key(account, &format!("lease:{}", call.lease_id));
        let [u_rpm, u_tpm, t_rpm, t_tpm] = self.limit_args(account, KeyKind::Live);
        let numbers = |values: &[u64]| values.iter().map(|v| Num::new(*v)).collect::<Vec<Num>>();
        let fixed = numbers(&[
            call.seq,
            HOLD_TTL_MS.min(LEASE_ESCROW_TTL_MS),
            LEDGER_MAX_RECORDS_PER_ACCOUNT,
            call.return_requests,
            call.want_requests,
            call.want_tokens,
            call.want_escrow.0,
            call.share,
        ]);
        let now = self.now_arg(call.now_ms);
        let tokens_delta = call.tokens_delta.to_string();
        // Each record as one "request_id key_id model prompt completion cost outcome" line, all
        // in one buffer; the function stores them in one ledger entry.
        let mut lines: Vec<u8> = Vec::with_capacity(call.records.len() * 96);
        let mut ends = Vec::with_capacity(call.records.len());
        let costs: Vec<Num> = call.records.iter().map(|r| Num::new(r.cost.0)).collect();
        for (record, cost) in call.records.iter().zip(&costs) {
            for part in
                [record.request_id.as_bytes(), b" ", record.key_id.as_bytes(), b" ", record.model.as_bytes(), b" "]
            {
                lines.extend_from_slice(part);
            }
            crate::digits::push_decimal(&mut lines, record.prompt_tokens);
            lines.push(b' ');
            crate::digits::push_decimal(&mut lines, record.completion_tokens);
            lines.push(b' ');
            lines.extend_from_slice(cost.as_bytes());
            lines.push(b' ');
            lines.extend_from_slice(record.outcome.as_str().as_bytes());
            ends.push(lines.len());
        }
        let mut args: Vec<&[u8]> = Vec::with_capacity(24 + 2 * call.records.len());
        args.extend_from_slice(&[b"FCALL", b"fk_lease", b"6"]);
        for key in [&acct, &rate, &holds, &holdexp, &ledger, &lease_key] {
            args.push(key.as_bytes());
        }
        args.extend_from_slice(&[
            call.lease_id.as_bytes(),
            fixed[0].as_bytes(),
            now.as_bytes(),
            u_rpm.as_bytes(),
            u_tpm.as_bytes(),
            t_rpm.as_bytes(),
            t_tpm.as_bytes(),
            fixed[1].as_bytes(),
            fixed[2].as_bytes(),
            fixed[3].as_bytes(),
            tokens_delta.as_bytes(),
            fixed[4].as_bytes(),
            fixed[5].as_bytes(),
            fixed[6].as_bytes(),
            fixed[7].as_bytes(),
        ]);
        let mut start = 0;
        for (end, cost) in ends.iter().zip(&costs) {
            args.push(&lines[start..*end]);
            args.push(cost.as_bytes());
            start = *end;
        }
        let items = array(self.command(acct.as_bytes(), &args).await?)?;
        match int_at(&items, 0)? {
            1 => Ok(LeaseReply::Granted {
                requests: u64_at(&items, 1)?,
                tokens: u64_at(&items, 2)?,
                escrow: Nanos(u64_at(&items, 3)?),
                charged: Nanos(u64_at(&items, 4)?),
                operator_loss: Nanos(u64_at(&items, 5)?),
                rates: rates_at(&items, 6)?,
            }),
            0 => Ok(LeaseReply::Superseded),
            -1 => Err(StoreError::NotFound),
            _ => Err(StoreError::Unavailable),
        }
    }

    pub async fn peek_rates(&self, account_id: &str, kind: KeyKind, now_ms: u64) -> Result<RateSnapshot, StoreError> {
        let acct = self.key(account_id, "acct");
        let rate = self.key(account_id, if kind == KeyKind::Live { "rate:live" } else { "rate:test" });
        let [u_rpm, u_tpm, t_rpm, t_tpm] = self.limit_args(account_id, kind);
        let now = self.now_arg(now_ms);
        let args: [&[u8]; 10] = [
            b"FCALL_RO",
            b"fk_peek",
            b"2",
            acct.as_bytes(),
            rate.as_bytes(),
            now.as_bytes(),
            u_rpm.as_bytes(),
            u_tpm.as_bytes(),
            t_rpm.as_bytes(),
            t_tpm.as_bytes(),
        ];
        let items = array(self.command(acct.as_bytes(), &args).await?)?;
        if int_at(&items, 0)? == -1 && items.len() == 1 {
            return Err(StoreError::NotFound);
        }
        rates_at(&items, 0)
    }

    pub async fn usage(&self, account_id: &str, limit: usize) -> Result<Vec<UsageRecord>, StoreError> {
        let acct = self.key(account_id, "acct");
        match self.command(acct.as_bytes(), &[b"EXISTS", acct.as_bytes()]).await? {
            Reply::Integer(1) => {}
            _ => return Err(StoreError::NotFound),
        }
        let ledger = self.key(account_id, "ledger");
        let count = Num::new(limit.min(MAX_USAGE_QUERY_LIMIT) as u64);
        let args: [&[u8]; 6] = [b"XREVRANGE", ledger.as_bytes(), b"+", b"-", b"COUNT", count.as_bytes()];
        let entries = array(self.command(ledger.as_bytes(), &args).await?)?;
        let limit = limit.min(MAX_USAGE_QUERY_LIMIT);
        let mut records = Vec::with_capacity(entries.len().min(limit));
        for entry in entries {
            let Reply::Array(mut parts) = entry else { continue };
            let Some(Reply::Array(fields)) = parts.pop() else { continue };
            let field = |name: &str| -> Option<&str> {
                fields.chunks(2).find(|pair| text_at(pair, 0) == Some(name)).and_then(|pair| text_at(pair, 1))
            };
            let number = |name: &str| field(name).and_then(|value| value.parse::<u64>().ok()).unwrap_or(0);
            let created_at_ms = number("created_at");
            if let Some(batch) = field("records") {
                // A lease call's records, oldest first: newest first here like the entries.
                for line in batch.split(';').rev() {
                    let parts: Vec<&str> = line.split(' ').collect();
                    if let [request_id, key_id, model, prompt, completion, cost, outcome] = parts[..] {
                        let number = |text: &str| text.parse::<u64>().unwrap_or(0);
                        records.push(UsageRecord {
                            request_id: request_id.into(),
                            key_id: key_id.into(),
                            model: model.into(),
                            prompt_tokens: number(prompt),
                            completion_tokens: number(completion),
                            cost: Nanos(number(cost)),
                            outcome: outcome_name(Some(outcome)),
                            created_at_ms,
                        });
                    }
                }
            } else {
                records.push(UsageRecord {
                    request_id: field("request_id").unwrap_or("").into(),
                    key_id: field("key_id").unwrap_or("").into(),
                    model: field("model").unwrap_or("").into(),
                    prompt_tokens: number("prompt_tokens"),
                    completion_tokens: number("completion_tokens"),
                    cost: Nanos(number("cost")),
                    outcome: outcome_name(field("outcome")),
                    created_at_ms,
                });
            }
            if records.len() >= limit {
                records.truncate(limit);
                break;
            }
        }
        Ok(records)
    }

    /// Releases every hold past its expiry, on every node: `SCAN`s for accounts that hold
    /// anything and runs `fk_reap` on each.
    pub async fn reap_expired_holds(&self, now_ms: u64) -> Result<usize, StoreError> {
        if self.settings.cluster {
            self.refresh_slots().await;
        }
        let pattern = format!("{}:{{*}}:holdexp", self.settings.prefix);
        let head = format!("{}:{{", self.settings.prefix);
        let now = self.now_arg(now_ms);
        let maxlen = Num::new(LEDGER_MAX_RECORDS_PER_ACCOUNT);
        let batch = Num::new(REAP_BATCH);
        let mut released = 0usize;
        for addr in self.masters() {
            let client = self.client(addr);
            let mut cursor = b"0".to_vec();
            loop {
                let args: [&[u8]; 8] = [
                    b"SCAN",
                    &cursor,
                    b"MATCH",
                    pattern.as_bytes(),
                    b"COUNT",
                    REAP_SCAN_COUNT.as_bytes(),
                    b"TYPE",
                    b"zset",
                ];
                let mut reply = array(client.call(&args).await.map_err(unavailable)?)?;
                let Some(Reply::Array(keys)) = reply.pop() else { return Err(StoreError::Unavailable) };
                let Some(Reply::BulkString(next)) = reply.pop() else { return Err(StoreError::Unavailable) };
                for key in keys {
                    let Reply::BulkString(key) = key else { continue };
                    let Some(account) = std::str::from_utf8(&key)
                        .ok()
                        .and_then(|key| key.strip_prefix(head.as_str()))
                        .and_then(|rest| rest.strip_suffix("}:holdexp"))
                    else {
                        continue;
                    };
                    let (acct, holds, holdexp, ledger) = (
                        self.key(account, "acct"),
                        self.key(account, "holds"),
                        self.key(account, "holdexp"),
                        self.key(account, "ledger"),
                    );
                    let args: [&[u8]; 10] = [
                        b"FCALL",
                        b"fk_reap",
                        b"4",
                        acct.as_bytes(),
                        holds.as_bytes(),
                        holdexp.as_bytes(),
                        ledger.as_bytes(),
                        now.as_bytes(),
                        maxlen.as_bytes(),
                        batch.as_bytes(),
                    ];
                    if let Reply::Integer(count) = self.command(acct.as_bytes(), &args).await? {
                        released += count.max(0) as usize;
                    }
                }
                if next == b"0" {
                    break;
                }
                cursor = next;
            }
        }
        Ok(released)
    }

    /// Whether every master answers `PING` now.
    pub async fn ping(&self) -> bool {
        let masters = self.masters();
        if masters.is_empty() {
            if self.settings.cluster {
                self.refresh_slots().await;
            }
            return false;
        }
        for addr in masters {
            if !matches!(self.client(addr).call(&[b"PING"]).await, Ok(Reply::SimpleString(_))) {
                return false;
            }
        }
        true
    }

    /// Whether the revocation subscriber is connected (readiness detail).
    pub fn subscribed(&self) -> bool {
        self.events.subscribed.load(Ordering::Acquire)
    }

    fn start_subscriber(&self) {
        let events = self.events.clone();
        let mut nodes = self.masters();
        nodes.extend(self.settings.nodes.iter().copied());
        let password = self.settings.password.clone();
        let revocations = format!("{}:revocations", self.settings.prefix);
        let topups = format!("{}:topups", self.settings.prefix);
        let spawned = std::thread::Builder::new().name("fikra-redis-sub".into()).spawn(move || {
            let mut backoff = Duration::from_millis(crate::redis::RECONNECT_BACKOFF_MIN_MS);
            let mut next_node = 0usize;
            while !events.stop.load(Ordering::Acquire) {
                let addr = nodes[next_node % nodes.len()];
                next_node += 1;
                subscribe(addr, password.as_deref(), &[&revocations, &topups], &events);
                // A session that got as far as subscribing starts the backoff over.
                if events.subscribed.swap(false, Ordering::AcqRel) {
                    backoff = Duration::from_millis(crate::redis::RECONNECT_BACKOFF_MIN_MS);
                }
                if events.stop.load(Ordering::Acquire) {
                    break;
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(crate::redis::RECONNECT_BACKOFF_MAX_MS));
            }
        });
        if let Err(error) = spawned {
            eprintln!("fikra-gateway: cannot start the redis subscriber: {error}");
        }
    }
}

/// A ledger outcome as the store's static name (`unknown` for anything else).
fn outcome_name(text: Option<&str>) -> &'static str {
    match text {
        Some("completed") => Outcome::Completed.as_str(),
        Some("client_aborted") => Outcome::ClientAborted.as_str(),
        Some("backend_failed") => Outcome::BackendFailed.as_str(),
        Some("expired") => "expired",
        _ => "unknown",
    }
}

/// `"3999 127.0.0.1:6381"` -> the address.
fn redirect_target(rest: &str) -> Option<SocketAddr> {
    let (_slot, addr) = rest.split_once(' ')?;
    addr.parse().ok()
}

/// One subscription session: returns when the connection fails or the store stops.
fn subscribe(addr: SocketAddr, password: Option<&str>, channels: &[&str], events: &Events) {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else { return };
    let _ = stream.set_read_timeout(Some(SUBSCRIBER_POLL));
    let mut out = Vec::new();
    if let Some(password) = password {
        crate::redis::encode_command(&mut out, &[b"AUTH", password.as_bytes()]);
    }
    let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
    args.extend(channels.iter().map(|c| c.as_bytes()));
    crate::redis::encode_command(&mut out, &args);
    if stream.write_all(&out).is_err() {
        return;
    }
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if events.stop.load(Ordering::Acquire) {
            return;
        }
        loop {
            match redis_protocol::resp2::decode::decode(&buffer) {
                Ok(Some((frame, used))) => {
                    buffer.drain(..used);
                    match frame {
                        Reply::Array(parts) => match (text_at(&parts, 0), text_at(&parts, 1)) {
                            // Messages may have been missed while not subscribed.
                            (Some("subscribe"), _) if !events.subscribed.swap(true, Ordering::AcqRel) => {
                                events.revocations.fetch_add(1, Ordering::AcqRel);
                                events.topups.fetch_add(1, Ordering::AcqRel);
                            }
                            (Some("message"), Some(channel)) if channel == channels[0] => {
                                events.revocations.fetch_add(1, Ordering::AcqRel);
                            }
                            (Some("message"), Some(_)) => {
                                events.topups.fetch_add(1, Ordering::AcqRel);
                            }
                            _ => {}
                        },
                        Reply::Error(message) => {
                            eprintln!("fikra-gateway: redis subscriber {addr}: {message}");
                            return;
                        }
                        _ => {}
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}
