//! M-Pesa top-ups end to end over sockets (SPEC §11.1), against the Daraja stand-in of
//! `support::daraja`: an account refused 402 pays by STK Push; the callback credits once,
//! exactly to the nano-USD (KES at kes_per_usd = 130), flips the tier, and the account is
//! admitted again on every node within a second; repeated, spoofed, unknown, wrong-amount,
//! cancelled and unconfirmed callbacks change nothing but what the SPEC says; Daraja down at
//! STK Push is a 502 that records nothing; a push Daraja accepted but Redis could not record is
//! a 503 naming its CheckoutRequestID, and its callback credits nothing; a callback while Redis
//! is stalled is answered non-2xx and credited once on the retry; records are bounded; C2B
//! validation and confirmation (only for the configured BusinessShortCode); the source-IP
//! allowlist. On Redis with two nodes, and the core story on the embedded store.

// Tests measure real time (the one-second resume) and stop a Redis with SIGSTOP.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::{Duration, Instant};

use fikra_gateway::backend::daraja::MpesaSecrets;
use fikra_gateway::clock::Clock;
use fikra_gateway::payments::PaymentSecrets;
use fikra_gateway::runtime::Gateway;
use serde_json::{Value, json};
use support::daraja::*;
use support::gateway::*;
use support::http::*;
use support::redis_server::{RedisServer, unique_prefix};
use support::wait::wait_for;

/// 500 KES at 130 KES per USD, rounded down to the nano-USD.
const KES_500_NANOS: u64 = 3_846_153_846;
const USD: u64 = 1_000_000_000;
const PHONE: &str = "254712345678";

fn mpesa_section(daraja: &DarajaStandIn, extra: &str) -> String {
    format!(
        "\n[payments]\nlisten = \"127.0.0.1:0\"\n[payments.mpesa]\nbase_url = \"{}\"\nconsumer_key_env = \"MPESA_CONSUMER_KEY\"\nconsumer_secret_env = \"MPESA_CONSUMER_SECRET\"\nshortcode = \"{SHORTCODE}\"\npasskey_env = \"MPESA_PASSKEY\"\ncallback_base_url = \"https://pay.example.co.ke\"\ncallback_token_env = \"MPESA_CALLBACK_TOKEN\"\n{extra}",
        daraja.base_url()
    )
}

fn start(extra: &str, clock: Clock) -> TestGateway {
    let secrets = PaymentSecrets {
        stripe_webhook_secret: None,
        mpesa: Some(MpesaSecrets {
            consumer_key: CONSUMER_KEY.into(),
            consumer_secret: CONSUMER_SECRET.into(),
            passkey: PASSKEY.into(),
            callback_token: CALLBACK_TOKEN.into(),
        }),
    };
    let gateway =
        Gateway::start_with_payment_secrets(config_with(extra), ADMIN_TOKEN.into(), clock, secrets).expect("starts");
    let (api, admin) = (gateway.client_addr, gateway.admin_addr);
    TestGateway { gateway: Some(gateway), api, admin }
}

/// The `[store]` section of a test on `redis`, under its own key prefix.
fn redis_store(redis: &RedisServer, prefix: &str) -> String {
    format!("[store]\nredis_url = \"{}\"\nkey_prefix = \"{prefix}\"\n", redis.url())
}

/// A Daraja stand-in, a Redis of its own and a gateway on both (key prefix from `test`),
/// with `account` created.
fn gateway_on_redis(test: &str, account: &str) -> (DarajaStandIn, RedisServer, TestGateway) {
    let daraja = DarajaStandIn::start();
    let redis = RedisServer::start(&["--appendonly", "no"]);
    let store = redis_store(&redis, &unique_prefix(test));
    let gateway = start(&format!("{store}{}", mpesa_section(&daraja, "")), Clock::System);
    gateway.create_account(account, "0");
    (daraja, redis, gateway)
}

fn payments_addr(gateway: &TestGateway) -> std::net::SocketAddr {
    gateway.gateway().payments_addr.expect("payments listener")
}

fn callbacks(gateway: &TestGateway, outcome: &str) -> u64 {
    metric(gateway.admin, &format!("fikra_payment_callbacks_total{{provider=\"mpesa\",outcome=\"{outcome}\"}}"))
}

