//! Money under concurrency: the wallet never goes negative, never pays for more than it holds,
//! and its balance change equals the ledger's charges to the nano-dollar; for chat completions
//! and for `/v1/responses` (unary and streamed mixed, on the embedded store and on Redis).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use support::gateway::*;
use support::http::*;

const HIGH_LIMITS: &str = r#"
[[account_overrides]]
account = "rich"
rpm = 100000
tpm = 100000000

[[account_overrides]]
account = "calibrate"
rpm = 100000
tpm = 100000000
"#;

/// Reads an account's books from the admin API over and over while requests run, asserting at
/// every look that nothing is held beyond the balance and, when a ceiling is given, that the
/// balance never rises above it (nothing is credited back beyond what was paid in).
struct BooksWatcher {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl BooksWatcher {
    fn start(admin: std::net::SocketAddr, account: &'static str, balance_ceiling_nanos: Option<u64>) -> BooksWatcher {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let path = format!("/admin/accounts/{account}");
            let mut observations = 0;
            while !stopped.load(Ordering::Relaxed) {
                let books = admin_call(admin, "GET", &path, "").json();
                let balance = usd_to_nanos(books["balance_usd"].as_str().unwrap());
                let held = usd_to_nanos(books["held_usd"].as_str().unwrap());
                assert!(held <= balance, "held {held} > balance {balance}");
                if let Some(ceiling) = balance_ceiling_nanos {
                    assert!(balance <= ceiling, "balance {balance} above the credit {ceiling}");
                }
                observations += 1;
            }
            observations
        });
        BooksWatcher { stop, thread }
    }

    /// Stops watching; how many times the books were read (a failed assertion panics here).
    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// (cost in nano-USD, outcome) of every record of the account's ledger.
fn ledger_costs(gateway: &TestGateway, account: &str) -> Vec<(u64, String)> {
    gateway
        .usage(account)
        .iter()
        .map(|r| (usd_to_nanos(r["cost_usd"].as_str().unwrap()), r["outcome"].as_str().unwrap().to_string()))
        .collect()
}

// Goal: 200 concurrent requests against a wallet that pays for exactly k of them: at most k
// succeed, every other one gets 402, the balance never drops below zero nor below what is held,
// and balance before - balance after == sum of ledger charges, exactly.
#[test]
fn concurrent_requests_never_overdraw_the_wallet() {
    let gateway = TestGateway::start(HIGH_LIMITS);
    let body = serde_json::json!({
        "model": "fikra-flash",
        "max_tokens": 1,
        "messages": [{"role": "user", "content": "x".repeat(2000)}]
    })
    .to_string();

    // Learn the exact cost of one such request (the sandbox is deterministic).
    let calibration_key = gateway.account_with_key("calibrate", "1.00", "live");
    assert_eq!(gateway.chat(&calibration_key, &body).status, 200);
    let costs = ledger_costs(&gateway, "calibrate");
    assert_eq!(costs.len(), 1);
    let cost = costs[0].0;
    assert!(cost > 0);

    // A wallet that pays for k = 37 requests, and is one nano-dollar short of a 38th.
    let k: u64 = 37;
    let credit = k * cost + cost - 1;
    let credit_text = format!("{}.{:09}", credit / 1_000_000_000, credit % 1_000_000_000);
    let key = gateway.account_with_key("rich", &credit_text, "live");
    let before = gateway.balance_nanos("rich");
    assert_eq!(before, credit);

    let watcher = BooksWatcher::start(gateway.admin, "rich", None);

    let api = gateway.api;
    let threads: Vec<_> = (0..200)
        .map(|_| {
            let (key, body) = (key.clone(), body.clone());
            std::thread::spawn(move || send_one(api, chat_request(&key, &body).as_bytes()))
        })
        .collect();
    let responses: Vec<Response> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(watcher.finish() > 0);

    let succeeded = responses.iter().filter(|r| r.status == 200).count() as u64;
    let refused = responses.iter().filter(|r| r.status == 402).count() as u64;
    assert_eq!(succeeded + refused, 200, "only 200 and 402 expected");
    assert!(succeeded <= k, "{succeeded} succeeded, wallet pays for {k}");
    assert!(succeeded >= 1);
    for response in responses.iter().filter(|r| r.status == 402) {
        assert_eq!(response.error().1, "insufficient_quota");
    }

    let after = gateway.account("rich");
    assert_eq!(after["held_usd"], "0.000000000");
    let balance_after = usd_to_nanos(after["balance_usd"].as_str().unwrap());
    let ledger = ledger_costs(&gateway, "rich");
    assert_eq!(ledger.len() as u64, succeeded);
    let charged: u64 = ledger.iter().map(|(c, _)| c).sum();
    assert_eq!(before - balance_after, charged);
    assert_eq!(charged, succeeded * cost);
    assert!(ledger.iter().all(|(_, outcome)| outcome == "completed"));
}

