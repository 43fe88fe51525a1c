//! Typed replies: every reply the Redis store reads, decoded from its wire shape into a value in
//! this one file, each decoder next to the layout it reads (for a Function, the `Reply:` line
//! of that function in `fikra.lua`; keep the two in step).
//!
//! Owns positions, integer parsing and the status codes each Function returns. A reply that is
//! short, of the wrong type or not a number where one is due is `StoreError::Unavailable` (fail
//! closed), never a panic and never a guess. It never sends a command and never decides what a
//! caller does with an answer (a top-up's clean-up, a redirect, a retry are the caller's).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::errors::Bucket;
use crate::money::{Nanos, TokenUsage};
use crate::redis::{Frame, Indexed, ItemsIter};
use crate::store::spend_cap::PeriodSpend;
use crate::store::types::{
    Admission, CapPeriod, DeadNode, KeyKind, KeyRecord, LeaseReply, Outcome, RateSnapshot, Reaped, Settled, SpendCap,
    StoreError, TIER_TRUSTED, TopupResult, UsageRecord,
};

/// A value read from the reply of one command, as redis-rs's `FromRedisValue`: read where the
/// reply was received (a borrowed `Frame`), so a reader that keeps no text allocates nothing.
pub(super) trait FromReply: Sized {
    fn from_reply(reply: Frame<'_>) -> Result<Self, StoreError>;
}

/// `fk_create_account`: `{1, created_at}` created; `{-2}` an account with this id exists.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct AccountCreated {
    pub created_at_ms: u64,
}

impl FromReply for AccountCreated {
    fn from_reply(reply: Frame<'_>) -> Result<Self, StoreError> {
        let items = array(reply)?;
        match int_at(&items, 0)? {
            1 => Ok(AccountCreated { created_at_ms: u64_at(&items, 1)? }),
            -2 => Err(StoreError::AlreadyExists),
            _ => Err(StoreError::Unavailable),
        }
    }
}

/// `HMGET P:{A}:acct tier balance held created_at b`: no tier means no account; the wallet is
/// b's (library 13) or, for an account library 12 last wrote, the two text fields.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct AccountFields {
    pub tier: Arc<str>,
    pub balance: Nanos,
    pub held: Nanos,
    pub created_at_ms: u64,
}

impl FromReply for AccountFields {
    fn from_reply(reply: Frame<'_>) -> Result<Self, StoreError> {
        let items = array(reply)?;
        let tier = text_at(&items, 0).ok_or(StoreError::NotFound)?;
        // Since library 13 the wallet is the last two of b's eight packed doubles (integral and
        // below 2^53: exact as u64); an account library 12 last wrote keeps it in text fields.
        let (balance, held) = match items.get(4) {
            Some(Frame::BulkString(b)) if b.len() == ACCOUNT_BYTES => {
                let number =
                    |at: usize| b[at..at + 8].try_into().map(|bytes| f64::from_le_bytes(bytes).max(0.0) as u64);
                (number(48).map_err(|_| StoreError::Unavailable)?, number(56).map_err(|_| StoreError::Unavailable)?)
            }
            _ => (u64_at(&items, 1)?, u64_at(&items, 2)?),
        };
        Ok(AccountFields {
            tier: tier.into(),
            balance: Nanos(balance),
            held: Nanos(held),
            created_at_ms: u64_at(&items, 3)?,
        })
    }
}

/// The live field `b` of library 13: the account's two rate buckets (six doubles), then its
/// balance and held amount (two more).
const ACCOUNT_BYTES: usize = 8 * 8;

/// `HMGET P:key:HASH key_id account kind name revoked cap cap_period`: no key id or account
/// means no key; kind `l` is live (anything else test), an empty name is none, revoked is `1`;
/// a cap is there when both its nano-USD and its period letter are.
impl FromReply for KeyRecord {
    fn from_reply(reply: Frame<'_>) -> Result<Self, StoreError> {
        let items = array(reply)?;
        let key_id = text_at(&items, 0).ok_or(StoreError::NotFound)?;
        let account_id = text_at(&items, 1).ok_or(StoreError::NotFound)?;
        let kind = if text_at(&items, 2) == Some("l") { KeyKind::Live } else { KeyKind::Test };
        let name = text_at(&items, 3).filter(|name| !name.is_empty()).map(Arc::from);
        Ok(KeyRecord {
            key_id: key_id.into(),
            account_id: account_id.into(),
            kind,
            name,
            revoked: text_at(&items, 4) == Some("1"),
            spend_cap: cap_of(text_at(&items, 5), text_at(&items, 6)),
        })
    }
}

