//! The inputs every contender of `benches/packages.rs` gets, built once per run from fixed
//! text: chat requests and upstream answers of a target size, the SSE events of a Groq-style
//! stream, and that stream as an upstream sends it (one HTTP chunk per event).

/// Prose with the escapes real chat text carries (line breaks, quotes), cycled to any length.
const PROSE: &str = "Habari ya asubuhi! The gateway holds enough of the prepaid wallet to pay for the \
    worst case of every request,\nthen charges what the upstream reports and releases the rest. \
    \"Karibu sana\", rafiki: top up by M-Pesa or card.\n";

/// `bytes` characters of `PROSE`, as a JSON string literal (quotes and escapes included).
fn json_text(bytes: usize) -> String {
    let text: String = PROSE.chars().cycle().take(bytes).collect();
    serde_json::to_string(&text).expect("a string serializes")
}

/// The public model id clients name.
pub const PUBLIC_MODEL: &str = "fikra-flash";
/// The model id the upstream knows (and answers with).
pub const UPSTREAM_MODEL: &str = "llama-3.3-70b-versatile";

/// A streamed chat request as the OpenAI SDKs send one, of about `target_bytes`: a system
/// prompt and three turns whose contents share the size (the last user turn gets half).
pub fn chat_request(target_bytes: usize) -> Vec<u8> {
    let build = |share: usize| {
        format!(
            r#"{{"model":"{PUBLIC_MODEL}","messages":[{{"role":"system","content":"You are a helpful assistant. Answer in the user's language."}},{{"role":"user","content":{}}},{{"role":"assistant","content":{}}},{{"role":"user","content":{}}}],"max_tokens":256,"temperature":0.7,"stream":true,"stream_options":{{"include_usage":true}}}}"#,
            json_text(share),
            json_text(share),
            json_text(2 * share)
        )
    };
    let overhead = build(0).len();
    build(target_bytes.saturating_sub(overhead) / 4).into_bytes()
}

/// Tokens the generated answers report.
pub const PROMPT_TOKENS: u64 = 21;
pub const CACHED_TOKENS: u64 = 8;
pub const COMPLETION_TOKENS: u64 = 512;

/// A unary chat answer as Groq sends one, of about `target_bytes` (the message content takes
/// the size), with usage, details, `system_fingerprint` and `x_groq`.
pub fn upstream_answer(target_bytes: usize) -> Vec<u8> {
    let build = |content_bytes: usize| {
        format!(
            r#"{{"id":"chatcmpl-7f3c2a1b-9d4e-4c8a-b1f2-0a9e8d7c6b5a","object":"chat.completion","created":1764547200,"model":"{UPSTREAM_MODEL}","choices":[{{"index":0,"message":{{"role":"assistant","content":{}}},"logprobs":null,"finish_reason":"stop"}}],"usage":{{"queue_time":0.01,"prompt_tokens":{PROMPT_TOKENS},"prompt_time":0.002,"completion_tokens":{COMPLETION_TOKENS},"completion_time":0.21,"total_tokens":{},"total_time":0.212,"prompt_tokens_details":{{"cached_tokens":{CACHED_TOKENS}}},"completion_tokens_details":{{"reasoning_tokens":0}}}},"system_fingerprint":"fp_3f9a8b7c6d","x_groq":{{"id":"req_01jq8k2m3n4p5q6r7s8t9v0w1x"}}}}"#,
            json_text(content_bytes),
            PROMPT_TOKENS + COMPLETION_TOKENS
        )
    };
    let overhead = build(0).len();
    build(target_bytes.saturating_sub(overhead)).into_bytes()
}

/// Content chunks of the benched stream (plus a role chunk, a finish chunk, a usage-only chunk
/// and `[DONE]`).
pub const STREAM_CONTENT_CHUNKS: usize = 64;

/// The events of a streamed answer as Groq sends them, each `data: {...}\n\n`.
pub fn sse_events() -> Vec<Vec<u8>> {
    let head = format!(
        r#"{{"id":"chatcmpl-7f3c2a1b-9d4e-4c8a-b1f2-0a9e8d7c6b5a","object":"chat.completion.chunk","created":1764547200,"model":"{UPSTREAM_MODEL}","system_fingerprint":"fp_3f9a8b7c6d","choices":[{{"index":0,"delta":"#
    );
    let event = |delta: &str, finish: &str, extra: &str| {
        format!(r#"data: {head}{delta},"logprobs":null,"finish_reason":{finish}}}]{extra}}}"#).into_bytes()
    };
    let mut events = vec![event(
        r#"{"role":"assistant","content":""}"#,
        "null",
        r#","x_groq":{"id":"req_01jq8k2m3n4p5q6r7s8t9v0w1x"}"#,
    )];
    for index in 0..STREAM_CONTENT_CHUNKS {
        let word = ["habari", "ya", "asubuhi,", "karibu", "sana", "rafiki"][index % 6];
        events.push(event(&format!(r#"{{"content":" {word}"}}"#), "null", ""));
    }
    events.push(event("{}", r#""stop""#, ""));
    events.push(format!(r#"data: {{"id":"chatcmpl-7f3c2a1b-9d4e-4c8a-b1f2-0a9e8d7c6b5a","object":"chat.completion.chunk","created":1764547200,"model":"{UPSTREAM_MODEL}","system_fingerprint":"fp_3f9a8b7c6d","choices":[],"usage":{{"queue_time":0.01,"prompt_tokens":{PROMPT_TOKENS},"prompt_time":0.002,"completion_tokens":{STREAM_CONTENT_CHUNKS},"completion_time":0.21,"total_tokens":85,"total_time":0.212}},"x_groq":{{"id":"req_01jq8k2m3n4p5q6r7s8t9v0w1x"}}}}"#).into_bytes());
    events.push(b"data: [DONE]".to_vec());
    for event in &mut events {
        event.extend_from_slice(b"\n\n");
    }
    events
}

/// The JSON of one content chunk (an SSE event's data), the per-event case of the answer benches.
pub fn sse_chunk_json() -> Vec<u8> {
    let events = sse_events();
    let event = &events[1];
    event[b"data: ".len()..event.len() - 2].to_vec()
}

/// The stream's body as an upstream sends it: each event one HTTP chunk, then the last chunk.
pub fn chunked_stream() -> Vec<u8> {
    let mut wire = Vec::new();
    for event in sse_events() {
        wire.extend_from_slice(format!("{:x}\r\n", event.len()).as_bytes());
        wire.extend_from_slice(&event);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    wire
}