fn rejections(gateway: &TestGateway, reason: &str) -> u64 {
    metric(gateway.admin, &format!("fikra_payment_rejections_total{{provider=\"mpesa\",reason=\"{reason}\"}}"))
}

fn stk_push(gateway: &TestGateway, account: &str, phone: &str, amount_kes: &str) -> Response {
    gateway.admin_call(
        "POST",
        &format!("/admin/accounts/{account}/mpesa/stk-push"),
        &json!({"phone": phone, "amount_kes": amount_kes}).to_string(),
    )
}

fn pending_checkout(gateway: &TestGateway, account: &str, amount_kes: &str) -> String {
    let answer = stk_push(gateway, account, PHONE, amount_kes);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["status"], "pending");
    answer.json()["checkout_request_id"].as_str().unwrap().to_string()
}

fn stk_path(token: &str) -> String {
    format!("/payments/mpesa/stk/{token}")
}

fn payments_list(gateway: &TestGateway, account: &str) -> Vec<Value> {
    let listing = gateway.admin_json("GET", &format!("/admin/accounts/{account}/payments"), "", 200);
    listing["data"].as_array().unwrap().clone()
}

/// (id, status, amount_kes, amount_usd, receipt) of every listed payment, sorted by id.
fn listed(gateway: &TestGateway, account: &str) -> Vec<(String, String, String, String, Option<String>)> {
    let mut rows: Vec<_> = payments_list(gateway, account)
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_string(),
                p["status"].as_str().unwrap().to_string(),
                p["amount_kes"].as_str().unwrap().to_string(),
                p["amount_usd"].as_str().unwrap().to_string(),
                p["receipt"].as_str().map(str::to_string),
            )
        })
        .collect();
    rows.sort();
    rows
}

fn accepted(answer: &Response) {
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json(), json!({"ResultCode": 0, "ResultDesc": "Accepted"}));
}

fn admitted_within(gateway: &TestGateway, key: &str, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let body = simple_chat("fikra-flash", "habari");
    wait_for(within, || (gateway.chat(key, &body).status == 200).then(|| started.elapsed()))
}

/// The core story: refused, STK Push, callback credits once, resumed on `nodes`.
/// Returns the checkout id and the balance after the resumed requests.
fn pay_by_stk_push(nodes: &[&TestGateway], daraja: &DarajaStandIn, account: &str, label: &str) -> (String, u64) {
    let paying = nodes[0];
    paying.create_account(account, "0");
    let key = paying.new_key(account, "live");
    for node in nodes {
        let refused = node.chat(&key, &simple_chat("fikra-flash", "habari"));
        assert_eq!(refused.status, 402, "{}", refused.text());
    }
    let started = Instant::now();
    let checkout = pending_checkout(paying, account, "500");
    let admin_call = started.elapsed();
    {
        let state = daraja.state.lock().unwrap();
        let push = state.pushes.last().unwrap();
        assert_eq!(push["Amount"], 500);
        assert_eq!(push["PartyA"], PHONE);
        assert_eq!(push["PhoneNumber"], PHONE);
        assert_eq!(push["PartyB"], SHORTCODE);
        assert_eq!(push["AccountReference"], account);
        assert_eq!(push["CallBackURL"], format!("https://pay.example.co.ke/payments/mpesa/stk/{CALLBACK_TOKEN}"));
    }
    assert_eq!(
        listed(paying, account),
        [(format!("stk:{checkout}"), "pending".into(), "500".into(), "3.846153846".into(), None)]
    );
    let body = stk_callback("29115-34620561-1", &checkout, 0, 500, "NLJ7RT61SV");
    let started = Instant::now();
    accepted(&post(payments_addr(paying), &stk_path(CALLBACK_TOKEN), &body));
    let callback = started.elapsed();
    let started = Instant::now();
    assert_eq!(paying.balance_nanos(account), KES_500_NANOS);
    let balance = started.elapsed();
    let started = Instant::now();
    assert_eq!(paying.account(account)["tier"], "trusted");
    let tier = started.elapsed();
    let mut firsts = Vec::new();
    for node in nodes {
        let first = admitted_within(node, &key, Duration::from_secs(1)).expect("admitted within 1 s of the credit");
        firsts.push(first);
    }
    println!(
        "mpesa STK Push run ({label}): admin call {admin_call:?}, callback answered {callback:?}, balance read {balance:?}, tier read {tier:?}, first admitted request per node {firsts:?} (balance {} USD)",
        KES_500_NANOS as f64 / USD as f64
    );
    let after = paying.balance_nanos(account);
    assert!(after < KES_500_NANOS, "the admitted requests were charged");
    assert_eq!(
        listed(paying, account),
        [(format!("stk:{checkout}"), "credited".into(), "500".into(), "3.846153846".into(), Some("NLJ7RT61SV".into()))]
    );
    (checkout, after)
}

