//! A real TLS upstream that nobody here wrote: nginx, with a certificate from a CA this test
//! generates, serving canned unary JSON and an SSE body. The gateway trusts the CA through the
//! upstream's `ca_file`, reuses its pooled TLS connections, and rewrites the upstream's model.

// Tests measure real time on purpose: clippy.toml's clock policy is for the gateway.
#![allow(clippy::disallowed_methods)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::certificates::write_certificates;
use support::gateway::*;
use support::http::*;
use support::wait::wait_until;

const SECRET_MODEL: &str = "vendor/secret-model-9b";

struct Nginx {
    child: Child,
    directory: PathBuf,
    port: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM lets the master stop its workers too (SIGKILL would orphan them).
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

impl Nginx {
    /// Distinct client connections nginx logged (one TLS handshake each).
    fn connections_logged(&self) -> usize {
        let log = std::fs::read_to_string(self.directory.join("access.log")).unwrap_or_default();
        let mut ids: Vec<&str> = log.lines().filter_map(|l| l.split(' ').next()).collect();
        ids.sort();
        ids.dedup();
        ids.len()
    }

    fn requests_logged(&self) -> usize {
        std::fs::read_to_string(self.directory.join("access.log")).unwrap_or_default().lines().count()
    }
}

fn start_nginx(name: &str) -> (Nginx, PathBuf) {
    let directory = std::env::temp_dir().join(format!("fikra-nginx-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    let (ca, cert, key) = write_certificates(&directory);
    let port = free_port();
    let unary = format!(
        r#"{{"id":"chatcmpl-n","object":"chat.completion","created":1,"model":"{SECRET_MODEL}","choices":[{{"index":0,"message":{{"role":"assistant","content":"habari"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":11,"completion_tokens":2,"total_tokens":13}}}}"#
    );
    let chunk = |content: &str| {
        format!(
            r#"data: {{"id":"chatcmpl-n","object":"chat.completion.chunk","created":1,"model":"{SECRET_MODEL}","choices":[{{"index":0,"delta":{{"content":"{content}"}},"finish_reason":null}}]}}"#
        )
    };
    let usage = format!(
        r#"data: {{"id":"chatcmpl-n","object":"chat.completion.chunk","created":1,"model":"{SECRET_MODEL}","choices":[],"usage":{{"prompt_tokens":11,"completion_tokens":3,"total_tokens":14}}}}"#
    );
    let sse = format!("{}\n\n{}\n\n{}\n\n{usage}\n\ndata: [DONE]\n\n", chunk("one"), chunk(" two"), chunk(" three"));
    let d = directory.display();
    let config = format!(
        r#"worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 512; }}
http {{
    log_format conn '$connection $ssl_session_reused';
    access_log {d}/access.log conn;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 100000;
    keepalive_timeout 60s;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location = /v1/chat/completions {{
            default_type application/json;
            return 200 '{unary}';
        }}
        location = /sse/v1/chat/completions {{
            default_type text/event-stream;
            return 200 '{sse}';
        }}
    }}
}}
"#,
        cert = cert.display(),
        key = key.display(),
    );
    std::fs::write(directory.join("nginx.conf"), config).unwrap();
    let child = Command::new("nginx")
        .args(["-p", &d.to_string(), "-c", &format!("{d}/nginx.conf"), "-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("nginx is installed (tests/run-all.sh installs it)");
    let listening = wait_until(Duration::from_secs(10), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(listening, "nginx did not start; see {d}/error.log");
    (Nginx { child, directory, port }, ca)
}

fn gateway_for(nginx: &Nginx, ca: &Path, workers: usize) -> TestGateway {
    let text = format!(
        r#"workers = {workers}
[[account_overrides]]
account = "tls"
rpm = 1000000
tpm = 1000000000

[[upstreams]]
name = "nginx"
base_url = "https://localhost:{port}/v1"
ca_file = "{ca}"

[[upstreams]]
name = "nginx-sse"
base_url = "https://localhost:{port}/sse/v1"
ca_file = "{ca}"

[[models]]
id = "fikra-flash"
upstream = "nginx"
upstream_model = "{SECRET_MODEL}"
input_usd_per_million = "0.5"
output_usd_per_million = "0.5"
max_output_tokens = 8192

[[models]]
id = "fikra-stream"
upstream = "nginx-sse"
upstream_model = "{SECRET_MODEL}"
input_usd_per_million = "1"
output_usd_per_million = "1"
max_output_tokens = 8192
"#,
        port = nginx.port,
        ca = ca.display()
    );
    TestGateway::start_config(config_with(&text))
}

// Goal: unary and SSE answers through a real TLS upstream are relayed with the public model id
// and billed from the upstream's usage (11+2 and 11+3 tokens), never leaking its model name.
#[test]
fn tls_upstream_unary_and_stream() {
    let (nginx, ca) = start_nginx("relay");
    let gateway = gateway_for(&nginx, &ca, 2);
    let key = gateway.account_with_key("tls", "1.00", "live");
    let unary = gateway.chat(&key, &simple_chat("fikra-flash", "hi"));
    assert_eq!(unary.status, 200, "{}", unary.text());
    assert_eq!(unary.json()["model"], "fikra-flash");
    assert_eq!(unary.json()["usage"]["total_tokens"], 13);
    assert!(!unary.text().contains(SECRET_MODEL));

    let body =
        serde_json::json!({"model": "fikra-stream", "stream": true, "messages": [{"role": "user", "content": "hi"}]})
            .to_string();
    let stream = gateway.chat(&key, &body);
    assert_eq!(stream.status, 200);
    let text = stream.text();
    assert!(!text.contains(SECRET_MODEL), "{text}");
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 4, "three chunks and [DONE]; usage hidden: {text}");
    assert!(events[..3].iter().all(|e| e.contains("\"model\":\"fikra-stream\"")));
    assert_eq!(events[3], "data: [DONE]");

    // 13 tokens at 500 nanos + 14 tokens at 1000 nanos.
    assert_eq!(gateway.balance_nanos("tls"), 1_000_000_000 - 13 * 500 - 14 * 1000);
    assert_eq!(gateway.account("tls")["held_usd"], "0.000000000");
}

// Goal: pooled TLS connections: 1,000 requests (sequential, then 4 concurrent clients) cost at
// most workers x concurrency TLS handshakes at the upstream.
#[test]
fn tls_connections_are_reused() {
    let (nginx, ca) = start_nginx("pool");
    let gateway = gateway_for(&nginx, &ca, 2);
    let key = gateway.account_with_key("tls", "100", "live");
    let request = chat_request(&key, &simple_chat("fikra-flash", "pool"));
    send_many(gateway.api, &request, 600, 4, 100);
    // nginx writes its access log line after each answer: wait for the last ones, boundedly.
    wait_until(Duration::from_secs(5), || nginx.requests_logged() >= 1000);
    assert_eq!(nginx.requests_logged(), 1000);
    let handshakes = nginx.connections_logged();
    assert_eq!(metric(gateway.admin, "fikra_upstream_connects_total") as usize, handshakes);
    assert!((1..=8).contains(&handshakes), "{handshakes} TLS connections for 1,000 requests");
}

// Goal: an upstream whose certificate is not trusted (no ca_file) is a 502, fast, not a hang.
#[test]
fn untrusted_tls_upstream_is_502() {
    let (nginx, _ca) = start_nginx("untrusted");
    let text = format!(
        "[[upstreams]]\nname = \"n\"\nbase_url = \"https://localhost:{}/v1\"\n[[models]]\nid = \"fikra-flash\"\nupstream = \"n\"\ninput_usd_per_million = \"0.5\"\noutput_usd_per_million = \"0.5\"\nmax_output_tokens = 8192\n",
        nginx.port
    );
    let gateway = TestGateway::start(&text);
    let key = gateway.account_with_key("untrusted", "1.00", "live");
    let response = gateway.chat(&key, &simple_chat("fikra-flash", "hi"));
    assert_eq!(response.status, 502);
    assert_eq!(response.error().1, "upstream_unavailable");
}
