//! What goes on a store's write queue. Both backends apply writes on writers of their own
//! (a thread for SQLite, tasks for PostgreSQL), whatever has queued up as one transaction:
//! a caller queues a [`Job`] and waits for its [`Outcome`].

use dtca_pki::Serial;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use crate::restart::{Decision, RestartLimits, SlotRequest};

use super::{AgentRecord, AuditEntry, CaUpdate, Issuance, RevokeTarget, StoreError, TokenRecord};

/// What a caller asked to write.
pub(super) enum Write {
    /// A certificate with its token use or renewal link and audit entries.
    Issue(Box<Issuance>),
    /// Anything else.
    Change(Box<Change>),
}

/// The writes other than issuances.
pub(super) enum Change {
    Token(TokenRecord, AuditEntry),
    RevokeToken(String, AuditEntry),
    Revoke {
        target: RevokeTarget,
        at: OffsetDateTime,
        reason: String,
        actor: String,
    },
    Engine {
        name: String,
        endpoint: String,
        serial: Serial,
        audit: AuditEntry,
    },
    MarkUsed {
        serial: Serial,
        at: OffsetDateTime,
    },
    Report(AgentRecord),
    Ca(CaUpdate),
    /// A restart slot asked for (the decision is made inside the transaction).
    RestartRequest {
        request: SlotRequest,
        limits: RestartLimits,
        actor: String,
        now: OffsetDateTime,
    },
    /// A restart slot given back.
    RestartRelease {
        name: String,
        audit: AuditEntry,
    },
}

impl Change {
    /// The token this change writes, if any.
    pub(super) fn token_id(&self) -> Option<&str> {
        match self {
            Change::Token(t, _) => Some(&t.id),
            Change::RevokeToken(id, _) => Some(id),
            Change::Revoke { .. }
            | Change::Engine { .. }
            | Change::MarkUsed { .. }
            | Change::Report(_)
            | Change::Ca(_)
            | Change::RestartRequest { .. }
            | Change::RestartRelease { .. } => None,
        }
    }
}

impl Write {
    /// A restart slot asked for.
    pub(super) fn restart_request(
        request: SlotRequest,
        limits: RestartLimits,
        actor: &str,
        now: OffsetDateTime,
    ) -> Self {
        Write::Change(Box::new(Change::RestartRequest {
            request,
            limits,
            actor: actor.to_string(),
            now,
        }))
    }

    /// A restart slot given back.
    pub(super) fn restart_release(name: &str, audit: AuditEntry) -> Self {
        Write::Change(Box::new(Change::RestartRelease {
            name: name.to_string(),
            audit,
        }))
    }
}

/// What a write gives back.
pub(super) enum Outcome {
    Done,
    Serials(Vec<Serial>),
    /// The CA material's new generation.
    Generation(u64),
    /// What a restart slot request got.
    Restart(Decision),
    /// Whether a release found a slot.
    Released(bool),
}

impl Outcome {
    /// The serials a revocation revoked (none for other writes).
    pub(super) fn into_serials(self) -> Vec<Serial> {
        match self {
            Outcome::Serials(serials) => serials,
            _ => Vec::new(),
        }
    }

    /// What a restart slot request got.
    pub(super) fn into_decision(self) -> Result<Decision, StoreError> {
        match self {
            Outcome::Restart(decision) => Ok(decision),
            _ => Err(StoreError::Corrupt(
                "a restart request came back without a decision".into(),
            )),
        }
    }

    /// Whether a release found a slot (false for other writes).
    pub(super) fn released(&self) -> bool {
        matches!(self, Outcome::Released(true))
    }

    /// The generation a CA update left (0 for other writes).
    pub(super) fn generation(&self) -> u64 {
        match self {
            Outcome::Generation(g) => *g,
            _ => 0,
        }
    }
}

/// A write and where its answer goes.
pub(super) struct Job {
    pub(super) write: Write,
    pub(super) reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

/// Queues `write` and waits for the writer's answer; `stopped` is the error when the
/// writer is gone.
pub(super) async fn submit(
    queue: &mpsc::Sender<Job>,
    write: Write,
    stopped: &str,
) -> Result<Outcome, StoreError> {
    let (reply, answer) = oneshot::channel();
    queue
        .send(Job { write, reply })
        .await
        .map_err(|_| StoreError::Unavailable(stopped.into()))?;
    answer
        .await
        .map_err(|_| StoreError::Unavailable(stopped.into()))?
}
