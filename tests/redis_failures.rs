//! Failures that must leave nothing behind (SPEC §13), on real `redis-server` processes:
//!
//! - an admission answered 503 because Redis stalled still runs when Redis wakes; once Redis
//!   answers, the store undoes it (`fk_void`) whichever runs first, the void or the late
//!   admission: no hold, no RPM, no TPM of it remains (store calls driven directly, on a
//!   standalone server behind a proxy that holds back chosen connections, and on a Cluster;
//!   then end to end through a gateway process while Redis is stopped with SIGSTOP);
//! - a gateway node killed with SIGKILL while it streams: a surviving node's reaper releases its
//!   holds once its heartbeat is older than the dead-after bound, well within 30 s, and never
//!   touches the survivor's own holds; a node that was only cut off finds its holds released
//!   and its settlement charges nothing.

// Tests measure real time and lock on purpose: clippy.toml's clock and lock policy is for the
// gateway.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fikra_gateway::cli::block_on;
use fikra_gateway::money::{Nanos, NanosPerToken, TokenUsage};
use fikra_gateway::store::*;
use support::gateway::usd_to_nanos;
use support::gateway_process::GatewayProcess;
use support::http::*;
use support::redis_server::{
    RedisCluster, RedisServer, command_stat, redis_cli, redis_store, unique_prefix, wallet, wallet_hold,
};
use support::wait::{wait_for, wait_until};

const T0: u64 = 1_800_000_000_000;
const PRICE: NanosPerToken = NanosPerToken(500);
const CREDIT: u64 = 1_000_000_000;
/// The store's command timeout in the direct tests: short, so a held-back command times out.
const STORE_TIMEOUT: Duration = Duration::from_millis(200);
/// How long after Redis answers again the undo must be complete (SPEC §13: a few seconds).
const UNDONE_WITHIN: Duration = Duration::from_secs(3);

/// A TCP proxy in front of one Redis server that can freeze the connections open at a moment:
/// what their clients send after that is read but held back until `thaw`, while connections
/// opened later pass freely (a stall of one connection, which a new one gets around).
struct FreezingProxy {
    addr: SocketAddr,
    /// Connections numbered below this are frozen (0: none).
    frozen_below: Arc<AtomicU64>,
    next_id: Arc<AtomicU64>,
}

impl FreezingProxy {
    fn start(redis: SocketAddr) -> FreezingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen_below = Arc::new(AtomicU64::new(0));
        let next_id = Arc::new(AtomicU64::new(1));
        let (frozen, ids) = (frozen_below.clone(), next_id.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let id = ids.fetch_add(1, Ordering::AcqRel);
                let Ok(server) = TcpStream::connect(redis) else { continue };
                let (client_in, server_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let frozen = frozen.clone();
                std::thread::spawn(move || pump(client_in, server_out, || id < frozen.load(Ordering::Acquire)));
                std::thread::spawn(move || pump(server, client, || false));
            }
        });
        FreezingProxy { addr, frozen_below, next_id }
    }

    fn freeze_open_connections(&self) {
        self.frozen_below.store(self.next_id.load(Ordering::Acquire), Ordering::Release);
    }

    fn thaw(&self) {
        self.frozen_below.store(0, Ordering::Release);
    }
}

/// Copies `from` to `to`, holding each chunk while `held()`; closes `to`'s write side at the end.
fn pump(mut from: TcpStream, mut to: TcpStream, held: impl Fn() -> bool) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let read = from.read(&mut buffer).unwrap_or(0);
        while held() {
            std::thread::sleep(Duration::from_millis(2));
        }
        if read == 0 || to.write_all(&buffer[..read]).is_err() {
            let _ = to.shutdown(Shutdown::Write);
            return;
        }
    }
}

fn store_at(nodes: Vec<SocketAddr>, cluster: bool, prefix: &str) -> Store {
    redis_store(nodes, cluster, prefix, STORE_TIMEOUT, LimitPolicy::reference())
}

fn request<'a>(id: &'a str, account: &'a str) -> AdmitRequest<'a> {
    AdmitRequest {
        request_id: id,
        account_id: account,
        key_id: "key_1",
        key_kind: KeyKind::Live,
        model: "fikra-flash",
        input_tokens_upper: 100,
        requested_output_tokens: 400,
        client_set_output_cap: true,
        refuse_clamp: false,
        input_price: PRICE,
        output_price: PRICE,
        now_ms: T0,
        spend_cap: None,
    }
}

