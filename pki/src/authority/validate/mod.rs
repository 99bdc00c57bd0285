//! Post-signing checks: the leaf is parsed again and must say exactly what the template
//! and profile decided, in the form strict validators (webpki, Go, pyca) expect.
//!
//! Each check refuses with its own [`LeafMismatch`] variant, so a test can tamper with one
//! field and see that one check refuse it.
//!
//! The leaf's signature is not verified again here: that would cost one more ECDSA verify
//! per certificate (about as much as the CSR check) to catch a fault in ring's signer,
//! while every field a peer acts on is checked.

use std::net::IpAddr;

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER, OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
};
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Version;

use super::LeafTemplate;
use crate::duration::timestamp;
use crate::inspect::CertInfo;
use crate::profile::Profile;
use crate::serial::Serial;

/// What the signed leaf must say.
#[derive(Debug)]
pub struct Expected<'a> {
    /// The template it was built from.
    pub template: &'a LeafTemplate,
    /// The role's profile.
    pub profile: &'a Profile,
    /// The serial chosen for it.
    pub serial: &'a Serial,
    /// Validity chosen for it.
    pub not_before: OffsetDateTime,
    /// Validity chosen for it.
    pub not_after: OffsetDateTime,
    /// The issuing intermediate.
    pub issuer: &'a CertInfo,
}

/// Checks a freshly signed leaf against what was decided, and returns its parsed fields.
///
/// # Errors
/// The [`LeafMismatch`] of the first check that fails.
pub fn leaf(der: &[u8], want: &Expected<'_>) -> Result<CertInfo, LeafMismatch> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| LeafMismatch::Unparsable(e.to_string()))?;
    if !rest.is_empty() {
        return Err(LeafMismatch::TrailingBytes { len: rest.len() });
    }
    if cert.version() != X509Version::V3 {
        return Err(LeafMismatch::Version {
            found: cert.version().0,
        });
    }
    if cert.signature_algorithm != cert.tbs_certificate.signature {
        return Err(LeafMismatch::SignatureAlgorithms);
    }
    let info = CertInfo::from_parsed(&cert);
    if &info.serial != want.serial {
        return Err(LeafMismatch::Serial {
            expected: want.serial.clone(),
            found: info.serial,
        });
    }
    if info.issuer != want.issuer.subject {
        return Err(LeafMismatch::Issuer { found: info.issuer });
    }
    if info.authority_key_id.is_none() || info.authority_key_id != want.issuer.subject_key_id {
        return Err(LeafMismatch::AuthorityKeyId);
    }
    if info.subject_key_id.is_none() {
        return Err(LeafMismatch::SubjectKeyId);
    }
    if info.not_before != want.not_before || info.not_after != want.not_after {
        return Err(LeafMismatch::Validity {
            not_before: info.not_before,
            not_after: info.not_after,
        });
    }
    if info.not_after > want.issuer.not_after {
        return Err(LeafMismatch::OutlivesIssuer {
            not_after: info.not_after,
            issuer_not_after: want.issuer.not_after,
        });
    }
    if info.public_key_der != want.template.public_key_der {
        return Err(LeafMismatch::PublicKey);
    }
    if info.is_ca {
        return Err(LeafMismatch::CaFlag);
    }
    if info.access != want.profile.access {
        return Err(LeafMismatch::ExtendedKeyUsage);
    }
    if info.identity.as_ref() != Some(&want.template.identity) {
        return Err(LeafMismatch::Identity);
    }
    if info.dns_names != want.template.dns_names {
        return Err(LeafMismatch::DnsNames {
            found: info.dns_names,
        });
    }
    if info.ip_addresses != want.template.ip_addresses {
        return Err(LeafMismatch::IpAddresses {
            found: info.ip_addresses,
        });
    }

    let mut seen_bc = false;
    let mut seen_ku = false;
    let mut seen_eku = false;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::BasicConstraints(bc) => {
                if !ext.critical || bc.ca {
                    return Err(LeafMismatch::BasicConstraints);
                }
                seen_bc = true;
            }
            ParsedExtension::KeyUsage(ku) => {
                if !ext.critical || ku.flags != 1 {
                    return Err(LeafMismatch::KeyUsage);
                }
                seen_ku = true;
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                let roles = eku.server_auth == want.profile.server_auth
                    && eku.client_auth == want.profile.client_auth;
                // A restricted operator's one EKU, and nothing else outside the roles.
                let level = match want.profile.access.eku_der() {
                    Some(der) => eku.other.len() == 1 && eku.other[0].as_bytes() == der,
                    None => eku.other.is_empty(),
                };
                let others = eku.any
                    || eku.code_signing
                    || eku.email_protection
                    || eku.time_stamping
                    || eku.ocsp_signing
                    || !level;
                if !roles || others {
                    return Err(LeafMismatch::ExtendedKeyUsage);
                }
                seen_eku = true;
            }
            ParsedExtension::SubjectAlternativeName(san) => {
                if ext.critical {
                    return Err(LeafMismatch::SanCritical);
                }
                let known = san.general_names.iter().all(|n| {
                    matches!(
                        n,
                        GeneralName::URI(_) | GeneralName::DNSName(_) | GeneralName::IPAddress(_)
                    )
                });
                if !known {
                    return Err(LeafMismatch::SanType);
                }
            }
            _ => {
                let oid = &ext.oid;
                if *oid != OID_X509_EXT_SUBJECT_KEY_IDENTIFIER
                    && *oid != OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER
                {
                    return Err(LeafMismatch::UnexpectedExtension {
                        oid: oid.to_id_string(),
                    });
                }
                if ext.critical {
                    return Err(LeafMismatch::KeyIdCritical);
                }
            }
        }
    }
    for (seen, which) in [
        (seen_bc, "basicConstraints"),
        (seen_ku, "keyUsage"),
        (seen_eku, "extendedKeyUsage"),
    ] {
        if !seen {
            return Err(LeafMismatch::MissingExtension { which });
        }
    }
    Ok(info)
}