// Goal: test keys are served but never touch the wallet.
#[test]
fn test_keys_never_touch_the_wallet() {
    let gateway = TestGateway::start("");
    let key = gateway.account_with_key("sandboxed", "0.50", "test");
    for _ in 0..3 {
        let response = gateway.chat(&key, &simple_chat("fikra-pro-120b", "hello"));
        assert_eq!(response.status, 200);
        assert_eq!(response.json()["model"], "fikra-pro-120b");
    }
    let account = gateway.account("sandboxed");
    assert_eq!(account["balance_usd"], "0.500000000");
    assert_eq!(account["held_usd"], "0.000000000");
}

/// A `[store]` section on the suite's own redis-server, keys under a prefix of `test`'s own.
fn redis_store(test: &str) -> String {
    let (redis, prefix) = (support::redis_server::shared_server(), support::redis_server::unique_prefix(test));
    format!("[store]\nredis_url = \"redis://{redis}\"\nkey_prefix = \"{prefix}\"\n")
}

/// Nano-USD as the admin API's decimal USD.
fn usd_text(nanos: u64) -> String {
    format!("{}.{:09}", nanos / 1_000_000_000, nanos % 1_000_000_000)
}

/// 200 concurrent `/v1/responses` requests, unary and streamed in turn, on the models of
/// `models` ("" = the sandbox's reference registry), against a wallet of `credit(cost)` for the
/// calibrated cost of one; the balance and what is held are watched all along. Returns how
/// many were served.
fn concurrent_responses(store: &str, models: &str, credit: impl Fn(u64) -> u64) -> u64 {
    use support::responses::responses_request;
    let gateway = TestGateway::start(&format!("{HIGH_LIMITS}{store}{models}"));
    let input = "y".repeat(2000);
    let unary = serde_json::json!({"model":"fikra-flash","max_output_tokens":1,"input":input}).to_string();
    let streamed =
        serde_json::json!({"model":"fikra-flash","max_output_tokens":1,"input":input,"stream":true}).to_string();

    // The exact cost of each kind (the sandbox is deterministic), learnt on another account.
    let calibration_key = gateway.account_with_key("calibrate", "1.00", "live");
    for body in [&unary, &streamed] {
        assert_eq!(send_one(gateway.api, responses_request(&calibration_key, body).as_bytes()).status, 200);
    }
    let calibrated = ledger_costs(&gateway, "calibrate");
    let (stream_cost, unary_cost) = (calibrated[0].0, calibrated[1].0);
    assert!(unary_cost > 0 && stream_cost > 0);

    let credit = credit(unary_cost);
    let key = gateway.account_with_key("rich", &usd_text(credit), "live");
    assert_eq!(gateway.balance_nanos("rich"), credit);

    let watcher = BooksWatcher::start(gateway.admin, "rich", Some(credit));
    let api = gateway.api;
    let threads: Vec<_> = (0..200)
        .map(|n| {
            let body = if n % 2 == 0 { unary.clone() } else { streamed.clone() };
            let key = key.clone();
            std::thread::spawn(move || (n % 2 == 1, send_one(api, responses_request(&key, &body).as_bytes())))
        })
        .collect();
    let responses: Vec<(bool, Response)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(watcher.finish() > 0);

    let ok = |streamed: bool| responses.iter().filter(|(s, r)| *s == streamed && r.status == 200).count() as u64;
    let (unary_ok, stream_ok) = (ok(false), ok(true));
    let refused = responses.iter().filter(|(_, r)| r.status == 402).count() as u64;
    assert_eq!(unary_ok + stream_ok + refused, 200, "only 200 and 402 expected");
    assert!(unary_ok + stream_ok >= 1);
    assert_eq!(unary_cost, stream_cost, "the stream flag changes no charge");
    assert!((unary_ok + stream_ok) * unary_cost <= credit, "{unary_ok} + {stream_ok} served");
    for (_, response) in responses.iter().filter(|(_, r)| r.status == 402) {
        assert_eq!(response.error().1, "insufficient_quota");
    }
    for (streamed, response) in responses.iter().filter(|(_, r)| r.status == 200) {
        let expected = if *streamed { "text/event-stream" } else { "application/json" };
        assert_eq!(response.header("content-type"), Some(expected));
    }

    // On Redis a busy account is served from worker leases: their escrow is held, and their
    // usage records reach the ledger, until the lease's next call (at most LEASE_IDLE_MS after
    // the last request, 2 s). The embedded store settles each request before its answer.
    let served = unary_ok + stream_ok;
    println!(
        "unary {unary_ok} x {unary_cost} nano-USD, streamed {stream_ok} x {stream_cost} nano-USD, credit {credit}"
    );
    let settled = support::wait::wait_for(std::time::Duration::from_secs(6), || {
        let after = gateway.account("rich");
        let done = after["held_usd"] == "0.000000000" && gateway.usage("rich").len() as u64 == served;
        done.then_some(after)
    });
    let after = settled.expect("the leases gave back their escrow and their records");
    assert_eq!(after["held_usd"], "0.000000000");
    let balance_after = usd_to_nanos(after["balance_usd"].as_str().unwrap());
    let ledger = ledger_costs(&gateway, "rich");
    assert_eq!(ledger.len() as u64, served);
    assert!(ledger.iter().all(|(_, outcome)| outcome == "completed"));
    let charged: u64 = ledger.iter().map(|(cost, _)| cost).sum();
    assert_eq!(credit - balance_after, charged);
    assert_eq!(charged, unary_ok * unary_cost + stream_ok * stream_cost);
    assert!(charged <= credit);
    served
}

