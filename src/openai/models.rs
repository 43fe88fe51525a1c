//! The model registry: public ids, backends, prices, output caps, unsupported parameters, and
//! the `/v1/models` bodies rendered once at start-up.
//!
//! The public id is the only model name a client ever sees: the upstream model name is kept
//! here for the proxy and never written into a rendered body. Hot-path lookups are one hash
//! probe and return an index; `closest` (the "did you mean" of `model_not_found`) runs only on
//! the error path and may allocate. This module never decides whether a request may be served.

use std::collections::HashMap;

use crate::json::write_json_escaped;
use crate::money::{NanosPerToken, Prices, format_usd_per_million};
use crate::openai::chat::MediaAllowance;

use super::chat::json_scan::content_eq;

/// Where a model's answers come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The built-in simulated model.
    Sandbox,
    /// A configured upstream, by its name in the configuration.
    Upstream(String),
}

/// One servable model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelEntry {
    /// The public id, e.g. `fikra-flash`.
    pub id: String,
    pub backend: Backend,
    /// The name the backend knows the model by; never shown to clients.
    pub upstream_model: String,
    pub input_price: NanosPerToken,
    /// Input tokens the upstream served from its prompt cache (default: `input_price`).
    pub cached_input_price: NanosPerToken,
    pub output_price: NanosPerToken,
    pub max_output_tokens: u64,
    /// Most input tokens the upstream bills for one image part (`max_image_input_tokens`);
    /// `None`: image parts are refused (400 `unsupported_parameter`).
    pub max_image_input_tokens: Option<u64>,
    /// The same for one audio part (`max_audio_input_tokens`).
    pub max_audio_input_tokens: Option<u64>,
    /// Top-level request parameters refused for this model (400 `unsupported_parameter`).
    pub unsupported_parameters: Vec<String>,
    pub created_unix_s: u64,
    /// How the upstream counts input text (registry key `tokenizer`): the second stage of the
    /// input bound (`api::admit`). `None`: one token per byte decides alone.
    pub tokenizer: Option<std::sync::Arc<crate::openai::tokenize::Tokenizer>>,
}

/// Every model, indexed by public id, with its public JSON rendered once.
pub struct Registry {
    entries: Vec<ModelEntry>,
    index_by_id: HashMap<String, usize>,
    list_json: Vec<u8>,
    model_json: Vec<Vec<u8>>,
}

/// `created` of the reference registry's models (2026-01-01T00:00:00Z).
pub const REFERENCE_CREATED_UNIX_S: u64 = 1_767_225_600;
/// Output cap of the reference registry's models, in tokens.
pub const REFERENCE_MAX_OUTPUT_TOKENS: u64 = 8192;
/// SPEC §3's reference registry: (id, price in nano-USD per token, input and output alike).
pub const REFERENCE_MODELS: [(&str, u64); 7] = [
    ("fikra-flash", 500),
    ("fikra-fast-8b", 500),
    ("fikra-pro-20b", 2000),
    ("fikra-pro-120b", 3000),
    ("fikra-qwen-max", 5000),
    ("fikra-auto", 2000),
    ("fikra-auto-pro", 5000),
];
/// Shortest requested id that is matched by containment ("flash" in "fikra-flash").
const MIN_CONTAINED_SUGGESTION_LEN: usize = 4;

impl ModelEntry {
    /// What this model charges per token.
    pub fn prices(&self) -> Prices {
        Prices { input: self.input_price, cached_input: self.cached_input_price, output: self.output_price }
    }

    /// What one media part may cost on this model, for the input bound.
    pub fn media_allowance(&self) -> MediaAllowance {
        MediaAllowance { image_tokens: self.max_image_input_tokens, audio_tokens: self.max_audio_input_tokens }
    }
}

