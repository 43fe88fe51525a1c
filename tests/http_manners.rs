//! SPEC §8.3 HTTP manners over real sockets, asserting exact bytes: HEAD answered like GET
//! without a body, the Host rule, HTTP/1.0 clients (close-delimited streams, keep-alive
//! echoed), and the lingering close that lets a client that writes its whole body before
//! reading still read the refusal.

mod support;

use std::io::{BufReader, Cursor, Read, Write};

use support::gateway::*;
use support::http::*;

/// Every byte the server sends on one connection until it closes.
fn read_until_close(stream: &std::net::TcpStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut reader = stream;
    reader.read_to_end(&mut bytes).expect("read until the server closes");
    bytes
}

/// Sends `bytes` on a fresh connection and returns everything the server sends until it closes.
fn exchange_until_close(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let stream = connect(addr);
    (&stream).write_all(bytes).unwrap();
    read_until_close(&stream)
}

/// Splits `bytes` after the first response head: (head text, the bytes after it).
fn split_head(bytes: &[u8]) -> (String, &[u8]) {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete head") + 4;
    (String::from_utf8(bytes[..end].to_vec()).unwrap(), &bytes[end..])
}

/// Parses one response head (status line, then lower-cased header names) from its text; the
/// body stays empty whatever the head declares.
fn parse_head_text(head: &str) -> Response {
    let mut lines = head.trim_end_matches("\r\n").split("\r\n");
    let status = lines.next().and_then(|line| line.split(' ').nth(1)).and_then(|s| s.parse().ok()).expect("status");
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').expect("name: value");
            (name.trim().to_ascii_lowercase(), value.trim().to_string())
        })
        .collect();
    Response { status, headers, body: Vec::new() }
}

/// Header names and values that legitimately differ between two answers to the same request.
fn comparable(response: &Response, ignore_length: bool) -> Vec<(String, String)> {
    response
        .headers
        .iter()
        .filter(|(name, _)| {
            !(name == "date"
                || name == "x-request-id"
                || name == "connection"
                || name.starts_with("x-ratelimit-")
                || (ignore_length && name == "content-length"))
        })
        .cloned()
        .collect()
}

/// Sends HEAD `path` then GET `path` pipelined in one write (the GET closes), and checks the
/// HEAD answer is exactly the GET's head with no body byte between the two answers.
fn assert_head_like_get(addr: std::net::SocketAddr, path: &str, authorization: &str, content_length_varies: bool) {
    let request =
        |method: &str, close: &str| format!("{method} {path} HTTP/1.1\r\nhost: t\r\n{authorization}{close}\r\n");
    let batch = format!("{}{}", request("HEAD", ""), request("GET", "connection: close\r\n"));
    let bytes = exchange_until_close(addr, batch.as_bytes());
    let (head_text, rest) = split_head(&bytes);
    let head = parse_head_text(&head_text);
    // The very next byte after the HEAD answer's head is the GET answer's status line.
    assert!(
        rest.starts_with(b"HTTP/1.1 "),
        "{path}: stray bytes after the HEAD answer: {:?}",
        &rest[..rest.len().min(80)]
    );
    let get = read_response(&mut Cursor::new(rest)).expect("the GET answer");
    assert_eq!(head.status, get.status, "{path}");
    assert_eq!(comparable(&head, content_length_varies), comparable(&get, content_length_varies), "{path}");
    let declared: usize = head.header("content-length").expect("content-length").parse().unwrap();
    if content_length_varies {
        assert!(declared > 0, "{path}");
    } else {
        assert_eq!(declared, get.body.len(), "{path}: the HEAD content-length is the GET body's");
    }
    assert!(!get.body.is_empty(), "{path}");
}

