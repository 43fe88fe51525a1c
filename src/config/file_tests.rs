//! Tests of the configuration's files and surroundings: paths that must exist, listeners that
//! must not collide, syntax errors, environment variables, the shipped example and README, and
//! the single-key checks added with the log, cached-price and CORS settings.

use super::tests::{SPEC_EXAMPLE, error_lines, temp_path};
use super::*;
use crate::log::Level;

// Goal: ca_file (of an upstream and of `[payments.mpesa]`, read the same way) and the TLS files
// must exist when the file is checked; existing ones are kept.
#[test]
fn files_must_exist() {
    let ca = temp_path("ca.pem");
    std::fs::write(&ca, "not checked here").unwrap();
    let directory = std::env::temp_dir();
    let upstream = |path: &Path| {
        format!("[[upstreams]]\nname = \"u\"\nbase_url = \"https://x\"\nca_file = \"{}\"", path.display())
    };
    let mpesa = |path: &Path| {
        format!(
            "[payments]\n[payments.mpesa]\nbase_url = \"https://localhost:9\"\nconsumer_key_env = \"K\"\nconsumer_secret_env = \"S\"\nshortcode = \"174379\"\npasskey_env = \"P\"\ncallback_base_url = \"https://pay.example\"\ncallback_token_env = \"T\"\nca_file = \"{}\"",
            path.display()
        )
    };
    let config = parse_config(&upstream(&ca)).unwrap();
    assert_eq!(config.upstreams[0].ca_file.as_deref(), Some(ca.as_path()));
    let config = parse_config(&mpesa(&ca)).unwrap();
    assert_eq!(config.payments.and_then(|p| p.mpesa).and_then(|m| m.ca_file).as_deref(), Some(ca.as_path()));
    let missing = temp_path("missing.pem");
    let cases = [
        ("upstreams[0].ca_file", upstream(&missing), upstream(&directory)),
        ("payments.mpesa.ca_file", mpesa(&missing), mpesa(&directory)),
    ];
    for (key, missing_text, directory_text) in cases {
        assert_eq!(
            error_lines(&missing_text),
            [format!("{key}: '{}' cannot be used: No such file or directory (os error 2)", missing.display())]
        );
        assert_eq!(error_lines(&directory_text), [format!("{key}: '{}' is not a regular file", directory.display())]);
    }
    let tls = format!("[server.tls]\ncert_file = \"{0}\"\nkey_file = \"{0}\"", ca.display());
    let config = parse_config(&tls).unwrap();
    assert_eq!(config.server.tls, Some(TlsFiles { cert_file: ca.clone(), key_file: ca.clone() }));
    assert_eq!(
        error_lines("[server.tls]"),
        ["server.tls.cert_file: is required (a PEM file)", "server.tls.key_file: is required (a PEM file)"]
    );
    std::fs::remove_file(&ca).unwrap();
}

// Goal: listeners on the same port collide unless the kernel picks the ports (port 0).
#[test]
fn listeners_must_not_overlap() {
    let cases = [
        ("127.0.0.1:0", "127.0.0.1:0", true),
        ("127.0.0.1:8080", "127.0.0.2:8080", true),
        ("0.0.0.0:8080", "127.0.0.1:8081", true),
        ("0.0.0.0:8080", "[::1]:8080", true),
        ("[::]:8080", "127.0.0.1:8080", false),
        ("127.0.0.1:8080", "127.0.0.1:8080", false),
        ("[::1]:8080", "[::]:8080", false),
    ];
    for (listen, admin, valid) in cases {
        let text = format!("[server]\nlisten = \"{listen}\"\nadmin_listen = \"{admin}\"");
        assert_eq!(parse_config(&text).is_ok(), valid, "{listen} {admin}");
    }
}

// Goal: a TOML syntax error is one error located by line and column.
#[test]
fn syntax_errors_are_located() {
    let cases = [
        ("[server\nlisten = 1", "not valid TOML at line 1, column 8: invalid table header\nexpected `.`, `]`"),
        ("[server]\nlisten = \n", "not valid TOML at line 2, column 10: invalid string\nexpected `\"`, `'`"),
        (
            "[server]\nworkers = 1\nworkers = 2",
            "not valid TOML at line 3, column 1: duplicate key `workers` in table `server`",
        ),
    ];
    for (text, message) in cases {
        assert_eq!(
            parse_config(text),
            Err(vec![ConfigError { key: "(file)".into(), message: message.into() }]),
            "{text}"
        );
    }
}

