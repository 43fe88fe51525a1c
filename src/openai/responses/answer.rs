//! Chat answers turned into Responses answers (SPEC §8.1): pure functions and one small
//! per-request state, bytes in and bytes out.
//!
//! `write_unary` turns a `chat.completion` body (already carrying the public model id) into a
//! `"object":"response"` body. `ResponsesStream` turns the chat SSE events of one stream, as
//! the relay or the sandbox produced them, into typed Responses events (`event: <type>` +
//! `data:` with `type` and a `sequence_number` counting from 0): `response.created` and
//! `response.in_progress` before the first output, an added/delta/done sequence per message
//! or function call, and `response.completed` (or `response.incomplete`) with the whole
//! response and its usage at the chat stream's `[DONE]`; a failure after the start is one
//! `error` event. Text and arguments are copied as the JSON string contents they already are,
//! never decoded. Its two buffers (the text so far, the finished output items) are lent by the
//! caller and handed back, so a warm worker allocates nothing. It performs no IO and decides
//! nothing about billing: usage is only reported here, settlement reads it elsewhere.

use std::cell::RefCell;

use crate::digits::push_decimal;
use crate::json::write_json_escaped;
use crate::money::TokenUsage;
use crate::openai::chat::json_scan::{Span, ValueKind};
use crate::openai::responses::{ResponsesRequest, each_element, kind_of, member, string_is};
use crate::openai::usage_cost::{CostText, read_usage_cost};

/// What every Responses object of one request says besides its output.
#[derive(Copy, Clone, Debug)]
pub struct ResponseShape<'a> {
    /// The gateway request id: the response is `resp_<id>`, its message `msg_<id>`.
    pub request_id: &'a str,
    /// The public model id.
    pub model_id: &'a str,
    pub created_unix_s: u64,
    /// The client's Responses body and what was parsed from it (echoed parameters).
    pub body: &'a [u8],
    pub request: &'a ResponsesRequest<'a>,
    /// The worker's reusable buffers, lent to the translation.
    pub buffers: &'a RefCell<Vec<Vec<u8>>>,
}

impl ResponseShape<'_> {
    /// A reusable buffer from the worker (a fresh one only while the worker warms up).
    pub fn lend_buffer(&self) -> Vec<u8> {
        self.buffers.borrow_mut().pop().unwrap_or_default()
    }

    /// Returns a lent buffer; one grown by a huge answer is freed, not kept for good.
    pub fn give_back(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() <= crate::limits::UPSTREAM_KEPT_BUFFER_MAX_BYTES {
            buffer.clear();
            self.buffers.borrow_mut().push(buffer);
        }
    }

    /// A stream translator on three lent buffers (`give_back_stream` returns them).
    pub fn start_stream(&self) -> ResponsesStream {
        ResponsesStream::new(self.lend_buffer(), self.lend_buffer(), self.lend_buffer())
    }

    pub fn give_back_stream(&self, stream: ResponsesStream) {
        for buffer in stream.into_buffers() {
            self.give_back(buffer);
        }
    }
}

/// What a backend writes: the chat answer as is, or translated to the Responses API.
#[derive(Copy, Clone, Debug)]
pub enum AnswerFormat<'a> {
    Chat,
    Responses(&'a ResponseShape<'a>),
}

/// How a response ended.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Status {
    InProgress,
    Completed,
    /// Cut by the output cap.
    Incomplete,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Incomplete => "incomplete",
        }
    }
}

/// A string value's raw content (between the quotes), or nothing if it is not a string.
fn string_content(value: Option<&[u8]>) -> Option<&[u8]> {
    value.filter(|v| kind_of(v) == ValueKind::String).map(|v| Span::new(0, v.len()).inner().slice(v))
}

fn number(value: Option<&[u8]>) -> u64 {
    value.and_then(|v| std::str::from_utf8(v).ok()).and_then(|text| text.parse::<u64>().ok()).unwrap_or(0)
}

