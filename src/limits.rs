//! Every operational bound the gateway enforces (a time, a size, a count), as a named constant
//! with its unit last, grouped by subsystem; and `const` assertions relating them to each other
//! and to the promises of SPEC.md, so a change that breaks a promise does not compile.
//!
//! Configuration may lower these (a smaller head or body limit, shorter timeouts), never raise
//! them: `config` rejects a value above the constant here. This module is a leaf: it imports
//! nothing, so every layer can read it.
//!
//! What stays local, on purpose (and only this):
//! - Lengths that *define a format* rather than bound an input: key and id layouts
//!   (`access::auth::KEY_RANDOM_CHARS`, `ids::NODE_TAG_LEN`, `ids::REQUEST_ID_LEN`, the account
//!   id length in the embedded store), `http::date::HTTP_DATE_LEN`, the 16 hex digits of a chunk
//!   size (a u64), the nesting levels of the chat schema in `openai::chat`, and unit conversions
//!   (`money::NANOS_PER_USD`, `ratelimit::UNITS_PER_TOKEN`, `http::duration`'s ms per
//!   second/minute/hour). Changing one changes the format, not a limit.
//! - Configuration *defaults* (`config::DEFAULT_*`): what a missing key means, not a bound. Their
//!   relations to the bounds here are asserted next to them in `config`, which can see both.
//! - Lengths of names in the configuration file (`config::reader`, `config::server`,
//!   `config::catalog`: env var, tier, upstream and model name lengths, the suggestion distance):
//!   checked once at start-up against operator-written text and reported as configuration
//!   errors beside the rule they belong to; they bound nothing at run time.
//! - Heuristics that are not bounds (`openai::models`' shortest name suggested by containment)
//!   and reference data (`openai::models::REFERENCE_*`).
//! - Protocol facts of Redis (`store::redis::cluster`'s 16,384 slots) and the arithmetic cap that
//!   keeps Lua's numbers exact (`store::redis::admission::MAX_SETTLED_TOKENS`).
//! - Constants of tests.

// ---------------------------------------------------------------------------------------------
// Promises of SPEC.md that the bounds below are checked against.

/// SPEC §1: revoking a key takes effect on every gateway node within this long.
pub const REVOCATION_EFFECTIVE_WITHIN_MS: u64 = 1_000;
/// SPEC §3.5: a request is settled within this long of its end (client gone, upstream done).
pub const SETTLE_WITHIN_MS: u64 = 1_000;
/// SPEC §13: the holds of a gateway node that died are released within this long of its death.
pub const DEAD_NODE_RELEASED_WITHIN_MS: u64 = 30_000;

// ---------------------------------------------------------------------------------------------
// Client connections (`http::server`, `http::listener`, `http::chunked`).

