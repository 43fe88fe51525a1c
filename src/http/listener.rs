//! Listening sockets and their accept loops: one SO_REUSEPORT socket per worker on the same
//! port, the monoio runtime each loop runs on (io_uring where the kernel allows it, else epoll),
//! and draining when told to stop.
//!
//! Owns binding (a port another process already serves is refused instead of silently shared),
//! accepting and handing each connection to `http::server` under a panic guard. It never looks
//! inside a request: what a connection is for is the `Handler`'s business.

use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_channel::oneshot;
use socket2::{Domain, Protocol, Socket, Type};

use crate::clock::{deadline_after_ms, time_left};
use crate::http::server::{Handler, ServerLimits, serve_connection};
use crate::limits::{ACCEPT_ERROR_BACKOFF_MS, DRAIN_POLL_MS, LISTEN_BACKLOG_CONNECTIONS};
use crate::metrics::{Driver, WorkerMetrics};

/// What a listener loop reports to and how long it drains: shared by the loops of one server.
#[derive(Clone)]
pub struct Lifecycle {
    /// Loops currently accepting (readiness, start-up wait).
    pub running: Arc<AtomicUsize>,
    /// How long a stopping loop waits for its in-flight requests.
    pub drain_deadline_ms: u64,
}

/// Binds `count` listening sockets on `addr` with SO_REUSEPORT, after checking that no other
/// socket (of any process) already listens there.
pub fn bind_reuseport_group(addr: SocketAddr, count: usize) -> io::Result<Vec<StdTcpListener>> {
    let mut addr = addr;
    if addr.port() != 0 {
        // A plain bind fails if anything listens on the port, even with SO_REUSEPORT.
        let probe = new_socket(addr, false)?;
        probe.bind(&addr.into()).map_err(|error| {
            io::Error::new(error.kind(), format!("{addr} is already in use by another process ({error})"))
        })?;
        drop(probe);
    }
    let mut listeners = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = new_socket(addr, true)?;
        socket.bind(&addr.into())?;
        socket.listen(LISTEN_BACKLOG_CONNECTIONS)?;
        let listener: StdTcpListener = socket.into();
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

fn new_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// How an io_uring ring runs the kernel's completion work (`[server] io_uring_task_work`).
/// Each thread owns its ring and is the only one to submit to it, so every mode is safe here.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum UringTaskWork {
    /// The kernel's default: a completion interrupts the thread (an inter-processor interrupt
    /// or a signal-style notification) to post its result at once.
    Immediate,
    /// `IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER`: completions are posted the next
    /// time the thread enters the kernel anyway (it does, every turn of the event loop), with no
    /// interrupt, and the ring skips its multi-submitter locking.
    #[default]
    Cooperative,
    /// `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN`: completions are posted only
    /// when the thread waits for them, in one batch.
    Deferred,
}

impl UringTaskWork {
    pub fn name(self) -> &'static str {
        match self {
            UringTaskWork::Immediate => "immediate",
            UringTaskWork::Cooperative => "cooperative",
            UringTaskWork::Deferred => "deferred",
        }
    }

    pub fn from_name(name: &str) -> Option<UringTaskWork> {
        [UringTaskWork::Immediate, UringTaskWork::Cooperative, UringTaskWork::Deferred]
            .into_iter()
            .find(|mode| mode.name() == name)
    }

    fn ring_builder(self) -> io_uring::Builder {
        let mut builder = io_uring::IoUring::builder();
        match self {
            UringTaskWork::Immediate => {}
            UringTaskWork::Cooperative => {
                builder.setup_coop_taskrun().setup_single_issuer();
            }
            UringTaskWork::Deferred => {
                builder.setup_single_issuer().setup_defer_taskrun();
            }
        }
        builder
    }
}

/// Builds a monoio runtime (io_uring if the kernel allows it and the ring builds, with
/// `task_work`'s setup, or without it on a kernel that refuses those flags; else epoll),
/// records which one in `metrics`, and runs `make_future()` on it to completion.
pub fn run_on_runtime<F, Fut>(metrics: &WorkerMetrics, name: &str, task_work: UringTaskWork, make_future: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    if monoio::utils::detect_uring() {
        let mut modes = vec![task_work];
        if task_work != UringTaskWork::Immediate {
            modes.push(UringTaskWork::Immediate);
        }
        for mode in modes {
            let builder = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().uring_builder(mode.ring_builder());
            match builder.enable_timer().build() {
                Ok(mut runtime) => {
                    metrics.set_driver(Driver::IoUring);
                    crate::log_info!("{name} runs on io_uring ({} task work)", mode.name());
                    runtime.block_on(make_future());
                    return;
                }
                Err(error) => crate::log_warn!(
                    "{name}: the io_uring runtime with {} task work failed to build ({error})",
                    mode.name()
                ),
            }
        }
        crate::log_warn!("{name}: using epoll");
    }
    match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build() {
        Ok(mut runtime) => {
            metrics.set_driver(Driver::Epoll);
            crate::log_info!("{name} runs on epoll");
            runtime.block_on(make_future());
        }
        Err(error) => crate::log_error!("{name}: no runtime could be built: {error}"),
    }
}

