//! The task that makes one worker's lease calls: renewals, record payments, give-backs and, at
//! shutdown, the end of every lease.
//!
//! Owns the worker's `LeaseBook` and the only road from it to the store, so lease calls of one
//! worker never overlap. Requests admit and settle against the book synchronously (no store
//! call); this task pays what they left behind. It never admits or refuses a request.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use crate::access::lease::LeaseBook;
use crate::clock::{Clock, monotonic_ms};
use crate::limits::{LEASE_END_DEADLINE_MS, LEASE_RETRY_MS, LEASE_TICK_MS};
use crate::metrics::WorkerMetrics;
use crate::store::{LeaseCall, LeaseReply, StoreClient};

/// One worker's leases and the state of the task that serves them.
pub struct LeaseTask {
    /// Leases of busy accounts' limits and wallets (shared store only).
    pub book: RefCell<LeaseBook>,
    /// Set once the worker has drained: the task then ends every lease and stops.
    stop_requested: Cell<bool>,
    /// Whether the task is still running.
    running: Cell<bool>,
}

impl LeaseTask {
    /// `owner` names this worker in the store (node tag and worker index).
    pub fn new(owner: &str) -> LeaseTask {
        LeaseTask {
            book: RefCell::new(LeaseBook::new(owner)),
            stop_requested: Cell::new(false),
            running: Cell::new(false),
        }
    }

    /// Makes this worker's lease calls until `stop`; then ends every lease.
    pub async fn run(&self, store: StoreClient<'_>, clock: &Clock, metrics: &WorkerMetrics) {
        if !store.is_shared() {
            return;
        }
        self.running.set(true);
        let tick = Duration::from_millis(LEASE_TICK_MS);
        while !self.stop_requested.get() {
            let now_ms = clock.now_ms();
            let due = self.book.borrow().due(now_ms);
            if due.is_empty() {
                monoio::time::sleep(tick).await;
                continue;
            }
            for account in due {
                if self.stop_requested.get() {
                    break;
                }
                let call = self.book.borrow_mut().prepare_call(&account, now_ms);
                if let Some(call) = call {
                    self.call(&call, store, clock, metrics).await;
                }
            }
            // A backlog of records is paid call after call; otherwise one look per tick.
            if !self.book.borrow().backlogged() {
                monoio::time::sleep(tick).await;
            }
        }
        self.end_all(store, clock, metrics).await;
        self.running.set(false);
    }

    /// Called once the worker has drained (nothing in flight): the task ends every lease;
    /// returns when it has.
    pub async fn stop(&self) {
        self.stop_requested.set(true);
        while self.running.get() {
            monoio::time::sleep(Duration::from_millis(LEASE_TICK_MS)).await;
        }
    }

    /// Ends every lease: records paid (a call at a time, so a long backlog takes several),
    /// tokens given back, escrows released. Gives up after `LEASE_END_DEADLINE_MS` if the store
    /// is down (the escrows then expire and are reaped; unpaid records are never charged).
    async fn end_all(&self, store: StoreClient<'_>, clock: &Clock, metrics: &WorkerMetrics) {
        let deadline_ms = monotonic_ms() + LEASE_END_DEADLINE_MS;
        while monotonic_ms() < deadline_ms {
            let calls = self.book.borrow_mut().end_all(clock.now_ms());
            if calls.is_empty() {
                return;
            }
            let mut failed = false;
            for call in &calls {
                failed |= !self.call(call, store, clock, metrics).await;
            }
            if failed {
                monoio::time::sleep(Duration::from_millis(LEASE_RETRY_MS)).await;
            }
        }
    }

    /// Makes one lease call and applies its answer; whether the store answered.
    async fn call(&self, call: &LeaseCall, store: StoreClient<'_>, clock: &Clock, metrics: &WorkerMetrics) -> bool {
        WorkerMetrics::add(&metrics.lease_calls, 1);
        let result = store.lease(call).await;
        match &result {
            Ok(LeaseReply::Granted { charged, operator_loss, .. }) => {
                // After receiving: the store charged what the records say, less any loss, never more.
                debug_assert!(
                    charged.saturating_add(*operator_loss) == crate::access::lease::total_cost(&call.records),
                    "lease {} (call {}): charged {charged} + loss {operator_loss} differ from the records sent",
                    call.lease_id,
                    call.seq
                );
                WorkerMetrics::add(&metrics.settlements, call.records.len() as u64);
                WorkerMetrics::add(&metrics.charged_nanos, charged.0);
                WorkerMetrics::add(&metrics.operator_loss_nanos, operator_loss.0);
            }
            Ok(LeaseReply::Superseded) => {}
            Err(error) => {
                WorkerMetrics::add(&metrics.lease_call_failures, 1);
                crate::log_warn_every!("lease {} (call {}): {error}; retrying", call.lease_id, call.seq);
            }
        }
        let answered = result.is_ok();
        self.book.borrow_mut().apply(call, result, clock.now_ms());
        answered
    }
}
