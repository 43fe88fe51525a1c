//! Tests of the configuration validator: every key, every refusal located and reported at once,
//! and the README and example file covering every key.

use std::sync::Arc;

use super::*;
use crate::store::TierLimits;

/// The keys of every error `text` produces, in report order.
fn error_keys(text: &str) -> Vec<String> {
    match parse_config(text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(errors) => errors.into_iter().map(|error| error.key).collect(),
    }
}

/// Every error of `text`, displayed.
pub(super) fn error_lines(text: &str) -> Vec<String> {
    match parse_config(text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

/// A path under the temp directory unique to this process and `name`.
pub(super) fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("fikra-config-test-{}-{name}", std::process::id()))
}

fn groq() -> UpstreamConfig {
    UpstreamConfig {
        name: "groq".into(),
        base_url: "https://api.groq.com/openai/v1".into(),
        scheme: UrlScheme::Https,
        host: "api.groq.com".into(),
        port: 443,
        base_path: "/openai/v1".into(),
        api_key_env: Some("GROQ_API_KEY".into()),
        ca_file: None,
        connect_timeout_ms: 3_000,
        response_timeout_ms: 60_000,
        pool_idle_timeout_ms: 30_000,
        responses: false,
    }
}

pub(super) const SPEC_EXAMPLE: &str = r#"
[server]
listen = "0.0.0.0:8080"
admin_listen = "127.0.0.1:8081"
admin_token_env = "FIKRA_ADMIN_TOKEN"   # the admin token is read from this variable
workers = 0                             # 0 = one per CPU core

[store]
redis_url = "redis://127.0.0.1:6379"    # omit [store] for the embedded store
# redis_cluster_nodes = ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"]

[billing]
kes_per_usd = "130"
signup_credit_usd = "1.00"

[tiers.unverified]
rpm = 30
tpm = 40000
[tiers.trusted]
rpm = 100
tpm = 160000

[[upstreams]]
name = "groq"
base_url = "https://api.groq.com/openai/v1"
api_key_env = "GROQ_API_KEY"
# ca_file = "/etc/fikra/upstream-ca.pem"  # extra trust root (private upstreams, tests)

[[models]]
id = "fikra-flash"
upstream = "groq"                       # or "sandbox"
upstream_model = "openai/gpt-oss-20b"
input_usd_per_million = "0.5"
output_usd_per_million = "0.5"
max_output_tokens = 8192
"#;

