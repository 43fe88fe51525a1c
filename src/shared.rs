//! What every worker of one gateway process shares: configuration, store, registry, metrics
//! shards, maintenance switch, clock and lifecycle flags.
//!
//! Built once at start-up, then only read (the few switches are atomics). Per-core state that
//! must not be shared (caches, buffers, counters for request ids) lives in `worker::Worker`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::clock::Clock;
use crate::config::Config;
use crate::ids::NODE_TAG_LEN;
use crate::metrics::Metrics;
use crate::openai::models::Registry;
use crate::store::Store;

/// The maintenance switch of the admin API.
#[derive(Default)]
pub struct Maintenance {
    enabled: AtomicBool,
    retry_after_s: AtomicU64,
}

impl Maintenance {
    /// Default `retry-after` while in maintenance, in seconds.
    pub const DEFAULT_RETRY_AFTER_S: u64 = 30;

    pub fn set(&self, enabled: bool, retry_after_s: Option<u64>) {
        self.retry_after_s.store(retry_after_s.unwrap_or(Self::DEFAULT_RETRY_AFTER_S), Ordering::Relaxed);
        self.enabled.store(enabled, Ordering::Release);
    }

    /// `Some(retry_after_ms)` while maintenance is on.
    pub fn retry_after_ms(&self) -> Option<u64> {
        if self.enabled.load(Ordering::Acquire) {
            Some(self.retry_after_s.load(Ordering::Relaxed).saturating_mul(1000))
        } else {
            None
        }
    }
}

/// Process-wide state.
pub struct Shared {
    pub config: Config,
    pub store: Store,
    pub registry: Registry,
    pub upstreams: crate::backend::upstream::Upstreams,
    /// The Daraja client when `[payments.mpesa]` is configured (admin STK Push, STK Query).
    pub mpesa: Option<std::sync::Arc<crate::backend::daraja::Daraja>>,
    pub metrics: Metrics,
    pub admin_token: String,
    pub clock: Clock,
    pub maintenance: Maintenance,
    /// Which browser origins may call the client API, and what their answers carry.
    pub cors: crate::http::cors::Cors,
    /// Random per-process tag at the start of every request id (base62, fixed length).
    pub node_tag: [u8; NODE_TAG_LEN],
    /// Set by SIGTERM: stop keeping connections alive, finish what is in flight.
    pub draining: AtomicBool,
    /// Accept loops running (client workers plus the admin listener): readiness.
    pub workers_running: Arc<AtomicUsize>,
    /// Client workers that have drained, ended their leases and stopped (shutdown): the
    /// heartbeat lasts until all have.
    pub workers_ended: AtomicUsize,
}

impl Shared {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// What each accept loop of this gateway reports to.
    pub fn lifecycle(&self) -> crate::http::listener::Lifecycle {
        crate::http::listener::Lifecycle {
            running: self.workers_running.clone(),
            drain_deadline_ms: self.config.server.shutdown_deadline_ms,
        }
    }

    pub fn workers_expected(&self) -> usize {
        self.metrics.workers.len()
    }
}
