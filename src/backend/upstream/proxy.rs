//! The vocabulary of one proxied request, shared by the exchange (`exchange`) and the stream
//! relay (`stream`): the admitted request going upstream, what it came back with (usage,
//! outcome, the refusal to render, when each step happened), and the buffer-keeping rule.
//!
//! Plain data and small helpers; it never does IO and never decides how an answer is relayed.

use crate::backend::upstream::client::UpstreamFailure;
use crate::backend::upstream::rewrite::{ModelNames, ReportedUsage};
use crate::errors::ErrorKind;
use crate::http::response::ResponseContext;
use crate::limits::UPSTREAM_KEPT_BUFFER_MAX_BYTES;
use crate::money::ChargeRule;
use crate::openai::chat::ChatRequest;
use crate::openai::models::ModelEntry;
use crate::openai::responses::answer::AnswerFormat;
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
    /// Chat, or translated to the Responses API.
    pub answer: AnswerFormat<'a>,
}

impl ProxyRequest<'_> {
    pub(super) fn names(&self) -> ModelNames<'_> {
        ModelNames { public: &self.model.id, upstream: &self.model.upstream_model }
    }

    /// How settlement turns this request's usage into a charge (its cost, at most the hold).
    pub(super) fn charge_rule(&self) -> ChargeRule {
        ChargeRule { prices: self.model.prices(), hold: self.admitted.hold }
    }

    /// Usage when the upstream never said: the prompt's upper bound and what was delivered.
    pub(super) fn estimate(&self, completion_tokens: u64) -> ReportedUsage {
        ReportedUsage::new(self.input_tokens_upper, completion_tokens)
    }

    /// The head context of this request's answer.
    pub(super) fn context(&self, keep_alive: bool) -> ResponseContext<'_> {
        ResponseContext { request_id: Some(self.request_id), rates: Some(&self.admitted.rates), keep_alive }
    }
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
    pub timing: UpstreamTiming,
}

/// When the exchange reached each step, as `clock::monotonic_us` stamps (0: never reached),
/// for the latency histograms and the access log.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamTiming {
    /// The request was handed to a connection.
    pub sent_at_us: u64,
    /// The upstream's response head arrived.
    pub head_at_us: u64,
    /// The first token reached the client's connection (unary: the whole answer).
    pub first_token_at_us: u64,
    /// The exchange ended (the upstream's last byte, or its failure).
    pub done_at_us: u64,
}

/// An upstream failure before the response head, as the client should see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamRefusal {
    pub kind: ErrorKind,
    /// `param` of the error (`messages` for a context-length refusal).
    pub param: Option<&'static str>,
    /// `retry-after` for upstream 429/498/503 (in ms).
    pub retry_after_ms: Option<u64>,
    /// The upstream's own message for 400/422, cleaned of the upstream model name.
    pub message: Option<String>,
}

impl UpstreamRefusal {
    pub fn new(kind: ErrorKind) -> UpstreamRefusal {
        UpstreamRefusal { kind, param: None, retry_after_ms: None, message: None }
    }
}

impl ProxyResult {
    /// Nothing was relayed: settled at zero, the client gets `refusal`.
    pub(super) fn refused(refusal: UpstreamRefusal) -> ProxyResult {
        ProxyResult {
            status: None,
            usage: ReportedUsage::default(),
            outcome: Outcome::BackendFailed,
            refusal: Some(refusal),
            timing: UpstreamTiming::default(),
        }
    }

    pub(super) fn failed(failure: UpstreamFailure) -> ProxyResult {
        let kind = match failure {
            UpstreamFailure::Timeout | UpstreamFailure::Stalled => ErrorKind::UpstreamTimeout,
            _ => ErrorKind::UpstreamUnavailable,
        };
        ProxyResult::refused(UpstreamRefusal::new(kind))
    }
}

/// A buffer worth keeping for the next request, or a fresh one if the last answer made it huge.
pub(super) fn kept(buffer: Vec<u8>) -> Vec<u8> {
    if buffer.capacity() > UPSTREAM_KEPT_BUFFER_MAX_BYTES { Vec::new() } else { buffer }
}
