//! Rate limits and top-ups end to end: the Unverified tier's 30 RPM, the Trusted flip on the
//! first top-up, idempotent payment references, KES conversion.

mod support;

use support::gateway::*;
use support::http::*;

// Goal: 30 requests pass, the 31st is refused; a KES top-up flips the account to Trusted (100
// RPM) and credits exactly once per reference.
#[test]
fn unverified_limit_then_topup_to_trusted() {
    let gateway = TestGateway::start("");
    let key = gateway.account_with_key("growing", "1.00", "live");
    let body = simple_chat("fikra-flash", "habari");
    let mut last = None;
    for _ in 0..30 {
        let response = gateway.chat(&key, &body);
        assert_eq!(response.status, 200);
        last = Some(response);
    }
    let last = last.unwrap();
    assert_eq!(last.header("x-ratelimit-limit-requests"), Some("30"));
    assert_eq!(last.header("x-ratelimit-limit-tokens"), Some("40000"));
    assert_eq!(gateway.chat(&key, &body).status, 429);

    let balance_before = gateway.balance_nanos("growing");
    let topup = r#"{"amount":"1300","currency":"KES","reference":"MPESA-QWE123"}"#;
    let first = gateway.admin_call("POST", "/admin/accounts/growing/topups", topup).json();
    assert_eq!(first["tier"], "trusted");
    assert_eq!(first["duplicate"], false);
    assert_eq!(usd_to_nanos(first["balance_usd"].as_str().unwrap()), balance_before + 10_000_000_000);
    let again = gateway.admin_call("POST", "/admin/accounts/growing/topups", topup).json();
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["balance_usd"], first["balance_usd"]);
    assert_eq!(gateway.account("growing")["tier"], "trusted");

    let response = gateway.chat(&key, &body);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("x-ratelimit-limit-requests"), Some("100"));
    assert_eq!(response.header("x-ratelimit-limit-tokens"), Some("160000"));
}

// Goal: admin top-up validation: bad currency, zero amount, unknown account.
#[test]
fn topup_validation() {
    let gateway = TestGateway::start("");
    gateway.account_with_key("payer", "0", "live");
    let cases = [
        (r#"{"amount":"10","currency":"EUR","reference":"r1"}"#, 400),
        (r#"{"amount":"0","currency":"USD","reference":"r2"}"#, 400),
        (r#"{"amount":"-5","currency":"USD","reference":"r3"}"#, 400),
        (r#"{"amount":10,"currency":"USD","reference":"r4"}"#, 400),
        (r#"{"amount":"10","currency":"USD"}"#, 400),
    ];
    for (body, status) in cases {
        let response = gateway.admin_call("POST", "/admin/accounts/payer/topups", body);
        assert_eq!(response.status, status, "{body}: {}", response.text());
        response.error();
    }
    let unknown = gateway.admin_call(
        "POST",
        "/admin/accounts/nobody/topups",
        r#"{"amount":"1","currency":"USD","reference":"r5"}"#,
    );
    assert_eq!(unknown.status, 404);
    assert_eq!(gateway.balance_nanos("payer"), 0);
    assert_eq!(gateway.account("payer")["tier"], "unverified");
}

// Goal: the admin API refuses requests without the admin token.
#[test]
fn admin_requires_token() {
    let gateway = TestGateway::start("");
    let response = send_one(gateway.admin, b"GET /admin/accounts/x HTTP/1.1\r\nhost: t\r\n\r\n");
    assert_eq!(response.status, 401);
    let health = send_one(gateway.admin, b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n");
    assert_eq!(health.status, 200);
    let ready = send_one(gateway.admin, b"GET /readyz HTTP/1.1\r\nhost: t\r\n\r\n");
    assert_eq!(ready.status, 200, "{}", ready.text());
}

// Goal: every worker reports the driver it runs on: epoll when forced, else io_uring where the
// kernel offers it (this is how CI proves the suite ran on both).
#[test]
fn workers_report_their_driver() {
    let gateway = TestGateway::start("");
    let forced_epoll = std::env::var("MONOIO_FORCE_LEGACY_DRIVER").is_ok_and(|v| v == "1");
    let expected = if forced_epoll || !monoio::utils::detect_uring() { "epoll" } else { "io_uring" };
    for worker in 0..2 {
        assert_eq!(
            metric(gateway.admin, &format!("fikra_worker_driver{{worker=\"{worker}\",driver=\"{expected}\"}}")),
            1
        );
    }
}

// Goal: every `io_uring_task_work` mode serves requests and bills them (on epoll the key is
// ignored): 20 sequential chats answer 200 and the wallet loses exactly what the usage ledger
// charged, on workers that report the expected driver.
#[test]
fn every_io_uring_task_work_mode_serves_and_bills() {
    let forced_epoll = std::env::var("MONOIO_FORCE_LEGACY_DRIVER").is_ok_and(|v| v == "1");
    let expected = if forced_epoll || !monoio::utils::detect_uring() { "epoll" } else { "io_uring" };
    for mode in ["immediate", "cooperative", "deferred"] {
        let gateway = TestGateway::start(&format!("io_uring_task_work = \"{mode}\"\n"));
        let key = gateway.account_with_key("rings", "1.00", "live");
        let before = gateway.balance_nanos("rings");
        let mut charged_nanos = 0u64;
        for turn in 0..20 {
            let answer = gateway.chat(&key, &simple_chat("fikra-flash", &format!("turn {turn}")));
            assert_eq!(answer.status, 200, "{mode}: {}", answer.text());
            charged_nanos += usd_to_nanos(answer.header("x-fikra-cost-usd").expect("cost header"));
        }
        assert_eq!(before - gateway.balance_nanos("rings"), charged_nanos, "{mode}");
        for worker in 0..2 {
            let series = format!("fikra_worker_driver{{worker=\"{worker}\",driver=\"{expected}\"}}");
            assert_eq!(metric(gateway.admin, &series), 1, "{mode}");
        }
    }
}

// Goal: the RPM bucket refills with time and only with time: on a manual clock, the 31st
// request is refused, 1,999 ms later still refused (retry-after-ms said 2000), at 2,000 ms
// admitted. No sleeping.
#[test]
fn rpm_refills_on_the_gateway_clock() {
    let clock = fikra_gateway::clock::Clock::manual(1_800_000_000_000);
    let gateway = TestGateway::start_with_clock(config_with(""), clock.clone());
    let key = gateway.account_with_key("clocked", "1.00", "live");
    let body = simple_chat("fikra-flash", "tick");
    for _ in 0..30 {
        assert_eq!(gateway.chat(&key, &body).status, 200);
    }
    let refused = gateway.chat(&key, &body);
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("retry-after-ms"), Some("2000"));
    assert_eq!(refused.header("x-ratelimit-reset-requests"), Some("1m0s"));
    clock.advance_ms(1_999);
    assert_eq!(gateway.chat(&key, &body).status, 429);
    clock.advance_ms(1);
    let admitted = gateway.chat(&key, &body);
    assert_eq!(admitted.status, 200);
    assert_eq!(admitted.header("x-ratelimit-remaining-requests"), Some("0"));
}
