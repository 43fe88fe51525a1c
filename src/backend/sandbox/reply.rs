//! The sandbox's answer on a client connection: a unary body or an SSE stream, each event
//! flushed the moment it is produced, with the request id, rate and clamp headers.
//!
//! Used in process by the gateway (test keys, sandbox-backed models) and by the standalone
//! sandbox server. It reports what it delivered for settlement; it never settles, and it never
//! writes an error (a refusal is the caller's to render).

use std::time::Duration;

use monoio::io::AsyncWriteRent;

use crate::backend::sandbox::{self, EventStamp};
use crate::clock::wall_stopwatch_us;
use crate::config::SandboxSettings;
use crate::http::response::{self, ClampHeader, ResponseContext};
use crate::http::server::ResponseSink;
use crate::ids::REQUEST_ID_LEN;
use crate::limits::SANDBOX_MAX_REQUEST_ID_BYTES;
use crate::metrics::WorkerMetrics;
use crate::money::{ChargeRule, TokenUsage};
use crate::openai::chat::ChatRequest;
use crate::openai::responses::answer::{AnswerFormat, ResponsesStream};
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
    /// Chat, or translated to the Responses API.
    pub answer: AnswerFormat<'a>,
    /// How the gateway charges this answer, for the `cost_usd` of a usage chunk; `None` for
    /// the standalone sandbox (it charges nobody).
    pub charge: Option<ChargeRule>,
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
    let completion_id = completion_id(reply.request_id, &mut id_bytes);

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
        match reply.answer {
            AnswerFormat::Chat => {
                response::write_full(&mut sink.out, 200, "application/json", extra_headers, &context, &body)
            }
            AnswerFormat::Responses(shape) => {
                let (mut items, mut translated) = (shape.lend_buffer(), shape.lend_buffer());
                // The sandbox's own body is always a completion with a choice.
                let _ = crate::openai::responses::answer::write_unary(&body, shape, &mut items, &mut translated);
                response::write_full(&mut sink.out, 200, "application/json", extra_headers, &context, &translated);
                shape.give_back(items);
                shape.give_back(translated);
            }
        }
        sink.scratch = body;
        return delivered(completion_tokens, false);
    }

    // The sink frames the stream as the client's HTTP version allows (chunked, or close-delimited).
    sink.start_stream(200, "text/event-stream", extra_headers, &context);
    let mut translator = match reply.answer {
        AnswerFormat::Chat => None,
        AnswerFormat::Responses(shape) => Some(shape.start_stream()),
    };
    let usage = write_stream(sink, reply, settings, metrics, &mut translator, seed, started).await;
    if let (AnswerFormat::Responses(shape), Some(stream)) = (reply.answer, translator) {
        shape.give_back_stream(stream);
    }
    SandboxUsage { prompt_tokens, ..usage }
}

/// Writes one chat event (by `write`) as is, or through the Responses translator, and frames it.
fn emit<S: AsyncWriteRent>(
    sink: &mut ResponseSink<S>,
    answer: AnswerFormat<'_>,
    translator: &mut Option<ResponsesStream>,
    write: impl FnOnce(&mut Vec<u8>),
) {
    let start = sink.out.len();
    match (answer, translator.as_mut()) {
        (AnswerFormat::Responses(shape), Some(stream)) => {
            sink.scratch.clear();
            write(&mut sink.scratch);
            stream.chat_events(shape, &sink.scratch, &mut sink.out);
        }
        _ => write(&mut sink.out),
    }
    sink.frame_event(start);
}

/// The streamed answer after its head; `prompt_tokens` of the result is filled by the caller.
async fn write_stream<S: AsyncWriteRent>(
    sink: &mut ResponseSink<S>,
    reply: &CompletionReply<'_>,
    settings: &SandboxSettings,
    metrics: &WorkerMetrics,
    translator: &mut Option<ResponsesStream>,
    seed: u64,
    started: monoio::time::Instant,
) -> SandboxUsage {
    let chat = reply.chat;
    let completion_tokens = sandbox::completion_tokens(settings, reply.output_cap_tokens);
    let cut_by_cap = completion_tokens < settings.output_tokens;
    let prompt_tokens = sandbox::prompt_tokens(chat.content_bytes, chat.message_count as u64);
    let (created, model, answer) = (reply.created_unix_s, reply.model_id, reply.answer);
    // The request reached the sandbox just before (no wait since the reply began).
    let received_us = settings.stamp_events.then(wall_stopwatch_us);
    let mut id_bytes = [0u8; 9 + SANDBOX_MAX_REQUEST_ID_BYTES];
    let completion_id = completion_id(reply.request_id, &mut id_bytes);
    let delivered = |completion_tokens: u64, client_aborted: bool| SandboxUsage {
        prompt_tokens: 0,
        completion_tokens,
        client_aborted,
    };
    emit(sink, answer, translator, |out| sandbox::write_role_chunk(out, completion_id, model, created));
    if sink.flush().await.is_err() {
        return delivered(0, true);
    }
    for index in 0..completion_tokens {
        let offset_ms = sandbox::emit_offset_ms(settings, index);
        if offset_ms > 0 {
            monoio::time::sleep_until(started + Duration::from_millis(offset_ms)).await;
        }
        let is_last = index + 1 == completion_tokens;
        let stamp = received_us.map(|received_us| EventStamp { received_us, sent_us: wall_stopwatch_us() });
        emit(sink, answer, translator, |out| {
            sandbox::write_content_chunk(out, completion_id, model, created, seed, index, is_last, stamp)
        });
        WorkerMetrics::add(&metrics.sandbox_chunks_emitted, 1);
        if sink.flush().await.is_err() {
            return delivered(index, true);
        }
    }
    emit(sink, answer, translator, |out| {
        sandbox::write_finish_chunk(out, completion_id, model, created, cut_by_cap);
        if chat.include_usage_requested {
            let cost = reply.charge.map(|rule| rule.charge_for(&TokenUsage::new(prompt_tokens, completion_tokens)));
            sandbox::write_usage_chunk(out, completion_id, model, created, prompt_tokens, completion_tokens, cost);
        }
        sandbox::write_done(out);
    });
    // The end of the stream is flushed by the connection loop after the caller has settled, so a
    // client that has read the whole answer always sees the charge already made.
    sink.end_stream();
    delivered(completion_tokens, false)
}

/// `chatcmpl-<request id>` in `bytes`.
fn completion_id<'b>(request_id: &str, bytes: &'b mut [u8; 9 + SANDBOX_MAX_REQUEST_ID_BYTES]) -> &'b str {
    let request_id = &request_id.as_bytes()[..request_id.len().min(SANDBOX_MAX_REQUEST_ID_BYTES)];
    bytes[..9].copy_from_slice(b"chatcmpl-");
    bytes[9..9 + request_id.len()].copy_from_slice(request_id);
    std::str::from_utf8(&bytes[..9 + request_id.len()]).unwrap_or("chatcmpl-0")
}
