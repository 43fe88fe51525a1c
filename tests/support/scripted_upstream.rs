//! Raw TCP upstreams a test scripts connection by connection: each request the gateway sends is
//! read (head and Content-Length body, the upstream model name checked) and answered by the
//! test's script with exact wire bytes, so a test can make an upstream misbehave precisely as a
//! real one does (OpenAI and Groq wire formats: JSON bodies, chunked SSE).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The upstream model name tests hide behind the public id `fikra-flash`.
pub const SECRET_MODEL: &str = "vendor/secret-model-9b";

/// An upstream `up` at `base_url` (plus `upstream_extra` lines) serving the model `fikra-flash`
/// as `SECRET_MODEL` at 0.5 USD per million tokens in and out (plus `model_extra` lines).
pub fn upstream_model_config(base_url: &str, upstream_extra: &str, model_extra: &str) -> String {
    format!(
        r#"
[[upstreams]]
name = "up"
base_url = "{base_url}"
{upstream_extra}

[[models]]
id = "fikra-flash"
upstream = "up"
upstream_model = "{SECRET_MODEL}"
input_usd_per_million = "0.5"
output_usd_per_million = "0.5"
max_output_tokens = 8192
{model_extra}
"#
    )
}

/// An upstream that answers every request with `script(request_number, stream)`, one thread
/// per connection (the gateway's workers each keep their own pooled connections). Every request
/// must name `upstream_model`.
pub fn scripted_upstream(
    upstream_model: &'static str,
    script: impl Fn(usize, &mut TcpStream) + Send + Sync + 'static,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let script = Arc::new(script);
    let served = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming().take(100) {
            let Ok(mut stream) = stream else { return };
            let (script, served) = (script.clone(), served.clone());
            std::thread::spawn(move || {
                while read_request(&mut stream, upstream_model) {
                    script(served.fetch_add(1, Ordering::SeqCst), &mut stream);
                }
            });
        }
    });
    addr
}

/// Reads one request (head and Content-Length body) and checks it names `upstream_model`;
/// false on EOF.
pub fn read_request(stream: &mut TcpStream, upstream_model: &str) -> bool {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut length = 0usize;
    let mut line = String::new();
    let mut first = true;
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return false;
        }
        if first {
            assert!(line.starts_with("POST /v1/chat/completions HTTP/1.1"), "{line}");
            first = false;
        }
        if line == "\r\n" {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["model"], upstream_model);
    true
}

/// Answers with `status` and a JSON `body` of known length (`extra`: more header lines, each
/// ending in CRLF).
pub fn respond(stream: &mut TcpStream, status: &str, extra: &str, body: &str) {
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}\r\n{body}",
        body.len()
    );
}

/// Answers 200 with a chunked SSE body: each of `events` (complete, blank line included) in a
/// chunk of its own, then the last chunk.
pub fn respond_sse(stream: &mut TcpStream, events: &[String]) {
    let _ = write!(stream, "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n");
    for event in events {
        let _ = write!(stream, "{:x}\r\n{event}\r\n", event.len());
    }
    let _ = write!(stream, "0\r\n\r\n");
    let _ = stream.flush();
}

/// Reads one request's head and Content-Length body from `reader`; the body, or `None` on EOF.
pub fn read_request_body<R: BufRead>(reader: &mut R) -> Option<Vec<u8>> {
    let mut length = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(body)
}

/// Where `needle` first starts in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// The Content-Length of a request head (lower-case or capitalised, as clients write it).
fn content_length(head: &[u8]) -> usize {
    let at = find(head, b"content-length:").or_else(|| find(head, b"Content-Length:")).unwrap_or(head.len());
    let digits = head[at..].iter().skip(b"content-length:".len()).skip_while(|b| **b == b' ');
    digits.take_while(|b| b.is_ascii_digit()).fold(0, |n, b| n * 10 + usize::from(b - b'0'))
}

/// An upstream that allocates nothing per request (so it can run under a counting allocator):
/// each connection's thread reads a request into a fixed buffer and writes `streamed` when its
/// body asks for `"stream":true`, `unary` otherwise, both built once; returns its base URL.
pub fn fixed_answer_upstream(unary: &'static [u8], streamed: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buffer = [0u8; 16 * 1024];
                loop {
                    let mut filled = 0;
                    let complete = loop {
                        let Ok(read) = stream.read(&mut buffer[filled..]) else { return };
                        if read == 0 {
                            return;
                        }
                        filled += read;
                        if let Some(head_end) = find(&buffer[..filled], b"\r\n\r\n") {
                            let total = head_end + 4 + content_length(&buffer[..head_end]);
                            if filled >= total {
                                break total;
                            }
                        }
                    };
                    assert_eq!(filled, complete, "one request at a time");
                    let answer = if find(&buffer[..filled], b"\"stream\":true").is_some() { streamed } else { unary };
                    if stream.write_all(answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}/v1")
}
