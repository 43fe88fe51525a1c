//! The one pass behind `rewrite_object`: the answer's bytes checked against the strict JSON
//! grammar of `json_scan` (the same strings, numbers, literals, whitespace and nesting bound),
//! every model-name site replaced as it is met, and what the gateway reads of the top level
//! (`usage`, `choices`, `error`, `x_groq`) noted on the way.
//!
//! Written as one loop over a local position, not as calls into a `Scanner`: a member costs a
//! few comparisons and the string skip, with no cursor state written back and forth. It owns no
//! grammar of its own beyond the structure (brackets, commas, colons); strings, numbers and
//! escapes are `json_scan`'s functions. It never allocates, never recurses (containers are
//! tracked on a fixed stack) and never panics, whatever the input.

use super::usage::{UsageMember, UsageReader};
use crate::json::write_json_escaped;
use crate::limits::MAX_JSON_DEPTH;
use crate::money::TokenUsage;
use crate::openai::chat::json_scan::{
    Content, Span, ValueKind, content_eq, number_end, string_end, value_at, whitespace_end,
};

/// The kind of the value whose first byte is `byte`, if any starts so.
#[inline(always)]
fn kind_of(byte: u8) -> Option<ValueKind> {
    match byte {
        b'{' => Some(ValueKind::Object),
        b'[' => Some(ValueKind::Array),
        b'"' => Some(ValueKind::String),
        b'-' | b'0'..=b'9' => Some(ValueKind::Number),
        b't' => Some(ValueKind::True),
        b'f' => Some(ValueKind::False),
        b'n' => Some(ValueKind::Null),
        _ => None,
    }
}

/// How the `choices` member of an object looked.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Choices {
    #[default]
    Absent,
    /// Present but not an array.
    NotArray,
    /// `[]` (a usage-only chunk).
    Empty,
    NonEmpty,
}

/// The top-level members the gateway reads.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum Member {
    Usage,
    Choices,
    Error,
    XGroq,
    Other,
}

impl Member {
    fn of(key: Content<'_>) -> Member {
        // Without an escape the key is its own text: one match on it, its length first.
        if !key.escaped {
            return match key.raw {
                b"usage" => Member::Usage,
                b"choices" => Member::Choices,
                b"error" => Member::Error,
                b"x_groq" => Member::XGroq,
                _ => Member::Other,
            };
        }
        [Member::Usage, Member::Choices, Member::Error, Member::XGroq]
            .into_iter()
            .find(|member| key.is(member.name()))
            .unwrap_or(Member::Other)
    }

    fn name(self) -> &'static [u8] {
        match self {
            Member::Usage => b"usage",
            Member::Choices => b"choices",
            Member::Error => b"error",
            Member::XGroq => b"x_groq",
            Member::Other => b"",
        }
    }
}

/// Where the members `Member` names sit in the object (the last of each, as JSON parsers keep,
/// except `error`: any non-null one counts).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct TopLevel {
    /// What the last top-level `usage` said (`None` when it was not an object).
    pub(super) usage: Option<TokenUsage>,
    pub(super) choices: Choices,
    pub(super) error: bool,
    pub(super) x_groq: Option<Span>,
}

impl TopLevel {
    /// A top-level member's whole value; `usage` read it when it was the `usage` object.
    fn record(&mut self, json: &[u8], member: Member, kind: ValueKind, span: Span, usage: &UsageReader) {
        match member {
            Member::Usage => self.usage = if kind == ValueKind::Object { usage.finish() } else { None },
            Member::Choices => {
                self.choices = match kind {
                    ValueKind::Array => {
                        let inside = span.slice(json).get(1..).unwrap_or(&[]);
                        match inside.iter().find(|b| !b.is_ascii_whitespace()) {
                            Some(b']') => Choices::Empty,
                            _ => Choices::NonEmpty,
                        }
                    }
                    _ => Choices::NotArray,
                }
            }
            Member::Error => self.error |= kind != ValueKind::Null,
            Member::XGroq => self.x_groq = (kind == ValueKind::Object).then_some(span),
            Member::Other => {}
        }
    }
}

/// Appends `json[*copied..span.start]` and then the public id as a JSON string in place of the
/// span; `*copied` moves past the span.
pub(super) fn put_public(out: &mut Vec<u8>, json: &[u8], copied: &mut usize, span: Span, public: &str) {
    out.extend_from_slice(json.get(*copied..span.start as usize).unwrap_or(&[]));
    out.push(b'"');
    write_json_escaped(out, public);
    out.push(b'"');
    *copied = span.end as usize;
}

