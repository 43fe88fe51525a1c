//! Exact token counts when the byte bound alone would refuse or clamp (SPEC §9 last bullet,
//! issue 15), over real sockets on both stores: a 40 KB English message fits the Unverified
//! tier with `o200k_base` and is refused with `bytes`; a wallet just large enough for the exact
//! bound is served in full and one token short clamped by exactly one token; a standing TPM deny
//! entry answers each later request with its own figures; and, for random texts, the hold is
//! never below what an upstream counting with the same tokenizer bills. The upstream here is a
//! stand-in that counts prompts as gpt-oss's chat format does (o200k tokens of each message's
//! text plus four format tokens per message and three to open the answer).

// The stand-in upstream's gate is shared by its connection threads (a test-side lock).
#![allow(clippy::disallowed_types)]

mod support;

use std::io::BufReader;
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc::{Receiver, Sender, channel};

use support::gateway::*;
use support::http::*;
use support::scripted_upstream::{SECRET_MODEL, read_request_body, respond};

/// 0.5 USD per million tokens, in and out.
const PRICE_NANOS: u64 = 500;
const MODEL_CAP: u64 = 8192;
/// The gateway's template overhead: 8 tokens per message, 8 per request.
const OVERHEAD_ONE_MESSAGE: u64 = 16;

fn o200k() -> &'static tiktoken_rs::CoreBPE {
    tiktoken_rs::o200k_base_singleton()
}

fn tokens(text: &str) -> u64 {
    o200k().encode_ordinary(text).len() as u64
}

/// Ordinary English prose (no characters JSON escapes), `bytes` long.
fn prose(bytes: usize) -> String {
    const PROSE: &str = "The gateway holds enough of the prepaid wallet to pay for the worst case of every \
        request, then charges what the upstream reports and releases the rest. Customers in Nairobi \
        top up by M-Pesa or card, and their requests resume within a second. ";
    PROSE.chars().cycle().take(bytes).collect()
}

