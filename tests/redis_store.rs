//! Gateway nodes sharing one real `redis-server`: limits and the wallet hold across separate
//! `fikra-gateway serve` processes, revocations reach every node, the Redis commands each
//! request costs, a Redis outage and its recovery, and a top-up that survives `kill -9`.

// Tests measure real time and may lock on purpose: clippy.toml's clock and lock policy is for
// the gateway.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod support;

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use support::gateway::usd_to_nanos;
use support::gateway_process::GatewayProcess;
use support::http::*;
use support::redis_server::{self, RedisServer, redis_cli, unique_prefix, wallet};
use support::wait::{wait_for, wait_until};

/// The `[store]` body for one Redis at `redis`, keys under `prefix`.
fn store_section(redis: SocketAddr, prefix: &str, nodes: u32) -> String {
    format!(
        "redis_url = \"redis://{redis}\"\nkey_prefix = \"{prefix}\"\ngateway_nodes = {nodes}\ncommand_timeout_ms = {COMMAND_TIMEOUT_MS}"
    )
}

const COMMAND_TIMEOUT_MS: u64 = 250;
/// How soon after Redis dies every worker must have noticed (its connection closed).
const KILL_NOTICED_WITHIN: Duration = Duration::from_millis(100);

/// A model whose input is free and whose output costs 1,000 nano-USD per token, 16 at most:
/// every answer from the sandbox (16 tokens) costs exactly its hold, 16,000 nano-USD.
const METERED_MODEL: &str = r#"
[[models]]
id = "metered"
upstream = "sandbox"
input_usd_per_million = "0"
output_usd_per_million = "1"
max_output_tokens = 16
"#;

fn override_limits(account: &str, rpm: u64, tpm: u64) -> String {
    format!("\n[[account_overrides]]\naccount = \"{account}\"\nrpm = {rpm}\ntpm = {tpm}\n")
}

fn three_nodes(test: &str, extra: &str) -> Vec<GatewayProcess> {
    let store = store_section(redis_server::shared_server(), &unique_prefix(test), 3);
    // Started from this thread: each node dies with it (PR_SET_PDEATHSIG is per thread).
    (0..3).map(|n| GatewayProcess::start(&format!("{test}-{n}"), &store, extra)).collect()
}

// Goal: an account's 30 RPM holds across three nodes: 90 requests from 9 clients spread over the
// nodes get exactly 30 admissions (plus whatever the bucket refilled while the test ran).
#[test]
fn rpm_is_global_across_three_nodes() {
    let nodes = Arc::new(three_nodes("rpm", ""));
    nodes[0].create_account("spread", "1.00");
    let (_, key) = nodes[1].create_key("spread", "live");
    // A small answer cap keeps the token bucket (40,000 TPM) out of the way.
    let body = r#"{"model":"fikra-flash","max_tokens":16,"messages":[{"role":"user","content":"habari"}]}"#;
    let request = chat_request(&key, body);
    let started = Instant::now();
    let clients: Vec<_> = (0..9)
        .map(|client| {
            let (nodes, request) = (nodes.clone(), request.clone());
            std::thread::spawn(move || {
                (0..10).map(|n| send_one(nodes[(client + n) % 3].api, request.as_bytes())).collect::<Vec<_>>()
            })
        })
        .collect();
    let responses: Vec<Response> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    let elapsed_ms = started.elapsed().as_millis() as usize;
    let counts = tally(responses.iter().map(|r| r.status));
    let admitted = counts.get(&200).copied().unwrap_or(0);
    // The bucket refills one request every 2,000 ms.
    let refilled = elapsed_ms / 2_000;
    eprintln!("admitted {admitted} of 90 in {elapsed_ms} ms across 3 nodes: {counts:?}");
    assert!((30..=30 + refilled).contains(&admitted), "admitted {admitted}, refilled {refilled}: {counts:?}");
    assert_eq!(counts.get(&429).copied().unwrap_or(0), 90 - admitted, "{counts:?}");
    for refused in responses.iter().filter(|r| r.status == 429) {
        assert_eq!(refused.error().1, "rate_limit_exceeded");
        assert_eq!(refused.header("x-ratelimit-limit-requests"), Some("30"));
        assert_eq!(refused.header("x-ratelimit-remaining-requests"), Some("0"));
        let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=2).contains(&retry_after), "retry-after {retry_after}");
    }
    assert_eq!(nodes[2].usage_costs("spread").len(), admitted, "one ledger record per admitted request");
}

