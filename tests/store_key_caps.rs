//! Per-key spend caps at the store (SPEC §10), through the `Store` interface with an explicit
//! clock. Every test runs three times: on the embedded store, on a real standalone
//! `redis-server` and on a real 3-master Redis Cluster (started by this test binary; tests keep
//! apart by key prefix). Amounts are exact to the nano-USD.

mod support;

use fikra_gateway::cli::block_on;
use fikra_gateway::money::{Nanos, NanosPerToken, Prices, TokenUsage};
use fikra_gateway::store::*;
use support::redis_server;

/// 2027-01-15T08:00:00Z.
const T0: u64 = 1_800_000_000_000;
const DAY_MS: u64 = 86_400_000;
const PRICE: NanosPerToken = NanosPerToken(500);

#[derive(Copy, Clone, Debug)]
enum Backend {
    Embedded,
    Redis,
    Cluster,
}

impl Backend {
    /// The store and, for Redis, its key prefix.
    fn store(self) -> (Store, String) {
        let policy = LimitPolicy::reference();
        let (nodes, cluster) = match self {
            Backend::Embedded => return (Store::embedded(policy), String::new()),
            Backend::Redis => (vec![redis_server::shared_server()], false),
            Backend::Cluster => (redis_server::shared_cluster(), true),
        };
        let prefix = redis_server::unique_prefix("caps");
        let store = redis_server::redis_store(nodes, cluster, &prefix, std::time::Duration::from_secs(2), policy);
        (store, prefix)
    }
}

macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        mod embedded { $( #[test] fn $name() { super::$name(super::Backend::Embedded) } )* }
        mod redis_standalone { $( #[test] fn $name() { super::$name(super::Backend::Redis) } )* }
        mod redis_cluster { $( #[test] fn $name() { super::$name(super::Backend::Cluster) } )* }
    };
}

on_every_store!(
    the_cap_clamps_then_refuses_exactly,
    a_new_day_starts_a_new_period_and_late_settlements_count_in_theirs,
    a_cap_set_later_counts_what_the_key_already_spent,
    released_holds_leave_the_cap_and_spend_nothing,
    a_lifetime_cap_never_resets,
);

fn cap(limit: u64, period: CapPeriod) -> Option<SpendCap> {
    Some(SpendCap { limit: Nanos(limit), period })
}

/// A live request of `key` on account `a`: `input` tokens, `output` asked by the client.
fn request<'a>(id: &'a str, key: &'a str, spend_cap: Option<SpendCap>, output: u64, now_ms: u64) -> AdmitRequest<'a> {
    AdmitRequest {
        request_id: id,
        account_id: "a",
        key_id: key,
        key_kind: KeyKind::Live,
        model: "fikra-flash",
        input_tokens_upper: 10,
        requested_output_tokens: output,
        client_set_output_cap: true,
        refuse_clamp: false,
        input_price: PRICE,
        output_price: PRICE,
        now_ms,
        spend_cap,
    }
}

fn admitted(store: &StoreClient<'_>, request: &AdmitRequest<'_>) -> (u64, u64) {
    match block_on(store.admit(request)).unwrap() {
        Admission::Admitted(admitted) => (admitted.hold.0, admitted.output_cap_tokens),
        other => panic!("{}: {other:?}", request.request_id),
    }
}

/// (cap, spent, held, needed) of a refusal by the key's cap.
fn refused(store: &StoreClient<'_>, request: &AdmitRequest<'_>) -> (u64, u64, u64, u64) {
    match block_on(store.admit(request)).unwrap() {
        Admission::KeySpendLimitReached { cap, spent, held, needed, .. } => {
            assert_eq!(Some(cap), request.spend_cap);
            (cap.limit.0, spent.0, held.0, needed.0)
        }
        other => panic!("{}: {other:?}", request.request_id),
    }
}

fn settle(store: &StoreClient<'_>, id: &str, prompt: u64, completion: u64, now_ms: u64) -> u64 {
    let tokens = TokenUsage::new(prompt, completion);
    let settlement = Settlement {
        request_id: id,
        account_id: "a",
        tokens,
        cost: Prices { input: PRICE, cached_input: PRICE, output: PRICE }.cost_of(&tokens),
        outcome: Outcome::Completed,
        now_ms,
    };
    match block_on(store.settle(&settlement)).unwrap() {
        Settled::Charged { charged, .. } => charged.0,
        Settled::AlreadySettled => panic!("{id} was settled already"),
    }
}

fn spend(store: &StoreClient<'_>, key: &str, period: CapPeriod, now_ms: u64) -> (u64, u64) {
    let spend = block_on(store.key_spend("a", key, period, now_ms)).unwrap();
    (spend.spent.0, spend.held.0)
}

fn balance_and_held(store: &StoreClient<'_>) -> (u64, u64) {
    let account = block_on(store.account("a")).unwrap();
    (account.balance.0, account.held.0)
}

// Goal: with a cap of 20,000 nano-USD a day, the first request (input 5,000) is clamped to the
// 30 output tokens the cap allows, a second is refused while it holds everything, another key
// of the account is untouched, and after settling the key spends exactly up to its cap.
fn the_cap_clamps_then_refuses_exactly(backend: Backend) {
    let (store, _) = backend.store();
    let connections = StoreConnections::default();
    let store = store.client(&connections);
    block_on(store.create_account(Some("a"), Nanos(1_000_000_000), T0)).unwrap();
    let day = cap(20_000, CapPeriod::Day);
    assert_eq!(admitted(&store, &request("r1", "capped", day, 100, T0)), (20_000, 30));
    assert_eq!(refused(&store, &request("r2", "capped", day, 100, T0)), (20_000, 0, 20_000, 5_500));
    // The other key asks for 100 and gets 100: 5,000 + 50,000 held.
    assert_eq!(admitted(&store, &request("o1", "other", None, 100, T0)), (55_000, 100));
    assert_eq!(spend(&store, "capped", CapPeriod::Day, T0), (0, 20_000));
    // 10 in, 10 out: 10,000 charged, the rest of the hold released.
    assert_eq!(settle(&store, "r1", 10, 10, T0 + 1), 10_000);
    assert_eq!(spend(&store, "capped", CapPeriod::Day, T0), (10_000, 0));
    assert_eq!(admitted(&store, &request("r3", "capped", day, 100, T0 + 2)), (10_000, 10));
    assert_eq!(settle(&store, "r3", 10, 10, T0 + 3), 10_000);
    assert_eq!(spend(&store, "capped", CapPeriod::Day, T0), (20_000, 0));
    assert_eq!(refused(&store, &request("r4", "capped", day, 1, T0 + 4)), (20_000, 20_000, 0, 5_500));
    // Exactly one nano short of a minimal answer refuses; exactly enough admits one token.
    let tight = cap(20_000 + 5_499, CapPeriod::Day);
    assert_eq!(refused(&store, &request("r5", "capped", tight, 1, T0 + 5)), (25_499, 20_000, 0, 5_500));
    let exact = cap(20_000 + 5_500, CapPeriod::Day);
    assert_eq!(admitted(&store, &request("r6", "capped", exact, 100, T0 + 6)), (5_500, 1));
    assert_eq!(settle(&store, "r6", 10, 1, T0 + 7), 5_500);
    assert_eq!(settle(&store, "o1", 10, 100, T0 + 8), 55_000);
    // The wallet paid exactly the three charges of the capped key and the other key's.
    assert_eq!(balance_and_held(&store), (1_000_000_000 - 10_000 - 10_000 - 5_500 - 55_000, 0));
    assert_eq!(spend(&store, "capped", CapPeriod::Day, T0), (25_500, 0));
    // The uncapped key's spend is kept too (a cap set later counts it).
    assert_eq!(spend(&store, "other", CapPeriod::Day, T0), (55_000, 0));
}

// Goal: the injected clock crosses midnight: the new day's spend starts at zero, an open hold
// counts against whichever day it is while it is open, and a charge counts in the day it
// settles in (a request admitted before midnight and settled after it counts in the new day).
fn a_new_day_starts_a_new_period_and_late_settlements_count_in_theirs(backend: Backend) {
    let (store, _) = backend.store();
    let connections = StoreConnections::default();
    let store = store.client(&connections);
    block_on(store.create_account(Some("a"), Nanos(1_000_000_000), T0)).unwrap();
    let day = cap(20_000, CapPeriod::Day);
    let midnight = T0 - T0 % DAY_MS + DAY_MS;
    assert_eq!(admitted(&store, &request("r1", "k", day, 30, T0)), (20_000, 30));
    assert_eq!(settle(&store, "r1", 10, 30, T0), 20_000);
    assert_eq!(refused(&store, &request("r2", "k", day, 1, midnight - 1)), (20_000, 20_000, 0, 5_500));
    assert_eq!(admitted(&store, &request("r3", "k", day, 100, midnight)), (20_000, 30));
    assert_eq!(spend(&store, "k", CapPeriod::Day, midnight), (0, 20_000));
    assert_eq!(spend(&store, "k", CapPeriod::Day, midnight - 1), (20_000, 20_000));
    // Another key admitted a millisecond before midnight: its open hold counts against the new
    // day too, and its charge, settled after midnight, counts in the new day.
    assert_eq!(admitted(&store, &request("s1", "k2", day, 100, midnight - 1)), (20_000, 30));
    assert_eq!(refused(&store, &request("s2", "k2", day, 1, midnight)), (20_000, 0, 20_000, 5_500));
    assert_eq!(settle(&store, "s1", 10, 10, midnight + 5), 10_000);
    assert_eq!(spend(&store, "k2", CapPeriod::Day, midnight), (10_000, 0));
    // 10,000 of the 20,000 are left: 5,000 input and 10 output tokens.
    assert_eq!(admitted(&store, &request("s3", "k2", day, 100, midnight + 6)), (10_000, 10));
    // The new day's charges add up; the month and the lifetime count both days.
    assert_eq!(settle(&store, "r3", 10, 30, midnight + 7), 20_000);
    assert_eq!(settle(&store, "s3", 10, 2, midnight + 8), 6_000);
    assert_eq!(spend(&store, "k", CapPeriod::Day, midnight), (20_000, 0));
    assert_eq!(spend(&store, "k2", CapPeriod::Day, midnight), (16_000, 0));
    assert_eq!(spend(&store, "k", CapPeriod::Lifetime, midnight), (40_000, 0));
    let same_month = CapPeriod::Month.start_ms(midnight) == CapPeriod::Month.start_ms(T0);
    assert_eq!(spend(&store, "k", CapPeriod::Month, midnight).0, if same_month { 40_000 } else { 20_000 });
    assert_eq!(refused(&store, &request("r4", "k", day, 1, midnight + 9)), (20_000, 20_000, 0, 5_500));
    // The next midnight starts at zero again.
    assert_eq!(admitted(&store, &request("r5", "k", day, 30, midnight + DAY_MS)), (20_000, 30));
    assert_eq!(balance_and_held(&store), (1_000_000_000 - 20_000 - 10_000 - 20_000 - 6_000, 20_000));
}

// Goal: a cap set on a key that already spent counts that spend: the key's spend is kept from
// its first request, capped or not, in every period kind.
fn a_cap_set_later_counts_what_the_key_already_spent(backend: Backend) {
    let (store, _) = backend.store();
    let connections = StoreConnections::default();
    let store = store.client(&connections);
    block_on(store.create_account(Some("a"), Nanos(1_000_000_000), T0)).unwrap();
    assert_eq!(admitted(&store, &request("u1", "k", None, 30, T0)), (20_000, 30));
    assert_eq!(settle(&store, "u1", 10, 20, T0 + 1), 15_000);
    assert_eq!(spend(&store, "k", CapPeriod::Day, T0 + 2), (15_000, 0));
    assert_eq!(spend(&store, "k", CapPeriod::Lifetime, T0 + 2), (15_000, 0));
    // 20,000 a day: 5,000 left, not enough for 5,000 input and one 500 output token.
    let day = cap(20_000, CapPeriod::Day);
    assert_eq!(refused(&store, &request("c1", "k", day, 1, T0 + 3)), (20_000, 15_000, 0, 5_500));
    // 20,500 a month: exactly one output token fits.
    let month = cap(20_500, CapPeriod::Month);
    assert_eq!(admitted(&store, &request("c2", "k", month, 100, T0 + 4)), (5_500, 1));
    // A lifetime cap sees the open hold too.
    let lifetime = cap(20_500 + 5_499, CapPeriod::Lifetime);
    assert_eq!(refused(&store, &request("c3", "k", lifetime, 1, T0 + 5)), (25_999, 15_000, 5_500, 5_500));
    assert_eq!(settle(&store, "c2", 10, 1, T0 + 6), 5_500);
    assert_eq!(spend(&store, "k", CapPeriod::Month, T0 + 7), (20_500, 0));
    // Another key of the account spent nothing.
    assert_eq!(spend(&store, "k2", CapPeriod::Lifetime, T0 + 7), (0, 0));
}

// Goal: a hold released without a charge (reaped after its TTL; on Redis also voided, once) gives
// the key's room back and adds nothing to its spend.
fn released_holds_leave_the_cap_and_spend_nothing(backend: Backend) {
    let (store, prefix) = backend.store();
    let connections = StoreConnections::default();
    let store = store.client(&connections);
    block_on(store.create_account(Some("a"), Nanos(1_000_000_000), T0)).unwrap();
    let month = cap(40_000, CapPeriod::Month);
    assert_eq!(admitted(&store, &request("r1", "k", month, 30, T0)), (20_000, 30));
    let later = T0 + fikra_gateway::limits::HOLD_TTL_MS;
    assert_eq!(admitted(&store, &request("r2", "k", month, 30, later)), (20_000, 30));
    assert_eq!(spend(&store, "k", CapPeriod::Month, later), (0, 40_000));
    assert_eq!(block_on(store.reap_expired_holds(later)), Ok(1));
    assert_eq!(spend(&store, "k", CapPeriod::Month, later), (0, 20_000));
    assert_eq!(balance_and_held(&store), (1_000_000_000, 20_000));
    if let Backend::Redis | Backend::Cluster = backend {
        // fk_void of r2, as the gateway sends it for an admission whose answer was lost
        // (`redis-cli -c` follows the cluster's redirect to the account's master).
        let seed = match backend {
            Backend::Cluster => redis_server::shared_cluster()[0],
            _ => redis_server::shared_server(),
        };
        let key = |suffix: &str| format!("{prefix}:{{a}}:{suffix}");
        let args = [
            "FCALL",
            "fk_void",
            "3",
            &key("acct"),
            &key("holds"),
            &key("holdexp"),
            "r2",
            &later.to_string(),
            "30",
            "40000",
            "100",
            "160000",
            &fikra_gateway::limits::HOLD_TTL_MS.to_string(),
        ]
        .map(String::from);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let reply = cli(seed.port(), &args);
        assert!(reply.starts_with('1'), "{reply}");
        assert_eq!(spend(&store, "k", CapPeriod::Month, later), (0, 0));
        assert_eq!(balance_and_held(&store), (1_000_000_000, 0));
        // A second void changes nothing.
        let again = cli(seed.port(), &args);
        assert!(again.starts_with('0'), "{again}");
        assert_eq!(spend(&store, "k", CapPeriod::Month, later), (0, 0));
    } else {
        assert_eq!(settle(&store, "r2", 10, 10, later), 10_000);
        assert_eq!(spend(&store, "k", CapPeriod::Month, later), (10_000, 0));
    }
}

/// `redis-cli -c -p port args...`: its standard output.
fn cli(port: u16, args: &[&str]) -> String {
    let output = std::process::Command::new("redis-cli")
        .args(["-c", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli is installed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

// Goal: a lifetime cap counts across days and months and never starts over.
fn a_lifetime_cap_never_resets(backend: Backend) {
    let (store, _) = backend.store();
    let connections = StoreConnections::default();
    let store = store.client(&connections);
    block_on(store.create_account(Some("a"), Nanos(1_000_000_000), T0)).unwrap();
    let lifetime = cap(15_000, CapPeriod::Lifetime);
    assert_eq!(admitted(&store, &request("r1", "k", lifetime, 100, T0)), (15_000, 20));
    assert_eq!(settle(&store, "r1", 10, 10, T0), 10_000);
    let next_year = T0 + 400 * DAY_MS;
    assert_eq!(refused(&store, &request("r2", "k", lifetime, 100, next_year)), (15_000, 10_000, 0, 5_500));
    assert_eq!(spend(&store, "k", CapPeriod::Lifetime, next_year), (10_000, 0));
}

// Goal: a gateway built for library 10 (which passed the rate-bucket hashes as two more keys)
// or for library 11 (whose fk_admit and fk_settle took their numbers as text) calling library
// 12 during a rolling upgrade is refused with an error naming the mismatch, and nothing of the
// account changes: no hold, no bucket, no held amount, no ledger record.
#[test]
fn a_call_with_the_old_key_list_is_refused_and_writes_nothing() {
    let (store, prefix) = Backend::Redis.store();
    let connections = StoreConnections::default();
    let store = store.client(&connections);
    block_on(store.create_account(Some("a"), Nanos(1_000_000_000), T0)).unwrap();
    let port = redis_server::shared_server().port();
    let key = |suffix: &str| format!("{prefix}:{{a}}:{suffix}");
    let hash_before = cli(port, &["HGETALL", &key("acct")]);
    let t0 = T0.to_string();
    let (acct, rate, holds, holdexp, ledger) =
        (key("acct"), key("rate:live"), key("holds"), key("holdexp"), key("ledger"));
    let admit_numbers =
        ["10", "10", "0", "500", "500", &t0, "30", "40000", "100", "160000", "600000", "0", "", "", "0"];
    let request = ["r1", "k", "l", "m"];
    let library_10 =
        [&["FCALL", "fk_admit", "4", &acct, &rate, &holds, &holdexp][..], &request, &admit_numbers].concat();
    let library_11 = [&["FCALL", "fk_admit", "3", &acct, &holds, &holdexp][..], &request, &admit_numbers].concat();
    let settle_11 = [
        "FCALL",
        "fk_settle",
        "4",
        &acct,
        &holds,
        &holdexp,
        &ledger,
        "r1",
        "10",
        "4",
        "completed",
        &t0,
        "30",
        "40000",
        "100",
        "160000",
        "30",
        "40000",
        "1000",
        "0",
        "0",
        "7000",
        "14",
        "14",
        "0",
        "0",
    ];
    for (call, refusal) in [
        (&library_10[..], "fk_admit is fk_hold since library 12"),
        (&library_11[..], "fk_admit is fk_hold since library 12"),
        (&settle_11[..], "fk_settle is fk_charge since library 12"),
    ] {
        let reply = cli(port, call);
        assert!(reply.contains(refusal) && reply.contains("a gateway of another version?"), "{reply}");
    }
    assert_eq!(cli(port, &["HGETALL", &key("acct")]), hash_before);
    for suffix in ["rate:live", "holds", "holdexp", "ledger"] {
        assert_eq!(cli(port, &["EXISTS", &key(suffix)]).trim(), "0", "{suffix}");
    }
    assert_eq!(balance_and_held(&store), (1_000_000_000, 0));
}

/// A standalone Redis store with account `a` (1 USD) created at T0, its connections, the
/// account hash's name and the server's port: for tests that write what an older library left.
fn redis_account_a() -> (Store, StoreConnections, String, u16) {
    let (store, prefix) = Backend::Redis.store();
    let connections = StoreConnections::default();
    block_on(store.client(&connections).create_account(Some("a"), Nanos(1_000_000_000), T0)).unwrap();
    (store, connections, format!("{prefix}:{{a}}:acct"), redis_server::shared_server().port())
}

// Goal: an account whose buckets library 11 wrote (six fields per key kind, the wallet in text
// fields) keeps them through the upgrade: the first admission counts from their levels, not
// from full buckets, writes them and the wallet packed into `b` and deletes the eight fields;
// the next admission reads `b`.
#[test]
fn buckets_written_by_library_11_carry_over() {
    let (store, connections, acct, port) = redis_account_a();
    let store = store.client(&connections);
    // As library 11 left them: 10 requests and 1,000 tokens left (levels in 1/60000), at T0.
    let (t0, requests_level, tokens_level) = (T0.to_string(), (10 * 60_000).to_string(), (1_000 * 60_000).to_string());
    cli(port, &["HDEL", &acct, "b", "xb"]);
    let legacy = ["rc", "30", "rl", &requests_level, "ra", &t0, "tc", "40000", "tl", &tokens_level, "ta", &t0];
    cli(port, &[&["HSET", acct.as_str(), "balance", "1000000000", "held", "0"][..], &legacy].concat());
    let rates = |id: &str| match block_on(store.admit(&request(id, "k", None, 100, T0))).unwrap() {
        Admission::Admitted(admitted) => (admitted.rates.requests_remaining, admitted.rates.tokens_remaining),
        other => panic!("{id}: {other:?}"),
    };
    assert_eq!(rates("r1"), (9, 1_000 - 110));
    for field in ["rc", "rl", "ra", "tc", "tl", "ta", "balance", "held"] {
        assert_eq!(cli(port, &["HEXISTS", &acct, field]).trim(), "0", "{field}");
    }
    assert_eq!(cli(port, &["HSTRLEN", &acct, "b"]).trim(), "64", "eight packed doubles");
    assert_eq!(rates("r2"), (8, 1_000 - 220));
    // 10 in, 100 out at 500 each, twice.
    assert_eq!(balance_and_held(&store), (1_000_000_000, 2 * 55_000));
}

// Goal: an account and a key as library 12 left them (the wallet in text fields and `b` the
// buckets alone; the key's spend and holds in `s:KEY` text and `h:KEY`) keep everything
// through the upgrade: the account and the key's spend read from them, the first admission of
// library 13 counts the key's both against its cap, writes them packed into `k:KEY` and the
// wallet into `b` and deletes the old fields, and the settlements that follow (the hold library
// 12 took among them) add to what was spent.
#[test]
fn key_records_written_by_library_12_carry_over() {
    let (store, connections, acct, port) = redis_account_a();
    let store = store.client(&connections);
    // r0 holds 5,500 (10 in, 1 out); then its key's fields as library 12 left them, with
    // 3,000 spent today and this month and 7,000 in its lifetime.
    assert_eq!(admitted(&store, &request("r0", "k", None, 1, T0)), (5_500, 1));
    let (day_start, month_start) = (CapPeriod::Day.start_ms(T0), CapPeriod::Month.start_ms(T0));
    let spent_text = format!("{day_start} 3000 {month_start} 3000 7000");
    cli(port, &["HDEL", &acct, "k:k"]);
    cli(port, &["HSET", &acct, "h:k", "5500", "s:k", &spent_text]);
    let as_library_12 = "local b = redis.call('HGET', KEYS[1], 'b') \
        local n = { struct.unpack('<dddddddd', b) } \
        redis.call('HSET', KEYS[1], 'b', string.sub(b, 1, 48), 'balance', string.format('%d', n[7]), \
        'held', string.format('%d', n[8]))";
    cli(port, &["EVAL", as_library_12, "1", &acct]);
    assert_eq!(cli(port, &["HMGET", &acct, "balance", "held"]), "1000000000\n5500\n");
    assert_eq!(balance_and_held(&store), (1_000_000_000, 5_500));
    assert_eq!(spend(&store, "k", CapPeriod::Day, T0), (3_000, 5_500));
    assert_eq!(spend(&store, "k", CapPeriod::Lifetime, T0), (7_000, 5_500));
    // Room under 20,000 a day: 20,000 - 3,000 - 5,500 = 11,500, so 13 output tokens.
    assert_eq!(admitted(&store, &request("r1", "k", cap(20_000, CapPeriod::Day), 100, T0)), (11_500, 13));
    for field in ["h:k", "s:k", "balance", "held"] {
        assert_eq!(cli(port, &["HEXISTS", &acct, field]).trim(), "0", "{field}");
    }
    assert_eq!(cli(port, &["HSTRLEN", &acct, "k:k"]).trim(), "48", "six packed doubles");
    assert_eq!(cli(port, &["HSTRLEN", &acct, "b"]).trim(), "64", "eight packed doubles");
    assert_eq!(balance_and_held(&store), (1_000_000_000, 17_000));
    assert_eq!(spend(&store, "k", CapPeriod::Day, T0), (3_000, 17_000));
    assert_eq!(settle(&store, "r0", 10, 1, T0 + 1), 5_500);
    assert_eq!(settle(&store, "r1", 10, 10, T0 + 2), 10_000);
    assert_eq!(spend(&store, "k", CapPeriod::Day, T0), (18_500, 0));
    assert_eq!(spend(&store, "k", CapPeriod::Lifetime, T0), (22_500, 0));
    assert_eq!(balance_and_held(&store), (1_000_000_000 - 15_500, 0));
}
