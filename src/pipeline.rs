//! The control flow of one client request: route -> authenticate -> parse -> price -> admit ->
//! dispatch -> relay -> settle.
//!
//! Every step is a call into a leaf module (auth, openai, store, sandbox); this file only decides
//! the order and turns each refusal into exactly one JSON error. Once a key is recognised,
//! every response carries `x-request-id` and the six rate-limit headers. An admitted request
//! is settled exactly once, whatever happens after admission. `Worker` holds what one core
//! owns: its key cache, its request-id counter and its metrics shard.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use monoio::io::AsyncWriteRent;

use crate::admission_cache::{DenyCache, FallbackBuckets};
use crate::auth::{self, Caller, KeyCache};
use crate::errors::{ApiError, Detail, ErrorKind};
use crate::http::request::Method;
use crate::http::response::{self, ErrorExtras, ResponseContext};
use crate::http::server::{Handler, Request, ResponseSink};
use crate::lease::{LeaseBook, LeaseSettlement};
use crate::limits::{PER_MESSAGE_OVERHEAD_TOKENS, PER_REQUEST_OVERHEAD_TOKENS};
use crate::metrics::{Route, WorkerMetrics};
use crate::openai::chat::{self, ChatRequest};
use crate::openai::models::Backend;
use crate::proxy::{self, ProxyRequest};
use crate::sandbox_server::{self, CompletionReply};
use crate::shared::{NODE_TAG_LEN, Shared};
use crate::store::{Admission, AdmitRequest, KeyKind, Outcome, RateSnapshot, Settled, Settlement, StoreError};
use crate::upstream::client::Pool;

/// `req_` + node tag + 16 hex digits of (worker, counter).
pub const REQUEST_ID_LEN: usize = 4 + NODE_TAG_LEN + 16;

/// A request id on the stack.
#[derive(Copy, Clone)]
pub struct RequestId([u8; REQUEST_ID_LEN]);

impl RequestId {
    pub fn as_str(&self) -> &str {
        // Built only from ASCII below.
        std::str::from_utf8(&self.0).unwrap_or("req_invalid")
    }
}

/// What one worker (one core) owns.
pub struct Worker {
    pub index: usize,
    pub shared: Arc<Shared>,
    pub metrics: Arc<WorkerMetrics>,
    key_cache: RefCell<KeyCache>,
    request_counter: Cell<u64>,
    /// This core's idle connections to upstreams.
    pub pool: Pool,
    /// Reused buffers for upstream requests (one per request in flight at most).
    request_buffers: RefCell<Vec<Vec<u8>>>,
    /// Refusals remembered so repeats cost no store call.
    deny_cache: RefCell<DenyCache>,
    /// This worker's share of test-key limits while the store is unreachable.
    fallback: RefCell<FallbackBuckets>,
    /// Leases of busy accounts' limits and wallets (shared store only).
    leases: RefCell<LeaseBook>,
    /// Set once the worker has drained: the lease task then ends every lease and stops.
    leases_stop: Cell<bool>,
    /// Whether the lease task is still running.
    lease_task_running: Cell<bool>,
}

impl Worker {
    pub fn new(index: usize, shared: Arc<Shared>) -> Worker {
        let metrics = shared.metrics.workers[index].clone();
        let pool = Pool::new(metrics.clone());
        let owner = format!("{}-{index}", String::from_utf8_lossy(&shared.node_tag));
        Worker {
            index,
            shared,
            metrics,
            key_cache: RefCell::default(),
            request_counter: Cell::new(0),
            pool,
            request_buffers: RefCell::default(),
            deny_cache: RefCell::default(),
            fallback: RefCell::default(),
            leases: RefCell::new(LeaseBook::new(&owner)),
            leases_stop: Cell::new(false),
            lease_task_running: Cell::new(false),
        }
    }