/// Everything after the core story, on `gateway`.
fn the_rest(gateway: &TestGateway, daraja: &DarajaStandIn, account: &str, checkout: &str, balance: u64) {
    let payments = payments_addr(gateway);
    let credited = (
        format!("stk:{checkout}"),
        "credited".to_string(),
        "500".to_string(),
        "3.846153846".to_string(),
        Some("NLJ7RT61SV".to_string()),
    );

    // The same callback twice: accepted, nothing more.
    let body = stk_callback("29115-34620561-1", checkout, 0, 500, "NLJ7RT61SV");
    accepted(&post(payments, &stk_path(CALLBACK_TOKEN), &body));
    assert_eq!(gateway.balance_nanos(account), balance);
    assert_eq!(callbacks(gateway, "duplicate"), 1);

    // A wrong token: 404, nothing changed.
    let spoof = stk_callback("1", checkout, 0, 500, "SPOOF00001");
    assert_eq!(post(payments, &stk_path("guess"), &spoof).status, 404);
    assert_eq!(rejections(gateway, "wrong_token"), 1);

    // An unknown checkout: accepted (Daraja stops), not credited.
    accepted(&post(payments, &stk_path(CALLBACK_TOKEN), &stk_callback("1", "ws_CO_unknown", 0, 500, "UNKNOWN001")));
    assert_eq!(rejections(gateway, "unknown_checkout"), 1);

    // A wrong amount: accepted, not credited, still pending.
    let short = pending_checkout(gateway, account, "100");
    accepted(&post(payments, &stk_path(CALLBACK_TOKEN), &stk_callback("2", &short, 0, 99, "SHORT00001")));
    assert_eq!(rejections(gateway, "amount_mismatch"), 1);

    // Cancelled by the customer (ResultCode 1032): recorded failed.
    let cancelled = pending_checkout(gateway, account, "200");
    accepted(&post(payments, &stk_path(CALLBACK_TOKEN), &stk_callback("3", &cancelled, 1032, 0, "")));
    assert_eq!(callbacks(gateway, "failed"), 1);
    // A success callback after the failure: not pending any more, refused.
    accepted(&post(payments, &stk_path(CALLBACK_TOKEN), &stk_callback("3", &cancelled, 0, 200, "LATE000001")));
    assert_eq!(rejections(gateway, "unknown_checkout"), 2);

    // STK Query says it was not paid: not credited, still pending.
    let unconfirmed = pending_checkout(gateway, account, "300");
    daraja.set_query_result(&unconfirmed, "1032");
    accepted(&post(payments, &stk_path(CALLBACK_TOKEN), &stk_callback("4", &unconfirmed, 0, 300, "NOTPAID001")));
    assert_eq!(rejections(gateway, "not_confirmed"), 1);
    assert_eq!(gateway.balance_nanos(account), balance);

    // Daraja refuses (its error shape) or is down: 502 with the reason, nothing recorded.
    let refused = stk_push(gateway, account, REFUSED_PHONE, "50");
    assert_eq!(refused.status, 502, "{}", refused.text());
    assert!(refused.message().contains("Bad Request - Invalid PhoneNumber"), "{}", refused.text());
    daraja.down.store(true, std::sync::atomic::Ordering::Release);
    let down = stk_push(gateway, account, PHONE, "50");
    daraja.down.store(false, std::sync::atomic::Ordering::Release);
    assert_eq!(down.status, 502, "{}", down.text());
    assert!(down.message().contains("Daraja is unreachable"), "{}", down.text());
    // Refused before Daraja: bad phone, bad amounts, unknown account.
    assert_eq!(stk_push(gateway, account, "0712345678", "50").status, 400);
    for amount in ["0", "12.5", "-3", "250001"] {
        assert_eq!(stk_push(gateway, account, PHONE, amount).status, 400, "{amount}");
    }
    assert_eq!(stk_push(gateway, "nobody", PHONE, "50").status, 404);

    // C2B: validation accepts a known account and rejects an unknown one; confirmation
    // credits 1,300 KES (exactly 10 USD) once per TransID.
    let validation = "/payments/mpesa/c2b/validation/".to_string() + CALLBACK_TOKEN;
    let confirmation = "/payments/mpesa/c2b/confirmation/".to_string() + CALLBACK_TOKEN;
    let known = post(payments, &validation, &c2b_payload("RKTQDM7W6S", "1300.00", account));
    assert_eq!(known.json(), json!({"ResultCode": "0", "ResultDesc": "Accepted"}));
    let unknown = post(payments, &validation, &c2b_payload("RKTQDM7W6T", "1300.00", "nobody"));
    assert_eq!(unknown.json(), json!({"ResultCode": "C2B00012", "ResultDesc": "Rejected"}));
    accepted(&post(payments, &confirmation, &c2b_payload("RKTQDM7W6S", "1300.00", account)));
    assert_eq!(gateway.balance_nanos(account), balance + 10 * USD);
    accepted(&post(payments, &confirmation, &c2b_payload("RKTQDM7W6S", "1300.00", account)));
    assert_eq!(gateway.balance_nanos(account), balance + 10 * USD);
    // A C2B TransID that is the STK receipt credited above, for another account: one credit
    // per receipt, so nothing is credited or listed there.
    let other = format!("{account}_2");
    gateway.create_account(&other, "0");
    accepted(&post(payments, &confirmation, &c2b_payload("NLJ7RT61SV", "500", &other)));
    assert_eq!(gateway.balance_nanos(&other), 0);
    assert_eq!(payments_list(gateway, &other), Vec::<Value>::new());
    assert_eq!(post(payments, &confirmation.replace(CALLBACK_TOKEN, "guess"), "{}").status, 404);
    // A confirmation for no account (validation off at Safaricom): accepted (the money has
    // moved; retrying cannot help), counted and logged, nothing credited.
    accepted(&post(payments, &confirmation, &c2b_payload("RKTQDM7W6U", "1300.00", "nobody")));
    assert_eq!(rejections(gateway, "unknown_account"), 2);
    assert_eq!(gateway.balance_nanos(account), balance + 10 * USD);
    // A payment to another paybill (its BusinessShortCode is not ours), or naming none: the
    // validation rejects it; the confirmation is accepted (Daraja stops), counted
    // `wrong_shortcode`, and credits and lists nothing.
    let elsewhere = c2b_payload_to("600000", "RKTQDM7W6V", "1300.00", account);
    let unnamed = c2b_payload("RKTQDM7W6W", "1300.00", account).replace(&format!("\"{SHORTCODE}\""), "null");
    for payload in [&elsewhere, &unnamed] {
        let validated = post(payments, &validation, payload);
        assert_eq!(validated.json(), json!({"ResultCode": "C2B00012", "ResultDesc": "Rejected"}));
        accepted(&post(payments, &confirmation, payload));
    }
    assert_eq!(rejections(gateway, "wrong_shortcode"), 4);
    assert_eq!(rejections(gateway, "unknown_account"), 2);
    assert_eq!(gateway.balance_nanos(account), balance + 10 * USD);

    let mut expected = vec![
        (
            "c2b:RKTQDM7W6S".to_string(),
            "credited".to_string(),
            "1300.00".to_string(),
            "10.000000000".to_string(),
            Some("RKTQDM7W6S".to_string()),
        ),
        credited,
        (format!("stk:{short}"), "pending".into(), "100".into(), "0.769230769".into(), None),
        (format!("stk:{cancelled}"), "failed".into(), "200".into(), "1.538461538".into(), None),
        (format!("stk:{unconfirmed}"), "pending".into(), "300".into(), "2.307692307".into(), None),
    ];
    expected.sort();
    assert_eq!(listed(gateway, account), expected);
    assert_eq!(callbacks(gateway, "credited"), 2);
    assert_eq!(callbacks(gateway, "duplicate"), 3);
    // One OAuth token served every call (cached until it expires).
    assert_eq!(daraja.state.lock().unwrap().tokens_issued, 1);
}

