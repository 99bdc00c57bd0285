//! What the CA does, independent of the wire: enroll with a token, authenticate a caller
//! by certificate, renew, revoke, manage tokens. The gRPC services translate protobuf to
//! these calls and [`Refusal`]s to statuses; the pure signing is `dtca_pki::Authority`.
//!
//! - [`authorize`]: who is calling, and whether their role may.
//! - [`issue`]: enroll, renew, and the server's own certificates.
//! - [`tokens`]: making, revoking and listing join tokens.
//! - [`revoke`]: revoking certificates, and the CRL.
//! - [`inventory`]: certificates, nodes and their engines, the audit log.
//! - [`refusal`]: why the CA said no.
//!
//! Every decision takes `now` as an argument.

mod authorize;
mod inventory;
mod issue;
mod refusal;
mod revoke;
mod tokens;

use std::sync::Arc;
use std::time::Duration;

use dtca_pki::authority::Authority;
use dtca_pki::inspect;
use dtca_pki::token::RootDigest;
use time::OffsetDateTime;

pub use authorize::{Caller, require};
pub use issue::Issued;
pub use refusal::Refusal;
pub use revoke::CRL_VALIDITY;
pub use tokens::{MAX_TOKEN_TTL, MAX_TOKEN_USES, TokenSpec};

use crate::channel::Hub;
use crate::metrics::Metrics;
use crate::store::Store;

/// Operator choices that shape decisions.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// How long after expiry a node may still renew with its expired certificate; zero
    /// means never (it re-enrolls with a token).
    pub renew_grace: Duration,
}

/// The CA's decisions, over an [`Authority`] and a [`Store`].
#[derive(Debug)]
pub struct Registrar {
    authority: Authority,
    root_digest: RootDigest,
    store: Arc<dyn Store>,
    rules: Rules,
    metrics: Arc<Metrics>,
    /// What the agent channel tells agents.
    hub: Arc<Hub>,
}

impl std::fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Registrar {
    /// Puts the pieces together.
    pub fn new(
        authority: Authority,
        store: Arc<dyn Store>,
        rules: Rules,
        metrics: Arc<Metrics>,
    ) -> Self {
        Registrar {
            root_digest: RootDigest::of(authority.root_der()),
            authority,
            store,
            rules,
            metrics,
            hub: Arc::new(Hub::default()),
        }
    }

    /// The agent channel's fan-out point.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The signing authority.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Metrics this registrar counts into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Root and intermediate as PEM.
    pub fn trust_bundle(&self) -> (String, String) {
        (
            inspect::certs_to_pem([self.authority.root_der()]),
            inspect::certs_to_pem([self.authority.intermediate_der()]),
        )
    }

    /// Whether the CA can sign and store right now (the health check).
    ///
    /// # Errors
    /// What failed.
    pub async fn self_test(&self, now: OffsetDateTime) -> Result<(), Refusal> {
        self.authority.self_test(now)?;
        self.store.ping().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
