//! The client API (`/v1/...`) of one worker: routes, and the phases of each request.
//!
//! `ApiHandler` is what `http::server` calls for every request on a client connection. It
//! routes by path and method; each route is a short list of phases (`chat`, `responses`,
//! `models`, `account`), and every refusal on the way becomes bytes through `rescue` alone. It owns no
//! state of its own: what a core owns is the `Worker`'s.

// A `Refusal` is a few hundred bytes on the stack; boxing it would allocate on every refusal,
// which the refusal paths must not (tests/hot_path_allocations.rs).
#![allow(clippy::result_large_err)]

pub mod account;
pub mod admit;
pub mod authenticate;
pub mod chat;
pub mod dispatch;
pub mod maintenance;
pub mod models;
pub mod rescue;
pub mod responses;
pub mod settle;
pub mod trace;

use monoio::io::AsyncWriteRent;

use crate::api::account::AccountRoute;
use crate::api::authenticate::authenticate;
use crate::api::rescue::{Known, Refusal, rescue};
use crate::api::trace::{Started, Trace};
use crate::errors::{ApiError, Detail, ErrorKind};
use crate::http::cors::Cors;
use crate::http::request::Method;
use crate::http::response;
use crate::http::server::{Handler, OutBufferPool, Request, ResponseSink};
use crate::metrics::{Route, WorkerMetrics};
use crate::worker::Worker;

const MODEL_PATH_PREFIX: &str = "/v1/models/";

/// The client API served by one worker.
pub struct ApiHandler {
    pub worker: Worker,
}

impl Handler for ApiHandler {
    async fn handle<S: AsyncWriteRent>(&self, request: &Request<'_>, sink: &mut ResponseSink<S>) {
        let worker = &self.worker;
        let started = Started { at_us: crate::clock::monotonic_us(), unix_ms: worker.shared.clock.now_ms() };
        let mut trace = Trace::default();
        WorkerMetrics::gauge_up(&worker.metrics.requests_in_flight);
        if worker.is_draining() {
            sink.keep_alive = false;
        }
        // An allowed browser origin can read every answer, refusals included (SPEC §8.3).
        if let Some(lines) = worker.shared.cors.answer_lines(request.head.origin) {
            sink.add_head_lines(lines);
        }
        let (route, status) = self.route(request, sink, &mut trace).await;
        worker.metrics.count_request(route, status);
        trace::observe(worker, request, route, status, sink.error_code, started, &trace);
        WorkerMetrics::gauge_down(&worker.metrics.requests_in_flight);
    }

    fn out_buffers(&self) -> &OutBufferPool {
        &self.worker.out_buffers
    }

    fn write_framing_refusal(&self, out: &mut Vec<u8>, scratch: &mut Vec<u8>, error: &ApiError<'_>) {
        rescue::write_framing_refusal(&self.worker, out, scratch, error);
    }
}

impl ApiHandler {
    async fn route<S: AsyncWriteRent>(
        &self,
        request: &Request<'_>,
        sink: &mut ResponseSink<S>,
        trace: &mut Trace,
    ) -> (Route, u16) {
        let worker = &self.worker;
        let head = &request.head;
        let path = head.path;
        let (route, allow) = if path == "/v1/chat/completions" {
            (Route::ChatCompletions, "POST")
        } else if path == "/v1/responses" {
            (Route::Responses, "POST")
        } else if path == "/v1/account" {
            (Route::Account, "GET, HEAD")
        } else if path == "/v1/usage" {
            (Route::Usage, "GET, HEAD")
        } else if path == "/v1/models" {
            (Route::ListModels, "GET, HEAD")
        } else if path.len() > MODEL_PATH_PREFIX.len() && path.starts_with(MODEL_PATH_PREFIX) {
            (Route::RetrieveModel, "GET, HEAD")
        } else {
            let detail = Detail::UnknownEndpoint { method: head.method_str, path };
            let error = ApiError { kind: ErrorKind::UnknownEndpoint, param: None, detail };
            return (Route::Unknown, refuse_route(worker, request, sink, error.into(), trace).await);
        };
        if head.method == Method::Options
            && head.cors_request_method.is_some()
            && worker.shared.cors.answer_lines(head.origin).is_some()
        {
            return (route, answer_preflight(sink, allow, head.cors_request_headers));
        }
        let method_ok = match route {
            Route::ChatCompletions | Route::Responses => head.method == Method::Post,
            // HEAD is GET without the body (the sink drops it).
            _ => matches!(head.method, Method::Get | Method::Head),
        };
        if !method_ok {
            let detail = Detail::MethodNotAllowed { method: head.method_str, path, allow };
            let refusal =
                Refusal::from(ApiError { kind: ErrorKind::MethodNotAllowed, param: None, detail }).allow(allow);
            return (route, refuse_route(worker, request, sink, refusal, trace).await);
        }
        let status = match route {
            Route::ChatCompletions => chat::chat_completions(worker, request, sink, trace).await,
            Route::Responses => responses::responses(worker, request, sink, trace).await,
            Route::ListModels => models::models(worker, None, request, sink, trace).await,
            Route::Account => account::account(worker, AccountRoute::Account, request, sink, trace).await,
            Route::Usage => account::account(worker, AccountRoute::Usage, request, sink, trace).await,
            _ => models::models(worker, Some(&path[MODEL_PATH_PREFIX.len()..]), request, sink, trace).await,
        };
        (route, status)
    }
}

/// A CORS preflight from an allowed origin (its `access-control-allow-origin` lines are the
/// sink's already): 204 with the route's methods and the headers it may send.
fn answer_preflight<S: AsyncWriteRent>(
    sink: &mut ResponseSink<S>,
    allow: &str,
    requested_headers: Option<&[u8]>,
) -> u16 {
    let out = &mut sink.out;
    response::write_status_line(out, 204);
    let context = response::ResponseContext { request_id: None, rates: None, keep_alive: sink.keep_alive };
    response::write_common_headers(out, &context);
    Cors::write_preflight_lines(out, allow, requested_headers);
    out.extend_from_slice(b"\r\n");
    204
}

/// Answers a request no route takes (404, 405). A key that is recognised still gets its request
/// id and rate headers (SPEC §8.3); an absent or unknown key gets the routing error alone, never
/// a 401 in its place.
async fn refuse_route<S: AsyncWriteRent>(
    worker: &Worker,
    request: &Request<'_>,
    sink: &mut ResponseSink<S>,
    refusal: Refusal<'_>,
    trace: &mut Trace,
) -> u16 {
    trace.caller = match request.head.authorization {
        Some(_) => authenticate(worker, request.head.authorization).await.ok(),
        None => None,
    };
    trace.request_id = trace.caller.as_ref().map(|_| worker.next_request_id());
    let known = Known { request_id: trace.request_id.as_ref(), caller: trace.caller.as_ref() };
    rescue(worker, sink, refusal, known).await
}
