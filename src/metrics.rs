//! Counters every worker bumps on its own shard, and their Prometheus text rendering.
//!
//! Each worker owns one `WorkerMetrics` (plain relaxed atomics written by that worker alone, so
//! there is no contention on the data path); the admin listener sums the shards when scraped.
//! This module decides metric names and labels; it never blocks and never allocates on the
//! data path (allocation happens only when rendering a scrape).

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::errors::ErrorKind;
use crate::histogram::{self, Histogram, HistogramTotal};
use crate::money::TokenUsage;

/// The routes requests are counted under.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Route {
    ChatCompletions,
    ListModels,
    RetrieveModel,
    Unknown,
    /// Requests refused before routing (malformed HTTP, oversized heads).
    Framing,
    /// `POST /v1/responses`, appended last so the other routes keep their slots.
    Responses,
    /// `GET /v1/account`.
    Account,
    /// `GET /v1/usage`.
    Usage,
}

impl Route {
    pub const ALL: [Route; 8] = [
        Route::ChatCompletions,
        Route::ListModels,
        Route::RetrieveModel,
        Route::Unknown,
        Route::Framing,
        Route::Responses,
        Route::Account,
        Route::Usage,
    ];
    pub fn label(self) -> &'static str {
        match self {
            Route::ChatCompletions => "/v1/chat/completions",
            Route::ListModels => "/v1/models",
            Route::RetrieveModel => "/v1/models/{id}",
            Route::Unknown => "unknown",
            Route::Framing => "framing",
            Route::Responses => "/v1/responses",
            Route::Account => "/v1/account",
            Route::Usage => "/v1/usage",
        }
    }
    fn index(self) -> usize {
        Route::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// Statuses with their own counter; anything else counts as the last slot ("other").
const COUNTED_STATUSES: [u16; 16] = [200, 204, 400, 401, 402, 404, 405, 413, 417, 429, 431, 500, 502, 503, 504, 0];
const STATUS_SLOTS: usize = COUNTED_STATUSES.len();
const KIND_SLOTS: usize = ErrorKind::ALL.len();

/// Which IO driver a worker runs.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Driver {
    IoUring,
    Epoll,
}

impl Driver {
    pub fn label(self) -> &'static str {
        match self {
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        }
    }
}

/// One worker's counters.
pub struct WorkerMetrics {
    requests: [[AtomicU64; STATUS_SLOTS]; Route::ALL.len()],
    rejections: [AtomicU64; KIND_SLOTS],
    /// 0 = not started, 1 = io_uring, 2 = epoll.
    driver: AtomicU64,
    pub connections_accepted: AtomicU64,
    pub connections_open: AtomicU64,
    pub requests_in_flight: AtomicU64,
    pub sandbox_chunks_emitted: AtomicU64,
    pub settlements: AtomicU64,
    pub charged_nanos: AtomicU64,
    pub operator_loss_nanos: AtomicU64,
    pub max_tokens_clamped: AtomicU64,
    pub connection_panics: AtomicU64,
    pub upstream_connects: AtomicU64,
    /// Idle upstream connections closed by the pool sweep once their idle timeout passed.
    pub upstream_idle_closed: AtomicU64,
    /// Refusals answered from a worker's deny entry, without a store call.
    pub deny_cache_hits: AtomicU64,
    /// Test-key requests admitted on this node's own share while the store was unreachable.
    pub fallback_admissions: AtomicU64,
    /// Keys recognised from the node's key directory while the store was unreachable.
    pub key_directory_hits: AtomicU64,
    /// Store calls that failed (unreachable or timed out).
    pub store_unavailable: AtomicU64,
    /// Requests admitted from this worker's lease, without a store call.
    pub lease_admissions: AtomicU64,
    /// Lease calls to the store (renew, pay, give back), and those that failed.
    pub lease_calls: AtomicU64,
    pub lease_call_failures: AtomicU64,
    /// Latency histograms (SPEC §12).
    pub latency: Latency,
    /// Tokens and charges by model, indexed like the registry (empty on the admin shard).
    pub models: Box<[ModelCounters]>,
}

