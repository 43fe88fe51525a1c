//! Exact input token counts for the second stage of the input bound (SPEC §9, "no false
//! refusals"): a model's registry key `tokenizer` names how its upstream splits text into
//! tokens, so that a request the one-token-per-byte bound would refuse or clamp can be decided
//! on what it really costs.
//!
//! Owns the choice of tokenizer (`TokenizerSpec`, from the registry key), the loaded tables
//! (`Tokenizer`: o200k_base and cl100k_base embedded in the `tiktoken-rs` crate, or a byte-level
//! BPE `tokenizer.json` read at start-up by `hf_json`), which text of a chat body is counted
//! (`texts`), and the helper thread that counts it off the workers (`helper`). It never runs on
//! the hot path: only a request the byte bound would not admit in full reaches it. It never
//! decides admission or prices, never reads a file after start-up and never downloads anything.

pub mod helper;
pub mod hf_json;
pub mod texts;

use std::fmt;
use std::sync::Arc;

use tiktoken_rs::CoreBPE;

/// What the registry key `tokenizer` says about one model.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum TokenizerSpec {
    /// One token per byte of input: the bound that needs no tokenizer (the default).
    #[default]
    Bytes,
    /// OpenAI's o200k_base (the gpt-oss models, GPT-4o and later).
    O200kBase,
    /// OpenAI's cl100k_base (GPT-3.5 / GPT-4).
    Cl100kBase,
    /// A Hugging Face `tokenizer.json` at this path (byte-level BPE; see `hf_json`).
    HuggingFace(String),
}

impl TokenizerSpec {
    /// The registry value read as a spec: the three names, else a path (it must end in `.json`).
    pub fn parse(value: &str) -> Result<TokenizerSpec, String> {
        match value {
            "bytes" => Ok(TokenizerSpec::Bytes),
            "o200k_base" => Ok(TokenizerSpec::O200kBase),
            "cl100k_base" => Ok(TokenizerSpec::Cl100kBase),
            path if path.ends_with(".json") => Ok(TokenizerSpec::HuggingFace(path.to_string())),
            _ => Err("must be \"bytes\", \"o200k_base\", \"cl100k_base\" or the path of a tokenizer.json".into()),
        }
    }
}

/// Where a request's input bound came from: the text counted by the model's tokenizer, or one
/// token per byte. Named in the "too large" refusal, so a customer knows what the figure is.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum CountedBy {
    #[default]
    ByteBound,
    Tokenizer,
}

impl CountedBy {
    /// How the refusal's message names the figure.
    pub fn phrase(self) -> &'static str {
        match self {
            CountedBy::ByteBound => "estimated at one token per byte of input",
            CountedBy::Tokenizer => "counted by the model's tokenizer",
        }
    }
}

/// The tables of one tokenizer.
enum Tables {
    /// A table embedded in `tiktoken-rs`, built once per process.
    Embedded(&'static CoreBPE),
    /// A table read from a `tokenizer.json` at start-up.
    Loaded(Box<CoreBPE>),
}

/// A loaded tokenizer; shared by every worker (counting takes `&self`).
pub struct Tokenizer {
    /// The registry value it came from (a name or a path), for logs and equality.
    name: String,
    tables: Tables,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokenizer({})", self.name)
    }
}

impl PartialEq for Tokenizer {
    fn eq(&self, other: &Tokenizer) -> bool {
        self.name == other.name
    }
}

impl Eq for Tokenizer {}

impl Tokenizer {
    /// The tokenizer `spec` names, loaded (`None` for `Bytes`). A `tokenizer.json` is read and
    /// checked here; the error says what is wrong with it.
    pub fn load(spec: &TokenizerSpec) -> Result<Option<Arc<Tokenizer>>, String> {
        let (name, tables) = match spec {
            TokenizerSpec::Bytes => return Ok(None),
            TokenizerSpec::O200kBase => {
                ("o200k_base".to_string(), Tables::Embedded(tiktoken_rs::o200k_base_singleton()))
            }
            TokenizerSpec::Cl100kBase => {
                ("cl100k_base".to_string(), Tables::Embedded(tiktoken_rs::cl100k_base_singleton()))
            }
            TokenizerSpec::HuggingFace(path) => {
                let text = std::fs::read(path).map_err(|error| format!("cannot read {path}: {error}"))?;
                let bpe = hf_json::load(&text).map_err(|reason| format!("{path}: {reason}"))?;
                (path.clone(), Tables::Loaded(Box::new(bpe)))
            }
        };
        Ok(Some(Arc::new(Tokenizer { name, tables })))
    }

    /// The registry value this tokenizer came from.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Tokens of `text` as plain text (a special token's spelling counts as the ordinary text it
    /// is, never fewer tokens than the upstream can make of it). Never more than its bytes.
    pub fn count(&self, text: &str) -> u64 {
        let bpe = match &self.tables {
            Tables::Embedded(bpe) => bpe,
            Tables::Loaded(bpe) => &**bpe,
        };
        let tokens = bpe.count_ordinary(text) as u64;
        // Every token of a byte-level BPE is at least one byte: the exact count never exceeds
        // the byte bound it replaces.
        debug_assert!(tokens <= text.len() as u64, "{} tokens for {} bytes", tokens, text.len());
        tokens
    }
}

#[cfg(test)]
mod tests;
