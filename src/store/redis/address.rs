//! Where the Redis store is: its settings, `redis://` URLs and host names resolved to addresses.
//!
//! Owns the reading of `redis_url` and of Cluster seed names. Names are resolved here, once, at
//! start-up on the thread that builds the store (blocking DNS); never on a worker, and never
//! again while serving (Cluster nodes found later are given as addresses by `CLUSTER SLOTS`).

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

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

/// Resolves `host:port` (default port 6379) to its first address. Start-up only (blocking DNS),
/// never on a worker.
#[allow(clippy::disallowed_methods)] // resolution at start-up, before any worker runs
pub fn resolve(host: &str) -> Result<SocketAddr, String> {
    let with_port = if host.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok()) {
        host.to_string()
    } else {
        format!("{host}:6379")
    };
    with_port
        .to_socket_addrs()
        .map_err(|error| format!("cannot resolve {with_port}: {error}"))?
        .next()
        .ok_or_else(|| format!("{with_port} resolves to no address"))
}
