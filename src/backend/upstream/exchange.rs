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

use std::time::Duration;

use monoio::io::AsyncWriteRent;

use crate::backend::upstream::UpstreamTarget;
use crate::backend::upstream::client::{self, Pool, UpstreamFailure};
use crate::backend::upstream::proxy::kept;
pub use crate::backend::upstream::proxy::{ProxyRequest, ProxyResult, UpstreamRefusal, UpstreamTiming};
use crate::backend::upstream::rewrite;
use crate::backend::upstream::stream::relay_stream;
use crate::errors::ErrorKind;
use crate::http::response::{self, ClampHeader};
use crate::http::server::ResponseSink;
use crate::limits::{UPSTREAM_MAX_ERROR_BODY_BYTES, UPSTREAM_REQUEST_DEADLINE_MS};
use crate::openai::chat::write_backend_body;
use crate::openai::responses::answer::{self, AnswerFormat};
use crate::store::Outcome;

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
    let mut result = async {
        build_upstream_request(request_buffer, target, request);
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
            relay_stream(sink, exchange, target, pool, request, request_buffer).await
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

/// The request line, headers and rewritten body for the upstream, in `out`.
fn build_upstream_request(out: &mut Vec<u8>, target: &UpstreamTarget, request: &ProxyRequest<'_>) {
    out.clear();
    // The body first (its length goes in the head), then the head, then the head moves to the front.
    write_backend_body(
        request.body,
        request.chat,
        &request.model.upstream_model,
        request.admitted.output_cap_tokens,
        out,
    );
    let body_len = out.len();
    let accept = if request.chat.stream { "text/event-stream" } else { "application/json" };
    for part in [b"POST ", target.completions_path.as_bytes(), b" HTTP/1.1\r\nhost: ", target.host_header.as_bytes()] {
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
    let mut upstream_body = std::mem::take(&mut sink.scratch);
    upstream_body.clear();
    let deadline = Duration::from_millis(UPSTREAM_REQUEST_DEADLINE_MS);
    let read = match monoio::time::timeout(deadline, exchange.read_to_end(&mut upstream_body, target.response_timeout))
        .await
    {
        Ok(read) => read,
        Err(_) => Err(UpstreamFailure::Timeout),
    };
    if let Err(failure) = read {
        sink.scratch = kept(upstream_body);
        crate::log_warn_every!("upstream {}: body failed: {failure:?} (request {})", target.name, request.request_id);
        return ProxyResult::failed(failure);
    }
    exchange.finish_reusable(pool);
    rewritten.clear();
    let facts = rewrite::rewrite_object(&upstream_body, &request.names(), rewritten);
    sink.scratch = kept(upstream_body);
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
    let clamp = ClampHeader::new(request.clamped_to);
    let (pairs, count) = clamp.pairs();
    let context = request.context(sink.keep_alive);
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
    response::write_full(&mut sink.out, 200, "application/json", &pairs[..count], &context, body);
    let timing = UpstreamTiming { first_token_at_us: crate::clock::monotonic_us(), ..UpstreamTiming::default() };
    ProxyResult { status: Some(200), usage, outcome: Outcome::Completed, refusal: None, timing }
}
