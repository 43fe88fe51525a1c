//! Configuration: TOML text -> a validated, typed `Config`, with every problem reported at once.
//!
//! The file is walked by hand (not deserialized) so one pass collects all errors: unknown keys
//! (with a suggestion), wrong types, missing keys, bad values, references to undefined
//! upstreams. Limits may be lowered here, never raised above `limits.rs`. Money is given as
//! decimal strings and never touches floating point. Nothing here reads the network or starts
//! anything; environment variables are checked separately (`missing_env_vars`).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::{Table, Value};

use crate::limits;
use crate::money::{self, Nanos, NanosPerToken, UnitsPerUsd};
use crate::openai::models::{REFERENCE_CREATED_UNIX_S, REFERENCE_MAX_OUTPUT_TOKENS, REFERENCE_MODELS, edit_distance};
use crate::store::{LimitPolicy, TIER_TRUSTED, TIER_UNVERIFIED, TierLimits};

/// The upstream name that means "the built-in sandbox".
pub const SANDBOX_UPSTREAM: &str = "sandbox";
/// Default connect timeout for upstreams.
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT_MS: u64 = 3_000;
/// Default time to the first response byte from an upstream.
pub const DEFAULT_UPSTREAM_RESPONSE_TIMEOUT_MS: u64 = 60_000;
/// Default sandbox answer length, in tokens.
pub const DEFAULT_SANDBOX_OUTPUT_TOKENS: u64 = 16;

#[derive(Clone, Debug)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub billing: BillingConfig,
    pub limits: LimitPolicy,
    pub upstreams: Vec<UpstreamConfig>,
    pub models: Vec<ModelConfig>,
    pub sandbox: SandboxSettings,
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub admin_token_env: String,
    /// 0 = one per CPU core.
    pub workers: usize,
    pub max_head_bytes: usize,
    pub max_body_bytes: usize,
    pub head_timeout_ms: u64,
    pub body_timeout_ms: u64,
    pub keepalive_timeout_ms: u64,
    pub shutdown_deadline_ms: u64,
    /// `[server.tls]`: terminate TLS on the client listener with this certificate and key.
    pub tls: Option<TlsFiles>,
}

/// A PEM certificate chain and its PEM private key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreConfig {
    Embedded,
    Redis { url: String },
    RedisCluster { nodes: Vec<String> },
}

#[derive(Clone, Debug)]
pub struct BillingConfig {
    pub kes_per_usd: UnitsPerUsd,
    pub signup_credit: Nanos,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub name: String,
    pub base_url: String,
    pub api_key_env: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub connect_timeout_ms: u64,
    pub response_timeout_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelConfig {
    pub id: String,
    /// `sandbox` or the name of an `[[upstreams]]` entry.
    pub upstream: String,
    pub upstream_model: String,
    pub input_price: NanosPerToken,
    pub output_price: NanosPerToken,
    pub max_output_tokens: u64,
    pub unsupported_parameters: Vec<String>,
    pub created: u64,
}

/// How the sandbox model behaves.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SandboxSettings {
    pub time_to_first_token_ms: u64,
    /// 0 = no pacing.
    pub tokens_per_second: u64,
    pub output_tokens: u64,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        SandboxSettings {
            time_to_first_token_ms: 0,
            tokens_per_second: 0,
            output_tokens: DEFAULT_SANDBOX_OUTPUT_TOKENS,
        }
    }
}

/// One problem in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the offending key, e.g. `models[2].input_usd_per_million`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl Config {
    /// Everything at its default: embedded store, reference registry on the sandbox.
    pub fn demo() -> Config {
        parse_config("").expect("the empty configuration is valid")
    }

    /// Environment variables the configuration names but the environment lacks.
    pub fn missing_env_vars(&self) -> Vec<ConfigError> {
        let mut missing = Vec::new();
        let mut check = |key: String, name: &str| {
            if std::env::var(name).map_or(true, |v| v.is_empty()) {
                missing.push(ConfigError { key, message: format!("environment variable {name} is not set") });
            }
        };
        check("server.admin_token_env".into(), &self.server.admin_token_env);
        for (index, upstream) in self.upstreams.iter().enumerate() {
            if let Some(name) = &upstream.api_key_env {
                check(format!("upstreams[{index}].api_key_env"), name);
            }
        }
        missing
    }
}

