//! Dispatch of an admitted request to an upstream provider and relay of its answer.
//!
//! Owns the rules of SPEC §1-§3 for proxied requests: the body rewritten for the upstream
//! (upstream model name, granted output cap, usage forced on for streams, the upstream's own key),
//! unary answers and SSE events relayed with the public model id in place of the upstream's,
//! each SSE batch flushed the moment it arrives, usage captured (and the usage-only event dropped
//! unless the client asked for it), upstream failures turned into the error table's rows, and
//! the usage to settle with, whatever happened. It never lets an upstream body, header or model
//! name through.

use std::time::Duration;

use monoio::io::AsyncWriteRent;

use crate::backend::upstream::UpstreamTarget;
use crate::backend::upstream::client::{self, Pool, UpstreamFailure};
use crate::backend::upstream::rewrite::{self, EventKind, ReportedUsage};
use crate::clock::{deadline_after_ms, time_left};
use crate::errors::{ApiError, ErrorKind};
use crate::http::response::{self, ClampHeader, ResponseContext};
use crate::http::server::ResponseSink;
use crate::limits::{
    ABANDONED_STREAM_DRAIN_BYTES, ABANDONED_STREAM_DRAIN_MS, UPSTREAM_MAX_ERROR_BODY_BYTES,
    UPSTREAM_REQUEST_DEADLINE_MS,
};
use crate::openai::chat::{ChatRequest, write_backend_body};
use crate::openai::models::ModelEntry;
use crate::store::{Admitted, Outcome};

/// One admitted request on its way to an upstream.
pub struct ProxyRequest<'a> {
    pub request_id: &'a str,
    pub model: &'a ModelEntry,
    pub chat: &'a ChatRequest<'a>,
    pub body: &'a [u8],
    pub admitted: &'a Admitted,
    pub clamped_to: Option<u64>,
    pub input_tokens_upper: u64,
}

/// What the proxied request used, and how it ended: for settlement and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyResult {
    /// The status sent (200), or `None` when nothing was written and `refusal` says what to send.
    pub status: Option<u16>,
    pub usage: ReportedUsage,
    pub outcome: Outcome,
    /// Set when the upstream failed before any byte reached the client: the error-table row the
    /// caller renders (after settling).
    pub refusal: Option<UpstreamRefusal>,
}

/// An upstream failure before the response head, as the client should see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamRefusal {
    pub kind: ErrorKind,
    /// `retry-after` for upstream 429/503 (in ms).
    pub retry_after_ms: Option<u64>,
    /// The upstream's own message for 400/422, cleaned of the upstream model name.
    pub message: Option<String>,
}

impl ProxyResult {
    fn refused(kind: ErrorKind, retry_after_ms: Option<u64>, message: Option<String>) -> ProxyResult {
        ProxyResult {
            status: None,
            usage: ReportedUsage::default(),
            outcome: Outcome::BackendFailed,
            refusal: Some(UpstreamRefusal { kind, retry_after_ms, message }),
        }
    }

    fn failed(failure: UpstreamFailure) -> ProxyResult {
        let kind = match failure {
            UpstreamFailure::Timeout => ErrorKind::UpstreamTimeout,
            _ => ErrorKind::UpstreamUnavailable,
        };
        ProxyResult::refused(kind, None, None)
    }
}

/// Sends the request upstream and relays the answer onto `sink`. A failure before the response
/// head writes nothing and comes back as `ProxyResult::refusal`.
pub async fn proxy_completion<S: AsyncWriteRent>(
    sink: &mut ResponseSink<S>,
    target: &UpstreamTarget,
    upstream: usize,
    pool: &Pool,
    request: &ProxyRequest<'_>,
    request_buffer: &mut Vec<u8>,
) -> ProxyResult {
    build_upstream_request(request_buffer, target, request);
    let mut exchange = match client::start(target, upstream, pool, request_buffer).await {
        Ok(exchange) => exchange,
        Err(failure) => {
            crate::log_warn_every!("upstream {}: {failure:?} (request {})", target.name, request.request_id);
            return ProxyResult::failed(failure);
        }
    };
    let status = exchange.head.status;
    let retry_after_s = exchange.head.retry_after_s;
    if status != 200 {
        // Read (bounded) what the upstream said, for 400/422 messages and to keep the connection.
        let mut error_body = Vec::new();
        let complete = matches!(
            monoio::time::timeout(
                target.response_timeout,
                read_bounded(&mut exchange, &mut error_body, target.response_timeout)
            )
            .await,
            Ok(Ok(()))
        );
        if complete {
            exchange.finish(pool);
        }
        return refusal_for_status(status, retry_after_s, &error_body, request);
    }
    if request.chat.stream {
        relay_stream(sink, exchange, target, pool, request).await
    } else {
        relay_unary(sink, exchange, target, pool, request).await
    }
}

