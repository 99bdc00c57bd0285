//! `ca-server serve` as a real process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::bins::bin;
use crate::process::{Proc, wait_until};

/// A `ca-server serve` process.
#[derive(Debug)]
pub struct ServeProcess {
    /// The process (stopped on drop).
    pub proc: Proc,
    /// The address it recorded.
    pub addr: String,
    /// Its log file.
    pub log: PathBuf,
}

/// Runs `ca-server init` in `state` with an unencrypted key (tests) and cluster `cli`.
pub fn init_insecure(state: &Path) {
    let out = Command::new(bin("ca-server"))
        .args([
            "init",
            "--cluster",
            "cli",
            "--insecure-no-passphrase",
            "--state-dir",
        ])
        .arg(state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl ServeProcess {
    /// `init_insecure` in `state`, then `start` with `--insecure-no-passphrase`: a CA for
    /// a test, on a free port.
    pub fn init_and_start(state: &Path) -> ServeProcess {
        init_insecure(state);
        Self::start(state, &["--insecure-no-passphrase"], &[])
    }

    /// Starts `ca-server serve --state-dir state --listen 127.0.0.1:0 <extra>` and waits
    /// until it has recorded its address and accepts connections.
    pub fn start(state: &Path, extra: &[&str], envs: &[(&str, &str)]) -> ServeProcess {
        Self::start_at(state, "127.0.0.1:0", extra, envs)
    }

    /// The same on a given `listen` address (to restart a CA where clients expect it).
    pub fn start_at(
        state: &Path,
        listen: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> ServeProcess {
        Self::start_logged(state, &state.join("serve.log"), listen, extra, envs)
    }

    /// The same, logging to `log` (outside a state dir that is meant to fill up).
    pub fn start_logged(
        state: &Path,
        log: &Path,
        listen: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> ServeProcess {
        let mut cmd = Command::new(bin("ca-server"));
        cmd.args(["serve", "--listen", listen, "--state-dir"])
            .arg(state)
            .args(extra);
        Self::spawn(cmd, state, log, envs)
    }

    /// The same on 127.0.0.1:0 under bash's `ulimit <limits>` (`-n 256`: at most 256
    /// file descriptors, soft and hard, as a service manager would set them).
    pub fn start_under_ulimit(
        state: &Path,
        limits: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> ServeProcess {
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(format!("ulimit {limits} && exec \"$0\" \"$@\""))
            .arg(bin("ca-server"))
            .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(state)
            .args(extra);
        Self::spawn(cmd, state, &state.join("serve.log"), envs)
    }

    fn spawn(mut cmd: Command, state: &Path, log: &Path, envs: &[(&str, &str)]) -> ServeProcess {
        let addr_file = state.join("server.addr");
        let _ = std::fs::remove_file(&addr_file);
        let log = log.to_path_buf();
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut proc = Proc::spawn("ca-server serve", cmd, &log);
        let ready = wait_until(Duration::from_secs(20), || {
            proc.try_wait().is_some()
                || (addr_file.exists()
                    && std::fs::read_to_string(&log)
                        .unwrap_or_default()
                        .contains("ca-server listening"))
        });
        let log_text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            ready && proc.try_wait().is_none(),
            "ca-server serve did not start: {log_text}"
        );
        let addr = std::fs::read_to_string(&addr_file)
            .unwrap()
            .trim()
            .to_string();
        ServeProcess { proc, addr, log }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// What the gRPC Health service of the CA at `addr` (whose root is `state/ca.pem`) says of
/// the whole server: serving or not, and the reason it gives (`dtca-reason`); `None` when
/// it cannot be asked.
///
/// # Panics
/// When `state/ca.pem` cannot be read.
pub async fn health(addr: &str, state: &Path) -> Option<(bool, Option<dtca_common::Reason>)> {
    use dtca_common::tls::{self, ServerAddr, Trust};
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let pem = std::fs::read_to_string(state.join("ca.pem")).unwrap();
    let root = dtca_pki::inspect::certs_from_pem(&pem).unwrap().remove(0);
    let config = tls::client_config(Trust::Root(root), None).ok()?;
    let channel = tls::connect(&ServerAddr::parse(addr).ok()?, config)
        .await
        .ok()?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?;
    let why = answer
        .metadata()
        .get(dtca_common::reason::METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    Some((
        answer.into_inner().status == ServingStatus::Serving as i32,
        why,
    ))
}
