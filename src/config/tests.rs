use super::*;

// Goal: the empty file is the demo: SPEC defaults and the reference registry.
#[test]
fn defaults() {
    let config = parse_config("").unwrap();
    assert_eq!(config.server.listen, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(config.server.admin_listen, "127.0.0.1:8081".parse().unwrap());
    assert_eq!(config.server.admin_token_env, "FIKRA_ADMIN_TOKEN");
    assert_eq!(
        (config.server.workers, config.server.max_head_bytes, config.server.max_body_bytes),
        (0, 32 * 1024, 4 * 1024 * 1024)
    );
    assert_eq!(config.store, StoreConfig::Embedded);
    assert_eq!(config.billing.signup_credit, Nanos(1_000_000_000));
    assert_eq!(config.billing.kes_per_usd.to_nanos("130"), Ok(Nanos(1_000_000_000)));
    assert_eq!(config.limits, LimitPolicy::reference());
    assert_eq!(config.models.len(), 7);
    assert_eq!(config.models[3].input_price, NanosPerToken(3000));
    assert_eq!(config.sandbox, SandboxSettings { time_to_first_token_ms: 0, tokens_per_second: 0, output_tokens: 16 });
}

// Goal: the SPEC §6 example (with its groq upstream) parses to exact values.
#[test]
fn spec_example() {
    let text = r#"
[server]
listen = "0.0.0.0:8080"
admin_listen = "127.0.0.1:8081"
admin_token_env = "FIKRA_ADMIN_TOKEN"
workers = 0
[store]
redis_url = "redis://127.0.0.1:6379"
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
[[models]]
id = "fikra-flash"
upstream = "groq"
upstream_model = "openai/gpt-oss-20b"
input_usd_per_million = "0.5"
output_usd_per_million = "0.5"
max_output_tokens = 8192
"#;
    let config = parse_config(text).unwrap();
    assert_eq!(config.store, StoreConfig::Redis { url: "redis://127.0.0.1:6379".into() });
    assert_eq!(config.upstreams[0].api_key_env.as_deref(), Some("GROQ_API_KEY"));
    assert_eq!(
        config.models,
        [ModelConfig {
            id: "fikra-flash".into(),
            upstream: "groq".into(),
            upstream_model: "openai/gpt-oss-20b".into(),
            input_price: NanosPerToken(500),
            output_price: NanosPerToken(500),
            max_output_tokens: 8192,
            unsupported_parameters: vec![],
            created: REFERENCE_CREATED_UNIX_S,
        }]
    );
}

// Goal: one pass reports every mistake, each at its exact key.
#[test]
fn reports_every_problem_at_once() {
    let text = r#"
[server]
listen = "nowhere"
wokers = 2
max_body_bytes = 99999999
[billing]
signup_credit_usd = 1.0
[tiers.unverified]
rpm = 0
tpm = 40000
[[models]]
id = "fikra flash"
upstream = "nope"
input_usd_per_million = "0.0005"
output_usd_per_million = "1"
max_output_tokens = 8192
[sandbox]
colour = "blue"
"#;
    let mut keys: Vec<String> = parse_config(text).unwrap_err().into_iter().map(|e| e.key).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "billing.signup_credit_usd",
            "models[0].id",
            "models[0].input_usd_per_million",
            "models[0].upstream",
            "sandbox.colour",
            "server.listen",
            "server.max_body_bytes",
            "server.wokers",
            "tiers.unverified.rpm",
        ]
    );
    let errors = parse_config("[server]\nwokers = 2\n").unwrap_err();
    assert_eq!(errors[0].to_string(), "server.wokers: unknown key (did you mean 'workers'?)");
    let money = parse_config("[billing]\nsignup_credit_usd = 1.0\n").unwrap_err();
    assert!(money[0].message.contains("quoted decimal string"), "{}", money[0].message);
}

// Goal: cross-references and files are checked: ca_file must exist, names unique, TOML errors located.
#[test]
fn references_and_files() {
    let text = r#"
[[upstreams]]
name = "u"
base_url = "ftp://x"
ca_file = "/definitely/not/here.pem"
[[upstreams]]
name = "u"
base_url = "https://x/v1"
"#;
    let mut keys: Vec<String> = parse_config(text).unwrap_err().into_iter().map(|e| e.key).collect();
    keys.sort();
    assert_eq!(keys, ["upstreams[0].base_url", "upstreams[0].ca_file", "upstreams[1].name"]);
    assert_eq!(parse_config("[server\n").unwrap_err()[0].key, "(file)");
    let both = "[store]\nredis_url = \"redis://a\"\nredis_cluster_nodes = [\"a:1\"]\n";
    assert_eq!(parse_config(both).unwrap_err()[0].key, "store");
}

// Goal: the shipped example file is valid.
#[test]
fn example_file_parses() {
    let config = parse_config(include_str!("../../tuning/example.toml")).unwrap();
    assert_eq!(config.models.len(), 2);
    assert_eq!(config.models[1].unsupported_parameters, ["logprobs"]);
}
