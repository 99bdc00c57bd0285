//! Restarting the engine, proving what it serves afterwards, and putting it back as it
//! was when that fails.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use dtca_common::bundle::Bundle;
use dtca_common::endpoint::EngineAddr;
use tokio::process::Command;
use tokio::time::Instant;

use super::alive::{Liveness, Watch};
use super::backup::Backup;
use super::{engine, tls_name};
use crate::error::{ClientError, EngineFailure};

/// How long the restart command may run.
const RESTART_TIMEOUT: Duration = Duration::from_secs(180);
/// How often the engine is asked again while it comes up.
const POLL: Duration = Duration::from_millis(200);

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
        tracing::info!(command, "restart command finished");
        return Ok(());
    }
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    let tail = last_chars(text.trim(), 300);
    if tail.is_empty() {
        Err(format!(
            "`{command}` exited with {} and printed nothing",
            out.status
        ))
    } else {
        Err(format!("`{command}` exited with {}: {tail}", out.status))
    }
}

/// The last `n` characters of `text`.
fn last_chars(text: &str, n: usize) -> &str {
    let start = text
        .char_indices()
        .rev()
        .nth(n.saturating_sub(1))
        .map_or(0, |(i, _)| i);
    &text[start..]
}

/// Waits until the engine serves `bundle`'s certificate over TLS at `listen`, then
/// checks what proves mutual TLS without a client certificate of its own (a node has
/// none a docker engine accepts): the engine asks for client certificates issued under
/// the cluster's root (its CA file is ours), refuses a client without one, and refuses
/// the node's own certificate as a client; then that the removed plain addresses refuse
/// connections and that the unix socket answers. With a `watch`, a dockerd that is gone
/// is noticed within [`super::alive::GRACE`] instead of at `timeout`.
///
/// With `guard`, the agent's guard serves `listen`: it answers the node's own certificate
/// a mutually-authenticated `/_ping` (forwarded to dockerd's socket) and nothing else, so
/// that ping is required instead of the refusal.
///
/// # Errors
/// What did not hold when `timeout` ran out, or that dockerd died (with its last lines).
pub async fn verify(
    listen: &EngineAddr,
    removed_tcp: &[EngineAddr],
    socket: &Path,
    bundle: &Bundle,
    timeout: Duration,
    watch: Option<&Watch>,
    guard: bool,
) -> Result<(), String> {
    let mut liveness = watch.map(Liveness::new);
    let leaf = bundle.leaf().map_err(|e| e.to_string())?;
    let name = tls_name(bundle).ok_or("the certificate has no DNS name or IP address to check")?;
    let addr = engine::dial_addr(listen).await.map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    let probe = loop {
        // A probe can hang (a port taken by a program that never answers TLS): the
        // engine's death is watched meanwhile.
        let probe = match liveness.as_mut() {
            Some(l) => tokio::select! {
                probe = engine::probe_tls(addr, &name, &bundle.roots, None) => probe,
                dead = l.until_dead() => return Err(dead),
            },
            None => engine::probe_tls(addr, &name, &bundle.roots, None).await,
        }
        .map_err(|e| e.to_string())?;
        let problem = match (&probe.served, &probe.answered) {
            (Some(served), _) if *served == leaf.serial => break probe,
            (Some(served), _) => format!(
                "the engine serves certificate {served}, not the new {}",
                leaf.serial
            ),
            (None, Err(e)) => e.to_string(),
            (None, Ok(())) => "the engine served no certificate".to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "no TLS answer with the new certificate at {listen} within {}s: {problem}",
                timeout.as_secs()
            ));
        }
        match liveness.as_mut() {
            Some(l) => {
                tokio::select! {
                    () = tokio::time::sleep(POLL) => {}
                    dead = l.until_dead() => return Err(dead),
                }
            }
            None => tokio::time::sleep(POLL).await,
        }
    };
    if probe.answered.is_ok() {
        return Err(format!("{listen} answers clients without a certificate"));
    }
    let asks_ours = bundle.roots.iter().any(|root| {
        dtca_pki::inspect::subject_der(root).is_some_and(|s| probe.asked_for.contains(&s))
    });
    if !asks_ours {
        return Err(format!(
            "{listen} does not ask for client certificates of this cluster's CA (its CA file is not the cluster's root)"
        ));
    }
    if guard {
        engine::probe_tls(addr, &name, &bundle.roots, Some(&bundle.client_identity()))
            .await
            .map_err(|e| e.to_string())?
            .answered
            .map_err(|e| {
                format!("a mutually-authenticated /_ping through the guard at {listen} failed: {e}")
            })?;
    } else if !leaf.client_auth
        && engine::probe_tls(addr, &name, &bundle.roots, Some(&bundle.client_identity()))
            .await
            .is_ok_and(|own| own.answered.is_ok())
    {
        return Err(format!(
            "{listen} accepts the node's own certificate as a docker client"
        ));
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

/// Waits until the restarted engine answers on `socket` and nothing accepts connections
/// on `closed` any more (its old TCP addresses, and in guard mode the address the guard
/// is to take): dockerd serves its unix socket only.
///
/// # Errors
/// What did not hold when `timeout` ran out, or that dockerd died.
pub async fn verify_socket_only(
    socket: &Path,
    closed: &[EngineAddr],
    timeout: Duration,
    watch: Option<&Watch>,
) -> Result<(), String> {
    let mut liveness = watch.map(Liveness::new);
    let deadline = Instant::now() + timeout;
    let check = || async {
        engine::ping_unix(socket)
            .await
            .map_err(|e| format!("the unix socket does not answer: {e}"))?;
        for addr in closed {
            let dial = engine::dial_addr(addr).await.map_err(|e| e.to_string())?;
            if !engine::refuses(dial).await {
                return Err(format!("{addr} still accepts connections"));
            }
        }
        Ok::<(), String>(())
    };
    loop {
        let problem = match check().await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "the engine is not on its unix socket only within {}s: {problem}",
                timeout.as_secs()
            ));
        }
        match liveness.as_mut() {
            Some(l) => {
                tokio::select! {
                    () = tokio::time::sleep(POLL) => {}
                    dead = l.until_dead() => return Err(dead),
                }
            }
            None => tokio::time::sleep(POLL).await,
        }
    }
}

