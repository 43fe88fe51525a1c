//! Native passthrough of Responses requests (SPEC §8.1, §9) to an upstream marked
//! `responses = true`: the client's body goes to `{base}/responses` and the upstream's own
//! Responses object or typed events come back, rewritten.
//!
//! Owns the request rewrite (the upstream model name, `store: false`, the granted
//! `max_output_tokens`, every other member copied byte for byte), the bytes the hold counts for
//! such a body, the classification of a unary answer (only an object with an `output` array and
//! no error or failed status is a result) and of each typed event, and the relay of those events
//! one by one through the stream driver of `stream`: `response.created` / `response.in_progress`
//! are held back until the first output event (so an upstream that fails before any output is a
//! plain 502 that costs nothing), then each event is relayed as it arrives with the public model
//! id in place of the upstream's (`rewrite::rewrite_object`), usage is read from the terminal
//! event (`response.completed`, `response.incomplete`, `response.failed`), and an `error` event
//! or `response.failed` after the start ends the stream with one `error` event of the gateway's
//! own, charged for what was delivered. It never relays an event it has not rewritten, never
//! shows an upstream's error text, and never allocates once warm (buffers are lent).

use monoio::io::AsyncWriteRent;

use crate::backend::upstream::UpstreamTarget;
use crate::backend::upstream::client::{self, Pool, UpstreamFailure};
use crate::backend::upstream::proxy::{ProxyRequest, ProxyResult};
use crate::backend::upstream::rewrite::{self, ModelNames, ReportedUsage, SseFields};
use crate::backend::upstream::stream::{self, EventRelay, MID_STREAM_FAILURE, StreamCore};
use crate::backend::upstream::unary::{answered, read_rewritten};
use crate::errors::ApiError;
use crate::http::server::ResponseSink;
use crate::limits::UPSTREAM_MAX_SSE_EVENT_BYTES;
use crate::money::{ChargeRule, Nanos};
use crate::openai::chat::json_scan::{ValueKind, content_eq};
use crate::openai::responses::answer::{ResponseShape, read_responses_usage, write_error_event};
use crate::openai::responses::{ResponsesRequest, each_element, each_member, kind_of, member, string_is};
use crate::openai::usage_cost::append_usage_cost;

/// Top-level members the gateway sets itself in a native request body.
const REPLACED_MEMBERS: [&[u8]; 3] = [b"model", b"store", b"max_output_tokens"];

/// Top-level members that are the gateway's own scalar parameters: the hold does not count them.
const SCALAR_MEMBERS: [&[u8]; 6] = [b"model", b"stream", b"store", b"temperature", b"top_p", b"max_output_tokens"];

/// Writes the body for `{base}/responses`: the client's members as written, except `model`,
/// `store` and `max_output_tokens`, which become the upstream model name, `false` and the
/// granted cap. `shape.body` must be a body `parse_responses_request` accepted.
pub fn write_native_body(shape: &ResponseShape<'_>, upstream_model: &str, output_cap_tokens: u64, out: &mut Vec<u8>) {
    out.reserve(shape.body.len() + upstream_model.len() * 2 + 64);
    out.extend_from_slice(b"{\"model\":\"");
    crate::json::write_json_escaped(out, upstream_model);
    out.extend_from_slice(b"\",\"store\":false,\"max_output_tokens\":");
    crate::digits::push_decimal(out, output_cap_tokens);
    each_member(shape.body, |key, value| {
        if REPLACED_MEMBERS.iter().any(|name| content_eq(key, name)) {
            return;
        }
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key);
        out.extend_from_slice(b"\":");
        out.extend_from_slice(value);
    });
    out.push(b'}');
}

/// The punctuation of one top-level member that is surely its own: its key's two quotes, its
/// colon and one comma. A body has its `input` member besides any scalar one, so `k` scalar
/// members among `n > k` members have at least the `n - 1 >= k` commas between members.
const MEMBER_PUNCTUATION_BYTES: usize = 4;

