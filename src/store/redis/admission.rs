//! The money-path calls of the Redis store: admit, settle, peek at the rate buckets, and the
//! lease calls of workers.
//!
//! Owns the keys and arguments each of these Functions is called with (their order is the
//! `KEYS:` and `ARGV:` lines of the function in `src/store/fikra/`; keep them in step) and the
//! limits passed along, since the Lua side knows no tiers, and what the gateway computes of an
//! admission from `fk_hold`'s short answer. Every decision is the Function's and every reply is
//! read by `replies`. These run per request: no `format!` and no allocation on admit and settle
//! (numbers packed by `args` or written through `Num`; keys and texts written from their parts
//! straight into the command, `redis::Fcall`), and nothing here ever retries a call (the caller
//! decides).

use super::args::{UNITS, doubles, reset_ms};
use super::connections::Connections;
use super::replies::{FromReply, HoldReply, SettleReply};
use super::{KeyName, LEDGER_MAX_RECORDS_PER_ACCOUNT, RedisStore};
use crate::digits::Num;
use crate::limits::{HOLD_TTL_MS, LEASE_ESCROW_TTL_MS};
use crate::metrics::StoreMetrics;
use crate::money::Nanos;
use crate::redis::{Fcall, FcallHead};
use crate::store::spend_cap::CapPeriod;
use crate::store::types::{
    Admission, AdmitRequest, Admitted, KeyKind, LeaseCall, LeaseReply, RateSnapshot, Settled, Settlement, StoreError,
    TIER_TRUSTED, TIER_UNVERIFIED,
};

/// Token counts beyond this are treated as this much (keeps Lua arithmetic exact; no real
/// request comes near it).
const MAX_SETTLED_TOKENS: u64 = 1_000_000_000;
/// The largest integer a Lua number (a double) holds exactly, and the cap on any balance in
/// `fikra.lua` (`MAX_BALANCE`): costs are sent to the functions at most this large.
const MAX_EXACT_LUA_NANOS: u64 = (1 << 53) - 1;
/// How many `KEYS` and arguments in all (keys included) `fk_hold` and `fk_charge` take.
const HOLD_KEYS: usize = 3;
const HOLD_ARGUMENTS: usize = 8;
const CHARGE_KEYS: usize = 4;
const CHARGE_ARGUMENTS: usize = 8;

/// The constant start of each per-request call (`FCALL`, name, number of keys), encoded at
/// compile time.
const HOLD_CALL: FcallHead = FcallHead::new("fk_hold", HOLD_KEYS, HOLD_ARGUMENTS);
const CHARGE_CALL: FcallHead = FcallHead::new("fk_charge", CHARGE_KEYS, CHARGE_ARGUMENTS);

/// A key kind as the functions name it (`l`, `t`).
fn kind_letter(kind: KeyKind) -> &'static [u8] {
    if kind == KeyKind::Live { b"l" } else { b"t" }
}

impl RedisStore {
    /// The (unverified, trusted) limits for this account and key kind, as function arguments.
    pub(super) fn limit_args(&self, account_id: &str, kind: KeyKind) -> [Num; 4] {
        let unverified = self.policy.limits_for(account_id, TIER_UNVERIFIED, kind);
        let trusted = self.policy.limits_for(account_id, TIER_TRUSTED, kind);
        [
            Num::new(unverified.requests_per_minute),
            Num::new(unverified.tokens_per_minute),
            Num::new(trusted.requests_per_minute),
            Num::new(trusted.tokens_per_minute),
        ]
    }

    /// The `KEYS` of `fk_hold` and of `fk_void`, which undoes it: acct, holds, holdexp (the
    /// rate buckets and a key's spend live in the account's hash: no keys of their own).
    pub(super) fn admission_keys(&self, account: &str) -> [KeyName; 3] {
        [self.key(account, "acct"), self.key(account, "holds"), self.key(account, "holdexp")]
    }

