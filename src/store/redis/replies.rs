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
use crate::money::Nanos;
use crate::redis::Reply;
use crate::store::types::{
    Admission, Admitted, KeyKind, KeyRecord, LeaseReply, Outcome, RateSnapshot, Settled, StoreError, TIER_TRUSTED,
    TopupResult, UsageRecord,
};

/// A value read from the reply of one command, as redis-rs's `FromRedisValue`.
pub(super) trait FromReply: Sized {
    fn from_reply(reply: Reply) -> Result<Self, StoreError>;
}

/// `fk_create_account`: `{1, created_at}` created; `{-2}` an account with this id exists.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct AccountCreated {
    pub created_at_ms: u64,
}

impl FromReply for AccountCreated {
    fn from_reply(reply: Reply) -> Result<Self, StoreError> {
        let items = array(reply)?;
        match int_at(&items, 0)? {
            1 => Ok(AccountCreated { created_at_ms: u64_at(&items, 1)? }),
            -2 => Err(StoreError::AlreadyExists),
            _ => Err(StoreError::Unavailable),
        }
    }
}

/// `HMGET P:{A}:acct tier balance held created_at`: no tier means no account.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct AccountFields {
    pub tier: Arc<str>,
    pub balance: Nanos,
    pub held: Nanos,
    pub created_at_ms: u64,
}

impl FromReply for AccountFields {
    fn from_reply(reply: Reply) -> Result<Self, StoreError> {
        let items = array(reply)?;
        let tier = text_at(&items, 0).ok_or(StoreError::NotFound)?;
        Ok(AccountFields {
            tier: tier.into(),
            balance: Nanos(u64_at(&items, 1)?),
            held: Nanos(u64_at(&items, 2)?),
            created_at_ms: u64_at(&items, 3)?,
        })
    }
}

