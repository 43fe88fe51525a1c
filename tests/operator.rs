//! The operator side outside the request path: start-up refusals, `check-config`, and the
//! standalone sandbox server.

mod support;

use std::io::{BufReader, Write};
use std::process::Command;

use fikra_gateway::clock::Clock;
use fikra_gateway::config::SandboxSettings;
use fikra_gateway::runtime::Gateway;
use fikra_gateway::sandbox_server::SandboxServer;
use support::gateway::*;
use support::http::*;

// Goal: a port another process (here: another socket) already listens on is refused at
// start-up instead of being silently shared through SO_REUSEPORT.
#[test]
fn refuses_a_port_that_is_already_served() {
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    let mut config = config_with("");
    config.server.listen = format!("127.0.0.1:{port}").parse().unwrap();
    let error = Gateway::start(config, ADMIN_TOKEN.into(), Clock::System).err().expect("start must fail");
    assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
    assert!(error.to_string().contains("already in use"), "{error}");
}

// Goal: `check-config` lists every problem of a bad file and exits 1; a good file exits 0.
#[test]
fn check_config_reports_all_problems() {
    let directory = std::env::temp_dir().join(format!("fikra-check-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let bad = directory.join("bad.toml");
    std::fs::write(&bad, "[server]\nlisten = \"x\"\nworkerz = 1\n[billing]\nkes_per_usd = 130\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_fikra-gateway"))
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for key in ["billing.kes_per_usd", "server.listen", "server.workerz"] {
        assert!(stderr.contains(key), "{key} missing from:\n{stderr}");
    }
    let good = directory.join("good.toml");
    std::fs::write(&good, include_str!("../tuning/example.toml")).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_fikra-gateway"))
        .args(["check-config", "--config"])
        .arg(&good)
        .env("FIKRA_ADMIN_TOKEN", "set")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    std::fs::remove_dir_all(&directory).unwrap();
}

// Goal: the standalone sandbox answers unary and streamed completions like an upstream: the
// model it was asked for, usage, SSE events ending in [DONE], and JSON errors for bad bodies.
#[test]
fn standalone_sandbox_serves_like_an_upstream() {
    let settings =
        SandboxSettings { time_to_first_token_ms: 0, tokens_per_second: 0, output_tokens: 5, stamp_events: false };
    let sandbox = SandboxServer::start("127.0.0.1:0".parse().unwrap(), 1, settings).unwrap();
    let body = r#"{"model":"vendor/model-x","messages":[{"role":"user","content":"hi"}]}"#;
    let unary = send_one(sandbox.addr, chat_request("anything", body).as_bytes());
    assert_eq!(unary.status, 200);
    let value = unary.json();
    assert_eq!(value["model"], "vendor/model-x");
    assert_eq!(value["usage"]["completion_tokens"], 5);

    let streamed = r#"{"model":"vendor/model-x","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
    let stream = connect(sandbox.addr);
    (&stream).write_all(chat_request("anything", streamed).as_bytes()).unwrap();
    let response = read_response(&mut BufReader::new(stream)).unwrap();
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    let text = response.text();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 1 + 5 + 1 + 1 + 1, "{text}");
    assert_eq!(*events.last().unwrap(), "data: [DONE]");
    assert!(events[7].contains("\"usage\":{\"prompt_tokens\""), "{}", events[7]);

    let bad = send_one(sandbox.addr, chat_request("anything", "{").as_bytes());
    assert_eq!(bad.status, 400);
    assert_eq!(bad.error().1, "invalid_json");
    sandbox.shutdown();
}
