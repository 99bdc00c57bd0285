//! `ca-client`: parse the command line, run it, exit with the failure's code.

use std::process::ExitCode;

use dtca_common::Reason;
use dtca_common::cli::fail;

fn main() -> ExitCode {
    dtca_common::cli::quiet_broken_pipe();
    let cli = match dtca_common::cli::parse::<ca_client::cli::Cli>() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the runtime: {e}"), Reason::Internal),
    };
    match runtime.block_on(ca_client::cli::run(cli)) {
        Ok(code) => code,
        Err(e) => fail(&e, e.reason()),
    }
}