/// Picks one histogram out of a shard (for rendering).
type ReadHistogram = fn(&WorkerMetrics) -> &Histogram;

/// One worker's latency histograms.
#[derive(Default)]
pub struct Latency {
    /// From a request's head to its last byte handed to the connection, by route.
    pub request_duration: [Histogram; Route::ALL.len()],
    /// From sending a request upstream to the upstream's response head.
    pub upstream_response: Histogram,
    /// From a request's head to the first token written to the client (streams), or to the
    /// whole answer (unary).
    pub time_to_first_token: Histogram,
    /// A proxied request's duration minus the time spent waiting on the upstream.
    pub gateway_overhead: Histogram,
    /// Counting a request's input with its model's tokenizer (the second stage of the input
    /// bound), from handing the job to the helper thread to its answer.
    pub tokenize: Histogram,
}

impl Latency {
    pub fn request_duration_of(&self, route: Route) -> &Histogram {
        &self.request_duration[route.index()]
    }
}

/// Kinds of tokens counted per model, in `ModelCounters::tokens` order.
pub const TOKEN_KINDS: [&str; 4] = ["prompt", "cached", "completion", "reasoning"];

/// One worker's counters for one model.
#[derive(Default)]
pub struct ModelCounters {
    /// By `TOKEN_KINDS`: prompt (cached included), cached, completion (reasoning included),
    /// reasoning.
    pub tokens: [AtomicU64; 4],
    /// Nano-USD charged for this model's requests.
    pub charged_nanos: AtomicU64,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        WorkerMetrics {
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            rejections: std::array::from_fn(|_| AtomicU64::new(0)),
            driver: AtomicU64::new(0),
            connections_accepted: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            requests_in_flight: AtomicU64::new(0),
            sandbox_chunks_emitted: AtomicU64::new(0),
            settlements: AtomicU64::new(0),
            charged_nanos: AtomicU64::new(0),
            operator_loss_nanos: AtomicU64::new(0),
            max_tokens_clamped: AtomicU64::new(0),
            connection_panics: AtomicU64::new(0),
            upstream_connects: AtomicU64::new(0),
            upstream_idle_closed: AtomicU64::new(0),
            deny_cache_hits: AtomicU64::new(0),
            fallback_admissions: AtomicU64::new(0),
            key_directory_hits: AtomicU64::new(0),
            lease_admissions: AtomicU64::new(0),
            lease_calls: AtomicU64::new(0),
            lease_call_failures: AtomicU64::new(0),
            store_unavailable: AtomicU64::new(0),
            latency: Latency::default(),
            models: Box::default(),
        }
    }
}

/// Adds `by` to a counter, stopping at `u64::MAX` instead of wrapping (SPEC §12: counters never
/// decrease; a wrapped money counter would read as money coming back).
///
/// A plain load, saturating add and store, not a compare-and-swap loop: every shard has exactly
/// one writer (its worker's thread, or the admin thread for `Metrics::admin`; monoio never moves
/// a task between threads), so no other write can land between the load and the store. Readers
/// (a scrape on the admin thread) only ever see a value that was stored whole. With a second
/// writer this would lose increments, never wrap: still never a decrease, but undercounting.
fn bump(counter: &AtomicU64, by: u64) {
    let now = counter.load(Ordering::Relaxed);
    counter.store(now.saturating_add(by), Ordering::Relaxed);
}

impl WorkerMetrics {
    /// A shard with counters for `models` registry entries.
    pub fn with_models(models: usize) -> WorkerMetrics {
        WorkerMetrics { models: (0..models).map(|_| ModelCounters::default()).collect(), ..WorkerMetrics::default() }
    }

    /// Counts one settled request's tokens and charge under its model.
    pub fn count_usage(&self, model_index: usize, tokens: &TokenUsage, charged_nanos: u64) {
        let Some(model) = self.models.get(model_index) else { return };
        let tokens = tokens.consistent();
        let by_kind =
            [tokens.prompt_tokens, tokens.cached_prompt_tokens, tokens.completion_tokens, tokens.reasoning_tokens];
        for (counter, value) in model.tokens.iter().zip(by_kind) {
            bump(counter, value);
        }
        bump(&model.charged_nanos, charged_nanos);
    }

