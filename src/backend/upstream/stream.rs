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
use crate::money::ChargeRule;
use crate::openai::responses::answer::{AnswerFormat, ResponsesStream};
use crate::openai::usage_cost::append_usage_cost;
use crate::store::Outcome;

const MID_STREAM_FAILURE: &str = "The model backend failed in the middle of the answer.";

/// Where one relayed stream stands.
#[derive(Default)]
struct StreamState {
    /// The client's stream head was written (the first data event was a chunk).
    started: bool,
    /// `data: [DONE]` was relayed; later events are not.
    saw_done: bool,
    /// How the upstream failed, if it did.
    failure: Option<UpstreamFailure>,
    /// A write to the client failed (only possible once started).
    client_gone: bool,
    usage: Option<ReportedUsage>,
    chunks_delivered: u64,
    finder: EventFinder,
    /// `clock::monotonic_us` when the first chunk was written to the client.
    first_token_at_us: u64,
    /// The Responses translation of the chat events, for a Responses request.
    responses: Option<ResponsesStream>,
}

impl StreamState {
    fn open(&self) -> bool {
        self.failure.is_none() && !self.saw_done
    }

    /// Relays every complete event at the front of `pending`; returns how many bytes it took.
    /// `scratch` holds an event while it is judged (the first) or discarded (client gone).
    fn take_events<S: AsyncWriteRent>(
        &mut self,
        sink: &mut ResponseSink<S>,
        pending: &[u8],
        request: &ProxyRequest<'_>,
        scratch: &mut Vec<u8>,
    ) -> usize {
        let names = request.names();
        let mut consumed = 0;
        while self.open() {
            let Some(len) = self.finder.next_end(&pending[consumed..]) else { break };
            let event = &pending[consumed..consumed + len];
            consumed += len;
            if !self.started {
                self.first_event(sink, event, &names, request, scratch);
            } else if self.client_gone {
                scratch.clear();
                let kind = rewrite::rewrite_event(event, &names, true, &mut self.usage, scratch);
                self.saw_done = kind == EventKind::Done;
            } else if let (AnswerFormat::Responses(shape), Some(responses)) = (request.answer, self.responses.as_mut())
            {
                scratch.clear();
                let kind = Self::relayed_event(&mut self.usage, event, &names, true, request, scratch);
                let start = sink.out.len();
                responses.chat_events(shape, scratch, &mut sink.out);
                sink.frame_event(start);
                self.count(kind);
            } else {
                let start = sink.out.len();
                let include_usage = request.chat.include_usage_requested;
                let kind = Self::relayed_event(&mut self.usage, event, &names, include_usage, request, &mut sink.out);
                sink.frame_event(start);
                self.count(kind);
            }
        }
        if self.open() && rewrite::event_too_large(pending.len() - consumed) {
            self.failure = Some(UpstreamFailure::Malformed);
        }
        consumed
    }

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
        let kind = Self::relayed_event(&mut self.usage, event, names, include_usage, request, scratch);
        match kind {
            EventKind::Ignored => {}
            EventKind::Chunk | EventKind::DroppedUsage => {
                let clamp = ClampHeader::new(request.clamped_to);
                let (pairs, count) = clamp.pairs();
                let context = request.context(sink.keep_alive);
                // The sink frames the stream as the client's HTTP version allows (chunked, or
                // close-delimited).
                sink.start_stream(200, "text/event-stream", &pairs[..count], &context);
                let start = sink.out.len();
                match (request.answer, self.responses.as_mut()) {
                    (AnswerFormat::Responses(shape), Some(responses)) => {
                        responses.chat_events(shape, scratch, &mut sink.out)
                    }
                    _ => sink.out.extend_from_slice(scratch),
                }
                sink.frame_event(start);
                self.started = true;
                self.first_token_at_us = crate::clock::monotonic_us();
                self.count(kind);
            }
            EventKind::Done | EventKind::Error | EventKind::NoResult | EventKind::Malformed => {
                self.failure = Some(UpstreamFailure::Malformed);
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
                let rule = ChargeRule { prices: request.model.prices(), hold: request.admitted.hold };
                // The chunk is `data: <object>\n\n`.
                let json_end = out.len().saturating_sub(2);
                append_usage_cost(out, start + b"data: ".len(), json_end, rule.charge_for(&reported));
            }
        }
        kind
    }

    fn count(&mut self, kind: EventKind) {
        match kind {
            EventKind::Chunk => self.chunks_delivered += 1,
            EventKind::Done => self.saw_done = true,
            EventKind::Error | EventKind::Malformed => self.failure = Some(UpstreamFailure::Malformed),
            EventKind::DroppedUsage | EventKind::Ignored | EventKind::NoResult => {}
        }
    }
}

