//! The two ends of a unary upstream answer shared by the chat exchange (`exchange`) and the
//! native Responses relay (`responses_native`): reading the whole body within the request
//! deadline (the connection then goes back to the pool), and writing the client's 200 with
//! the clamp header. What the body means is decided by the callers, never here.

use monoio::io::AsyncWriteRent;

use crate::backend::upstream::UpstreamTarget;
use crate::backend::upstream::client::{self, Pool};
use crate::backend::upstream::proxy::{ProxyRequest, ProxyResult, UpstreamTiming, kept};
use crate::backend::upstream::rewrite::{self, ObjectFacts, ReportedUsage};
use crate::http::response::{self, ClampHeader};
use crate::http::server::ResponseSink;
use crate::limits::UPSTREAM_REQUEST_DEADLINE_MS;
use crate::store::Outcome;

/// Reads a whole unary upstream body (within the request deadline; the connection then goes
/// back to the pool) and copies it into `rewritten` with the public model id
/// (`rewrite::rewrite_object`): `Ok(None)` when it is not one JSON object, `Err` with the
/// result to return when the body could not be read. The sink's scratch buffer holds the
/// upstream's bytes meanwhile.
pub(super) async fn read_rewritten<S: AsyncWriteRent>(
    sink: &mut ResponseSink<S>,
    exchange: &mut client::Exchange,
    target: &UpstreamTarget,
    pool: &Pool,
    request: &ProxyRequest<'_>,
    rewritten: &mut Vec<u8>,
) -> Result<Option<ObjectFacts>, ProxyResult> {
    let mut body = std::mem::take(&mut sink.scratch);
    body.clear();
    let deadline = crate::clock::deadline_after_ms(UPSTREAM_REQUEST_DEADLINE_MS);
    let read = exchange.read_to_end(&mut body, target.response_timeout, deadline).await;
    if let Err(failure) = read {
        sink.scratch = kept(body);
        crate::log_warn_every!("upstream {}: body failed: {failure:?} (request {})", target.name, request.request_id);
        return Err(ProxyResult::failed(failure));
    }
    exchange.finish_reusable(pool);
    rewritten.clear();
    let facts = rewrite::rewrite_object(&body, &request.names(), rewritten);
    sink.scratch = kept(body);
    Ok(facts)
}

/// Writes a unary 200 answer (`body`, already rewritten) into `out`, with the clamp header
/// when the cap was lowered; `usage` is what it is settled with.
pub(super) fn answered(
    out: &mut Vec<u8>,
    keep_alive: bool,
    request: &ProxyRequest<'_>,
    body: &[u8],
    usage: ReportedUsage,
) -> ProxyResult {
    let clamp = ClampHeader::new(request.clamped_to);
    let (pairs, count) = clamp.pairs();
    let context = request.context(keep_alive);
    response::write_full(out, 200, "application/json", &pairs[..count], &context, body);
    let timing = UpstreamTiming { first_token_at_us: crate::clock::monotonic_us(), ..UpstreamTiming::default() };
    ProxyResult { status: Some(200), usage, outcome: Outcome::Completed, refusal: None, timing }
}
