//! TLS configuration for both sides: the client configuration for upstreams (web PKI roots
//! plus an optional extra CA file, ALPN `http/1.1`) and the server configuration for
//! terminating client TLS (`[server.tls]`, and the standalone sandbox's `--tls-cert`).
//!
//! Built once at start-up from files; nothing here runs per request. rustls with the ring
//! provider, no other crypto.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn invalid(path: &Path, error: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{}: {error}", path.display()))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let certificates: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|error| invalid(path, error))?
        .collect::<Result<_, _>>()
        .map_err(|error| invalid(path, error))?;
    if certificates.is_empty() {
        return Err(invalid(path, "no PEM certificate found"));
    }
    Ok(certificates)
}

/// The client configuration for upstreams: web PKI roots plus the certificates of `ca_file`.
pub fn client_config(ca_file: Option<&Path>) -> io::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = ca_file {
        for certificate in certificates(path)? {
            roots.add(certificate).map_err(|error| invalid(path, error))?;
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| io::Error::other(error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A TLS acceptor from a PEM certificate chain and its PEM private key.
pub fn server_acceptor(cert_file: &Path, key_file: &Path) -> io::Result<monoio_rustls::TlsAcceptor> {
    let chain = certificates(cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|error| invalid(key_file, error))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| io::Error::other(error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| invalid(cert_file, error))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(monoio_rustls::TlsAcceptor::from(Arc::new(config)))
}
