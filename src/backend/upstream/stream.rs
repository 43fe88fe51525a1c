//! Relay of an upstream SSE stream to the client (SPEC §1, §9).
//!
//! Owns when a stream starts and how it ends: the client's stream head is written only once
//! the first data event is known to be a chunk (keep-alive comments before it are skipped), so
//! a stream that fails before its first chunk (an error event, `x_groq.error`, data that is not
//! SSE, a body that ends or stalls) is a plain 502/504 the SDKs retry, settled at zero. After
//! that, each batch of events is rewritten (public model id) and flushed as it arrives, usage is
//! taken from whichever event reports it, and a failure (error event, `x_groq.error`, malformed
//! data, an event over the size limit, a cut or a missing `[DONE]`) ends the stream with one
//! error event, charged for what was delivered. A client that leaves is followed a little
//! further for the upstream's usage. It never writes an upstream event it has not rewritten.

use monoio::io::AsyncWriteRent;

use crate::backend::upstream::UpstreamTarget;
use crate::backend::upstream::client::{self, Pool, UpstreamFailure};
use crate::backend::upstream::proxy::{ProxyRequest, ProxyResult, UpstreamTiming, kept};
use crate::backend::upstream::rewrite::{self, EventFinder, EventKind, ModelNames, ReportedUsage};
use crate::clock::{deadline_after_ms, time_left};
use crate::errors::{ApiError, ErrorKind};
use crate::http::response::ClampHeader;
use crate::http::server::ResponseSink;
use crate::limits::{ABANDONED_STREAM_DRAIN_BYTES, ABANDONED_STREAM_DRAIN_MS, UPSTREAM_REQUEST_DEADLINE_MS};
use crate::openai::responses::answer::{AnswerFormat, ResponsesStream};
use crate::openai::usage_cost::append_usage_cost;
use crate::store::Outcome;

pub(super) const MID_STREAM_FAILURE: &str = "The model backend failed in the middle of the answer.";

/// Where one relayed stream stands, whatever its events are (chat chunks here, native
/// Responses events in `responses_native`).
#[derive(Default)]
pub(super) struct StreamCore {
    /// The client's stream head was written (the first data event was a result).
    pub started: bool,
    /// The upstream's last event (`[DONE]`, a terminal Responses event) was relayed; later
    /// events are not.
    pub finished: bool,
    /// How the upstream failed, if it did.
    pub failure: Option<UpstreamFailure>,
    /// A write to the client failed (only possible once started).
    pub client_gone: bool,
    pub usage: Option<ReportedUsage>,
    /// Output events relayed (chunks, deltas): the completion estimate when usage never comes.
    pub delivered: u64,
    pub finder: EventFinder,
    /// `clock::monotonic_us` when the first output was written to the client.
    pub first_token_at_us: u64,
}

impl StreamCore {
    pub fn open(&self) -> bool {
        self.failure.is_none() && !self.finished
    }
}

/// One kind of upstream event stream, as the driver (`drive`) sees it.
pub(super) trait EventRelay {
    fn core(&mut self) -> &mut StreamCore;

    /// Relays (or judges, or drains) one complete event (its blank line included). `scratch`
    /// is free for the relay's own use.
    fn take_event<S: AsyncWriteRent>(
        &mut self,
        sink: &mut ResponseSink<S>,
        event: &[u8],
        names: &ModelNames<'_>,
        request: &ProxyRequest<'_>,
        scratch: &mut Vec<u8>,
    );

    /// Writes the one event that ends a started stream the upstream failed.
    fn write_failure<S: AsyncWriteRent>(&mut self, sink: &mut ResponseSink<S>, error: &ApiError<'_>);
}

/// A chat stream being relayed.
#[derive(Default)]
struct StreamState {
    core: StreamCore,
    /// The Responses translation of the chat events, for a Responses request.
    responses: Option<ResponsesStream>,
}

impl EventRelay for StreamState {
    fn core(&mut self) -> &mut StreamCore {
        &mut self.core
    }

    /// `scratch` holds an event while it is judged (the first) or discarded (client gone).
    fn take_event<S: AsyncWriteRent>(
        &mut self,
        sink: &mut ResponseSink<S>,
        event: &[u8],
        names: &ModelNames<'_>,
        request: &ProxyRequest<'_>,
        scratch: &mut Vec<u8>,
    ) {
        if !self.core.started {
            self.first_event(sink, event, names, request, scratch);
        } else if self.core.client_gone {
            scratch.clear();
            let kind = Self::relayed_event(&mut self.core.usage, event, names, true, request, scratch);
            self.core.finished = kind == EventKind::Done;
        } else if let (AnswerFormat::Responses(shape), Some(responses)) = (request.answer, self.responses.as_mut()) {
            scratch.clear();
            let kind = Self::relayed_event(&mut self.core.usage, event, names, true, request, scratch);
            let start = sink.out.len();
            responses.chat_events(shape, scratch, &mut sink.out);
            sink.frame_event(start);
            self.count(kind);
        } else {
            let start = sink.out.len();
            let include_usage = request.chat.include_usage_requested;
            let kind = Self::relayed_event(&mut self.core.usage, event, names, include_usage, request, &mut sink.out);
            sink.frame_event(start);
            self.count(kind);
        }
    }