    /// Makes this worker's lease calls (run as its own task) until `stop_leases`; then ends
    /// every lease. Only this task makes lease calls, so they never overlap.
    pub async fn run_leases(&self) {
        if !self.shared.store.is_shared() {
            return;
        }
        self.lease_task_running.set(true);
        let tick = std::time::Duration::from_millis(crate::limits::LEASE_TICK_MS);
        while !self.leases_stop.get() {
            let now_ms = self.shared.clock.now_ms();
            let due = self.leases.borrow().due(now_ms);
            if due.is_empty() {
                monoio::time::sleep(tick).await;
                continue;
            }
            for account in due {
                if self.leases_stop.get() {
                    break;
                }
                let call = self.leases.borrow_mut().prepare_call(&account, now_ms);
                if let Some(call) = call {
                    self.lease_call(&call).await;
                }
            }
            // A backlog of records is paid call after call; otherwise one look per tick.
            if !self.leases.borrow().backlogged() {
                monoio::time::sleep(tick).await;
            }
        }
        self.end_leases().await;
        self.lease_task_running.set(false);
    }

    /// Called once the worker has drained (nothing in flight): the lease task ends every lease;
    /// returns when it has.
    pub async fn stop_leases(&self) {
        self.leases_stop.set(true);
        while self.lease_task_running.get() {
            monoio::time::sleep(std::time::Duration::from_millis(crate::limits::LEASE_TICK_MS)).await;
        }
    }

    /// Ends every lease: records paid (a call at a time, so a long backlog takes several),
    /// tokens given back, escrows released. Gives up after `LEASE_END_DEADLINE_MS` if the store
    /// is down (the escrows then expire and are reaped; unpaid records are never charged).
    async fn end_leases(&self) {
        let deadline =
            std::time::Instant::now() + std::time::Duration::from_millis(crate::limits::LEASE_END_DEADLINE_MS);
        while std::time::Instant::now() < deadline {
            let calls = self.leases.borrow_mut().end_all(self.shared.clock.now_ms());
            if calls.is_empty() {
                return;
            }
            let mut failed = false;
            for call in &calls {
                failed |= !self.lease_call(call).await;
            }
            if failed {
                monoio::time::sleep(std::time::Duration::from_millis(crate::limits::LEASE_RETRY_MS)).await;
            }
        }
    }

    /// Makes one lease call and applies its answer; whether the store answered.
    async fn lease_call(&self, call: &crate::store::LeaseCall) -> bool {
        WorkerMetrics::add(&self.metrics.lease_calls, 1);
        let result = self.shared.store.lease(call).await;
        match &result {
            Ok(crate::store::LeaseReply::Granted { charged, operator_loss, .. }) => {
                WorkerMetrics::add(&self.metrics.settlements, call.records.len() as u64);
                WorkerMetrics::add(&self.metrics.charged_nanos, charged.0);
                WorkerMetrics::add(&self.metrics.operator_loss_nanos, operator_loss.0);
            }
            Ok(crate::store::LeaseReply::Superseded) => {}
            Err(error) => {
                WorkerMetrics::add(&self.metrics.lease_call_failures, 1);
                eprintln!("lease {} (call {}): {error}; retrying", call.lease_id, call.seq);
            }
        }
        let answered = result.is_ok();
        self.leases.borrow_mut().apply(call, result, self.shared.clock.now_ms());
        answered
    }

    fn next_request_id(&self) -> RequestId {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let counter = self.request_counter.get().wrapping_add(1);
        self.request_counter.set(counter);
        let value = ((self.index as u64) << 48) | (counter & 0xffff_ffff_ffff);
        let mut id = [0u8; REQUEST_ID_LEN];
        id[..4].copy_from_slice(b"req_");
        id[4..4 + NODE_TAG_LEN].copy_from_slice(&self.shared.node_tag);
        for (i, slot) in id[4 + NODE_TAG_LEN..].iter_mut().enumerate() {
            *slot = HEX[((value >> (60 - 4 * i)) & 0xf) as usize];
        }
        RequestId(id)
    }

