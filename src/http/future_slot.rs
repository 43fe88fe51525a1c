//! Reusable heap slots for a connection's request-handler future. The handler's state machine
//! (auth, admission, the upstream exchange, the relay) is several KiB; kept inline, it would make
//! every connection task that large for its whole life, idle ones included. Moved into a slot
//! taken from this thread's free list and given back when the request is done, an idle
//! connection holds only its small read loop, and a warm worker allocates nothing per request.
//!
//! Owns the free list (per thread, by memory layout, at most `FREE_SLOTS_MAX` slots) and the
//! one `unsafe` contract of this crate's HTTP layer: a slot holds exactly one live future at a
//! time, which never moves until it is dropped in place. It must never hand one slot to two
//! futures, nor give a slot back before its future is dropped.

// The one measured exception to the crate's `deny(unsafe_code)`: without it an idle keep-alive
// connection holds the whole handler future (6.5 KiB plain, 9 KiB with TLS, measured with
// `size_of`) for its whole life.
#![allow(unsafe_code)]

use std::alloc::Layout;
use std::cell::RefCell;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

/// At most this many free slots are kept per thread; more are returned to the allocator.
const FREE_SLOTS_MAX: usize = 1024;

/// This thread's free slots, each with the layout it was allocated with.
struct FreeSlots {
    slots: Vec<(Layout, NonNull<u8>)>,
}

impl Drop for FreeSlots {
    fn drop(&mut self) {
        for (layout, slot) in self.slots.drain(..) {
            // SAFETY: every slot in the list came from `alloc` with exactly this layout and holds
            // no live value (its future was dropped in place before it was given back).
            unsafe { std::alloc::dealloc(slot.as_ptr(), layout) };
        }
    }
}

thread_local! {
    static FREE_SLOTS: RefCell<FreeSlots> = const { RefCell::new(FreeSlots { slots: Vec::new() }) };
}

fn take_slot(layout: Layout) -> NonNull<u8> {
    let reused = FREE_SLOTS.with(|free| {
        let mut free = free.borrow_mut();
        let position = free.slots.iter().rposition(|(slot_layout, _)| *slot_layout == layout)?;
        Some(free.slots.swap_remove(position).1)
    });
    reused.unwrap_or_else(|| {
        // SAFETY: the layout has a non-zero size (checked by the caller).
        let fresh = unsafe { std::alloc::alloc(layout) };
        NonNull::new(fresh).unwrap_or_else(|| std::alloc::handle_alloc_error(layout))
    })
}

fn give_back(layout: Layout, slot: NonNull<u8>) {
    let kept = FREE_SLOTS
        .try_with(|free| {
            let mut free = free.borrow_mut();
            if free.slots.len() < FREE_SLOTS_MAX {
                free.slots.push((layout, slot));
                true
            } else {
                false
            }
        })
        .unwrap_or(false);
    if !kept {
        // SAFETY: the slot came from `alloc` with this layout and its value was dropped.
        unsafe { std::alloc::dealloc(slot.as_ptr(), layout) };
    }
}

/// A future living in a pooled heap slot. Awaiting it polls the future in place; dropping it
/// (finished or not) drops the future in place and gives the slot back.
pub struct Pooled<F: Future> {
    slot: NonNull<F>,
    /// This value owns an `F` (for drop checking and auto traits).
    owns: PhantomData<F>,
}

impl<F: Future> Pooled<F> {
    /// Moves `future` into a slot of this thread (a free one when there is one).
    pub fn new(future: F) -> Self {
        Self::build(|| future)
    }

    /// The future `make` returns, in a slot of this thread: the slot is taken first, so the
    /// compiler can build the future in it instead of on the stack and then copy all of its
    /// bytes (a request handler's is several KiB; the copy was two of them per request).
    #[inline(always)]
    pub fn build(make: impl FnOnce() -> F) -> Self {
        let layout = Layout::new::<F>();
        let slot = if layout.size() == 0 { NonNull::<F>::dangling() } else { take_slot(layout).cast::<F>() };
        // SAFETY: the slot is valid for writes of one `F`, aligned, and holds no live value.
        unsafe { slot.as_ptr().write(make()) };
        Pooled { slot, owns: PhantomData }
    }
}

// The future itself never moves (it stays in its slot), so the handle may.
impl<F: Future> Unpin for Pooled<F> {}

impl<F: Future> Future for Pooled<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: the slot holds a live `F` until `drop`, and it is never moved out of the slot,
        // so pinning it in place is sound.
        let future = unsafe { Pin::new_unchecked(&mut *self.slot.as_ptr()) };
        future.poll(context)
    }
}

impl<F: Future> Drop for Pooled<F> {
    fn drop(&mut self) {
        let layout = Layout::new::<F>();
        // SAFETY: the slot holds a live `F`, dropped exactly once, here.
        unsafe { std::ptr::drop_in_place(self.slot.as_ptr()) };
        if layout.size() != 0 {
            give_back(layout, self.slot.cast::<u8>());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    fn free_slots() -> usize {
        FREE_SLOTS.with(|free| free.borrow().slots.len())
    }

    async fn big_future(value: u8) -> u8 {
        let kept = [value; 4096];
        std::future::ready(()).await;
        kept[4095]
    }

    // Goal: a pooled future gives its value, its slot is reused by the next future of the same
    // type (the same address), and a future dropped unfinished still drops what it holds.
    #[test]
    fn slots_are_reused_and_unfinished_futures_are_dropped() {
        let mut runtime = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().build().expect("a runtime");
        let before = free_slots();
        let first = Pooled::new(big_future(7));
        let first_address = first.slot.as_ptr() as usize;
        assert_eq!(runtime.block_on(first), 7);
        assert_eq!(free_slots(), before + 1, "the finished future gave its slot back");
        let second = Pooled::new(big_future(9));
        assert_eq!(second.slot.as_ptr() as usize, first_address, "the same layout reuses the slot");
        assert_eq!(free_slots(), before);
        assert_eq!(runtime.block_on(second), 9);
        assert_eq!(free_slots(), before + 1);

        let held = Rc::new(());
        let watched = held.clone();
        let unfinished = Pooled::new(async move {
            let _kept = watched;
            std::future::pending::<()>().await;
        });
        assert_eq!(Rc::strong_count(&held), 2);
        drop(unfinished);
        assert_eq!(Rc::strong_count(&held), 1, "dropping the handle dropped the future in place");
        assert_eq!(free_slots(), before + 2);
    }
}
