//! A global allocator that counts every allocation and reallocation in the process, shared by
//! the allocation test (through `mod support;`) and the hot-path benches, which include this
//! one file with `#[path]` (they cannot build the rest of `support`).
//!
//! To find what allocates, `trace_allocations(n)` makes the next `n` counted allocations print
//! their backtrace to stderr (the printing itself is not counted: a per-thread flag keeps the
//! allocator from recursing into itself).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Counted allocations still to print a backtrace for.
static TRACES_LEFT: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread is printing a backtrace: its own allocations are neither counted nor traced.
    static TRACING: Cell<bool> = const { Cell::new(false) };
}

/// Allocations (and reallocations) so far in this process.
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::SeqCst)
}

/// The next `count` allocations print where they come from (0 stops it).
#[allow(dead_code)] // used while hunting an allocation, not by every includer
pub fn trace_allocations(count: u64) {
    TRACES_LEFT.store(count, Ordering::SeqCst);
}

fn count(layout: Layout) {
    if TRACING.with(Cell::get) {
        return;
    }
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    let claimed = TRACES_LEFT.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1));
    if claimed.is_ok() {
        TRACING.with(|tracing| tracing.set(true));
        let thread = std::thread::current();
        let trace = std::backtrace::Backtrace::force_capture();
        eprintln!("allocation of {} bytes on {:?}:\n{trace}", layout.size(), thread.name());
        TRACING.with(|tracing| tracing.set(false));
    }
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout);
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(layout);
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
