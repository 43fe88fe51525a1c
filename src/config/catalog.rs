//! The lists: `[[upstreams]]` (providers, with their base URLs split into parts) and
//! `[[models]]` (the public registry, each model on the sandbox or on a named upstream).
//!
//! Names are checked for uniqueness and references are resolved here, so a model can never
//! point at an upstream that does not exist. An entry with an error may be left out or kept
//! with a default (the whole parse fails anyway, so neither is ever used), but an upstream's
//! name always counts, so one mistake in an upstream does not also blame every model on it.

use std::net::Ipv6Addr;
use std::sync::Arc;

use super::reader::{Reader, Section, closest};
use super::server::decimal_refusal;
use super::{
    DEFAULT_UPSTREAM_CONNECT_TIMEOUT_MS, DEFAULT_UPSTREAM_RESPONSE_TIMEOUT_MS, ModelConfig, SANDBOX_UPSTREAM,
    UpstreamConfig, UrlScheme, reference_models,
};
use crate::limits;
use crate::money::{self, DecimalError, NanosPerToken};
use crate::openai::models::REFERENCE_CREATED_UNIX_S;
use crate::openai::tokenize::{Tokenizer, TokenizerSpec};

pub(super) const UPSTREAM_KEYS: &[&str] = &[
    "name",
    "base_url",
    "api_key_env",
    "ca_file",
    "connect_timeout_ms",
    "response_timeout_ms",
    "pool_idle_timeout_ms",
    "responses",
];
pub(super) const MODEL_KEYS: &[&str] = &[
    "id",
    "upstream",
    "upstream_model",
    "input_usd_per_million",
    "output_usd_per_million",
    "max_output_tokens",
    "cached_input_usd_per_million",
    "max_image_input_tokens",
    "max_audio_input_tokens",
    "unsupported_parameters",
    "created",
    "tokenizer",
];

/// Longest upstream name (`A-Za-z0-9._-`).
const MAX_UPSTREAM_NAME_BYTES: usize = 64;
/// Longest public model id (`A-Za-z0-9._:/-`).
const MAX_MODEL_ID_BYTES: usize = 128;
/// Longest upstream model name.
const MAX_UPSTREAM_MODEL_BYTES: usize = 256;
/// Request keys a model can never refuse: every chat request carries them.
const REQUIRED_REQUEST_KEYS: [&str; 2] = ["model", "messages"];

/// What `[[upstreams]]` yields: the valid entries, and every name written (valid or not).
pub(super) struct Upstreams {
    pub(super) valid: Vec<UpstreamConfig>,
    pub(super) names: Vec<String>,
}

pub(super) fn upstreams(reader: &mut Reader, root: &Section<'_>) -> Upstreams {
    let mut upstreams = Upstreams { valid: Vec::new(), names: Vec::new() };
    for section in reader.table_list(root, "upstreams").unwrap_or_default() {
        reader.check_keys(&section, UPSTREAM_KEYS);
        let name = reader.required_string(&section, "name").and_then(|name| {
            let problem = if name == SANDBOX_UPSTREAM {
                Some(format!("'{SANDBOX_UPSTREAM}' is reserved for the built-in sandbox"))
            } else if upstreams.names.iter().any(|existing| existing == name) {
                Some(format!("upstream '{name}' is defined twice"))
            } else if !is_upstream_name(name) {
                Some(format!("upstream names are 1 to {MAX_UPSTREAM_NAME_BYTES} of A-Z a-z 0-9 . _ -"))
            } else {
                None
            };
            if name != SANDBOX_UPSTREAM {
                upstreams.names.push(name.to_string());
            }
            match problem {
                Some(message) => {
                    reader.error(section.key("name"), message);
                    None
                }
                None => Some(name.to_string()),
            }
        });
        let url = reader.required_string(&section, "base_url").and_then(|text| {
            parse_base_url(text)
                .map(|url| (text.to_string(), url))
                .map_err(|problem| reader.error(section.key("base_url"), problem))
                .ok()
        });
        let api_key_env = reader.env_name(&section, "api_key_env");
        let ca_file = reader.existing_file(&section, "ca_file");
        let connect_timeout_ms = reader
            .integer(&section, "connect_timeout_ms", 1..=limits::MAX_UPSTREAM_CONNECT_TIMEOUT_MS, "")
            .unwrap_or(DEFAULT_UPSTREAM_CONNECT_TIMEOUT_MS);
        let response_timeout_ms = reader
            .integer(
                &section,
                "response_timeout_ms",
                1..=limits::MAX_UPSTREAM_RESPONSE_TIMEOUT_MS,
                " (the longest any request may last)",
            )
            .unwrap_or(DEFAULT_UPSTREAM_RESPONSE_TIMEOUT_MS);
        let pool_idle_timeout_ms =
            reader.limit(&section, "pool_idle_timeout_ms", limits::UPSTREAM_POOL_IDLE_TIMEOUT_MS);
        let responses = reader.boolean(&section, "responses").unwrap_or(false);
        let (Some(name), Some((base_url, url))) = (name, url) else { continue };
        upstreams.valid.push(UpstreamConfig {
            name,
            base_url,
            scheme: url.scheme,
            host: url.host,
            port: url.port,
            base_path: url.base_path,
            api_key_env,
            ca_file,
            connect_timeout_ms,
            response_timeout_ms,
            pool_idle_timeout_ms,
            responses,
        });
    }
    upstreams
}

