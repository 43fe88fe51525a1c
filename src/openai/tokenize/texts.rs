//! Which text of a chat body the tokenizer counts: every message's `content` given as a string,
//! and the `text` of every content part of type `text`, decoded from JSON.
//!
//! Everything else (roles, names, tool calls, keys and punctuation, unknown members, the
//! template) stays in the bound as bytes, exactly as the byte bound counts it, and media parts
//! stay at their allowance: only the counted texts trade their bytes for their tokens. That
//! slack is what covers a template joining parts with a separator. Runs only on the second
//! stage (a request the byte bound would refuse or clamp), so it may allocate; it never
//! decides anything and never reads more than `budget_bytes` of text into the count.

use serde_json::Value;

/// The texts to count, and their decoded bytes (what the byte bound counted for them, at most).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MessageTexts {
    pub pieces: Vec<String>,
    /// Sum of the pieces' UTF-8 lengths.
    pub text_bytes: u64,
}

/// The message texts of a chat `body` (already validated by `openai::chat::parse_chat_request`),
/// in body order, up to `budget_bytes` in all: a piece that would pass the budget, and every
/// piece after it, is left to the byte bound. `None` if the body is not the JSON it should be.
pub fn message_texts(body: &[u8], budget_bytes: u64) -> Option<MessageTexts> {
    let root: Value = serde_json::from_slice(body).ok()?;
    let messages = root.get("messages")?.as_array()?;
    let mut texts = MessageTexts::default();
    let mut take = |text: &String| -> bool {
        let bytes = text.len() as u64;
        if texts.text_bytes.saturating_add(bytes) > budget_bytes {
            return false;
        }
        texts.text_bytes += bytes;
        texts.pieces.push(text.to_string());
        true
    };
    for message in messages {
        // Every text of the message taken, in order, until one would pass the budget.
        let taken = match message.get("content") {
            Some(Value::String(text)) => take(text),
            Some(Value::Array(parts)) => parts.iter().filter_map(text_of_part).all(&mut take),
            _ => true,
        };
        if !taken {
            break;
        }
    }
    Some(texts)
}

/// The text of a content part of type `text`.
fn text_of_part(part: &Value) -> Option<&String> {
    if part.get("type").and_then(Value::as_str) != Some("text") {
        return None;
    }
    match part.get("text") {
        Some(Value::String(text)) => Some(text),
        _ => None,
    }
}