fn body(text: &str, max_tokens: Option<u64>) -> String {
    let cap = max_tokens.map(|cap| format!(r#","max_tokens":{cap}"#)).unwrap_or_default();
    format!(r#"{{"model":"fikra-flash","messages":[{{"role":"user","content":"{text}"}}]{cap}}}"#)
}

/// The byte bound of `body(text, max_tokens)`: every byte but the model and max_tokens members,
/// plus the overhead.
fn byte_bound(text: &str, max_tokens: Option<u64>) -> u64 {
    let cap_member = max_tokens.map_or(0, |cap| format!(r#","max_tokens":{cap}"#).len() - 1);
    (body(text, max_tokens).len() - r#""model":"fikra-flash""#.len() - cap_member) as u64 + OVERHEAD_ONE_MESSAGE
}

/// The counted bound: the byte bound with the text's bytes traded for its o200k tokens.
fn exact_bound(text: &str, max_tokens: Option<u64>) -> u64 {
    byte_bound(text, max_tokens) - text.len() as u64 + tokens(text)
}

/// What the stand-in upstream bills for one user message of `text`.
fn billed_prompt(text: &str) -> u64 {
    tokens(text) + 4 + 3
}

const COMPLETION_TOKENS: u64 = 20;

/// An upstream counting prompts like gpt-oss (see the module doc) and answering `min(max_tokens,
/// 20)` tokens; each request's `max_tokens` goes to the returned channel. With `gate`, it waits
/// for a message on it before answering (so a test can read the hold in flight).
fn counting_upstream(gate: Option<Receiver<()>>) -> (SocketAddr, Receiver<u64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (caps, received) = channel();
    let gate = std::sync::Arc::new(std::sync::Mutex::new(gate));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let (caps, gate): (Sender<u64>, _) = (caps.clone(), gate.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                while let Some(raw) = read_request_body(&mut reader) {
                    let request: serde_json::Value = serde_json::from_slice(&raw).unwrap();
                    assert_eq!(request["model"], SECRET_MODEL);
                    let prompt: u64 = request["messages"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|m| tokens(m["content"].as_str().unwrap_or("")) + 4)
                        .sum::<u64>()
                        + 3;
                    let cap = request["max_tokens"].as_u64().unwrap();
                    let _ = caps.send(cap);
                    if let Some(gate) = gate.lock().unwrap().as_ref() {
                        let _ = gate.recv();
                    }
                    let completion = cap.min(COMPLETION_TOKENS);
                    let answer = format!(
                        r#"{{"id":"c","object":"chat.completion","created":1,"model":"{SECRET_MODEL}","choices":[{{"index":0,"message":{{"role":"assistant","content":"ok"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{}}}}}"#,
                        prompt + completion
                    );
                    respond(&mut stream, "200 OK", "", &answer);
                }
            });
        }
    });
    (addr, received)
}

/// `fikra-flash` on the upstream at `addr` with `tokenizer`, on `store` ("" = embedded).
fn config(addr: SocketAddr, tokenizer: &str, store: &str) -> String {
    let base_url = format!("http://{addr}/v1");
    let model = format!("tokenizer = \"{tokenizer}\"");
    format!("{store}\n{}", support::scripted_upstream::upstream_model_config(&base_url, "", &model))
}

fn redis_store(test: &str) -> String {
    let redis = support::redis_server::shared_server();
    let prefix = support::redis_server::unique_prefix(test);
    format!("[store]\nredis_url = \"redis://{redis}\"\nkey_prefix = \"{prefix}\"\n")
}

/// Nano-USD as the admin API's decimal USD.
fn usd(nanos: u64) -> String {
    format!("{}.{:09}", nanos / 1_000_000_000, nanos % 1_000_000_000)
}

fn held_nanos(gateway: &TestGateway, account: &str) -> u64 {
    usd_to_nanos(gateway.account(account)["held_usd"].as_str().unwrap())
}

// The 40 KB case: admitted with o200k_base, its hold the exact bound (text tokens + the rest of
// the body at a token per byte + 16) plus the model's whole cap, charged what the upstream
// billed; refused as "too large" with bytes, saying the figure is a byte estimate.
fn forty_kilobytes(store: &str) {
    let text = prose(40 << 10);
    let (gate_open, gate) = channel();
    let (addr, caps) = counting_upstream(Some(gate));
    let gateway = TestGateway::start(&config(addr, "o200k_base", store));
    let key = gateway.account_with_key("forty", "1.00", "live");
    let exact = exact_bound(&text, None);
    assert!(exact + MODEL_CAP < 40_000 && byte_bound(&text, None) > 40_000, "the case of the issue");
    let api_body = body(&text, None);
    let served = std::thread::scope(|scope| {
        let call = scope.spawn(|| gateway.chat(&key, &api_body));
        assert_eq!(caps.recv().unwrap(), MODEL_CAP, "not clamped");
        assert_eq!(held_nanos(&gateway, "forty"), (exact + MODEL_CAP) * PRICE_NANOS);
        gate_open.send(()).unwrap();
        call.join().unwrap()
    });
    assert_eq!(served.status, 200, "{}", served.text());
    assert_eq!(served.header("x-fikra-max-tokens-clamped"), None);
    let record = &gateway.usage("forty")[0];
    let prompt = billed_prompt(&text);
    assert_eq!(record["prompt_tokens"].as_u64(), Some(prompt));
    assert_eq!(gateway.usage_costs("forty"), [(prompt + COMPLETION_TOKENS) * PRICE_NANOS]);
    assert_eq!(held_nanos(&gateway, "forty"), 0);
    assert_eq!(metric(gateway.admin, "fikra_operator_loss_nanos_total"), 0);
    assert_eq!(metric(gateway.admin, "fikra_tokenize_seconds_count"), 1);
    drop(gateway);

    let (addr, _caps) = counting_upstream(None);
    let gateway = TestGateway::start(&config(addr, "bytes", store));
    let key = gateway.account_with_key("forty-bytes", "1.00", "live");
    let refused = gateway.chat(&key, &api_body);
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.header("x-should-retry"), Some("false"));
    let bound = byte_bound(&text, None);
    assert_eq!(
        refused.message(),
        format!(
            "Request too large for tokens per min (TPM): Limit 40000, Requested {} (input estimated at one token per byte of input, plus the output cap). Lower max_tokens or shorten the messages.",
            bound + 1
        )
    );
    assert_eq!(gateway.usage("forty-bytes").len(), 0);
    assert_eq!(metric(gateway.admin, "fikra_tokenize_seconds_count"), 0);
}

#[test]
fn forty_kilobytes_fit_the_unverified_tier_when_counted_embedded() {
    forty_kilobytes("");
}

#[test]
fn forty_kilobytes_fit_the_unverified_tier_when_counted_on_redis() {
    forty_kilobytes(&redis_store("tok-forty"));
}

// A wallet of exactly (exact bound + 8,192) x price is served in full (the byte bound alone
// would have clamped it to a few thousand tokens); 500 nano-USD less is clamped to 8,191, with
// the hold exactly the wallet: (exact bound + 8,191) x price.
fn wallet_just_large_enough(store: &str) {
    let text = prose(4 << 10);
    let exact = exact_bound(&text, None);
    let bytes = byte_bound(&text, None);
    assert!(bytes > exact + 1_000, "the byte bound alone would clamp by over 1,000 tokens");
    let (gate_open, gate) = channel();
    let (addr, caps) = counting_upstream(Some(gate));
    let gateway = TestGateway::start(&config(addr, "o200k_base", store));
    let full = gateway.account_with_key("full", &usd((exact + MODEL_CAP) * PRICE_NANOS), "live");
    let short = gateway.account_with_key("short", &usd((exact + MODEL_CAP - 1) * PRICE_NANOS), "live");
    let api_body = body(&text, None);
    for (key, account, cap) in [(&full, "full", MODEL_CAP), (&short, "short", MODEL_CAP - 1)] {
        let answer = std::thread::scope(|scope| {
            let call = scope.spawn(|| gateway.chat(key, &api_body));
            assert_eq!(caps.recv().unwrap(), cap, "{account}");
            assert_eq!(held_nanos(&gateway, account), (exact + cap) * PRICE_NANOS, "{account}");
            gate_open.send(()).unwrap();
            call.join().unwrap()
        });
        assert_eq!(answer.status, 200, "{}", answer.text());
        let clamped = (cap < MODEL_CAP).then(|| cap.to_string());
        assert_eq!(answer.header("x-fikra-max-tokens-clamped"), clamped.as_deref(), "{account}");
        assert_eq!(gateway.usage_costs(account), [(billed_prompt(&text) + COMPLETION_TOKENS) * PRICE_NANOS]);
        assert_eq!(held_nanos(&gateway, account), 0);
    }
    assert_eq!(metric(gateway.admin, "fikra_operator_loss_nanos_total"), 0);
}

#[test]
fn wallet_just_large_enough_for_the_exact_bound_embedded() {
    wallet_just_large_enough("");
}

#[test]
fn wallet_just_large_enough_for_the_exact_bound_on_redis() {
    wallet_just_large_enough(&redis_store("tok-wallet"));
}

// Issue 15, point 4: after a request of about 39,000 tokens was refused by the TPM bucket, a
// request of about 41,000 is told it is too large (non-retryable) with its own figure, and a
// third of about 39,500 is told its own size, not the first one's.
fn deny_entry_figures(store: &str) {
    let (addr, _caps) = counting_upstream(None);
    let gateway = TestGateway::start(&config(addr, "bytes", store));
    let key = gateway.account_with_key("deny", "1.00", "live");
    // Takes about 20,000 of the 40,000 tokens (and keeps most: the upstream bills little).
    let first = gateway.chat(&key, &body(&prose(19_900), Some(100)));
    assert_eq!(first.status, 200, "{}", first.text());
    // Use the bucket up for real: a request billed nearly all it asked for is not needed, the
    // TPM charge is trued up, so fill it with requests that fit (each ~9,000 + 100).
    let mut filled = 0;
    while gateway.chat(&key, &body(&prose(9_000), Some(100))).status == 200 {
        filled += 1;
        assert!(filled < 100, "the bucket never filled");
    }
    let cases = [(38_900usize, true), (41_000, false), (39_400, true)];
    for (text_bytes, retryable) in cases {
        let text = prose(text_bytes);
        let refused = gateway.chat(&key, &body(&text, Some(100)));
        assert_eq!(refused.status, 429, "{}", refused.text());
        let requested = byte_bound(&text, Some(100)) + 100;
        let message = refused.message();
        if retryable {
            assert_eq!(refused.header("x-should-retry"), Some("true"), "{message}");
            assert!(message.contains(&format!(", Requested {requested}. ")), "{text_bytes}: {message}");
        } else {
            assert_eq!(refused.header("x-should-retry"), Some("false"), "{message}");
            assert!(
                message.starts_with(&format!(
                    "Request too large for tokens per min (TPM): Limit 40000, Requested {requested} (input estimated"
                )),
                "{message}"
            );
        }
    }
}

#[test]
fn a_deny_entry_answers_each_request_with_its_own_figures_embedded() {
    deny_entry_figures("");
}

#[test]
fn a_deny_entry_answers_each_request_with_its_own_figures_on_redis() {
    deny_entry_figures(&redis_store("tok-deny"));
}

/// A small deterministic generator (xorshift64*).
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Random text of words, digits, punctuation, whitespace and multi-byte characters; no
    /// character JSON must escape.
    fn text(&mut self, max_pieces: u64) -> String {
        const PIECES: [&str; 14] = ["a", "e", "k", "m", " ", "  ", "7", "42", ".", "?", "habari", "é", "中", "😀"];
        let count = 1 + self.next() % max_pieces;
        (0..count).map(|_| PIECES[(self.next() % PIECES.len() as u64) as usize]).collect()
    }
}