/// A key's stored cap fields (nano-USD, period letter) as a cap, if both are set.
pub(crate) fn cap_of(limit: Option<&str>, period: Option<&str>) -> Option<SpendCap> {
    let limit = limit.filter(|t| !t.is_empty())?.parse::<u64>().ok()?;
    let period = CapPeriod::from_letter(period?)?;
    Some(SpendCap { limit: Nanos(limit), period })
}

/// `HMGET P:{A}:acct k:KEY s:KEY h:KEY`: the key's record (six little-endian doubles: what its
/// open holds hold, then day_start day_spent month_start month_spent lifetime_spent, see
/// `fikra.lua`) or, for a key last written by library 12, its `s:` spend text ("day_start
/// day_spent month_start month_spent lifetime_spent") and its `h:` holds.
pub(super) struct KeySpendFields {
    /// All zero when the key has no record (it never settled a charge).
    pub spend: PeriodSpend,
    pub held: u64,
}

/// The key record's length: six packed doubles.
const KEY_RECORD_BYTES: usize = 6 * 8;

impl FromReply for KeySpendFields {
    fn from_reply(reply: Frame<'_>) -> Result<Self, StoreError> {
        let items = array(reply)?;
        let spend_of = |[day_at, day, month_at, month, lifetime]: [u64; 5]| PeriodSpend {
            day: (day_at, Nanos(day)),
            month: (month_at, Nanos(month)),
            lifetime: Nanos(lifetime),
        };
        if let Some(Frame::BulkString(record)) = items.get(0)
            && record.len() == KEY_RECORD_BYTES
        {
            // Integral doubles below 2^53 (the functions' amounts): exact as u64.
            let mut numbers = [0u64; 6];
            for (number, bytes) in numbers.iter_mut().zip(record.chunks_exact(8)) {
                *number = f64::from_le_bytes(bytes.try_into().map_err(|_| StoreError::Unavailable)?).max(0.0) as u64;
            }
            let [held, spend @ ..] = numbers;
            return Ok(KeySpendFields { spend: spend_of(spend), held });
        }
        let spend = text_at(&items, 1)
            .and_then(|text| {
                let mut numbers = text.split(' ').map(|n| n.parse::<u64>().ok());
                let mut spend = [0u64; 5];
                for slot in &mut spend {
                    *slot = numbers.next()??;
                }
                numbers.next().is_none().then_some(spend)
            })
            .map_or_else(PeriodSpend::default, spend_of);
        let held = text_at(&items, 2).and_then(|t| t.parse().ok()).unwrap_or(0);
        Ok(KeySpendFields { spend, held })
    }
}

/// `fk_put_key`: `1` stored; any other number (the function's `-2`) means a record with this
/// hash exists and nothing was stored.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum KeyPut {
    Stored,
    Exists,
}

impl FromReply for KeyPut {
    fn from_reply(reply: Frame<'_>) -> Result<Self, StoreError> {
        match reply {
            Frame::Integer(1) => Ok(KeyPut::Stored),
            Frame::Integer(_) => Ok(KeyPut::Exists),
            _ => Err(StoreError::Unavailable),
        }
    }
}

/// `fk_topup`: `{1, balance, tier}` credited; `{0, balance, tier}` the reference was credited
/// before (nothing changed); `{-1}` no account; `{-4}` the balance would pass its cap.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum TopupReply {
    /// Credited now, or (`duplicate`) before.
    Done(TopupResult),
    NoAccount,
    TooLarge,
}

impl FromReply for TopupReply {
    fn from_reply(reply: Frame<'_>) -> Result<Self, StoreError> {
        let items = array(reply)?;
        match int_at(&items, 0)? {
            status @ (0 | 1) => Ok(TopupReply::Done(TopupResult {
                balance: Nanos(u64_at(&items, 1)?),
                tier: text_at(&items, 2).unwrap_or(TIER_TRUSTED).into(),
                duplicate: status == 0,
            })),
            -1 => Ok(TopupReply::NoAccount),
            -4 => Ok(TopupReply::TooLarge),
            _ => Err(StoreError::Unavailable),
        }
    }
}