/// Largest request head (request line plus headers) accepted, in bytes; past it: 431.
pub const MAX_REQUEST_HEAD_BYTES: usize = 32 * 1024;
/// Largest request body accepted, in bytes; past it: 413.
pub const MAX_REQUEST_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Most header lines parsed in one request head (a stack array of this size); past it: 431.
pub const MAX_REQUEST_HEADERS: usize = 64;
/// Longest chunk-size line accepted (size digits, whitespace, extensions; CRLF not counted).
pub const CHUNKED_MAX_SIZE_LINE_BYTES: usize = 4 * 1024;
/// Most bytes of the trailer section accepted after the last chunk (every line's CRLF and the
/// final CRLF counted).
pub const CHUNKED_MAX_TRAILER_BYTES: usize = 8 * 1024;
/// Time allowed from the first byte of a request head to its end (and for a TLS handshake).
pub const HEAD_READ_TIMEOUT_MS: u64 = 10_000;
/// Time allowed to receive a whole request body once the head is in.
pub const BODY_READ_TIMEOUT_MS: u64 = 30_000;
/// How long an idle keep-alive connection is kept open waiting for its next request.
pub const KEEPALIVE_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Time allowed to write one response (or one SSE event) to a slow client.
pub const RESPONSE_WRITE_TIMEOUT_MS: u64 = 30_000;
/// Requests answered on one connection before it is closed (bounds per-connection state).
pub const MAX_REQUESTS_PER_CONNECTION: u64 = 100_000;
/// Initial capacity of a connection's read buffer (held while requests come, and for
/// `IDLE_READ_GRACE_MS` after the last answer); it grows geometrically up to the head + body
/// limits.
pub const READ_BUFFER_INITIAL_BYTES: usize = 2 * 1024;
/// A connection's empty read buffer grown past this (by a large request) is replaced by a new
/// one of `READ_BUFFER_INITIAL_BYTES` before the connection waits for its next request.
pub const READ_BUFFER_IDLE_MAX_BYTES: usize = 64 * 1024;
/// How long a connection's read for its next request keeps the read buffer; a client quiet for
/// longer costs no buffer until its bytes arrive (`http::client_read`).
pub const IDLE_READ_GRACE_MS: u64 = 100;
/// Read buffers (and cancellers) a worker keeps for its quiet connections.
pub const IDLE_READ_POOL_MAX_BUFFERS: usize = 256;
/// Smallest and largest read asked of a client socket at once.
pub const READ_CHUNK_MIN_BYTES: usize = 2 * 1024;
pub const READ_CHUNK_MAX_BYTES: usize = 64 * 1024;
/// Capacity of a new output buffer. Output buffers are lent to a connection for one response
/// and come back to the worker's pool after it, so an idle connection holds none.
pub const OUT_BUFFER_INITIAL_BYTES: usize = 8 * 1024;
/// Output buffers a worker keeps for reuse, and the largest one it keeps.
pub const OUT_BUFFER_POOL_MAX_BUFFERS: usize = 1024;
pub const OUT_BUFFER_POOL_MAX_BUFFER_BYTES: usize = 64 * 1024;
/// After a refusal sent before the request body was read (413, 431, other framing refusals),
/// how long the connection keeps reading and discarding what the client still sends, and how
/// many bytes at most, before it closes (a lingering close: closing with unread bytes would
/// reset the connection and can destroy the error before the client reads it).
pub const LINGERING_CLOSE_MS: u64 = 2_000;
pub const LINGERING_CLOSE_MAX_BYTES: usize = 8 * 1024 * 1024;
/// Connections a listener queues before accepting (the `listen(2)` backlog).
pub const LISTEN_BACKLOG_CONNECTIONS: i32 = 4096;
/// Pause after a failed accept (for example out of file descriptors) before trying again.
pub const ACCEPT_ERROR_BACKOFF_MS: u64 = 50;
/// How often a draining worker checks whether its requests have finished.
pub const DRAIN_POLL_MS: u64 = 10;

// A fresh output buffer must be one the pool keeps, or every response would allocate one.
const _: () = assert!(OUT_BUFFER_INITIAL_BYTES <= OUT_BUFFER_POOL_MAX_BUFFER_BYTES);
const _: () = assert!(READ_CHUNK_MIN_BYTES <= READ_CHUNK_MAX_BYTES);
// A client that sends a body up to twice the limit before reading still reads its 413.
const _: () = assert!(LINGERING_CLOSE_MAX_BYTES >= 2 * MAX_REQUEST_BODY_BYTES);
// A read buffer is never created larger than what one request may use.
const _: () = assert!(READ_BUFFER_INITIAL_BYTES <= MAX_REQUEST_HEAD_BYTES);
const _: () = assert!(READ_BUFFER_INITIAL_BYTES <= READ_BUFFER_IDLE_MAX_BYTES);

// ---------------------------------------------------------------------------------------------
// Chat requests (`openai::chat`).

/// Deepest JSON nesting accepted in a request body; deeper: 400 invalid_json.
pub const MAX_JSON_DEPTH: usize = 64;
/// Most top-level members a request may have; more is refused as `invalid_json`.
pub const MAX_TOP_LEVEL_KEYS: usize = 64;
/// Most entries in `messages`.
pub const MAX_MESSAGES: usize = 4096;
/// Tokens the gateway assumes a chat template adds per message, on top of its content bytes.
pub const PER_MESSAGE_OVERHEAD_TOKENS: u64 = 8;
/// Tokens the gateway assumes a chat template adds once per request (assistant priming).
pub const PER_REQUEST_OVERHEAD_TOKENS: u64 = 8;
/// Message text one request may have counted by its model's tokenizer (the second stage of the
/// input bound, SPEC §9); text past it stays at one token per byte. 1 MiB is over 250,000
/// tokens of ordinary text, beyond any tier's TPM, and a few tens of milliseconds of the
/// helper thread's time.
pub const TOKENIZE_BUDGET_BYTES: u64 = 1 << 20;
/// Counting jobs waiting for the tokenizer's helper thread; past it the byte bound decides.
pub const TOKENIZE_QUEUE_MAX_JOBS: usize = 64;
/// Largest output cap any model may be configured with, in tokens.
pub const MAX_MODEL_OUTPUT_TOKENS: u64 = 1_000_000;
/// Largest `max_image_input_tokens` / `max_audio_input_tokens` a model may be configured with:
/// what one media part may cost, in input tokens (a bigger figure would make every such request
/// too large for any tier's TPM anyway).
pub const MAX_MEDIA_PART_INPUT_TOKENS: u64 = 1_000_000;

