//! The model registry: public ids, backends, prices, output caps, unsupported parameters, and
//! the `/v1/models` bodies rendered once at start-up.
//!
//! The public id is the only model name a client ever sees; the upstream model name lives here
//! for the proxy and never appears in a rendered body. Lookups on the hot path are a hash probe;
//! the closest-match suggestion runs only on the error path.

use std::collections::HashMap;

use crate::money::{NanosPerToken, format_usd_per_million};

/// Where a model's answers come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The built-in simulated model.
    Sandbox,
    /// A configured upstream, by name.
    Upstream(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelEntry {
    pub id: String,
    pub backend: Backend,
    pub upstream_model: String,
    pub input_price: NanosPerToken,
    pub output_price: NanosPerToken,
    pub max_output_tokens: u64,
    pub unsupported_parameters: Vec<String>,
    pub created_unix_s: u64,
}

pub struct Registry {
    entries: Vec<ModelEntry>,
    by_id: HashMap<String, usize>,
    list_json: Vec<u8>,
    model_json: Vec<Vec<u8>>,
}

/// `created` of the reference registry's models (2026-01-01T00:00:00Z).
pub const REFERENCE_CREATED_UNIX_S: u64 = 1_767_225_600;
/// Output cap of the reference registry's models, in tokens.
pub const REFERENCE_MAX_OUTPUT_TOKENS: u64 = 8192;

impl Registry {
    pub fn new(entries: Vec<ModelEntry>) -> Registry {
        let by_id = entries.iter().enumerate().map(|(index, entry)| (entry.id.clone(), index)).collect();
        let objects: Vec<serde_json::Value> = entries.iter().map(public_object).collect();
        let list_json = serde_json::to_vec(&serde_json::json!({"object": "list", "data": objects})).unwrap_or_default();
        let model_json = objects.iter().map(|o| serde_json::to_vec(o).unwrap_or_default()).collect();
        Registry { entries, by_id, list_json, model_json }
    }

    /// SPEC §3's reference registry, every model served by the sandbox.
    pub fn reference() -> Registry {
        Registry::new(reference_entries())
    }

    pub fn get(&self, id: &str) -> Option<(usize, &ModelEntry)> {
        self.by_id.get(id).map(|&index| (index, &self.entries[index]))
    }

    pub fn entry(&self, index: usize) -> &ModelEntry {
        &self.entries[index]
    }

    pub fn entries(&self) -> &[ModelEntry] {
        &self.entries
    }

    /// The registry id closest to `id` (case-insensitive edit distance), if close enough to be
    /// a plausible typo. Error path only.
    pub fn closest(&self, id: &str) -> Option<&str> {
        let wanted = id.to_ascii_lowercase();
        let (distance, best) = self
            .entries
            .iter()
            .map(|entry| (edit_distance(&wanted, &entry.id.to_ascii_lowercase()), entry.id.as_str()))
            .min_by_key(|(distance, _)| *distance)?;
        let contains = best.to_ascii_lowercase().contains(&wanted) && wanted.len() >= 4;
        (distance <= (best.len() / 4).max(2) || contains).then_some(best)
    }

    pub fn list_json(&self) -> &[u8] {
        &self.list_json
    }

    pub fn model_json(&self, index: usize) -> &[u8] {
        &self.model_json[index]
    }

    /// The first of `keys` that the model at `index` does not support.
    pub fn unsupported_param<'a>(&self, index: usize, mut keys: impl Iterator<Item = &'a str>) -> Option<&'a str> {
        let unsupported = &self.entries[index].unsupported_parameters;
        if unsupported.is_empty() {
            return None;
        }
        keys.find(|key| unsupported.iter().any(|u| u == key))
    }
}

fn public_object(entry: &ModelEntry) -> serde_json::Value {
    serde_json::json!({
        "id": entry.id,
        "object": "model",
        "created": entry.created_unix_s,
        "owned_by": "fikra",
        "pricing": {
            "input": format_usd_per_million(entry.input_price),
            "output": format_usd_per_million(entry.output_price),
            "unit": "USD_PER_1M_TOKENS",
        },
    })
}

/// (id, USD per million input = output) of SPEC §3.
pub const REFERENCE_MODELS: [(&str, u64); 7] = [
    ("fikra-flash", 500),
    ("fikra-fast-8b", 500),
    ("fikra-pro-20b", 2000),
    ("fikra-pro-120b", 3000),
    ("fikra-qwen-max", 5000),
    ("fikra-auto", 2000),
    ("fikra-auto-pro", 5000),
];

pub fn reference_entries() -> Vec<ModelEntry> {
    REFERENCE_MODELS
        .iter()
        .map(|(id, nanos_per_token)| ModelEntry {
            id: id.to_string(),
            backend: Backend::Sandbox,
            upstream_model: id.to_string(),
            input_price: NanosPerToken(*nanos_per_token),
            output_price: NanosPerToken(*nanos_per_token),
            max_output_tokens: REFERENCE_MAX_OUTPUT_TOKENS,
            unsupported_parameters: Vec::new(),
            created_unix_s: REFERENCE_CREATED_UNIX_S,
        })
        .collect()
}

/// Levenshtein distance over bytes.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, &ca) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the list has the seven reference ids with SPEC prices and nothing upstream-specific.
    #[test]
    fn renders_reference_list() {
        let mut entries = reference_entries();
        entries[0].upstream_model = "openai/gpt-oss-20b".into();
        let registry = Registry::new(entries);
        let list: serde_json::Value = serde_json::from_slice(registry.list_json()).unwrap();
        let data = list["data"].as_array().unwrap();
        assert_eq!(data.len(), 7);
        assert_eq!(
            data[0],
            serde_json::json!({"id":"fikra-flash","object":"model","created":1767225600,"owned_by":"fikra",
                "pricing":{"input":"0.5","output":"0.5","unit":"USD_PER_1M_TOKENS"}})
        );
        assert_eq!(data[3]["pricing"]["input"], "3");
        assert!(!String::from_utf8_lossy(registry.list_json()).contains("gpt-oss"));
        let (index, entry) = registry.get("fikra-pro-120b").unwrap();
        assert_eq!(entry.input_price, NanosPerToken(3000));
        let one: serde_json::Value = serde_json::from_slice(registry.model_json(index)).unwrap();
        assert_eq!(one["id"], "fikra-pro-120b");
        assert!(registry.get("FIKRA-FLASH").is_none());
    }

    // Goal: typos get a suggestion, unrelated names do not.
    #[test]
    fn suggests_close_ids() {
        let registry = Registry::reference();
        assert_eq!(registry.closest("fikra-flsh"), Some("fikra-flash"));
        assert_eq!(registry.closest("FIKRA-FLASH"), Some("fikra-flash"));
        assert_eq!(registry.closest("fikra-pro-120"), Some("fikra-pro-120b"));
        assert_eq!(registry.closest("gpt-4"), None);
        assert_eq!(registry.closest("llama-3.1-70b-versatile"), None);
    }

    // Goal: unsupported parameters are found among the request's keys.
    #[test]
    fn finds_unsupported_parameters() {
        let mut entries = reference_entries();
        entries[0].unsupported_parameters = vec!["logprobs".into(), "n".into()];
        let registry = Registry::new(entries);
        assert_eq!(registry.unsupported_param(0, ["model", "messages", "logprobs"].into_iter()), Some("logprobs"));
        assert_eq!(registry.unsupported_param(0, ["model", "messages"].into_iter()), None);
        assert_eq!(registry.unsupported_param(1, ["logprobs"].into_iter()), None);
    }
}