/// `fk_hold`: `{1, output_cap, trusted (1|0), requests level, tokens level}` admitted (the
/// buckets after it, in 1/60000 token: the caller computes the hold, the tokens and the rates
/// from them and from what it sent); any other status is a refusal as `Admission` reads it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum HoldReply {
    Taken(HoldTaken),
    Refused(Admission),
}

#[derive(Debug, PartialEq, Eq)]
pub(super) struct HoldTaken {
    pub output_cap_tokens: u64,
    /// The account's tier when admitted (whose limits the buckets were fitted to).
    pub trusted: bool,
    pub requests_level: u64,
    pub tokens_level: u64,
}

impl FromReply for HoldReply {
    fn from_reply(reply: Frame<'_>) -> Result<Self, StoreError> {
        // Read in order (a reply per request: no index of its items is built).
        let mut items = in_order(reply)?;
        if next_int(&mut items)? != 1 {
            return Admission::from_reply(reply).map(HoldReply::Refused);
        }
        Ok(HoldReply::Taken(HoldTaken {
            output_cap_tokens: next_u64(&mut items)?,
            trusted: next_int(&mut items)? == 1,
            requests_level: next_u64(&mut items)?,
            tokens_level: next_u64(&mut items)?,
        }))
    }
}

/// `fk_hold`'s refusals: `{2, bucket (0 rpm | 1 tpm), limit, used, requested, retry_ms (-1
/// never), rates...}` rate limited; `{3, limit, requested, rates...}` too large for the TPM
/// bucket; `{4, balance, available, needed, rates...}` insufficient quota; `{5, output_cap}`
/// would clamp; `{6, cap, spent, key_held, needed, rates...}` the key's cap; `{-1}` no account;
/// `{-2}` a hold with this request id exists. An admission (`{1, ...}`) is `HoldReply`'s to read.
impl FromReply for Admission {
    fn from_reply(reply: Frame<'_>) -> Result<Self, StoreError> {
        let items = array(reply)?;
        match int_at(&items, 0)? {
            2 => {
                let retry = int_at(&items, 5)?;
                Ok(Admission::RateLimited {
                    bucket: if int_at(&items, 1)? == 0 { Bucket::Requests } else { Bucket::Tokens },
                    limit: u64_at(&items, 2)?,
                    used: u64_at(&items, 3)?,
                    requested: u64_at(&items, 4)?,
                    retry_after_ms: if retry < 0 { u64::MAX } else { retry as u64 },
                    rates: rates_at(&items, 6)?,
                })
            }
            3 => Ok(Admission::TooLargeForTokenLimit {
                limit: u64_at(&items, 1)?,
                requested: u64_at(&items, 2)?,
                rates: rates_at(&items, 3)?,
            }),
            4 => Ok(Admission::InsufficientQuota {
                balance: Nanos(u64_at(&items, 1)?),
                available: Nanos(u64_at(&items, 2)?),
                needed: Nanos(u64_at(&items, 3)?),
                rates: rates_at(&items, 4)?,
            }),
            5 => Ok(Admission::WouldClamp { output_cap_tokens: u64_at(&items, 1)? }),
            // The period is the request's (the caller fills it in; the function only has its letter).
            6 => Ok(Admission::KeySpendLimitReached {
                cap: SpendCap { limit: Nanos(u64_at(&items, 1)?), period: CapPeriod::Lifetime },
                spent: Nanos(u64_at(&items, 2)?),
                held: Nanos(u64_at(&items, 3)?),
                needed: Nanos(u64_at(&items, 4)?),
                rates: rates_at(&items, 5)?,
            }),
            -1 => Err(StoreError::NotFound),
            -2 => Err(StoreError::AlreadyExists),
            _ => Err(StoreError::Unavailable),
        }
    }
}

/// `fk_charge`: `{1, charged, released, operator_loss}` settled now; any other status (the
/// function's `{0}`) means no hold has this request id, so nothing changed.
impl FromReply for Settled {
    fn from_reply(reply: Frame<'_>) -> Result<Self, StoreError> {
        settled(&array(reply)?)
    }
}

/// `Settled` from the items of an `fk_charge` reply.
fn settled(items: &Indexed<'_>) -> Result<Settled, StoreError> {
    match int_at(items, 0)? {
        1 => Ok(Settled::Charged {
            charged: Nanos(u64_at(items, 1)?),
            released: Nanos(u64_at(items, 2)?),
            operator_loss: Nanos(u64_at(items, 3)?),
        }),
        _ => Ok(Settled::AlreadySettled),
    }
}

