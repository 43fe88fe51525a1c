//! A valid Responses request rewritten as the Chat Completions body every backend speaks.
//!
//! Owns the mapping of SPEC §8.1 onto chat: `instructions` first as a system message, a string
//! `input` as one user message, message items as messages (`input_text` / `output_text` parts
//! as text parts, `input_image` as `image_url` parts), consecutive `function_call` items as one
//! assistant message with `tool_calls`, `function_call_output` items as tool messages, function
//! tools and a function `tool_choice` nested under `function`, `text.format` as
//! `response_format`, `reasoning.effort` as `reasoning_effort`, `max_output_tokens` as
//! `max_tokens` and, for streams, usage forced on. Every client value is copied byte for byte
//! (already checked by the parser), never decoded or re-serialized; keys the chat API has no
//! place for (`metadata`, `store`, `include`, ...) are left out, so what goes upstream and what
//! the hold counts are the same bytes. It never validates: give it only what
//! `parse_responses_request` accepted.

use crate::openai::chat::json_scan::ValueKind;
use crate::openai::responses::{ResponsesRequest, each_element, each_member, kind_of, member, string_is};

/// The separators (`,`) before the two members a stream adds to the chat body (`stream` and
/// `stream_options`): chat's parse takes each gateway member off the input bytes from its key
/// to its value, so these two commas, which the client never wrote, would count as input.
pub const STREAM_MEMBER_SEPARATOR_BYTES: u64 = 2;

/// Writes the chat-completion body equivalent to `request` (parsed from `body`) into `out`.
pub fn write_chat_body(body: &[u8], request: &ResponsesRequest<'_>, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(b"{\"model\":\"");
    out.extend_from_slice(request.model.as_bytes());
    out.extend_from_slice(b"\",\"messages\":[");
    let mut messages = Messages { out, count: 0, open_tool_calls: false };
    if let Some(instructions) = request.instructions {
        messages.start();
        messages.out.extend_from_slice(b"{\"role\":\"system\",\"content\":");
        messages.out.extend_from_slice(instructions.slice(body));
        messages.out.push(b'}');
    }
    let input = request.input.slice(body);
    if kind_of(input) == ValueKind::String {
        messages.start();
        messages.out.extend_from_slice(b"{\"role\":\"user\",\"content\":");
        messages.out.extend_from_slice(input);
        messages.out.push(b'}');
    } else {
        each_element(input, |_, item| messages.item(item));
    }
    messages.close_tool_calls();
    out.push(b']');
    if let Some(cap) = request.max_output_tokens {
        out.extend_from_slice(b",\"max_tokens\":");
        crate::digits::push_decimal(out, cap);
    }
    for (name, value) in [
        ("temperature", request.temperature),
        ("top_p", request.top_p),
        ("parallel_tool_calls", request.parallel_tool_calls),
        ("user", request.user),
    ] {
        if let Some(value) = value {
            write_key(out, name);
            out.extend_from_slice(value.slice(body));
        }
    }
    if request.stream {
        out.extend_from_slice(b",\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    }
    if let Some(tools) = request.tools {
        write_tools(out, tools.slice(body));
    }
    if let Some(choice) = request.tool_choice {
        write_tool_choice(out, choice.slice(body));
    }
    if let Some(format) = request.text.and_then(|text| member(text.slice(body), "format")) {
        write_response_format(out, format);
    }
    if let Some(effort) = request.reasoning.and_then(|reasoning| member(reasoning.slice(body), "effort"))
        && kind_of(effort) == ValueKind::String
    {
        write_key(out, "reasoning_effort");
        out.extend_from_slice(effort);
    }
    out.push(b'}');
}

fn write_key(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// The `messages` array being written.
struct Messages<'o> {
    out: &'o mut Vec<u8>,
    count: u32,
    /// An assistant message's `tool_calls` array is open (consecutive function calls join it).
    open_tool_calls: bool,
}

impl Messages<'_> {
    fn start(&mut self) {
        self.close_tool_calls();
        if self.count > 0 {
            self.out.push(b',');
        }
        self.count += 1;
    }

    fn close_tool_calls(&mut self) {
        if self.open_tool_calls {
            self.out.extend_from_slice(b"]}");
            self.open_tool_calls = false;
        }
    }

    fn item(&mut self, item: &[u8]) {
        let item_type = member(item, "type");
        let field = |name| member(item, name).unwrap_or(b"\"\"");
        if string_is(item_type, "function_call") {
            if self.open_tool_calls {
                self.out.push(b',');
            } else {
                self.start();
                self.out.extend_from_slice(b"{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[");
                self.open_tool_calls = true;
            }
            self.out.extend_from_slice(b"{\"id\":");
            self.out.extend_from_slice(field("call_id"));
            self.out.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
            self.out.extend_from_slice(field("name"));
            self.out.extend_from_slice(b",\"arguments\":");
            self.out.extend_from_slice(field("arguments"));
            self.out.extend_from_slice(b"}}");
            return;
        }
        self.start();
        if string_is(item_type, "function_call_output") {
            self.out.extend_from_slice(b"{\"role\":\"tool\",\"tool_call_id\":");
            self.out.extend_from_slice(field("call_id"));
            self.out.extend_from_slice(b",\"content\":");
            self.out.extend_from_slice(field("output"));
            self.out.push(b'}');
            return;
        }
        // The chat API's oldest spelling of a developer message, which every upstream accepts.
        let role = member(item, "role").unwrap_or(b"\"user\"");
        let role: &[u8] = if string_is(Some(role), "developer") { b"\"system\"" } else { role };
        self.out.extend_from_slice(b"{\"role\":");
        self.out.extend_from_slice(role);
        self.out.extend_from_slice(b",\"content\":");
        let content = field("content");
        if kind_of(content) == ValueKind::String {
            self.out.extend_from_slice(content);
        } else {
            self.out.push(b'[');
            let out = &mut *self.out;
            each_element(content, |index, part| {
                if index > 0 {
                    out.push(b',');
                }
                write_part(out, part);
            });
            self.out.push(b']');
        }
        self.out.push(b'}');
    }
}

/// One content part: text parts as chat text parts, an image as an `image_url` part.
fn write_part(out: &mut Vec<u8>, part: &[u8]) {
    if string_is(member(part, "type"), "input_image") {
        out.extend_from_slice(b"{\"type\":\"image_url\",\"image_url\":{\"url\":");
        out.extend_from_slice(member(part, "image_url").unwrap_or(b"\"\""));
        if let Some(detail) = member(part, "detail").filter(|detail| kind_of(detail) == ValueKind::String) {
            out.extend_from_slice(b",\"detail\":");
            out.extend_from_slice(detail);
        }
        out.extend_from_slice(b"}}");
    } else {
        out.extend_from_slice(b"{\"type\":\"text\",\"text\":");
        out.extend_from_slice(member(part, "text").unwrap_or(b"\"\""));
        out.push(b'}');
    }
}

/// `{type:function,name,description,parameters,strict}` -> `{type:function,function:{...}}`.
fn write_tools(out: &mut Vec<u8>, tools: &[u8]) {
    out.extend_from_slice(b",\"tools\":[");
    each_element(tools, |index, tool| {
        if index > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"type\":\"function\",\"function\":{");
        write_members_but_type(out, tool);
        out.extend_from_slice(b"}}");
    });
    out.push(b']');
}