/// The failure counters of a Redis store: (voids sent, holds released, markers written,
/// dead nodes' holds released, settled after a node release).
fn counters(store: &Store) -> [u64; 5] {
    let m = store.failure_metrics().expect("a Redis store");
    [
        m.voids_sent.load(Ordering::Relaxed),
        m.void_holds_released.load(Ordering::Relaxed),
        m.void_markers_written.load(Ordering::Relaxed),
        m.dead_node_holds_released.load(Ordering::Relaxed),
        m.settled_after_node_release.load(Ordering::Relaxed),
    ]
}

/// Sends the client's queued voids until Redis has answered them all (its reconnect backoff
/// may refuse the first tries), within `UNDONE_WITHIN`; returns how long it took.
async fn void_until_done(store: StoreClient<'_>) -> Duration {
    let started = Instant::now();
    while store.pending_voids() > 0 {
        assert!(
            started.elapsed() < UNDONE_WITHIN,
            "{} voids still queued after {UNDONE_WITHIN:?}",
            store.pending_voids()
        );
        let _ = store.send_voids().await;
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// The hold entry of `id` in the account's holds hash ("" if none).
fn hold_entry(port: u16, prefix: &str, account: &str, id: &str) -> String {
    redis_cli(port, &["HGET", &format!("{prefix}:{{{account}}}:holds"), id]).trim().to_string()
}

/// A marker of kind `kind` (v voided, x released as a dead node's): it holds nothing.
fn is_marker(entry: &str, kind: &str) -> bool {
    let fields: Vec<&str> = entry.split(' ').collect();
    fields.len() == 8 && fields[0] == "0" && fields[1] == "0" && fields[2] == kind && fields[7] == "marker"
}

/// Which runs first after a lost admission answer: the late admission, or the void.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Order {
    LateAdmissionFirst,
    VoidFirst,
}

// Goal: an admission held back on its connection past the store timeout fails (503 for the
// caller) and is queued to be undone; whether its late execution comes before or after the
// void, afterwards the account holds nothing, its buckets are exactly as before it, the
// balance is whole, and the id carries a void marker (a late admission refused itself).
fn lost_admission_is_undone(order: Order) {
    let redis = RedisServer::start(&["--appendonly", "no"]);
    let proxy = FreezingProxy::start(redis.addr());
    let prefix = unique_prefix("void");
    let store = store_at(vec![proxy.addr], false, &prefix);
    let connections = StoreConnections::default();
    let client = store.client(&connections);
    let id = "req_AbCdEfGh0000000000000001";
    block_on(async {
        client.create_account(Some("payer"), Nanos(CREDIT), T0).await.unwrap();
        let before = client.peek_rates("payer", KeyKind::Live, T0).await.unwrap();
        let fcalls_before = command_stat(redis.port, "fcall").calls;
        proxy.freeze_open_connections();
        let started = Instant::now();
        assert_eq!(client.admit(&request(id, "payer")).await, Err(StoreError::Unavailable));
        let failed_after = started.elapsed();
        assert_eq!(client.pending_voids(), 1, "the lost admission is queued to be undone");
        assert_eq!(command_stat(redis.port, "fcall").calls, fcalls_before, "held back: not run yet");
        let took = match order {
            Order::LateAdmissionFirst => {
                proxy.thaw();
                // The late admission runs and takes its hold (16,000 + ... nano-USD).
                let held = wait_until(UNDONE_WITHIN, || {
                    hold_entry(redis.port, &prefix, "payer", id).starts_with("250000 500 l ")
                });
                assert!(held, "the late admission ran: {}", hold_entry(redis.port, &prefix, "payer", id));
                assert_eq!(wallet(redis.port, &format!("{prefix}:{{payer}}:acct")).1, 250_000);
                void_until_done(client).await
            }
            Order::VoidFirst => {
                let took = void_until_done(client).await;
                assert!(is_marker(&hold_entry(redis.port, &prefix, "payer", id), "v"), "a marker waits for it");
                proxy.thaw();
                // The late admission arrives and refuses itself (one more FCALL, nothing written).
                let ran = wait_until(UNDONE_WITHIN, || command_stat(redis.port, "fcall").calls >= fcalls_before + 2);
                assert!(ran, "the late admission reached Redis");
                took
            }
        };
        eprintln!("{order:?}: the admission failed after {failed_after:?}; undone {took:?} after Redis answered again");
        let account = client.account("payer").await.unwrap();
        assert_eq!((account.balance, account.held), (Nanos(CREDIT), Nanos::ZERO));
        assert_eq!(client.peek_rates("payer", KeyKind::Live, T0).await.unwrap(), before, "RPM and TPM as before");
        assert!(is_marker(&hold_entry(redis.port, &prefix, "payer", id), "v"));
        let (released, marked) = if order == Order::LateAdmissionFirst { (1, 0) } else { (0, 1) };
        assert_eq!(counters(&store), [1, released, marked, 0, 0]);
        // Undoing twice changes nothing; a settlement of the id finds nothing to charge.
        let settled = client
            .settle(&Settlement {
                request_id: id,
                account_id: "payer",
                tokens: TokenUsage::new(10, 10),
                cost: Nanos(10_000),
                outcome: Outcome::Completed,
                now_ms: T0,
            })
            .await;
        assert_eq!(settled, Ok(Settled::AlreadySettled));
        assert_eq!(client.account("payer").await.unwrap().balance, Nanos(CREDIT));
    });
}

#[test]
fn lost_admission_is_undone_when_the_late_admission_runs_first() {
    lost_admission_is_undone(Order::LateAdmissionFirst);
}

#[test]
fn lost_admission_is_undone_when_the_void_runs_first() {
    lost_admission_is_undone(Order::VoidFirst);
}

// Goal: on a Redis Cluster, an admission whose master stalls (SIGSTOP) past the store timeout
// is undone once it answers: nothing held, buckets as before, a void marker under the id.
#[test]
fn lost_admission_is_undone_on_a_cluster() {
    let cluster = RedisCluster::start();
    let prefix = unique_prefix("void-cluster");
    let store = store_at(cluster.seeds(), true, &prefix);
    let connections = StoreConnections::default();
    let client = store.client(&connections);
    let id = "req_ClUsTeR10000000000000002";
    let owner = &cluster.servers[cluster.owner_of(key_slot("payer"))];
    block_on(async {
        client.create_account(Some("payer"), Nanos(CREDIT), T0).await.unwrap();
        let before = client.peek_rates("payer", KeyKind::Live, T0).await.unwrap();
        // SAFETY: signals a child process this test owns.
        unsafe { libc::kill(owner.pid(), libc::SIGSTOP) };
        let result = client.admit(&request(id, "payer")).await;
        std::thread::sleep(Duration::from_millis(500));
        // SAFETY: as above.
        unsafe { libc::kill(owner.pid(), libc::SIGCONT) };
        assert_eq!(result, Err(StoreError::Unavailable));
        assert_eq!(client.pending_voids(), 1);
        let took = void_until_done(client).await;
        eprintln!("cluster: undone {took:?} after the master was resumed");
        let account = client.account("payer").await.unwrap();
        assert_eq!((account.balance, account.held), (Nanos(CREDIT), Nanos::ZERO));
        assert_eq!(client.peek_rates("payer", KeyKind::Live, T0).await.unwrap(), before);
        assert!(is_marker(&hold_entry(owner.port, &prefix, "payer", id), "v"));
        let [sent, released, marked, _, _] = counters(&store);
        assert_eq!((sent, released + marked), (1, 1));
    });
}

/// The Cluster slot of an account's keys (the hash tag is the account id).
fn key_slot(account: &str) -> u16 {
    fikra_gateway::redis::key_slot(account.as_bytes())
}

// Goal: the holds and lease escrows of a node presumed dead are released by the reaper (no
// charge, `node_lost` records) only up to its cutoff (its last beat plus the dead-after bound):
// a hold taken after it (the node came back) stays, and so do other nodes' holds and escrows.
// The node that was only cut off then settles: nothing is charged and the store counts it.
#[test]
fn dead_node_holds_are_released_up_to_the_cutoff() {
    let redis = RedisServer::start(&["--appendonly", "no"]);
    let prefix = unique_prefix("dead");
    let store = store_at(vec![redis.addr()], false, &prefix);
    let connections = StoreConnections::default();
    let client = store.client(&connections);
    let (lost, returned, other) =
        ("req_DeAdNoDe0000000000000001", "req_DeAdNoDe0000000000000002", "req_LiVeNoDe0000000000000003");
    let (dead_lease, live_lease) = ("DeAdNoDe-0:payer", "LiVeNoDe-1:payer");
    const ESCROW: u64 = 40_000;
    block_on(async {
        client.create_account(Some("payer"), Nanos(CREDIT), T0).await.unwrap();
        for (id, now_ms) in [(lost, T0), (returned, T0 + 11_500), (other, T0)] {
            let mut admit = request(id, "payer");
            admit.now_ms = now_ms;
            assert!(matches!(client.admit(&admit).await, Ok(Admission::Admitted(_))));
        }
        // Two lease escrows as fk_lease writes them, renewed at T0 + 5 s (they expire 10 s later).
        for lease in [dead_lease, live_lease] {
            let expires = (T0 + 15_000).to_string();
            let text = format!("{ESCROW} 0 l 0 0 {expires} - lease");
            redis_cli(redis.port, &["HSET", &format!("{prefix}:{{payer}}:holds"), lease, &text]);
            redis_cli(redis.port, &["ZADD", &format!("{prefix}:{{payer}}:holdexp"), &expires, lease]);
            wallet_hold(redis.port, &format!("{prefix}:{{payer}}:acct"), ESCROW);
        }
        assert_eq!(client.account("payer").await.unwrap().held, Nanos(3 * 250_000 + 2 * ESCROW));
        // DeAdNoDe last beat at T0 + 1 s; presumed dead 10 s later: cutoff T0 + 11 s.
        let dead = [DeadNode { tag: "DeAdNoDe".into(), last_beat_ms: T0 + 1_000 }];
        let reaped = client.reap_holds(T0 + 12_000, &dead, 10_000).await.unwrap();
        assert_eq!(reaped, Reaped { expired: 0, of_dead_nodes: 2 });
        let account = client.account("payer").await.unwrap();
        assert_eq!((account.balance, account.held), (Nanos(CREDIT), Nanos(2 * 250_000 + ESCROW)));
        assert!(is_marker(&hold_entry(redis.port, &prefix, "payer", lost), "x"));
        assert_eq!(hold_entry(redis.port, &prefix, "payer", dead_lease), "", "an escrow leaves no marker");
        assert!(hold_entry(redis.port, &prefix, "payer", returned).starts_with("250000 500 l "));
        assert!(hold_entry(redis.port, &prefix, "payer", other).starts_with("250000 500 l "));
        assert!(hold_entry(redis.port, &prefix, "payer", live_lease).starts_with("40000 0 l "));
        let mut usage: Vec<(String, &str, Nanos)> = client
            .usage("payer", 10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.request_id.to_string(), r.outcome, r.cost))
            .collect();
        usage.sort();
        assert_eq!(
            usage,
            [(dead_lease.to_string(), "node_lost", Nanos::ZERO), (lost.to_string(), "node_lost", Nanos::ZERO)]
        );
        // The cut-off node settles its request: no charge, counted.
        let settlement = Settlement {
            request_id: lost,
            account_id: "payer",
            tokens: TokenUsage::new(100, 400),
            cost: Nanos(250_000),
            outcome: Outcome::Completed,
            now_ms: T0 + 12_500,
        };
        assert_eq!(client.settle(&settlement).await, Ok(Settled::AlreadySettled));
        assert_eq!(client.account("payer").await.unwrap().balance, Nanos(CREDIT));
        assert_eq!(hold_entry(redis.port, &prefix, "payer", lost), "", "the marker is gone with the settlement");
        assert_eq!(counters(&store), [0, 0, 0, 2, 1]);
        // A second walk finds nothing more of the dead node.
        let reaped = client.reap_holds(T0 + 13_000, &dead, 10_000).await.unwrap();
        assert_eq!(reaped, Reaped::default());
    });
}

