//! The store behaviour suite: what every store must do, driven through the `Store` interface
//! with an explicit clock. Every test runs three times: on the embedded store, on a real
//! standalone `redis-server`, and on a real 3-master Redis Cluster (both started by this test
//! binary; tests keep apart by key prefix).

// Tests measure real time on purpose: clippy.toml's clock policy is for the gateway.
#![allow(clippy::disallowed_methods)]

mod support;

use fikra_gateway::cli::block_on;
use fikra_gateway::errors::Bucket;
use fikra_gateway::money::{Nanos, NanosPerToken, Prices, TokenUsage};
use fikra_gateway::store::*;
use support::redis_server;

const T0: u64 = 1_800_000_000_000;
const PRICE: NanosPerToken = NanosPerToken(500);

#[derive(Copy, Clone, Debug)]
enum Backend {
    Embedded,
    Redis,
    Cluster,
}

impl Backend {
    fn store(self, policy: LimitPolicy) -> Store {
        let (nodes, cluster) = match self {
            Backend::Embedded => return Store::embedded(policy),
            Backend::Redis => (vec![redis_server::shared_server()], false),
            Backend::Cluster => (redis_server::shared_cluster(), true),
        };
        let prefix = redis_server::unique_prefix("behaviour");
        redis_server::redis_store(nodes, cluster, &prefix, std::time::Duration::from_secs(2), policy)
    }
}

