//! Rolling restarts, the agent's half: before it restarts a native-mode engine for a
//! rotation it asks the CA for a restart slot (waiting as [`slot::step`] decides), keeps
//! the slot's lease while it restarts and verifies, and gives the slot back after.

use std::future::Future;
use std::time::Duration;

use dtca_common::Reason;
use dtca_common::bundle::Bundle;
use dtca_common::tls::ServerAddr;
use time::OffsetDateTime;
use tokio::sync::watch;

use super::slot::{self, Facts, Heard, Step};
use crate::error::ClientError;
use crate::state::DockerState;

/// How long one slot request may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Environment variable, for tests only: the agent says its engine manages the swarm of
/// this cluster ID, whatever the engine says (two engines of one host cannot easily be
/// two real managers of one swarm in a test).
pub(super) const INSECURE_TEST_SWARM_MANAGER_OF: &str = "DTCA_INSECURE_TEST_SWARM_MANAGER_OF";

/// One rotation's restart, taken in turn.
#[derive(Debug)]
pub(crate) struct Turn {
    /// How long a restart and its verify may take.
    pub(crate) docker_timeout: Duration,
    /// How long to wait for a slot while the CA cannot be reached.
    pub(crate) wait_limit: Duration,
    /// When the certificate in service expires.
    pub(crate) expires: OffsetDateTime,
}

impl Turn {
    /// The turn of a rotation under `opts`, of a certificate in service until `expires`.
    pub(super) fn new(opts: &super::AgentOptions, expires: OffsetDateTime) -> Self {
        Turn {
            docker_timeout: opts.docker_timeout,
            wait_limit: opts.restart_slot_wait,
            expires,
        }
    }

    /// Puts `new` into service on the engine `d` in turn: a slot first (asked for with
    /// `current`, the certificate in service), held while it rotates, given back after.
    /// Returns when and why it went ahead without a slot, if it did.
    ///
    /// # Errors
    /// As [`Asker::acquire`] and [`crate::docker::rotate`].
    pub(crate) async fn rotate(
        &self,
        addr: &ServerAddr,
        current: &Bundle,
        new: &Bundle,
        d: &DockerState,
        stopping: &mut watch::Receiver<bool>,
    ) -> Result<Option<String>, ClientError> {
        let info = crate::docker::engine::info_unix(&d.socket).await.ok();
        let asker = Asker {
            addr,
            bundle: current,
            manager_of: manager_of(info.as_ref()),
        };
        let now = OffsetDateTime::now_utc();
        let deadline = slot::deadline(now, self.expires, self.docker_timeout);
        let permit = asker.acquire(deadline, self.wait_limit, stopping).await?;
        let rotation = crate::docker::rotate(d, new, self.docker_timeout);
        match permit {
            Permit::Slot { lease } => {
                let rotated = asker.holding(lease, rotation).await;
                let outcome = match &rotated {
                    Ok(()) => "verified".to_string(),
                    Err(e) => format!("failed: {e}"),
                };
                asker.release(new, &outcome).await;
                rotated.map(|()| None)
            }
            Permit::Uncoordinated => rotation.await.map(|()| None),
            Permit::WithoutSlot(why) => {
                let at = dtca_pki::duration::timestamp(OffsetDateTime::now_utc());
                rotation.await.map(|()| Some(format!("{at}: {why}")))
            }
        }
    }
}

/// Whom the restart concerns: the CA, the credentials that ask, and the engine's seat.
pub(super) struct Asker<'a> {
    pub(super) addr: &'a ServerAddr,
    /// The certificate in service (the one the engine serves until the restart).
    pub(super) bundle: &'a Bundle,
    /// The swarm the engine manages, if it is a manager.
    pub(super) manager_of: Option<String>,
}

/// How the restart may go ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Permit {
    /// A slot, with its lease.
    Slot { lease: Duration },
    /// No coordination: the CA predates restart slots.
    Uncoordinated,
    /// No slot, for the reason given (the certificate in service was about to expire).
    WithoutSlot(String),
}

