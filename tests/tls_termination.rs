//! TLS on the gateway's own listener (`[server.tls]`) and on the standalone sandbox, with
//! certificates from a CA the test generates and a real rustls client.

mod support;

use std::io::{BufReader, Write};
use std::sync::Arc;

use fikra_gateway::config::{SandboxSettings, TlsFiles};
use fikra_gateway::sandbox_server::SandboxServer;
use support::certificates::write_certificates;
use support::gateway::*;
use support::http::*;

fn tls_client(ca: &std::path::Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for certificate in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(certificate.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

use rustls::pki_types::pem::PemObject;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let directory = std::env::temp_dir().join(format!("fikra-tls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    directory
}

// Goal: with [server.tls] the client API speaks TLS: a rustls client trusting the test CA gets
// answers over one TLS connection (keep-alive), and plain HTTP on that port gets no answer.
#[test]
fn gateway_terminates_tls() {
    let directory = temp_dir("gateway");
    let (ca, cert, key) = write_certificates(&directory);
    let gateway = TestGateway::start(&format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert.display(),
        key.display()
    ));
    let api_key = gateway.account_with_key("tls-client", "1.00", "live");
    let connection = rustls::ClientConnection::new(tls_client(&ca), "localhost".try_into().unwrap()).unwrap();
    let mut stream = rustls::StreamOwned::new(connection, connect(gateway.api));
    for _ in 0..3 {
        stream.write_all(chat_request(&api_key, &simple_chat("fikra-flash", "secure hello")).as_bytes()).unwrap();
        stream.flush().unwrap();
        let mut reader = BufReader::new(&mut stream);
        let response = read_response(&mut reader).unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.json()["model"], "fikra-flash");
    }
    let plain = std::panic::catch_unwind(|| send_one(gateway.api, b"GET /v1/models HTTP/1.1\r\nhost: t\r\n\r\n"));
    assert!(plain.is_err(), "plain HTTP must not be answered on a TLS listener");
    std::fs::remove_dir_all(&directory).unwrap();
}

// Goal: the standalone sandbox serves TLS, and the gateway uses it as an https upstream trusted
// through `ca_file`.
#[test]
fn sandbox_over_tls_as_an_upstream() {
    let directory = temp_dir("sandbox");
    let (ca, cert, key) = write_certificates(&directory);
    let settings =
        SandboxSettings { time_to_first_token_ms: 0, tokens_per_second: 0, output_tokens: 4, stamp_events: false };
    let files = TlsFiles { cert_file: cert, key_file: key };
    let sandbox = SandboxServer::start_with_tls("127.0.0.1:0".parse().unwrap(), 1, settings, Some(&files)).unwrap();
    let config = format!(
        "[[upstreams]]\nname = \"s\"\nbase_url = \"https://localhost:{}/v1\"\nca_file = \"{}\"\n[[models]]\nid = \"fikra-flash\"\nupstream = \"s\"\nupstream_model = \"vendor/tls-model\"\ninput_usd_per_million = \"0.5\"\noutput_usd_per_million = \"0.5\"\nmax_output_tokens = 8192\n",
        sandbox.addr.port(),
        ca.display()
    );
    let gateway = TestGateway::start(&config);
    let api_key = gateway.account_with_key("via-tls", "1.00", "live");
    let response = gateway.chat(&api_key, &simple_chat("fikra-flash", "over tls"));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["model"], "fikra-flash");
    assert_eq!(response.json()["usage"]["completion_tokens"], 4);
    assert!(!response.text().contains("vendor/tls-model"));
    sandbox.shutdown();
    std::fs::remove_dir_all(&directory).unwrap();
}
