//! The CA's line of certificates over time: its roots (the trusted ones, and those a root
//! rotation retired), the new root cross-signed by the old one while a rotation runs, and
//! the intermediates each root issued. Pure: the registrar builds one from the store and
//! asks it which intermediate signs at `now`, which roots a verifier should trust, what
//! goes in a chain, and what the CA should do next ([`Lineage::plan`]).
//!
//! The **active root** is the one new intermediates are issued under; during a root
//! rotation it is the new root, and the old one is still trusted. The intermediate that
//! signs at `now` is the one of the active root that started last (not after `now`);
//! one that starts later is its prepared successor. Every replica decides this from the
//! same certificates and its own clock, so replicas switch together without talking.

use std::time::Duration;

use time::OffsetDateTime;

use super::AuthorityError;
use super::schedule::Schedule;
use crate::chain;
use crate::inspect::CertInfo;
use crate::token::RootDigest;

/// What a CA certificate is to the CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaKind {
    /// A self-signed root.
    Root,
    /// An intermediate that signs leaves.
    Intermediate,
    /// A root cross-signed by another root (same subject and key as that root).
    Cross,
}

impl CaKind {
    /// Stable name in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            CaKind::Root => "root",
            CaKind::Intermediate => "intermediate",
            CaKind::Cross => "cross",
        }
    }
}

impl std::str::FromStr for CaKind {
    type Err = AuthorityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "root" => Ok(CaKind::Root),
            "intermediate" => Ok(CaKind::Intermediate),
            "cross" => Ok(CaKind::Cross),
            other => Err(AuthorityError::Certificate(format!(
                "unknown CA certificate kind {other:?}"
            ))),
        }
    }
}

/// One CA certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaCert {
    /// What it is.
    pub kind: CaKind,
    /// DER.
    pub der: Vec<u8>,
    /// Parsed fields.
    pub info: CertInfo,
    /// Left the trust bundle (a root or cross certificate after `rotate-root --finish`).
    pub retired: bool,
}

impl CaCert {
    /// Parses a CA certificate.
    ///
    /// # Errors
    /// [`AuthorityError::Certificate`] when it does not parse or is not a CA.
    pub fn new(kind: CaKind, der: Vec<u8>, retired: bool) -> Result<CaCert, AuthorityError> {
        let info =
            CertInfo::from_der(&der).map_err(|e| AuthorityError::Certificate(e.to_string()))?;
        if !info.is_ca {
            return Err(AuthorityError::Certificate(format!(
                "{} {} is not a CA certificate",
                kind.as_str(),
                info.subject
            )));
        }
        Ok(CaCert {
            kind,
            der,
            info,
            retired,
        })
    }

    /// Its SHA-256, as join tokens name a root.
    pub fn digest(&self) -> RootDigest {
        RootDigest::of(&self.der)
    }

    /// Its SHA-256 in hex: its key in the store.
    pub fn id(&self) -> String {
        hex_digest(&self.der)
    }

    /// Its schedule (meaningful for intermediates).
    pub fn schedule(&self) -> Schedule {
        Schedule::of(&self.info)
    }

    fn issued(&self, child: &CertInfo) -> bool {
        child.issuer == self.info.subject
            && (child.authority_key_id.is_none()
                || child.authority_key_id == self.info.subject_key_id)
    }
}

/// The hex SHA-256 of a DER certificate.
pub fn hex_digest(der: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(ring::digest::digest(&ring::digest::SHA256, der).as_ref())
}

/// The CA's certificates.
#[derive(Debug, Clone)]
pub struct Lineage {
    certs: Vec<CaCert>,
    active_root: usize,
    rotation_started: Option<OffsetDateTime>,
}

/// What the CA should do or say now; see [`Lineage::plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The intermediate signing now.
    pub signing: Option<Schedule>,
    /// Its prepared successor, if there is one.
    pub successor: Option<Schedule>,
    /// A successor should be made now (by whoever holds the active root's key).
    pub prepare: bool,
    /// When a successor made now should start signing.
    pub successor_start: OffsetDateTime,
    /// What an operator must hear about.
    pub warnings: Vec<Warning>,
}

