//! Configuration: TOML text -> a validated, typed `Config`, with every problem reported at once.
//!
//! The file is parsed into a `toml::Table` and walked by hand (never deserialized), so one pass
//! collects every error: unknown keys (with a "did you mean" or the section they belong in),
//! wrong types, missing keys, out-of-range values, duplicates, dangling references, missing
//! files. Each error names its dotted key (`models[2].input_usd_per_million`). Limits may be
//! lowered here, never raised above `limits.rs`. Money is written as decimal strings and never
//! touches floating point. This module reads files only to check that they exist, never opens a
//! socket, never starts anything; environment variables are checked separately
//! (`Config::missing_env_vars`) because `check-config` may run where the secrets are not set.
//!
//! Layout: this file holds the types and entry points; `reader` the error-collecting typed
//! getters; `server` the `[server]`, `[store]`, `[billing]`, `[tiers]`, `[[account_overrides]]`,
//! `[sandbox]` and `[log]` sections; `catalog` the `[[upstreams]]` and `[[models]]` lists.

mod catalog;
#[cfg(test)]
mod file_tests;
mod payments;
mod reader;
mod server;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use toml::Table;

use crate::http::listener::UringTaskWork;
use crate::limits;
use crate::money::{NANOS_PER_USD, Nanos, NanosPerToken, UnitsPerUsd};
use crate::openai::models::{REFERENCE_CREATED_UNIX_S, REFERENCE_MAX_OUTPUT_TOKENS, REFERENCE_MODELS};
use crate::store::LimitPolicy;

pub use payments::{DEFAULT_PAYMENTS_LISTEN, MpesaConfig, PaymentsConfig, StripeConfig};
use reader::{Reader, Section};

/// The upstream name that means "the built-in sandbox"; no `[[upstreams]]` entry may take it.
pub const SANDBOX_UPSTREAM: &str = "sandbox";
/// Default client listener.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// Default admin listener (loopback only: the admin API must not face the internet).
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8081";
/// Default environment variable holding the admin token.
pub const DEFAULT_ADMIN_TOKEN_ENV: &str = "FIKRA_ADMIN_TOKEN";
/// Default exchange rate for KES top-ups, KES per USD.
pub const DEFAULT_KES_PER_USD: &str = "130";
/// Default credit of a new account, in nano-USD (1 USD).
pub const DEFAULT_SIGNUP_CREDIT: Nanos = Nanos(NANOS_PER_USD);
/// Default time allowed to open a TCP (and TLS) connection to an upstream.
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT_MS: u64 = 3_000;
/// Default wait for an upstream's response head (and longest silence inside a streamed body).
pub const DEFAULT_UPSTREAM_RESPONSE_TIMEOUT_MS: u64 = 60_000;
/// Default sandbox answer length, in tokens.
pub const DEFAULT_SANDBOX_OUTPUT_TOKENS: u64 = 16;

/// The sections a file may have.
const TOP_LEVEL_KEYS: &[&str] =
    &["server", "store", "billing", "tiers", "account_overrides", "upstreams", "models", "sandbox", "log", "payments"];

/// Where each key lives, to tell an operator who put a key in the wrong section where it goes.
const KEY_HOMES: &[(&str, &[&str])] = &[
    ("the top level", TOP_LEVEL_KEYS),
    ("[server]", server::SERVER_KEYS),
    ("[server.tls]", server::TLS_KEYS),
    ("[store]", server::STORE_KEYS),
    ("[billing]", server::BILLING_KEYS),
    ("[tiers.NAME]", server::TIER_KEYS),
    ("[[account_overrides]]", server::OVERRIDE_KEYS),
    ("[[upstreams]]", catalog::UPSTREAM_KEYS),
    ("[[models]]", catalog::MODEL_KEYS),
    ("[sandbox]", server::SANDBOX_KEYS),
    ("[log]", server::LOG_KEYS),
    ("[payments]", payments::PAYMENTS_KEYS),
    ("[payments.mpesa]", payments::MPESA_KEYS),
    ("[payments.stripe]", payments::STRIPE_KEYS),
];

