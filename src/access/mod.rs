//! Who may spend what: keys, rate limits, refusals remembered, leases of busy accounts, and the
//! node's own share of the limits while the store is down.
//!
//! Everything here decides or remembers admission facts for one worker; the shared truth (the
//! buckets, the wallet, the holds) is the `store`'s. Nothing here writes a response or talks to
//! a model.

pub mod auth;
pub mod deny_cache;
pub mod fallback;
pub mod lease;
pub mod lease_task;
pub mod refused_keys;
