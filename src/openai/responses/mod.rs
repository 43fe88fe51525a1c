//! Responses API request bodies (`POST /v1/responses`, SPEC §8.1): validation, the facts the
//! gateway routes on, and the translation to a Chat Completions body every backend understands.
//!
//! `parse_responses_request` walks the body once with the strict scanner of `chat::json_scan`
//! (nested values are re-read from their already checked bytes, a bounded number of times) and
//! returns spans and numbers borrowed from the body: it never allocates, never recurses without
//! bound and never panics. Keys are compared by their decoded text and a repeated top-level key
//! is refused, as in chat. What the gateway cannot honour because it stores nothing
//! (`previous_response_id`, `conversation`, `background: true`, hosted tools, stored prompts)
//! and keys it does not know are refused with `unsupported_parameter`. The child module
//! `translate` writes the equivalent chat body (a rewrite into a reused buffer, like
//! `chat::write_backend_body`); the child module `answer` turns chat answers (unary bodies and
//! SSE events) back into Responses objects and events. This module decides nothing about
//! prices, limits or which model exists.

pub mod answer;
#[cfg(test)]
mod tests;
pub mod translate;

use std::fmt;

use crate::errors::{ApiError, Detail, ErrorKind};
use crate::openai::chat::json_scan::{JsonFault, Scanner, Span, ValueKind, content_eq};

/// Depth of a top-level member's value in the body (the body itself is level 1).
const TOP_MEMBER_DEPTH: usize = 2;

/// What the gateway needs from a valid Responses request. Spans point into the body.
#[derive(Clone, Debug, Default)]
pub struct ResponsesRequest<'a> {
    /// The model id as written between its quotes.
    pub model: &'a str,
    pub stream: bool,
    /// The client's `max_output_tokens`, when given and not null.
    pub max_output_tokens: Option<u64>,
    /// The first `input_image` part, for a model without an image allowance.
    pub first_image: Option<PartAt>,
    /// Values as the client wrote them (quotes included), for the translation and the echo in
    /// the answer.
    pub input: Span,
    pub instructions: Option<Span>,
    pub temperature: Option<Span>,
    pub top_p: Option<Span>,
    pub tools: Option<Span>,
    pub tool_choice: Option<Span>,
    pub text: Option<Span>,
    pub reasoning: Option<Span>,
    pub metadata: Option<Span>,
    pub parallel_tool_calls: Option<Span>,
    pub user: Option<Span>,
}

/// Where a content part sits: `input[item].content[part]`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PartAt {
    pub item: u32,
    pub part: u32,
}

/// What a refusal names, rendered into its `param` only on the refusal path.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ParamAt<'a> {
    /// A top-level key, as the gateway spells it.
    Named(&'static str),
    /// A top-level key as the client wrote it (an unknown key).
    Written(&'a str),
    /// `tools[n]`.
    Tool(u32),
    /// `input[n]`.
    Item(u32),
    /// `input[n].<field>`.
    ItemField(u32, &'static str),
    /// `input[n].content[m]`.
    Part(PartAt),
}

impl fmt::Display for ParamAt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamAt::Named(name) => f.write_str(name),
            ParamAt::Written(name) => f.write_str(name),
            ParamAt::Tool(index) => write!(f, "tools[{index}]"),
            ParamAt::Item(index) => write!(f, "input[{index}]"),
            ParamAt::ItemField(index, field) => write!(f, "input[{index}].{field}"),
            ParamAt::Part(at) => write!(f, "input[{}].content[{}]", at.item, at.part),
        }
    }
}

/// Why a Responses request is refused before any admission.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Fault<'a> {
    Json(JsonFault),
    Missing(&'static str),
    Invalid(ParamAt<'a>, &'static str),
    /// `unsupported_parameter`; the sentence says why.
    Unsupported(ParamAt<'a>, &'static str),
}