    /// Resolves the presented key through this worker's cache, then the store.
    async fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Caller, ApiError<'static>> {
        let presented = auth::parse_authorization(authorization)?;
        let hash = auth::hash_key(presented.key);
        let now_ms = self.shared.clock.now_ms();
        let generation = self.shared.store.revocation_generation();
        let cached = self.key_cache.borrow_mut().get(&hash, now_ms, generation).map(|entry| entry.record.clone());
        let record = match cached {
            Some(record) => record,
            None => {
                let record = match self.shared.store.resolve_key(&hash).await {
                    Ok(record) => Some(record),
                    Err(StoreError::NotFound) => None,
                    Err(_) => {
                        WorkerMetrics::add(&self.metrics.store_unavailable, 1);
                        // The store is down: a key this worker knew stays usable (revocations
                        // also need the store, so none can have happened unseen); paid
                        // requests still fail closed at admission.
                        let stale = self.key_cache.borrow().get_stale(&hash, generation).map(|e| e.record.clone());
                        if let Some(Some(record)) = stale {
                            return caller_of(record, presented.kind);
                        }
                        return Err(ApiError::with_text(
                            ErrorKind::ServiceUnavailable,
                            "The key store is unreachable right now. Please retry shortly.",
                        ));
                    }
                };
                self.key_cache.borrow_mut().put(hash, record.clone(), now_ms, generation);
                record
            }
        };
        match record {
            None => Err(auth::UNKNOWN_KEY),
            Some(record) => caller_of(record, presented.kind),
        }
    }

    async fn rates_of(&self, caller: &Caller) -> Option<RateSnapshot> {
        self.shared.store.peek_rates(&caller.account_id, caller.kind, self.shared.clock.now_ms()).await.ok()
    }

    /// Writes `error` as the response and returns its status.
    fn reject<S>(
        &self,
        sink: &mut ResponseSink<S>,
        error: &ApiError<'_>,
        extras: ErrorExtras,
        request_id: Option<&RequestId>,
        rates: Option<&RateSnapshot>,
    ) -> u16 {
        self.metrics.count_rejection(error.kind);
        if self.shared.is_draining() {
            sink.keep_alive = false;
        }
        let context =
            ResponseContext { request_id: request_id.map(RequestId::as_str), rates, keep_alive: sink.keep_alive };
        response::write_error(&mut sink.out, &mut sink.scratch, error, &extras, &context);
        error.kind.spec().status
    }
}

/// The caller a key record stands for, if it may be used with the presented key's kind.
fn caller_of(record: crate::store::KeyRecord, presented: KeyKind) -> Result<Caller, ApiError<'static>> {
    if record.revoked {
        Err(auth::REVOKED_KEY)
    } else if record.kind != presented {
        Err(auth::UNKNOWN_KEY)
    } else {
        Ok(Caller { key_id: record.key_id, account_id: record.account_id, kind: record.kind })
    }
}

/// The client API (`/v1/...`) served by one worker.
pub struct ApiHandler {
    pub worker: Worker,
}

impl Handler for ApiHandler {
    async fn handle<S: AsyncWriteRent>(&self, request: &Request<'_>, sink: &mut ResponseSink<S>) {
        let worker = &self.worker;
        WorkerMetrics::gauge_up(&worker.metrics.requests_in_flight);
        if worker.shared.is_draining() {
            sink.keep_alive = false;
        }
        let (route, status) = self.route(request, sink).await;
        worker.metrics.count_request(route, status);
        WorkerMetrics::gauge_down(&worker.metrics.requests_in_flight);
    }

    fn framing_rejected(&self, kind: ErrorKind) {
        self.worker.metrics.count_rejection(kind);
        self.worker.metrics.count_request(Route::Framing, kind.spec().status);
    }
}

const MODEL_PATH_PREFIX: &str = "/v1/models/";

