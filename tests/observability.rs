//! SPEC §12 over real sockets: `/metrics` passes `promtool check metrics` and counts latency
//! (request duration by route, upstream response, time to first token, gateway overhead),
//! tokens by model and kind, and money by model, exactly; the access log writes one JSON line
//! per request with the facts of that request and never a key.

mod support;

use std::time::Duration;

use fikra_gateway::config::SandboxSettings;
use fikra_gateway::sandbox_server::SandboxServer;
use support::gateway::*;
use support::gateway_process::GatewayProcess;
use support::http::*;
use support::redis_server::{self, unique_prefix};
use support::scripted_upstream::{SECRET_MODEL, upstream_model_config};
use support::wait::wait_for;

fn sandbox_upstream(output_tokens: u64) -> SandboxServer {
    let settings =
        SandboxSettings { time_to_first_token_ms: 0, tokens_per_second: 0, output_tokens, stamp_events: false };
    SandboxServer::start("127.0.0.1:0".parse().unwrap(), 1, settings).unwrap()
}

fn stream_body() -> String {
    r#"{"model":"fikra-flash","stream":true,"messages":[{"role":"user","content":"habari yako"}]}"#.to_string()
}

/// Runs `promtool check metrics` on `text`; returns its exit status and output.
fn promtool_check(text: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (tests/run-all.sh installs Debian's prometheus package)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), said)
}

// Goal: after one unary and one streamed answer through an upstream, one 401 and one model
// list, the exposition passes promtool, every histogram counted exactly the requests it
// covers, and tokens and money by model equal the ledger's.
#[test]
fn metrics_pass_promtool_and_count_latency_tokens_and_money() {
    let upstream = sandbox_upstream(7);
    let gateway = TestGateway::start(&upstream_model_config(&format!("http://{}/v1", upstream.addr), "", ""));
    let key = gateway.account_with_key("watched", "1.00", "live");
    assert_eq!(gateway.chat(&key, &simple_chat("fikra-flash", "habari")).status, 200);
    let streamed = send_one(gateway.api, chat_request(&key, &stream_body()).as_bytes());
    assert_eq!(streamed.status, 200);
    let unknown = gateway.chat("fk_live_0123456789abcdefghijABCDEFGHIJ01", &simple_chat("fikra-flash", "x"));
    assert_eq!(unknown.status, 401);
    let models = send_one(
        gateway.api,
        format!("GET /v1/models HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {key}\r\nconnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(models.status, 200);

    let text = metrics(gateway.admin);
    let (passed, said) = promtool_check(&text);
    assert!(passed, "promtool check metrics: {said}\n{text}");
    assert!(!text.contains(SECRET_MODEL));
    let count = |name: &str| metric(gateway.admin, name);
    assert_eq!(count("fikra_request_duration_seconds_count{route=\"/v1/chat/completions\"}"), 3);
    assert_eq!(count("fikra_request_duration_seconds_count{route=\"/v1/models\"}"), 1);
    assert_eq!(count("fikra_request_duration_seconds_bucket{route=\"/v1/chat/completions\",le=\"+Inf\"}"), 3);
    // Only the two answers went upstream.
    for name in
        ["fikra_upstream_response_seconds", "fikra_time_to_first_token_seconds", "fikra_gateway_overhead_seconds"]
    {
        assert_eq!(count(&format!("{name}_count")), 2, "{name}");
    }
    let records = gateway.usage("watched");
    assert_eq!(records.len(), 2);
    let sum = |field: &str| records.iter().map(|r| r[field].as_u64().unwrap()).sum::<u64>();
    let cost: u64 = records.iter().map(|r| usd_to_nanos(r["cost_usd"].as_str().unwrap())).sum();
    assert_eq!(sum("completion_tokens"), 14);
    assert_eq!(count("fikra_tokens_total{model=\"fikra-flash\",kind=\"prompt\"}"), sum("prompt_tokens"));
    assert_eq!(count("fikra_tokens_total{model=\"fikra-flash\",kind=\"completion\"}"), 14);
    assert_eq!(count("fikra_tokens_total{model=\"fikra-flash\",kind=\"cached\"}"), 0);
    assert_eq!(count("fikra_tokens_total{model=\"fikra-flash\",kind=\"reasoning\"}"), 0);
    assert_eq!(count("fikra_model_charged_nanos_total{model=\"fikra-flash\"}"), cost);
    assert_eq!(count("fikra_charged_nanos_total"), cost);
    assert_eq!(count("fikra_rejections_total{reason=\"invalid_api_key\"}"), 1);
    upstream.shutdown();
}

/// The JSON lines of a node's output (its log holds its standard output and error).
fn access_lines(node: &GatewayProcess) -> Vec<serde_json::Value> {
    node.log_text()
        .lines()
        .filter(|line| line.starts_with('{'))
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

// Goal: a node writes one JSON line per client request on standard output (the default
// `[log] access = "json"`): an answered chat with its request id, account, key id, model,
// tokens and cost equal to the ledger's and its upstream and first-token times; a 401 with its
// code and no account; a 404 for a recognised key with its account. No line holds the key.
#[test]
fn access_log_writes_one_json_line_per_request() {
    let upstream = sandbox_upstream(5);
    let store = format!(
        "redis_url = \"redis://{}\"\nkey_prefix = \"{}\"",
        redis_server::shared_server(),
        unique_prefix("access")
    );
    let node = GatewayProcess::start(
        "access",
        &store,
        &upstream_model_config(&format!("http://{}/v1", upstream.addr), "", ""),
    );
    node.create_account("logged", "1.00");
    let (key_id, key) = node.create_key("logged", "live");
    let answered = node.chat(&key, &simple_chat("fikra-flash", "habari"));
    assert_eq!(answered.status, 200);
    let request_id = answered.header("x-request-id").unwrap().to_string();
    assert_eq!(node.chat("fk_live_0123456789abcdefghijABCDEFGHIJ01", &simple_chat("fikra-flash", "x")).status, 401);
    let missing = send_one(
        node.api,
        format!(
            "GET /v1/nothing?secret=1 HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {key}\r\nconnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(missing.status, 404);

    // Lines reach the writer within one sweep interval (1 s) of a quiet worker.
    let lines = wait_for(Duration::from_secs(5), || {
        let lines = access_lines(&node);
        (lines.len() >= 3).then_some(lines)
    })
    .unwrap_or_else(|| panic!("three access-log lines; the node wrote:\n{}", node.log_text()));
    assert_eq!(lines.len(), 3, "{lines:?}");
    let record = &node.usage("logged")[0];
    let chat = lines.iter().find(|line| line["status"] == 200).unwrap();
    assert_eq!(chat["request_id"], request_id.as_str());
    assert_eq!(chat["account"], "logged");
    assert_eq!(chat["key_id"], key_id.as_str());
    assert_eq!((chat["method"].as_str(), chat["path"].as_str()), (Some("POST"), Some("/v1/chat/completions")));
    assert_eq!(chat["error_code"], serde_json::Value::Null);
    assert_eq!(chat["model"], "fikra-flash");
    assert_eq!(chat["prompt_tokens"], record["prompt_tokens"]);
    assert_eq!(chat["completion_tokens"], 5);
    assert_eq!((chat["cached_tokens"].as_u64(), chat["reasoning_tokens"].as_u64()), (Some(0), Some(0)));
    assert_eq!(chat["cost_nanos"].as_u64(), Some(usd_to_nanos(record["cost_usd"].as_str().unwrap())));
    let (duration, upstream_us, first_token) = (
        chat["duration_us"].as_u64().unwrap(),
        chat["upstream_us"].as_u64().unwrap(),
        chat["first_token_us"].as_u64().unwrap(),
    );
    assert!(upstream_us <= first_token && first_token <= duration, "{chat}");
    assert!(chat["time"].as_str().unwrap().ends_with('Z'));

    let refused = lines.iter().find(|line| line["status"] == 401).unwrap();
    assert_eq!((refused["error_code"].as_str(), refused["account"].as_str()), (Some("invalid_api_key"), None));
    assert_eq!((refused["cost_nanos"].as_u64(), refused["upstream_us"].as_u64()), (Some(0), None));
    let unknown = lines.iter().find(|line| line["status"] == 404).unwrap();
    assert_eq!(unknown["error_code"], "unknown_endpoint");
    assert_eq!(unknown["account"], "logged");
    assert_eq!(unknown["path"], "/v1/nothing", "the query is never logged");
    let log = node.log_text();
    assert!(!log.contains(&key) && !log.contains("fk_live_0123456789") && !log.contains("secret=1"));
    upstream.shutdown();
}