    pub fn count_request(&self, route: Route, status: u16) {
        let slot = COUNTED_STATUSES.iter().position(|s| *s == status).unwrap_or(STATUS_SLOTS - 1);
        bump(&self.requests[route.index()][slot], 1);
    }

    pub fn count_rejection(&self, kind: ErrorKind) {
        let slot = ErrorKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        bump(&self.rejections[slot], 1);
    }

    pub fn set_driver(&self, driver: Driver) {
        self.driver.store(if driver == Driver::IoUring { 1 } else { 2 }, Ordering::Relaxed);
    }

    pub fn driver(&self) -> Option<Driver> {
        match self.driver.load(Ordering::Relaxed) {
            1 => Some(Driver::IoUring),
            2 => Some(Driver::Epoll),
            _ => None,
        }
    }

    pub fn add(counter: &AtomicU64, by: u64) {
        bump(counter, by);
    }

    pub fn gauge_up(counter: &AtomicU64) {
        bump(counter, 1);
    }

    /// A gauge never goes below zero: a down without its up (a bug) reads 0, not 2^64 - 1.
    pub fn gauge_down(counter: &AtomicU64) {
        let now = counter.load(Ordering::Relaxed);
        counter.store(now.saturating_sub(1), Ordering::Relaxed);
    }
}

/// All workers' shards.
#[derive(Default)]
pub struct Metrics {
    pub workers: Vec<Arc<WorkerMetrics>>,
    /// Requests answered by the admin listener.
    pub admin: Arc<WorkerMetrics>,
    /// The public model ids, in registry order (the labels of the per-model counters).
    model_ids: Vec<String>,
    /// Access-log lines dropped because its writer fell behind (bumped by the workers that
    /// dropped them: several writers, so a plain atomic add).
    pub access_log_dropped_lines: Arc<AtomicU64>,
    /// The payments listener's requests and its callback outcomes (SPEC §11).
    pub payments: Arc<PaymentMetrics>,
}

impl Metrics {
    pub fn new(workers: usize) -> Metrics {
        Metrics::with_models(workers, Vec::new())
    }

    /// Shards for `workers` workers, each counting tokens and charges for `model_ids`.
    pub fn with_models(workers: usize, model_ids: Vec<String>) -> Metrics {
        Metrics {
            workers: (0..workers).map(|_| Arc::new(WorkerMetrics::with_models(model_ids.len()))).collect(),
            admin: Arc::default(),
            model_ids,
            access_log_dropped_lines: Arc::default(),
            payments: Arc::default(),
        }
    }