/// `fk_peek`: the six rate numbers (`rates...`, see `rates_at`), or `{-1}` no account.
impl FromReply for RateSnapshot {
    fn from_reply(reply: Frame<'_>) -> Result<Self, StoreError> {
        let items = array(reply)?;
        if int_at(&items, 0)? == -1 && items.len() == 1 {
            return Err(StoreError::NotFound);
        }
        rates_at(&items, 0)
    }
}

/// `fk_lease`: `{1, granted_requests, granted_tokens, escrow, charged, loss, rates..., trusted}` applied
/// (now, or before under the same sequence number); `{0}` a newer call of this lease was
/// applied already; `{-1}` no account.
impl FromReply for LeaseReply {
    fn from_reply(reply: Frame<'_>) -> Result<Self, StoreError> {
        let items = array(reply)?;
        match int_at(&items, 0)? {
            1 => Ok(LeaseReply::Granted {
                requests: u64_at(&items, 1)?,
                tokens: u64_at(&items, 2)?,
                escrow: Nanos(u64_at(&items, 3)?),
                charged: Nanos(u64_at(&items, 4)?),
                operator_loss: Nanos(u64_at(&items, 5)?),
                rates: rates_at(&items, 6)?,
                account_trusted: int_at(&items, 12)? == 1,
            }),
            0 => Ok(LeaseReply::Superseded),
            -1 => Err(StoreError::NotFound),
            _ => Err(StoreError::Unavailable),
        }
    }
}

/// `fk_reap`: `{expired holds released, dead nodes' holds released}`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct HoldsReleased(pub Reaped);

impl FromReply for HoldsReleased {
    fn from_reply(reply: Frame<'_>) -> Result<Self, StoreError> {
        let items = array(reply)?;
        Ok(HoldsReleased(Reaped { expired: u64_at(&items, 0)? as usize, of_dead_nodes: u64_at(&items, 1)? as usize }))
    }
}

/// `fk_charge` as the store reads it: settled (or nothing to settle), or the hold was released
/// earlier because its node was presumed dead (`{2}`: nothing charged).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum SettleReply {
    Done(Settled),
    ReleasedAsDeadNodes,
}

impl FromReply for SettleReply {
    fn from_reply(reply: Frame<'_>) -> Result<Self, StoreError> {
        // Read in order, as `settled` reads it (a reply per request: no index of its items).
        let mut items = in_order(reply)?;
        match next_int(&mut items)? {
            1 => Ok(SettleReply::Done(Settled::Charged {
                charged: Nanos(next_u64(&mut items)?),
                released: Nanos(next_u64(&mut items)?),
                operator_loss: Nanos(next_u64(&mut items)?),
            })),
            2 => Ok(SettleReply::ReleasedAsDeadNodes),
            _ => Ok(SettleReply::Done(Settled::AlreadySettled)),
        }
    }
}

/// `fk_void`: `{1, hold, tokens}` the admission had run and is undone; `{2}` it had not (a
/// marker now refuses it); `{0}` already undone (or released as a dead node's); `{-1}` no account.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum VoidReply {
    Released { hold: Nanos, tokens: u64 },
    MarkerWritten,
    NothingToDo,
}

impl FromReply for VoidReply {
    fn from_reply(reply: Frame<'_>) -> Result<Self, StoreError> {
        let items = array(reply)?;
        match int_at(&items, 0)? {
            1 => Ok(VoidReply::Released { hold: Nanos(u64_at(&items, 1)?), tokens: u64_at(&items, 2)? }),
            2 => Ok(VoidReply::MarkerWritten),
            0 | -1 => Ok(VoidReply::NothingToDo),
            _ => Err(StoreError::Unavailable),
        }
    }
}

/// `fk_nodes`: `[tag, last heartbeat ms, ...]` of the nodes presumed dead.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct DeadNodes(pub Vec<DeadNode>);

impl FromReply for DeadNodes {
    fn from_reply(reply: Frame<'_>) -> Result<Self, StoreError> {
        let items = array(reply)?;
        let mut nodes = Vec::with_capacity(items.len() / 2);
        for pair in 0..items.len() / 2 {
            let tag = text_at(&items, 2 * pair).ok_or(StoreError::Unavailable)?;
            nodes.push(DeadNode { tag: tag.into(), last_beat_ms: u64_at(&items, 2 * pair + 1)? });
        }
        Ok(DeadNodes(nodes))
    }
}

