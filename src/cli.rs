//! The command line: the zero-config demo, `serve`, `check-config` and `sandbox`.
//!
//! Owns argument parsing, reading secrets from the environment, printing what an operator needs
//! to start (keys, admin token, snippets), and waiting for SIGTERM/SIGINT to drain. It holds no
//! request logic.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::clock::Clock;
use crate::config::{self, Config};
use crate::runtime::Gateway;
use crate::store::{KeyKind, KeyRecord, StoreClient, StoreConnections};

const USAGE: &str = "\
usage:
  fikra-gateway                                   run the single-node demo (sandbox models, embedded store)
  fikra-gateway serve --config FILE               run in production from a TOML config
  fikra-gateway check-config --config FILE        report every problem in FILE, exit 1 if any
  fikra-gateway sandbox --listen ADDR [--ttft-ms N] [--tokens-per-second N] [--output-tokens N] [--workers N]
                        [--tls-cert PEM --tls-key PEM] [--stamp-events on|off]
                                                  run the sandbox model alone, as a stand-in upstream";

#[allow(clippy::print_stdout, clippy::print_stderr)] // output to the operator, not a log line
pub fn run(args: &[String]) -> ExitCode {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        [] => demo(),
        ["serve", "--config", path] => serve(path),
        ["check-config", "--config", path] => check_config(path),
        ["sandbox", rest @ ..] => sandbox(rest),
        ["--help" | "-h" | "help"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

#[allow(clippy::print_stdout, clippy::print_stderr)] // output to the operator, not a log line
fn check_config(path: &str) -> ExitCode {
    let mut problems = match config::load_config(std::path::Path::new(path)) {
        Ok(config) => config.missing_env_vars(),
        Err(errors) => errors,
    };
    if problems.is_empty() {
        println!("{path}: OK");
        return ExitCode::SUCCESS;
    }
    problems.sort_by(|a, b| a.key.cmp(&b.key));
    eprintln!("{path}: {} problem(s):", problems.len());
    for problem in &problems {
        eprintln!("  {problem}");
    }
    ExitCode::FAILURE
}

fn serve(path: &str) -> ExitCode {
    let config = match config::load_config(std::path::Path::new(path)) {
        Ok(config) => config,
        Err(errors) => {
            for error in errors {
                crate::log_error!("config: {error}");
            }
            return ExitCode::FAILURE;
        }
    };
    crate::log::set_max_level(config.log_level);
    let missing = config.missing_env_vars();
    if !missing.is_empty() {
        for error in missing {
            crate::log_error!("config: {error}");
        }
        return ExitCode::FAILURE;
    }
    let admin_token = std::env::var(&config.server.admin_token_env).unwrap_or_default();
    match Gateway::start(config, admin_token, Clock::System) {
        Ok(gateway) => {
            crate::log_info!("serving the API on {} and the admin API on {}", gateway.client_addr, gateway.admin_addr);
            wait_for_termination();
            crate::log_info!("draining");
            gateway.shutdown();
            crate::log_info!("stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            crate::log_error!("cannot start: {error}");
            ExitCode::FAILURE
        }
    }
}

fn demo() -> ExitCode {
    let mut config = Config::demo();
    config.server.listen = "127.0.0.1:8080".parse().expect("literal address");
    config.server.admin_listen = "127.0.0.1:8081".parse().expect("literal address");
    config.models.extend(readme_model_alias(&config.models));
    let admin_token = std::env::var(&config.server.admin_token_env)
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| format!("fk_admin_{}", crate::ids::random_base62(32)));
    let signup_credit = config.billing.signup_credit;
    let gateway = match Gateway::start(config, admin_token.clone(), Clock::System) {
        Ok(gateway) => gateway,
        Err(error) => {
            crate::log_error!("cannot start the demo: {error}");
            return ExitCode::FAILURE;
        }
    };
    let connections = StoreConnections::default();
    let store = gateway.shared.store.client(&connections);
    let now_ms = gateway.shared.clock.now_ms();
    let (live_key, test_key) = match block_on(create_demo_account(store, signup_credit, now_ms)) {
        Ok(keys) => keys,
        Err(error) => {
            crate::log_error!("cannot create the demo account: {error}");
            gateway.shutdown();
            return ExitCode::FAILURE;
        }
    };
    print_demo_banner(gateway.client_addr, gateway.admin_addr, &live_key, &test_key, &admin_token, signup_credit);
    wait_for_termination();
    gateway.shutdown();
    ExitCode::SUCCESS
}

/// The model the official OpenAI SDKs' README examples name (`gpt-5.5`, Python 3.57.0 and
/// Node 7.59.0), served in the demo by the sandbox at `fikra-flash`'s prices, so those
/// examples run unchanged with only `base_url` and `api_key` set. Demo only: a production
/// registry lists exactly what its file says.
const SDK_README_MODEL: &str = "gpt-5.5";

fn readme_model_alias(models: &[config::ModelConfig]) -> Option<config::ModelConfig> {
    let flash = models.iter().find(|model| model.id == "fikra-flash")?;
    Some(config::ModelConfig { id: SDK_README_MODEL.into(), upstream_model: SDK_README_MODEL.into(), ..flash.clone() })
}

/// Creates the demo account with its signup credit and one live and one test key.
async fn create_demo_account(
    store: StoreClient<'_>,
    signup_credit: crate::money::Nanos,
    now_ms: u64,
) -> Result<(String, String), crate::store::StoreError> {
    let account = store.create_account(Some("demo"), signup_credit, now_ms).await?;
    let mut keys = Vec::new();
    for (kind, name) in [(KeyKind::Live, "demo live"), (KeyKind::Test, "demo test")] {
        let (key, hash) = crate::access::auth::generate_key(kind);
        let key_id: Arc<str> = format!("key_{}", crate::ids::random_base62(16)).into();
        store
            .insert_key(
                hash,
                KeyRecord {
                    key_id,
                    account_id: account.id.clone(),
                    kind,
                    name: Some(name.into()),
                    revoked: false,
                    spend_cap: None,
                },
            )
            .await?;
        keys.push(key);
    }
    let test_key = keys.pop().unwrap_or_default();
    let live_key = keys.pop().unwrap_or_default();
    Ok((live_key, test_key))
}

#[allow(clippy::print_stdout, clippy::print_stderr)] // output to the operator, not a log line
fn print_demo_banner(
    client: SocketAddr,
    admin: SocketAddr,
    live_key: &str,
    test_key: &str,
    admin_token: &str,
    credit: crate::money::Nanos,
) {
    println!(
        "\
fikra-gateway demo is running (embedded store, every model served by the built-in sandbox;
`gpt-5.5` too, so the OpenAI SDKs' own README examples run as they are).

  API base URL   http://{client}/v1
  live key       {live_key}   (bills the demo wallet: {credit} USD signup credit)
  test key       {test_key}   (sandbox, never billed)
  admin API      http://{admin}   token: {admin_token}

Try it:

  curl -s http://{client}/v1/chat/completions \\
    -H 'Authorization: Bearer {live_key}' -H 'Content-Type: application/json' \\
    -d '{{\"model\":\"fikra-flash\",\"messages\":[{{\"role\":\"user\",\"content\":\"Habari?\"}}]}}'

  curl -s http://{admin}/admin/accounts/demo -H 'Authorization: Bearer {admin_token}'

  python3 - <<'PY'
from openai import OpenAI
client = OpenAI(base_url=\"http://{client}/v1\", api_key=\"{live_key}\")
stream = client.chat.completions.create(model=\"fikra-flash\", stream=True,
    messages=[{{\"role\": \"user\", \"content\": \"Habari?\"}}])
for chunk in stream:
    print(chunk.choices[0].delta.content or \"\", end=\"\", flush=True)
print()
PY

  python3 - <<'PY'
from openai import OpenAI
client = OpenAI(base_url=\"http://{client}/v1\", api_key=\"{live_key}\")
r = client.responses.create(model=\"fikra-flash\", input=\"Habari?\")
print(r.output_text)
PY

Ctrl-C (or SIGTERM) drains and stops."
    );
}

#[allow(clippy::print_stdout, clippy::print_stderr)] // output to the operator, not a log line
fn sandbox(args: &[&str]) -> ExitCode {
    let mut listen: Option<SocketAddr> = None;
    let mut settings = config::SandboxSettings::default();
    let mut workers = 1usize;
    let (mut tls_cert, mut tls_key): (Option<std::path::PathBuf>, Option<std::path::PathBuf>) = (None, None);
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().copied().unwrap_or("");
        let number = || value.parse::<u64>();
        let ok = match *flag {
            "--listen" => value.parse().map(|addr| listen = Some(addr)).is_ok(),
            "--ttft-ms" => number().map(|n| settings.time_to_first_token_ms = n).is_ok(),
            "--tokens-per-second" => number().map(|n| settings.tokens_per_second = n).is_ok(),
            "--stamp-events" => {
                settings.stamp_events = value == "on";
                matches!(value, "on" | "off")
            }
            "--output-tokens" => number()
                .ok()
                .filter(|n| (1..=crate::limits::SANDBOX_MAX_OUTPUT_TOKENS).contains(n))
                .map(|n| settings.output_tokens = n)
                .is_some(),
            "--tls-cert" => {
                tls_cert = Some(value.into());
                !value.is_empty()
            }
            "--tls-key" => {
                tls_key = Some(value.into());
                !value.is_empty()
            }
            "--workers" => value
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=crate::limits::MAX_WORKERS).contains(n))
                .map(|n| workers = n)
                .is_some(),
            _ => false,
        };
        if !ok {
            eprintln!("sandbox: bad argument {flag} {value:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    let Some(listen) = listen else {
        eprintln!("sandbox: --listen ADDR is required\n{USAGE}");
        return ExitCode::from(2);
    };
    let tls = match (tls_cert, tls_key) {
        (Some(cert_file), Some(key_file)) => Some(config::TlsFiles { cert_file, key_file }),
        (None, None) => None,
        _ => {
            eprintln!("sandbox: --tls-cert and --tls-key go together\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match crate::sandbox_server::SandboxServer::start_with_tls(listen, workers, settings, tls.as_ref()) {
        Ok(server) => {
            crate::log_info!("the sandbox is serving on {}", server.addr);
            wait_for_termination();
            server.shutdown();
            ExitCode::SUCCESS
        }
        Err(error) => {
            crate::log_error!("the sandbox cannot start: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Blocks until SIGTERM or SIGINT.
fn wait_for_termination() {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(error) = signal_hook::flag::register(signal, flag.clone()) {
            crate::log_error!("cannot install the handler of signal {signal}: {error}");
        }
    }
    while !flag.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(crate::limits::SIGNAL_POLL_MS));
    }
}

/// Runs one future to completion on a throwaway epoll runtime (start-up work off the workers).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut runtime = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("an epoll runtime can always be built");
    let output = runtime.block_on(future);
    crate::redis::runtime_ended();
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the demo also serves the model the SDK READMEs name, as the sandbox at fikra-flash's
    // prices, and the production reference registry does not.
    #[test]
    fn the_demo_serves_the_sdk_readme_model() {
        let models = config::reference_models();
        assert!(models.iter().all(|model| model.id != SDK_README_MODEL));
        let alias = readme_model_alias(&models).expect("fikra-flash is a reference model");
        let flash = models.iter().find(|model| model.id == "fikra-flash").expect("listed");
        assert_eq!(alias.id, "gpt-5.5");
        assert_eq!(alias.upstream, flash.upstream);
        assert_eq!((alias.input_price, alias.output_price), (flash.input_price, flash.output_price));
    }
}
