//! The settle phase: an admitted request's hold becomes its charge, exactly once (SPEC §3.4).
//!
//! Whoever admitted settles: the store by the request id (retried within the second, since a
//! settlement is idempotent per request id), the worker's lease (paid with the lease's next
//! call), or nobody for a test key served on the fallback share. The charge is the actual cost
//! from usage and never more than the hold; any excess is counted as operator loss.

use crate::access::lease::LeaseSettlement;
use crate::api::admit::{SettleBy, Ticket};
use crate::limits::SETTLE_RETRY_PAUSES_MS;
use crate::metrics::WorkerMetrics;
use crate::money::{Nanos, TokenUsage};
use crate::store::{LeaseRecord, Outcome, Settled, Settlement, StoreError};
use crate::worker::Worker;

/// Actual usage of an admitted request, for settlement.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Usage {
    pub tokens: TokenUsage,
    pub outcome: Outcome,
}

impl Usage {
    /// A backend that failed before producing anything: settled at zero.
    pub const NOTHING_DELIVERED: Usage = Usage { tokens: TokenUsage::new(0, 0), outcome: Outcome::BackendFailed };
}

/// Settles `ticket` with `usage`; returns what was charged (zero when the store could not be
/// told: the hold then expires uncharged).
pub async fn settle(worker: &Worker, ticket: &Ticket<'_>, usage: Usage) -> Nanos {
    match ticket.settle_by {
        SettleBy::Store => settle_in_store(worker, ticket, usage).await,
        SettleBy::Lease => settle_on_lease(worker, ticket, usage),
        SettleBy::Nothing => Nanos::ZERO,
    }
}

async fn settle_in_store(worker: &Worker, ticket: &Ticket<'_>, usage: Usage) -> Nanos {
    let shared = &worker.shared;
    let request_id = ticket.request_id.as_str();
    let settlement = Settlement {
        request_id,
        account_id: &ticket.caller.account_id,
        tokens: usage.tokens,
        cost: ticket.model.prices().cost_of(&usage.tokens),
        outcome: usage.outcome,
        now_ms: shared.clock.now_ms(),
    };
    // Settling is exactly once per request id, so a call whose answer was lost can be made
    // again: a store that blinks still charges within the second SPEC §3 allows.
    let mut result = worker.store().settle(&settlement).await;
    for pause_ms in SETTLE_RETRY_PAUSES_MS {
        if result != Err(StoreError::Unavailable) {
            break;
        }
        monoio::time::sleep(std::time::Duration::from_millis(pause_ms)).await;
        result = worker.store().settle(&settlement).await;
    }
    match result {
        Ok(Settled::Charged { charged, operator_loss, .. }) => {
            debug_assert!(charged <= ticket.admitted.hold, "a charge never exceeds its hold");
            let metrics = &worker.metrics;
            WorkerMetrics::add(&metrics.settlements, 1);
            WorkerMetrics::add(&metrics.charged_nanos, charged.0);
            WorkerMetrics::add(&metrics.operator_loss_nanos, operator_loss.0);
            charged
        }
        Ok(Settled::AlreadySettled) => {
            crate::log_warn_every!("request {request_id}: settle found no hold (already settled or reaped)");
            Nanos::ZERO
        }
        // The hold stays and the reaper releases it at its expiry: the customer is never
        // charged more than the hold, at worst nothing.
        Err(error) => {
            crate::log_warn_every!("request {request_id}: settle failed: {error}");
            Nanos::ZERO
        }
    }
}

fn settle_on_lease(worker: &Worker, ticket: &Ticket<'_>, usage: Usage) -> Nanos {
    let model = ticket.model;
    let hold = ticket.admitted.hold;
    let cost = model.prices().cost_of(&usage.tokens);
    let settlement = LeaseSettlement {
        hold,
        tokens_charged: ticket.admitted.tokens_charged,
        record: LeaseRecord {
            request_id: ticket.request_id.as_str().into(),
            key_id: ticket.caller.key_id.clone(),
            model: model.id.as_str().into(),
            tokens: usage.tokens,
            cost,
            outcome: usage.outcome,
        },
    };
    // The charge is counted when the store applies it (the lease task); a cost above the hold
    // is lost here already.
    let policy = &worker.shared.config.limits;
    let loss = worker.leases.book.borrow_mut().settle(&ticket.caller.account_id, settlement, policy);
    WorkerMetrics::add(&worker.metrics.operator_loss_nanos, loss.0);
    cost.min(hold)
}
