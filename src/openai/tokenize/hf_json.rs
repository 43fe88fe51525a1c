//! Loading a Hugging Face `tokenizer.json` into the same BPE core the embedded tables use.
//!
//! What is supported, precisely: `model.type = "BPE"` over byte-level symbols (the GPT-2 byte
//! to character mapping, as Llama 3, Qwen 2 and GPT-NeoX-style files use), whose `merges` are
//! listed in the order of the ids they produce (a tiktoken-style vocabulary: an id is its merge
//! rank, as in Llama 3's file); pre-tokenizer either `ByteLevel` alone (with its GPT-2 split
//! pattern) or a `Sequence` of one `Split` by `Regex` (behaviour `Isolated`, not inverted) and a
//! `ByteLevel` without its own pattern; no `add_prefix_space`; no normalizer. Anything else is
//! refused with the reason, so `check-config` fails rather than the gateway miscounting (a
//! SentencePiece/Unigram or WordPiece file is the operator's cue to keep `"bytes"`). Added
//! (special) tokens are ignored: their spelling in a message counts as plain text, which is
//! never fewer tokens than the upstream makes of it. Runs at start-up only; never on a worker.

use rustc_hash::FxHashMap;
use serde_json::Value;
use tiktoken_rs::{CoreBPE, Rank};

/// GPT-2's split pattern, which a `ByteLevel` pre-tokenizer with `use_regex` applies.
const GPT2_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// The byte each character of a byte-level symbol stands for (GPT-2's `bytes_to_unicode`,
/// inverted): printable Latin-1 characters stand for themselves, the other bytes for the
/// characters from U+0100 on, in byte order.
fn byte_of_symbol_char(c: char) -> Option<u8> {
    let code = c as u32;
    let printable = |b: u32| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    if code < 0x100 {
        return printable(code).then_some(code as u8);
    }
    let index = code - 0x100;
    (0u32..=255).filter(|b| !printable(*b)).nth(index as usize).map(|b| b as u8)
}

/// The bytes a byte-level symbol (a vocabulary key) stands for.
fn symbol_bytes(symbol: &str) -> Option<Vec<u8>> {
    symbol.chars().map(byte_of_symbol_char).collect()
}

/// The split pattern the pre-tokenizer section describes, or why it is not supported.
fn split_pattern(pre: &Value) -> Result<String, String> {
    let kind = pre.get("type").and_then(Value::as_str).unwrap_or("");
    let byte_level_ok = |step: &Value, own_regex: bool| -> Result<(), String> {
        if step.get("add_prefix_space").and_then(Value::as_bool) == Some(true) {
            return Err("pre_tokenizer ByteLevel with add_prefix_space is not supported".into());
        }
        let uses_regex = step.get("use_regex").and_then(Value::as_bool).unwrap_or(true);
        if uses_regex != own_regex {
            return Err("pre_tokenizer ByteLevel must split with its own pattern only when it stands alone".into());
        }
        Ok(())
    };
    match kind {
        "ByteLevel" => {
            byte_level_ok(pre, true)?;
            Ok(GPT2_PATTERN.to_string())
        }
        "Sequence" => {
            let steps =
                pre.get("pretokenizers").and_then(Value::as_array).ok_or("pre_tokenizer Sequence without steps")?;
            let [split, byte_level] = steps.as_slice() else {
                return Err("pre_tokenizer Sequence must be exactly a Split and a ByteLevel".into());
            };
            if split.get("type").and_then(Value::as_str) != Some("Split")
                || byte_level.get("type").and_then(Value::as_str) != Some("ByteLevel")
            {
                return Err("pre_tokenizer Sequence must be exactly a Split and a ByteLevel".into());
            }
            byte_level_ok(byte_level, false)?;
            let behavior = split.get("behavior").and_then(Value::as_str);
            let inverted = split.get("invert").and_then(Value::as_bool).unwrap_or(false);
            if behavior != Some("Isolated") || inverted {
                return Err("pre_tokenizer Split must be Isolated and not inverted".into());
            }
            let pattern = split.get("pattern").and_then(|p| p.get("Regex")).and_then(Value::as_str);
            pattern.map(str::to_string).ok_or_else(|| "pre_tokenizer Split needs a Regex pattern".into())
        }
        _ => Err(format!("pre_tokenizer {kind:?} is not supported (ByteLevel, or Split + ByteLevel)")),
    }
}

/// The two symbols of one `merges` entry (`"a b"` or `["a", "b"]`).
fn merge_pair(entry: &Value) -> Option<(&str, &str)> {
    match entry {
        Value::String(text) => text.split_once(' '),
        Value::Array(pair) => match pair.as_slice() {
            [Value::String(left), Value::String(right)] => Some((left, right)),
            _ => None,
        },
        _ => None,
    }
}

/// A `tokenizer.json` file's text as a BPE core, or why it cannot be one.
pub fn load(file: &[u8]) -> Result<CoreBPE, String> {
    let root: Value = serde_json::from_slice(file).map_err(|error| format!("not JSON: {error}"))?;
    if root.get("normalizer").is_some_and(|n| !n.is_null()) {
        return Err("a normalizer is not supported".into());
    }
    let model = root.get("model").ok_or("no model section")?;
    if model.get("type").and_then(Value::as_str) != Some("BPE") {
        return Err("model.type must be \"BPE\"".into());
    }
    let pre = root.get("pre_tokenizer").filter(|p| !p.is_null()).ok_or("no pre_tokenizer")?;
    let pattern = split_pattern(pre)?;
    let vocab = model.get("vocab").and_then(Value::as_object).ok_or("model.vocab must be an object")?;
    let mut ranks: FxHashMap<Vec<u8>, Rank> = FxHashMap::default();
    for (symbol, id) in vocab {
        let id = id.as_u64().and_then(|id| Rank::try_from(id).ok()).ok_or("a vocabulary id is not a small integer")?;
        let bytes = symbol_bytes(symbol).ok_or_else(|| format!("vocabulary entry {symbol:?} is not byte-level"))?;
        ranks.insert(bytes, id);
    }
    if let Some(missing) = (0u8..=255).find(|byte| !ranks.contains_key(&vec![*byte])) {
        return Err(format!("the vocabulary has no token for byte {missing}"));
    }
    // A tiktoken-style core merges the pair whose result has the lowest id: the same as the
    // file's merge order exactly when that order follows the ids.
    let merges = model.get("merges").and_then(Value::as_array).ok_or("model.merges must be an array")?;
    let mut last_id: Option<Rank> = None;
    for entry in merges {
        let (left, right) = merge_pair(entry).ok_or("a merges entry is not a pair of symbols")?;
        let merged = format!("{left}{right}");
        let id = vocab
            .get(&merged)
            .and_then(Value::as_u64)
            .and_then(|id| Rank::try_from(id).ok())
            .ok_or_else(|| format!("merge {left:?} {right:?} makes no vocabulary entry"))?;
        if last_id.is_some_and(|last| id <= last) {
            return Err(
                "merges are not in the order of their ids (not a tiktoken-style vocabulary); use \"bytes\"".into()
            );
        }
        last_id = Some(id);
    }
    CoreBPE::new(ranks, FxHashMap::default(), &pattern).map_err(|error| format!("split pattern: {error}"))
}
