//! The charge of an answer inside its usage object: `"cost_usd":"<decimal>"` (SPEC §8.2).
//!
//! A stream's head is sent long before the request is settled, so its charge cannot be a
//! header; instead the usage chunk a client asked for (`stream_options.include_usage`) carries
//! it as one more member of its `usage` object, and the Responses translation carries it on into
//! its terminal event. This module writes that member into an event already in a buffer and
//! reads it back; it never decides the figure (the caller applies settlement's own rule) and
//! never allocates beyond the buffer's growth.

use crate::money::{Nanos, USD_TEXT_MAX_BYTES, UsdText};
use crate::openai::chat::json_scan::{Span, object_members};

/// The member's name inside `usage`.
pub const COST_MEMBER: &str = "cost_usd";

/// Adds `"cost_usd":"<cost>"` as the last member of the top-level `usage` object of the JSON
/// object at `out[json_start..json_end]`. Returns whether it did: nothing changes when the
/// bytes are not one valid object or have no `usage` object.
pub fn append_usage_cost(out: &mut Vec<u8>, json_start: usize, json_end: usize, cost: Nanos) -> bool {
    let Some(json) = out.get(json_start..json_end) else { return false };
    let mut usage = None;
    let walked = object_members(json, |key, value| {
        if key == b"usage" && value.slice(json).first() == Some(&b'{') {
            usage = Some(value);
        }
    });
    let (Some(()), Some(usage)) = (walked, usage) else { return false };
    let empty = usage.inner().slice(json).iter().all(u8::is_ascii_whitespace);
    let closing_brace = json_start + usage.end as usize - 1;
    let text = cost.to_usd_text();
    let separator: &[u8] = if empty { b"\"" } else { b",\"" };
    let member =
        separator.iter().chain(COST_MEMBER.as_bytes()).chain(b"\":\"").chain(text.as_bytes()).chain(b"\"").copied();
    out.splice(closing_brace..closing_brace, member);
    true
}

/// The `cost_usd` text of a `usage` object, as this module wrote it (digits and one point),
/// for a translation to carry on unchanged.
pub fn read_usage_cost(usage: &[u8]) -> Option<CostText> {
    let mut found = None;
    object_members(usage, |key, value| {
        if key == COST_MEMBER.as_bytes() {
            found = Some(value);
        }
    })?;
    let inner = found.map(|value: Span| value.inner().slice(usage))?;
    let plain = !inner.is_empty()
        && inner.len() <= USD_TEXT_MAX_BYTES
        && inner.iter().all(|b| b.is_ascii_digit() || *b == b'.')
        && found.is_some_and(|value| value.slice(usage).first() == Some(&b'"'));
    plain.then(|| CostText::from_bytes(inner))
}

/// A cost as written in a usage object, kept on the stack.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CostText {
    bytes: [u8; USD_TEXT_MAX_BYTES],
    len: usize,
}

impl CostText {
    fn from_bytes(text: &[u8]) -> CostText {
        let mut cost = CostText { bytes: [0; USD_TEXT_MAX_BYTES], len: text.len() };
        cost.bytes[..text.len()].copy_from_slice(text);
        cost
    }

    pub fn of(amount: Nanos) -> CostText {
        let text: UsdText = amount.to_usd_text();
        CostText::from_bytes(text.as_bytes())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn appended(event: &str, cost: u64) -> (bool, String) {
        let mut out = b"data: ".to_vec();
        out.extend_from_slice(event.as_bytes());
        let end = out.len();
        out.extend_from_slice(b"\n\n");
        let done = append_usage_cost(&mut out, 6, end, Nanos(cost));
        (done, String::from_utf8(out).unwrap())
    }

    // Goal: the member lands inside the top-level usage object only, exactly once, and an event
    // without one (or not JSON) is left byte for byte.
    #[test]
    fn appends_cost_to_the_usage_object() {
        let event = r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
        assert_eq!(
            appended(event, 2_500),
            (
                true,
                "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5,\"cost_usd\":\"0.000002500\"}}\n\n"
                    .to_string()
            )
        );
        assert_eq!(
            appended(r#"{"usage":{ }}"#, 1),
            (true, "data: {\"usage\":{ \"cost_usd\":\"0.000000001\"}}\n\n".into())
        );
        let nested = r#"{"x":{"usage":{"a":1}},"choices":[]}"#;
        assert_eq!(appended(nested, 7), (false, format!("data: {nested}\n\n")));
        assert_eq!(appended(r#"{"usage":null}"#, 7), (false, "data: {\"usage\":null}\n\n".into()));
        assert_eq!(appended("[DONE]", 7), (false, "data: [DONE]\n\n".into()));
    }

    // Goal: what was appended reads back exactly; anything else is not taken for a cost.
    #[test]
    fn reads_back_what_it_wrote() {
        let (_, text) = appended(r#"{"usage":{"prompt_tokens":1}}"#, 123_456_789_012);
        let usage = &text["data: {\"usage\":".len()..text.len() - 3];
        assert_eq!(read_usage_cost(usage.as_bytes()).map(|c| c.as_bytes().to_vec()), Some(b"123.456789012".to_vec()));
        assert_eq!(read_usage_cost(br#"{"cost_usd":1.5}"#), None);
        assert_eq!(read_usage_cost(br#"{"cost_usd":"1e5"}"#), None);
        assert_eq!(read_usage_cost(br#"{"prompt_tokens":1}"#), None);
        assert_eq!(CostText::of(Nanos(0)).as_bytes(), b"0.000000000");
    }
}