    /// `fk_hold`: the admission, its numbers packed (see `doubles`) and the hold's head written
    /// here; the function answers an admission with the buckets after it, from which the rest
    /// of `Admitted` is computed here as the function did.
    pub async fn admit(&self, connections: &Connections, request: &AdmitRequest<'_>) -> Result<Admission, StoreError> {
        let account = request.account_id;
        let unverified = self.policy.limits_for(account, TIER_UNVERIFIED, request.key_kind);
        let trusted = self.policy.limits_for(account, TIER_TRUSTED, request.key_kind);
        let live = request.key_kind == KeyKind::Live;
        let input = request.input_tokens_upper;
        let (in_price, out_price) = (request.input_price.0, request.output_price.0);
        // The hold at the requested output cap: the function writes its own head when it lowers it.
        let hold_at = |output: u64| {
            if live { input.saturating_mul(in_price).saturating_add(output.saturating_mul(out_price)) } else { 0 }
        };
        let requested = request.requested_output_tokens;
        let (head_hold, head_tokens) = (hold_at(requested), input.saturating_add(requested));
        let head_numbers = [Num::new(head_hold), Num::new(head_tokens), Num::new(in_price), Num::new(out_price)];
        // The hold's head, "hold tokens kind in_price out_price ", written into the command.
        let head = [
            head_numbers[0].as_bytes(),
            b" ",
            head_numbers[1].as_bytes(),
            if live { b" l " } else { b" t " },
            head_numbers[2].as_bytes(),
            b" ",
            head_numbers[3].as_bytes(),
            b" ",
        ];
        // The key's cap, its period (1 day, 2 month, 3 lifetime) and the period's start on the
        // gateway's clock; -1: none.
        let (cap, cap_period, cap_start) = match request.spend_cap {
            Some(cap) => (
                cap.limit.0.min(MAX_EXACT_LUA_NANOS) as f64,
                match cap.period {
                    CapPeriod::Day => 1.0,
                    CapPeriod::Month => 2.0,
                    CapPeriod::Lifetime => 3.0,
                },
                cap.period.start_ms(request.now_ms) as f64,
            ),
            None => (-1.0, 0.0, 0.0),
        };
        let flag = |on: bool| if on { 1.0 } else { 0.0 };
        let numbers = doubles::<{ 18 * 8 }>(&[
            input as f64,
            requested as f64,
            flag(request.client_set_output_cap),
            flag(request.refuse_clamp),
            flag(live),
            in_price as f64,
            out_price as f64,
            self.now_value(request.now_ms) as f64,
            unverified.requests_per_minute as f64,
            unverified.tokens_per_minute as f64,
            trusted.requests_per_minute as f64,
            trusted.tokens_per_minute as f64,
            HOLD_TTL_MS as f64,
            cap,
            cap_period,
            cap_start,
            head_hold as f64,
            head_tokens as f64,
        ]);
        let command = Fcall {
            head: &HOLD_CALL,
            args: [
                &self.key_parts(account, "}:acct"),
                &self.key_parts(account, "}:holds"),
                &self.key_parts(account, "}:holdexp"),
                &[request.request_id.as_bytes()],
                &[request.key_id.as_bytes()],
                &[request.model.as_bytes()],
                &head,
                &[&numbers],
            ],
        };
        let slot = || self.account_slot(account);
        match self.router.send_outcome(connections, slot, &command, HoldReply::from_reply).await {
            Ok(Ok(HoldReply::Taken(taken))) => {
                let limits = if taken.trusted { trusted } else { unverified };
                let output = taken.output_cap_tokens;
                Ok(Admission::Admitted(Admitted {
                    hold: Nanos(hold_at(output)),
                    output_cap_tokens: output,
                    tokens_charged: input.saturating_add(output),
                    rates: RateSnapshot {
                        requests_limit: limits.requests_per_minute,
                        requests_remaining: taken.requests_level / UNITS,
                        requests_reset_ms: reset_ms(limits.requests_per_minute, taken.requests_level),
                        tokens_limit: limits.tokens_per_minute,
                        tokens_remaining: taken.tokens_level / UNITS,
                        tokens_reset_ms: reset_ms(limits.tokens_per_minute, taken.tokens_level),
                    },
                }))
            }
            Ok(Ok(HoldReply::Refused(Admission::KeySpendLimitReached { spent, held, needed, rates, .. }))) => {
                let cap = request.spend_cap.ok_or(StoreError::Unavailable)?;
                Ok(Admission::KeySpendLimitReached { cap, spent, held, needed, rates })
            }
            Ok(Ok(HoldReply::Refused(other))) => Ok(other),
            Ok(Err(error)) => Err(error),
            Err(failed) => {
                // Answered 503 (or served on the fallback), yet it may run once Redis wakes:
                // remembered so the void task undoes it (the failure path alone allocates).
                if failed.may_have_run {
                    self.remember_void(connections, request);
                }
                Err(failed.error)
            }
        }
    }