/// Relays the SSE body of `exchange` (its head said `text/event-stream`) onto `sink`.
pub async fn relay_stream<S: AsyncWriteRent>(
    sink: &mut ResponseSink<S>,
    mut exchange: client::Exchange,
    target: &UpstreamTarget,
    pool: &Pool,
    request: &ProxyRequest<'_>,
    scratch: &mut Vec<u8>,
) -> ProxyResult {
    let mut payload = std::mem::take(&mut sink.scratch);
    payload.clear();
    let mut state = StreamState::default();
    if let AnswerFormat::Responses(shape) = request.answer {
        state.responses = Some(shape.start_stream());
    }
    // A stream may not outlive its hold: past the deadline it ends like a failed upstream.
    let deadline = deadline_after_ms(UPSTREAM_REQUEST_DEADLINE_MS);
    // Once the client is gone: how long and how much more is read to learn the usage.
    let mut drain_deadline = deadline;
    let mut drained_bytes = 0usize;
    loop {
        let wait = if state.client_gone { time_left(drain_deadline) } else { time_left(deadline) };
        let before = payload.len();
        let piece = exchange.next_piece(&mut payload, target.response_timeout.min(wait)).await;
        drained_bytes += payload.len() - before;
        let consumed = state.take_events(sink, &payload, request, scratch);
        payload.drain(..consumed);
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
            // The body ended without `[DONE]`: cut short.
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
                || state.saw_done
                || drained_bytes >= ABANDONED_STREAM_DRAIN_BYTES
                || time_left(drain_deadline).is_zero())
        {
            break;
        }
    }
    sink.scratch = kept(payload);
    if !state.started {
        if let (AnswerFormat::Responses(shape), Some(responses)) = (request.answer, state.responses.take()) {
            shape.give_back_stream(responses);
        }
        let failure = state.failure.unwrap_or(UpstreamFailure::Malformed);
        crate::log_warn_every!(
            "upstream {}: the stream failed before its first chunk: {failure:?} (request {})",
            target.name,
            request.request_id
        );
        return ProxyResult::failed(failure);
    }
    let outcome = if state.client_gone {
        Outcome::ClientAborted
    } else if state.failure.is_some() {
        Outcome::BackendFailed
    } else {
        Outcome::Completed
    };
    if !state.client_gone {
        if let Some(failure) = state.failure {
            crate::log_warn_every!(
                "upstream {}: the stream failed after it started: {failure:?} (request {})",
                target.name,
                request.request_id
            );
            let error = ApiError::with_text(ErrorKind::UpstreamUnavailable, MID_STREAM_FAILURE);
            match state.responses.as_mut() {
                Some(responses) => {
                    let start = sink.out.len();
                    responses.write_error(&mut sink.out, error.spec().code, MID_STREAM_FAILURE);
                    sink.frame_event(start);
                }
                None => sink.write_error_event(&error),
            }
        }
        // Flushed by the connection loop after settlement (see `backend::sandbox::reply`).
        sink.end_stream();
    }
    if state.failure.is_none() && !state.client_gone {
        exchange.finish_reusable(pool);
    }
    if let (AnswerFormat::Responses(shape), Some(responses)) = (request.answer, state.responses.take()) {
        shape.give_back_stream(responses);
    }
    let usage = state.usage.unwrap_or_else(|| request.estimate(state.chunks_delivered));
    let timing = UpstreamTiming { first_token_at_us: state.first_token_at_us, ..UpstreamTiming::default() };
    ProxyResult { status: Some(200), usage, outcome, refusal: None, timing }
}
