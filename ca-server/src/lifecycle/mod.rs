//! The CA's own lifecycle on the server: which intermediate signs, which roots are
//! trusted, the next intermediate made ahead of time, and the root rotation.
//!
//! - this file: [`CaState`], the CA's certificates as the registrar uses them (the
//!   lineage, and a signing authority for every intermediate whose key it could open);
//! - [`keys`]: sealing and opening CA keys with the passphrase; where root keys are kept;
//! - [`ops`]: the changes (prepare the next intermediate, start and finish a root
//!   rotation, import a state directory made before), each one store update;
//! - [`status`]: what `ca status` shows.
//!
//! The decisions themselves are pure and live in `dtca_pki::authority::lineage`. The loop
//! in `serve` that follows the store, switches, prepares and warns is the server's; the
//! state directory keeps the root keys (it implements [`keys::RootKeys`]).

pub mod keys;
pub mod ops;
pub mod status;

use std::collections::HashMap;
use std::sync::Arc;

use dtca_pki::authority::Authority;
use dtca_pki::authority::lineage::{CaCert, CaKind, Lineage};
use dtca_pki::inspect::CertInfo;
use time::OffsetDateTime;

use dtca_pki::AuthorityError;
use dtca_pki::authority::hierarchy::Lifetimes;

use crate::store::{CaMaterial, StoreError};
use keys::{Passphrase, RootKeys};

/// Why a lifecycle step could not be done.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    #[error("no intermediate of the active root can sign")]
    NoIntermediate,
    #[error("this host does not hold the key of the active root")]
    NoRootKey,
    #[error("{0}")]
    RotationState(String),
    #[error("{} still hold a certificate of the old root only: {}", .0.len(), .0.join(", "))]
    RotationLagging(Vec<String>),
    #[error("{0}")]
    Internal(String),
}

/// What `serve` holds to follow and change the CA's certificates.
#[derive(Debug)]
pub struct Custody {
    /// Where the root keys are (when this host holds them).
    pub root_keys: Box<dyn RootKeys>,
    /// Opens the intermediate keys in the store, seals new ones.
    pub passphrase: Passphrase,
    /// Lifetimes of new roots and intermediates.
    pub lifetimes: Lifetimes,
    /// How often the store is read.
    pub poll: std::time::Duration,
    /// What an operator must hear about, as last seen (health detail, `ca status`).
    pub warnings: std::sync::Mutex<Vec<String>>,
}

impl Custody {
    /// The warnings as last seen.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.lock().map(|w| w.clone()).unwrap_or_default()
    }

    /// The key of `root`, when this host holds it.
    ///
    /// # Errors
    /// [`LifecycleError::Internal`] when a key is there but cannot be opened.
    pub fn root_key(&self, root: &CaCert) -> Result<Option<dtca_pki::PrivateKey>, LifecycleError> {
        self.root_keys
            .key_of(root, &self.passphrase)
            .map_err(LifecycleError::Internal)
    }
}

/// The CA's certificates as one consistent view, replaced as a whole when they change.
#[derive(Debug)]
pub struct CaState {
    cluster: String,
    lineage: Lineage,
    /// The store generation it was read at (0 for a CA not read from a store).
    generation: u64,
    /// A signing authority per intermediate (by id) whose key could be opened.
    signers: HashMap<String, Arc<Authority>>,
}

impl CaState {
    /// A CA of one root and one intermediate, as `init` makes it (and the tests).
    ///
    /// # Errors
    /// [`LifecycleError::Authority`] when the pieces do not fit.
    pub fn single(authority: Authority) -> Result<CaState, LifecycleError> {
        let lineage = Lineage::single(
            authority.root_der().to_vec(),
            authority.intermediate_der().to_vec(),
        )?;
        let id = dtca_pki::authority::lineage::hex_digest(authority.intermediate_der());
        Ok(CaState {
            cluster: authority.cluster().to_string(),
            lineage,
            generation: 0,
            signers: HashMap::from([(id, Arc::new(authority))]),
        })
    }

