//! What one client request leaves behind for the operator: the facts its phases learn (who
//! called, which model, what it used and cost, when the backend answered), turned into the
//! latency histograms, the per-model counters and one access-log line when it is answered.
//!
//! Phases fill a `Trace` as they go (it starts empty for every request, on the stack); `observe`
//! reads it once the answer is handed to the connection. It never changes an answer and never
//! allocates: ids are shared (`Arc`), the line goes into the worker's reused buffer.

use crate::access::auth::Caller;
use crate::access_log::AccessRecord;
use crate::backend::upstream::exchange::UpstreamTiming;
use crate::http::server::Request;
use crate::ids::RequestId;
use crate::metrics::Route;
use crate::money::{Nanos, TokenUsage};
use crate::worker::Worker;

/// The facts of one request, as its phases learned them.
#[derive(Default)]
pub struct Trace {
    pub request_id: Option<RequestId>,
    pub caller: Option<Caller>,
    /// The registry index of the model the request was admitted for.
    pub model_index: Option<usize>,
    /// What the backend reported (or the gateway estimated) for an admitted request.
    pub tokens: TokenUsage,
    pub charged: Nanos,
    pub timing: UpstreamTiming,
}

/// When a request's head was read: the start of its duration.
#[derive(Copy, Clone, Debug)]
pub struct Started {
    /// `clock::monotonic_us`.
    pub at_us: u64,
    /// Unix milliseconds, for the access log's time.
    pub unix_ms: u64,
}

/// Records the answered request in the histograms and the access log.
pub fn observe(
    worker: &Worker,
    request: &Request<'_>,
    route: Route,
    status: u16,
    error_code: Option<&str>,
    started: Started,
    trace: &Trace,
) {
    let finished_at_us = crate::clock::monotonic_us();
    let duration_us = finished_at_us.saturating_sub(started.at_us);
    let latency = &worker.metrics.latency;
    latency.request_duration_of(route).record_us(duration_us);
    let timing = trace.timing;
    let since = |stamp_us: u64, from_us: u64| (stamp_us > 0).then(|| stamp_us.saturating_sub(from_us));
    let upstream_us = since(timing.head_at_us, timing.sent_at_us);
    let first_token_us = since(timing.first_token_at_us, started.at_us);
    if let Some(upstream_us) = upstream_us {
        latency.upstream_response.record_us(upstream_us);
        // Waiting on the upstream: from sending to its last byte (streams relay as they wait).
        let waited_us = timing.done_at_us.saturating_sub(timing.sent_at_us);
        latency.gateway_overhead.record_us(duration_us.saturating_sub(waited_us));
    }
    if let Some(first_token_us) = first_token_us {
        latency.time_to_first_token.record_us(first_token_us);
    }
    if !worker.logs_access() {
        return;
    }
    let registry = &worker.shared.registry;
    let record = AccessRecord {
        time_ms: started.unix_ms,
        request_id: trace.request_id.as_ref().map(RequestId::as_str),
        account_id: trace.caller.as_ref().map(|caller| &*caller.account_id),
        key_id: trace.caller.as_ref().map(|caller| &*caller.key_id),
        method: request.head.method_str,
        path: request.head.path,
        status,
        error_code,
        model: trace.model_index.map(|index| registry.entry(index).id.as_str()),
        tokens: trace.tokens,
        cost_nanos: trace.charged.0,
        duration_us,
        upstream_us,
        first_token_us,
    };
    worker.log_access(&record);
}
