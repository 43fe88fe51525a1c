//! The one road from a refusal to bytes on the wire for the client API.
//!
//! Every phase of a client request returns `Result<_, Refusal>`; `rescue` renders the refusal as
//! the error-table row of its kind (SPEC §2), with the request id, the rate-limit headers (read
//! from the store once, only when a key was recognised and the refusal did not bring them) and
//! the extras its kind needs. Whether the connection closes and whether the error is logged
//! follow from the kind's own facts (`ErrorKind::spec`), never from the call site. Failures
//! after a stream started are SSE error events, written by the backend through
//! `http::response::write_error_event`, not refusals.

use monoio::io::AsyncWriteRent;

use crate::access::auth::Caller;
use crate::errors::{ApiError, Side};
use crate::http::response::{self, ErrorExtras, ResponseContext};
use crate::http::server::ResponseSink;
use crate::ids::RequestId;
use crate::metrics::Route;
use crate::store::RateSnapshot;
use crate::worker::Worker;

/// Where a refusal's rate-limit headers come from.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Rates {
    /// The admission (or the backend's ticket) already knows them.
    Known(RateSnapshot),
    /// Read them from the store if a key was recognised (once, in `rescue`).
    Look,
    /// Send none (the store is unreachable, or they could not be read).
    Omit,
}

impl From<Option<RateSnapshot>> for Rates {
    fn from(rates: Option<RateSnapshot>) -> Rates {
        rates.map_or(Rates::Omit, Rates::Known)
    }
}

/// Why a client request is answered with an error, and what its answer needs.
#[derive(Copy, Clone, Debug)]
pub struct Refusal<'a> {
    pub error: ApiError<'a>,
    pub extras: ErrorExtras,
    pub rates: Rates,
}

impl<'a> From<ApiError<'a>> for Refusal<'a> {
    fn from(error: ApiError<'a>) -> Refusal<'a> {
        Refusal { error, extras: ErrorExtras::default(), rates: Rates::Look }
    }
}

impl<'a> Refusal<'a> {
    pub fn with_rates(self, rates: Rates) -> Refusal<'a> {
        Refusal { rates, ..self }
    }

    /// Adds `retry-after` / `retry-after-ms` for a wait of `retry_after_ms`.
    pub fn retry_after_ms(self, retry_after_ms: u64) -> Refusal<'a> {
        Refusal { extras: ErrorExtras { retry_after_ms: Some(retry_after_ms), ..self.extras }, ..self }
    }

    /// Adds `allow: methods` (405).
    pub fn allow(self, methods: &'static str) -> Refusal<'a> {
        Refusal { extras: ErrorExtras { allow: Some(methods), ..self.extras }, ..self }
    }
}

/// What is known of the request being answered when it is refused.
#[derive(Copy, Clone)]
pub struct Known<'c> {
    /// `x-request-id` (every request that reached a route).
    pub request_id: Option<&'c RequestId>,
    /// The recognised key's holder, if authentication got that far.
    pub caller: Option<&'c Caller>,
}

/// Writes `refusal` as this request's answer and returns its status.
pub async fn rescue<S: AsyncWriteRent>(
    worker: &Worker,
    sink: &mut ResponseSink<S>,
    refusal: Refusal<'_>,
    known: Known<'_>,
) -> u16 {
    let rates = match (refusal.rates, known.caller) {
        (Rates::Known(rates), _) => Some(rates),
        (Rates::Look, Some(caller)) => rates_of(worker, caller).await,
        (Rates::Look, None) | (Rates::Omit, _) => None,
    };
    let spec = refusal.error.spec();
    worker.metrics.count_rejection(refusal.error.kind);
    sink.error_code = Some(spec.code);
    if spec.closes_connection || worker.is_draining() {
        sink.keep_alive = false;
    }
    // Upstream failures were logged with their cause where they were seen (the exchange);
    // the gateway's own are logged here, with the request id, rate-bounded.
    if spec.side == Side::Gateway {
        let request_id = known.request_id.map_or("-", RequestId::as_str);
        crate::log_warn_every!("request {request_id}: answered {} {}", spec.status, spec.code);
    }
    let context = ResponseContext {
        request_id: known.request_id.map(RequestId::as_str),
        rates: rates.as_ref(),
        keep_alive: sink.keep_alive,
    };
    response::write_error(&mut sink.out, &mut sink.scratch, &refusal.error, &refusal.extras, &context);
    spec.status
}

/// The answer to a request the framing layer refused (no request id, no key read yet); the
/// connection closes after it.
pub fn write_framing_refusal(worker: &Worker, out: &mut Vec<u8>, scratch: &mut Vec<u8>, error: &ApiError<'_>) {
    let status = error.spec().status;
    worker.metrics.count_rejection(error.kind);
    worker.metrics.count_request(Route::Framing, status);
    let context = ResponseContext { request_id: None, rates: None, keep_alive: false };
    response::write_error(out, scratch, error, &ErrorExtras::default(), &context);
}

/// The caller's rate-limit state for the headers, if the store answers.
pub async fn rates_of(worker: &Worker, caller: &Caller) -> Option<RateSnapshot> {
    let now_ms = worker.shared.clock.now_ms();
    worker.store().peek_rates(&caller.account_id, caller.kind, now_ms).await.ok()
}
