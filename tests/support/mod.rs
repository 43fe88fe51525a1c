//! Code shared by every test binary, included the same way by each: `mod support;` at the top
//! of `tests/<name>.rs`, then `use support::<file>::...` for what the test needs. One file per
//! job:
//!
//! - `gateway`: an in-process gateway on free ports (optionally on a manual clock) and its
//!   admin helpers (accounts, keys, balances, the usage ledger);
//! - `http`: a small blocking HTTP/1.1 client that speaks raw bytes, so tests see exactly what
//!   a client on the wire sees, plus the metrics reader;
//! - `wait`: the one way a test waits for real external state (a process starting, a port
//!   opening, a message crossing processes): a bounded poll, never a fixed sleep;
//! - `certificates`: a test CA and a server certificate it signed;
//! - `gateway_process`: real `fikra-gateway serve` processes for multi-node tests;
//! - `redis_server`: real `redis-server` processes, standalone or as a Redis Cluster;
//! - `scripted_upstream`: raw TCP upstreams a test scripts per request, byte for byte;
//! - `responses`: `POST /v1/responses` requests, their typed events, the exact-ledger check;
//! - `stripe`: a Stripe event signer (independent of the gateway's verifier);
//! - `daraja`: a Safaricom Daraja stand-in (OAuth, STK Push, STK Query) and its callback payloads;
//! - `counting_allocator`: a global allocator that counts allocations (the benches include
//!   this one file with `#[path]`, as they cannot build the rest);
//! - `error_cases`: the SPEC §2 error cases of `tests/cases/errors.json`, shared with the
//!   Python SDK suite.
//!
//! Each test binary uses only part of this, hence `dead_code` is allowed here.

// Support code waits on real time and may lock on purpose: clippy.toml's clock and lock
// policy is for the gateway.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]
#![allow(dead_code)]

pub mod certificates;
pub mod counting_allocator;
pub mod daraja;
pub mod error_cases;
pub mod gateway;
pub mod gateway_process;
pub mod http;
pub mod redis_server;
pub mod responses;
pub mod scripted_upstream;
pub mod stripe;
pub mod wait;
