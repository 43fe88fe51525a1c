//! fikra-gateway: the edge of a paid, OpenAI-compatible inference API.
//!
//! One request, from accept to response (follow the modules in this order):
//!
//! 1. `runtime` starts one monoio runtime per core (io_uring, else epoll), each with its own
//!    SO_REUSEPORT listener, plus the admin listener; it accepts connections.
//! 2. `http::server` runs the connection: `http::request` parses the head without copying,
//!    `http::chunked` decodes chunked bodies, limits and timeouts refuse abuse (431/413/400).
//! 3. `pipeline` is the control flow of one client request: route, then `auth` (key format,
//!    per-worker cache, store lookup), `openai::chat` (validate and measure the body without
//!    allocating), `openai::models` (registry, prices, caps), then one atomic admission in the
//!    `store` (RPM + TPM + wallet hold; `admission_cache` answers repeat refusals without the
//!    store and keeps test keys served while it is down; `lease` admits a busy account's
//!    requests from the worker's own slice of its limits and wallet), dispatch to a backend
//!    (`sandbox_server` in process, or
//!    `proxy` to an upstream over a pooled `upstream::client` connection, TCP or `tls`, with
//!    `upstream::relay` rewriting the model and reading usage from each answer or SSE event),
//!    and settlement of the hold from actual usage, exactly once.
//! 4. Every refusal is one `errors::ApiError`, rendered by `http::response` from bodies built at
//!    start-up, with the request id and rate-limit headers.
//! 5. `admin` serves operators (accounts, keys, top-ups, usage, maintenance, metrics).
//!
//! Money is integers (`money`), limits are named constants (`limits`), time is injected
//! (`clock`), configuration is validated whole before anything starts (`config`).
#![forbid(unsafe_code)]
// One logging facility (`log`): a bare print is refused outside the CLI's own output to the
// operator (`cli`), which allows it where it prints usage, reports and the demo banner.
#![warn(clippy::print_stdout, clippy::print_stderr)]

pub mod access;
pub mod admin;
pub mod api;
pub mod backend;
pub mod cli;
pub mod clock;
pub mod config;
pub mod digits;
pub mod errors;
pub mod http;
pub mod ids;
pub mod json;
pub mod limits;
pub mod log;
pub mod metrics;
pub mod money;
pub mod openai;
pub mod panic_guard;
pub mod redis;
pub mod runtime;
pub mod sandbox_server;
pub mod shared;
pub mod store;
pub mod tls;
pub mod worker;