fn is_upstream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_UPSTREAM_NAME_BYTES
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The parts of an upstream base URL.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct BaseUrl {
    pub(super) scheme: UrlScheme,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) base_path: String,
}

/// Splits `http(s)://host[:port][/path]`. Errors never quote the whole URL (it may hold credentials).
pub(super) fn parse_base_url(text: &str) -> Result<BaseUrl, String> {
    let (scheme, rest) = if let Some(rest) = text.strip_prefix("https://") {
        (UrlScheme::Https, rest)
    } else if let Some(rest) = text.strip_prefix("http://") {
        (UrlScheme::Http, rest)
    } else {
        return Err("must start with https:// or http://, e.g. \"https://api.groq.com/openai/v1\"".into());
    };
    if rest.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".into());
    }
    if rest.contains(['?', '#']) {
        return Err("must not have a query (?) or fragment (#): give the base path only".into());
    }
    let (authority, path) = rest.find('/').map_or((rest, ""), |slash| rest.split_at(slash));
    if authority.contains('@') {
        return Err("must not carry credentials (user@host): put the key in the variable named by api_key_env".into());
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (inside, tail) = bracketed.split_once(']').ok_or("has an unclosed '[' in its host")?;
        if inside.parse::<Ipv6Addr>().is_err() {
            return Err(format!("has '[{inside}]' for a host, which is not an IPv6 address"));
        }
        let port = match tail {
            "" => None,
            tail => Some(tail.strip_prefix(':').ok_or("has text between ']' and the port")?),
        };
        (inside, port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    if !authority.starts_with('[') && !is_dns_name(host) {
        return Err(format!("has '{host}' for a host, which is not a host name or IPv4 address"));
    }
    let port = match port {
        None => scheme.default_port(),
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => return Err(format!("has '{port}' for a port, which is not a number from 1 to 65535")),
        },
    };
    let base_path = path.trim_end_matches('/');
    if let Some(bad) = base_path.chars().find(|c| !c.is_ascii_graphic() || "\"<>\\^`{|}".contains(*c)) {
        return Err(format!("has '{bad}' in its path, which must be percent-encoded"));
    }
    Ok(BaseUrl { scheme, host: host.to_string(), port, base_path: base_path.to_string() })
}

