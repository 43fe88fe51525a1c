//! The road of one command to the node that serves its keys: the Cluster slot map, and the
//! redirects and refusals a node can answer with (`MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`,
//! a missing function library).
//!
//! Owns `Router`: the seed nodes, the slot map (read with `CLUSTER SLOTS`, refreshed on `MOVED`
//! and at most every `SLOT_REFRESH_MIN_INTERVAL_MS`), the recipe of the store's clients, and
//! `Router::command`, the only way a call reaches Redis by key. A standalone server is the one
//! node, with no redirects. It never reads a
//! reply's contents (that is `replies`), never retries a command that may have run (a redirect
//! or `TRYAGAIN` means the node did not run it), and never holds the map's lock across an await.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::connections::{ClientRecipe, Connections};
use super::library;
use super::replies::{FromReply, SlotRanges};
use crate::redis::{Args, Command, Frame, RedisClient, RedisError, blocking_call, key_slot};
use crate::store::types::StoreError;

use crate::limits::{
    REDIS_MAX_REDIRECTS as MAX_REDIRECTS, REDIS_SLOT_REFRESH_MIN_INTERVAL_MS as SLOT_REFRESH_MIN_INTERVAL_MS,
    REDIS_TRY_AGAIN_MAX_WAIT_MS as TRY_AGAIN_MAX_WAIT_MS, REDIS_TRY_AGAIN_PAUSE_MS as TRY_AGAIN_PAUSE_MS,
};

/// Hash slots of a Redis Cluster (a protocol fact).
const CLUSTER_SLOTS: usize = 16_384;

/// A failed command as a store error; a server's error reply (never expected from our own
/// functions) is logged, at most once per interval.
pub(super) fn unavailable(error: RedisError) -> StoreError {
    if let RedisError::Server(message) = &error {
        crate::log_error_every!("redis store: {message}");
    }
    StoreError::Unavailable
}

/// A command that failed, and whether it may have run anyway.
pub(super) struct Failed {
    pub error: StoreError,
    pub may_have_run: bool,
}

/// How one store reaches its nodes.
pub(super) struct Router {
    cluster: bool,
    /// One address for a standalone server; seed nodes for a Cluster.
    seeds: Vec<SocketAddr>,
    recipe: ClientRecipe,
    /// Cluster only.
    slots: RwLock<Option<SlotMap>>,
    last_slot_refresh_ms: AtomicU64,
    /// `clock::monotonic_ms` when the router was built.
    started_ms: u64,
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

    /// The map `CLUSTER SLOTS` describes; `None` if a range lies outside the slots.
    fn from_ranges(ranges: SlotRanges) -> Option<SlotMap> {
        let mut map = SlotMap { nodes: Vec::new(), slot_node: vec![u16::MAX; CLUSTER_SLOTS] };
        for range in ranges.0 {
            let index = match map.nodes.iter().position(|known| *known == range.master) {
                Some(index) => index,
                None => {
                    map.nodes.push(range.master);
                    map.nodes.len() - 1
                }
            };
            for slot in map.slot_node.get_mut(range.first..=range.last)? {
                *slot = index as u16;
            }
        }
        Some(map)
    }

    fn from_reply(reply: Frame<'_>) -> Option<SlotMap> {
        SlotMap::from_ranges(SlotRanges::from_reply(reply).ok()?)
    }
}

impl Router {
    pub fn new(cluster: bool, seeds: Vec<SocketAddr>, recipe: ClientRecipe) -> Router {
        Router {
            cluster,
            seeds,
            recipe,
            slots: RwLock::new(None),
            last_slot_refresh_ms: AtomicU64::new(0),
            started_ms: crate::clock::monotonic_ms(),
        }
    }

    /// The store these clients belong to (apart in an owner's `Connections`).
    pub fn store_id(&self) -> u64 {
        self.recipe.store_id
    }

    /// The owner's client for the node at `addr`.
    pub fn client(&self, connections: &Connections, addr: SocketAddr) -> Rc<RedisClient> {
        connections.client(&self.recipe, addr)
    }

