//! Restart slots: how many native-mode engines may restart at once, decided from the
//! slots held and the request alone (no store, no clock of its own).
//!
//! An agent asks for a slot before it restarts dockerd for a rotation and gives it back
//! after the verify (or the rollback). A slot is a lease: the agent renews it while it
//! restarts (asking again renews the slot it holds), and a slot whose lease ran out is
//! reclaimed by the next decision, so an agent that vanished holds nothing for long.
//!
//! The store applies [`decide`] (through `store::slots`) inside one transaction (SQLite's single writer; on
//! PostgreSQL under a transaction-scoped advisory lock), so replicas never grant more
//! than the limits between them.

use std::time::Duration;

use time::OffsetDateTime;

/// Default for `serve --max-concurrent-restarts`.
pub const DEFAULT_MAX_CONCURRENT: u32 = 2;
/// Default lease of a slot: the agent renews it every third of it while it restarts.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(90);
/// Shortest lease `serve` accepts: the agent renews every third of it.
pub const MIN_RESTART_LEASE: Duration = Duration::from_secs(3);

/// What the operator allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartLimits {
    /// Engines restarting at once, whatever their swarm (at least 1). Swarm managers of
    /// one swarm are further held to one at a time.
    pub max_concurrent: u32,
    /// How long a slot lasts without being renewed.
    pub lease: Duration,
}

impl Default for RestartLimits {
    fn default() -> Self {
        RestartLimits {
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            lease: DEFAULT_LEASE,
        }
    }
}

impl RestartLimits {
    /// How long a queued agent should wait before it asks again: soon enough to take a
    /// slot freed meanwhile, seldom enough that a waiting fleet costs the CA little.
    pub fn retry_after(&self) -> Duration {
        (self.lease / 6).clamp(Duration::from_secs(1), Duration::from_secs(10))
    }
}

/// A swarm manager's seat: its swarm's cluster ID (`docker info`'s `Swarm.Cluster.ID`).
/// Workers and engines outside a swarm have none.
pub type ManagerOf = Option<String>;

/// One agent's request for a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRequest {
    /// The node's identity name: one slot per node.
    pub name: String,
    /// The certificate that asked (for the audit).
    pub serial: String,
    /// The swarm it manages, if it is a manager.
    pub manager_of: ManagerOf,
}

/// A slot held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The node's identity name.
    pub name: String,
    /// The certificate that took it.
    pub serial: String,
    /// The swarm it manages, if it is a manager.
    pub manager_of: ManagerOf,
    /// When it was granted.
    pub granted_at: OffsetDateTime,
    /// When the lease runs out unless renewed.
    pub expires_at: OffsetDateTime,
}

impl Slot {
    /// Whether the lease has run out at `now`.
    pub fn expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at <= now
    }
}

/// What the CA answers a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The requester already held a slot: its lease now runs to the new end.
    Renewed { expires_at: OffsetDateTime },
    /// A new slot.
    Granted { expires_at: OffsetDateTime },
    /// No slot now; ask again later.
    Queued(Wait),
}

/// Why a request waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// Every slot is taken (by these nodes).
    Full { holders: Vec<String> },
    /// Another manager of the same swarm is restarting.
    SwarmManager { cluster: String, holder: String },
}

impl std::fmt::Display for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Wait::Full { holders } => write!(
                f,
                "{} restart(s) in progress ({})",
                holders.len(),
                holders.join(", ")
            ),
            Wait::SwarmManager { cluster, holder } => write!(
                f,
                "{holder}, another manager of swarm {cluster}, is restarting"
            ),
        }
    }
}