// Goal: the whole M-Pesa story on Redis with two gateway nodes: the callback reaches one,
// both admit the account again within a second.
#[test]
fn stk_push_and_c2b_on_redis_across_two_nodes() {
    let daraja = DarajaStandIn::start();
    let redis = RedisServer::start(&["--appendonly", "no"]);
    let store = format!(
        "[store]\nredis_url = \"{}\"\nkey_prefix = \"{}\"\ngateway_nodes = 2\n",
        redis.url(),
        unique_prefix("mpesa")
    );
    let paying = start(&format!("{store}{}", mpesa_section(&daraja, "")), Clock::System);
    let other = start(&store, Clock::System);
    let (checkout, balance) = pay_by_stk_push(&[&paying, &other], &daraja, "mp_redis", "redis, 2 nodes");
    the_rest(&paying, &daraja, "mp_redis", &checkout, balance);
}

// Goal: the same story on the embedded store (one node).
#[test]
fn stk_push_and_c2b_on_the_embedded_store() {
    let daraja = DarajaStandIn::start();
    let gateway = start(&mpesa_section(&daraja, ""), Clock::System);
    let (checkout, balance) = pay_by_stk_push(&[&gateway], &daraja, "mp_embedded", "embedded");
    the_rest(&gateway, &daraja, "mp_embedded", &checkout, balance);
}