impl Asker<'_> {
    /// Waits for a slot, as [`slot::step`] decides, until one is granted, the
    /// certificate in service would expire, or a stop (`stopping` turns true).
    ///
    /// # Errors
    /// [`Reason::RestartSlotWaiting`] when the CA stayed unreachable for `wait_limit`
    /// (and the certificate does not need the restart yet), or a stop came first.
    pub(super) async fn acquire(
        &self,
        deadline: OffsetDateTime,
        wait_limit: Duration,
        stopping: &mut watch::Receiver<bool>,
    ) -> Result<Permit, ClientError> {
        let mut unreachable_since = None;
        let mut told = false;
        loop {
            let heard = self.ask().await;
            let now = OffsetDateTime::now_utc();
            match &heard {
                Heard::Failed(_) => unreachable_since = unreachable_since.or(Some(now)),
                _ => unreachable_since = None,
            }
            let facts = Facts {
                now,
                unreachable_since,
                deadline,
                wait_limit,
            };
            let wait = match slot::step(&heard, &facts) {
                Step::Restart { lease } => return Ok(Permit::Slot { lease }),
                Step::RestartUncoordinated => {
                    tracing::info!(
                        "the CA does not coordinate restarts (an older version); restarting"
                    );
                    return Ok(Permit::Uncoordinated);
                }
                Step::RestartWithoutSlot(why) => {
                    tracing::warn!(%why, "restarting the engine WITHOUT a restart slot");
                    return Ok(Permit::WithoutSlot(why));
                }
                Step::GiveUp(why) => {
                    return Err(ClientError::Refused {
                        reason: Reason::RestartSlotWaiting,
                        message: why,
                    });
                }
                Step::Wait(wait) => wait,
            };
            if !told {
                told = true;
                match &heard {
                    Heard::Queued { why, .. } => {
                        tracing::info!(%why, "waiting for a restart slot");
                    }
                    Heard::Failed(error) => {
                        tracing::warn!(%error, "cannot ask the CA for a restart slot; waiting");
                    }
                    Heard::Granted { .. } | Heard::Unsupported => {}
                }
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stopping.wait_for(|s| *s) => {
                    return Err(ClientError::Refused {
                        reason: Reason::RestartSlotWaiting,
                        message: "stopped while waiting for a restart slot; the renewed certificate was not put in service".into(),
                    });
                }
            }
        }
    }

    /// Runs `work` (the restart and its verify), renewing the slot's lease every third
    /// of it meanwhile.
    pub(super) async fn holding<T>(&self, lease: Duration, work: impl Future<Output = T>) -> T {
        let keep = async {
            let every = (lease / 3).max(Duration::from_secs(1));
            loop {
                tokio::time::sleep(every).await;
                if let Heard::Failed(error) = self.ask().await {
                    tracing::warn!(%error, "could not renew the restart slot's lease");
                }
            }
        };
        tokio::select! {
            out = work => out,
            never = keep => never,
        }
    }

    /// Gives the slot back, saying how the restart ended; a failure only leaves the slot
    /// to its lease.
    pub(super) async fn release(&self, bundle: &Bundle, outcome: &str) {
        let released = tokio::time::timeout(
            CALL_TIMEOUT,
            crate::ca::release_restart(self.addr, bundle, outcome),
        )
        .await;
        match released {
            Ok(Ok(true)) => tracing::info!(%outcome, "restart slot given back"),
            Ok(Ok(false)) => {
                tracing::warn!("the restart slot had already expired on the CA (lease ran out)");
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not give the restart slot back; it expires with its lease");
            }
            Err(_) => tracing::warn!(
                "the CA did not answer the slot's release; it expires with its lease"
            ),
        }
    }

    async fn ask(&self) -> Heard {
        let answer = tokio::time::timeout(
            CALL_TIMEOUT,
            crate::ca::request_restart(self.addr, self.bundle, self.manager_of.as_deref()),
        )
        .await;
        match answer {
            Err(_) => Heard::Failed("the CA did not answer in time".into()),
            Ok(Err(e)) => Heard::Failed(e.to_string()),
            Ok(Ok(None)) => Heard::Unsupported,
            Ok(Ok(Some(reply))) if reply.granted => Heard::Granted {
                lease: secs(reply.lease_seconds),
            },
            Ok(Ok(Some(reply))) => Heard::Queued {
                retry_after: secs(reply.retry_after_seconds).max(Duration::from_secs(1)),
                why: reply.waiting_for,
            },
        }
    }
}

/// The swarm `info` says the engine manages, if it is a manager (or, in tests, the one
/// [`INSECURE_TEST_SWARM_MANAGER_OF`] names).
pub(super) fn manager_of(info: Option<&crate::docker::engine::EngineInfo>) -> Option<String> {
    if let Ok(cluster) = std::env::var(INSECURE_TEST_SWARM_MANAGER_OF)
        && !cluster.is_empty()
    {
        return Some(cluster);
    }
    let info = info?;
    (info.swarm && info.manager && !info.cluster_id.is_empty()).then(|| info.cluster_id.clone())
}

fn secs(n: i64) -> Duration {
    Duration::from_secs(u64::try_from(n).unwrap_or(0))
}