pub fn load_config(path: &Path) -> Result<Config, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        vec![ConfigError { key: path.display().to_string(), message: format!("cannot read: {error}") }]
    })?;
    parse_config(&text)
}

/// Parses and validates a whole configuration file.
pub fn parse_config(text: &str) -> Result<Config, Vec<ConfigError>> {
    let table: Table = text.parse().map_err(|error: toml::de::Error| {
        vec![ConfigError { key: "(file)".into(), message: format!("not valid TOML: {}", error.message()) }]
    })?;
    let mut walker = Walker { errors: Vec::new() };
    walker.known_keys(
        "",
        &table,
        &["server", "store", "billing", "tiers", "account_overrides", "upstreams", "models", "sandbox"],
    );
    let server = walker.server(table.get("server"));
    let store = walker.store(table.get("store"));
    let billing = walker.billing(table.get("billing"));
    let limits = walker.limits(table.get("tiers"), table.get("account_overrides"));
    let upstreams = walker.upstreams(table.get("upstreams"));
    let models = walker.models(table.get("models"), &upstreams);
    let sandbox = walker.sandbox(table.get("sandbox"));
    if server.listen == server.admin_listen && server.listen.port() != 0 {
        walker.error("server.admin_listen", "must differ from server.listen");
    }
    if walker.errors.is_empty() {
        Ok(Config { server, store, billing, limits, upstreams, models, sandbox })
    } else {
        Err(walker.errors)
    }
}

struct Walker {
    errors: Vec<ConfigError>,
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() { key.to_string() } else { format!("{prefix}.{key}") }
}

