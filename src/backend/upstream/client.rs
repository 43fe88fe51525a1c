//! HTTP/1.1 to an upstream over one pooled connection: connect (TCP, then TLS), send a request,
//! read the response head within the response timeout, then read the body piece by piece
//! (Content-Length, chunked or close-delimited), so SSE can be relayed as it arrives.
//!
//! A connection goes back to its worker's pool only after its body was read completely and the
//! upstream did not ask to close; anything a timeout or an error interrupted is dropped. Pools
//! are per worker (no locks), most recently used first, capped, with an idle timeout shorter
//! than a provider's keep-alive; the worker's sweep (`Pool::close_stale`) closes connections
//! past it, so a stale socket never lingers until the next checkout.

use std::cell::RefCell;
use std::io;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use crate::backend::upstream::UpstreamTarget;
use crate::backend::upstream::plain_head::{HeaderKind, plain_head};
use crate::clock::{deadline_after_ms, time_left, timer_now};
use crate::http::chunked::{ChunkedDecoder, ChunkedError};
use crate::limits::{
    UPSTREAM_MAX_RESPONSE_BODY_BYTES, UPSTREAM_MAX_RESPONSE_HEAD_BYTES, UPSTREAM_POOL_MAX_IDLE_CONNECTIONS,
    UPSTREAM_READ_CHUNK_BYTES, UPSTREAM_SPARE_READ_BUFFERS,
};

/// An open connection to an upstream.
pub enum Connection {
    Plain(TcpStream),
    Tls(Box<monoio_rustls::ClientTlsStream<TcpStream>>),
}

// Each transport's operation gets its own timer: a timer takes the future by value, and the
// plain one (the common case) is far smaller than the TLS one, so it is the only one copied.
impl Connection {
    /// Writes all of `buffer` unless `deadline` passes first (`None`).
    async fn write_all_by(
        &mut self,
        buffer: Vec<u8>,
        deadline: monoio::time::Instant,
    ) -> Option<(io::Result<usize>, Vec<u8>)> {
        match self {
            Connection::Plain(stream) => monoio::time::timeout_at(deadline, stream.write_all(buffer)).await.ok(),
            Connection::Tls(stream) => monoio::time::timeout_at(deadline, stream.write_all(buffer)).await.ok(),
        }
    }

    /// Appends at most `UPSTREAM_READ_CHUNK_BYTES` to `buffer`; 0 means the upstream closed.
    /// `None`: `deadline` passed first (and the buffer's bytes are gone with the read).
    async fn read_more_by(
        &mut self,
        buffer: &mut Vec<u8>,
        deadline: monoio::time::Instant,
    ) -> Option<io::Result<usize>> {
        buffer.reserve(UPSTREAM_READ_CHUNK_BYTES);
        let start = buffer.len();
        let owned = std::mem::take(buffer);
        let end = start + UPSTREAM_READ_CHUNK_BYTES.min(owned.capacity() - start);
        let slice = owned.slice_mut(start..end);
        let (result, slice) = match self {
            Connection::Plain(stream) => monoio::time::timeout_at(deadline, stream.read(slice)).await.ok()?,
            Connection::Tls(stream) => monoio::time::timeout_at(deadline, stream.read(slice)).await.ok()?,
        };
        *buffer = slice.into_inner();
        Some(result)
    }
}

/// Why talking to an upstream failed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// Could not connect or complete TLS (502).
    Connect,
    /// No response head within the response timeout (504).
    Timeout,
    /// The connection broke before any response byte (502; retried once if it was reused).
    ResetBeforeResponse,
    /// The response is not valid HTTP/1.1 or breaks a limit (502).
    Malformed,
    /// The connection broke in the middle of the body (mid-stream failure).
    BrokenBody,
    /// The body stopped arriving: no byte within the idle timeout (504 before anything was
    /// relayed, a mid-stream failure after).
    Stalled,
}

/// A pooled connection and until when it may be reused (its upstream's `pool_idle_timeout_ms`
/// after it went idle).
struct Idle {
    connection: Connection,
    fresh_until: monoio::time::Instant,
}

/// One worker's pools, one per upstream index, and the read buffers of finished exchanges.
pub struct Pool {
    idle: RefCell<Vec<Vec<Idle>>>,
    /// Empty read buffers for the next exchanges (at most `UPSTREAM_SPARE_READ_BUFFERS`).
    spare_reads: RefCell<Vec<Vec<u8>>>,
    /// Where new connections (TCP connects, TLS handshakes) are counted.
    metrics: std::sync::Arc<crate::metrics::WorkerMetrics>,
}