// Goal: HEAD on every GET resource of both listeners answers with the GET's status and headers
// (content-length of the body GET sends) and zero body bytes, proven by the next pipelined
// answer starting right after the head. /metrics changes between two reads, so only its
// length's presence is compared.
#[test]
fn head_answers_like_get_without_a_body() {
    let gateway = TestGateway::start("");
    let key = gateway.account_with_key("header", "1.00", "live");
    let bearer = format!("authorization: Bearer {key}\r\n");
    assert_head_like_get(gateway.api, "/v1/models", &bearer, false);
    assert_head_like_get(gateway.api, "/v1/models/fikra-flash", &bearer, false);
    // Errors too: an unknown model (404) and a missing key (401) keep their heads, lose bodies.
    assert_head_like_get(gateway.api, "/v1/models/fikra-nonexistent", &bearer, false);
    assert_head_like_get(gateway.api, "/v1/models", "", false);
    assert_head_like_get(gateway.admin, "/healthz", "", false);
    assert_head_like_get(gateway.admin, "/readyz", "", false);
    assert_head_like_get(gateway.admin, "/metrics", "", true);
    let admin_bearer = format!("authorization: Bearer {ADMIN_TOKEN}\r\n");
    assert_head_like_get(gateway.admin, "/admin/accounts/header", &admin_bearer, false);
    assert_head_like_get(gateway.admin, "/admin/accounts/header/usage", &admin_bearer, false);
}

// Goal: HEAD on a POST-only path gets 405 with `allow: POST` and no body; HEAD on an unknown
// path gets 404 with no body; a POST to a GET resource gets 405 with `allow: GET, HEAD`.
#[test]
fn head_errors_have_no_body_and_get_resources_allow_head() {
    let gateway = TestGateway::start("");
    let batch = "HEAD /v1/chat/completions HTTP/1.1\r\nhost: t\r\n\r\n\
                 HEAD /v1/nope HTTP/1.1\r\nhost: t\r\n\r\n\
                 POST /v1/models HTTP/1.1\r\nhost: t\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
    let bytes = exchange_until_close(gateway.api, batch.as_bytes());
    let (first_text, rest) = split_head(&bytes);
    let first = parse_head_text(&first_text);
    assert_eq!(first.status, 405);
    assert_eq!(first.header("allow"), Some("POST"));
    assert_eq!(first.header("content-type"), Some("application/json"));
    assert!(first.header("content-length").unwrap().parse::<usize>().unwrap() > 0);
    assert!(rest.starts_with(b"HTTP/1.1 404 "), "{:?}", String::from_utf8_lossy(&rest[..rest.len().min(80)]));
    let (second_text, rest) = split_head(rest);
    assert_eq!(parse_head_text(&second_text).status, 404);
    assert!(rest.starts_with(b"HTTP/1.1 405 "), "{:?}", String::from_utf8_lossy(&rest[..rest.len().min(80)]));
    let third = read_response(&mut Cursor::new(rest)).unwrap();
    assert_eq!(third.header("allow"), Some("GET, HEAD"));
    assert_eq!(third.error().1, "method_not_allowed");
    // The admin listener's 405 lists HEAD too, and its HEAD answer has no body either.
    let admin = format!(
        "HEAD /admin/accounts HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {ADMIN_TOKEN}\r\nconnection: close\r\n\r\n"
    );
    let bytes = exchange_until_close(gateway.admin, admin.as_bytes());
    let (head_text, rest) = split_head(&bytes);
    let head = parse_head_text(&head_text);
    assert_eq!(head.status, 405);
    assert_eq!(head.header("allow"), Some("GET, HEAD, POST, PUT, DELETE"));
    assert_eq!(rest, b"", "no body after a HEAD answer");
}

// Goal: an HTTP/1.1 request without a Host header, or with two, gets 400 malformed_request
// with a message naming Host, `connection: close`, and then EOF.
#[test]
fn missing_or_duplicate_host_gets_400_and_close() {
    let gateway = TestGateway::start("");
    let key = gateway.account_with_key("hostless", "1.00", "live");
    let cases = [
        (format!("GET /v1/models HTTP/1.1\r\nauthorization: Bearer {key}\r\n\r\n"), "must have a Host header"),
        (
            format!("GET /v1/models HTTP/1.1\r\nhost: a\r\nHost: a\r\nauthorization: Bearer {key}\r\n\r\n"),
            "More than one Host",
        ),
    ];
    for (request, message) in cases {
        let bytes = exchange_until_close(gateway.api, request.as_bytes());
        let response = read_response(&mut Cursor::new(&bytes)).expect("a response");
        assert_eq!(response.status, 400, "{request:?}");
        assert_eq!(response.error(), ("invalid_request_error".into(), "malformed_request".into(), None));
        assert!(response.message().contains(message), "{}", response.message());
        assert_eq!(response.header("connection"), Some("close"));
        // Nothing follows the one answer: read_until_close returned at EOF.
        let head_len = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(bytes.len(), head_len + response.body.len(), "{request:?}");
    }
    // The admin listener follows the same rule.
    let response = send_one(gateway.admin, b"GET /healthz HTTP/1.1\r\n\r\n");
    assert_eq!(response.status, 400);
}