impl Walker {
    fn error(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError { key: key.into(), message: message.into() });
    }

    fn known_keys(&mut self, prefix: &str, table: &Table, known: &[&str]) {
        for key in table.keys() {
            if !known.contains(&key.as_str()) {
                let hint = known
                    .iter()
                    .min_by_key(|k| edit_distance(k, key))
                    .filter(|k| edit_distance(k, key) <= 2)
                    .map(|k| format!(" (did you mean '{k}'?)"))
                    .unwrap_or_default();
                self.error(join(prefix, key), format!("unknown key{hint}"));
            }
        }
    }

    fn table<'t>(&mut self, key: &str, value: Option<&'t Value>) -> Option<&'t Table> {
        match value {
            None => None,
            Some(Value::Table(table)) => Some(table),
            Some(_) => {
                self.error(key, "must be a table");
                None
            }
        }
    }

    fn string(&mut self, key: &str, value: Option<&Value>) -> Option<String> {
        match value {
            None => None,
            Some(Value::String(text)) => Some(text.clone()),
            Some(Value::Float(_) | Value::Integer(_)) if key.contains("usd") || key.contains("kes") => {
                self.error(key, "money must be a quoted decimal string, e.g. \"0.5\" (floats lose cents)");
                None
            }
            Some(_) => {
                self.error(key, "must be a string");
                None
            }
        }
    }

    /// A positive integer no larger than `max`.
    fn integer(&mut self, key: &str, value: Option<&Value>, max: u64) -> Option<u64> {
        match value {
            None => None,
            Some(Value::Integer(n)) if *n >= 1 && (*n as u64) <= max => Some(*n as u64),
            Some(Value::Integer(_)) => {
                self.error(key, format!("must be from 1 to {max}"));
                None
            }
            Some(_) => {
                self.error(key, "must be an integer");
                None
            }
        }
    }

    fn address(&mut self, key: &str, value: Option<&Value>, default: &str) -> SocketAddr {
        let default: SocketAddr = default.parse().expect("literal address");
        match self.string(key, value) {
            None => default,
            Some(text) => text.parse().unwrap_or_else(|_| {
                self.error(key, format!("'{text}' is not an address like 127.0.0.1:8080"));
                default
            }),
        }
    }

    fn server(&mut self, value: Option<&Value>) -> ServerConfig {
        let empty = Table::new();
        let table = self.table("server", value).unwrap_or(&empty);
        self.known_keys(
            "server",
            table,
            &[
                "listen",
                "admin_listen",
                "admin_token_env",
                "workers",
                "max_head_bytes",
                "max_body_bytes",
                "head_timeout_ms",
                "body_timeout_ms",
                "keepalive_timeout_ms",
                "shutdown_deadline_ms",
                "tls",
            ],
        );
        let tls = self.table("server.tls", table.get("tls")).cloned().and_then(|tls| self.tls_files(&tls));
        let workers = match table.get("workers") {
            Some(Value::Integer(0)) | None => 0,
            other => self.integer("server.workers", other, limits::MAX_WORKERS as u64).unwrap_or(0) as usize,
        };
        let mut bounded =
            |key: &str, max: u64| self.integer(&format!("server.{key}"), table.get(key), max).unwrap_or(max);
        let max_head_bytes = bounded("max_head_bytes", limits::MAX_REQUEST_HEAD_BYTES as u64) as usize;
        let max_body_bytes = bounded("max_body_bytes", limits::MAX_REQUEST_BODY_BYTES as u64) as usize;
        let head_timeout_ms = bounded("head_timeout_ms", limits::HEAD_READ_TIMEOUT_MS);
        let body_timeout_ms = bounded("body_timeout_ms", limits::BODY_READ_TIMEOUT_MS);
        let keepalive_timeout_ms = bounded("keepalive_timeout_ms", limits::KEEPALIVE_IDLE_TIMEOUT_MS);
        let shutdown_deadline_ms = bounded("shutdown_deadline_ms", limits::SHUTDOWN_DRAIN_DEADLINE_MS);
        ServerConfig {
            listen: self.address("server.listen", table.get("listen"), "0.0.0.0:8080"),
            admin_listen: self.address("server.admin_listen", table.get("admin_listen"), "127.0.0.1:8081"),
            admin_token_env: self
                .string("server.admin_token_env", table.get("admin_token_env"))
                .unwrap_or_else(|| "FIKRA_ADMIN_TOKEN".into()),
            workers,
            max_head_bytes,
            max_body_bytes,
            head_timeout_ms,
            body_timeout_ms,
            keepalive_timeout_ms,
            shutdown_deadline_ms,
            tls,
        }
    }

    fn tls_files(&mut self, table: &Table) -> Option<TlsFiles> {
        self.known_keys("server.tls", table, &["cert_file", "key_file"]);
        let mut file = |key: &str| {
            let path = format!("server.tls.{key}");
            match self.string(&path, table.get(key)) {
                None => {
                    self.error(path, "is required");
                    None
                }
                Some(text) if !Path::new(&text).is_file() => {
                    self.error(path, format!("{text} does not exist"));
                    None
                }
                Some(text) => Some(PathBuf::from(text)),
            }
        };
        let (cert_file, key_file) = (file("cert_file"), file("key_file"));
        Some(TlsFiles { cert_file: cert_file?, key_file: key_file? })
    }

    fn store(&mut self, value: Option<&Value>) -> StoreConfig {
        let Some(table) = self.table("store", value) else { return StoreConfig::Embedded };
        self.known_keys("store", table, &["redis_url", "redis_cluster_nodes"]);
        let url = self.string("store.redis_url", table.get("redis_url"));
        let nodes = match table.get("redis_cluster_nodes") {
            None => None,
            Some(Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_str) => {
                Some(items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect::<Vec<_>>())
            }
            Some(_) => {
                self.error("store.redis_cluster_nodes", "must be a non-empty list of \"host:port\" strings");
                None
            }
        };
        match (url, nodes) {
            (Some(_), Some(_)) => {
                self.error("store", "give redis_url or redis_cluster_nodes, not both");
                StoreConfig::Embedded
            }
            (Some(url), None) => {
                if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                    self.error("store.redis_url", "must start with redis:// or rediss://");
                }
                StoreConfig::Redis { url }
            }
            (None, Some(nodes)) => StoreConfig::RedisCluster { nodes },
            (None, None) => StoreConfig::Embedded,
        }
    }

    fn billing(&mut self, value: Option<&Value>) -> BillingConfig {
        let empty = Table::new();
        let table = self.table("billing", value).unwrap_or(&empty);
        self.known_keys("billing", table, &["kes_per_usd", "signup_credit_usd"]);
        let kes_per_usd = match self.string("billing.kes_per_usd", table.get("kes_per_usd")) {
            None => UnitsPerUsd::parse("130").expect("literal rate"),
            Some(text) => UnitsPerUsd::parse(&text).unwrap_or_else(|error| {
                self.error("billing.kes_per_usd", format!("'{text}': {error} (must be a positive decimal)"));
                UnitsPerUsd::parse("130").expect("literal rate")
            }),
        };
        let signup_credit = match self.string("billing.signup_credit_usd", table.get("signup_credit_usd")) {
            None => Nanos(money::NANOS_PER_USD),
            Some(text) => money::parse_usd(&text).unwrap_or_else(|error| {
                self.error("billing.signup_credit_usd", format!("'{text}': {error}"));
                Nanos::ZERO
            }),
        };
        BillingConfig { kes_per_usd, signup_credit }
    }

    fn tier_limits(&mut self, prefix: &str, table: &Table, extra_known: &[&str]) -> Option<TierLimits> {
        let mut known = vec!["rpm", "tpm"];
        known.extend_from_slice(extra_known);
        self.known_keys(prefix, table, &known);
        let rpm = self.integer(&join(prefix, "rpm"), table.get("rpm"), u64::MAX >> 16);
        let tpm = self.integer(&join(prefix, "tpm"), table.get("tpm"), u64::MAX >> 16);
        if table.get("rpm").is_none() {
            self.error(join(prefix, "rpm"), "is required");
        }
        if table.get("tpm").is_none() {
            self.error(join(prefix, "tpm"), "is required");
        }
        Some(TierLimits { requests_per_minute: rpm?, tokens_per_minute: tpm? })
    }

    fn limits(&mut self, tiers: Option<&Value>, overrides: Option<&Value>) -> LimitPolicy {
        let mut policy = LimitPolicy::reference();
        if let Some(tiers) = self.table("tiers", tiers) {
            for (name, value) in tiers {
                let prefix = format!("tiers.{name}");
                let Some(table) = self.table(&prefix, Some(value)) else { continue };
                if let Some(limits) = self.tier_limits(&prefix, table, &[]) {
                    match policy.tiers.iter_mut().find(|(tier, _)| &**tier == name.as_str()) {
                        Some(entry) => entry.1 = limits,
                        None => policy.tiers.push((name.as_str().into(), limits)),
                    }
                }
            }
        }
        match overrides {
            None => {}
            Some(Value::Array(items)) => {
                for (index, item) in items.iter().enumerate() {
                    let prefix = format!("account_overrides[{index}]");
                    let Some(table) = self.table(&prefix, Some(item)) else { continue };
                    let account = self.string(&join(&prefix, "account"), table.get("account"));
                    if account.is_none() {
                        self.error(join(&prefix, "account"), "is required");
                    }
                    let limits = self.tier_limits(&prefix, table, &["account"]);
                    if let (Some(account), Some(limits)) = (account, limits) {
                        if policy.account_overrides.iter().any(|(id, _)| **id == *account) {
                            self.error(join(&prefix, "account"), format!("'{account}' is overridden twice"));
                        }
                        policy.account_overrides.push((Arc::from(account.as_str()), limits));
                    }
                }
            }
            Some(_) => self.error("account_overrides", "must be an array of tables ([[account_overrides]])"),
        }
        debug_assert!(
            policy.tiers.iter().any(|(t, _)| &**t == TIER_UNVERIFIED)
                && policy.tiers.iter().any(|(t, _)| &**t == TIER_TRUSTED)
        );
        policy
    }

    fn array_of_tables<'t>(&mut self, key: &str, value: Option<&'t Value>) -> Vec<&'t Table> {
        match value {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(index, item)| self.table(&format!("{key}[{index}]"), Some(item)))
                .collect(),
            Some(_) => {
                self.error(key, format!("must be an array of tables ([[{key}]])"));
                Vec::new()
            }
        }
    }

    fn upstreams(&mut self, value: Option<&Value>) -> Vec<UpstreamConfig> {
        let mut upstreams: Vec<UpstreamConfig> = Vec::new();
        for (index, table) in self.array_of_tables("upstreams", value).into_iter().enumerate() {
            let prefix = format!("upstreams[{index}]");
            self.known_keys(
                &prefix,
                table,
                &["name", "base_url", "api_key_env", "ca_file", "connect_timeout_ms", "response_timeout_ms"],
            );
            let name = self.string(&join(&prefix, "name"), table.get("name"));
            let base_url = self.string(&join(&prefix, "base_url"), table.get("base_url"));
            let (Some(name), Some(base_url)) = (name.clone(), base_url.clone()) else {
                if name.is_none() {
                    self.error(join(&prefix, "name"), "is required");
                }
                if base_url.is_none() {
                    self.error(join(&prefix, "base_url"), "is required");
                }
                continue;
            };
            if name == SANDBOX_UPSTREAM || upstreams.iter().any(|u| u.name == name) {
                self.error(join(&prefix, "name"), format!("'{name}' is reserved or already used"));
            }
            let valid_url = ["http://", "https://"]
                .iter()
                .find_map(|scheme| base_url.strip_prefix(scheme))
                .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/') && !rest.contains(' '));
            if !valid_url {
                self.error(join(&prefix, "base_url"), format!("'{base_url}' is not an http:// or https:// URL"));
            }
            let ca_file = self.string(&join(&prefix, "ca_file"), table.get("ca_file")).map(PathBuf::from);
            if let Some(path) = &ca_file
                && !path.is_file()
            {
                self.error(join(&prefix, "ca_file"), format!("{} does not exist", path.display()));
            }
            upstreams.push(UpstreamConfig {
                name,
                base_url,
                api_key_env: self.string(&join(&prefix, "api_key_env"), table.get("api_key_env")),
                ca_file,
                connect_timeout_ms: self
                    .integer(&join(&prefix, "connect_timeout_ms"), table.get("connect_timeout_ms"), 600_000)
                    .unwrap_or(DEFAULT_UPSTREAM_CONNECT_TIMEOUT_MS),
                response_timeout_ms: self
                    .integer(&join(&prefix, "response_timeout_ms"), table.get("response_timeout_ms"), 3_600_000)
                    .unwrap_or(DEFAULT_UPSTREAM_RESPONSE_TIMEOUT_MS),
            });
        }
        upstreams
    }

    fn price(&mut self, key: String, value: Option<&Value>) -> Option<NanosPerToken> {
        let text = self.string(&key, value)?;
        money::parse_usd_per_million(&text)
            .map_err(|error| {
                self.error(key, format!("'{text}': {error} (USD per million tokens, a multiple of 0.001)"))
            })
            .ok()
    }

    fn models(&mut self, value: Option<&Value>, upstreams: &[UpstreamConfig]) -> Vec<ModelConfig> {
        if value.is_none() {
            return reference_models();
        }
        let mut models: Vec<ModelConfig> = Vec::new();
        for (index, table) in self.array_of_tables("models", value).into_iter().enumerate() {
            let prefix = format!("models[{index}]");
            self.known_keys(
                &prefix,
                table,
                &[
                    "id",
                    "upstream",
                    "upstream_model",
                    "input_usd_per_million",
                    "output_usd_per_million",
                    "max_output_tokens",
                    "unsupported_parameters",
                    "created",
                ],
            );
            for required in ["id", "upstream", "input_usd_per_million", "output_usd_per_million", "max_output_tokens"] {
                if table.get(required).is_none() {
                    self.error(join(&prefix, required), "is required");
                }
            }
            let id = self.string(&join(&prefix, "id"), table.get("id"));
            if let Some(id) = &id {
                let valid = !id.is_empty()
                    && id.len() <= 128
                    && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b));
                if !valid {
                    self.error(join(&prefix, "id"), format!("'{id}' must be 1 to 128 of A-Z a-z 0-9 . _ : / -"));
                } else if models.iter().any(|m| &m.id == id) {
                    self.error(join(&prefix, "id"), format!("'{id}' is defined twice"));
                }
            }
            let upstream = self.string(&join(&prefix, "upstream"), table.get("upstream"));
            if let Some(upstream) = &upstream
                && upstream != SANDBOX_UPSTREAM
                && !upstreams.iter().any(|u| &u.name == upstream)
            {
                self.error(
                    join(&prefix, "upstream"),
                    format!("'{upstream}' is not 'sandbox' nor an [[upstreams]] name"),
                );
            }
            let upstream_model = self.string(&join(&prefix, "upstream_model"), table.get("upstream_model"));
            let input_price = self.price(join(&prefix, "input_usd_per_million"), table.get("input_usd_per_million"));
            let output_price = self.price(join(&prefix, "output_usd_per_million"), table.get("output_usd_per_million"));
            let max_output_tokens = self.integer(
                &join(&prefix, "max_output_tokens"),
                table.get("max_output_tokens"),
                limits::MAX_MODEL_OUTPUT_TOKENS,
            );
            let unsupported_parameters = match table.get("unsupported_parameters") {
                None => Vec::new(),
                Some(Value::Array(items)) if items.iter().all(Value::is_str) => {
                    items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()
                }
                Some(_) => {
                    self.error(join(&prefix, "unsupported_parameters"), "must be a list of parameter names");
                    Vec::new()
                }
            };
            let created = match table.get("created") {
                None => REFERENCE_CREATED_UNIX_S,
                Some(Value::Integer(n)) if *n >= 0 => *n as u64,
                Some(_) => {
                    self.error(join(&prefix, "created"), "must be Unix seconds");
                    0
                }
            };
            if let (Some(id), Some(upstream), Some(input_price), Some(output_price), Some(max_output_tokens)) =
                (id, upstream, input_price, output_price, max_output_tokens)
            {
                models.push(ModelConfig {
                    upstream_model: upstream_model.unwrap_or_else(|| id.clone()),
                    id,
                    upstream,
                    input_price,
                    output_price,
                    max_output_tokens,
                    unsupported_parameters,
                    created,
                });
            }
        }
        if models.is_empty() && self.errors.is_empty() {
            self.error("models", "defines no model");
        }
        models
    }

    fn sandbox(&mut self, value: Option<&Value>) -> SandboxSettings {
        let defaults = SandboxSettings::default();
        let Some(table) = self.table("sandbox", value) else { return defaults };
        self.known_keys("sandbox", table, &["time_to_first_token_ms", "tokens_per_second", "output_tokens"]);
        let mut zero_or = |key: &str, max: u64, default: u64| match table.get(key) {
            Some(Value::Integer(0)) => 0,
            other => self.integer(&format!("sandbox.{key}"), other, max).unwrap_or(default),
        };
        SandboxSettings {
            time_to_first_token_ms: zero_or("time_to_first_token_ms", 600_000, 0),
            tokens_per_second: zero_or("tokens_per_second", 1_000_000, 0),
            output_tokens: self
                .integer("sandbox.output_tokens", table.get("output_tokens"), limits::SANDBOX_MAX_OUTPUT_TOKENS)
                .unwrap_or(defaults.output_tokens),
        }
    }
}

/// SPEC §3's reference registry, every model on the sandbox.
pub fn reference_models() -> Vec<ModelConfig> {
    REFERENCE_MODELS
        .iter()
        .map(|(id, nanos_per_token)| ModelConfig {
            id: id.to_string(),
            upstream: SANDBOX_UPSTREAM.into(),
            upstream_model: id.to_string(),
            input_price: NanosPerToken(*nanos_per_token),
            output_price: NanosPerToken(*nanos_per_token),
            max_output_tokens: REFERENCE_MAX_OUTPUT_TOKENS,
            unsupported_parameters: Vec::new(),
            created: REFERENCE_CREATED_UNIX_S,
        })
        .collect()
}

#[cfg(test)]
mod tests;
