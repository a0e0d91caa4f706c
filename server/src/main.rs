//! `firmcast`: the operator CLI. A thin shell over the `firmcast_server` library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = firmcast_server::cli::Cli::parse();
    match firmcast_server::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