impl ApiHandler {
    async fn route<S: AsyncWriteRent>(&self, request: &Request<'_>, sink: &mut ResponseSink<S>) -> (Route, u16) {
        let head = &request.head;
        let path = head.path;
        let (route, allow) = if path == "/v1/chat/completions" {
            (Route::ChatCompletions, "POST")
        } else if path == "/v1/models" {
            (Route::ListModels, "GET")
        } else if path.len() > MODEL_PATH_PREFIX.len() && path.starts_with(MODEL_PATH_PREFIX) {
            (Route::RetrieveModel, "GET")
        } else {
            let error = ApiError {
                kind: ErrorKind::UnknownEndpoint,
                param: None,
                detail: Detail::UnknownEndpoint { method: head.method_str, path },
            };
            return (Route::Unknown, self.worker.reject(sink, &error, ErrorExtras::default(), None, None));
        };
        let method_ok = match route {
            Route::ChatCompletions => head.method == Method::Post,
            _ => head.method == Method::Get,
        };
        if !method_ok {
            let error = ApiError {
                kind: ErrorKind::MethodNotAllowed,
                param: None,
                detail: Detail::MethodNotAllowed { method: head.method_str, path, allow },
            };
            let extras = ErrorExtras { allow: Some(allow), ..ErrorExtras::default() };
            return (route, self.worker.reject(sink, &error, extras, None, None));
        }
        let status = match route {
            Route::ChatCompletions => self.chat_completions(request, sink).await,
            Route::ListModels => self.models(None, request, sink).await,
            _ => self.models(Some(&path[MODEL_PATH_PREFIX.len()..]), request, sink).await,
        };
        (route, status)
    }

    /// `GET /v1/models` and `GET /v1/models/{id}`.
    async fn models<S: AsyncWriteRent>(
        &self,
        id: Option<&str>,
        request: &Request<'_>,
        sink: &mut ResponseSink<S>,
    ) -> u16 {
        let worker = &self.worker;
        let request_id = worker.next_request_id();
        let caller = match worker.authenticate(request.head.authorization).await {
            Ok(caller) => caller,
            Err(error) => return worker.reject(sink, &error, ErrorExtras::default(), Some(&request_id), None),
        };
        let rates = worker.rates_of(&caller).await;
        let registry = &worker.shared.registry;
        let body = match id {
            None => registry.list_json(),
            Some(id) => match registry.get(id) {
                Some((index, _)) => registry.model_json(index),
                None => {
                    let error = ApiError {
                        kind: ErrorKind::ModelNotFoundOnRetrieve,
                        param: Some("model"),
                        detail: Detail::ModelNotFound { requested: id, suggestion: registry.closest(id) },
                    };
                    return worker.reject(sink, &error, ErrorExtras::default(), Some(&request_id), rates.as_ref());
                }
            },
        };
        let context = ResponseContext {
            request_id: Some(request_id.as_str()),
            rates: rates.as_ref(),
            keep_alive: sink.keep_alive,
        };
        response::write_full(&mut sink.out, 200, "application/json", &[], &context, body);
        200
    }

