//! `ca-client`: parse the command line, run it, exit with the failure's code.

use std::process::ExitCode;

use clap::Parser;
use dtca_common::Reason;

fn main() -> ExitCode {
    dtca_common::cli::quiet_broken_pipe();
    let cli = match ca_client::cli::Cli::try_parse() {
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(Reason::Internal.exit_code());
        }
    };
    match runtime.block_on(ca_client::cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.reason().exit_code())
        }
    }
}
