//! A small blocking HTTP/1.1 client that speaks raw bytes, so tests see exactly what a client on
//! the wire sees: connect, send one request, read one response (Content-Length or chunked),
//! the pieces of a chat request, SSE events, keep-alive load, and the metrics text.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a test client waits for any one read before it gives up.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Names in lower case, in the order received.
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

/// A free 127.0.0.1 port (closed again; the caller binds it soon after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
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

/// As `send_one`, for a server that may not be listening (yet): `None` instead of a panic.
pub fn try_send_one(addr: SocketAddr, bytes: &[u8], read_timeout: Duration) -> Option<Response> {
    let stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(read_timeout)).ok()?;
    (&stream).write_all(bytes).ok()?;
    read_response(&mut BufReader::new(stream))
}

/// Sends `request` on a fresh connection; the response and how long it took.
pub fn timed_send(addr: SocketAddr, request: &str) -> (Response, Duration) {
    let started = Instant::now();
    let response = send_one(addr, request.as_bytes());
    (response, started.elapsed())
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

pub fn chat_request(key: &str, body: &str) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

pub fn simple_chat(model: &str, content: &str) -> String {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": content}]}).to_string()
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

/// How many responses had each status.
pub fn tally(statuses: impl IntoIterator<Item = u16>) -> HashMap<u16, usize> {
    let mut counts = HashMap::new();
    for status in statuses {
        *counts.entry(status).or_insert(0) += 1;
    }
    counts
}
