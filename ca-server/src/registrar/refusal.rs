//! Why the CA said no. Each refusal has a stable [`Reason`], and the reason alone decides
//! the gRPC code (`Reason::grpc_code`): the gRPC layer turns refusals into statuses in one
//! place (`service::status`), and nothing here knows of gRPC.

use dtca_common::Reason;
use dtca_pki::Serial;
use dtca_pki::access::Access;
use dtca_pki::authority::AuthorityError;
use dtca_pki::csr::CsrError;
use dtca_pki::identity::Role;
use dtca_pki::policy::PolicyError;
use dtca_pki::token::TokenError;
use time::OffsetDateTime;

use crate::store::StoreError;

/// A refused request, with what the caller needs to know to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    TokenMalformed(TokenError),
    #[error("the join token was made by another CA (its root digest is not this CA's)")]
    TokenForeignCa,
    #[error("unknown join token: ask an admin for a new one (ca-server token create)")]
    TokenUnknown,
    #[error("the join token expired at {}: ask an admin for a new one", dtca_pki::duration::timestamp(*at))]
    TokenExpired { at: OffsetDateTime },
    #[error("the join token was revoked: ask an admin for a new one")]
    TokenRevoked,
    #[error("the join token has no uses left: ask an admin for a new one")]
    TokenUsedUp,
    #[error("{0}")]
    Csr(CsrError),
    #[error("{0}")]
    NameNotAllowed(PolicyError),
    #[error("no client certificate: this call needs mutual TLS with a certificate from this CA")]
    CertMissing,
    #[error("the client certificate was not issued by this CA")]
    CertForeign,
    #[error("the client certificate expired at {}: re-enroll with a join token", dtca_pki::duration::timestamp(*not_after))]
    CertExpired { not_after: OffsetDateTime },
    #[error("invalid client certificate: {0}")]
    CertInvalid(String),
    #[error("the client certificate {0} is not in this CA's inventory")]
    CertUnknown(Serial),
    #[error("the client certificate {0} was revoked: ask an admin for a new join token")]
    CertRevoked(Serial),
    #[error(
        "the name {identity} belongs to certificate {holder} (valid until {}): renew from its holder, or ask an admin for a token that replaces it (ca-server token create --name NAME --replace)",
        dtca_pki::duration::timestamp(*until)
    )]
    NameTaken {
        identity: String,
        holder: Serial,
        until: OffsetDateTime,
    },
    #[error(
        "the DNS name {dns} belongs to {identity} (certificate {holder}, valid until {}): leave it out, or revoke that identity first",
        dtca_pki::duration::timestamp(*until)
    )]
    HostNameTaken {
        dns: String,
        identity: String,
        holder: Serial,
        until: OffsetDateTime,
    },
    #[error(
        "the client certificate {serial} was renewed by {successor}, which is in use: an old copy of a certificate cannot be used (re-enroll with a token if this node lost its current certificate)"
    )]
    CertSuperseded { serial: Serial, successor: Serial },
    #[error("a certificate of role {role} may not {action}")]
    RoleNotAllowed { role: Role, action: &'static str },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error(
        "--access {access} is for operator tokens only: a {role} certificate has no access level (leave --access out)"
    )]
    AccessForRole { role: Role, access: Access },
    #[error("{0}; nothing was issued")]
    Store(StoreError),
    #[error("{0}")]
    Authority(AuthorityError),
    #[error("internal error: {0}")]
    Internal(String),
    #[error(
        "the root rotation cannot finish: {} still hold a certificate of the old root only ({}); wait for them to renew (ca-server ca status), or finish with --force, which locks them out", .0.len(), .0.join(", ")
    )]
    RotationLagging(Vec<String>),
    #[error("{0}")]
    RotationState(String),
    #[error(
        "this host does not hold the key of the active root: run the command on the root's host (ca-server ca rotate-intermediate --state-dir DIR there)"
    )]
    NoRootKey,
    #[error(
        "no intermediate of the active root can sign: run `ca-server ca rotate-intermediate --state-dir DIR` where the root key is"
    )]
    NoIntermediate,
}

