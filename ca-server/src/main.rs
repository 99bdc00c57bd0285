//! `ca-server`: parse the command line, run it, exit with the refusal's code.

use std::process::ExitCode;

use clap::Parser;
use dtca_common::Reason;

fn main() -> ExitCode {
    dtca_common::cli::quiet_broken_pipe();
    let cli = match ca_server::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(Reason::Usage.exit_code())
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(Reason::Internal.exit_code());
        }
    };
    match runtime.block_on(ca_server::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.reason.exit_code())
        }
    }
}
