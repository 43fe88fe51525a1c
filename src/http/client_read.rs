//! Reading from a client connection: the bounded read that appends to the connection's buffer,
//! and the wait for the next request, which holds no read buffer once the client is quiet.
//!
//! With io_uring a pending read owns its buffer, so a connection waiting for its next request
//! would hold one for as long as it idles. Instead only a busy client's connection (its last
//! request came within `IDLE_READ_GRACE_MS` of the answer before it; `ReadGrace`) reads with
//! its buffer after an answer, and only for that grace period: its next request usually comes
//! sooner and is read exactly as before (one read, one deadline). If nothing came by then, the
//! read is cancelled and awaited, so a byte that raced the cancel is kept, never lost. Then, and
//! at once for a client not seen to be busy (a new connection's first request says nothing
//! about its pace), the buffer (and the canceller) go back to the worker's `IdleReadPool`, the
//! connection waits for readability without a buffer (its idle deadline is a slot in the
//! worker's `Deadlines`, not a monoio `Sleep`), and borrows one again when bytes arrive.
//! Streams that cannot wait that way (TLS: rustls may hold decrypted bytes the socket no longer
//! shows) keep their buffer while idle.
//! This module never parses what it reads.

use std::cell::RefCell;
use std::future::Future;

use monoio::buf::{IoBufMut, SliceMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, CancelableAsyncReadRent, Canceller};
use monoio::time::Instant;

use crate::clock::timer_now;
use crate::http::deadlines::{Deadline, Deadlines, before};
use crate::http::future_slot::Pooled;
use crate::limits::{
    IDLE_READ_POOL_MAX_BUFFERS, READ_BUFFER_IDLE_MAX_BYTES, READ_BUFFER_INITIAL_BYTES, READ_CHUNK_MAX_BYTES,
    READ_CHUNK_MIN_BYTES,
};

/// `ECANCELED`: what a cancelled read returns on both monoio drivers.
const OPERATION_CANCELED: i32 = 125;

/// A client connection's stream as the connection loop reads it. The defaults keep the buffer
/// while idle (a plain read, no readiness wait): right for TLS, where rustls may hold decrypted
/// bytes the socket no longer shows, and for Unix sockets (benchmarks). TCP overrides them.
pub trait ClientStream: AsyncReadRent + AsyncWriteRent {
    /// Whether the stream can wait for its next request without a buffer (`wait_readable`) and
    /// end a pending read early without losing bytes (`read_unless_quiet`).
    const WAITS_WITHOUT_BUFFER: bool = false;

    /// Reads into `slice`; `None` (the slice back, nothing read) if no byte came before `quiet`.
    fn read_unless_quiet(
        &mut self,
        slice: SliceMut<Vec<u8>>,
        _quiet: Deadline<'_>,
        _canceller: &mut Canceller,
    ) -> impl Future<Output = (Option<std::io::Result<usize>>, SliceMut<Vec<u8>>)> {
        async move {
            let (result, slice) = self.read(slice).await;
            (Some(result), slice)
        }
    }

    /// Waits until the stream has something to read (bytes, end of stream or an error) or
    /// `deadline` passes; false if it passed or the wait failed.
    fn wait_readable(&mut self, _deadline: Deadline<'_>) -> impl Future<Output = bool> {
        std::future::ready(true)
    }
}

impl ClientStream for monoio::net::TcpStream {
    const WAITS_WITHOUT_BUFFER: bool = true;

    async fn read_unless_quiet(
        &mut self,
        slice: SliceMut<Vec<u8>>,
        quiet: Deadline<'_>,
        canceller: &mut Canceller,
    ) -> (Option<std::io::Result<usize>>, SliceMut<Vec<u8>>) {
        let read = self.cancelable_read(slice, canceller.handle());
        let mut read = std::pin::pin!(read);
        if let Some((result, slice)) = before(quiet, read.as_mut()).await {
            return (Some(result), slice);
        }
        // Quiet: cancel, then await the read, which ends with the bytes if they won the race.
        *canceller = std::mem::take(canceller).cancel();
        match read.await {
            (Err(error), slice) if error.raw_os_error() == Some(OPERATION_CANCELED) => (None, slice),
            (result, slice) => (Some(result), slice),
        }
    }

