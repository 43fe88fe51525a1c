//! Dispatch of an admitted request to an upstream provider and relay of its answer.
//!
//! Owns the rules of SPEC §1-§3 and §9 for proxied requests: the body rewritten for the upstream
//! (upstream model name, granted output cap, usage forced on for streams, the upstream's own key),
//! every answer classified before a byte of it is relayed (only a real result is a success:
//! error-shaped 200s, non-JSON bodies and streams that are not SSE become 502 and cost nothing),
//! unary answers relayed with the public model id in place of the upstream's (streams: the
//! `stream` module), upstream statuses turned into the error table's rows (Groq's 498 and 424,
//! context-length refusals included), and the usage to settle with, whatever happened. It never
//! lets an upstream body, header or model name through.

use monoio::io::AsyncWriteRent;

use crate::backend::upstream::UpstreamTarget;
use crate::backend::upstream::client::{self, Pool, UpstreamFailure};
pub use crate::backend::upstream::proxy::{ProxyRequest, ProxyResult, UpstreamRefusal, UpstreamTiming};
use crate::backend::upstream::responses_native;
use crate::backend::upstream::rewrite;
use crate::backend::upstream::stream::relay_stream;
use crate::backend::upstream::unary::{answered, read_rewritten};
use crate::errors::ErrorKind;
use crate::http::server::ResponseSink;
use crate::limits::UPSTREAM_MAX_ERROR_BODY_BYTES;
use crate::openai::chat::write_backend_body;
use crate::openai::responses::answer::{self, AnswerFormat, ResponseShape};

/// Sends the request upstream and relays the answer onto `sink`. A failure before the response
/// head (or an answer that is not a result) writes nothing and comes back as
/// `ProxyResult::refusal`. `request_buffer` holds the upstream request, then serves as scratch.
pub async fn proxy_completion<S: AsyncWriteRent>(
    sink: &mut ResponseSink<S>,
    target: &UpstreamTarget,
    upstream: usize,
    pool: &Pool,
    request: &ProxyRequest<'_>,
    request_buffer: &mut Vec<u8>,
) -> ProxyResult {
    let sent_at_us = crate::clock::monotonic_us();
    let mut head_at_us = 0;
    // `return` inside this block ends the exchange, not the function: every way out is timed.
    // A Responses request to an upstream that speaks the Responses API goes there as it is.
    let native = match request.answer {
        AnswerFormat::Responses(shape) if target.responses_path.is_some() => Some(shape),
        _ => None,
    };
    let mut result = async {
        build_upstream_request(request_buffer, target, request, native);
        let mut exchange = match client::start(target, upstream, pool, request_buffer).await {
            Ok(exchange) => exchange,
            Err(failure) => {
                crate::log_warn_every!("upstream {}: {failure:?} (request {})", target.name, request.request_id);
                return ProxyResult::failed(failure);
            }
        };
        head_at_us = crate::clock::monotonic_us();
        let status = exchange.head.status;
        let retry_after_s = exchange.head.retry_after_s;
        if status != 200 {
            // Read (bounded) what the upstream said, for 400/422 messages and to keep the connection.
            read_small_body(&mut exchange, target, pool, request_buffer).await;
            return refusal_for_status(status, retry_after_s, request_buffer, request);
        }
        if request.chat.stream {
            if !exchange.head.event_stream {
                crate::log_warn_every!(
                    "upstream {}: a stream answered without text/event-stream (request {})",
                    target.name,
                    request.request_id
                );
                read_small_body(&mut exchange, target, pool, request_buffer).await;
                return ProxyResult::failed(UpstreamFailure::Malformed);
            }
            match native {
                Some(shape) => {
                    responses_native::relay_stream(sink, exchange, target, pool, request, shape, request_buffer).await
                }
                None => relay_stream(sink, exchange, target, pool, request, request_buffer).await,
            }
        } else if native.is_some() {
            responses_native::relay_unary(sink, exchange, target, pool, request, request_buffer).await
        } else {
            relay_unary(sink, exchange, target, pool, request, request_buffer).await
        }
    }
    .await;
    result.timing.sent_at_us = sent_at_us;
    result.timing.head_at_us = head_at_us;
    result.timing.done_at_us = crate::clock::monotonic_us();
    result
}

/// Reads a body the client will not see (an error, a non-SSE stream) into `out`, up to
/// `UPSTREAM_MAX_ERROR_BODY_BYTES` and within the response timeout; the connection goes back
/// to the pool only if it was read to its end.
async fn read_small_body(exchange: &mut client::Exchange, target: &UpstreamTarget, pool: &Pool, out: &mut Vec<u8>) {
    out.clear();
    let idle = target.response_timeout;
    let read = async {
        while !exchange.next_piece(out, idle).await? {
            if out.len() > UPSTREAM_MAX_ERROR_BODY_BYTES {
                return Err(UpstreamFailure::Malformed);
            }
        }
        Ok(())
    };
    if let Ok(Ok(())) = monoio::time::timeout(idle, read).await {
        exchange.finish_reusable(pool);
    }
}