// Goal: 300 concurrent requests spread over three nodes against a wallet that pays for exactly
// 20 answers: exactly 20 succeed, the rest get 402, the balance ends at zero, and the ledger
// equals the balance change.
#[test]
fn wallet_pays_for_k_of_300_concurrent_requests_across_nodes() {
    const K: u64 = 20;
    const ANSWER_NANOS: u64 = 16_000;
    let extra = format!("{METERED_MODEL}{}", override_limits("wallet", 100_000, 100_000_000));
    let nodes = Arc::new(three_nodes("wallet", &extra));
    let credit = fikra_gateway::money::Nanos(K * ANSWER_NANOS).to_usd_string();
    nodes[0].create_account("wallet", &credit);
    let (_, key) = nodes[0].create_key("wallet", "live");
    let request = chat_request(&key, &simple_chat("metered", "lipa"));
    let barrier = Arc::new(Barrier::new(300));
    let clients: Vec<_> = (0..300)
        .map(|client| {
            let (nodes, request, barrier) = (nodes.clone(), request.clone(), barrier.clone());
            std::thread::spawn(move || {
                let stream = connect(nodes[client % 3].api);
                barrier.wait();
                (&stream).write_all(request.as_bytes()).unwrap();
                read_response(&mut BufReader::new(stream)).expect("a response")
            })
        })
        .collect();
    let responses: Vec<Response> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let counts = tally(responses.iter().map(|r| r.status));
    eprintln!("300 concurrent over 3 nodes against a wallet for {K}: {counts:?}");
    assert_eq!(counts.get(&200).copied(), Some(K as usize), "{counts:?}");
    assert_eq!(counts.get(&402).copied(), Some(300 - K as usize), "{counts:?}");
    for response in &responses {
        if response.status == 200 {
            assert_eq!(response.json()["usage"]["completion_tokens"], 16);
        } else {
            assert_eq!(response.error().1, "insufficient_quota");
        }
    }
    let account = nodes[1].admin_json("GET", "/admin/accounts/wallet", "", 200);
    assert_eq!(account["balance_usd"], "0.000000000");
    assert_eq!(account["held_usd"], "0.000000000");
    let costs = nodes[2].usage_costs("wallet");
    assert_eq!(costs.len(), K as usize);
    assert_eq!(costs.iter().sum::<u64>(), K * ANSWER_NANOS, "ledger = balance change");
}

// Goal: a key revoked through one node is refused by every worker of every node within a second
// (pub/sub reaches the per-core caches; nothing waits for the cache TTL).
#[test]
fn revocation_through_one_node_reaches_every_node_within_a_second() {
    // Test keys get the Unverified limits: raise them above the 72 requests sent here.
    let nodes = three_nodes("revoke", "[tiers.unverified]\nrpm = 1000\ntpm = 1000000\n");
    nodes[0].create_account("leaver", "1.00");
    let (key_id, key) = nodes[0].create_key("leaver", "test");
    let request = chat_request(&key, &simple_chat("fikra-flash", "kwaheri"));
    // Fresh connections land on both workers of each node: every cache holds the key.
    for node in &nodes {
        for _ in 0..12 {
            assert_eq!(send_one(node.api, request.as_bytes()).status, 200);
        }
    }
    nodes[0].admin_json("DELETE", &format!("/admin/keys/{key_id}"), "", 200);
    let revoked_at = Instant::now();
    let mut first_refusal_ms = [None; 3];
    while first_refusal_ms.iter().any(Option::is_none) && revoked_at.elapsed() < Duration::from_secs(1) {
        for (n, node) in nodes.iter().enumerate() {
            if first_refusal_ms[n].is_none() && send_one(node.api, request.as_bytes()).status == 401 {
                first_refusal_ms[n] = Some(revoked_at.elapsed().as_millis());
            }
        }
    }
    eprintln!("first refusal per node after the revocation (ms): {first_refusal_ms:?}");
    // By the one-second mark (tried once more at the mark itself), every worker refuses it.
    let every_worker_refuses =
        || nodes.iter().all(|node| (0..12).all(|_| send_one(node.api, request.as_bytes()).status == 401));
    let within = Duration::from_secs(1).saturating_sub(revoked_at.elapsed());
    assert!(wait_until(within, every_worker_refuses), "a worker still served the key 1 s after its revocation");
    for node in &nodes {
        for _ in 0..12 {
            let refused = send_one(node.api, request.as_bytes());
            assert_eq!(refused.status, 401, "{}", refused.text());
            assert_eq!(refused.error().1, "revoked_api_key");
        }
    }
}

/// `INFO commandstats` as command name -> calls.
fn command_table(port: u16) -> HashMap<String, u64> {
    redis_cli(port, &["INFO", "commandstats"])
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.strip_prefix("calls=")?.split(',').next()?.parse().ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

/// Calls per command between two tables, leaving out the test's own `INFO` and the gateway's
/// background traffic (the reaper's `SCAN`, readiness `PING`s).
fn command_delta(before: &HashMap<String, u64>, after: &HashMap<String, u64>) -> HashMap<String, u64> {
    after
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "info" | "scan" | "ping"))
        .map(|(name, calls)| (name.clone(), calls - before.get(name).copied().unwrap_or(0)))
        .filter(|(_, calls)| *calls > 0)
        .collect()
}