impl Pool {
    pub fn new(metrics: std::sync::Arc<crate::metrics::WorkerMetrics>) -> Pool {
        Pool { idle: RefCell::default(), spare_reads: RefCell::default(), metrics }
    }

    /// An empty read buffer for an exchange: a finished exchange's, or a new one.
    fn read_buffer(&self) -> Vec<u8> {
        self.spare_reads.borrow_mut().pop().unwrap_or_else(|| Vec::with_capacity(UPSTREAM_READ_CHUNK_BYTES))
    }

    /// Keeps a finished exchange's read buffer for the next one, unless enough are kept or it
    /// grew large (one large answer must not pin its memory).
    fn keep_read_buffer(&self, mut buffer: Vec<u8>) {
        let mut spare = self.spare_reads.borrow_mut();
        if spare.len() < UPSTREAM_SPARE_READ_BUFFERS && buffer.capacity() <= 2 * UPSTREAM_READ_CHUNK_BYTES {
            buffer.clear();
            spare.push(buffer);
        }
    }

    /// The most recently used idle connection to `upstream`, if one is fresh enough.
    fn take(&self, upstream: usize) -> Option<Connection> {
        let mut idle = self.idle.borrow_mut();
        let stack = idle.get_mut(upstream)?;
        while let Some(entry) = stack.pop() {
            if !time_left(entry.fresh_until).is_zero() {
                return Some(entry.connection);
            }
        }
        None
    }

    /// Returns a connection whose last response was read completely; it may be reused for
    /// `idle_timeout_ms`.
    pub fn put(&self, upstream: usize, connection: Connection, idle_timeout_ms: u64) {
        let mut idle = self.idle.borrow_mut();
        if idle.len() <= upstream {
            idle.resize_with(upstream + 1, Vec::new);
        }
        let stack = &mut idle[upstream];
        if stack.len() >= UPSTREAM_POOL_MAX_IDLE_CONNECTIONS {
            stack.remove(0);
        }
        stack.push(Idle { connection, fresh_until: deadline_after_ms(idle_timeout_ms) });
    }

    /// Closes every idle connection whose idle timeout has passed (dropping it closes the
    /// socket) and counts them; returns how many it closed. Called by the worker's sweep.
    pub fn close_stale(&self) -> usize {
        let now = timer_now();
        let mut closed = 0;
        for stack in self.idle.borrow_mut().iter_mut() {
            let before = stack.len();
            stack.retain(|entry| entry.fresh_until > now);
            closed += before - stack.len();
        }
        crate::metrics::WorkerMetrics::add(&self.metrics.upstream_idle_closed, closed as u64);
        closed
    }
}

async fn connect(target: &UpstreamTarget, pool: &Pool) -> Result<Connection, UpstreamFailure> {
    let addresses = target.addresses.read().map(|a| a.clone()).unwrap_or_default();
    let mut last = UpstreamFailure::Connect;
    for address in addresses {
        match monoio::time::timeout(target.connect_timeout, TcpStream::connect_addr(address)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                crate::metrics::WorkerMetrics::add(&pool.metrics.upstream_connects, 1);
                let Some((connector, server_name)) = &target.tls else { return Ok(Connection::Plain(stream)) };
                return match monoio::time::timeout(
                    target.connect_timeout,
                    connector.connect(server_name.clone(), stream),
                )
                .await
                {
                    Ok(Ok(tls)) => Ok(Connection::Tls(Box::new(tls))),
                    Ok(Err(error)) => {
                        crate::log_warn_every!("upstream {}: the TLS handshake failed: {error}", target.name);
                        Err(UpstreamFailure::Connect)
                    }
                    Err(_) => Err(UpstreamFailure::Connect),
                };
            }
            Ok(Err(_)) | Err(_) => last = UpstreamFailure::Connect,
        }
    }
    Err(last)
}

/// How an upstream response body is delimited.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ResponseFraming {
    Length(u64),
    Chunked,
    /// Until the upstream closes.
    Close,
}