// ---------------------------------------------------------------------------------------------
// Gateway processes.

const GATEWAY_STORE_TIMEOUT_MS: u64 = 250;

fn store_section(redis: SocketAddr, beat_ms: u64, dead_after_ms: u64, reaper_ms: u64) -> String {
    format!(
        "redis_url = \"redis://{redis}\"\ncommand_timeout_ms = {GATEWAY_STORE_TIMEOUT_MS}\nnode_beat_interval_ms = {beat_ms}\nnode_dead_after_ms = {dead_after_ms}\nreaper_interval_ms = {reaper_ms}"
    )
}

fn rate_headers(response: &Response) -> (String, String) {
    let header = |name: &str| response.header(name).unwrap_or_else(|| panic!("{name} missing")).to_string();
    (header("x-ratelimit-remaining-requests"), header("x-ratelimit-remaining-tokens"))
}

fn balance_and_held(node: &GatewayProcess, account: &str) -> (u64, u64) {
    let view = node.admin_json("GET", &format!("/admin/accounts/{account}"), "", 200);
    (usd_to_nanos(view["balance_usd"].as_str().unwrap()), usd_to_nanos(view["held_usd"].as_str().unwrap()))
}

// Goal: Redis stopped (SIGSTOP) for 3 s while paid requests arrive: each is answered 503
// service_unavailable; after SIGCONT, within a few seconds, every admission that reached Redis
// is undone: nothing held, only void markers in the holds hash, the balance whole, and the next
// request sees exactly the rate headers of a request on full buckets (the first one's).
#[test]
fn requests_refused_while_redis_stalls_leave_nothing_behind() {
    let redis = RedisServer::start(&["--appendonly", "no"]);
    let node = GatewayProcess::start("stall", &store_section(redis.addr(), 2_000, 10_000, 5_000), "");
    node.create_account("payer", "1.00");
    let (_, key) = node.create_key("payer", "live");
    let chat = r#"{"model":"fikra-flash","max_tokens":16,"messages":[{"role":"user","content":"habari"}]}"#;
    let request = chat_request(&key, chat);
    let first = send_one(node.api, request.as_bytes());
    assert_eq!(first.status, 200, "{}", first.text());
    let full_buckets = rate_headers(&first);
    let (balance, held) = balance_and_held(&node, "payer");
    assert_eq!(held, 0);

    // Every worker learns the key (fresh connections spread over them) without admitting
    // anything: an unknown model is refused after authentication, before admission. So during
    // the stall the first requests get as far as the admission (the key cache lasts a second).
    let unknown_model = chat_request(&key, &simple_chat("no-such-model", "habari"));
    for _ in 0..8 {
        let refused = send_one(node.api, unknown_model.as_bytes());
        assert_eq!((refused.status, refused.error().1.as_str()), (400, "model_not_found"));
    }
    // SAFETY: signals a child process this test owns.
    unsafe { libc::kill(redis.pid(), libc::SIGSTOP) };
    let stopped_at = Instant::now();
    let mut refused = 0;
    while stopped_at.elapsed() < Duration::from_secs(3) {
        let response = send_one(node.api, request.as_bytes());
        assert_eq!((response.status, response.error().1.as_str()), (503, "service_unavailable"));
        refused += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    let queued = metric(node.admin, "fikra_store_voids_queued_total");
    // SAFETY: as above.
    unsafe { libc::kill(redis.pid(), libc::SIGCONT) };
    let resumed_at = Instant::now();
    let undone = wait_for(Duration::from_secs(5), || {
        let text = metrics(node.admin);
        let value = |name: &str| {
            text.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.trim().parse::<u64>().ok())).unwrap_or(0)
        };
        let (sent, released, marked) = (
            value("fikra_store_voids_sent_total"),
            value("fikra_store_void_holds_released_total"),
            value("fikra_store_void_markers_written_total"),
        );
        // A void sent while Redis still slept is sent again: the repeat finds its own marker and
        // counts as neither (the first one's release went unanswered).
        (sent == queued && released + marked <= queued).then(|| (resumed_at.elapsed(), released, marked))
    });
    let (took, released, marked) = undone.unwrap_or_else(|| {
        let text = metrics(node.admin);
        let store_lines: Vec<&str> = text.lines().filter(|l| l.starts_with("fikra_store")).collect();
        panic!("not every lost admission ({queued}) undone within 5 s of SIGCONT: {store_lines:#?} {text}")
    });
    eprintln!(
        "{refused} requests refused during the stall; {queued} admissions had been written to it: {released} ran late and were released, {marked} were refused by a marker (the rest undone by a void whose own answer was lost); all undone {took:?} after SIGCONT"
    );
    assert!(queued >= 1, "some admission was written to the stalled Redis");
    assert_eq!(metric(node.admin, "fikra_store_voids_dropped_total"), 0);
    // Nothing held, nothing charged, nothing but markers under the refused requests' ids.
    assert_eq!(balance_and_held(&node, "payer"), (balance, 0));
    let holds = redis_cli(redis.port, &["HVALS", "fk:{payer}:holds"]);
    let entries: Vec<&str> = holds.lines().collect();
    assert_eq!(entries.len() as u64, queued, "{holds}");
    assert!(entries.iter().all(|entry| is_marker(entry, "v")), "{holds}");
    // The buckets are full again, exactly: the refused requests took no RPM and no TPM (the
    // first request's own tokens have refilled in the seconds since).
    let after = send_one(node.api, request.as_bytes());
    assert_eq!(after.status, 200, "{}", after.text());
    assert_eq!(rate_headers(&after), full_buckets);
}