// Goal: an HTTP/1.0 request without Host is served; without `Connection: keep-alive` it gets
// `connection: close` and the connection closes after the answer.
#[test]
fn http10_without_host_is_served_and_closed() {
    let gateway = TestGateway::start("");
    let key = gateway.account_with_key("old", "1.00", "live");
    let request = format!("GET /v1/models HTTP/1.0\r\nauthorization: Bearer {key}\r\n\r\n");
    let bytes = exchange_until_close(gateway.api, request.as_bytes());
    let response = read_response(&mut Cursor::new(&bytes)).unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("connection"), Some("close"));
    assert_eq!(response.json()["object"], "list");
    let head_len = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(bytes.len(), head_len + response.body.len());
}

// Goal: `Connection: keep-alive` from an HTTP/1.0 client is honoured and echoed; a second
// request is served on the same connection, and a third without it closes the connection.
#[test]
fn http10_keep_alive_is_echoed_and_honoured() {
    let gateway = TestGateway::start("");
    let key = gateway.account_with_key("oldka", "1.00", "live");
    let stream = connect(gateway.api);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let keep = format!("GET /v1/models HTTP/1.0\r\nconnection: keep-alive\r\nauthorization: Bearer {key}\r\n\r\n");
    for _ in 0..2 {
        (&stream).write_all(keep.as_bytes()).unwrap();
        let response = read_response(&mut reader).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.header("connection"), Some("keep-alive"));
        assert_eq!(response.headers.iter().filter(|(name, _)| name == "connection").count(), 1);
    }
    // A chat answer (unary) echoes it too.
    let body = simple_chat("fikra-flash", "old client");
    let chat = format!(
        "POST /v1/chat/completions HTTP/1.0\r\nconnection: keep-alive\r\nauthorization: Bearer {key}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    (&stream).write_all(chat.as_bytes()).unwrap();
    let response = read_response(&mut reader).unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("connection"), Some("keep-alive"));
    assert_eq!(response.json()["object"], "chat.completion");
    // Without keep-alive, the connection closes after the answer.
    (&stream).write_all(format!("GET /v1/models HTTP/1.0\r\nauthorization: Bearer {key}\r\n\r\n").as_bytes()).unwrap();
    let response = read_response(&mut reader).unwrap();
    assert_eq!(response.header("connection"), Some("close"));
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"");
}

// Goal: a streamed answer to an HTTP/1.0 client has no chunked coding and no chunk framing:
// the body is the SSE events themselves, ending with `data: [DONE]` and then the close, even
// when the client asked for keep-alive.
#[test]
fn http10_stream_is_close_delimited() {
    let gateway = TestGateway::start("[sandbox]\noutput_tokens = 3\n");
    let key = gateway.account_with_key("oldstream", "1.00", "live");
    let body =
        serde_json::json!({"model": "fikra-flash", "stream": true, "messages": [{"role": "user", "content": "hi"}]})
            .to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.0\r\nconnection: keep-alive\r\nauthorization: Bearer {key}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let bytes = exchange_until_close(gateway.api, request.as_bytes());
    let (head_text, body) = split_head(&bytes);
    let head = parse_head_text(&head_text);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    assert_eq!(head.header("transfer-encoding"), None);
    assert_eq!(head.header("content-length"), None);
    assert_eq!(head.header("connection"), Some("close"));
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.starts_with("data: {"), "{text:?}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text:?}");
    // Every line is an SSE line or the blank line between events: no chunk-size lines.
    for line in text.split('\n') {
        assert!(line.is_empty() || line.starts_with("data: "), "{line:?} in {text:?}");
    }
    assert_eq!(text.matches("data: ").count(), 1 + 3 + 1 + 1, "role, 3 tokens, finish, [DONE]: {text}");
    // The same request over HTTP/1.1 is still chunked.
    let response = gateway.chat(
        &key,
        &serde_json::json!({"model": "fikra-flash", "stream": true, "messages": [{"role": "user", "content": "hi"}]})
            .to_string(),
    );
    assert_eq!(response.header("transfer-encoding"), Some("chunked"));
    assert!(response.text().ends_with("data: [DONE]\n\n"));
}