    /// The shards' total, saturating like each shard: two shards near `u64::MAX` render as
    /// `u64::MAX`, never as a wrapped small number (and never panic on overflow).
    fn sum(&self, read: impl Fn(&WorkerMetrics) -> u64) -> u64 {
        self.workers.iter().fold(0u64, |total, w| total.saturating_add(read(w)))
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let mut text = String::with_capacity(4096);
        let _ = writeln!(text, "# HELP fikra_requests_total Client API requests answered, by route and status.");
        let _ = writeln!(text, "# TYPE fikra_requests_total counter");
        for route in Route::ALL {
            for (slot, status) in COUNTED_STATUSES.iter().enumerate() {
                let value = self.sum(|w| w.requests[route.index()][slot].load(Ordering::Relaxed));
                if value > 0 {
                    let status_label = if *status == 0 { "other".to_string() } else { status.to_string() };
                    let _ = writeln!(
                        text,
                        "fikra_requests_total{{route=\"{}\",status=\"{status_label}\"}} {value}",
                        route.label()
                    );
                }
            }
        }
        let _ = writeln!(text, "# HELP fikra_rejections_total Requests refused, by reason (the error code).");
        let _ = writeln!(text, "# TYPE fikra_rejections_total counter");
        let mut by_code: Vec<(&str, u64)> = Vec::new();
        for (slot, kind) in ErrorKind::ALL.iter().enumerate() {
            let value = self.sum(|w| w.rejections[slot].load(Ordering::Relaxed));
            let code = kind.spec().code;
            match by_code.iter_mut().find(|(c, _)| *c == code) {
                Some(entry) => entry.1 = entry.1.saturating_add(value),
                None => by_code.push((code, value)),
            }
        }
        for (code, value) in by_code {
            let _ = writeln!(text, "fikra_rejections_total{{reason=\"{code}\"}} {value}");
        }
        let _ = writeln!(text, "# HELP fikra_worker_driver The IO driver each worker runs (1 = this driver).");
        let _ = writeln!(text, "# TYPE fikra_worker_driver gauge");
        for (index, worker) in self.workers.iter().enumerate() {
            if let Some(driver) = worker.driver() {
                let _ = writeln!(text, "fikra_worker_driver{{worker=\"{index}\",driver=\"{}\"}} 1", driver.label());
            }
        }
        let scalar = |text: &mut String, name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        let load = |read: fn(&WorkerMetrics) -> &AtomicU64| self.sum(|w| read(w).load(Ordering::Relaxed));
        scalar(
            &mut text,
            "fikra_connections_accepted_total",
            "counter",
            "Client connections accepted.",
            load(|w| &w.connections_accepted),
        );
        scalar(
            &mut text,
            "fikra_connections_open",
            "gauge",
            "Client connections open now.",
            load(|w| &w.connections_open),
        );
        scalar(
            &mut text,
            "fikra_requests_in_flight",
            "gauge",
            "Client requests being answered now.",
            load(|w| &w.requests_in_flight),
        );
        scalar(
            &mut text,
            "fikra_sandbox_chunks_emitted_total",
            "counter",
            "Content chunks the in-process sandbox produced.",
            load(|w| &w.sandbox_chunks_emitted),
        );
        scalar(&mut text, "fikra_settlements_total", "counter", "Holds settled.", load(|w| &w.settlements));
        scalar(
            &mut text,
            "fikra_charged_nanos_total",
            "counter",
            "Nano-USD charged to wallets.",
            load(|w| &w.charged_nanos),
        );
        scalar(
            &mut text,
            "fikra_operator_loss_nanos_total",
            "counter",
            "Nano-USD of usage beyond the hold, not charged (operator loss).",
            load(|w| &w.operator_loss_nanos),
        );
        scalar(
            &mut text,
            "fikra_max_tokens_clamped_total",
            "counter",
            "Requests whose output cap was lowered below what was asked (the client's max_tokens, else the model's cap), announced in x-fikra-max-tokens-clamped.",
            load(|w| &w.max_tokens_clamped),
        );
        scalar(
            &mut text,
            "fikra_deny_cache_hits_total",
            "counter",
            "Refusals (429, 402) answered from a worker's deny entry without a store call.",
            load(|w| &w.deny_cache_hits),
        );
        scalar(
            &mut text,
            "fikra_store_fallback_admissions_total",
            "counter",
            "Test-key requests admitted on the node's own share of the limits while the store was down.",
            load(|w| &w.fallback_admissions),
        );
        scalar(
            &mut text,
            "fikra_key_directory_hits_total",
            "counter",
            "Keys recognised from the node's key directory while the store was down.",
            load(|w| &w.key_directory_hits),
        );
        scalar(
            &mut text,
            "fikra_lease_admissions_total",
            "counter",
            "Requests admitted from a worker's lease of an account's limits and wallet, without a store call.",
            load(|w| &w.lease_admissions),
        );
        scalar(
            &mut text,
            "fikra_lease_calls_total",
            "counter",
            "Lease calls to the store (pay for served requests, give back, renew).",
            load(|w| &w.lease_calls),
        );
        scalar(
            &mut text,
            "fikra_lease_call_failures_total",
            "counter",
            "Lease calls that failed (retried with the same sequence number).",
            load(|w| &w.lease_call_failures),
        );
        scalar(
            &mut text,
            "fikra_store_unavailable_total",
            "counter",
            "Store calls that failed because the store was unreachable or too slow.",
            load(|w| &w.store_unavailable),
        );
        scalar(
            &mut text,
            "fikra_connection_panics_total",
            "counter",
            "Connections ended by a bug (panic caught).",
            load(|w| &w.connection_panics),
        );
        scalar(
            &mut text,
            "fikra_upstream_connects_total",
            "counter",
            "New upstream connections (TCP connect, then TLS handshake for https).",
            load(|w| &w.upstream_connects),
        );
        scalar(
            &mut text,
            "fikra_upstream_idle_closed_total",
            "counter",
            "Idle pooled upstream connections closed by the sweep after their idle timeout.",
            load(|w| &w.upstream_idle_closed),
        );
        scalar(
            &mut text,
            "fikra_access_log_dropped_lines_total",
            "counter",
            "Access-log lines dropped because the log writer fell behind.",
            self.access_log_dropped_lines.load(Ordering::Relaxed),
        );
        self.render_models(&mut text);
        self.render_latency(&mut text);
        self.payments.render_into(&mut text);
        text
    }