    /// `POST /v1/chat/completions`.
    async fn chat_completions<S: AsyncWriteRent>(&self, request: &Request<'_>, sink: &mut ResponseSink<S>) -> u16 {
        let worker = &self.worker;
        let shared = &worker.shared;
        let request_id = worker.next_request_id();
        let rid = Some(&request_id);
        let caller = match worker.authenticate(request.head.authorization).await {
            Ok(caller) => caller,
            Err(error) => return worker.reject(sink, &error, ErrorExtras::default(), rid, None),
        };
        if let Some(retry_after_ms) = shared.maintenance.retry_after_ms() {
            let rates = worker.rates_of(&caller).await;
            let error = ApiError::with_text(
                ErrorKind::ServiceUnavailable,
                "The API is in scheduled maintenance. Please retry after the time in the retry-after header.",
            );
            let extras = ErrorExtras { retry_after_ms: Some(retry_after_ms), allow: None };
            return worker.reject(sink, &error, extras, rid, rates.as_ref());
        }
        let chat = match chat::parse_chat_request(request.body) {
            Ok(chat) => chat,
            Err(error) => {
                let rates = worker.rates_of(&caller).await;
                return worker.reject(sink, &error, ErrorExtras::default(), rid, rates.as_ref());
            }
        };
        let registry = &shared.registry;
        let Some((model_index, model)) = registry.get(chat.model) else {
            let rates = worker.rates_of(&caller).await;
            let error = ApiError {
                kind: ErrorKind::ModelNotFound,
                param: Some("model"),
                detail: Detail::ModelNotFound { requested: chat.model, suggestion: registry.closest(chat.model) },
            };
            return worker.reject(sink, &error, ErrorExtras::default(), rid, rates.as_ref());
        };
        if let Some(param) = registry.unsupported_param(model_index, chat::top_level_keys(&chat, request.body)) {
            let rates = worker.rates_of(&caller).await;
            let error = ApiError {
                kind: ErrorKind::UnsupportedParameter,
                param: Some(param),
                detail: Detail::UnsupportedParam { model: &model.id },
            };
            return worker.reject(sink, &error, ErrorExtras::default(), rid, rates.as_ref());
        }
        if let Some(max_tokens) = chat.max_tokens
            && max_tokens > model.max_output_tokens
        {
            let rates = worker.rates_of(&caller).await;
            let error = ApiError::invalid("max_tokens", "must not exceed this model's output cap (see GET /v1/models)");
            return worker.reject(sink, &error, ErrorExtras::default(), rid, rates.as_ref());
        }

        let input_tokens_upper = input_tokens_upper_bound(&chat);
        let requested_output_tokens = chat.max_tokens.unwrap_or(model.max_output_tokens);
        let admit = AdmitRequest {
            request_id: request_id.as_str(),
            account_id: &caller.account_id,
            key_id: &caller.key_id,
            key_kind: caller.kind,
            model: &model.id,
            input_tokens_upper,
            requested_output_tokens,
            client_set_output_cap: chat.max_tokens.is_some(),
            input_price: model.input_price,
            output_price: model.output_price,
            now_ms: shared.clock.now_ms(),
        };
        let topup_generation = shared.store.topup_generation();
        if let Some(refusal) = worker.deny_cache.borrow_mut().check(&caller.account_id, &admit, topup_generation) {
            WorkerMetrics::add(&worker.metrics.deny_cache_hits, 1);
            return self.refuse_admission(sink, refusal, &request_id);
        }
        let mut settle_by = SettleBy::Store;
        let leasing = caller.kind == KeyKind::Live && shared.store.is_shared();
        // With the store unreachable paid requests fail closed (SPEC §7), leased or not.
        let leased =
            if leasing && !shared.store.seems_down() { worker.leases.borrow_mut().try_admit(&admit) } else { None };
        let admitted = match leased {
            Some(admitted) => {
                WorkerMetrics::add(&worker.metrics.lease_admissions, 1);
                settle_by = SettleBy::Lease;
                Ok(Admission::Admitted(admitted))
            }
            None => shared.store.admit(&admit).await,
        };
        let admitted = match admitted {
            Ok(Admission::Admitted(admitted)) => {
                if leasing {
                    worker.leases.borrow_mut().observe(&caller.account_id, admit.now_ms, &admitted);
                }
                admitted
            }
            Ok(refusal) => {
                worker.deny_cache.borrow_mut().record(&caller.account_id, &admit, &refusal, topup_generation);
                return self.refuse_admission(sink, refusal, &request_id);
            }
            Err(StoreError::Unavailable) if caller.kind == KeyKind::Test => {
                // Test keys never touch money: serve them on this worker's share of the limits.
                WorkerMetrics::add(&worker.metrics.store_unavailable, 1);
                let limits =
                    shared.config.limits.limits_for(&caller.account_id, crate::store::TIER_UNVERIFIED, caller.kind);
                let share =
                    shared.config.store_options.gateway_nodes.saturating_mul(shared.metrics.workers.len() as u64);
                match worker.fallback.borrow_mut().admit(&caller.account_id, &admit, &limits, share) {
                    Admission::Admitted(admitted) => {
                        WorkerMetrics::add(&worker.metrics.fallback_admissions, 1);
                        settle_by = SettleBy::Nothing;
                        admitted
                    }
                    refusal => return self.refuse_admission(sink, refusal, &request_id),
                }
            }
            Err(error) => {
                if error == StoreError::Unavailable {
                    WorkerMetrics::add(&worker.metrics.store_unavailable, 1);
                }
                let error = match error {
                    StoreError::Unavailable => ApiError::with_text(
                        ErrorKind::ServiceUnavailable,
                        "The billing store is unreachable right now. Please retry shortly.",
                    ),
                    _ => ApiError::new(ErrorKind::InternalError),
                };
                eprintln!("request {}: admission failed: {error:?}", request_id.as_str());
                return worker.reject(sink, &error, ErrorExtras { retry_after_ms: Some(1000), allow: None }, rid, None);
            }
        };

        let clamped_to = (chat.max_tokens.is_some() && admitted.output_cap_tokens < requested_output_tokens)
            .then_some(admitted.output_cap_tokens);
        if clamped_to.is_some() {
            WorkerMetrics::add(&worker.metrics.max_tokens_clamped, 1);
        }
        let served_by_sandbox = caller.kind == KeyKind::Test || model.backend == Backend::Sandbox;
        let (status, usage) = if served_by_sandbox {
            let reply = CompletionReply {
                request_id: request_id.as_str(),
                model_id: &model.id,
                output_cap_tokens: admitted.output_cap_tokens,
                clamped_to,
                chat: &chat,
                body: request.body,
                rates: Some(&admitted.rates),
                created_unix_s: shared.clock.now_ms() / 1000,
            };
            let produced =
                sandbox_server::write_completion(sink, &reply, &shared.config.sandbox, &worker.metrics).await;
            let outcome = if produced.client_aborted { Outcome::ClientAborted } else { Outcome::Completed };
            let usage =
                Usage { prompt_tokens: produced.prompt_tokens, completion_tokens: produced.completion_tokens, outcome };
            (200, usage)
        } else {
            let upstream = match &model.backend {
                Backend::Upstream(name) => shared.upstreams.index_of(name),
                Backend::Sandbox => None,
            };
            match upstream {
                Some(upstream) => {
                    let proxied = ProxyRequest {
                        request_id: request_id.as_str(),
                        model,
                        chat: &chat,
                        body: request.body,
                        admitted: &admitted,
                        clamped_to,
                        input_tokens_upper,
                    };
                    let mut buffer = worker.request_buffers.borrow_mut().pop().unwrap_or_default();
                    let target = &shared.upstreams.targets[upstream];
                    let result =
                        proxy::proxy_completion(sink, target, upstream, &worker.pool, &proxied, &mut buffer).await;
                    worker.request_buffers.borrow_mut().push(buffer);
                    let usage = Usage {
                        prompt_tokens: result.prompt_tokens,
                        completion_tokens: result.completion_tokens,
                        outcome: result.outcome,
                    };
                    (result.status, usage)
                }
                None => {
                    let error = ApiError::new(ErrorKind::UpstreamUnavailable);
                    let status = worker.reject(sink, &error, ErrorExtras::default(), rid, Some(&admitted.rates));
                    (status, Usage { prompt_tokens: 0, completion_tokens: 0, outcome: Outcome::BackendFailed })
                }
            }
        };
        match settle_by {
            SettleBy::Store => self.settle(&request_id, &caller.account_id, usage).await,
            SettleBy::Lease => {
                let cost = model
                    .input_price
                    .cost_of(usage.prompt_tokens)
                    .zip(model.output_price.cost_of(usage.completion_tokens))
                    .and_then(|(input, output)| input.0.checked_add(output.0))
                    .map_or(admitted.hold, crate::money::Nanos);
                let settlement = LeaseSettlement {
                    hold: admitted.hold,
                    tokens_charged: admitted.tokens_charged,
                    record: crate::store::LeaseRecord {
                        request_id: request_id.as_str().into(),
                        key_id: caller.key_id.clone(),
                        model: model.id.as_str().into(),
                        prompt_tokens: usage.prompt_tokens,
                        completion_tokens: usage.completion_tokens,
                        cost,
                        outcome: usage.outcome,
                    },
                };
                // The charge is counted when the store applies it (`lease_call`); a cost above
                // the hold is lost here already.
                let loss = worker.leases.borrow_mut().settle(&caller.account_id, settlement);
                WorkerMetrics::add(&worker.metrics.operator_loss_nanos, loss.0);
            }
            SettleBy::Nothing => {}
        }
        status
    }