impl Registry {
    /// Builds the index and renders the list and per-model bodies. Ids are expected unique
    /// (configuration checking refuses duplicates); if not, the first entry wins lookups.
    pub fn new(entries: Vec<ModelEntry>) -> Registry {
        let mut index_by_id = HashMap::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            index_by_id.entry(entry.id.clone()).or_insert(index);
        }
        let model_json: Vec<Vec<u8>> = entries
            .iter()
            .map(|entry| {
                let mut out = Vec::new();
                write_public_object(&mut out, entry);
                out
            })
            .collect();
        let mut list_json = b"{\"object\":\"list\",\"data\":[".to_vec();
        for (position, one) in model_json.iter().enumerate() {
            if position > 0 {
                list_json.push(b',');
            }
            list_json.extend_from_slice(one);
        }
        list_json.extend_from_slice(b"]}");
        Registry { entries, index_by_id, list_json, model_json }
    }

    /// SPEC §3's reference registry, every model served by the sandbox.
    pub fn reference() -> Registry {
        Registry::new(reference_entries())
    }

    /// Exact, case-sensitive lookup of a public id.
    pub fn get(&self, id: &str) -> Option<(usize, &ModelEntry)> {
        let index = *self.index_by_id.get(id)?;
        Some((index, &self.entries[index]))
    }

    /// The entry at an index returned by `get`.
    pub fn entry(&self, index: usize) -> &ModelEntry {
        &self.entries[index]
    }

    /// The registry id closest to `id`, case-insensitively, if it is a plausible typo: ids
    /// that contain `id` or are contained in it (at least 4 characters) come first, then ids
    /// within an edit distance of max(2, len/3); the smaller distance wins, then the earlier
    /// entry. Error path only: allocates.
    pub fn closest(&self, id: &str) -> Option<&str> {
        let wanted = id.to_ascii_lowercase();
        let allowed_distance = (wanted.len() / 3).max(2);
        self.entries
            .iter()
            .filter_map(|entry| {
                let candidate = entry.id.to_ascii_lowercase();
                let distance = edit_distance(&wanted, &candidate);
                let shorter = wanted.len().min(candidate.len());
                let contained = shorter >= MIN_CONTAINED_SUGGESTION_LEN
                    && (candidate.contains(wanted.as_str()) || wanted.contains(candidate.as_str()));
                (distance <= allowed_distance || contained).then_some((!contained, distance, entry.id.as_str()))
            })
            .min_by_key(|&(not_contained, distance, _)| (not_contained, distance))
            .map(|(_, _, id)| id)
    }

    /// The `GET /v1/models` body.
    pub fn list_json(&self) -> &[u8] {
        &self.list_json
    }

    /// The `GET /v1/models/{id}` body of the entry at `index`.
    pub fn model_json(&self, index: usize) -> &[u8] {
        &self.model_json[index]
    }

    /// The first of `keys` (top-level request keys as written, escapes included) that the model
    /// at `index` does not support. Keys are compared by their decoded text.
    pub fn unsupported_param<'a>(&self, index: usize, mut keys: impl Iterator<Item = &'a str>) -> Option<&'a str> {
        let unsupported = &self.entries[index].unsupported_parameters;
        if unsupported.is_empty() {
            return None;
        }
        keys.find(|key| unsupported.iter().any(|name| content_eq(key.as_bytes(), name.as_bytes())))
    }
}

/// `{"id":..,"object":"model","created":..,"owned_by":"fikra","pricing":{..}}`, without the
/// upstream model name.
fn write_public_object(out: &mut Vec<u8>, entry: &ModelEntry) {
    out.extend_from_slice(b"{\"id\":\"");
    write_json_escaped(out, &entry.id);
    out.extend_from_slice(b"\",\"object\":\"model\",\"created\":");
    out.extend_from_slice(entry.created_unix_s.to_string().as_bytes());
    out.extend_from_slice(b",\"owned_by\":\"fikra\",\"pricing\":{\"input\":\"");
    out.extend_from_slice(format_usd_per_million(entry.input_price).as_bytes());
    out.extend_from_slice(b"\",\"output\":\"");
    out.extend_from_slice(format_usd_per_million(entry.output_price).as_bytes());
    out.extend_from_slice(b"\",\"unit\":\"USD_PER_1M_TOKENS\"}}");
}

/// The entries of SPEC §3's reference registry, every one served by the sandbox.
pub fn reference_entries() -> Vec<ModelEntry> {
    REFERENCE_MODELS
        .iter()
        .map(|&(id, nanos_per_token)| ModelEntry {
            id: id.to_string(),
            backend: Backend::Sandbox,
            upstream_model: id.to_string(),
            input_price: NanosPerToken(nanos_per_token),
            cached_input_price: NanosPerToken(nanos_per_token),
            output_price: NanosPerToken(nanos_per_token),
            max_output_tokens: REFERENCE_MAX_OUTPUT_TOKENS,
            max_image_input_tokens: None,
            max_audio_input_tokens: None,
            unsupported_parameters: Vec::new(),
            created_unix_s: REFERENCE_CREATED_UNIX_S,
            tokenizer: None,
        })
        .collect()
}

