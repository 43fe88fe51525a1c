//! The HTTP/1.1 connection loop: read a request, hand it to a handler, write the answer, repeat.
//!
//! Owns keep-alive, pipelining (requests answered strictly in order from one buffer), the head
//! and body limits (431/413), the read timeouts (head, body, idle keep-alive), request-body
//! framing (Content-Length and chunked), `Expect: 100-continue`, the `Host` rule, and the close
//! decision. What a request *means* is the handler's business; this module never looks past
//! framing. Buffers are per connection and reused for every request on it.
//!
//! The HTTP manners of SPEC §8.3 that depend on the request and not on the route live in
//! `ResponseSink`, so no handler can forget them: the answer to a HEAD request loses its body
//! bytes (the head, `content-length` included, stays as GET would send it); an HTTP/1.0 client
//! gets `connection: keep-alive` echoed when it asked for it and streams without chunked coding,
//! ended by the close. A refusal sent before the request body was read is followed by a bounded
//! lingering close (half-close, read and discard, then close), so the client reads the error
//! instead of a reset.

use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

use crate::clock::deadline_after_ms;
use crate::errors::{ApiError, Detail, ErrorKind};
use crate::http::chunked::{ChunkedDecoder, ChunkedError};
use crate::http::client_read::{ClientStream, IdleReadPool, ReadGrace, ReadMore, read_more, wait_for_request};
use crate::http::future_slot::Pooled;
use crate::http::head_spans::HeadSpans;
use crate::http::request::{BodyFraming, HeadError, Method, RequestHead, parse_head};
use crate::http::response::{self, ErrorExtras, ResponseContext, StreamFraming};
use crate::limits::{
    IDLE_READ_GRACE_MS, LINGERING_CLOSE_MAX_BYTES, LINGERING_CLOSE_MS, OUT_BUFFER_INITIAL_BYTES,
    OUT_BUFFER_POOL_MAX_BUFFER_BYTES, OUT_BUFFER_POOL_MAX_BUFFERS, READ_BUFFER_IDLE_MAX_BYTES,
    READ_BUFFER_INITIAL_BYTES, READ_CHUNK_MIN_BYTES,
};

/// The bounds one listener applies to every connection (config may lower the constants).
#[derive(Copy, Clone, Debug)]
pub struct ServerLimits {
    pub max_head_bytes: usize,
    pub max_body_bytes: usize,
    pub head_timeout_ms: u64,
    pub body_timeout_ms: u64,
    pub keepalive_timeout_ms: u64,
    pub write_timeout_ms: u64,
}

impl Default for ServerLimits {
    fn default() -> Self {
        use crate::limits::*;
        ServerLimits {
            max_head_bytes: MAX_REQUEST_HEAD_BYTES,
            max_body_bytes: MAX_REQUEST_BODY_BYTES,
            head_timeout_ms: HEAD_READ_TIMEOUT_MS,
            body_timeout_ms: BODY_READ_TIMEOUT_MS,
            keepalive_timeout_ms: KEEPALIVE_IDLE_TIMEOUT_MS,
            write_timeout_ms: RESPONSE_WRITE_TIMEOUT_MS,
        }
    }
}

/// Output buffers lent to a connection for one response at a time, so an idle connection holds
/// none, and the read buffers of quiet connections (`client_read`). One pool per worker (the
/// handler owns it), never shared between threads.
#[derive(Default)]
pub struct OutBufferPool {
    buffers: std::cell::RefCell<Vec<Vec<u8>>>,
    /// The small buffers of answers' extra header lines (`ResponseSink::head_lines`).
    head_lines: std::cell::RefCell<Vec<Vec<u8>>>,
    /// Read buffers and cancellers for connections waiting for their next request.
    pub idle_reads: IdleReadPool,
}

