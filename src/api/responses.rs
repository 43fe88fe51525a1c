//! `POST /v1/responses`: the phases of one Responses request, by translation to chat (or, for an
//! upstream with `responses = true`, natively: `backend::upstream::responses_native`).
//!
//! authenticate -> maintenance -> parse (`openai::responses`) -> translate to a chat body (into
//! a buffer of the worker) -> route the model -> admit -> dispatch (the backend's chat answer
//! translated back by `openai::responses::answer`) -> settle. The chat phases are chat's own,
//! run on the translated body, so holds, clamping, limits, headers, errors and billing are
//! exactly those of chat completions (SPEC §8.1). Every refusal goes to `rescue`.

use monoio::io::AsyncWriteRent;

use crate::api::admit::admit;
use crate::api::authenticate::authenticate;
use crate::api::chat::{RefusalTexts, route_model};
use crate::api::dispatch::dispatch_as;
use crate::api::maintenance::refuse_during_maintenance;
use crate::api::rescue::{Known, Refusal, rescue};
use crate::api::settle::settle;
use crate::api::trace::Trace;
use crate::backend::upstream::responses_native::native_input_bytes;
use crate::errors::{ApiError, Detail, ErrorKind};
use crate::http::server::{Request, ResponseSink};
use crate::ids::RequestId;
use crate::openai::chat;
use crate::openai::models::Backend;
use crate::openai::responses::answer::{AnswerFormat, ResponseShape};
use crate::openai::responses::translate::{STREAM_MEMBER_SEPARATOR_BYTES, write_chat_body};
use crate::openai::responses::{ParamAt, parse_responses_request};
use crate::worker::Worker;

/// Answers one Responses request and returns the status sent.
pub async fn responses<S: AsyncWriteRent>(
    worker: &Worker,
    request: &Request<'_>,
    sink: &mut ResponseSink<S>,
    trace: &mut Trace,
) -> u16 {
    let request_id = *trace.request_id.insert(worker.next_request_id());
    // Texts only the refusal path writes (empty, so unallocated, otherwise).
    // A parse refusal's param naming a position (`input[2].content[0]`) goes in `fault_param`.
    let (mut upstream_message, mut fault_param, mut route_param) = (String::new(), String::new(), String::new());
    let mut translated = worker.upstream_request_buffers.borrow_mut().pop().unwrap_or_default();
    let texts = RefusalTexts { upstream_message: &mut upstream_message, refused_param: &mut route_param };
    let served = serve(worker, request, &mut translated, sink, &request_id, trace, &mut fault_param, texts);
    let status = match served.await {
        Ok(status) => status,
        Err(refusal) => {
            rescue(worker, sink, refusal, Known { request_id: Some(&request_id), caller: trace.caller.as_ref() }).await
        }
    };
    if translated.capacity() <= crate::limits::UPSTREAM_KEPT_BUFFER_MAX_BYTES {
        translated.clear();
        worker.upstream_request_buffers.borrow_mut().push(translated);
    }
    status
}

#[allow(clippy::too_many_arguments)]
async fn serve<'a, S: AsyncWriteRent>(
    worker: &'a Worker,
    request: &'a Request<'a>,
    translated: &'a mut Vec<u8>,
    sink: &mut ResponseSink<S>,
    request_id: &RequestId,
    trace: &mut Trace,
    fault_param: &'a mut String,
    texts: RefusalTexts<'a>,
) -> Result<u16, Refusal<'a>> {
    let caller = &*trace.caller.insert(authenticate(worker, request.head.authorization).await?);
    refuse_during_maintenance(worker)?;
    let parsed = match parse_responses_request(request.body) {
        Ok(parsed) => parsed,
        Err(fault) => return Err(fault.into_error(fault_param).into()),
    };
    write_chat_body(request.body, &parsed, translated);
    let translated: &'a [u8] = translated;
    // Whatever the parser accepted translates to a valid chat request; this is a safety net.
    let Ok(mut chat) = chat::parse_chat_request(translated) else {
        return Err(ApiError::invalid("input", "cannot be expressed as a conversation for this model").into());
    };
    let registry = &worker.shared.registry;
    if let Some((_, model)) = registry.get(chat.model) {
        if let Some(at) = parsed.first_image
            && model.media_allowance().image_tokens.is_none()
        {
            use std::fmt::Write;
            let _ = write!(fault_param, "{}", ParamAt::Part(at));
            let detail = Detail::UnsupportedMedia { model: &model.id, media: "image" };
            let param = Some(fault_param.as_str());
            return Err(ApiError { kind: ErrorKind::UnsupportedParameter, param, detail }.into());
        }
        if parsed.max_output_tokens.is_some_and(|cap| cap > model.max_output_tokens) {
            let reason = "must not exceed this model's output cap (see GET /v1/models)";
            return Err(ApiError::invalid("max_output_tokens", reason).into());
        }
    }
    // The stream flag is the gateway's own parameter, not input (`STREAM_MEMBER_SEPARATOR_BYTES`).
    if chat.stream {
        chat.input_bytes = chat.input_bytes.saturating_sub(STREAM_MEMBER_SEPARATOR_BYTES);
    }
    debug_assert!(chat.content_bytes <= chat.input_bytes, "the message texts are input");
    let (model_index, model) = route_model(worker, &chat, translated, texts.refused_param)?;
    // A native upstream gets the client's own body (`responses_native`): the hold counts those
    // bytes, not the translation's.
    if let Backend::Upstream(name) = &model.backend
        && worker.shared.upstreams.serves_responses(name)
    {
        chat.input_bytes = chat.input_bytes.max(native_input_bytes(request.body, &parsed));
    }
    let ticket = admit(worker, request_id, caller, &chat, translated, model).await?;
    let shape = ResponseShape {
        request_id: request_id.as_str(),
        model_id: &model.id,
        created_unix_s: worker.shared.clock.now_ms() / 1000,
        body: request.body,
        request: &parsed,
        buffers: &worker.upstream_request_buffers,
    };
    let mut answer = dispatch_as(worker, sink, &ticket, &chat, translated, AnswerFormat::Responses(&shape)).await;
    // A context-length refusal names what this client sent: `input`, not the chat `messages`.
    if let Err(refused) = &mut answer.sent
        && refused.param == Some("messages")
    {
        refused.param = Some("input");
    }
    let charged = settle(worker, &ticket, answer.usage).await;
    worker.metrics.count_usage(model_index, &answer.usage.tokens, charged.0);
    answer.announce_charge(sink, chat.stream, charged);
    (trace.model_index, trace.tokens, trace.charged, trace.timing) =
        (Some(model_index), answer.usage.tokens, charged, answer.timing);
    answer.into_result(&ticket, texts.upstream_message)
}