/// The head of a chat request declaring a `length`-byte body.
fn upload_head(key: &str, length: usize) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    )
}

const UPLOAD_BYTES: usize = 5 * 1024 * 1024;

// Goal: a client that writes a whole 5 MiB body before reading (as Python's http.client does)
// reads the complete 413 JSON and then EOF, not a reset: the refusal is followed by a lingering
// close that discards the body.
#[test]
fn refused_upload_is_read_by_a_client_that_writes_first() {
    let gateway = TestGateway::start("");
    let key = gateway.account_with_key("uploader", "1.00", "live");
    let stream = connect(gateway.api);
    (&stream).write_all(upload_head(&key, UPLOAD_BYTES).as_bytes()).unwrap();
    (&stream).write_all(&vec![b'x'; UPLOAD_BYTES]).expect("the whole body is accepted by the server");
    let bytes = read_until_close(&stream);
    let response = read_response(&mut Cursor::new(&bytes)).expect("the 413 answer");
    assert_eq!(response.status, 413);
    assert_eq!(response.error(), ("invalid_request_error".into(), "request_too_large".into(), None));
    assert_eq!(response.header("connection"), Some("close"));
    let head_len = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(bytes.len(), head_len + response.body.len());
    // The worker is still serving.
    assert_eq!(gateway.chat(&key, &simple_chat("fikra-flash", "after")).status, 200);
}

// Goal: the same with Python's urllib, when python3 is installed: it sends the whole 5 MiB and
// must get an HTTPError 413 whose body is the JSON error, not a connection reset.
#[test]
fn python_urllib_reads_the_413_of_a_large_upload() {
    let Ok(probe) = std::process::Command::new("python3").arg("-c").arg("pass").status() else {
        eprintln!("python3 not installed; skipped");
        return;
    };
    assert!(probe.success());
    let gateway = TestGateway::start("");
    let key = gateway.account_with_key("pyuploader", "1.00", "live");
    let script = r#"
import json, sys, urllib.request, urllib.error
url, key, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
request = urllib.request.Request(url, data=b"x" * size, method="POST",
    headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
try:
    urllib.request.urlopen(request, timeout=20)
    print("unexpected success")
except urllib.error.HTTPError as error:
    print(error.code, json.loads(error.read())["error"]["code"])
"#;
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(format!("http://{}/v1/chat/completions", gateway.api))
        .arg(&key)
        .arg(UPLOAD_BYTES.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.trim(), "413 request_too_large", "stderr: {}", String::from_utf8_lossy(&output.stderr));
}

// Goal: a HEAD refused by the framing layer (a declared body over the limit: 413) has no body
// either: the head, then EOF.
#[test]
fn head_refused_by_framing_has_no_body() {
    let gateway = TestGateway::start("");
    let request = format!("HEAD /v1/models HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n\r\n", 4 * 1024 * 1024 + 1);
    let bytes = exchange_until_close(gateway.api, request.as_bytes());
    let (head_text, rest) = split_head(&bytes);
    let head = parse_head_text(&head_text);
    assert_eq!(head.status, 413);
    assert_eq!(head.header("connection"), Some("close"));
    assert!(head.header("content-length").unwrap().parse::<usize>().unwrap() > 0);
    assert_eq!(rest, b"", "no body after a HEAD answer");
}

// Goal: a 431 (head over 32 KiB) followed by a body the client writes before reading is read
// in full by that client too: the lingering close covers every framing refusal.
#[test]
fn refused_head_is_read_by_a_client_that_writes_first() {
    let gateway = TestGateway::start("");
    let stream = connect(gateway.api);
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\nx-padding: {}\r\ncontent-length: {UPLOAD_BYTES}\r\n\r\n",
        "a".repeat(40 * 1024)
    );
    (&stream).write_all(head.as_bytes()).unwrap();
    (&stream).write_all(&vec![b'x'; UPLOAD_BYTES]).expect("the whole body is accepted by the server");
    let bytes = read_until_close(&stream);
    let response = read_response(&mut Cursor::new(&bytes)).expect("the 431 answer");
    assert_eq!(response.status, 431);
    assert_eq!(response.error().1, "headers_too_large");
}

const CORS: &str = "cors_origins = [\"https://app.example\", \"http://localhost:3000\"]\n";