/// Accepts connections until told to stop, then waits for in-flight requests to finish.
pub async fn serve_listener<H: Handler + 'static>(
    listener: StdTcpListener,
    handler: Rc<H>,
    metrics: Arc<WorkerMetrics>,
    limits: ServerLimits,
    mut stop: oneshot::Receiver<()>,
    lifecycle: Lifecycle,
    tls: Option<monoio_rustls::TlsAcceptor>,
) {
    let listener = match monoio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            crate::log_error!("cannot register the listener with the runtime: {error}");
            return;
        }
    };
    lifecycle.running.fetch_add(1, Ordering::Release);
    loop {
        // Cancelling an accept can leak the accepted descriptor (monoio 0.2.4); this select
        // cancels at most once, at shutdown, when that no longer matters.
        monoio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    WorkerMetrics::add(&metrics.connections_accepted, 1);
                    let handler = handler.clone();
                    let metrics = metrics.clone();
                    let tls = tls.clone();
                    // Plain and TLS connections are spawned as separate tasks: one future
                    // holding both would make every plain task as large as a TLS one.
                    match tls {
                        None => {
                            let serve = plain_connection(stream, peer, handler, limits);
                            monoio::spawn(guarded_connection(metrics, serve));
                        }
                        Some(acceptor) => {
                            let serve = async move {
                                // A handshake gets the head's time budget; failures just close.
                                let handshake = Duration::from_millis(limits.head_timeout_ms);
                                if let Ok(Ok(stream)) = monoio::time::timeout(handshake, acceptor.accept(stream)).await {
                                    serve_connection(stream, Some(peer), handler, limits).await;
                                }
                            };
                            monoio::spawn(guarded_connection(metrics, serve));
                        }
                    }
                }
                Err(error) => {
                    // Per connection (out of file descriptors, say): rate-bounded.
                    crate::log_warn_every!("accept failed: {error}; pausing {ACCEPT_ERROR_BACKOFF_MS} ms");
                    monoio::time::sleep(Duration::from_millis(ACCEPT_ERROR_BACKOFF_MS)).await;
                }
            },
            _ = &mut stop => break,
        }
    }
    drop(listener);
    let deadline = deadline_after_ms(lifecycle.drain_deadline_ms);
    while metrics.requests_in_flight.load(Ordering::Relaxed) > 0 && !time_left(deadline).is_zero() {
        monoio::time::sleep(Duration::from_millis(DRAIN_POLL_MS)).await;
    }
    lifecycle.running.fetch_sub(1, Ordering::Release);
}

/// Serves one plain (not TLS) connection: its task's future, apart from the panic guard. Public
/// so a test can weigh it (`tests/connection_memory.rs`).
pub fn plain_connection<H: Handler>(
    stream: monoio::net::TcpStream,
    peer: SocketAddr,
    handler: Rc<H>,
    limits: ServerLimits,
) -> impl std::future::Future<Output = ()> {
    serve_connection(stream, Some(peer), handler, limits)
}

/// Runs one connection's future, counted in the open-connections gauge, with a panic confined
/// to it (counted, the connection dropped, the worker unharmed). The guard boxes the connection
/// future before the task is built, so the task holds only the box: an `async fn` taking the
/// future as an argument would keep that argument's bytes in the task next to the boxed copy.
pub fn guarded_connection<F: std::future::Future<Output = ()>>(
    metrics: Arc<WorkerMetrics>,
    connection: F,
) -> impl std::future::Future<Output = ()> {
    let served = crate::panic_guard::catch_unwind(std::panic::AssertUnwindSafe(connection));
    // One read of each clock per wake of the connection (an event), not one per use.
    let served = crate::clock::ReadOncePerPoll(served);
    async move {
        WorkerMetrics::gauge_up(&metrics.connections_open);
        if served.await.is_err() {
            WorkerMetrics::add(&metrics.connection_panics, 1);
        }
        WorkerMetrics::gauge_down(&metrics.connections_open);
    }
}
