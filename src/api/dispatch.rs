//! The dispatch phase: an admitted request to the backend that serves its model, and the usage
//! it reports back.
//!
//! Test keys and sandbox-backed models go to the in-process sandbox; every other model to its
//! upstream over this worker's pool. The answer is relayed onto the connection as it arrives;
//! a failure before any byte was written comes back as a `Refusal` for `rescue`, after the
//! caller has settled. It never admits or settles.

use monoio::io::AsyncWriteRent;

use crate::api::admit::Ticket;
use crate::api::rescue::{Rates, Refusal};
use crate::api::settle::Usage;
use crate::backend::sandbox::reply::{CompletionReply, write_completion};
use crate::backend::upstream::exchange::{self, ProxyRequest, UpstreamRefusal, UpstreamTiming};
use crate::errors::{ApiError, Detail, ErrorKind};
use crate::http::server::ResponseSink;
use crate::limits::UPSTREAM_KEPT_BUFFER_MAX_BYTES;
use crate::money::{ChargeRule, Nanos, TokenUsage};
use crate::openai::chat::ChatRequest;
use crate::openai::models::Backend;
use crate::openai::responses::answer::AnswerFormat;
use crate::store::{KeyKind, Outcome};
use crate::worker::Worker;

/// How the backend answered.
pub struct Answer {
    /// What the request used, for settlement.
    pub usage: Usage,
    /// `Ok(status)` once a response was written; `Err` when nothing was and the client must get
    /// this error instead.
    pub sent: Result<u16, UpstreamRefusal>,
    /// When an upstream exchange reached each step (all zero for the sandbox).
    pub timing: UpstreamTiming,
}

/// The header naming what an admitted unary answer was charged (SPEC §8.2).
pub const COST_HEADER: &[u8] = b"x-fikra-cost-usd";

impl Answer {
    /// Puts `x-fikra-cost-usd: <charged>` on a unary answer that was written. Its head is still
    /// in the sink (sent once the handler returns), so the figure is the charge the store has
    /// just settled, not an estimate. A stream's head left long ago: its figure travels in the
    /// usage object instead (`backend`'s writers).
    pub fn announce_charge<S: AsyncWriteRent>(&self, sink: &mut ResponseSink<S>, streamed: bool, charged: Nanos) {
        if streamed || self.sent.is_err() {
            return;
        }
        let written = sink.add_head_line(COST_HEADER, charged.to_usd_text().as_bytes());
        debug_assert!(written, "a unary answer's head is sent after settlement");
    }

    /// The status written, or the refusal to render (rates from the admission). An upstream's
    /// own message moves into `message`, which the refusal borrows.
    pub fn into_result<'r>(self, ticket: &Ticket<'_>, message: &'r mut String) -> Result<u16, Refusal<'r>> {
        let refused = match self.sent {
            Ok(status) => return Ok(status),
            Err(refused) => refused,
        };
        let detail = match refused.message {
            Some(text) => {
                *message = text;
                Detail::Message(message.as_str())
            }
            None => Detail::Default,
        };
        let refusal = Refusal::from(ApiError { kind: refused.kind, param: refused.param, detail });
        let refusal = match refused.retry_after_ms {
            Some(retry_after_ms) => refusal.retry_after_ms(retry_after_ms),
            None => refusal,
        };
        Err(refusal.with_rates(Rates::Known(ticket.admitted.rates)))
    }
}

/// Sends `chat` (whose raw bytes are `body`) to its model's backend and relays the answer.
pub async fn dispatch<S: AsyncWriteRent>(
    worker: &Worker,
    sink: &mut ResponseSink<S>,
    ticket: &Ticket<'_>,
    chat: &ChatRequest<'_>,
    body: &[u8],
) -> Answer {
    dispatch_as(worker, sink, ticket, chat, body, AnswerFormat::Chat).await
}

/// `dispatch`, with the answer written in `answer`'s format (a Responses request travels as
/// its chat translation and comes back translated).
pub async fn dispatch_as<S: AsyncWriteRent>(
    worker: &Worker,
    sink: &mut ResponseSink<S>,
    ticket: &Ticket<'_>,
    chat: &ChatRequest<'_>,
    body: &[u8],
    answer: AnswerFormat<'_>,
) -> Answer {
    let shared = &worker.shared;
    let model = ticket.model;
    if ticket.caller.kind == KeyKind::Test || model.backend == Backend::Sandbox {
        let reply = CompletionReply {
            request_id: ticket.request_id.as_str(),
            model_id: &model.id,
            output_cap_tokens: ticket.admitted.output_cap_tokens,
            clamped_to: ticket.clamped_to,
            chat,
            body,
            rates: Some(&ticket.admitted.rates),
            created_unix_s: shared.clock.now_ms() / 1000,
            answer,
            charge: Some(ChargeRule { prices: model.prices(), hold: ticket.admitted.hold }),
        };
        let produced = write_completion(sink, &reply, &shared.config.sandbox, &worker.metrics).await;
        let outcome = if produced.client_aborted { Outcome::ClientAborted } else { Outcome::Completed };
        let usage = Usage { tokens: TokenUsage::new(produced.prompt_tokens, produced.completion_tokens), outcome };
        return Answer { usage, sent: Ok(200), timing: UpstreamTiming::default() };
    }
    let upstream = match &model.backend {
        Backend::Upstream(name) => shared.upstreams.index_of(name),
        Backend::Sandbox => None,
    };
    let Some(upstream) = upstream else {
        let refused = UpstreamRefusal::new(ErrorKind::UpstreamUnavailable);
        return Answer { usage: Usage::NOTHING_DELIVERED, sent: Err(refused), timing: UpstreamTiming::default() };
    };
    let proxied = ProxyRequest {
        request_id: ticket.request_id.as_str(),
        model,
        chat,
        body,
        admitted: &ticket.admitted,
        clamped_to: ticket.clamped_to,
        input_tokens_upper: ticket.input_tokens_upper,
        answer,
    };
    let mut buffer = worker.upstream_request_buffers.borrow_mut().pop().unwrap_or_default();
    let target = &shared.upstreams.targets[upstream];
    let result = exchange::proxy_completion(sink, target, upstream, &worker.upstream_pool, &proxied, &mut buffer).await;
    // A buffer grown by a huge answer is freed, not kept by the worker for good.
    if buffer.capacity() <= UPSTREAM_KEPT_BUFFER_MAX_BYTES {
        worker.upstream_request_buffers.borrow_mut().push(buffer);
    }
    let usage = Usage { tokens: result.usage, outcome: result.outcome };
    let sent = match (result.status, result.refusal) {
        (Some(status), _) => Ok(status),
        (None, Some(refused)) => Err(refused),
        (None, None) => Err(UpstreamRefusal::new(ErrorKind::InternalError)),
    };
    Answer { usage, sent, timing: result.timing }
}