/// Decides `request` against the live slots `held` (expired ones already taken out).
pub fn decide(
    held: &[Slot],
    request: &SlotRequest,
    limits: &RestartLimits,
    now: OffsetDateTime,
) -> Decision {
    let expires_at = now + limits.lease;
    if held.iter().any(|s| s.name == request.name) {
        return Decision::Renewed { expires_at };
    }
    if let Some(cluster) = &request.manager_of
        && let Some(other) = held.iter().find(|s| s.manager_of.as_ref() == Some(cluster))
    {
        return Decision::Queued(Wait::SwarmManager {
            cluster: cluster.clone(),
            holder: other.name.clone(),
        });
    }
    if held.len() >= usize::try_from(limits.max_concurrent.max(1)).unwrap_or(usize::MAX) {
        return Decision::Queued(Wait::Full {
            holders: held.iter().map(|s| s.name.clone()).collect(),
        });
    }
    Decision::Granted { expires_at }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + secs).unwrap()
    }

    fn slot(name: &str, manager_of: Option<&str>) -> Slot {
        Slot {
            name: name.into(),
            serial: format!("{name}-serial"),
            manager_of: manager_of.map(Into::into),
            granted_at: at(0),
            expires_at: at(90),
        }
    }

    fn request(name: &str, manager_of: Option<&str>) -> SlotRequest {
        SlotRequest {
            name: name.into(),
            serial: format!("{name}-serial"),
            manager_of: manager_of.map(Into::into),
        }
    }

    #[test]
    fn slots_are_granted_up_to_the_limit_then_queued() {
        let limits = RestartLimits {
            max_concurrent: 2,
            lease: Duration::from_secs(60),
        };
        let now = at(10);
        let lease_end = at(70);
        let cases: &[(&[Slot], SlotRequest, Decision)] = &[
            (
                &[],
                request("a", None),
                Decision::Granted {
                    expires_at: lease_end,
                },
            ),
            (
                &[slot("a", None)],
                request("b", None),
                Decision::Granted {
                    expires_at: lease_end,
                },
            ),
            (
                &[slot("a", None), slot("b", None)],
                request("c", None),
                Decision::Queued(Wait::Full {
                    holders: vec!["a".into(), "b".into()],
                }),
            ),
            // Asking again renews, even when full.
            (
                &[slot("a", None), slot("b", None)],
                request("b", None),
                Decision::Renewed {
                    expires_at: lease_end,
                },
            ),
        ];
        for (held, req, want) in cases {
            assert_eq!(&decide(held, req, &limits, now), want, "{held:?} {req:?}");
        }
    }

    #[test]
    fn two_managers_of_one_swarm_never_hold_slots_together() {
        let limits = RestartLimits {
            max_concurrent: 5,
            ..RestartLimits::default()
        };
        let now = at(10);
        let held = [slot("m1", Some("swarm-a")), slot("w1", None)];
        assert_eq!(
            decide(&held, &request("m2", Some("swarm-a")), &limits, now),
            Decision::Queued(Wait::SwarmManager {
                cluster: "swarm-a".into(),
                holder: "m1".into()
            })
        );
        // A manager of another swarm, and a worker (of any swarm), go ahead.
        assert!(matches!(
            decide(&held, &request("m3", Some("swarm-b")), &limits, now),
            Decision::Granted { .. }
        ));
        assert!(matches!(
            decide(&held, &request("w2", None), &limits, now),
            Decision::Granted { .. }
        ));
    }

    #[test]
    fn a_limit_of_zero_still_lets_one_restart() {
        let limits = RestartLimits {
            max_concurrent: 0,
            ..RestartLimits::default()
        };
        assert!(matches!(
            decide(&[], &request("a", None), &limits, at(0)),
            Decision::Granted { .. }
        ));
        assert!(matches!(
            decide(&[slot("a", None)], &request("b", None), &limits, at(0)),
            Decision::Queued(_)
        ));
    }

    #[test]
    fn queued_agents_ask_again_within_a_bounded_delay() {
        for (lease, want) in [(90, 10), (30, 5), (3, 1)] {
            let limits = RestartLimits {
                max_concurrent: 1,
                lease: Duration::from_secs(lease),
            };
            assert_eq!(limits.retry_after(), Duration::from_secs(want), "{lease}");
        }
    }
}
