//! Before the switch: how the running engine was started, what it and its files say,
//! and whether everything the switch will write and run can be written and run. Touches
//! nothing, so a node that cannot be switched does not spend a token.

use std::path::{Path, PathBuf};

use dtca_common::endpoint::EngineAddr;
use dtca_common::fs as files;

use super::daemon_json;
use super::engine::{self, EngineInfo};
use super::launcher::{self, Kind, Launcher};
use super::pairs::TlsDir;
use super::systemd::{self, Scan};
use super::{DEFAULT_CONFIG, DockerOptions};
use crate::error::{ClientError, ConfigProblem, EngineFailure, Invalid, LaunchProblem};

/// An environment file and its new text.
type EnvEdit = Option<(PathBuf, String)>;

/// What was found before touching anything.
#[derive(Debug, Clone)]
pub struct Preflight {
    /// How the engine was started.
    pub launcher: Launcher,
    /// daemon.json path.
    pub config: PathBuf,
    /// Its current text (None: absent).
    pub existing: Option<String>,
    /// The systemd unit as systemd would run it (empty unless systemd runs the engine).
    pub scan: Scan,
    /// `-H` hosts of dockerd's command line that move into daemon.json.
    pub flag_hosts: Vec<String>,
    /// The launcher's environment file and its text without `-H` (OpenRC, sysvinit).
    pub env_edit: Option<(PathBuf, String)>,
    /// The command that restarts the engine.
    pub restart: String,
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
/// [`ClientError::Launch`] when its launcher or restart command does not allow the
/// switch, [`ClientError::Config`] when the files cannot be edited safely,
/// [`ClientError::Invalid`] when the listen port is taken.
pub async fn preflight(opts: &DockerOptions) -> Result<Preflight, ClientError> {
    // A daemon.json given that cannot be edited is said first, engine or not.
    if let Some(given) = &opts.config
        && let Ok(text) = std::fs::read_to_string(given)
    {
        daemon_json::parse(Some(&text)).map_err(|e| ConfigProblem::DaemonJson {
            path: given.clone(),
            detail: e.to_string(),
        })?;
    }
    // Unit directories given explicitly that hold docker.service: systemd runs the engine,
    // whatever the traces say (hosts where systemd cannot be seen, tests).
    let given_units = (!opts.given.systemd_dirs.is_empty())
        .then(|| systemd::scan(&opts.systemd_dirs))
        .filter(|s| !s.files.is_empty());
    let sockets = candidate_sockets(opts, given_units.as_ref());
    let launcher = launcher::detect(&sockets, given_units.is_some())
        .await
        .ok_or_else(|| EngineFailure::Unreachable {
            socket: sockets.first().cloned().unwrap_or_default(),
            detail: format!(
                "no engine answers on {}",
                sockets
                    .iter()
                    .map(|s| s.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
    let scan = match (launcher.kind, given_units) {
        (Kind::Systemd, Some(scan)) => scan,
        (Kind::Systemd, None) => systemd::scan(&opts.systemd_dirs),
        _ => Scan::default(),
    };
    if let Some(late) = &scan.after_ours {
        return Err(ConfigProblem::LateDropin {
            path: late.clone(),
            dropin: systemd::DROPIN,
        }
        .into());
    }
    let reads = scan.config_file.clone().or_else(|| launcher.config.clone());
    if let (Some(given), Some(reads)) = (&opts.config, &reads)
        && !same_file(given, reads)
    {
        return Err(LaunchProblem::OtherConfig {
            given: given.clone(),
            reads: reads.clone(),
        }
        .into());
    }
    let config = opts
        .config
        .clone()
        .or(reads)
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
    if let Some(text) = existing.as_deref() {
        daemon_json::parse(Some(text)).map_err(unsafe_to_edit)?;
    }
    let (flag_hosts, env_edit) = flag_hosts(&launcher, &scan)?;
    let restart = restart_command(opts, &launcher)?;
    let mut hosts = existing
        .as_deref()
        .map(daemon_json::hosts_of)
        .unwrap_or_default();
    hosts.extend(flag_hosts.iter().cloned());
    let socket = launcher.socket.clone();
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
        &flag_hosts,
        &TlsDir::new(&opts.tls_dir).paths(),
        &opts.listen,
        info.swarm,
    )
    .map_err(unsafe_to_edit)?;
    // A port another program holds would only show as an engine that does not start.
    // (The guard's own address is freed by the switch itself.)
    if !listening.contains(&opts.listen) && !opts.held_by_guard {
        check_port_free(&opts.listen)?;
    }
    // Everything the switch writes must be writable before a token is spent on it.
    writable(&opts.tls_dir, opts.dry_run)?;
    let mut dirs: Vec<&Path> = vec![config.as_path()];
    if let Some((file, _)) = &env_edit {
        dirs.push(file);
    }
    for file in dirs {
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            writable(dir, opts.dry_run)?;
        }
    }
    if scan.without_hosts().is_some()
        && let Some(dir) = opts.systemd_dirs.first()
    {
        writable(dir, opts.dry_run)?;
    }
    Ok(Preflight {
        launcher,
        config,
        existing,
        scan,
        flag_hosts,
        env_edit,
        restart,
        socket,
        info,
        plain_tcp,
    })
}

/// Proves files can be created in `dir`, making it when missing; for a dry run, in the
/// nearest directory that exists, making nothing.
fn writable(dir: &Path, dry_run: bool) -> Result<(), files::FileError> {
    if !dry_run {
        return files::ensure_writable_dir(dir, 0o755);
    }
    match dir.ancestors().find(|d| d.is_dir()) {
        Some(existing) => files::ensure_writable_dir(existing, 0o755),
        None => Ok(()),
    }
}

/// Where to look for the engine: `DOCKER_HOST` when it is a unix socket, the unix hosts
/// of the daemon.json given (or the default one), of the unit given, then the usual
/// sockets.
fn candidate_sockets(opts: &DockerOptions, units: Option<&Scan>) -> Vec<PathBuf> {
    let mut hosts: Vec<String> = std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| h.starts_with("unix://"))
        .into_iter()
        .collect();
    for file in opts
        .config
        .iter()
        .map(PathBuf::as_path)
        .chain([Path::new(DEFAULT_CONFIG)])
    {
        if let Ok(text) = std::fs::read_to_string(file) {
            hosts.extend(daemon_json::hosts_of(&text));
        }
    }
    if let Some(scan) = units {
        hosts.extend(scan.hosts.iter().cloned());
    }
    let mut sockets: Vec<PathBuf> = hosts
        .iter()
        .filter_map(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .collect();
    sockets.push(PathBuf::from("/var/run/docker.sock"));
    sockets.push(PathBuf::from("/run/docker.sock"));
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        sockets.push(Path::new(&dir).join("docker.sock"));
    }
    let mut seen = std::collections::HashSet::new();
    sockets.retain(|s| seen.insert(s.clone()));
    sockets
}

/// The `-H` hosts on dockerd's command line, from where its launcher sets them: the
/// systemd unit (a drop-in will clear them) or the environment file (edited).
///
/// # Errors
/// [`LaunchProblem::FlagHosts`] when the command line has `-H` that no file explains.
fn flag_hosts(launcher: &Launcher, scan: &Scan) -> Result<(Vec<String>, EnvEdit), LaunchProblem> {
    let (hosts, edit) = match launcher.kind {
        Kind::Systemd => (scan.hosts.clone(), None),
        Kind::OpenRc | Kind::SysVinit => launcher
            .env_file
            .as_ref()
            .and_then(|f| {
                let text = std::fs::read_to_string(f).ok()?;
                let (hosts, edited) = launcher::env_without_hosts(&text)?;
                Some((hosts, Some((f.clone(), edited))))
            })
            .unwrap_or_default(),
        _ => (Vec::new(), None),
    };
    if hosts.is_empty() && !launcher.flag_hosts.is_empty() {
        return Err(LaunchProblem::FlagHosts {
            hosts: launcher.flag_hosts.clone(),
            evidence: launcher.evidence.clone(),
        });
    }
    Ok((hosts, edit))
}

/// The restart command: `--docker-restart`, else the launcher's; checked to be runnable.
///
/// # Errors
/// [`LaunchProblem::Unknown`] when there is neither, [`LaunchProblem::RestartCannotRun`]
/// when a command it names is missing, or it needs systemd and systemd is not running.
fn restart_command(opts: &DockerOptions, launcher: &Launcher) -> Result<String, LaunchProblem> {
    let command = opts
        .given
        .restart
        .clone()
        .or_else(|| launcher.restart.clone())
        .ok_or_else(|| LaunchProblem::Unknown {
            evidence: launcher.evidence.clone(),
            cmdline: launcher.cmdline.join(" "),
        })?;
    check_runnable(&command).map_err(|detail| LaunchProblem::RestartCannotRun {
        command: command.clone(),
        detail,
    })?;
    Ok(command)
}

/// Whether each command a shell line runs can be found, and `systemctl` has a systemd
/// to talk to.
///
/// # Errors
/// What is missing.
pub fn check_runnable(line: &str) -> Result<(), String> {
    const BUILTINS: &[&str] = &[
        ":", ".", "[", "cd", "echo", "eval", "exec", "exit", "export", "false", "printf", "set",
        "sleep", "test", "true", "wait", "kill", "if", "then", "else", "fi", "!", "{", "}", "(",
        ")",
    ];
    let split = format!("{line} ")
        .replace("&&", "\n")
        .replace("||", "\n")
        .replace(" & ", "\n")
        .replace([';', '|'], "\n");
    for segment in split.lines() {
        let words = systemd::split_words(&format!("x {segment}"));
        let Some(cmd) = words.iter().skip(1).find(|w| !w.contains('=')) else {
            continue;
        };
        let cmd = cmd.trim_start_matches('(');
        if cmd.is_empty() || BUILTINS.contains(&cmd) {
            continue;
        }
        let found = if cmd.contains('/') {
            is_executable(Path::new(cmd))
        } else {
            std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).any(|d| is_executable(&d.join(cmd))))
                .unwrap_or(false)
        };
        if !found {
            return Err(format!("`{cmd}` is not found"));
        }
        if cmd.ends_with("systemctl") && !segment.contains("--user") && !launcher::systemd_running()
        {
            return Err("systemd is not running on this host (/run/systemd/system does not exist), so `systemctl` cannot restart dockerd".into());
        }
    }
    Ok(())
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether two paths name the same file (or the same place, when it does not exist).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_commands_are_checked_word_by_word() {
        assert!(check_runnable("true && sh -c 'exit 0'").is_ok());
        assert!(check_runnable("FOO=1 /bin/sh -c true").is_ok());
        assert!(check_runnable("(sh -c true 2>&1) & wait; true || false").is_ok());
        let missing = check_runnable("true && no-such-restarter-here now").unwrap_err();
        assert!(missing.contains("no-such-restarter-here"), "{missing}");
        assert!(check_runnable("/no/such/script").is_err());
    }
}
