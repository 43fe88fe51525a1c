//! One timer per worker for the deadlines of its connections that wait for their next request.
//!
//! A monoio `Sleep` is 640 bytes (two cache-padded fields, aligned to 128 bytes), and a
//! connection that waits for its client with one inline carries those bytes, and their
//! alignment, for as long as it idles. A `Deadline` is a few words instead: its instant and a
//! slot in the worker's `Deadlines` (the instant, the waker and whether it fired). One task per
//! worker, the ticker, sleeps with a single monoio timer until the earliest instant queued,
//! fires what is due and sleeps again; an earlier deadline set meanwhile wakes it to re-arm.
//!
//! A deadline dropped before it fires frees its slot at once; its queue entry stays until it
//! comes up or until the queue is full and at least half stale, when it is compacted instead of
//! grown, so the queue holds at most about twice the deadlines alive and a warm worker allocates
//! nothing for a deadline set and dropped. This module only wakes tasks: it never
//! reads, writes or closes a connection.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use monoio::time::Instant;

use crate::clock::timer_now;

#[derive(Copy, Clone, PartialEq, Eq)]
enum SlotState {
    Free,
    Waiting,
    Fired,
}

struct Slot {
    at: Instant,
    waker: Option<Waker>,
    state: SlotState,
}

/// The ticker's side: whether its task runs, the instant it sleeps until and how to wake it.
#[derive(Default)]
struct Ticker {
    running: bool,
    /// The instant the ticker's sleep ends (`None`: it waits for a deadline to be set).
    target: Option<Instant>,
    /// Set when a deadline earlier than `target` is queued: the ticker sleeps again from it.
    rearm: bool,
    waker: Option<Waker>,
}

#[derive(Default)]
struct State {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Earliest first: (instant, slot). Entries of freed or reused slots are stale.
    queue: BinaryHeap<Reverse<(Instant, u32)>>,
    live: usize,
    ticker: Ticker,
}

impl State {
    fn insert(&mut self, at: Instant, waker: &Waker) -> u32 {
        let slot = Slot { at, waker: Some(waker.clone()), state: SlotState::Waiting };
        let index = match self.free.pop() {
            Some(index) => {
                self.slots[index as usize] = slot;
                index
            }
            None => {
                self.slots.push(slot);
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 waiting connections")
            }
        };
        self.live += 1;
        // Compact instead of growing while stale entries are at least half of the queue, so the
        // queue grows only for live deadlines (and a warm worker allocates none per request).
        if self.queue.len() == self.queue.capacity() && self.queue.len() >= 2 * self.live {
            let slots = &self.slots;
            self.queue.retain(|Reverse((at, index))| {
                let slot = &slots[*index as usize];
                slot.state == SlotState::Waiting && slot.at == *at
            });
        }
        self.queue.push(Reverse((at, index)));
        if self.ticker.target.is_none_or(|target| at < target) {
            self.ticker.rearm = true;
            if let Some(ticker) = self.ticker.waker.take() {
                ticker.wake();
            }
        }
        index
    }

    fn remove(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        if slot.state == SlotState::Waiting {
            self.live -= 1;
        }
        slot.state = SlotState::Free;
        slot.waker = None;
        self.free.push(index);
    }

    /// Fires every deadline due at `now`; returns the instant of the earliest one left.
    fn fire_due(&mut self, now: Instant) -> Option<Instant> {
        while let Some(&Reverse((at, index))) = self.queue.peek() {
            if at > now {
                return Some(at);
            }
            self.queue.pop();
            let slot = &mut self.slots[index as usize];
            if slot.state == SlotState::Waiting && slot.at == at {
                slot.state = SlotState::Fired;
                self.live -= 1;
                if let Some(waker) = slot.waker.take() {
                    waker.wake();
                }
            }
        }
        None
    }
}

/// The deadlines of one worker's waiting connections. One per worker, never shared between
/// threads; its ticker runs on the runtime of the first deadline set.
#[derive(Default)]
pub struct Deadlines {
    shared: Rc<RefCell<State>>,
}

impl Deadlines {
    /// A future that ends at `at` (at once if it passed). Dropping it cancels it.
    pub fn until(&self, at: Instant) -> Deadline<'_> {
        Deadline { deadlines: self, at, slot: None }
    }

    fn insert(&self, at: Instant, waker: &Waker) -> u32 {
        let mut state = self.shared.borrow_mut();
        if !state.ticker.running {
            state.ticker.running = true;
            monoio::spawn(tick(self.shared.clone()));
        }
        state.insert(at, waker)
    }

    /// How many deadlines are set and not fired.
    pub fn waiting(&self) -> usize {
        self.shared.borrow().live
    }

    /// How many entries the queue holds, stale ones included.
    pub fn queued(&self) -> usize {
        self.shared.borrow().queue.len()
    }
}

