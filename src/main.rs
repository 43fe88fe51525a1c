//! `fikra-gateway`: argv -> config -> runtime. Nothing else lives here.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    fikra_gateway::cli::run(&args)
}