impl<'a> Fault<'a> {
    /// The error to render; a param built from a position is written into `param_text`.
    pub fn into_error<'s>(self, param_text: &'s mut String) -> ApiError<'s>
    where
        'a: 's,
    {
        let (kind, at, detail) = match self {
            Fault::Json(fault) => return fault.into(),
            Fault::Missing(param) => return ApiError::missing(param),
            Fault::Invalid(at, reason) => (ErrorKind::InvalidParameter, at, Detail::InvalidParam { reason }),
            Fault::Unsupported(at, text) => (ErrorKind::UnsupportedParameter, at, Detail::Text(text)),
        };
        let param: &'s str = match at {
            ParamAt::Named(name) => name,
            ParamAt::Written(name) => name,
            other => {
                use std::fmt::Write;
                let _ = write!(param_text, "{other}");
                param_text.as_str()
            }
        };
        ApiError { kind, param: Some(param), detail }
    }
}

const STORES_NOTHING: &str = "This parameter needs responses stored by the server; the Fikra gateway stores none. Send the whole conversation in 'input'.";
const UNKNOWN_KEY: &str = "This parameter is not supported by the Fikra gateway's Responses API.";
const HOSTED_TOOL: &str = "Only function tools are supported; hosted tools (web_search, file_search, ...) are not.";

/// Top-level members the gateway knows, each a bit of a "seen" mask.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum TopKey {
    Model,
    Input,
    Instructions,
    MaxOutputTokens,
    Temperature,
    TopP,
    Stream,
    Tools,
    ToolChoice,
    Text,
    Reasoning,
    Metadata,
    ParallelToolCalls,
    User,
    PreviousResponseId,
    Conversation,
    Background,
    Prompt,
    /// Accepted and not sent on: `store` (always false upstream), `include`, `truncation`, ...
    Ignored,
}

const TOP_KEYS: [(&str, TopKey); 27] = [
    ("model", TopKey::Model),
    ("input", TopKey::Input),
    ("instructions", TopKey::Instructions),
    ("max_output_tokens", TopKey::MaxOutputTokens),
    ("temperature", TopKey::Temperature),
    ("top_p", TopKey::TopP),
    ("stream", TopKey::Stream),
    ("tools", TopKey::Tools),
    ("tool_choice", TopKey::ToolChoice),
    ("text", TopKey::Text),
    ("reasoning", TopKey::Reasoning),
    ("metadata", TopKey::Metadata),
    ("parallel_tool_calls", TopKey::ParallelToolCalls),
    ("user", TopKey::User),
    ("previous_response_id", TopKey::PreviousResponseId),
    ("conversation", TopKey::Conversation),
    ("background", TopKey::Background),
    ("prompt", TopKey::Prompt),
    ("store", TopKey::Ignored),
    ("include", TopKey::Ignored),
    ("truncation", TopKey::Ignored),
    ("service_tier", TopKey::Ignored),
    ("prompt_cache_key", TopKey::Ignored),
    ("safety_identifier", TopKey::Ignored),
    ("stream_options", TopKey::Ignored),
    ("top_logprobs", TopKey::Ignored),
    ("max_tool_calls", TopKey::Ignored),
];

/// The kind of a JSON value already checked by the scanner, from its first byte.
pub(crate) fn kind_of(value: &[u8]) -> ValueKind {
    match value.first() {
        Some(b'{') => ValueKind::Object,
        Some(b'[') => ValueKind::Array,
        Some(b'"') => ValueKind::String,
        Some(b't') => ValueKind::True,
        Some(b'f') => ValueKind::False,
        Some(b'n') => ValueKind::Null,
        _ => ValueKind::Number,
    }
}

/// Visits `(key, value)` of each member of an object whose bytes the scanner already checked;
/// keys are raw text between their quotes, values whole (quotes included).
pub(crate) fn each_member<'j>(object: &'j [u8], mut visit: impl FnMut(&'j [u8], &'j [u8])) {
    let mut scanner = Scanner::new(object);
    if scanner.enter(1).is_err() {
        return;
    }
    let mut first = true;
    while let Ok(true) = scanner.next_item(b'}', &mut first) {
        let Ok(key) = scanner.key() else { return };
        let Ok((_, value)) = scanner.value(2) else { return };
        visit(key.inner().slice(object), value.slice(object));
    }
}

/// Visits each element of a checked array with its index.
pub(crate) fn each_element<'j>(array: &'j [u8], mut visit: impl FnMut(u32, &'j [u8])) {
    let mut scanner = Scanner::new(array);
    if scanner.enter(1).is_err() {
        return;
    }
    let mut first = true;
    let mut index = 0u32;
    while let Ok(true) = scanner.next_item(b']', &mut first) {
        let Ok((_, value)) = scanner.value(2) else { return };
        visit(index, value.slice(array));
        index = index.saturating_add(1);
    }
}