// Goal: what the store costs per request, counted by Redis itself: an admitted request is
// exactly two function calls (admit, settle), whatever commands run inside them; a request
// refused from a deny entry is none.
#[test]
fn redis_commands_per_admitted_and_per_refused_request() {
    let redis = RedisServer::start(&["--appendonly", "no"]);
    // 1,100 RPM: below LEASE_MIN_RPM, so every request goes to Redis (leases are measured below).
    let extra = format!("{}{}", override_limits("busy", 1_100, 100_000_000), override_limits("capped", 1, 100_000));
    let node = GatewayProcess::start("traffic", &store_section(redis.addr(), "fk", 1), &extra);
    node.create_account("busy", "10.00");
    node.create_account("capped", "10.00");
    let (_, busy_key) = node.create_key("busy", "live");
    let (_, capped_key) = node.create_key("capped", "live");
    let busy = chat_request(&busy_key, &simple_chat("fikra-flash", "habari ya asubuhi"));
    let capped = chat_request(&capped_key, &simple_chat("fikra-flash", "habari"));

    const ADMITTED: u64 = 200;
    let stream = connect(node.api);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut send = |request: &str| {
        (&stream).write_all(request.as_bytes()).unwrap();
        read_response(&mut reader).expect("a response").status
    };
    // Warm-up: this worker caches both keys.
    assert_eq!(send(&busy), 200);
    let before = command_table(redis.port);
    for _ in 0..ADMITTED {
        assert_eq!(send(&busy), 200);
    }
    let after = command_table(redis.port);
    let mut admitted = command_delta(&before, &after);
    // The directory sync (one SCAN, one HMGET per key record: 2) may fall in this window too.
    if after.get("scan").copied().unwrap_or(0) > before.get("scan").copied().unwrap_or(0) {
        admitted.remove("scan");
        *admitted.get_mut("hmget").unwrap() -= 2;
    }
    let inside: u64 = admitted.iter().filter(|(name, _)| name.as_str() != "fcall").map(|(_, calls)| calls).sum();
    eprintln!(
        "per admitted request: {} FCALL, {:.2} commands inside them; by command over {ADMITTED}: {admitted:?}",
        admitted["fcall"] as f64 / ADMITTED as f64,
        inside as f64 / ADMITTED as f64
    );
    assert_eq!(admitted["fcall"], 2 * ADMITTED, "{admitted:?}");
    // Inside them, 11 commands a request (issue 14's bound was 12): fk_hold reads Redis's clock
    // (TIME) and the account's hash once (HMGET), takes the hold (HSETNX, which is also the
    // duplicate-id check), writes the account (HSET) and the expiry (ZADD); fk_charge reads the
    // hold (HGET) and the account (HMGET), writes the account (HSET), drops the hold (HDEL, ZREM),
    // appends the ledger (XADD; XTRIM after about one in ten: entry ids whose ms end in 0), and
    // reads no clock (a request that used no more tokens than it held needs no refill first).
    let per_request = |calls: u64| calls * ADMITTED;
    let expected: std::collections::BTreeMap<String, u64> = [
        ("fcall", 2),
        ("hmget", 2),
        ("hsetnx", 1),
        ("hset", 2),
        ("zadd", 1),
        ("hget", 1),
        ("hdel", 1),
        ("zrem", 1),
        ("xadd", 1),
        ("time", 1),
    ]
    .into_iter()
    .map(|(name, calls)| (name.to_string(), per_request(calls)))
    .collect();
    let trims = admitted.remove("xtrim").unwrap_or(0);
    let seen: std::collections::BTreeMap<String, u64> = admitted.iter().map(|(n, c)| (n.clone(), *c)).collect();
    assert_eq!(seen, expected);
    assert!(inside == 11 * ADMITTED + trims && (1..=ADMITTED / 4).contains(&trims), "{inside}, {trims} XTRIMs");

    // 1 RPM: the first request is admitted, the second refused by the store (and remembered).
    assert_eq!(send(&capped), 200);
    assert_eq!(send(&capped), 429);
    const REFUSED: usize = 500;
    let before = command_table(redis.port);
    for _ in 0..REFUSED {
        assert_eq!(send(&capped), 429);
    }
    let after = command_table(redis.port);
    let mut refused = command_delta(&before, &after);
    // The periodic key-directory sync (a SCAN, then one HMGET per key record: 2 here) is
    // background traffic too, when it happens to fall in the window.
    let synced = after.get("scan").copied().unwrap_or(0) > before.get("scan").copied().unwrap_or(0);
    if synced && refused.get("hmget") == Some(&2) {
        refused.remove("hmget");
    }
    eprintln!(
        "commands for {REFUSED} refusals from the deny entry: {refused:?} (directory sync in the window: {synced})"
    );
    assert!(refused.is_empty(), "{refused:?}");
}

/// The pause of each outage-test client between two requests: load, not a flood that would make
/// the 2-core test machine itself the slowest part.
const OUTAGE_LOAD_PAUSE: Duration = Duration::from_millis(20);
/// Answers the outage test collects before it kills Redis and while Redis is down: (paid, test).
const OUTAGE_SAMPLES_BEFORE: (usize, usize) = (10, 5);
const OUTAGE_SAMPLES_DURING: (usize, usize) = (50, 25);
/// How long each phase of the outage test may take to collect its samples.
const OUTAGE_PHASE_WITHIN: Duration = Duration::from_secs(10);

/// Paid and test-key answers among `samples` sent after `since`.
fn sample_counts(samples: &Mutex<Vec<Sample>>, since: Instant) -> (usize, usize) {
    let samples = samples.lock().unwrap();
    let after = samples.iter().filter(|s| s.sent_at > since);
    after.fold((0, 0), |(live, test), s| if s.live { (live + 1, test) } else { (live, test + 1) })
}