/// The bytes of a native request body the input bound counts (SPEC §9): the whole client body
/// but the gateway's own scalar members (key, value and `MEMBER_PUNCTUATION_BYTES`, so that
/// `"stream":true` counts nothing) and the payload of each `input_image` part (the model's
/// image allowance counts those instead). Conservative: whitespace stays counted.
pub fn native_input_bytes(body: &[u8], request: &ResponsesRequest<'_>) -> u64 {
    let mut excluded = 0usize;
    each_member(body, |key, value| {
        if SCALAR_MEMBERS.iter().any(|name| content_eq(key, name)) {
            excluded += key.len() + value.len() + MEMBER_PUNCTUATION_BYTES;
        }
    });
    let input = request.input.slice(body);
    if kind_of(input) == ValueKind::Array {
        each_element(input, |_, item| {
            let Some(content) = member(item, "content").filter(|c| kind_of(c) == ValueKind::Array) else { return };
            each_element(content, |_, part| {
                if string_is(member(part, "type"), "input_image") {
                    excluded += member(part, "image_url").map_or(0, <[u8]>::len);
                }
            });
        });
    }
    debug_assert!(excluded <= body.len(), "the excluded bytes are parts of the body");
    body.len().saturating_sub(excluded) as u64
}

/// What one upstream Responses event was.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum NativeEvent {
    /// A comment or an event without data: nothing written.
    Ignored,
    /// `response.created`, `response.queued` or `response.in_progress`: written.
    Opening,
    /// Any other event of the response; `delta` for text, refusal and argument deltas: written.
    Output { delta: bool },
    /// `response.completed` or `response.incomplete`: written; the upstream's last event.
    Finished,
    /// `response.failed`: not written (its usage, if any, is kept).
    Failed,
    /// An `error` event, or an event with a top-level `error` object: not written.
    Error,
    /// Not SSE, data that is not one JSON object with a string `type`, or over the size limit:
    /// nothing written.
    Malformed,
}

/// What one event said besides its kind.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct EventFacts {
    pub kind: NativeEvent,
    /// The response's usage, from a terminal event.
    pub usage: Option<ReportedUsage>,
    /// The event's `sequence_number`.
    pub sequence_number: Option<u64>,
}

impl EventFacts {
    fn of(kind: NativeEvent) -> EventFacts {
        EventFacts { kind, usage: None, sequence_number: None }
    }
}

