//! The single-table sections: `[server]` (with `[server.tls]`), `[store]`, `[billing]`,
//! `[tiers.NAME]` with `[[account_overrides]]`, `[sandbox]` and `[log]`.
//!
//! Each function reads its section through the `Reader`, falls back to the default for any
//! key that is absent or refused, and never records two errors for one cause.

use std::net::SocketAddr;
use std::sync::Arc;

use super::reader::{Reader, Section};
use super::{AccessLogFormat, BillingConfig, SandboxSettings, ServerConfig, StoreConfig, StoreOptions, TlsFiles};
use crate::http::listener::UringTaskWork;
use crate::limits;
use crate::log::Level;
use crate::money::{self, DecimalError, UnitsPerUsd};
use crate::store::{LimitPolicy, TierLimits};

pub(super) const SERVER_KEYS: &[&str] = &[
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
    "cors_origins",
    "io_uring_task_work",
];
pub(super) const TLS_KEYS: &[&str] = &["cert_file", "key_file"];
pub(super) const STORE_KEYS: &[&str] = &[
    "redis_url",
    "redis_cluster_nodes",
    "key_prefix",
    "command_timeout_ms",
    "password_env",
    "gateway_nodes",
    "node_beat_interval_ms",
    "node_dead_after_ms",
    "reaper_interval_ms",
];
pub(super) const BILLING_KEYS: &[&str] = &["kes_per_usd", "signup_credit_usd"];
pub(super) const TIER_KEYS: &[&str] = &["rpm", "tpm", "count_cached_tokens"];
pub(super) const OVERRIDE_KEYS: &[&str] = &["account", "rpm", "tpm"];
pub(super) const SANDBOX_KEYS: &[&str] = &["time_to_first_token_ms", "tokens_per_second", "output_tokens"];
pub(super) const LOG_KEYS: &[&str] = &["level", "access"];

/// Longest tier name or account id; account ids follow the admin API's rule (1 to 64 of
/// `A-Za-z0-9_-`), so an override can only name an account that can exist.
const MAX_NAME_BYTES: usize = 64;

pub(super) fn server(reader: &mut Reader, root: &Section<'_>) -> ServerConfig {
    let defaults = ServerConfig::default();
    let Some(section) = reader.table(root, "server") else { return defaults };
    reader.check_keys(&section, SERVER_KEYS);
    let listen = reader.address(&section, "listen");
    let admin_listen = reader.address(&section, "admin_listen");
    let server = ServerConfig {
        listen: listen.unwrap_or(defaults.listen),
        admin_listen: admin_listen.unwrap_or(defaults.admin_listen),
        admin_token_env: reader.env_name(&section, "admin_token_env").unwrap_or(defaults.admin_token_env),
        workers: reader
            .integer(&section, "workers", 0..=limits::MAX_WORKERS as u64, " (0 means one worker per CPU core)")
            .map_or(defaults.workers, |workers| workers as usize),
        max_head_bytes: reader.limit(&section, "max_head_bytes", limits::MAX_REQUEST_HEAD_BYTES as u64) as usize,
        max_body_bytes: reader.limit(&section, "max_body_bytes", limits::MAX_REQUEST_BODY_BYTES as u64) as usize,
        head_timeout_ms: reader.limit(&section, "head_timeout_ms", limits::HEAD_READ_TIMEOUT_MS),
        body_timeout_ms: reader.limit(&section, "body_timeout_ms", limits::BODY_READ_TIMEOUT_MS),
        keepalive_timeout_ms: reader.limit(&section, "keepalive_timeout_ms", limits::KEEPALIVE_IDLE_TIMEOUT_MS),
        shutdown_deadline_ms: reader.limit(&section, "shutdown_deadline_ms", limits::SHUTDOWN_DRAIN_DEADLINE_MS),
        tls: reader.table(&section, "tls").and_then(|tls| tls_files(reader, &tls)),
        cors_origins: cors_origins(reader, &section),
        io_uring_task_work: io_uring_task_work(reader, &section),
    };
    // Only compare addresses that were both accepted (an earlier error says enough).
    if (listen.is_some() || section.get("listen").is_none())
        && (admin_listen.is_some() || section.get("admin_listen").is_none())
        && listeners_overlap(server.listen, server.admin_listen)
    {
        reader.error(
            section.key("admin_listen"),
            format!(
                "{} overlaps server.listen ({}): the admin API needs a port of its own",
                server.admin_listen, server.listen
            ),
        );
    }
    server
}

/// `io_uring_task_work`: `immediate`, `cooperative` (the default) or `deferred`.
fn io_uring_task_work(reader: &mut Reader, section: &Section<'_>) -> UringTaskWork {
    let Some(text) = reader.string(section, "io_uring_task_work") else { return UringTaskWork::default() };
    UringTaskWork::from_name(text).unwrap_or_else(|| {
        reader.error(
            section.key("io_uring_task_work"),
            format!("'{text}' is not a task-work mode; use immediate, cooperative or deferred"),
        );
        UringTaskWork::default()
    })
}

