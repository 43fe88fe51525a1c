//! Stripe card top-ups end to end over sockets (SPEC §11.2): webhooks signed by the test's own
//! signer reach the payments listener; a paid `checkout.session.completed` credits once per
//! payment, exactly to the nano-USD, flips the tier, and the refused account is admitted again
//! within a second on every node; bad, stale, missing and altered signatures change nothing;
//! a webhook while Redis is down is answered 503 (Stripe retries) and credited once when it
//! does; each credited payment is listed once in `GET /admin/accounts/{id}/payments`, and a
//! listing lost after the credit is written by the retry. On the embedded store and on Redis
//! (two nodes).

// Tests measure real time (the one-second resume) and sign with the real time on the system clock.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fikra_gateway::clock::Clock;
use fikra_gateway::payments::PaymentSecrets;
use fikra_gateway::runtime::Gateway;
use support::gateway::*;
use support::http::*;
use support::redis_server::{RedisServer, redis_cli, unique_prefix};
use support::stripe::*;
use support::wait::wait_for;

const PAYMENTS: &str =
    "\n[payments]\nlisten = \"127.0.0.1:0\"\n[payments.stripe]\nwebhook_secret_env = \"STRIPE_WEBHOOK_SECRET\"\n";
/// 1 USD in nano-USD.
const USD: u64 = 1_000_000_000;

fn unix_now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A gateway with the payments listener on `clock`, plus `extra` configuration.
fn start(extra: &str, clock: Clock, payments: bool) -> TestGateway {
    let text = if payments { format!("{extra}{PAYMENTS}") } else { extra.to_string() };
    let secrets = PaymentSecrets { stripe_webhook_secret: Some(WEBHOOK_SECRET.into()), mpesa: None };
    let gateway =
        Gateway::start_with_payment_secrets(config_with(&text), ADMIN_TOKEN.into(), clock, secrets).expect("starts");
    let (api, admin) = (gateway.client_addr, gateway.admin_addr);
    TestGateway { gateway: Some(gateway), api, admin }
}

fn payments_addr(gateway: &TestGateway) -> std::net::SocketAddr {
    gateway.gateway().payments_addr.expect("payments listener")
}

fn callbacks(gateway: &TestGateway, outcome: &str) -> u64 {
    metric(gateway.admin, &format!("fikra_payment_callbacks_total{{provider=\"stripe\",outcome=\"{outcome}\"}}"))
}

fn rejections(gateway: &TestGateway, reason: &str) -> u64 {
    metric(gateway.admin, &format!("fikra_payment_rejections_total{{provider=\"stripe\",reason=\"{reason}\"}}"))
}

/// Polls `gateway` with `key` until a chat is admitted; how long it took.
fn admitted_within(gateway: &TestGateway, key: &str, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let body = simple_chat("fikra-flash", "habari");
    wait_for(within, || (gateway.chat(key, &body).status == 200).then(|| started.elapsed()))
}