/// Opens a streamed chat and reads its response head; returns the reader and the request id.
fn open_stream(api: SocketAddr, key: &str) -> (BufReader<TcpStream>, String) {
    let body =
        r#"{"model":"fikra-flash","stream":true,"max_tokens":200,"messages":[{"role":"user","content":"polepole"}]}"#;
    let stream = connect(api);
    (&stream).write_all(chat_request(key, body).as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut id = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(value) = line.strip_prefix("x-request-id: ") {
            id = Some(value.to_string());
        }
        assert!(!line.starts_with("HTTP/1.1 ") || line.starts_with("HTTP/1.1 200"), "{line}");
    }
    (reader, id.expect("x-request-id"))
}

// Goal: a node killed (SIGKILL) with two streams open: the surviving node's reaper releases the
// dead node's two holds once its heartbeat is older than the dead-after bound (within
// dead-after + reaper interval + 1 s of slack here, so well within SPEC's 30 s), charges
// nothing, and leaves the survivor's own in-flight hold as it was; once the survivor's client
// leaves, nothing is held and the balance fell by exactly the ledger's charges.
#[test]
fn holds_of_a_killed_node_are_released_by_a_survivor() {
    const BEAT_MS: u64 = 200;
    const DEAD_AFTER_MS: u64 = 1_000;
    const REAPER_MS: u64 = 500;
    let redis = RedisServer::start(&["--appendonly", "no"]);
    let store = store_section(redis.addr(), BEAT_MS, DEAD_AFTER_MS, REAPER_MS);
    // Streams of 200 tokens at 4 a second: they outlast the test.
    let paced = "[sandbox]\ntokens_per_second = 4\noutput_tokens = 200\n";
    let mut doomed = GatewayProcess::start("doomed", &store, paced);
    let survivor = GatewayProcess::start("survivor", &store, paced);
    survivor.create_account("small", "0.01");
    let (_, key) = survivor.create_key("small", "live");
    let (_doomed_a, id_a) = open_stream(doomed.api, &key);
    let (_doomed_b, id_b) = open_stream(doomed.api, &key);
    let (survivor_stream, id_c) = open_stream(survivor.api, &key);
    let holds_key = "fk:{small}:holds";
    let entry = |id: &str| redis_cli(redis.port, &["HGET", holds_key, id]).trim().to_string();
    let survivor_hold = entry(&id_c);
    let hold_of = |entry: &str| entry.split(' ').next().unwrap().parse::<u64>().unwrap();
    let (balance, held) = balance_and_held(&survivor, "small");
    assert_eq!(held, hold_of(&entry(&id_a)) + hold_of(&entry(&id_b)) + hold_of(&survivor_hold));
    assert!(hold_of(&entry(&id_a)) > 0 && hold_of(&survivor_hold) > 0);
    eprintln!("held before the kill: {held} nano-USD (each stream's hold {})", hold_of(&survivor_hold));

    let _ = doomed.child.kill();
    let _ = doomed.child.wait();
    let killed_at = Instant::now();
    let bound = Duration::from_millis(DEAD_AFTER_MS + REAPER_MS + 1_000);
    let released = wait_for(Duration::from_secs(30), || {
        (is_marker(&entry(&id_a), "x") && is_marker(&entry(&id_b), "x")).then(|| killed_at.elapsed())
    })
    .expect("the dead node's holds released within 30 s");
    let (balance_after, held_after) = balance_and_held(&survivor, "small");
    eprintln!(
        "the killed node's holds released {released:?} after SIGKILL (dead after {DEAD_AFTER_MS} ms, reaper every {REAPER_MS} ms); held {held} -> {held_after}"
    );
    assert!(released <= bound, "released after {released:?}, bound {bound:?}");
    assert_eq!((balance_after, held_after), (balance, hold_of(&survivor_hold)), "nothing charged");
    assert_eq!(entry(&id_c), survivor_hold, "the survivor's own hold is untouched");
    assert_eq!(metric(survivor.admin, "fikra_store_dead_node_holds_released_total"), 2);
    let lost: Vec<serde_json::Value> =
        survivor.usage("small").into_iter().filter(|r| r["outcome"] == "node_lost").collect();
    assert_eq!(lost.len(), 2);
    assert!(lost.iter().all(|r| r["cost_usd"] == "0.000000000"));

    // The survivor's client leaves: settled within a second, nothing left held.
    drop(survivor_stream);
    let (balance_end, _) = wait_for(Duration::from_secs(5), || {
        let (balance, held) = balance_and_held(&survivor, "small");
        (held == 0).then_some((balance, held))
    })
    .expect("nothing held once the survivor's stream ended");
    let charged: u64 = survivor.usage_costs("small").iter().sum();
    assert_eq!(balance_end, balance - charged);
}