/// Rewrites one upstream event (`event` ends with its blank line) into `out` as
/// `event: <type>\ndata: <json with the public model id>\n\n`, when it is one to relay. With
/// `charge`, a relayed terminal event's `response.usage` also gets the charge settlement will
/// make for it (`cost_usd`, as chat usage chunks carry it).
pub fn rewrite_native_event(
    event: &[u8],
    names: &ModelNames<'_>,
    charge: Option<&ChargeRule>,
    out: &mut Vec<u8>,
) -> EventFacts {
    if event.len() > UPSTREAM_MAX_SSE_EVENT_BYTES {
        return EventFacts::of(NativeEvent::Malformed);
    }
    let data = match rewrite::event_fields(event) {
        Ok(SseFields { name: Some(b"error"), .. }) => return EventFacts::of(NativeEvent::Error),
        Ok(SseFields { data: Some(data), .. }) => data,
        Ok(SseFields { data: None, .. }) => return EventFacts::of(NativeEvent::Ignored),
        Err(()) => return EventFacts::of(NativeEvent::Malformed),
    };
    let Some(event_type) = member(data, "type").filter(|t| kind_of(t) == ValueKind::String) else {
        return EventFacts::of(NativeEvent::Malformed);
    };
    let type_text = &event_type[1..event_type.len() - 1];
    let start = out.len();
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(type_text);
    out.extend_from_slice(b"\ndata: ");
    let data_start = out.len();
    let Some(object) = rewrite::rewrite_object(data, names, out) else {
        out.truncate(start);
        return EventFacts::of(NativeEvent::Malformed);
    };
    let is = |name: &str| content_eq(type_text, name.as_bytes());
    let kind = if object.is_error || is("error") {
        NativeEvent::Error
    } else if is("response.failed") {
        NativeEvent::Failed
    } else if is("response.completed") || is("response.incomplete") {
        NativeEvent::Finished
    } else if is("response.created") || is("response.queued") || is("response.in_progress") {
        NativeEvent::Opening
    } else {
        let delta = is("response.output_text.delta")
            || is("response.refusal.delta")
            || is("response.function_call_arguments.delta")
            || is("response.reasoning_text.delta");
        NativeEvent::Output { delta }
    };
    let written = &out[data_start..];
    let usage = match kind {
        NativeEvent::Finished | NativeEvent::Failed => {
            member(written, "response").and_then(|response| member(response, "usage")).and_then(read_responses_usage)
        }
        _ => None,
    };
    let sequence_number = member(written, "sequence_number")
        .and_then(|n| std::str::from_utf8(n).ok())
        .and_then(|n| n.parse::<u64>().ok());
    match kind {
        NativeEvent::Failed | NativeEvent::Error => out.truncate(start),
        NativeEvent::Finished => {
            if let (Some(rule), Some(usage)) = (charge, usage.as_ref()) {
                append_response_cost(out, data_start, rule.charge_for(usage));
            }
            out.extend_from_slice(b"\n\n");
        }
        _ => out.extend_from_slice(b"\n\n"),
    }
    EventFacts { kind, usage, sequence_number }
}

/// Adds `cost_usd` to the `usage` of the `response` object inside the event data that starts
/// at `out[data_start..]` (its end is the end of `out`).
fn append_response_cost(out: &mut Vec<u8>, data_start: usize, cost: Nanos) {
    let written = &out[data_start..];
    let Some(response) = member(written, "response") else { return };
    // `member` hands back a sub-slice of `written`: its place is its distance from the start.
    let response_start = data_start + (response.as_ptr() as usize - written.as_ptr() as usize);
    let response_end = response_start + response.len();
    append_usage_cost(out, response_start, response_end, cost);
}

/// The usage of a unary upstream answer if it is a real Responses result: a JSON object with an
/// `output` array, no `error` and not `"status":"failed"`. `rewritten` is the rewritten copy.
pub fn unary_result(rewritten: &[u8], is_error: bool) -> Option<Option<ReportedUsage>> {
    let output = member(rewritten, "output")?;
    if is_error || kind_of(output) != ValueKind::Array || string_is(member(rewritten, "status"), "failed") {
        return None;
    }
    Some(member(rewritten, "usage").and_then(read_responses_usage))
}

/// Relays a unary native answer, rewritten, or fails it (502 at zero) when it is not a result.
pub(super) async fn relay_unary<S: AsyncWriteRent>(
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
    let Some(usage) = facts.and_then(|facts| unary_result(rewritten, facts.is_error)) else {
        crate::log_warn_every!(
            "upstream {}: a 200 that is not a response (request {})",
            target.name,
            request.request_id
        );
        return ProxyResult::failed(UpstreamFailure::Malformed);
    };
    let usage = usage.unwrap_or_else(|| request.estimate(request.admitted.output_cap_tokens));
    answered(&mut sink.out, sink.keep_alive, request, rewritten, usage)
}

/// One native Responses stream being relayed.
struct NativeRelay {
    core: StreamCore,
    /// The opening events, rewritten, until the first output starts the client's stream.
    held: Vec<u8>,
    /// The last `sequence_number` relayed (the closing `error` event follows it).
    last_sequence_number: Option<u64>,
}

