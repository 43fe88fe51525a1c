//! The Redis store on a Redis Cluster whose slots move under it: one account's hash slot is
//! migrated from its master to another, step by step with the real commands
//! (`CLUSTER SETSLOT ... IMPORTING / MIGRATING`, `MIGRATE` of some keys, then of the rest,
//! `CLUSTER SETSLOT ... NODE`), while the store admits, settles, tops up and reads the account.
//!
//! What Redis 7.0 does while a slot is open (`getNodeByQuery` in cluster.c): the source serves a
//! command whose keys it all has; answers `ASK <slot> <target>` when it has none of them; and
//! `TRYAGAIN` when it has some but not all (a Function call names several keys, and a key that
//! does not exist counts as "missing", since it may have moved). The target serves a command
//! after `ASKING` only if it has every key the command names, else `TRYAGAIN`. After
//! `SETSLOT NODE` the source answers `MOVED`. What the store must do: follow `ASK` (with
//! `ASKING`) and `MOVED` (and refresh its slot map), and turn `TRYAGAIN` into
//! `StoreError::Unavailable` having changed nothing: never a wrong answer, never a panic.
//!
//! Each test starts its own 3-master cluster (slot moves would disturb the shared one).

// Tests measure real time on purpose: clippy.toml's clock policy is for the gateway.
#![allow(clippy::disallowed_methods)]

mod support;

use fikra_gateway::cli::block_on;
use fikra_gateway::money::{Nanos, NanosPerToken, Prices, TokenUsage};
use fikra_gateway::store::*;
use support::redis_server::{self, CommandStat, RedisCluster, cluster_node_id, command_stat, error_count, redis_cli};

const T0: u64 = 1_800_000_000_000;
const PRICE: NanosPerToken = NanosPerToken(500);
const SIGNUP_CREDIT: u64 = 1_000_000_000;

fn store_on(cluster: &RedisCluster, prefix: &str) -> Store {
    redis_server::redis_store(
        cluster.seeds(),
        true,
        prefix,
        std::time::Duration::from_secs(2),
        LimitPolicy::reference(),
    )
}

fn request<'a>(id: &'a str, account: &'a str, kind: KeyKind, input: u64, output: u64) -> AdmitRequest<'a> {
    AdmitRequest {
        request_id: id,
        account_id: account,
        key_id: "key_1",
        key_kind: kind,
        model: "fikra-flash",
        input_tokens_upper: input,
        requested_output_tokens: output,
        client_set_output_cap: true,
        refuse_clamp: false,
        input_price: PRICE,
        output_price: PRICE,
        now_ms: T0,
        spend_cap: None,
    }
}

fn admit(
    store: &StoreClient<'_>,
    account: &str,
    id: &str,
    kind: KeyKind,
    input: u64,
    output: u64,
) -> Result<Nanos, StoreError> {
    match block_on(store.admit(&request(id, account, kind, input, output)))? {
        Admission::Admitted(admitted) => {
            assert_eq!(admitted.output_cap_tokens, output, "{id}: the wallet can pay for the whole cap");
            assert_eq!(admitted.tokens_charged, input + output);
            Ok(admitted.hold)
        }
        other => panic!("{id}: expected an admission, got {other:?}"),
    }
}

fn settle(
    store: &StoreClient<'_>,
    account: &str,
    id: &str,
    prompt: u64,
    completion: u64,
) -> Result<Settled, StoreError> {
    let settlement = Settlement {
        request_id: id,
        account_id: account,
        tokens: TokenUsage::new(prompt, completion),
        cost: Prices { input: PRICE, cached_input: PRICE, output: PRICE }.cost_of(&TokenUsage::new(prompt, completion)),
        outcome: Outcome::Completed,
        now_ms: T0,
    };
    block_on(store.settle(&settlement))
}