impl OutBufferPool {
    /// An empty output buffer from the pool (a new one if the pool is empty).
    pub fn lend(&self) -> Vec<u8> {
        self.buffers.borrow_mut().pop().unwrap_or_else(|| Vec::with_capacity(OUT_BUFFER_INITIAL_BYTES))
    }

    /// Takes a buffer back (cleared; dropped if oversized or the pool is full).
    pub fn give_back(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() == 0 || buffer.capacity() > OUT_BUFFER_POOL_MAX_BUFFER_BYTES {
            return;
        }
        buffer.clear();
        let mut buffers = self.buffers.borrow_mut();
        if buffers.len() < OUT_BUFFER_POOL_MAX_BUFFERS {
            buffers.push(buffer);
        }
    }

    /// A buffer for an answer's extra header lines: a pooled one, or an empty one that
    /// allocates only if a line is added.
    fn lend_head_lines(&self) -> Vec<u8> {
        self.head_lines.borrow_mut().pop().unwrap_or_default()
    }

    /// Takes a head-lines buffer back (kept only if it has room and the pool is not full).
    fn give_back_head_lines(&self, mut buffer: Vec<u8>) {
        let mut buffers = self.head_lines.borrow_mut();
        if buffer.capacity() != 0
            && buffer.capacity() <= OUT_BUFFER_POOL_MAX_BUFFER_BYTES
            && buffers.len() < OUT_BUFFER_POOL_MAX_BUFFERS
        {
            buffer.clear();
            buffers.push(buffer);
        }
    }
}

/// The write side of a connection as a handler sees it: an output buffer and the stream.
/// Handlers append bytes to `out`; `flush` sends them now (SSE), otherwise the loop sends them
/// after the handler returns. Streamed bodies go through `start_stream`, `frame_event` and
/// `end_stream`, which pick the framing the client's HTTP version allows.
pub struct ResponseSink<S> {
    stream: S,
    /// Bytes not yet written to the client.
    pub out: Vec<u8>,
    /// Reused scratch space (error bodies, rendering).
    pub scratch: Vec<u8>,
    /// Whether the connection stays open after this response; handlers may clear it.
    pub keep_alive: bool,
    write_timeout: Duration,
    /// Set once a write failed or timed out: the client is gone and the connection is dead.
    pub broken: bool,
    /// What the current request changes about the bytes of its answer.
    manners: Manners,
    /// Header lines the handler asked every answer to this request to carry (CORS), put after
    /// the status line when the head is flushed. Cleared for each request; its capacity stays.
    head_lines: Vec<u8>,
    /// The error table's code of the current request's error answer (or of the error event
    /// that ended its stream), for the access log.
    pub error_code: Option<&'static str>,
}

/// The per-request facts that change the bytes of an answer, applied when it is flushed.
#[derive(Copy, Clone, Debug, Default)]
struct Manners {
    /// The request was HEAD: the answer's body bytes are dropped.
    head_only: bool,
    /// The request was HTTP/1.0: no chunked coding; keep-alive is echoed.
    http10: bool,
    /// The answer's head has not been flushed yet (the manners apply to it on the next flush).
    head_pending: bool,
    /// The head of a HEAD answer went out: every later byte is body and is dropped.
    dropping_body: bool,
}

/// Added after the status line of a kept-alive answer to an HTTP/1.0 request (RFC 9112 §9.3).
const KEEP_ALIVE_HEADER: &[u8] = b"connection: keep-alive\r\n";

