//! Chat-completion request bodies: validation, the facts the gateway prices and routes on, and
//! the rewrite sent to a backend.
//!
//! `parse_chat_request` walks the body once with the strict scanner of `json_scan` (a child
//! module), checks it against SPEC §1, measures what the upstream may bill for its input (SPEC
//! §9: every byte but the gateway's own scalar parameters, and the media parts, which the child
//! module `input_bound` prices at the model's allowance) and returns spans and numbers borrowed
//! from the body: it never allocates, never recurses without bound and never panics. Every key
//! is compared by its decoded text, so `"m\u006fdel"` is the model and cannot smuggle a second
//! value past the checks; a repeated top-level key is refused for the same reason (the upstream
//! might keep the other one). `write_backend_body` copies the body, replacing only the model,
//! the output cap and (for streams) `stream_options.include_usage`, never re-serializing the
//! rest. This module decides nothing about prices, limits or which model exists; that is the
//! registry's and the pipeline's job.

use crate::errors::{ApiError, Detail, ErrorKind};
use crate::limits::{MAX_MESSAGES, MAX_TOP_LEVEL_KEYS};

pub mod input_bound;
pub mod json_scan;

use self::json_scan::{JsonFault, Scanner, ValueKind, content_eq, content_hash, contents_eq};

pub use self::input_bound::{Media, MediaAllowance, MediaParts, PartPosition};

/// The input upper bound of `request` in tokens (`input_bound::upper_bound_tokens`).
pub fn input_tokens_upper_bound(request: &ChatRequest<'_>, allowance: MediaAllowance) -> u64 {
    input_bound::upper_bound_tokens(request.input_bytes, request.message_count as u64, &request.media, allowance)
}

/// The first media part of `request` the model has no allowance for
/// (`input_bound::unsupported_media_part`).
pub fn unsupported_media_part(request: &ChatRequest<'_>, allowance: MediaAllowance) -> Option<(Media, PartPosition)> {
    input_bound::unsupported_media_part(&request.media, allowance)
}
pub use self::json_scan::{Span, object_members};

/// What the gateway needs from a valid chat request. Every borrowed part points into the body.
#[derive(Clone, Debug)]
pub struct ChatRequest<'a> {
    /// The model id as written between its quotes (escapes left as written, so an escaped id
    /// simply matches no registry entry).
    pub model: &'a str,
    /// The model value including its quotes.
    pub model_value_span: Span,
    /// `stream` (false when absent or null).
    pub stream: bool,
    /// The client's output cap: `max_tokens` or `max_completion_tokens`, the smaller if both.
    pub max_tokens: Option<u64>,
    pub message_count: usize,
    /// The message text in bytes, for the sandbox's own prompt count: over every message, the
    /// raw length of every member's value except `role` (content, name, tool_calls,
    /// tool_call_id, and anything else). A string counts its bytes between the quotes (never
    /// fewer than it decodes to), null counts 0, arrays and objects count whole, except the
    /// payload of a media part (see `media`), which is not text. Never more than `input_bytes`.
    pub content_bytes: u64,
    /// The bytes the input bound counts (SPEC §9): the whole body, less the members that are
    /// the gateway's own scalar parameters (`model`, `stream`, `stream_options`, `temperature`,
    /// `top_p`, `max_tokens`, `max_completion_tokens`, `n`: key to value) and less the payload
    /// of each media part (its `image_url` or `input_audio` value), which the model's allowance
    /// counts instead. Every other byte counts, unknown keys and JSON punctuation included.
    pub input_bytes: u64,
    /// The image and audio parts of message contents.
    pub media: MediaParts,
    /// The client's own `stream_options.include_usage` was true.
    pub include_usage_requested: bool,
    /// The content of the last `user` message: a string's bytes between the quotes, or a
    /// content-part array whole. Empty if no user message has content.
    pub last_user_content: Span,
    /// Offset just past the body's opening `{`, where the rewrite inserts members.
    pub members_start: u32,
    /// Value spans of `max_tokens` and `max_completion_tokens` where present (null included:
    /// the rewrite must replace a null cap too).
    pub max_tokens_value_spans: [Option<Span>; 2],
    /// `stream_options` as the client sent it, where present.
    pub stream_options: Option<StreamOptionsLayout>,
    top_level_keys: [Span; MAX_TOP_LEVEL_KEYS],
    top_level_key_count: usize,
}

