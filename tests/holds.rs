//! Holds that cover what an upstream can bill (SPEC §9, issue 10), tried as a customer or an
//! attacker would, over real sockets: media parts held at the model's allowance, prompt-bearing
//! keys the gateway does not know counted, media refused with the exact part on a model without
//! an allowance, clamping announced when the client gave no `max_tokens`, and the operator-loss
//! counter saturating when an upstream reports absurd usage.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use support::gateway::*;
use support::http::*;
use support::wait::wait_for;

const SECRET_MODEL: &str = "vendor/vision-model";
/// 1 USD per million tokens, in nano-USD per token.
const NANOS_PER_TOKEN: u64 = 1000;

/// `fikra-flash` on the upstream at `addr`, 1 USD/1M in and out, 1,105 tokens per image.
fn vision_config(addr: SocketAddr) -> String {
    format!(
        r#"
[[upstreams]]
name = "vision"
base_url = "http://{addr}/v1"

[[models]]
id = "fikra-flash"
upstream = "vision"
upstream_model = "{SECRET_MODEL}"
input_usd_per_million = "1"
output_usd_per_million = "1"
max_output_tokens = 8192
max_image_input_tokens = 1105
"#
    )
}

/// An upstream that answers every chat request with a completion reporting `usage` (the raw
/// JSON of a usage object), and sends each request body it received to the returned channel.
fn billing_upstream(usage: &'static str) -> (SocketAddr, Receiver<serde_json::Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (received, bodies) = channel();
    std::thread::spawn(move || {
        for connection in listener.incoming() {
            let (Ok(connection), received) = (connection, received.clone()) else { return };
            std::thread::spawn(move || serve_connection(connection, &received, usage));
        }
    });
    (addr, bodies)
}

/// Answers the requests of one kept-alive connection until the gateway closes it.
fn serve_connection(connection: TcpStream, received: &Sender<serde_json::Value>, usage: &str) {
    let mut writer = connection.try_clone().unwrap();
    let mut reader = BufReader::new(connection);
    loop {
        let mut content_length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(value) = lower.strip_prefix("content-length:") {
                content_length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; content_length];
        reader.read_exact(&mut body).unwrap();
        let _ = received.send(serde_json::from_slice(&body).unwrap());
        let answer = format!(
            r#"{{"id":"c","object":"chat.completion","created":1,"model":"{SECRET_MODEL}","choices":[{{"index":0,"message":{{"role":"assistant","content":"ok"}},"finish_reason":"stop"}}],"usage":{usage}}}"#
        );
        let head =
            format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", answer.len());
        if writer.write_all(head.as_bytes()).and_then(|()| writer.write_all(answer.as_bytes())).is_err() {
            return;
        }
    }
}

