//! The CA's own certificates in the store: roots, intermediates (with their keys,
//! encrypted as in the state dir) and cross certificates, and where the CA's lifecycle
//! stands (the active root, a root rotation under way). Every replica reads them from
//! here; a change bumps one generation number, so replicas notice it with one cheap read.

use dtca_pki::authority::lineage::CaKind;
use time::OffsetDateTime;

use super::AuditEntry;

/// One CA certificate as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaCertRecord {
    /// Hex SHA-256 of the certificate.
    pub id: String,
    /// Root, intermediate or cross certificate.
    pub kind: CaKind,
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Intermediates: their key as PKCS#8 PEM, encrypted with the CA's passphrase (in
    /// clear only for a CA made with `--insecure-no-passphrase`). Root keys never come
    /// here: they stay in the root host's state dir.
    pub key_pem: Option<String>,
    /// When it was stored.
    pub added_at: OffsetDateTime,
    /// When it left the trust bundle (roots and cross certificates, at the end of a root
    /// rotation).
    pub retired_at: Option<OffsetDateTime>,
}

/// The CA's certificates and lifecycle, as one consistent read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaMaterial {
    /// Bumped by every [`CaUpdate`].
    pub generation: u64,
    /// Every CA certificate, in the order stored.
    pub certs: Vec<CaCertRecord>,
    /// The id of the root new intermediates are issued under.
    pub active_root: Option<String>,
    /// When the root rotation under way started.
    pub rotation_started: Option<OffsetDateTime>,
}

/// What a [`CaUpdate`] does to the root rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationChange {
    /// Leaves it as it is.
    Keep,
    /// Records that one started at this instant.
    Start(OffsetDateTime),
    /// Records that none is under way.
    End,
}

/// One change of the CA's material, applied atomically, and only if nothing else changed
/// it since `expected_generation` was read (two replicas preparing a successor at the
/// same moment: one wins, the other finds the store moved and reads it again).
#[derive(Debug, Clone)]
pub struct CaUpdate {
    /// The generation the change was decided on.
    pub expected_generation: u64,
    /// Certificates to add.
    pub add: Vec<CaCertRecord>,
    /// Ids of certificates to delete (a prepared successor that will never sign).
    pub remove: Vec<String>,
    /// Ids of roots and cross certificates to retire.
    pub retire: Vec<String>,
    /// A new active root, by id.
    pub active_root: Option<String>,
    /// The root rotation.
    pub rotation: RotationChange,
    /// Audit entries to write with it.
    pub audit: Vec<AuditEntry>,
    /// The time of the decision.
    pub at: OffsetDateTime,
}

impl RotationChange {
    /// (mode, instant) as the SQL of both backends takes it: 0 keep, 1 start, 2 end.
    pub(crate) fn columns(self) -> (i64, Option<i64>) {
        match self {
            RotationChange::Keep => (0, None),
            RotationChange::Start(at) => (1, Some(at.unix_timestamp())),
            RotationChange::End => (2, None),
        }
    }
}