/// Whether a string's raw content decodes to `name` (never when `name` is empty). Without an
/// escape only the same length can match, and an escape makes the raw text longer.
#[inline(always)]
fn is_name(raw: &[u8], escaped: bool, name: &[u8]) -> bool {
    if raw.len() == name.len() {
        !name.is_empty() && raw == name
    } else {
        escaped && raw.len() > name.len() && !name.is_empty() && content_eq(raw, name)
    }
}

/// The first byte at or after `at` that is not whitespace, and where it is. Answers seldom
/// hold whitespace between tokens, so the byte at `at` is looked at first.
#[inline(always)]
fn token_at(json: &[u8], at: usize) -> Option<(usize, u8)> {
    match json.get(at) {
        Some(&byte) if byte > b' ' => Some((at, byte)),
        _ => {
            let at = whitespace_end(json, at);
            json.get(at).map(|&byte| (at, byte))
        }
    }
}

/// Where the literal `word` ends if it starts at `bytes[at]`.
#[inline(always)]
fn literal_end(bytes: &[u8], at: usize, word: &[u8]) -> Option<usize> {
    bytes.get(at..at + word.len()).filter(|found| *found == word).map(|_| at + word.len())
}

/// What the walk knows of where it is: the open containers, the top-level member being walked
/// and the usage read so far.
struct Walk {
    /// Bit i is set when the container open at level i + 1 is an array (clear: an object);
    /// the top-level object is level 1.
    arrays: u64,
    /// How many containers are open, at most `MAX_JSON_DEPTH`.
    open: usize,
    /// The top-level member whose container value is being walked, its kind and start.
    walking: Option<(Member, ValueKind, usize)>,
    /// Inside the top-level `usage` object (its members at level 2, a details object's at 3).
    in_usage: bool,
    usage: UsageReader,
    top: TopLevel,
}

/// What a member's key said, for its value.
#[derive(Copy, Clone)]
struct KeyFacts {
    named_model: bool,
    member: Member,
    usage_member: UsageMember,
    detail_count: bool,
}

const NO_KEY: KeyFacts =
    KeyFacts { named_model: false, member: Member::Other, usage_member: UsageMember::Other, detail_count: false };

// One bit per level of nesting.
const _: () = assert!(MAX_JSON_DEPTH <= 64);

impl Walk {
    /// The byte that closes the innermost open container.
    #[inline(always)]
    fn closer(&self) -> u8 {
        if (self.arrays >> (self.open - 1)) & 1 == 1 { b']' } else { b'}' }
    }

    /// A container value of kind `kind` starting at `start` was entered at level `self.open`.
    #[inline(always)]
    fn entered(&mut self, kind: ValueKind, start: usize, key: KeyFacts) {
        if self.open == 2 {
            self.walking = Some((key.member, kind, start));
            if key.member == Member::Usage {
                self.usage = UsageReader::default();
                self.in_usage = kind == ValueKind::Object;
            }
        } else if self.in_usage && self.open == 3 {
            let details = matches!(key.usage_member, UsageMember::PromptDetails | UsageMember::CompletionDetails);
            if details && kind == ValueKind::Object {
                self.usage.enter_details(key.usage_member);
            } else {
                // A container is no count, and a details array holds none.
                self.usage.member(key.usage_member, b"[");
            }
        } else if key.detail_count {
            self.usage.detail(b"[");
        }
    }

    /// The container open at level `self.open` closed just before `end`.
    #[inline(always)]
    fn closed(&mut self, json: &[u8], end: usize) {
        if self.in_usage && self.open == 3 {
            self.usage.leave_details();
        }
        self.open -= 1;
        if self.open == 1
            && let Some((member, kind, start)) = self.walking.take()
        {
            self.in_usage = false;
            self.top.record(json, member, kind, Span::new(start, end), &self.usage);
        }
    }

    /// A scalar value `span` of kind `kind` was read at level `self.open`.
    #[inline(always)]
    fn scalar(&mut self, json: &[u8], kind: ValueKind, span: Span, key: KeyFacts) {
        if self.open == 1 {
            self.top.record(json, key.member, kind, span, &self.usage);
        } else if self.in_usage && self.open == 2 {
            self.usage.member(key.usage_member, span.slice(json));
        } else if key.detail_count {
            self.usage.detail(span.slice(json));
        }
    }
}

