//! A Redis client for monoio workers: one pipelined connection per worker, replies matched to
//! commands in order, a timeout on every command, reconnection with backoff, optional AUTH.
//!
//! There is no Redis client for monoio, so this is ours, with its own RESP2 reader (`frame`).
//! Commands from many tasks of one worker share the connection: each appends its encoded
//! command (`command`: a list of arguments, or a Function call written in place) to the write
//! buffer and queues a reply slot (`reply_slots`); one flusher task per
//! connection writes whatever has piled up (natural batching) from one of two buffers it swaps,
//! one reader task hands each whole reply to the oldest waiting slot. A reply is not copied
//! out: the reader lends its place in the read buffer, the caller reads it there (`call_with`)
//! and gives it back, and the reader reads no more until every lent reply is back. The timeout
//! is kept by one watchdog task per connection, which sleeps until the oldest reply is due (one
//! timer per connection, not one per command). Once warm, a
//! command and its reply allocate nothing (`call`, which keeps an owned `Reply`, does).
//! Any failure (timeout, reset, protocol error) retires the connection: waiting commands fail,
//! and the next command reconnects once the backoff has passed. While disconnected, commands
//! fail at once instead of waiting: a store outage must never hang a request.
//! Nothing here is shared between threads.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::Write;
use std::net::SocketAddr;
use std::ops::Range;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use futures_channel::oneshot;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;

use crate::clock::{deadline_after_ms, time_left};

use crate::limits::{
    REDIS_MAX_REPLY_BYTES, REDIS_OUTGOING_INITIAL_BYTES, REDIS_READ_CHUNK_BYTES, REDIS_RECONNECT_BACKOFF_MAX_MS,
    REDIS_RECONNECT_BACKOFF_MIN_MS,
};

/// How to reach one Redis server.
#[derive(Clone, Debug)]
pub struct RedisSettings {
    pub addr: SocketAddr,
    pub password: Option<String>,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
}

/// Why a command failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisError {
    /// Not connected: the command was never written. Fail closed.
    Unavailable,
    /// The connection failed after the command was queued on it: it may have run or not.
    Lost,
    /// No reply within the command timeout; the connection was retired. The command may still
    /// run (a stalled server executes what it has read once it wakes).
    Timeout,
    /// Redis answered with an error reply (for example `NOSCRIPT`, `WRONGTYPE`).
    Server(String),
}

impl std::fmt::Display for RedisError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisError::Unavailable => f.write_str("redis unavailable"),
            RedisError::Lost => f.write_str("redis connection lost before the reply"),
            RedisError::Timeout => f.write_str("redis command timed out"),
            RedisError::Server(message) => write!(f, "redis error: {message}"),
        }
    }
}

impl RedisError {
    /// Whether the command may have run although no reply came: its effects are unknown.
    pub fn may_have_run(&self) -> bool {
        matches!(self, RedisError::Lost | RedisError::Timeout)
    }
}

mod command;
mod frame;
mod reply_slots;

pub use command::{Args, Command, Fcall, FcallHead, encode_command};

pub use frame::{Frame, Indexed, Items, ItemsIter, ProtocolError, Reply, reply_len};
use reply_slots::{ReplySlots, ReplyWait};

type ReplyResult = Result<LentReply, RedisError>;
type PendingReply = ReplyWait<Connection, ReplyResult>;

/// A connection's read buffer, shared by its reader and the replies it lends out.
#[derive(Default)]
struct ReadBuffer {
    bytes: RefCell<Vec<u8>>,
    /// Replies lent out and not given back yet: while there are any, the buffer must stay as it
    /// is, so the reader neither reads into it nor moves what it holds.
    lent: Cell<usize>,
    /// The reader's waker while it waits for them.
    reader: RefCell<Option<Waker>>,
}