    /// Whether one of the owner's connections to these nodes was lost and not made again yet.
    pub fn seems_down(&self, connections: &Connections) -> bool {
        connections.any_failing(self.recipe.store_id)
    }

    /// Every master node known now.
    pub fn masters(&self) -> Vec<SocketAddr> {
        if !self.cluster {
            return self.seeds.clone();
        }
        match &*self.slots.read().unwrap_or_else(|e| e.into_inner()) {
            Some(map) => map.nodes.clone(),
            None => Vec::new(),
        }
    }

    /// The node serving the slot `slot` computes (asked only of a Cluster).
    fn node_for(&self, slot: &impl Fn() -> u16) -> Option<SocketAddr> {
        if !self.cluster {
            return self.seeds.first().copied();
        }
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        slots.as_ref()?.node_of(slot())
    }

    /// Reads the slot map from the first seed that answers (start-up, blocking).
    pub fn refresh_slots_blocking(&self) -> Result<(), String> {
        let timeout = self.recipe.command_timeout.max(Duration::from_secs(1));
        for seed in &self.seeds {
            let args: [&[u8]; 2] = [b"CLUSTER", b"SLOTS"];
            if let Ok(Some(map)) =
                blocking_call(*seed, self.recipe.password.as_deref(), timeout, &args, SlotMap::from_reply)
            {
                *self.slots.write().unwrap_or_else(|e| e.into_inner()) = Some(map);
                return Ok(());
            }
        }
        Err("no seed node answered CLUSTER SLOTS".into())
    }

    /// Re-reads the slot map from any node these connections can reach (at most every 100 ms).
    pub async fn refresh_slots(&self, connections: &Connections) {
        let now = crate::clock::monotonic_ms().saturating_sub(self.started_ms);
        let last = self.last_slot_refresh_ms.load(Ordering::Acquire);
        if now.saturating_sub(last) < SLOT_REFRESH_MIN_INTERVAL_MS && last != 0 {
            return;
        }
        self.last_slot_refresh_ms.store(now.max(1), Ordering::Release);
        let mut candidates = self.masters();
        candidates.extend(self.seeds.iter().copied());
        for addr in candidates {
            if let Ok(Some(map)) =
                self.client(connections, addr).call_with(&[b"CLUSTER", b"SLOTS"], SlotMap::from_reply).await
            {
                *self.slots.write().unwrap_or_else(|e| e.into_inner()) = Some(map);
                return;
            }
        }
    }