/// The usage object of a chat answer, with its cached and reasoning details.
pub fn read_chat_usage(usage: &[u8]) -> Option<TokenUsage> {
    if kind_of(usage) != ValueKind::Object {
        return None;
    }
    let detail = |object: &str, field: &str| number(member(usage, object).and_then(|details| member(details, field)));
    Some(TokenUsage {
        prompt_tokens: number(member(usage, "prompt_tokens")),
        cached_prompt_tokens: detail("prompt_tokens_details", "cached_tokens"),
        completion_tokens: number(member(usage, "completion_tokens")),
        reasoning_tokens: detail("completion_tokens_details", "reasoning_tokens"),
    })
}

/// The usage object of a Responses answer (`input_tokens` and `output_tokens` required, with
/// `input_tokens_details.cached_tokens` and `output_tokens_details.reasoning_tokens`), as a
/// native upstream reports it.
pub fn read_responses_usage(usage: &[u8]) -> Option<TokenUsage> {
    if kind_of(usage) != ValueKind::Object {
        return None;
    }
    let required = |name: &str| member(usage, name).filter(|value| kind_of(value) == ValueKind::Number);
    let detail = |object: &str, field: &str| number(member(usage, object).and_then(|details| member(details, field)));
    let (input, output) = (required("input_tokens")?, required("output_tokens")?);
    Some(TokenUsage {
        prompt_tokens: number(Some(input)),
        cached_prompt_tokens: detail("input_tokens_details", "cached_tokens"),
        completion_tokens: number(Some(output)),
        reasoning_tokens: detail("output_tokens_details", "reasoning_tokens"),
    })
}

/// One Responses `error` event (SDK `ResponseErrorEvent`), the SPEC §2 code and message inside.
pub fn write_error_event(out: &mut Vec<u8>, sequence_number: u64, code: &str, message: &str) {
    out.extend_from_slice(b"event: error\ndata: {\"type\":\"error\",\"sequence_number\":");
    push_decimal(out, sequence_number);
    out.extend_from_slice(b",\"code\":\"");
    write_json_escaped(out, code);
    out.extend_from_slice(b"\",\"message\":\"");
    write_json_escaped(out, message);
    out.extend_from_slice(b"\",\"param\":null}\n\n");
}

/// A Responses usage object; `cost` (what the gateway charged, when it was announced in the chat
/// usage) rides along as `cost_usd`.
fn write_usage(out: &mut Vec<u8>, usage: Option<&TokenUsage>, cost: Option<&CostText>) {
    let Some(usage) = usage else {
        out.extend_from_slice(b"null");
        return;
    };
    let total_tokens = usage.prompt_tokens.saturating_add(usage.completion_tokens);
    let figures: [(&[u8], u64); 5] = [
        (b"{\"input_tokens\":", usage.prompt_tokens),
        (b",\"input_tokens_details\":{\"cached_tokens\":", usage.cached_prompt_tokens),
        (b"},\"output_tokens\":", usage.completion_tokens),
        (b",\"output_tokens_details\":{\"reasoning_tokens\":", usage.reasoning_tokens),
        (b"},\"total_tokens\":", total_tokens),
    ];
    for (label, figure) in figures {
        out.extend_from_slice(label);
        push_decimal(out, figure);
    }
    if let Some(cost) = cost {
        out.extend_from_slice(b",\"cost_usd\":\"");
        out.extend_from_slice(cost.as_bytes());
        out.push(b'"');
    }
    out.push(b'}');
}

