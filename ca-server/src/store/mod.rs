//! The CA's records: tokens, certificates, revocations, node engines and the audit log.
//!
//! One interface, [`Store`], with two backends: [`sqlite`] (embedded, the default, no
//! set-up) and [`postgres`] (several replicas behind one address). Writes that belong
//! together are one [`Issuance`] or one revocation, applied atomically: a token use is
//! consumed in the same transaction that stores the certificate, so a refused or failed
//! enrollment never burns a use, and a single-use token is spent once under any
//! concurrency. A certificate is committed before it is returned to anyone.
//!
//! Both backends queue writes ([`queue`]) for writers that apply them in batches, one
//! transaction per batch; [`conformance`] is the one suite both must pass. The CA's own
//! certificates and lifecycle are in [`ca`].

mod agent;
pub mod ca;
pub(crate) mod columns;
pub mod conformance;
pub mod postgres;
mod queue;
mod slots;
pub mod sqlite;

pub use agent::{AgentRecord, AgentState};

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use dtca_pki::Serial;
use dtca_pki::access::Access;
use dtca_pki::identity::{Identity, Role};
use dtca_pki::policy::SanPolicy;
use time::OffsetDateTime;

pub use ca::{CaCertRecord, CaMaterial, CaUpdate, RotationChange};

use crate::restart::{Decision, RestartLimits, Slot, SlotRequest};

/// Why an unused successor is revoked when its predecessor renews again.
pub(crate) const SUPERSEDED_UNUSED: &str =
    "superseded: its predecessor renewed again before it was ever used";

/// Why the certificates of an identity are revoked when a replacing token takes its name.
pub(crate) const REPLACED: &str = "replaced: a token made with --replace took the name";

/// A join token as stored: only the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Public id: first 8 bytes of the secret's hash, hex.
    pub id: String,
    /// SHA-256 of the secret.
    pub secret_hash: Vec<u8>,
    /// Role of every certificate enrolled with it.
    pub role: Role,
    /// Identity name it fixes, if any.
    pub name: Option<String>,
    /// Enrollments allowed.
    pub max_uses: u32,
    /// Enrollments done.
    pub uses: u32,
    /// When it was made.
    pub created_at: OffsetDateTime,
    /// After this, refused.
    pub expires_at: OffsetDateTime,
    /// When an admin revoked it.
    pub revoked_at: Option<OffsetDateTime>,
    /// SAN limits for node certificates.
    pub policy: SanPolicy,
    /// Lifetime of certificates it enrolls; `None` for the role's default.
    pub cert_ttl: Option<Duration>,
    /// Enrolling with it takes its (fixed) name from the identity holding it: every
    /// certificate of that identity is revoked in the same transaction. Without it, a
    /// name held by a live certificate is refused.
    pub replace: bool,
    /// Access level of the operator certificates it enrolls (full for other roles).
    pub access: Access,
}

/// What lists of certificates show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// Serial.
    pub serial: Serial,
    /// Identity in its URI SAN.
    pub identity: Identity,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// IP SANs.
    pub ip_addresses: Vec<IpAddr>,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// When it was revoked.
    pub revoked_at: Option<OffsetDateTime>,
    /// The certificate that renewed it, if any: a renewed certificate is superseded and
    /// left out of `--expiring-within` lists.
    pub renewed_by: Option<Serial>,
    /// The operator access level its EKU names (full for every other role).
    pub access: Access,
}

impl CertSummary {
    /// `valid`, `renewed` (still valid, but a newer certificate replaced it), `expired` or
    /// `revoked` at `now`.
    pub fn status(&self, now: OffsetDateTime) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.not_after <= now {
            "expired"
        } else if self.renewed_by.is_some() {
            "renewed"
        } else {
            "valid"
        }
    }
}

/// A certificate with everything the CA knows about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRecord {
    /// The listable part.
    pub summary: CertSummary,
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Token it was enrolled with, for enrollments.
    pub token_id: Option<String>,
    /// Certificate it renewed, for renewals.
    pub renewed_from: Option<Serial>,
    /// SAN limits of its identity, carried from the enrolling token to every renewal.
    pub policy: SanPolicy,
    /// When it was issued.
    pub issued_at: OffsetDateTime,
    /// Why it was revoked.
    pub revocation_reason: Option<String>,
    /// When it first authenticated a call: a renewed certificate may renew again (crash
    /// recovery) only while its successor has never been used.
    pub first_used_at: Option<OffsetDateTime>,
}

