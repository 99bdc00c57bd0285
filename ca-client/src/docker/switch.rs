//! The switch itself: back up, then TLS files -> daemon.json -> drop-in -> validate ->
//! restart -> verify, and on any failure the rollback.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use dtca_common::bundle::Bundle;
use dtca_common::fs as files;
use tokio::process::Command;

use super::alive::{self, Watch};
use super::backup::Backup;
use super::daemon_json::{self, Plan};
use super::guarded::{self, Handoff, Started};
use super::pairs::TlsDir;
use super::preflight::Preflight;
use super::restart::{restart, roll_back, verify, verify_socket_only};
use super::{DockerOptions, advertise, engine, systemd};
use crate::error::{ClientError, ConfigProblem, EngineFailure, Step, SwitchFailure};
use crate::state::{ClientState, DockerState, EngineMode};

/// Switches the engine to mutual TLS with `bundle`, verified; rolls back on failure.
///
/// `backup_dir` keeps copies of everything touched (and the journal of the switch);
/// `node` is the enrollment the switch hands to the agent in guard mode (and the mode
/// the engine is in now).
///
/// # Errors
/// [`SwitchFailure::RolledBack`] naming the step that failed, after the previous
/// configuration was restored; [`EngineFailure::RollbackIncomplete`] when even the
/// rollback could not bring the engine back (the message says what to look at).
pub async fn switch(
    opts: &DockerOptions,
    pre: &Preflight,
    bundle: &Bundle,
    backup_dir: &Path,
    node: &Handoff<'_>,
) -> Result<DockerState, ClientError> {
    let tls = TlsDir::new(&opts.tls_dir);
    let (plan, dropin) = planned(opts, pre)?;
    let next = DockerState {
        config: pre.config.clone(),
        tls_dir: opts.tls_dir.clone(),
        listen: opts.listen.clone(),
        restart: pre.restart.clone(),
        socket: plan.socket.clone().unwrap_or_else(|| pre.socket.clone()),
        dropin: dropin.as_ref().map(|(p, _)| p.clone()),
        swarm: pre.info.swarm,
        advertise: advertise(opts, bundle),
        mode: opts.mode,
        agent_start: opts.agent_start.clone(),
    };

    let mut touched = tls.touched();
    touched.push(pre.config.clone());
    if let Some((path, _)) = &dropin {
        touched.push(path.clone());
    }
    if let Some((path, _)) = &pre.env_edit {
        touched.push(path.clone());
    }
    if node.involves_guard(opts.mode) {
        // The recorded mode is what the agent follows: a rollback puts it back too.
        touched.push(ClientState::path(node.out));
    }
    let mut backup = Backup::begin(
        backup_dir,
        &touched,
        &pre.restart,
        &pre.socket,
        &pre.plain_tcp,
    )?;
    tracing::info!(backup = %backup_dir.display(), "backed up the engine's configuration");

    let mut progress = Progress::default();
    let applied = apply(
        opts,
        pre,
        &plan,
        dropin.as_ref(),
        &tls,
        bundle,
        node,
        &next,
        &mut progress,
    )
    .await;
    let failure = match applied {
        Ok(()) => {
            backup.finish()?;
            if opts.mode == EngineMode::Native
                && let Some(serial) = tls.current()
            {
                tls.prune(&[&serial]);
            }
            tracing::info!(listen = %opts.listen, mode = %opts.mode, "engine switched to mutual TLS");
            return Ok(next);
        }
        Err(failure) => failure,
    };
    tracing::error!(step = %failure.step, error = %failure.detail, "switch failed; rolling back");
    let rolled = roll_back(&backup, progress.restarted, opts.timeout).await;
    if let Some(started) = progress.agent.take() {
        started.stop().await;
    }
    match rolled {
        Ok(restored) => {
            // The new pair was never proven: leave only what is current again.
            let current = tls.current();
            tls.prune(&current.iter().collect::<Vec<_>>());
            let _ = backup.finish();
            Err(SwitchFailure::RolledBack {
                step: failure.step,
                detail: failure.detail,
                restored,
            }
            .into())
        }
        Err(rollback) => Err(EngineFailure::RollbackIncomplete {
            step: failure.step,
            detail: failure.detail,
            rollback,
        }
        .into()),
    }
}

/// How far the switch got: what a rollback must undo besides the files.
#[derive(Debug, Default)]
struct Progress {
    /// The engine was restarted.
    restarted: bool,
    /// The agent this switch started (stopped again by a rollback).
    agent: Option<Started>,
}

/// A systemd drop-in to write: its path and dockerd's command line.
pub type Dropin = Option<(PathBuf, Vec<String>)>;

/// What the switch writes: the new daemon.json, and the systemd drop-in (its path and
/// dockerd's command line) when the unit passes `-H`. `enroll --docker --dry-run` shows
/// the same.
///
/// # Errors
/// [`ConfigProblem::DaemonJson`] when daemon.json cannot be edited safely.
pub fn planned(opts: &DockerOptions, pre: &Preflight) -> Result<(Plan, Dropin), ClientError> {
    let tls = TlsDir::new(&opts.tls_dir).paths();
    let plan = daemon_json::plan_for(
        pre.existing.as_deref(),
        &pre.flag_hosts,
        (opts.mode == EngineMode::Native).then_some(&tls),
        &opts.listen,
        pre.info.swarm,
    )
    .map_err(|e| ConfigProblem::DaemonJson {
        path: pre.config.clone(),
        detail: e.to_string(),
    })?;
    let dropin = pre
        .scan
        .without_hosts()
        .and_then(|args| systemd::dropin_path(&opts.systemd_dirs).map(|p| (p, args)));
    Ok((plan, dropin))
}

