//! The packages the design names, benched side by side with the project's own code on the
//! same inputs (issue 14 item 6): simd-json against the chat scanner and the upstream-answer
//! rewrite (`packages/json.rs`), monoio-http's h1 codec against the framing, with the delay
//! before an SSE event reaches the socket (`packages/h1.rs`), and `bytes` against the `Vec`
//! hand-offs of the stream relay (`packages/handoff.rs`). Each criterion timing is followed by
//! the allocations per call (a counting global allocator), as in `hot_path.rs`; the SSE delay
//! is printed as percentiles. The README's dependency notes quote the results.
//!
//! For real, on an idle machine, the bench pinned to one CPU (BENCH.md):
//!     taskset -c 1 cargo bench --bench packages 2>&1 | tee packages-bench.txt
//! (`MONOIO_FORCE_LEGACY_DRIVER=1` in front for the SSE delay on the epoll driver.)
//! Smoke check (each timing run once, debug build, a few iterations of the rest):
//!     cargo test --bench packages

use criterion::{criterion_group, criterion_main};

#[path = "packages/h1.rs"]
mod h1;
#[path = "packages/handoff.rs"]
mod handoff;
#[path = "packages/inputs.rs"]
mod inputs;
#[path = "packages/json.rs"]
mod json;

#[path = "../tests/support/counting_allocator.rs"]
mod counting_allocator;
use counting_allocator::{CountingAllocator, allocations};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Whether this is a measuring run (`cargo bench`), not criterion's test mode (`cargo test`).
fn full_run() -> bool {
    let mut args = std::env::args();
    args.any(|arg| arg == "--bench") && !std::env::args().any(|arg| arg == "--test")
}

/// Runs `work` after a warm-up and prints its allocations per call (1,000 calls when
/// measuring, 3 in a smoke run).
fn report_allocations(name: &str, mut work: impl FnMut()) {
    let (warm_up, calls) = if full_run() { (100, 1000) } else { (1, 3) };
    for _ in 0..warm_up {
        work();
    }
    let before = allocations();
    for _ in 0..calls {
        work();
    }
    let per_call = (allocations() - before) as f64 / calls as f64;
    println!("allocations per call: {name}: {per_call}");
}

criterion_group!(packages, json::benches, h1::benches, handoff::benches, h1::sse_delay);
criterion_main!(packages);