/// `cors_origins`: browser origins allowed to call the client API (none: CORS off).
fn cors_origins(reader: &mut Reader, section: &Section<'_>) -> Vec<String> {
    let key = section.key("cors_origins");
    let origins = reader.string_list(section, "cors_origins").unwrap_or_default();
    if origins.len() > limits::MAX_CORS_ORIGINS {
        reader.error(key.clone(), format!("lists {} origins: at most {}", origins.len(), limits::MAX_CORS_ORIGINS));
    }
    let mut accepted: Vec<String> = Vec::new();
    for (index, origin) in origins.iter().enumerate() {
        let Some(origin) = *origin else { continue };
        if let Some(problem) = crate::http::cors::origin_problem(origin) {
            reader.error(format!("{key}[{index}]"), format!("'{origin}' {problem}"));
        } else if accepted.iter().any(|seen| seen == origin) {
            reader.error(format!("{key}[{index}]"), format!("'{origin}' is listed twice"));
        } else {
            accepted.push(origin.to_string());
        }
    }
    accepted
}

/// Whether two listeners would fight over one port. Port 0 (the kernel picks a free port, as
/// tests do) never overlaps; a wildcard address covers every address of its family, and the
/// IPv6 wildcard covers IPv4 too (dual-stack).
pub(super) fn listeners_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() || a.port() == 0 {
        return false;
    }
    let v6_wildcard = |address: SocketAddr| address.is_ipv6() && address.ip().is_unspecified();
    if v6_wildcard(a) || v6_wildcard(b) {
        return true;
    }
    a.is_ipv4() == b.is_ipv4() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn tls_files(reader: &mut Reader, section: &Section<'_>) -> Option<TlsFiles> {
    reader.check_keys(section, TLS_KEYS);
    let mut file = |key: &str| {
        if section.has(key) {
            reader.existing_file(section, key)
        } else {
            reader.error(section.key(key), "is required (a PEM file)");
            None
        }
    };
    let (cert_file, key_file) = (file("cert_file"), file("key_file"));
    Some(TlsFiles { cert_file: cert_file?, key_file: key_file? })
}

pub(super) fn store(reader: &mut Reader, root: &Section<'_>) -> (StoreConfig, StoreOptions) {
    let Some(section) = reader.table(root, "store") else { return (StoreConfig::Embedded, StoreOptions::default()) };
    reader.check_keys(&section, STORE_KEYS);
    let mut options = StoreOptions::default();
    if let Some(prefix) = reader.string(&section, "key_prefix") {
        if prefix.is_empty()
            || prefix.len() > 64
            || !prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b':')
        {
            reader.error(section.key("key_prefix"), "must be 1 to 64 of A-Z a-z 0-9 _ - :");
        } else {
            options.key_prefix = prefix.to_string();
        }
    }
    if let Some(timeout) = reader.integer(&section, "command_timeout_ms", 1..=limits::MAX_REDIS_COMMAND_TIMEOUT_MS, "")
    {
        options.command_timeout_ms = timeout;
    }
    if let Some(name) = reader.string(&section, "password_env") {
        options.password_env = Some(name.to_string());
    }
    if let Some(nodes) = reader.integer(&section, "gateway_nodes", 1..=limits::MAX_GATEWAY_NODES, "") {
        options.gateway_nodes = nodes;
    }
    if let Some(interval) = reader.integer(&section, "node_beat_interval_ms", 1..=limits::MAX_NODE_BEAT_INTERVAL_MS, "")
    {
        options.node_beat_interval_ms = interval;
    }
    if let Some(after) = reader.integer(&section, "node_dead_after_ms", 1..=limits::MAX_NODE_DEAD_AFTER_MS, "") {
        options.node_dead_after_ms = after;
    }
    if let Some(interval) = reader.integer(&section, "reaper_interval_ms", 1..=limits::HOLD_REAPER_INTERVAL_MS, "") {
        options.reaper_interval_ms = interval;
    }
    if 2 * options.node_beat_interval_ms > options.node_dead_after_ms {
        reader.error(
            section.key("node_beat_interval_ms"),
            format!(
                "must be at most half of node_dead_after_ms ({} ms), or one late heartbeat would look like a dead node",
                options.node_dead_after_ms
            ),
        );
    }
    let store = store_location(reader, &section);
    (store, options)
}

