//! Catching a panic inside one connection's future so it cannot take down a worker.
//!
//! monoio does not catch panics: one panicking task unwinds the worker thread and drops every
//! connection on that core. The data path is written to be panic-free; this guard is the
//! backstop that turns a bug into one closed connection (counted in metrics and logged, the
//! hold left to the reaper) instead of an outage.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind as catch_unwind_sync};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Polls `future`, turning a panic during any poll into `Err(())`.
pub fn catch_unwind<F: Future>(future: AssertUnwindSafe<F>) -> CatchUnwind<F> {
    CatchUnwind { future: Box::pin(future.0) }
}

pub struct CatchUnwind<F> {
    future: Pin<Box<F>>,
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, ()>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let future = self.future.as_mut();
        match catch_unwind_sync(AssertUnwindSafe(move || future.poll(context))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(_) => {
                crate::log_error_every!("a connection panicked and was closed (see the panic message above)");
                Poll::Ready(Err(()))
            }
        }
    }
}