    /// Runs `args` on the node serving `routing_key`, following redirects, reloading the
    /// function library where it is missing; its reply is handed to `read` where it was
    /// received (`RedisClient::call_with`).
    pub async fn command<T>(
        &self,
        connections: &Connections,
        routing_key: &[u8],
        args: &[&[u8]],
        read: impl Fn(Frame<'_>) -> T,
    ) -> Result<T, StoreError> {
        self.send(connections, || key_slot(routing_key), &Args(args), read).await
    }

    /// `command` for a command that encodes itself (an `Fcall`); `slot` says which Cluster slot
    /// its keys are in, and is asked only of a Cluster (a standalone server needs no key name).
    pub async fn send<T>(
        &self,
        connections: &Connections,
        slot: impl Fn() -> u16,
        command: &(impl Command + ?Sized),
        read: impl Fn(Frame<'_>) -> T,
    ) -> Result<T, StoreError> {
        self.send_outcome(connections, slot, command, read).await.map_err(|failed| failed.error)
    }

    /// `send`, saying on failure whether the command may have run anyway (its connection
    /// failed or timed out after it was queued): a caller whose command must not half-happen
    /// (an admission) then undoes it.
    pub async fn send_outcome<T>(
        &self,
        connections: &Connections,
        slot: impl Fn() -> u16,
        command: &(impl Command + ?Sized),
        read: impl Fn(Frame<'_>) -> T,
    ) -> Result<T, Failed> {
        let not_run = |error: StoreError| Failed { error, may_have_run: false };
        let mut target = self.node_for(&slot);
        if target.is_none() && self.cluster {
            self.refresh_slots(connections).await;
            target = self.node_for(&slot);
        }
        let mut addr = target.ok_or(not_run(StoreError::Unavailable))?;
        let mut asking = false;
        let mut reloaded = false;
        let mut redirects = 0;
        let mut try_again_waited_ms = 0;
        while redirects < MAX_REDIRECTS {
            redirects += 1;
            let client = self.client(connections, addr);
            let result = if asking {
                client.send_asking_with(command, &read).await
            } else {
                client.send_with(command, &read).await
            };
            asking = false;
            match result {
                Ok(reply) => return Ok(reply),
                Err(RedisError::Server(message)) => {
                    if let Some(rest) = message.strip_prefix("MOVED ") {
                        addr = redirect_target(rest).ok_or(not_run(StoreError::Unavailable))?;
                        self.refresh_slots(connections).await;
                    } else if let Some(rest) = message.strip_prefix("ASK ") {
                        addr = redirect_target(rest).ok_or(not_run(StoreError::Unavailable))?;
                        asking = true;
                    } else if message.contains("Function not found") && !reloaded {
                        reloaded = true;
                        library::load_again(&client, addr).await.map_err(|error| not_run(unavailable(error)))?;
                    } else if message.starts_with("TRYAGAIN") && try_again_waited_ms < TRY_AGAIN_MAX_WAIT_MS {
                        // The account's slot is moving and its keys are split between two
                        // nodes for a moment: ask the owner again shortly (not a redirect).
                        monoio::time::sleep(Duration::from_millis(TRY_AGAIN_PAUSE_MS)).await;
                        try_again_waited_ms += TRY_AGAIN_PAUSE_MS;
                        redirects = 0;
                        self.refresh_slots(connections).await;
                        addr = self.node_for(&slot).unwrap_or(addr);
                    } else if message.starts_with("TRYAGAIN") || message.starts_with("CLUSTERDOWN") {
                        return Err(not_run(StoreError::Unavailable));
                    } else {
                        // Our functions check everything before their first write: an error
                        // reply wrote nothing.
                        return Err(not_run(unavailable(RedisError::Server(message))));
                    }
                }
                Err(error) => {
                    let may_have_run = error.may_have_run();
                    return Err(Failed { error: unavailable(error), may_have_run });
                }
            }
        }
        Err(not_run(StoreError::Unavailable))
    }
}

/// `"3999 127.0.0.1:6381"` (the rest of a `MOVED` or `ASK` error) -> the address.
fn redirect_target(rest: &str) -> Option<SocketAddr> {
    let (_slot, addr) = rest.split_once(' ')?;
    addr.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redis::replies::SlotRange;

    // Goal: a slot map sends each slot to the master of its range, none for uncovered slots,
    // and refuses a range beyond the last slot.
    #[test]
    fn slot_ranges_make_a_map_of_masters() {
        let (a, b): (SocketAddr, SocketAddr) = ("127.0.0.1:7000".parse().unwrap(), "127.0.0.1:7001".parse().unwrap());
        let ranges = SlotRanges(vec![
            SlotRange { first: 0, last: 99, master: a },
            SlotRange { first: 100, last: 199, master: b },
            SlotRange { first: 200, last: 299, master: a },
        ]);
        let map = SlotMap::from_ranges(ranges).unwrap();
        assert_eq!(map.nodes, [a, b]);
        assert_eq!(
            [map.node_of(0), map.node_of(150), map.node_of(299), map.node_of(300)],
            [Some(a), Some(b), Some(a), None]
        );
        let beyond = SlotRanges(vec![SlotRange { first: 0, last: CLUSTER_SLOTS, master: a }]);
        assert!(SlotMap::from_ranges(beyond).is_none());
        assert_eq!(redirect_target("3999 127.0.0.1:7001"), Some(b));
        assert_eq!(redirect_target("3999"), None);
    }
}