/// A parsed upstream response head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub framing: ResponseFraming,
    /// The upstream allows reuse of the connection after this response.
    pub keep_alive: bool,
    /// `retry-after` in whole seconds, when the upstream sent a number.
    pub retry_after_s: Option<u64>,
    /// `content-type: text/event-stream` (parameters allowed): the body claims to be SSE.
    pub event_stream: bool,
}

/// Parses a response head at the start of `buffer`: `Ok(None)` while incomplete. A plain head
/// takes the quick road (`plain_head`); any other goes to httparse, which refuses what is not
/// HTTP.
pub fn parse_response_head(buffer: &[u8]) -> Result<Option<(ResponseHead, usize)>, UpstreamFailure> {
    if let Some(plain) = plain_head(buffer) {
        let head = read_head(plain.status, plain.minor_version, plain.read_headers())?;
        return Ok(Some((head, plain.head_len)));
    }
    let mut headers = [httparse::EMPTY_HEADER; crate::limits::MAX_REQUEST_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buffer) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buffer.len() < UPSTREAM_MAX_RESPONSE_HEAD_BYTES => return Ok(None),
        _ => return Err(UpstreamFailure::Malformed),
    };
    // Text only for the headers read (most of an upstream's head is not).
    let read = response.headers.iter().filter_map(|header| {
        let kind = HeaderKind::of(header.name.as_bytes())?;
        Some((kind, std::str::from_utf8(header.value).map(str::trim).unwrap_or("")))
    });
    let head = read_head(response.code.unwrap_or(0), response.version.unwrap_or(1), read)?;
    Ok(Some((head, head_len)))
}

/// The response head from its status line and the headers the client reads (values as text,
/// trimmed; a value that is not UTF-8 reads as empty).
fn read_head<'b>(
    status: u16,
    minor_version: u8,
    headers: impl Iterator<Item = (HeaderKind, &'b str)>,
) -> Result<ResponseHead, UpstreamFailure> {
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut close = minor_version == 0;
    let mut retry_after_s = None;
    let mut event_stream = false;
    for (kind, text) in headers {
        match kind {
            HeaderKind::ContentLength => {
                let parsed = text.parse::<u64>().map_err(|_| UpstreamFailure::Malformed)?;
                if length.is_some_and(|l| l != parsed) {
                    return Err(UpstreamFailure::Malformed);
                }
                length = Some(parsed);
            }
            HeaderKind::TransferEncoding => {
                chunked = text.eq_ignore_ascii_case("chunked");
                if !chunked {
                    return Err(UpstreamFailure::Malformed);
                }
            }
            HeaderKind::Connection => close |= text.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")),
            HeaderKind::RetryAfter => retry_after_s = text.parse().ok(),
            HeaderKind::ContentType => {
                const EVENT_STREAM: &str = "text/event-stream";
                let media_end = text.bytes().position(|byte| byte == b';').unwrap_or(text.len());
                let media_type = text.get(..media_end).unwrap_or("");
                // Trimming cannot make a shorter type long enough to match.
                event_stream =
                    media_type.len() >= EVENT_STREAM.len() && media_type.trim().eq_ignore_ascii_case(EVENT_STREAM);
            }
        }
    }
    let framing = if chunked {
        ResponseFraming::Chunked
    } else if let Some(length) = length {
        ResponseFraming::Length(length)
    } else if status == 204 || status == 304 {
        ResponseFraming::Length(0)
    } else {
        close = true;
        ResponseFraming::Close
    };
    if let ResponseFraming::Length(length) = framing
        && length > UPSTREAM_MAX_RESPONSE_BODY_BYTES as u64
    {
        // Declared larger than the gateway ever reads: refused before a byte of it is read.
        return Err(UpstreamFailure::Malformed);
    }
    Ok(ResponseHead { status, framing, keep_alive: !close, retry_after_s, event_stream })
}

/// One exchange with an upstream, from request to the end of the body.
pub struct Exchange {
    pub upstream: usize,
    /// How long the connection may then sit in the pool (the upstream's `pool_idle_timeout_ms`).
    pool_idle_timeout_ms: u64,
    connection: Option<Connection>,
    pub head: ResponseHead,
    /// Raw bytes read but not yet decoded.
    raw: Vec<u8>,
    decoder: Option<ChunkedDecoder>,
    remaining: u64,
    body_bytes: usize,
    done: bool,
}

