//! The `[payments]` section: the payments listener, `[payments.mpesa]` (Safaricom Daraja) and
//! `[payments.stripe]` (SPEC §11).
//!
//! It owns the typed form of those keys and their checks. It never reads a secret: each secret
//! is named by an environment variable (`*_env`), checked at start by
//! `Config::missing_env_vars`, and read by the runtime.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use super::reader::{Reader, Section};
use super::server::listeners_overlap;
use super::{ServerConfig, UrlScheme};

pub(super) const PAYMENTS_KEYS: &[&str] = &["listen", "mpesa", "stripe"];
pub(super) const MPESA_KEYS: &[&str] = &[
    "base_url",
    "consumer_key_env",
    "consumer_secret_env",
    "shortcode",
    "passkey_env",
    "callback_base_url",
    "callback_token_env",
    "allowed_source_ips",
    "confirm_with_query",
    "ca_file",
];
pub(super) const STRIPE_KEYS: &[&str] = &["webhook_secret_env"];

/// Default payments listener (public: the providers call it).
pub const DEFAULT_PAYMENTS_LISTEN: &str = "0.0.0.0:8082";
/// Most source addresses an allowlist may hold.
const MAX_ALLOWED_SOURCE_IPS: usize = 64;
/// Longest business short code (Safaricom's are 5 to 7 digits).
const MAX_SHORTCODE_DIGITS: usize = 10;

/// `[payments]`: present only when the file has the section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentsConfig {
    pub listen: SocketAddr,
    pub mpesa: Option<MpesaConfig>,
    pub stripe: Option<StripeConfig>,
}

/// `[payments.mpesa]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MpesaConfig {
    /// Daraja's base URL, e.g. `https://sandbox.safaricom.co.ke` (no path).
    pub base_url: String,
    pub scheme: UrlScheme,
    pub host: String,
    pub port: u16,
    pub consumer_key_env: String,
    pub consumer_secret_env: String,
    /// The business short code, digits only.
    pub shortcode: String,
    pub passkey_env: String,
    /// Public URL of the payments listener, without a trailing '/'.
    pub callback_base_url: String,
    pub callback_token_env: String,
    /// Empty: any source address.
    pub allowed_source_ips: Vec<IpAddr>,
    pub confirm_with_query: bool,
    /// An extra PEM trust root for Daraja's certificate, on top of the web PKI roots (a
    /// private gateway in front of Daraja, tests); read like `[[upstreams]] ca_file`.
    pub ca_file: Option<PathBuf>,
}

/// `[payments.stripe]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StripeConfig {
    pub webhook_secret_env: String,
}

impl PaymentsConfig {
    /// Every `(dotted key, variable name)` pair of the secrets this section names.
    pub fn secret_env_vars(&self) -> Vec<(&'static str, &str)> {
        let mut names = Vec::new();
        if let Some(mpesa) = &self.mpesa {
            names.push(("payments.mpesa.consumer_key_env", mpesa.consumer_key_env.as_str()));
            names.push(("payments.mpesa.consumer_secret_env", mpesa.consumer_secret_env.as_str()));
            names.push(("payments.mpesa.passkey_env", mpesa.passkey_env.as_str()));
            names.push(("payments.mpesa.callback_token_env", mpesa.callback_token_env.as_str()));
        }
        if let Some(stripe) = &self.stripe {
            names.push(("payments.stripe.webhook_secret_env", stripe.webhook_secret_env.as_str()));
        }
        names
    }
}

pub(super) fn payments(reader: &mut Reader, root: &Section<'_>, server: &ServerConfig) -> Option<PaymentsConfig> {
    let section = reader.table(root, "payments")?;
    reader.check_keys(&section, PAYMENTS_KEYS);
    let given = reader.address(&section, "listen");
    let listen = given.unwrap_or_else(|| DEFAULT_PAYMENTS_LISTEN.parse().expect("literal address"));
    // Start-up would fail to bind anyway; said here, a config check catches it before a deploy.
    if given.is_some() || section.get("listen").is_none() {
        let others = [("server.listen", server.listen), ("server.admin_listen", server.admin_listen)];
        if let Some((name, other)) = others.into_iter().find(|&(_, other)| listeners_overlap(listen, other)) {
            reader.error(
                section.key("listen"),
                format!("{listen} overlaps {name} ({other}): the payments listener needs a port of its own"),
            );
        }
    }
    let mpesa = reader.table(&section, "mpesa").and_then(|mpesa| mpesa_section(reader, &mpesa));
    let stripe = reader.table(&section, "stripe").and_then(|stripe| {
        reader.check_keys(&stripe, STRIPE_KEYS);
        required_env(reader, &stripe, "webhook_secret_env")
            .map(|webhook_secret_env| StripeConfig { webhook_secret_env })
    });
    if section.get("mpesa").is_none() && section.get("stripe").is_none() {
        reader.error(section.path(), "names no provider: add [payments.mpesa] or [payments.stripe]");
    }
    Some(PaymentsConfig { listen, mpesa, stripe })
}