/// Where the client's `stream_options` sits, for the rewrite.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct StreamOptionsLayout {
    /// The whole member, key to value.
    pub member: Span,
    pub value: Span,
    /// The value is an object with at least one member (else it is `{}` or null).
    pub has_members: bool,
    /// Offset just past the value's `{` (meaningful when `has_members`).
    pub members_start: u32,
    /// The value of the client's `include_usage` member, where present.
    pub include_usage_value: Option<Span>,
}

impl ChatRequest<'_> {
    /// Spans of the top-level keys' raw contents (between the quotes), in body order.
    pub fn top_level_key_spans(&self) -> &[Span] {
        &self.top_level_keys[..self.top_level_key_count]
    }
}

/// The names of the request's top-level members in body order, as written between the quotes
/// (compare them with `json_scan::content_eq` to see through escapes).
pub fn top_level_keys<'a>(request: &ChatRequest<'a>, body: &'a [u8]) -> impl Iterator<Item = &'a str> {
    request.top_level_key_spans().iter().map(move |span| std::str::from_utf8(span.slice(body)).unwrap_or(""))
}

impl From<JsonFault> for ApiError<'static> {
    fn from(fault: JsonFault) -> ApiError<'static> {
        ApiError::with_text(ErrorKind::InvalidJson, fault.message())
    }
}

/// Validates `body` as a chat-completion request and extracts its facts. JSON faults win over
/// parameter errors; among parameter errors the first in body order wins, then a missing
/// `model`, then a missing `messages`.
pub fn parse_chat_request(body: &[u8]) -> Result<ChatRequest<'_>, ApiError<'_>> {
    if u32::try_from(body.len()).is_err() {
        return Err(JsonFault::TooLarge.into());
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return Err(JsonFault::NotUtf8.into());
    };
    let mut walk =
        Walk { body, text, scanner: Scanner::new(body), first_error: None, saw_model: false, saw_messages: false };
    let request = walk.request()?;
    if let Some(error) = walk.first_error {
        return Err(error);
    }
    if !walk.saw_model {
        return Err(ApiError::missing("model"));
    }
    if !walk.saw_messages {
        return Err(ApiError::missing("messages"));
    }
    Ok(request)
}

/// Top-level members the gateway reads; everything else passes through unread (and counts in
/// the input bound, whatever it is: `tools`, `response_format`, `prediction`, `documents`, ...).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum TopKey {
    Model,
    Messages,
    Stream,
    StreamOptions,
    Temperature,
    TopP,
    MaxTokens,
    MaxCompletionTokens,
    N,
}

impl TopKey {
    /// The gateway's own scalar parameters: validated here, never part of what the upstream
    /// renders into the prompt, so their bytes are left out of the input bound. (Every one of
    /// them is refused unless it is a short scalar, or `stream_options`, which only configures
    /// the stream.)
    fn is_gateway_parameter(self) -> bool {
        self != TopKey::Messages
    }
}

const TOP_KEYS: [(&str, TopKey); 9] = [
    ("model", TopKey::Model),
    ("messages", TopKey::Messages),
    ("stream", TopKey::Stream),
    ("stream_options", TopKey::StreamOptions),
    ("temperature", TopKey::Temperature),
    ("top_p", TopKey::TopP),
    ("max_tokens", TopKey::MaxTokens),
    ("max_completion_tokens", TopKey::MaxCompletionTokens),
    ("n", TopKey::N),
];

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Function,
    /// Present but not a string naming one of the above.
    Invalid,
}

const ROLES: [(&str, Role); 6] = [
    ("system", Role::System),
    ("developer", Role::Developer),
    ("user", Role::User),
    ("assistant", Role::Assistant),
    ("tool", Role::Tool),
    ("function", Role::Function),
];

/// Message members whose repetition is refused (each changes what is billed or sent).
#[derive(Copy, Clone)]
enum MessageKey {
    Role = 1,
    Content = 2,
    ToolCalls = 4,
    FunctionCall = 8,
}

const MESSAGE_KEYS: [(&str, MessageKey); 4] = [
    ("role", MessageKey::Role),
    ("content", MessageKey::Content),
    ("tool_calls", MessageKey::ToolCalls),
    ("function_call", MessageKey::FunctionCall),
];

