//! Test support: an in-process gateway on free ports and a small blocking HTTP/1.1 client that
//! speaks raw bytes, so tests see exactly what a client on the wire sees.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use fikra_gateway::clock::Clock;
use fikra_gateway::config::{Config, parse_config};
use fikra_gateway::runtime::Gateway;
use serde_json::Value;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The config every test starts from: free ports, two workers, instant sandbox, plus `extra`.
pub fn config_with(extra: &str) -> Config {
    let workers = if extra.contains("workers") { "" } else { "workers = 2\n" };
    let text = format!("[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{workers}{extra}\n");
    match parse_config(&text) {
        Ok(config) => config,
        Err(errors) => panic!("test config invalid: {errors:?}\n{text}"),
    }
}

pub struct TestGateway {
    pub gateway: Option<Gateway>,
    pub api: SocketAddr,
    pub admin: SocketAddr,
}

impl TestGateway {
    pub fn start(extra_config: &str) -> TestGateway {
        Self::start_config(config_with(extra_config))
    }

    pub fn start_config(config: Config) -> TestGateway {
        Self::start_with_clock(config, Clock::System)
    }

    /// A gateway whose notion of time only moves when the test moves `clock`.
    pub fn start_with_clock(config: Config, clock: Clock) -> TestGateway {
        let gateway = Gateway::start(config, ADMIN_TOKEN.to_string(), clock).expect("gateway starts");
        let (api, admin) = (gateway.client_addr, gateway.admin_addr);
        TestGateway { gateway: Some(gateway), api, admin }
    }

    pub fn gateway(&self) -> &Gateway {
        self.gateway.as_ref().expect("running")
    }

    /// Creates an account with `credit_usd` and one key of `kind`; returns the key.
    pub fn account_with_key(&self, id: &str, credit_usd: &str, kind: &str) -> String {
        let created = self.admin_call(
            "POST",
            "/admin/accounts",
            &format!(r#"{{"id":"{id}","signup_credit_usd":"{credit_usd}"}}"#),
        );
        assert_eq!(created.status, 201, "create account: {}", created.text());
        self.new_key(id, kind)
    }

    pub fn new_key(&self, account: &str, kind: &str) -> String {
        let key =
            self.admin_call("POST", &format!("/admin/accounts/{account}/keys"), &format!(r#"{{"kind":"{kind}"}}"#));
        assert_eq!(key.status, 201, "create key: {}", key.text());
        key.json()["key"].as_str().unwrap().to_string()
    }

    pub fn admin_call(&self, method: &str, path: &str, body: &str) -> Response {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {ADMIN_TOKEN}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        send_one(self.admin, request.as_bytes())
    }

    pub fn account(&self, id: &str) -> Value {
        let response = self.admin_call("GET", &format!("/admin/accounts/{id}"), "");
        assert_eq!(response.status, 200);
        response.json()
    }

    /// Balance of an account in nano-USD.
    pub fn balance_nanos(&self, id: &str) -> u64 {
        usd_to_nanos(self.account(id)["balance_usd"].as_str().unwrap())
    }

    pub fn chat(&self, key: &str, body: &str) -> Response {
        send_one(self.api, chat_request(key, body).as_bytes())
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown();
        }
    }
}

/// "1.000000500" -> 1_000_000_500.
pub fn usd_to_nanos(text: &str) -> u64 {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let fraction = format!("{fraction:0<9}");
    whole.parse::<u64>().unwrap() * 1_000_000_000 + fraction[..9].parse::<u64>().unwrap()
}

pub fn chat_request(key: &str, body: &str) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

pub fn simple_chat(model: &str, content: &str) -> String {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": content}]}).to_string()
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    /// Asserts this is an error in exactly the SPEC shape and returns (type, code, param).
    pub fn error(&self) -> (String, String, Option<String>) {
        assert_eq!(self.header("content-type"), Some("application/json"));
        let value = self.json();
        let object = value.as_object().expect("object");
        assert_eq!(object.len(), 1, "only 'error': {value}");
        let error = object["error"].as_object().expect("error object");
        let mut keys: Vec<_> = error.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["code", "message", "param", "type"], "{value}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
        (
            error["type"].as_str().unwrap().to_string(),
            error["code"].as_str().unwrap_or("").to_string(),
            error["param"].as_str().map(str::to_string),
        )
    }
    pub fn message(&self) -> String {
        self.json()["error"]["message"].as_str().unwrap_or("").to_string()
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Sends `bytes` on a fresh connection and reads one response.
pub fn send_one(addr: SocketAddr, bytes: &[u8]) -> Response {
    let stream = connect(addr);
    (&stream).write_all(bytes).unwrap();
    let mut reader = BufReader::new(stream);
    read_response(&mut reader).expect("a response")
}

/// Reads one response (Content-Length or chunked body); `None` on a clean EOF before any byte.
pub fn read_response<R: BufRead>(reader: &mut R) -> Option<Response> {
    let mut status_line = String::new();
    if reader.read_line(&mut status_line).ok()? == 0 {
        return None;
    }
    let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut response = Response { status, headers, body: Vec::new() };
    if status == 100 {
        return Some(response);
    }
    if response.header("transfer-encoding") == Some("chunked") {
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line).ok()?;
            let size = usize::from_str_radix(size_line.trim(), 16).ok()?;
            if size == 0 {
                let mut end = String::new();
                reader.read_line(&mut end).ok()?;
                break;
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            response.body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = response.header("content-length") {
        let mut body = vec![0; length.parse().ok()?];
        reader.read_exact(&mut body).ok()?;
        response.body = body;
    }
    Some(response)
}

/// Reads the metrics text from the admin listener.
pub fn metrics(admin: SocketAddr) -> String {
    send_one(admin, b"GET /metrics HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n").text()
}

/// The value of one metric line (exact name with labels), 0 if absent.
pub fn metric(admin: SocketAddr, name_with_labels: &str) -> u64 {
    metrics(admin)
        .lines()
        .find_map(|line| line.strip_prefix(name_with_labels).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(0)
}

/// A CA and a `localhost` / 127.0.0.1 server certificate it signed, written as PEM files.
pub fn write_certificates(directory: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let server_key = rcgen::KeyPair::generate().unwrap();
    let mut server_params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    server_params.subject_alt_names.push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();
    let paths = (directory.join("ca.pem"), directory.join("server.pem"), directory.join("server.key"));
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, server_cert.pem()).unwrap();
    std::fs::write(&paths.2, server_key.serialize_pem()).unwrap();
    (paths.0, paths.1, paths.2)
}

/// Sends `request` `sequential` times on one keep-alive connection, then `per_client` times on
/// each of `clients` concurrent connections; every answer must be a 200.
pub fn send_many(api: SocketAddr, request: &str, sequential: usize, clients: usize, per_client: usize) {
    let run = |count: usize| {
        let stream = connect(api);
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        for _ in 0..count {
            (&stream).write_all(request.as_bytes()).unwrap();
            let response = read_response(&mut reader).unwrap();
            assert_eq!(response.status, 200, "{}", response.text());
        }
    };
    run(sequential);
    std::thread::scope(|scope| {
        for _ in 0..clients {
            scope.spawn(|| run(per_client));
        }
    });
}

/// The next SSE `data:` payload of a streamed answer being read line by line.
pub fn next_sse_data<R: BufRead>(reader: &mut R) -> Option<String> {
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Some(data) = line.strip_prefix("data: ") {
            return Some(data.trim_end().to_string());
        }
    }
}