/// A failed step of the switch.
#[derive(Debug)]
struct StepFailure {
    step: Step,
    detail: String,
}

/// Tags the error of one step with it.
fn step<T, E: std::fmt::Display>(step: Step, r: Result<T, E>) -> Result<T, StepFailure> {
    r.map_err(|e| StepFailure {
        step,
        detail: e.to_string(),
    })
}

#[allow(clippy::too_many_arguments)]
async fn apply(
    opts: &DockerOptions,
    pre: &Preflight,
    plan: &Plan,
    dropin: Option<&(PathBuf, Vec<String>)>,
    tls: &TlsDir,
    bundle: &Bundle,
    node: &Handoff<'_>,
    next: &DockerState,
    progress: &mut Progress,
) -> Result<(), StepFailure> {
    if opts.mode == EngineMode::Native {
        let serial = step(Step::WriteTls, tls.install(bundle))?;
        step(Step::WriteTls, tls.activate(&serial))?;
    }
    // Keep the file's mode (some keep daemon.json 0600).
    let mode = std::fs::metadata(&pre.config)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .unwrap_or(0o644);
    let staged = step(
        Step::EditDaemonJson,
        files::stage(&pre.config, plan.text.as_bytes(), mode),
    )?;
    let validated = validate(pre, &staged).await;
    // Written for real below; the staged copy only had to be validated.
    let _ = std::fs::remove_file(&staged);
    step(Step::Validate, validated)?;
    if plan.live_restore && !pre.info.live_restore {
        // live-restore only protects containers when the running daemon has it on as it
        // stops. dockerd applies it on SIGHUP, but refuses a reload that also moves
        // `hosts` while it runs with -H: reload with live-restore alone first.
        let interim = step(
            Step::EditDaemonJson,
            daemon_json::with_live_restore(pre.existing.as_deref()),
        )?;
        step(
            Step::EditDaemonJson,
            files::write_atomic(&pre.config, interim.as_bytes(), mode),
        )?;
        if !enable_live_restore(&pre.socket, &plan.text).await {
            tracing::warn!(
                "dockerd did not turn live-restore on when asked to reload (see its log): running containers stop at this restart, not at later ones"
            );
        }
    }
    step(
        Step::EditDaemonJson,
        files::write_atomic(&pre.config, plan.text.as_bytes(), mode),
    )?;
    if let Some((path, args)) = dropin {
        if let Some(dir) = path.parent() {
            step(Step::WriteDropin, files::ensure_dir(dir, 0o755))?;
        }
        step(
            Step::WriteDropin,
            files::write_atomic(path, systemd::dropin_text(args).as_bytes(), 0o644),
        )?;
    }
    if let Some((path, text)) = &pre.env_edit {
        let mode = std::fs::metadata(path)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .unwrap_or(0o644);
        step(
            Step::WriteEnvFile,
            files::write_atomic(path, text.as_bytes(), mode),
        )?;
    }
    let socket = plan.socket.clone().unwrap_or_else(|| pre.socket.clone());
    let guarded_now = node.mode() == Some(EngineMode::Guard);
    if guarded_now && opts.mode == EngineMode::Native {
        // The guard holds the address dockerd is to take: the agent lets it go when it
        // reads the new mode.
        step(Step::StopGuard, node.publish(bundle, next))?;
        step(
            Step::StopGuard,
            guarded::released(&opts.listen, opts.timeout).await,
        )?;
    }
    let watch = Watch::before_restart(
        pidfile_of(&plan.text, pre),
        socket.clone(),
        alive::log_source(&pre.launcher),
    );
    progress.restarted = true;
    step(Step::Restart, restart(&pre.restart).await)?;
    if opts.mode == EngineMode::Native {
        return step(
            Step::Verify,
            verify(
                &opts.listen,
                &plan.removed_tcp,
                &socket,
                bundle,
                opts.timeout,
                Some(&watch),
                false,
            )
            .await,
        );
    }
    // Guard mode: dockerd on its socket only, then the agent in front of it.
    let mut closed = plan.removed_tcp.clone();
    if !guarded_now {
        closed.push(opts.listen.clone());
    }
    step(
        Step::Verify,
        verify_socket_only(&socket, &closed, opts.timeout, Some(&watch)).await,
    )?;
    step(Step::StartAgent, node.publish(bundle, next))?;
    progress.agent = step(
        Step::StartAgent,
        guarded::ensure_agent(node.out, opts.agent_start.as_deref(), opts.timeout).await,
    )?;
    step(
        Step::VerifyGuard,
        verify(&opts.listen, &[], &socket, bundle, opts.timeout, None, true).await,
    )
}

fn pidfile_of(config: &str, pre: &Preflight) -> PathBuf {
    alive::pidfile_in(config, pre.launcher.pidfile.as_deref())
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
        .or_else(|| pre.launcher.cmdline.first().cloned())
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