// Goal: a gateway of library 12 or later meeting a node that still runs library 11 (a Redis
// restored from an old snapshot after the gateway started) does not call it with arguments it
// would misread: the node has no fk_hold, the gateway loads its own library there on the spot,
// and the admission and settlement then run on this build's library.
#[test]
fn a_node_still_on_library_11_is_upgraded_on_the_first_call() {
    let redis = RedisServer::start(&["--appendonly", "no"]);
    let prefix = unique_prefix("upgrade");
    let store = store_at(vec![redis.addr()], false, &prefix);
    let connections = StoreConnections::default();
    let client = store.client(&connections);
    // What library 11 registered that matters here: fk_admit and fk_settle, and its version.
    let library_11 = "#!lua name=fikra\n\
        redis.register_function('fk_admit', function() return { 1 } end)\n\
        redis.register_function('fk_settle', function() return { 1 } end)\n\
        redis.register_function{ function_name = 'fk_version', callback = function() return 11 end, flags = { 'no-writes' } }";
    let id = "req_AbCdEfGh0000000000000001";
    block_on(async {
        client.create_account(Some("payer"), Nanos(CREDIT), T0).await.unwrap();
        assert_eq!(redis_cli(redis.port, &["FUNCTION", "LOAD", "REPLACE", library_11]).trim(), "fikra");
        let Ok(Admission::Admitted(admitted)) = client.admit(&request(id, "payer")).await else {
            panic!("admitted after the reload")
        };
        let ours = fikra_gateway::store::redis::library_version().to_string();
        assert_eq!(redis_cli(redis.port, &["FCALL", "fk_version", "0"]).trim(), ours);
        assert_eq!(admitted.hold, Nanos(250_000));
        let settlement = Settlement {
            request_id: id,
            account_id: "payer",
            tokens: TokenUsage::new(100, 100),
            cost: Nanos(100_000),
            outcome: Outcome::Completed,
            now_ms: T0,
        };
        let settled = client.settle(&settlement).await.unwrap();
        assert_eq!(
            settled,
            Settled::Charged { charged: Nanos(100_000), released: Nanos(150_000), operator_loss: Nanos(0) }
        );
        let account = client.account("payer").await.unwrap();
        assert_eq!((account.balance, account.held), (Nanos(CREDIT - 100_000), Nanos(0)));
    });
}