    fn render_models(&self, text: &mut String) {
        let _ = writeln!(
            text,
            "# HELP fikra_tokens_total Tokens settled, by model and kind (cached is part of prompt, reasoning part of completion)."
        );
        let _ = writeln!(text, "# TYPE fikra_tokens_total counter");
        for (index, model) in self.model_ids.iter().enumerate() {
            for (slot, kind) in TOKEN_KINDS.iter().enumerate() {
                let value = self.sum(|w| w.models.get(index).map_or(0, |m| m.tokens[slot].load(Ordering::Relaxed)));
                let _ = writeln!(text, "fikra_tokens_total{{model=\"{model}\",kind=\"{kind}\"}} {value}");
            }
        }
        let _ = writeln!(text, "# HELP fikra_model_charged_nanos_total Nano-USD charged, by model.");
        let _ = writeln!(text, "# TYPE fikra_model_charged_nanos_total counter");
        for (index, model) in self.model_ids.iter().enumerate() {
            let value = self.sum(|w| w.models.get(index).map_or(0, |m| m.charged_nanos.load(Ordering::Relaxed)));
            let _ = writeln!(text, "fikra_model_charged_nanos_total{{model=\"{model}\"}} {value}");
        }
    }

    fn render_latency(&self, text: &mut String) {
        let total = |read: &dyn Fn(&WorkerMetrics) -> &Histogram| {
            let mut total = HistogramTotal::default();
            for worker in &self.workers {
                read(worker).add_to(&mut total);
            }
            total
        };
        let name = "fikra_request_duration_seconds";
        histogram::render_header(
            text,
            name,
            "Client API requests, from the head read to the last byte handed to the connection.",
        );
        for route in Route::ALL {
            let labels = format!("route=\"{}\"", route.label());
            histogram::render_series(text, name, &labels, &total(&|w| w.latency.request_duration_of(route)));
        }
        let single: [(&str, &str, ReadHistogram); 4] = [
            (
                "fikra_upstream_response_seconds",
                "From sending a request upstream to the upstream's response head.",
                |w| &w.latency.upstream_response,
            ),
            (
                "fikra_time_to_first_token_seconds",
                "From the request's head to the first token written to the client (unary: the whole answer).",
                |w| &w.latency.time_to_first_token,
            ),
            (
                "fikra_gateway_overhead_seconds",
                "A proxied request's duration minus the time spent waiting on the upstream.",
                |w| &w.latency.gateway_overhead,
            ),
            (
                "fikra_tokenize_seconds",
                "Counting a request's input with its model's tokenizer (only requests the byte bound would refuse or clamp).",
                |w| &w.latency.tokenize,
            ),
        ];
        for (name, help, read) in single {
            histogram::render_header(text, name, help);
            histogram::render_series(text, name, "", &total(&read));
        }
    }
}

