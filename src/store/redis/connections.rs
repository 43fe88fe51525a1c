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

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use crate::redis::{RedisClient, RedisSettings, runtime_epoch};

/// An owner's clients, by store and node.
#[derive(Default)]
pub struct Connections {
    clients: RefCell<Vec<NodeClient>>,
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

    /// Whether one of the owner's connections of store `store_id` was lost and not made again.
    pub(super) fn any_failing(&self, store_id: u64) -> bool {
        let epoch = runtime_epoch();
        let clients = self.clients.borrow();
        clients.iter().any(|c| c.store_id == store_id && c.epoch == epoch && c.client.is_failing())
    }
}
