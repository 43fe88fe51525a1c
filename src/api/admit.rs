//! The admit phase: one atomic decision on RPM, TPM and the wallet hold (SPEC §3-§4), taken
//! where it is cheapest and still correct.
//!
//! In order: a deny entry of this worker refuses a repeat without the store; a busy account's
//! lease admits from this worker's own slice; otherwise the store decides. While the store is
//! unreachable paid requests fail closed (503) and test keys are served on this worker's share
//! of the limits. Whoever admitted settles (`SettleBy`). It never dispatches and never writes.
//!
//! Two stages for a model with a `tokenizer` (SPEC §9, no false refusals): the byte bound
//! decides whenever it admits in full (asked with `refuse_clamp`, so nothing is taken when it
//! would clamp). Only when it would refuse for tokens or money (too large for TPM, the TPM
//! bucket, 402) or clamp, the message text is counted off the worker (`openai::tokenize`) and
//! that bound decides, clamps included. A refusal names which bound it was decided on.

use crate::access::auth::Caller;
use crate::api::rescue::{Rates, Refusal};
use crate::errors::Bucket;
use crate::errors::{ApiError, Detail, ErrorKind};
use crate::ids::RequestId;
use crate::metrics::WorkerMetrics;
use crate::openai::chat::{ChatRequest, input_tokens_upper_bound};
use crate::openai::models::ModelEntry;
use crate::openai::tokenize::CountedBy;
use crate::openai::tokenize::helper::count_off_worker;
use crate::store::{Admission, AdmitRequest, Admitted, KeyKind, StoreError, TIER_UNVERIFIED};
use crate::worker::Worker;

/// Who settles an admitted request.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SettleBy {
    /// The store, by the request's hold.
    Store,
    /// This worker's lease; the store applies it with the lease's next call.
    Lease,
    /// Nobody: a test key admitted on the node's own share while the store was down.
    Nothing,
}

/// An admitted request: what was granted, and everything settling it needs.
pub struct Ticket<'a> {
    pub request_id: &'a RequestId,
    pub caller: &'a Caller,
    pub model: &'a ModelEntry,
    pub admitted: Admitted,
    pub settle_by: SettleBy,
    /// The input upper bound the hold was taken for (the usage estimate when upstream is silent).
    pub input_tokens_upper: u64,
    /// `Some(cap)` when the output cap sent on is below what was asked for: the client's
    /// `max_tokens`, or the model's output cap when the client gave none.
    pub clamped_to: Option<u64>,
}

/// Which bound an admission is asked on.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Stage {
    /// The byte bound, deciding alone (no tokenizer, or no count could be had).
    BytesOnly,
    /// The byte bound, first of two: admitted only in full.
    BytesFirst,
    /// The bound counted by the model's tokenizer.
    Counted,
}

/// A refusal, and whether an exact count could turn it into an admission.
struct Refused {
    refusal: Refusal<'static>,
    countable: bool,
}

/// Admits `chat` (parsed from `body`) for `caller` on `model`, or says why not.
pub async fn admit<'a>(
    worker: &Worker,
    request_id: &'a RequestId,
    caller: &'a Caller,
    chat: &ChatRequest<'_>,
    body: &[u8],
    model: &'a ModelEntry,
) -> Result<Ticket<'a>, Refusal<'static>> {
    let byte_bound = input_tokens_upper_bound(chat, model.media_allowance());
    let Some(tokenizer) = &model.tokenizer else {
        return admit_on(worker, request_id, caller, chat, model, byte_bound, Stage::BytesOnly)
            .await
            .map_err(|r| r.refusal);
    };
    match admit_on(worker, request_id, caller, chat, model, byte_bound, Stage::BytesFirst).await {
        Ok(ticket) => return Ok(ticket),
        Err(Refused { refusal, countable: false }) => return Err(refusal),
        Err(Refused { countable: true, .. }) => {}
    }
    // The byte bound would refuse or clamp: count the text off the worker, timed.
    let started_us = crate::clock::stopwatch_us();
    let counted = count_off_worker(tokenizer.clone(), body.to_vec(), crate::limits::TOKENIZE_BUDGET_BYTES).await;
    worker.metrics.latency.tokenize.record_us(crate::clock::stopwatch_us().saturating_sub(started_us));
    let (bound, stage) = match counted {
        Some(count) => {
            // The counted texts were part of the byte bound at one token per byte (at least
            // their decoded length): trading them for their tokens never raises it.
            let exact = byte_bound.saturating_sub(count.text_bytes).saturating_add(count.tokens);
            debug_assert!(exact <= byte_bound, "counted bound {exact} above the byte bound {byte_bound}");
            (exact.min(byte_bound), Stage::Counted)
        }
        None => (byte_bound, Stage::BytesOnly),
    };
    admit_on(worker, request_id, caller, chat, model, bound, stage).await.map_err(|r| r.refusal)
}