impl NativeRelay {
    fn record(&mut self, facts: &EventFacts) {
        if facts.usage.is_some() {
            self.core.usage = facts.usage;
        }
        // Only a relayed event's number counts: the closing `error` event follows the client's last.
        let relayed = matches!(facts.kind, NativeEvent::Opening | NativeEvent::Output { .. } | NativeEvent::Finished);
        if relayed && facts.sequence_number.is_some() {
            self.last_sequence_number = facts.sequence_number;
        }
        match facts.kind {
            NativeEvent::Output { delta: true } => self.core.delivered += 1,
            NativeEvent::Finished => self.core.finished = true,
            NativeEvent::Failed | NativeEvent::Error | NativeEvent::Malformed => {
                self.core.failure = Some(UpstreamFailure::Malformed)
            }
            NativeEvent::Output { delta: false } | NativeEvent::Opening | NativeEvent::Ignored => {}
        }
    }
}

impl EventRelay for NativeRelay {
    fn core(&mut self) -> &mut StreamCore {
        &mut self.core
    }

    fn take_event<S: AsyncWriteRent>(
        &mut self,
        sink: &mut ResponseSink<S>,
        event: &[u8],
        names: &ModelNames<'_>,
        request: &ProxyRequest<'_>,
        scratch: &mut Vec<u8>,
    ) {
        if self.core.client_gone {
            // Read on only for the usage (nothing more counts as delivered); an ending of any
            // kind ends the drain.
            scratch.clear();
            let facts = rewrite_native_event(event, names, None, scratch);
            if facts.usage.is_some() {
                self.core.usage = facts.usage;
            }
            match facts.kind {
                NativeEvent::Finished | NativeEvent::Failed | NativeEvent::Error => self.core.finished = true,
                NativeEvent::Malformed => self.core.failure = Some(UpstreamFailure::Malformed),
                NativeEvent::Output { .. } | NativeEvent::Opening | NativeEvent::Ignored => {}
            }
        } else if !self.core.started {
            let rule = request.charge_rule();
            let facts = rewrite_native_event(event, names, Some(&rule), &mut self.held);
            self.record(&facts);
            if matches!(facts.kind, NativeEvent::Output { .. } | NativeEvent::Finished) {
                stream::start_client_stream(sink, request);
                let start = sink.out.len();
                sink.out.extend_from_slice(&self.held);
                sink.frame_event(start);
                self.held.clear();
                self.core.started = true;
                self.core.first_token_at_us = crate::clock::monotonic_us();
            } else if self.held.len() > UPSTREAM_MAX_SSE_EVENT_BYTES {
                self.core.failure = Some(UpstreamFailure::Malformed);
            }
        } else {
            let start = sink.out.len();
            let rule = request.charge_rule();
            let facts = rewrite_native_event(event, names, Some(&rule), &mut sink.out);
            sink.frame_event(start);
            self.record(&facts);
        }
    }

    fn write_failure<S: AsyncWriteRent>(&mut self, sink: &mut ResponseSink<S>, error: &ApiError<'_>) {
        // The access log's `error_code`, as `write_error_event` sets it for chat.
        sink.error_code = Some(error.spec().code);
        let start = sink.out.len();
        let sequence_number = self.last_sequence_number.map_or(0, |last| last.saturating_add(1));
        write_error_event(&mut sink.out, sequence_number, error.spec().code, MID_STREAM_FAILURE);
        sink.frame_event(start);
    }
}

/// Relays the typed SSE body of a native exchange onto `sink` (see the module doc).
pub(super) async fn relay_stream<S: AsyncWriteRent>(
    sink: &mut ResponseSink<S>,
    exchange: client::Exchange,
    target: &UpstreamTarget,
    pool: &Pool,
    request: &ProxyRequest<'_>,
    shape: &ResponseShape<'_>,
    scratch: &mut Vec<u8>,
) -> ProxyResult {
    let mut relay = NativeRelay { core: StreamCore::default(), held: shape.lend_buffer(), last_sequence_number: None };
    let result = stream::drive(sink, exchange, target, pool, request, scratch, &mut relay).await;
    shape.give_back(relay.held);
    result
}

#[cfg(test)]
mod tests;