// Goal: a callback while Redis is stalled (SIGSTOP) is answered non-2xx and credits nothing;
// Daraja's retry after SIGCONT credits exactly once.
#[test]
fn callback_while_redis_is_stalled_is_credited_once_on_retry() {
    let (_daraja, redis, gateway) = gateway_on_redis("mpesa-stall", "stall");
    let checkout = pending_checkout(&gateway, "stall", "500");
    let body = stk_callback("29115-34620561-1", &checkout, 0, 500, "STALL00001");
    let payments = payments_addr(&gateway);

    unsafe { libc::kill(redis.pid(), libc::SIGSTOP) };
    let during = post(payments, &stk_path(CALLBACK_TOKEN), &body);
    unsafe { libc::kill(redis.pid(), libc::SIGCONT) };
    assert_eq!(during.status, 503, "{}", during.text());
    assert_eq!(callbacks(&gateway, "retry"), 1);
    assert_eq!(gateway.balance_nanos("stall"), 0);

    let retried = wait_for(Duration::from_secs(10), || {
        let answer = post(payments, &stk_path(CALLBACK_TOKEN), &body);
        (answer.status == 200).then_some(answer)
    })
    .expect("accepted once Redis answers again");
    accepted(&retried);
    accepted(&post(payments, &stk_path(CALLBACK_TOKEN), &body));
    assert_eq!(gateway.balance_nanos("stall"), KES_500_NANOS);
    assert_eq!(callbacks(&gateway, "credited"), 1);
    assert_eq!(
        listed(&gateway, "stall"),
        [(format!("stk:{checkout}"), "credited".into(), "500".into(), "3.846153846".into(), Some("STALL00001".into()))]
    );
}