/// One admission of `chat` on the input bound `input_tokens_upper`.
async fn admit_on<'a>(
    worker: &Worker,
    request_id: &'a RequestId,
    caller: &'a Caller,
    chat: &ChatRequest<'_>,
    model: &'a ModelEntry,
    input_tokens_upper: u64,
    stage: Stage,
) -> Result<Ticket<'a>, Refused> {
    let shared = &worker.shared;
    let counted = if stage == Stage::Counted { CountedBy::Tokenizer } else { CountedBy::ByteBound };
    let requested_output_tokens = chat.max_tokens.unwrap_or(model.max_output_tokens);
    let request = AdmitRequest {
        request_id: request_id.as_str(),
        account_id: &caller.account_id,
        key_id: &caller.key_id,
        key_kind: caller.kind,
        model: &model.id,
        input_tokens_upper,
        requested_output_tokens,
        client_set_output_cap: chat.max_tokens.is_some(),
        refuse_clamp: stage == Stage::BytesFirst,
        input_price: model.input_price,
        output_price: model.output_price,
        now_ms: shared.clock.now_ms(),
        spend_cap: caller.spend_cap,
    };
    let topup_generation = worker.store().topup_generation();
    if let Some(refusal) = worker.deny_cache.borrow_mut().check(&caller.account_id, &request, topup_generation) {
        WorkerMetrics::add(&worker.metrics.deny_cache_hits, 1);
        return Err(refused(refusal, counted, request.now_ms));
    }
    let leasing = caller.kind == KeyKind::Live && worker.store().is_shared();
    // With the store unreachable paid requests fail closed (SPEC §7), leased or not. A capped
    // key is never served from a lease: only the store sees the key's spend across nodes.
    let leased = if leasing && request.spend_cap.is_none() && !worker.store().seems_down() {
        worker.leases.book.borrow_mut().try_admit(&request)
    } else {
        None
    };
    let (answer, settle_by) = match leased {
        Some(admitted) => {
            WorkerMetrics::add(&worker.metrics.lease_admissions, 1);
            (Ok(Admission::Admitted(admitted)), SettleBy::Lease)
        }
        None => (worker.store().admit(&request).await, SettleBy::Store),
    };
    let (admitted, settle_by) = match answer {
        Ok(Admission::Admitted(admitted)) => {
            if leasing {
                worker.leases.book.borrow_mut().observe(&caller.account_id, request.now_ms, &admitted);
            }
            (admitted, settle_by)
        }
        // Nothing was taken and nothing is refused yet: not a deny entry.
        Ok(would_clamp @ Admission::WouldClamp { .. }) => return Err(refused(would_clamp, counted, request.now_ms)),
        Ok(refusal) => {
            worker.deny_cache.borrow_mut().record(&caller.account_id, &request, &refusal, topup_generation);
            return Err(refused(refusal, counted, request.now_ms));
        }
        // Test keys never touch money: serve them on this worker's share of the limits.
        Err(StoreError::Unavailable) if caller.kind == KeyKind::Test => {
            (admit_on_fallback(worker, caller, &request, counted)?, SettleBy::Nothing)
        }
        Err(error) => return Err(Refused { refusal: store_failure(request_id, error, worker), countable: false }),
    };
    debug_assert!(
        admitted.output_cap_tokens <= requested_output_tokens,
        "the cap granted is never above the cap asked"
    );
    // Before dispatch (paired with settle's "charge <= hold" after the answer): whoever admitted,
    // the hold pays for the worst case of what goes upstream, and a test key holds no money.
    debug_assert!(
        match caller.kind {
            KeyKind::Live => request
                .input_price
                .cost_of(request.input_tokens_upper)
                .zip(request.output_price.cost_of(admitted.output_cap_tokens))
                .and_then(|(input, output)| input.checked_add(output))
                .is_none_or(|worst_case| admitted.hold >= worst_case),
            KeyKind::Test => admitted.hold == crate::money::Nanos::ZERO,
        },
        "request {}: hold {} does not cover its worst case",
        request_id.as_str(),
        admitted.hold
    );
    // SPEC §9: announced whenever the cap sent on is below what was asked for, the client's own
    // cap or, when it gave none, the model's: an answer silently shorter than the model allows
    // reads as the model's choice, not the wallet's.
    let clamped_to = (admitted.output_cap_tokens < requested_output_tokens).then_some(admitted.output_cap_tokens);
    if clamped_to.is_some() {
        WorkerMetrics::add(&worker.metrics.max_tokens_clamped, 1);
    }
    debug_assert!(clamped_to.is_none() || stage != Stage::BytesFirst, "the first of two stages never clamps");
    Ok(Ticket { request_id, caller, model, admitted, settle_by, input_tokens_upper, clamped_to })
}