/// One issuance, applied atomically: consume the token use (enrollment) or check that the
/// renewed certificate is still unrevoked (renewal), store the certificate, audit.
#[derive(Debug, Clone)]
pub struct Issuance {
    /// The new certificate.
    pub cert: CertRecord,
    /// For enrollments: the token whose use this consumes, checked again inside the
    /// transaction (not revoked, not expired at `at`, uses left).
    pub token_id: Option<String>,
    /// For renewals: the certificate renewed, which must still be unrevoked, and whose
    /// earlier successor, if it has one, must never have been used (it is revoked then:
    /// one identity never has two current certificates).
    pub renewal_of: Option<Serial>,
    /// For enrollments with a replacing token: the identity's name is taken from its
    /// holder, and every certificate of the identity revoked. Otherwise an enrollment
    /// of a name a live certificate holds is refused, and so is a DNS name that another
    /// identity's live certificate carries.
    pub replace: bool,
    /// Audit entries to write with it.
    pub audit: Vec<AuditEntry>,
    /// The time of the decision.
    pub at: OffsetDateTime,
}

/// Which certificates a list shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertQuery {
    /// The reference time.
    pub now: OffsetDateTime,
    /// Only valid, current (not renewed) certificates expiring before `now + within`.
    pub expiring_within: Option<Duration>,
    /// Also expired and revoked certificates (ignored with `expiring_within`).
    pub include_inactive: bool,
    /// At most this many, soonest expiry first; `None` for all.
    pub limit: Option<u32>,
    /// Only certificates of this role.
    pub role: Option<Role>,
    /// Only certificates of this identity name.
    pub name: Option<String>,
}

/// What a revocation targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeTarget {
    /// One certificate.
    Serial(Serial),
    /// Every unrevoked certificate with this identity name, expired or not (an expired
    /// copy must not renew within a grace window), of `role` when given (enrolled roles
    /// only: the CA server's own certificate is never revoked by name).
    Name {
        /// Identity name.
        name: String,
        /// Only certificates of this role.
        role: Option<Role>,
    },
}

/// How long a node whose certificate expired still shows (as expired) among the nodes:
/// long enough to be seen and dealt with, and the lists never read the whole history.
pub const EXPIRED_NODES_SHOWN: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

/// The expiry (Unix seconds) before which a node's certificate no longer shows at `now`.
pub(crate) fn expired_since(now: OffsetDateTime) -> i64 {
    (now - EXPIRED_NODES_SHOWN).unix_timestamp()
}

/// An enrolled node as operators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    /// Identity name.
    pub name: String,
    /// Engine address reported by its agent, e.g. `tcp://10.0.0.5:2376`.
    pub endpoint: Option<String>,
    /// Its newest valid certificate.
    pub cert: CertSummary,
}

/// Where a node's engine listens, as its agent last reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineRecord {
    /// Identity name of the node.
    pub name: String,
    /// Engine address, e.g. `tcp://10.0.0.5:2376`.
    pub endpoint: String,
    /// When it was reported.
    pub updated_at: OffsetDateTime,
    /// The certificate that reported it (unknown for reports from before it was kept).
    pub serial: Option<Serial>,
}

/// Kinds of audit entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    /// A certificate was issued by enrollment (or at init / server start).
    Issue,
    /// A certificate was issued by renewal.
    Renew,
    /// A certificate was revoked.
    Revoke,
    /// A token was created.
    TokenCreate,
    /// A token use was consumed.
    TokenUse,
    /// A token was revoked.
    TokenRevoke,
    /// A node reported its engine address.
    EngineReport,
    /// The CA's own certificates changed: an intermediate prepared, a root rotation
    /// started or finished.
    Ca,
    /// A restart slot was granted to a node's agent.
    RestartGrant,
    /// A node's agent gave its restart slot back.
    RestartRelease,
    /// A restart slot's lease ran out unreleased and the CA took it back.
    RestartExpire,
}

