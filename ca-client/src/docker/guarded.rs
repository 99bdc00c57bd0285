//! The switch's guard-mode steps: the enrollment handed to the agent (the recorded mode is
//! what the agent's guard follows), the agent started where none runs (its systemd unit,
//! else `--agent-start`), and stopped again by a rollback; and the guard's address seen
//! released before dockerd takes it back (moving to native).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use dtca_common::bundle::Bundle;
use dtca_common::endpoint::EngineAddr;
use tokio::process::Command;
use tokio::time::Instant;

use super::engine;
use super::launcher::systemd_running;
use crate::error::{ClientError, GuardFailure};
use crate::state::{ClientState, DockerState, EngineMode};

/// The agent's systemd unit (dist/systemd).
pub const AGENT_UNIT: &str = "dtca-agent.service";
/// How often the switch looks for the agent and the guard's address.
const POLL: Duration = Duration::from_millis(200);

/// The enrollment the switch hands to the agent.
#[derive(Debug, Clone, Copy)]
pub struct Handoff<'a> {
    /// The credential directory the agent serves from.
    pub out: &'a Path,
    /// The enrollment as it is now (`docker`: the engine's state before the switch).
    pub state: &'a ClientState,
}

impl Handoff<'_> {
    /// The engine's mode before the switch (`None`: not switched).
    pub fn mode(&self) -> Option<EngineMode> {
        self.state.docker.as_ref().map(|d| d.mode)
    }

    /// Whether the guard is on either side of a switch to `to`.
    pub fn involves_guard(&self, to: EngineMode) -> bool {
        to == EngineMode::Guard || self.mode() == Some(EngineMode::Guard)
    }

    /// Writes the pair and the enrollment with the engine as `next`: from now on the
    /// agent (its guard) follows it.
    ///
    /// # Errors
    /// [`ClientError::File`] when they cannot be written.
    pub fn publish(&self, bundle: &Bundle, next: &DockerState) -> Result<(), ClientError> {
        let mut state = self.state.clone();
        state.docker = Some(next.clone());
        crate::enroll::write(self.out, bundle, &state)
    }
}

/// Refuses, before anything is spent, a guard-mode switch whose agent cannot be started:
/// none runs, systemd does not run this machine and no `--agent-start` was given.
///
/// # Errors
/// [`GuardFailure::NoAgentStart`].
pub fn check_agent_start(out: &Path, agent_start: Option<&str>) -> Result<(), ClientError> {
    if agent_start.is_some() || systemd_running() || crate::lock::AgentLock::holder(out).is_some() {
        Ok(())
    } else {
        Err(GuardFailure::NoAgentStart.into())
    }
}

/// An agent the switch started.
#[derive(Debug)]
pub enum Started {
    /// By `--agent-start`; its pid when it was found.
    Command { pid: Option<u32> },
    /// Its systemd unit.
    Unit,
}

impl Started {
    /// Stops it again (a rollback): by pid, or through systemd.
    pub async fn stop(self) {
        match self {
            Started::Command { pid: Some(pid) } => {
                tracing::info!(pid, "stopping the agent this switch started");
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status()
                    .await;
                let deadline = Instant::now() + Duration::from_secs(30);
                while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                    tokio::time::sleep(POLL).await;
                }
            }
            Started::Command { pid: None } => {
                tracing::warn!("the agent this switch started was not found to stop it");
            }
            Started::Unit => {
                let _ = run(&format!("systemctl stop {AGENT_UNIT}"), None).await;
            }
        }
    }
}

/// Makes sure `ca-client agent` runs for `out`: one that runs already takes the new mode
/// up by itself; else its systemd unit is started where systemd runs, else
/// `agent_start`. Returns what it started.
///
/// # Errors
/// The command's failure, or that no agent appeared within `timeout`.
pub async fn ensure_agent(
    out: &Path,
    agent_start: Option<&str>,
    timeout: Duration,
) -> Result<Option<Started>, String> {
    if let Some(pid) = crate::lock::AgentLock::holder(out) {
        tracing::info!(pid, "the agent runs: it takes guard mode up by itself");
        return Ok(None);
    }
    let started = match agent_start {
        Some(command) => {
            run(command, Some(out)).await?;
            Started::Command { pid: None }
        }
        None if systemd_running() => {
            run(
                &format!("systemctl enable {AGENT_UNIT} && systemctl restart {AGENT_UNIT}"),
                None,
            )
            .await?;
            Started::Unit
        }
        None => return Err(GuardFailure::NoAgentStart.to_string()),
    };
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(pid) = crate::lock::AgentLock::holder(out) {
            tracing::info!(pid, "agent started");
            return Ok(Some(match started {
                Started::Command { .. } => Started::Command { pid: Some(pid) },
                other => other,
            }));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no `ca-client agent --out {}` runs {}s after it was started (see {})",
                out.display(),
                timeout.as_secs(),
                out.join(START_LOG).display()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Where the output of `--agent-start` goes.
pub const START_LOG: &str = "agent-start.log";

/// Runs `command` through `sh -c`, its output into `out`'s [`START_LOG`] (never a pipe:
/// the agent it starts keeps its descriptors open), and waits for it to return.
async fn run(command: &str, out: Option<&Path>) -> Result<(), String> {
    tracing::info!(command, "starting the agent");
    let log = out.and_then(|o| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(o.join(START_LOG))
            .ok()
    });
    let (stdout, stderr) = match log.and_then(|f| f.try_clone().ok().map(|g| (f, g))) {
        Some((f, g)) => (Stdio::from(f), Stdio::from(g)),
        None => (Stdio::null(), Stdio::null()),
    };
    let status = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .status(),
    )
    .await
    .map_err(|_| {
        format!("`{command}` did not return within 60s (it must start the agent in the background)")
    })?
    .map_err(|e| format!("cannot run `{command}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{command}` exited with {status}"))
    }
}

/// Waits until nothing accepts connections on `listen` (the guard let it go).
///
/// # Errors
/// When something still does after `timeout`.
pub async fn released(listen: &EngineAddr, timeout: Duration) -> Result<(), String> {
    let addr = engine::dial_addr(listen).await.map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    while !engine::refuses(addr).await {
        if Instant::now() >= deadline {
            return Err(format!(
                "the guard still holds {listen} {}s after the node left guard mode (is the agent running an older version?)",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}
