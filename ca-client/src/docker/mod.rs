//! The docker switch: move an engine from plain TCP (2375) to mutually-authenticated TLS
//! (2376), verified, and rolled back on any failure; and rotation of its certificate.
//!
//! - [`daemon_json`]: the JSON edit (pure).
//! - [`systemd`]: the `-H` conflict with docker.service and its drop-ins.
//! - [`pairs`]: dockerd's TLS directory, with pairs switched atomically.
//! - [`backup`]: copies of everything touched, and the journal of an unfinished switch.
//! - [`engine`]: the Docker API over the unix socket, plain TCP and mutual TLS.
//!
//! The sequence: preflight (the engine answers, swarm or not, what the files say) ->
//! certificate -> backup -> TLS files -> daemon.json -> drop-in -> validate -> restart ->
//! verify (mTLS `/_ping` serves the new serial, no-cert and the old plain address are
//! refused). Any failure after the backup restores every file, restarts, and confirms
//! the engine answers as before. A node is never left without a working engine.

pub mod backup;
pub mod daemon_json;
pub mod engine;
pub mod pairs;
pub mod systemd;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use dtca_common::bundle::Bundle;
use dtca_common::fs as files;
use dtca_pki::Serial;
use tokio::process::Command;

use self::backup::Backup;
use self::daemon_json::Plan;
use self::engine::EngineInfo;
use self::pairs::TlsDir;
use self::systemd::Scan;
use crate::error::ClientError;
use crate::state::DockerState;

/// Default daemon.json.
pub const DEFAULT_CONFIG: &str = "/etc/docker/daemon.json";
/// Default TLS directory.
pub const DEFAULT_TLS_DIR: &str = "/etc/docker/tls";
/// Default mutual-TLS address.
pub const DEFAULT_LISTEN: &str = "tcp://0.0.0.0:2376";
/// Default restart command.
pub const DEFAULT_RESTART: &str = "systemctl daemon-reload && systemctl restart docker";
/// How long the restart command may run.
const RESTART_TIMEOUT: Duration = Duration::from_secs(180);

/// How to switch this node's engine.
#[derive(Debug, Clone)]
pub struct DockerOptions {
    /// daemon.json; `None`: the unit's `--config-file`, else /etc/docker/daemon.json.
    pub config: Option<PathBuf>,
    /// Where dockerd's TLS files go.
    pub tls_dir: PathBuf,
    /// The mutual-TLS address (`tcp://HOST:PORT`).
    pub listen: String,
    /// Shell command that restarts the engine.
    pub restart: String,
    /// Systemd unit directories, highest priority first.
    pub systemd_dirs: Vec<PathBuf>,
    /// The address operators should use for this engine (`tcp://HOST:PORT`); `None`:
    /// derived from the listen address and the certificate's names.
    pub advertise: Option<String>,
    /// How long to wait for the engine after a restart.
    pub timeout: Duration,
}

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
    pub plain_tcp: Vec<String>,
}

