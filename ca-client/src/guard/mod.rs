//! Guard mode: the agent serves mutual TLS in front of dockerd's unix socket.
//!
//! - [`policy`]: what an operator's access level lets through, by method and path.
//! - [`audit`]: the per-request audit log on the node, and its reader (`ca-client audit`).

pub(crate) mod audit;
pub(crate) mod policy;