impl<S: AsyncWriteRent> ResponseSink<S> {
    /// Writes everything in `out` to the client now. On error or timeout the sink is marked
    /// broken (a partly written response cannot be continued) and an error is returned.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        self.apply_manners();
        self.write_out().await
    }

    /// Writes `out` as it is (interim `100 Continue` answers bypass the request's manners).
    async fn write_out(&mut self) -> std::io::Result<()> {
        if self.broken {
            return Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "connection already broken"));
        }
        if self.out.is_empty() {
            return Ok(());
        }
        let buffer = std::mem::take(&mut self.out);
        match monoio::time::timeout(self.write_timeout, self.stream.write_all(buffer)).await {
            Ok((Ok(_), mut buffer)) => {
                buffer.clear();
                self.out = buffer;
                Ok(())
            }
            Ok((Err(error), buffer)) => {
                self.out = buffer;
                self.out.clear();
                self.broken = true;
                Err(error)
            }
            Err(_elapsed) => {
                // The buffer went down with the cancelled write; start a fresh one.
                self.out = Vec::new();
                self.broken = true;
                Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out"))
            }
        }
    }

    /// Adds the header `name: value` to the current answer's head, which must not have been
    /// flushed yet (a unary answer: the connection sends it after the handler returns). Returns
    /// whether the head was still pending; a head already sent is left alone.
    pub fn add_head_line(&mut self, name: &[u8], value: &[u8]) -> bool {
        if !self.manners.head_pending {
            return false;
        }
        self.head_lines.extend_from_slice(name);
        self.head_lines.extend_from_slice(b": ");
        self.head_lines.extend_from_slice(value);
        self.head_lines.extend_from_slice(b"\r\n");
        true
    }

    /// Borrows the output, scratch and head-lines buffers for one request from the worker's
    /// pool.
    fn lend_buffers(&mut self, pool: &OutBufferPool) {
        if self.out.capacity() == 0 {
            self.out = pool.lend();
        }
        if self.scratch.capacity() == 0 {
            self.scratch = pool.lend();
        }
        if self.head_lines.capacity() == 0 {
            self.head_lines = pool.lend_head_lines();
        }
    }

    /// Gives the request's buffers back, so an idle connection holds none of them.
    fn return_buffers(&mut self, pool: &OutBufferPool) {
        pool.give_back(std::mem::take(&mut self.out));
        pool.give_back(std::mem::take(&mut self.scratch));
        pool.give_back_head_lines(std::mem::take(&mut self.head_lines));
    }

    /// Sets the manners of the request about to be answered.
    fn begin_response(&mut self, head_only: bool, minor_version: u8) {
        self.manners = Manners { head_only, http10: minor_version == 0, head_pending: true, dropping_body: false };
        self.head_lines.clear();
        self.error_code = None;
    }

    /// Makes the answer to the current request carry `lines` (complete `name: value\r\n` lines)
    /// after its status line, whoever writes the answer (a success, a refusal, a stream).
    pub fn add_head_lines(&mut self, lines: &[u8]) {
        self.head_lines.extend_from_slice(lines);
    }

    /// Applies the current request's manners to `out` before it is written: once the answer's
    /// head is complete, a HEAD answer is cut after it and an HTTP/1.0 keep-alive is echoed.
    fn apply_manners(&mut self) {
        let manners = &mut self.manners;
        if manners.dropping_body {
            self.out.clear();
            return;
        }
        if !manners.head_pending {
            return;
        }
        let Some(head_end) = memchr::memmem::find(&self.out, b"\r\n\r\n").map(|at| at + 4) else {
            return;
        };
        manners.head_pending = false;
        if manners.head_only {
            self.out.truncate(head_end);
            manners.dropping_body = true;
        }
        let keep_alive_echoed = manners.http10 && self.keep_alive;
        if (keep_alive_echoed || !self.head_lines.is_empty())
            && let Some(status_end) = memchr::memchr(b'\n', &self.out).map(|at| at + 1)
        {
            let echo: &[u8] = if keep_alive_echoed { KEEP_ALIVE_HEADER } else { b"" };
            self.out.splice(status_end..status_end, echo.iter().chain(self.head_lines.iter()).copied());
        }
    }

    /// How a streamed body to the current request is framed: chunked, or close-delimited for
    /// an HTTP/1.0 client (which cannot decode chunks).
    pub fn stream_framing(&self) -> StreamFraming {
        if self.manners.http10 { StreamFraming::CloseDelimited } else { StreamFraming::Chunked }
    }

    /// Writes the head of a streamed answer (SSE). A close-delimited stream closes the
    /// connection at its end, so it clears `keep_alive` and the head says `connection: close`;
    /// `context.keep_alive` is overridden by the sink's own.
    pub fn start_stream(
        &mut self,
        status: u16,
        content_type: &str,
        extra_headers: &[(&str, &[u8])],
        context: &ResponseContext<'_>,
    ) {
        let framing = self.stream_framing();
        if framing == StreamFraming::CloseDelimited {
            self.keep_alive = false;
        }
        let context = ResponseContext { keep_alive: self.keep_alive, ..*context };
        response::write_stream_head(&mut self.out, status, content_type, extra_headers, &context, framing);
    }

    /// Frames one event of a stream, written by the caller at `out[start..]`.
    pub fn frame_event(&mut self, start: usize) {
        let framing = self.stream_framing();
        framing.frame_in_place(&mut self.out, start);
    }

    /// Writes `error` as the last event of a stream that already started.
    pub fn write_error_event(&mut self, error: &ApiError<'_>) {
        self.error_code = Some(error.kind.spec().code);
        let framing = self.stream_framing();
        response::write_error_event(&mut self.out, error, framing);
    }

    /// Ends a stream's body (the connection loop flushes it).
    pub fn end_stream(&mut self) {
        let framing = self.stream_framing();
        framing.write_end(&mut self.out);
    }

    /// Context for response heads that carry no request id or rate headers.
    pub fn bare_context(&self) -> ResponseContext<'static> {
        ResponseContext { request_id: None, rates: None, keep_alive: self.keep_alive }
    }
}

