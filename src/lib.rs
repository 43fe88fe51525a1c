//! fikra-gateway: the edge of a paid, OpenAI-compatible inference API.
//!
//! One chat request, from accept to response; the files in the order it meets them:
//!
//! 1. `main.rs` -> `cli.rs` (argv) -> `config/` (the whole file validated, every error at once)
//!    -> `runtime.rs`: one monoio runtime per core (io_uring, else epoll), each a `worker.rs`
//!    `Worker` owning everything that core owns (key and deny caches, leases and their task,
//!    upstream pool and the task sweeping its idle connections, buffers, output buffers,
//!    request ids, metrics shard), beside the `shared.rs` state every worker reads (config,
//!    store, registry, switches).
//! 2. `http/listener.rs` accepts on the worker's own SO_REUSEPORT socket; `http/server.rs` runs
//!    the connection: `http/request.rs` parses the head without copying, `http/chunked.rs`
//!    decodes chunked bodies, limits and timeouts refuse abuse (431/413/400) before any handler
//!    (then close lingering, so the client reads why); its `ResponseSink` applies the HTTP
//!    manners no handler may forget (HEAD sends no body, HTTP/1.0 streams are close-delimited).
//! 3. `api/mod.rs` routes by path and method. `api/chat.rs` is the request as phases, each a
//!    `Result<_, Refusal>`:
//!    - `api/authenticate.rs`: the key (`access/auth.rs`: format, hash, per-worker cache) to
//!      its caller, through the store on a miss;
//!    - `openai/chat/` validates and measures the body without allocating; `openai/models.rs`
//!      is the registry (prices, caps, backends);
//!    - `api/admit.rs`: one atomic admission (RPM + TPM + wallet hold, SPEC §3-§4), answered by
//!      a deny entry (`access/deny_cache.rs`), the worker's lease of a busy account
//!      (`access/lease.rs`, paid by `access/lease_task.rs`), or the `store/` (embedded, or
//!      Redis through the `redis/` client); `access/fallback.rs` serves test keys while the
//!      store is down; an admission whose store answer was lost is undone later by the
//!      worker's void task (`store/redis/recovery.rs`), and `runtime.rs`'s heartbeat and reaper
//!      release the holds of nodes that died;
//!    - `api/dispatch.rs`: to the backend, `backend/sandbox/` in process (`reply.rs` writes the
//!      answer) or `backend/upstream/exchange.rs` over a pooled `backend/upstream/client.rs`
//!      connection (TCP or `tls.rs`), which classifies every answer before relaying it (a 200
//!      that is not a result is a free 502), `backend/upstream/stream.rs` relaying SSE once the
//!      first event is known to be a chunk, and `backend/upstream/rewrite.rs` putting the public
//!      model id into every answer and SSE event and reading usage from it;
//!    - `api/settle.rs`: the hold becomes the actual charge, exactly once.
//!
//!    `api/responses.rs` (`POST /v1/responses`) is the same walk by translation:
//!    `openai/responses/` validates the Responses body and writes its Chat Completions
//!    equivalent (`translate.rs`) into a worker buffer; the chat phases above run on that body
//!    (so holds, clamping, limits and billing are chat's), and `api/dispatch.rs`'s `dispatch_as`
//!    passes an `AnswerFormat` to the two writers (`backend/sandbox/reply.rs`,
//!    `backend/upstream/{exchange,stream}.rs`), which hand their chat body or SSE events to
//!    `openai/responses/answer.rs` to become a Responses object or typed events.
//! 4. Any refusal goes to `api/rescue.rs`, the one road to an error on the wire: the
//!    `errors.rs` kind (status, type, code, side, whether the connection closes) rendered by
//!    `http/response.rs` from bodies built at start-up, with the request id and rate headers.
//!    Once answered, `api/trace.rs` turns what the phases learned into the latency histograms
//!    (`histogram.rs`), the per-model counters (`metrics.rs`) and one line of the access log
//!    (`access_log.rs`, written off the worker).
//! 5. `admin.rs` serves operators on its own listener (accounts, keys, top-ups, usage,
//!    maintenance, metrics); `payments/` serves the payment providers' callbacks on a third
//!    listener (M-Pesa Daraja callbacks, Stripe webhooks), crediting through the same top-up;
//!    `sandbox_server.rs` runs the sandbox alone as a stand-in upstream.
//!
//! Leaves every layer may use: `money` (integer nano-USD), `limits` (every bound, named),
//! `clock` (time, injected), `ratelimit` (bucket arithmetic), `metrics`, `log`, `access_log`,
//! `errors`, `ids`, `json`, `panic_guard`, `tls`, `histogram`, and under them all `digits`
//! (decimal digits on the stack, which `money` uses too) and `words` (the eight-bytes-at-a-time
//! search loop of the JSON scanner and the upstream head reader). Imports between
//! top-level modules only go down: `cli` > `runtime` > `admin`, `api`, `payments`, `sandbox_server` >
//! `worker` > `shared` > `access`, `backend` > `config` > `store` > `redis`, `http`, `openai` >
//! `metrics`, `log`, `access_log` > `errors` > the other leaves > `digits`, `words`
//! (`tests/layers.rs` checks it).
#![deny(unsafe_code)]
// One logging facility (`log`): a bare print is refused outside the CLI's own output to the
// operator (`cli`), which allows it where it prints usage, reports and the demo banner.
#![warn(clippy::print_stdout, clippy::print_stderr)]

pub mod access;
pub mod access_log;
pub mod admin;
pub mod api;
pub mod backend;
pub mod cli;
pub mod clock;
pub mod config;
pub mod digits;
pub mod errors;
pub mod histogram;
pub mod http;
pub mod ids;
pub mod json;
pub mod limits;
pub mod log;
pub mod metrics;
pub mod money;
pub mod openai;
pub mod panic_guard;
pub mod payments;
pub mod ratelimit;
pub mod redis;
pub mod runtime;
pub mod sandbox_server;
pub mod shared;
pub mod store;
pub mod tls;
pub mod words;
pub mod worker;
