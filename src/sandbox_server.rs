//! Serving the sandbox model over HTTP: the reply writer the gateway uses in process, and the
//! standalone `fikra-gateway sandbox --listen ADDR` server used as a stand-in upstream.
//!
//! Generation itself (text, usage, pacing, JSON shapes) is `sandbox.rs`; this module turns it
//! into a unary body or an SSE stream on a connection, flushing every event the moment it is
//! produced. The standalone server checks no keys and bills nothing: it plays an upstream
//! provider, echoing the model name it was asked for.

use std::io::Write;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use futures_channel::oneshot;
use monoio::io::AsyncWriteRent;
use monoio::time::Instant;

use crate::config::SandboxSettings;
use crate::errors::{ApiError, Detail, ErrorKind};
use crate::http::request::Method;
use crate::http::response::{self, ClampHeader, ErrorExtras, ResponseContext};
use crate::http::server::{Handler, Request, ResponseSink, ServerLimits};
use crate::metrics::{Metrics, WorkerMetrics};
use crate::openai::chat::{self, ChatRequest};
use crate::sandbox;
use crate::store::RateSnapshot;

/// One completion to answer.
pub struct CompletionReply<'a> {
    /// Used for the completion id (`chatcmpl-<request_id>`).
    pub request_id: &'a str,
    /// The model name written into the answer.
    pub model_id: &'a str,
    pub output_cap_tokens: u64,
    /// `Some(cap)` adds `x-fikra-max-tokens-clamped: cap`.
    pub clamped_to: Option<u64>,
    pub chat: &'a ChatRequest<'a>,
    pub body: &'a [u8],
    pub rates: Option<&'a RateSnapshot>,
    pub created_unix_s: u64,
}

/// What the sandbox produced, for settlement.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SandboxUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// The client went away before the end of the answer.
    pub client_aborted: bool,
}

/// Longest completion id: `chatcmpl-` plus a request id of up to this many bytes.
const MAX_REQUEST_ID_BYTES: usize = 64;

/// Writes the sandbox's answer to `reply` on `sink`, flushing each SSE event as it is produced.
pub async fn write_completion<S: AsyncWriteRent>(
    sink: &mut ResponseSink<S>,
    reply: &CompletionReply<'_>,
    settings: &SandboxSettings,
    metrics: &WorkerMetrics,
) -> SandboxUsage {
    let chat = reply.chat;
    let prompt_tokens = sandbox::prompt_tokens(chat.content_bytes, chat.message_count as u64);
    let completion_tokens = sandbox::completion_tokens(settings, reply.output_cap_tokens);
    let cut_by_cap = completion_tokens < settings.output_tokens;
    let seed = sandbox::seed_from(chat.last_user_content.slice(reply.body));
    let created = reply.created_unix_s;
    let model = reply.model_id;

    let mut id_bytes = [0u8; 9 + MAX_REQUEST_ID_BYTES];
    let request_id = &reply.request_id.as_bytes()[..reply.request_id.len().min(MAX_REQUEST_ID_BYTES)];
    id_bytes[..9].copy_from_slice(b"chatcmpl-");
    id_bytes[9..9 + request_id.len()].copy_from_slice(request_id);
    let completion_id = std::str::from_utf8(&id_bytes[..9 + request_id.len()]).unwrap_or("chatcmpl-0");

    let clamp = ClampHeader::new(reply.clamped_to);
    let (pairs, count) = clamp.pairs();
    let extra_headers = &pairs[..count];
    let context =
        ResponseContext { request_id: Some(reply.request_id), rates: reply.rates, keep_alive: sink.keep_alive };
    let started = Instant::now();
    let delivered = |completion_tokens: u64, client_aborted: bool| SandboxUsage {
        prompt_tokens,
        completion_tokens,
        client_aborted,
    };

    if !chat.stream {
        if completion_tokens > 0 {
            let generation_ms = sandbox::emit_offset_ms(settings, completion_tokens - 1);
            if generation_ms > 0 {
                monoio::time::sleep_until(started + Duration::from_millis(generation_ms)).await;
            }
        }
        sink.scratch.clear();
        sandbox::write_unary_body(
            &mut sink.scratch,
            completion_id,
            model,
            created,
            seed,
            completion_tokens,
            prompt_tokens,
            cut_by_cap,
        );
        WorkerMetrics::add(&metrics.sandbox_chunks_emitted, completion_tokens);
        let body = std::mem::take(&mut sink.scratch);
        response::write_full(&mut sink.out, 200, "application/json", extra_headers, &context, &body);
        sink.scratch = body;
        return delivered(completion_tokens, false);
    }

    response::write_stream_head(&mut sink.out, 200, "text/event-stream", extra_headers, &context);
    let start = sink.out.len();
    sandbox::write_role_chunk(&mut sink.out, completion_id, model, created);
    response::frame_chunk_in_place(&mut sink.out, start);
    if sink.flush().await.is_err() {
        return delivered(0, true);
    }
    for index in 0..completion_tokens {
        let offset_ms = sandbox::emit_offset_ms(settings, index);
        if offset_ms > 0 {
            monoio::time::sleep_until(started + Duration::from_millis(offset_ms)).await;
        }
        let start = sink.out.len();
        sandbox::write_content_chunk(
            &mut sink.out,
            completion_id,
            model,
            created,
            seed,
            index,
            index + 1 == completion_tokens,
        );
        response::frame_chunk_in_place(&mut sink.out, start);
        WorkerMetrics::add(&metrics.sandbox_chunks_emitted, 1);
        if sink.flush().await.is_err() {
            return delivered(index, true);
        }
    }
    let start = sink.out.len();
    sandbox::write_finish_chunk(&mut sink.out, completion_id, model, created, cut_by_cap);
    if chat.include_usage_requested {
        sandbox::write_usage_chunk(&mut sink.out, completion_id, model, created, prompt_tokens, completion_tokens);
    }
    sandbox::write_done(&mut sink.out);
    response::frame_chunk_in_place(&mut sink.out, start);
    // The end of the stream is flushed by the connection loop after the caller has settled, so a
    // client that has read the whole answer always sees the charge already made.
    response::write_last_chunk(&mut sink.out);
    delivered(completion_tokens, false)
}

/// The standalone sandbox's request handler (one per worker).
struct SandboxHandler {
    settings: SandboxSettings,
    metrics: Arc<WorkerMetrics>,
    counter: std::cell::Cell<u64>,
    worker_index: usize,
}

impl Handler for SandboxHandler {
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
        let created_unix_s =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let reply = CompletionReply {
            request_id,
            model_id: chat.model,
            output_cap_tokens: chat.max_tokens.unwrap_or(self.settings.output_tokens),
            clamped_to: None,
            chat: &chat,
            body: request.body,
            rates: None,
            created_unix_s,
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
        let listeners = crate::runtime::bind_reuseport_group(listen, workers)?;
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
                    metrics: worker_metrics.clone(),
                    counter: Default::default(),
                    worker_index: index,
                });
                crate::runtime::run_on_runtime(&worker_metrics, &format!("sandbox worker {index}"), || {
                    crate::runtime::serve_listener(
                        listener,
                        handler.clone(),
                        worker_metrics.clone(),
                        ServerLimits::default(),
                        stop_receiver,
                        crate::runtime::Lifecycle {
                            running,
                            drain_deadline_ms: crate::limits::SHUTDOWN_DRAIN_DEADLINE_MS,
                        },
                        acceptor.clone(),
                    )
                });
            })?);
        }
        let started = std::time::Instant::now();
        while running.load(Ordering::Acquire) < workers && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(1));
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