/// The whole, validated configuration. Built once at start-up; never changed afterwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    /// The rest of `[store]`: how the Redis store behaves (ignored by the embedded store).
    pub store_options: StoreOptions,
    pub billing: BillingConfig,
    /// From `[tiers.NAME]` (always holding `unverified` and `trusted`) and `[[account_overrides]]`.
    pub limits: LimitPolicy,
    pub upstreams: Vec<UpstreamConfig>,
    /// Never empty: the reference registry on the sandbox when the file has no `[[models]]`.
    pub models: Vec<ModelConfig>,
    pub sandbox: SandboxSettings,
    /// `[log] level`: the most detailed log lines written (`info` by default).
    pub log_level: crate::log::Level,
    /// `[log] access`: one JSON line per client request on standard output, or none.
    pub access_log: AccessLogFormat,
    /// `[payments]`: the payments listener and its providers (none without the section).
    pub payments: Option<PaymentsConfig>,
}

/// `[log] access`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AccessLogFormat {
    Json,
    Off,
}

/// `[server]`: listeners, workers, and the per-connection limits (each at most its `limits.rs`
/// constant, which is also its default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Name of the environment variable holding the admin bearer token.
    pub admin_token_env: String,
    /// 0 = one per CPU core; at most `limits::MAX_WORKERS`.
    pub workers: usize,
    pub max_head_bytes: usize,
    pub max_body_bytes: usize,
    pub head_timeout_ms: u64,
    pub body_timeout_ms: u64,
    pub keepalive_timeout_ms: u64,
    pub shutdown_deadline_ms: u64,
    /// `[server.tls]`: terminate TLS on the client listener with this certificate and key.
    pub tls: Option<TlsFiles>,
    /// Browser origins allowed to call the client API (CORS); empty: off.
    pub cors_origins: Vec<String>,
    /// How each worker's io_uring ring runs completion work (ignored on epoll).
    pub io_uring_task_work: UringTaskWork,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN.parse().expect("literal address"),
            admin_listen: DEFAULT_ADMIN_LISTEN.parse().expect("literal address"),
            admin_token_env: DEFAULT_ADMIN_TOKEN_ENV.to_string(),
            workers: 0,
            max_head_bytes: limits::MAX_REQUEST_HEAD_BYTES,
            max_body_bytes: limits::MAX_REQUEST_BODY_BYTES,
            head_timeout_ms: limits::HEAD_READ_TIMEOUT_MS,
            body_timeout_ms: limits::BODY_READ_TIMEOUT_MS,
            keepalive_timeout_ms: limits::KEEPALIVE_IDLE_TIMEOUT_MS,
            shutdown_deadline_ms: limits::SHUTDOWN_DRAIN_DEADLINE_MS,
            tls: None,
            cors_origins: Vec::new(),
            io_uring_task_work: UringTaskWork::default(),
        }
    }
}

/// A PEM certificate chain and its PEM private key (both existed when the file was checked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// `[store]`: where shared state lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreConfig {
    /// No `[store]` (or an empty one): in process, one node.
    Embedded,
    /// `redis_url`: `redis://` or `rediss://` (TLS).
    Redis { url: String },
    /// `redis_cluster_nodes`: seed nodes as `host:port`.
    RedisCluster { nodes: Vec<String> },
}

/// Default `[store] key_prefix`.
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "fk";
/// Default `[store] command_timeout_ms` (the largest is `limits::MAX_REDIS_COMMAND_TIMEOUT_MS`).
pub const DEFAULT_REDIS_COMMAND_TIMEOUT_MS: u64 = 250;

/// Default `[store] node_beat_interval_ms`: how often each node renews its heartbeat.
pub const DEFAULT_NODE_BEAT_INTERVAL_MS: u64 = 2_000;
/// Default `[store] node_dead_after_ms`.
pub const DEFAULT_NODE_DEAD_AFTER_MS: u64 = 10_000;
/// Default `[store] reaper_interval_ms`.
pub const DEFAULT_REAPER_INTERVAL_MS: u64 = limits::HOLD_REAPER_INTERVAL_MS;

