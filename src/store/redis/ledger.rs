//! The ledger calls of the Redis store: reading an account's usage records, and the reaper
//! that releases holds nobody settled.
//!
//! Owns the `XREVRANGE` of one account's ledger Stream and the reaper's walk: `SCAN` every
//! master for accounts with holds, then `fk_reap` on each. Both are off the hot path (the admin
//! API and one reaper task per node). The reaper never charges anyone: an expired hold is
//! released and leaves an `expired` record, a hold of a node presumed dead (see `recovery`) a
//! `node_lost` record.

use super::cluster::unavailable;
use super::connections::Connections;
use super::replies::{FromReply, HoldsReleased, LedgerPage, ScanPage};
use super::{LEDGER_MAX_RECORDS_PER_ACCOUNT, RedisStore};
use crate::digits::Num;
use crate::limits::{HOLD_TTL_MS, LEASE_ESCROW_TTL_MS, MAX_USAGE_QUERY_LIMIT};
use crate::metrics::StoreMetrics;
use crate::redis::Reply;
use crate::store::types::{DeadNode, Reaped, StoreError, UsageRecord};

use crate::limits::{REDIS_REAP_BATCH_HOLDS as REAP_BATCH, REDIS_REAP_SCAN_KEYS};

impl RedisStore {
    /// Newest first, at most `limit` (and `MAX_USAGE_QUERY_LIMIT`) records.
    pub async fn usage(
        &self,
        connections: &Connections,
        account_id: &str,
        limit: usize,
    ) -> Result<Vec<UsageRecord>, StoreError> {
        let acct = self.key(account_id, "acct");
        match self.command(connections, acct.as_bytes(), &[b"EXISTS", acct.as_bytes()]).await? {
            Reply::Integer(1) => {}
            _ => return Err(StoreError::NotFound),
        }
        let ledger = self.key(account_id, "ledger");
        let limit = limit.min(MAX_USAGE_QUERY_LIMIT);
        let count = Num::new(limit as u64);
        let args: [&[u8]; 6] = [b"XREVRANGE", ledger.as_bytes(), b"+", b"-", b"COUNT", count.as_bytes()];
        let LedgerPage(mut records) = self.read::<LedgerPage>(connections, ledger.as_bytes(), &args).await?;
        // A lease call's entry holds many records: `COUNT` bounds entries, not records.
        records.truncate(limit);
        Ok(records)
    }

    /// Releases every hold past its expiry, on every node.
    pub async fn reap_expired_holds(&self, connections: &Connections, now_ms: u64) -> Result<usize, StoreError> {
        Ok(self.reap_holds(connections, now_ms, &[], 0).await?.expired)
    }

    /// Releases every hold past its expiry and every hold `dead` nodes took before they were
    /// presumed dead (their last heartbeat plus `dead_after_ms`), on every Redis node: `SCAN`s
    /// for accounts that hold anything and runs `fk_reap` on each.
    pub async fn reap_holds(
        &self,
        connections: &Connections,
        now_ms: u64,
        dead: &[DeadNode],
        dead_after_ms: u64,
    ) -> Result<Reaped, StoreError> {
        if self.settings.cluster {
            self.router.refresh_slots(connections).await;
        }
        let pattern = format!("{}:{{*}}:holdexp", self.settings.prefix);
        let head = format!("{}:{{", self.settings.prefix);
        let now = self.now_arg(now_ms);
        let maxlen = Num::new(LEDGER_MAX_RECORDS_PER_ACCOUNT);
        let batch = Num::new(REAP_BATCH);
        let scan_count = Num::new(REDIS_REAP_SCAN_KEYS);
        let (hold_ttl, escrow_ttl) = (Num::new(HOLD_TTL_MS), Num::new(HOLD_TTL_MS.min(LEASE_ESCROW_TTL_MS)));
        let cutoffs: Vec<Num> =
            dead.iter().map(|node| Num::new(node.last_beat_ms.saturating_add(dead_after_ms))).collect();
        let mut released = Reaped::default();
        for addr in self.router.masters() {
            let client = self.router.client(connections, addr);
            let mut cursor = b"0".to_vec();
            loop {
                let args: [&[u8]; 8] =
                    [b"SCAN", &cursor, b"MATCH", pattern.as_bytes(), b"COUNT", scan_count.as_bytes(), b"TYPE", b"zset"];
                let page = client.call_with(&args, ScanPage::from_reply).await.map_err(unavailable)??;
                for key in page.keys {
                    let Some(account) = std::str::from_utf8(&key)
                        .ok()
                        .and_then(|key| key.strip_prefix(head.as_str()))
                        .and_then(|rest| rest.strip_suffix("}:holdexp"))
                    else {
                        continue;
                    };
                    let (acct, holds, holdexp, ledger) = (
                        self.key(account, "acct"),
                        self.key(account, "holds"),
                        self.key(account, "holdexp"),
                        self.key(account, "ledger"),
                    );
                    let mut args: Vec<&[u8]> = Vec::with_capacity(12 + 2 * dead.len());
                    args.extend_from_slice(&[
                        b"FCALL",
                        b"fk_reap",
                        b"4",
                        acct.as_bytes(),
                        holds.as_bytes(),
                        holdexp.as_bytes(),
                        ledger.as_bytes(),
                        now.as_bytes(),
                        maxlen.as_bytes(),
                        batch.as_bytes(),
                        hold_ttl.as_bytes(),
                        escrow_ttl.as_bytes(),
                    ]);
                    for (node, cutoff) in dead.iter().zip(&cutoffs) {
                        args.push(node.tag.as_bytes());
                        args.push(cutoff.as_bytes());
                    }
                    let reply = self.router.command(connections, acct.as_bytes(), &args, HoldsReleased::from_reply);
                    if let Ok(HoldsReleased(reaped)) = reply.await? {
                        released.expired += reaped.expired;
                        released.of_dead_nodes += reaped.of_dead_nodes;
                    }
                }
                if page.cursor == b"0" {
                    break;
                }
                cursor = page.cursor;
            }
        }
        StoreMetrics::add(&self.metrics.dead_node_holds_released, released.of_dead_nodes as u64);
        Ok(released)
    }
}
