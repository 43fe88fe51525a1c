//! The usage object of an upstream answer, read two ways to one result: alone, from its text
//! (`parse_usage`, for Groq's `x_groq.usage`), and member by member while the rewrite walks
//! the answer (`UsageReader`, for the top-level `usage`, so the answer is walked once).
//!
//! Owns which members count (`prompt_tokens` and `completion_tokens`, both required;
//! `prompt_tokens_details.cached_tokens` and `completion_tokens_details.reasoning_tokens` when
//! given; the last of each repeated member wins) and the integer reading. It never walks JSON
//! itself beyond `text_members`, never writes, never allocates.

use crate::money::TokenUsage;
use crate::openai::chat::json_scan::{Content, text_members};

/// A non-negative integer JSON number, from the value's raw text. A JSON value never starts
/// with `+`, so this reads exactly what `str::parse::<u64>` would: digits only, no overflow.
pub(super) fn count(raw: &[u8]) -> Option<u64> {
    if raw.is_empty() {
        return None;
    }
    raw.iter().try_fold(0u64, |total, &byte| {
        let digit = u64::from(byte.wrapping_sub(b'0'));
        if digit > 9 { None } else { total.checked_mul(10)?.checked_add(digit) }
    })
}

/// The members of a usage object that count.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum UsageMember {
    Prompt,
    Completion,
    PromptDetails,
    CompletionDetails,
    Other,
}

impl UsageMember {
    pub(super) fn of(key: Content<'_>) -> UsageMember {
        const NAMES: [(&[u8], UsageMember); 4] = [
            (b"prompt_tokens", UsageMember::Prompt),
            (b"completion_tokens", UsageMember::Completion),
            (b"prompt_tokens_details", UsageMember::PromptDetails),
            (b"completion_tokens_details", UsageMember::CompletionDetails),
        ];
        key.pick(&NAMES).unwrap_or(UsageMember::Other)
    }

    /// The count a details member holds.
    fn detail_key(self) -> &'static [u8] {
        if self == UsageMember::PromptDetails { b"cached_tokens" } else { b"reasoning_tokens" }
    }
}

/// A usage object read as the walk meets its members: the walk calls `member` for each of
/// its own members, `enter_details` when a details member's value is an object, `detail` for
/// each member of that object and `leave_details` when it closes. `finish` then says what
/// `parse_usage` says of the same text.
#[derive(Copy, Clone, Debug, Default)]
pub(super) struct UsageReader {
    prompt: Option<u64>,
    completion: Option<u64>,
    cached: u64,
    reasoning: u64,
    /// The details object being read (directly inside it) and the count found in it so far.
    details: Option<(UsageMember, Option<u64>)>,
}

impl UsageReader {
    /// A member of the usage object with the value `raw` (a container's raw text counts as
    /// no number, as any text that is not an integer).
    pub(super) fn member(&mut self, member: UsageMember, raw: &[u8]) {
        match member {
            UsageMember::Prompt => self.prompt = count(raw),
            UsageMember::Completion => self.completion = count(raw),
            // A details member that is not an object holds no count.
            UsageMember::PromptDetails => self.cached = 0,
            UsageMember::CompletionDetails => self.reasoning = 0,
            UsageMember::Other => {}
        }
    }

    /// A details member (`member`) whose value is an object, now entered.
    pub(super) fn enter_details(&mut self, member: UsageMember) {
        self.details = Some((member, None));
    }

    /// Whether `key`, a key of the details object being read, is the count it holds.
    pub(super) fn is_detail_count(&self, key: Content<'_>) -> bool {
        self.details.is_some_and(|(member, _)| key.is(member.detail_key()))
    }

    /// The value of the details object's count member.
    pub(super) fn detail(&mut self, raw: &[u8]) {
        if let Some((_, found)) = &mut self.details {
            *found = count(raw);
        }
    }

    /// The details object being read has closed (nothing if none was).
    pub(super) fn leave_details(&mut self) {
        if let Some((member, found)) = self.details.take() {
            let tokens = found.unwrap_or(0);
            match member {
                UsageMember::PromptDetails => self.cached = tokens,
                _ => self.reasoning = tokens,
            }
        }
    }

    pub(super) fn finish(&self) -> Option<TokenUsage> {
        Some(TokenUsage {
            prompt_tokens: self.prompt?,
            completion_tokens: self.completion?,
            cached_prompt_tokens: self.cached,
            reasoning_tokens: self.reasoning,
        })
    }
}

/// The one count `key` of the object `json` (`prompt_tokens_details.cached_tokens`, ...).
fn nested_count(json: &str, key: &[u8]) -> Option<u64> {
    let mut found = None;
    text_members(json, |member, value| {
        if member.is(json.as_bytes(), key) {
            found = count(value.slice(json.as_bytes()));
        }
    })?;
    found
}

/// Reads a usage object from its text alone (Groq's `x_groq.usage` is the same shape as
/// OpenAI's `usage`). `None` when it is not an object or lacks one of the two required counts.
/// Written apart from `UsageReader`, the two are held to the same answers by the tests.
pub(super) fn parse_usage(json: &str) -> Option<TokenUsage> {
    let (mut prompt, mut completion) = (None, None);
    let mut usage = TokenUsage::default();
    let bytes = json.as_bytes();
    text_members(json, |key, value| {
        let raw = value.slice(bytes);
        match UsageMember::of(key.content(bytes)) {
            UsageMember::Prompt => prompt = count(raw),
            UsageMember::Completion => completion = count(raw),
            UsageMember::PromptDetails => {
                usage.cached_prompt_tokens = nested_count(value.text(json), b"cached_tokens").unwrap_or(0);
            }
            UsageMember::CompletionDetails => {
                usage.reasoning_tokens = nested_count(value.text(json), b"reasoning_tokens").unwrap_or(0);
            }
            UsageMember::Other => {}
        }
    })?;
    usage.prompt_tokens = prompt?;
    usage.completion_tokens = completion?;
    Some(usage)
}