// Defaults within their bounds.
const _: () = assert!(DEFAULT_NODE_BEAT_INTERVAL_MS <= limits::MAX_NODE_BEAT_INTERVAL_MS);
const _: () = assert!(DEFAULT_NODE_DEAD_AFTER_MS <= limits::MAX_NODE_DEAD_AFTER_MS);
const _: () = assert!(DEFAULT_REAPER_INTERVAL_MS <= limits::HOLD_REAPER_INTERVAL_MS);
// SPEC §13 at the defaults: several beats fit in the dead-after bound (a late one is no death),
// and a dead node's holds are released well within 30 s (15 s at most, plus the walk).
const _: () = assert!(2 * DEFAULT_NODE_BEAT_INTERVAL_MS < DEFAULT_NODE_DEAD_AFTER_MS);
const _: () = assert!(
    DEFAULT_NODE_DEAD_AFTER_MS + DEFAULT_REAPER_INTERVAL_MS + limits::REAPER_WALK_ALLOWANCE_MS
        <= limits::DEAD_NODE_RELEASED_WITHIN_MS
);
const _: () = assert!(DEFAULT_UPSTREAM_CONNECT_TIMEOUT_MS <= limits::MAX_UPSTREAM_CONNECT_TIMEOUT_MS);
const _: () = assert!(DEFAULT_UPSTREAM_RESPONSE_TIMEOUT_MS <= limits::MAX_UPSTREAM_RESPONSE_TIMEOUT_MS);
const _: () = assert!(DEFAULT_REDIS_COMMAND_TIMEOUT_MS <= limits::MAX_REDIS_COMMAND_TIMEOUT_MS);
// SPEC §3.5, settle within a second: at the default command timeout a settlement's first call,
// its retries and the pauses between them fit in `SETTLE_WITHIN_MS`.
const _: () = assert!(
    limits::SETTLE_RETRY_PAUSES_MS[0]
        + limits::SETTLE_RETRY_PAUSES_MS[1]
        + (1 + limits::SETTLE_RETRY_PAUSES_MS.len() as u64) * DEFAULT_REDIS_COMMAND_TIMEOUT_MS
        <= limits::SETTLE_WITHIN_MS,
    "settle retries must fit in a second at the default store timeout"
);
// With the default upstream timeouts, a request's whole life after admission (connect, wait for
// the head, the stream, its tail) ends before its hold can be reaped.
const _: () = assert!(
    DEFAULT_UPSTREAM_CONNECT_TIMEOUT_MS
        + DEFAULT_UPSTREAM_RESPONSE_TIMEOUT_MS
        + limits::UPSTREAM_REQUEST_DEADLINE_MS
        + limits::RESPONSE_WRITE_TIMEOUT_MS
        + limits::ABANDONED_STREAM_DRAIN_MS
        + limits::SETTLE_WITHIN_MS
        < limits::HOLD_TTL_MS
);

/// `[store]` settings besides where the store is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// Every Redis key starts with this (several deployments can share one Redis).
    pub key_prefix: String,
    /// Deadline of each Redis command, in milliseconds.
    pub command_timeout_ms: u64,
    /// Environment variable holding the Redis password (else the URL's, else none).
    pub password_env: Option<String>,
    /// How many gateway nodes share the store: while Redis is unreachable each node enforces
    /// `1 / gateway_nodes` of every rate limit on its own.
    pub gateway_nodes: u64,
    /// How often this node renews its heartbeat, in milliseconds.
    pub node_beat_interval_ms: u64,
    /// A node whose heartbeat is older than this is presumed dead: its holds are released.
    pub node_dead_after_ms: u64,
    /// How often the reaper releases expired holds and dead nodes' holds.
    pub reaper_interval_ms: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            key_prefix: DEFAULT_REDIS_KEY_PREFIX.to_string(),
            command_timeout_ms: DEFAULT_REDIS_COMMAND_TIMEOUT_MS,
            password_env: None,
            gateway_nodes: 1,
            node_beat_interval_ms: DEFAULT_NODE_BEAT_INTERVAL_MS,
            node_dead_after_ms: DEFAULT_NODE_DEAD_AFTER_MS,
            reaper_interval_ms: DEFAULT_REAPER_INTERVAL_MS,
        }
    }
}

/// `[billing]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BillingConfig {
    pub kes_per_usd: UnitsPerUsd,
    /// From `signup_credit_usd`.
    pub signup_credit: Nanos,
}

impl Default for BillingConfig {
    fn default() -> Self {
        BillingConfig {
            kes_per_usd: UnitsPerUsd::parse(DEFAULT_KES_PER_USD).expect("literal rate"),
            signup_credit: DEFAULT_SIGNUP_CREDIT,
        }
    }
}

/// The scheme of an upstream base URL.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum UrlScheme {
    Http,
    Https,
}

impl UrlScheme {
    pub fn default_port(self) -> u16 {
        match self {
            UrlScheme::Http => 80,
            UrlScheme::Https => 443,
        }
    }
}

