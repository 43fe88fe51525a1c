//! Everything one core owns, in one struct: the state a worker's requests share without locks.
//!
//! A `Worker` lives on one thread (one monoio runtime) for the life of the process. Its fields
//! are the complete list of per-core state: its connections to the store (with the admissions
//! whose answer was lost, and the task that undoes them), caches that stay
//! correct against the shared store, this core's leases and their task, its upstream
//! connection pool (and the task that sweeps its stale connections) and buffers, its output
//! buffer pool, its request-id counter, its metrics shard and its access-log buffer. Nothing
//! per core hides in a thread-local (the `Date` header cache and the Redis runtime epoch are
//! per thread, not per
//! core). It never decides the order of a request's steps; that is `api`'s.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use crate::access::auth::KeyCache;
use crate::access::deny_cache::DenyCache;
use crate::access::fallback::FallbackBuckets;
use crate::access::lease_task::LeaseTask;
use crate::access::refused_keys::RefusedKeys;
use crate::access_log::{ACCESS_LOG_BATCH_BYTES, AccessRecord, WorkerAccessLog, write_json_line};
use crate::backend::upstream::client::Pool;
use crate::http::server::OutBufferPool;
use crate::ids::RequestId;
use crate::metrics::WorkerMetrics;
use crate::shared::Shared;
use crate::store::{StoreClient, StoreConnections};

/// What one worker (one core) owns.
pub struct Worker {
    /// This worker's number on the node (0-based), also inside its request ids.
    pub index: usize,
    /// What every worker of the node shares (configuration, store, registry, switches).
    pub shared: Arc<Shared>,
    /// This core's metrics shard (merged only when `/metrics` is read).
    pub metrics: Arc<WorkerMetrics>,
    /// This core's connections to the store (one pipelined client per Redis node), shared by
    /// its requests and its lease task; reach the store through `store()`.
    store_connections: StoreConnections,
    /// Key records by hash, trusted for `KEY_CACHE_TTL_MS` and dropped on any revocation.
    pub key_cache: RefCell<KeyCache>,
    /// Presented keys the store did not know, refused again without hashing for the same TTL.
    pub refused_keys: RefCell<RefusedKeys>,
    /// Refusals remembered so repeats cost no store call.
    pub deny_cache: RefCell<DenyCache>,
    /// This worker's share of test-key limits while the store is unreachable.
    pub fallback: RefCell<FallbackBuckets>,
    /// Leases of busy accounts' limits and wallets, and the task that renews and pays them.
    pub leases: LeaseTask,
    /// This core's idle connections to upstreams.
    pub upstream_pool: Pool,
    /// Reused buffers for upstream requests (one per request in flight at most).
    pub upstream_request_buffers: RefCell<Vec<Vec<u8>>>,
    /// Output buffers lent to this core's client connections, one response at a time.
    pub out_buffers: OutBufferPool,
    /// Requests numbered so far (the low bits of each request id).
    request_counter: Cell<u64>,
    /// This core's road to the access-log writer (`None`: `[log] access = "off"`), and the
    /// lines not handed over yet.
    access_log: Option<WorkerAccessLog>,
    access_lines: RefCell<Vec<u8>>,
}

impl Worker {
    pub fn new(index: usize, shared: Arc<Shared>, access_log: Option<WorkerAccessLog>) -> Worker {
        let metrics = shared.metrics.workers[index].clone();
        let upstream_pool = Pool::new(metrics.clone());
        let owner = format!("{}-{index}", String::from_utf8_lossy(&shared.node_tag));
        Worker {
            index,
            shared,
            metrics,
            store_connections: StoreConnections::default(),
            key_cache: RefCell::default(),
            refused_keys: RefCell::default(),
            deny_cache: RefCell::default(),
            fallback: RefCell::default(),
            leases: LeaseTask::new(&owner),
            upstream_pool,
            upstream_request_buffers: RefCell::default(),
            out_buffers: OutBufferPool::default(),
            request_counter: Cell::new(0),
            access_log,
            access_lines: RefCell::new(Vec::with_capacity(ACCESS_LOG_BATCH_BYTES)),
        }
    }