/// The first field of a freshly signed leaf that is not what the CA decided. Whichever it
/// is, signing went wrong (never the caller's fault) and the leaf does not leave the CA.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeafMismatch {
    #[error("does not parse: {0}")]
    Unparsable(String),
    #[error("{len} trailing bytes after the certificate")]
    TrailingBytes { len: usize },
    #[error("not version 3 (version field {found})")]
    Version { found: u32 },
    #[error("inner and outer signature algorithms differ")]
    SignatureAlgorithms,
    #[error("serial {found} is not the chosen {expected}")]
    Serial { expected: Serial, found: Serial },
    #[error("issuer name {found:?} is not the intermediate's subject")]
    Issuer { found: String },
    #[error("authority key identifier missing or not the intermediate's")]
    AuthorityKeyId,
    #[error("subject key identifier missing")]
    SubjectKeyId,
    #[error(
        "validity {} to {} is not the chosen one",
        timestamp(*not_before),
        timestamp(*not_after)
    )]
    Validity {
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    },
    #[error(
        "outlives its issuer (valid until {}, the intermediate until {})",
        timestamp(*not_after),
        timestamp(*issuer_not_after)
    )]
    OutlivesIssuer {
        not_after: OffsetDateTime,
        issuer_not_after: OffsetDateTime,
    },
    #[error("public key is not the request's")]
    PublicKey,
    #[error("CA flag set")]
    CaFlag,
    #[error("identity URI missing or different")]
    Identity,
    #[error("DNS names {found:?} are not the checked ones")]
    DnsNames { found: Vec<String> },
    #[error("IP addresses {found:?} are not the checked ones")]
    IpAddresses { found: Vec<IpAddr> },
    #[error("basicConstraints must be critical with CA:false")]
    BasicConstraints,
    #[error("keyUsage must be critical digitalSignature only")]
    KeyUsage,
    #[error("extended key usage is not the role's")]
    ExtendedKeyUsage,
    #[error("SAN must not be critical when the subject is set")]
    SanCritical,
    #[error("unexpected SAN type")]
    SanType,
    #[error("unexpected extension {oid}")]
    UnexpectedExtension { oid: String },
    #[error("key identifier marked critical")]
    KeyIdCritical,
    #[error("{which} missing")]
    MissingExtension { which: &'static str },
}

#[cfg(test)]
mod tests;