fn required_env(reader: &mut Reader, section: &Section<'_>, key: &str) -> Option<String> {
    if !section.has(key) {
        reader.error(section.key(key), "is required");
        return None;
    }
    reader.env_name(section, key)
}

fn mpesa_section(reader: &mut Reader, section: &Section<'_>) -> Option<MpesaConfig> {
    reader.check_keys(section, MPESA_KEYS);
    let base =
        reader.required_string(section, "base_url").and_then(|text| match super::catalog::parse_base_url(text) {
            Ok(url) if url.base_path.is_empty() => Some((text.trim_end_matches('/').to_string(), url)),
            Ok(_) => {
                reader.error(section.key("base_url"), "must have no path: Daraja's paths are added to it");
                None
            }
            Err(problem) => {
                reader.error(section.key("base_url"), problem);
                None
            }
        });
    let shortcode = reader.required_string(section, "shortcode").and_then(|text| {
        let digits = !text.is_empty() && text.len() <= MAX_SHORTCODE_DIGITS && text.bytes().all(|b| b.is_ascii_digit());
        if digits {
            Some(text.to_string())
        } else {
            reader.error(section.key("shortcode"), format!("must be 1 to {MAX_SHORTCODE_DIGITS} digits, as a string"));
            None
        }
    });
    let callback_base_url = reader.required_string(section, "callback_base_url").and_then(|text| {
        match super::catalog::parse_base_url(text) {
            Ok(_) => Some(text.trim_end_matches('/').to_string()),
            Err(problem) => {
                reader.error(section.key("callback_base_url"), problem);
                None
            }
        }
    });
    let mut allowed_source_ips = Vec::new();
    if let Some(list) = reader.string_list(section, "allowed_source_ips") {
        if list.len() > MAX_ALLOWED_SOURCE_IPS {
            reader.error(
                section.key("allowed_source_ips"),
                format!("lists {} addresses: at most {MAX_ALLOWED_SOURCE_IPS}", list.len()),
            );
        }
        for (index, text) in list.iter().enumerate() {
            let Some(text) = *text else { continue };
            match text.parse::<IpAddr>() {
                Ok(ip) => allowed_source_ips.push(ip),
                Err(_) => reader.error(
                    format!("{}[{index}]", section.key("allowed_source_ips")),
                    format!("'{text}' is not an IP address"),
                ),
            }
        }
    }
    let confirm_with_query = reader.boolean(section, "confirm_with_query").unwrap_or(true);
    let ca_file = reader.existing_file(section, "ca_file");
    let consumer_key_env = required_env(reader, section, "consumer_key_env");
    let consumer_secret_env = required_env(reader, section, "consumer_secret_env");
    let passkey_env = required_env(reader, section, "passkey_env");
    let callback_token_env = required_env(reader, section, "callback_token_env");
    let (base_url, url) = base?;
    Some(MpesaConfig {
        base_url,
        scheme: url.scheme,
        host: url.host,
        port: url.port,
        consumer_key_env: consumer_key_env?,
        consumer_secret_env: consumer_secret_env?,
        shortcode: shortcode?,
        passkey_env: passkey_env?,
        callback_base_url: callback_base_url?,
        callback_token_env: callback_token_env?,
        allowed_source_ips,
        confirm_with_query,
        ca_file,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{Config, parse_config};
    use super::*;

    /// SPEC §11.1's example, verbatim (with the commented keys enabled).
    const SPEC_EXAMPLE: &str = r#"
[payments]
listen = "0.0.0.0:8082"
[payments.mpesa]
base_url = "https://sandbox.safaricom.co.ke"
consumer_key_env = "MPESA_CONSUMER_KEY"
consumer_secret_env = "MPESA_CONSUMER_SECRET"
shortcode = "174379"                    # a string of digits
passkey_env = "MPESA_PASSKEY"
callback_base_url = "https://pay.example.co.ke"   # public URL of the payments listener
callback_token_env = "MPESA_CALLBACK_TOKEN"       # a secret in every callback path
allowed_source_ips = ["203.0.113.10"]           # optional; Safaricom publishes its own
confirm_with_query = true                       # default true
[payments.stripe]
webhook_secret_env = "STRIPE_WEBHOOK_SECRET"
"#;

    // Goal: the SPEC example reads to exactly these values and its five secrets are checked.
    #[test]
    fn spec_example_parses_exactly() {
        assert!(parse_config(SPEC_EXAMPLE).is_ok());
        let table: toml::Table = SPEC_EXAMPLE.parse().unwrap();
        let mut reader = Reader::new();
        let payments = payments(&mut reader, &Section::root(&table), &ServerConfig::default());
        let config = Config { payments, ..Config::demo() };
        let expected = PaymentsConfig {
            listen: "0.0.0.0:8082".parse().unwrap(),
            mpesa: Some(MpesaConfig {
                base_url: "https://sandbox.safaricom.co.ke".into(),
                scheme: UrlScheme::Https,
                host: "sandbox.safaricom.co.ke".into(),
                port: 443,
                consumer_key_env: "MPESA_CONSUMER_KEY".into(),
                consumer_secret_env: "MPESA_CONSUMER_SECRET".into(),
                shortcode: "174379".into(),
                passkey_env: "MPESA_PASSKEY".into(),
                callback_base_url: "https://pay.example.co.ke".into(),
                callback_token_env: "MPESA_CALLBACK_TOKEN".into(),
                allowed_source_ips: vec!["203.0.113.10".parse().unwrap()],
                confirm_with_query: true,
                ca_file: None,
            }),
            stripe: Some(StripeConfig { webhook_secret_env: "STRIPE_WEBHOOK_SECRET".into() }),
        };
        assert_eq!(config.payments, Some(expected));
        let missing: Vec<String> =
            config.missing_env_vars_in(|name| name == "FIKRA_ADMIN_TOKEN").into_iter().map(|e| e.key).collect();
        assert_eq!(
            missing,
            [
                "payments.mpesa.consumer_key_env",
                "payments.mpesa.consumer_secret_env",
                "payments.mpesa.passkey_env",
                "payments.mpesa.callback_token_env",
                "payments.stripe.webhook_secret_env"
            ]
        );
        assert_eq!(Config::demo().payments, None);
    }

    // Goal: each bad value is reported under its own key, all at once.
    #[test]
    fn bad_values_are_each_reported() {
        let text = r#"
[payments]
listen = "pay.example:8082"
[payments.mpesa]
base_url = "https://sandbox.safaricom.co.ke/mpesa"
consumer_key_env = "MPESA KEY"
consumer_secret_env = "S"
shortcode = "17a379"
passkey_env = "P"
callback_base_url = "ftp://pay.example.co.ke"
allowed_source_ips = ["203.0.113.300"]
confirm_with_query = "yes"
[payments.stripe]
secret = "whsec_x"
"#;
        let errors = parse_config(text).unwrap_err();
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "payments.listen",
                "payments.mpesa.base_url",
                "payments.mpesa.shortcode",
                "payments.mpesa.callback_base_url",
                "payments.mpesa.allowed_source_ips[0]",
                "payments.mpesa.confirm_with_query",
                "payments.mpesa.consumer_key_env",
                "payments.mpesa.callback_token_env",
                "payments.stripe.secret",
                "payments.stripe.webhook_secret_env",
            ],
            "{errors:?}"
        );
        let empty = parse_config("[payments]\n").unwrap_err();
        assert_eq!(empty[0].key, "payments");
    }

    // Goal: a payments listener on the client or admin port is refused by the config check,
    // with the port it collides with; a port of its own (or port 0) is accepted.
    #[test]
    fn payments_listener_needs_a_port_of_its_own() {
        let with = |server: &str, listen: &str| {
            let text =
                format!("{server}\n[payments]\nlisten = \"{listen}\"\n[payments.stripe]\nwebhook_secret_env = \"W\"\n");
            parse_config(&text)
                .map(|config| config.payments.unwrap().listen)
                .map_err(|errors| errors.iter().map(|e| format!("{}: {}", e.key, e.message)).collect::<Vec<_>>())
        };
        assert_eq!(
            with("", "127.0.0.1:8080").unwrap_err(),
            [
                "payments.listen: 127.0.0.1:8080 overlaps server.listen (0.0.0.0:8080): the payments listener needs a port of its own"
            ]
        );
        assert_eq!(
            with("[server]\nadmin_listen = \"127.0.0.1:9001\"", "0.0.0.0:9001").unwrap_err(),
            [
                "payments.listen: 0.0.0.0:9001 overlaps server.admin_listen (127.0.0.1:9001): the payments listener needs a port of its own"
            ]
        );
        assert_eq!(
            with("[server]\nlisten = \"127.0.0.1:8082\"", "127.0.0.2:8082").unwrap(),
            "127.0.0.2:8082".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(with("[server]\nlisten = \"127.0.0.1:0\"", "127.0.0.1:0").unwrap().port(), 0);
        let default_clash = parse_config(
            "[server]\nlisten = \"0.0.0.0:8082\"\n[payments]\n[payments.stripe]\nwebhook_secret_env = \"W\"\n",
        )
        .unwrap_err();
        assert_eq!(default_clash[0].key, "payments.listen");
    }
}