// Goal: unset or empty variables named by the file are reported, each at the key naming it.
#[test]
fn missing_env_vars_are_named() {
    let config = parse_config(SPEC_EXAMPLE).unwrap();
    let set = |names: &'static [&'static str]| move |name: &str| names.contains(&name);
    assert_eq!(config.missing_env_vars_in(set(&["FIKRA_ADMIN_TOKEN", "GROQ_API_KEY"])), []);
    let keys = |errors: Vec<ConfigError>| errors.into_iter().map(|e| e.to_string()).collect::<Vec<_>>();
    assert_eq!(
        keys(config.missing_env_vars_in(set(&[]))),
        [
            "server.admin_token_env: environment variable FIKRA_ADMIN_TOKEN is not set (or is empty); it must hold the admin API token",
            "upstreams[0].api_key_env: environment variable GROQ_API_KEY is not set (or is empty); it must hold the API key of upstream 'groq'",
        ]
    );
    assert_eq!(keys(config.missing_env_vars_in(set(&["GROQ_API_KEY"]))).len(), 1);
    assert_eq!(Config::demo().missing_env_vars_in(set(&["FIKRA_ADMIN_TOKEN"])), []);
}

// Goal: the shipped example runs as is: every reference model on the sandbox, SPEC defaults.
#[test]
fn example_file_parses() {
    let config = parse_config(include_str!("../../tuning/example.toml")).unwrap();
    let mut models = reference_models();
    models[0].upstream_model = "openai/gpt-oss-20b".into();
    models[3].unsupported_parameters = vec!["logprobs".into()];
    models[4].max_image_input_tokens = Some(1105);
    assert_eq!(config, Config { models, ..Config::demo() });
    assert_eq!(config.missing_env_vars_in(|name| name == "FIKRA_ADMIN_TOKEN"), []);
}

// Goal: load_config reads a file, and an unreadable path is one located error.
#[test]
fn load_config_reads_files() {
    let path = temp_path("load.toml");
    std::fs::write(&path, "[server]\nworkers = 3\n").unwrap();
    assert_eq!(load_config(&path).map(|config| config.server.workers), Ok(3));
    std::fs::remove_file(&path).unwrap();
    assert_eq!(
        load_config(&path).unwrap_err(),
        [ConfigError {
            key: "(file)".into(),
            message: format!("cannot read {}: No such file or directory (os error 2)", path.display()),
        }]
    );
}

// Goal: `[log] level` takes exactly the four level words; anything else is one located error
// naming them, and a level in the wrong section is pointed to `[log]`.
#[test]
fn log_level_is_one_of_four_words() {
    for (word, level) in
        [("error", Level::Error), ("warn", Level::Warn), ("info", Level::Info), ("debug", Level::Debug)]
    {
        assert_eq!(parse_config(&format!("[log]\nlevel = \"{word}\"")).map(|c| c.log_level), Ok(level));
    }
    let refused = |text: &str| parse_config(text).unwrap_err().iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(
        refused("[log]\nlevel = \"loud\""),
        ["log.level: 'loud' is not a level; use error, warn, info or debug"]
    );
    assert_eq!(
        refused("[log]\nlevel = \"WARN\""),
        ["log.level: 'WARN' is not a level; use error, warn, info or debug"]
    );
    assert_eq!(refused("[log]\nlevel = 3"), ["log.level: must be a string, not an integer (3)"]);
    assert_eq!(refused("[server]\nlevel = \"warn\""), ["server.level: unknown key here; it belongs in [log]"]);
}

// Goal: the configuration reference documents every key the parser knows.
#[test]
fn readme_documents_every_key() {
    let readme = include_str!("../../tuning/README.md");
    let undocumented: Vec<&str> = KEY_HOMES
        .iter()
        .flat_map(|(_, keys)| keys.iter().copied())
        .filter(|key| {
            let spellings = [format!("`{key}`"), format!("[{key}]"), format!("[{key}."), format!(".{key}]")];
            !spellings.iter().any(|spelling| readme.contains(spelling.as_str()))
        })
        .collect();
    assert_eq!(undocumented, Vec::<&str>::new());
}