// ---------------------------------------------------------------------------------------------
// Upstreams (`backend::upstream`).

/// Longest one proxied request (stream included) may run once its response head is in; ends
/// well before its hold expires.
pub const UPSTREAM_REQUEST_DEADLINE_MS: u64 = 10 * 60 * 1000;
/// Longest connect timeout an upstream may be configured with.
pub const MAX_UPSTREAM_CONNECT_TIMEOUT_MS: u64 = 60_000;
/// Longest response timeout an upstream may be configured with: a request never outlives its
/// deadline.
pub const MAX_UPSTREAM_RESPONSE_TIMEOUT_MS: u64 = UPSTREAM_REQUEST_DEADLINE_MS;
/// Idle connections kept per upstream per worker.
pub const UPSTREAM_POOL_MAX_IDLE_CONNECTIONS: usize = 64;
/// An idle pooled connection older than this is closed rather than reused: the default and the
/// largest `[[upstreams]] pool_idle_timeout_ms`.
pub const UPSTREAM_POOL_IDLE_TIMEOUT_MS: u64 = 30_000;
/// How often each worker closes its idle upstream connections whose idle timeout has passed, so
/// a stale socket lives at most this long past its timeout (and is never reused meanwhile).
pub const UPSTREAM_POOL_SWEEP_INTERVAL_MS: u64 = 1_000;
const _: () = assert!(UPSTREAM_POOL_SWEEP_INTERVAL_MS * 10 <= UPSTREAM_POOL_IDLE_TIMEOUT_MS);
/// Largest upstream response head, in bytes.
pub const UPSTREAM_MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;
/// Largest upstream response body the gateway reads, in bytes: SPEC §9's documented response
/// limit, so every unary answer up to it is relayed (larger: 502). Counted as the body is
/// decoded, in time linear in its size.
pub const UPSTREAM_MAX_RESPONSE_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Largest single SSE event relayed from an upstream stream (its field lines and blank line),
/// in bytes: SPEC §9 relays events up to this size. A larger one fails the stream (502 before the
/// first event, an error event after).
pub const UPSTREAM_MAX_SSE_EVENT_BYTES: usize = 8 * 1024 * 1024;
/// After relaying a large answer, a per-connection or per-worker buffer whose capacity grew past
/// this is freed rather than kept for reuse (one 64 MiB answer must not pin 64 MiB per
/// connection for good).
pub const UPSTREAM_KEPT_BUFFER_MAX_BYTES: usize = 1024 * 1024;
/// Longest error body read from an upstream (for its 400/422 message), in bytes.
pub const UPSTREAM_MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// Bytes asked of an upstream socket per read.
pub const UPSTREAM_READ_CHUNK_BYTES: usize = 16 * 1024;
/// Read buffers a worker keeps for its next upstream exchanges (each about
/// `UPSTREAM_READ_CHUNK_BYTES`), so a warm exchange allocates none.
pub const UPSTREAM_SPARE_READ_BUFFERS: usize = 16;
/// How often upstream host names are resolved again (on the resolver thread).
pub const UPSTREAM_DNS_REFRESH_INTERVAL_MS: u64 = 30_000;
/// After the client left mid-stream: how long the upstream is still read to learn its usage...
pub const ABANDONED_STREAM_DRAIN_MS: u64 = 800;
/// ... and how many bytes at most.
pub const ABANDONED_STREAM_DRAIN_BYTES: usize = 1024 * 1024;