/// `{"model":"fikra-flash","messages":[{"role":"user","content":[<parts>]}]}`
fn parts_request(parts: &[String]) -> String {
    format!(r#"{{"model":"fikra-flash","messages":[{{"role":"user","content":[{}]}}]}}"#, parts.join(","))
}

fn image_part(url: &str) -> String {
    format!(r#"{{"type":"image_url","image_url":{{"url":"{url}"}}}}"#)
}

/// Nano-USD as the admin API's decimal USD.
fn usd(nanos: u64) -> String {
    format!("{}.{:09}", nanos / 1_000_000_000, nanos % 1_000_000_000)
}

// Goal (issue 10, first bullet): twenty short remote images are held at 20 x 1,105 tokens, not
// by their bytes. The body is 1,405 bytes; less the model member (21) and the twenty 31-byte
// payloads (620), 764 bytes count, + 22,100 for the images + 8 + 8 = an input bound of 22,880
// tokens. A wallet of (22,880 + 100) x 1,000 nano-USD therefore affords exactly 100 output
// tokens: the upstream is asked for 100 and the answer says `x-fikra-max-tokens-clamped: 100`.
// The upstream then bills 22,100 prompt + 100 completion tokens, inside the hold: charged in
// full (22,200,000 nano-USD), operator loss 0.
#[test]
fn twenty_images_are_held_at_their_allowance_and_billed_in_full() {
    let (addr, bodies) = billing_upstream(r#"{"prompt_tokens":22100,"completion_tokens":100,"total_tokens":22200}"#);
    let gateway = TestGateway::start(&vision_config(addr));
    let credit = (22_880 + 100) * NANOS_PER_TOKEN;
    let key = gateway.account_with_key("viewer", &usd(credit), "live");
    let mut parts = vec![r#"{"type":"text","text":"Describe these."}"#.to_string()];
    parts.extend((0..20).map(|n| image_part(&format!("https://x.test/{n:02}.png"))));
    let body = parts_request(&parts);
    assert_eq!(body.len(), 1405);

    let response = gateway.chat(&key, &body);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("x-fikra-max-tokens-clamped"), Some("100"));
    let sent = bodies.recv().unwrap();
    assert_eq!((sent["max_tokens"].as_u64(), sent["model"].as_str()), (Some(100), Some(SECRET_MODEL)));
    assert_eq!(sent["messages"][0]["content"].as_array().map(Vec::len), Some(21));

    let record = &gateway.usage("viewer")[0];
    assert_eq!((record["prompt_tokens"].as_u64(), record["completion_tokens"].as_u64()), (Some(22_100), Some(100)));
    assert_eq!(record["cost_usd"], "0.022200000");
    assert_eq!(gateway.balance_nanos("viewer"), credit - 22_200 * NANOS_PER_TOKEN);
    assert_eq!(gateway.account("viewer")["held_usd"], "0.000000000");
    assert_eq!(metric(gateway.admin, "fikra_operator_loss_nanos_total"), 0);
    assert_eq!(metric(gateway.admin, "fikra_charged_nanos_total"), 22_200_000);
}

// Goal (issue 10, first bullet, second half): prompt-bearing keys the gateway does not know
// count whole. With `prediction` and `documents` of 1,000 bytes of text each the body is 2,138
// bytes; less the model member (21) and + 8 + 8, the bound is 2,133 tokens at 500 nano-USD
// (fikra-flash on the sandbox): 1,066,999 nano-USD is one short of the cheapest answer (402,
// needing 2,134 x 500), and 1,091,500 affords exactly 50 output tokens.
#[test]
fn unknown_prompt_keys_are_held() {
    let gateway = TestGateway::start("");
    let body = format!(
        r#"{{"model":"fikra-flash","messages":[{{"role":"user","content":"hi"}}],"prediction":{{"type":"content","content":"{}"}},"documents":[{{"text":"{}"}}]}}"#,
        "p".repeat(1000),
        "d".repeat(1000)
    );
    assert_eq!(body.len(), 2138);

    let short = gateway.account_with_key("short", &usd(2_133 * 500 + 499), "live");
    let refused = gateway.chat(&short, &body);
    assert_eq!(refused.status, 402, "{}", refused.text());
    assert_eq!(refused.error().1, "insufficient_quota");
    assert!(refused.message().contains("this request needs at least 0.001067000 USD"), "{}", refused.message());

    let enough = gateway.account_with_key("enough", &usd((2_133 + 50) * 500), "live");
    let served = gateway.chat(&enough, &body);
    assert_eq!(served.status, 200, "{}", served.text());
    assert_eq!(served.header("x-fikra-max-tokens-clamped"), Some("50"));
}

// Goal: media on a model without an allowance is refused before anything is held: 400
// unsupported_parameter with `param` naming the part as `messages[i].content[j]` (from 0).
// The reference fikra-flash has no image allowance; a model with one but no audio allowance
// refuses audio the same way.
#[test]
fn media_without_an_allowance_is_refused_with_the_part() {
    // Two sandbox models at 0.5/0.5 with the reference cap; only fikra-eyes takes images.
    let model = |id: &str, allowance: &str| {
        format!(
            "[[models]]\nid = \"{id}\"\nupstream = \"sandbox\"\ninput_usd_per_million = \"0.5\"\noutput_usd_per_million = \"0.5\"\nmax_output_tokens = 8192\n{allowance}\n"
        )
    };
    let gateway =
        TestGateway::start(&(model("fikra-flash", "") + &model("fikra-eyes", "max_image_input_tokens = 765")));
    let key = gateway.account_with_key("media", "1.00", "live");
    let image = image_part("https://x.test/cat.png");
    let audio = r#"{"type":"input_audio","input_audio":{"data":"UklGRg==","format":"wav"}}"#;
    let text = r#"{"type":"text","text":"What is this?"}"#;
    let messages =
        format!(r#"[{{"role":"system","content":"Be brief."}},{{"role":"user","content":[{text},{image}]}}]"#);
    let cases = [
        (
            format!(r#"{{"model":"fikra-flash","messages":{messages}}}"#),
            "messages[1].content[1]",
            "Unsupported parameter: 'messages[1].content[1]' is an image part, and the model 'fikra-flash' does not accept image input.",
        ),
        (
            format!(r#"{{"model":"fikra-eyes","messages":[{{"role":"user","content":[{image},{text},{audio}]}}]}}"#),
            "messages[0].content[2]",
            "Unsupported parameter: 'messages[0].content[2]' is an audio part, and the model 'fikra-eyes' does not accept audio input.",
        ),
    ];
    for (body, param, message) in cases {
        let response = gateway.chat(&key, &body);
        assert_eq!(response.status, 400, "{}", response.text());
        let expected = ("invalid_request_error".to_string(), "unsupported_parameter".to_string(), Some(param.into()));
        assert_eq!(response.error(), expected);
        assert_eq!(response.message(), message);
        assert!(response.header("x-request-id").is_some());
    }
    // The model with an image allowance serves the image request.
    let served = gateway.chat(&key, &format!(r#"{{"model":"fikra-eyes","messages":{messages}}}"#));
    assert_eq!(served.status, 200, "{}", served.text());
    let costs = gateway.usage_costs("media");
    assert_eq!(costs.len(), 1, "only the served request reached the ledger");
    assert_eq!(gateway.balance_nanos("media"), 1_000_000_000 - costs[0]);
}

// Goal (issue 10, second bullet): with no max_tokens and a wallet that affords less than the
// model's 8,192-token cap, the answer says so, unary and streamed. The 67-byte body less the
// model member (21), + 8 + 8, holds 62 input tokens = 31,000 nano-USD at 500; 33,500 nano-USD
// leave 2,500 = 5 output tokens: the sandbox answers 5 tokens, not its usual 16. Streamed, the
// body gains `,"stream":true` (14 bytes): the member leaves the bound, its comma (punctuation)
// stays, so 63 tokens are held and 34,000 nano-USD leave the same 5.
#[test]
fn an_unset_max_tokens_cut_by_the_wallet_is_announced() {
    let gateway = TestGateway::start("");
    for (account, stream, input_tokens) in [("unary", false, 62), ("streamed", true, 63)] {
        let key = gateway.account_with_key(account, &usd((input_tokens + 5) * 500), "live");
        let body = if stream {
            r#"{"model":"fikra-flash","messages":[{"role":"user","content":"hi"}],"stream":true}"#
        } else {
            r#"{"model":"fikra-flash","messages":[{"role":"user","content":"hi"}]}"#
        };
        assert_eq!(body.len(), if stream { 67 + 14 } else { 67 });
        let response = gateway.chat(&key, body);
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.header("x-fikra-max-tokens-clamped"), Some("5"), "{account}");
        // A stream is settled once its last event is out: wait for the record, bounded.
        let record = wait_for(Duration::from_secs(5), || gateway.usage(account).first().cloned());
        assert_eq!(record.map(|r| r["completion_tokens"].clone()), Some(5.into()), "{account}");
    }
    assert_eq!(metric(gateway.admin, "fikra_max_tokens_clamped_total"), 2);
    // A wallet that affords the model's cap hears nothing.
    let key = gateway.account_with_key("wealthy", "1.00", "live");
    let response = gateway.chat(&key, &simple_chat("fikra-flash", "hi"));
    assert_eq!((response.status, response.header("x-fikra-max-tokens-clamped")), (200, None));
}

// Goal (issue 10, third bullet): an upstream reporting u64::MAX prompt tokens costs the
// customer exactly the hold and the operator the rest, and the loss counter stops at u64::MAX
// instead of wrapping. The 83-byte body less the model (21) and `"max_tokens":10` (15), + 16,
// holds 63 input + 10 output tokens = 73,000 nano-USD at 1,000: the first loss is
// u64::MAX - 73,000, the second would wrap the counter and saturates it instead. (Two accounts:
// the true-up of such usage empties the first one's TPM bucket.)
#[test]
fn operator_loss_saturates_instead_of_wrapping() {
    let (addr, _bodies) = billing_upstream(
        r#"{"prompt_tokens":18446744073709551615,"completion_tokens":0,"total_tokens":18446744073709551615}"#,
    );
    let gateway = TestGateway::start(&vision_config(addr));
    let body = r#"{"model":"fikra-flash","messages":[{"role":"user","content":"hi"}],"max_tokens":10}"#;
    assert_eq!(body.len(), 83);
    let hold = 73_000;
    for (account, loss) in [("absurd-1", u64::MAX - hold), ("absurd-2", u64::MAX)] {
        let key = gateway.account_with_key(account, "1.00", "live");
        let response = gateway.chat(&key, body);
        assert_eq!(response.status, 200, "{}", response.text());
        let record = &gateway.usage(account)[0];
        assert_eq!(
            (record["prompt_tokens"].as_u64(), record["cost_usd"].as_str()),
            (Some(u64::MAX), Some("0.000073000"))
        );
        assert_eq!(gateway.balance_nanos(account), 1_000_000_000 - hold);
        assert_eq!(gateway.account(account)["held_usd"], "0.000000000");
        assert_eq!(metric(gateway.admin, "fikra_operator_loss_nanos_total"), loss);
    }
    assert_eq!(metric(gateway.admin, "fikra_charged_nanos_total"), 2 * hold);
}