fn charged(charged: u64, released: u64) -> Result<Settled, StoreError> {
    Ok(Settled::Charged { charged: Nanos(charged), released: Nanos(released), operator_loss: Nanos::ZERO })
}

fn topup(store: &StoreClient<'_>, account: &str, amount: u64, reference: &str) -> Result<TopupResult, StoreError> {
    block_on(store.topup(account, Nanos(amount), reference, T0))
}

fn credited(balance: u64) -> Result<TopupResult, StoreError> {
    Ok(TopupResult { balance: Nanos(balance), tier: TIER_TRUSTED.into(), duplicate: false })
}

/// (tier, balance, held) as the store reads them.
fn account_state(store: &StoreClient<'_>, account: &str) -> (String, u64, u64) {
    let view = block_on(store.account(account)).unwrap();
    assert_eq!(view.created_at_ms, T0);
    (view.tier.to_string(), view.balance.0, view.held.0)
}

/// (request id, cost, outcome) of the ledger, newest first.
fn ledger(store: &StoreClient<'_>, account: &str) -> Vec<(String, u64, &'static str)> {
    block_on(store.usage(account, 100))
        .unwrap()
        .into_iter()
        .map(|record| (record.request_id.to_string(), record.cost.0, record.outcome))
        .collect()
}

fn owned(entries: &[(&str, u64, &'static str)]) -> Vec<(String, u64, &'static str)> {
    entries.iter().map(|(id, cost, outcome)| (id.to_string(), *cost, *outcome)).collect()
}

fn cli_ok(port: u16, args: &[&str]) {
    let reply = redis_cli(port, args);
    assert_eq!(reply.trim(), "OK", "redis-cli -p {port} {args:?}");
}

fn keys_in_slot(port: u16, slot: u16) -> Vec<String> {
    let mut keys: Vec<String> = redis_cli(port, &["CLUSTER", "GETKEYSINSLOT", &slot.to_string(), "100"])
        .lines()
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect();
    keys.sort();
    keys
}

fn count_keys_in_slot(port: u16, slot: u16) -> u64 {
    redis_cli(port, &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]).trim().parse().unwrap()
}

fn migrate(source: u16, target: u16, keys: &[String]) {
    let target_port = target.to_string();
    let mut args = vec!["MIGRATE", "127.0.0.1", target_port.as_str(), "", "0", "5000", "KEYS"];
    args.extend(keys.iter().map(String::as_str));
    cli_ok(source, &args);
}

fn sorted(mut keys: Vec<String>) -> Vec<String> {
    keys.sort();
    keys
}

/// Counter changes on one node between two snapshots.
struct NodeStats {
    port: u16,
    fcall: CommandStat,
    fcall_ro: CommandStat,
    xrevrange: CommandStat,
    tryagain: u64,
    ask: u64,
    moved: u64,
}

impl NodeStats {
    fn take(port: u16) -> NodeStats {
        NodeStats {
            port,
            fcall: command_stat(port, "fcall"),
            fcall_ro: command_stat(port, "fcall_ro"),
            xrevrange: command_stat(port, "xrevrange"),
            tryagain: error_count(port, "TRYAGAIN"),
            ask: error_count(port, "ASK"),
            moved: error_count(port, "MOVED"),
        }
    }

    /// Since `self`: [FCALL calls, FCALL rejected, FCALL_RO calls, FCALL_RO rejected,
    /// XREVRANGE calls, TRYAGAIN sent, ASK sent, MOVED sent]. (Plain commands such as HMGET
    /// are not counted: the Functions' own `redis.call`s count in `INFO commandstats` too.)
    fn delta(&self) -> [u64; 8] {
        let now = NodeStats::take(self.port);
        [
            now.fcall.calls - self.fcall.calls,
            now.fcall.rejected_calls - self.fcall.rejected_calls,
            now.fcall_ro.calls - self.fcall_ro.calls,
            now.fcall_ro.rejected_calls - self.fcall_ro.rejected_calls,
            now.xrevrange.calls - self.xrevrange.calls,
            now.tryagain - self.tryagain,
            now.ask - self.ask,
            now.moved - self.moved,
        ]
    }
}

/// The slot of `account`'s keys, its owner (source), the master it moves to (target) and the
/// third master, as indexes into `cluster.servers`.
fn plan_move(cluster: &RedisCluster, prefix: &str, account: &str) -> (u16, usize, usize, usize) {
    let acct_key = format!("{prefix}:{{{account}}}:acct");
    let slot = fikra_gateway::redis::key_slot(acct_key.as_bytes());
    let by_redis: u16 = redis_cli(cluster.servers[0].port, &["CLUSTER", "KEYSLOT", &acct_key]).trim().parse().unwrap();
    assert_eq!(slot, by_redis, "the gateway and Redis agree on the slot");
    let source = cluster.owner_of(slot);
    let target = (source + 1) % 3;
    let other = (source + 2) % 3;
    (slot, source, target, other)
}

/// Opens the slot: IMPORTING on the target first, then MIGRATING on the source (the order
/// `redis-cli --cluster reshard` uses, so no moment has a key that nobody will serve).
fn open_slot(cluster: &RedisCluster, slot: u16, source: usize, target: usize) {
    let (source_port, target_port) = (cluster.servers[source].port, cluster.servers[target].port);
    let slot = slot.to_string();
    cli_ok(target_port, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &cluster_node_id(source_port)]);
    cli_ok(source_port, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &cluster_node_id(target_port)]);
}