impl ReadBuffer {
    fn wake_reader(&self) {
        let waker = self.reader.borrow_mut().take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// A whole reply the reader lent out: where it lies in the read buffer. Given back when
/// dropped, wherever that happens (read, abandoned in its slot, dropped with a timed-out wait).
struct LentReply {
    buffer: Rc<ReadBuffer>,
    range: Range<usize>,
}

impl LentReply {
    fn lend(buffer: &Rc<ReadBuffer>, range: Range<usize>) -> LentReply {
        buffer.lent.set(buffer.lent.get() + 1);
        LentReply { buffer: buffer.clone(), range }
    }

    /// `read` over the reply where it lies; `None` if it is not one (never: the reader
    /// measured it).
    fn read<T>(&self, read: impl FnOnce(Frame<'_>) -> T) -> Option<T> {
        let bytes = self.buffer.bytes.borrow();
        Some(read(Frame::of_measured(bytes.get(self.range.clone())?)?))
    }
}

impl Drop for LentReply {
    fn drop(&mut self) {
        let left = self.buffer.lent.get().saturating_sub(1);
        self.buffer.lent.set(left);
        if left == 0 {
            self.buffer.wake_reader();
        }
    }
}

/// An error reply as the error it is; anything else for `read`.
fn unless_error<T>(frame: Frame<'_>, read: impl FnOnce(Frame<'_>) -> T) -> Result<T, RedisError> {
    match frame {
        Frame::Error(message) => Err(RedisError::Server(String::from_utf8_lossy(message).into_owned())),
        frame => Ok(read(frame)),
    }
}

/// One live connection.
struct Connection {
    writer: RefCell<Option<OwnedWriteHalf<TcpStream>>>,
    /// Encoded commands not yet written.
    outgoing: RefCell<Vec<u8>>,
    /// Reply slots (indices into `slots`) in the order their commands were queued, each with
    /// the time by which its reply is due.
    waiting: RefCell<VecDeque<Waiting>>,
    slots: RefCell<ReplySlots<ReplyResult>>,
    read_buffer: Rc<ReadBuffer>,
    /// The flusher task's waker while it waits for commands.
    flusher: RefCell<Option<Waker>>,
    /// The watchdog task's waker while no command waits (see `watch`).
    watchdog: RefCell<Option<Waker>>,
    command_timeout: Duration,
    broken: Cell<bool>,
    /// Retired because a reply was not in time, and the client's reconnect backoff not yet
    /// started for it (the first to notice starts it: a waiter, or the next command).
    timed_out: Cell<bool>,
}

/// A command waiting for its reply.
struct Waiting {
    slot: usize,
    /// `command_timeout` after it was queued: a server still silent then is lost.
    reply_due: monoio::time::Instant,
}

impl AsRef<RefCell<ReplySlots<ReplyResult>>> for Connection {
    fn as_ref(&self) -> &RefCell<ReplySlots<ReplyResult>> {
        &self.slots
    }
}

impl Connection {
    /// Retires the connection: every waiting command fails, the flusher ends.
    fn break_down(&self) {
        self.retire(|| Err(RedisError::Lost));
    }

    /// Retires the connection because the oldest command's reply is overdue: every waiting
    /// command fails with `Timeout` (each may still run once the server wakes).
    fn time_out(&self) {
        self.timed_out.set(true);
        self.retire(|| Err(RedisError::Timeout));
    }

    fn retire(&self, failure: fn() -> ReplyResult) {
        self.broken.set(true);
        let waiting: Vec<usize> = self.waiting.borrow_mut().drain(..).map(|waiting| waiting.slot).collect();
        reply_slots::fail_all(&self.slots, waiting, failure);
        self.writer.borrow_mut().take();
        self.wake_flusher();
        self.read_buffer.wake_reader();
        let watchdog = self.watchdog.borrow_mut().take();
        if let Some(watchdog) = watchdog {
            watchdog.wake();
        }
    }

    /// Queues `command` and returns the reply's slot; the flusher is woken by `wake_flusher`.
    fn queue(self: &Rc<Self>, command: &(impl Command + ?Sized)) -> PendingReply {
        command.encode(&mut self.outgoing.borrow_mut());
        let index = self.slots.borrow_mut().claim();
        let reply_due = crate::clock::timer_now() + self.command_timeout;
        self.waiting.borrow_mut().push_back(Waiting { slot: index, reply_due });
        // Woken only when it waits for a first command (it sleeps on its own timer otherwise).
        let watchdog = self.watchdog.borrow_mut().take();
        if let Some(watchdog) = watchdog {
            watchdog.wake();
        }
        ReplyWait::new(self.clone(), index)
    }

    fn wake_flusher(&self) {
        let waker = self.flusher.borrow_mut().take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// A worker's client for one Redis server.
pub struct RedisClient {
    settings: RedisSettings,
    connection: RefCell<Option<Rc<Connection>>>,
    /// Earliest time the next connection attempt may start.
    retry_at: Cell<Option<monoio::time::Instant>>,
    backoff_ms: Cell<u64>,
    /// A connection attempt is under way; callers that come meanwhile wait for its outcome
    /// here instead of opening connections of their own.
    connecting: Cell<bool>,
    connect_waiters: RefCell<Vec<oneshot::Sender<()>>>,
}

impl RedisClient {
    pub fn new(settings: RedisSettings) -> RedisClient {
        RedisClient {
            settings,
            connection: RefCell::new(None),
            retry_at: Cell::new(None),
            backoff_ms: Cell::new(REDIS_RECONNECT_BACKOFF_MIN_MS),
            connecting: Cell::new(false),
            connect_waiters: RefCell::new(Vec::new()),
        }
    }

    /// Whether a connection is up right now (readiness).
    pub fn is_connected(&self) -> bool {
        self.connection.borrow().as_ref().is_some_and(|c| !c.broken.get())
    }

    /// Whether the server was lost: the connection broke (closed, or a command timed out) or
    /// the last attempt to connect failed, and no new connection has been made since.
    pub fn is_failing(&self) -> bool {
        self.retry_at.get().is_some() || self.connection.borrow().as_ref().is_some_and(|c| c.broken.get())
    }

    /// Sends one command (`args[0]` is its name) and waits for its reply, kept as an owned
    /// tree (allocates: for calls off the request path).
    pub async fn call(&self, args: &[&[u8]]) -> Result<Reply, RedisError> {
        self.call_with(args, |frame| frame.to_reply()).await
    }

    /// Sends one command and hands its reply to `read` where it was received, in the
    /// connection's read buffer: nothing is copied or allocated. An error reply is
    /// `RedisError::Server` (and `read` is not called).
    pub async fn call_with<T>(&self, args: &[&[u8]], read: impl FnOnce(Frame<'_>) -> T) -> Result<T, RedisError> {
        self.send_with(&Args(args), read).await
    }

    /// `call_with` for a command that encodes itself (`Fcall`: written in place, no argument list).
    pub async fn send_with<T>(
        &self,
        command: &(impl Command + ?Sized),
        read: impl FnOnce(Frame<'_>) -> T,
    ) -> Result<T, RedisError> {
        let connection = self.connected().await?;
        let reply = connection.queue(command);
        connection.wake_flusher();
        self.wait_reply(&connection, reply, read).await
    }

    /// Sends `ASKING` then `command` back to back on one connection (a Cluster `ASK` redirect)
    /// and reads the reply to `command` as `send_with` does.
    pub async fn send_asking_with<T>(
        &self,
        command: &(impl Command + ?Sized),
        read: impl FnOnce(Frame<'_>) -> T,
    ) -> Result<T, RedisError> {
        let connection = self.connected().await?;
        let asking_reply = connection.queue(&Args(&[b"ASKING"]));
        let reply = connection.queue(command);
        connection.wake_flusher();
        self.wait_reply(&connection, asking_reply, |_| ()).await?;
        self.wait_reply(&connection, reply, read).await
    }

    /// The reply `reply` waits for, due within the command timeout: the connection's watchdog
    /// (`watch`) fails it with `Timeout` otherwise, so no timer is set per command.
    async fn wait_reply<T>(
        &self,
        connection: &Rc<Connection>,
        reply: PendingReply,
        read: impl FnOnce(Frame<'_>) -> T,
    ) -> Result<T, RedisError> {
        match reply.await {
            // Read at once (no await before the lent reply is dropped): the reader waits for it.
            Some(Ok(lent)) => lent.read(|frame| unless_error(frame, read)).unwrap_or(Err(RedisError::Lost)),
            Some(Err(error)) => {
                self.back_off_if_timed_out(connection);
                Err(error)
            }
            None => Err(RedisError::Lost),
        }
    }

    /// A silent server: its connection was retired, and new ones wait out the backoff (started
    /// once per timed-out connection).
    fn back_off_if_timed_out(&self, connection: &Connection) {
        if connection.timed_out.replace(false) {
            self.schedule_retry();
        }
    }

    async fn connected(&self) -> Result<Rc<Connection>, RedisError> {
        if let Some(connection) = self.connection.borrow().as_ref() {
            if !connection.broken.get() {
                return Ok(connection.clone());
            }
            self.back_off_if_timed_out(connection);
        }
        // The breaker is open after a failure: fail fast until the backoff has passed.
        if self.retry_at.get().is_some_and(|at| !time_left(at).is_zero()) {
            return Err(RedisError::Unavailable);
        }
        if self.connecting.get() {
            let (notify, done) = oneshot::channel();
            self.connect_waiters.borrow_mut().push(notify);
            // The attempt itself is bounded by the connect timeout; so is this wait.
            let _ = monoio::time::timeout(self.settings.connect_timeout, done).await;
            return match self.connection.borrow().as_ref() {
                Some(connection) if !connection.broken.get() => Ok(connection.clone()),
                _ => Err(RedisError::Unavailable),
            };
        }
        self.connecting.set(true);
        let result = self.connect().await;
        self.connecting.set(false);
        if let Ok(connection) = &result {
            *self.connection.borrow_mut() = Some(connection.clone());
        }
        for waiter in self.connect_waiters.borrow_mut().drain(..) {
            let _ = waiter.send(());
        }
        match result {
            Ok(connection) => {
                self.backoff_ms.set(REDIS_RECONNECT_BACKOFF_MIN_MS);
                self.retry_at.set(None);
                Ok(connection)
            }
            Err(error) => {
                self.schedule_retry();
                Err(error)
            }
        }
    }

    fn schedule_retry(&self) {
        let backoff = self.backoff_ms.get();
        self.retry_at.set(Some(deadline_after_ms(backoff)));
        self.backoff_ms.set((backoff * 2).min(REDIS_RECONNECT_BACKOFF_MAX_MS));
    }

    async fn connect(&self) -> Result<Rc<Connection>, RedisError> {
        let stream =
            match monoio::time::timeout(self.settings.connect_timeout, TcpStream::connect_addr(self.settings.addr))
                .await
            {
                Ok(Ok(stream)) => stream,
                _ => return Err(RedisError::Unavailable),
            };
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        let connection = Rc::new(Connection {
            writer: RefCell::new(Some(writer)),
            outgoing: RefCell::new(Vec::with_capacity(REDIS_OUTGOING_INITIAL_BYTES)),
            waiting: RefCell::new(VecDeque::new()),
            slots: RefCell::default(),
            read_buffer: Rc::default(),
            flusher: RefCell::new(None),
            watchdog: RefCell::new(None),
            command_timeout: self.settings.command_timeout,
            broken: Cell::new(false),
            timed_out: Cell::new(false),
        });
        monoio::spawn(read_replies(connection.clone(), reader));
        monoio::spawn(flush(connection.clone()));
        monoio::spawn(watch(connection.clone()));
        if let Some(password) = &self.settings.password {
            let reply = connection.queue(&Args(&[b"AUTH", password.as_bytes()]));
            connection.wake_flusher();
            let answer = match monoio::time::timeout(self.settings.command_timeout, reply).await {
                Ok(Some(Ok(lent))) => {
                    lent.read(|frame| unless_error(frame, |frame| matches!(frame, Frame::SimpleString(_))))
                }
                _ => None,
            };
            match answer {
                Some(Ok(true)) => {}
                Some(Err(error)) => {
                    connection.break_down();
                    return Err(error);
                }
                _ => {
                    connection.break_down();
                    return Err(RedisError::Unavailable);
                }
            }
        }
        Ok(connection)
    }
}

/// The connection's flusher, for as long as it lives: waits for commands, then writes whatever
/// has piled up. Commands pile up in one buffer while the other is written; the two are
/// swapped, so neither is ever made anew.
async fn flush(connection: Rc<Connection>) {
    let mut writing: Vec<u8> = Vec::with_capacity(REDIS_OUTGOING_INITIAL_BYTES);
    loop {
        std::future::poll_fn(|cx| {
            if connection.broken.get() || !connection.outgoing.borrow().is_empty() {
                return Poll::Ready(());
            }
            *connection.flusher.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        if connection.broken.get() {
            return;
        }
        std::mem::swap(&mut *connection.outgoing.borrow_mut(), &mut writing);
        let Some(mut writer) = connection.writer.borrow_mut().take() else { return };
        let (result, buffer) = writer.write_all(writing).await;
        writing = buffer;
        if result.is_err() || connection.broken.get() {
            connection.break_down();
            return;
        }
        *connection.writer.borrow_mut() = Some(writer);
        writing.clear();
    }
}

/// The connection's watchdog, for as long as it lives: sleeps until the reply of the oldest
/// waiting command is due and retires the connection if it has not come by then (a silent
/// server), else sleeps again until the next one is due. With no command waiting it waits to be
/// woken by the next one queued. One timer per connection, set once per command timeout under
/// steady traffic, instead of one per command.
async fn watch(connection: Rc<Connection>) {
    loop {
        let oldest_due = std::future::poll_fn(|cx| {
            if connection.broken.get() {
                return Poll::Ready(None);
            }
            match connection.waiting.borrow().front() {
                Some(waiting) => Poll::Ready(Some(waiting.reply_due)),
                None => {
                    *connection.watchdog.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await;
        let Some(due) = oldest_due else { return };
        if time_left(due).is_zero() {
            connection.time_out();
            return;
        }
        // Answered meanwhile or not, the oldest is looked at again when this one is due.
        monoio::time::sleep_until(due).await;
    }
}

/// Reads replies and lends each to the oldest waiting command; reads again once every lent
/// reply is back.
async fn read_replies(connection: Rc<Connection>, mut reader: OwnedReadHalf<TcpStream>) {
    let shared = connection.read_buffer.clone();
    *shared.bytes.borrow_mut() = Vec::with_capacity(REDIS_READ_CHUNK_BYTES);
    loop {
        // Lend every whole reply already buffered.
        let mut consumed = 0;
        loop {
            let measured = frame::reply_len(&shared.bytes.borrow()[consumed..]);
            match measured {
                Ok(Some(len)) => {
                    let range = consumed..consumed + len;
                    consumed += len;
                    if connection.broken.get() {
                        // Retired (a timeout): its waiters already failed; late replies go nowhere.
                        return;
                    }
                    // Bound first: `break_down` below borrows the queue again.
                    let waiting = connection.waiting.borrow_mut().pop_front();
                    match waiting {
                        Some(Waiting { slot, .. }) => {
                            // An abandoned slot drops the reply at once, which gives it back.
                            let lent = LentReply::lend(&shared, range);
                            let waker = connection.slots.borrow_mut().fill(slot, Ok(lent));
                            if let Some(waker) = waker {
                                waker.wake();
                            }
                        }
                        None => {
                            // A reply nobody asked for: the stream is out of step.
                            connection.break_down();
                            return;
                        }
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    connection.break_down();
                    return;
                }
            }
        }
        // The buffer stays as it is until every lent reply is read (its callers were woken
        // and read it on their next poll) or the connection is retired.
        std::future::poll_fn(|cx| {
            if shared.lent.get() == 0 || connection.broken.get() {
                return Poll::Ready(());
            }
            *shared.reader.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        if connection.broken.get() {
            return;
        }
        let mut buffer = std::mem::take(&mut *shared.bytes.borrow_mut());
        buffer.drain(..consumed);
        if buffer.len() > REDIS_MAX_REPLY_BYTES {
            connection.break_down();
            return;
        }
        buffer.reserve(REDIS_READ_CHUNK_BYTES);
        let start = buffer.len();
        let end = start + REDIS_READ_CHUNK_BYTES.min(buffer.capacity() - start);
        let (result, slice) = reader.read(buffer.slice_mut(start..end)).await;
        *shared.bytes.borrow_mut() = slice.into_inner();
        match result {
            Ok(0) | Err(_) => {
                connection.break_down();
                return;
            }
            Ok(_) => {}
        }
    }
}

thread_local! {
    /// Bumped each time a runtime on this thread ends (`cli::block_on`); connections made on an
    /// earlier runtime are bound to its driver and must not be used on the next one.
    static RUNTIME_EPOCH: Cell<u64> = const { Cell::new(0) };
}

/// This thread's runtime epoch (see `runtime_ended`).
pub fn runtime_epoch() -> u64 {
    RUNTIME_EPOCH.with(Cell::get)
}

/// Records that the runtime this thread was running has ended.
pub fn runtime_ended() {
    RUNTIME_EPOCH.with(|epoch| epoch.set(epoch.get() + 1));
}

/// One command on a fresh blocking connection, its reply handed to `read` (an error reply, to
/// `AUTH` or to the command, is `RedisError::Server`): start-up work (loading functions,
/// reading the Cluster slot map) and tools, never the request path.
pub fn blocking_call<T>(
    addr: SocketAddr,
    password: Option<&str>,
    timeout: Duration,
    args: &[&[u8]],
    read: impl FnOnce(Frame<'_>) -> T,
) -> Result<T, RedisError> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|_| RedisError::Unavailable)?;
    stream.set_read_timeout(Some(timeout)).map_err(|_| RedisError::Unavailable)?;
    stream.set_write_timeout(Some(timeout)).map_err(|_| RedisError::Unavailable)?;
    let mut out = Vec::new();
    if let Some(password) = password {
        encode_command(&mut out, &[b"AUTH", password.as_bytes()]);
    }
    encode_command(&mut out, args);
    stream.write_all(&out).map_err(|_| RedisError::Unavailable)?;
    // The ends of the replies read so far, in `buffer`.
    let mut ends = Vec::new();
    let mut buffer = Vec::new();
    let wanted = if password.is_some() { 2 } else { 1 };
    let mut chunk = [0u8; REDIS_READ_CHUNK_BYTES];
    while ends.len() < wanted {
        let start = ends.last().copied().unwrap_or(0);
        match frame::reply_len(&buffer[start..]) {
            Ok(Some(len)) => {
                ends.push(start + len);
                continue;
            }
            Ok(None) => {}
            Err(_) => return Err(RedisError::Unavailable),
        }
        if buffer.len() > REDIS_MAX_REPLY_BYTES {
            return Err(RedisError::Unavailable);
        }
        let read = stream.read(&mut chunk).map_err(|error| match error.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => RedisError::Timeout,
            _ => RedisError::Unavailable,
        })?;
        if read == 0 {
            return Err(RedisError::Unavailable);
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    // `AUTH`'s reply first, when it was sent, then the command's.
    let mut start = 0;
    if password.is_some() {
        let auth = Frame::of_reply(&buffer[..ends[0]]).ok_or(RedisError::Unavailable)?;
        unless_error(auth, |_| ())?;
        start = ends[0];
    }
    let reply = Frame::of_reply(&buffer[start..ends[wanted - 1]]).ok_or(RedisError::Unavailable)?;
    unless_error(reply, read)
}

/// The Redis Cluster slot of `key`: CRC16 (XMODEM) of its hash tag (the part between the first
/// `{` and the next `}`, when not empty) or of the whole key, modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let mut hashed = key;
    if let Some(open) = key.iter().position(|&b| b == b'{')
        && let Some(close) = key[open + 1..].iter().position(|&b| b == b'}')
        && close > 0
    {
        hashed = &key[open + 1..open + 1 + close];
    }
    crc16_xmodem(hashed) % 16384
}

fn crc16_xmodem(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: slots match Redis Cluster's (values from `CLUSTER KEYSLOT`), hash tags included.
    #[test]
    fn cluster_key_slots() {
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"fk:{acct_1}:acct"), key_slot(b"acct_1"));
        assert_eq!(key_slot(b"fk:{}:x"), crc16_xmodem(b"fk:{}:x") % 16384);
    }
}