// Property: for random texts, with a wallet that affords exactly 100 output tokens on the exact
// bound (so the byte bound alone would refuse or clamp every one), each is admitted with a cap
// of exactly 100, its hold covers what the upstream bills (same tokenizer), and it is charged
// that in full: no operator loss.
fn holds_cover_what_a_matching_upstream_bills(store: &str) {
    let (addr, caps) = counting_upstream(None);
    let gateway = TestGateway::start(&config(addr, "o200k_base", store));
    let mut random = Random(0x5DEE_CE66_D1CE_4E5B);
    for case in 0..12 {
        let text = random.text(2_000);
        let exact = exact_bound(&text, None);
        assert!(tokens(&text) <= text.len() as u64);
        let account = format!("random-{case}");
        let key = gateway.account_with_key(&account, &usd((exact + 100) * PRICE_NANOS), "live");
        let answer = gateway.chat(&key, &body(&text, None));
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(caps.recv().unwrap(), 100);
        assert_eq!(answer.header("x-fikra-max-tokens-clamped"), Some("100"));
        let billed = billed_prompt(&text) + COMPLETION_TOKENS;
        assert!(billed <= exact + 100, "case {case}: billed {billed} above the hold's {}", exact + 100);
        assert_eq!(gateway.usage_costs(&account), [billed * PRICE_NANOS], "case {case}");
    }
    assert_eq!(metric(gateway.admin, "fikra_operator_loss_nanos_total"), 0);
}