// Goal: with allowed_source_ips, a callback from any other address is refused (404) and
// changes nothing.
#[test]
fn callbacks_from_outside_the_allowlist_are_refused() {
    let daraja = DarajaStandIn::start();
    let gateway = start(&mpesa_section(&daraja, "allowed_source_ips = [\"203.0.113.10\"]\n"), Clock::System);
    gateway.create_account("allow", "0");
    let checkout = pending_checkout(&gateway, "allow", "500");
    let body = stk_callback("1", &checkout, 0, 500, "ALLOW00001");
    let refused = post(payments_addr(&gateway), &stk_path(CALLBACK_TOKEN), &body);
    assert_eq!(refused.status, 404, "{}", refused.text());
    assert_eq!(rejections(&gateway, "source_ip"), 1);
    assert_eq!(gateway.balance_nanos("allow"), 0);
    assert_eq!(
        listed(&gateway, "allow"),
        [(format!("stk:{checkout}"), "pending".into(), "500".into(), "3.846153846".into(), None)]
    );
}

// Goal: the STK Push Timestamp is Kenya time (UTC+3) and signs the Password; the OAuth token
// is cached until shortly before `expires_in` (3599 s) and then fetched again.
#[test]
fn timestamp_is_kenya_time_and_the_token_is_cached_until_it_expires() {
    let daraja = DarajaStandIn::start();
    // 2026-12-31 22:30:05 UTC is 2027-01-01 01:30:05 in Nairobi.
    let clock = Clock::manual(1_798_756_205_000);
    let gateway = start(&mpesa_section(&daraja, ""), clock.clone());
    gateway.create_account("clock", "0");
    pending_checkout(&gateway, "clock", "10");
    assert_eq!(daraja.state.lock().unwrap().pushes[0]["Timestamp"], "20270101013005");
    clock.advance_ms(3_000_000); // 50 minutes: the token still serves
    pending_checkout(&gateway, "clock", "10");
    assert_eq!(daraja.state.lock().unwrap().tokens_issued, 1);
    clock.advance_ms(540_000); // 59 minutes: within the margin of its expiry, a new one
    pending_checkout(&gateway, "clock", "10");
    let state = daraja.state.lock().unwrap();
    assert_eq!(state.tokens_issued, 2);
    assert_eq!(state.pushes[2]["Timestamp"], "20270101022905");
}

// Goal: on a Redis Cluster the pending record (the account's slot) and the checkout index (its
// own slot) are found again by the callback, which credits once.
#[test]
fn stk_push_on_a_redis_cluster() {
    let daraja = DarajaStandIn::start();
    let cluster = support::redis_server::RedisCluster::start();
    let seeds: Vec<String> = cluster.seeds().iter().map(|seed| format!("\"{seed}\"")).collect();
    let store = format!(
        "[store]\nredis_cluster_nodes = [{}]\nkey_prefix = \"{}\"\n",
        seeds.join(", "),
        unique_prefix("mpesa-cluster")
    );
    let gateway = start(&format!("{store}{}", mpesa_section(&daraja, "")), Clock::System);
    let (checkout, balance) = pay_by_stk_push(&[&gateway], &daraja, "mp_cluster", "redis cluster");
    accepted(&post(
        payments_addr(&gateway),
        &stk_path(CALLBACK_TOKEN),
        &stk_callback("1", &checkout, 0, 500, "NLJ7RT61SV"),
    ));
    assert_eq!(gateway.balance_nanos("mp_cluster"), balance);
    assert_eq!(callbacks(&gateway, "credited"), 1);
    assert_eq!(callbacks(&gateway, "duplicate"), 1);
}

