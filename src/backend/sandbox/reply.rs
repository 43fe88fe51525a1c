//! The sandbox's answer on a client connection: a unary body or an SSE stream, each event
//! flushed the moment it is produced, with the request id, rate and clamp headers.
//!
//! Used in process by the gateway (test keys, sandbox-backed models) and by the standalone
//! sandbox server. It reports what it delivered for settlement; it never settles, and it never
//! writes an error (a refusal is the caller's to render).

use std::time::Duration;

use monoio::io::AsyncWriteRent;

use crate::backend::sandbox;
use crate::config::SandboxSettings;
use crate::http::response::{self, ClampHeader, ResponseContext};
use crate::http::server::ResponseSink;
use crate::ids::REQUEST_ID_LEN;
use crate::limits::SANDBOX_MAX_REQUEST_ID_BYTES;
use crate::metrics::WorkerMetrics;
use crate::openai::chat::ChatRequest;
use crate::store::RateSnapshot;

/// One completion to answer.
pub struct CompletionReply<'a> {
    /// Used for the completion id (`chatcmpl-<request_id>`).
    pub request_id: &'a str,
    /// The model name written into the answer.
    pub model_id: &'a str,
    pub output_cap_tokens: u64,
    /// `Some(cap)` adds `x-fikra-max-tokens-clamped: cap`.
    pub clamped_to: Option<u64>,
    pub chat: &'a ChatRequest<'a>,
    pub body: &'a [u8],
    pub rates: Option<&'a RateSnapshot>,
    pub created_unix_s: u64,
}

/// What the sandbox produced, for settlement.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SandboxUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// The client went away before the end of the answer.
    pub client_aborted: bool,
}

// A completion id is `chatcmpl-` plus the request id; a gateway request id is echoed whole.
const _: () = assert!(REQUEST_ID_LEN <= SANDBOX_MAX_REQUEST_ID_BYTES);

/// Writes the sandbox's answer to `reply` on `sink`, flushing each SSE event as it is produced.
pub async fn write_completion<S: AsyncWriteRent>(
    sink: &mut ResponseSink<S>,
    reply: &CompletionReply<'_>,
    settings: &SandboxSettings,
    metrics: &WorkerMetrics,
) -> SandboxUsage {
    let chat = reply.chat;
    let prompt_tokens = sandbox::prompt_tokens(chat.content_bytes, chat.message_count as u64);
    let completion_tokens = sandbox::completion_tokens(settings, reply.output_cap_tokens);
    let cut_by_cap = completion_tokens < settings.output_tokens;
    let seed = sandbox::seed_from(chat.last_user_content.slice(reply.body));
    let created = reply.created_unix_s;
    let model = reply.model_id;

    let mut id_bytes = [0u8; 9 + SANDBOX_MAX_REQUEST_ID_BYTES];
    let request_id = &reply.request_id.as_bytes()[..reply.request_id.len().min(SANDBOX_MAX_REQUEST_ID_BYTES)];
    id_bytes[..9].copy_from_slice(b"chatcmpl-");
    id_bytes[9..9 + request_id.len()].copy_from_slice(request_id);
    let completion_id = std::str::from_utf8(&id_bytes[..9 + request_id.len()]).unwrap_or("chatcmpl-0");

    let clamp = ClampHeader::new(reply.clamped_to);
    let (pairs, count) = clamp.pairs();
    let extra_headers = &pairs[..count];
    let context =
        ResponseContext { request_id: Some(reply.request_id), rates: reply.rates, keep_alive: sink.keep_alive };
    let started = crate::clock::timer_now();
    let delivered = |completion_tokens: u64, client_aborted: bool| SandboxUsage {
        prompt_tokens,
        completion_tokens,
        client_aborted,
    };

    if !chat.stream {
        if completion_tokens > 0 {
            let generation_ms = sandbox::emit_offset_ms(settings, completion_tokens - 1);
            if generation_ms > 0 {
                monoio::time::sleep_until(started + Duration::from_millis(generation_ms)).await;
            }
        }
        sink.scratch.clear();
        sandbox::write_unary_body(
            &mut sink.scratch,
            completion_id,
            model,
            created,
            seed,
            completion_tokens,
            prompt_tokens,
            cut_by_cap,
        );
        WorkerMetrics::add(&metrics.sandbox_chunks_emitted, completion_tokens);
        let body = std::mem::take(&mut sink.scratch);
        response::write_full(&mut sink.out, 200, "application/json", extra_headers, &context, &body);
        sink.scratch = body;
        return delivered(completion_tokens, false);
    }

    // The sink frames the stream as the client's HTTP version allows (chunked, or close-delimited).
    sink.start_stream(200, "text/event-stream", extra_headers, &context);
    let start = sink.out.len();
    sandbox::write_role_chunk(&mut sink.out, completion_id, model, created);
    sink.frame_event(start);
    if sink.flush().await.is_err() {
        return delivered(0, true);
    }
    for index in 0..completion_tokens {
        let offset_ms = sandbox::emit_offset_ms(settings, index);
        if offset_ms > 0 {
            monoio::time::sleep_until(started + Duration::from_millis(offset_ms)).await;
        }
        let start = sink.out.len();
        sandbox::write_content_chunk(
            &mut sink.out,
            completion_id,
            model,
            created,
            seed,
            index,
            index + 1 == completion_tokens,
        );
        sink.frame_event(start);
        WorkerMetrics::add(&metrics.sandbox_chunks_emitted, 1);
        if sink.flush().await.is_err() {
            return delivered(index, true);
        }
    }
    let start = sink.out.len();
    sandbox::write_finish_chunk(&mut sink.out, completion_id, model, created, cut_by_cap);
    if chat.include_usage_requested {
        sandbox::write_usage_chunk(&mut sink.out, completion_id, model, created, prompt_tokens, completion_tokens);
    }
    sandbox::write_done(&mut sink.out);
    sink.frame_event(start);
    // The end of the stream is flushed by the connection loop after the caller has settled, so a
    // client that has read the whole answer always sees the charge already made.
    sink.end_stream();
    delivered(completion_tokens, false)
}
