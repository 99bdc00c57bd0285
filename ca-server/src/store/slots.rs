//! A restart slot request as both backends apply it, inside their one transaction: the
//! expired slots reclaimed, [`restart::decide`], and the audit lines of both.

use time::OffsetDateTime;

use super::{AuditEntry, AuditKind};
use crate::restart::{self, Decision, RestartLimits, Slot, SlotRequest};

/// What one decision changes in the store: the expired slots to take out, the decision,
/// and the audit lines (every reclaim, every grant). Both backends apply it as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlotChange {
    /// Slots whose lease ran out: deleted.
    pub(crate) expired: Vec<Slot>,
    /// What the request gets.
    pub(crate) decision: Decision,
    /// The slot to write when the decision grants or renews.
    pub(crate) slot: Option<Slot>,
    /// Audit lines, in order.
    pub(crate) audit: Vec<AuditEntry>,
}

/// Reclaims the expired slots among `all`, then decides `request` against the rest;
/// `actor` is the caller's identity URI.
pub(crate) fn change(
    all: Vec<Slot>,
    request: &SlotRequest,
    limits: &RestartLimits,
    actor: &str,
    now: OffsetDateTime,
) -> SlotChange {
    let (expired, live): (Vec<Slot>, Vec<Slot>) = all.into_iter().partition(|s| s.expired(now));
    let mut audit: Vec<AuditEntry> = expired
        .iter()
        .map(|s| {
            AuditEntry::new(
                now,
                AuditKind::RestartExpire,
                "ca-server",
                s.name.clone(),
                format!(
                    "the restart slot's lease ended at {} without a release; reclaimed",
                    dtca_pki::duration::timestamp(s.expires_at)
                ),
            )
        })
        .collect();
    let decision = restart::decide(&live, request, limits, now);
    let slot = match &decision {
        Decision::Granted { expires_at } | Decision::Renewed { expires_at } => Some(Slot {
            name: request.name.clone(),
            serial: request.serial.clone(),
            manager_of: request.manager_of.clone(),
            granted_at: live
                .iter()
                .find(|s| s.name == request.name)
                .map_or(now, |s| s.granted_at),
            expires_at: *expires_at,
        }),
        Decision::Queued(_) => None,
    };
    if let Decision::Granted { expires_at } = &decision {
        let seat = match &request.manager_of {
            Some(cluster) => format!("manager of swarm {cluster}; "),
            None => String::new(),
        };
        audit.push(AuditEntry::new(
            now,
            AuditKind::RestartGrant,
            actor,
            request.name.clone(),
            format!(
                "{seat}serial {}; {} of {} slots; lease until {}",
                request.serial,
                live.len() + 1,
                limits.max_concurrent.max(1),
                dtca_pki::duration::timestamp(*expires_at)
            ),
        ));
    }
    SlotChange {
        expired,
        decision,
        slot,
        audit,
    }
}
