//! Where a connection's replies wait for the commands that asked for them: one reusable slot per
//! command in flight, so a command costs no allocation once the connection is warm (a oneshot
//! channel per command was one allocation each).
//!
//! Owns the slot states and the waiting future, for any reply type `T`. A slot is claimed when
//! a command is queued, filled by the reader (or by `fail_all` when the connection breaks), and
//! freed by the future that takes its reply, or, when that future was dropped first (a
//! timeout), by whoever fills it. It never does IO and never panics: a slot it does not know
//! reads as no reply (`None`).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

enum Slot<T> {
    Free,
    /// Claimed; the waker of the future waiting, once it polled.
    Waiting(Option<Waker>),
    Ready(T),
    /// Its future was dropped before the reply came: freed when it is filled.
    Abandoned,
}

/// The slots of one connection (they grow to the most commands it had in flight at once).
pub(super) struct ReplySlots<T> {
    slots: Vec<Slot<T>>,
    free: Vec<usize>,
}

impl<T> Default for ReplySlots<T> {
    fn default() -> Self {
        ReplySlots { slots: Vec::new(), free: Vec::new() }
    }
}

impl<T> ReplySlots<T> {
    /// A slot for a command about to be queued.
    pub(super) fn claim(&mut self) -> usize {
        match self.free.pop() {
            Some(index) => {
                self.slots[index] = Slot::Waiting(None);
                index
            }
            None => {
                self.slots.push(Slot::Waiting(None));
                self.slots.len() - 1
            }
        }
    }

    /// Hands `result` to slot `index`; returns the waker to wake (after this borrow ends).
    pub(super) fn fill(&mut self, index: usize, result: T) -> Option<Waker> {
        let slot = self.slots.get_mut(index)?;
        match std::mem::replace(slot, Slot::Free) {
            Slot::Waiting(waker) => {
                *slot = Slot::Ready(result);
                waker
            }
            Slot::Abandoned => {
                self.free.push(index);
                None
            }
            other => {
                *slot = other;
                None
            }
        }
    }
}

/// Fills every slot of `waiting` with `failure()` (the connection broke) and wakes their futures.
pub(super) fn fail_all<T>(
    slots: &RefCell<ReplySlots<T>>,
    waiting: impl IntoIterator<Item = usize>,
    failure: fn() -> T,
) {
    // The failure path may allocate: the wakers are collected so none is woken under the borrow.
    let wakers: Vec<Waker> = {
        let mut slots = slots.borrow_mut();
        waiting.into_iter().filter_map(|index| slots.fill(index, failure())).collect()
    };
    for waker in wakers {
        waker.wake();
    }
}

/// The reply of the command in slot `index` of the slots `owner` holds; `None` if the slot is
/// unknown.
pub(super) struct ReplyWait<S: AsRef<RefCell<ReplySlots<T>>>, T> {
    pub(super) owner: Rc<S>,
    pub(super) index: usize,
    pub(super) taken: bool,
    pub(super) reply: std::marker::PhantomData<T>,
}

impl<S: AsRef<RefCell<ReplySlots<T>>>, T> ReplyWait<S, T> {
    pub(super) fn new(owner: Rc<S>, index: usize) -> Self {
        ReplyWait { owner, index, taken: false, reply: std::marker::PhantomData }
    }
}

impl<S: AsRef<RefCell<ReplySlots<T>>>, T> Unpin for ReplyWait<S, T> {}

impl<S: AsRef<RefCell<ReplySlots<T>>>, T> Future for ReplyWait<S, T> {
    type Output = Option<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut slots = (*this.owner).as_ref().borrow_mut();
        let index = this.index;
        let Some(slot) = slots.slots.get_mut(index) else {
            this.taken = true;
            return Poll::Ready(None);
        };
        match std::mem::replace(slot, Slot::Free) {
            Slot::Ready(result) => {
                slots.free.push(index);
                this.taken = true;
                Poll::Ready(Some(result))
            }
            Slot::Waiting(_) => {
                *slot = Slot::Waiting(Some(cx.waker().clone()));
                Poll::Pending
            }
            other => {
                *slot = other;
                this.taken = true;
                Poll::Ready(None)
            }
        }
    }
}

impl<S: AsRef<RefCell<ReplySlots<T>>>, T> Drop for ReplyWait<S, T> {
    fn drop(&mut self) {
        if self.taken {
            return;
        }
        let Ok(mut slots) = (*self.owner).as_ref().try_borrow_mut() else { return };
        let index = self.index;
        let Some(slot) = slots.slots.get_mut(index) else { return };
        match std::mem::replace(slot, Slot::Abandoned) {
            // Waiting: stays abandoned until its reply (or the connection's failure) frees it.
            Slot::Waiting(_) => {}
            Slot::Ready(_) => {
                *slot = Slot::Free;
                slots.free.push(index);
            }
            other => *slot = other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Slots = RefCell<ReplySlots<u32>>;

    struct Owner(Slots);

    impl AsRef<Slots> for Owner {
        fn as_ref(&self) -> &Slots {
            &self.0
        }
    }

    fn poll_once(wait: &mut ReplyWait<Owner, u32>) -> Poll<Option<u32>> {
        Pin::new(wait).poll(&mut Context::from_waker(Waker::noop()))
    }

    // Goal: a reply reaches the future of its slot, an abandoned slot is freed by its reply, a
    // broken connection fails what waits, and slots are reused (no growth once warm).
    #[test]
    fn slots_hand_over_replies_and_are_reused() {
        let owner = Rc::new(Owner(RefCell::new(ReplySlots::default())));
        let first = owner.0.borrow_mut().claim();
        let mut wait = ReplyWait::new(owner.clone(), first);
        assert!(poll_once(&mut wait).is_pending());
        assert!(owner.0.borrow_mut().fill(first, 7).is_some());
        assert_eq!(poll_once(&mut wait), Poll::Ready(Some(7)));
        drop(wait);
        // Reused, then abandoned before its reply: the reply frees it.
        let second = owner.0.borrow_mut().claim();
        assert_eq!(second, first);
        drop(ReplyWait::new(owner.clone(), second));
        assert!(owner.0.borrow_mut().fill(second, 8).is_none());
        assert_eq!(owner.0.borrow().free, vec![first]);
        // A broken connection: the waiting future gets the failure.
        let third = owner.0.borrow_mut().claim();
        let mut wait = ReplyWait::new(owner.clone(), third);
        assert!(poll_once(&mut wait).is_pending());
        fail_all(&owner.0, [third], || 0);
        assert_eq!(poll_once(&mut wait), Poll::Ready(Some(0)));
        drop(wait);
        assert_eq!(owner.0.borrow().slots.len(), 1);
        // A slot it never gave out reads as no reply.
        let mut stray = ReplyWait::new(owner.clone(), 9);
        assert_eq!(poll_once(&mut stray), Poll::Ready(None));
    }
}