async fn read_bounded(
    exchange: &mut client::Exchange,
    out: &mut Vec<u8>,
    idle: Duration,
) -> Result<(), UpstreamFailure> {
    while !exchange.next_piece(out, idle).await? {
        if out.len() > UPSTREAM_MAX_ERROR_BODY_BYTES {
            return Err(UpstreamFailure::Malformed);
        }
    }
    Ok(())
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

fn context<'a>(
    request_id: &'a str,
    rates: Option<&'a crate::store::RateSnapshot>,
    keep_alive: bool,
) -> ResponseContext<'a> {
    ResponseContext { request_id: Some(request_id), rates, keep_alive }
}

/// Maps a non-200 upstream answer to the client's error-table row.
fn refusal_for_status(status: u16, retry_after_s: Option<u64>, body: &[u8], request: &ProxyRequest<'_>) -> ProxyResult {
    match status {
        429 | 503 => ProxyResult::refused(
            ErrorKind::ServiceUnavailable,
            Some(retry_after_s.unwrap_or(1).saturating_mul(1000)),
            None,
        ),
        400 | 422 => {
            let mut cleaned = Vec::new();
            if let Some(message) = rewrite::upstream_error_message(body) {
                rewrite::write_replacing(
                    &mut cleaned,
                    message.as_bytes(),
                    request.model.upstream_model.as_bytes(),
                    request.model.id.as_bytes(),
                );
            }
            // Upstream text arrives JSON-escaped; it is shown only if it is plain enough to pass as is.
            let message = String::from_utf8(cleaned).ok().filter(|m| !m.is_empty() && !m.contains('\\'));
            let kind =
                if status == 400 { ErrorKind::UpstreamRejectedRequest } else { ErrorKind::UpstreamUnprocessable };
            ProxyResult::refused(kind, None, message)
        }
        _ => {
            crate::log_warn_every!("upstream answered {status} (request {})", request.request_id);
            ProxyResult::refused(ErrorKind::UpstreamUnavailable, None, None)
        }
    }
}

async fn relay_unary<S: AsyncWriteRent>(
    sink: &mut ResponseSink<S>,
    mut exchange: client::Exchange,
    target: &UpstreamTarget,
    pool: &Pool,
    request: &ProxyRequest<'_>,
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
    let result = match read {
        Err(failure) => {
            sink.scratch = upstream_body;
            return ProxyResult::failed(if failure == UpstreamFailure::BrokenBody {
                UpstreamFailure::Malformed
            } else {
                failure
            });
        }
        Ok(()) => {
            exchange.finish(pool);
            let mut rewritten = Vec::with_capacity(upstream_body.len() + 16);
            rewrite::rewrite_object(&upstream_body, &request.model.id, &mut rewritten).map(|facts| (facts, rewritten))
        }
    };
    sink.scratch = upstream_body;
    let Some((facts, rewritten)) = result else {
        return ProxyResult::failed(UpstreamFailure::Malformed);
    };
    let usage = facts.usage.unwrap_or_else(|| estimate(request, request.admitted.output_cap_tokens));
    let clamp = ClampHeader::new(request.clamped_to);
    let (pairs, count) = clamp.pairs();
    let extra = &pairs[..count];
    let context = context(request.request_id, Some(&request.admitted.rates), sink.keep_alive);
    response::write_full(&mut sink.out, 200, "application/json", extra, &context, &rewritten);
    ProxyResult { status: Some(200), usage, outcome: Outcome::Completed, refusal: None }
}

/// Usage when the upstream never said: the prompt's upper bound and what was delivered.
fn estimate(request: &ProxyRequest<'_>, completion_tokens: u64) -> ReportedUsage {
    ReportedUsage::new(request.input_tokens_upper, completion_tokens)
}