/// Ends when its instant has passed; see `Deadlines::until`.
pub struct Deadline<'a> {
    deadlines: &'a Deadlines,
    at: Instant,
    /// The slot while it is set (from its first pending poll until it fires or is dropped).
    slot: Option<u32>,
}

impl Future for Deadline<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let Some(index) = this.slot else {
            if timer_now() >= this.at {
                return Poll::Ready(());
            }
            this.slot = Some(this.deadlines.insert(this.at, context.waker()));
            return Poll::Pending;
        };
        let mut state = this.deadlines.shared.borrow_mut();
        let slot = &mut state.slots[index as usize];
        if slot.state == SlotState::Fired {
            state.remove(index);
            this.slot = None;
            return Poll::Ready(());
        }
        if !slot.waker.as_ref().is_some_and(|waker| waker.will_wake(context.waker())) {
            slot.waker = Some(context.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for Deadline<'_> {
    fn drop(&mut self) {
        if let Some(index) = self.slot.take() {
            self.deadlines.shared.borrow_mut().remove(index);
        }
    }
}

/// Runs `future` until it ends or `deadline` passes first (`None`).
pub async fn before<F: Future>(deadline: Deadline<'_>, future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut deadline = deadline;
    std::future::poll_fn(|context| {
        if let Poll::Ready(output) = future.as_mut().poll(context) {
            return Poll::Ready(Some(output));
        }
        Pin::new(&mut deadline).poll(context).map(|()| None)
    })
    .await
}

/// Marks the ticker stopped when its task ends or is dropped with its runtime, so a later
/// deadline starts a new one.
struct Running(Rc<RefCell<State>>);

impl Drop for Running {
    fn drop(&mut self) {
        let mut state = self.0.borrow_mut();
        state.ticker = Ticker::default();
    }
}

/// The worker's ticker: fires what is due, then sleeps until the earliest deadline left (or
/// until one is set, or an earlier one is).
async fn tick(shared: Rc<RefCell<State>>) {
    let _running = Running(shared.clone());
    loop {
        let next = {
            let mut state = shared.borrow_mut();
            let next = state.fire_due(timer_now());
            state.ticker.target = next;
            state.ticker.rearm = false;
            next
        };
        let mut sleep = std::pin::pin!(next.map(monoio::time::sleep_until));
        std::future::poll_fn(|context| {
            if let Some(sleep) = sleep.as_mut().as_pin_mut()
                && sleep.poll(context).is_ready()
            {
                return Poll::Ready(());
            }
            let mut state = shared.borrow_mut();
            if state.ticker.rearm {
                return Poll::Ready(());
            }
            if !state.ticker.waker.as_ref().is_some_and(|waker| waker.will_wake(context.waker())) {
                state.ticker.waker = Some(context.waker().clone());
            }
            Poll::Pending
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn runtime() -> monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>> {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().expect("a runtime")
    }

    // Goal: deadlines end no earlier than their instant, in order, and one set later for an
    // earlier instant than the ticker sleeps to still ends on time (the ticker re-arms).
    #[test]
    fn deadlines_end_on_time_and_an_earlier_one_rearms_the_ticker() {
        runtime().block_on(async {
            let deadlines = Deadlines::default();
            let start = timer_now();
            let mut late = std::pin::pin!(deadlines.until(start + Duration::from_millis(500)));
            std::future::poll_fn(|context| {
                assert!(late.as_mut().poll(context).is_pending());
                Poll::Ready(())
            })
            .await;
            deadlines.until(start + Duration::from_millis(20)).await;
            let waited = timer_now() - start;
            assert!(waited >= Duration::from_millis(20), "ended after {waited:?}");
            assert!(waited < Duration::from_millis(400), "the early deadline waited for the late one: {waited:?}");
            assert_eq!(deadlines.waiting(), 1, "the late one is still set");
            late.await;
            assert!(timer_now() >= start + Duration::from_millis(500));
            assert_eq!(deadlines.waiting(), 0);
        });
    }

    // Goal: a future that ends first wins over its deadline, a dropped deadline frees its slot
    // (nothing stays waiting), and stale queue entries are compacted instead of piling up.
    #[test]
    fn dropped_deadlines_free_their_slots_and_the_queue_stays_bounded() {
        runtime().block_on(async {
            let deadlines = Deadlines::default();
            for _ in 0..1000 {
                let at = timer_now() + Duration::from_secs(60);
                let ended = before(deadlines.until(at), monoio::time::sleep(Duration::from_micros(10))).await;
                assert_eq!(ended, Some(()));
                assert_eq!(deadlines.waiting(), 0);
            }
            assert!(deadlines.queued() <= 4, "{} entries queued", deadlines.queued());
            assert!(deadlines.shared.borrow().queue.capacity() <= 4, "the queue did not grow for stale entries");
            assert!(deadlines.shared.borrow().slots.len() <= 1, "one slot reused");
        });
    }
}