    fn write_failure<S: AsyncWriteRent>(&mut self, sink: &mut ResponseSink<S>, error: &ApiError<'_>) {
        match self.responses.as_mut() {
            Some(responses) => {
                // The access log's `error_code`, as `write_error_event` sets it for chat.
                sink.error_code = Some(error.spec().code);
                let start = sink.out.len();
                responses.write_error(&mut sink.out, error.spec().code, MID_STREAM_FAILURE);
                sink.frame_event(start);
            }
            None => sink.write_error_event(error),
        }
    }
}

impl StreamState {
    /// The first data event decides: a chunk starts the client's stream, anything else but a
    /// comment fails it before a byte was written.
    fn first_event<S: AsyncWriteRent>(
        &mut self,
        sink: &mut ResponseSink<S>,
        event: &[u8],
        names: &ModelNames<'_>,
        request: &ProxyRequest<'_>,
        scratch: &mut Vec<u8>,
    ) {
        scratch.clear();
        let include_usage = request.chat.include_usage_requested;
        let kind = Self::relayed_event(&mut self.core.usage, event, names, include_usage, request, scratch);
        match kind {
            EventKind::Ignored => {}
            EventKind::Chunk | EventKind::DroppedUsage => {
                start_client_stream(sink, request);
                let start = sink.out.len();
                match (request.answer, self.responses.as_mut()) {
                    (AnswerFormat::Responses(shape), Some(responses)) => {
                        responses.chat_events(shape, scratch, &mut sink.out)
                    }
                    _ => sink.out.extend_from_slice(scratch),
                }
                sink.frame_event(start);
                self.core.started = true;
                self.core.first_token_at_us = crate::clock::monotonic_us();
                self.count(kind);
            }
            EventKind::Done | EventKind::Error | EventKind::NoResult | EventKind::Malformed => {
                self.core.failure = Some(UpstreamFailure::Malformed);
            }
        }
    }

    /// Rewrites `event` into `out` (`rewrite::rewrite_event`, usage captured into `usage`) and,
    /// when it is a chunk the client gets that reports usage, adds to that usage the charge
    /// settlement will make for it (`cost_usd`: its cost, at most the hold).
    fn relayed_event(
        usage: &mut Option<ReportedUsage>,
        event: &[u8],
        names: &ModelNames<'_>,
        include_usage: bool,
        request: &ProxyRequest<'_>,
        out: &mut Vec<u8>,
    ) -> EventKind {
        let start = out.len();
        let mut reported = None;
        let kind = rewrite::rewrite_event(event, names, include_usage, &mut reported, out);
        if let Some(reported) = reported {
            *usage = Some(reported);
            if kind == EventKind::Chunk {
                let rule = request.charge_rule();
                // The chunk is `data: <object>\n\n`.
                let json_end = out.len().saturating_sub(2);
                append_usage_cost(out, start + b"data: ".len(), json_end, rule.charge_for(&reported));
            }
        }
        kind
    }

