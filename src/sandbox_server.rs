//! The standalone `fikra-gateway sandbox --listen ADDR` server: the sandbox model as a stand-in
//! upstream provider for tests and benchmarks.
//!
//! Generation is `backend::sandbox`, the reply on the wire `backend::sandbox::reply`; this module
//! owns only its own listeners, threads and request handler. It checks no keys and bills
//! nothing: it plays an upstream provider, echoing the model name it was asked for. The gateway
//! never imports it.

use std::io::Write;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use futures_channel::oneshot;
use monoio::io::AsyncWriteRent;

use crate::backend::sandbox::reply::{CompletionReply, write_completion};
use crate::config::SandboxSettings;
use crate::errors::{ApiError, Detail, ErrorKind};
use crate::http::request::Method;
use crate::http::response::{self, ErrorExtras, ResponseContext};
use crate::http::server::{Handler, OutBufferPool, Request, ResponseSink, ServerLimits};
use crate::metrics::{Metrics, WorkerMetrics};
use crate::openai::chat::{self};

/// The standalone sandbox's request handler (one per worker).
struct SandboxHandler {
    settings: SandboxSettings,
    out_buffers: OutBufferPool,
    metrics: Arc<WorkerMetrics>,
    counter: std::cell::Cell<u64>,
    worker_index: usize,
}

impl Handler for SandboxHandler {
    fn out_buffers(&self) -> &OutBufferPool {
        &self.out_buffers
    }

    async fn handle<S: AsyncWriteRent>(&self, request: &Request<'_>, sink: &mut ResponseSink<S>) {
        let head = &request.head;
        let context = ResponseContext { request_id: None, rates: None, keep_alive: sink.keep_alive };
        let reject = |sink: &mut ResponseSink<S>, error: &ApiError<'_>| {
            response::write_error(&mut sink.out, &mut sink.scratch, error, &ErrorExtras::default(), &context);
        };
        match (head.method, head.path) {
            (Method::Post, "/v1/chat/completions") => {}
            (Method::Get, "/v1/models") => {
                response::write_full(
                    &mut sink.out,
                    200,
                    "application/json",
                    &[],
                    &context,
                    b"{\"object\":\"list\",\"data\":[]}",
                );
                return;
            }
            (_, path) => {
                let detail = Detail::UnknownEndpoint { method: head.method_str, path };
                reject(sink, &ApiError { kind: ErrorKind::UnknownEndpoint, param: None, detail });
                return;
            }
        }
        let chat = match chat::parse_chat_request(request.body) {
            Ok(chat) => chat,
            Err(error) => return reject(sink, &error),
        };
        let counter = self.counter.get() + 1;
        self.counter.set(counter);
        let mut id = [0u8; 32];
        let mut cursor = std::io::Cursor::new(&mut id[..]);
        let _ = write!(cursor, "sbx-{}-{counter}", self.worker_index);
        let id_len = cursor.position() as usize;
        let request_id = std::str::from_utf8(&id[..id_len]).unwrap_or("sbx");
        // The real time is the point here (a completion's `created`), not the injected clock.
        let created_unix_s = crate::clock::Clock::System.now_ms() / 1000;
        let reply = CompletionReply {
            request_id,
            model_id: chat.model,
            output_cap_tokens: chat.max_tokens.unwrap_or(self.settings.output_tokens),
            clamped_to: None,
            chat: &chat,
            body: request.body,
            rates: None,
            created_unix_s,
            answer: crate::openai::responses::answer::AnswerFormat::Chat,
            charge: None,
        };
        write_completion(sink, &reply, &self.settings, &self.metrics).await;
    }
}

/// A running standalone sandbox.
pub struct SandboxServer {
    pub addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    threads: Vec<JoinHandle<()>>,
    stop_senders: Vec<oneshot::Sender<()>>,
}

impl SandboxServer {
    pub fn start(listen: SocketAddr, workers: usize, settings: SandboxSettings) -> std::io::Result<SandboxServer> {
        Self::start_with_tls(listen, workers, settings, None)
    }

    /// Like `start`, terminating TLS with `tls` (certificate chain, private key) when given.
    pub fn start_with_tls(
        listen: SocketAddr,
        workers: usize,
        settings: SandboxSettings,
        tls: Option<&crate::config::TlsFiles>,
    ) -> std::io::Result<SandboxServer> {
        let acceptor = match tls {
            Some(files) => Some(crate::tls::server_acceptor(&files.cert_file, &files.key_file)?),
            None => None,
        };
        let listeners = crate::http::listener::bind_reuseport_group(listen, workers)?;
        let addr = listeners[0].local_addr()?;
        let metrics = Arc::new(Metrics::new(workers));
        let running = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        let mut stop_senders = Vec::new();
        for (index, listener) in listeners.into_iter().enumerate() {
            let (stop_sender, stop_receiver) = oneshot::channel();
            stop_senders.push(stop_sender);
            let worker_metrics = metrics.workers[index].clone();
            let running = running.clone();
            let acceptor = acceptor.clone();
            threads.push(std::thread::Builder::new().name(format!("fikra-sandbox-{index}")).spawn(move || {
                let handler = Rc::new(SandboxHandler {
                    settings,
                    out_buffers: OutBufferPool::default(),
                    metrics: worker_metrics.clone(),
                    counter: Default::default(),
                    worker_index: index,
                });
                crate::http::listener::run_on_runtime(
                    &worker_metrics,
                    &format!("sandbox worker {index}"),
                    crate::http::listener::UringTaskWork::default(),
                    || {
                        crate::http::listener::serve_listener(
                            listener,
                            handler.clone(),
                            worker_metrics.clone(),
                            ServerLimits::default(),
                            stop_receiver,
                            crate::http::listener::Lifecycle {
                                running,
                                drain_deadline_ms: crate::limits::SHUTDOWN_DRAIN_DEADLINE_MS,
                            },
                            acceptor.clone(),
                        )
                    },
                );
            })?);
        }
        let started_ms = crate::clock::monotonic_ms();
        while running.load(Ordering::Acquire) < workers
            && crate::clock::monotonic_ms() - started_ms < crate::limits::WORKERS_START_TIMEOUT_MS
        {
            std::thread::sleep(Duration::from_millis(crate::limits::WORKERS_START_POLL_MS));
        }
        Ok(SandboxServer { addr, metrics, threads, stop_senders })
    }

    pub fn shutdown(mut self) {
        for sender in self.stop_senders.drain(..) {
            let _ = sender.send(());
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