/// The walk behind `rewrite_object`, over bytes its caller checked to be UTF-8 and shorter
/// than 4 GiB. `None` if they are not one valid JSON object (what was written to `out` is
/// then the caller's to cut).
/// Model-name sites get `public`; strings equal to `upstream` are model-name sites.
pub(super) fn copy_rewritten(json: &[u8], public: &str, upstream: &str, out: &mut Vec<u8>) -> Option<TopLevel> {
    let upstream = upstream.as_bytes();
    // Without an escape only the same length can match (an escape makes the raw longer).
    let is_upstream = |raw: &[u8], escaped: bool| is_name(raw, escaped, upstream);
    let mut at = whitespace_end(json, 0);
    if json.get(at) != Some(&b'{') {
        return None;
    }
    at += 1;
    let mut walk = Walk {
        arrays: 0,
        open: 1,
        walking: None,
        in_usage: false,
        usage: UsageReader::default(),
        top: TopLevel::default(),
    };
    let mut copied = 0usize;
    // Right after an opening bracket: the container may close at once.
    let mut fresh = true;
    'items: loop {
        // At the start of an item of the innermost open container (after `{`, `[` or `,`).
        let close = walk.closer();
        let (token, mut byte) = token_at(json, at)?;
        at = token;
        if fresh && byte == close {
            at += 1;
            walk.closed(json, at);
        } else {
            let mut key = NO_KEY;
            if close == b'}' {
                if byte != b'"' {
                    return None;
                }
                let key_start = at;
                let (key_end, escaped) = string_end(json, at).ok()?;
                let raw = json.get(key_start + 1..key_end - 1)?;
                if is_upstream(raw, escaped) {
                    put_public(out, json, &mut copied, Span::new(key_start, key_end), public);
                }
                let content = Content { raw, escaped };
                key.named_model = content.is(b"model");
                if walk.open == 1 {
                    key.member = Member::of(content);
                } else if walk.in_usage && walk.open == 2 {
                    key.usage_member = UsageMember::of(content);
                } else if walk.in_usage && walk.open == 3 {
                    key.detail_count = walk.usage.is_detail_count(content);
                }
                let (colon, after_key) = token_at(json, key_end)?;
                if after_key != b':' {
                    return None;
                }
                (at, byte) = token_at(json, colon + 1)?;
            }
            let value_start = at;
            let kind = kind_of(byte)?;
            if walk.open == 1 && key.named_model {
                // A top-level `model`: the public id, whatever the upstream put there.
                let span = if kind == ValueKind::String {
                    Span::new(at, string_end(json, at).ok()?.0)
                } else {
                    value_at(json, at, 2).ok()?.1
                };
                put_public(out, json, &mut copied, span, public);
                at = span.end as usize;
            } else {
                match kind {
                    ValueKind::Object | ValueKind::Array => {
                        if walk.open >= MAX_JSON_DEPTH {
                            return None;
                        }
                        if kind == ValueKind::Array {
                            walk.arrays |= 1 << walk.open;
                        } else {
                            walk.arrays &= !(1 << walk.open);
                        }
                        walk.open += 1;
                        walk.entered(kind, value_start, key);
                        at += 1;
                        fresh = true;
                        continue 'items;
                    }
                    ValueKind::String => {
                        let (end, escaped) = string_end(json, at).ok()?;
                        if key.named_model || is_upstream(json.get(at + 1..end - 1)?, escaped) {
                            put_public(out, json, &mut copied, Span::new(at, end), public);
                        }
                        at = end;
                    }
                    ValueKind::Number => at = number_end(json, at).ok()?,
                    ValueKind::True => at = literal_end(json, at, b"true")?,
                    ValueKind::False => at = literal_end(json, at, b"false")?,
                    ValueKind::Null => at = literal_end(json, at, b"null")?,
                }
                walk.scalar(json, kind, Span::new(value_start, at), key);
            }
        }
        // After a complete value: a comma starts the next item, a closer ends its container.
        loop {
            if walk.open == 0 {
                break 'items;
            }
            let (token, byte) = token_at(json, at)?;
            at = token;
            if byte == b',' {
                at += 1;
                fresh = false;
                continue 'items;
            }
            if byte != walk.closer() {
                return None;
            }
            at += 1;
            walk.closed(json, at);
        }
    }
    if whitespace_end(json, at) != json.len() {
        return None;
    }
    out.extend_from_slice(json.get(copied..).unwrap_or(&[]));
    Some(walk.top)
}

#[cfg(test)]
mod tests;