async fn relay_stream<S: AsyncWriteRent>(
    sink: &mut ResponseSink<S>,
    mut exchange: client::Exchange,
    target: &UpstreamTarget,
    pool: &Pool,
    request: &ProxyRequest<'_>,
) -> ProxyResult {
    let clamp = ClampHeader::new(request.clamped_to);
    let (pairs, count) = clamp.pairs();
    let extra = &pairs[..count];
    let context = context(request.request_id, Some(&request.admitted.rates), sink.keep_alive);
    // The sink frames the stream as the client's HTTP version allows (chunked, or close-delimited).
    sink.start_stream(200, "text/event-stream", extra, &context);

    let mut payload = std::mem::take(&mut sink.scratch);
    payload.clear();
    let mut usage: Option<ReportedUsage> = None;
    let mut chunks_delivered: u64 = 0;
    let mut client_gone = sink.flush().await.is_err();
    let mut finished = false;
    let mut upstream_failed = false;
    let deadline = deadline_after_ms(UPSTREAM_REQUEST_DEADLINE_MS);
    while !finished {
        // A stream may not outlive its hold: past the deadline it ends like a failed upstream.
        let idle = target.response_timeout.min(time_left(deadline));
        let piece = exchange.next_piece(&mut payload, idle).await;
        let body_done = match piece {
            Ok(done) => done,
            Err(_) => {
                upstream_failed = true;
                true
            }
        };
        while let Some(end) = rewrite::next_event_end(&payload) {
            if client_gone {
                let mut discard = Vec::new();
                rewrite::rewrite_event(&payload[..end], &request.model.id, true, &mut usage, &mut discard);
            } else {
                let start = sink.out.len();
                match rewrite::rewrite_event(
                    &payload[..end],
                    &request.model.id,
                    request.chat.include_usage_requested,
                    &mut usage,
                    &mut sink.out,
                ) {
                    EventKind::Chunk => chunks_delivered += 1,
                    // Read on to the end of the body so the connection can go back to the pool.
                    EventKind::Done => {}
                    EventKind::Error | EventKind::Malformed => upstream_failed = true,
                    EventKind::DroppedUsage | EventKind::Ignored => {}
                }
                sink.frame_event(start);
            }
            payload.drain(..end);
            if upstream_failed {
                break;
            }
        }
        if upstream_failed {
            break;
        }
        if !client_gone && !sink.out.is_empty() && sink.flush().await.is_err() {
            client_gone = true;
        }
        if client_gone {
            // Keep reading the upstream a little to learn its usage, then stop.
            drain_for_usage(&mut exchange, &mut payload, &mut usage, request).await;
            break;
        }
        if body_done {
            finished = true;
        }
    }
    sink.scratch = payload;
    let outcome = if client_gone {
        Outcome::ClientAborted
    } else if upstream_failed {
        Outcome::BackendFailed
    } else {
        Outcome::Completed
    };
    if !client_gone {
        if upstream_failed {
            sink.write_error_event(&ApiError::with_text(
                ErrorKind::UpstreamUnavailable,
                "The model backend failed in the middle of the answer.",
            ));
        }
        // Flushed by the connection loop after settlement (see `backend::sandbox::reply`).
        sink.end_stream();
    }
    if !upstream_failed && !client_gone {
        exchange.finish(pool);
    }
    let usage = usage.unwrap_or_else(|| estimate(request, chunks_delivered));
    ProxyResult { status: Some(200), usage, outcome, refusal: None }
}

async fn drain_for_usage(
    exchange: &mut client::Exchange,
    payload: &mut Vec<u8>,
    usage: &mut Option<ReportedUsage>,
    request: &ProxyRequest<'_>,
) {
    let deadline = deadline_after_ms(ABANDONED_STREAM_DRAIN_MS);
    let mut discard = Vec::new();
    let mut drained = 0usize;
    while usage.is_none() && drained < ABANDONED_STREAM_DRAIN_BYTES {
        let left = time_left(deadline);
        if left.is_zero() {
            return;
        }
        let before = payload.len();
        let done = match exchange.next_piece(payload, left).await {
            Ok(done) => done,
            Err(_) => return,
        };
        drained += payload.len().saturating_sub(before);
        while let Some(end) = rewrite::next_event_end(payload) {
            discard.clear();
            rewrite::rewrite_event(&payload[..end], &request.model.id, true, usage, &mut discard);
            payload.drain(..end);
        }
        if done {
            return;
        }
    }
}