/// `refusal` answered for a bound counted `counted`, and whether counting could change it.
fn refused(refusal: Admission, counted: CountedBy, now_ms: u64) -> Refused {
    let countable = counted == CountedBy::ByteBound
        && matches!(
            refusal,
            Admission::TooLargeForTokenLimit { .. }
                | Admission::InsufficientQuota { .. }
                | Admission::KeySpendLimitReached { .. }
                | Admission::WouldClamp { .. }
                | Admission::RateLimited { bucket: Bucket::Tokens, .. }
        );
    Refused { refusal: refusal_of(refusal, counted, now_ms), countable }
}

/// Admission of a test key on this worker's own buckets while the store is unreachable.
fn admit_on_fallback(
    worker: &Worker,
    caller: &Caller,
    request: &AdmitRequest<'_>,
    counted: CountedBy,
) -> Result<Admitted, Refused> {
    let shared = &worker.shared;
    WorkerMetrics::add(&worker.metrics.store_unavailable, 1);
    let limits = shared.config.limits.limits_for(&caller.account_id, TIER_UNVERIFIED, caller.kind);
    let share = shared.config.store_options.gateway_nodes.saturating_mul(shared.metrics.workers.len() as u64);
    match worker.fallback.borrow_mut().admit(&caller.account_id, request, &limits, share) {
        Admission::Admitted(admitted) => {
            WorkerMetrics::add(&worker.metrics.fallback_admissions, 1);
            Ok(admitted)
        }
        refusal => Err(refused(refusal, counted, request.now_ms)),
    }
}

/// The answer when the store could not decide: 503 (fail closed) or 500.
fn store_failure(request_id: &RequestId, error: StoreError, worker: &Worker) -> Refusal<'static> {
    let error = match error {
        StoreError::Unavailable => {
            WorkerMetrics::add(&worker.metrics.store_unavailable, 1);
            ApiError::with_text(
                ErrorKind::ServiceUnavailable,
                "The billing store is unreachable right now. Please retry shortly.",
            )
        }
        other => {
            crate::log_error_every!("request {}: admission failed: {other}", request_id.as_str());
            ApiError::new(ErrorKind::InternalError)
        }
    };
    Refusal::from(error).retry_after_ms(1000).with_rates(Rates::Omit)
}

/// The refusal a store, lease, deny entry or fallback bucket answered.
fn refusal_of(refusal: Admission, counted: CountedBy, now_ms: u64) -> Refusal<'static> {
    match refusal {
        // Only refusals reach here (a `WouldClamp` is always asked again, counted); answering
        // 500 keeps the data path panic-free.
        Admission::Admitted(_) | Admission::WouldClamp { .. } => {
            Refusal::from(ApiError::new(ErrorKind::InternalError)).with_rates(Rates::Omit)
        }
        Admission::RateLimited { bucket, limit, used, requested, retry_after_ms, rates } => {
            let detail = Detail::RateLimited { bucket, limit, used, requested, retry_after_ms };
            Refusal::from(ApiError { kind: ErrorKind::RateLimitExceeded, param: None, detail })
                .retry_after_ms(retry_after_ms.max(1))
                .with_rates(Rates::Known(rates))
        }
        Admission::TooLargeForTokenLimit { limit, requested, rates } => {
            let detail = Detail::RateLimitTooLarge { limit, requested, counted: counted.phrase() };
            Refusal::from(ApiError { kind: ErrorKind::RateLimitRequestTooLarge, param: None, detail })
                .with_rates(Rates::Known(rates))
        }
        Admission::InsufficientQuota { balance, available, needed, rates } => {
            let detail = Detail::InsufficientQuota { balance, available, needed };
            Refusal::from(ApiError { kind: ErrorKind::InsufficientQuota, param: None, detail })
                .with_rates(Rates::Known(rates))
        }
        Admission::KeySpendLimitReached { cap, spent, held, needed, rates } => {
            let detail = Detail::KeySpendLimitReached {
                cap: cap.limit,
                per: cap.period.phrase(),
                spent,
                held,
                needed,
                resets_at_ms: cap.period.resets_at_ms(now_ms),
            };
            Refusal::from(ApiError { kind: ErrorKind::KeySpendLimitReached, param: None, detail })
                .with_rates(Rates::Known(rates))
        }
    }
}