const _: () = assert!(MAX_UPSTREAM_RESPONSE_TIMEOUT_MS <= UPSTREAM_REQUEST_DEADLINE_MS);
const _: () = assert!(UPSTREAM_MAX_ERROR_BODY_BYTES <= UPSTREAM_MAX_RESPONSE_BODY_BYTES);
const _: () = assert!(ABANDONED_STREAM_DRAIN_BYTES <= UPSTREAM_MAX_RESPONSE_BODY_BYTES);
// An event is part of a body: it can never be allowed to be larger than the body.
const _: () = assert!(UPSTREAM_MAX_SSE_EVENT_BYTES <= UPSTREAM_MAX_RESPONSE_BODY_BYTES);
const _: () = assert!(UPSTREAM_KEPT_BUFFER_MAX_BYTES <= UPSTREAM_MAX_SSE_EVENT_BYTES);
// SPEC §3.5: reading an abandoned stream for its usage must end before the settle deadline.
const _: () = assert!(ABANDONED_STREAM_DRAIN_MS < SETTLE_WITHIN_MS, "the usage drain must leave time to settle");

// ---------------------------------------------------------------------------------------------
// Money: holds and settlement (`store`, `api::settle`).

/// Longest a hold may live before the reaper releases it (longest possible request plus margin).
pub const HOLD_TTL_MS: u64 = 15 * 60 * 1000;
/// Largest `[store] reaper_interval_ms`: how often each node's reaper looks for expired holds
/// and for holds of dead nodes.
pub const HOLD_REAPER_INTERVAL_MS: u64 = 5_000;
/// Largest `[store] node_dead_after_ms`: a node whose heartbeat is older than this is presumed
/// dead and its holds are released.
pub const MAX_NODE_DEAD_AFTER_MS: u64 = 20_000;
/// Largest `[store] node_beat_interval_ms` (config also keeps it at most half of the dead-after
/// bound, so one late beat never looks like a death).
pub const MAX_NODE_BEAT_INTERVAL_MS: u64 = MAX_NODE_DEAD_AFTER_MS / 2;
/// Time allowed to one reaper walk (SCAN of every Redis node, `fk_reap` per account) on top of
/// the interval between walks.
pub const REAPER_WALK_ALLOWANCE_MS: u64 = 5_000;
/// How long a node's heartbeat entry is kept after its last beat: by then every hold it took
/// has expired, so nothing of it is left to release.
pub const NODE_FORGOTTEN_AFTER_MS: u64 = HOLD_TTL_MS;
/// Pauses before the retries of a settlement the store could not take (the store's command
/// timeouts included, the whole stays within `SETTLE_WITHIN_MS` at the default timeout: see
/// `config`).
pub const SETTLE_RETRY_PAUSES_MS: [u64; 2] = [50, 200];
/// Usage records kept per account by the embedded store (oldest dropped first).
pub const EMBEDDED_LEDGER_MAX_RECORDS_PER_ACCOUNT: usize = 100_000;
/// Most usage records returned by one admin usage query.
pub const MAX_USAGE_QUERY_LIMIT: usize = 1_000;

const _: () = assert!(UPSTREAM_REQUEST_DEADLINE_MS < HOLD_TTL_MS, "a request must end before its hold can be reaped");
// Once the stream deadline passes, what is left of a request is at most one last write to a slow
// client, the usage drain of an abandoned stream and its settlement: all of it before the
// reaper may take the hold, or a request could be served and never charged.
const _: () = assert!(
    UPSTREAM_REQUEST_DEADLINE_MS + RESPONSE_WRITE_TIMEOUT_MS + ABANDONED_STREAM_DRAIN_MS + SETTLE_WITHIN_MS
        < HOLD_TTL_MS,
    "the tail of a request must end before its hold can be reaped"
);
// SPEC §13, whatever the configuration (it may only lower these): a node dies just after its
// last beat; it is presumed dead `node_dead_after_ms` later, and the next reaper walk (at most an
// interval away, plus its own time) releases its holds.
const _: () = assert!(
    MAX_NODE_DEAD_AFTER_MS + HOLD_REAPER_INTERVAL_MS + REAPER_WALK_ALLOWANCE_MS <= DEAD_NODE_RELEASED_WITHIN_MS,
    "a dead node's holds must be released within 30 s"
);
const _: () = assert!(MAX_NODE_BEAT_INTERVAL_MS < MAX_NODE_DEAD_AFTER_MS);
// Releasing a dead node's holds is faster than waiting for them to expire, and its heartbeat
// entry outlives its holds.
const _: () = assert!(MAX_NODE_DEAD_AFTER_MS < HOLD_TTL_MS && NODE_FORGOTTEN_AFTER_MS >= HOLD_TTL_MS);
// The pauses alone must leave room for the calls themselves within the settle deadline.
const _: () = assert!(SETTLE_RETRY_PAUSES_MS[0] + SETTLE_RETRY_PAUSES_MS[1] < SETTLE_WITHIN_MS);

