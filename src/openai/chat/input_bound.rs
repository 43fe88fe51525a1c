//! The input bound of SPEC §3 and §9: what an upstream can bill for a chat request's input, at
//! most, and the media parts that bound depends on.
//!
//! Owns the arithmetic (body bytes the walk in `super` counted, each image or audio part at the
//! model's allowance, template overhead) and the choice of which media part a model refuses.
//! Pure functions of a parsed request and a model's allowance: no IO, no allocation, no panic,
//! and every sum saturates. It never measures the body itself (that is the single pass in
//! `super`) and never decides prices or admission.

use std::fmt;

use crate::limits::{PER_MESSAGE_OVERHEAD_TOKENS, PER_REQUEST_OVERHEAD_TOKENS};

/// Where a content part sits: `messages[message].content[part]`, both counted from 0. Its
/// `Display` is that text, the `param` of a refusal (rendered only on the refusal path).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PartPosition {
    pub message: u32,
    pub part: u32,
}

impl fmt::Display for PartPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "messages[{}].content[{}]", self.message, self.part)
    }
}

/// A kind of content part that is not text: the upstream bills it by its own measure, not by
/// its bytes (a base64 data URL is far longer than the tokens it costs, a short remote URL far
/// shorter).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Media {
    /// `{"type":"image_url","image_url":{...}}`
    Image,
    /// `{"type":"input_audio","input_audio":{...}}`
    Audio,
}

impl Media {
    /// What the part is, in a refusal's message.
    pub fn noun(self) -> &'static str {
        match self {
            Media::Image => "image",
            Media::Audio => "audio",
        }
    }
}

/// The media parts of a request's message contents: how many of each kind, and where the first
/// of each is (for a refusal that names it).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct MediaParts {
    pub image_parts: u64,
    pub audio_parts: u64,
    pub first_image: Option<PartPosition>,
    pub first_audio: Option<PartPosition>,
}

/// What one media part may cost at most, in input tokens, for one model (registry keys
/// `max_image_input_tokens` and `max_audio_input_tokens`); `None`: the model refuses such parts.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct MediaAllowance {
    pub image_tokens: Option<u64>,
    pub audio_tokens: Option<u64>,
}

/// The first media part (in body order) of a kind `allowance` has no figure for: the model
/// cannot be asked for it, because nothing bounds what the upstream would bill.
pub fn unsupported_media_part(media: &MediaParts, allowance: MediaAllowance) -> Option<(Media, PartPosition)> {
    let image = media.first_image.filter(|_| allowance.image_tokens.is_none()).map(|at| (Media::Image, at));
    let audio = media.first_audio.filter(|_| allowance.audio_tokens.is_none()).map(|at| (Media::Audio, at));
    match (image, audio) {
        (Some(image), Some(audio)) => Some(if image.1 <= audio.1 { image } else { audio }),
        (one, other) => one.or(other),
    }
}

/// The input upper bound of SPEC §3 and §9, in tokens: what the upstream can bill for this
/// request's input, at most.
///
/// `input_bytes` (the body less the gateway's own scalars and the media payloads), because a
/// text token is at least one byte of what the upstream renders, and no rendered text is longer
/// than the raw JSON it came from (an escape is never shorter than what it decodes to); plus
/// each media part at its allowance; plus the template's overhead per message and per request.
/// A media kind without an allowance counts as unbounded (`u64::MAX`, which no bucket admits):
/// `unsupported_media_part` refuses such requests first. Saturates, never wraps.
pub fn upper_bound_tokens(input_bytes: u64, message_count: u64, media: &MediaParts, allowance: MediaAllowance) -> u64 {
    let per_part = |parts: u64, tokens: Option<u64>| parts.saturating_mul(tokens.unwrap_or(u64::MAX));
    input_bytes
        .saturating_add(per_part(media.image_parts, allowance.image_tokens))
        .saturating_add(per_part(media.audio_parts, allowance.audio_tokens))
        .saturating_add(PER_MESSAGE_OVERHEAD_TOKENS.saturating_mul(message_count))
        .saturating_add(PER_REQUEST_OVERHEAD_TOKENS)
}