/// One request sent during the outage test: its kind, status, code, duration and send time.
struct Sample {
    live: bool,
    status: u16,
    code: Option<String>,
    took: Duration,
    sent_at: Instant,
}

/// One node on `redis` with a paid account ("payer", 5 USD) and a test-key account, both keys
/// known to every worker; returns the node and the two chat requests (paid, test).
fn node_with_paid_and_test_keys(name: &str, redis: &RedisServer) -> (GatewayProcess, String, String) {
    // Test keys have the Unverified limits: raise them so no load here is ever rate limited.
    let unlimited = "[tiers.unverified]\nrpm = 1000000\ntpm = 1000000000\n";
    let node = GatewayProcess::start(name, &store_section(redis.addr(), "fk", 1), unlimited);
    node.create_account("payer", "5.00");
    node.create_account("builder", "0");
    let (_, live_key) = node.create_key("payer", "live");
    let (_, test_key) = node.create_key("builder", "test");
    let live = chat_request(&live_key, &simple_chat("fikra-flash", "lipa"));
    let test = chat_request(&test_key, &simple_chat("fikra-flash", "jaribu"));
    // Fresh connections spread over the workers: both learn both keys.
    for _ in 0..8 {
        {
            let r = send_one(node.api, live.as_bytes());
            assert_eq!(r.status, 200, "{}", r.text());
        }
        assert_eq!(send_one(node.api, test.as_bytes()).status, 200);
    }
    (node, live, test)
}

// Goal: Redis killed under load: no request waits longer than the store timeout, paid requests
// get 503 service_unavailable, test keys are served, readiness is false; Redis restarted (with
// its append-only file): full service within 5 seconds, no gateway restart.
#[test]
fn redis_outage_fails_paid_requests_fast_and_recovers_by_itself() {
    let mut redis = RedisServer::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let (node, live, test) = node_with_paid_and_test_keys("outage", &redis);
    let node = Arc::new(node);

    let samples = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let load_started = Instant::now();
    let load: Vec<_> = [true, true, false]
        .into_iter()
        .map(|is_live| {
            let (node, samples, stop) = (node.clone(), samples.clone(), stop.clone());
            let request = if is_live { live.clone() } else { test.clone() };
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    let sent_at = Instant::now();
                    let (response, took) = timed_send(node.api, &request);
                    let code = (response.status != 200).then(|| response.error().1);
                    samples.lock().unwrap().push(Sample {
                        live: is_live,
                        status: response.status,
                        code,
                        took,
                        sent_at,
                    });
                    std::thread::sleep(OUTAGE_LOAD_PAUSE);
                }
            })
        })
        .collect();

    // Each phase lasts until the load has produced its samples (a bounded wait), not a set time.
    let collected: &Mutex<Vec<Sample>> = &samples;
    let enough = |since: Instant, (live, test): (usize, usize)| {
        move || {
            let (seen_live, seen_test) = sample_counts(collected, since);
            seen_live >= live && seen_test >= test
        }
    };
    assert!(wait_until(OUTAGE_PHASE_WITHIN, enough(load_started, OUTAGE_SAMPLES_BEFORE)), "load before the outage");
    let killed_at = Instant::now();
    redis.kill();
    let not_ready = wait_until(Duration::from_millis(300), || node.readiness() == Some(503));
    assert!(not_ready, "readiness false while Redis is down");
    let noticed_at = killed_at + KILL_NOTICED_WITHIN;
    assert!(wait_until(OUTAGE_PHASE_WITHIN, enough(noticed_at, OUTAGE_SAMPLES_DURING)), "load during the outage");
    let restarted_at = Instant::now();
    redis.restart(&["--appendonly", "yes", "--appendfsync", "always"]);
    let ready_after =
        wait_for(Duration::from_secs(5), || (node.readiness() == Some(200)).then(|| restarted_at.elapsed()));
    // Full service again: paid requests served, and the admin API reading the wallet.
    let full_service = || {
        let paid = samples.lock().unwrap().iter().any(|s| s.live && s.status == 200 && s.sent_at > restarted_at);
        paid && node.admin_call("GET", "/admin/accounts/payer", "").status == 200
    };
    let served_again = wait_until(Duration::from_secs(5), full_service);
    stop.store(true, Ordering::Release);
    load.into_iter().for_each(|t| t.join().unwrap());
    let ready_after = ready_after.expect("ready again within 5 s of Redis returning");
    assert!(served_again, "paid requests and the admin API served within 5 s of Redis returning");

    let samples = samples.lock().unwrap();
    let slowest = samples.iter().map(|s| s.took).max().unwrap();
    let before: Vec<&Sample> = samples.iter().filter(|s| s.sent_at + s.took < killed_at).collect();
    let down: Vec<&Sample> =
        samples.iter().filter(|s| s.sent_at > killed_at && s.sent_at + s.took < restarted_at).collect();
    let first_live_ok_after = samples
        .iter()
        .filter(|s| s.live && s.status == 200 && s.sent_at > restarted_at)
        .map(|s| s.sent_at + s.took - restarted_at)
        .min()
        .expect("paid requests served again after Redis returned");
    eprintln!(
        "{} requests; slowest {slowest:?}; {} during the outage; ready {ready_after:?} and first paid 200 {first_live_ok_after:?} after the restart",
        samples.len(),
        down.len()
    );
    assert!(before.iter().all(|s| s.status == 200), "all served before the outage");
    assert!(down.iter().any(|s| s.live) && down.iter().any(|s| !s.live), "load ran during the outage");
    for sample in &down {
        // A worker learns of the kill when its connection's close arrives: until then it may
        // still admit from a lease, whose escrow is already out of the wallet (no money risk).
        let noticed = sample.sent_at > killed_at + KILL_NOTICED_WITHIN;
        if sample.live && (noticed || sample.status != 200) {
            assert_eq!((sample.status, sample.code.as_deref()), (503, Some("service_unavailable")));
        } else if !sample.live {
            assert_eq!(sample.status, 200, "test keys are served during the outage");
        }
    }
    // The request's own work on a loaded 2-core machine is the slack on top of the timeout.
    assert!(slowest < Duration::from_millis(COMMAND_TIMEOUT_MS + 200), "slowest request {slowest:?}");
    assert!(first_live_ok_after < Duration::from_secs(5), "{first_live_ok_after:?}");
    // Nothing was charged for the refused requests, every served one was (once its worker's
    // lease, if it had one, was paid and ended), and the balance is whole.
    let balance = wait_until_nothing_held(&node, "payer", Duration::from_secs(10));
    let paid = samples.iter().filter(|s| s.live && s.status == 200).count();
    let costs = ledger_costs(redis.port, "fk", "payer");
    assert_eq!(costs.len(), paid + 8);
    assert_eq!(balance, 5_000_000_000 - costs.iter().sum::<u64>());
}