/// `fk_version`: the `LIBRARY_VERSION` of the library loaded on the node (a plain integer).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct LibraryVersion(pub i64);

impl FromReply for LibraryVersion {
    fn from_reply(reply: Frame<'_>) -> Result<Self, StoreError> {
        match reply {
            Frame::Integer(version) => Ok(LibraryVersion(version)),
            _ => Err(StoreError::Unavailable),
        }
    }
}

/// `SCAN`: `[next cursor, [key, ...]]`; cursor `0` ends the scan. Keys that are not bulk
/// strings are skipped.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ScanPage {
    pub cursor: Vec<u8>,
    pub keys: Vec<Vec<u8>>,
}

impl FromReply for ScanPage {
    fn from_reply(reply: Frame<'_>) -> Result<Self, StoreError> {
        let items = array(reply)?;
        let last = items.len().checked_sub(1).ok_or(StoreError::Unavailable)?;
        let Some(Frame::Array(keys)) = items.get(last) else { return Err(StoreError::Unavailable) };
        let cursor = last.checked_sub(1).and_then(|at| items.get(at));
        let Some(Frame::BulkString(cursor)) = cursor else { return Err(StoreError::Unavailable) };
        let keys = keys
            .iter()
            .filter_map(|key| match key {
                Frame::BulkString(key) => Some(key.to_vec()),
                _ => None,
            })
            .collect();
        Ok(ScanPage { cursor: cursor.to_vec(), keys })
    }
}

/// `XREVRANGE P:{A}:ledger + - COUNT n`: entries newest first, each `[id, [field, value, ...]]`,
/// in one of two shapes: one record in fields (`request_id key_id model prompt_tokens
/// cached_tokens completion_tokens reasoning_tokens cost outcome created_at`: settlements before
/// library 12), or records in `records` (`request_id key_id model prompt completion cost outcome
/// cached reasoning` lines joined by `;`, oldest first: a lease call's, and since library 12 a
/// settlement's single line). `created_at` is there when the caller passed its clock; without it
/// the entry id's milliseconds are its time. Records come out newest first; entries and lines of
/// another shape are skipped, missing numbers read as 0.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct LedgerPage(pub Vec<UsageRecord>);

impl FromReply for LedgerPage {
    fn from_reply(reply: Frame<'_>) -> Result<Self, StoreError> {
        let entries = array(reply)?;
        let mut records = Vec::with_capacity(entries.len());
        for entry in entries.iter() {
            let Frame::Array(parts) = entry else { continue };
            let Some(Frame::Array(fields)) = parts.len().checked_sub(1).and_then(|last| parts.get(last)) else {
                continue;
            };
            let field = |name: &str| -> Option<&str> {
                let mut fields = fields.iter();
                while let Some(field) = fields.next() {
                    let value = fields.next();
                    if text(field) == Some(name) {
                        return value.and_then(text);
                    }
                }
                None
            };
            let number = |name: &str| field(name).and_then(|value| value.parse::<u64>().ok()).unwrap_or(0);
            // An entry without created_at (a settlement on Redis's clock) was made at its id's time.
            let created_at_ms = match field("created_at") {
                Some(value) => value.parse::<u64>().unwrap_or(0),
                None => entry_ms(parts.get(0)),
            };
            let Some(batch) = field("records") else {
                records.push(UsageRecord {
                    request_id: field("request_id").unwrap_or("").into(),
                    key_id: field("key_id").unwrap_or("").into(),
                    model: field("model").unwrap_or("").into(),
                    tokens: TokenUsage {
                        prompt_tokens: number("prompt_tokens"),
                        cached_prompt_tokens: number("cached_tokens"),
                        completion_tokens: number("completion_tokens"),
                        reasoning_tokens: number("reasoning_tokens"),
                    },
                    cost: Nanos(number("cost")),
                    outcome: outcome_name(field("outcome")),
                    created_at_ms,
                });
                continue;
            };
            for line in batch.split(';').rev() {
                let mut parts: Vec<&str> = line.split(' ').collect();
                // Lines written before cached and reasoning counts were recorded have 7 fields.
                if parts.len() == 7 {
                    parts.extend(["0", "0"]);
                }
                if let [request_id, key_id, model, prompt, completion, cost, outcome, cached, reasoning] = parts[..] {
                    let number = |text: &str| text.parse::<u64>().unwrap_or(0);
                    records.push(UsageRecord {
                        request_id: request_id.into(),
                        key_id: key_id.into(),
                        model: model.into(),
                        tokens: TokenUsage {
                            prompt_tokens: number(prompt),
                            cached_prompt_tokens: number(cached),
                            completion_tokens: number(completion),
                            reasoning_tokens: number(reasoning),
                        },
                        cost: Nanos(number(cost)),
                        outcome: outcome_name(Some(outcome)),
                        created_at_ms,
                    });
                }
            }
        }
        Ok(LedgerPage(records))
    }
}

