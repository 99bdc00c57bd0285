//! Chain verification with webpki (the validator rustls uses), for callers' certificates
//! and for checking what the CA hands out.

use std::time::Duration;

use rustls_pki_types::{CertificateDer, UnixTime};
use time::OffsetDateTime;
use webpki::{EndEntityCert, KeyUsage, anchor_from_trusted_cert};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::access::Access;
use crate::identity::Role;
use crate::inspect::CertInfo;

/// Signature algorithms dtca certificates use.
static ALGORITHMS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
];

/// What the leaf must be good for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// TLS server (EKU serverAuth, when an EKU is present).
    Server,
    /// TLS client (EKU clientAuth, when an EKU is present).
    Client,
    /// TLS client of a restricted access level: the level's EKU, which replaces
    /// clientAuth (such a certificate is no [`Usage::Client`]).
    Restricted(Access),
}

impl Usage {
    /// What a dtca leaf is checked as: a node's as the server it is (it carries no
    /// clientAuth, so that no engine takes it as a docker client), a restricted
    /// operator's at its level, every other as a client's.
    pub fn of(info: &CertInfo) -> Usage {
        match (info.identity.as_ref().map(|i| i.role), info.access) {
            (Some(Role::Node), _) => Usage::Server,
            (_, Access::Full) => Usage::Client,
            (_, restricted) => Usage::Restricted(restricted),
        }
    }
}

/// Verifies that `leaf` chains through `intermediates` to `root` and is valid at `now`.
///
/// # Errors
/// [`ChainError`] saying why not.
pub fn verify(
    leaf: &[u8],
    intermediates: &[Vec<u8>],
    root: &[u8],
    now: OffsetDateTime,
    usage: Usage,
) -> Result<(), ChainError> {
    verify_any(leaf, intermediates, &[root], now, usage)
}