/// Something that needs an operator before it hurts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// The signing intermediate ends at `ends` and has no successor: run
    /// `ca rotate-intermediate` where the root key is.
    NoSuccessor { ends: OffsetDateTime },
    /// No intermediate of the active root can sign (all expired, or none made).
    NoIntermediate,
    /// The active root ends at `not_after`, within two intermediate lifetimes: new
    /// intermediates are cut short by it; rotate the root.
    RootEnding { not_after: OffsetDateTime },
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::duration::timestamp;
        match self {
            Warning::NoSuccessor { ends } => write!(
                f,
                "the active intermediate ends at {} and has no successor: run `ca-server ca rotate-intermediate` where the root key is",
                timestamp(*ends)
            ),
            Warning::NoIntermediate => f.write_str(
                "no intermediate of the active root can sign: run `ca-server ca rotate-intermediate` where the root key is",
            ),
            Warning::RootEnding { not_after } => write!(
                f,
                "the root expires at {}: rotate it (`ca-server ca rotate-root`)",
                timestamp(*not_after)
            ),
        }
    }
}

impl Lineage {
    /// Puts the certificates together and checks that they fit: the active root (by its
    /// hex digest, see [`CaCert::id`]) is a trusted, self-signed root; every intermediate
    /// and cross certificate was signed by a root among them.
    ///
    /// # Errors
    /// [`AuthorityError::Mismatch`] naming what does not fit.
    pub fn new(
        certs: Vec<CaCert>,
        active_root: &str,
        rotation_started: Option<OffsetDateTime>,
    ) -> Result<Lineage, AuthorityError> {
        let active = certs
            .iter()
            .position(|c| c.kind == CaKind::Root && c.id() == active_root)
            .ok_or(AuthorityError::Mismatch(
                "the active root is not among the CA certificates",
            ))?;
        if certs[active].retired {
            return Err(AuthorityError::Mismatch("the active root was retired"));
        }
        for c in &certs {
            match c.kind {
                CaKind::Root => {
                    if c.info.issuer != c.info.subject
                        || chain::verify_ca_signature(&c.der, &c.der).is_err()
                    {
                        return Err(AuthorityError::Mismatch("a root is not self-signed"));
                    }
                }
                CaKind::Intermediate | CaKind::Cross => {
                    let signed = certs.iter().any(|r| {
                        r.kind == CaKind::Root
                            && r.issued(&c.info)
                            && chain::verify_ca_signature(&c.der, &r.der).is_ok()
                    });
                    if !signed {
                        return Err(AuthorityError::Mismatch(
                            "an intermediate or cross certificate was not issued by any of the CA's roots",
                        ));
                    }
                }
            }
        }
        Ok(Lineage {
            certs,
            active_root: active,
            rotation_started,
        })
    }

    /// A lineage of one root and one intermediate (a CA as `init` makes it).
    ///
    /// # Errors
    /// As [`Lineage::new`].
    pub fn single(root_der: Vec<u8>, intermediate_der: Vec<u8>) -> Result<Lineage, AuthorityError> {
        let root = CaCert::new(CaKind::Root, root_der, false)?;
        let id = root.id();
        let inter = CaCert::new(CaKind::Intermediate, intermediate_der, false)?;
        Lineage::new(vec![root, inter], &id, None)
    }

    /// Every certificate.
    pub fn certs(&self) -> &[CaCert] {
        &self.certs
    }

    /// The roots a verifier should trust now, oldest first (during a rotation the old
    /// root, then the new one).
    pub fn roots(&self) -> Vec<&CaCert> {
        let mut roots: Vec<&CaCert> = self
            .certs
            .iter()
            .filter(|c| c.kind == CaKind::Root && !c.retired)
            .collect();
        roots.sort_by_key(|c| c.info.not_before);
        roots
    }

    /// The trusted roots, DER, oldest first.
    pub fn root_ders(&self) -> Vec<Vec<u8>> {
        self.roots().into_iter().map(|c| c.der.clone()).collect()
    }

    /// Roots a finished rotation retired: certificates that chain only to them are refused.
    pub fn retired_roots(&self) -> Vec<&CaCert> {
        self.certs
            .iter()
            .filter(|c| c.kind == CaKind::Root && c.retired)
            .collect()
    }

