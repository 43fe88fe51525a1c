//! Every bound the gateway enforces, as a named constant with its unit.
//!
//! Configuration may lower these (a smaller head or body limit, shorter timeouts), never raise
//! them: `config.rs` rejects a value above the constant here. Nothing else in the crate writes a
//! bare number for a limit.

/// Largest request head (request line plus headers) accepted, in bytes; past it: 431.
pub const MAX_REQUEST_HEAD_BYTES: usize = 32 * 1024;
/// Largest request body accepted, in bytes; past it: 413.
pub const MAX_REQUEST_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Most header lines parsed in one request head (a stack array of this size); past it: 431.
pub const MAX_REQUEST_HEADERS: usize = 64;
/// Time allowed from the first byte of a request head to its end.
pub const HEAD_READ_TIMEOUT_MS: u64 = 10_000;
/// Time allowed to receive a whole request body once the head is in.
pub const BODY_READ_TIMEOUT_MS: u64 = 30_000;
/// How long an idle keep-alive connection is kept open waiting for its next request.
pub const KEEPALIVE_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Time allowed to write one response (or one SSE event) to a slow client.
pub const RESPONSE_WRITE_TIMEOUT_MS: u64 = 30_000;
/// Requests answered on one connection before it is closed (bounds per-connection state).
pub const MAX_REQUESTS_PER_CONNECTION: u64 = 100_000;
/// Deepest JSON nesting accepted in a request body; deeper: 400 invalid_json.
pub const MAX_JSON_DEPTH: usize = 64;
/// Most entries in `messages`.
pub const MAX_MESSAGES: usize = 4096;
/// Tokens the gateway assumes a chat template adds per message, on top of its content bytes.
pub const PER_MESSAGE_OVERHEAD_TOKENS: u64 = 8;
/// Tokens the gateway assumes a chat template adds once per request (assistant priming).
pub const PER_REQUEST_OVERHEAD_TOKENS: u64 = 8;
/// Longest a hold may live before the reaper releases it (longest possible request plus margin).
pub const HOLD_TTL_MS: u64 = 15 * 60 * 1000;
/// Longest one proxied request (stream included) may run; ends well before its hold expires.
pub const UPSTREAM_REQUEST_DEADLINE_MS: u64 = 10 * 60 * 1000;
const _: () = assert!(UPSTREAM_REQUEST_DEADLINE_MS < HOLD_TTL_MS, "a request must end before its hold can be reaped");
/// How often each store's reaper looks for expired holds.
pub const HOLD_REAPER_INTERVAL_MS: u64 = 5_000;

// Leases (src/access/lease.rs): a worker's share of a busy account's buckets and wallet.
/// A worker leases for an account once it admits this many of the account's requests a second.
pub const LEASE_MIN_REQUESTS_PER_S: u64 = 20;
/// The window over which a worker measures an account's rate of admissions.
pub const LEASE_RATE_WINDOW_MS: u64 = 250;
/// Accounts with a lower RPM limit are never leased (a lease must be small next to the limit).
pub const LEASE_MIN_RPM: u64 = 1_200;
/// A lease is sized for this much of the account's recent traffic on the worker.
pub const LEASE_HORIZON_MS: u64 = 1_000;
/// Each grant is at most 1/LEASE_SHARE of what is left in a bucket or in the wallet.
pub const LEASE_SHARE: u64 = 8;
/// Leased rate tokens unused this long go back to the shared bucket (the over-admission bound:
/// at most `rpm x LEASE_MAX_AGE_MS / 60000` requests in any window beyond the bucket's own).
pub const LEASE_MAX_AGE_MS: u64 = 1_000;
/// A lease not used for this long is ended (everything given back, the escrow released).
pub const LEASE_IDLE_MS: u64 = 2_000;
/// A lease's escrow expires unless renewed this often: what a dead node's escrow costs the
/// customer is availability for this long plus a reaper interval, never money.
pub const LEASE_ESCROW_TTL_MS: u64 = 10_000;
/// Usage records paid for in one lease call (one XADD each inside it).
pub const LEASE_MAX_RECORDS_PER_CALL: usize = 512;
/// Records a lease may have waiting before its worker stops admitting from it (backpressure
/// when Redis pays them slower than they come).
pub const LEASE_MAX_BACKLOG_RECORDS: usize = 8 * LEASE_MAX_RECORDS_PER_CALL;
/// After a call that granted no requests, how long running low does not call again.
pub const LEASE_STARVED_PAUSE_MS: u64 = 250;
/// How often a worker looks at its leases.
pub const LEASE_TICK_MS: u64 = 20;
/// How long a stopping worker keeps trying to end its leases.
pub const LEASE_END_DEADLINE_MS: u64 = 3_000;
/// Wait before retrying a lease call that failed.
pub const LEASE_RETRY_MS: u64 = 100;
/// Accounts a worker tracks for leasing before it forgets the idle ones.
pub const LEASE_TRACKED_ACCOUNTS_MAX: usize = 100_000;
/// How long SIGTERM waits for in-flight requests and streams before exiting.
pub const SHUTDOWN_DRAIN_DEADLINE_MS: u64 = 30_000;
/// Entries kept in each worker's key cache before it is cleared.
pub const KEY_CACHE_MAX_ENTRIES: usize = 100_000;
/// How long a worker trusts a cached key record without asking the store again.
pub const KEY_CACHE_TTL_MS: u64 = 1_000;
/// Most usage records returned by one admin usage query.
pub const MAX_USAGE_QUERY_LIMIT: usize = 1_000;
/// Usage records kept per account by the embedded store (oldest dropped first).
pub const EMBEDDED_LEDGER_MAX_RECORDS_PER_ACCOUNT: usize = 100_000;
/// `retry-after` is clamped to this range, in whole seconds (the SDKs ignore values above 60).
pub const RETRY_AFTER_MIN_S: u64 = 1;
pub const RETRY_AFTER_MAX_S: u64 = 60;
/// Largest output cap any model may be configured with, in tokens.
pub const MAX_MODEL_OUTPUT_TOKENS: u64 = 1_000_000;
/// Largest number of workers (one per core).
pub const MAX_WORKERS: usize = 256;
/// Longest a sandbox completion may be, in tokens.
pub const SANDBOX_MAX_OUTPUT_TOKENS: u64 = 100_000;
/// A log line that can repeat per request or per retry (a failing dependency) is written at most
/// once per this interval from its call site, with the count of lines held back.
pub const LOG_REPEAT_INTERVAL_MS: u64 = 10_000;
