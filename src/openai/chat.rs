//! Reading a chat-completion request body: strict JSON validation and the facts the gateway
//! needs (model, stream, output cap, input size), in one pass, without allocating.
//!
//! The scanner accepts exactly RFC 8259 JSON (UTF-8 checked, escapes and surrogate pairs
//! checked, number grammar, nothing after the value), with nesting bounded by
//! `MAX_JSON_DEPTH`. It never decodes or copies strings: every fact is a span into the body or
//! a number, so the body can be forwarded untouched. Validation follows SPEC §1; unknown
//! parameters pass through. It decides nothing about money or limits.

use crate::errors::{ApiError, Detail, ErrorKind};
use crate::limits::{MAX_JSON_DEPTH, MAX_MESSAGES};

/// Most top-level members a request may have.
pub const MAX_TOP_LEVEL_KEYS: usize = 64;

/// A byte range of the body.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    fn new(start: usize, end: usize) -> Span {
        Span { start: start as u32, end: end as u32 }
    }
    pub fn len(&self) -> u64 {
        u64::from(self.end - self.start)
    }
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
    pub fn slice<'a>(&self, body: &'a [u8]) -> &'a [u8] {
        &body[self.start as usize..self.end as usize]
    }
}

/// What the gateway needs from a valid chat request; every borrowed part points into the body.
#[derive(Clone, Debug)]
pub struct ChatRequest<'a> {
    /// The model id as written between the quotes (escapes are left as written).
    pub model: &'a str,
    /// The model value including its quotes (for rewriting).
    pub model_value_span: Span,
    pub stream: bool,
    /// The client's output cap (`max_tokens` or `max_completion_tokens`; the smaller if both).
    pub max_tokens: Option<u64>,
    /// Value spans of `max_tokens` and `max_completion_tokens`, where present (for rewriting).
    pub max_tokens_value_spans: [Option<Span>; 2],
    /// Value span of `stream_options`, where present (for rewriting).
    pub stream_options_value_span: Option<Span>,
    pub message_count: usize,
    /// Upper bound of the message text in bytes: raw lengths of every message's content, name,
    /// tool calls and tool call id (a raw JSON string is never shorter than its decoded text).
    pub content_bytes: u64,
    /// Raw lengths of `tools`, `functions`, `tool_choice`, `response_format` (tokenized too).
    pub extra_input_bytes: u64,
    /// `stream_options.include_usage` was true in the client's request.
    pub include_usage_requested: bool,
    /// The raw content of the last `user` message (seed of the sandbox's answer).
    pub last_user_content: Span,
    top_level_keys: [Span; MAX_TOP_LEVEL_KEYS],
    top_level_key_count: usize,
}

/// The names of the request's top-level members, in order.
pub fn top_level_keys<'a>(request: &ChatRequest<'a>, body: &'a [u8]) -> impl Iterator<Item = &'a str> + use<'a> {
    let keys = request.top_level_keys;
    (0..request.top_level_key_count).map(move |i| std::str::from_utf8(keys[i].slice(body)).unwrap_or(""))
}

const ROLES: [&str; 6] = ["system", "developer", "user", "assistant", "tool", "function"];