impl AuditKind {
    /// Stable name in the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Issue => "issue",
            AuditKind::Renew => "renew",
            AuditKind::Revoke => "revoke",
            AuditKind::TokenCreate => "token-create",
            AuditKind::TokenUse => "token-use",
            AuditKind::TokenRevoke => "token-revoke",
            AuditKind::EngineReport => "engine-report",
            AuditKind::Ca => "ca",
            AuditKind::RestartGrant => "restart-grant",
            AuditKind::RestartRelease => "restart-release",
            AuditKind::RestartExpire => "restart-expire",
        }
    }
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// When.
    pub at: OffsetDateTime,
    /// What happened (stable name, see [`AuditKind::as_str`]).
    pub kind: String,
    /// Who asked: an identity URI, `token:<id>`, or `ca-server`.
    pub actor: String,
    /// What it concerned: a serial, a token id, an identity.
    pub subject: String,
    /// Free text: names, expiry, reason.
    pub detail: String,
}

impl AuditEntry {
    /// Builds an entry.
    pub fn new(
        at: OffsetDateTime,
        kind: AuditKind,
        actor: impl Into<String>,
        subject: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        AuditEntry {
            at,
            kind: kind.as_str().to_string(),
            actor: actor.into(),
            subject: subject.into(),
            detail: detail.into(),
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("unknown join token")]
    TokenUnknown,
    #[error("the join token expired at {}", dtca_pki::duration::timestamp(*.0))]
    TokenExpired(OffsetDateTime),
    #[error("the join token was revoked")]
    TokenRevoked,
    #[error("the join token has no uses left")]
    TokenUsedUp,
    #[error("certificate {0} was revoked")]
    CertRevoked(Serial),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("already exists: {0}")]
    Conflict(String),
    #[error("the name {identity} is held by certificate {holder} until {}", dtca_pki::duration::timestamp(*until))]
    NameTaken {
        identity: String,
        holder: Serial,
        until: OffsetDateTime,
    },
    #[error("the DNS name {dns} is carried by {identity}'s certificate {holder} until {}", dtca_pki::duration::timestamp(*until))]
    HostNameTaken {
        dns: String,
        identity: String,
        holder: Serial,
        until: OffsetDateTime,
    },
    #[error("certificate {serial} was renewed by {successor}, which is in use")]
    Superseded { serial: Serial, successor: Serial },
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The file system holding the database has no room for the write; nothing was
    /// written. Cleared by the store itself once space returns.
    #[error("the database's disk is full: {0}")]
    Full(String),
    /// The database file is damaged, or holds a record that does not read: nothing
    /// written now can be trusted to land in a sound file.
    #[error("the database is damaged: {0}")]
    Corrupt(String),
}

/// How an embedded store's files are doing, for metrics and benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Size of the WAL file now.
    pub wal_bytes: u64,
    /// Bytes appended to the WAL since the store opened (frames with their headers).
    pub wal_written_bytes: u64,
    /// Times the WAL started over from its beginning since the store opened.
    pub wal_resets: u64,
    /// Transactions committed since the store opened (each holds a batch of writes).
    pub commits: u64,
    /// Free space on the database's file system, when it can be read.
    pub free_bytes: Option<u64>,
}