/// Counters of a shared store's failure paths: admissions undone after a lost answer, and holds
/// released for gateway nodes presumed dead. Bumped by whichever thread meets them (rarely: only
/// when something failed), owned by the store, rendered with the workers' counters.
#[derive(Default)]
pub struct StoreMetrics {
    /// Admissions whose answer was lost, queued to be undone.
    pub voids_queued: AtomicU64,
    /// Of those, let go because the owner's queue was full (their holds wait for the TTL).
    pub voids_dropped: AtomicU64,
    /// `fk_void` calls Redis answered.
    pub voids_sent: AtomicU64,
    /// Voids that found the admission had run and released its hold, RPM and TPM.
    pub void_holds_released: AtomicU64,
    /// Voids that found no hold and left a marker refusing the admission should it still come.
    pub void_markers_written: AtomicU64,
    /// Holds and lease escrows released because their node's heartbeat stopped.
    pub dead_node_holds_released: AtomicU64,
    /// Settlements that found their hold released as a dead node's (served, nothing charged).
    pub settled_after_node_release: AtomicU64,
    /// Heartbeats that did not reach the store.
    pub heartbeat_failures: AtomicU64,
}

impl StoreMetrics {
    pub fn add(counter: &AtomicU64, by: u64) {
        bump(counter, by);
    }

    /// Appends these counters in the Prometheus text format.
    pub fn render_into(&self, text: &mut String) {
        let counters: [(&str, &str, &AtomicU64); 8] = [
            (
                "fikra_store_voids_queued_total",
                "Admissions whose store answer was lost, queued to be undone.",
                &self.voids_queued,
            ),
            (
                "fikra_store_voids_dropped_total",
                "Admissions to undo let go because the queue was full (their holds wait for the TTL).",
                &self.voids_dropped,
            ),
            ("fikra_store_voids_sent_total", "Undo calls (fk_void) the store answered.", &self.voids_sent),
            (
                "fikra_store_void_holds_released_total",
                "Undo calls that released a hold (with its RPM and TPM) of an admission answered 503.",
                &self.void_holds_released,
            ),
            (
                "fikra_store_void_markers_written_total",
                "Undo calls that found no hold and left a marker refusing the late admission.",
                &self.void_markers_written,
            ),
            (
                "fikra_store_dead_node_holds_released_total",
                "Holds and lease escrows released because their gateway node stopped its heartbeat.",
                &self.dead_node_holds_released,
            ),
            (
                "fikra_store_settled_after_node_release_total",
                "Settlements that found their hold released as a dead node's: served, not charged (operator loss).",
                &self.settled_after_node_release,
            ),
            (
                "fikra_store_heartbeat_failures_total",
                "Node heartbeats that did not reach the store.",
                &self.heartbeat_failures,
            ),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(
                text,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                counter.load(Ordering::Relaxed)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: a money counter stops at u64::MAX instead of wrapping, on one shard and across
    // shards when a scrape adds them up; a gauge stops at zero.
    #[test]
    fn counters_saturate_instead_of_wrapping() {
        let metrics = Metrics::new(2);
        let [first, second] = [&metrics.workers[0], &metrics.workers[1]];
        WorkerMetrics::add(&first.operator_loss_nanos, u64::MAX - 5);
        WorkerMetrics::add(&first.operator_loss_nanos, 4);
        assert_eq!(first.operator_loss_nanos.load(Ordering::Relaxed), u64::MAX - 1);
        WorkerMetrics::add(&first.operator_loss_nanos, 7);
        assert_eq!(first.operator_loss_nanos.load(Ordering::Relaxed), u64::MAX);
        WorkerMetrics::add(&second.operator_loss_nanos, 3);
        WorkerMetrics::add(&second.charged_nanos, u64::MAX);
        WorkerMetrics::add(&first.charged_nanos, 1);
        let text = metrics.render();
        assert!(text.contains("\nfikra_operator_loss_nanos_total 18446744073709551615\n"), "{text}");
        assert!(text.contains("\nfikra_charged_nanos_total 18446744073709551615\n"), "{text}");
        WorkerMetrics::gauge_up(&second.connections_open);
        WorkerMetrics::gauge_down(&second.connections_open);
        WorkerMetrics::gauge_down(&second.connections_open);
        assert_eq!(second.connections_open.load(Ordering::Relaxed), 0);
    }
}

/// The payment providers, in the order of `PaymentMetrics`' rows.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PaymentProvider {
    Mpesa,
    Stripe,
}

impl PaymentProvider {
    const ALL: [PaymentProvider; 2] = [PaymentProvider::Mpesa, PaymentProvider::Stripe];

    pub fn label(self) -> &'static str {
        match self {
            PaymentProvider::Mpesa => "mpesa",
            PaymentProvider::Stripe => "stripe",
        }
    }
}

/// What a callback came to: `credited` (money moved), `duplicate` (its reference was credited
/// before), `failed` (the provider reports a failed or cancelled payment, recorded), `ignored`
/// (nothing to credit, e.g. another event type), `rejected` (a check failed, nothing changed),
/// `retry` (the store could not be reached: answered so that the provider retries).
pub const PAYMENT_OUTCOMES: [&str; 6] = ["credited", "duplicate", "failed", "ignored", "rejected", "retry"];

/// Why a callback was rejected (the `reason` label).
pub const PAYMENT_REJECTION_REASONS: [&str; 17] = [
    "missing_signature",
    "malformed_signature",
    "stale_signature",
    "bad_signature",
    "malformed_event",
    "no_account",
    "bad_amount",
    "unsupported_currency",
    "unknown_account",
    "wrong_token",
    "source_ip",
    "unknown_checkout",
    "amount_mismatch",
    "not_confirmed",
    "malformed_callback",
    "account_mismatch",
    "wrong_shortcode",
];

/// One rendered counter family: name, help, label name, label values, values by provider.
type PaymentFamily<'a> = (&'a str, &'a str, &'a str, &'a [&'a str], Vec<Vec<u64>>);