fn invalid_json(reason: &'static str) -> ApiError<'static> {
    ApiError::with_text(ErrorKind::InvalidJson, reason)
}

fn invalid<'a>(param: &'a str, reason: &'static str) -> ApiError<'a> {
    ApiError::invalid(param, reason)
}

fn messages_error(kind: ErrorKind, text: &'static str) -> ApiError<'static> {
    ApiError { kind, param: Some("messages"), detail: Detail::Text(text) }
}

/// Validates `body` and extracts what the gateway needs.
pub fn parse_chat_request(body: &[u8]) -> Result<ChatRequest<'_>, ApiError<'_>> {
    let text = std::str::from_utf8(body).map_err(|_| invalid_json("The request body is not valid UTF-8."))?;
    let mut scanner = Scanner { bytes: body, position: 0 };
    let mut facts = Facts::default();
    scanner.skip_whitespace();
    if scanner.peek() != Some(b'{') {
        // Tell "valid JSON but not an object" from "not JSON" only for the message.
        return Err(invalid_json("The request body must be a JSON object."));
    }
    let mut request = ChatRequest {
        model: "",
        model_value_span: Span::default(),
        stream: false,
        max_tokens: None,
        max_tokens_value_spans: [None, None],
        stream_options_value_span: None,
        message_count: 0,
        content_bytes: 0,
        extra_input_bytes: 0,
        include_usage_requested: false,
        last_user_content: Span::default(),
        top_level_keys: [Span::default(); MAX_TOP_LEVEL_KEYS],
        top_level_key_count: 0,
    };
    scanner.position += 1;
    scanner.skip_whitespace();
    if scanner.peek() == Some(b'}') {
        scanner.position += 1;
    } else {
        loop {
            scanner.skip_whitespace();
            let key_span = scanner.string()?;
            let key = &text[key_span.start as usize + 1..key_span.end as usize - 1];
            let key_inner = Span::new(key_span.start as usize + 1, key_span.end as usize - 1);
            if request.top_level_key_count == MAX_TOP_LEVEL_KEYS {
                return Err(invalid_json("The request has too many top-level parameters."));
            }
            if top_level_keys(&request, body).any(|existing| existing == key) {
                facts.note(ApiError {
                    kind: ErrorKind::InvalidParameter,
                    param: Some(key),
                    detail: Detail::Text("This parameter appears more than once."),
                });
            }
            request.top_level_keys[request.top_level_key_count] = key_inner;
            request.top_level_key_count += 1;
            scanner.skip_whitespace();
            scanner.expect(b':')?;
            scanner.skip_whitespace();
            scanner.member_value(key, text, &mut request, &mut facts)?;
            scanner.skip_whitespace();
            match scanner.next() {
                Some(b',') => continue,
                Some(b'}') => break,
                _ => return Err(invalid_json("The request body is not valid JSON.")),
            }
        }
    }
    scanner.skip_whitespace();
    if scanner.position != body.len() {
        return Err(invalid_json("The request body has data after the JSON object."));
    }
    if let Some(error) = facts.first_error {
        return Err(error);
    }
    if !facts.saw_model {
        return Err(ApiError::missing("model"));
    }
    if !facts.saw_messages {
        return Err(ApiError::missing("messages"));
    }
    Ok(request)
}

/// Semantic findings collected while the JSON is still being validated (JSON errors win).
#[derive(Default)]
struct Facts<'a> {
    first_error: Option<ApiError<'a>>,
    saw_model: bool,
    saw_messages: bool,
}

impl<'a> Facts<'a> {
    fn note(&mut self, error: ApiError<'a>) {
        if self.first_error.is_none() {
            self.first_error = Some(error);
        }
    }
}

struct Scanner<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.position).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.position += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Result<(), ApiError<'static>> {
        if self.next() == Some(byte) { Ok(()) } else { Err(invalid_json("The request body is not valid JSON.")) }
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.position += 1;
        }
    }

    /// A JSON string starting here; returns its span including the quotes.
    fn string(&mut self) -> Result<Span, ApiError<'static>> {
        const BAD: &str = "The request body has an invalid JSON string.";
        let start = self.position;
        if self.next() != Some(b'"') {
            return Err(invalid_json("The request body is not valid JSON."));
        }
        loop {
            match self.next() {
                None => return Err(invalid_json(BAD)),
                Some(b'"') => return Ok(Span::new(start, self.position)),
                Some(b'\\') => match self.next() {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {}
                    Some(b'u') => {
                        let unit = self.hex4().ok_or_else(|| invalid_json(BAD))?;
                        if (0xD800..0xDC00).contains(&unit) {
                            // A high surrogate must be followed by an escaped low surrogate.
                            if self.next() != Some(b'\\') || self.next() != Some(b'u') {
                                return Err(invalid_json(BAD));
                            }
                            let low = self.hex4().ok_or_else(|| invalid_json(BAD))?;
                            if !(0xDC00..0xE000).contains(&low) {
                                return Err(invalid_json(BAD));
                            }
                        } else if (0xDC00..0xE000).contains(&unit) {
                            return Err(invalid_json(BAD));
                        }
                    }
                    _ => return Err(invalid_json(BAD)),
                },
                Some(0x00..=0x1f) => return Err(invalid_json(BAD)),
                Some(_) => {}
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.bytes.get(self.position..self.position + 4)?;
        let mut value = 0u32;
        for &digit in digits {
            value = value * 16 + (digit as char).to_digit(16)?;
        }
        self.position += 4;
        Some(value)
    }

    /// A JSON number starting here (RFC 8259 grammar); returns its span.
    fn number(&mut self) -> Result<Span, ApiError<'static>> {
        const BAD: &str = "The request body has an invalid JSON number.";
        let start = self.position;
        if self.peek() == Some(b'-') {
            self.position += 1;
        }
        match self.next() {
            Some(b'0') => {}
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(invalid_json(BAD)),
        }
        if self.peek() == Some(b'.') {
            self.position += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(invalid_json(BAD));
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.position += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.position += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(invalid_json(BAD));
            }
            self.digits();
        }
        Ok(Span::new(start, self.position))
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.position += 1;
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), ApiError<'static>> {
        if self.bytes[self.position..].starts_with(word) {
            self.position += word.len();
            Ok(())
        } else {
            Err(invalid_json("The request body is not valid JSON."))
        }
    }

    /// Validates any JSON value starting here (nested up to `MAX_JSON_DEPTH` below `depth`).
    fn value(&mut self, depth: usize) -> Result<Span, ApiError<'static>> {
        let start = self.position;
        match self.peek() {
            Some(b'"') => return self.string(),
            Some(b'-' | b'0'..=b'9') => return self.number(),
            Some(b't') => self.literal(b"true")?,
            Some(b'f') => self.literal(b"false")?,
            Some(b'n') => self.literal(b"null")?,
            Some(open @ (b'{' | b'[')) => {
                if depth >= MAX_JSON_DEPTH {
                    return Err(invalid_json("The request body is nested too deeply."));
                }
                let close = if open == b'{' { b'}' } else { b']' };
                self.position += 1;
                self.skip_whitespace();
                if self.peek() == Some(close) {
                    self.position += 1;
                    return Ok(Span::new(start, self.position));
                }
                loop {
                    self.skip_whitespace();
                    if open == b'{' {
                        self.string()?;
                        self.skip_whitespace();
                        self.expect(b':')?;
                        self.skip_whitespace();
                    }
                    self.value(depth + 1)?;
                    self.skip_whitespace();
                    match self.next() {
                        Some(b',') => continue,
                        Some(byte) if byte == close => break,
                        _ => return Err(invalid_json("The request body is not valid JSON.")),
                    }
                }
            }
            _ => return Err(invalid_json("The request body is not valid JSON.")),
        }
        Ok(Span::new(start, self.position))
    }

    /// One top-level member's value: validated as JSON, and interpreted when the key matters.
    fn member_value(
        &mut self,
        key: &'a str,
        text: &'a str,
        request: &mut ChatRequest<'a>,
        facts: &mut Facts<'a>,
    ) -> Result<(), ApiError<'static>> {
        match key {
            "messages" => {
                facts.saw_messages = true;
                return self.messages(text, request, facts);
            }
            "stream_options" => {
                request.stream_options_value_span = Some(Span::new(self.position, self.position));
                let include = self.stream_options(facts)?;
                request.include_usage_requested = include;
                if let Some(span) = request.stream_options_value_span.as_mut() {
                    span.end = self.position as u32;
                }
                return Ok(());
            }
            _ => {}
        }
        let first = self.peek();
        let span = self.value(1)?;
        let raw = &text[span.start as usize..span.end as usize];
        match key {
            "model" => {
                facts.saw_model = true;
                if first == Some(b'"') {
                    request.model = &raw[1..raw.len() - 1];
                    request.model_value_span = span;
                } else {
                    facts.note(invalid("model", "must be a string naming a model (see GET /v1/models)"));
                }
            }
            "stream" => match raw {
                "true" => request.stream = true,
                "false" | "null" => request.stream = false,
                _ => facts.note(invalid("stream", "must be a boolean")),
            },
            "temperature" => check_number_range(raw, first, 2.0, "temperature", "must be a number from 0 to 2", facts),
            "top_p" => check_number_range(raw, first, 1.0, "top_p", "must be a number from 0 to 1", facts),
            "max_tokens" | "max_completion_tokens" => {
                let param = if key == "max_tokens" { "max_tokens" } else { "max_completion_tokens" };
                if raw == "null" {
                    return Ok(());
                }
                match parse_positive_integer(raw) {
                    Some(value) => {
                        request.max_tokens = Some(request.max_tokens.map_or(value, |other| other.min(value)));
                        request.max_tokens_value_spans[usize::from(param != "max_tokens")] = Some(span);
                    }
                    None => facts.note(invalid(param, "must be a positive integer")),
                }
            }
            "n" if raw != "1" && raw != "null" => facts.note(invalid("n", "only n = 1 is supported")),
            "tools" | "functions" | "tool_choice" | "response_format" => request.extra_input_bytes += span.len(),
            _ => {}
        }
        Ok(())
    }

    /// `stream_options`: an object or null; returns whether `include_usage` is true.
    fn stream_options(&mut self, facts: &mut Facts<'a>) -> Result<bool, ApiError<'static>> {
        if self.peek() != Some(b'{') {
            let raw_start = self.position;
            self.value(1)?;
            if &self.bytes[raw_start..self.position] != b"null" {
                facts.note(invalid("stream_options", "must be an object or null"));
            }
            return Ok(false);
        }
        let mut include_usage = false;
        self.position += 1;
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.position += 1;
            return Ok(false);
        }
        loop {
            self.skip_whitespace();
            let key = self.string()?;
            self.skip_whitespace();
            self.expect(b':')?;
            self.skip_whitespace();
            let value = self.value(2)?;
            if key.slice(self.bytes) == b"\"include_usage\"" {
                match value.slice(self.bytes) {
                    b"true" => include_usage = true,
                    b"false" | b"null" => include_usage = false,
                    _ => facts.note(invalid("stream_options", "include_usage must be a boolean")),
                }
            }
            self.skip_whitespace();
            match self.next() {
                Some(b',') => continue,
                Some(b'}') => return Ok(include_usage),
                _ => return Err(invalid_json("The request body is not valid JSON.")),
            }
        }
    }

    /// `messages`: a non-empty array of objects with a known `role` and a `content`.
    fn messages(
        &mut self,
        text: &'a str,
        request: &mut ChatRequest<'a>,
        facts: &mut Facts<'a>,
    ) -> Result<(), ApiError<'static>> {
        if self.peek() != Some(b'[') {
            self.value(1)?;
            facts.note(invalid("messages", "must be a non-empty array of messages"));
            return Ok(());
        }
        self.position += 1;
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.position += 1;
            facts.note(invalid("messages", "must be a non-empty array of messages"));
            return Ok(());
        }
        loop {
            self.skip_whitespace();
            if request.message_count == MAX_MESSAGES {
                facts.note(invalid("messages", "has too many messages"));
            }
            request.message_count += 1;
            if self.peek() == Some(b'{') {
                self.message(text, request, facts)?;
            } else {
                self.value(2)?;
                facts.note(messages_error(
                    ErrorKind::InvalidParameter,
                    "Each message must be an object with 'role' and 'content'.",
                ));
            }
            self.skip_whitespace();
            match self.next() {
                Some(b',') => continue,
                Some(b']') => return Ok(()),
                _ => return Err(invalid_json("The request body is not valid JSON.")),
            }
        }
    }

    fn message(
        &mut self,
        text: &'a str,
        request: &mut ChatRequest<'a>,
        facts: &mut Facts<'a>,
    ) -> Result<(), ApiError<'static>> {
        self.position += 1;
        let mut role: Option<&str> = None;
        let mut role_valid = true;
        let mut content: Option<(Span, Option<u8>)> = None;
        let mut has_tool_calls = false;
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.position += 1;
        } else {
            loop {
                self.skip_whitespace();
                let key = self.string()?;
                let key = &text[key.start as usize + 1..key.end as usize - 1];
                self.skip_whitespace();
                self.expect(b':')?;
                self.skip_whitespace();
                let first = self.peek();
                let value = self.value(3)?;
                let raw = &text[value.start as usize..value.end as usize];
                match key {
                    "role" => {
                        if first == Some(b'"') && ROLES.contains(&&raw[1..raw.len() - 1]) {
                            role = Some(&raw[1..raw.len() - 1]);
                        } else {
                            role_valid = false;
                            role = Some("");
                        }
                    }
                    "content" => content = Some((value, first)),
                    "tool_calls" => {
                        has_tool_calls = raw != "null";
                        request.content_bytes += value.len();
                    }
                    "name" | "tool_call_id" => request.content_bytes += value.len(),
                    _ => {}
                }
                self.skip_whitespace();
                match self.next() {
                    Some(b',') => continue,
                    Some(b'}') => break,
                    _ => return Err(invalid_json("The request body is not valid JSON.")),
                }
            }
        }
        let Some(role) = role else {
            facts.note(messages_error(ErrorKind::MissingRequiredParameter, "Each message needs a 'role'."));
            return Ok(());
        };
        if !role_valid {
            facts.note(messages_error(
                ErrorKind::InvalidParameter,
                "A message role must be one of system, developer, user, assistant, tool, function.",
            ));
            return Ok(());
        }
        match content {
            None if role == "assistant" && has_tool_calls => {}
            None => facts.note(messages_error(ErrorKind::MissingRequiredParameter, "Each message needs a 'content'.")),
            Some((span, first)) => match first {
                Some(b'"') => {
                    let inner = Span::new(span.start as usize + 1, span.end as usize - 1);
                    request.content_bytes += inner.len();
                    if role == "user" {
                        request.last_user_content = inner;
                    }
                }
                Some(b'[') => {
                    request.content_bytes += span.len();
                    if role == "user" {
                        request.last_user_content = span;
                    }
                }
                Some(b'n') if role == "assistant" => {}
                _ => facts.note(messages_error(
                    ErrorKind::InvalidParameter,
                    "A message's content must be a string or an array of content parts.",
                )),
            },
        }
        Ok(())
    }
}