// Goal (SPEC §13): while Redis is down every test key that exists is served by any node, even
// keys no worker of that node has seen: one created through another node before this node
// started (learned by its start-up sync) and one created while it ran (learned from the key
// channel). A revoked test key gets 401 revoked_api_key; paid keys and keys the directory does
// not know get 503, since only the store could say.
#[test]
fn every_test_key_is_served_by_every_node_during_an_outage() {
    let mut redis = RedisServer::start(&[]);
    let store = store_section(redis.addr(), "fk", 2);
    // Each worker's fallback share of the Unverified limits would allow one default request.
    let unlimited = "[tiers.unverified]\nrpm = 1000000\ntpm = 1000000000\n";
    let first = GatewayProcess::start("directory-a", &store, unlimited);
    first.create_account("dev", "0");
    first.create_account("payer", "1.00");
    let (_, early) = first.create_key("dev", "test");
    let second = GatewayProcess::start("directory-b", &store, unlimited);
    let (_, late) = first.create_key("dev", "test");
    let (revoked_id, revoked) = first.create_key("dev", "test");
    let (_, live) = first.create_key("payer", "live");
    assert_eq!(first.admin_call("DELETE", &format!("/admin/keys/{revoked_id}"), "").status, 200);
    // Every key reached the second node's directory (three test keys and the live one).
    let learned = wait_until(Duration::from_secs(5), || metric(second.admin, "fikra_key_directory_keys") == 4);
    assert!(learned, "{}", metrics(second.admin));

    redis.kill();
    assert!(wait_until(Duration::from_secs(2), || second.readiness() == Some(503)), "not ready without Redis");
    let ask = |key: &str| send_one(second.api, chat_request(key, &simple_chat("fikra-flash", "jaribu")).as_bytes());
    // Fresh connections land on either worker; neither has seen these keys.
    for _ in 0..4 {
        assert_eq!(ask(&early).status, 200);
        assert_eq!(ask(&late).status, 200);
        let refused = ask(&revoked);
        assert_eq!((refused.status, refused.error().1.as_str()), (401, "revoked_api_key"));
        let paid = ask(&live);
        assert_eq!((paid.status, paid.error().1.as_str()), (503, "service_unavailable"));
    }
    let unknown = ask("fk_test_0123456789abcdefghijABCDEFGHIJ01");
    assert_eq!((unknown.status, unknown.error().1.as_str()), (503, "service_unavailable"));
    // Eight test-key answers, four revoked refusals and four paid refusals recognised the key there.
    assert_eq!(metric(second.admin, "fikra_key_directory_hits_total"), 8 + 4 + 4);
}

// Goal (SPEC §13): authentication needs no store round trip: once the node's key directory is
// trusted, a key no worker has seen (created after start-up) is recognised without one
// command touching its record; only the two money calls (admit, settle) reach Redis.
#[test]
fn keys_are_recognised_without_a_store_round_trip() {
    let redis = RedisServer::start(&["--appendonly", "no"]);
    let node = GatewayProcess::start("directory-hot", &store_section(redis.addr(), "fk", 1), "");
    node.create_account("quiet", "1.00");
    let trusted = wait_until(Duration::from_secs(5), || metric(node.admin, "fikra_key_directory_trusted") == 1);
    assert!(trusted, "{}", metrics(node.admin));
    let (_, key) = node.create_key("quiet", "live");
    let request = chat_request(&key, &simple_chat("fikra-flash", "habari"));
    let before = command_table(redis.port);
    // Fresh connections, so both workers meet the key for the first time.
    for _ in 0..6 {
        assert_eq!(send_one(node.api, request.as_bytes()).status, 200);
    }
    let commands = command_delta(&before, &command_table(redis.port));
    assert_eq!(commands.get("fcall"), Some(&12), "{commands:?}");
    // Commands inside the functions count too: fk_hold and fk_charge each read the account's hash
    // with one HMGET, plus one on the key's first admission (library 12's key fields). A key
    // lookup would add one on each worker's first sight of the key.
    assert_eq!(commands.get("hmget"), Some(&(2 * 6 + 1)), "no key record was read: {commands:?}");
}