    /// Whether requests are written to the access log.
    pub fn logs_access(&self) -> bool {
        self.access_log.is_some()
    }

    /// Appends one request's access-log line; hands the batch over once it is full.
    pub fn log_access(&self, record: &AccessRecord<'_>) {
        let Some(access_log) = &self.access_log else { return };
        let full = {
            let mut lines = self.access_lines.borrow_mut();
            write_json_line(&mut lines, record);
            lines.len() >= ACCESS_LOG_BATCH_BYTES
        };
        if full {
            access_log.hand_over(&self.access_lines);
        }
    }

    /// Hands whatever access-log lines wait to the writer (from the sweep tick and at exit).
    pub fn flush_access_log(&self) {
        if let Some(access_log) = &self.access_log {
            access_log.hand_over(&self.access_lines);
        }
    }

    /// The shared store, through this core's connections.
    pub fn store(&self) -> StoreClient<'_> {
        self.shared.store.client(&self.store_connections)
    }

    /// The next request id of this worker (unique on the node; the node tag makes it unique
    /// across nodes).
    pub fn next_request_id(&self) -> RequestId {
        let counter = self.request_counter.get().wrapping_add(1);
        self.request_counter.set(counter);
        RequestId::new(&self.shared.node_tag, self.index, counter)
    }

    /// Runs this worker's lease task until `stop_leases` (spawned once per worker).
    pub async fn run_leases(&self) {
        self.leases.run(self.store(), &self.shared.clock, &self.metrics).await;
    }

    /// Ends every lease once the worker has drained; returns when they are ended.
    pub async fn stop_leases(&self) {
        self.leases.stop().await;
    }

    /// Closes this core's idle upstream connections once their idle timeout has passed, every
    /// `UPSTREAM_POOL_SWEEP_INTERVAL_MS`, until `stop` fires (spawned once per worker, stopped
    /// after the drain like the lease task).
    pub async fn run_pool_sweep(&self, mut stop: futures_channel::oneshot::Receiver<()>) {
        let interval = std::time::Duration::from_millis(crate::limits::UPSTREAM_POOL_SWEEP_INTERVAL_MS);
        // `Ok` is the stop signal (or its sender gone); `Err` is one interval passed.
        while monoio::time::timeout(interval, &mut stop).await.is_err() {
            self.upstream_pool.close_stale();
            // Lines of a quiet worker reach the log within one interval.
            self.flush_access_log();
        }
    }

    /// Undoes this core's admissions whose store answer was lost (answered 503, yet they may
    /// run when Redis wakes), every `REDIS_VOID_RETRY_INTERVAL_MS` while any wait, until `stop`
    /// fires; then one last try (spawned once per worker, stopped after the drain).
    pub async fn run_voids(&self, mut stop: futures_channel::oneshot::Receiver<()>) {
        let interval = std::time::Duration::from_millis(crate::limits::REDIS_VOID_RETRY_INTERVAL_MS);
        let store = self.store();
        // `Ok` is the stop signal (or its sender gone); `Err` is one interval passed.
        while monoio::time::timeout(interval, &mut stop).await.is_err() {
            if store.pending_voids() > 0 {
                // Failures are counted by the store call that failed; the voids stay queued.
                let _ = store.send_voids().await;
            }
        }
        if store.pending_voids() > 0 && store.send_voids().await.is_err() {
            crate::log_warn!(
                "worker {}: {} admissions with a lost answer could not be undone before exit; their holds expire",
                self.index,
                store.pending_voids()
            );
        }
    }

    /// Whether the node is draining (SIGTERM): responses then close their connections.
    pub fn is_draining(&self) -> bool {
        self.shared.is_draining()
    }
}