/// The request line, headers and rewritten body for the upstream, in `out`: the chat body to
/// `{base}/chat/completions`, or with `native`, the client's Responses body to `{base}/responses`.
fn build_upstream_request(
    out: &mut Vec<u8>,
    target: &UpstreamTarget,
    request: &ProxyRequest<'_>,
    native: Option<&ResponseShape<'_>>,
) {
    out.clear();
    // The body first (its length goes in the head), then the head, then the head moves to the front.
    let upstream_model = &request.model.upstream_model;
    let cap = request.admitted.output_cap_tokens;
    let path = match (native, &target.responses_path) {
        (Some(shape), Some(path)) => {
            responses_native::write_native_body(shape, upstream_model, cap, out);
            path
        }
        _ => {
            write_backend_body(request.body, request.chat, upstream_model, cap, out);
            &target.completions_path
        }
    };
    let body_len = out.len();
    let accept = if request.chat.stream { "text/event-stream" } else { "application/json" };
    for part in [b"POST ", path.as_bytes(), b" HTTP/1.1\r\nhost: ", target.host_header.as_bytes()] {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(b"\r\ncontent-type: application/json\r\naccept: ");
    out.extend_from_slice(accept.as_bytes());
    out.extend_from_slice(b"\r\ncontent-length: ");
    crate::digits::push_decimal(out, body_len as u64);
    out.extend_from_slice(b"\r\nx-request-id: ");
    out.extend_from_slice(request.request_id.as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(authorization) = &target.authorization {
        out.extend_from_slice(b"authorization: ");
        out.extend_from_slice(authorization.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.rotate_left(body_len);
}

/// Maps a non-200 upstream answer to the client's error-table row.
fn refusal_for_status(status: u16, retry_after_s: Option<u64>, body: &[u8], request: &ProxyRequest<'_>) -> ProxyResult {
    match status {
        // Groq's 498: its flex tier is out of capacity, a retry soon may pass.
        429 | 498 | 503 => ProxyResult::refused(UpstreamRefusal {
            retry_after_ms: Some(retry_after_s.unwrap_or(1).saturating_mul(1000)),
            ..UpstreamRefusal::new(ErrorKind::ServiceUnavailable)
        }),
        400 | 422 => {
            let error = rewrite::upstream_error(body).unwrap_or_default();
            let mut cleaned = Vec::new();
            if let Some(message) = error.message {
                rewrite::write_replacing(
                    &mut cleaned,
                    message.as_bytes(),
                    request.model.upstream_model.as_bytes(),
                    request.model.id.as_bytes(),
                );
            }
            // Upstream text arrives JSON-escaped; it is shown only if it is plain enough to pass as is.
            let message = String::from_utf8(cleaned).ok().filter(|m| !m.is_empty() && !m.contains('\\'));
            let (kind, param) = match status {
                400 if error.is_context_length() => (ErrorKind::ContextLengthExceeded, Some("messages")),
                400 => (ErrorKind::UpstreamRejectedRequest, None),
                _ => (ErrorKind::UpstreamUnprocessable, None),
            };
            ProxyResult::refused(UpstreamRefusal { param, message, ..UpstreamRefusal::new(kind) })
        }
        // Groq's 424 (a dependency of the request failed upstream) and everything else: the
        // upstream's trouble, not the client's.
        _ => {
            crate::log_warn_every!("upstream answered {status} (request {})", request.request_id);
            ProxyResult::failed(UpstreamFailure::Malformed)
        }
    }
}

async fn relay_unary<S: AsyncWriteRent>(
    sink: &mut ResponseSink<S>,
    mut exchange: client::Exchange,
    target: &UpstreamTarget,
    pool: &Pool,
    request: &ProxyRequest<'_>,
    rewritten: &mut Vec<u8>,
) -> ProxyResult {
    let facts = match read_rewritten(sink, &mut exchange, target, pool, request, rewritten).await {
        Ok(facts) => facts,
        Err(failed) => return failed,
    };
    let facts = match facts {
        Some(facts) if facts.is_result() => facts,
        _ => {
            crate::log_warn_every!(
                "upstream {}: a 200 that is not a completion (request {})",
                target.name,
                request.request_id
            );
            return ProxyResult::failed(UpstreamFailure::Malformed);
        }
    };
    let usage = facts.usage.unwrap_or_else(|| request.estimate(request.admitted.output_cap_tokens));
    let body: &[u8] = match request.answer {
        AnswerFormat::Chat => rewritten,
        AnswerFormat::Responses(shape) => {
            let mut items = shape.lend_buffer();
            // A result (checked above) always has a choice; the body is then well formed.
            let translated = answer::write_unary(rewritten, shape, &mut items, &mut sink.scratch);
            shape.give_back(items);
            if translated.is_none() {
                return ProxyResult::failed(UpstreamFailure::Malformed);
            }
            &sink.scratch
        }
    };
    answered(&mut sink.out, sink.keep_alive, request, body, usage)
}