/// One parsed request as handlers see it.
pub struct Request<'buf> {
    pub head: RequestHead<'buf>,
    /// The raw head (request line and header lines), for handlers that need a header the
    /// parser does not pick out (the payments listener's signature headers).
    pub head_bytes: &'buf [u8],
    pub body: &'buf [u8],
    /// The connection's peer address (the payments listener's source-IP allowlist).
    pub peer: Option<std::net::SocketAddr>,
}

/// What serves requests on a connection.
pub trait Handler {
    /// Answers one request by appending to (and possibly flushing) `sink`.
    fn handle<S: AsyncWriteRent>(
        &self,
        request: &Request<'_>,
        sink: &mut ResponseSink<S>,
    ) -> impl std::future::Future<Output = ()>;

    /// The pool this handler's connections borrow output buffers from.
    fn out_buffers(&self) -> &OutBufferPool;

    /// Writes the answer to a request the framing layer refused (bad framing, head or body too
    /// large); the connection closes after it. Default: the bare error, no request id.
    fn write_framing_refusal(&self, out: &mut Vec<u8>, scratch: &mut Vec<u8>, error: &ApiError<'_>) {
        let context = ResponseContext { request_id: None, rates: None, keep_alive: false };
        response::write_error(out, scratch, error, &ErrorExtras::default(), &context);
    }
}