/// The value of member `name` of a checked object (the last, if repeated inside nested values).
pub(crate) fn member<'j>(object: &'j [u8], name: &str) -> Option<&'j [u8]> {
    let mut found = None;
    each_member(object, |key, value| {
        if found.is_none() && content_eq(key, name.as_bytes()) {
            found = Some(value);
        }
    });
    found
}

/// Whether `value` is a JSON string that decodes to `text`.
pub(crate) fn string_is(value: Option<&[u8]>, text: &str) -> bool {
    value.is_some_and(|v| {
        kind_of(v) == ValueKind::String && content_eq(Span::new(0, v.len()).inner().slice(v), text.as_bytes())
    })
}

/// Validates `body` as a Responses request. JSON faults win; then the first parameter fault in
/// body order; then a missing `model`, then a missing `input`.
pub fn parse_responses_request(body: &[u8]) -> Result<ResponsesRequest<'_>, Fault<'_>> {
    if u32::try_from(body.len()).is_err() {
        return Err(Fault::Json(JsonFault::TooLarge));
    }
    if std::str::from_utf8(body).is_err() {
        return Err(Fault::Json(JsonFault::NotUtf8));
    }
    let mut scanner = Scanner::new(body);
    if scanner.peek_kind().map_err(Fault::Json)? != ValueKind::Object {
        return Err(Fault::Json(JsonFault::NotAnObject));
    }
    scanner.enter(1).map_err(Fault::Json)?;
    let mut request = ResponsesRequest::default();
    let mut first_fault: Option<Fault<'_>> = None;
    let mut seen_mask = 0u32;
    let (mut saw_model, mut saw_input) = (false, false);
    let mut first = true;
    while scanner.next_item(b'}', &mut first).map_err(Fault::Json)? {
        let key = scanner.key().map_err(Fault::Json)?.inner();
        let (kind, span) = scanner.value(TOP_MEMBER_DEPTH).map_err(Fault::Json)?;
        let key_raw = key.slice(body);
        let key_text = std::str::from_utf8(key_raw).unwrap_or("");
        let top_key = TOP_KEYS.iter().position(|(name, _)| content_eq(key_raw, name.as_bytes()));
        let fault = match top_key {
            None => Some(Fault::Unsupported(ParamAt::Written(key_text), UNKNOWN_KEY)),
            Some(index) => {
                let bit = 1u32 << index;
                let repeated = seen_mask & bit != 0;
                seen_mask |= bit;
                let top_key = TOP_KEYS[index].1;
                saw_model |= top_key == TopKey::Model;
                saw_input |= top_key == TopKey::Input;
                if repeated {
                    Some(Fault::Invalid(ParamAt::Written(key_text), "must not appear more than once"))
                } else {
                    check_member(top_key, kind, span, body, &mut request)
                }
            }
        };
        if first_fault.is_none() {
            first_fault = fault;
        }
    }
    scanner.finish().map_err(Fault::Json)?;
    if let Some(fault) = first_fault {
        return Err(fault);
    }
    if !saw_model {
        return Err(Fault::Missing("model"));
    }
    if !saw_input {
        return Err(Fault::Missing("input"));
    }
    Ok(request)
}

