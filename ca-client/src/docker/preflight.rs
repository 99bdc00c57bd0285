//! Before the switch: what the engine and its files say, and whether everything the
//! switch will write can be written. Touches nothing, so a node that cannot be switched
//! does not spend a token.

use std::path::PathBuf;

use dtca_common::endpoint::EngineAddr;
use dtca_common::fs as files;

use super::daemon_json;
use super::engine::{self, EngineInfo};
use super::pairs::TlsDir;
use super::systemd::{self, Scan};
use super::{DEFAULT_CONFIG, DockerOptions};
use crate::error::{ClientError, ConfigProblem, EngineFailure, Invalid};

/// What was found before touching anything.
#[derive(Debug, Clone)]
pub struct Preflight {
    /// daemon.json path.
    pub config: PathBuf,
    /// Its current text (None: absent).
    pub existing: Option<String>,
    /// The systemd unit as systemd would run it.
    pub scan: Scan,
    /// The engine's unix socket.
    pub socket: PathBuf,
    /// What the engine reported.
    pub info: EngineInfo,
    /// Plain TCP hosts it listens on now.
    pub plain_tcp: Vec<EngineAddr>,
}

/// Looks at the engine and its configuration; touches nothing.
///
/// # Errors
/// [`ClientError::Engine`] when the engine does not answer on its socket,
/// [`ClientError::Config`] when the files cannot be edited safely,
/// [`ClientError::Invalid`] when the listen port is taken.
pub async fn preflight(opts: &DockerOptions) -> Result<Preflight, ClientError> {
    let scan = systemd::scan(&opts.systemd_dirs);
    if let Some(late) = &scan.after_ours {
        return Err(ConfigProblem::LateDropin {
            path: late.clone(),
            dropin: systemd::DROPIN,
        }
        .into());
    }
    let config = opts
        .config
        .clone()
        .or_else(|| scan.config_file.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let existing = match std::fs::read_to_string(&config) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(files::FileError::new(&config, "read", e).into()),
    };
    let unsafe_to_edit = |e: daemon_json::PlanError| ConfigProblem::DaemonJson {
        path: config.clone(),
        detail: e.to_string(),
    };
    // Before anything is read from it (the engine's socket is in its hosts).
    if let Some(text) = existing.as_deref() {
        daemon_json::parse(Some(text)).map_err(unsafe_to_edit)?;
    }
    let mut hosts = existing
        .as_deref()
        .map(daemon_json::hosts_of)
        .unwrap_or_default();
    hosts.extend(scan.hosts.iter().cloned());
    let socket = hosts
        .iter()
        .find_map(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"));
    let info = engine::info_unix(&socket)
        .await
        .map_err(|e| EngineFailure::Unreachable {
            socket: socket.clone(),
            detail: e.to_string(),
        })?;
    let listening = daemon_json::tcp_hosts(&hosts);
    let plain_tcp = if existing.as_deref().is_some_and(daemon_json::tlsverify_of) {
        Vec::new()
    } else {
        listening.clone()
    };
    // Refuse early what the edit would refuse later.
    daemon_json::plan(
        existing.as_deref(),
        &scan.hosts,
        &TlsDir::new(&opts.tls_dir).paths(),
        &opts.listen,
        info.swarm,
    )
    .map_err(unsafe_to_edit)?;
    // A port another program holds would only show as an engine that does not start.
    if !listening.contains(&opts.listen) {
        check_port_free(&opts.listen)?;
    }
    // Everything the switch writes must be writable before a token is spent on it.
    files::ensure_writable_dir(&opts.tls_dir, 0o755)?;
    if let Some(dir) = config.parent().filter(|d| !d.as_os_str().is_empty()) {
        files::ensure_writable_dir(dir, 0o755)?;
    }
    Ok(Preflight {
        config,
        existing,
        scan,
        socket,
        info,
        plain_tcp,
    })
}

/// Refuses an `IP:PORT` that cannot be bound here: taken by another program, or an
/// address this machine does not have. Host names are left to dockerd.
fn check_port_free(listen: &EngineAddr) -> Result<(), ClientError> {
    let Some(addr) = listen.socket_addr() else {
        return Ok(());
    };
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(source) => Err(Invalid::ListenTaken {
            listen: listen.clone(),
            source,
        }
        .into()),
    }
}