/// Why reading the next request stopped.
enum ReadOutcome {
    /// The buffer starts with this complete, valid head (framing and `Host` checked): parsed
    /// once, here, and never again for this request.
    Head(HeadSpans),
    /// The client closed or went idle between requests: close quietly.
    Closed,
    /// The request is refused by the framing layer: answer and close.
    Refused(ApiError<'static>),
}

/// Serves one connection until it closes.
/// It owns `handler` (an `Rc` or a reference) and `limits`, so a caller needs no wrapping future
/// that would hold them, and the stream, a second time.
pub async fn serve_connection<S, H, R>(stream: S, peer: Option<std::net::SocketAddr>, handler: R, limits: ServerLimits)
where
    S: ClientStream,
    H: Handler,
    R: std::ops::Deref<Target = H>,
{
    let (handler, limits) = (&*handler, &limits);
    // Allocated when the client's first bytes arrive (`wait_for_request`).
    let mut read_buffer: Vec<u8> = Vec::new();
    let mut read_grace = ReadGrace::default();
    let mut chunked_body: Vec<u8> = Vec::new();
    let mut sink = ResponseSink {
        stream,
        out: Vec::new(),
        scratch: Vec::new(),
        keep_alive: true,
        write_timeout: Duration::from_millis(limits.write_timeout_ms),
        broken: false,
        manners: Manners::default(),
        head_lines: Vec::new(),
        error_code: None,
    };
    let mut requests_served: u64 = 0;
    loop {
        if read_buffer.is_empty() {
            let pool = &handler.out_buffers().idle_reads;
            let room = limits.max_head_bytes + 1;
            let waits = (limits.keepalive_timeout_ms, IDLE_READ_GRACE_MS);
            match wait_for_request(&mut sink.stream, &mut read_buffer, &mut read_grace, pool, room, waits).await {
                ReadMore::Bytes => {}
                ReadMore::Eof | ReadMore::Failed | ReadMore::TimedOut => return,
            }
        }
        // A head that came whole needs no further read; the rare partial one is read on in a
        // pooled slot.
        let outcome = match head_outcome(&read_buffer, limits) {
            Some(outcome) => outcome,
            None => Pooled::new(read_head(&mut sink.stream, &mut read_buffer, limits)).await,
        };
        let head_spans = match outcome {
            ReadOutcome::Head(head_spans) => head_spans,
            ReadOutcome::Closed => return,
            ReadOutcome::Refused(error) => {
                // The head did not parse, so its method is a guess from the first bytes.
                sink.begin_response(read_buffer.starts_with(b"HEAD "), 1);
                return Pooled::new(refuse_and_close(&mut sink, &mut read_buffer, handler, &error)).await;
            }
        };
        let HeadSpans { framing, keep_alive, expect_continue, minor_version, .. } = head_spans;
        let head_len = usize::from(head_spans.head_len);
        let head_only = head_spans.method == Method::Head;
        requests_served += 1;
        sink.keep_alive = keep_alive && requests_served < crate::limits::MAX_REQUESTS_PER_CONNECTION;
        sink.begin_response(head_only, minor_version);

        // Read the body according to its framing (a chunked one is decoded into a pooled buffer).
        if framing == BodyFraming::Chunked && chunked_body.capacity() == 0 {
            chunked_body = handler.out_buffers().lend();
        }
        let body_outcome = Pooled::build(|| {
            read_body(&mut sink, &mut read_buffer, &mut chunked_body, head_len, framing, expect_continue, limits)
        })
        .await;
        let consumed = match body_outcome {
            Ok(consumed) => consumed,
            Err(Some(error)) => {
                return Pooled::new(refuse_and_close(&mut sink, &mut read_buffer, handler, &error)).await;
            }
            Err(None) => return,
        };

        let flushed;
        {
            let head = head_spans.view(&read_buffer);
            let body: &[u8] = match framing {
                BodyFraming::Chunked => &chunked_body,
                BodyFraming::ContentLength(length) => &read_buffer[head_len..head_len + length as usize],
                BodyFraming::None => &[],
            };
            let request = Request { head, head_bytes: &read_buffer[..head_len], body, peer };
            sink.lend_buffers(handler.out_buffers());
            // In a pooled slot with the flush of its answer, so the connection task stays small
            // while idle (neither state machine is held between requests).
            flushed = Pooled::build(|| async {
                handler.handle(&request, &mut sink).await;
                !sink.broken && sink.flush().await.is_ok()
            })
            .await;
        }
        sink.return_buffers(handler.out_buffers());
        if !flushed || !sink.keep_alive {
            return;
        }
        read_buffer.drain(..consumed);
        // Between requests the connection keeps no decoded body, and no read buffer grown for a
        // large one (bounded retention; a small buffer is kept for the next head).
        handler.out_buffers().give_back(std::mem::take(&mut chunked_body));
        if read_buffer.is_empty() && read_buffer.capacity() > READ_BUFFER_IDLE_MAX_BYTES {
            read_buffer = Vec::with_capacity(READ_BUFFER_INITIAL_BYTES);
        }
    }
}

/// Answers a request the framing layer refused, then gives up the connection: after a framing
/// error the position of the next request in the byte stream is unknowable. The refusal came
/// before the request body was read, so the close lingers (`linger_before_close`).
async fn refuse_and_close<S: AsyncReadRent + AsyncWriteRent, H: Handler>(
    sink: &mut ResponseSink<S>,
    read_buffer: &mut Vec<u8>,
    handler: &H,
    error: &ApiError<'_>,
) {
    debug_assert!(error.kind.spec().closes_connection, "a framing refusal always closes");
    sink.keep_alive = false;
    sink.lend_buffers(handler.out_buffers());
    handler.write_framing_refusal(&mut sink.out, &mut sink.scratch, error);
    let flushed = sink.flush().await;
    sink.return_buffers(handler.out_buffers());
    if flushed.is_ok() {
        linger_before_close(&mut sink.stream, read_buffer).await;
    }
}

/// A lingering close (RFC 9112 §9.6): half-close the write side, so the client sees the answer
/// and then EOF, and read and discard what it still sends (the rest of a body it writes before
/// reading) for at most `LINGERING_CLOSE_MS` and `LINGERING_CLOSE_MAX_BYTES`. Closing with unread
/// bytes in the receive queue would make the kernel send a reset, which can destroy the answer
/// before the client reads it. `buffer` is the connection's read buffer, reused as scratch.
async fn linger_before_close<S: AsyncReadRent + AsyncWriteRent>(stream: &mut S, buffer: &mut Vec<u8>) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let deadline = deadline_after_ms(LINGERING_CLOSE_MS);
    let mut discarded_bytes = 0usize;
    while discarded_bytes < LINGERING_CLOSE_MAX_BYTES {
        buffer.clear();
        match read_more(stream, buffer, LINGERING_CLOSE_MAX_BYTES - discarded_bytes, deadline).await {
            ReadMore::Bytes => discarded_bytes += buffer.len(),
            ReadMore::Eof | ReadMore::Failed | ReadMore::TimedOut => return,
        }
    }
}

