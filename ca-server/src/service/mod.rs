//! The gRPC services: translate between protobuf and the registrar, nothing more.
//!
//! - [`ca`]: `dtca.v1.Ca`, for every caller.
//! - [`admin`]: `dtca.v1.Admin`, for callers with an admin certificate.
//! - [`lifecycle`]: the CA lifecycle's answers (`ca status`, rotations) as protobuf.
//! - [`status`]: the one place where refusals become gRPC statuses.

pub mod admin;
pub mod ca;
pub mod lifecycle;
pub mod status;

use std::future::Future;
use std::sync::Arc;
use tokio::time::Instant;

use dtca_pki::identity::Role;
use dtca_proto::v1;
use time::OffsetDateTime;
use tonic::{Request, Status};

use crate::metrics::Rpc;
use crate::registrar::{Caller, Refusal, Registrar};
use crate::tls::PeerInfo;

/// Largest request the services decode (a CSR is under 1 KiB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Shared by both services: the registrar and request bookkeeping.
#[derive(Debug, Clone)]
pub struct Context {
    registrar: Arc<Registrar>,
}

impl Context {
    /// Wraps a registrar.
    pub fn new(registrar: Arc<Registrar>) -> Self {
        Context { registrar }
    }

    /// Runs one call: times it, counts and logs a refusal, and maps it to a status.
    async fn call<T, F>(
        &self,
        rpc: Rpc,
        method: &'static str,
        peer: Option<PeerInfo>,
        work: F,
    ) -> Result<T, Status>
    where
        F: Future<Output = Result<T, Refusal>>,
    {
        let started = Instant::now();
        let result = work.await;
        let metrics = self.registrar.metrics();
        metrics.observe(rpc, started.elapsed());
        result.map_err(|refusal| {
            let reason = refusal.reason();
            metrics.refused(reason);
            let remote = peer
                .and_then(|p| p.remote)
                .map(|a| a.to_string())
                .unwrap_or_default();
            match reason {
                dtca_common::Reason::Internal | dtca_common::Reason::StoreUnavailable => {
                    tracing::error!(method, %remote, %reason, error = %refusal, "request failed");
                }
                // The store logs these once, when its disk fills or its file is found
                // damaged: a line per refused request could fill that disk further.
                dtca_common::Reason::StoreFull | dtca_common::Reason::StoreCorrupt => {
                    tracing::debug!(method, %remote, %reason, error = %refusal, "request failed");
                }
                _ => tracing::info!(method, %remote, %reason, error = %refusal, "request refused"),
            }
            status::of(&refusal)
        })
    }

    /// The authenticated caller of a request, by its client certificate.
    async fn caller(&self, peer: Option<&PeerInfo>, allow_grace: bool) -> Result<Caller, Refusal> {
        let chain = peer.and_then(|p| p.chain.as_deref()).map(Vec::as_slice);
        self.registrar
            .authenticate(chain, OffsetDateTime::now_utc(), allow_grace)
            .await
    }
}

fn peer<T>(request: &Request<T>) -> Option<PeerInfo> {
    request.extensions().get::<PeerInfo>().cloned()
}

/// Protobuf role to domain role.
pub fn role_from_proto(value: i32) -> Option<Role> {
    match v1::Role::try_from(value).ok()? {
        v1::Role::Node => Some(Role::Node),
        v1::Role::Operator => Some(Role::Operator),
        v1::Role::Admin => Some(Role::Admin),
        v1::Role::Ca | v1::Role::Unspecified => None,
    }
}

/// Domain role to protobuf role.
pub fn role_to_proto(role: Role) -> v1::Role {
    match role {
        Role::Node => v1::Role::Node,
        Role::Operator => v1::Role::Operator,
        Role::Admin => v1::Role::Admin,
        Role::Ca => v1::Role::Ca,
    }
}

/// A role's word (`node`, `operator`, `admin`, `ca`), `-` for none.
pub fn role_name(role: i32) -> &'static str {
    match v1::Role::try_from(role) {
        Ok(v1::Role::Node) => "node",
        Ok(v1::Role::Operator) => "operator",
        Ok(v1::Role::Admin) => "admin",
        Ok(v1::Role::Ca) => "ca",
        _ => "-",
    }
}

/// A time in JSON output: RFC 3339 in UTC (`2026-12-03T01:11:36Z`), `null` for none (0).
pub fn rfc3339(unix: i64) -> serde_json::Value {
    if unix == 0 {
        return serde_json::Value::Null;
    }
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .map_or(serde_json::Value::Null, serde_json::Value::String)
}

/// Unix seconds as the CLI prints times (`2026-12-07 12:00:00Z`).
pub fn timestamp(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second]Z"
            ))
            .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}