// Goal: the empty file is the demo, and the demo is exactly the documented defaults.
#[test]
fn empty_file_is_the_demo_with_documented_defaults() {
    let config = parse_config("").unwrap();
    assert_eq!(config, Config::demo());
    let server = &config.server;
    assert_eq!(server.listen, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(server.admin_listen, "127.0.0.1:8081".parse().unwrap());
    assert_eq!(server.admin_token_env, "FIKRA_ADMIN_TOKEN");
    assert_eq!(
        (server.workers, server.max_head_bytes, server.max_body_bytes, server.tls.clone()),
        (0, 32 * 1024, 4 * 1024 * 1024, None)
    );
    assert_eq!(
        (server.head_timeout_ms, server.body_timeout_ms, server.keepalive_timeout_ms, server.shutdown_deadline_ms),
        (10_000, 30_000, 60_000, 30_000)
    );
    assert_eq!(config.store, StoreConfig::Embedded);
    assert_eq!(config.billing.kes_per_usd.to_nanos("130"), Ok(Nanos(1_000_000_000)));
    assert_eq!(config.billing.signup_credit, Nanos(1_000_000_000));
    assert_eq!(
        config.limits.tiers,
        [
            (Arc::from("unverified"), TierLimits::per_minute(30, 40_000)),
            (Arc::from("trusted"), TierLimits::per_minute(100, 160_000)),
        ]
    );
    assert_eq!(config.limits.account_overrides, []);
    assert_eq!(config.upstreams, []);
    let registry: Vec<(&str, &str, u64, u64, u64)> = config
        .models
        .iter()
        .map(|m| (m.id.as_str(), m.upstream.as_str(), m.input_price.0, m.output_price.0, m.max_output_tokens))
        .collect();
    assert_eq!(
        registry,
        [
            ("fikra-flash", "sandbox", 500, 500, 8192),
            ("fikra-fast-8b", "sandbox", 500, 500, 8192),
            ("fikra-pro-20b", "sandbox", 2000, 2000, 8192),
            ("fikra-pro-120b", "sandbox", 3000, 3000, 8192),
            ("fikra-qwen-max", "sandbox", 5000, 5000, 8192),
            ("fikra-auto", "sandbox", 2000, 2000, 8192),
            ("fikra-auto-pro", "sandbox", 5000, 5000, 8192),
        ]
    );
    assert_eq!(
        config.sandbox,
        SandboxSettings { time_to_first_token_ms: 0, tokens_per_second: 0, output_tokens: 16, stamp_events: false }
    );
}

// Goal: the SPEC §6 example, verbatim, parses to exactly these values (the rest at defaults).
#[test]
fn spec_example_parses_to_exact_values() {
    let expected = Config {
        store: StoreConfig::Redis { url: "redis://127.0.0.1:6379".into() },
        upstreams: vec![groq()],
        models: vec![ModelConfig {
            id: "fikra-flash".into(),
            upstream: "groq".into(),
            upstream_model: "openai/gpt-oss-20b".into(),
            input_price: NanosPerToken(500),
            cached_input_price: NanosPerToken(500),
            output_price: NanosPerToken(500),
            max_output_tokens: 8192,
            max_image_input_tokens: None,
            max_audio_input_tokens: None,
            unsupported_parameters: vec![],
            created: 1_767_225_600,
            tokenizer: None,
        }],
        ..Config::demo()
    };
    assert_eq!(parse_config(SPEC_EXAMPLE), Ok(expected));
}

// Goal: setting one key changes exactly that value; everything else keeps its default.
#[test]
fn each_key_alone_keeps_every_other_default() {
    let local = || UpstreamConfig {
        name: "local".into(),
        base_url: "http://127.0.0.1:9000".into(),
        scheme: UrlScheme::Http,
        host: "127.0.0.1".into(),
        port: 9000,
        base_path: String::new(),
        api_key_env: None,
        ca_file: None,
        connect_timeout_ms: DEFAULT_UPSTREAM_CONNECT_TIMEOUT_MS,
        response_timeout_ms: DEFAULT_UPSTREAM_RESPONSE_TIMEOUT_MS,
        pool_idle_timeout_ms: crate::limits::UPSTREAM_POOL_IDLE_TIMEOUT_MS,
        responses: false,
    };
    let limits = |rpm, tpm| TierLimits::per_minute(rpm, tpm);
    type Change = Box<dyn Fn(&mut Config)>;
    let cases: Vec<(&str, Change)> = vec![
        ("[server]\nlisten = \"[::]:80\"", Box::new(|c| c.server.listen = "[::]:80".parse().unwrap())),
        ("[server]\nadmin_token_env = \"ADMIN\"", Box::new(|c| c.server.admin_token_env = "ADMIN".into())),
        ("[server]\nworkers = 256", Box::new(|c| c.server.workers = 256)),
        ("[server]\nmax_head_bytes = 8192", Box::new(|c| c.server.max_head_bytes = 8192)),
        ("[server]\nmax_body_bytes = 1", Box::new(|c| c.server.max_body_bytes = 1)),
        ("[server]\nhead_timeout_ms = 500", Box::new(|c| c.server.head_timeout_ms = 500)),
        ("[server]\nbody_timeout_ms = 10000", Box::new(|c| c.server.body_timeout_ms = 10_000)),
        ("[server]\nkeepalive_timeout_ms = 5000", Box::new(|c| c.server.keepalive_timeout_ms = 5_000)),
        ("[server]\nshutdown_deadline_ms = 30000", Box::new(|_| {})),
        ("[store]", Box::new(|_| {})),
        (
            "[store]\nnode_beat_interval_ms = 500\nnode_dead_after_ms = 1000\nreaper_interval_ms = 250",
            Box::new(|c| {
                c.store_options.node_beat_interval_ms = 500;
                c.store_options.node_dead_after_ms = 1_000;
                c.store_options.reaper_interval_ms = 250;
            }),
        ),
        (
            "[store]\nredis_url = \"rediss://cache.internal:6380/0\"",
            Box::new(|c| c.store = StoreConfig::Redis { url: "rediss://cache.internal:6380/0".into() }),
        ),
        (
            "[store]\nredis_cluster_nodes = [\"10.0.0.1:7000\", \"10.0.0.2:7000\"]",
            Box::new(|c| {
                c.store = StoreConfig::RedisCluster { nodes: vec!["10.0.0.1:7000".into(), "10.0.0.2:7000".into()] }
            }),
        ),
        (
            "[billing]\nkes_per_usd = \"129.85\"",
            Box::new(|c| c.billing.kes_per_usd = UnitsPerUsd::parse("129.85").unwrap()),
        ),
        ("[billing]\nsignup_credit_usd = \"0\"", Box::new(|c| c.billing.signup_credit = Nanos(0))),
        ("[log]\nlevel = \"debug\"", Box::new(|c| c.log_level = crate::log::Level::Debug)),
        ("[log]\nlevel = \"error\"", Box::new(|c| c.log_level = crate::log::Level::Error)),
        ("[log]", Box::new(|_| {})),
        ("[billing]\nsignup_credit_usd = \"2.5\"", Box::new(|c| c.billing.signup_credit = Nanos(2_500_000_000))),
        ("[tiers.trusted]\nrpm = 200", Box::new(move |c| c.limits.tiers[1].1 = limits(200, 160_000))),
        ("[tiers.unverified]\ntpm = 1000", Box::new(move |c| c.limits.tiers[0].1 = limits(30, 1_000))),
        (
            "[tiers.enterprise]\nrpm = 1000\ntpm = 2000000",
            Box::new(move |c| c.limits.tiers.push(("enterprise".into(), limits(1_000, 2_000_000)))),
        ),
        (
            "[[account_overrides]]\naccount = \"acme\"\nrpm = 5\ntpm = 6",
            Box::new(move |c| c.limits.account_overrides.push(("acme".into(), limits(5, 6)))),
        ),
        (
            "[[upstreams]]\nname = \"local\"\nbase_url = \"http://127.0.0.1:9000\"",
            Box::new(move |c| c.upstreams = vec![local()]),
        ),
        (
            "[[upstreams]]\nname = \"local\"\nbase_url = \"http://127.0.0.1:9000\"\nconnect_timeout_ms = 60000\nresponse_timeout_ms = 600000",
            Box::new(move |c| {
                c.upstreams =
                    vec![UpstreamConfig { connect_timeout_ms: 60_000, response_timeout_ms: 600_000, ..local() }]
            }),
        ),
        (
            "[[upstreams]]\nname = \"local\"\nbase_url = \"http://127.0.0.1:9000\"\npool_idle_timeout_ms = 250",
            Box::new(move |c| c.upstreams = vec![UpstreamConfig { pool_idle_timeout_ms: 250, ..local() }]),
        ),
        (
            "[[upstreams]]\nname = \"local\"\nbase_url = \"http://127.0.0.1:9000\"\nresponses = true",
            Box::new(move |c| c.upstreams = vec![UpstreamConfig { responses: true, ..local() }]),
        ),
        (
            "[[models]]\nid = \"m\"\nupstream = \"sandbox\"\ninput_usd_per_million = \"0\"\noutput_usd_per_million = \"1.25\"\nmax_output_tokens = 1000000",
            Box::new(|c| {
                c.models = vec![ModelConfig {
                    id: "m".into(),
                    upstream: "sandbox".into(),
                    upstream_model: "m".into(),
                    input_price: NanosPerToken(0),
                    cached_input_price: NanosPerToken(0),
                    output_price: NanosPerToken(1250),
                    max_output_tokens: 1_000_000,
                    max_image_input_tokens: None,
                    max_audio_input_tokens: None,
                    unsupported_parameters: vec![],
                    created: 1_767_225_600,
                    tokenizer: None,
                }]
            }),
        ),
        (
            "[[models]]\nid = \"m\"\nupstream = \"sandbox\"\ninput_usd_per_million = \"1\"\ncached_input_usd_per_million = \"0.5\"\noutput_usd_per_million = \"2\"\nmax_output_tokens = 100",
            Box::new(|c| {
                c.models = vec![ModelConfig {
                    id: "m".into(),
                    upstream: "sandbox".into(),
                    upstream_model: "m".into(),
                    input_price: NanosPerToken(1000),
                    cached_input_price: NanosPerToken(500),
                    output_price: NanosPerToken(2000),
                    max_output_tokens: 100,
                    max_image_input_tokens: None,
                    max_audio_input_tokens: None,
                    unsupported_parameters: vec![],
                    created: 1_767_225_600,
                    tokenizer: None,
                }]
            }),
        ),
        ("[tiers.trusted]\ncount_cached_tokens = true", Box::new(|c| c.limits.tiers[1].1.count_cached_tokens = true)),
        (
            "[[models]]\nid = \"v\"\nupstream = \"sandbox\"\ninput_usd_per_million = \"1\"\noutput_usd_per_million = \"1\"\nmax_output_tokens = 10\nmax_image_input_tokens = 1105\nmax_audio_input_tokens = 1000000",
            Box::new(|c| {
                // A sandbox model like the reference ones, with both media allowances.
                let price = NanosPerToken(1000);
                c.models = vec![ModelConfig {
                    id: "v".into(),
                    upstream_model: "v".into(),
                    input_price: price,
                    cached_input_price: price,
                    output_price: price,
                    max_output_tokens: 10,
                    max_image_input_tokens: Some(1105),
                    max_audio_input_tokens: Some(1_000_000),
                    ..reference_models()[0].clone()
                }]
            }),
        ),
        ("[sandbox]\ntime_to_first_token_ms = 250", Box::new(|c| c.sandbox.time_to_first_token_ms = 250)),
        ("[sandbox]\ntokens_per_second = 50", Box::new(|c| c.sandbox.tokens_per_second = 50)),
        ("[sandbox]\noutput_tokens = 100000", Box::new(|c| c.sandbox.output_tokens = 100_000)),
    ];
    for (text, change) in cases {
        let mut expected = Config::demo();
        change(&mut expected);
        assert_eq!(parse_config(text), Ok(expected), "{text}");
    }
}

// Goal: one pass over a file with many kinds of mistakes reports every one, each at its key.
#[test]
fn every_mistake_is_reported_at_once() {
    let text = r#"
[server]
listen = "localhost:8080"
wokers = 2
max_body_bytes = 99999999
head_timeout_ms = 0

[billing]
signup_credit_usd = 1.0

[tiers.unverified]
rpm = 0
tpm = 40000

[[account_overrides]]
account = "acme"
rpm = 10
tpm = 10
[[account_overrides]]
account = "acme"
rpm = 20
tpm = 20

[[upstreams]]
name = "groq"
base_url = "ftp://api.groq.com"

[[models]]
id = "fikra flash"
upstream = "grok"
input_usd_per_million = "0.5"
output_usd_per_million = "0.5"
max_output_tokens = 8192

[[models]]
id = "fikra-pro"
upstream = "sandbox"
input_usd_per_million = "0.0005"
output_usd_per_million = "1"
max_output_tokens = 0

[[models]]
id = "fikra-pro"
upstream = "groq"
output_usd_per_million = "1"
max_output_tokens = 2000000

[sandbox]
colour = "blue"
"#;
    assert_eq!(
        error_keys(text),
        [
            "server.wokers",
            "server.listen",
            "server.max_body_bytes",
            "server.head_timeout_ms",
            "billing.signup_credit_usd",
            "tiers.unverified.rpm",
            "account_overrides[1].account",
            "upstreams[0].base_url",
            "models[0].id",
            "models[0].upstream",
            "models[1].input_usd_per_million",
            "models[1].max_output_tokens",
            "models[2].id",
            "models[2].input_usd_per_million",
            "models[2].max_output_tokens",
            "sandbox.colour",
        ]
    );
}

// Goal: each message names the problem and the fix, exactly.
#[test]
fn messages_explain_the_fix() {
    let cases = [
        ("[server]\nwokers = 2", "server.wokers: unknown key (did you mean 'workers'?)"),
        ("[billing]\nredis_url = \"redis://r\"", "billing.redis_url: unknown key here; it belongs in [store]"),
        ("[server]\nrpm = 1", "server.rpm: unknown key here; it belongs in [tiers.NAME] or [[account_overrides]]"),
        ("[model]\nid = \"m\"", "model: unknown key (did you mean 'models'?)"),
        (
            "[sandbox]\nspeed = 1",
            "sandbox.speed: unknown key (expected one of: time_to_first_token_ms, tokens_per_second, output_tokens)",
        ),
        (
            "[models]\nid = \"m\"",
            "models: must be a list of tables: write [[models]] above each entry ([models] with single brackets makes one table)",
        ),
        ("[[server]]\nworkers = 1", "server: must be a table (a [server] section), not a list"),
        ("models = []", "models: lists no model; remove it to serve the reference registry on the sandbox"),
        (
            "[server]\nlisten = \"localhost:8080\"",
            "server.listen: 'localhost:8080' is not an IP address and port such as \"0.0.0.0:8080\"; the host must be an IP address (0.0.0.0 for every interface, [::] for IPv6), not a name",
        ),
        ("[server]\nlisten = 8080", "server.listen: must be a string, not an integer (8080)"),
        ("[server]\nworkers = 257", "server.workers: 257 is too large: at most 256 (0 means one worker per CPU core)"),
        ("[server]\nworkers = -1", "server.workers: -1 is too small: at least 0"),
        (
            "[server]\nmax_head_bytes = 65536",
            "server.max_head_bytes: 65536 is too large: at most 32768 (the built-in limit: configuration may lower it, never raise it)",
        ),
        ("[server]\nkeepalive_timeout_ms = 0", "server.keepalive_timeout_ms: 0 is too small: at least 1"),
        (
            "[server]\nadmin_token_env = \"sk-live abc\"",
            "server.admin_token_env: must name an environment variable (letters, digits and '_', not starting with a digit, at most 128 bytes); put the secret itself in that variable, not in this file",
        ),
        (
            "[server]\nadmin_listen = \"0.0.0.0:8080\"",
            "server.admin_listen: 0.0.0.0:8080 overlaps server.listen (0.0.0.0:8080): the admin API needs a port of its own",
        ),
        (
            "[server]\nlisten = \"127.0.0.1:9000\"\nadmin_listen = \"0.0.0.0:9000\"",
            "server.admin_listen: 0.0.0.0:9000 overlaps server.listen (127.0.0.1:9000): the admin API needs a port of its own",
        ),
        (
            "[server.tls]\ncert_file = \"/nonexistent/fikra/cert.pem\"\nkey_file = \"Cargo.toml\"",
            "server.tls.cert_file: '/nonexistent/fikra/cert.pem' cannot be used: No such file or directory (os error 2)",
        ),
        (
            "[store]\nredis_url = \"127.0.0.1:6379\"",
            "store.redis_url: must start with redis:// (or rediss:// for TLS), e.g. \"redis://127.0.0.1:6379\"",
        ),
        ("[store]\nredis_url = \"redis://\"", "store.redis_url: has no host, e.g. \"redis://127.0.0.1:6379\""),
        (
            "[store]\nnode_beat_interval_ms = 6000",
            "store.node_beat_interval_ms: must be at most half of node_dead_after_ms (10000 ms), or one late heartbeat would look like a dead node",
        ),
        ("[store]\nnode_dead_after_ms = 20001", "store.node_dead_after_ms: 20001 is too large: at most 20000"),
        ("[store]\nreaper_interval_ms = 0", "store.reaper_interval_ms: 0 is too small: at least 1"),
        (
            "[store]\nredis_url = \"redis://a\"\nredis_cluster_nodes = [\"a:1\"]",
            "store: give redis_url (one Redis server) or redis_cluster_nodes (a Redis Cluster), not both",
        ),
        (
            "[store]\nredis_cluster_nodes = []",
            "store.redis_cluster_nodes: must list at least one node, e.g. [\"127.0.0.1:7000\"]",
        ),
        ("[store]\nredis_cluster_nodes = [\"a:1\", \"a:1\"]", "store.redis_cluster_nodes[1]: 'a:1' is listed twice"),
        (
            "[store]\nredis_cluster_nodes = [7000, \"a:1\"]",
            "store.redis_cluster_nodes[0]: must be a string, not an integer (7000)",
        ),
        ("[billing]\nkes_per_usd = \"0\"", "billing.kes_per_usd: must be more than 0"),
        (
            "[billing]\nkes_per_usd = \"1,30\"",
            "billing.kes_per_usd: '1,30' is refused: not a decimal number (digits with an optional '.' part)",
        ),
        ("[billing]\nsignup_credit_usd = \"-1\"", "billing.signup_credit_usd: '-1' is refused: must not be negative"),
        (
            "[billing]\nsignup_credit_usd = true",
            "billing.signup_credit_usd: must be a decimal string such as \"0.5\", not a boolean (true)",
        ),
        ("[tiers.gold]\nrpm = 10", "tiers.gold.tpm: is required (a positive integer per minute)"),
        (
            "[tiers.gold]\nrpm = 10\ntpm = 10\nburst = 5",
            "tiers.gold.burst: unknown key (expected one of: rpm, tpm, count_cached_tokens)",
        ),
        ("[tiers.\"gold tier\"]\nrpm = 10\ntpm = 10", "tiers.gold tier: tier names are 1 to 64 of A-Z a-z 0-9 _ -"),
        ("[tiers.trusted]\ntpm = 100000000001", "tiers.trusted.tpm: 100000000001 is too large: at most 100000000000"),
        ("[[account_overrides]]\nrpm = 1\ntpm = 1", "account_overrides[0].account: is required"),
        (
            "[[account_overrides]]\naccount = \"a/b\"\nrpm = 1\ntpm = 1",
            "account_overrides[0].account: account ids are 1 to 64 of A-Z a-z 0-9 _ -",
        ),
        (
            "[[account_overrides]]\naccount = \"a\"\nrpm = 1\ntpm = 1\n[[account_overrides]]\naccount = \"a\"\nrpm = 2\ntpm = 2",
            "account_overrides[1].account: account 'a' already has an override above",
        ),
        ("[[upstreams]]\nbase_url = \"https://x\"", "upstreams[0].name: is required"),
        (
            "[[upstreams]]\nname = \"sandbox\"\nbase_url = \"https://x\"",
            "upstreams[0].name: 'sandbox' is reserved for the built-in sandbox",
        ),
        (
            "[[upstreams]]\nname = \"u\"\nbase_url = \"https://x\"\n[[upstreams]]\nname = \"u\"\nbase_url = \"https://y\"",
            "upstreams[1].name: upstream 'u' is defined twice",
        ),
        (
            "[[upstreams]]\nname = \"u\"\nbase_url = \"https://x\"\napi_key_env = \"gsk abc\"",
            "upstreams[0].api_key_env: must name an environment variable (letters, digits and '_', not starting with a digit, at most 128 bytes); put the secret itself in that variable, not in this file",
        ),
        (
            "[[upstreams]]\nname = \"u\"\nbase_url = \"https://x\"\nconnect_timeout_ms = 0",
            "upstreams[0].connect_timeout_ms: 0 is too small: at least 1",
        ),
        (
            "[[upstreams]]\nname = \"u\"\nbase_url = \"https://x\"\nresponse_timeout_ms = 600001",
            "upstreams[0].response_timeout_ms: 600001 is too large: at most 600000 (the longest any request may last)",
        ),
        (
            "[[upstreams]]\nname = \"u\"\nbase_url = \"https://x\"\npool_idle_timeout_ms = 30001",
            "upstreams[0].pool_idle_timeout_ms: 30001 is too large: at most 30000 (the built-in limit: configuration may lower it, never raise it)",
        ),
        (
            "[[upstreams]]\nname = \"u\"\nbase_url = \"https://x\"\npool_idle_timeout_ms = 0",
            "upstreams[0].pool_idle_timeout_ms: 0 is too small: at least 1",
        ),
        (
            "[[upstreams]]\nname = \"u\"\nbase_url = \"https://x\"\nresponses = \"yes\"",
            "upstreams[0].responses: must be true or false, not a string (\"yes\")",
        ),
        (
            "[[models]]\nid = \"m\"\nupstream = \"sandbx\"\ninput_usd_per_million = \"1\"\noutput_usd_per_million = \"1\"\nmax_output_tokens = 1",
            "models[0].upstream: 'sandbx' is neither \"sandbox\" nor an [[upstreams]] name (did you mean 'sandbox'?)",
        ),
        (
            "[[models]]\nid = \"m\"\nupstream = \"elsewhere\"\ninput_usd_per_million = \"1\"\noutput_usd_per_million = \"1\"\nmax_output_tokens = 1",
            "models[0].upstream: 'elsewhere' is neither \"sandbox\" nor an [[upstreams]] name (define it in [[upstreams]])",
        ),
        (
            "[[models]]\nid = \"m\"\nupstream = \"sandbox\"\ninput_usd_per_million = \"0.0005\"\noutput_usd_per_million = \"1\"\nmax_output_tokens = 1",
            "models[0].input_usd_per_million: '0.0005' is not a whole number of nano-USD per token: USD per million tokens must be a multiple of 0.001",
        ),
        (
            "[[models]]\nid = \"m\"\nupstream = \"sandbox\"\ninput_usd_per_million = \"1\"\noutput_usd_per_million = \"1\"\nmax_output_tokens = 1000001",
            "models[0].max_output_tokens: 1000001 is too large: at most 1000000",
        ),
        (
            "[[models]]\nid = \"m\"\nupstream = \"sandbox\"\ninput_usd_per_million = \"1\"\noutput_usd_per_million = \"1\"",
            "models[0].max_output_tokens: is required (the largest answer, in tokens)",
        ),
        (
            "[[models]]\nid = \"m\"\nupstream = \"sandbox\"\ninput_usd_per_million = \"1\"\noutput_usd_per_million = \"1\"\nmax_output_tokens = 1\nmax_image_input_tokens = 0",
            "models[0].max_image_input_tokens: 0 is too small: at least 1",
        ),
        (
            "[[models]]\nid = \"m\"\nupstream = \"sandbox\"\ninput_usd_per_million = \"1\"\noutput_usd_per_million = \"1\"\nmax_output_tokens = 1\nmax_image_input_tokens = 1000001",
            "models[0].max_image_input_tokens: 1000001 is too large: at most 1000000",
        ),
        (
            "[[models]]\nid = \"m\"\nupstream = \"sandbox\"\ninput_usd_per_million = \"1\"\noutput_usd_per_million = \"1\"\nmax_output_tokens = 1\nmax_audio_input_tokens = 1.5",
            "models[0].max_audio_input_tokens: must be an integer, not a float (1.5)",
        ),
        (
            "[[models]]\nid = \"m\"\nupstream = \"sandbox\"\ninput_usd_per_million = \"1\"\noutput_usd_per_million = \"1\"\nmax_output_tokens = 1\nmax_audio_input_tokens = \"300\"",
            "models[0].max_audio_input_tokens: must be an integer, not a string (\"300\")",
        ),
        (
            "[[models]]\nid = \"m\"\nupstream = \"sandbox\"\noutput_usd_per_million = \"1\"\nmax_output_tokens = 1",
            "models[0].input_usd_per_million: is required (USD per million tokens, a quoted decimal such as \"0.5\")",
        ),
        (
            "[[models]]\nid = \"m\"\nupstream = \"sandbox\"\nupstream_model = \"a\\\"b\"\ninput_usd_per_million = \"1\"\noutput_usd_per_million = \"1\"\nmax_output_tokens = 1",
            "models[0].upstream_model: must be 1 to 256 bytes without quotes, backslashes or control characters",
        ),
        (
            "[[models]]\nid = \"m\"\nupstream = \"sandbox\"\ninput_usd_per_million = \"1\"\noutput_usd_per_million = \"1\"\nmax_output_tokens = 1\nunsupported_parameters = [\"tools\", \"messages\"]",
            "models[0].unsupported_parameters[1]: 'messages' is required in every chat request and cannot be refused",
        ),
        (
            "[[models]]\nid = \"m\"\nupstream = \"sandbox\"\ninput_usd_per_million = \"1\"\noutput_usd_per_million = \"1\"\nmax_output_tokens = 1\ncreated = -5",
            "models[0].created: -5 is too small: at least 0",
        ),
        ("[sandbox]\noutput_tokens = 0", "sandbox.output_tokens: 0 is too small: at least 1"),
        (
            "[sandbox]\ntime_to_first_token_ms = 60001",
            "sandbox.time_to_first_token_ms: 60001 is too large: at most 60000",
        ),
        (
            "[sandbox]\ntokens_per_second = 1\noutput_tokens = 1000",
            "sandbox.tokens_per_second: 1000 tokens at 1 per second take 1000000 ms, more than the 600000 ms a request may last; raise tokens_per_second or lower output_tokens",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(error_lines(text), [expected], "{text}");
    }
    // A refused element keeps the indices of the others.
    assert_eq!(
        error_lines("[store]\nredis_cluster_nodes = [7000, \"a\"]"),
        [
            "store.redis_cluster_nodes[0]: must be a string, not an integer (7000)",
            "store.redis_cluster_nodes[1]: 'a' is not a \"host:port\" node address",
        ]
    );
}

// Goal: money written as a TOML number is refused with the quoted spelling to use instead.
#[test]
fn toml_numbers_for_money_are_refused_with_the_quoted_form() {
    let tail = "; a TOML number is refused because a float cannot hold most decimal amounts exactly";
    let model = |price: &str| {
        format!(
            "[[models]]\nid = \"m\"\nupstream = \"sandbox\"\ninput_usd_per_million = {price}\noutput_usd_per_million = \"1\"\nmax_output_tokens = 1"
        )
    };
    let cases = [
        ("[billing]\nsignup_credit_usd = 1.0".to_string(), "billing.signup_credit_usd", "signup_credit_usd = \"1\""),
        (
            "[billing]\nsignup_credit_usd = 0.25".to_string(),
            "billing.signup_credit_usd",
            "signup_credit_usd = \"0.25\"",
        ),
        ("[billing]\nkes_per_usd = 130".to_string(), "billing.kes_per_usd", "kes_per_usd = \"130\""),
        (model("0.5"), "models[0].input_usd_per_million", "input_usd_per_million = \"0.5\""),
        (model("3"), "models[0].input_usd_per_million", "input_usd_per_million = \"3\""),
    ];
    for (text, key, example) in cases {
        let expected = format!("{key}: money is written as a quoted decimal string, e.g. {example}{tail}");
        assert_eq!(error_lines(&text), [expected], "{text}");
    }
}

// Goal: base URLs split into scheme, host, port and path prefix; bad ones are refused with why.
#[test]
fn base_urls_split_into_parts() {
    type Parts = (UrlScheme, &'static str, u16, &'static str);
    let cases: [(&str, Result<Parts, &str>); 16] = [
        ("https://api.groq.com/openai/v1", Ok((UrlScheme::Https, "api.groq.com", 443, "/openai/v1"))),
        ("https://api.groq.com/openai/v1/", Ok((UrlScheme::Https, "api.groq.com", 443, "/openai/v1"))),
        ("http://127.0.0.1:9000", Ok((UrlScheme::Http, "127.0.0.1", 9000, ""))),
        ("http://localhost/", Ok((UrlScheme::Http, "localhost", 80, ""))),
        ("https://[::1]:8443/v1", Ok((UrlScheme::Https, "::1", 8443, "/v1"))),
        ("https://[::1]/v1", Ok((UrlScheme::Https, "::1", 443, "/v1"))),
        ("ftp://x", Err("must start with https:// or http://, e.g. \"https://api.groq.com/openai/v1\"")),
        ("api.groq.com/openai/v1", Err("must start with https:// or http://, e.g. \"https://api.groq.com/openai/v1\"")),
        ("https:///v1", Err("has no host")),
        ("https://x:0", Err("has '0' for a port, which is not a number from 1 to 65535")),
        ("https://x:http", Err("has 'http' for a port, which is not a number from 1 to 65535")),
        (
            "https://user:pw@x/v1",
            Err("must not carry credentials (user@host): put the key in the variable named by api_key_env"),
        ),
        ("https://x/v1?key=1", Err("must not have a query (?) or fragment (#): give the base path only")),
        ("https://x y/v1", Err("must not contain spaces or control characters")),
        ("https://-x-/v1", Err("has '-x-' for a host, which is not a host name or IPv4 address")),
        ("https://[zz]/v1", Err("has '[zz]' for a host, which is not an IPv6 address")),
    ];
    for (url, expected) in cases {
        let text = format!("[[upstreams]]\nname = \"u\"\nbase_url = \"{url}\"");
        match (parse_config(&text), expected) {
            (Ok(config), Ok((scheme, host, port, base_path))) => {
                let upstream = &config.upstreams[0];
                assert_eq!(upstream.base_url, url);
                assert_eq!(
                    (upstream.scheme, upstream.host.as_str(), upstream.port, upstream.base_path.as_str()),
                    (scheme, host, port, base_path),
                    "{url}"
                );
            }
            (Err(errors), Err(why)) => {
                assert_eq!(errors, [ConfigError { key: "upstreams[0].base_url".into(), message: why.into() }])
            }
            (got, expected) => panic!("{url}: got {got:?}, expected {expected:?}"),
        }
    }
}

// Goal: model ids follow [A-Za-z0-9._:/-]{1,128}, are unique, and upstream_model defaults to the id.
#[test]
fn model_ids_are_checked() {
    let long = "m".repeat(128);
    let too_long = "m".repeat(129);
    let cases = [
        ("meta-llama/llama-3.1:8b_v2.0", true),
        (long.as_str(), true),
        (too_long.as_str(), false),
        ("", false),
        ("fikra flash", false),
        ("fikra\"flash", false),
        ("fikrä", false),
    ];
    for (id, valid) in cases {
        let text = format!(
            "[[models]]\nid = \"{}\"\nupstream = \"sandbox\"\ninput_usd_per_million = \"1\"\noutput_usd_per_million = \"1\"\nmax_output_tokens = 1",
            id.replace('"', "\\\"")
        );
        match parse_config(&text) {
            Ok(config) => {
                assert!(valid, "{id}");
                assert_eq!((config.models[0].id.as_str(), config.models[0].upstream_model.as_str()), (id, id));
            }
            Err(errors) => {
                assert!(!valid, "{id}: {errors:?}");
                assert_eq!(errors.len(), 1);
                assert_eq!(errors[0].to_string(), "models[0].id: model ids are 1 to 128 of A-Z a-z 0-9 . _ : / -");
            }
        }
    }
}

// Goal: a dangling reference is reported once: a model naming a broken upstream is not blamed.
#[test]
fn broken_upstream_does_not_cascade_into_its_models() {
    let text = r#"
[[upstreams]]
name = "groq"
[[models]]
id = "m"
upstream = "groq"
input_usd_per_million = "1"
output_usd_per_million = "1"
max_output_tokens = 1
"#;
    assert_eq!(error_lines(text), ["upstreams[0].base_url: is required"]);
}