    /// `fk_charge`: the numbers packed (see `doubles`), the usage record's tail written here.
    pub async fn settle(&self, connections: &Connections, settlement: &Settlement<'_>) -> Result<Settled, StoreError> {
        let account = settlement.account_id;
        let tpm = |tier: &str, kind: KeyKind| self.policy.limits_for(account, tier, kind).tokens_per_minute as f64;
        let tokens = settlement.tokens.consistent();
        // Lua numbers are doubles: a cost above the largest balance is above every hold, so it
        // is sent as that bound (exact) and charged as the hold; the loss is computed here.
        let cost = settlement.cost.0.min(MAX_EXACT_LUA_NANOS);
        // What the TPM bucket is trued up to, for each tier the function may find the account in.
        let rate_limited_in = |tier: &str| {
            let counted = tokens.rate_limited_tokens(self.policy.counts_cached_tokens(tier, KeyKind::Live));
            counted.min(MAX_SETTLED_TOKENS) as f64
        };
        let numbers = doubles::<{ 9 * 8 }>(&[
            cost as f64,
            self.now_value(settlement.now_ms) as f64,
            tpm(TIER_UNVERIFIED, KeyKind::Live),
            tpm(TIER_TRUSTED, KeyKind::Live),
            tpm(TIER_UNVERIFIED, KeyKind::Test),
            rate_limited_in(TIER_UNVERIFIED),
            rate_limited_in(TIER_TRUSTED),
            // The day and month the charge counts in for the key's spend (the gateway's calendar).
            CapPeriod::Day.start_ms(settlement.now_ms) as f64,
            CapPeriod::Month.start_ms(settlement.now_ms) as f64,
        ]);
        // The usage record after "request_id key_id model " (the function writes those from the
        // hold), written into the command.
        let tail_numbers = [
            Num::new(tokens.prompt_tokens.min(MAX_SETTLED_TOKENS)),
            Num::new(tokens.completion_tokens.min(MAX_SETTLED_TOKENS)),
            Num::new(cost),
            Num::new(tokens.cached_prompt_tokens.min(MAX_SETTLED_TOKENS)),
            Num::new(tokens.reasoning_tokens.min(MAX_SETTLED_TOKENS)),
        ];
        let tail = [
            tail_numbers[0].as_bytes(),
            b" ",
            tail_numbers[1].as_bytes(),
            b" ",
            tail_numbers[2].as_bytes(),
            b" ",
            settlement.outcome.as_str().as_bytes(),
            b" ",
            tail_numbers[3].as_bytes(),
            b" ",
            tail_numbers[4].as_bytes(),
        ];
        let maxlen = Num::new(LEDGER_MAX_RECORDS_PER_ACCOUNT);
        let command = Fcall {
            head: &CHARGE_CALL,
            args: [
                &self.key_parts(account, "}:acct"),
                &self.key_parts(account, "}:holds"),
                &self.key_parts(account, "}:holdexp"),
                &self.key_parts(account, "}:ledger"),
                &[settlement.request_id.as_bytes()],
                &tail,
                &[maxlen.as_bytes()],
                &[&numbers],
            ],
        };
        let slot = || self.account_slot(account);
        let settled = match self.router.send(connections, slot, &command, SettleReply::from_reply).await?? {
            SettleReply::Done(settled) => settled,
            SettleReply::ReleasedAsDeadNodes => {
                // This node was presumed dead (no heartbeat within the dead-after bound, a
                // partition) and a live node released the hold: served, nothing charged.
                StoreMetrics::add(&self.metrics.settled_after_node_release, 1);
                crate::log_warn_every!(
                    "request {}: its hold was released while this node was presumed dead (heartbeat lost); \
                     served and not charged",
                    settlement.request_id
                );
                Settled::AlreadySettled
            }
        };
        match settled {
            // The function's loss is exact below 2^53 and zero for test keys; above, the exact
            // figure is the gateway's.
            Settled::Charged { charged, released, operator_loss } => {
                let operator_loss =
                    if operator_loss.0 == 0 { operator_loss } else { settlement.cost.saturating_sub(charged) };
                Ok(Settled::Charged { charged, released, operator_loss })
            }
            Settled::AlreadySettled => Ok(Settled::AlreadySettled),
        }
    }

    /// `fk_peek` (read only).
    pub async fn peek_rates(
        &self,
        connections: &Connections,
        account_id: &str,
        kind: KeyKind,
        now_ms: u64,
    ) -> Result<RateSnapshot, StoreError> {
        let acct = self.key(account_id, "acct");
        let [u_rpm, u_tpm, t_rpm, t_tpm] = self.limit_args(account_id, kind);
        let now = self.now_arg(now_ms);
        let args: [&[u8]; 10] = [
            b"FCALL_RO",
            b"fk_peek",
            b"1",
            acct.as_bytes(),
            now.as_bytes(),
            u_rpm.as_bytes(),
            u_tpm.as_bytes(),
            t_rpm.as_bytes(),
            t_tpm.as_bytes(),
            kind_letter(kind),
        ];
        self.read::<RateSnapshot>(connections, acct.as_bytes(), &args).await
    }