// Goal: a cached-input price above the input price is refused (the hold, taken at the input
// price, would not cover a cache hit), and `count_cached_tokens` must be a boolean.
#[test]
fn cached_prices_and_counting_are_checked() {
    let refused = |text: &str| parse_config(text).unwrap_err().iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(
        refused(
            "[[models]]\nid = \"m\"\nupstream = \"sandbox\"\ninput_usd_per_million = \"1\"\ncached_input_usd_per_million = \"1.5\"\noutput_usd_per_million = \"2\"\nmax_output_tokens = 100"
        ),
        [
            "models[0].cached_input_usd_per_million: must not be above input_usd_per_million (holds are taken at the input price)"
        ]
    );
    assert_eq!(
        refused("[tiers.trusted]\ncount_cached_tokens = \"yes\""),
        ["tiers.trusted.count_cached_tokens: must be true or false, not a string (\"yes\")"]
    );
}

// Goal: `cors_origins` takes exactly browser-serialised origins, once each, and says why not.
#[test]
fn cors_origins_are_checked() {
    assert_eq!(
        parse_config("[server]\ncors_origins = [\"https://app.example\", \"http://localhost:3000\"]")
            .map(|c| c.server.cors_origins),
        Ok(vec!["https://app.example".to_string(), "http://localhost:3000".to_string()])
    );
    let refused = |text: &str| parse_config(text).unwrap_err().iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(
        refused(
            "[server]\ncors_origins = [\"https://app.example/\", \"app.example\", \"https://a.example\", \"https://a.example\", 7]"
        ),
        [
            "server.cors_origins[4]: must be a string, not an integer (7)",
            "server.cors_origins[0]: 'https://app.example/' must be scheme://host[:port] with a lowercase host and nothing after it (no path or trailing slash)",
            "server.cors_origins[1]: 'app.example' must start with https:// or http://",
            "server.cors_origins[3]: 'https://a.example' is listed twice",
        ]
    );
}

// Goal: a model's `tokenizer` is loaded when the file is checked: the embedded names load,
// "bytes" and no key mean none, and a bad name or an unreadable tokenizer.json is an error
// naming the key (so check-config fails, not a request).
#[test]
fn tokenizer_is_loaded_when_the_file_is_checked() {
    let model = |tokenizer: &str| {
        format!(
            "[[models]]\nid = \"m\"\nupstream = \"sandbox\"\ninput_usd_per_million = \"1\"\noutput_usd_per_million = \"1\"\nmax_output_tokens = 10\n{tokenizer}"
        )
    };
    let name = |text: &str| parse_config(text).unwrap().models[0].tokenizer.as_ref().map(|t| t.name().to_string());
    assert_eq!(name(&model("tokenizer = \"o200k_base\"")).as_deref(), Some("o200k_base"));
    assert_eq!(name(&model("tokenizer = \"cl100k_base\"")).as_deref(), Some("cl100k_base"));
    assert_eq!(name(&model("tokenizer = \"bytes\"")), None);
    assert_eq!(name(&model("")), None);
    assert_eq!(
        error_lines(&model("tokenizer = \"gpt2\"")),
        ["models[0].tokenizer: must be \"bytes\", \"o200k_base\", \"cl100k_base\" or the path of a tokenizer.json"]
    );
    let missing = temp_path("no-tokenizer.json");
    let lines = error_lines(&model(&format!("tokenizer = \"{}\"", missing.display())));
    assert_eq!(lines.len(), 1);
    assert!(lines[0].starts_with(&format!("models[0].tokenizer: cannot read {}", missing.display())), "{lines:?}");
    let broken = temp_path("broken-tokenizer.json");
    std::fs::write(&broken, r#"{"model":{"type":"WordPiece"}}"#).unwrap();
    assert_eq!(
        error_lines(&model(&format!("tokenizer = \"{}\"", broken.display()))),
        [format!("models[0].tokenizer: {}: model.type must be \"BPE\"", broken.display())]
    );
    std::fs::remove_file(&broken).unwrap();
}
