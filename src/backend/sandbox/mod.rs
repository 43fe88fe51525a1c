//! The sandbox model: a deterministic, OpenAI-compatible simulated chat model.
//!
//! Owns what the sandbox says and how it reports usage: words drawn from a fixed vocabulary by a
//! seed taken from the request, one word per token, the prompt-token count it reports, and its
//! pacing (time to first token, tokens per second). It renders unary bodies and SSE events into
//! caller buffers without allocating. It performs no IO and never sleeps; `reply` puts an answer
//! on a connection, paced.

pub mod reply;

use std::io::Write;

use crate::config::SandboxSettings;
use crate::json::write_json_escaped;
use crate::money::Nanos;

/// Plain lowercase ASCII words (nothing JSON would escape).
const VOCABULARY: [&str; 64] = [
    "habari", "njema", "asante", "karibu", "safari", "rafiki", "jambo", "pole", "sana", "leo", "kesho", "jana", "maji",
    "chai", "kahawa", "mkate", "nyumba", "shamba", "mlima", "mto", "ziwa", "bahari", "jua", "mvua", "upepo", "nyota",
    "mwezi", "anga", "token", "model", "stream", "answer", "gateway", "wallet", "limit", "request", "the", "a",
    "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "and", "then", "rests", "under", "tree", "near", "river",
    "where", "birds", "sing", "softly", "every", "morning", "light", "falls", "on", "green", "hills", "again",
];