/// The whole story on one store: `paying` is the node with the payments listener, `other`
/// another node on the same store (the same one on the embedded store).
fn card_top_ups(paying: &TestGateway, other: &TestGateway, clock: &Clock) {
    paying.create_account("card", "0");
    let key = paying.new_key("card", "live");
    let refused = other.chat(&key, &simple_chat("fikra-flash", "habari"));
    assert_eq!(refused.status, 402, "{}", refused.text());
    assert_eq!(refused.error().1, "insufficient_quota");
    let payments = payments_addr(paying);
    let now_s = || clock.now_ms() / 1000;
    let first_ms = clock.now_ms();

    // A paid $5.00 session: credited 5 USD exactly, the tier flips, both nodes admit within 1 s.
    let paid = checkout_completed("evt_1", "cs_1", "card", 500, "usd", Some("pi_1"), "paid");
    let answer = post_webhook(payments, &paid, Some(&signature(WEBHOOK_SECRET, now_s(), &paid)));
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["credited"], true);
    assert_eq!(paying.balance_nanos("card"), 5 * USD);
    assert_eq!(paying.account("card")["tier"], "trusted");
    let resumed = admitted_within(other, &key, Duration::from_secs(1));
    assert!(resumed.is_some(), "not admitted within 1 s of the credit");
    println!("stripe: first admitted request {:?} after the webhook's answer", resumed.unwrap());
    let spent = 5 * USD - paying.balance_nanos("card");
    assert!(spent > 0, "the admitted request was charged");

    // The same event again (Stripe retries; re-signed later): 200, nothing more credited.
    clock.advance_ms(2_000);
    let again = post_webhook(payments, &paid, Some(&signature(WEBHOOK_SECRET, now_s(), &paid)));
    assert_eq!((again.status, again.json()["duplicate"].clone()), (200, serde_json::json!(true)));
    // Another event for the same PaymentIntent (a second session) is the same payment.
    let same_intent = checkout_completed("evt_2", "cs_2", "card", 500, "usd", Some("pi_1"), "paid");
    let twice = post_webhook(payments, &same_intent, Some(&signature(WEBHOOK_SECRET, now_s(), &same_intent)));
    assert_eq!((twice.status, twice.json()["duplicate"].clone()), (200, serde_json::json!(true)));
    assert_eq!(paying.balance_nanos("card"), 5 * USD - spent);
    // The same PaymentIntent in a session for another account: a duplicate (one credit per
    // reference), which credits and lists nothing there.
    paying.create_account("card2", "0");
    let elsewhere = checkout_completed("evt_2b", "cs_2b", "card2", 500, "usd", Some("pi_1"), "paid");
    let answer = post_webhook(payments, &elsewhere, Some(&signature(WEBHOOK_SECRET, now_s(), &elsewhere)));
    assert_eq!((answer.status, answer.json()["duplicate"].clone()), (200, serde_json::json!(true)));
    assert_eq!(paying.balance_nanos("card2"), 0);
    let nothing = paying.admin_json("GET", "/admin/accounts/card2/payments", "", 200);
    assert_eq!(nothing, serde_json::json!({"object": "list", "data": []}));

    // Spoofs: wrong secret, altered body, stale and future timestamps, no header, no v1.
    let spoof = checkout_completed("evt_3", "cs_3", "card", 100_000, "usd", Some("pi_3"), "paid");
    let good = signature(WEBHOOK_SECRET, now_s(), &spoof);
    let altered = spoof.replace("100000", "100001");
    let cases = [
        (signature("whsec_wrong", now_s(), &spoof), spoof.clone(), "bad_signature"),
        (good.clone(), altered, "bad_signature"),
        (signature(WEBHOOK_SECRET, now_s() - 301, &spoof), spoof.clone(), "stale_signature"),
        (signature(WEBHOOK_SECRET, now_s() + 301, &spoof), spoof.clone(), "stale_signature"),
        (format!("t={}", now_s()), spoof.clone(), "malformed_signature"),
    ];
    for (header, body, _) in &cases {
        let refused = post_webhook(payments, body, Some(header));
        assert_eq!(refused.status, 400, "{header}: {}", refused.text());
        assert_eq!(refused.error().2.as_deref(), Some("Stripe-Signature"));
    }
    let unsigned = post_webhook(payments, &spoof, None);
    assert_eq!(unsigned.status, 400);
    // A signature made 300 s ago still holds; 301 s is refused (the injected clock moves).
    let signed_now = signature(WEBHOOK_SECRET, now_s(), &spoof);
    clock.advance_ms(301_000);
    assert_eq!(post_webhook(payments, &spoof, Some(&signed_now)).status, 400);
    assert_eq!(paying.balance_nanos("card"), 5 * USD - spent, "no spoof credited anything");

    // Several v1 values (a secret being rolled): one match suffices. KES minor units convert at
    // kes_per_usd = 130: KES 1,300.00 is exactly 10 USD; KES 500.00 is 3.846153846 USD (down).
    let kes = checkout_completed("evt_4", "cs_4", "card", 130_000, "kes", Some("pi_4"), "paid");
    let t = now_s();
    let rolled = format!("t={t},v1={},v1={}", hmac_hex(b"whsec_old", format!("{t}.{kes}").as_bytes()), {
        let s = signature(WEBHOOK_SECRET, t, &kes);
        s.split_once("v1=").unwrap().1.to_string()
    });
    assert_eq!(post_webhook(payments, &kes, Some(&rolled)).status, 200);
    let odd = checkout_completed("evt_5", "cs_5", "card", 50_000, "kes", None, "paid");
    assert_eq!(post_webhook(payments, &odd, Some(&signature(WEBHOOK_SECRET, now_s(), &odd))).status, 200);
    let expected = 5 * USD - spent + 10 * USD + 3_846_153_846;
    assert_eq!(paying.balance_nanos("card"), expected);

    // Other event types and unpaid sessions: 200, ignored; a paid session for no account: 200
    // (retrying never helps), counted and logged.
    let other_type =
        r#"{"id":"evt_6","object":"event","type":"payment_intent.succeeded","data":{"object":{"id":"pi_6"}}}"#;
    assert_eq!(post_webhook(payments, other_type, Some(&signature(WEBHOOK_SECRET, now_s(), other_type))).status, 200);
    let unpaid = checkout_completed("evt_7", "cs_7", "card", 900, "usd", Some("pi_7"), "unpaid");
    let ignored = post_webhook(payments, &unpaid, Some(&signature(WEBHOOK_SECRET, now_s(), &unpaid)));
    assert_eq!((ignored.status, ignored.json()["credited"].clone()), (200, serde_json::json!(false)));
    let stranger = checkout_completed("evt_8", "cs_8", "nobody", 900, "usd", Some("pi_8"), "paid");
    assert_eq!(post_webhook(payments, &stranger, Some(&signature(WEBHOOK_SECRET, now_s(), &stranger))).status, 200);
    assert_eq!(paying.balance_nanos("card"), expected);

    assert_eq!(callbacks(paying, "credited"), 3);
    assert_eq!(callbacks(paying, "duplicate"), 3);
    assert_eq!(callbacks(paying, "ignored"), 2);
    assert_eq!(callbacks(paying, "rejected"), 8);
    assert_eq!(rejections(paying, "bad_signature"), 2);
    assert_eq!(rejections(paying, "stale_signature"), 3);
    assert_eq!(rejections(paying, "malformed_signature"), 1);
    assert_eq!(rejections(paying, "missing_signature"), 1);
    assert_eq!(rejections(paying, "unknown_account"), 1);
    promtool_accepts(&metrics(paying.admin));

    // Each credited payment is listed once (pi_1 came three times, in two sessions), newest
    // first, with its reference, minor units, currency and exact nano-USD; nothing else is.
    let listing = other.admin_json("GET", "/admin/accounts/card/payments", "", 200);
    let record = |reference: &str, session: &str, minor: u64, currency: &str, usd: &str, nanos: u64, at_ms: u64| {
        serde_json::json!({
            "id": format!("stripe:{reference}"), "provider": "stripe", "method": "checkout_session",
            "account_id": "card", "reference": reference, "session_id": session, "amount_minor": minor,
            "currency": currency, "amount_usd": usd, "amount_nanos": nanos, "status": "credited",
            "created_at_ms": at_ms, "updated_at_ms": at_ms
        })
    };
    let later_ms = first_ms + 303_000;
    assert_eq!(
        listing,
        serde_json::json!({"object": "list", "data": [
            record("pi_4", "cs_4", 130_000, "kes", "10.000000000", 10 * USD, later_ms),
            record("cs_5", "cs_5", 50_000, "kes", "3.846153846", 3_846_153_846, later_ms),
            record("pi_1", "cs_1", 500, "usd", "5.000000000", 5 * USD, first_ms),
        ]})
    );
}