/// Each test, once per backend.
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        mod embedded { $( #[test] fn $name() { super::$name(super::Backend::Embedded) } )* }
        mod redis_standalone { $( #[test] fn $name() { super::$name(super::Backend::Redis) } )* }
        mod redis_cluster { $( #[test] fn $name() { super::$name(super::Backend::Cluster) } )* }
    };
}

on_every_store!(
    thirty_requests_then_rate_limited,
    clamps_output_to_the_wallet_then_refuses,
    settles_exactly_once_and_never_above_the_hold,
    tokens_per_minute_capacity,
    topups_are_idempotent_and_flip_the_tier,
    test_keys_are_free_and_separate,
    reaper_releases_expired_holds,
    concurrent_admissions_never_overdraw,
    cached_tokens_are_priced_once_and_spare_the_token_bucket,
);

fn account(store: &StoreClient<'_>, id: &str, credit: u64) {
    block_on(store.create_account(Some(id), Nanos(credit), T0)).unwrap();
}

fn request<'a>(
    id: &'a str,
    account: &'a str,
    kind: KeyKind,
    input: u64,
    output: u64,
    client_cap: bool,
    now_ms: u64,
) -> AdmitRequest<'a> {
    AdmitRequest {
        request_id: id,
        account_id: account,
        key_id: "key_1",
        key_kind: kind,
        model: "fikra-flash",
        input_tokens_upper: input,
        requested_output_tokens: output,
        client_set_output_cap: client_cap,
        refuse_clamp: false,
        input_price: PRICE,
        output_price: PRICE,
        now_ms,
        spend_cap: None,
    }
}

fn admit(store: &StoreClient<'_>, request: &AdmitRequest<'_>) -> Admission {
    block_on(store.admit(request)).unwrap()
}

fn settle(store: &StoreClient<'_>, account: &str, id: &str, prompt: u64, completion: u64) -> Settled {
    let settlement = Settlement {
        request_id: id,
        account_id: account,
        tokens: TokenUsage::new(prompt, completion),
        cost: Prices { input: PRICE, cached_input: PRICE, output: PRICE }.cost_of(&TokenUsage::new(prompt, completion)),
        outcome: Outcome::Completed,
        now_ms: T0,
    };
    block_on(store.settle(&settlement)).unwrap()
}

// Goal: an Unverified account gets exactly 30 requests, then a 429 with exact numbers; the
// denial takes nothing; two seconds later one more fits.
fn thirty_requests_then_rate_limited(backend: Backend) {
    let store = backend.store(LimitPolicy::reference());
    let connections = StoreConnections::default();
    let store = store.client(&connections);
    account(&store, "a", 1_000_000_000);
    for i in 0..30 {
        let id = format!("r{i}");
        assert!(matches!(admit(&store, &request(&id, "a", KeyKind::Live, 10, 10, true, T0)), Admission::Admitted(_)));
        settle(&store, "a", &id, 10, 10);
    }
    match admit(&store, &request("r30", "a", KeyKind::Live, 10, 10, true, T0)) {
        Admission::RateLimited { bucket, limit, used, requested, retry_after_ms, rates } => {
            assert_eq!((bucket, limit, used, requested, retry_after_ms), (Bucket::Requests, 30, 30, 1, 2000));
            assert_eq!((rates.requests_remaining, rates.requests_reset_ms), (0, 60_000));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        admit(&store, &request("r31", "a", KeyKind::Live, 10, 10, true, T0 + 2000)),
        Admission::Admitted(_)
    ));
}

// Goal: the output cap is lowered to what the available balance pays for, with the exact hold;
// 402 when not even one output token is affordable; nothing taken on refusal.
fn clamps_output_to_the_wallet_then_refuses(backend: Backend) {
    let store = backend.store(LimitPolicy::reference());
    let connections = StoreConnections::default();
    let store = store.client(&connections);
    account(&store, "w", 10_000);
    match admit(&store, &request("c1", "w", KeyKind::Live, 18, 100, true, T0)) {
        Admission::Admitted(admitted) => {
            assert_eq!((admitted.output_cap_tokens, admitted.hold, admitted.tokens_charged), (2, Nanos(10_000), 20));
            assert_eq!(admitted.rates.requests_remaining, 29);
        }
        other => panic!("{other:?}"),
    }
    match admit(&store, &request("c2", "w", KeyKind::Live, 18, 100, true, T0)) {
        Admission::InsufficientQuota { balance, available, needed, rates } => {
            assert_eq!((balance, available, needed), (Nanos(10_000), Nanos(0), Nanos(9_500)));
            assert_eq!(rates.requests_remaining, 29);
        }
        other => panic!("{other:?}"),
    }
    let view = block_on(store.account("w")).unwrap();
    assert_eq!((view.balance, view.held), (Nanos(10_000), Nanos(10_000)));
}

// Goal: settlement charges actual usage, never more than the hold, exactly once; TPM is trued up.
fn settles_exactly_once_and_never_above_the_hold(backend: Backend) {
    let store = backend.store(LimitPolicy::reference());
    let connections = StoreConnections::default();
    let store = store.client(&connections);
    account(&store, "s", 1_000_000);
    let Admission::Admitted(admitted) = admit(&store, &request("s1", "s", KeyKind::Live, 100, 50, true, T0)) else {
        panic!()
    };
    assert_eq!(admitted.hold, Nanos(75_000));
    assert_eq!(
        settle(&store, "s", "s1", 40, 10),
        Settled::Charged { charged: Nanos(25_000), released: Nanos(50_000), operator_loss: Nanos(0) }
    );
    assert_eq!(settle(&store, "s", "s1", 40, 10), Settled::AlreadySettled);
    let rates = block_on(store.peek_rates("s", KeyKind::Live, T0)).unwrap();
    assert_eq!(rates.tokens_remaining, 40_000 - 50);
    let Admission::Admitted(_) = admit(&store, &request("s2", "s", KeyKind::Live, 10, 10, true, T0)) else { panic!() };
    // Usage beyond the hold: charge the hold, count the rest as operator loss.
    assert_eq!(
        settle(&store, "s", "s2", 30, 30),
        Settled::Charged { charged: Nanos(10_000), released: Nanos(0), operator_loss: Nanos(20_000) }
    );
    let view = block_on(store.account("s")).unwrap();
    assert_eq!((view.balance, view.held), (Nanos(1_000_000 - 35_000), Nanos(0)));
    let usage = block_on(store.usage("s", 10)).unwrap();
    assert_eq!(
        usage.iter().map(|r| (r.cost, r.outcome)).collect::<Vec<_>>(),
        [(Nanos(10_000), "completed"), (Nanos(25_000), "completed")]
    );
}

// Goal: a request larger than the TPM bucket is refused as too large; without a client cap the
// output cap is lowered to fit the bucket instead.
fn tokens_per_minute_capacity(backend: Backend) {
    let store = backend.store(LimitPolicy::reference());
    let connections = StoreConnections::default();
    let store = store.client(&connections);
    account(&store, "t", 1_000_000_000);
    match admit(&store, &request("t1", "t", KeyKind::Live, 39_000, 2_000, true, T0)) {
        Admission::TooLargeForTokenLimit { limit, requested, .. } => assert_eq!((limit, requested), (40_000, 41_000)),
        other => panic!("{other:?}"),
    }
    match admit(&store, &request("t2", "t", KeyKind::Live, 39_000, 8_192, false, T0)) {
        Admission::Admitted(admitted) => {
            assert_eq!((admitted.output_cap_tokens, admitted.tokens_charged), (1_000, 40_000))
        }
        other => panic!("{other:?}"),
    }
    match admit(&store, &request("t3", "t", KeyKind::Live, 10, 10, true, T0)) {
        Admission::RateLimited {
            bucket: Bucket::Tokens,
            limit: 40_000,
            used: 40_000,
            requested: 20,
            retry_after_ms: 30,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
}

// Goal: usage with cached prompt tokens is charged what the gateway priced (uncached input,
// cached input at its own price, output: each token once), the ledger keeps the cached and
// reasoning counts, and the TPM bucket is trued up without the cached tokens unless the tier
// counts them (`count_cached_tokens`).
fn cached_tokens_are_priced_once_and_spare_the_token_bucket(backend: Backend) {
    // prompt 1,000 of which 600 cached, completion 50 of which 20 reasoning.
    let usage =
        TokenUsage { prompt_tokens: 1_000, cached_prompt_tokens: 600, completion_tokens: 50, reasoning_tokens: 20 };
    let prices = Prices { input: PRICE, cached_input: NanosPerToken(250), output: PRICE };
    // 400 x 500 + 600 x 250 + 50 x 500 nano-USD.
    let cost = prices.cost_of(&usage);
    assert_eq!(cost, Nanos(375_000));
    for (count_cached_tokens, tokens_left) in [(false, 40_000 - 450), (true, 40_000 - 1_050)] {
        let mut policy = LimitPolicy::reference();
        policy.tiers[0].1.count_cached_tokens = count_cached_tokens;
        let store = backend.store(policy);
        let connections = StoreConnections::default();
        let store = store.client(&connections);
        account(&store, "c", 1_000_000_000);
        let Admission::Admitted(admitted) = admit(&store, &request("c1", "c", KeyKind::Live, 1_000, 100, true, T0))
        else {
            panic!()
        };
        // The hold assumes no cache hit: 1,000 x 500 + 100 x 500.
        assert_eq!((admitted.hold, admitted.tokens_charged), (Nanos(550_000), 1_100));
        let settlement = Settlement {
            request_id: "c1",
            account_id: "c",
            tokens: usage,
            cost,
            outcome: Outcome::Completed,
            now_ms: T0,
        };
        assert_eq!(
            block_on(store.settle(&settlement)).unwrap(),
            Settled::Charged { charged: Nanos(375_000), released: Nanos(175_000), operator_loss: Nanos(0) }
        );
        let view = block_on(store.account("c")).unwrap();
        assert_eq!((view.balance, view.held), (Nanos(1_000_000_000 - 375_000), Nanos(0)));
        assert_eq!(block_on(store.peek_rates("c", KeyKind::Live, T0)).unwrap().tokens_remaining, tokens_left);
        let records = block_on(store.usage("c", 10)).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!((records[0].tokens, records[0].cost, records[0].outcome), (usage, Nanos(375_000), "completed"));
    }
}

// Goal: top-ups credit once per reference and flip Unverified to Trusted for good (100 RPM).
fn topups_are_idempotent_and_flip_the_tier(backend: Backend) {
    let store = backend.store(LimitPolicy::reference());
    let connections = StoreConnections::default();
    let store = store.client(&connections);
    account(&store, "p", 0);
    let first = block_on(store.topup("p", Nanos(5_000_000_000), "MPESA-1", T0)).unwrap();
    assert_eq!((first.balance, &*first.tier, first.duplicate), (Nanos(5_000_000_000), TIER_TRUSTED, false));
    let again = block_on(store.topup("p", Nanos(5_000_000_000), "MPESA-1", T0)).unwrap();
    assert_eq!((again.balance, again.duplicate), (Nanos(5_000_000_000), true));
    assert_eq!(block_on(store.peek_rates("p", KeyKind::Live, T0)).unwrap().requests_limit, 100);
    assert_eq!(block_on(store.topup("nobody", Nanos(1), "MPESA-2", T0)), Err(StoreError::NotFound));
}

// Goal: test keys never touch the wallet and use their own Unverified buckets.
fn test_keys_are_free_and_separate(backend: Backend) {
    let store = backend.store(LimitPolicy::reference());
    let connections = StoreConnections::default();
    let store = store.client(&connections);
    account(&store, "x", 0);
    block_on(store.topup("x", Nanos(1_000), "ref-x", T0)).unwrap();
    let Admission::Admitted(admitted) = admit(&store, &request("x1", "x", KeyKind::Test, 100, 100, true, T0)) else {
        panic!()
    };
    assert_eq!((admitted.hold, admitted.rates.requests_limit), (Nanos(0), 30));
    assert_eq!(
        settle(&store, "x", "x1", 50, 50),
        Settled::Charged { charged: Nanos(0), released: Nanos(0), operator_loss: Nanos(0) }
    );
    assert_eq!(block_on(store.peek_rates("x", KeyKind::Live, T0)).unwrap().requests_remaining, 100);
    assert_eq!(block_on(store.account("x")).unwrap().balance, Nanos(1_000));
}

// Goal: the reaper releases holds past their TTL and nothing else.
fn reaper_releases_expired_holds(backend: Backend) {
    let store = backend.store(LimitPolicy::reference());
    let connections = StoreConnections::default();
    let store = store.client(&connections);
    account(&store, "r", 1_000_000);
    let Admission::Admitted(_) = admit(&store, &request("old", "r", KeyKind::Live, 10, 10, true, T0)) else { panic!() };
    let later = T0 + fikra_gateway::limits::HOLD_TTL_MS;
    let Admission::Admitted(_) = admit(&store, &request("new", "r", KeyKind::Live, 10, 10, true, later)) else {
        panic!()
    };
    assert_eq!(block_on(store.reap_expired_holds(later)), Ok(1));
    assert_eq!(block_on(store.account("r")).unwrap().held, Nanos(10_000));
    assert_eq!(settle(&store, "r", "old", 1, 1), Settled::AlreadySettled);
}

// Goal: under 8 threads x 25 admissions against a wallet that holds exactly k full requests,
// at most k are admitted at once, the balance never drops below what is held, and after
// settlement balance before - balance after equals the ledger's charges to the nano-dollar.
fn concurrent_admissions_never_overdraw(backend: Backend) {
    let policy = LimitPolicy {
        account_overrides: vec![("c".into(), TierLimits::per_minute(1_000_000, 1_000_000_000))],
        ..LimitPolicy::reference()
    };
    let shared = backend.store(policy);
    let connections = StoreConnections::default();
    let store = shared.client(&connections);
    let hold_per_request = (100 + 50) * 500;
    let k = 23;
    // Left over after k holds: one nano-dollar short of the input cost plus one output token.
    account(&store, "c", k * hold_per_request + 100 * 500 + 500 - 1);
    let admitted_ids: Vec<Vec<String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|thread| {
                let shared = shared.clone();
                scope.spawn(move || {
                    let connections = StoreConnections::default();
                    let store = shared.client(&connections);
                    let mut mine = Vec::new();
                    for i in 0..25 {
                        let id = format!("t{thread}-{i}");
                        if let Admission::Admitted(a) =
                            admit(&store, &request(&id, "c", KeyKind::Live, 100, 50, true, T0))
                        {
                            assert_eq!(a.output_cap_tokens, 50);
                            mine.push(id);
                        }
                        let view = block_on(store.account("c")).unwrap();
                        assert!(view.held <= view.balance);
                    }
                    mine
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let admitted: Vec<String> = admitted_ids.into_iter().flatten().collect();
    assert_eq!(admitted.len() as u64, k, "holds are never released here, so exactly k fit");
    let before = block_on(store.account("c")).unwrap().balance;
    for (i, id) in admitted.iter().enumerate() {
        settle(&store, "c", id, 37 + i as u64 % 7, 13 + i as u64 % 5);
    }
    let after = block_on(store.account("c")).unwrap();
    assert_eq!(after.held, Nanos(0));
    let charged: u64 = block_on(store.usage("c", 1000)).unwrap().iter().map(|r| r.cost.0).sum();
    assert_eq!(before.0 - after.balance.0, charged);
}

/// Leases exist on the shared (Redis) store only.
mod leases {
    #[test]
    fn redis_standalone() {
        super::lease_grants_pays_and_ends(super::Backend::Redis)
    }
    #[test]
    fn redis_cluster() {
        super::lease_grants_pays_and_ends(super::Backend::Cluster)
    }
    #[test]
    fn embedded_store_has_none() {
        let store = super::Backend::Embedded.store(super::LimitPolicy::reference());
        let call = super::lease_call(1, 0, 0, 1, 1, 1, vec![]);
        let connections = super::StoreConnections::default();
        let store = store.client(&connections);
        assert_eq!(fikra_gateway::cli::block_on(store.lease(&call)), Err(super::StoreError::Unavailable));
    }
}

fn lease_call(
    seq: u64,
    return_requests: u64,
    tokens_delta: i64,
    want_requests: u64,
    want_tokens: u64,
    want_escrow: u64,
    costs: Vec<(&str, u64)>,
) -> LeaseCall {
    LeaseCall {
        account_id: "l".into(),
        lease_id: "node-0:l".into(),
        seq,
        now_ms: T0,
        return_requests,
        tokens_delta,
        want_requests,
        want_tokens,
        want_escrow: Nanos(want_escrow),
        share: 8,
        records: costs
            .into_iter()
            .map(|(id, cost)| LeaseRecord {
                request_id: id.into(),
                key_id: "key_1".into(),
                model: "fikra-flash".into(),
                tokens: TokenUsage::new(10, 10),
                cost: Nanos(cost),
                outcome: Outcome::Completed,
            })
            .collect(),
    }
}

/// (granted requests, granted tokens, escrow, charged, loss, requests remaining, tokens remaining)
fn lease(store: &StoreClient<'_>, call: &LeaseCall) -> (u64, u64, u64, u64, u64, u64, u64) {
    match block_on(store.lease(call)).unwrap() {
        LeaseReply::Granted { requests, tokens, escrow, charged, operator_loss, rates, .. } => {
            (requests, tokens, escrow.0, charged.0, operator_loss.0, rates.requests_remaining, rates.tokens_remaining)
        }
        LeaseReply::Superseded => panic!("superseded"),
    }
}

fn balance_and_held(store: &StoreClient<'_>, id: &str) -> (u64, u64) {
    let view = block_on(store.account(id)).unwrap();
    (view.balance.0, view.held.0)
}

// Goal: one lease call grants at most 1/share of what is left (requests, tokens, escrow), is
// applied once per sequence number, pays records from the escrow then the available balance,
// never below zero (the rest is an operator loss), and the ledger equals the balance change.
fn lease_grants_pays_and_ends(backend: Backend) {
    let store = backend.store(LimitPolicy::reference());
    let connections = StoreConnections::default();
    let store = store.client(&connections);
    account(&store, "l", 1_000_000);
    // 30 RPM / 40,000 TPM / 1,000,000 available: 3, 5,000 and 125,000 at most.
    let first = lease_call(1, 0, 0, 10, 10_000, 200_000, vec![]);
    assert_eq!(lease(&store, &first), (3, 5_000, 125_000, 0, 0, 27, 35_000));
    assert_eq!(lease(&store, &first), (3, 5_000, 125_000, 0, 0, 27, 35_000), "a retry changes nothing");
    assert_eq!(balance_and_held(&store, "l"), (1_000_000, 125_000));
    // Pay 70,000 from the escrow; give back one request and 100 tokens; keep the rest.
    let second = lease_call(2, 1, 100, 0, 0, 55_000, vec![("q1", 40_000), ("q2", 30_000)]);
    assert_eq!(lease(&store, &second), (0, 0, 55_000, 70_000, 0, 28, 35_100));
    assert_eq!(balance_and_held(&store, "l"), (930_000, 55_000));
    // 100,000 for an escrow of 55,000: the rest comes from the available balance; the lease ends.
    let third = lease_call(3, 0, 0, 0, 0, 0, vec![("q3", 100_000)]);
    let (_, _, escrow, charged, loss, _, _) = lease(&store, &third);
    assert_eq!((escrow, charged, loss), (0, 100_000, 0));
    assert_eq!(balance_and_held(&store, "l"), (830_000, 0));
    assert_eq!(block_on(store.lease(&second)).unwrap(), LeaseReply::Superseded);
    assert_eq!(balance_and_held(&store, "l"), (830_000, 0), "an older call changes nothing");
    // More than the balance: charged down to zero, never below; the rest is an operator loss.
    let fourth = lease_call(4, 0, 0, 0, 0, 0, vec![("q4", 900_000)]);
    let (_, _, escrow, charged, loss, _, _) = lease(&store, &fourth);
    assert_eq!((escrow, charged, loss), (0, 830_000, 70_000));
    assert_eq!(balance_and_held(&store, "l"), (0, 0));
    let mut ledger: Vec<(String, u64)> =
        block_on(store.usage("l", 100)).unwrap().iter().map(|r| (r.request_id.to_string(), r.cost.0)).collect();
    ledger.sort();
    let expected = [("q1", 40_000), ("q2", 30_000), ("q3", 100_000), ("q4", 830_000)];
    assert_eq!(ledger, expected.map(|(id, cost)| (id.to_string(), cost)));
    assert_eq!(ledger.iter().map(|(_, cost)| cost).sum::<u64>(), 1_000_000, "ledger = balance change");
    // Newest first, across and within the calls' ledger entries, cut at the limit.
    let newest: Vec<String> = block_on(store.usage("l", 3)).unwrap().iter().map(|r| r.request_id.to_string()).collect();
    assert_eq!(newest, ["q4", "q3", "q2"]);
    let q1 = block_on(store.usage("l", 4)).unwrap().pop().unwrap();
    assert_eq!(
        (q1.key_id.as_ref(), q1.model.as_ref(), q1.tokens.prompt_tokens, q1.tokens.completion_tokens),
        ("key_1", "fikra-flash", 10, 10)
    );
    assert_eq!((q1.cost, q1.outcome, q1.created_at_ms), (Nanos(40_000), "completed", T0));
}