/// Counters of the payments listener: its thread alone writes them.
#[derive(Default)]
pub struct PaymentMetrics {
    /// The listener's own connection and driver counters.
    pub listener: Arc<WorkerMetrics>,
    callbacks: [[AtomicU64; PAYMENT_OUTCOMES.len()]; 2],
    rejections: [[AtomicU64; PAYMENT_REJECTION_REASONS.len()]; 2],
}

impl PaymentMetrics {
    /// Counts one callback of `provider` with `outcome` (one of `PAYMENT_OUTCOMES`).
    pub fn count_callback(&self, provider: PaymentProvider, outcome: &'static str) {
        let slot = PAYMENT_OUTCOMES.iter().position(|known| *known == outcome);
        debug_assert!(slot.is_some(), "unknown payment outcome {outcome}");
        if let Some(slot) = slot {
            bump(&self.callbacks[provider as usize][slot], 1);
        }
    }

    /// Counts one rejection of `provider` for `reason` (one of `PAYMENT_REJECTION_REASONS`).
    pub fn count_rejection(&self, provider: PaymentProvider, reason: &'static str) {
        let slot = PAYMENT_REJECTION_REASONS.iter().position(|known| *known == reason);
        debug_assert!(slot.is_some(), "unknown payment rejection reason {reason}");
        if let Some(slot) = slot {
            bump(&self.rejections[provider as usize][slot], 1);
        }
    }

    /// Appends the two counter families in the Prometheus text format (non-zero series only).
    pub fn render_into(&self, text: &mut String) {
        let families: [PaymentFamily<'_>; 2] = [
            (
                "fikra_payment_callbacks_total",
                "Payment provider callbacks, by provider and outcome.",
                "outcome",
                &PAYMENT_OUTCOMES,
                self.callbacks.iter().map(|row| row.iter().map(|c| c.load(Ordering::Relaxed)).collect()).collect(),
            ),
            (
                "fikra_payment_rejections_total",
                "Payment callbacks rejected, by provider and reason.",
                "reason",
                &PAYMENT_REJECTION_REASONS,
                self.rejections.iter().map(|row| row.iter().map(|c| c.load(Ordering::Relaxed)).collect()).collect(),
            ),
        ];
        for (name, help, label_name, labels, rows) in families {
            let _ = writeln!(text, "# HELP {name} {help}");
            let _ = writeln!(text, "# TYPE {name} counter");
            for provider in PaymentProvider::ALL {
                for (label, value) in labels.iter().zip(&rows[provider as usize]) {
                    if *value > 0 {
                        let provider = provider.label();
                        let _ = writeln!(text, "{name}{{provider=\"{provider}\",{label_name}=\"{label}\"}} {value}");
                    }
                }
            }
        }
    }
}