    async fn wait_readable(&mut self, deadline: Deadline<'_>) -> bool {
        matches!(before(deadline, self.readable(false)).await, Some(Ok(())))
    }
}

impl ClientStream for monoio_rustls::ServerTlsStream<monoio::net::TcpStream> {}
impl ClientStream for monoio::net::UnixStream {}

/// Read buffers and cancellers of this worker's quiet connections, lent to a connection from
/// its client's first bytes until it is quiet again. One per worker, never shared between
/// threads.
#[derive(Default)]
pub struct IdleReadPool {
    buffers: RefCell<Vec<Vec<u8>>>,
    cancellers: RefCell<Vec<Canceller>>,
    /// The idle deadlines of the connections waiting without a buffer (no monoio `Sleep` each).
    deadlines: Deadlines,
}

impl IdleReadPool {
    fn lend_buffer(&self) -> Vec<u8> {
        self.buffers.borrow_mut().pop().unwrap_or_else(|| Vec::with_capacity(READ_BUFFER_INITIAL_BYTES))
    }

    fn give_back_buffer(&self, buffer: Vec<u8>) {
        debug_assert!(buffer.is_empty(), "only an empty read buffer goes back");
        let mut buffers = self.buffers.borrow_mut();
        if buffer.capacity() != 0
            && buffer.capacity() <= READ_BUFFER_IDLE_MAX_BYTES
            && buffers.len() < IDLE_READ_POOL_MAX_BUFFERS
        {
            buffers.push(buffer);
        }
    }

    fn lend_canceller(&self) -> Canceller {
        self.cancellers.borrow_mut().pop().unwrap_or_default()
    }

    fn give_back_canceller(&self, canceller: Canceller) {
        let mut cancellers = self.cancellers.borrow_mut();
        if cancellers.len() < IDLE_READ_POOL_MAX_BUFFERS {
            cancellers.push(canceller);
        }
    }

    /// How many read buffers the pool holds now.
    pub fn buffers_held(&self) -> usize {
        self.buffers.borrow().len()
    }
}

/// What a connection knows about its client's pace between requests: whether the grace read
/// is worth its buffer, and the canceller it uses. `Default` for a new connection.
#[derive(Default)]
pub struct ReadGrace {
    /// The client sent its last request within the grace of the answer before it: the next
    /// wait reads with the buffer for the grace period. A client seen to pause longer (or not
    /// seen yet: a new connection's first request says nothing about its pace) waits without one.
    busy: bool,
    /// Set once the first wait (for the first request) is over.
    answered: bool,
    /// The grace read's canceller while the client is busy (lent by the pool).
    canceller: Option<Canceller>,
}

