//! What an idle keep-alive connection costs in memory, as far as the type system fixes it: the
//! connection task's own size. The request handler's state (several KiB) lives in a pooled slot
//! while a request is served (`http::future_slot`), so the task that waits for the next request
//! stays small. RSS per idle connection is measured by `loadtest/harness.sh` phase (e).

use fikra_gateway::api::ApiHandler;
use fikra_gateway::http::server::{ServerLimits, serve_connection};

/// The size of the future a function returns, without calling it.
fn future_bytes<S, Fut>(
    _serve: impl FnOnce(S, Option<std::net::SocketAddr>, &'static ApiHandler, &'static ServerLimits) -> Fut,
) -> usize {
    std::mem::size_of::<Fut>()
}

// Goal: the task of a plain keep-alive connection to the API is at most 2 KiB (it was 6,656
// bytes with the handler's future inline), and a TLS one at most 5 KiB (9,216 before; the
// rustls connection itself is most of it).
#[test]
fn an_idle_connection_task_is_small() {
    let plain = future_bytes(serve_connection::<monoio::net::TcpStream, ApiHandler>);
    let tls = future_bytes(serve_connection::<monoio_rustls::ServerTlsStream<monoio::net::TcpStream>, ApiHandler>);
    eprintln!("connection task: {plain} bytes plain, {tls} bytes with TLS");
    assert!(plain <= 2048, "a plain connection task is {plain} bytes");
    assert!(tls <= 5 * 1024, "a TLS connection task is {tls} bytes");
}