    fn refuse_admission<S>(&self, sink: &mut ResponseSink<S>, refusal: Admission, request_id: &RequestId) -> u16 {
        let worker = &self.worker;
        let rid = Some(request_id);
        match refusal {
            Admission::Admitted(_) => {
                // Only refusals reach here; answering 500 keeps the data path panic-free.
                worker.reject(sink, &ApiError::new(ErrorKind::InternalError), ErrorExtras::default(), rid, None)
            }
            Admission::RateLimited { bucket, limit, used, requested, retry_after_ms, rates } => {
                let error = ApiError {
                    kind: ErrorKind::RateLimitExceeded,
                    param: None,
                    detail: Detail::RateLimited { bucket, limit, used, requested, retry_after_ms },
                };
                let extras = ErrorExtras { retry_after_ms: Some(retry_after_ms.max(1)), allow: None };
                worker.reject(sink, &error, extras, rid, Some(&rates))
            }
            Admission::TooLargeForTokenLimit { limit, requested, rates } => {
                let error = ApiError {
                    kind: ErrorKind::RateLimitRequestTooLarge,
                    param: None,
                    detail: Detail::RateLimitTooLarge { limit, requested },
                };
                worker.reject(sink, &error, ErrorExtras::default(), rid, Some(&rates))
            }
            Admission::InsufficientQuota { balance, available, needed, rates } => {
                let error = ApiError {
                    kind: ErrorKind::InsufficientQuota,
                    param: None,
                    detail: Detail::InsufficientQuota { balance, available, needed },
                };
                worker.reject(sink, &error, ErrorExtras::default(), rid, Some(&rates))
            }
        }
    }

