//! What the Redis store does so that a failure leaves nothing behind: undoing admissions whose
//! answer was lost (`fk_void`), and node liveness (`fk_nodes`: this node's heartbeat, and which
//! nodes stopped theirs, so the reaper releases their holds).
//!
//! Owns the void queue's use (filled by `admit` on a lost answer, emptied by the owner's void
//! task) and the heartbeat key `PREFIX:nodes`. A void is safe in either order with the late
//! admission it undoes: if the admission already ran, the void releases its hold and gives back
//! its RPM and TPM; if not, the void leaves a marker and the admission, arriving later, refuses
//! itself without writing. Nothing here runs on the request path, and nothing here charges
//! anyone.

use super::RedisStore;
use super::connections::{Connections, PendingVoid};
use super::replies::{DeadNodes, VoidReply};
use crate::digits::Num;
use crate::limits::HOLD_TTL_MS;
use crate::metrics::StoreMetrics;
use crate::store::types::{AdmitRequest, DeadNode, StoreError};

impl RedisStore {
    /// Queues the admission `request_id` of `account_id` to be undone (its answer was lost).
    pub(super) fn remember_void(&self, connections: &Connections, request: &AdmitRequest<'_>) {
        StoreMetrics::add(&self.metrics.voids_queued, 1);
        let void = PendingVoid {
            store_id: self.router.store_id(),
            account_id: request.account_id.into(),
            request_id: request.request_id.into(),
            kind: request.key_kind,
            admitted_at_ms: request.now_ms,
        };
        if !connections.remember_void(void) {
            StoreMetrics::add(&self.metrics.voids_dropped, 1);
            crate::log_warn_every!(
                "redis store: too many admissions to undo ({} queued); the oldest is let go and its hold, if any, \
                 waits for the hold TTL",
                crate::limits::REDIS_PENDING_VOIDS_MAX
            );
        }
    }

    /// How many of this owner's admissions are still to be undone.
    pub fn pending_voids(&self, connections: &Connections) -> usize {
        connections.pending_voids(self.router.store_id())
    }

    /// Sends this owner's queued voids, oldest first, until the queue is empty or Redis does
    /// not answer (the rest stay queued for the next try). Returns how many Redis answered.
    /// One sender at a time per owner: a second caller meanwhile returns `Ok(0)`.
    pub async fn send_voids(&self, connections: &Connections) -> Result<usize, StoreError> {
        if !connections.start_voiding() {
            return Ok(0);
        }
        let mut answered = 0;
        let mut result = Ok(());
        while let Some(void) = connections.next_void(self.router.store_id()) {
            match self.void(connections, &void).await {
                Ok(reply) => {
                    answered += 1;
                    StoreMetrics::add(&self.metrics.voids_sent, 1);
                    match reply {
                        VoidReply::Released { .. } => StoreMetrics::add(&self.metrics.void_holds_released, 1),
                        VoidReply::MarkerWritten => StoreMetrics::add(&self.metrics.void_markers_written, 1),
                        VoidReply::NothingToDo => {}
                    }
                }
                Err(error) => {
                    // A void that may have run is sent again: a repeat finds the marker and
                    // does nothing.
                    connections.retry_void(void);
                    result = Err(error);
                    break;
                }
            }
        }
        connections.stop_voiding();
        if answered > 0 {
            crate::log_at_every!(
                crate::log::Level::Info,
                crate::limits::LOG_REPEAT_INTERVAL_MS,
                "redis store: undid {answered} admissions whose answer was lost"
            );
        }
        result.map(|()| answered)
    }

    /// `fk_void` for one admission.
    async fn void(&self, connections: &Connections, void: &PendingVoid) -> Result<VoidReply, StoreError> {
        let account = &*void.account_id;
        let [acct, holds, holdexp] = self.admission_keys(account);
        let [u_rpm, u_tpm, t_rpm, t_tpm] = self.limit_args(account, void.kind);
        // Redis's clock; with a caller's clock (manual, in tests) the admission's own time, so
        // the buckets are given back on the clock they were taken on.
        let now = self.now_arg(void.admitted_at_ms);
        let ttl = Num::new(HOLD_TTL_MS);
        let args: [&[u8]; 13] = [
            b"FCALL",
            b"fk_void",
            b"3",
            acct.as_bytes(),
            holds.as_bytes(),
            holdexp.as_bytes(),
            void.request_id.as_bytes(),
            now.as_bytes(),
            u_rpm.as_bytes(),
            u_tpm.as_bytes(),
            t_rpm.as_bytes(),
            t_tpm.as_bytes(),
            ttl.as_bytes(),
        ];
        self.read::<VoidReply>(connections, acct.as_bytes(), &args).await
    }

    /// The node liveness key.
    fn nodes_key(&self) -> String {
        format!("{}:nodes", self.settings.prefix)
    }

    /// `fk_nodes`: records the heartbeat of node `tag` (or, `leaving`, removes it; `tag` empty:
    /// neither) and returns the other nodes whose last heartbeat is older than `dead_after_ms`
    /// (entries older than the hold TTL are dropped: their holds have expired).
    pub async fn heartbeat(
        &self,
        connections: &Connections,
        tag: &str,
        dead_after_ms: u64,
        leaving: bool,
        now_ms: u64,
    ) -> Result<Vec<DeadNode>, StoreError> {
        let key = self.nodes_key();
        let now = self.now_arg(now_ms);
        let (dead_after, forget_after) = (Num::new(dead_after_ms), Num::new(HOLD_TTL_MS));
        let leaving: &[u8] = if leaving { b"1" } else { b"0" };
        let args: [&[u8]; 9] = [
            b"FCALL",
            b"fk_nodes",
            b"1",
            key.as_bytes(),
            tag.as_bytes(),
            now.as_bytes(),
            dead_after.as_bytes(),
            forget_after.as_bytes(),
            leaving,
        ];
        let result = self.read::<DeadNodes>(connections, key.as_bytes(), &args).await;
        match result {
            Ok(DeadNodes(mut dead)) => {
                dead.retain(|node| &*node.tag != tag);
                Ok(dead)
            }
            Err(error) => {
                if !tag.is_empty() {
                    StoreMetrics::add(&self.metrics.heartbeat_failures, 1);
                }
                Err(error)
            }
        }
    }
}