fn check_number_range<'a>(
    raw: &str,
    first: Option<u8>,
    max: f64,
    param: &'a str,
    reason: &'static str,
    facts: &mut Facts<'a>,
) {
    if raw == "null" {
        return;
    }
    let in_range = matches!(first, Some(b'-' | b'0'..=b'9'))
        && raw.parse::<f64>().is_ok_and(|value| value.is_finite() && (0.0..=max).contains(&value));
    if !in_range {
        facts.note(invalid(param, reason));
    }
}

/// A JSON integer > 0 that fits in u64 (no fraction, no exponent, no sign).
fn parse_positive_integer(raw: &str) -> Option<u64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse::<u64>().ok().filter(|value| *value > 0)
}

/// Writes `body` for a backend: the model replaced by `backend_model`, the output cap set to
/// `output_cap_tokens` (added as `max_tokens` if the client gave none), and, for streams,
/// `stream_options` forced to include usage. Untouched bytes are copied as they are.
pub fn write_backend_body(
    body: &[u8],
    request: &ChatRequest<'_>,
    backend_model: &str,
    output_cap_tokens: u64,
    out: &mut Vec<u8>,
) {
    use std::io::Write;
    // Edits sorted by position: (span to replace, what to write).
    #[derive(Clone, Copy)]
    enum Edit<'m> {
        Model(&'m str),
        Cap,
        StreamOptions,
    }
    let mut edits: [(Span, Option<Edit<'_>>); 4] = [(Span::default(), None); 4];
    let mut count = 0;
    edits[count] = (request.model_value_span, Some(Edit::Model(backend_model)));
    count += 1;
    for span in request.max_tokens_value_spans.iter().flatten() {
        edits[count] = (*span, Some(Edit::Cap));
        count += 1;
    }
    if request.stream
        && let Some(span) = request.stream_options_value_span
    {
        edits[count] = (span, Some(Edit::StreamOptions));
        count += 1;
    }
    edits[..count].sort_by_key(|(span, _)| span.start);
    // The opening brace, then what must be added, then the rest with replacements.
    let open = body.iter().position(|&b| b == b'{').unwrap_or(0);
    out.extend_from_slice(&body[..=open]);
    if request.max_tokens_value_spans.iter().all(Option::is_none) {
        let _ = write!(out, "\"max_tokens\":{output_cap_tokens},");
    }
    if request.stream && request.stream_options_value_span.is_none() {
        out.extend_from_slice(b"\"stream_options\":{\"include_usage\":true},");
    }
    let mut cursor = open + 1;
    for (span, edit) in &edits[..count] {
        out.extend_from_slice(&body[cursor..span.start as usize]);
        match edit {
            Some(Edit::Model(model)) => {
                out.push(b'"');
                crate::errors::write_json_escaped(out, model);
                out.push(b'"');
            }
            Some(Edit::Cap) => {
                let _ = write!(out, "{output_cap_tokens}");
            }
            Some(Edit::StreamOptions) | None => out.extend_from_slice(b"{\"include_usage\":true}"),
        }
        cursor = span.end as usize;
    }
    out.extend_from_slice(&body[cursor..]);
}

#[cfg(test)]
mod tests;