/// `HMGET P:key:HASH key_id account kind name revoked`: no key id or account means no key;
/// kind `l` is live (anything else test), an empty name is none, revoked is `1`.
impl FromReply for KeyRecord {
    fn from_reply(reply: Reply) -> Result<Self, StoreError> {
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
        })
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
    fn from_reply(reply: Reply) -> Result<Self, StoreError> {
        match reply {
            Reply::Integer(1) => Ok(KeyPut::Stored),
            Reply::Integer(_) => Ok(KeyPut::Exists),
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
    fn from_reply(reply: Reply) -> Result<Self, StoreError> {
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

/// `fk_admit`: `{1, hold, output_cap, tokens, rates...}` admitted; `{2, bucket (0 rpm | 1 tpm),
/// limit, used, requested, retry_ms (-1 never), rates...}` rate limited; `{3, limit, requested,
/// rates...}` too large for the TPM bucket; `{4, balance, available, needed, rates...}`
/// insufficient quota; `{-1}` no account; `{-2}` a hold with this request id exists.
impl FromReply for Admission {
    fn from_reply(reply: Reply) -> Result<Self, StoreError> {
        let items = array(reply)?;
        match int_at(&items, 0)? {
            1 => Ok(Admission::Admitted(Admitted {
                hold: Nanos(u64_at(&items, 1)?),
                output_cap_tokens: u64_at(&items, 2)?,
                tokens_charged: u64_at(&items, 3)?,
                rates: rates_at(&items, 4)?,
            })),
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
            -1 => Err(StoreError::NotFound),
            -2 => Err(StoreError::AlreadyExists),
            _ => Err(StoreError::Unavailable),
        }
    }
}

/// `fk_settle`: `{1, charged, released, operator_loss}` settled now; any other status (the
/// function's `{0}`) means no hold has this request id, so nothing changed.
impl FromReply for Settled {
    fn from_reply(reply: Reply) -> Result<Self, StoreError> {
        let items = array(reply)?;
        match int_at(&items, 0)? {
            1 => Ok(Settled::Charged {
                charged: Nanos(u64_at(&items, 1)?),
                released: Nanos(u64_at(&items, 2)?),
                operator_loss: Nanos(u64_at(&items, 3)?),
            }),
            _ => Ok(Settled::AlreadySettled),
        }
    }
}

/// `fk_peek`: the six rate numbers (`rates...`, see `rates_at`), or `{-1}` no account.
impl FromReply for RateSnapshot {
    fn from_reply(reply: Reply) -> Result<Self, StoreError> {
        let items = array(reply)?;
        if int_at(&items, 0)? == -1 && items.len() == 1 {
            return Err(StoreError::NotFound);
        }
        rates_at(&items, 0)
    }
}

/// `fk_lease`: `{1, granted_requests, granted_tokens, escrow, charged, loss, rates...}` applied
/// (now, or before under the same sequence number); `{0}` a newer call of this lease was
/// applied already; `{-1}` no account.
impl FromReply for LeaseReply {
    fn from_reply(reply: Reply) -> Result<Self, StoreError> {
        let items = array(reply)?;
        match int_at(&items, 0)? {
            1 => Ok(LeaseReply::Granted {
                requests: u64_at(&items, 1)?,
                tokens: u64_at(&items, 2)?,
                escrow: Nanos(u64_at(&items, 3)?),
                charged: Nanos(u64_at(&items, 4)?),
                operator_loss: Nanos(u64_at(&items, 5)?),
                rates: rates_at(&items, 6)?,
            }),
            0 => Ok(LeaseReply::Superseded),
            -1 => Err(StoreError::NotFound),
            _ => Err(StoreError::Unavailable),
        }
    }
}

/// `fk_reap`: how many expired holds it released (a plain integer).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct HoldsReleased(pub u64);

impl FromReply for HoldsReleased {
    fn from_reply(reply: Reply) -> Result<Self, StoreError> {
        match reply {
            Reply::Integer(count) => Ok(HoldsReleased(count.max(0) as u64)),
            _ => Err(StoreError::Unavailable),
        }
    }
}

/// `fk_version`: the `LIBRARY_VERSION` of the library loaded on the node (a plain integer).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct LibraryVersion(pub i64);

impl FromReply for LibraryVersion {
    fn from_reply(reply: Reply) -> Result<Self, StoreError> {
        match reply {
            Reply::Integer(version) => Ok(LibraryVersion(version)),
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
    fn from_reply(reply: Reply) -> Result<Self, StoreError> {
        let mut items = array(reply)?;
        let Some(Reply::Array(keys)) = items.pop() else { return Err(StoreError::Unavailable) };
        let Some(Reply::BulkString(cursor)) = items.pop() else { return Err(StoreError::Unavailable) };
        let keys = keys
            .into_iter()
            .filter_map(|key| match key {
                Reply::BulkString(key) => Some(key),
                _ => None,
            })
            .collect();
        Ok(ScanPage { cursor, keys })
    }
}

/// `XREVRANGE P:{A}:ledger + - COUNT n`: entries newest first, each `[id, [field, value, ...]]`.
/// A settlement's entry holds one record in fields (`request_id key_id model prompt_tokens
/// completion_tokens cost outcome created_at`); a lease call's holds all of its records in
/// `records` (`request_id key_id model prompt completion cost outcome` lines joined by `;`,
/// oldest first) next to `created_at`. Records come out newest first; entries and lines of
/// another shape are skipped, missing numbers read as 0.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct LedgerPage(pub Vec<UsageRecord>);

impl FromReply for LedgerPage {
    fn from_reply(reply: Reply) -> Result<Self, StoreError> {
        let entries = array(reply)?;
        let mut records = Vec::with_capacity(entries.len());
        for entry in entries {
            let Reply::Array(mut parts) = entry else { continue };
            let Some(Reply::Array(fields)) = parts.pop() else { continue };
            let field = |name: &str| -> Option<&str> {
                fields.chunks(2).find(|pair| text_at(pair, 0) == Some(name)).and_then(|pair| text_at(pair, 1))
            };
            let number = |name: &str| field(name).and_then(|value| value.parse::<u64>().ok()).unwrap_or(0);
            let created_at_ms = number("created_at");
            let Some(batch) = field("records") else {
                records.push(UsageRecord {
                    request_id: field("request_id").unwrap_or("").into(),
                    key_id: field("key_id").unwrap_or("").into(),
                    model: field("model").unwrap_or("").into(),
                    prompt_tokens: number("prompt_tokens"),
                    completion_tokens: number("completion_tokens"),
                    cost: Nanos(number("cost")),
                    outcome: outcome_name(field("outcome")),
                    created_at_ms,
                });
                continue;
            };
            for line in batch.split(';').rev() {
                let parts: Vec<&str> = line.split(' ').collect();
                if let [request_id, key_id, model, prompt, completion, cost, outcome] = parts[..] {
                    let number = |text: &str| text.parse::<u64>().unwrap_or(0);
                    records.push(UsageRecord {
                        request_id: request_id.into(),
                        key_id: key_id.into(),
                        model: model.into(),
                        prompt_tokens: number(prompt),
                        completion_tokens: number(completion),
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
    fn from_reply(reply: Reply) -> Result<Self, StoreError> {
        let ranges = array(reply)?;
        let mut decoded = Vec::with_capacity(ranges.len());
        for range in ranges {
            let Reply::Array(parts) = range else { return Err(StoreError::Unavailable) };
            let (Some(Reply::Integer(first)), Some(Reply::Integer(last)), Some(Reply::Array(master))) =
                (parts.first(), parts.get(1), parts.get(2))
            else {
                return Err(StoreError::Unavailable);
            };
            let (Some(Reply::BulkString(ip)), Some(Reply::Integer(port))) = (master.first(), master.get(1)) else {
                return Err(StoreError::Unavailable);
            };
            let ip = std::str::from_utf8(ip).ok().and_then(|ip| ip.parse().ok()).ok_or(StoreError::Unavailable)?;
            let port = u16::try_from(*port).map_err(|_| StoreError::Unavailable)?;
            let (first, last) = (usize::try_from(*first), usize::try_from(*last));
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
    Message { channel: &'a str },
    Error(&'a str),
    Other,
}

impl<'a> Push<'a> {
    pub fn of(frame: &'a Reply) -> Push<'a> {
        match frame {
            Reply::Array(parts) => match (text_at(parts, 0), text_at(parts, 1)) {
                (Some("subscribe"), _) => Push::Subscribed,
                (Some("message"), Some(channel)) => Push::Message { channel },
                _ => Push::Other,
            },
            Reply::Error(message) => Push::Error(message),
            _ => Push::Other,
        }
    }
}

/// A ledger outcome as the store's static name (`unknown` for anything else).
fn outcome_name(text: Option<&str>) -> &'static str {
    match text {
        Some("completed") => Outcome::Completed.as_str(),
        Some("client_aborted") => Outcome::ClientAborted.as_str(),
        Some("backend_failed") => Outcome::BackendFailed.as_str(),
        Some("expired") => "expired",
        _ => "unknown",
    }
}

fn array(reply: Reply) -> Result<Vec<Reply>, StoreError> {
    match reply {
        Reply::Array(items) => Ok(items),
        _ => Err(StoreError::Unavailable),
    }
}

/// An integer reply item, or a string item holding one (Lua numbers may come back either way).
fn int_at(items: &[Reply], index: usize) -> Result<i64, StoreError> {
    match items.get(index) {
        Some(Reply::Integer(value)) => Ok(*value),
        Some(Reply::BulkString(text)) | Some(Reply::SimpleString(text)) => {
            std::str::from_utf8(text).ok().and_then(|t| t.parse().ok()).ok_or(StoreError::Unavailable)
        }
        _ => Err(StoreError::Unavailable),
    }
}

/// A count or an amount: negative numbers read as 0.
fn u64_at(items: &[Reply], index: usize) -> Result<u64, StoreError> {
    int_at(items, index).map(|value| value.max(0) as u64)
}

fn text_at(items: &[Reply], index: usize) -> Option<&str> {
    match items.get(index) {
        Some(Reply::BulkString(text)) | Some(Reply::SimpleString(text)) => std::str::from_utf8(text).ok(),
        _ => None,
    }
}

/// `rates...` in `fikra.lua` (its `snapshot`): requests limit, remaining, reset ms, then the
/// same three for tokens.
fn rates_at(items: &[Reply], start: usize) -> Result<RateSnapshot, StoreError> {
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
mod tests {
    use super::*;

    fn ints(values: &[i64]) -> Reply {
        Reply::Array(values.iter().map(|v| Reply::Integer(*v)).collect())
    }

    fn bulk(text: &str) -> Reply {
        Reply::BulkString(text.as_bytes().to_vec())
    }

    const RATES: [i64; 6] = [30, 29, 2000, 40_000, 39_800, 300];
    const SNAPSHOT: RateSnapshot = RateSnapshot {
        requests_limit: 30,
        requests_remaining: 29,
        requests_reset_ms: 2000,
        tokens_limit: 40_000,
        tokens_remaining: 39_800,
        tokens_reset_ms: 300,
    };

    fn with_rates(head: &[i64]) -> Reply {
        ints(&[head, &RATES[..]].concat())
    }

    // Goal: each outcome of fk_admit decodes to the exact admission, numbers in place.
    #[test]
    fn admit_replies_decode_to_exact_admissions() {
        assert_eq!(
            Admission::from_reply(with_rates(&[1, 100_000, 100, 200])),
            Ok(Admission::Admitted(Admitted {
                hold: Nanos(100_000),
                output_cap_tokens: 100,
                tokens_charged: 200,
                rates: SNAPSHOT
            }))
        );
        assert_eq!(
            Admission::from_reply(with_rates(&[2, 1, 40_000, 39_990, 20, 15])),
            Ok(Admission::RateLimited {
                bucket: Bucket::Tokens,
                limit: 40_000,
                used: 39_990,
                requested: 20,
                retry_after_ms: 15,
                rates: SNAPSHOT
            })
        );
        let Ok(Admission::RateLimited { bucket, retry_after_ms, .. }) =
            Admission::from_reply(with_rates(&[2, 0, 30, 30, 1, -1]))
        else {
            panic!("a requests denial")
        };
        assert_eq!((bucket, retry_after_ms), (Bucket::Requests, u64::MAX), "-1 means never");
        assert_eq!(
            Admission::from_reply(with_rates(&[3, 40_000, 41_000])),
            Ok(Admission::TooLargeForTokenLimit { limit: 40_000, requested: 41_000, rates: SNAPSHOT })
        );
        assert_eq!(
            Admission::from_reply(with_rates(&[4, 10, 5, 1_000])),
            Ok(Admission::InsufficientQuota {
                balance: Nanos(10),
                available: Nanos(5),
                needed: Nanos(1_000),
                rates: SNAPSHOT
            })
        );
        assert_eq!(Admission::from_reply(ints(&[-1])), Err(StoreError::NotFound));
        assert_eq!(Admission::from_reply(ints(&[-2])), Err(StoreError::AlreadyExists));
    }

    // Goal: a reply cut short, of the wrong type, with a non-number where a number is due or
    // with a status the function never returns fails closed as Unavailable.
    #[test]
    fn short_or_wrongly_typed_replies_are_unavailable() {
        let unavailable = Some(StoreError::Unavailable);
        assert_eq!(Admission::from_reply(ints(&[1, 100_000, 100, 200, 30])).err(), unavailable);
        assert_eq!(Admission::from_reply(ints(&[])).err(), unavailable);
        assert_eq!(Admission::from_reply(ints(&[7])).err(), unavailable);
        assert_eq!(Admission::from_reply(Reply::Integer(1)).err(), unavailable);
        assert_eq!(Admission::from_reply(Reply::Array(vec![bulk("one")])).err(), unavailable);
        assert_eq!(Settled::from_reply(ints(&[1, 5, 5])).err(), unavailable);
        assert_eq!(Settled::from_reply(Reply::Null).err(), unavailable);
        assert_eq!(LeaseReply::from_reply(with_rates(&[1, 3, 5_000, 125_000, 0])).err(), unavailable);
        assert_eq!(LeaseReply::from_reply(ints(&[9])).err(), unavailable);
        assert_eq!(RateSnapshot::from_reply(ints(&[30, 29, 2000])).err(), unavailable);
        assert_eq!(TopupReply::from_reply(ints(&[1])).err(), unavailable);
        assert_eq!(TopupReply::from_reply(ints(&[-3])).err(), unavailable);
        assert_eq!(AccountCreated::from_reply(ints(&[1])).err(), unavailable);
        assert_eq!(AccountCreated::from_reply(ints(&[0])).err(), unavailable);
        assert_eq!(KeyPut::from_reply(Reply::Null).err(), unavailable);
        assert_eq!(HoldsReleased::from_reply(bulk("3")).err(), unavailable);
        assert_eq!(LibraryVersion::from_reply(Reply::Null).err(), unavailable);
        assert_eq!(ScanPage::from_reply(Reply::Array(vec![bulk("0")])).err(), unavailable);
        assert_eq!(LedgerPage::from_reply(Reply::Null).err(), unavailable);
        let no_port = Reply::Array(vec![Reply::Array(vec![
            Reply::Integer(0),
            Reply::Integer(5460),
            Reply::Array(vec![bulk("127.0.0.1")]),
        ])]);
        assert_eq!(SlotRanges::from_reply(no_port).err(), unavailable);
        let fields = Reply::Array(vec![bulk("unverified"), bulk("12"), bulk("x"), bulk("1")]);
        assert_eq!(AccountFields::from_reply(fields).err(), unavailable);
    }

    // Goal: settle, peek and lease replies decode to exact values; numbers sent as strings
    // read the same as integers, negative amounts read as zero.
    #[test]
    fn settle_peek_and_lease_replies_decode_exactly() {
        assert_eq!(
            Settled::from_reply(ints(&[1, 70_000, 30_000, 0])),
            Ok(Settled::Charged { charged: Nanos(70_000), released: Nanos(30_000), operator_loss: Nanos(0) })
        );
        assert_eq!(Settled::from_reply(ints(&[0])), Ok(Settled::AlreadySettled));
        assert_eq!(RateSnapshot::from_reply(ints(&RATES)), Ok(SNAPSHOT));
        assert_eq!(RateSnapshot::from_reply(ints(&[-1])), Err(StoreError::NotFound));
        let as_strings = Reply::Array(RATES.iter().map(|v| bulk(&v.to_string())).collect());
        assert_eq!(RateSnapshot::from_reply(as_strings), Ok(SNAPSHOT));
        assert_eq!(
            LeaseReply::from_reply(with_rates(&[1, 3, 5_000, 125_000, 70_000, -5])),
            Ok(LeaseReply::Granted {
                requests: 3,
                tokens: 5_000,
                escrow: Nanos(125_000),
                charged: Nanos(70_000),
                operator_loss: Nanos(0),
                rates: SNAPSHOT
            })
        );
        assert_eq!(LeaseReply::from_reply(ints(&[0])), Ok(LeaseReply::Superseded));
        assert_eq!(LeaseReply::from_reply(ints(&[-1])), Err(StoreError::NotFound));
    }

    // Goal: account, key, top-up and small replies decode to exact values and statuses.
    #[test]
    fn account_key_and_topup_replies_decode_exactly() {
        assert_eq!(
            AccountCreated::from_reply(ints(&[1, 1_800_000_000_000])),
            Ok(AccountCreated { created_at_ms: 1_800_000_000_000 })
        );
        assert_eq!(AccountCreated::from_reply(ints(&[-2])), Err(StoreError::AlreadyExists));
        let fields = Reply::Array(vec![bulk("trusted"), bulk("900"), bulk("100"), bulk("17")]);
        assert_eq!(
            AccountFields::from_reply(fields),
            Ok(AccountFields { tier: "trusted".into(), balance: Nanos(900), held: Nanos(100), created_at_ms: 17 })
        );
        let missing = Reply::Array(vec![Reply::Null, Reply::Null, Reply::Null, Reply::Null]);
        assert_eq!(AccountFields::from_reply(missing), Err(StoreError::NotFound));
        let record = Reply::Array(vec![bulk("key_1"), bulk("acct_1"), bulk("l"), bulk(""), bulk("1")]);
        assert_eq!(
            KeyRecord::from_reply(record),
            Ok(KeyRecord {
                key_id: "key_1".into(),
                account_id: "acct_1".into(),
                kind: KeyKind::Live,
                name: None,
                revoked: true
            })
        );
        let record = Reply::Array(vec![bulk("key_2"), bulk("acct_1"), bulk("t"), bulk("ci"), bulk("0")]);
        assert_eq!(
            KeyRecord::from_reply(record).map(|r| (r.kind, r.name, r.revoked)),
            Ok((KeyKind::Test, Some("ci".into()), false))
        );
        let unknown = Reply::Array(vec![Reply::Null, Reply::Null, Reply::Null, Reply::Null, Reply::Null]);
        assert_eq!(KeyRecord::from_reply(unknown), Err(StoreError::NotFound));
        assert_eq!(KeyPut::from_reply(Reply::Integer(1)), Ok(KeyPut::Stored));
        assert_eq!(KeyPut::from_reply(Reply::Integer(-2)), Ok(KeyPut::Exists));
        let credited = Reply::Array(vec![Reply::Integer(1), Reply::Integer(5_000), bulk("trusted")]);
        assert_eq!(
            TopupReply::from_reply(credited),
            Ok(TopupReply::Done(TopupResult { balance: Nanos(5_000), tier: "trusted".into(), duplicate: false }))
        );
        let again = Reply::Array(vec![Reply::Integer(0), Reply::Integer(5_000), bulk("trusted")]);
        assert_eq!(
            TopupReply::from_reply(again),
            Ok(TopupReply::Done(TopupResult { balance: Nanos(5_000), tier: "trusted".into(), duplicate: true }))
        );
        assert_eq!(TopupReply::from_reply(ints(&[-1])), Ok(TopupReply::NoAccount));
        assert_eq!(TopupReply::from_reply(ints(&[-4])), Ok(TopupReply::TooLarge));
        assert_eq!(HoldsReleased::from_reply(Reply::Integer(3)), Ok(HoldsReleased(3)));
        assert_eq!(LibraryVersion::from_reply(Reply::Integer(6)), Ok(LibraryVersion(6)));
    }

    // Goal: a ledger page yields one record per settlement entry and one per line of a lease
    // call's entry, newest first, with exact fields; a SCAN page its cursor and keys; CLUSTER
    // SLOTS each range's master.
    #[test]
    fn ledger_scan_and_slot_replies_decode_exactly() {
        let settlement = Reply::Array(vec![
            bulk("2-0"),
            Reply::Array(
                [
                    "request_id",
                    "r2",
                    "key_id",
                    "key_1",
                    "model",
                    "fikra-flash",
                    "prompt_tokens",
                    "10",
                    "completion_tokens",
                    "4",
                    "cost",
                    "7000",
                    "outcome",
                    "expired",
                    "created_at",
                    "20",
                ]
                .iter()
                .map(|text| bulk(text))
                .collect(),
            ),
        ]);
        let lease = Reply::Array(vec![
            bulk("1-0"),
            Reply::Array(vec![
                bulk("records"),
                bulk("q1 key_1 m 1 2 300 completed;q2 key_1 m 3 4 500 client_aborted"),
                bulk("created_at"),
                bulk("10"),
            ]),
        ]);
        let Ok(LedgerPage(records)) = LedgerPage::from_reply(Reply::Array(vec![settlement, lease])) else {
            panic!("a ledger page")
        };
        let summary: Vec<_> = records
            .iter()
            .map(|r| (&*r.request_id, r.prompt_tokens, r.completion_tokens, r.cost.0, r.outcome, r.created_at_ms))
            .collect();
        assert_eq!(
            summary,
            [
                ("r2", 10, 4, 7000, "expired", 20),
                ("q2", 3, 4, 500, "client_aborted", 10),
                ("q1", 1, 2, 300, "completed", 10),
            ]
        );
        assert_eq!((&*records[0].key_id, &*records[0].model), ("key_1", "fikra-flash"));

        let page = Reply::Array(vec![bulk("17"), Reply::Array(vec![bulk("a"), Reply::Integer(1), bulk("b")])]);
        assert_eq!(
            ScanPage::from_reply(page),
            Ok(ScanPage { cursor: b"17".to_vec(), keys: vec![b"a".to_vec(), b"b".to_vec()] })
        );

        let node = |port: i64| Reply::Array(vec![bulk("127.0.0.1"), Reply::Integer(port), bulk("id")]);
        let slots = Reply::Array(vec![
            Reply::Array(vec![Reply::Integer(0), Reply::Integer(5460), node(7000), node(7003)]),
            Reply::Array(vec![Reply::Integer(5461), Reply::Integer(16383), node(7001)]),
        ]);
        assert_eq!(
            SlotRanges::from_reply(slots),
            Ok(SlotRanges(vec![
                SlotRange { first: 0, last: 5460, master: "127.0.0.1:7000".parse().unwrap() },
                SlotRange { first: 5461, last: 16383, master: "127.0.0.1:7001".parse().unwrap() },
            ]))
        );
    }

    // Goal: subscriber frames are told apart exactly.
    #[test]
    fn push_frames_are_told_apart() {
        let subscribed = Reply::Array(vec![bulk("subscribe"), bulk("fk:revocations"), Reply::Integer(1)]);
        assert_eq!(Push::of(&subscribed), Push::Subscribed);
        let message = Reply::Array(vec![bulk("message"), bulk("fk:topups"), bulk("acct_1")]);
        assert_eq!(Push::of(&message), Push::Message { channel: "fk:topups" });
        assert_eq!(Push::of(&Reply::Error("NOAUTH".into())), Push::Error("NOAUTH"));
        assert_eq!(Push::of(&Reply::Integer(1)), Push::Other);
    }
}
