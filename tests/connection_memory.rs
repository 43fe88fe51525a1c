//! What an idle keep-alive connection costs in memory, as far as the type system fixes it: the
//! connection task's own size. The request handler's state (several KiB) lives in a pooled slot
//! while a request is served (`http::future_slot`), so the task that waits for the next request
//! stays small. RSS per idle connection is measured by `loadtest/idle-memory.sh` (and
//! `loadtest/harness.sh` phase (e)).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use fikra_gateway::api::ApiHandler;
use fikra_gateway::http::listener::{guarded_connection, plain_connection};
use fikra_gateway::http::server::{ServerLimits, serve_connection};
use fikra_gateway::metrics::WorkerMetrics;

/// The size of the future a function returns, without calling it.
fn future_bytes<S, Fut>(
    _serve: impl FnOnce(S, Option<std::net::SocketAddr>, Rc<ApiHandler>, ServerLimits) -> Fut,
) -> usize {
    std::mem::size_of::<Fut>()
}

/// The size of the future a function of two arguments returns, without calling it.
fn future_bytes_2<A, B, Fut>(_make: impl FnOnce(A, B) -> Fut) -> usize {
    std::mem::size_of::<Fut>()
}

/// The size of a plain connection's future (what the panic guard boxes), without calling it.
fn plain_connection_bytes<Fut>(
    _make: impl FnOnce(monoio::net::TcpStream, std::net::SocketAddr, Rc<ApiHandler>, ServerLimits) -> Fut,
) -> usize {
    std::mem::size_of::<Fut>()
}

/// A large connection future, to show that the guard does not hold it inline.
struct LargeConnection {
    _state: [u8; 4096],
}

impl Future for LargeConnection {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _context: &mut Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }
}

// Goal: the future of a plain keep-alive connection to the API is at most 1,128 bytes (it was
// 6,656 bytes with the handler's future inline, then 1,920 with the answer's flush and the head
// read inline, plus 256 for the wrapper that waited for the first bytes, then 1,664 with a monoio
// `Sleep` inline for the idle deadline), and a TLS one at most 3,456 bytes (9,216, then 4,736
// before; the rustls connection itself is most of it).
#[test]
fn an_idle_connection_task_is_small() {
    let plain = future_bytes(serve_connection::<monoio::net::TcpStream, ApiHandler, Rc<ApiHandler>>);
    let tls = future_bytes(
        serve_connection::<monoio_rustls::ServerTlsStream<monoio::net::TcpStream>, ApiHandler, Rc<ApiHandler>>,
    );
    let spawned = plain_connection_bytes(plain_connection::<ApiHandler>);
    eprintln!("connection future: {plain} bytes plain ({spawned} with its first readiness wait), {tls} bytes with TLS");
    assert!(spawned <= 1128, "a plain connection's future is {spawned} bytes");
    assert!(plain <= 1128, "serve_connection's future is {plain} bytes");
    assert!(tls <= 3456, "a TLS connection task is {tls} bytes");
}

// Goal: the panic guard's task holds the connection future in one box and not also inline (an
// `async fn` taking the future as an argument kept both copies: 2,048 bytes in the task plus
// 1,920 in the box per connection).
#[test]
fn the_guard_task_does_not_hold_the_connection_future_inline() {
    let guarded = future_bytes_2::<Arc<WorkerMetrics>, LargeConnection, _>(guarded_connection::<LargeConnection>);
    assert!(std::mem::size_of::<LargeConnection>() == 4096);
    assert!(guarded <= 64, "the guarded task is {guarded} bytes");
}