// ---------------------------------------------------------------------------------------------
// Rate limits and per-worker caches (`access`).

/// Entries kept in each worker's key cache before it is cleared.
pub const KEY_CACHE_MAX_ENTRIES: usize = 100_000;
/// How long a worker trusts a cached key record without asking the store again (the same for
/// a remembered "unknown key").
pub const KEY_CACHE_TTL_MS: u64 = 1_000;
/// Slots in each worker's table of presented keys recently found unknown (fixed, allocated at
/// start: 56 bytes a slot). A power of two.
pub const REFUSED_KEY_CACHE_ENTRIES: usize = 4_096;
/// Origins `[server] cors_origins` may list.
pub const MAX_CORS_ORIGINS: usize = 64;
/// How long a browser may cache a successful CORS preflight (`access-control-max-age`).
pub const CORS_PREFLIGHT_MAX_AGE_S: u64 = 600;
/// Test keys each node's key directory holds (about 150 bytes each: 150 MB at the bound).
pub const KEY_DIRECTORY_MAX_KEYS: usize = 1_000_000;
/// How often each node reads every key record into its directory (repairing lost messages).
pub const KEY_DIRECTORY_SYNC_INTERVAL_MS: u64 = 60_000;
/// How often the directory's task checks whether it must be read now (a new subscription).
pub const KEY_DIRECTORY_CHECK_INTERVAL_MS: u64 = 250;
/// Deny-cache entries kept per worker before the cache is cleared (bounds memory under a flood
/// of accounts).
pub const DENY_CACHE_MAX_ENTRIES: usize = 100_000;
/// How long a wallet refusal is trusted while the account had other holds in flight.
pub const QUOTA_DENY_WITH_HOLDS_MS: u64 = 250;
/// How long a wallet refusal with no holds in flight is trusted without a top-up event.
pub const QUOTA_DENY_BACKSTOP_MS: u64 = 60_000;
/// How long an RPM/TPM refusal that can never pass (zero capacity) is trusted.
pub const RATE_DENY_NEVER_MS: u64 = 60_000;
/// Accounts a worker's fallback buckets (test keys, store unreachable) track before clearing.
pub const FALLBACK_MAX_ACCOUNTS: usize = 100_000;
/// `retry-after` is clamped to this range, in whole seconds (the SDKs ignore values above 60).
pub const RETRY_AFTER_MIN_S: u64 = 1;
pub const RETRY_AFTER_MAX_S: u64 = 60;
/// Largest RPM or TPM a tier or override may set. A bucket holds `limit x 60,000` units; at
/// this bound that stays below 2^53, so the Redis functions (Lua numbers are doubles) count
/// them exactly.
pub const MAX_LIMIT_PER_MINUTE: u64 = 100_000_000_000;

// A revocation announcement can be lost (a subscriber reconnecting); the cache's TTL is then
// what keeps SPEC §1's promise on its own.
const _: () = assert!(KEY_CACHE_TTL_MS <= REVOCATION_EFFECTIVE_WITHIN_MS, "a revoked key must stop within 1 s");
const _: () = assert!(RETRY_AFTER_MIN_S <= RETRY_AFTER_MAX_S);
// 60,000 units per token (`access::ratelimit::UNITS_PER_TOKEN`) times the largest limit must
// stay exact in a double.
const _: () = assert!(MAX_LIMIT_PER_MINUTE < (1 << 53) / 60_000);

// ---------------------------------------------------------------------------------------------
// Leases (`access::lease`): a worker's share of a busy account's buckets and wallet.

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
/// Usage records paid for in one lease call (all of them one ledger entry, one XADD).
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

