//! Upstream providers: where they are, how to reach them (TCP or TLS), and the per-worker pool
//! of open connections to them.
//!
//! Built once at start-up from `[[upstreams]]`: the base URL is split into host, port and path,
//! the host is resolved off the worker threads (and re-resolved in the background), the TLS
//! configuration (web PKI roots plus an optional CA file, SNI, ALPN `http/1.1`) is prepared,
//! and the `Authorization` header is rendered. Workers only read this.

pub mod client;
pub mod exchange;
pub mod plain_head;
pub mod proxy;
pub mod responses_native;
pub mod rewrite;
pub mod stream;
pub mod unary;

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use rustls::pki_types::ServerName;

use crate::config::{UpstreamConfig, UrlScheme};
use crate::limits::UPSTREAM_DNS_REFRESH_INTERVAL_MS;

/// One configured upstream.
pub struct UpstreamTarget {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// `Some` for https upstreams.
    pub tls: Option<(monoio_rustls::TlsConnector, ServerName<'static>)>,
    /// `{base path}/chat/completions`.
    pub completions_path: String,
    /// `{base path}/responses` when the upstream serves the Responses API (`responses = true`):
    /// Responses requests then go there natively (`responses_native`).
    pub responses_path: Option<String>,
    /// The `host` header value.
    pub host_header: String,
    /// `Bearer <key>` from the configured environment variable, if any.
    pub authorization: Option<String>,
    /// Resolved addresses, refreshed in the background.
    pub addresses: RwLock<Vec<SocketAddr>>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// How long a connection may sit idle in a worker's pool before it is closed.
    pub pool_idle_timeout_ms: u64,
}

/// Every upstream, by index (the index is what models and pools refer to).
pub struct Upstreams {
    pub targets: Vec<Arc<UpstreamTarget>>,
}

impl Upstreams {
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.targets.iter().position(|t| t.name == name)
    }

    /// Whether the upstream named `name` takes Responses requests natively.
    pub fn serves_responses(&self, name: &str) -> bool {
        self.targets.iter().any(|t| t.name == name && t.responses_path.is_some())
    }
}

/// Builds every upstream from configuration and starts the DNS refresher.
pub fn build(configs: &[UpstreamConfig]) -> io::Result<Upstreams> {
    let mut targets = Vec::with_capacity(configs.len());
    for config in configs {
        targets.push(Arc::new(build_target(config)?));
    }
    if !targets.is_empty() {
        let weak: Vec<Weak<UpstreamTarget>> = targets.iter().map(Arc::downgrade).collect();
        std::thread::Builder::new().name("fikra-dns".into()).spawn(move || refresh_dns_forever(weak))?;
    }
    Ok(Upstreams { targets })
}

pub(crate) fn build_target(config: &UpstreamConfig) -> io::Result<UpstreamTarget> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("upstream {}: {what}", config.name));
    let (host, port) = (config.host.as_str(), config.port);
    let completions_path = format!("{}/chat/completions", config.base_path);
    let tls = match config.scheme {
        UrlScheme::Https => {
            let server_name =
                ServerName::try_from(host.to_string()).map_err(|_| invalid("host is not a valid TLS server name"))?;
            let client = crate::tls::client_config(config.ca_file.as_deref())?;
            Some((monoio_rustls::TlsConnector::from(Arc::new(client)), server_name))
        }
        UrlScheme::Http => None,
    };
    let authorization = config
        .api_key_env
        .as_ref()
        .and_then(|name| std::env::var(name).ok())
        .filter(|key| !key.is_empty())
        .map(|key| format!("Bearer {key}"));
    let addresses = resolve(host, port).unwrap_or_default();
    if addresses.is_empty() {
        crate::log_warn!("upstream {}: {host} does not resolve yet; the resolver thread will retry", config.name);
    }
    let host_header = match (port == config.scheme.default_port(), host.contains(':')) {
        (true, false) => host.to_string(),
        (true, true) => format!("[{host}]"),
        (false, false) => format!("{host}:{port}"),
        (false, true) => format!("[{host}]:{port}"),
    };
    Ok(UpstreamTarget {
        name: config.name.clone(),
        host: host.to_string(),
        port,
        tls,
        completions_path,
        responses_path: config.responses.then(|| format!("{}/responses", config.base_path)),
        host_header,
        authorization,
        addresses: RwLock::new(addresses),
        connect_timeout: Duration::from_millis(config.connect_timeout_ms),
        response_timeout: Duration::from_millis(config.response_timeout_ms),
        pool_idle_timeout_ms: config.pool_idle_timeout_ms,
    })
}

/// Blocking resolution; only ever called at start-up (before any worker runs) and on the
/// `fikra-dns` refresher thread, never on a worker.
fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    #[allow(clippy::disallowed_methods)] // off the workers: see above
    Ok((host, port).to_socket_addrs()?.collect())
}

pub(crate) fn refresh_dns_forever(targets: Vec<Weak<UpstreamTarget>>) {
    loop {
        std::thread::sleep(Duration::from_millis(UPSTREAM_DNS_REFRESH_INTERVAL_MS));
        let mut alive = false;
        for target in targets.iter().filter_map(Weak::upgrade) {
            alive = true;
            if let Ok(addresses) = resolve(&target.host, target.port)
                && !addresses.is_empty()
                && let Ok(mut current) = target.addresses.write()
            {
                *current = addresses;
            }
        }
        if !alive {
            return;
        }
    }
}