    fn count(&mut self, kind: EventKind) {
        match kind {
            EventKind::Chunk => self.core.delivered += 1,
            EventKind::Done => self.core.finished = true,
            EventKind::Error | EventKind::Malformed => self.core.failure = Some(UpstreamFailure::Malformed),
            EventKind::DroppedUsage | EventKind::Ignored | EventKind::NoResult => {}
        }
    }
}

/// Writes the client's stream head (with the clamp header when the cap was lowered); the sink
/// frames the stream as the client's HTTP version allows (chunked, or close-delimited).
pub(super) fn start_client_stream<S: AsyncWriteRent>(sink: &mut ResponseSink<S>, request: &ProxyRequest<'_>) {
    let clamp = ClampHeader::new(request.clamped_to);
    let (pairs, count) = clamp.pairs();
    let context = request.context(sink.keep_alive);
    sink.start_stream(200, "text/event-stream", &pairs[..count], &context);
}

/// Relays the SSE body of `exchange` (its head said `text/event-stream`) onto `sink`.
pub async fn relay_stream<S: AsyncWriteRent>(
    sink: &mut ResponseSink<S>,
    exchange: client::Exchange,
    target: &UpstreamTarget,
    pool: &Pool,
    request: &ProxyRequest<'_>,
    scratch: &mut Vec<u8>,
) -> ProxyResult {
    let mut state = StreamState::default();
    if let AnswerFormat::Responses(shape) = request.answer {
        state.responses = Some(shape.start_stream());
    }
    let result = drive(sink, exchange, target, pool, request, scratch, &mut state).await;
    if let (AnswerFormat::Responses(shape), Some(responses)) = (request.answer, state.responses.take()) {
        shape.give_back_stream(responses);
    }
    result
}

/// Hands every complete event at the front of `pending` to `relay` while the stream is open;
/// returns how many bytes were taken. Bytes that cannot become an event within the size limit
/// fail the stream.
fn take_events<S: AsyncWriteRent, R: EventRelay>(
    relay: &mut R,
    sink: &mut ResponseSink<S>,
    pending: &[u8],
    request: &ProxyRequest<'_>,
    scratch: &mut Vec<u8>,
) -> usize {
    let names = request.names();
    let mut consumed = 0;
    while relay.core().open() {
        let Some(len) = relay.core().finder.next_end(&pending[consumed..]) else { break };
        let event = &pending[consumed..consumed + len];
        consumed += len;
        relay.take_event(sink, event, &names, request, scratch);
    }
    let core = relay.core();
    if core.open() && rewrite::event_too_large(pending.len() - consumed) {
        core.failure = Some(UpstreamFailure::Malformed);
    }
    consumed
}

/// Reads the upstream's events and hands them to `relay` as they arrive, flushing what it
/// wrote after each piece; then ends the client's stream (one failure event if the upstream
/// failed after the start) and reports the usage to settle with.
pub(super) async fn drive<S: AsyncWriteRent, R: EventRelay>(
    sink: &mut ResponseSink<S>,
    mut exchange: client::Exchange,
    target: &UpstreamTarget,
    pool: &Pool,
    request: &ProxyRequest<'_>,
    scratch: &mut Vec<u8>,
    relay: &mut R,
) -> ProxyResult {
    let mut payload = std::mem::take(&mut sink.scratch);
    payload.clear();
    // A stream may not outlive its hold: past the deadline it ends like a failed upstream.
    let deadline = deadline_after_ms(UPSTREAM_REQUEST_DEADLINE_MS);
    // Once the client is gone: how long and how much more is read to learn the usage.
    let mut drain_deadline = deadline;
    let mut drained_bytes = 0usize;
    loop {
        let wait = if relay.core().client_gone { time_left(drain_deadline) } else { time_left(deadline) };
        let before = payload.len();
        let piece = exchange.next_piece(&mut payload, target.response_timeout.min(wait)).await;
        drained_bytes += payload.len() - before;
        let consumed = take_events(relay, sink, &payload, request, scratch);
        payload.drain(..consumed);
        let state = relay.core();
        let body_done = match piece {
            Ok(done) => done,
            Err(failure) => {
                if state.open() {
                    state.failure = Some(failure);
                }
                true
            }
        };
        if body_done && state.open() {
            // The body ended before the upstream's last event: cut short.
            state.failure = Some(UpstreamFailure::BrokenBody);
        }
        if body_done || state.failure.is_some() {
            break;
        }
        if state.started && !state.client_gone && !sink.out.is_empty() && sink.flush().await.is_err() {
            state.client_gone = true;
            drain_deadline = deadline_after_ms(ABANDONED_STREAM_DRAIN_MS);
            drained_bytes = 0;
        }
        if state.client_gone
            && (state.usage.is_some()
                || state.finished
                || drained_bytes >= ABANDONED_STREAM_DRAIN_BYTES
                || time_left(drain_deadline).is_zero())
        {
            break;
        }
    }
    sink.scratch = kept(payload);
    let state = relay.core();
    if !state.started {
        let failure = state.failure.unwrap_or(UpstreamFailure::Malformed);
        crate::log_warn_every!(
            "upstream {}: the stream failed before its first chunk: {failure:?} (request {})",
            target.name,
            request.request_id
        );
        return ProxyResult::failed(failure);
    }
    let (client_gone, failure) = (state.client_gone, state.failure);
    let usage = state.usage.unwrap_or_else(|| request.estimate(state.delivered));
    let timing = UpstreamTiming { first_token_at_us: state.first_token_at_us, ..UpstreamTiming::default() };
    let outcome = if client_gone {
        Outcome::ClientAborted
    } else if failure.is_some() {
        Outcome::BackendFailed
    } else {
        Outcome::Completed
    };
    if !client_gone {
        if let Some(failure) = failure {
            crate::log_warn_every!(
                "upstream {}: the stream failed after it started: {failure:?} (request {})",
                target.name,
                request.request_id
            );
            relay.write_failure(sink, &ApiError::with_text(ErrorKind::UpstreamUnavailable, MID_STREAM_FAILURE));
        }
        // Flushed by the connection loop after settlement (see `backend::sandbox::reply`).
        sink.end_stream();
    }
    if failure.is_none() && !client_gone {
        exchange.finish_reusable(pool);
    }
    ProxyResult { status: Some(200), usage, outcome, refusal: None, timing }
}
