//! Where an admin command finds the CA, and what to say when `serve` is not running.

use dtca_common::Reason;

use super::settings::{self, FileConfig};
use super::{AdminArgs, CliError};
use crate::state::StateDir;

/// Where an admin command finds the CA: the address and whether the user named it
/// (`--server`, `DTCA_SERVER`, `server =`) or the state dir's record did.
#[derive(Debug)]
pub(super) struct Target {
    pub(super) state: StateDir,
    pub(super) server: Option<String>,
    pub(super) named: bool,
}

impl Target {
    pub(super) fn of(args: &AdminArgs, file: &FileConfig) -> Self {
        let state = StateDir::new(settings::state_dir(&args.state, file));
        let named = args.server.clone().or_else(|| file.server.clone());
        let server = named.clone().or_else(|| state.server_addr());
        Target {
            state,
            server,
            named: named.is_some(),
        }
    }

    /// `serve` is not running for this state dir: one line naming where it last listened.
    pub(super) fn not_running(&self) -> CliError {
        CliError::new(
            Reason::NotRunning,
            format!(
                "{}: start it, or give --server HOST:PORT",
                self.not_running_why()
            ),
        )
    }

    /// "ca-server serve is not running for DIR (it last listened on ADDR)".
    pub(super) fn not_running_why(&self) -> String {
        let last = match self.state.server_record() {
            Some(r) => match r.advertise {
                Some(a) => format!("it last listened on {}, advertised as {a}", r.listen),
                None => format!("it last listened on {}", r.listen),
            },
            None => "no address recorded".into(),
        };
        format!(
            "ca-server serve is not running for {} ({last})",
            self.state.path().display()
        )
    }
}