/// Restores the backup, restarts if needed, and confirms the engine answers as before.
/// Returns what it did, for the user.
///
/// # Errors
/// What could not be restored, or how the engine fails to answer as before.
pub(super) async fn roll_back(
    backup: &Backup,
    restarted: bool,
    timeout: Duration,
) -> Result<String, String> {
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
                places.extend(m.plain_tcp.iter().map(ToString::to_string));
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
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// Finishes or undoes a switch that was interrupted (the process was killed): restores
/// the backup and restarts the engine. Returns what it did, if anything.
///
/// # Errors
/// [`EngineFailure::InterruptedSwitch`] when the rollback could not bring the engine back.
pub async fn recover_interrupted(
    backup_dir: &Path,
    timeout: Duration,
) -> Result<Option<String>, ClientError> {
    let Some(mut backup) = Backup::pending(backup_dir) else {
        return Ok(None);
    };
    if backup.manifest.owner_alive() {
        tracing::info!(pid = ?backup.manifest.pid, "a docker switch is under way; not touching it");
        return Ok(None);
    }
    tracing::warn!(started = %backup.manifest.started, "an earlier docker switch was interrupted; rolling it back");
    let how = roll_back(&backup, true, timeout)
        .await
        .map_err(EngineFailure::InterruptedSwitch)?;
    backup.finish()?;
    Ok(Some(how))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_a_long_output_is_kept_whole_characters() {
        assert_eq!(last_chars("abcdef", 3), "def");
        assert_eq!(last_chars("ab", 3), "ab");
        assert_eq!(last_chars("", 3), "");
        assert_eq!(last_chars("xé€", 2), "é€");
    }
}
