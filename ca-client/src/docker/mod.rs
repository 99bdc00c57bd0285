//! The docker switch: move an engine from plain TCP (2375) to mutually-authenticated TLS
//! (2376), verified, and rolled back on any failure; and rotation of its certificate.
//!
//! - [`preflight`]: what the engine and its files say, before anything is touched.
//! - [`switch`]: the switch's steps, in order.
//! - [`rotate`]: a renewed pair into service, and the engine brought back onto the pair
//!   on disk after a crash.
//! - [`restart`]: restarting the engine, verifying what it serves, rolling back.
//! - [`daemon_json`]: the JSON edit (pure).
//! - [`launcher`]: how the running engine was started (systemd, OpenRC, sysvinit, snap,
//!   rootless, unknown), asked of the engine itself.
//! - [`systemd`]: the `-H` conflict with docker.service and its drop-ins.
//! - [`pairs`]: dockerd's TLS directory, with pairs switched atomically.
//! - [`alive`]: a dockerd that dies after a restart, noticed in seconds, its last lines.
//! - [`backup`]: copies of everything touched, and the journal of an unfinished switch.
//! - [`engine`]: the Docker API over the unix socket, plain TCP and mutual TLS.
//! - [`guarded`]: the switch's guard-mode steps: the agent started (or told), and the
//!   engine verified through it.
//!
//! The sequence: preflight (the engine answers, swarm or not, what the files say) ->
//! certificate -> backup -> TLS files -> daemon.json -> drop-in -> validate -> restart ->
//! verify (mTLS `/_ping` serves the new serial, no-cert and the old plain address are
//! refused). Any failure after the backup restores every file, restarts, and confirms
//! the engine answers as before. A node is never left without a working engine.

pub mod alive;
pub mod backup;
pub mod daemon_json;
pub mod engine;
pub mod guarded;
pub mod launcher;
pub mod pairs;
pub mod preflight;
pub mod restart;
pub mod rotate;
pub mod switch;
pub mod systemd;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use dtca_common::bundle::Bundle;
use dtca_common::endpoint::EngineAddr;

pub use self::preflight::{Preflight, preflight};
pub use self::restart::{recover_interrupted, restart, verify};
pub use self::rotate::{reconcile, rotate};
pub use self::switch::switch;

/// Default daemon.json.
pub const DEFAULT_CONFIG: &str = "/etc/docker/daemon.json";
/// Default TLS directory.
pub const DEFAULT_TLS_DIR: &str = "/etc/docker/tls";
/// Default mutual-TLS address.
pub const DEFAULT_LISTEN: &str = "tcp://0.0.0.0:2376";
/// The default wait for the engine.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How to switch this node's engine.
#[derive(Debug, Clone)]
pub struct DockerOptions {
    /// daemon.json; `None`: the unit's `--config-file`, else /etc/docker/daemon.json.
    pub config: Option<PathBuf>,
    /// Where dockerd's TLS files go.
    pub tls_dir: PathBuf,
    /// The mutual-TLS address.
    pub listen: EngineAddr,
    /// Systemd unit directories, highest priority first.
    pub systemd_dirs: Vec<PathBuf>,
    /// The address operators should use for this engine; `None`: derived from the listen
    /// address and the certificate's names.
    pub advertise: Option<EngineAddr>,
    /// How long to wait for the engine after a restart.
    pub timeout: Duration,
    /// Switch again even when already switched.
    pub force: bool,
    /// Only plan: check, make and write nothing.
    pub dry_run: bool,
    /// The settings given explicitly, kept by a failed switch for its retry.
    pub given: crate::state::SwitchFlags,
    /// Who serves mutual TLS: dockerd (native) or the agent's guard.
    pub mode: crate::state::EngineMode,
    /// How to start the agent where systemd does not run it (guard mode).
    pub agent_start: Option<String>,
    /// The agent's guard holds the listen address now (the node is in guard mode).
    pub held_by_guard: bool,
}

/// The pair the engine's address should serve: dockerd's TLS directory in native mode,
/// the node's own pair (the credential directory `out`) in guard mode.
///
/// # Errors
/// [`ClientError`] when the pair cannot be read.
pub fn served_pair(
    docker: &crate::state::DockerState,
    out: &std::path::Path,
) -> Result<Bundle, crate::error::ClientError> {
    match docker.mode {
        crate::state::EngineMode::Native => pairs::TlsDir::new(&docker.tls_dir).load_current(),
        crate::state::EngineMode::Guard => {
            Ok(Bundle::load(out, dtca_common::bundle::Layout::CLIENT)?)
        }
    }
}

/// Where the docker switch keeps its backups, inside the credential directory.
pub fn backup_dir(out: &std::path::Path) -> PathBuf {
    out.join("docker-backup")
}

/// The name to check the engine's certificate by: its first DNS name, else its first IP.
pub fn tls_name(bundle: &Bundle) -> Option<String> {
    let leaf = bundle.leaf().ok()?;
    leaf.dns_names
        .first()
        .cloned()
        .or_else(|| leaf.ip_addresses.first().map(IpAddr::to_string))
}

/// The address to publish for this engine: `--docker-advertise`, else the listen address
/// when it names a host, else the listen port on the certificate's first FQDN, first
/// non-loopback IP, or first name.
pub fn advertise(opts: &DockerOptions, bundle: &Bundle) -> EngineAddr {
    if let Some(a) = &opts.advertise {
        return a.clone();
    }
    if !opts.listen.is_wildcard() {
        return opts.listen.clone();
    }
    let leaf = bundle.leaf().ok();
    let pick = leaf.as_ref().and_then(|l| {
        l.dns_names
            .iter()
            .find(|d| d.contains('.'))
            .cloned()
            .or_else(|| {
                l.ip_addresses
                    .iter()
                    .find(|ip| !ip.is_loopback())
                    .map(IpAddr::to_string)
            })
            .or_else(|| l.dns_names.first().cloned())
            .or_else(|| l.ip_addresses.first().map(IpAddr::to_string))
    });
    pick.and_then(|host| opts.listen.with_host(&host).ok())
        .unwrap_or_else(|| opts.listen.clone())
}