/// The exposition, payment families with their series included, passes `promtool check metrics`.
fn promtool_accepts(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (tests/run-all.sh installs it)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

// Goal: the whole card story on the embedded store.
#[test]
fn card_top_ups_on_the_embedded_store() {
    let clock = Clock::manual(unix_now_s() * 1000);
    let gateway = start("", clock.clone(), true);
    card_top_ups(&gateway, &gateway, &clock);
}

// Goal: the whole card story on Redis with two nodes: the webhook reaches one, the account is
// admitted again on the other within a second.
#[test]
fn card_top_ups_on_redis_across_two_nodes() {
    let redis = RedisServer::start(&["--appendonly", "no"]);
    let store = format!(
        "[store]\nredis_url = \"{}\"\nkey_prefix = \"{}\"\ngateway_nodes = 2\n",
        redis.url(),
        unique_prefix("stripe")
    );
    let clock = Clock::manual(unix_now_s() * 1000);
    let paying = start(&store, clock.clone(), true);
    let other = start(&store, clock.clone(), false);
    card_top_ups(&paying, &other, &clock);
}

// Goal: a webhook while Redis is down loses nothing: it is answered 503 (so Stripe retries),
// nothing is credited, and the retry after Redis returns credits exactly once.
#[test]
fn webhook_during_a_redis_outage_is_credited_once_on_retry() {
    let mut redis = RedisServer::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let store =
        format!("[store]\nredis_url = \"{}\"\nkey_prefix = \"{}\"\n", redis.url(), unique_prefix("stripe-outage"));
    let gateway = start(&store, Clock::System, true);
    gateway.create_account("outage", "0");
    let payments = payments_addr(&gateway);
    let event = checkout_completed("evt_9", "cs_9", "outage", 2_500, "usd", Some("pi_9"), "paid");

    redis.kill();
    let during = post_webhook(payments, &event, Some(&signature(WEBHOOK_SECRET, unix_now_s(), &event)));
    assert_eq!(during.status, 503, "{}", during.text());
    assert_eq!(during.error().1, "service_unavailable");
    assert_eq!(callbacks(&gateway, "retry"), 1);

    redis.restart(&["--appendonly", "yes", "--appendfsync", "always"]);
    // Stripe retries until it gets a 2xx; the first retry after the store is back credits.
    let retried = wait_for(Duration::from_secs(10), || {
        let answer = post_webhook(payments, &event, Some(&signature(WEBHOOK_SECRET, unix_now_s(), &event)));
        (answer.status == 200).then_some(answer)
    })
    .expect("credited once Redis is back");
    assert_eq!(retried.json()["credited"], true);
    let again = post_webhook(payments, &event, Some(&signature(WEBHOOK_SECRET, unix_now_s(), &event)));
    assert_eq!(again.json()["duplicate"], true);
    assert_eq!(gateway.balance_nanos("outage"), 25 * USD);
    assert_eq!(gateway.account("outage")["tier"], "trusted");
    // Listed once, although it was delivered three times.
    let listing = gateway.admin_json("GET", "/admin/accounts/outage/payments", "", 200);
    let data = listing["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{listing}");
    assert_eq!(
        (&data[0]["id"], &data[0]["reference"], &data[0]["amount_minor"], &data[0]["currency"]),
        (
            &serde_json::json!("stripe:pi_9"),
            &serde_json::json!("pi_9"),
            &serde_json::json!(2_500),
            &serde_json::json!("usd")
        )
    );
    assert_eq!(
        (&data[0]["amount_nanos"], &data[0]["status"]),
        (&serde_json::json!(25 * USD), &serde_json::json!("credited"))
    );
}

// Goal: a credit whose listing fails (the store refuses the record write right after the
// top-up: the account's payments key holds a string, so HSETNX answers WRONGTYPE) is answered
// 503 with the money already credited once; Stripe's retry is a duplicate credit that writes
// the listing, because Redis says the reference belongs to this account.
#[test]
fn a_credit_whose_listing_failed_is_listed_by_the_retry() {
    let redis = RedisServer::start(&["--appendonly", "no"]);
    let prefix = unique_prefix("stripe-listing");
    let store = format!("[store]\nredis_url = \"{}\"\nkey_prefix = \"{prefix}\"\n", redis.url());
    let gateway = start(&store, Clock::System, true);
    gateway.create_account("lost", "0");
    let payments = payments_addr(&gateway);
    let records = format!("{prefix}:{{lost}}:payments");
    let port = redis.addr().port();
    assert_eq!(redis_cli(port, &["SET", &records, "not a hash"]).trim(), "OK");
    let event = checkout_completed("evt_10", "cs_10", "lost", 1_234, "usd", Some("pi_10"), "paid");

    let first = post_webhook(payments, &event, Some(&signature(WEBHOOK_SECRET, unix_now_s(), &event)));
    assert_eq!(first.status, 503, "{}", first.text());
    assert_eq!(gateway.balance_nanos("lost"), 12_340_000_000, "credited before the listing failed");
    assert_eq!((callbacks(&gateway, "credited"), callbacks(&gateway, "retry")), (1, 1));

    assert_eq!(redis_cli(port, &["DEL", &records]).trim(), "1");
    let retried = post_webhook(payments, &event, Some(&signature(WEBHOOK_SECRET, unix_now_s(), &event)));
    assert_eq!(retried.status, 200, "{}", retried.text());
    assert_eq!(retried.json()["duplicate"], true);
    assert_eq!(gateway.balance_nanos("lost"), 12_340_000_000, "credited once");
    let listing = gateway.admin_json("GET", "/admin/accounts/lost/payments", "", 200);
    let data = listing["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{listing}");
    assert_eq!(
        (&data[0]["id"], &data[0]["status"]),
        (&serde_json::json!("stripe:pi_10"), &serde_json::json!("credited"))
    );
    assert_eq!(data[0]["amount_nanos"], 12_340_000_000u64);
}