// Goal: with `appendfsync always`, a top-up the gateway acknowledged is still there after Redis
// is killed with SIGKILL and started again on its files; the payment reference still dedupes.
#[test]
fn acknowledged_topup_survives_kill_minus_nine() {
    let durable = ["--appendonly", "yes", "--appendfsync", "always"];
    let mut redis = RedisServer::start(&durable);
    let node = GatewayProcess::start("durable", &store_section(redis.addr(), "fk", 1), "");
    node.create_account("saver", "1.00");
    let topup = r#"{"amount":"1300","currency":"KES","reference":"MPESA-SFX9K2"}"#;
    let acknowledged = node.admin_json("POST", "/admin/accounts/saver/topups", topup, 200);
    assert_eq!(acknowledged["balance_usd"], "11.000000000");
    redis.restart(&durable);
    let mut last = None;
    let account = wait_for(Duration::from_secs(5), || {
        let response = node.admin_call("GET", "/admin/accounts/saver", "");
        let account = (response.status == 200).then(|| response.json());
        last = Some(response);
        account
    })
    .unwrap_or_else(|| panic!("the account is not readable 5 s after the restart: {}", last.unwrap().text()));
    assert_eq!(account["balance_usd"], "11.000000000");
    assert_eq!(account["tier"], "trusted");
    let again = node.admin_json("POST", "/admin/accounts/saver/topups", topup, 200);
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["balance_usd"], "11.000000000");
}

// Goal: a Redis that hangs (SIGSTOP: connections accepted, nothing answered) costs each request
// at most the store timeout: paid requests get 503, test keys are served on the node's share;
// SIGCONT brings full service back by itself.
#[test]
fn hung_redis_costs_at_most_the_store_timeout() {
    let redis = RedisServer::start(&["--appendonly", "no"]);
    let (node, live, test) = node_with_paid_and_test_keys("hung", &redis);
    let pid = redis.child.id() as libc::pid_t;
    // SAFETY: signals a child process this test owns.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let mut slowest = Duration::ZERO;
    for _ in 0..6 {
        let (paid, took) = timed_send(node.api, &live);
        slowest = slowest.max(took);
        assert_eq!((paid.status, paid.error().1.as_str()), (503, "service_unavailable"));
        let (tested, took) = timed_send(node.api, &test);
        slowest = slowest.max(took);
        assert_eq!(tested.status, 200, "{}", tested.text());
    }
    assert_eq!(node.readiness(), Some(503));
    eprintln!("slowest request against a hung Redis: {slowest:?} (store timeout {COMMAND_TIMEOUT_MS} ms)");
    assert!(slowest < Duration::from_millis(COMMAND_TIMEOUT_MS + 200), "{slowest:?}");
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let resumed_at = Instant::now();
    let served = wait_until(Duration::from_secs(5), || send_one(node.api, live.as_bytes()).status == 200);
    assert!(served, "paid requests served within 5 s");
    let ready =
        wait_until(Duration::from_secs(5).saturating_sub(resumed_at.elapsed()), || node.readiness() == Some(200));
    assert!(ready, "ready within 5 s");
    eprintln!("paid requests served and ready again {:?} after SIGCONT", resumed_at.elapsed());
}

/// Sets `stop` after `delay`: the length of a load phase. What the node does meanwhile (measuring
/// the account's rate, taking and renewing leases) runs on its own clock, which a test cannot
/// advance in a separate process, so the phase takes real time.
fn stop_after(stop: Arc<AtomicBool>, delay: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        stop.store(true, Ordering::Release);
    })
}

/// `clients` keep-alive connections sending `request` until `stop` (or `per_client` each);
/// the statuses of all answers.
fn hammer(
    apis: &[SocketAddr],
    request: &str,
    clients: usize,
    per_client: usize,
    stop: Option<Arc<AtomicBool>>,
) -> Vec<u16> {
    let threads: Vec<_> = (0..clients)
        .map(|client| {
            let (api, request, stop) = (apis[client % apis.len()], request.to_string(), stop.clone());
            std::thread::spawn(move || {
                let stream = connect(api);
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut statuses = Vec::new();
                while statuses.len() < per_client && !stop.as_ref().is_some_and(|s| s.load(Ordering::Acquire)) {
                    (&stream).write_all(request.as_bytes()).unwrap();
                    statuses.push(read_response(&mut reader).expect("a response").status);
                }
                statuses
            })
        })
        .collect();
    threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
}