/// Verifies that `leaf` chains through `intermediates` to one of `roots` (during a root
/// rotation a verifier trusts two) and is valid at `now`.
///
/// # Errors
/// [`ChainError`] saying why not; [`ChainError::UnknownIssuer`] also when `roots` is
/// empty.
pub fn verify_any(
    leaf: &[u8],
    intermediates: &[Vec<u8>],
    roots: &[&[u8]],
    now: OffsetDateTime,
    usage: Usage,
) -> Result<(), ChainError> {
    let root_ders: Vec<CertificateDer<'_>> =
        roots.iter().map(|r| CertificateDer::from(*r)).collect();
    let anchors = root_ders
        .iter()
        .map(|r| anchor_from_trusted_cert(r).map_err(|e| ChainError::Invalid(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    if anchors.is_empty() {
        return Err(ChainError::UnknownIssuer);
    }
    let leaf_der = CertificateDer::from(leaf);
    let ee = EndEntityCert::try_from(&leaf_der).map_err(|e| ChainError::Invalid(e.to_string()))?;
    let inter: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|d| CertificateDer::from(d.as_slice()))
        .collect();
    let secs = u64::try_from(now.unix_timestamp()).unwrap_or(0);
    let time = UnixTime::since_unix_epoch(Duration::from_secs(secs));
    let usage = match usage {
        Usage::Server => KeyUsage::server_auth(),
        Usage::Client | Usage::Restricted(Access::Full) => KeyUsage::client_auth(),
        Usage::Restricted(level) => {
            // Required only if present, as webpki applies it to the intermediates too
            // (which carry no EKU); the leaf must name the level itself.
            if CertInfo::from_der(leaf).map(|i| i.access).ok() != Some(level) {
                return Err(ChainError::Invalid(format!(
                    "the certificate does not carry the {level} access EKU"
                )));
            }
            match level.eku_der() {
                Some(oid) => KeyUsage::required_if_present(oid),
                None => KeyUsage::client_auth(),
            }
        }
    };
    ee.verify_for_usage(ALGORITHMS, &anchors, &inter, time, usage, None, None)
        .map(|_| ())
        .map_err(|e| ChainError::from_webpki(e, leaf))
}

/// Verifies like [`verify`], but accepts a leaf that expired less than `grace` ago: it is
/// then checked as of its own last valid second. Used for renewals of nodes that were
/// offline past expiry, when the operator allows it.
///
/// # Errors
/// [`ChainError`]; [`ChainError::Expired`] once the grace is over.
pub fn verify_with_grace(
    leaf: &[u8],
    intermediates: &[Vec<u8>],
    root: &[u8],
    now: OffsetDateTime,
    usage: Usage,
    grace: Duration,
) -> Result<(), ChainError> {
    verify_any_with_grace(leaf, intermediates, &[root], now, usage, grace)
}

/// [`verify_with_grace`] against any of `roots`.
///
/// # Errors
/// [`ChainError`]; [`ChainError::Expired`] once the grace is over.
pub fn verify_any_with_grace(
    leaf: &[u8],
    intermediates: &[Vec<u8>],
    roots: &[&[u8]],
    now: OffsetDateTime,
    usage: Usage,
    grace: Duration,
) -> Result<(), ChainError> {
    match verify_any(leaf, intermediates, roots, now, usage) {
        Err(ChainError::Expired { not_after }) if !grace.is_zero() && now - not_after <= grace => {
            verify_any(leaf, intermediates, roots, not_after, usage)
        }
        other => other,
    }
}

/// Checks that `child` carries a valid signature by `parent`'s key.
///
/// # Errors
/// [`ChainError::Invalid`] when either does not parse, [`ChainError::BadSignature`] when
/// the signature does not verify.
pub fn verify_ca_signature(child: &[u8], parent: &[u8]) -> Result<(), ChainError> {
    let (_, child) =
        X509Certificate::from_der(child).map_err(|e| ChainError::Invalid(e.to_string()))?;
    let (_, parent) =
        X509Certificate::from_der(parent).map_err(|e| ChainError::Invalid(e.to_string()))?;
    child
        .verify_signature(Some(parent.public_key()))
        .map_err(|_| ChainError::BadSignature)
}

/// Why a chain was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("the certificate expired at {}", crate::duration::timestamp(*not_after))]
    Expired { not_after: OffsetDateTime },
    #[error("the certificate is not valid before {}", crate::duration::timestamp(*not_before))]
    NotYetValid { not_before: OffsetDateTime },
    #[error("the certificate was not issued by this CA (no valid signature chain to its root)")]
    UnknownIssuer,
    #[error("a signature in the chain does not verify")]
    BadSignature,
    #[error("the certificate is not allowed for this use (extended key usage)")]
    WrongUsage,
    #[error("invalid certificate chain: {0}")]
    Invalid(String),
}

impl ChainError {
    fn from_webpki(err: webpki::Error, leaf: &[u8]) -> Self {
        let info = CertInfo::from_der(leaf).ok();
        match err {
            webpki::Error::CertExpired { .. } => match info {
                Some(i) => ChainError::Expired {
                    not_after: i.not_after,
                },
                None => ChainError::Invalid("expired".into()),
            },
            webpki::Error::CertNotValidYet { .. } => match info {
                Some(i) => ChainError::NotYetValid {
                    not_before: i.not_before,
                },
                None => ChainError::Invalid("not yet valid".into()),
            },
            // A CA with the same names but other keys shows up as a signature failure
            // while webpki builds the path: to the caller both mean "not ours".
            webpki::Error::UnknownIssuer
            | webpki::Error::InvalidSignatureForPublicKey
            | webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
                ChainError::UnknownIssuer
            }
            webpki::Error::RequiredEkuNotFoundContext(_) => ChainError::WrongUsage,
            // webpki says the rest only in its debug text: say it in words.
            webpki::Error::BadDer | webpki::Error::BadDerTime | webpki::Error::TrailingData(_) => {
                ChainError::Invalid("a certificate in the chain is not well-formed DER".into())
            }
            webpki::Error::CaUsedAsEndEntity | webpki::Error::EndEntityUsedAsCa => {
                ChainError::Invalid(
                    "a CA certificate stands where a leaf belongs, or the reverse".into(),
                )
            }
            webpki::Error::InvalidCertValidity => {
                ChainError::Invalid("a certificate's validity ends before it starts".into())
            }
            webpki::Error::UnsupportedCriticalExtension => ChainError::Invalid(
                "a certificate carries a critical extension this client does not know".into(),
            ),
            webpki::Error::PathLenConstraintViolated
            | webpki::Error::NameConstraintViolation
            | webpki::Error::MaximumPathDepthExceeded => ChainError::Invalid(
                "the chain breaks a constraint of its CA certificates (path length or names)"
                    .into(),
            ),
            _ => ChainError::Invalid("the certificate chain does not verify".into()),
        }
    }
}