/// Dot-separated labels of letters, digits and inner hyphens (IPv4 addresses pass too).
fn is_dns_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `[[models]]`, or the reference registry on the sandbox when the file has none.
pub(super) fn models(reader: &mut Reader, root: &Section<'_>, upstream_names: &[String]) -> Vec<ModelConfig> {
    if !root.has("models") {
        return reference_models();
    }
    let Some(sections) = reader.table_list(root, "models") else { return Vec::new() };
    if sections.is_empty() {
        reader.error("models", "lists no model; remove it to serve the reference registry on the sandbox");
    }
    let mut ids: Vec<&str> = Vec::with_capacity(sections.len());
    let mut models = Vec::with_capacity(sections.len());
    for section in &sections {
        reader.check_keys(section, MODEL_KEYS);
        let id = reader.required_string(section, "id").filter(|id| {
            let problem = if !is_model_id(id) {
                Some(format!("model ids are 1 to {MAX_MODEL_ID_BYTES} of A-Z a-z 0-9 . _ : / -"))
            } else if ids.contains(id) {
                Some(format!("model '{id}' is defined twice"))
            } else {
                None
            };
            ids.push(id);
            problem.map(|message| reader.error(section.key("id"), message)).is_none()
        });
        let upstream = reader.required_string(section, "upstream").filter(|upstream| {
            let known = *upstream == SANDBOX_UPSTREAM || upstream_names.iter().any(|name| name == upstream);
            if !known {
                let names = upstream_names.iter().map(String::as_str).chain([SANDBOX_UPSTREAM]);
                let hint = match closest(upstream, names) {
                    Some(near) => format!("did you mean '{near}'?"),
                    None => "define it in [[upstreams]]".into(),
                };
                reader.error(
                    section.key("upstream"),
                    format!("'{upstream}' is neither \"{SANDBOX_UPSTREAM}\" nor an [[upstreams]] name ({hint})"),
                );
            }
            known
        });
        let upstream_model = reader.string(section, "upstream_model").filter(|name| {
            let valid = !name.is_empty()
                && name.len() <= MAX_UPSTREAM_MODEL_BYTES
                && !name.chars().any(|c| c.is_control() || c == '"' || c == '\\');
            if !valid {
                reader.error(
                    section.key("upstream_model"),
                    format!("must be 1 to {MAX_UPSTREAM_MODEL_BYTES} bytes without quotes, backslashes or control characters"),
                );
            }
            valid
        });
        let input_price = price(reader, section, "input_usd_per_million");
        let output_price = price(reader, section, "output_usd_per_million");
        let cached_input_price = if section.has("cached_input_usd_per_million") {
            // The hold assumes no cache hit, so it covers every cached token only if a cached
            // token never costs more than an uncached one.
            price(reader, section, "cached_input_usd_per_million").filter(|cached| {
                let within = input_price.is_none_or(|input| *cached <= input);
                if !within {
                    reader.error(
                        section.key("cached_input_usd_per_million"),
                        "must not be above input_usd_per_million (holds are taken at the input price)",
                    );
                }
                within
            })
        } else {
            input_price
        };
        let max_output_tokens = if section.has("max_output_tokens") {
            reader.integer(section, "max_output_tokens", 1..=limits::MAX_MODEL_OUTPUT_TOKENS, "")
        } else {
            reader.error(section.key("max_output_tokens"), "is required (the largest answer, in tokens)");
            None
        };
        // Optional: absent means the model refuses that kind of part (SPEC §9).
        let media_range = 1..=limits::MAX_MEDIA_PART_INPUT_TOKENS;
        let max_image_input_tokens = reader.integer(section, "max_image_input_tokens", media_range.clone(), "");
        let max_audio_input_tokens = reader.integer(section, "max_audio_input_tokens", media_range, "");
        let unsupported_parameters = unsupported_parameters(reader, section);
        let created = reader.integer(section, "created", 0..=i64::MAX as u64, "").unwrap_or(REFERENCE_CREATED_UNIX_S);
        let tokenizer = tokenizer(reader, section);
        let (
            Some(id),
            Some(upstream),
            Some(input_price),
            Some(cached_input_price),
            Some(output_price),
            Some(max_output_tokens),
        ) = (id, upstream, input_price, cached_input_price, output_price, max_output_tokens)
        else {
            continue;
        };
        models.push(ModelConfig {
            id: id.to_string(),
            upstream: upstream.to_string(),
            upstream_model: upstream_model.unwrap_or(id).to_string(),
            input_price,
            cached_input_price,
            output_price,
            max_output_tokens,
            max_image_input_tokens,
            max_audio_input_tokens,
            unsupported_parameters,
            created,
            tokenizer,
        });
    }
    models
}

/// The model's `tokenizer` (default `"bytes"`: none), loaded now, so a `tokenizer.json` that
/// cannot be read or counted with fails `check-config` and start-up, never a request.
fn tokenizer(reader: &mut Reader, section: &Section<'_>) -> Option<Arc<Tokenizer>> {
    let value = reader.string(section, "tokenizer")?;
    let loaded = TokenizerSpec::parse(value).and_then(|spec| Tokenizer::load(&spec));
    loaded.unwrap_or_else(|reason| {
        reader.error(section.key("tokenizer"), reason);
        None
    })
}

fn is_model_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_MODEL_ID_BYTES
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b))
}

/// A required price in USD per million tokens, as a whole number of nano-USD per token.
fn price(reader: &mut Reader, section: &Section<'_>, key: &str) -> Option<NanosPerToken> {
    if !section.has(key) {
        reader.error(section.key(key), "is required (USD per million tokens, a quoted decimal such as \"0.5\")");
        return None;
    }
    let text = reader.decimal(section, key)?;
    money::parse_usd_per_million(text)
        .map_err(|error| {
            let message = match error {
                DecimalError::TooManyFractionDigits { .. } => format!(
                    "'{text}' is not a whole number of nano-USD per token: USD per million tokens must be a multiple of 0.001"
                ),
                other => decimal_refusal(text, &other),
            };
            reader.error(section.key(key), message);
        })
        .ok()
}

/// Request keys this model refuses: never `model` or `messages`, no repeats; absent is none.
fn unsupported_parameters(reader: &mut Reader, section: &Section<'_>) -> Vec<String> {
    let names = reader.string_list(section, "unsupported_parameters").unwrap_or_default();
    for (index, name) in names.iter().enumerate() {
        let Some(name) = *name else { continue };
        let key = format!("{}[{index}]", section.key("unsupported_parameters"));
        if name.is_empty() {
            reader.error(key, "must not be empty");
        } else if REQUIRED_REQUEST_KEYS.contains(&name) {
            reader.error(key, format!("'{name}' is required in every chat request and cannot be refused"));
        } else if names[..index].contains(&Some(name)) {
            reader.error(key, format!("'{name}' is listed twice"));
        }
    }
    names.into_iter().flatten().map(str::to_string).collect()
}
