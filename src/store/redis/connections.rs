//! One owner's connections to the Redis store: a pipelined `RedisClient` per node, made on
//! first use.
//!
//! An owner is whoever runs store calls on one thread: a worker (its `Worker` holds them), the
//! admin handler, the hold reaper, the CLI, a test. Commands of one owner's tasks share its
//! connection to a node, which is what batches them. A client belongs to the monoio runtime it
//! was made on (its sockets are registered with that runtime's driver), so each remembers the
//! thread's runtime epoch (`crate::redis::runtime_epoch`): one made on a runtime that has ended
//! is never used, nor dropped, on a later one; it is let go and a new one is made. Nothing here
//! is shared between threads, and nothing is a thread-local.
//!
//! It also keeps the owner's admissions whose answer was lost (`PendingVoid`), until the owner's
//! void task has told Redis to undo them: a bounded queue that is empty (and allocates nothing)
//! unless a store call failed.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use crate::limits::REDIS_PENDING_VOIDS_MAX;
use crate::redis::{RedisClient, RedisSettings, runtime_epoch};
use crate::store::types::KeyKind;

/// An owner's clients, by store and node.
#[derive(Default)]
pub struct Connections {
    clients: RefCell<Vec<NodeClient>>,
    /// Admissions sent whose answer never came, oldest first (any store of this owner).
    voids: RefCell<VecDeque<PendingVoid>>,
    /// Whether a task is sending this owner's voids now (one at a time).
    voiding: Cell<bool>,
}

/// An admission that may have run although its caller was told it failed: `fk_void` undoes it.
pub(super) struct PendingVoid {
    pub store_id: u64,
    pub account_id: Box<str>,
    pub request_id: Box<str>,
    pub kind: KeyKind,
    /// The admission's `now_ms` (used only with a caller's clock).
    pub admitted_at_ms: u64,
}

/// How one store's clients are made.
pub(super) struct ClientRecipe {
    /// Unique per store instance: one owner's clients of two stores stay apart.
    pub store_id: u64,
    pub password: Option<String>,
    pub command_timeout: Duration,
}

struct NodeClient {
    store_id: u64,
    addr: SocketAddr,
    /// The runtime epoch the client was made in.
    epoch: u64,
    client: Rc<RedisClient>,
}

impl Drop for Connections {
    fn drop(&mut self) {
        let epoch = runtime_epoch();
        for node in self.clients.get_mut().drain(..) {
            if node.epoch != epoch {
                // Bound to a runtime that has ended: its sockets must not be touched.
                std::mem::forget(node);
            }
        }
    }
}

impl Connections {
    /// The owner's client for `addr` of the store `recipe` describes, made on first use (and
    /// again after a runtime change).
    pub(super) fn client(&self, recipe: &ClientRecipe, addr: SocketAddr) -> Rc<RedisClient> {
        let epoch = runtime_epoch();
        let mut clients = self.clients.borrow_mut();
        if let Some(position) = clients.iter().position(|c| c.store_id == recipe.store_id && c.addr == addr) {
            if clients[position].epoch == epoch {
                return clients[position].client.clone();
            }
            // Bound to a runtime that has ended: its sockets must not be touched (not even
            // dropped) from another runtime.
            std::mem::forget(clients.swap_remove(position));
        }
        let client = Rc::new(RedisClient::new(RedisSettings {
            addr,
            password: recipe.password.clone(),
            connect_timeout: recipe.command_timeout,
            command_timeout: recipe.command_timeout,
        }));
        clients.push(NodeClient { store_id: recipe.store_id, addr, epoch, client: client.clone() });
        client
    }

    /// Remembers an admission to undo; when the queue is full the oldest is let go (its hold,
    /// if it ran, then lasts until the hold TTL) and `false` is returned.
    pub(super) fn remember_void(&self, void: PendingVoid) -> bool {
        let mut voids = self.voids.borrow_mut();
        let room = voids.len() < REDIS_PENDING_VOIDS_MAX;
        if !room {
            voids.pop_front();
        }
        voids.push_back(void);
        room
    }

    /// The oldest admission of store `store_id` still to undo, taken out of the queue.
    pub(super) fn next_void(&self, store_id: u64) -> Option<PendingVoid> {
        let mut voids = self.voids.borrow_mut();
        let position = voids.iter().position(|v| v.store_id == store_id)?;
        voids.remove(position)
    }

    /// Puts back a void that could not be sent (Redis still silent), first in line again.
    pub(super) fn retry_void(&self, void: PendingVoid) {
        self.voids.borrow_mut().push_front(void);
    }

    /// How many admissions of store `store_id` are still to undo.
    pub(super) fn pending_voids(&self, store_id: u64) -> usize {
        self.voids.borrow().iter().filter(|v| v.store_id == store_id).count()
    }

    /// Claims the right to send this owner's voids; `false` if another task has it.
    pub(super) fn start_voiding(&self) -> bool {
        !self.voiding.replace(true)
    }

    pub(super) fn stop_voiding(&self) {
        self.voiding.set(false);
    }

    /// Whether one of the owner's connections of store `store_id` was lost and not made again.
    pub(super) fn any_failing(&self, store_id: u64) -> bool {
        let epoch = runtime_epoch();
        let clients = self.clients.borrow();
        clients.iter().any(|c| c.store_id == store_id && c.epoch == epoch && c.client.is_failing())
    }
}