/// The CA's storage. Every method is one transaction.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A cheap round trip, for health checks: also fails when the store would refuse
    /// writes (a full disk, a damaged file), with that reason.
    async fn ping(&self) -> Result<(), StoreError>;

    /// How the store's files are doing; `None` when it has none of its own.
    fn stats(&self) -> Option<StoreStats> {
        None
    }

    /// Leaves the store tidy before the process exits (the embedded store empties its
    /// WAL). Calls after it still work.
    async fn close(&self) {}

    /// Stores a new token.
    async fn insert_token(&self, token: TokenRecord, audit: AuditEntry) -> Result<(), StoreError>;
    /// Looks a token up by id.
    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// Every token, newest first.
    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;
    /// Revokes a token; [`StoreError::NotFound`] when there is none with that id.
    async fn revoke_token(&self, id: &str, audit: AuditEntry) -> Result<(), StoreError>;

    /// Applies an [`Issuance`] atomically; see its fields for what is checked.
    async fn record_issuance(&self, issuance: Issuance) -> Result<(), StoreError>;
    /// One certificate with its details.
    async fn certificate(&self, serial: &Serial) -> Result<Option<CertRecord>, StoreError>;
    /// Certificates matching a query, soonest expiry first.
    async fn certificates(&self, query: &CertQuery) -> Result<Vec<CertSummary>, StoreError>;
    /// Revokes and returns the serials revoked (empty: nothing matched or already revoked).
    async fn revoke(
        &self,
        target: &RevokeTarget,
        at: OffsetDateTime,
        reason: &str,
        actor: &str,
    ) -> Result<Vec<Serial>, StoreError>;
    /// Revoked certificates not yet expired at `now`, for the CRL.
    async fn revoked(
        &self,
        now: OffsetDateTime,
    ) -> Result<Vec<(Serial, OffsetDateTime)>, StoreError>;
    /// Certificates revoked at or after `since`, oldest first: what the agent channel
    /// tells agents.
    async fn revocations_since(
        &self,
        since: OffsetDateTime,
    ) -> Result<Vec<(Serial, OffsetDateTime)>, StoreError>;

    /// Keeps an agent's newest report (one per node name).
    async fn record_report(&self, report: AgentRecord) -> Result<(), StoreError>;
    /// Every node's newest report received at or after `since` (`UNIX_EPOCH`: every
    /// node's), by name.
    async fn reports(&self, since: OffsetDateTime) -> Result<Vec<AgentRecord>, StoreError>;
    /// When each node's newest report received at or after `since` arrived (Unix
    /// seconds), by name: what changed, without reading the reports.
    async fn report_times(&self, since: OffsetDateTime) -> Result<Vec<(String, i64)>, StoreError>;

    /// Records that `serial` authenticated a call at `at`, the first time it does.
    async fn mark_used(&self, serial: &Serial, at: OffsetDateTime) -> Result<(), StoreError>;
    /// The certificate each identity's name belongs to now (the holder's newest), for
    /// the identities asked about that have one.
    async fn holders(
        &self,
        identities: &[(Role, String)],
    ) -> Result<Vec<(Role, String, Serial)>, StoreError>;

    /// Records where a node's engine listens, as its certificate `serial` reported it.
    async fn set_engine(
        &self,
        name: &str,
        endpoint: &str,
        serial: &Serial,
        audit: AuditEntry,
    ) -> Result<(), StoreError>;
    /// Each node's newest certificate that is neither revoked nor renewed, with its
    /// engine address (only an address reported by a certificate that has not been
    /// revoked). A certificate expired at `now` is kept (the node shows as expired) for
    /// [`EXPIRED_NODES_SHOWN`], unless a newer certificate of the name was revoked (the
    /// node was retired).
    async fn nodes(&self, now: OffsetDateTime) -> Result<Vec<NodeRecord>, StoreError>;
    /// Every engine address ever reported, by name, whatever the node's certificates:
    /// what moving a store to another backend copies.
    async fn engines(&self) -> Result<Vec<EngineRecord>, StoreError>;

    /// The newest `limit` audit entries, newest first.
    async fn audit(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError>;

    /// The current certificate of every identity (valid at `now`, not revoked, not
    /// renewed; the CA servers' own excepted), with everything the CA knows of each: where
    /// a root rotation stands, and what `rotate-root --finish` waits for.
    async fn current_certificates(
        &self,
        now: OffsetDateTime,
    ) -> Result<Vec<CertRecord>, StoreError>;

    /// The generation of the CA's material: replicas poll it, and read the material again
    /// when it moved.
    async fn ca_generation(&self) -> Result<u64, StoreError>;
    /// The CA's certificates and lifecycle.
    async fn ca_material(&self) -> Result<CaMaterial, StoreError>;
    /// Applies a [`CaUpdate`] if the generation is still the one it expects; returns the
    /// new generation.
    ///
    /// [`StoreError::Conflict`] when the material changed meanwhile: read it again.
    async fn update_ca(&self, update: CaUpdate) -> Result<u64, StoreError>;

    /// Asks for a restart slot: reclaims the slots whose lease ran out, then grants,
    /// renews or queues by [`crate::restart::decide`], in one transaction that no other
    /// decision (of any replica) interleaves with; audits every reclaim and grant.
    async fn request_restart(
        &self,
        request: SlotRequest,
        limits: RestartLimits,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<Decision, StoreError>;
    /// Gives `name`'s slot back, auditing it; false when it held none (its lease ran out
    /// and was reclaimed).
    async fn release_restart(&self, name: &str, audit: AuditEntry) -> Result<bool, StoreError>;
    /// The slots whose lease has not run out at `now`.
    async fn restart_slots(&self, now: OffsetDateTime) -> Result<Vec<Slot>, StoreError>;
    /// How many engines are restarting at `now` (slots held, leases not run out): what
    /// the fleet metrics show.
    async fn restarts_in_progress(&self, now: OffsetDateTime) -> Result<usize, StoreError> {
        Ok(self.restart_slots(now).await?.len())
    }
}
