//! Per-key spend caps end to end over sockets (SPEC §10): the admin API sets, changes and
//! clears a key's cap; a capped key is clamped and then refused with 402
//! `key_spend_limit_reached` while the account's other keys go on; `GET /v1/account` shows
//! the cap and what was spent; and under 200 concurrent requests across three gateway nodes
//! sharing one real `redis-server`, with the account's other key busy on leases, the capped
//! key never spends a nano-USD beyond its cap.

// Tests measure real time on purpose: clippy.toml's clock policy is for the gateway.
#![allow(clippy::disallowed_methods)]

mod support;

use std::io::{BufReader, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use fikra_gateway::clock::Clock;
use support::gateway::{TestGateway, config_with, usd_to_nanos};
use support::gateway_process::GatewayProcess;
use support::http::*;
use support::redis_server::{self, redis_cli, unique_prefix};
use support::wait::{wait_for, wait_until};

/// Input is free and output costs 1,000 nano-USD per token, 16 at most: a full sandbox answer
/// costs exactly its hold, 16,000 nano-USD, and a clamped one 1,000 per token granted.
const METERED_MODEL: &str = r#"
[[models]]
id = "metered"
upstream = "sandbox"
input_usd_per_million = "0"
output_usd_per_million = "1"
max_output_tokens = 16
"#;

/// 2027-01-15T08:00:00Z: the manual clock's start (the day's cap resets at the next midnight).
const T0: u64 = 1_800_000_000_000;

fn create_capped_key(gateway: &TestGateway, account: &str, cap: &str, period: &str) -> (String, String) {
    let body = format!(r#"{{"kind":"live","spend_cap_usd":"{cap}","spend_cap_period":"{period}"}}"#);
    let created = gateway.admin_json("POST", &format!("/admin/accounts/{account}/keys"), &body, 201);
    assert_eq!(created["spend_cap_usd"], usd(usd_to_nanos(cap)));
    assert_eq!(created["spend_cap_period"], period);
    (created["key_id"].as_str().unwrap().to_string(), created["key"].as_str().unwrap().to_string())
}

fn usd(nanos: u64) -> String {
    fikra_gateway::money::Nanos(nanos).to_usd_string()
}

fn own_account(api: SocketAddr, key: &str) -> serde_json::Value {
    let request = format!("GET /v1/account HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {key}\r\n\r\n");
    let response = send_one(api, request.as_bytes());
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

fn metered(max_tokens: Option<u64>) -> String {
    match max_tokens {
        Some(n) => format!(r#"{{"model":"metered","max_tokens":{n},"messages":[{{"role":"user","content":"lipa"}}]}}"#),
        None => simple_chat("metered", "lipa"),
    }
}

// Goal: admin create with a cap of 10 answers and a half; 10 full answers, then one clamped to
// the 8 tokens the cap still allows (x-fikra-max-tokens-clamped: 8), then 402
// key_spend_limit_reached with the exact message and headers; the account's other key is
// unaffected; /v1/account shows cap, period and spent; PATCH raises it, null clears it.
#[test]
fn a_capped_key_is_clamped_then_refused_and_the_admin_can_lift_it() {
    let clock = Clock::manual(T0);
    let gateway = TestGateway::start_with_clock(config_with(METERED_MODEL), clock.clone());
    gateway.create_account("shop", "1.00");
    let (key_id, capped) = create_capped_key(&gateway, "shop", "0.000168", "day");
    let other = gateway.new_key("shop", "live");
    for _ in 0..10 {
        let answer = gateway.chat(&capped, &metered(None));
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.header("x-fikra-cost-usd"), Some("0.000016000"));
    }
    let clamped = gateway.chat(&capped, &metered(Some(16)));
    assert_eq!(clamped.status, 200, "{}", clamped.text());
    assert_eq!(clamped.header("x-fikra-max-tokens-clamped"), Some("8"));
    assert_eq!(clamped.json()["usage"]["completion_tokens"], 8);
    let refused = gateway.chat(&capped, &metered(None));
    assert_eq!(refused.status, 402, "{}", refused.text());
    assert_eq!(refused.error(), ("billing_error".into(), "key_spend_limit_reached".into(), None));
    assert_eq!(refused.header("x-should-retry"), Some("false"));
    assert_eq!(
        refused.message(),
        "This API key has reached its spend cap of 0.000168000 USD per day (UTC): 0.000168000 USD spent and \
         0.000000000 USD held by requests in flight, and this request needs at least 0.000001000 USD. The cap \
         resets at 2027-01-16T00:00:00Z. Ask the account owner to raise or lift it."
    );
    // The account's other key is served in full.
    let answer = gateway.chat(&other, &metered(None));
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("x-fikra-max-tokens-clamped"), None);
    let view = own_account(gateway.api, &capped);
    assert_eq!(view["key"]["spend_cap_usd"], "0.000168000");
    assert_eq!(view["key"]["spend_cap_period"], "day");
    assert_eq!(view["key"]["spent_usd"], "0.000168000");
    // The uncapped key shows its lifetime spend: the one answer of 16,000 nano-USD.
    let view = own_account(gateway.api, &other);
    assert_eq!(
        (&view["key"]["spend_cap_usd"], &view["key"]["spent_usd"], &view["key"]["held_usd"]),
        (&serde_json::Value::Null, &serde_json::json!("0.000016000"), &serde_json::json!("0.000000000"))
    );
    assert_eq!(gateway.balance_nanos("shop"), 1_000_000_000 - 168_000 - 16_000);

    // Midnight on the gateway's clock: a new day, a new allowance.
    clock.advance_ms(16 * 3_600_000);
    assert_eq!(gateway.chat(&capped, &metered(None)).status, 200);
    assert_eq!(own_account(gateway.api, &capped)["key"]["spent_usd"], "0.000016000");

    // A lifetime cap counts everything the key spent, capped or not: 184,000 so far, so a cap of
    // 200,000 leaves room for exactly one more answer, then the refusal says it never resets.
    let patched = gateway.admin_json(
        "PATCH",
        &format!("/admin/keys/{key_id}"),
        r#"{"spend_cap_usd":"0.0002","spend_cap_period":"lifetime"}"#,
        200,
    );
    assert_eq!(
        (patched["spend_cap_usd"].as_str(), patched["spend_cap_period"].as_str()),
        (Some("0.000200000"), Some("lifetime"))
    );
    assert_eq!(gateway.chat(&capped, &metered(None)).status, 200);
    let refused = gateway.chat(&capped, &metered(None));
    assert_eq!(refused.status, 402, "{}", refused.text());
    assert!(
        refused
            .message()
            .ends_with("0.000001000 USD. A lifetime cap never resets. Ask the account owner to raise or lift it."),
        "{}",
        refused.message()
    );
    // Cleared: served again; the view shows no cap and the lifetime spend (one more answer).
    let cleared = gateway.admin_json("PATCH", &format!("/admin/keys/{key_id}"), r#"{"spend_cap_usd":null}"#, 200);
    assert_eq!(cleared["spend_cap_usd"], serde_json::Value::Null);
    assert!(wait_until(Duration::from_secs(1), || gateway.chat(&capped, &metered(None)).status == 200));
    let view = own_account(gateway.api, &capped);
    assert_eq!(view["key"]["spend_cap_period"], serde_json::Value::Null);
    assert_eq!(view["key"]["spent_usd"], "0.000216000");
}

// Goal: bad cap values are refused with a 400 naming the field, and nothing is created.
#[test]
fn bad_caps_are_refused_with_a_clear_400() {
    let gateway = TestGateway::start(METERED_MODEL);
    gateway.create_account("picky", "1.00");
    let (key_id, _) = gateway.create_key("picky", "live");
    let cases = [
        (r#"{"kind":"live","spend_cap_usd":"five","spend_cap_period":"day"}"#, "spend_cap_usd"),
        (r#"{"kind":"live","spend_cap_usd":"-1","spend_cap_period":"day"}"#, "spend_cap_usd"),
        (r#"{"kind":"live","spend_cap_usd":"0.0000000001","spend_cap_period":"day"}"#, "spend_cap_usd"),
        (r#"{"kind":"live","spend_cap_usd":5,"spend_cap_period":"day"}"#, "spend_cap_usd"),
        (r#"{"kind":"live","spend_cap_usd":"99999999999","spend_cap_period":"day"}"#, "spend_cap_usd"),
        (r#"{"kind":"live","spend_cap_usd":"5.00","spend_cap_period":"week"}"#, "spend_cap_period"),
        (r#"{"kind":"live","spend_cap_usd":"5.00"}"#, "spend_cap_period"),
        (r#"{"kind":"live","spend_cap_period":"day"}"#, "spend_cap_usd"),
    ];
    for (body, param) in cases {
        let response = gateway.admin_call("POST", "/admin/accounts/picky/keys", body);
        assert_eq!(response.status, 400, "{body}: {}", response.text());
        let (kind, code, named) = response.error();
        assert_eq!(
            (kind.as_str(), code.as_str(), named.as_deref()),
            ("invalid_request_error", "invalid_parameter", Some(param)),
            "{body}"
        );
        let response =
            gateway.admin_call("PATCH", &format!("/admin/keys/{key_id}"), &body.replace(r#""kind":"live","#, ""));
        assert_eq!(response.status, 400, "{body}: {}", response.text());
    }
    let empty = gateway.admin_call("PATCH", &format!("/admin/keys/{key_id}"), "{}");
    assert_eq!((empty.status, empty.error().1.as_str()), (400, "missing_required_parameter"));
    let unknown = gateway.admin_call("PATCH", "/admin/keys/key_nope", r#"{"spend_cap_usd":null}"#);
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    assert_eq!(gateway.usage("picky").len(), 0);
}

/// Every (key id, charge) of an account's whole ledger, read from Redis.
fn ledger_charges(redis_port: u16, prefix: &str, account: &str) -> Vec<(String, u64)> {
    let text = redis_cli(redis_port, &["XRANGE", &format!("{prefix}:{{{account}}}:ledger"), "-", "+"]);
    let lines: Vec<&str> = text.lines().collect();
    let mut charges = Vec::new();
    let mut key_id = String::new();
    for pair in lines.windows(2) {
        match pair[0] {
            "key_id" => key_id = pair[1].to_string(),
            "cost" => charges.push((key_id.clone(), pair[1].parse().unwrap())),
            // A lease call's records: "request_id key_id model prompt completion cost outcome;...".
            "records" => charges.extend(pair[1].split(';').map(|record| {
                let fields: Vec<&str> = record.split(' ').collect();
                (fields[1].to_string(), fields[5].parse::<u64>().unwrap())
            })),
            _ => {}
        }
    }
    charges
}

/// `clients` keep-alive connections sending `request` until `stop`; the statuses.
fn hammer(
    apis: &[SocketAddr],
    request: &str,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<u16>>> {
    (0..clients)
        .map(|client| {
            let (api, request, stop) = (apis[client % apis.len()], request.to_string(), stop.clone());
            std::thread::spawn(move || {
                let stream = connect(api);
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut statuses = Vec::new();
                while !stop.load(Ordering::Acquire) {
                    (&stream).write_all(request.as_bytes()).unwrap();
                    statuses.push(read_response(&mut reader).expect("a response").status);
                }
                statuses
            })
        })
        .collect()
}

// THE KEY TEST. Three nodes share one redis-server; the account's uncapped key keeps every node
// busy on leases while 200 concurrent requests of its capped key (37.5 full answers' worth)
// arrive at once across the nodes. The capped key spends at most its cap to the nano-USD, the
// ledger equals the balance change, nothing stays held, the uncapped key is never refused, and
// lifting the cap through one node reaches every node within a second.
#[test]
fn two_hundred_concurrent_requests_across_three_nodes_never_pass_the_cap() {
    const CAP_NANOS: u64 = 600_000;
    let prefix = unique_prefix("caps");
    let redis = redis_server::shared_server();
    let store = format!(
        "redis_url = \"redis://{redis}\"\nkey_prefix = \"{prefix}\"\ngateway_nodes = 3\ncommand_timeout_ms = 1000"
    );
    let extra =
        format!("{METERED_MODEL}\n[[account_overrides]]\naccount = \"busy\"\nrpm = 1000000\ntpm = 1000000000\n");
    let nodes: Vec<GatewayProcess> =
        (0..3).map(|n| GatewayProcess::start(&format!("caps-{n}"), &store, &extra)).collect();
    let apis: Vec<SocketAddr> = nodes.iter().map(|node| node.api).collect();
    nodes[0].create_account("busy", "100.00");
    let (uncapped_id, uncapped) = nodes[0].create_key("busy", "live");
    let (capped_id, capped) = create_capped_key(&nodes[1], "busy", &usd(CAP_NANOS), "month");
    let busy_request = chat_request(&uncapped, &metered(None));
    // The uncapped key runs for the whole test: the workers see the rate and take leases.
    let stop = Arc::new(AtomicBool::new(false));
    let busy = hammer(&apis, &busy_request, 6, stop.clone());
    let leased = || nodes.iter().map(|node| metric(node.admin, "fikra_lease_admissions_total")).sum::<u64>();
    assert!(wait_until(Duration::from_secs(10), || leased() > 0), "no lease was taken");
    let leased_before = leased();

    let request = chat_request(&capped, &metered(None));
    let barrier = Arc::new(Barrier::new(200));
    let clients: Vec<_> = (0..200)
        .map(|client| {
            let (api, request, barrier) = (apis[client % 3], request.clone(), barrier.clone());
            std::thread::spawn(move || {
                let stream = connect(api);
                barrier.wait();
                (&stream).write_all(request.as_bytes()).unwrap();
                read_response(&mut BufReader::new(stream)).expect("a response")
            })
        })
        .collect();
    let responses: Vec<Response> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let counts = tally(responses.iter().map(|r| r.status));
    let granted: u64 = responses
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.json()["usage"]["completion_tokens"].as_u64().unwrap())
        .sum();
    for response in responses.iter().filter(|r| r.status != 200) {
        assert_eq!(response.status, 402, "{}", response.text());
        assert_eq!(response.error().1, "key_spend_limit_reached");
        assert_eq!(response.header("x-should-retry"), Some("false"));
        assert!(response.message().contains("spend cap of 0.000600000 USD per month (UTC)"), "{}", response.message());
    }

    // Lifting the cap through node 0 reaches every worker of every node within a second.
    nodes[0].admin_json("PATCH", &format!("/admin/keys/{capped_id}"), r#"{"spend_cap_usd":null}"#, 200);
    let lifted_at = Instant::now();
    let served_after_lift = std::cell::Cell::new(0usize);
    let every_node_serves = || {
        apis.iter().all(|api| {
            (0..6).all(|_| {
                let served = send_one(*api, request.as_bytes()).status == 200;
                served_after_lift.set(served_after_lift.get() + usize::from(served));
                served
            })
        })
    };
    assert!(wait_until(Duration::from_secs(1), every_node_serves), "a node still refused 1 s after the cap was lifted");
    let lifted_ms = lifted_at.elapsed().as_millis();
    let after_lift = served_after_lift.get();

    stop.store(true, Ordering::Release);
    let busy_statuses: Vec<u16> = busy.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let busy_counts = tally(busy_statuses.iter().copied());
    assert_eq!(
        busy_counts.get(&200).copied(),
        Some(busy_statuses.len()),
        "the uncapped key was refused: {busy_counts:?}"
    );
    let leased_during = leased() - leased_before;

    // Every lease ends and pays once the account goes idle; then the books must balance.
    let balance = wait_for(Duration::from_secs(15), || {
        let view = nodes[2].account("busy");
        (view["held_usd"] == "0.000000000").then(|| usd_to_nanos(view["balance_usd"].as_str().unwrap()))
    })
    .expect("something still held 15 s after the load");
    let charges = ledger_charges(redis.port(), &prefix, "busy");
    let total: u64 = charges.iter().map(|(_, cost)| cost).sum();
    let capped_spent: u64 = charges.iter().filter(|(key, _)| *key == capped_id).map(|(_, cost)| cost).sum();
    let capped_records = charges.iter().filter(|(key, _)| *key == capped_id).count();
    let admitted = counts.get(&200).copied().unwrap_or(0);
    let refused = counts.get(&402).copied().unwrap_or(0);
    eprintln!(
        "cap {CAP_NANOS} nano-USD: 200 concurrent capped requests over 3 nodes: {admitted} admitted ({granted} tokens), \
         {refused} refused 402; capped key spent {} nano-USD before the lift (+{} after); uncapped key: {} requests, \
         {leased_during} admitted on leases meanwhile; cap lifted everywhere in {lifted_ms} ms; ledger {total} = balance \
         change {}",
        granted * 1_000,
        capped_spent - granted * 1_000,
        busy_statuses.len(),
        100_000_000_000 - balance
    );
    assert_eq!(admitted + refused, 200, "{counts:?}");
    assert!(granted * 1_000 <= CAP_NANOS, "the capped key was granted {granted} tokens, beyond its cap");
    // Every request was charged what it was granted: nothing upstream-side was cut short.
    assert_eq!(capped_records, admitted + after_lift);
    assert_eq!(capped_spent, granted * 1_000 + after_lift as u64 * 16_000);
    assert_eq!(granted * 1_000, CAP_NANOS, "the cap is used to the nano-USD: 37 full answers and one of 8 tokens");
    assert_eq!(total, 100_000_000_000 - balance, "ledger = balance change");
    assert_eq!(charges.len(), busy_statuses.len() + admitted + after_lift, "one record per answer");
    // The first of the key record's packed numbers is what its open holds hold.
    let key_held = "return struct.unpack('<d', redis.call('HGET', KEYS[1], ARGV[1]))";
    let caps = redis_cli(
        redis.port(),
        &["EVAL", key_held, "1", &format!("{prefix}:{{busy}}:acct"), &format!("k:{capped_id}")],
    );
    assert_eq!(caps.trim(), "0", "the capped key holds nothing");
    // Each key's lifetime spend, as its holder sees it, is its ledger records' sum: the
    // uncapped key's (served mostly from leases) and the capped key's (its cap lifted).
    let uncapped_spent: u64 = charges.iter().filter(|(key, _)| *key == uncapped_id).map(|(_, cost)| cost).sum();
    assert_eq!(uncapped_spent + capped_spent, total, "the account has two keys");
    for (api, secret, spent) in [(apis[0], &uncapped, uncapped_spent), (apis[2], &capped, capped_spent)] {
        let view = own_account(api, secret);
        assert_eq!(
            (view["key"]["spent_usd"].as_str(), view["key"]["held_usd"].as_str()),
            (Some(&*usd(spent)), Some("0.000000000"))
        );
    }
}