/// A whole Responses object: `items` is the inside of its `output` array.
fn write_response(
    out: &mut Vec<u8>,
    shape: &ResponseShape<'_>,
    status: Status,
    items: &[u8],
    usage: Option<&TokenUsage>,
    cost: Option<&CostText>,
) {
    let request = shape.request;
    let echo = |span: Option<Span>, default: &'static [u8]| span.map_or(default, |span| span.slice(shape.body));
    out.extend_from_slice(b"{\"id\":\"resp_");
    write_json_escaped(out, shape.request_id);
    out.extend_from_slice(b"\",\"object\":\"response\",\"created_at\":");
    push_decimal(out, shape.created_unix_s);
    out.extend_from_slice(b",\"status\":\"");
    out.extend_from_slice(status.as_str().as_bytes());
    out.extend_from_slice(b"\",\"error\":null,\"incomplete_details\":");
    let details: &[u8] = if status == Status::Incomplete { b"{\"reason\":\"max_output_tokens\"}" } else { b"null" };
    out.extend_from_slice(details);
    out.extend_from_slice(b",\"instructions\":");
    out.extend_from_slice(echo(request.instructions, b"null"));
    out.extend_from_slice(b",\"max_output_tokens\":");
    match request.max_output_tokens {
        Some(cap) => push_decimal(out, cap),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"model\":\"");
    write_json_escaped(out, shape.model_id);
    out.extend_from_slice(b"\",\"output\":[");
    out.extend_from_slice(items);
    out.push(b']');
    let echoed: [(&[u8], Option<Span>, &[u8]); 9] = [
        (b"parallel_tool_calls", request.parallel_tool_calls, b"true"),
        (b"reasoning", request.reasoning, b"{\"effort\":null,\"summary\":null}"),
        (b"temperature", request.temperature, b"1"),
        (b"text", request.text, b"{\"format\":{\"type\":\"text\"}}"),
        (b"tool_choice", request.tool_choice, b"\"auto\""),
        (b"tools", request.tools, b"[]"),
        (b"top_p", request.top_p, b"1"),
        (b"metadata", request.metadata, b"{}"),
        (b"previous_response_id", None, b"null"),
    ];
    for (key, span, default) in echoed {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key);
        out.extend_from_slice(b"\":");
        out.extend_from_slice(echo(span, default));
    }
    out.extend_from_slice(b",\"store\":false,\"truncation\":\"disabled\"");
    out.extend_from_slice(b",\"usage\":");
    write_usage(out, usage, cost);
    out.push(b'}');
}

/// `msg_<request id>`, with `_<output index>` after the first output.
fn write_message_id(out: &mut Vec<u8>, shape: &ResponseShape<'_>, output_index: u32) {
    out.extend_from_slice(b"msg_");
    write_json_escaped(out, shape.request_id);
    if output_index > 0 {
        out.push(b'_');
        push_decimal(out, u64::from(output_index));
    }
}

/// A message item holding one output text part (`text` raw JSON string content).
fn write_message_item(
    out: &mut Vec<u8>,
    shape: &ResponseShape<'_>,
    output_index: u32,
    status: &str,
    text: Option<&[u8]>,
) {
    out.extend_from_slice(b"{\"type\":\"message\",\"id\":\"");
    write_message_id(out, shape, output_index);
    out.extend_from_slice(b"\",\"status\":\"");
    out.extend_from_slice(status.as_bytes());
    out.extend_from_slice(b"\",\"role\":\"assistant\",\"content\":[");
    if let Some(text) = text {
        write_text_part(out, text);
    }
    out.extend_from_slice(b"]}");
}

fn write_text_part(out: &mut Vec<u8>, text: &[u8]) {
    out.extend_from_slice(b"{\"type\":\"output_text\",\"text\":\"");
    out.extend_from_slice(text);
    out.extend_from_slice(b"\",\"annotations\":[]}");
}

/// The start of a function call item, up to the opening quote of its arguments.
fn write_call_prefix(out: &mut Vec<u8>, call_id: &[u8], name: &[u8]) {
    out.extend_from_slice(b"{\"type\":\"function_call\",\"id\":\"fc_");
    out.extend_from_slice(call_id);
    out.extend_from_slice(b"\",\"call_id\":\"");
    out.extend_from_slice(call_id);
    out.extend_from_slice(b"\",\"name\":\"");
    out.extend_from_slice(name);
    out.extend_from_slice(b"\",\"arguments\":\"");
}

const CALL_SUFFIX_COMPLETED: &[u8] = b"\",\"status\":\"completed\"}";