    /// The root new intermediates are issued under.
    pub fn active_root(&self) -> &CaCert {
        &self.certs[self.active_root]
    }

    /// When the root rotation under way started (`None` when none is).
    pub fn rotation_started(&self) -> Option<OffsetDateTime> {
        self.rotation_started.filter(|_| self.roots().len() > 1)
    }

    /// The root that issued `intermediate`.
    pub fn root_of(&self, intermediate: &CertInfo) -> Option<&CaCert> {
        self.certs
            .iter()
            .find(|c| c.kind == CaKind::Root && c.issued(intermediate))
    }

    /// The intermediate that issued `leaf`.
    pub fn intermediate_of(&self, leaf: &CertInfo) -> Option<&CaCert> {
        self.certs
            .iter()
            .find(|c| c.kind == CaKind::Intermediate && c.issued(leaf))
    }

    /// The root `leaf` chains to through its intermediate.
    pub fn root_of_leaf(&self, leaf: &CertInfo) -> Option<&CaCert> {
        self.intermediate_of(leaf)
            .and_then(|i| self.root_of(&i.info))
    }

    /// Intermediates of the active root, by start.
    fn active_intermediates(&self) -> Vec<&CaCert> {
        let root = self.active_root();
        let mut list: Vec<&CaCert> = self
            .certs
            .iter()
            .filter(|c| c.kind == CaKind::Intermediate && root.issued(&c.info))
            .collect();
        list.sort_by_key(|c| c.schedule().start);
        list
    }

    /// The intermediate that signs at `now`: of the active root, unexpired, the one that
    /// started last (or, when none has started yet by this clock, the first to start).
    pub fn signing(&self, now: OffsetDateTime) -> Option<&CaCert> {
        let live: Vec<&CaCert> = self
            .active_intermediates()
            .into_iter()
            .filter(|c| c.info.not_after > now)
            .collect();
        live.iter()
            .rev()
            .find(|c| c.schedule().start <= now)
            .or(live.first())
            .copied()
    }

    /// The prepared successor of the intermediate signing at `now`.
    pub fn successor(&self, now: OffsetDateTime) -> Option<&CaCert> {
        let signing = self.signing(now)?;
        let start = signing.schedule().start;
        self.active_intermediates()
            .into_iter()
            .rev()
            .find(|c| c.schedule().start > start)
    }

    /// The certificates to send after `intermediate` in a chain: the cross certificates
    /// that lead from its root to every other trusted root (during a rotation, the new
    /// root signed by the old one).
    pub fn chain_above(&self, intermediate: &CertInfo) -> Vec<&CaCert> {
        let Some(root) = self.root_of(intermediate) else {
            return Vec::new();
        };
        self.certs
            .iter()
            .filter(|c| {
                c.kind == CaKind::Cross
                    && !c.retired
                    && c.info.subject == root.info.subject
                    && c.info.public_key_der == root.info.public_key_der
                    && self
                        .roots()
                        .iter()
                        .any(|r| r.der != root.der && r.issued(&c.info))
            })
            .collect()
    }

    /// What to do and say at `now`, for a CA whose intermediates live `lifetime`.
    pub fn plan(&self, now: OffsetDateTime, lifetime: Duration) -> Plan {
        let signing = self.signing(now).map(CaCert::schedule);
        let successor = self.successor(now).map(CaCert::schedule);
        let mut warnings = Vec::new();
        let prepare = successor.is_none() && signing.is_none_or(|s| now >= s.prepare_at);
        match signing {
            None => warnings.push(Warning::NoIntermediate),
            Some(s) if successor.is_none() && now >= s.warn_at => {
                warnings.push(Warning::NoSuccessor { ends: s.not_after });
            }
            Some(_) => {}
        }
        let root_end = self.active_root().info.not_after;
        if root_end < now + lifetime.saturating_mul(2) {
            warnings.push(Warning::RootEnding {
                not_after: root_end,
            });
        }
        Plan {
            signing,
            successor,
            prepare,
            successor_start: signing.map_or(now, |s| s.switch_at.max(now)),
            warnings,
        }
    }
}

#[cfg(test)]
mod tests;