/// FNV-1a over `bytes`: the seed of a completion (same last user message, same answer).
pub fn seed_from(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

/// The prompt tokens the sandbox reports: about four bytes of message text per token (media
/// payloads are not text and cost the sandbox nothing) plus a small template overhead. Always
/// within the gateway's upper bound, which counts at least the content bytes, + 8 per message
/// + 8.
pub fn prompt_tokens(content_bytes: u64, message_count: u64) -> u64 {
    content_bytes.div_ceil(4) + 4 * message_count + 3
}

/// Tokens this completion emits: the configured length, cut to `max_tokens`.
pub fn completion_tokens(settings: &SandboxSettings, max_tokens: u64) -> u64 {
    settings.output_tokens.min(max_tokens)
}

/// When token `index` is emitted, in ms after the request started (no drift over long answers).
pub fn emit_offset_ms(settings: &SandboxSettings, index: u64) -> u64 {
    let spacing = index.saturating_mul(1000).checked_div(settings.tokens_per_second).unwrap_or(0);
    settings.time_to_first_token_ms.saturating_add(spacing)
}

/// Appends the text of token `index`: a word, with a leading space except the first, and a full
/// stop after the last.
pub fn write_token_text(out: &mut Vec<u8>, seed: u64, index: u64, is_last: bool) {
    let mixed = (seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    let word = VOCABULARY[((mixed >> 32) % VOCABULARY.len() as u64) as usize];
    if index > 0 {
        out.push(b' ');
    }
    out.extend_from_slice(word.as_bytes());
    if is_last {
        out.push(b'.');
    }
}

fn finish_reason(cut_by_length: bool) -> &'static str {
    if cut_by_length { "length" } else { "stop" }
}

fn write_chunk_prefix(out: &mut Vec<u8>, completion_id: &str, model: &str, created_unix_s: u64) {
    out.extend_from_slice(b"data: {\"id\":\"");
    write_json_escaped(out, completion_id);
    out.extend_from_slice(b"\",\"object\":\"chat.completion.chunk\",\"created\":");
    let _ = write!(out, "{created_unix_s}");
    out.extend_from_slice(b",\"model\":\"");
    write_json_escaped(out, model);
    out.extend_from_slice(b"\",\"system_fingerprint\":\"fikra-sandbox\",\"choices\":");
}

fn write_usage(out: &mut Vec<u8>, prompt_tokens: u64, completion_tokens: u64) {
    let _ = write!(
        out,
        "{{\"prompt_tokens\":{prompt_tokens},\"completion_tokens\":{completion_tokens},\"total_tokens\":{}}}",
        prompt_tokens + completion_tokens
    );
}

/// A whole `chat.completion` body.
#[allow(clippy::too_many_arguments)]
pub fn write_unary_body(
    out: &mut Vec<u8>,
    completion_id: &str,
    model: &str,
    created_unix_s: u64,
    seed: u64,
    completion_tokens: u64,
    prompt_tokens: u64,
    cut_by_length: bool,
) {
    out.extend_from_slice(b"{\"id\":\"");
    write_json_escaped(out, completion_id);
    out.extend_from_slice(b"\",\"object\":\"chat.completion\",\"created\":");
    let _ = write!(out, "{created_unix_s}");
    out.extend_from_slice(b",\"model\":\"");
    write_json_escaped(out, model);
    out.extend_from_slice(b"\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"");
    for index in 0..completion_tokens {
        write_token_text(out, seed, index, index + 1 == completion_tokens);
    }
    let _ = write!(out, "\"}},\"logprobs\":null,\"finish_reason\":\"{}\"}}],\"usage\":", finish_reason(cut_by_length));
    write_usage(out, prompt_tokens, completion_tokens);
    out.extend_from_slice(b",\"system_fingerprint\":\"fikra-sandbox\"}");
}

/// The first SSE event: the assistant role with empty content.
pub fn write_role_chunk(out: &mut Vec<u8>, completion_id: &str, model: &str, created_unix_s: u64) {
    write_chunk_prefix(out, completion_id, model, created_unix_s);
    out.extend_from_slice(
        b"[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
    );
}

/// When a stamped event's request reached the sandbox and when the event was written, in
/// wall-clock µs (`SandboxSettings::stamp_events`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct EventStamp {
    pub received_us: u64,
    pub sent_us: u64,
}

/// One content SSE event carrying token `index`, with `"x_sandbox_us":[received, sent]` after
/// its choices when `stamp` is given.
#[allow(clippy::too_many_arguments)]
pub fn write_content_chunk(
    out: &mut Vec<u8>,
    completion_id: &str,
    model: &str,
    created_unix_s: u64,
    seed: u64,
    index: u64,
    is_last: bool,
    stamp: Option<EventStamp>,
) {
    write_chunk_prefix(out, completion_id, model, created_unix_s);
    out.extend_from_slice(b"[{\"index\":0,\"delta\":{\"content\":\"");
    write_token_text(out, seed, index, is_last);
    out.extend_from_slice(b"\"},\"logprobs\":null,\"finish_reason\":null}]");
    if let Some(stamp) = stamp {
        let _ = write!(out, ",\"x_sandbox_us\":[{},{}]", stamp.received_us, stamp.sent_us);
    }
    out.extend_from_slice(b"}\n\n");
}

/// The SSE event carrying the finish reason.
pub fn write_finish_chunk(
    out: &mut Vec<u8>,
    completion_id: &str,
    model: &str,
    created_unix_s: u64,
    cut_by_length: bool,
) {
    write_chunk_prefix(out, completion_id, model, created_unix_s);
    let _ = write!(
        out,
        "[{{\"index\":0,\"delta\":{{}},\"logprobs\":null,\"finish_reason\":\"{}\"}}]}}\n\n",
        finish_reason(cut_by_length)
    );
}

/// The usage-only SSE event (`choices` empty), sent when the client asked for usage.
pub fn write_usage_chunk(
    out: &mut Vec<u8>,
    completion_id: &str,
    model: &str,
    created_unix_s: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cost: Option<Nanos>,
) {
    write_chunk_prefix(out, completion_id, model, created_unix_s);
    out.extend_from_slice(b"[],\"usage\":");
    write_usage(out, prompt_tokens, completion_tokens);
    if let Some(cost) = cost {
        // The usage object's closing brace makes way for the charge (SPEC §8.2).
        out.pop();
        out.extend_from_slice(b",\"cost_usd\":\"");
        out.extend_from_slice(cost.to_usd_text().as_bytes());
        out.extend_from_slice(b"\"}");
    }
    out.extend_from_slice(b"}\n\n");
}

/// The stream's terminator.
pub fn write_done(out: &mut Vec<u8>) {
    out.extend_from_slice(b"data: [DONE]\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(ttft: u64, tps: u64, len: u64) -> SandboxSettings {
        SandboxSettings {
            time_to_first_token_ms: ttft,
            tokens_per_second: tps,
            output_tokens: len,
            stamp_events: false,
        }
    }

    fn events(bytes: &[u8]) -> Vec<serde_json::Value> {
        let text = std::str::from_utf8(bytes).unwrap();
        assert!(text.ends_with("\n\n"));
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let data = e.strip_prefix("data: ").expect("one data line per event");
                assert!(!data.contains('\n'));
                serde_json::from_str(data).unwrap()
            })
            .collect()
    }

    // Goal: the unary body parses to the exact OpenAI shape and usage, and the stream's content
    // chunks concatenate to the same text.
    #[test]
    fn unary_and_stream_agree() {
        let seed = seed_from(b"hello");
        let mut unary = Vec::new();
        write_unary_body(&mut unary, "chatcmpl-1", "fikra-flash", 1700000000, seed, 5, 9, true);
        let value: serde_json::Value = serde_json::from_slice(&unary).unwrap();
        assert_eq!(value["object"], "chat.completion");
        assert_eq!(value["model"], "fikra-flash");
        assert_eq!(value["choices"][0]["finish_reason"], "length");
        assert_eq!(value["usage"], serde_json::json!({"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}));
        let content = value["choices"][0]["message"]["content"].as_str().unwrap().to_string();
        assert_eq!(content.split(' ').count(), 5);
        assert!(content.ends_with('.'));

        let mut stream = Vec::new();
        write_role_chunk(&mut stream, "chatcmpl-1", "fikra-flash", 1700000000);
        for index in 0..5 {
            write_content_chunk(&mut stream, "chatcmpl-1", "fikra-flash", 1700000000, seed, index, index == 4, None);
        }
        write_finish_chunk(&mut stream, "chatcmpl-1", "fikra-flash", 1700000000, true);
        write_usage_chunk(&mut stream, "chatcmpl-1", "fikra-flash", 1700000000, 9, 5, None);
        let parsed = events(&stream);
        assert_eq!(parsed.len(), 8);
        assert_eq!(parsed[0]["choices"][0]["delta"]["role"], "assistant");
        let streamed: String =
            parsed[1..6].iter().map(|e| e["choices"][0]["delta"]["content"].as_str().unwrap()).collect();
        assert_eq!(streamed, content);
        assert_eq!(parsed[6]["choices"][0]["finish_reason"], "length");
        assert_eq!(parsed[7]["choices"], serde_json::json!([]));
        assert_eq!(parsed[7]["usage"]["total_tokens"], 14);
        let mut done = Vec::new();
        write_done(&mut done);
        assert_eq!(done, b"data: [DONE]\n\n");
    }

    // Goal: a stamped content chunk is the same chunk plus `x_sandbox_us: [received, sent]`.
    #[test]
    fn stamped_chunk_adds_only_the_stamp() {
        let (mut plain, mut stamped) = (Vec::new(), Vec::new());
        write_content_chunk(&mut plain, "chatcmpl-1", "fikra-flash", 1700000000, 7, 0, false, None);
        let stamp = EventStamp { received_us: 1_764_000_000_000_001, sent_us: 1_764_000_000_020_345 };
        write_content_chunk(&mut stamped, "chatcmpl-1", "fikra-flash", 1700000000, 7, 0, false, Some(stamp));
        let (mut plain, stamped) = (events(&plain).remove(0), events(&stamped).remove(0));
        assert_eq!(stamped["x_sandbox_us"], serde_json::json!([1_764_000_000_000_001u64, 1_764_000_000_020_345u64]));
        plain["x_sandbox_us"] = stamped["x_sandbox_us"].clone();
        assert_eq!(plain, stamped);
    }

    // Goal: the same seed gives the same words; a different seed gives different words.
    #[test]
    fn deterministic_by_seed() {
        let text = |seed| {
            let mut out = Vec::new();
            for index in 0..12 {
                write_token_text(&mut out, seed, index, index == 11);
            }
            out
        };
        assert_eq!(text(seed_from(b"a")), text(seed_from(b"a")));
        assert_ne!(text(seed_from(b"a")), text(seed_from(b"b")));
    }

    // Goal: pacing is exact with no drift.
    #[test]
    fn emit_offsets() {
        let paced = settings(100, 20, 20);
        let offsets: Vec<u64> = (0..4).map(|i| emit_offset_ms(&paced, i)).collect();
        assert_eq!(offsets, [100, 150, 200, 250]);
        assert_eq!(emit_offset_ms(&settings(0, 3, 10), 3), 1000);
        assert_eq!(emit_offset_ms(&settings(0, 3, 10), 1), 333);
        assert_eq!(emit_offset_ms(&settings(7, 0, 10), 9), 7);
        assert_eq!(completion_tokens(&settings(0, 0, 16), 4), 4);
        assert_eq!(completion_tokens(&settings(0, 0, 16), 100), 16);
    }

    // Goal: reported prompt tokens never exceed the gateway's input upper bound.
    #[test]
    fn prompt_tokens_within_gateway_bound() {
        for bytes in [0u64, 1, 3, 4, 5, 100, 4097] {
            for messages in [1u64, 2, 50] {
                assert!(prompt_tokens(bytes, messages) <= bytes + 8 * messages + 8);
            }
        }
        assert_eq!(prompt_tokens(8, 1), 9);
    }

    // Goal: names with JSON-special characters are escaped.
    #[test]
    fn escapes_model_names() {
        let mut out = Vec::new();
        write_role_chunk(&mut out, "id\"1", "we\"ird", 1);
        let parsed = events(&out);
        assert_eq!(parsed[0]["model"], "we\"ird");
        assert_eq!(parsed[0]["id"], "id\"1");
    }
}