impl Refusal {
    /// The stable reason of this refusal: its word, exit code and gRPC code.
    pub fn reason(&self) -> Reason {
        match self {
            Refusal::TokenMalformed(_) => Reason::TokenMalformed,
            Refusal::TokenForeignCa | Refusal::TokenUnknown => Reason::TokenUnknown,
            Refusal::TokenExpired { .. } => Reason::TokenExpired,
            Refusal::TokenRevoked => Reason::TokenRevoked,
            Refusal::TokenUsedUp => Reason::TokenUsedUp,
            Refusal::Csr(_) => Reason::CsrInvalid,
            Refusal::NameNotAllowed(_) => Reason::NameNotAllowed,
            Refusal::CertMissing => Reason::CertMissing,
            Refusal::CertForeign => Reason::CertForeign,
            Refusal::CertExpired { .. } => Reason::CertExpired,
            Refusal::CertInvalid(_) => Reason::CertForeign,
            Refusal::CertUnknown(_) => Reason::CertUnknown,
            Refusal::CertRevoked(_) => Reason::CertRevoked,
            Refusal::NameTaken { .. } | Refusal::HostNameTaken { .. } => Reason::NameTaken,
            Refusal::CertSuperseded { .. } => Reason::CertSuperseded,
            Refusal::RoleNotAllowed { .. } => Reason::PermissionDenied,
            Refusal::NotFound(_) => Reason::NotFound,
            Refusal::InvalidArgument(_) => Reason::InvalidArgument,
            Refusal::AccessForRole { .. } => Reason::AccessLevel,
            Refusal::Store(StoreError::Unavailable(_)) => Reason::StoreUnavailable,
            Refusal::Store(StoreError::Full(_)) => Reason::StoreFull,
            Refusal::Store(StoreError::Corrupt(_)) => Reason::StoreCorrupt,
            Refusal::Store(_) | Refusal::Authority(_) | Refusal::Internal(_) => Reason::Internal,
            Refusal::RotationLagging(_) => Reason::RotationLagging,
            Refusal::RotationState(_) => Reason::RotationState,
            Refusal::NoRootKey => Reason::NoRootKey,
            Refusal::NoIntermediate => Reason::NoIntermediate,
        }
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::TokenUnknown => Refusal::TokenUnknown,
            StoreError::TokenExpired(at) => Refusal::TokenExpired { at },
            StoreError::TokenRevoked => Refusal::TokenRevoked,
            StoreError::TokenUsedUp => Refusal::TokenUsedUp,
            StoreError::CertRevoked(s) => Refusal::CertRevoked(s),
            StoreError::NotFound(what) => Refusal::NotFound(what),
            StoreError::NameTaken {
                identity,
                holder,
                until,
            } => Refusal::NameTaken {
                identity,
                holder,
                until,
            },
            StoreError::HostNameTaken {
                dns,
                identity,
                holder,
                until,
            } => Refusal::HostNameTaken {
                dns,
                identity,
                holder,
                until,
            },
            StoreError::Superseded { serial, successor } => {
                Refusal::CertSuperseded { serial, successor }
            }
            other => Refusal::Store(other),
        }
    }
}

impl From<AuthorityError> for Refusal {
    fn from(e: AuthorityError) -> Self {
        Refusal::Authority(e)
    }
}

impl From<crate::lifecycle::LifecycleError> for Refusal {
    fn from(e: crate::lifecycle::LifecycleError) -> Self {
        use crate::lifecycle::LifecycleError as L;
        match e {
            L::Store(e) => e.into(),
            L::Authority(e) => e.into(),
            L::NoIntermediate => Refusal::NoIntermediate,
            L::NoRootKey => Refusal::NoRootKey,
            L::RotationState(m) => Refusal::RotationState(m),
            L::RotationLagging(names) => Refusal::RotationLagging(names),
            L::Internal(m) => Refusal::Internal(m),
        }
    }
}