/// One `[[upstreams]]` entry: an OpenAI-compatible provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub name: String,
    /// As written, e.g. `https://api.groq.com/openai/v1`; the four fields below are its parts.
    pub base_url: String,
    pub scheme: UrlScheme,
    /// Host name or IP address; an IPv6 address without its brackets.
    pub host: String,
    /// The explicit port, else the scheme's default.
    pub port: u16,
    /// Path prefix with a leading '/' and no trailing '/' (`/openai/v1`), or empty.
    pub base_path: String,
    /// Environment variable holding the provider's API key (checked at start, not here).
    pub api_key_env: Option<String>,
    /// Extra trust root in PEM (private upstreams, tests).
    pub ca_file: Option<PathBuf>,
    pub connect_timeout_ms: u64,
    pub response_timeout_ms: u64,
    /// How long a connection may sit idle in a worker's pool before it is closed (at most, and by
    /// default, `limits::UPSTREAM_POOL_IDLE_TIMEOUT_MS`).
    pub pool_idle_timeout_ms: u64,
    /// The upstream serves the Responses API (`{base_url}/responses`): Responses requests for its
    /// models are proxied natively instead of translated to chat (SPEC §8.1). Default false.
    pub responses: bool,
}

/// One `[[models]]` entry: a public model id and where it is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelConfig {
    pub id: String,
    /// `sandbox` or the name of an `[[upstreams]]` entry.
    pub upstream: String,
    /// The name the upstream knows the model by (defaults to `id`); never shown to clients.
    pub upstream_model: String,
    /// From `input_usd_per_million`.
    pub input_price: NanosPerToken,
    /// From `cached_input_usd_per_million` (default: the input price): input tokens the
    /// upstream served from its prompt cache.
    pub cached_input_price: NanosPerToken,
    /// From `output_usd_per_million`.
    pub output_price: NanosPerToken,
    pub max_output_tokens: u64,
    /// From `max_image_input_tokens`: the most input tokens one image part costs upstream;
    /// `None` (absent): image parts are refused.
    pub max_image_input_tokens: Option<u64>,
    /// From `max_audio_input_tokens`: the same for one audio part.
    pub max_audio_input_tokens: Option<u64>,
    /// Request keys answered with 400 `unsupported_parameter` for this model.
    pub unsupported_parameters: Vec<String>,
    /// Unix seconds, shown in `/v1/models`.
    pub created: u64,
    /// From `tokenizer`: how the upstream counts this model's input text, loaded at start-up
    /// (`None`: `"bytes"`, one token per byte, the default).
    pub tokenizer: Option<std::sync::Arc<crate::openai::tokenize::Tokenizer>>,
}

/// `[sandbox]`: how the built-in simulated model behaves.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SandboxSettings {
    pub time_to_first_token_ms: u64,
    /// 0 = no pacing.
    pub tokens_per_second: u64,
    pub output_tokens: u64,
    /// Each streamed content chunk carries `"x_sandbox_us":[received, sent]`: when the request
    /// reached the sandbox and when the chunk was written, in wall-clock µs, so a load generator
    /// can take the sandbox's own wait out of its time to first token. Only the standalone
    /// sandbox's `--stamp-events on` sets it (never a config file: real answers carry no stamp).
    pub stamp_events: bool,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        SandboxSettings {
            time_to_first_token_ms: 0,
            tokens_per_second: 0,
            output_tokens: DEFAULT_SANDBOX_OUTPUT_TOKENS,
            stamp_events: false,
        }
    }
}