/// What the bytes of a request in `buffer` amount to: `None` while its head is incomplete.
fn head_outcome(buffer: &[u8], limits: &ServerLimits) -> Option<ReadOutcome> {
    match parse_head(buffer, limits.max_head_bytes) {
        Ok(Some(head)) => Some(match head.check_host() {
            Ok(()) => ReadOutcome::Head(HeadSpans::of(&head, buffer)),
            Err(error) => refusal_for_head_error(error, limits),
        }),
        Ok(None) => None,
        Err(error) => Some(refusal_for_head_error(error, limits)),
    }
}

/// Reads until `buffer`, which holds the start of a request head, holds a complete, valid one.
async fn read_head<S: AsyncReadRent>(stream: &mut S, buffer: &mut Vec<u8>, limits: &ServerLimits) -> ReadOutcome {
    let deadline = deadline_after_ms(limits.head_timeout_ms);
    loop {
        // Never read more than the head limit allows (plus one byte to detect "too large").
        let room = (limits.max_head_bytes + 1).saturating_sub(buffer.len()).max(1);
        match read_more(stream, buffer, room, deadline).await {
            ReadMore::Bytes => {}
            ReadMore::Eof | ReadMore::Failed | ReadMore::TimedOut => return ReadOutcome::Closed,
        }
        if let Some(outcome) = head_outcome(buffer, limits) {
            return outcome;
        }
    }
}