// Goal: concurrent Responses requests (unary and streamed, translated to chat on the sandbox)
// never overdraw the wallet: never negative, never more held than the balance, nothing held at
// the end, and the balance change equals the ledger's charges, each the calibrated exact cost.
#[test]
fn concurrent_responses_never_overdraw_the_wallet() {
    // A wallet for 40 requests and a nano-dollar less than a 41st.
    assert!(concurrent_responses("", "", |cost| 41 * cost - 1) <= 40);
}

// Goal: the same on a real Redis store.
#[test]
fn concurrent_responses_never_overdraw_the_wallet_on_redis() {
    assert!(concurrent_responses(&redis_store("money-responses"), "", |cost| 41 * cost - 1) <= 40);
}

/// `fikra-flash` passed natively to an upstream (`responses = true`) whose every answer reports
/// 12 tokens in and 2 out: 7 000 nano-USD at 0.5 USD per million each way.
fn native_models() -> String {
    let usage = r#"{"input_tokens":12,"input_tokens_details":{"cached_tokens":0},"output_tokens":2,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":14}"#;
    let (unary, streamed) = support::responses::native_answers(support::scripted_upstream::SECRET_MODEL, usage);
    let base_url = support::scripted_upstream::fixed_answer_upstream(unary, streamed);
    support::scripted_upstream::upstream_model_config(&base_url, "responses = true", "")
}

/// A wallet for 600 native answers: more than the 200 requests cost, but a hold (the input bound
/// and one output token, about 1 000 000 nano-USD) only a few at a time can take.
fn native_credit(cost: u64) -> u64 {
    assert_eq!(cost, 7_000, "the upstream's usage, exactly");
    600 * cost
}

// Goal: the same for Responses passed natively to the upstream, charged the upstream's own
// usage (7 000 nano-USD each) while holding far more, embedded store.
#[test]
fn concurrent_native_responses_never_overdraw_the_wallet() {
    assert!(concurrent_responses("", &native_models(), native_credit) >= 1);
}

// Goal: the same on a real Redis store.
#[test]
fn concurrent_native_responses_never_overdraw_the_wallet_on_redis() {
    assert!(concurrent_responses(&redis_store("money-native"), &native_models(), native_credit) >= 1);
}