/// Sends `request` (a complete HTTP request) and reads the response head. Reuses a pooled
/// connection if there is one, and retries once on a fresh connection if the reused one fails
/// before any response byte.
pub async fn start(
    target: &UpstreamTarget,
    upstream: usize,
    pool: &Pool,
    request: &mut Vec<u8>,
) -> Result<Exchange, UpstreamFailure> {
    let mut pooled = pool.take(upstream);
    loop {
        let reused = pooled.is_some();
        let mut connection = match pooled.take() {
            Some(connection) => connection,
            None => connect(target, pool).await?,
        };
        match send_and_read_head(&mut connection, target, request, pool).await {
            Ok((head, raw)) => {
                let mut exchange = Exchange {
                    upstream,
                    pool_idle_timeout_ms: target.pool_idle_timeout_ms,
                    connection: Some(connection),
                    remaining: if let ResponseFraming::Length(n) = head.framing { n } else { 0 },
                    decoder: (head.framing == ResponseFraming::Chunked)
                        .then(|| ChunkedDecoder::new(UPSTREAM_MAX_RESPONSE_BODY_BYTES)),
                    head,
                    raw,
                    body_bytes: 0,
                    done: false,
                };
                exchange.done = exchange.head.framing == ResponseFraming::Length(0);
                return Ok(exchange);
            }
            Err(UpstreamFailure::ResetBeforeResponse) if reused => continue,
            Err(failure) => return Err(failure),
        }
    }
}

async fn send_and_read_head(
    connection: &mut Connection,
    target: &UpstreamTarget,
    request: &mut Vec<u8>,
    pool: &Pool,
) -> Result<(ResponseHead, Vec<u8>), UpstreamFailure> {
    let deadline = timer_now() + target.response_timeout;
    let buffer = std::mem::take(request);
    let Some((result, buffer)) = connection.write_all_by(buffer, deadline).await else {
        return Err(UpstreamFailure::Timeout);
    };
    *request = buffer;
    if result.is_err() {
        return Err(UpstreamFailure::ResetBeforeResponse);
    }
    let mut raw = pool.read_buffer();
    loop {
        match connection.read_more_by(&mut raw, deadline).await {
            None => return Err(UpstreamFailure::Timeout),
            Some(Ok(0)) | Some(Err(_)) if raw.is_empty() => return Err(UpstreamFailure::ResetBeforeResponse),
            Some(Ok(0)) | Some(Err(_)) => return Err(UpstreamFailure::Malformed),
            Some(Ok(_)) => {}
        }
        if let Some((head, head_len)) = parse_response_head(&raw)? {
            if head.status == 100 {
                raw.drain(..head_len);
                continue;
            }
            raw.drain(..head_len);
            return Ok((head, raw));
        }
    }
}

impl Exchange {
    /// Appends the next piece of the body to `out`; `Ok(true)` once the body is complete.
    /// `idle_timeout` bounds the wait for the next bytes.
    pub async fn next_piece(&mut self, out: &mut Vec<u8>, idle_timeout: Duration) -> Result<bool, UpstreamFailure> {
        loop {
            if self.done {
                return Ok(true);
            }
            let produced_before = out.len();
            self.decode_buffered(out)?;
            if self.done || out.len() > produced_before {
                return Ok(self.done);
            }
            let Some(connection) = self.connection.as_mut() else { return Err(UpstreamFailure::BrokenBody) };
            match connection.read_more_by(&mut self.raw, timer_now() + idle_timeout).await {
                Some(Ok(0)) => {
                    if self.head.framing == ResponseFraming::Close {
                        self.done = true;
                        self.connection = None;
                        return Ok(true);
                    }
                    self.connection = None;
                    return Err(UpstreamFailure::BrokenBody);
                }
                Some(Ok(_)) => {}
                Some(Err(_)) => {
                    self.connection = None;
                    return Err(UpstreamFailure::BrokenBody);
                }
                None => {
                    self.connection = None;
                    return Err(UpstreamFailure::Stalled);
                }
            }
        }
    }