/// Turns a `chat.completion` body into a Responses body in `out`; `items` is scratch for the
/// output items. `None` if `chat` is not a completion with a choice.
pub fn write_unary(chat: &[u8], shape: &ResponseShape<'_>, items: &mut Vec<u8>, out: &mut Vec<u8>) -> Option<()> {
    let mut first_choice = None;
    each_element(member(chat, "choices")?, |index, choice| {
        if index == 0 {
            first_choice = Some(choice);
        }
    });
    let choice = first_choice?;
    let message = member(choice, "message")?;
    let text = string_content(member(message, "content"));
    let tool_calls = member(message, "tool_calls").filter(|calls| kind_of(calls) == ValueKind::Array);
    items.clear();
    let mut output_index = 0u32;
    if text.is_some_and(|text| !text.is_empty()) || tool_calls.is_none() {
        write_message_item(items, shape, 0, "completed", Some(text.unwrap_or(b"")));
        output_index = 1;
    }
    if let Some(calls) = tool_calls {
        each_element(calls, |_, call| {
            let function = member(call, "function").unwrap_or(b"{}");
            if output_index > 0 {
                items.push(b',');
            }
            output_index += 1;
            let call_id = string_content(member(call, "id")).unwrap_or(b"");
            write_call_prefix(items, call_id, string_content(member(function, "name")).unwrap_or(b""));
            items.extend_from_slice(string_content(member(function, "arguments")).unwrap_or(b""));
            items.extend_from_slice(CALL_SUFFIX_COMPLETED);
        });
    }
    let status =
        if string_is(member(choice, "finish_reason"), "length") { Status::Incomplete } else { Status::Completed };
    let usage = member(chat, "usage").and_then(read_chat_usage);
    out.clear();
    write_response(out, shape, status, items, usage.as_ref(), None);
    Some(())
}

/// Most function calls a stream keeps open at once; one more closes the oldest.
const MAX_OPEN_CALLS: usize = 16;
/// The `calls` record tag of a call's id or name (not an arguments fragment).
const CALL_TEXT_TAG: u8 = u8::MAX;

/// A function call being streamed. Upstreams may interleave the deltas of parallel calls
/// (index 0, 1, 0, ...), so every call stays open until text starts or the stream ends.
#[derive(Copy, Clone, Debug, Default)]
struct OpenCall {
    /// Its `index` in the chat chunks' `tool_calls`.
    chat_index: u64,
    output_index: u32,
    /// Its call id and name: byte ranges inside `calls` (the `fc_` item id is `fc_` + the id).
    call_id: (usize, usize),
    name: (usize, usize),
    /// Its tag on its argument fragments in `calls`: unique among the open calls (a closed
    /// call's records are retagged `CALL_TEXT_TAG`).
    tag: u8,
}

/// One Responses stream being translated from chat events.
pub struct ResponsesStream {
    sequence_number: u64,
    started: bool,
    finished: bool,
    outputs: u32,
    /// The output index of the message whose text is streaming.
    message: Option<u32>,
    /// The open function calls, oldest (lowest output index) first: `open_calls[..open_count]`.
    open_calls: [OpenCall; MAX_OPEN_CALLS],
    open_count: usize,
    cut_by_length: bool,
    usage: Option<TokenUsage>,
    /// The charge the chat usage announced (`cost_usd`), carried into the terminal event.
    cost: Option<CostText>,
    /// The open message's text so far (raw JSON string content).
    text: Vec<u8>,
    /// The finished output items, comma-separated.
    items: Vec<u8>,
    /// The open calls' ids, names and argument fragments, as records: a tag byte (a call's tag,
    /// or `CALL_TEXT_TAG`), the length (4 bytes, little endian), the bytes.
    calls: Vec<u8>,
}

impl ResponsesStream {
    /// A new stream translating into `out`, on three lent buffers.
    pub fn new(mut text: Vec<u8>, mut items: Vec<u8>, mut calls: Vec<u8>) -> ResponsesStream {
        text.clear();
        items.clear();
        calls.clear();
        ResponsesStream {
            sequence_number: 0,
            started: false,
            finished: false,
            outputs: 0,
            message: None,
            open_calls: [OpenCall::default(); MAX_OPEN_CALLS],
            open_count: 0,
            cut_by_length: false,
            usage: None,
            cost: None,
            text,
            items,
            calls,
        }
    }