fn store_location(reader: &mut Reader, section: &Section<'_>) -> StoreConfig {
    // The URL may carry a password: messages never quote it.
    let url = reader.string(section, "redis_url").and_then(|url| {
        let problem = match url.strip_prefix("redis://").or_else(|| url.strip_prefix("rediss://")) {
            None => "must start with redis:// (or rediss:// for TLS), e.g. \"redis://127.0.0.1:6379\"",
            Some(rest) if rest.is_empty() || rest.starts_with('/') => "has no host, e.g. \"redis://127.0.0.1:6379\"",
            Some(rest) if rest.contains(|c: char| c.is_whitespace() || c.is_control()) => {
                "must not contain spaces or control characters"
            }
            Some(_) => return Some(url.to_string()),
        };
        reader.error(section.key("redis_url"), problem);
        None
    });
    let nodes = reader.string_list(section, "redis_cluster_nodes").map(|nodes| cluster_nodes(reader, section, &nodes));
    if section.has("redis_url") && section.has("redis_cluster_nodes") {
        reader.error(
            section.path(),
            "give redis_url (one Redis server) or redis_cluster_nodes (a Redis Cluster), not both",
        );
        return StoreConfig::Embedded;
    }
    match (url, nodes) {
        (Some(url), _) => StoreConfig::Redis { url },
        (None, Some(nodes)) => StoreConfig::RedisCluster { nodes },
        (None, None) => StoreConfig::Embedded,
    }
}

/// Seed nodes: at least one, each `host:port`, no repeats (`None` elements were refused).
fn cluster_nodes(reader: &mut Reader, section: &Section<'_>, nodes: &[Option<&str>]) -> Vec<String> {
    let key = section.key("redis_cluster_nodes");
    if nodes.is_empty() {
        reader.error(key, "must list at least one node, e.g. [\"127.0.0.1:7000\"]");
        return Vec::new();
    }
    for (index, node) in nodes.iter().enumerate() {
        let Some(node) = *node else { continue };
        let valid = node.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && !host.contains(char::is_whitespace) && port.parse::<u16>().is_ok_and(|port| port != 0)
        });
        if !valid {
            reader.error(format!("{key}[{index}]"), format!("'{node}' is not a \"host:port\" node address"));
        } else if nodes[..index].contains(&Some(node)) {
            reader.error(format!("{key}[{index}]"), format!("'{node}' is listed twice"));
        }
    }
    nodes.iter().flatten().map(|node| node.to_string()).collect()
}

pub(super) fn billing(reader: &mut Reader, root: &Section<'_>) -> BillingConfig {
    let defaults = BillingConfig::default();
    let Some(section) = reader.table(root, "billing") else { return defaults };
    reader.check_keys(&section, BILLING_KEYS);
    let kes_per_usd = reader.decimal(&section, "kes_per_usd").and_then(|text| {
        let rate = match money::parse_scaled(text, 9) {
            Ok(0) => Err("must be more than 0".to_string()),
            Ok(_) => UnitsPerUsd::parse(text).map_err(|error| decimal_refusal(text, &error)),
            Err(error) => Err(decimal_refusal(text, &error)),
        };
        rate.map_err(|message| reader.error(section.key("kes_per_usd"), message)).ok()
    });
    let signup_credit = reader.decimal(&section, "signup_credit_usd").and_then(|text| {
        money::parse_usd(text)
            .map_err(|error| reader.error(section.key("signup_credit_usd"), decimal_refusal(text, &error)))
            .ok()
    });
    BillingConfig {
        kes_per_usd: kes_per_usd.unwrap_or(defaults.kes_per_usd),
        signup_credit: signup_credit.unwrap_or(defaults.signup_credit),
    }
}

/// Why a decimal string was refused, quoting it.
pub(super) fn decimal_refusal(text: &str, error: &DecimalError) -> String {
    format!("'{text}' is refused: {error}")
}

/// `[tiers.NAME]` over the SPEC §4 reference tiers, and `[[account_overrides]]`.
pub(super) fn limit_policy(reader: &mut Reader, root: &Section<'_>) -> LimitPolicy {
    let mut policy = LimitPolicy::reference();
    if let Some(tiers) = reader.table(root, "tiers") {
        for name in tiers.keys() {
            let Some(tier) = reader.table(&tiers, name) else { continue };
            if !is_plain_name(name) {
                reader.error(tier.path(), format!("tier names are 1 to {MAX_NAME_BYTES} of A-Z a-z 0-9 _ -"));
            }
            reader.check_keys(&tier, TIER_KEYS);
            let position = policy.tiers.iter().position(|(existing, _)| **existing == **name);
            let base = position.map(|index| policy.tiers[index].1.clone());
            let limits = tier_limits(reader, &tier, base.as_ref());
            match (limits, position) {
                (Some(limits), Some(index)) => policy.tiers[index].1 = limits,
                (Some(limits), None) => policy.tiers.push((Arc::from(name.as_str()), limits)),
                (None, _) => {}
            }
        }
    }
    for section in reader.table_list(root, "account_overrides").unwrap_or_default() {
        reader.check_keys(&section, OVERRIDE_KEYS);
        let account = reader.required_string(&section, "account").filter(|account| {
            let valid = is_plain_name(account);
            if !valid {
                reader
                    .error(section.key("account"), format!("account ids are 1 to {MAX_NAME_BYTES} of A-Z a-z 0-9 _ -"));
            }
            valid
        });
        let limits = tier_limits(reader, &section, None);
        let Some(account) = account else { continue };
        if policy.account_overrides.iter().any(|(existing, _)| **existing == *account) {
            reader.error(section.key("account"), format!("account '{account}' already has an override above"));
            continue;
        }
        if let Some(limits) = limits {
            policy.account_overrides.push((Arc::from(account), limits));
        }
    }
    policy
}