/// Content-part members whose repetition is refused: each decides whether the part is media
/// and which bytes its allowance replaces (the upstream might read the other copy).
const PART_KEYS: [&str; 3] = ["type", "image_url", "input_audio"];
const PART_TYPE: usize = 0;
const PART_IMAGE_URL: usize = 1;
const PART_INPUT_AUDIO: usize = 2;

/// Part `type` values that are media, with the member that carries each one's payload.
const MEDIA_TYPES: [(&str, Media, usize); 2] =
    [("image_url", Media::Image, PART_IMAGE_URL), ("input_audio", Media::Audio, PART_INPUT_AUDIO)];

// Nesting levels of the parts of a request (the body's object is level 1).
const TOP_MEMBER_DEPTH: usize = 2;
const MESSAGE_DEPTH: usize = 3;
const MESSAGE_MEMBER_DEPTH: usize = 4;
const STREAM_OPTIONS_MEMBER_DEPTH: usize = 3;
const PART_DEPTH: usize = 5;
const PART_MEMBER_DEPTH: usize = 6;

fn messages_error(kind: ErrorKind, text: &'static str) -> ApiError<'static> {
    ApiError { kind, param: Some("messages"), detail: Detail::Text(text) }
}

/// Bytes a value may turn into once the upstream renders it: a string's raw content, nothing
/// for null, anything else whole.
fn prompt_bytes(kind: ValueKind, span: Span) -> u64 {
    match kind {
        ValueKind::String => span.inner().len(),
        ValueKind::Null => 0,
        _ => span.len(),
    }
}

/// One pass over the body. JSON faults abort at once (`?`); parameter errors are remembered in
/// `first_error` and the walk goes on, so a later JSON fault still wins.
struct Walk<'a> {
    body: &'a [u8],
    /// `body` as checked UTF-8: slices of it are text without a second check.
    text: &'a str,
    scanner: Scanner<'a>,
    first_error: Option<ApiError<'a>>,
    saw_model: bool,
    saw_messages: bool,
}

impl<'a> Walk<'a> {
    fn note(&mut self, error: ApiError<'a>) {
        if self.first_error.is_none() {
            self.first_error = Some(error);
        }
    }