    fn decode_buffered(&mut self, out: &mut Vec<u8>) -> Result<(), UpstreamFailure> {
        if self.raw.is_empty() {
            return Ok(());
        }
        let produced_before = out.len();
        match self.head.framing {
            ResponseFraming::Length(_) => {
                let take = (self.raw.len() as u64).min(self.remaining) as usize;
                out.extend_from_slice(&self.raw[..take]);
                self.raw.drain(..take);
                self.remaining -= take as u64;
                self.done = self.remaining == 0;
                if self.done && !self.raw.is_empty() {
                    // Bytes beyond the declared length: the connection cannot be trusted.
                    self.head.keep_alive = false;
                }
            }
            ResponseFraming::Chunked => {
                let decoder = self.decoder.as_mut().ok_or(UpstreamFailure::Malformed)?;
                let progress = decoder.decode(&self.raw, out).map_err(|error| match error {
                    ChunkedError::TooLarge | ChunkedError::Malformed(_) => UpstreamFailure::Malformed,
                })?;
                self.raw.drain(..progress.consumed);
                self.done = progress.done;
                if self.done && !self.raw.is_empty() {
                    self.head.keep_alive = false;
                }
            }
            ResponseFraming::Close => {
                out.extend_from_slice(&self.raw);
                self.raw.clear();
            }
        }
        // Only what this call decoded: `out` may hold earlier pieces the caller kept.
        self.body_bytes += out.len() - produced_before;
        if self.body_bytes > UPSTREAM_MAX_RESPONSE_BODY_BYTES {
            return Err(UpstreamFailure::Malformed);
        }
        Ok(())
    }

    /// Reads the rest of the body into `out` (unary responses): `Stalled` when no byte comes
    /// for `idle_timeout`, `Timeout` when the whole body is not in by `deadline`. (The deadline
    /// bounds each wait rather than wrapping the read in a timer, which would copy its future.)
    pub async fn read_to_end(
        &mut self,
        out: &mut Vec<u8>,
        idle_timeout: Duration,
        deadline: monoio::time::Instant,
    ) -> Result<(), UpstreamFailure> {
        loop {
            let wait = idle_timeout.min(time_left(deadline));
            match self.next_piece(out, wait).await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(UpstreamFailure::Stalled) if wait < idle_timeout => return Err(UpstreamFailure::Timeout),
                Err(failure) => return Err(failure),
            }
        }
    }

    /// Gives the connection back to the pool if the whole body was read and reuse is allowed
    /// (at most once: the exchange no longer has it after), and its read buffer once the body
    /// was read.
    pub fn finish_reusable(&mut self, pool: &Pool) {
        if self.done
            && self.head.keep_alive
            && self.raw.is_empty()
            && let Some(connection) = self.connection.take()
        {
            pool.put(self.upstream, connection, self.pool_idle_timeout_ms);
        }
        if self.done && self.raw.capacity() > 0 {
            pool.keep_read_buffer(std::mem::take(&mut self.raw));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: response heads give status, framing, reuse and retry-after exactly.
    #[test]
    fn parses_response_heads() {
        let (head, len) = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{}").unwrap().unwrap();
        assert_eq!((head.status, head.framing, head.keep_alive, len), (200, ResponseFraming::Length(12), true, 39));
        let (head, _) =
            parse_response_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!((head.framing, head.keep_alive), (ResponseFraming::Chunked, false));
        let (head, _) = parse_response_head(b"HTTP/1.1 429 Too Many\r\nRetry-After: 7\r\n\r\n").unwrap().unwrap();
        assert_eq!(
            (head.status, head.framing, head.keep_alive, head.retry_after_s),
            (429, ResponseFraming::Close, false, Some(7))
        );
        let (head, _) = parse_response_head(
            b"HTTP/1.1 200 OK\r\nContent-Type: Text/Event-Stream; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(head.event_stream);
        let (head, _) =
            parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n").unwrap().unwrap();
        assert!(!head.event_stream);
        // Declared larger than the body limit: refused from the head alone.
        let too_long = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", UPSTREAM_MAX_RESPONSE_BODY_BYTES + 1);
        assert_eq!(parse_response_head(too_long.as_bytes()), Err(UpstreamFailure::Malformed));
        let at_limit = format!("HTTP/1.1 200 OK\r\nContent-Length: {UPSTREAM_MAX_RESPONSE_BODY_BYTES}\r\n\r\n");
        assert!(parse_response_head(at_limit.as_bytes()).unwrap().is_some());
        assert_eq!(parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Le"), Ok(None));
        assert_eq!(parse_response_head(b"<html>\r\n\r\n"), Err(UpstreamFailure::Malformed));
        assert_eq!(
            parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(UpstreamFailure::Malformed)
        );
    }
}
