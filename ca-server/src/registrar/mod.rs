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
pub mod fleet;
mod inventory;
mod issue;
mod lifecycle;
mod refusal;
mod restart;
mod revoke;
mod tokens;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use dtca_pki::authority::Authority;
use dtca_pki::inspect;
use time::OffsetDateTime;

pub use authorize::{Caller, require};
pub use inventory::{current_identities, forked};
pub use issue::Issued;
pub use lifecycle::CaReport;
pub use refusal::Refusal;
pub use revoke::CRL_VALIDITY;
pub use tokens::{MAX_TOKEN_TTL, MAX_TOKEN_USES, TokenAllowance, TokenSpec};

use crate::channel::Hub;
use crate::lifecycle::{CaState, Custody};
use crate::metrics::Metrics;
use crate::store::Store;
use fleet::Fleet;

/// Operator choices that shape decisions.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// How long after expiry a node may still renew with its expired certificate; zero
    /// means never (it re-enrolls with a token).
    pub renew_grace: Duration,
    /// How many native-mode engines may restart at once, and a slot's lease.
    pub restarts: crate::restart::RestartLimits,
}

/// The CA's decisions, over the CA's certificates ([`CaState`]) and a [`Store`].
#[derive(Debug)]
pub struct Registrar {
    /// Replaced as a whole when the CA's certificates change (another replica prepared an
    /// intermediate, a root rotation started or finished).
    ca: RwLock<Arc<CaState>>,
    /// The passphrase and root keys, when this registrar follows the store (`serve`).
    custody: Option<Arc<Custody>>,
    store: Arc<dyn Store>,
    rules: Rules,
    metrics: Arc<Metrics>,
    /// What the agent channel tells agents.
    hub: Arc<Hub>,
    /// The fleet view's settings and gauges.
    fleet: Arc<Fleet>,
}

impl std::fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Registrar {
    /// Puts the pieces together, for a CA of one root and one intermediate.
    ///
    /// # Panics
    /// Never for an [`Authority`]: its pieces were checked to fit when it was made.
    pub fn new(
        authority: Authority,
        store: Arc<dyn Store>,
        rules: Rules,
        metrics: Arc<Metrics>,
    ) -> Self {
        let state = CaState::single(authority)
            .unwrap_or_else(|e| unreachable!("an authority is a lineage of one: {e}"));
        Self::with_state(state, None, store, rules, metrics)
    }

    /// Puts the pieces together over the CA's certificates as read from the store.
    pub fn with_state(
        state: CaState,
        custody: Option<Arc<Custody>>,
        store: Arc<dyn Store>,
        rules: Rules,
        metrics: Arc<Metrics>,
    ) -> Self {
        Registrar {
            ca: RwLock::new(Arc::new(state)),
            custody,
            store,
            rules,
            metrics,
            hub: Arc::new(Hub::default()),
            fleet: Arc::new(Fleet::default()),
        }
    }

    /// The same registrar with the fleet view's settings.
    #[must_use]
    pub fn with_fleet(mut self, fleet: Fleet) -> Self {
        self.fleet = Arc::new(fleet);
        self
    }

    /// The fleet view's settings and gauges.
    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    /// The agent channel's fan-out point.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The CA's certificates as they are now.
    pub fn ca(&self) -> Arc<CaState> {
        self.ca
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Replaces the CA's certificates (the lifecycle driver, after the store changed).
    pub fn install(&self, state: CaState) {
        let state = Arc::new(state);
        match self.ca.write() {
            Ok(mut c) => *c = state,
            Err(e) => *e.into_inner() = state,
        }
    }

    /// The passphrase, root keys and lifetimes, when this registrar follows the store.
    pub fn custody(&self) -> Option<&Arc<Custody>> {
        self.custody.as_ref()
    }

    /// The cluster name.
    pub fn cluster(&self) -> String {
        self.ca().cluster().to_string()
    }

    /// The authority that signs at `now`.
    ///
    /// # Errors
    /// [`Refusal::NoIntermediate`] when none can.
    pub fn signer(&self, now: OffsetDateTime) -> Result<Arc<Authority>, Refusal> {
        Ok(self.ca().signer(now)?)
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Metrics this registrar counts into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Every trusted root as PEM (oldest first), and the intermediate signing at `now`.
    pub fn trust_bundle(&self, now: OffsetDateTime) -> (String, String) {
        let ca = self.ca();
        let roots = ca.roots();
        let intermediate = ca
            .signer(now)
            .map(|a| inspect::certs_to_pem([a.intermediate_der()]))
            .unwrap_or_default();
        (
            inspect::certs_to_pem(roots.iter().map(Vec::as_slice)),
            intermediate,
        )
    }

    /// Whether the CA can sign and store right now (the health check).
    ///
    /// # Errors
    /// What failed.
    pub async fn self_test(&self, now: OffsetDateTime) -> Result<(), Refusal> {
        self.signer(now)?.self_test(now)?;
        self.store.ping().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