fn refusal_for_head_error(error: HeadError, limits: &ServerLimits) -> ReadOutcome {
    match error {
        HeadError::TooLarge | HeadError::TooManyHeaders => ReadOutcome::Refused(ApiError {
            kind: ErrorKind::HeadersTooLarge,
            param: None,
            detail: Detail::HeadersTooLarge { limit_bytes: limits.max_head_bytes },
        }),
        HeadError::UnsupportedExpectation => ReadOutcome::Refused(ApiError::new(ErrorKind::ExpectationFailed)),
        HeadError::ConflictingFraming => ReadOutcome::Refused(ApiError::with_text(
            ErrorKind::MalformedRequest,
            "Conflicting Content-Length / Transfer-Encoding headers; the request was refused and the connection closed.",
        )),
        HeadError::UnsupportedTransferEncoding => ReadOutcome::Refused(ApiError::with_text(
            ErrorKind::MalformedRequest,
            "Only 'Transfer-Encoding: chunked' is supported for request bodies.",
        )),
        HeadError::Malformed(reason) => ReadOutcome::Refused(ApiError::with_text(ErrorKind::MalformedRequest, reason)),
    }
}

/// Reads the body that follows a head of `head_len` bytes. Returns how many bytes of the
/// buffer the whole request used, `Err(Some(..))` to refuse it, `Err(None)` to close quietly.
async fn read_body<S: AsyncReadRent + AsyncWriteRent>(
    sink: &mut ResponseSink<S>,
    buffer: &mut Vec<u8>,
    chunked_body: &mut Vec<u8>,
    head_len: usize,
    framing: BodyFraming,
    expect_continue: bool,
    limits: &ServerLimits,
) -> Result<usize, Option<ApiError<'static>>> {
    let too_large = ApiError {
        kind: ErrorKind::RequestTooLarge,
        param: None,
        detail: Detail::RequestTooLarge { limit_bytes: limits.max_body_bytes },
    };
    let deadline = deadline_after_ms(limits.body_timeout_ms);
    match framing {
        BodyFraming::None => Ok(head_len),
        BodyFraming::ContentLength(length) => {
            if length > limits.max_body_bytes as u64 {
                return Err(Some(too_large));
            }
            let end = head_len + length as usize;
            if expect_continue && buffer.len() < end {
                send_continue(sink).await?;
            }
            while buffer.len() < end {
                match read_more(&mut sink.stream, buffer, end - buffer.len(), deadline).await {
                    ReadMore::Bytes => {}
                    _ => return Err(None),
                }
            }
            Ok(end)
        }
        BodyFraming::Chunked => {
            let mut decoder = ChunkedDecoder::new(limits.max_body_bytes);
            let mut position = head_len;
            if expect_continue && buffer.len() == head_len {
                send_continue(sink).await?;
            }
            loop {
                match decoder.decode(&buffer[position..], chunked_body) {
                    Ok(progress) => {
                        position += progress.consumed;
                        if progress.done {
                            return Ok(position);
                        }
                    }
                    Err(ChunkedError::TooLarge) => return Err(Some(too_large)),
                    Err(ChunkedError::Malformed(reason)) => {
                        return Err(Some(ApiError::with_text(ErrorKind::MalformedRequest, reason)));
                    }
                }
                // Drop the decoded bytes (keeping the head for the handler) so the buffer does not
                // hold the body twice; undecoded bytes stay for the next decode call.
                buffer.drain(head_len..position);
                position = head_len;
                match read_more(&mut sink.stream, buffer, READ_CHUNK_MIN_BYTES * 4, deadline).await {
                    ReadMore::Bytes => {}
                    _ => return Err(None),
                }
            }
        }
    }
}

async fn send_continue<S: AsyncWriteRent>(sink: &mut ResponseSink<S>) -> Result<(), Option<ApiError<'static>>> {
    sink.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
    sink.write_out().await.map_err(|_| None)
}
