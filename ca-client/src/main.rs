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
    // The agent (the guard's proxy among its tasks) runs on one thread: its connections
    // never wait on each other's blocking work, and a request costs no wake-up of another
    // thread. The other commands keep two.
    let mut builder = if matches!(cli.command, ca_client::cli::Command::Agent(_)) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the runtime: {e}"), Reason::Internal),
    };
    match runtime.block_on(ca_client::cli::run(cli)) {
        Ok(code) => code,
        Err(e) => fail(&e, e.reason()),
    }
}