/// Every charge in an account's whole ledger, read from Redis (the admin API pages by 1,000).
fn ledger_costs(redis_port: u16, prefix: &str, account: &str) -> Vec<u64> {
    let text = redis_cli(redis_port, &["XRANGE", &format!("{prefix}:{{{account}}}:ledger"), "-", "+"]);
    let lines: Vec<&str> = text.lines().collect();
    let mut costs = Vec::new();
    for pair in lines.windows(2) {
        match pair[0] {
            "cost" => costs.push(pair[1].parse().unwrap()),
            // A lease call's records: "request_id key_id model prompt completion cost outcome;...".
            "records" => costs.extend(pair[1].split(';').map(|r| r.split(' ').nth(5).unwrap().parse::<u64>().unwrap())),
            _ => {}
        }
    }
    costs
}

/// Waits, at most `limit`, until the account holds nothing (every lease ended and paid, or its
/// escrow expired and reaped: the node's own clock decides when); returns its balance.
/// A 503 on the way (the store's answer timed out: the admin API fails closed like the rest)
/// is polled past like a non-zero hold; the limit still bounds the whole wait.
fn wait_until_nothing_held(node: &GatewayProcess, account: &str, limit: Duration) -> u64 {
    let mut last = String::new();
    let balance = wait_for(limit, || {
        let response = node.admin_call("GET", &format!("/admin/accounts/{account}"), "");
        if response.status != 200 {
            assert_eq!(response.status, 503, "{}", response.text());
            last = response.text();
            return None;
        }
        let view = response.json();
        last = view["held_usd"].to_string();
        (view["held_usd"] == "0.000000000").then(|| usd_to_nanos(view["balance_usd"].as_str().unwrap()))
    });
    balance.unwrap_or_else(|| panic!("still held after {limit:?}: {last}"))
}

// Goal: a busy account runs on leases: well under 0.1 Redis function calls per admitted request,
// every request still paid for exactly (ledger = balance change, one record per request) once
// the idle leases end.
#[test]
fn busy_account_runs_on_leases() {
    let redis = RedisServer::start(&["--appendonly", "no"]);
    let extra = override_limits("bulk", 1_000_000, 1_000_000_000);
    let node = GatewayProcess::start("leases", &store_section(redis.addr(), "fk", 1), &extra);
    node.create_account("bulk", "100.00");
    let (_, key) = node.create_key("bulk", "live");
    let request = chat_request(&key, &simple_chat("fikra-flash", "habari ya mchana"));
    // Warm-up until the workers hold leases: a batch of 400 served with under 0.05 FCALL each.
    let warm = Arc::new(AtomicBool::new(false));
    let stopper = stop_after(warm.clone(), Duration::from_secs(1));
    let mut warm_up = hammer(&[node.api], &request, 4, usize::MAX, Some(warm));
    stopper.join().unwrap();
    for _ in 0..50 {
        let before = command_table(redis.port);
        warm_up.extend(hammer(&[node.api], &request, 4, 100, None));
        if command_delta(&before, &command_table(redis.port)).get("fcall").is_none_or(|c| *c < 20) {
            break;
        }
    }
    assert!(warm_up.iter().all(|s| *s == 200));
    const REQUESTS: usize = 4_000;
    let before = command_table(redis.port);
    let statuses = hammer(&[node.api], &request, 4, REQUESTS / 4, None);
    let calls = command_delta(&before, &command_table(redis.port));
    assert!(statuses.iter().all(|s| *s == 200));
    let fcalls = calls.get("fcall").copied().unwrap_or(0);
    let per_request = fcalls as f64 / REQUESTS as f64;
    let leased = metric(node.admin, "fikra_lease_admissions_total");
    eprintln!(
        "{REQUESTS} requests on leases: {fcalls} FCALL ({per_request:.4} per request), {leased} leased in all; {calls:?}"
    );
    assert!(per_request < 0.1, "{per_request}");
    let balance = wait_until_nothing_held(&node, "bulk", Duration::from_secs(10));
    let costs = ledger_costs(redis.port, "fk", "bulk");
    assert_eq!(costs.len(), REQUESTS + warm_up.len(), "one ledger record per request");
    assert_eq!(balance, 100_000_000_000 - costs.iter().sum::<u64>(), "ledger = balance change");

    // A node stopped with SIGTERM ends its leases on the way out: nothing stays held.
    let busy_again = Arc::new(AtomicBool::new(false));
    let stopper = stop_after(busy_again.clone(), Duration::from_secs(1));
    let more = hammer(&[node.api], &request, 4, usize::MAX, Some(busy_again));
    stopper.join().unwrap();
    let held_before = wallet(redis.port, "fk:{bulk}:acct").1;
    let mut node = node;
    // SAFETY: signals a child process this test owns.
    unsafe { libc::kill(node.child.id() as libc::pid_t, libc::SIGTERM) };
    assert!(node.child.wait().unwrap().success());
    let held_after = wallet(redis.port, "fk:{bulk}:acct").1;
    eprintln!("held before SIGTERM {held_before}, after exit {held_after}");
    assert_eq!(held_after, 0);
    let costs = ledger_costs(redis.port, "fk", "bulk");
    assert_eq!(costs.len(), REQUESTS + warm_up.len() + more.len());
    assert_eq!(wallet(redis.port, "fk:{bulk}:acct").0, 100_000_000_000 - costs.iter().sum::<u64>());
}

