//! One renewal put into service, the same way for the agent and for `ca-client renew`:
//! renew (new key), rotate the engine onto the new pair on a switched node (write, swap,
//! restart, verify, fall back), write the node's files, plan the next renewal, tell the
//! CA where the engine listens.
//!
//! While an agent runs for a state directory, `ca-client renew` does not rotate beside
//! it: it hands the renewal to the agent ([`crate::lock::AgentLock`], SIGUSR1) and waits for the new
//! certificate, so there is only ever one rotation of an engine at a time, and the
//! agent's stream to the CA follows the new certificate.

use std::path::Path;
use std::time::Duration;

use dtca_common::bundle::{Bundle, Layout};
use dtca_common::tls::ServerAddr;
use dtca_pki::duration;
use time::OffsetDateTime;
use tokio::sync::watch;

use super::rolling::Turn;
use crate::enroll::{self, Obtained, renew_with};
use crate::error::{ClientError, HandOff};
use crate::lock::AgentLock;
use crate::sans::Sans;
use crate::state::{ClientState, EngineMode};

/// Renews with `current` (for `names`, its own when `None`) and puts the result in
/// service: the engine of a switched node rotates onto it first, then the node's files
/// and `state` (last renewal, the next one planned) are written, and the CA hears the
/// engine's address.
///
/// # Errors
/// [`ClientError`]: the CA's refusal (nothing changed), or a rotation that failed (the
/// engine went back to its previous pair; the files keep the current one).
pub(crate) async fn put_in_service(
    out: &Path,
    state: &mut ClientState,
    addr: &ServerAddr,
    current: &Bundle,
    names: Option<Sans>,
    engine: InTurn<'_>,
) -> Result<Bundle, ClientError> {
    let leaf = current.leaf()?;
    let sans = names.unwrap_or(Sans {
        dns: leaf.dns_names.clone(),
        ips: leaf.ip_addresses.clone(),
    });
    let new = renew_with(addr, current, &sans, state.key_type).await?;
    // A guard-mode engine is never restarted: the guard serves the new pair (the agent
    // reloads it, and notices new files on disk).
    if let Some(d) = state
        .docker
        .as_ref()
        .filter(|d| d.mode == EngineMode::Native)
    {
        let went = engine.turn.rotate(addr, current, &new, d, engine.stopping);
        state.restart_without_slot = went.await?;
    }
    let info = new.leaf()?;
    state.server = addr.to_string();
    state.last_renewal = Some(duration::timestamp(OffsetDateTime::now_utc()));
    state.last_error = None;
    // The plan for the new certificate is on disk before the certificate is: whoever
    // sees the new certificate (`status`, a waiting `renew`) sees when it renews.
    state.next_renewal = None;
    state.planned_renewal(&info, out);
    enroll::write(out, &new, state)?;
    if let Some(d) = &state.docker
        && let Err(e) = crate::ca::report_engine(addr, &new, &d.advertise).await
    {
        tracing::warn!(error = %e, "could not report the engine address to the CA");
    }
    Ok(new)
}

/// How a switched engine's restart is taken in turn: a restart slot from the CA first
/// (rolling restarts), and what ends a wait for one.
#[derive(Debug)]
pub(crate) struct InTurn<'a> {
    /// The rotation's turn (timeouts, how long to wait, the expiry in service).
    pub(crate) turn: &'a Turn,
    /// True once a stop is requested.
    pub(crate) stopping: &'a mut watch::Receiver<bool>,
}

/// How `ca-client renew` got its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Renewed here (no agent runs for the state directory).
    Here,
    /// The running agent (this pid) renewed when asked.
    Agent(u32),
}

/// `ca-client renew`: hands the renewal to the agent running for `out` when there is one,
/// else renews here and puts the new certificate in service (rotating a switched engine).
///
/// # Errors
/// [`ClientError`]; [`HandOff`] when the agent did not renew in time or failed.
pub async fn renew_now(
    out: &Path,
    server: Option<&str>,
    docker_timeout: Duration,
) -> Result<(Obtained, Via), ClientError> {
    let mut state = ClientState::load(out)?;
    enroll::private_out(out)?;
    let current = Bundle::load(out, Layout::CLIENT)?;
    if let Some(pid) = AgentLock::holder(out) {
        // The agent renews with its own settings; a --server given here is for it to use
        // on its next start, not now.
        let before = current.leaf()?.serial;
        let asked = OffsetDateTime::now_utc();
        ask_agent(pid)?;
        // A rotation restarts the engine twice at worst (the new pair, then back).
        let patience = docker_timeout * 2 + Duration::from_secs(30);
        let obtained = wait_for_agent(out, &before, asked, pid, patience).await?;
        return Ok((obtained, Via::Agent(pid)));
    }
    let addr = ServerAddr::parse(server.unwrap_or(&state.server))?;
    // The engine's restart takes its turn as the agent's would, waiting for a slot for
    // as long as the agent would; Ctrl-C ends the command, and with it the wait.
    let turn = Turn {
        docker_timeout,
        wait_limit: crate::agent::slot::DEFAULT_WAIT_LIMIT,
        expires: current.leaf()?.not_after,
    };
    let (_never, mut stopping) = watch::channel(false);
    let engine = InTurn {
        turn: &turn,
        stopping: &mut stopping,
    };
    let new = put_in_service(out, &mut state, &addr, &current, None, engine).await?;
    let info = new.leaf()?;
    Ok((
        Obtained {
            bundle: new,
            info,
            state,
            left_out: Vec::new(),
        },
        Via::Here,
    ))
}

/// SIGUSR1 to the agent: renew now.
fn ask_agent(pid: u32) -> Result<(), ClientError> {
    let target = i32::try_from(pid).map_err(|_| HandOff::Signal {
        pid,
        detail: "not a pid".into(),
    })?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(target),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .map_err(|e| {
        HandOff::Signal {
            pid,
            detail: e.to_string(),
        }
        .into()
    })
}

/// Waits until the agent has written a certificate other than `before` (done), or
/// recorded a failure after `asked` (failed), for at most `patience`.
async fn wait_for_agent(
    out: &Path,
    before: &dtca_pki::Serial,
    asked: OffsetDateTime,
    pid: u32,
    patience: Duration,
) -> Result<Obtained, ClientError> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        if let Ok(bundle) = Bundle::load(out, Layout::CLIENT)
            && let Ok(info) = bundle.leaf()
            && info.serial != *before
        {
            let state = ClientState::load(out)?;
            return Ok(Obtained {
                bundle,
                info,
                state,
                left_out: Vec::new(),
            });
        }
        if let Ok(state) = ClientState::load(out)
            && let Some((Some(at), error)) = state.last_failure()
            && at >= asked.replace_nanosecond(0).unwrap_or(asked)
        {
            return Err(HandOff::Failed {
                pid,
                error: error.to_string(),
            }
            .into());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(HandOff::Timeout {
                pid,
                waited: patience,
            }
            .into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
