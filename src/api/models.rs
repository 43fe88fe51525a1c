//! `GET /v1/models` and `GET /v1/models/{id}`: the registry as the caller may see it.
//!
//! The bodies were rendered at start-up (`openai::models`); this phase list only authenticates,
//! refuses during maintenance and picks one. It never shows an upstream model name.

use monoio::io::AsyncWriteRent;

use crate::api::authenticate::authenticate;
use crate::api::maintenance::refuse_during_maintenance;
use crate::api::rescue::{Known, Rates, Refusal, rates_of, rescue};
use crate::api::trace::Trace;
use crate::errors::{ApiError, Detail, ErrorKind};
use crate::http::response::{self, ResponseContext};
use crate::http::server::{Request, ResponseSink};
use crate::worker::Worker;

/// Answers the list (`id` = `None`) or one entry.
pub async fn models<S: AsyncWriteRent>(
    worker: &Worker,
    id: Option<&str>,
    request: &Request<'_>,
    sink: &mut ResponseSink<S>,
    trace: &mut Trace,
) -> u16 {
    let request_id = *trace.request_id.insert(worker.next_request_id());
    let caller = match authenticate(worker, request.head.authorization).await {
        Ok(caller) => &*trace.caller.insert(caller),
        Err(error) => {
            return rescue(worker, sink, error.into(), Known { request_id: Some(&request_id), caller: None }).await;
        }
    };
    if let Err(refusal) = refuse_during_maintenance(worker) {
        return rescue(worker, sink, refusal, Known { request_id: Some(&request_id), caller: Some(caller) }).await;
    }
    let rates = rates_of(worker, caller).await;
    let registry = &worker.shared.registry;
    let body = match id {
        None => registry.list_json(),
        Some(id) => match registry.get(id) {
            Some((index, _)) => registry.model_json(index),
            None => {
                let error = ApiError {
                    kind: ErrorKind::ModelNotFoundOnRetrieve,
                    param: Some("model"),
                    detail: Detail::ModelNotFound { requested: id, suggestion: registry.closest(id) },
                };
                let refusal = Refusal::from(error).with_rates(Rates::from(rates));
                return rescue(worker, sink, refusal, Known { request_id: Some(&request_id), caller: Some(caller) })
                    .await;
            }
        },
    };
    let context =
        ResponseContext { request_id: Some(request_id.as_str()), rates: rates.as_ref(), keep_alive: sink.keep_alive };
    response::write_full(&mut sink.out, 200, "application/json", &[], &context, body);
    200
}
