//! What the agents report over the agent channel, as the store keeps it.

use dtca_pki::Serial;
use time::OffsetDateTime;

/// What a node's agent last reported, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    /// Identity name of the node.
    pub name: String,
    /// The certificate it reported with.
    pub serial: Serial,
    /// When the CA received it.
    pub received_at: OffsetDateTime,
    /// What it said.
    pub state: AgentState,
}

/// A node's state as its agent sees it (the `AgentReport` of the wire contract), kept as
/// one JSON document.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AgentState {
    /// "native", "guard" or "none".
    pub mode: String,
    /// Whether the engine answered the agent's last check.
    pub engine_healthy: bool,
    /// Why not, when it did not.
    pub engine_error: String,
    /// Plain (unauthenticated) TCP addresses the engine still listens on.
    pub plain_listeners: Vec<String>,
    /// "manager", "worker" or "none".
    pub swarm_role: String,
    /// Engine version.
    pub engine_version: String,
    /// Agent version.
    pub agent_version: String,
    /// The node's own addresses.
    pub addresses: Vec<String>,
    /// Last certificate rotation, Unix seconds (0: none yet).
    pub last_rotation_unix: i64,
    /// Planned next renewal, Unix seconds (0: not planned).
    pub next_renewal_unix: i64,
    /// The last failure; empty when the last attempt succeeded.
    pub last_error: String,
    /// Digests of the roots the node trusts (its ca.pem).
    pub trusted_roots: Vec<String>,
    /// When the last engine restart went ahead without a restart slot, and why; empty
    /// when it had one.
    pub restart_without_slot: String,
    /// When the certificate in use expires, Unix seconds (0: not said).
    pub not_after_unix: i64,
    /// Why the last `enroll --docker` failed, until a switch succeeds; empty otherwise.
    pub failed_switch: String,
}