#[test]
fn holds_cover_what_a_matching_upstream_bills_embedded() {
    holds_cover_what_a_matching_upstream_bills("");
}

#[test]
fn holds_cover_what_a_matching_upstream_bills_on_redis() {
    holds_cover_what_a_matching_upstream_bills(&redis_store("tok-random"));
}

/// The longest prose text whose bound (by `bound`) is at most `limit`.
fn longest_within(limit: u64, bound: impl Fn(&str) -> u64) -> usize {
    let (mut fits, mut too_long) = (0usize, 1 << 20);
    while too_long - fits > 1 {
        let middle = (fits + too_long) / 2;
        if bound(&prose(middle)) <= limit { fits = middle } else { too_long = middle }
    }
    fits
}

// The largest single message each tier admits, with and without a tokenizer (no max_tokens:
// the answer may be clamped down to one token by the TPM bucket, so the input bound may reach
// TPM - 1): the longest text is admitted and one byte more is refused as too large. Printed for
// the tuning guide.
#[test]
fn largest_message_each_tier_admits() {
    let (addr, _caps) = counting_upstream(None);
    let counted = TestGateway::start(&config(addr, "o200k_base", ""));
    let bytes = TestGateway::start(&config(addr, "bytes", ""));
    for (tier, tpm) in [("unverified", 40_000u64), ("trusted", 160_000)] {
        for (gateway, bound, name) in [
            (&counted, &(|text: &str| exact_bound(text, None)) as &dyn Fn(&str) -> u64, "o200k_base"),
            (&bytes, &|text: &str| byte_bound(text, None), "bytes"),
        ] {
            let longest = longest_within(tpm - 1, bound);
            let unclamped = longest_within(tpm - MODEL_CAP, bound);
            println!("{tier} ({tpm} TPM), {name}: longest admitted {longest} bytes; unclamped {unclamped} bytes");
            let account = format!("{tier}-{name}");
            let key = gateway.account_with_key(&account, "50.00", "live");
            if tier == "trusted" {
                let topup = format!(r#"{{"amount":"1","currency":"USD","reference":"{account}"}}"#);
                gateway.admin_json("POST", &format!("/admin/accounts/{account}/topups"), &topup, 200);
            }
            let refused = gateway.chat(&key, &body(&prose(longest + 1), None));
            assert_eq!((refused.status, refused.header("x-should-retry")), (429, Some("false")), "{}", refused.text());
            let served = gateway.chat(&key, &body(&prose(longest), None));
            assert_eq!(served.status, 200, "{}", served.text());
            assert_eq!(served.header("x-fikra-max-tokens-clamped"), Some("1"));
        }
    }
}