/// One problem in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the offending key, e.g. `models[2].input_usd_per_million`; `(file)` for
    /// a file that cannot be read or is not TOML.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Everything at its default: embedded store, SPEC §4 tiers, the reference registry on the
    /// sandbox. The same as an empty file.
    pub fn demo() -> Config {
        Config {
            server: ServerConfig::default(),
            store: StoreConfig::Embedded,
            store_options: StoreOptions::default(),
            billing: BillingConfig::default(),
            limits: LimitPolicy::reference(),
            upstreams: Vec::new(),
            models: reference_models(),
            sandbox: SandboxSettings::default(),
            log_level: crate::log::Level::Info,
            access_log: AccessLogFormat::Json,
            payments: None,
        }
    }

    /// Environment variables the configuration names but the process environment lacks (or
    /// holds empty): the admin token and every upstream's API key. `serve` refuses to start
    /// and `check-config` fails while this is not empty.
    pub fn missing_env_vars(&self) -> Vec<ConfigError> {
        self.missing_env_vars_in(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()))
    }

    /// `missing_env_vars` against any environment: `is_set(name)` says whether `name` holds a
    /// non-empty value.
    pub fn missing_env_vars_in(&self, is_set: impl Fn(&str) -> bool) -> Vec<ConfigError> {
        let mut missing = Vec::new();
        if !is_set(&self.server.admin_token_env) {
            missing.push(ConfigError {
                key: "server.admin_token_env".into(),
                message: format!(
                    "environment variable {} is not set (or is empty); it must hold the admin API token",
                    self.server.admin_token_env
                ),
            });
        }
        for (index, upstream) in self.upstreams.iter().enumerate() {
            if let Some(name) = &upstream.api_key_env
                && !is_set(name)
            {
                missing.push(ConfigError {
                    key: format!("upstreams[{index}].api_key_env"),
                    message: format!(
                        "environment variable {name} is not set (or is empty); it must hold the API key of upstream '{}'",
                        upstream.name
                    ),
                });
            }
        }
        if let Some(payments) = &self.payments {
            for (key, name) in payments.secret_env_vars() {
                if !is_set(name) {
                    missing.push(ConfigError {
                        key: key.into(),
                        message: format!(
                            "environment variable {name} is not set (or is empty); it must hold this payment secret"
                        ),
                    });
                }
            }
        }
        missing
    }
}

/// Reads and validates a configuration file.
pub fn load_config(path: &Path) -> Result<Config, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        vec![ConfigError { key: "(file)".into(), message: format!("cannot read {}: {error}", path.display()) }]
    })?;
    parse_config(&text)
}

/// Parses and validates a whole configuration file: `Ok` only if there is no problem at all,
/// else every problem found. A TOML syntax error is the one exception: the file cannot be
/// walked, so it is reported alone, with its line and column.
pub fn parse_config(text: &str) -> Result<Config, Vec<ConfigError>> {
    let table: Table = text.parse().map_err(|error: toml::de::Error| vec![syntax_error(text, &error)])?;
    let mut reader = Reader::new();
    let root = Section::root(&table);
    reader.check_keys(&root, TOP_LEVEL_KEYS);
    let server = server::server(&mut reader, &root);
    let (store, store_options) = server::store(&mut reader, &root);
    let billing = server::billing(&mut reader, &root);
    let limits = server::limit_policy(&mut reader, &root);
    let upstreams = catalog::upstreams(&mut reader, &root);
    let models = catalog::models(&mut reader, &root, &upstreams.names);
    let sandbox = server::sandbox(&mut reader, &root);
    let (log_level, access_log) = server::log_settings(&mut reader, &root);
    let payments = payments::payments(&mut reader, &root, &server);
    let errors = reader.into_errors();
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Config {
        server,
        store,
        store_options,
        billing,
        limits,
        upstreams: upstreams.valid,
        models,
        sandbox,
        log_level,
        access_log,
        payments,
    })
}

/// SPEC §3's reference registry, every model on the sandbox.
pub fn reference_models() -> Vec<ModelConfig> {
    REFERENCE_MODELS
        .iter()
        .map(|&(id, nanos_per_token)| ModelConfig {
            id: id.to_string(),
            upstream: SANDBOX_UPSTREAM.into(),
            upstream_model: id.to_string(),
            input_price: NanosPerToken(nanos_per_token),
            cached_input_price: NanosPerToken(nanos_per_token),
            output_price: NanosPerToken(nanos_per_token),
            max_output_tokens: REFERENCE_MAX_OUTPUT_TOKENS,
            max_image_input_tokens: None,
            max_audio_input_tokens: None,
            unsupported_parameters: Vec::new(),
            created: REFERENCE_CREATED_UNIX_S,
            tokenizer: None,
        })
        .collect()
}

/// A TOML syntax error, located by line and column (both from 1).
fn syntax_error(text: &str, error: &toml::de::Error) -> ConfigError {
    let message = error.message().trim_end();
    let location = error.span().map(|span| {
        let before = text.get(..span.start).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |tail| tail.chars().count()) + 1;
        format!(" at line {line}, column {column}")
    });
    ConfigError { key: "(file)".into(), message: format!("not valid TOML{}: {message}", location.unwrap_or_default()) }
}
