//! The shipped systemd unit (`tuning/fikra-gateway.service`) as systemd reads it: valid with no
//! warning, and able to start on a stock machine where the config and TLS key are root-owned
//! 0600 files (SPEC §12): they arrive as credentials, the command line reads them from the
//! credentials directory, and the working directory is the unit's own state directory.

use std::process::Command;

fn unit_text() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tuning/fikra-gateway.service")).unwrap()
}

/// The values of `key=` lines in the unit (comments skipped).
fn values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines().filter_map(|line| line.strip_prefix(key)?.strip_prefix('=')).collect()
}

// Goal: the unit never asks the service's own user to read a root-owned file: the config comes
// as a credential and is read from `%d` by both the check and the server; TLS material can come
// the same way; the working directory is stated and is the unit's state directory.
#[test]
fn the_unit_reads_root_owned_files_through_credentials() {
    let unit = unit_text();
    assert_eq!(values(&unit, "LoadCredential"), ["gateway.toml:/etc/fikra-gateway/gateway.toml"]);
    assert!(unit.contains("#LoadCredential=tls.key:/etc/fikra-gateway/tls.key"), "TLS key credential documented");
    assert_eq!(values(&unit, "ExecStartPre"), ["/usr/local/bin/fikra-gateway check-config --config %d/gateway.toml"]);
    assert_eq!(values(&unit, "ExecStart"), ["/usr/local/bin/fikra-gateway serve --config %d/gateway.toml"]);
    assert_eq!(values(&unit, "StateDirectory"), ["fikra-gateway"]);
    assert_eq!(values(&unit, "WorkingDirectory"), ["/var/lib/fikra-gateway"]);
    // io_uring stays allowed by the system-call filter (else the workers fall back to epoll).
    assert!(values(&unit, "SystemCallFilter").iter().any(|filter| filter.contains("io_uring_setup")));
}

// Goal: systemd itself accepts the unit without a single warning (unknown keys, bad values,
// missing executables), where systemd is installed; elsewhere the test says it did not run it.
#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("systemd-analyze is not installed: the unit was not verified by systemd");
        return;
    }
    let directory = std::env::temp_dir().join(format!("fikra-unit-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let path = directory.join("fikra-gateway.service");
    // The unit names the installed binary; point it at the one cargo built so verify finds it.
    let unit = unit_text().replace("/usr/local/bin/fikra-gateway", env!("CARGO_BIN_EXE_fikra-gateway"));
    std::fs::write(&path, unit).unwrap();
    let output = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "systemd-analyze verify failed: {stderr}");
    assert_eq!(stderr.trim(), "", "systemd-analyze verify warned");
    std::fs::remove_dir_all(&directory).unwrap();
}
