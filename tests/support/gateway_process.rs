//! Real `fikra-gateway serve` processes for multi-node tests: each gets its own config file,
//! free ports and a log file, and dies with the test (SIGKILL on drop and on the test's exit).
//! Admin and client calls go through the same `TestGateway` helpers as in-process gateways.
//!
//! A separate process runs on the system clock: what it does because time passed (bucket
//! refills, lease and hold expiry, its reaper) can only be waited for, boundedly, never
//! advanced by the test.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::gateway::{ADMIN_TOKEN, TestGateway};
use super::http::{free_port, try_send_one};
use super::wait::wait_until;

/// How long a node may take to answer `/readyz` with 200 after it was started.
pub const READY_WITHIN: Duration = Duration::from_secs(20);

/// One gateway node running as its own process.
pub struct GatewayProcess {
    pub child: Child,
    /// Admin and client calls go through the same helpers as for in-process gateways.
    pub node: TestGateway,
    pub log: PathBuf,
    config: PathBuf,
}

impl GatewayProcess {
    /// Starts `fikra-gateway serve` with two workers on free ports, `store` as its `[store]`
    /// body and `extra` appended; waits until `/readyz` answers 200. The process dies with the
    /// calling thread.
    pub fn start(name: &str, store: &str, extra: &str) -> GatewayProcess {
        let (api_port, admin_port) = (free_port(), free_port());
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:{api_port}\"\nadmin_listen = \"127.0.0.1:{admin_port}\"\nworkers = 2\n\n[store]\n{store}\n\n{extra}\n"
        );
        let stem = format!("fikra-node-{}-{name}-{api_port}", std::process::id());
        let config = std::env::temp_dir().join(format!("{stem}.toml"));
        let log = std::env::temp_dir().join(format!("{stem}.log"));
        std::fs::write(&config, text).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_fikra-gateway"));
        command
            .args(["serve", "--config"])
            .arg(&config)
            .env("FIKRA_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap());
        // SAFETY: prctl only asks the kernel to kill the child when the starting thread exits.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn().expect("the fikra-gateway binary starts");
        let api = SocketAddr::from(([127, 0, 0, 1], api_port));
        let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
        let process = GatewayProcess { child, node: TestGateway { gateway: None, api, admin }, log, config };
        assert!(
            wait_until(READY_WITHIN, || process.readiness() == Some(200)),
            "node {name} not ready within {READY_WITHIN:?}; its log:\n{}",
            process.log_text()
        );
        process
    }

    /// The status of `GET /readyz`, or `None` while nothing listens.
    pub fn readiness(&self) -> Option<u16> {
        let request = b"GET /readyz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n";
        try_send_one(self.node.admin, request, Duration::from_secs(5)).map(|r| r.status)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A node is driven like any `TestGateway`: `node.api`, `node.create_account(...)`.
impl std::ops::Deref for GatewayProcess {
    type Target = TestGateway;
    fn deref(&self) -> &TestGateway {
        &self.node
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- log of {}:\n{}", self.log.display(), self.log_text());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
        let _ = std::fs::remove_file(&self.log);
    }
}