/// Checks one known top-level member and records it in `request`.
fn check_member<'a>(
    key: TopKey,
    kind: ValueKind,
    span: Span,
    body: &'a [u8],
    request: &mut ResponsesRequest<'a>,
) -> Option<Fault<'a>> {
    let value = span.slice(body);
    let present = kind != ValueKind::Null;
    let invalid = |name, reason| Some(Fault::Invalid(ParamAt::Named(name), reason));
    match key {
        TopKey::Model => {
            if kind != ValueKind::String {
                return invalid("model", "must be a string");
            }
            request.model = std::str::from_utf8(span.inner().slice(body)).unwrap_or("");
        }
        TopKey::Input => {
            request.input = span;
            return check_input(kind, value, request);
        }
        TopKey::Instructions => {
            if !matches!(kind, ValueKind::String | ValueKind::Null) {
                return invalid("instructions", "must be a string");
            }
            request.instructions = present.then_some(span);
        }
        TopKey::MaxOutputTokens => {
            if present {
                let cap = std::str::from_utf8(value).ok().and_then(|text| text.parse::<u64>().ok()).filter(|&n| n > 0);
                let Some(cap) = cap.filter(|_| kind == ValueKind::Number) else {
                    return invalid("max_output_tokens", "must be a positive integer");
                };
                request.max_output_tokens = Some(cap);
            }
        }
        TopKey::Temperature | TopKey::TopP => {
            let (name, max) = if key == TopKey::TopP { ("top_p", 1.0) } else { ("temperature", 2.0) };
            let in_range = !present
                || (kind == ValueKind::Number
                    && std::str::from_utf8(value)
                        .ok()
                        .and_then(|text| text.parse::<f64>().ok())
                        .is_some_and(|number| number.is_finite() && (0.0..=max).contains(&number)));
            if !in_range {
                let reason =
                    if key == TopKey::TopP { "must be a number from 0 to 1" } else { "must be a number from 0 to 2" };
                return invalid(name, reason);
            }
            let slot = if key == TopKey::TopP { &mut request.top_p } else { &mut request.temperature };
            *slot = present.then_some(span);
        }
        TopKey::Stream => match kind {
            ValueKind::True => request.stream = true,
            ValueKind::False | ValueKind::Null => request.stream = false,
            _ => return invalid("stream", "must be a boolean"),
        },
        TopKey::Tools => {
            if present {
                if kind != ValueKind::Array {
                    return invalid("tools", "must be an array of function tools");
                }
                request.tools = Some(span);
                return check_tools(value);
            }
        }
        TopKey::ToolChoice => {
            if kind == ValueKind::Object && !string_is(member(value, "type"), "function") {
                return Some(Fault::Unsupported(ParamAt::Named("tool_choice"), HOSTED_TOOL));
            }
            if kind == ValueKind::Object && member(value, "name").is_none_or(|name| kind_of(name) != ValueKind::String)
            {
                return invalid("tool_choice", "a function tool choice must name the function");
            }
            if !matches!(kind, ValueKind::Object | ValueKind::String | ValueKind::Null) {
                return invalid("tool_choice", "must be \"auto\", \"none\", \"required\" or a function choice");
            }
            request.tool_choice = present.then_some(span);
        }
        TopKey::Text => {
            if !matches!(kind, ValueKind::Object | ValueKind::Null) {
                return invalid("text", "must be an object");
            }
            request.text = present.then_some(span);
        }
        TopKey::Reasoning => {
            if !matches!(kind, ValueKind::Object | ValueKind::Null) {
                return invalid("reasoning", "must be an object");
            }
            request.reasoning = present.then_some(span);
        }
        TopKey::Metadata => {
            if !matches!(kind, ValueKind::Object | ValueKind::Null) {
                return invalid("metadata", "must be an object");
            }
            request.metadata = present.then_some(span);
        }
        TopKey::ParallelToolCalls => {
            if !matches!(kind, ValueKind::True | ValueKind::False | ValueKind::Null) {
                return invalid("parallel_tool_calls", "must be a boolean");
            }
            request.parallel_tool_calls = present.then_some(span);
        }
        TopKey::User => {
            if !matches!(kind, ValueKind::String | ValueKind::Null) {
                return invalid("user", "must be a string");
            }
            request.user = present.then_some(span);
        }
        TopKey::PreviousResponseId | TopKey::Conversation | TopKey::Prompt => {
            if present {
                let name = match key {
                    TopKey::PreviousResponseId => "previous_response_id",
                    TopKey::Conversation => "conversation",
                    _ => "prompt",
                };
                return Some(Fault::Unsupported(ParamAt::Named(name), STORES_NOTHING));
            }
        }
        TopKey::Background => {
            if kind == ValueKind::True {
                return Some(Fault::Unsupported(ParamAt::Named("background"), STORES_NOTHING));
            }
            if !matches!(kind, ValueKind::False | ValueKind::Null) {
                return invalid("background", "must be a boolean");
            }
        }
        TopKey::Ignored => {}
    }
    None
}