    /// The view of the material read from the store, opening with `passphrase` the key of
    /// every intermediate still valid at `now` (expired ones sign nothing again, and a CA
    /// with ten-minute intermediates gathers many).
    ///
    /// # Errors
    /// [`LifecycleError::Authority`] when the certificates do not fit together,
    /// [`LifecycleError::Internal`] when the material is empty or a key cannot be opened.
    pub fn load(
        cluster: &str,
        material: &CaMaterial,
        passphrase: &Passphrase,
        now: OffsetDateTime,
    ) -> Result<CaState, LifecycleError> {
        let lineage = Self::lineage_of(material)?;
        let mut signers = HashMap::new();
        for record in &material.certs {
            let (CaKind::Intermediate, Some(pem)) = (record.kind, &record.key_pem) else {
                continue;
            };
            let cert = CaCert::new(record.kind, record.der.clone(), false)?;
            if cert.info.not_after <= now {
                continue;
            }
            let Some(root) = lineage.root_of(&cert.info) else {
                continue;
            };
            let key = keys::open(pem, passphrase).map_err(|e| {
                LifecycleError::Internal(format!(
                    "the key of intermediate {}: {e}",
                    cert.info.subject
                ))
            })?;
            let authority = Authority::new(cluster, root.der.clone(), record.der.clone(), key)?;
            signers.insert(record.id.clone(), Arc::new(authority));
        }
        Ok(CaState {
            cluster: cluster.to_string(),
            lineage,
            generation: material.generation,
            signers,
        })
    }

    /// The view of the material read from the store without any key: it shows the CA's
    /// certificates (`ca status` while `serve` is not running) and signs nothing.
    ///
    /// # Errors
    /// As [`CaState::load`].
    pub fn public(cluster: &str, material: &CaMaterial) -> Result<CaState, LifecycleError> {
        Ok(CaState {
            cluster: cluster.to_string(),
            lineage: Self::lineage_of(material)?,
            generation: material.generation,
            signers: HashMap::new(),
        })
    }

    fn lineage_of(material: &CaMaterial) -> Result<Lineage, LifecycleError> {
        let active = material
            .active_root
            .as_deref()
            .ok_or_else(|| LifecycleError::Internal("the store holds no CA certificates".into()))?;
        let certs = material
            .certs
            .iter()
            .map(|c| CaCert::new(c.kind, c.der.clone(), c.retired_at.is_some()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Lineage::new(certs, active, material.rotation_started)?)
    }

    /// The cluster name.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The certificates and the decisions over them.
    pub fn lineage(&self) -> &Lineage {
        &self.lineage
    }

    /// The store generation this view was read at.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The authority that signs at `now`.
    ///
    /// # Errors
    /// [`LifecycleError::NoIntermediate`] when no intermediate of the active root can sign.
    pub fn signer(&self, now: OffsetDateTime) -> Result<Arc<Authority>, LifecycleError> {
        self.lineage
            .signing(now)
            .and_then(|c| self.signers.get(&c.id()))
            .cloned()
            .ok_or(LifecycleError::NoIntermediate)
    }

    /// The id of the intermediate signing at `now`.
    pub fn signing_id(&self, now: OffsetDateTime) -> Option<String> {
        self.lineage.signing(now).map(CaCert::id)
    }

    /// The trusted roots, DER, oldest first.
    pub fn roots(&self) -> Vec<Vec<u8>> {
        self.lineage.root_ders()
    }

    /// The root new certificates chain to.
    pub fn active_root(&self) -> &CaCert {
        self.lineage.active_root()
    }

    /// What a verifier may build paths through: every intermediate of a trusted root and
    /// every cross certificate not retired.
    pub fn intermediates(&self) -> Vec<Vec<u8>> {
        let roots = self.lineage.roots();
        self.lineage
            .certs()
            .iter()
            .filter(|c| match c.kind {
                CaKind::Root => false,
                CaKind::Cross => !c.retired,
                CaKind::Intermediate => self
                    .lineage
                    .root_of(&c.info)
                    .is_some_and(|r| roots.iter().any(|t| t.der == r.der)),
            })
            .map(|c| c.der.clone())
            .collect()
    }

    /// The chain that goes with a leaf of `intermediate` (DER): the intermediate, then
    /// the cross certificates to the other trusted roots (during a root rotation).
    pub fn chain_of(&self, intermediate_der: &[u8]) -> Vec<Vec<u8>> {
        let mut chain = vec![intermediate_der.to_vec()];
        if let Ok(info) = CertInfo::from_der(intermediate_der) {
            chain.extend(
                self.lineage
                    .chain_above(&info)
                    .into_iter()
                    .map(|c| c.der.clone()),
            );
        }
        chain
    }

    /// Whether a join token pinning `digest` may be used: it names a trusted root.
    pub fn trusts(&self, digest: &dtca_pki::token::RootDigest) -> bool {
        self.lineage.roots().iter().any(|r| r.digest() == *digest)
    }

    /// The generation agents hear on the channel: the store's, and how many
    /// intermediates have started signing by `now`, so that a switch (which needs no
    /// store change) is one too, and every replica computes the same number.
    pub fn trust_generation(&self, now: OffsetDateTime) -> u64 {
        let started = self
            .lineage
            .certs()
            .iter()
            .filter(|c| c.kind == CaKind::Intermediate && c.schedule().start <= now)
            .count() as u64;
        (self.generation << 16) + started
    }
}