/// `rpm` and `tpm`; each falls back to `base` (a built-in tier) or is required.
fn tier_limits(reader: &mut Reader, section: &Section<'_>, base: Option<&TierLimits>) -> Option<TierLimits> {
    let mut per_minute = |key: &str, fallback: Option<u64>| {
        if !section.has(key) && fallback.is_none() {
            reader.error(section.key(key), "is required (a positive integer per minute)");
            return None;
        }
        let value = reader.integer(section, key, 1..=limits::MAX_LIMIT_PER_MINUTE, "");
        if section.has(key) { value } else { fallback }
    };
    let rpm = per_minute("rpm", base.map(|limits| limits.requests_per_minute));
    let tpm = per_minute("tpm", base.map(|limits| limits.tokens_per_minute));
    let count_cached_tokens =
        reader.boolean(section, "count_cached_tokens").unwrap_or(base.is_some_and(|limits| limits.count_cached_tokens));
    Some(TierLimits { requests_per_minute: rpm?, tokens_per_minute: tpm?, count_cached_tokens })
}

fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub(super) fn sandbox(reader: &mut Reader, root: &Section<'_>) -> SandboxSettings {
    let defaults = SandboxSettings::default();
    let Some(section) = reader.table(root, "sandbox") else { return defaults };
    reader.check_keys(&section, SANDBOX_KEYS);
    let settings = SandboxSettings {
        time_to_first_token_ms: reader
            .integer(&section, "time_to_first_token_ms", 0..=limits::SANDBOX_MAX_TIME_TO_FIRST_TOKEN_MS, "")
            .unwrap_or(defaults.time_to_first_token_ms),
        tokens_per_second: reader
            .integer(&section, "tokens_per_second", 0..=limits::SANDBOX_MAX_TOKENS_PER_SECOND, " (0 means unpaced)")
            .unwrap_or(defaults.tokens_per_second),
        output_tokens: reader
            .integer(&section, "output_tokens", 1..=limits::SANDBOX_MAX_OUTPUT_TOKENS, "")
            .unwrap_or(defaults.output_tokens),
        stamp_events: false,
    };
    // A sandbox answer is a request like any other: it must end before the request deadline,
    // or its wallet hold could be reaped while it still streams.
    let longest_answer_ms = settings
        .output_tokens
        .saturating_mul(1000)
        .checked_div(settings.tokens_per_second)
        .unwrap_or(0)
        .saturating_add(settings.time_to_first_token_ms);
    if longest_answer_ms > limits::UPSTREAM_REQUEST_DEADLINE_MS {
        reader.error(
            section.key("tokens_per_second"),
            format!(
                "{} tokens at {} per second take {longest_answer_ms} ms, more than the {} ms a request may last; raise tokens_per_second or lower output_tokens",
                settings.output_tokens,
                settings.tokens_per_second,
                limits::UPSTREAM_REQUEST_DEADLINE_MS
            ),
        );
    }
    settings
}

/// `[log]`: `level` (`error`, `warn`, `info` by default, or `debug`) and `access` (`json`, the
/// default, or `off`).
pub(super) fn log_settings(reader: &mut Reader, root: &Section<'_>) -> (Level, AccessLogFormat) {
    let Some(section) = reader.table(root, "log") else { return (Level::Info, AccessLogFormat::Json) };
    reader.check_keys(&section, LOG_KEYS);
    let level = match reader.string(&section, "level") {
        None => Level::Info,
        Some(text) => Level::parse(text).unwrap_or_else(|| {
            reader.error(section.key("level"), format!("'{text}' is not a level; use error, warn, info or debug"));
            Level::Info
        }),
    };
    let access = match reader.string(&section, "access") {
        None | Some("json") => AccessLogFormat::Json,
        Some("off") => AccessLogFormat::Off,
        Some(text) => {
            reader.error(section.key("access"), format!("'{text}' is not an access log format; use json or off"));
            AccessLogFormat::Json
        }
    };
    (level, access)
}
