//! The function library (`fikra.lua`, written as the files of `src/store/fikra/`): its text,
//! its version, and loading it onto a node.
//!
//! Owns when the library is (re)loaded: at start-up onto every master that lacks this version
//! (never replacing a newer one), and on the spot when a node answers "Function not found" (a
//! Redis restarted without persistence). It never calls a function of the library itself
//! except `fk_version`, and never runs on the request path except for that one reload.

use std::net::SocketAddr;
use std::time::Duration;

use super::replies::{FromReply, LibraryVersion};
use crate::redis::{RedisClient, RedisError, Reply, blocking_call};

/// The function library, loaded into every Redis (master) node at start-up: one library
/// (`#!lua name=fikra`), its files joined in the order of their names.
pub const FUNCTION_LIBRARY: &str = concat!(
    include_str!("../fikra/1-common.lua"),
    include_str!("../fikra/2-buckets.lua"),
    include_str!("../fikra/3-holds.lua"),
    include_str!("../fikra/4-admit.lua"),
    include_str!("../fikra/5-settle.lua"),
    include_str!("../fikra/6-accounts.lua"),
    include_str!("../fikra/7-reap.lua"),
    include_str!("../fikra/8-lease.lua"),
    include_str!("../fikra/9-register.lua"),
);

/// The version number the library declares (`local LIBRARY_VERSION = N`).
pub fn library_version() -> i64 {
    FUNCTION_LIBRARY
        .lines()
        .find_map(|line| line.strip_prefix("local LIBRARY_VERSION = "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

const LOAD_REPLACE: [&[u8]; 4] = [b"FUNCTION", b"LOAD", b"REPLACE", FUNCTION_LIBRARY.as_bytes()];

/// Loads the library onto the node at `addr` unless it already has this version (or a newer
/// one); says which happened. Start-up only (a blocking connection of its own).
pub(super) fn load_blocking(addr: SocketAddr, password: Option<&str>, timeout: Duration) -> Result<String, RedisError> {
    let ours = library_version();
    let loaded = blocking_call(addr, password, timeout, &[b"FCALL", b"fk_version", b"0"], LibraryVersion::from_reply)
        .ok()
        .and_then(Result::ok);
    if let Some(LibraryVersion(loaded)) = loaded
        && loaded >= ours
    {
        return Ok(format!("function library fikra v{loaded} already loaded (this build: v{ours})"));
    }
    blocking_call(addr, password, timeout, &LOAD_REPLACE, |_| ())?;
    Ok(format!("loaded function library fikra v{ours}"))
}

/// Loads the library again on a node that lost it (its client is `client`).
pub(super) async fn load_again(client: &RedisClient, addr: SocketAddr) -> Result<Reply, RedisError> {
    let reply = client.call(&LOAD_REPLACE).await?;
    crate::log_warn_every!("redis {addr}: function library was missing; loaded it again");
    Ok(reply)
}