/// Closes the slot on the target: SETSLOT NODE on the target, the source, then the third master.
fn assign_slot(cluster: &RedisCluster, slot: u16, source: usize, target: usize, other: usize) {
    let target_id = cluster_node_id(cluster.servers[target].port);
    for index in [target, source, other] {
        cli_ok(cluster.servers[index].port, &["CLUSTER", "SETSLOT", &slot.to_string(), "NODE", &target_id]);
    }
}

// Goal: an account keeps exact money through a live resharding of its slot. Before any key
// moves the source serves everything; with the keys split, every call that needs keys on both
// sides fails with Unavailable and changes nothing while single-key reads follow ASK; with all
// keys on the target, Function calls succeed through ASK + ASKING; after SETSLOT NODE one MOVED
// refreshes the slot map and every later call goes straight to the new owner. At the end,
// balance = signup credit + top-ups - sum of ledger costs, to the nano-dollar.
#[test]
fn an_account_slot_migrates_under_load_and_no_nano_is_lost() {
    let cluster = RedisCluster::start();
    let prefix = redis_server::unique_prefix("reshard");
    let store = store_on(&cluster, &prefix);
    let connections = StoreConnections::default();
    let store = store.client(&connections);
    let account = "reshard";
    let (slot, source, target, other) = plan_move(&cluster, &prefix, account);
    let (source_port, target_port) = (cluster.servers[source].port, cluster.servers[target].port);
    let key = |suffix: &str| format!("{prefix}:{{{account}}}:{suffix}");

    // Before: an account that has used a live key, a test key, a top-up, and has one open hold,
    // so all five of its keys exist (the rate buckets are fields of the account's hash).
    block_on(store.create_account(Some(account), Nanos(SIGNUP_CREDIT), T0)).unwrap();
    assert_eq!(admit(&store, account, "r1", KeyKind::Live, 100, 100), Ok(Nanos(100_000)));
    assert_eq!(settle(&store, account, "r1", 100, 40), charged(70_000, 30_000));
    assert_eq!(admit(&store, account, "t1", KeyKind::Test, 10, 10), Ok(Nanos::ZERO));
    assert_eq!(settle(&store, account, "t1", 10, 10), charged(0, 0));
    assert_eq!(topup(&store, account, 2_000_000_000, "ref-setup"), credited(2_999_930_000));
    assert_eq!(admit(&store, account, "r2", KeyKind::Live, 100, 100), Ok(Nanos(100_000)));
    let all_keys = sorted(["acct", "holds", "holdexp", "ledger", "payrefs"].iter().map(|s| key(s)).collect());
    assert_eq!(keys_in_slot(source_port, slot), all_keys);
    assert_eq!(account_state(&store, account), ("trusted".into(), 2_999_930_000, 100_000));

    // 1. The slot is open but no key has moved: the source still has every key and serves all.
    open_slot(&cluster, slot, source, target);
    let (at_source, at_target) = (NodeStats::take(source_port), NodeStats::take(target_port));
    assert_eq!(account_state(&store, account), ("trusted".into(), 2_999_930_000, 100_000));
    assert_eq!(admit(&store, account, "r3", KeyKind::Live, 100, 100), Ok(Nanos(100_000)));
    assert_eq!(settle(&store, account, "r2", 100, 60), charged(80_000, 20_000));
    assert_eq!(topup(&store, account, 500_000_000, "ref-open"), credited(3_499_850_000));
    assert_eq!(account_state(&store, account), ("trusted".into(), 3_499_850_000, 100_000));
    assert_eq!(at_source.delta(), [3, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(at_target.delta(), [0; 8]);

    // 2. Three of the five keys move: the hold expiries, the ledger and the payment references.
    let moved_first = sorted(vec![key("holdexp"), key("ledger"), key("payrefs")]);
    migrate(source_port, target_port, &moved_first);
    assert_eq!(keys_in_slot(source_port, slot), sorted(vec![key("acct"), key("holds")]));
    assert_eq!((count_keys_in_slot(source_port, slot), count_keys_in_slot(target_port, slot)), (2, 3));
    let (at_source, at_target) = (NodeStats::take(source_port), NodeStats::take(target_port));
    // A single-key read of a key still at the source: served there.
    assert_eq!(account_state(&store, account), ("trusted".into(), 3_499_850_000, 100_000));
    // A single-key read of a moved key (the ledger): ASK, then ASKING + XREVRANGE at the target.
    assert_eq!(
        ledger(&store, account),
        owned(&[("r2", 80_000, "completed"), ("t1", 0, "completed"), ("r1", 70_000, "completed")])
    );
    // Function calls whose keys are split get TRYAGAIN: the store asks again for a second (a
    // real resharding moves a slot in milliseconds), then gives up with Unavailable, and
    // nothing changes.
    let split_calls_started = std::time::Instant::now();
    assert_eq!(admit(&store, account, "r4", KeyKind::Live, 100, 100), Err(StoreError::Unavailable));
    assert_eq!(settle(&store, account, "r3", 100, 20), Err(StoreError::Unavailable));
    assert_eq!(topup(&store, account, 300_000_000, "ref-split").map(|r| r.balance), Err(StoreError::Unavailable));
    assert!(split_calls_started.elapsed() >= std::time::Duration::from_secs(3), "each one retried for a second");
    // The rate buckets are in the account record, still at the source: both kinds are served
    // there. One test request of 20 tokens at T0 (unverified limits for test keys: 30 RPM, 40000
    // TPM).
    assert_eq!(
        block_on(store.peek_rates(account, KeyKind::Test, T0)),
        Ok(RateSnapshot {
            requests_limit: 30,
            requests_remaining: 29,
            requests_reset_ms: 2_000,
            tokens_limit: 40_000,
            tokens_remaining: 39_980,
            tokens_reset_ms: 30,
        })
    );
    // Live (trusted: 100 RPM, 160000 TPM): r1, r2 and r3 took a request each; r1 and r2 settled
    // at 140 and 160 tokens and r3 still holds its 200.
    assert_eq!(
        block_on(store.peek_rates(account, KeyKind::Live, T0)),
        Ok(RateSnapshot {
            requests_limit: 100,
            requests_remaining: 97,
            requests_reset_ms: 1_800,
            tokens_limit: 160_000,
            tokens_remaining: 159_500,
            tokens_reset_ms: 188,
        })
    );
    assert_eq!(account_state(&store, account), ("trusted".into(), 3_499_850_000, 100_000));
    // Source: the 3 split calls refused with TRYAGAIN (each several times), 2 FCALL_RO served,
    // 1 ASK (the ledger). Target: the one XREVRANGE, nothing else.
    let at_source = at_source.delta();
    assert_eq!((at_source[0], at_source[2], at_source[4], at_source[6], at_source[7]), (0, 2, 0, 1, 0));
    assert_eq!(at_source[1] + at_source[3], at_source[5], "every refusal was a TRYAGAIN: {at_source:?}");
    assert!(at_source[5] >= 6, "each split call was asked again: {at_source:?}");
    assert_eq!(at_target.delta(), [0, 0, 0, 0, 1, 0, 0, 0]);

    // 3. The other two keys move: the source has none, the slot is still open.
    let moved_last = keys_in_slot(source_port, slot);
    migrate(source_port, target_port, &moved_last);
    assert_eq!((count_keys_in_slot(source_port, slot), count_keys_in_slot(target_port, slot)), (0, 5));
    assert_eq!(keys_in_slot(target_port, slot), all_keys);
    let (at_source, at_target) = (NodeStats::take(source_port), NodeStats::take(target_port));
    // Every call is redirected with ASK and served by the target after ASKING.
    assert_eq!(account_state(&store, account), ("trusted".into(), 3_499_850_000, 100_000));
    assert_eq!(admit(&store, account, "r4", KeyKind::Live, 100, 100), Ok(Nanos(100_000)));
    assert_eq!(settle(&store, account, "r3", 100, 20), charged(60_000, 40_000));
    // The reference claimed by the failed top-up of step 2 is still this account's: the retry
    // completes it, crediting once.
    assert_eq!(topup(&store, account, 300_000_000, "ref-split"), credited(3_799_790_000));
    assert_eq!(account_state(&store, account), ("trusted".into(), 3_799_790_000, 100_000));
    assert_eq!(at_source.delta(), [0, 3, 0, 0, 0, 0, 5, 0]);
    assert_eq!(at_target.delta(), [3, 0, 0, 0, 0, 0, 0, 0]);

    // 4. The slot is assigned to the target on every master.
    assign_slot(&cluster, slot, source, target, other);
    assert_eq!(cluster.owner_of(slot), target);
    let (at_source, at_target) = (NodeStats::take(source_port), NodeStats::take(target_port));
    // The store's slot map still names the source: one MOVED, then the map is read again.
    assert_eq!(admit(&store, account, "r5", KeyKind::Live, 50, 100), Ok(Nanos(75_000)));
    assert_eq!(at_source.delta(), [0, 1, 0, 0, 0, 0, 0, 1]);
    assert_eq!(at_target.delta(), [1, 0, 0, 0, 0, 0, 0, 0]);
    // From now on every call goes straight to the new owner: the source sees none of them.
    let (at_source, at_target) = (NodeStats::take(source_port), NodeStats::take(target_port));
    assert_eq!(settle(&store, account, "r4", 100, 100), charged(100_000, 0));
    assert_eq!(settle(&store, account, "r5", 50, 0), charged(25_000, 50_000));
    assert_eq!(admit(&store, account, "r6", KeyKind::Live, 100, 100), Ok(Nanos(100_000)));
    assert_eq!(settle(&store, account, "r6", 100, 10), charged(55_000, 45_000));
    assert_eq!(topup(&store, account, 100_000_000, "ref-after"), credited(3_899_610_000));
    assert!(block_on(store.peek_rates(account, KeyKind::Live, T0)).is_ok());
    assert_eq!(account_state(&store, account), ("trusted".into(), 3_899_610_000, 0));
    assert_eq!(at_source.delta(), [0; 8]);
    assert_eq!(at_target.delta(), [5, 0, 1, 0, 0, 0, 0, 0]);

    // The money: every request settled once, every reference credited once.
    assert_eq!(
        topup(&store, account, 300_000_000, "ref-split").map(|r| (r.balance, r.duplicate)),
        Ok((Nanos(3_899_610_000), true))
    );
    let records = ledger(&store, account);
    assert_eq!(
        records,
        owned(&[
            ("r6", 55_000, "completed"),
            ("r5", 25_000, "completed"),
            ("r4", 100_000, "completed"),
            ("r3", 60_000, "completed"),
            ("r2", 80_000, "completed"),
            ("t1", 0, "completed"),
            ("r1", 70_000, "completed"),
        ])
    );
    let top_ups: u64 = 2_000_000_000 + 500_000_000 + 300_000_000 + 100_000_000;
    let costs: u64 = records.iter().map(|(_, cost, _)| cost).sum();
    assert_eq!(costs, 390_000);
    assert_eq!(account_state(&store, account).1, SIGNUP_CREDIT + top_ups - costs);
    assert_eq!(count_keys_in_slot(source_port, slot), 0);
}

// Goal: a settlement that arrives while its account's slot is being moved charges the customer
// once the move is over (a resharding by `redis-cli --cluster reshard` takes milliseconds per
// slot): the store asks again after TRYAGAIN for up to a second. The TRYAGAIN comes before any
// key has moved: `fk_charge` names the ledger, which an account that never settled does not
// have, and Redis counts a key that does not exist as one that has moved.
#[test]
fn a_settlement_while_the_slot_moves_charges_the_customer() {
    let cluster = RedisCluster::start();
    let prefix = redis_server::unique_prefix("reshard-settle");
    let store = store_on(&cluster, &prefix);
    let connections = StoreConnections::default();
    let store = store.client(&connections);
    let account = "live-only";
    let (slot, source, target, other) = plan_move(&cluster, &prefix, account);
    let source_port = cluster.servers[source].port;
    block_on(store.create_account(Some(account), Nanos(SIGNUP_CREDIT), T0)).unwrap();
    assert_eq!(admit(&store, account, "r1", KeyKind::Live, 100, 100), Ok(Nanos(100_000)));
    // acct, holds, holdexp: no ledger yet.
    assert_eq!(count_keys_in_slot(source_port, slot), 3);

    open_slot(&cluster, slot, source, target);
    let tryagain_before = error_count(source_port, "TRYAGAIN");
    let settle_returned = std::sync::atomic::AtomicBool::new(false);
    let settled = std::thread::scope(|scope| {
        // The operator's side: once Redis has refused the settlement (or it is done), finish
        // the move as redis-cli does: every key, then SETSLOT NODE everywhere.
        scope.spawn(|| {
            let started = std::time::Instant::now();
            while error_count(source_port, "TRYAGAIN") == tryagain_before
                && !settle_returned.load(std::sync::atomic::Ordering::Acquire)
            {
                assert!(started.elapsed() < std::time::Duration::from_secs(10), "no settlement reached Redis");
                std::thread::yield_now();
            }
            migrate(source_port, cluster.servers[target].port, &keys_in_slot(source_port, slot));
            assign_slot(&cluster, slot, source, target, other);
        });
        let settled = settle(&store, account, "r1", 100, 40);
        settle_returned.store(true, std::sync::atomic::Ordering::Release);
        settled
    });
    assert!(error_count(source_port, "TRYAGAIN") > tryagain_before, "the source refused it at least once");
    assert_eq!(settled, charged(70_000, 30_000), "today: Err(Unavailable), and the pipeline gives up");
    assert_eq!(account_state(&store, account), ("unverified".into(), SIGNUP_CREDIT - 70_000, 0));
    assert_eq!(ledger(&store, account), owned(&[("r1", 70_000, "completed")]));
}
