//! Post-signing checks: the leaf is parsed again and must say exactly what the template
//! and profile decided, in the form strict validators (webpki, Go, pyca) expect.
//!
//! The leaf's signature is not verified again here: that would cost one more ECDSA verify
//! per certificate (about as much as the CSR check) to catch a fault in ring's signer,
//! while every field a peer acts on is checked.

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER, OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
};
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Version;

use super::LeafTemplate;
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
/// A description of the first field that differs.
pub fn leaf(der: &[u8], want: &Expected<'_>) -> Result<CertInfo, String> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("does not parse: {e}"))?;
    if !rest.is_empty() {
        return Err("trailing bytes".into());
    }
    check(cert.version() == X509Version::V3, "not version 3")?;
    check(
        cert.signature_algorithm == cert.tbs_certificate.signature,
        "inner and outer signature algorithms differ",
    )?;
    let info = CertInfo::from_parsed(&cert);
    check(&info.serial == want.serial, "serial differs")?;
    check(
        info.issuer == want.issuer.subject,
        "issuer name is not the intermediate's subject",
    )?;
    check(
        info.authority_key_id.is_some() && info.authority_key_id == want.issuer.subject_key_id,
        "authority key identifier missing or not the intermediate's",
    )?;
    check(
        info.subject_key_id.is_some(),
        "subject key identifier missing",
    )?;
    check(
        info.not_before == want.not_before && info.not_after == want.not_after,
        "validity differs",
    )?;
    check(
        info.not_after <= want.issuer.not_after,
        "outlives its issuer",
    )?;
    check(
        info.public_key_der == want.template.public_key_der,
        "public key differs",
    )?;
    check(!info.is_ca, "CA flag set")?;
    check(
        info.identity.as_ref() == Some(&want.template.identity),
        "identity URI missing or different",
    )?;
    check(
        info.dns_names == want.template.dns_names,
        "DNS names differ",
    )?;
    check(
        info.ip_addresses == want.template.ip_addresses,
        "IP addresses differ",
    )?;

    let mut seen_bc = false;
    let mut seen_ku = false;
    let mut seen_eku = false;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::BasicConstraints(bc) => {
                check(
                    ext.critical && !bc.ca,
                    "basicConstraints must be critical with CA:false",
                )?;
                seen_bc = true;
            }
            ParsedExtension::KeyUsage(ku) => {
                check(
                    ext.critical && ku.flags == 1,
                    "keyUsage must be critical digitalSignature only",
                )?;
                seen_ku = true;
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                check(
                    eku.server_auth == want.profile.server_auth
                        && eku.client_auth == want.profile.client_auth
                        && !eku.any
                        && !eku.code_signing
                        && !eku.email_protection
                        && !eku.time_stamping
                        && !eku.ocsp_signing
                        && eku.other.is_empty(),
                    "extended key usage is not the role's",
                )?;
                seen_eku = true;
            }
            ParsedExtension::SubjectAlternativeName(san) => {
                check(
                    !ext.critical,
                    "SAN must not be critical when the subject is set",
                )?;
                check(
                    san.general_names.iter().all(|n| {
                        matches!(
                            n,
                            GeneralName::URI(_)
                                | GeneralName::DNSName(_)
                                | GeneralName::IPAddress(_)
                        )
                    }),
                    "unexpected SAN type",
                )?;
            }
            _ => {
                let oid = &ext.oid;
                check(
                    *oid == OID_X509_EXT_SUBJECT_KEY_IDENTIFIER
                        || *oid == OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER,
                    "unexpected extension",
                )?;
                check(!ext.critical, "key identifier marked critical")?;
            }
        }
    }
    check(
        seen_bc && seen_ku && seen_eku,
        "basicConstraints, keyUsage or EKU missing",
    )?;
    Ok(info)
}

fn check(ok: bool, what: &str) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what.to_string()) }
}