/// Every tool must be a function tool with a string name.
fn check_tools(tools: &[u8]) -> Option<Fault<'_>> {
    let mut fault = None;
    each_element(tools, |index, tool| {
        if fault.is_some() {
            return;
        }
        if kind_of(tool) != ValueKind::Object {
            fault = Some(Fault::Invalid(ParamAt::Tool(index), "must be a function tool object"));
        } else if !string_is(member(tool, "type"), "function") {
            fault = Some(Fault::Unsupported(ParamAt::Tool(index), HOSTED_TOOL));
        } else if member(tool, "name").is_none_or(|name| kind_of(name) != ValueKind::String) {
            fault = Some(Fault::Invalid(ParamAt::Tool(index), "a function tool needs a string 'name'"));
        }
    });
    fault
}

/// `input`: a non-empty string or a non-empty array of message and function-call items.
fn check_input<'a>(kind: ValueKind, input: &'a [u8], request: &mut ResponsesRequest<'a>) -> Option<Fault<'a>> {
    match kind {
        ValueKind::String => return None,
        ValueKind::Array => {}
        _ => return Some(Fault::Invalid(ParamAt::Named("input"), "must be a string or an array of input items")),
    }
    let mut fault = None;
    let mut items = 0u32;
    each_element(input, |index, item| {
        items += 1;
        if fault.is_none() {
            fault = check_item(index, item, request);
        }
    });
    if fault.is_none() && items == 0 {
        return Some(Fault::Invalid(ParamAt::Named("input"), "must not be empty"));
    }
    fault
}

fn check_item<'a>(index: u32, item: &'a [u8], request: &mut ResponsesRequest<'a>) -> Option<Fault<'a>> {
    if kind_of(item) != ValueKind::Object {
        return Some(Fault::Invalid(ParamAt::Item(index), "must be an input item object"));
    }
    let item_type = member(item, "type");
    let string_field = |field: &'static str| match member(item, field) {
        Some(value) if kind_of(value) == ValueKind::String => None,
        _ => Some(Fault::Invalid(ParamAt::ItemField(index, field), "must be a string")),
    };
    if string_is(item_type, "function_call") {
        return string_field("call_id").or_else(|| string_field("name")).or_else(|| string_field("arguments"));
    }
    if string_is(item_type, "function_call_output") {
        return string_field("call_id").or_else(|| string_field("output"));
    }
    if item_type.is_some() && !string_is(item_type, "message") {
        return Some(Fault::Unsupported(
            ParamAt::Item(index),
            "Only message, function_call and function_call_output input items are supported.",
        ));
    }
    let role = member(item, "role");
    if !["user", "assistant", "system", "developer"].iter().any(|name| string_is(role, name)) {
        return Some(Fault::Invalid(
            ParamAt::ItemField(index, "role"),
            "must be \"user\", \"assistant\", \"system\" or \"developer\"",
        ));
    }
    let content = member(item, "content").unwrap_or(b"null");
    match kind_of(content) {
        ValueKind::String => None,
        ValueKind::Array => check_parts(index, content, request),
        _ => {
            Some(Fault::Invalid(ParamAt::ItemField(index, "content"), "must be a string or an array of content parts"))
        }
    }
}

fn check_parts<'a>(item: u32, parts: &'a [u8], request: &mut ResponsesRequest<'a>) -> Option<Fault<'a>> {
    let mut fault = None;
    each_element(parts, |part, value| {
        if fault.is_some() {
            return;
        }
        let at = ParamAt::Part(PartAt { item, part });
        let part_type = (kind_of(value) == ValueKind::Object).then(|| member(value, "type")).flatten();
        let text = || member(value, "text").is_some_and(|text| kind_of(text) == ValueKind::String);
        if string_is(part_type, "input_text") || string_is(part_type, "output_text") {
            if !text() {
                fault = Some(Fault::Invalid(at, "a text part needs a string 'text'"));
            }
        } else if string_is(part_type, "input_image") {
            if member(value, "image_url").is_none_or(|url| kind_of(url) != ValueKind::String) {
                fault = Some(Fault::Unsupported(
                    at,
                    "An image part needs 'image_url' (a URL or data URL); stored files are not supported.",
                ));
            } else if request.first_image.is_none() {
                request.first_image = Some(PartAt { item, part });
            }
        } else {
            fault = Some(Fault::Unsupported(
                at,
                "Only input_text, output_text and input_image content parts are supported.",
            ));
        }
    });
    fault
}