/// Waits for the first bytes of the next request into the connection's empty `buffer` (not
/// allocated while the connection is new or quiet), for at most `idle_ms`; at most `max_bytes`
/// are read. A busy client's (`grace`) buffer is kept for `grace_ms` (`IDLE_READ_GRACE_MS`);
/// any other client's goes back to the pool at once. See the module comment for what a quiet
/// client costs.
pub async fn wait_for_request<S: ClientStream>(
    stream: &mut S,
    buffer: &mut Vec<u8>,
    grace: &mut ReadGrace,
    pool: &IdleReadPool,
    max_bytes: usize,
    (idle_ms, grace_ms): (u64, u64),
) -> ReadMore {
    debug_assert!(buffer.is_empty(), "no unread bytes wait for a later request");
    let now = timer_now();
    let idle_deadline = now + std::time::Duration::from_millis(idle_ms);
    if !S::WAITS_WITHOUT_BUFFER {
        return Pooled::new(read_more(stream, buffer, max_bytes, idle_deadline)).await;
    }
    let grace_end = now + std::time::Duration::from_millis(grace_ms);
    // A busy client's connection reads with its buffer for the grace period.
    if buffer.capacity() != 0 && grace.busy {
        let lent = grace.canceller.get_or_insert_with(|| pool.lend_canceller());
        let slice = read_slice(buffer, max_bytes);
        // In a pooled slot: this read's state is larger than the quiet wait's, so a quiet
        // connection's task would otherwise carry it while it idles.
        let quiet = pool.deadlines.until(idle_deadline.min(grace_end));
        let (result, slice) = Pooled::new(stream.read_unless_quiet(slice, quiet, lent)).await;
        *buffer = slice.into_inner();
        if let Some(result) = result {
            return read_outcome(result);
        }
        grace.busy = false;
    }
    pool.give_back_buffer(std::mem::take(buffer));
    if let Some(canceller) = grace.canceller.take() {
        pool.give_back_canceller(canceller);
    }
    // Quiet, new, or not seen to be busy: no buffer until the client's bytes arrive.
    if !stream.wait_readable(pool.deadlines.until(idle_deadline)).await {
        return ReadMore::TimedOut;
    }
    grace.busy = std::mem::replace(&mut grace.answered, true) && timer_now() < grace_end;
    *buffer = pool.lend_buffer();
    Pooled::new(read_more(stream, buffer, max_bytes, idle_deadline)).await
}

/// How one read into a connection's buffer ended.
pub enum ReadMore {
    Bytes,
    Eof,
    Failed,
    TimedOut,
}

/// Appends at most `max_bytes` (at least one) more bytes from the stream to `buffer`, waiting
/// until `deadline`.
pub async fn read_more<S: AsyncReadRent>(
    stream: &mut S,
    buffer: &mut Vec<u8>,
    max_bytes: usize,
    deadline: Instant,
) -> ReadMore {
    let slice = read_slice(buffer, max_bytes);
    match monoio::time::timeout_at(deadline, stream.read(slice)).await {
        Ok((result, slice)) => {
            *buffer = slice.into_inner();
            read_outcome(result)
        }
        Err(_elapsed) => ReadMore::TimedOut,
    }
}

/// The free part of `buffer` one read fills (the buffer is moved into the slice): what the
/// buffer has room for, at least a small chunk, so a large body grows it geometrically.
fn read_slice(buffer: &mut Vec<u8>, max_bytes: usize) -> SliceMut<Vec<u8>> {
    let room = buffer.capacity() - buffer.len();
    let wanted = max_bytes.clamp(1, room.clamp(READ_CHUNK_MIN_BYTES, READ_CHUNK_MAX_BYTES));
    buffer.reserve(wanted);
    let start = buffer.len();
    let owned = std::mem::take(buffer);
    let end = start + wanted.min(owned.capacity() - start);
    owned.slice_mut(start..end)
}

