//! `POST /v1/chat/completions`: the phases of one chat request, in order.
//!
//! authenticate -> maintenance -> parse -> route the model -> admit -> dispatch -> settle. Each
//! phase returns `Result<_, Refusal>`; the first refusal goes to `rescue`, the only writer of
//! client API errors. Once admitted, a request is settled exactly once, whatever the backend
//! did, before any refusal of the backend is written.

use monoio::io::AsyncWriteRent;

use crate::api::admit::admit;
use crate::api::authenticate::authenticate;
use crate::api::dispatch::dispatch;
use crate::api::maintenance::refuse_during_maintenance;
use crate::api::rescue::{Known, Refusal, rescue};
use crate::api::settle::settle;
use crate::api::trace::Trace;
use crate::errors::{ApiError, Detail, ErrorKind};
use crate::http::server::{Request, ResponseSink};
use crate::ids::RequestId;
use crate::openai::chat::{self, ChatRequest};
use crate::openai::models::ModelEntry;
use crate::worker::Worker;

/// Answers one chat request and returns the status sent.
pub async fn chat_completions<S: AsyncWriteRent>(
    worker: &Worker,
    request: &Request<'_>,
    sink: &mut ResponseSink<S>,
    trace: &mut Trace,
) -> u16 {
    let request_id = *trace.request_id.insert(worker.next_request_id());
    let mut upstream_message = String::new();
    // The refusal path's own text (a content part's param); empty, so unallocated, otherwise.
    let mut refused_param = String::new();
    let texts = RefusalTexts { upstream_message: &mut upstream_message, refused_param: &mut refused_param };
    match serve(worker, request, sink, &request_id, trace, texts).await {
        Ok(status) => status,
        Err(refusal) => {
            rescue(worker, sink, refusal, Known { request_id: Some(&request_id), caller: trace.caller.as_ref() }).await
        }
    }
}

/// Text a refusal may borrow that is only made on the refusal path.
pub(crate) struct RefusalTexts<'t> {
    /// An upstream's own message (dispatch).
    pub upstream_message: &'t mut String,
    /// A param rendered from a position, e.g. `messages[0].content[1]` (route).
    pub refused_param: &'t mut String,
}

async fn serve<'a, S: AsyncWriteRent>(
    worker: &'a Worker,
    request: &'a Request<'a>,
    sink: &mut ResponseSink<S>,
    request_id: &RequestId,
    trace: &mut Trace,
    texts: RefusalTexts<'a>,
) -> Result<u16, Refusal<'a>> {
    let caller = &*trace.caller.insert(authenticate(worker, request.head.authorization).await?);
    refuse_during_maintenance(worker)?;
    let chat = chat::parse_chat_request(request.body)?;
    let (model_index, model) = route_model(worker, &chat, request.body, texts.refused_param)?;
    let ticket = admit(worker, request_id, caller, &chat, request.body, model).await?;
    let answer = dispatch(worker, sink, &ticket, &chat, request.body).await;
    let charged = settle(worker, &ticket, answer.usage).await;
    worker.metrics.count_usage(model_index, &answer.usage.tokens, charged.0);
    answer.announce_charge(sink, chat.stream, charged);
    (trace.model_index, trace.tokens, trace.charged, trace.timing) =
        (Some(model_index), answer.usage.tokens, charged, answer.timing);
    answer.into_result(&ticket, texts.upstream_message)
}

/// The registry entry `chat` names, once its parameters suit that model. A refused content
/// part's param is rendered into `refused_param` (the only allocation, on the refusal path).
pub(crate) fn route_model<'a>(
    worker: &'a Worker,
    chat: &ChatRequest<'a>,
    body: &'a [u8],
    refused_param: &'a mut String,
) -> Result<(usize, &'a ModelEntry), Refusal<'a>> {
    let registry = &worker.shared.registry;
    let Some((model_index, model)) = registry.get(chat.model) else {
        let detail = Detail::ModelNotFound { requested: chat.model, suggestion: registry.closest(chat.model) };
        return Err(ApiError { kind: ErrorKind::ModelNotFound, param: Some("model"), detail }.into());
    };
    if let Some(param) = registry.unsupported_param(model_index, chat::top_level_keys(chat, body)) {
        let detail = Detail::UnsupportedParam { model: &model.id };
        return Err(ApiError { kind: ErrorKind::UnsupportedParameter, param: Some(param), detail }.into());
    }
    if let Some((media, at)) = chat::unsupported_media_part(chat, model.media_allowance()) {
        use std::fmt::Write;
        let _ = write!(refused_param, "{at}");
        let detail = Detail::UnsupportedMedia { model: &model.id, media: media.noun() };
        return Err(
            ApiError { kind: ErrorKind::UnsupportedParameter, param: Some(refused_param.as_str()), detail }.into()
        );
    }
    if let Some(max_tokens) = chat.max_tokens
        && max_tokens > model.max_output_tokens
    {
        return Err(
            ApiError::invalid("max_tokens", "must not exceed this model's output cap (see GET /v1/models)").into()
        );
    }
    Ok((model_index, model))
}