    /// `fk_lease`: the call's records go along as one line each (see the function's `ARGV`).
    ///
    /// A call whose answer is lost needs no void: the lease task sends the same call (same
    /// sequence number) again until one is answered, and the function answers a repeat with the
    /// grant it already made, changing nothing. A grant is lost for good only if the worker dies
    /// before that retry: then its tokens (at most 1/`LEASE_SHARE` of the buckets) are missing
    /// from them until they refill, within a minute, and its escrow goes back to the wallet with
    /// the node's holds (within 30 s) or when it expires (`LEASE_ESCROW_TTL_MS`).
    pub async fn lease(&self, connections: &Connections, call: &LeaseCall) -> Result<LeaseReply, StoreError> {
        let account = &*call.account_id;
        let acct = self.key(account, "acct");
        let holds = self.key(account, "holds");
        let holdexp = self.key(account, "holdexp");
        let ledger = self.key(account, "ledger");
        let lease_key = self.key(account, &format!("lease:{}", call.lease_id));
        let [u_rpm, u_tpm, t_rpm, t_tpm] = self.limit_args(account, KeyKind::Live);
        let numbers = |values: &[u64]| values.iter().map(|v| Num::new(*v)).collect::<Vec<Num>>();
        let fixed = numbers(&[
            call.seq,
            HOLD_TTL_MS.min(LEASE_ESCROW_TTL_MS),
            LEDGER_MAX_RECORDS_PER_ACCOUNT,
            call.return_requests,
            call.want_requests,
            call.want_tokens,
            call.want_escrow.0,
            call.share,
            CapPeriod::Day.start_ms(call.now_ms),
            CapPeriod::Month.start_ms(call.now_ms),
        ]);
        let now = self.now_arg(call.now_ms);
        let tokens_delta = call.tokens_delta.to_string();
        // Each record as one "request_id key_id model prompt completion cost outcome cached
        // reasoning" line, all
        // in one buffer; the function stores them in one ledger entry.
        let mut lines: Vec<u8> = Vec::with_capacity(call.records.len() * 96);
        let mut ends = Vec::with_capacity(call.records.len());
        let costs: Vec<Num> = call.records.iter().map(|r| Num::new(r.cost.0)).collect();
        for (record, cost) in call.records.iter().zip(&costs) {
            for part in
                [record.request_id.as_bytes(), b" ", record.key_id.as_bytes(), b" ", record.model.as_bytes(), b" "]
            {
                lines.extend_from_slice(part);
            }
            let tokens = record.tokens.consistent();
            crate::digits::push_decimal(&mut lines, tokens.prompt_tokens.min(MAX_SETTLED_TOKENS));
            lines.push(b' ');
            crate::digits::push_decimal(&mut lines, tokens.completion_tokens.min(MAX_SETTLED_TOKENS));
            lines.push(b' ');
            lines.extend_from_slice(cost.as_bytes());
            lines.push(b' ');
            lines.extend_from_slice(record.outcome.as_str().as_bytes());
            lines.push(b' ');
            crate::digits::push_decimal(&mut lines, tokens.cached_prompt_tokens.min(MAX_SETTLED_TOKENS));
            lines.push(b' ');
            crate::digits::push_decimal(&mut lines, tokens.reasoning_tokens.min(MAX_SETTLED_TOKENS));
            ends.push(lines.len());
        }
        let mut args: Vec<&[u8]> = Vec::with_capacity(24 + 2 * call.records.len());
        args.extend_from_slice(&[b"FCALL", b"fk_lease", b"5"]);
        for key in [&acct, &holds, &holdexp, &ledger, &lease_key] {
            args.push(key.as_bytes());
        }
        args.extend_from_slice(&[
            call.lease_id.as_bytes(),
            fixed[0].as_bytes(),
            now.as_bytes(),
            u_rpm.as_bytes(),
            u_tpm.as_bytes(),
            t_rpm.as_bytes(),
            t_tpm.as_bytes(),
            fixed[1].as_bytes(),
            fixed[2].as_bytes(),
            fixed[3].as_bytes(),
            tokens_delta.as_bytes(),
            fixed[4].as_bytes(),
            fixed[5].as_bytes(),
            fixed[6].as_bytes(),
            fixed[7].as_bytes(),
            fixed[8].as_bytes(),
            fixed[9].as_bytes(),
        ]);
        let mut start = 0;
        for (end, cost) in ends.iter().zip(&costs) {
            args.push(&lines[start..*end]);
            args.push(cost.as_bytes());
            start = *end;
        }
        self.read::<LeaseReply>(connections, acct.as_bytes(), &args).await
    }
}