// Goal: CORS is off by default: a preflight gets the plain 405 and no access-control header.
#[test]
fn cors_is_off_by_default() {
    let gateway = TestGateway::start("");
    let preflight = send_one(
        gateway.api,
        b"OPTIONS /v1/chat/completions HTTP/1.1\r\nhost: t\r\norigin: https://app.example\r\naccess-control-request-method: POST\r\nconnection: close\r\n\r\n",
    );
    assert_eq!((preflight.status, preflight.error().1.as_str()), (405, "method_not_allowed"));
    assert!(preflight.headers.iter().all(|(name, _)| !name.starts_with("access-control-")), "{:?}", preflight.headers);
}

// Goal: with `cors_origins`, a preflight from a listed origin gets 204 with the route's methods,
// the requested headers echoed, a max age and no body; real answers (successes and refusals)
// carry the origin and the exposed headers; an unlisted origin gets nothing extra.
#[test]
fn cors_answers_listed_origins_only() {
    let gateway = TestGateway::start(CORS);
    let key = gateway.account_with_key("browser", "1.00", "live");
    let bytes = exchange_until_close(
        gateway.api,
        b"OPTIONS /v1/chat/completions HTTP/1.1\r\nhost: t\r\norigin: https://app.example\r\naccess-control-request-method: POST\r\naccess-control-request-headers: authorization, content-type, x-stainless-os\r\nconnection: close\r\n\r\n",
    );
    let (head, body) = split_head(&bytes);
    let preflight = parse_head_text(&head);
    assert_eq!(preflight.status, 204, "{head}");
    assert!(body.is_empty() && preflight.header("content-length").is_none(), "{head}");
    assert_eq!(preflight.header("access-control-allow-origin"), Some("https://app.example"));
    assert_eq!(preflight.header("vary"), Some("origin"));
    assert_eq!(preflight.header("access-control-allow-methods"), Some("POST, OPTIONS"));
    assert_eq!(preflight.header("access-control-allow-headers"), Some("authorization, content-type, x-stainless-os"));
    assert_eq!(preflight.header("access-control-max-age"), Some("600"));

    let models_preflight = send_one(
        gateway.api,
        b"OPTIONS /v1/models HTTP/1.1\r\nhost: t\r\norigin: http://localhost:3000\r\naccess-control-request-method: GET\r\nconnection: close\r\n\r\n",
    );
    assert_eq!(models_preflight.status, 204);
    assert_eq!(models_preflight.header("access-control-allow-methods"), Some("GET, HEAD, OPTIONS"));
    assert_eq!(models_preflight.header("access-control-allow-headers"), Some("authorization, content-type"));

    let body = simple_chat("fikra-flash", "habari");
    let with_origin = |origin: &str, key: &str| {
        let request = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\norigin: {origin}\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        send_one(gateway.api, request.as_bytes())
    };
    let exposed = "x-request-id, x-ratelimit-limit-requests, x-ratelimit-remaining-requests, x-ratelimit-reset-requests, x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens, x-fikra-cost-usd, x-fikra-max-tokens-clamped, retry-after, retry-after-ms, x-should-retry";
    let answered = with_origin("https://app.example", &key);
    assert_eq!(answered.status, 200);
    assert_eq!(answered.header("access-control-allow-origin"), Some("https://app.example"));
    assert_eq!(answered.header("access-control-expose-headers"), Some(exposed));
    let refused = with_origin("https://app.example", "fk_live_0123456789abcdefghijABCDEFGHIJ01");
    assert_eq!((refused.status, refused.error().1.as_str()), (401, "invalid_api_key"));
    assert_eq!(refused.header("access-control-allow-origin"), Some("https://app.example"));

    for origin in ["https://evil.example", "https://app.example/"] {
        let answered = with_origin(origin, &key);
        assert_eq!(answered.status, 200);
        assert!(answered.headers.iter().all(|(name, _)| !name.starts_with("access-control-")), "{origin}");
        let preflight = send_one(
            gateway.api,
            format!("OPTIONS /v1/chat/completions HTTP/1.1\r\nhost: t\r\norigin: {origin}\r\naccess-control-request-method: POST\r\nconnection: close\r\n\r\n").as_bytes(),
        );
        assert_eq!(preflight.status, 405, "{origin}");
    }
}