/// `CLUSTER SLOTS`: `[[start, end, [ip, port, id], replicas...], ...]`; the master of each
/// range, in the order given.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SlotRanges(pub Vec<SlotRange>);

#[derive(Debug, PartialEq, Eq)]
pub(super) struct SlotRange {
    pub first: usize,
    pub last: usize,
    pub master: SocketAddr,
}

impl FromReply for SlotRanges {
    fn from_reply(reply: Frame<'_>) -> Result<Self, StoreError> {
        let ranges = array(reply)?;
        let mut decoded = Vec::with_capacity(ranges.len());
        for range in ranges.iter() {
            let Frame::Array(parts) = range else { return Err(StoreError::Unavailable) };
            let (Some(Frame::Integer(first)), Some(Frame::Integer(last)), Some(Frame::Array(master))) =
                (parts.get(0), parts.get(1), parts.get(2))
            else {
                return Err(StoreError::Unavailable);
            };
            let (Some(Frame::BulkString(ip)), Some(Frame::Integer(port))) = (master.get(0), master.get(1)) else {
                return Err(StoreError::Unavailable);
            };
            let ip = std::str::from_utf8(ip).ok().and_then(|ip| ip.parse().ok()).ok_or(StoreError::Unavailable)?;
            let port = u16::try_from(port).map_err(|_| StoreError::Unavailable)?;
            let (first, last) = (usize::try_from(first), usize::try_from(last));
            let (Ok(first), Ok(last)) = (first, last) else { return Err(StoreError::Unavailable) };
            decoded.push(SlotRange { first, last, master: SocketAddr::new(ip, port) });
        }
        Ok(SlotRanges(decoded))
    }
}

/// A frame the subscriber connection receives: `[subscribe, channel, count]` confirms a
/// subscription, `[message, channel, payload]` is a published message, an error reply ends the
/// session.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Push<'a> {
    Subscribed,
    Message { channel: &'a str, payload: &'a [u8] },
    Error(&'a str),
    Other,
}

impl<'a> Push<'a> {
    pub fn of(frame: Frame<'a>) -> Push<'a> {
        let parts = match frame {
            Frame::Array(parts) => parts.indexed(),
            Frame::Error(message) => return Push::Error(std::str::from_utf8(message).unwrap_or("(not UTF-8)")),
            _ => return Push::Other,
        };
        match (text_at(&parts, 0), text_at(&parts, 1)) {
            (Some("subscribe"), _) => Push::Subscribed,
            (Some("message"), Some(channel)) => match parts.get(2) {
                Some(Frame::BulkString(payload)) => Push::Message { channel, payload },
                _ => Push::Message { channel, payload: b"" },
            },
            _ => Push::Other,
        }
    }
}

/// The milliseconds of a stream entry id ("ms-seq"), 0 if it is not one.
fn entry_ms(id: Option<Frame<'_>>) -> u64 {
    id.and_then(text).and_then(|id| id.split('-').next()).and_then(|ms| ms.parse().ok()).unwrap_or(0)
}

/// A ledger outcome as the store's static name (`unknown` for anything else).
fn outcome_name(text: Option<&str>) -> &'static str {
    match text {
        Some("completed") => Outcome::Completed.as_str(),
        Some("client_aborted") => Outcome::ClientAborted.as_str(),
        Some("backend_failed") => Outcome::BackendFailed.as_str(),
        Some("expired") => "expired",
        Some("node_lost") => "node_lost",
        _ => "unknown",
    }
}

