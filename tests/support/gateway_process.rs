//! Real `fikra-gateway serve` processes for multi-node tests: each gets its own config file,
//! free ports and a log file, and dies with the test (SIGKILL on drop and on the test's exit).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{ADMIN_TOKEN, TestGateway, send_one};

/// One gateway node running as its own process.
pub struct GatewayProcess {
    pub child: Child,
    /// Admin and client calls go through the same helpers as for in-process gateways.
    pub node: TestGateway,
    pub log: PathBuf,
    config: PathBuf,
}

/// A free 127.0.0.1 port (closed again; the caller binds it soon after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
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
        let started = Instant::now();
        while process.readiness() != Some(200) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "node {name} not ready within 20 s; its log:\n{}",
                process.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        process
    }

    /// The status of `GET /readyz`, or `None` while nothing listens.
    pub fn readiness(&self) -> Option<u16> {
        let mut stream = std::net::TcpStream::connect(self.node.admin).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        use std::io::Write;
        stream.write_all(b"GET /readyz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n").ok()?;
        let mut reader = std::io::BufReader::new(stream);
        crate::common::read_response(&mut reader).map(|r| r.status)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An admin call whose answer must be `status`; returns its JSON.
    pub fn admin_json(&self, method: &str, path: &str, body: &str, status: u16) -> serde_json::Value {
        let response = self.node.admin_call(method, path, body);
        assert_eq!(response.status, status, "{method} {path}: {}", response.text());
        response.json()
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

/// Sends `request` on a fresh connection; the response and how long it took.
pub fn timed_send(addr: SocketAddr, request: &str) -> (crate::common::Response, Duration) {
    let started = Instant::now();
    let response = send_one(addr, request.as_bytes());
    (response, started.elapsed())
}