// The rate is read once a fifth of a window has passed and divides by the time elapsed: a
// window under 5 ms would divide by zero.
const _: () = assert!(LEASE_RATE_WINDOW_MS >= 5);
// A grant of 1/LEASE_SHARE of what is left must leave something for the store's own answers.
const _: () = assert!(LEASE_SHARE >= 2);
// The age bound is checked once per tick; a coarser tick would let tokens live past it.
const _: () = assert!(LEASE_TICK_MS < LEASE_MAX_AGE_MS);
const _: () = assert!(LEASE_MAX_BACKLOG_RECORDS >= LEASE_MAX_RECORDS_PER_CALL);
// A lease calls at least every LEASE_MAX_AGE_MS (plus a tick to notice); even when that call
// waits out the longest store command timeout, it renews the escrow before it expires, so a
// live lease's escrow is never reaped under it.
const _: () = assert!(
    LEASE_MAX_AGE_MS + LEASE_TICK_MS + MAX_REDIS_COMMAND_TIMEOUT_MS < LEASE_ESCROW_TTL_MS,
    "a live lease must renew its escrow before it expires"
);
// A stopping worker's last calls (within LEASE_END_DEADLINE_MS of its last renewal) still find
// the escrow: what it owes is paid from the escrow, not from whatever balance is left.
const _: () = assert!(LEASE_MAX_AGE_MS + LEASE_TICK_MS + LEASE_END_DEADLINE_MS < LEASE_ESCROW_TTL_MS);
// A dead node's escrow is released within TTL + one reaper interval: the interval must be short
// next to the TTL for LEASE_ESCROW_TTL_MS to be the number that describes it.
const _: () = assert!(HOLD_REAPER_INTERVAL_MS <= LEASE_ESCROW_TTL_MS / 2);
// An escrow is a hold and the reaper takes the shorter of the two TTLs; leases rely on theirs.
const _: () = assert!(LEASE_ESCROW_TTL_MS < HOLD_TTL_MS);

// ---------------------------------------------------------------------------------------------
// Redis (`redis`, the client; `store::redis`, the store on it).

/// Shortest and longest wait before reconnecting after a failure (doubling in between).
pub const REDIS_RECONNECT_BACKOFF_MIN_MS: u64 = 50;
pub const REDIS_RECONNECT_BACKOFF_MAX_MS: u64 = 2_000;
/// Largest reply accepted, in bytes.
pub const REDIS_MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;
/// Deepest nesting of arrays accepted in a reply (the store's deepest, `CLUSTER SLOTS` and
/// `XREVRANGE`, nest 3 deep); deeper is a protocol error.
pub const REDIS_MAX_REPLY_DEPTH: usize = 16;
/// Bytes asked of a Redis socket per read.
pub const REDIS_READ_CHUNK_BYTES: usize = 16 * 1024;
/// Initial capacity of a connection's buffer of commands not yet written.
pub const REDIS_OUTGOING_INITIAL_BYTES: usize = 4 * 1024;
/// Largest `[store] command_timeout_ms`: a store call that takes longer fails (503 for paid
/// requests) instead of holding the request.
pub const MAX_REDIS_COMMAND_TIMEOUT_MS: u64 = 5_000;
/// Largest `[store] gateway_nodes`.
pub const MAX_GATEWAY_NODES: u64 = 1_000;
/// While a Cluster slot moves, a command whose keys are split between nodes gets `TRYAGAIN`: it
/// is asked again every `REDIS_TRY_AGAIN_PAUSE_MS` for at most `REDIS_TRY_AGAIN_MAX_WAIT_MS`.
pub const REDIS_TRY_AGAIN_PAUSE_MS: u64 = 25;
pub const REDIS_TRY_AGAIN_MAX_WAIT_MS: u64 = 1_000;
/// Cluster redirects (MOVED/ASK) followed for one command before giving up.
pub const REDIS_MAX_REDIRECTS: usize = 5;
/// Shortest time between two Cluster slot-map refreshes.
pub const REDIS_SLOT_REFRESH_MIN_INTERVAL_MS: u64 = 100;
/// Usage records kept per account in its Redis ledger Stream (trimmed approximately beyond).
pub const REDIS_LEDGER_MAX_RECORDS_PER_ACCOUNT: u64 = 1_000_000;
/// Expired holds released per account per reaper call.
pub const REDIS_REAP_BATCH_HOLDS: u64 = 1_000;
/// Keys one reaper `SCAN` step asks for.
pub const REDIS_REAP_SCAN_KEYS: u64 = 1_000;
/// Admissions with a lost answer one owner (a worker) remembers to undo (`fk_void`); past it
/// the oldest is let go and its hold, if it ran, lasts until `HOLD_TTL_MS`.
pub const REDIS_PENDING_VOIDS_MAX: usize = 10_000;
/// How often a worker's void task looks for admissions to undo (and retries while Redis is
/// silent): the bound, with the reconnect backoff, on how soon after Redis answers again a
/// 503'd admission leaves nothing behind.
pub const REDIS_VOID_RETRY_INTERVAL_MS: u64 = 200;
/// How long the subscriber waits on one read before checking whether it should stop.
pub const REDIS_SUBSCRIBER_POLL_MS: u64 = 500;
/// How long the subscriber waits for its connection to open.
pub const REDIS_SUBSCRIBER_CONNECT_TIMEOUT_MS: u64 = 1_000;