    /// The lent buffers, to give back.
    pub fn into_buffers(self) -> [Vec<u8>; 3] {
        [self.text, self.items, self.calls]
    }

    /// The terminal event was written.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// The usage the chat stream reported, if it did.
    pub fn usage(&self) -> Option<TokenUsage> {
        self.usage
    }

    fn event(&mut self, out: &mut Vec<u8>, kind: &str) {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: {\"type\":\"");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\",\"sequence_number\":");
        push_decimal(out, self.sequence_number);
        self.sequence_number += 1;
    }

    fn whole_response_event(&mut self, out: &mut Vec<u8>, shape: &ResponseShape<'_>, kind: &str, status: Status) {
        self.event(out, kind);
        out.extend_from_slice(b",\"response\":");
        let usage = if status == Status::InProgress { None } else { self.usage };
        let items: &[u8] = if status == Status::InProgress { b"" } else { &self.items };
        let cost = if status == Status::InProgress { None } else { self.cost.as_ref() };
        write_response(out, shape, status, items, usage.as_ref(), cost);
        out.extend_from_slice(b"}\n\n");
    }

    /// Translates the chat SSE events in `events` (each `data: ...\n\n`) into `out`.
    pub fn chat_events(&mut self, shape: &ResponseShape<'_>, events: &[u8], out: &mut Vec<u8>) {
        for event in events.split(|&b| b == b'\n') {
            let Some(data) = event.strip_prefix(b"data: ") else { continue };
            if self.finished {
                return;
            }
            if data == b"[DONE]" {
                self.finish(shape, out);
            } else {
                self.chunk(shape, data, out);
            }
        }
    }

    fn start(&mut self, shape: &ResponseShape<'_>, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            self.whole_response_event(out, shape, "response.created", Status::InProgress);
            self.whole_response_event(out, shape, "response.in_progress", Status::InProgress);
        }
    }

    fn chunk(&mut self, shape: &ResponseShape<'_>, chunk: &[u8], out: &mut Vec<u8>) {
        self.start(shape, out);
        if let Some(usage_object) = member(chunk, "usage")
            && let Some(usage) = read_chat_usage(usage_object)
        {
            self.usage = Some(usage);
            self.cost = read_usage_cost(usage_object);
        }
        let mut first_choice = None;
        if let Some(choices) = member(chunk, "choices") {
            each_element(choices, |index, choice| {
                if index == 0 {
                    first_choice = Some(choice);
                }
            });
        }
        let Some(choice) = first_choice else { return };
        if string_is(member(choice, "finish_reason"), "length") {
            self.cut_by_length = true;
        }
        let Some(delta) = member(choice, "delta") else { return };
        if let Some(text) = string_content(member(delta, "content")).filter(|text| !text.is_empty()) {
            self.text_delta(shape, text, out);
        }
        if let Some(calls) = member(delta, "tool_calls").filter(|calls| kind_of(calls) == ValueKind::Array) {
            each_element(calls, |_, call| self.call_delta(shape, call, out));
        }
    }

    fn text_delta(&mut self, shape: &ResponseShape<'_>, text: &[u8], out: &mut Vec<u8>) {
        self.close_calls(out);
        let output_index = match self.message {
            Some(index) => index,
            None => {
                let index = self.outputs;
                self.outputs += 1;
                self.message = Some(index);
                self.text.clear();
                self.event(out, "response.output_item.added");
                write_output_index(out, index);
                out.extend_from_slice(b",\"item\":");
                write_message_item(out, shape, index, "in_progress", None);
                out.extend_from_slice(b"}\n\n");
                self.part_event(shape, out, "response.content_part.added", index, b"part", false);
                index
            }
        };
        self.event(out, "response.output_text.delta");
        write_part_address(out, shape, output_index);
        out.extend_from_slice(b",\"delta\":\"");
        out.extend_from_slice(text);
        out.extend_from_slice(b"\",\"logprobs\":[]}\n\n");
        self.text.extend_from_slice(text);
    }

    /// A `content_part` event: the part with the text so far (`with_text`) or empty.
    fn part_event(
        &mut self,
        shape: &ResponseShape<'_>,
        out: &mut Vec<u8>,
        kind: &str,
        output_index: u32,
        field: &[u8],
        with_text: bool,
    ) {
        self.event(out, kind);
        write_part_address(out, shape, output_index);
        out.extend_from_slice(b",\"");
        out.extend_from_slice(field);
        out.extend_from_slice(b"\":");
        write_text_part(out, if with_text { &self.text } else { b"" });
        out.extend_from_slice(b"}\n\n");
    }

    fn close_message(&mut self, shape: &ResponseShape<'_>, out: &mut Vec<u8>) {
        let Some(index) = self.message.take() else { return };
        self.event(out, "response.output_text.done");
        write_part_address(out, shape, index);
        out.extend_from_slice(b",\"text\":\"");
        out.extend_from_slice(&self.text);
        out.extend_from_slice(b"\",\"logprobs\":[]}\n\n");
        self.part_event(shape, out, "response.content_part.done", index, b"part", true);
        if !self.items.is_empty() {
            self.items.push(b',');
        }
        let item_start = self.items.len();
        write_message_item(&mut self.items, shape, index, "completed", Some(&self.text));
        self.event(out, "response.output_item.done");
        write_output_index(out, index);
        out.extend_from_slice(b",\"item\":");
        out.extend_from_slice(&self.items[item_start..]);
        out.extend_from_slice(b"}\n\n");
    }

    fn call_delta(&mut self, shape: &ResponseShape<'_>, call: &[u8], out: &mut Vec<u8>) {
        let chat_index = number(member(call, "index"));
        let function = member(call, "function").unwrap_or(b"{}");
        let slot = match self.open_calls[..self.open_count].iter().position(|open| open.chat_index == chat_index) {
            Some(slot) => slot,
            None => {
                self.close_message(shape, out);
                if self.open_count == MAX_OPEN_CALLS {
                    self.close_oldest_call(out);
                }
                let output_index = self.outputs;
                self.outputs += 1;
                let call_id = self.push_call_record(CALL_TEXT_TAG, string_content(member(call, "id")).unwrap_or(b""));
                let name =
                    self.push_call_record(CALL_TEXT_TAG, string_content(member(function, "name")).unwrap_or(b""));
                let tag = (0..=MAX_OPEN_CALLS as u8)
                    .find(|tag| self.open_calls[..self.open_count].iter().all(|open| open.tag != *tag))
                    .unwrap_or(0);
                let open = OpenCall { chat_index, output_index, call_id, name, tag };
                self.open_calls[self.open_count] = open;
                self.open_count += 1;
                self.event(out, "response.output_item.added");
                write_output_index(out, output_index);
                out.extend_from_slice(b",\"item\":");
                self.write_call_prefix_of(out, &open);
                out.extend_from_slice(b"\",\"status\":\"in_progress\"}}\n\n");
                self.open_count - 1
            }
        };
        let open = self.open_calls[slot];
        let Some(fragment) = string_content(member(function, "arguments")).filter(|f| !f.is_empty()) else {
            return;
        };
        self.event(out, "response.function_call_arguments.delta");
        self.write_call_address(out, &open);
        out.extend_from_slice(b",\"delta\":\"");
        out.extend_from_slice(fragment);
        out.extend_from_slice(b"\"}\n\n");
        self.push_call_record(open.tag, fragment);
    }

    /// Appends one record to `calls`; returns where its bytes are.
    fn push_call_record(&mut self, tag: u8, bytes: &[u8]) -> (usize, usize) {
        self.calls.push(tag);
        self.calls.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        let start = self.calls.len();
        self.calls.extend_from_slice(bytes);
        (start, self.calls.len())
    }

    /// Appends the arguments of the call tagged `tag` (its fragments in order) to `out`.
    fn write_arguments(calls: &[u8], tag: u8, out: &mut Vec<u8>) {
        let mut at = 0;
        while let Some(header) = calls.get(at..at + 5) {
            let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
            let bytes = calls.get(at + 5..at + 5 + len).unwrap_or(b"");
            if header[0] == tag {
                out.extend_from_slice(bytes);
            }
            at += 5 + len;
        }
    }

    fn call_text(&self, range: (usize, usize)) -> &[u8] {
        self.calls.get(range.0..range.1).unwrap_or(b"")
    }

    /// The call's item up to the opening quote of its arguments.
    fn write_call_prefix_of(&self, out: &mut Vec<u8>, open: &OpenCall) {
        write_call_prefix(out, self.call_text(open.call_id), self.call_text(open.name));
    }

    fn write_call_address(&self, out: &mut Vec<u8>, open: &OpenCall) {
        out.extend_from_slice(b",\"item_id\":\"fc_");
        out.extend_from_slice(self.call_text(open.call_id));
        out.push(b'"');
        write_output_index(out, open.output_index);
    }

    /// Closes every open call, in output order (their items join `items` in that order).
    fn close_calls(&mut self, out: &mut Vec<u8>) {
        while self.open_count > 0 {
            self.close_oldest_call(out);
        }
    }

    fn close_oldest_call(&mut self, out: &mut Vec<u8>) {
        if self.open_count == 0 {
            return;
        }
        let open = self.open_calls[0];
        self.open_calls.copy_within(1..self.open_count, 0);
        self.open_count -= 1;
        self.event(out, "response.function_call_arguments.done");
        self.write_call_address(out, &open);
        out.extend_from_slice(b",\"arguments\":\"");
        Self::write_arguments(&self.calls, open.tag, out);
        out.extend_from_slice(b"\"}\n\n");
        if !self.items.is_empty() {
            self.items.push(b',');
        }
        let item_start = self.items.len();
        let mut item = std::mem::take(&mut self.items);
        self.write_call_prefix_of(&mut item, &open);
        Self::write_arguments(&self.calls, open.tag, &mut item);
        item.extend_from_slice(CALL_SUFFIX_COMPLETED);
        self.items = item;
        self.event(out, "response.output_item.done");
        write_output_index(out, open.output_index);
        out.extend_from_slice(b",\"item\":");
        out.extend_from_slice(&self.items[item_start..]);
        out.extend_from_slice(b"}\n\n");
        if self.open_count == 0 {
            self.calls.clear();
        } else {
            Self::retire_tag(&mut self.calls, open.tag);
        }
    }

    /// Marks the records of a closed call's `tag` as not arguments, so the tag can be reused.
    fn retire_tag(calls: &mut [u8], tag: u8) {
        let mut at = 0;
        while let Some(header) = calls.get(at..at + 5) {
            let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
            if header[0] == tag {
                calls[at] = CALL_TEXT_TAG;
            }
            at += 5 + len;
        }
    }

    /// The chat stream ended well: every open output is closed, then the terminal event.
    fn finish(&mut self, shape: &ResponseShape<'_>, out: &mut Vec<u8>) {
        self.start(shape, out);
        self.close_message(shape, out);
        self.close_calls(out);
        let (kind, status) = if self.cut_by_length {
            ("response.incomplete", Status::Incomplete)
        } else {
            ("response.completed", Status::Completed)
        };
        self.whole_response_event(out, shape, kind, status);
        self.finished = true;
    }

    /// The stream failed after it started: one `error` event (SDK `ResponseErrorEvent`).
    pub fn write_error(&mut self, out: &mut Vec<u8>, code: &str, message: &str) {
        write_error_event(out, self.sequence_number, code, message);
        self.sequence_number += 1;
        self.finished = true;
    }
}

fn write_output_index(out: &mut Vec<u8>, output_index: u32) {
    out.extend_from_slice(b",\"output_index\":");
    push_decimal(out, u64::from(output_index));
}

/// `item_id`, `output_index` and `content_index` of a message's (only) text part.
fn write_part_address(out: &mut Vec<u8>, shape: &ResponseShape<'_>, output_index: u32) {
    out.extend_from_slice(b",\"item_id\":\"");
    write_message_id(out, shape, output_index);
    out.push(b'"');
    write_output_index(out, output_index);
    out.extend_from_slice(b",\"content_index\":0");
}
