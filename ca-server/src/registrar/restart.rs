//! Restart slots for the nodes' agents: the caller's slot asked for, renewed, given back;
//! how many restarts are in progress. The decision itself is [`crate::restart::decide`].

use dtca_pki::identity::Role;
use time::OffsetDateTime;

use super::{Caller, Refusal, Registrar};
use crate::restart::{Decision, RestartLimits, SlotRequest};
use crate::store::{AuditEntry, AuditKind};

/// Longest swarm cluster ID accepted (Docker's are 25 characters).
const MAX_CLUSTER_ID: usize = 128;

impl Registrar {
    /// The operator's restart limits.
    pub fn restart_limits(&self) -> RestartLimits {
        self.rules.restarts
    }

    /// Grants, renews or queues the calling node's restart slot; `manager_of` is the
    /// swarm it manages, if any.
    ///
    /// # Errors
    /// [`Refusal::RoleNotAllowed`] for callers other than nodes,
    /// [`Refusal::InvalidArgument`] for an implausible cluster ID, [`Refusal::Store`]
    /// when the store fails.
    pub async fn request_restart(
        &self,
        caller: &Caller,
        manager_of: Option<String>,
        now: OffsetDateTime,
    ) -> Result<Decision, Refusal> {
        node_only(caller, "ask for a restart slot")?;
        if let Some(cluster) = &manager_of
            && (cluster.len() > MAX_CLUSTER_ID
                || !cluster
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-'))
        {
            return Err(Refusal::InvalidArgument(format!(
                "a swarm cluster ID is at most {MAX_CLUSTER_ID} letters, digits and dashes"
            )));
        }
        let request = SlotRequest {
            name: caller.identity.name.clone(),
            serial: caller.serial.to_string(),
            manager_of,
        };
        let decision = self
            .store
            .request_restart(request, self.rules.restarts, &caller.identity.uri(), now)
            .await?;
        match &decision {
            Decision::Granted { .. } => {
                tracing::info!(node = %caller.identity.name, "restart slot granted");
            }
            Decision::Renewed { .. } => {}
            Decision::Queued(why) => {
                tracing::debug!(node = %caller.identity.name, %why, "restart slot queued");
            }
        }
        Ok(decision)
    }

    /// Gives the calling node's slot back; false when it held none.
    ///
    /// # Errors
    /// As [`Registrar::request_restart`].
    pub async fn release_restart(
        &self,
        caller: &Caller,
        outcome: &str,
        now: OffsetDateTime,
    ) -> Result<bool, Refusal> {
        node_only(caller, "give a restart slot back")?;
        let outcome: String = outcome.chars().take(200).collect();
        let audit = AuditEntry::new(
            now,
            AuditKind::RestartRelease,
            caller.identity.uri(),
            caller.identity.name.clone(),
            if outcome.is_empty() {
                "released".to_string()
            } else {
                format!("released: {outcome}")
            },
        );
        let released = self
            .store
            .release_restart(&caller.identity.name, audit)
            .await?;
        if released {
            tracing::info!(node = %caller.identity.name, %outcome, "restart slot released");
        }
        Ok(released)
    }

    /// How many engines are restarting now (slots held, leases not run out): for the
    /// fleet metrics.
    ///
    /// # Errors
    /// [`Refusal::Store`] when the store fails.
    pub async fn restarts_in_progress(&self, now: OffsetDateTime) -> Result<usize, Refusal> {
        Ok(self.store.restarts_in_progress(now).await?)
    }
}

fn node_only(caller: &Caller, action: &'static str) -> Result<(), Refusal> {
    if caller.identity.role == Role::Node {
        Ok(())
    } else {
        Err(Refusal::RoleNotAllowed {
            role: caller.identity.role,
            action,
        })
    }
}