// Doubling from zero stays zero: the breaker would never open.
const _: () =
    assert!(0 < REDIS_RECONNECT_BACKOFF_MIN_MS && REDIS_RECONNECT_BACKOFF_MIN_MS <= REDIS_RECONNECT_BACKOFF_MAX_MS);

// ---------------------------------------------------------------------------------------------
// Process lifecycle (`runtime`, `cli`, `sandbox_server`).

/// Largest number of workers (one per core).
pub const MAX_WORKERS: usize = 256;
/// How long start-up waits for every worker to accept before giving up.
pub const WORKERS_START_TIMEOUT_MS: u64 = 10_000;
/// How often start-up looks whether the workers accept yet.
pub const WORKERS_START_POLL_MS: u64 = 1;
/// How often the main thread looks whether SIGTERM or SIGINT arrived.
pub const SIGNAL_POLL_MS: u64 = 50;
/// How long SIGTERM waits for in-flight requests and streams before exiting (the largest
/// `[server] shutdown_deadline_ms`).
pub const SHUTDOWN_DRAIN_DEADLINE_MS: u64 = 30_000;

// A worker drains first, then ends its leases: stopping takes up to the sum. Ending leases must
// stay a short tail of the drain, so the drain deadline is the number an operator sizes a
// termination grace period by.
const _: () = assert!(LEASE_END_DEADLINE_MS < SHUTDOWN_DRAIN_DEADLINE_MS);
const _: () = assert!(DRAIN_POLL_MS < SHUTDOWN_DRAIN_DEADLINE_MS && WORKERS_START_POLL_MS < WORKERS_START_TIMEOUT_MS);

// ---------------------------------------------------------------------------------------------
// Admin API (`admin`).

/// Longest account id accepted, in bytes.
pub const MAX_ADMIN_ID_BYTES: usize = 64;
/// Longest key name accepted, in bytes.
pub const MAX_KEY_NAME_BYTES: usize = 128;
/// Longest payment reference accepted, in bytes.
pub const MAX_PAYMENT_REFERENCE_BYTES: usize = 128;

// ---------------------------------------------------------------------------------------------
// Sandbox (`backend::sandbox`, `sandbox_server`).

/// Longest a sandbox completion may be, in tokens.
pub const SANDBOX_MAX_OUTPUT_TOKENS: u64 = 100_000;
/// Longest sandbox time to first token.
pub const SANDBOX_MAX_TIME_TO_FIRST_TOKEN_MS: u64 = 60_000;
/// Fastest sandbox pacing, in tokens per second.
pub const SANDBOX_MAX_TOKENS_PER_SECOND: u64 = 1_000_000;
/// Longest request id echoed into a sandbox completion id, in bytes (a stack array).
pub const SANDBOX_MAX_REQUEST_ID_BYTES: usize = 64;

// ---------------------------------------------------------------------------------------------
// Logs (`log`).

/// A log line that can repeat per request or per retry (a failing dependency) is written at most
/// once per this interval from its call site, with the count of lines held back.
pub const LOG_REPEAT_INTERVAL_MS: u64 = 10_000;
