//! Decoder tests: exact values from well-formed replies, `Unavailable` from broken ones.

use super::*;
use crate::redis::Reply;

/// `T` read from `reply` as the store reads it: from its wire bytes, in place.
fn read<T: FromReply>(reply: Reply) -> Result<T, StoreError> {
    let bytes = wire(&reply);
    T::from_reply(Frame::of_reply(&bytes).expect("one whole reply"))
}

fn wire(reply: &Reply) -> Vec<u8> {
    let mut bytes = Vec::new();
    reply.encode(&mut bytes);
    bytes
}

fn push_of(bytes: &[u8]) -> Push<'_> {
    Push::of(Frame::of_reply(bytes).expect("one whole reply"))
}

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

// Goal: each outcome of fk_hold decodes exactly, numbers in place: an admission to what the
// caller completes, a refusal to the exact admission answer.
#[test]
fn admit_replies_decode_to_exact_admissions() {
    assert_eq!(
        read::<HoldReply>(ints(&[1, 100, 1, 1_740_000, 2_388_000_000])),
        Ok(HoldReply::Taken(HoldTaken {
            output_cap_tokens: 100,
            trusted: true,
            requests_level: 1_740_000,
            tokens_level: 2_388_000_000
        }))
    );
    assert_eq!(
        read::<HoldReply>(with_rates(&[3, 40_000, 41_000])),
        Ok(HoldReply::Refused(Admission::TooLargeForTokenLimit { limit: 40_000, requested: 41_000, rates: SNAPSHOT }))
    );
    assert_eq!(read::<HoldReply>(ints(&[1, 100, 0, 5])).err(), Some(StoreError::Unavailable), "short");
    assert_eq!(read::<Admission>(ints(&[1, 100, 0, 5, 6])).err(), Some(StoreError::Unavailable), "HoldReply's");
    assert_eq!(
        read::<Admission>(with_rates(&[2, 1, 40_000, 39_990, 20, 15])),
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
        read::<Admission>(with_rates(&[2, 0, 30, 30, 1, -1]))
    else {
        panic!("a requests denial")
    };
    assert_eq!((bucket, retry_after_ms), (Bucket::Requests, u64::MAX), "-1 means never");
    assert_eq!(
        read::<Admission>(with_rates(&[3, 40_000, 41_000])),
        Ok(Admission::TooLargeForTokenLimit { limit: 40_000, requested: 41_000, rates: SNAPSHOT })
    );
    assert_eq!(
        read::<Admission>(with_rates(&[4, 10, 5, 1_000])),
        Ok(Admission::InsufficientQuota {
            balance: Nanos(10),
            available: Nanos(5),
            needed: Nanos(1_000),
            rates: SNAPSHOT
        })
    );
    assert_eq!(read::<Admission>(ints(&[-1])), Err(StoreError::NotFound));
    assert_eq!(read::<Admission>(ints(&[-2])), Err(StoreError::AlreadyExists));
}

// Goal: a reply cut short, of the wrong type, with a non-number where a number is due or
// with a status the function never returns fails closed as Unavailable.
#[test]
fn short_or_wrongly_typed_replies_are_unavailable() {
    let unavailable = Some(StoreError::Unavailable);
    assert_eq!(read::<Admission>(ints(&[1, 100_000, 100, 200, 30])).err(), unavailable);
    assert_eq!(read::<Admission>(ints(&[])).err(), unavailable);
    assert_eq!(read::<Admission>(ints(&[7])).err(), unavailable);
    assert_eq!(read::<Admission>(Reply::Integer(1)).err(), unavailable);
    assert_eq!(read::<Admission>(Reply::Array(vec![bulk("one")])).err(), unavailable);
    assert_eq!(read::<Settled>(ints(&[1, 5, 5])).err(), unavailable);
    assert_eq!(read::<Settled>(Reply::Null).err(), unavailable);
    assert_eq!(read::<LeaseReply>(with_rates(&[1, 3, 5_000, 125_000, 0])).err(), unavailable);
    assert_eq!(read::<LeaseReply>(ints(&[9])).err(), unavailable);
    assert_eq!(read::<RateSnapshot>(ints(&[30, 29, 2000])).err(), unavailable);
    assert_eq!(read::<TopupReply>(ints(&[1])).err(), unavailable);
    assert_eq!(read::<TopupReply>(ints(&[-3])).err(), unavailable);
    assert_eq!(read::<AccountCreated>(ints(&[1])).err(), unavailable);
    assert_eq!(read::<AccountCreated>(ints(&[0])).err(), unavailable);
    assert_eq!(read::<KeyPut>(Reply::Null).err(), unavailable);
    assert_eq!(read::<HoldsReleased>(bulk("3")).err(), unavailable);
    assert_eq!(read::<HoldsReleased>(ints(&[3])).err(), unavailable);
    assert_eq!(read::<VoidReply>(ints(&[5])).err(), unavailable);
    assert_eq!(read::<DeadNodes>(Reply::Array(vec![bulk("Ab3dEf9h"), bulk("soon")])).err(), unavailable);
    assert_eq!(read::<LibraryVersion>(Reply::Null).err(), unavailable);
    assert_eq!(read::<ScanPage>(Reply::Array(vec![bulk("0")])).err(), unavailable);
    assert_eq!(read::<LedgerPage>(Reply::Null).err(), unavailable);
    let no_port = Reply::Array(vec![Reply::Array(vec![
        Reply::Integer(0),
        Reply::Integer(5460),
        Reply::Array(vec![bulk("127.0.0.1")]),
    ])]);
    assert_eq!(read::<SlotRanges>(no_port).err(), unavailable);
    let fields = Reply::Array(vec![bulk("unverified"), bulk("12"), bulk("x"), bulk("1")]);
    assert_eq!(read::<AccountFields>(fields).err(), unavailable);
}

// Goal: settle, peek and lease replies decode to exact values; numbers sent as strings
// read the same as integers, negative amounts read as zero.
#[test]
fn settle_peek_and_lease_replies_decode_exactly() {
    assert_eq!(
        read::<Settled>(ints(&[1, 70_000, 30_000, 0])),
        Ok(Settled::Charged { charged: Nanos(70_000), released: Nanos(30_000), operator_loss: Nanos(0) })
    );
    assert_eq!(read::<Settled>(ints(&[0])), Ok(Settled::AlreadySettled));
    assert_eq!(read::<RateSnapshot>(ints(&RATES)), Ok(SNAPSHOT));
    assert_eq!(read::<RateSnapshot>(ints(&[-1])), Err(StoreError::NotFound));
    let as_strings = Reply::Array(RATES.iter().map(|v| bulk(&v.to_string())).collect());
    assert_eq!(read::<RateSnapshot>(as_strings), Ok(SNAPSHOT));
    assert_eq!(
        read::<LeaseReply>(ints(&[&[1, 3, 5_000, 125_000, 70_000, -5], &RATES[..], &[1]].concat())),
        Ok(LeaseReply::Granted {
            requests: 3,
            tokens: 5_000,
            escrow: Nanos(125_000),
            charged: Nanos(70_000),
            operator_loss: Nanos(0),
            rates: SNAPSHOT,
            account_trusted: true,
        })
    );
    assert_eq!(read::<LeaseReply>(ints(&[0])), Ok(LeaseReply::Superseded));
    assert_eq!(read::<LeaseReply>(ints(&[-1])), Err(StoreError::NotFound));
}

// Goal: account, key, top-up and small replies decode to exact values and statuses.
#[test]
fn account_key_and_topup_replies_decode_exactly() {
    assert_eq!(
        read::<AccountCreated>(ints(&[1, 1_800_000_000_000])),
        Ok(AccountCreated { created_at_ms: 1_800_000_000_000 })
    );
    assert_eq!(read::<AccountCreated>(ints(&[-2])), Err(StoreError::AlreadyExists));
    let fields = Reply::Array(vec![bulk("trusted"), bulk("900"), bulk("100"), bulk("17")]);
    assert_eq!(
        read::<AccountFields>(fields),
        Ok(AccountFields { tier: "trusted".into(), balance: Nanos(900), held: Nanos(100), created_at_ms: 17 })
    );
    // Library 13's b: six bucket numbers, then balance and held, as little-endian doubles.
    let packed: Vec<u8> =
        [-1.0f64, -1.0, -1.0, -1.0, -1.0, -1.0, 900.0, 100.0].iter().flat_map(|n| n.to_le_bytes()).collect();
    let fields = Reply::Array(vec![bulk("trusted"), Reply::Null, Reply::Null, bulk("17"), Reply::BulkString(packed)]);
    assert_eq!(
        read::<AccountFields>(fields),
        Ok(AccountFields { tier: "trusted".into(), balance: Nanos(900), held: Nanos(100), created_at_ms: 17 })
    );
    let missing = Reply::Array(vec![Reply::Null, Reply::Null, Reply::Null, Reply::Null]);
    assert_eq!(read::<AccountFields>(missing), Err(StoreError::NotFound));
    let record = Reply::Array(vec![bulk("key_1"), bulk("acct_1"), bulk("l"), bulk(""), bulk("1")]);
    assert_eq!(
        read::<KeyRecord>(record),
        Ok(KeyRecord {
            key_id: "key_1".into(),
            account_id: "acct_1".into(),
            kind: KeyKind::Live,
            name: None,
            revoked: true,
            spend_cap: None,
        })
    );
    let record = Reply::Array(vec![bulk("key_2"), bulk("acct_1"), bulk("t"), bulk("ci"), bulk("0")]);
    assert_eq!(
        read::<KeyRecord>(record).map(|r| (r.kind, r.name, r.revoked)),
        Ok((KeyKind::Test, Some("ci".into()), false))
    );
    let unknown = Reply::Array(vec![Reply::Null, Reply::Null, Reply::Null, Reply::Null, Reply::Null]);
    assert_eq!(read::<KeyRecord>(unknown), Err(StoreError::NotFound));
    assert_eq!(read::<KeyPut>(Reply::Integer(1)), Ok(KeyPut::Stored));
    assert_eq!(read::<KeyPut>(Reply::Integer(-2)), Ok(KeyPut::Exists));
    let credited = Reply::Array(vec![Reply::Integer(1), Reply::Integer(5_000), bulk("trusted")]);
    assert_eq!(
        read::<TopupReply>(credited),
        Ok(TopupReply::Done(TopupResult { balance: Nanos(5_000), tier: "trusted".into(), duplicate: false }))
    );
    let again = Reply::Array(vec![Reply::Integer(0), Reply::Integer(5_000), bulk("trusted")]);
    assert_eq!(
        read::<TopupReply>(again),
        Ok(TopupReply::Done(TopupResult { balance: Nanos(5_000), tier: "trusted".into(), duplicate: true }))
    );
    assert_eq!(read::<TopupReply>(ints(&[-1])), Ok(TopupReply::NoAccount));
    assert_eq!(read::<TopupReply>(ints(&[-4])), Ok(TopupReply::TooLarge));
    assert_eq!(read::<HoldsReleased>(ints(&[3, 2])), Ok(HoldsReleased(Reaped { expired: 3, of_dead_nodes: 2 })));
    assert_eq!(read::<VoidReply>(ints(&[1, 16_000, 24])), Ok(VoidReply::Released { hold: Nanos(16_000), tokens: 24 }));
    assert_eq!(read::<VoidReply>(ints(&[2])), Ok(VoidReply::MarkerWritten));
    assert_eq!(read::<VoidReply>(ints(&[0])), Ok(VoidReply::NothingToDo));
    assert_eq!(read::<VoidReply>(ints(&[-1])), Ok(VoidReply::NothingToDo));
    assert_eq!(read::<SettleReply>(ints(&[2])), Ok(SettleReply::ReleasedAsDeadNodes));
    assert_eq!(read::<SettleReply>(ints(&[0])), Ok(SettleReply::Done(Settled::AlreadySettled)));
    let dead = Reply::Array(vec![bulk("Ab3dEf9h"), bulk("1733100000123"), bulk("Zz0zZz0z"), Reply::Integer(7)]);
    assert_eq!(
        read::<DeadNodes>(dead),
        Ok(DeadNodes(vec![
            DeadNode { tag: "Ab3dEf9h".into(), last_beat_ms: 1_733_100_000_123 },
            DeadNode { tag: "Zz0zZz0z".into(), last_beat_ms: 7 },
        ]))
    );
    assert_eq!(read::<LibraryVersion>(Reply::Integer(6)), Ok(LibraryVersion(6)));
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
    // A settlement of library 12 on Redis's clock: one record, its time the id's.
    let charge = Reply::Array(vec![
        bulk("1796295184388-0"),
        Reply::Array(vec![bulk("records"), bulk("r3 key_1 m 12 16 14000 completed 2 1")]),
    ]);
    let Ok(LedgerPage(records)) = read::<LedgerPage>(Reply::Array(vec![charge, settlement, lease])) else {
        panic!("a ledger page")
    };
    let summary: Vec<_> = records
        .iter()
        .map(|r| {
            (&*r.request_id, r.tokens.prompt_tokens, r.tokens.completion_tokens, r.cost.0, r.outcome, r.created_at_ms)
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("r3", 12, 16, 14000, "completed", 1_796_295_184_388),
            ("r2", 10, 4, 7000, "expired", 20),
            ("q2", 3, 4, 500, "client_aborted", 10),
            ("q1", 1, 2, 300, "completed", 10),
        ]
    );
    assert_eq!((records[0].tokens.cached_prompt_tokens, records[0].tokens.reasoning_tokens), (2, 1));
    assert_eq!((&*records[1].key_id, &*records[1].model), ("key_1", "fikra-flash"));

    let page = Reply::Array(vec![bulk("17"), Reply::Array(vec![bulk("a"), Reply::Integer(1), bulk("b")])]);
    assert_eq!(
        read::<ScanPage>(page),
        Ok(ScanPage { cursor: b"17".to_vec(), keys: vec![b"a".to_vec(), b"b".to_vec()] })
    );

    let node = |port: i64| Reply::Array(vec![bulk("127.0.0.1"), Reply::Integer(port), bulk("id")]);
    let slots = Reply::Array(vec![
        Reply::Array(vec![Reply::Integer(0), Reply::Integer(5460), node(7000), node(7003)]),
        Reply::Array(vec![Reply::Integer(5461), Reply::Integer(16383), node(7001)]),
    ]);
    assert_eq!(
        read::<SlotRanges>(slots),
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
    assert_eq!(push_of(&wire(&subscribed)), Push::Subscribed);
    let message = Reply::Array(vec![bulk("message"), bulk("fk:topups"), bulk("acct_1")]);
    let message = wire(&message);
    assert_eq!(push_of(&message), Push::Message { channel: "fk:topups", payload: b"acct_1" });
    assert_eq!(push_of(b"-NOAUTH\r\n"), Push::Error("NOAUTH"));
    assert_eq!(push_of(b":1\r\n"), Push::Other);
}