/// Looks at the engine and its configuration; touches nothing.
///
/// # Errors
/// [`ClientError::Docker`] when the engine does not answer on its socket or the files
/// cannot be read or edited safely.
pub async fn preflight(opts: &DockerOptions) -> Result<Preflight, ClientError> {
    if !opts.listen.starts_with("tcp://")
        || opts
            .listen
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
    {
        return Err(ClientError::Invalid(format!(
            "--docker-listen {:?} must be tcp://HOST:PORT",
            opts.listen
        )));
    }
    let scan = systemd::scan(&opts.systemd_dirs);
    if let Some(late) = &scan.after_ours {
        return Err(ClientError::Config(format!(
            "{} sets dockerd's ExecStart and sorts after dtca's drop-in {}, so systemd would ignore ours: move its settings into an earlier drop-in (or docker.service) first",
            late.display(),
            systemd::DROPIN
        )));
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
    // Before anything is read from it (the engine's socket is in its hosts).
    if let Some(text) = existing.as_deref() {
        daemon_json::parse(Some(text))
            .map_err(|e| ClientError::Config(format!("{}: {e}", config.display())))?;
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
    let info = engine::info_unix(&socket).await.map_err(|e| {
        ClientError::Docker(format!(
            "the Docker engine does not answer on unix://{} ({e}); start it before switching it to TLS",
            socket.display()
        ))
    })?;
    let plain_tcp = if existing.as_deref().is_some_and(daemon_json::tlsverify_of) {
        Vec::new()
    } else {
        hosts
            .iter()
            .map(|h| daemon_json::normalize(h))
            .filter(|h| h.starts_with("tcp://"))
            .collect()
    };
    // Refuse early what the edit would refuse later.
    daemon_json::plan(
        existing.as_deref(),
        &scan.hosts,
        &TlsDir::new(&opts.tls_dir).paths(),
        &opts.listen,
        info.swarm,
    )
    .map_err(|e| ClientError::Config(format!("{}: {e}", config.display())))?;
    // A port another program holds would only show as an engine that does not start.
    let listen = daemon_json::normalize(&opts.listen);
    if !hosts.iter().any(|h| daemon_json::normalize(h) == listen) {
        check_port_free(&listen)?;
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

/// Refuses a `tcp://IP:PORT` that cannot be bound here: taken by another program, or an
/// address this machine does not have. Host names are left to dockerd.
fn check_port_free(listen: &str) -> Result<(), ClientError> {
    let Some(addr) = listen
        .strip_prefix("tcp://")
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
    else {
        return Ok(());
    };
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) => Err(ClientError::Invalid(format!(
            "--docker-listen {listen}: cannot listen there ({e}); free the port or choose another"
        ))),
    }
}

/// Switches the engine to mutual TLS with `bundle`, verified; rolls back on failure.
///
/// `backup_dir` keeps copies of everything touched (and the journal of the switch).
///
/// # Errors
/// [`ClientError::DockerSwitch`] naming the step that failed, after the previous
/// configuration was restored; [`ClientError::Docker`] when even the rollback could not
/// bring the engine back (the message says what to look at).
pub async fn switch(
    opts: &DockerOptions,
    pre: &Preflight,
    bundle: &Bundle,
    backup_dir: &Path,
) -> Result<DockerState, ClientError> {
    let tls = TlsDir::new(&opts.tls_dir);
    let plan = daemon_json::plan(
        pre.existing.as_deref(),
        &pre.scan.hosts,
        &tls.paths(),
        &opts.listen,
        pre.info.swarm,
    )
    .map_err(|e| ClientError::Docker(format!("{}: {e}", pre.config.display())))?;
    let dropin = pre
        .scan
        .without_hosts()
        .and_then(|args| systemd::dropin_path(&opts.systemd_dirs).map(|p| (p, args)));

    let mut touched = tls.touched();
    touched.push(pre.config.clone());
    if let Some((path, _)) = &dropin {
        touched.push(path.clone());
    }
    let mut backup = Backup::begin(
        backup_dir,
        &touched,
        &opts.restart,
        &pre.socket,
        &pre.plain_tcp,
    )?;
    tracing::info!(backup = %backup_dir.display(), "backed up the engine's configuration");

    let mut restarted = false;
    match apply(
        opts,
        pre,
        &plan,
        dropin.as_ref(),
        &tls,
        bundle,
        &mut restarted,
    )
    .await
    {
        Ok(()) => {
            backup.finish()?;
            if let Some(serial) = tls.current() {
                tls.prune(&[&serial]);
            }
            tracing::info!(listen = %opts.listen, "engine switched to mutual TLS");
            Ok(DockerState {
                config: pre.config.clone(),
                tls_dir: opts.tls_dir.clone(),
                listen: opts.listen.clone(),
                restart: opts.restart.clone(),
                socket: plan.socket.unwrap_or_else(|| pre.socket.clone()),
                dropin: dropin.map(|(p, _)| p),
                swarm: pre.info.swarm,
                advertise: advertise(opts, bundle),
            })
        }
        Err(failure) => {
            tracing::error!(step = failure.step, error = %failure.detail, "switch failed; rolling back");
            let outcome = roll_back(&backup, restarted, opts.timeout).await;
            let message = format!("step `{}` failed: {}", failure.step, failure.detail);
            match outcome {
                Ok(how) => {
                    // The new pair was never proven: leave only what is current again.
                    let current = tls.current();
                    tls.prune(&current.iter().collect::<Vec<_>>());
                    let mut done = backup;
                    let _ = done.finish();
                    Err(ClientError::DockerSwitch(format!("{message}; {how}")))
                }
                Err(e) => Err(ClientError::Docker(format!(
                    "{message}; ROLLBACK INCOMPLETE: {e}"
                ))),
            }
        }
    }
}

/// A failed step of the switch.
#[derive(Debug)]
struct StepFailure {
    step: &'static str,
    detail: String,
}

fn step<T, E: std::fmt::Display>(name: &'static str, r: Result<T, E>) -> Result<T, StepFailure> {
    r.map_err(|e| StepFailure {
        step: name,
        detail: e.to_string(),
    })
}

async fn apply(
    opts: &DockerOptions,
    pre: &Preflight,
    plan: &Plan,
    dropin: Option<&(PathBuf, Vec<String>)>,
    tls: &TlsDir,
    bundle: &Bundle,
    restarted: &mut bool,
) -> Result<(), StepFailure> {
    let serial = step("write TLS files", tls.install(bundle))?;
    step("write TLS files", tls.activate(&serial))?;
    // Keep the file's mode (some keep daemon.json 0600).
    let mode = std::fs::metadata(&pre.config)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .unwrap_or(0o644);
    let staged = step(
        "edit daemon.json",
        files::stage(&pre.config, plan.text.as_bytes(), mode),
    )?;
    let validated = validate(pre, &staged).await;
    // Written for real below; the staged copy only had to be validated.
    let _ = std::fs::remove_file(&staged);
    if let Err(e) = validated {
        return Err(StepFailure {
            step: "validate",
            detail: e,
        });
    }
    if plan.live_restore && !pre.info.live_restore {
        // live-restore only protects containers when the running daemon has it on as it
        // stops. dockerd applies it on SIGHUP, but refuses a reload that also moves
        // `hosts` while it runs with -H: reload with live-restore alone first.
        let interim = step(
            "edit daemon.json",
            daemon_json::with_live_restore(pre.existing.as_deref()),
        )?;
        step(
            "edit daemon.json",
            files::write_atomic(&pre.config, interim.as_bytes(), mode),
        )?;
        if !enable_live_restore(&pre.socket, &plan.text).await {
            tracing::warn!(
                "dockerd did not turn live-restore on when asked to reload (see its log): running containers stop at this restart, not at later ones"
            );
        }
    }
    step(
        "edit daemon.json",
        files::write_atomic(&pre.config, plan.text.as_bytes(), mode),
    )?;
    if let Some((path, args)) = dropin {
        if let Some(dir) = path.parent() {
            step("write systemd drop-in", files::ensure_dir(dir, 0o755))?;
        }
        step(
            "write systemd drop-in",
            files::write_atomic(path, systemd::dropin_text(args).as_bytes(), 0o644),
        )?;
    }
    *restarted = true;
    step("restart", restart(&opts.restart).await)?;
    let socket = plan.socket.clone().unwrap_or_else(|| pre.socket.clone());
    step(
        "verify",
        verify(
            &opts.listen,
            &plan.removed_tcp,
            &socket,
            bundle,
            opts.timeout,
        )
        .await,
    )
}

/// Asks the running dockerd to reload its configuration (SIGHUP), which turns on
/// live-restore, and waits a little for it to say so; false when it did not.
async fn enable_live_restore(socket: &Path, config: &str) -> bool {
    let pidfile = serde_json::from_str::<serde_json::Value>(config)
        .ok()
        .and_then(|v| v.get("pidfile").and_then(|p| p.as_str()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.pid"));
    let Some(pid) = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
    else {
        return false;
    };
    let sent = Command::new("kill")
        .arg("-HUP")
        .arg(pid.to_string())
        .status()
        .await;
    if !sent.is_ok_and(|s| s.success()) {
        return false;
    }
    for _ in 0..25 {
        if engine::info_unix(socket)
            .await
            .is_ok_and(|i| i.live_restore)
        {
            tracing::info!("live-restore is on: running containers survive the restart");
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Runs `dockerd --validate` on the staged config where this dockerd has it (20.10 has
/// not: then this is skipped).
async fn validate(pre: &Preflight, staged: &Path) -> Result<(), String> {
    let dockerd = pre
        .scan
        .exec_start
        .as_ref()
        .and_then(|args| args.first().cloned())
        .unwrap_or_else(|| "dockerd".into());
    let out = Command::new(&dockerd)
        .arg("--validate")
        .arg("--config-file")
        .arg(staged)
        .stdin(Stdio::null())
        .output()
        .await;
    match out {
        Err(_) => Ok(()), // no dockerd binary here (a remote engine's restart command): nothing to run
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stderr).to_string()
                + &String::from_utf8_lossy(&out.stdout);
            if text.contains("unknown flag") {
                tracing::debug!("dockerd has no --validate; skipped");
                Ok(())
            } else {
                Err(format!(
                    "dockerd --validate refused the new configuration: {}",
                    text.trim()
                ))
            }
        }
    }
}

/// Runs the restart command through `sh -c`.
///
/// # Errors
/// The command's exit status and the end of its output.
pub async fn restart(command: &str) -> Result<(), String> {
    tracing::info!(command, "restarting the engine");
    let child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run `{command}`: {e}"))?;
    let out = tokio::time::timeout(RESTART_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            format!(
                "`{command}` did not finish within {}s",
                RESTART_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| format!("`{command}`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        let tail: String = text
            .trim()
            .chars()
            .rev()
            .take(300)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if tail.is_empty() {
            Err(format!(
                "`{command}` exited with {} and printed nothing",
                out.status
            ))
        } else {
            Err(format!("`{command}` exited with {}: {tail}", out.status))
        }
    }
}

/// Waits until the engine serves `bundle`'s certificate over mutual TLS at `listen`, then
/// checks that a client without a certificate is refused, that the removed plain
/// addresses refuse connections, and that the unix socket answers.
///
/// # Errors
/// What did not hold when `timeout` ran out.
pub async fn verify(
    listen: &str,
    removed_tcp: &[String],
    socket: &Path,
    bundle: &Bundle,
    timeout: Duration,
) -> Result<(), String> {
    let leaf = bundle.leaf().map_err(|e| e.to_string())?;
    let name = tls_name(bundle).ok_or("the certificate has no DNS name or IP address to check")?;
    let addr = engine::dial_addr(listen).await.map_err(|e| e.to_string())?;
    let client = bundle.client_identity();
    let deadline = Instant::now() + timeout;
    loop {
        let problem = match engine::ping_tls(addr, &name, &bundle.root_der, Some(&client)).await {
            Ok(served) if served == leaf.serial => break,
            Ok(served) => format!(
                "the engine serves certificate {served}, not the new {}",
                leaf.serial
            ),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "no mutual-TLS answer at {listen} within {}s: {problem}",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if engine::ping_tls(addr, &name, &bundle.root_der, None)
        .await
        .is_ok()
    {
        return Err(format!("{listen} answers clients without a certificate"));
    }
    for old in removed_tcp {
        let old_addr = engine::dial_addr(old).await.map_err(|e| e.to_string())?;
        if old_addr != addr && !engine::refuses(old_addr).await {
            return Err(format!(
                "the old plain address {old} still accepts connections"
            ));
        }
    }
    engine::ping_unix(socket)
        .await
        .map_err(|e| format!("the unix socket does not answer: {e}"))
}

/// Restores the backup, restarts if needed, and confirms the engine answers as before.
async fn roll_back(backup: &Backup, restarted: bool, timeout: Duration) -> Result<String, String> {
    let failed = backup.restore();
    if !failed.is_empty() {
        return Err(format!("could not restore: {}", failed.join("; ")));
    }
    let m = &backup.manifest;
    let answers_as_before = || async {
        engine::ping_unix(&m.socket)
            .await
            .map_err(|e| e.to_string())?;
        for host in &m.plain_tcp {
            let addr = engine::dial_addr(host).await.map_err(|e| e.to_string())?;
            engine::ping_plain(addr)
                .await
                .map_err(|e| format!("{host}: {e}"))?;
        }
        Ok::<(), String>(())
    };
    if restarted && let Err(e) = restart(&m.restart).await {
        tracing::warn!(error = %e, "restart during rollback failed");
    }
    let deadline = Instant::now() + timeout;
    loop {
        match answers_as_before().await {
            Ok(()) => {
                let mut places = vec![format!("unix://{}", m.socket.display())];
                places.extend(m.plain_tcp.iter().cloned());
                return Ok(format!(
                    "restored the previous configuration; the engine answers again on {}",
                    places.join(" and ")
                ));
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(format!(
                    "restored the previous files, but the engine does not answer as before: {e}; check `{}`",
                    m.restart
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Finishes or undoes a switch that was interrupted (the process was killed): restores
/// the backup and restarts the engine. Returns what it did, if anything.
///
/// # Errors
/// When the rollback could not bring the engine back.
pub async fn recover_interrupted(
    backup_dir: &Path,
    timeout: Duration,
) -> Result<Option<String>, ClientError> {
    let Some(mut backup) = Backup::pending(backup_dir) else {
        return Ok(None);
    };
    tracing::warn!(started = %backup.manifest.started, "an earlier docker switch was interrupted; rolling it back");
    let how = roll_back(&backup, true, timeout)
        .await
        .map_err(ClientError::Docker)?;
    backup.finish()?;
    Ok(Some(how))
}

/// Puts a renewed pair into service: install, swap, restart, verify that the engine
/// serves it; on failure, swap back, restart and verify the previous pair again.
///
/// # Errors
/// [`ClientError::DockerSwitch`] after a successful fallback, [`ClientError::Docker`]
/// when even the previous pair could not be brought back.
pub async fn rotate(
    docker: &DockerState,
    new: &Bundle,
    timeout: Duration,
) -> Result<(), ClientError> {
    let tls = TlsDir::new(&docker.tls_dir);
    let previous = tls.current();
    let previous_bundle = tls.load_current().ok();
    let serial = tls.install(new)?;
    tls.activate(&serial)?;
    let attempt = async {
        restart(&docker.restart).await?;
        verify(&docker.listen, &[], &docker.socket, new, timeout).await
    };
    match attempt.await {
        Ok(()) => {
            let keep: Vec<&Serial> = std::iter::once(&serial).chain(previous.as_ref()).collect();
            tls.prune(&keep);
            Ok(())
        }
        Err(e) => {
            let (Some(prev), Some(prev_bundle)) = (previous, previous_bundle) else {
                return Err(ClientError::Docker(format!(
                    "rotation failed ({e}) and there is no previous pair to go back to"
                )));
            };
            tracing::error!(error = %e, "rotation failed; going back to the previous certificate");
            tls.activate(&prev)?;
            let back = async {
                restart(&docker.restart).await?;
                verify(&docker.listen, &[], &docker.socket, &prev_bundle, timeout).await
            };
            match back.await {
                Ok(()) => Err(ClientError::DockerSwitch(format!(
                    "rotation to {serial} failed ({e}); the engine is back on certificate {prev}"
                ))),
                Err(e2) => Err(ClientError::Docker(format!(
                    "rotation to {serial} failed ({e}) and going back to {prev} failed too ({e2})"
                ))),
            }
        }
    }
}

/// Makes sure the engine serves the pair that is current on disk (after a crash between
/// the swap and the restart): restarts and verifies if not, and falls back to the
/// newest other pair if the current one does not work.
///
/// # Errors
/// [`ClientError::Docker`] when no pair can be brought into service.
pub async fn reconcile(docker: &DockerState, timeout: Duration) -> Result<(), ClientError> {
    let tls = TlsDir::new(&docker.tls_dir);
    let current = tls.load_current()?;
    let serial = current.leaf()?.serial;
    let name = tls_name(&current)
        .ok_or_else(|| ClientError::Docker("the certificate has no name".into()))?;
    let addr = engine::dial_addr(&docker.listen)
        .await
        .map_err(|e| ClientError::Docker(e.to_string()))?;
    if let Ok(served) = engine::ping_tls(
        addr,
        &name,
        &current.root_der,
        Some(&current.client_identity()),
    )
    .await
        && served == serial
    {
        return Ok(());
    }
    tracing::warn!(%serial, "the engine does not serve the current certificate; restarting it");
    restart(&docker.restart)
        .await
        .map_err(ClientError::Docker)?;
    verify(&docker.listen, &[], &docker.socket, &current, timeout)
        .await
        .map_err(|e| {
            ClientError::Docker(format!(
                "the engine does not come up with certificate {serial}: {e}"
            ))
        })
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
/// when it names a host, else the certificate's first FQDN, first IP, or first name.
fn advertise(opts: &DockerOptions, bundle: &Bundle) -> String {
    if let Some(a) = &opts.advertise {
        return a.clone();
    }
    let (host, port) = opts
        .listen
        .trim_start_matches("tcp://")
        .rsplit_once(':')
        .map(|(h, p)| (h.trim_matches(['[', ']']).to_string(), p.to_string()))
        .unwrap_or_default();
    let wildcard = host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified()) || host.is_empty();
    if !wildcard {
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
    match pick {
        Some(h) if h.contains(':') => format!("tcp://[{h}]:{port}"),
        Some(h) => format!("tcp://{h}:{port}"),
        None => opts.listen.clone(),
    }
}