/// Levenshtein distance over bytes (also used by config checking for "did you mean").
/// Allocates; never on the hot path.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, &byte_a) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, &byte_b) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(byte_a != byte_b);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the list body is exactly the seven reference models with SPEC prices, in order.
    #[test]
    fn renders_reference_list() {
        let registry = Registry::reference();
        let list: serde_json::Value = serde_json::from_slice(registry.list_json()).unwrap();
        let expected_prices = ["0.5", "0.5", "2", "3", "5", "2", "5"];
        let data = list["data"].as_array().unwrap();
        assert_eq!(list["object"], "list");
        assert_eq!(data.len(), 7);
        for (index, ((id, _), price)) in REFERENCE_MODELS.iter().zip(expected_prices).enumerate() {
            let expected = serde_json::json!({"id": id, "object": "model", "created": 1767225600u64, "owned_by": "fikra",
                "pricing": {"input": price, "output": price, "unit": "USD_PER_1M_TOKENS"}});
            assert_eq!(data[index], expected, "{id}");
            let one: serde_json::Value = serde_json::from_slice(registry.model_json(index)).unwrap();
            assert_eq!(one, expected, "{id}");
        }
        assert_eq!(
            registry.model_json(0),
            br#"{"id":"fikra-flash","object":"model","created":1767225600,"owned_by":"fikra","pricing":{"input":"0.5","output":"0.5","unit":"USD_PER_1M_TOKENS"}}"#
        );
    }

    // Goal: the upstream model name never appears in any rendered body.
    #[test]
    fn hides_upstream_names() {
        let mut entries = reference_entries();
        entries[0].upstream_model = "openai/gpt-oss-20b".into();
        entries[0].backend = Backend::Upstream("groq".into());
        entries[1].upstream_model = "llama-3.1-8b-instant".into();
        let registry = Registry::new(entries);
        for body in [registry.list_json(), registry.model_json(0), registry.model_json(1)] {
            let text = String::from_utf8_lossy(body);
            assert!(!text.contains("gpt-oss") && !text.contains("llama") && !text.contains("groq"), "{text}");
        }
    }

    // Goal: lookups are exact and return the entry's index and its facts.
    #[test]
    fn looks_up_exact_ids() {
        let registry = Registry::reference();
        let cases: [(&str, Option<(usize, u64)>); 5] = [
            ("fikra-flash", Some((0, 500))),
            ("fikra-pro-120b", Some((3, 3000))),
            ("fikra-auto-pro", Some((6, 5000))),
            ("FIKRA-FLASH", None),
            ("fikra-flash ", None),
        ];
        for (id, expected) in cases {
            let found = registry.get(id).map(|(index, entry)| (index, entry.input_price.0));
            assert_eq!(found, expected, "{id}");
        }
        assert_eq!(registry.entry(2).id, "fikra-pro-20b");
        assert_eq!(registry.entry(2).max_output_tokens, 8192);
    }

    // Goal: typos and partial names get the closest id; unrelated names get none.
    #[test]
    fn suggests_close_ids() {
        let registry = Registry::reference();
        let cases: [(&str, Option<&str>); 11] = [
            ("fikra-flsh", Some("fikra-flash")),
            ("FIKRA-FLASH", Some("fikra-flash")),
            ("fikra_flash", Some("fikra-flash")),
            ("fikra-pro-120", Some("fikra-pro-120b")),
            ("fikra-pro", Some("fikra-pro-20b")),
            ("flash", Some("fikra-flash")),
            ("fikra-qwen-max-latest", Some("fikra-qwen-max")),
            ("gpt-4", None),
            ("gpt-4o-mini", None),
            ("llama-3.1-70b-versatile", None),
            ("", None),
        ];
        for (requested, expected) in cases {
            assert_eq!(registry.closest(requested), expected, "{requested}");
        }
    }

    // Goal: edit distance counts single-byte insertions, deletions and substitutions.
    #[test]
    fn measures_edit_distance() {
        let cases: [(&str, &str, usize); 5] = [
            ("", "", 0),
            ("flash", "flash", 0),
            ("flsh", "flash", 1),
            ("fikra_flash", "fikra-flash", 1),
            ("gpt-4", "", 5),
        ];
        for (a, b, distance) in cases {
            assert_eq!((edit_distance(a, b), edit_distance(b, a)), (distance, distance), "{a} {b}");
        }
    }

    // Goal: unsupported parameters are found among the keys, escaped spellings included.
    #[test]
    fn finds_unsupported_parameters() {
        let mut entries = reference_entries();
        entries[0].unsupported_parameters = vec!["logprobs".into(), "n".into()];
        let registry = Registry::new(entries);
        let cases: [(usize, &[&str], Option<&str>); 5] = [
            (0, &["model", "messages", "logprobs"], Some("logprobs")),
            (0, &["model", "n", "logprobs"], Some("n")),
            (0, &["model", r"l\u006fgprobs"], Some(r"l\u006fgprobs")),
            (0, &["model", "messages"], None),
            (1, &["logprobs"], None),
        ];
        for (index, keys, expected) in cases {
            assert_eq!(registry.unsupported_param(index, keys.iter().copied()), expected, "{keys:?}");
        }
    }
}