// Goal: leases never let the cluster admit more than the shared bucket gave out: two nodes
// hammering an account of 12,000 RPM until it runs dry admit at most 12,000 plus the refill
// over the test's duration (the lease bound, 200 per window here, only shifts tokens in time).
#[test]
fn leases_never_admit_beyond_the_bucket() {
    let extra = override_limits("burst", 12_000, 1_000_000_000);
    let prefix = unique_prefix("burst");
    let redis = redis_server::shared_server();
    let store = store_section(redis, &prefix, 2);
    let nodes: Vec<GatewayProcess> =
        (0..2).map(|n| GatewayProcess::start(&format!("burst-{n}"), &store, &extra)).collect();
    nodes[0].create_account("burst", "100.00");
    let (_, key) = nodes[0].create_key("burst", "live");
    let body = r#"{"model":"fikra-flash","max_tokens":8,"messages":[{"role":"user","content":"haraka"}]}"#;
    let request = chat_request(&key, body);
    let apis: Vec<SocketAddr> = nodes.iter().map(|n| n.api).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let stopper = stop_after(stop.clone(), Duration::from_secs(5));
    let statuses = hammer(&apis, &request, 8, usize::MAX, Some(stop));
    stopper.join().unwrap();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let counts = tally(statuses.iter().copied());
    let admitted = counts.get(&200).copied().unwrap_or(0) as u64;
    let bucket_bound = 12_000 + (elapsed_ms * 12_000).div_ceil(60_000);
    let leased: u64 = nodes.iter().map(|n| metric(n.admin, "fikra_lease_admissions_total")).sum();
    eprintln!(
        "admitted {admitted} ({leased} from leases) in {elapsed_ms} ms; the bucket allows {bucket_bound}: {counts:?}"
    );
    assert!(leased > 0, "the leases were used");
    assert!(admitted <= bucket_bound, "admitted {admitted} > {bucket_bound}");
    assert_eq!(counts.get(&200).copied().unwrap_or(0) + counts.get(&429).copied().unwrap_or(0), statuses.len());
    let balance = wait_until_nothing_held(&nodes[1], "burst", Duration::from_secs(10));
    let costs = ledger_costs(redis.port(), &prefix, "burst");
    assert_eq!(costs.len() as u64, admitted);
    assert_eq!(balance, 100_000_000_000 - costs.iter().sum::<u64>());
}

// Goal: a node killed (SIGKILL) while it holds leases never costs the customer money: the
// balance falls by exactly the ledger's charges (requests it served but had not paid for are
// the operator's loss), and its escrow is released by the surviving node's reaper.
#[test]
fn a_node_killed_with_leases_never_overcharges() {
    let redis = RedisServer::start(&["--appendonly", "no"]);
    let extra = override_limits("bulk", 1_000_000, 1_000_000_000);
    let store = store_section(redis.addr(), "fk", 2);
    let mut doomed = GatewayProcess::start("doomed", &store, &extra);
    let survivor = GatewayProcess::start("survivor", &store, &extra);
    survivor.create_account("bulk", "100.00");
    let (_, key) = survivor.create_key("bulk", "live");
    let request = chat_request(&key, &simple_chat("fikra-flash", "habari"));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (api, request, stop) = (doomed.api, request.clone(), stop.clone());
        std::thread::spawn(move || {
            // Four keep-alive clients sending until the node dies under them.
            let clients: Vec<_> = (0..4)
                .map(|_| {
                    let (request, stop) = (request.clone(), stop.clone());
                    std::thread::spawn(move || {
                        let Ok(stream) = std::net::TcpStream::connect(api) else { return };
                        let Ok(read_half) = stream.try_clone() else { return };
                        let mut reader = BufReader::new(read_half);
                        while !stop.load(Ordering::Acquire) {
                            if (&stream).write_all(request.as_bytes()).is_err() {
                                return;
                            }
                            if read_response(&mut reader).is_none() {
                                return;
                            }
                        }
                    })
                })
                .collect();
            clients.into_iter().for_each(|c| {
                let _ = c.join();
            });
        })
    };
    let leased = wait_until(Duration::from_secs(10), || metric(doomed.admin, "fikra_lease_admissions_total") >= 200);
    assert!(leased, "the doomed node never leased");
    let _ = doomed.child.kill();
    let _ = doomed.child.wait();
    stop.store(true, Ordering::Release);
    let _ = load.join();
    let held = usd_to_nanos(survivor.admin_json("GET", "/admin/accounts/bulk", "", 200)["held_usd"].as_str().unwrap());
    eprintln!("the killed node left {held} nano-USD of escrow");
    // The escrow expires 10 s after its last renewal; the survivor's reaper runs every 5 s.
    let killed_at = Instant::now();
    let balance = wait_until_nothing_held(&survivor, "bulk", Duration::from_secs(20));
    eprintln!("escrow released {:?} after the kill", killed_at.elapsed());
    let charged: u64 = ledger_costs(redis.port, "fk", "bulk").iter().sum();
    assert_eq!(balance, 100_000_000_000 - charged, "the customer paid exactly the ledger");
}