/// A string choice as is; `{type:function,name}` -> `{type:function,function:{name}}`.
fn write_tool_choice(out: &mut Vec<u8>, choice: &[u8]) {
    write_key(out, "tool_choice");
    if kind_of(choice) == ValueKind::Object {
        out.extend_from_slice(b"{\"type\":\"function\",\"function\":{\"name\":");
        out.extend_from_slice(member(choice, "name").unwrap_or(b"\"\""));
        out.extend_from_slice(b"}}");
    } else {
        out.extend_from_slice(choice);
    }
}

/// `text.format`: `json_schema` (name, schema, strict, description) and `json_object` map to
/// `response_format`; plain `text` is the default and needs nothing.
fn write_response_format(out: &mut Vec<u8>, format: &[u8]) {
    let format_type = member(format, "type");
    if string_is(format_type, "json_object") {
        out.extend_from_slice(b",\"response_format\":{\"type\":\"json_object\"}");
    } else if string_is(format_type, "json_schema") {
        out.extend_from_slice(b",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{");
        write_members_but_type(out, format);
        out.extend_from_slice(b"}}");
    }
}

/// The members of `object` other than `type`, as written, comma-separated (the inside of an
/// object: a Responses tool or format nested one level down in its chat form).
fn write_members_but_type(out: &mut Vec<u8>, object: &[u8]) {
    let mut first = true;
    each_member(object, |key, value| {
        if key == b"type" {
            return;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.push(b'"');
        out.extend_from_slice(key);
        out.extend_from_slice(b"\":");
        out.extend_from_slice(value);
    });
}