    fn text(&self, span: Span) -> &'a str {
        span.text(self.text)
    }

    fn request(&mut self) -> Result<ChatRequest<'a>, JsonFault> {
        if self.scanner.peek_kind()? != ValueKind::Object {
            // Check the value anyway so "not JSON" and "JSON but not an object" read differently.
            self.scanner.value(1)?;
            self.scanner.finish()?;
            return Err(JsonFault::NotAnObject);
        }
        let members_start = self.scanner.enter(1)?;
        let mut request = ChatRequest {
            model: "",
            model_value_span: Span::EMPTY,
            stream: false,
            max_tokens: None,
            message_count: 0,
            content_bytes: 0,
            // Everything counts until shown to be a gateway parameter or a media payload.
            input_bytes: self.body.len() as u64,
            media: MediaParts::default(),
            include_usage_requested: false,
            last_user_content: Span::EMPTY,
            members_start: members_start as u32,
            max_tokens_value_spans: [None, None],
            stream_options: None,
            top_level_keys: [Span::EMPTY; MAX_TOP_LEVEL_KEYS],
            top_level_key_count: 0,
        };
        // Decoded-key hashes, so finding a repeated key costs no more than reading the keys.
        let mut key_hashes = [0u64; MAX_TOP_LEVEL_KEYS];
        let mut first = true;
        while self.scanner.next_item(b'}', &mut first)? {
            let key_token = self.scanner.key_string()?;
            let key_span = key_token.span;
            let key = key_span.inner();
            let key_raw = key.slice(self.body);
            let count = request.top_level_key_count;
            if count == MAX_TOP_LEVEL_KEYS {
                return Err(JsonFault::TooManyKeys);
            }
            let hash = content_hash(key_raw);
            let repeated = (0..count).any(|seen| {
                key_hashes[seen] == hash && contents_eq(request.top_level_keys[seen].slice(self.body), key_raw)
            });
            if repeated {
                self.note(ApiError::invalid(self.text(key), "must not appear more than once"));
            }
            key_hashes[count] = hash;
            request.top_level_keys[count] = key;
            request.top_level_key_count = count + 1;
            let top_key = key_token.content(self.body).pick(&TOP_KEYS);
            self.member(top_key, key_span.start, &mut request)?;
            if top_key.is_some_and(TopKey::is_gateway_parameter) {
                // Key to value: a span of this body, so never more than is left to subtract.
                let member_bytes = (self.scanner.position() as u64).saturating_sub(u64::from(key_span.start));
                request.input_bytes = request.input_bytes.saturating_sub(member_bytes);
            }
        }
        self.scanner.finish()?;
        Ok(request)
    }

    /// One top-level member's value: always validated as JSON, interpreted when it matters.
    fn member(&mut self, key: Option<TopKey>, key_start: u32, request: &mut ChatRequest<'a>) -> Result<(), JsonFault> {
        let kind = self.scanner.peek_kind()?;
        match key {
            Some(TopKey::Messages) => {
                self.saw_messages = true;
                if kind == ValueKind::Array {
                    return self.messages(request);
                }
            }
            Some(TopKey::StreamOptions) if kind == ValueKind::Object => {
                return self.stream_options(key_start, request);
            }
            _ => {}
        }
        let (kind, span) = self.scanner.value(TOP_MEMBER_DEPTH)?;
        let Some(key) = key else { return Ok(()) };
        // Only numbers are read as text (short); other values are never re-scanned.
        let number = if kind == ValueKind::Number { self.text(span) } else { "" };
        match key {
            TopKey::Model => {
                self.saw_model = true;
                if kind == ValueKind::String {
                    request.model = self.text(span.inner());
                    request.model_value_span = span;
                } else {
                    self.note(ApiError::invalid("model", "must be a string naming a model (see GET /v1/models)"));
                }
            }
            TopKey::Messages => {
                self.note(ApiError::invalid("messages", "must be a non-empty array of message objects"))
            }
            TopKey::Stream => match kind {
                ValueKind::True => request.stream = true,
                ValueKind::False | ValueKind::Null => request.stream = false,
                _ => self.note(ApiError::invalid("stream", "must be a boolean")),
            },
            TopKey::StreamOptions => {
                if kind == ValueKind::Null {
                    let member = Span { start: key_start, end: span.end };
                    let layout = StreamOptionsLayout {
                        member,
                        value: span,
                        has_members: false,
                        members_start: span.start,
                        include_usage_value: None,
                    };
                    request.stream_options = Some(layout);
                } else {
                    self.note(ApiError::invalid("stream_options", "must be an object or null"));
                }
            }
            TopKey::Temperature => self.check_range(kind, number, 2.0, "temperature", "must be a number from 0 to 2"),
            TopKey::TopP => self.check_range(kind, number, 1.0, "top_p", "must be a number from 0 to 1"),
            TopKey::MaxTokens | TopKey::MaxCompletionTokens => {
                let (param, slot) =
                    if key == TopKey::MaxTokens { ("max_tokens", 0) } else { ("max_completion_tokens", 1) };
                request.max_tokens_value_spans[slot] = Some(span);
                if kind != ValueKind::Null {
                    match positive_integer(kind, number) {
                        Some(value) => {
                            request.max_tokens = Some(request.max_tokens.map_or(value, |other| other.min(value)))
                        }
                        None => self.note(ApiError::invalid(param, "must be a positive integer")),
                    }
                }
            }
            TopKey::N => {
                if kind != ValueKind::Null && number != "1" {
                    self.note(ApiError::invalid("n", "must be 1 (the gateway returns a single choice)"));
                }
            }
        }
        Ok(())
    }

    fn check_range(&mut self, kind: ValueKind, number: &str, max: f64, param: &'static str, reason: &'static str) {
        let in_range = match kind {
            ValueKind::Null => true,
            ValueKind::Number => {
                number.parse::<f64>().is_ok_and(|value| value.is_finite() && (0.0..=max).contains(&value))
            }
            _ => false,
        };
        if !in_range {
            self.note(ApiError::invalid(param, reason));
        }
    }

    /// `stream_options` given as an object: only `include_usage` is read (a boolean).
    fn stream_options(&mut self, key_start: u32, request: &mut ChatRequest<'a>) -> Result<(), JsonFault> {
        let value_start = self.scanner.position();
        let members_start = self.scanner.enter(TOP_MEMBER_DEPTH)?;
        let mut layout = StreamOptionsLayout {
            member: Span::EMPTY,
            value: Span::EMPTY,
            has_members: false,
            members_start: members_start as u32,
            include_usage_value: None,
        };
        let mut first = true;
        while self.scanner.next_item(b'}', &mut first)? {
            layout.has_members = true;
            let key = self.scanner.key()?.inner();
            let (kind, span) = self.scanner.value(STREAM_OPTIONS_MEMBER_DEPTH)?;
            if !content_eq(key.slice(self.body), b"include_usage") {
                continue;
            }
            if layout.include_usage_value.is_some() {
                self.note(ApiError::invalid("stream_options", "include_usage must not appear more than once"));
            }
            layout.include_usage_value = Some(span);
            match kind {
                ValueKind::True => request.include_usage_requested = true,
                ValueKind::False => request.include_usage_requested = false,
                _ => self.note(ApiError::invalid("stream_options", "include_usage must be a boolean")),
            }
        }
        let end = self.scanner.position();
        layout.value = Span::new(value_start, end);
        layout.member = Span { start: key_start, end: end as u32 };
        request.stream_options = Some(layout);
        Ok(())
    }

    /// `messages` given as an array: each element a message object.
    fn messages(&mut self, request: &mut ChatRequest<'a>) -> Result<(), JsonFault> {
        self.scanner.enter(TOP_MEMBER_DEPTH)?;
        let mut first = true;
        while self.scanner.next_item(b']', &mut first)? {
            request.message_count += 1;
            if request.message_count == MAX_MESSAGES + 1 {
                self.note(ApiError::invalid("messages", "has more messages than the gateway accepts"));
            }
            if self.scanner.peek_kind()? == ValueKind::Object {
                self.message(request)?;
            } else {
                self.scanner.value(MESSAGE_DEPTH)?;
                self.note(messages_error(
                    ErrorKind::InvalidParameter,
                    "Each message must be an object with 'role' and 'content'.",
                ));
            }
        }
        if request.message_count == 0 {
            self.note(ApiError::invalid("messages", "must be a non-empty array of message objects"));
        }
        Ok(())
    }

    fn message(&mut self, request: &mut ChatRequest<'a>) -> Result<(), JsonFault> {
        // `messages` holds at most a body's length of elements, far below u32::MAX.
        let message_index = request.message_count.saturating_sub(1) as u32;
        self.scanner.enter(MESSAGE_DEPTH)?;
        let mut role = None;
        let mut content: Option<(ValueKind, Span)> = None;
        let mut has_tool_calls = false;
        let mut seen_keys = 0u8;
        let mut first = true;
        while self.scanner.next_item(b'}', &mut first)? {
            let known = self.scanner.key_string()?.content(self.body).pick(&MESSAGE_KEYS);
            let parts = matches!(known, Some(MessageKey::Content)) && self.scanner.peek_kind()? == ValueKind::Array;
            let (kind, span, media_payload_bytes) = if parts {
                let (span, media_payload_bytes) = self.content_parts(message_index, request)?;
                (ValueKind::Array, span, media_payload_bytes)
            } else {
                let (kind, span) = self.scanner.value(MESSAGE_MEMBER_DEPTH)?;
                (kind, span, 0)
            };
            if let Some(known) = known {
                if seen_keys & known as u8 != 0 {
                    self.note(messages_error(
                        ErrorKind::InvalidParameter,
                        "A message has the same key more than once.",
                    ));
                }
                seen_keys |= known as u8;
            }
            match known {
                Some(MessageKey::Role) => {
                    let name = span.inner().slice(self.body);
                    let found = ROLES.iter().find(|(role, _)| content_eq(name, role.as_bytes())).map(|(_, r)| *r);
                    role = Some(found.filter(|_| kind == ValueKind::String).unwrap_or(Role::Invalid));
                    continue;
                }
                Some(MessageKey::Content) => content = Some((kind, span)),
                Some(MessageKey::ToolCalls | MessageKey::FunctionCall) => has_tool_calls |= kind != ValueKind::Null,
                None => {}
            }
            // The payloads lie inside `span`: the subtraction never goes below zero.
            let text_bytes = prompt_bytes(kind, span).saturating_sub(media_payload_bytes);
            request.content_bytes = request.content_bytes.saturating_add(text_bytes);
            request.input_bytes = request.input_bytes.saturating_sub(media_payload_bytes);
        }
        let Some(role) = role else {
            self.note(messages_error(ErrorKind::MissingRequiredParameter, "Each message needs a 'role'."));
            return Ok(());
        };
        if role == Role::Invalid {
            self.note(messages_error(
                ErrorKind::InvalidParameter,
                "A message's role must be one of system, developer, user, assistant, tool or function.",
            ));
            return Ok(());
        }
        let may_omit_content = role == Role::Assistant || has_tool_calls;
        match content {
            None if may_omit_content => {}
            None => self.note(messages_error(ErrorKind::MissingRequiredParameter, "Each message needs a 'content'.")),
            Some((ValueKind::String, span)) if role == Role::User => request.last_user_content = span.inner(),
            Some((ValueKind::Array, span)) if role == Role::User => request.last_user_content = span,
            Some((ValueKind::String | ValueKind::Array, _)) => {}
            Some((ValueKind::Null, _)) if may_omit_content => {}
            Some(_) => self.note(messages_error(
                ErrorKind::InvalidParameter,
                "A message's content must be a string or an array of content parts (null only for assistant messages and tool calls).",
            )),
        }
        Ok(())
    }

    /// A message's `content` given as an array of parts, each walked for media. Returns the
    /// array's span and the bytes of the media payloads in it.
    fn content_parts(&mut self, message_index: u32, request: &mut ChatRequest<'a>) -> Result<(Span, u64), JsonFault> {
        let start = self.scanner.position();
        self.scanner.enter(MESSAGE_MEMBER_DEPTH)?;
        let mut media_payload_bytes = 0u64;
        let mut part_index = 0u32;
        let mut first = true;
        while self.scanner.next_item(b']', &mut first)? {
            if self.scanner.peek_kind()? == ValueKind::Object {
                let at = PartPosition { message: message_index, part: part_index };
                media_payload_bytes = media_payload_bytes.saturating_add(self.content_part(at, request)?);
            } else {
                self.scanner.value(PART_DEPTH)?;
            }
            part_index = part_index.saturating_add(1);
        }
        Ok((Span::new(start, self.scanner.position()), media_payload_bytes))
    }

    /// One content part given as an object. A part whose `type` is `image_url` or
    /// `input_audio` is counted in `request.media`; returns the length of its payload (the
    /// value of its `image_url` / `input_audio` member, whole), which its allowance replaces in
    /// the bound. Every other byte of the part (its `type`, a `detail`, anything unknown)
    /// still counts; any other part is text and counts whole.
    fn content_part(&mut self, at: PartPosition, request: &mut ChatRequest<'a>) -> Result<u64, JsonFault> {
        self.scanner.enter(PART_DEPTH)?;
        let mut values: [Option<(ValueKind, Span)>; PART_KEYS.len()] = [None; PART_KEYS.len()];
        let mut first = true;
        while self.scanner.next_item(b'}', &mut first)? {
            let key = self.scanner.key()?.inner();
            let value = self.scanner.value(PART_MEMBER_DEPTH)?;
            let key_raw = key.slice(self.body);
            let Some(slot) = PART_KEYS.iter().position(|name| content_eq(key_raw, name.as_bytes())) else { continue };
            if values[slot].is_some() {
                self.note(messages_error(
                    ErrorKind::InvalidParameter,
                    "A content part has the same key more than once.",
                ));
            }
            values[slot] = Some(value);
        }
        let Some((ValueKind::String, type_span)) = values[PART_TYPE] else { return Ok(0) };
        let type_raw = type_span.inner().slice(self.body);
        let Some(&(_, media, payload_slot)) =
            MEDIA_TYPES.iter().find(|(name, _, _)| content_eq(type_raw, name.as_bytes()))
        else {
            return Ok(0);
        };
        let parts = &mut request.media;
        let (count, first_at) = match media {
            Media::Image => (&mut parts.image_parts, &mut parts.first_image),
            Media::Audio => (&mut parts.audio_parts, &mut parts.first_audio),
        };
        *count = count.saturating_add(1);
        first_at.get_or_insert(at);
        Ok(values[payload_slot].map_or(0, |(_, span)| span.len()))
    }
}