    async fn settle(&self, request_id: &RequestId, account_id: &str, usage: Usage) {
        let shared = &self.worker.shared;
        let settlement = Settlement {
            request_id: request_id.as_str(),
            account_id,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            outcome: usage.outcome,
            now_ms: shared.clock.now_ms(),
        };
        // Settling is exactly once per request id, so a call whose answer was lost can be
        // made again: a store that blinks still charges within the second SPEC §3 allows.
        let mut result = shared.store.settle(&settlement).await;
        for pause_ms in SETTLE_RETRY_PAUSES_MS {
            if result != Err(StoreError::Unavailable) {
                break;
            }
            monoio::time::sleep(std::time::Duration::from_millis(pause_ms)).await;
            result = shared.store.settle(&settlement).await;
        }
        match result {
            Ok(Settled::Charged { charged, operator_loss, .. }) => {
                let metrics = &self.worker.metrics;
                WorkerMetrics::add(&metrics.settlements, 1);
                WorkerMetrics::add(&metrics.charged_nanos, charged.0);
                WorkerMetrics::add(&metrics.operator_loss_nanos, operator_loss.0);
            }
            Ok(Settled::AlreadySettled) => {
                eprintln!("request {}: settle found no hold (already settled or reaped)", request_id.as_str());
            }
            Err(error) => {
                // The hold stays and the reaper releases it at its expiry: the customer is
                // never charged more than the hold, at worst nothing.
                eprintln!("request {}: settle failed: {error}", request_id.as_str());
            }
        }
    }
}

/// Pauses before the retries of a settlement the store could not take (under a second in all,
/// store timeouts included at the default 250 ms).
const SETTLE_RETRY_PAUSES_MS: [u64; 2] = [50, 200];

/// Who settles an admitted request.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum SettleBy {
    /// The store, by the request's hold.
    Store,
    /// This worker's lease; the store applies it with the lease's next call.
    Lease,
    /// Nobody: a test key admitted on the node's own share while the store was down.
    Nothing,
}

/// Actual usage of an admitted request, for settlement.
#[derive(Copy, Clone, Debug)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    outcome: Outcome,
}

/// The input upper bound of SPEC §3: a token is at least one byte, plus template overhead.
pub fn input_tokens_upper_bound(chat: &ChatRequest<'_>) -> u64 {
    chat.content_bytes
        .saturating_add(chat.extra_input_bytes)
        .saturating_add(PER_MESSAGE_OVERHEAD_TOKENS.saturating_mul(chat.message_count as u64))
        .saturating_add(PER_REQUEST_OVERHEAD_TOKENS)
}