fn array(reply: Frame<'_>) -> Result<Indexed<'_>, StoreError> {
    match reply {
        Frame::Array(items) => Ok(items.indexed()),
        _ => Err(StoreError::Unavailable),
    }
}

/// The items of an array reply, to be read one after the other (`next_int`, `next_u64`).
fn in_order(reply: Frame<'_>) -> Result<ItemsIter<'_>, StoreError> {
    match reply {
        Frame::Array(items) => Ok(items.iter()),
        _ => Err(StoreError::Unavailable),
    }
}

/// The next item as `int_at` reads it.
fn next_int(items: &mut ItemsIter<'_>) -> Result<i64, StoreError> {
    int_of(items.next())
}

/// The next item as `u64_at` reads it.
fn next_u64(items: &mut ItemsIter<'_>) -> Result<u64, StoreError> {
    next_int(items).map(|value| value.max(0) as u64)
}

/// An integer reply item, or a string item holding one (Lua numbers may come back either way).
fn int_at(items: &Indexed<'_>, index: usize) -> Result<i64, StoreError> {
    int_of(items.get(index))
}

/// `item` as `int_at` reads it.
fn int_of(item: Option<Frame<'_>>) -> Result<i64, StoreError> {
    match item {
        Some(Frame::Integer(value)) => Ok(value),
        Some(Frame::BulkString(text)) | Some(Frame::SimpleString(text)) => {
            std::str::from_utf8(text).ok().and_then(|t| t.parse().ok()).ok_or(StoreError::Unavailable)
        }
        _ => Err(StoreError::Unavailable),
    }
}

/// A count or an amount: negative numbers read as 0.
fn u64_at(items: &Indexed<'_>, index: usize) -> Result<u64, StoreError> {
    int_at(items, index).map(|value| value.max(0) as u64)
}

fn text_at<'a>(items: &Indexed<'a>, index: usize) -> Option<&'a str> {
    items.get(index).and_then(text)
}

/// A string item's text, if it is UTF-8.
fn text(item: Frame<'_>) -> Option<&str> {
    match item {
        Frame::BulkString(text) | Frame::SimpleString(text) => std::str::from_utf8(text).ok(),
        _ => None,
    }
}

/// `rates...` in `fikra.lua` (its `snapshot`): requests limit, remaining, reset ms, then the
/// same three for tokens.
fn rates_at(items: &Indexed<'_>, start: usize) -> Result<RateSnapshot, StoreError> {
    Ok(RateSnapshot {
        requests_limit: u64_at(items, start)?,
        requests_remaining: u64_at(items, start + 1)?,
        requests_reset_ms: u64_at(items, start + 2)?,
        tokens_limit: u64_at(items, start + 3)?,
        tokens_remaining: u64_at(items, start + 4)?,
        tokens_reset_ms: u64_at(items, start + 5)?,
    })
}

#[cfg(test)]
mod tests;

/// Reads one RESP2 reply from `bytes` and hands it to every reply decoder, returning how many
/// accepted it. For the fuzz target `redis_reply` (tests/fuzz): the decoders must never panic,
/// whatever a server (or an attacker in its place) sends. Not used by the gateway itself.
#[doc(hidden)]
pub fn decode_with_every_reader(bytes: &[u8]) -> usize {
    let Ok(Some(len)) = crate::redis::reply_len(bytes) else { return 0 };
    let Some(frame) = Frame::of_reply(&bytes[..len]) else { return 0 };
    let results = [
        AccountCreated::from_reply(frame).is_ok(),
        AccountFields::from_reply(frame).is_ok(),
        KeyRecord::from_reply(frame).is_ok(),
        KeyPut::from_reply(frame).is_ok(),
        TopupReply::from_reply(frame).is_ok(),
        Admission::from_reply(frame).is_ok(),
        HoldReply::from_reply(frame).is_ok(),
        Settled::from_reply(frame).is_ok(),
        RateSnapshot::from_reply(frame).is_ok(),
        LeaseReply::from_reply(frame).is_ok(),
        HoldsReleased::from_reply(frame).is_ok(),
        SettleReply::from_reply(frame).is_ok(),
        VoidReply::from_reply(frame).is_ok(),
        DeadNodes::from_reply(frame).is_ok(),
        LibraryVersion::from_reply(frame).is_ok(),
        ScanPage::from_reply(frame).is_ok(),
        LedgerPage::from_reply(frame).is_ok(),
        SlotRanges::from_reply(frame).is_ok(),
    ];
    results.iter().filter(|accepted| **accepted).count()
}