/// A fresh directory for one test's certificates.
fn temp_directory(name: &str) -> std::path::PathBuf {
    let directory = std::env::temp_dir().join(format!("fikra-daraja-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    directory
}

/// STK Push, STK Query and OAuth over real TLS to the stand-in, whose CA the gateway trusts
/// through `[payments.mpesa] ca_file`; the callback credits 500 KES exactly. Without `ca_file`
/// the same push is a 502 that reaches nothing and records nothing.
fn stk_push_over_tls(store: &str, account: &str, label: &str) {
    let directory = temp_directory(account);
    let (daraja, ca) = DarajaStandIn::start_tls(&directory);
    assert!(daraja.base_url().starts_with("https://localhost:"));
    let untrusted = start(&mpesa_section(&daraja, ""), Clock::System);
    untrusted.create_account(account, "0");
    let refused = stk_push(&untrusted, account, PHONE, "500");
    assert_eq!(refused.status, 502, "{}", refused.text());
    assert!(refused.message().contains("Daraja is unreachable"), "{}", refused.text());
    assert_eq!(payments_list(&untrusted, account), Vec::<Value>::new());
    assert_eq!(daraja.state.lock().unwrap().tokens_issued, 0, "no request got through the handshake");
    drop(untrusted);

    let trusted = format!("ca_file = \"{}\"\n", ca.display());
    let gateway = start(&format!("{store}{}", mpesa_section(&daraja, &trusted)), Clock::System);
    let (checkout, _) = pay_by_stk_push(&[&gateway], &daraja, account, label);
    let state = daraja.state.lock().unwrap();
    assert_eq!((state.tokens_issued, state.pushes.len(), state.queries.len()), (1, 1, 1));
    assert_eq!(state.queries[0]["CheckoutRequestID"], checkout.as_str());
    assert_eq!(callbacks(&gateway, "credited"), 1);
    std::fs::remove_dir_all(&directory).unwrap();
}

// Goal: Daraja over real TLS (generated CA, `ca_file`) on the embedded store.
#[test]
fn stk_push_over_tls_on_the_embedded_store() {
    stk_push_over_tls("", "tls_embedded", "embedded, TLS to Daraja");
}

// Goal: Daraja over real TLS (generated CA, `ca_file`) on Redis.
#[test]
fn stk_push_over_tls_on_redis() {
    let redis = RedisServer::start(&["--appendonly", "no"]);
    let store = redis_store(&redis, &unique_prefix("mpesa-tls"));
    stk_push_over_tls(&store, "tls_redis", "redis, TLS to Daraja");
}

/// 1 KES at 130 KES per USD, rounded down to the nano-USD.
const KES_1_NANOS: u64 = 7_692_307;

/// The ids `GET /admin/accounts/{id}/payments` lists, in its order (newest first).
fn listed_ids(gateway: &TestGateway, account: &str) -> Vec<String> {
    payments_list(gateway, account).iter().map(|p| p["id"].as_str().unwrap().to_string()).collect()
}

/// An account keeps exactly its newest 200 records: the 200th keeps the first; the 201st drops
/// exactly the oldest (a pending STK Push, whose callback then credits nothing). Returns the
/// gateway and the dropped checkout.
fn records_are_bounded(store: &str) -> (TestGateway, String) {
    let daraja = DarajaStandIn::start();
    let clock = Clock::manual(1_798_756_205_000);
    let gateway = start(&format!("{store}{}", mpesa_section(&daraja, "")), clock.clone());
    gateway.create_account("bound", "0");
    let checkout = pending_checkout(&gateway, "bound", "500");
    let confirmation = "/payments/mpesa/c2b/confirmation/".to_string() + CALLBACK_TOKEN;
    let payments = payments_addr(&gateway);
    let trans_id = |n: u32| format!("BND{n:07}");
    for n in 1..=199 {
        clock.advance_ms(1);
        accepted(&post(payments, &confirmation, &c2b_payload(&trans_id(n), "1", "bound")));
    }
    let mut expected: Vec<String> = (1..=199).rev().map(|n| format!("c2b:{}", trans_id(n))).collect();
    expected.push(format!("stk:{checkout}"));
    assert_eq!(listed_ids(&gateway, "bound"), expected, "200 records: all kept");
    clock.advance_ms(1);
    accepted(&post(payments, &confirmation, &c2b_payload(&trans_id(200), "1", "bound")));
    let expected: Vec<String> = (1..=200).rev().map(|n| format!("c2b:{}", trans_id(n))).collect();
    assert_eq!(listed_ids(&gateway, "bound"), expected, "201 records: the oldest dropped");
    assert_eq!(gateway.balance_nanos("bound"), 200 * KES_1_NANOS);

    // The dropped pending push is an unknown checkout now: accepted, counted, not credited.
    accepted(&post(
        payments,
        &stk_path(CALLBACK_TOKEN),
        &stk_callback("29115-34620561-1", &checkout, 0, 500, "BOUND00001"),
    ));
    assert_eq!(rejections(&gateway, "unknown_checkout"), 1);
    assert_eq!(callbacks(&gateway, "credited"), 200);
    assert_eq!(gateway.balance_nanos("bound"), 200 * KES_1_NANOS);
    assert_eq!(listed_ids(&gateway, "bound").len(), 200);
    (gateway, checkout)
}

// Goal: the embedded store keeps exactly the newest 200 records of an account.
#[test]
fn payment_records_are_bounded_on_the_embedded_store() {
    records_are_bounded("");
}

// Goal: Redis keeps exactly the newest 200 records of an account (the hash itself holds 200,
// not only the listing), and the checkout index expires after CHECKOUT_INDEX_TTL_S (7 days).
#[test]
fn payment_records_are_bounded_on_redis_and_the_checkout_index_expires() {
    let redis = RedisServer::start(&["--appendonly", "no"]);
    let prefix = unique_prefix("mpesa-bound");
    let store = redis_store(&redis, &prefix);
    let (_gateway, checkout) = records_are_bounded(&store);
    let port = redis.addr().port();
    let hash = format!("{prefix}:{{bound}}:payments");
    assert_eq!(support::redis_server::redis_cli(port, &["HLEN", &hash]).trim(), "200");
    let index = format!("{prefix}:mpesa:checkout:{{{checkout}}}");
    let ttl_s: u64 = support::redis_server::redis_cli(port, &["TTL", &index]).trim().parse().unwrap();
    assert!((604_700..=604_800).contains(&ttl_s), "TTL {ttl_s} s");
    assert_eq!(fikra_gateway::store::payments::CHECKOUT_INDEX_TTL_S, 604_800);
}

// Goal: Daraja accepted the STK Push, then Redis stopped answering before the pending record
// was written (the stand-in stops it as it accepts the push): the admin caller gets a 503 that
// says the push was sent but not recorded and names the CheckoutRequestID; the later callback
// for that checkout is accepted, counted `unknown_checkout` and credits nothing.
#[test]
fn a_push_sent_but_not_recorded_is_a_clear_503_and_its_callback_credits_nothing() {
    let (daraja, redis, gateway) = gateway_on_redis("mpesa-unrecorded", "unrecorded");
    let pid = redis.pid();
    daraja.on_next_push(move || unsafe {
        libc::kill(pid, libc::SIGSTOP);
    });
    let answer = stk_push(&gateway, "unrecorded", PHONE, "500");
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let checkout = "ws_CO_191220191020363925001";
    assert_eq!(daraja.state.lock().unwrap().pushes.len(), 1, "Daraja got the push");
    assert_eq!(answer.status, 503, "{}", answer.text());
    let message = format!(
        "The STK Push was sent (Daraja accepted it, CheckoutRequestID {checkout}) but the store did not record it: its callback will not credit the account. Do not send it again blindly; if the customer pays, credit the receipt by hand (POST /admin/accounts/unrecorded/topups)."
    );
    assert_eq!(
        answer.json(),
        json!({"error": {"message": message, "type": "api_error", "param": null, "code": "service_unavailable", "checkout_request_id": checkout}})
    );

    // Daraja's callback, retried until the store answers again: accepted, never credited.
    let body = stk_callback("29115-34620561-1", checkout, 0, 500, "UNREC00001");
    let payments = payments_addr(&gateway);
    let answered = wait_for(Duration::from_secs(10), || {
        let answer = post(payments, &stk_path(CALLBACK_TOKEN), &body);
        (answer.status == 200).then_some(answer)
    })
    .expect("answered once Redis answers again");
    accepted(&answered);
    // The admin thread's own connection comes back too (its reconnect may lag the listener's).
    wait_for(Duration::from_secs(10), || {
        (gateway.admin_call("GET", "/admin/accounts/unrecorded", "").status == 200).then_some(())
    })
    .expect("the admin listener reaches Redis again");
    assert_eq!(rejections(&gateway, "unknown_checkout"), 1);
    assert_eq!(callbacks(&gateway, "credited"), 0);
    assert_eq!(gateway.balance_nanos("unrecorded"), 0);
    assert_eq!(payments_list(&gateway, "unrecorded"), Vec::<Value>::new());
    assert_eq!(daraja.state.lock().unwrap().queries.len(), 0, "nothing to confirm");
}