/// A JSON integer above zero that fits in u64: digits only (no sign, fraction or exponent).
fn positive_integer(kind: ValueKind, number: &str) -> Option<u64> {
    if kind != ValueKind::Number || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    number.parse::<u64>().ok().filter(|value| *value > 0)
}

/// What one edit of the backend body writes in place of its span.
#[derive(Copy, Clone)]
enum Replacement {
    /// The backend model as a JSON string.
    Model,
    /// The output cap as a number.
    Cap,
    /// `"max_tokens":<cap>,` (inserted when the client gave no cap).
    CapMember,
    Fixed(&'static [u8]),
}

/// Writes into `out` (appending) the body to send to a backend: `body` with the model value
/// replaced by `backend_model` (JSON-escaped), every `max_tokens` / `max_completion_tokens`
/// value set to `output_cap_tokens` (or `"max_tokens":N` added first if there was none), and,
/// when streaming, `stream_options.include_usage` forced to true while the client's other
/// stream options are kept. Every other byte is copied as it is. `request` must come from
/// `parse_chat_request(body)`.
pub fn write_backend_body(
    body: &[u8],
    request: &ChatRequest<'_>,
    backend_model: &str,
    output_cap_tokens: u64,
    out: &mut Vec<u8>,
) {
    const INCLUDE_USAGE_OBJECT: &[u8] = b"{\"include_usage\":true}";
    let top = Span { start: request.members_start, end: request.members_start };
    // At most four edits: the model, two caps (or one inserted cap), stream_options.
    let mut edits = [(Span::EMPTY, Replacement::Fixed(b"")); 4];
    let mut count = 0;
    let mut push = |span: Span, replacement: Replacement| {
        if let Some(slot) = edits.get_mut(count) {
            *slot = (span, replacement);
            count += 1;
        }
    };
    push(request.model_value_span, Replacement::Model);
    let mut cap_present = false;
    for span in request.max_tokens_value_spans.into_iter().flatten() {
        push(span, Replacement::Cap);
        cap_present = true;
    }
    if !cap_present {
        push(top, Replacement::CapMember);
    }
    if request.stream {
        match request.stream_options {
            None => push(top, Replacement::Fixed(b"\"stream_options\":{\"include_usage\":true},")),
            Some(options) if !options.has_members => push(options.value, Replacement::Fixed(INCLUDE_USAGE_OBJECT)),
            Some(options) => match options.include_usage_value {
                Some(value) => push(value, Replacement::Fixed(b"true")),
                None => {
                    let at = Span { start: options.members_start, end: options.members_start };
                    push(at, Replacement::Fixed(b"\"include_usage\":true,"));
                }
            },
        }
    }
    let edits = &mut edits[..count];
    // Body order; an insertion (empty span) goes before a replacement starting at the same
    // offset, and insertions at one offset keep the order they were pushed in. Insertion sort:
    // at most four entries, stable, no allocation.
    for sorted in 1..edits.len() {
        let mut at = sorted;
        while at > 0 && (edits[at - 1].0.start, edits[at - 1].0.end) > (edits[at].0.start, edits[at].0.end) {
            edits.swap(at - 1, at);
            at -= 1;
        }
    }
    out.reserve(body.len() + backend_model.len() * 2 + 96);
    let mut copied_to = 0usize;
    for (span, replacement) in edits.iter() {
        let start = (span.start as usize).clamp(copied_to, body.len());
        out.extend_from_slice(&body[copied_to..start]);
        match replacement {
            Replacement::Model => {
                out.push(b'"');
                crate::json::write_json_escaped(out, backend_model);
                out.push(b'"');
            }
            Replacement::Cap => crate::digits::push_decimal(out, output_cap_tokens),
            Replacement::CapMember => {
                out.extend_from_slice(b"\"max_tokens\":");
                crate::digits::push_decimal(out, output_cap_tokens);
                out.push(b',');
            }
            Replacement::Fixed(bytes) => out.extend_from_slice(bytes),
        }
        copied_to = (span.end as usize).clamp(start, body.len());
    }
    out.extend_from_slice(&body[copied_to..]);
}

#[cfg(test)]
mod tests;