fn read_outcome(result: std::io::Result<usize>) -> ReadMore {
    match result {
        Ok(0) => ReadMore::Eof,
        Ok(_) => ReadMore::Bytes,
        Err(_) => ReadMore::Failed,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// Runs `test` on the epoll driver and, where the kernel allows it, on io_uring.
    fn on_both_drivers(test: fn() -> std::pin::Pin<Box<dyn Future<Output = ()>>>) {
        let mut legacy = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().expect("epoll");
        legacy.block_on(test());
        if monoio::utils::detect_uring()
            && let Ok(mut uring) = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().enable_timer().build()
        {
            uring.block_on(test());
        }
    }

    /// A client socket and the server side of its connection.
    async fn connected_pair() -> (std::net::TcpStream, monoio::net::TcpStream) {
        let listener = monoio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (client, server)
    }

    // Goal: a busy connection quiet past its grace period gives its read buffer and canceller
    // back to the pool and holds neither while it waits; when bytes arrive it borrows the buffer
    // again and reads them; a read cancelled while bytes are already waiting loses none of them;
    // a client only counts as busy once a request came within the grace of the answer before
    // it, and one not seen to be busy gives its buffer back at once, with no grace read.
    #[test]
    fn a_quiet_connection_holds_no_buffer_and_loses_no_byte() {
        on_both_drivers(|| {
            Box::pin(async {
                let (mut client, mut server) = connected_pair().await;
                let pool = IdleReadPool::default();
                let mut grace = ReadGrace { busy: true, answered: true, canceller: None };

                // Busy (it holds a buffer), then quiet at once (no grace), then idle past its deadline.
                let mut buffer = Vec::with_capacity(READ_BUFFER_INITIAL_BYTES);
                let outcome = wait_for_request(&mut server, &mut buffer, &mut grace, &pool, 100, (0, 0)).await;
                assert!(matches!(outcome, ReadMore::TimedOut));
                assert_eq!(buffer.capacity(), 0, "a quiet connection holds no buffer");
                assert!(grace.canceller.is_none(), "nor a canceller");
                assert!(!grace.busy, "a client quiet past the grace is no longer busy");
                assert_eq!(pool.buffers_held(), 1, "the buffer went back to the pool");
                assert_eq!(pool.cancellers.borrow().len(), 1);

                // Bytes arrive: the quiet connection borrows the buffer again and reads them.
                client.write_all(b"GET / HTTP/1.1\r\n").expect("write");
                let outcome = wait_for_request(&mut server, &mut buffer, &mut grace, &pool, 100, (10_000, 0)).await;
                assert!(matches!(outcome, ReadMore::Bytes));
                assert_eq!(buffer, b"GET / HTTP/1.1\r\n");
                assert_eq!(pool.buffers_held(), 0);
                assert!(!grace.busy, "bytes after the grace (none here) do not make a client busy");

                // Not busy: the buffer goes back at once and no grace read (no canceller) is made.
                buffer.clear();
                let outcome = wait_for_request(&mut server, &mut buffer, &mut grace, &pool, 100, (30, 10_000)).await;
                assert!(matches!(outcome, ReadMore::TimedOut));
                assert_eq!((buffer.capacity(), pool.buffers_held()), (0, 1));
                assert!(grace.canceller.is_none() && pool.cancellers.borrow().len() == 1, "no canceller was lent");

                // Bytes within the grace of the answer make the client busy.
                client.write_all(b"Host: a\r\n").expect("write");
                let outcome =
                    wait_for_request(&mut server, &mut buffer, &mut grace, &pool, 100, (10_000, 10_000)).await;
                assert!(matches!(outcome, ReadMore::Bytes));
                assert!(grace.busy);

                // Bytes already waiting when a busy connection's read is cancelled are all read.
                buffer.clear();
                client.write_all(b"Host: a\r\n\r\n").expect("write");
                let outcome = wait_for_request(&mut server, &mut buffer, &mut grace, &pool, 100, (10_000, 0)).await;
                assert!(matches!(outcome, ReadMore::Bytes));
                assert_eq!(buffer, b"Host: a\r\n\r\n");
            })
        });
    }

    // Goal: a new connection's first request says nothing about its client's pace: however soon
    // it comes, the wait after its answer is not a grace read.
    #[test]
    fn a_first_request_does_not_make_a_client_busy() {
        on_both_drivers(|| {
            Box::pin(async {
                let (mut client, mut server) = connected_pair().await;
                let pool = IdleReadPool::default();
                let mut grace = ReadGrace::default();
                let mut buffer = Vec::new();
                client.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("write");
                let outcome =
                    wait_for_request(&mut server, &mut buffer, &mut grace, &pool, 100, (10_000, 10_000)).await;
                assert!(matches!(outcome, ReadMore::Bytes));
                assert!(!grace.busy && grace.answered);
            })
        });
    }
}
