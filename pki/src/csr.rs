//! Certificate signing requests: building them (clients) and checking them (the CA).
//!
//! The CA takes exactly two things from a CSR: the public key, after the CSR's signature
//! has been verified with it, and the requested DNS and IP names. Every other requested
//! extension (CA:true, key usages, URIs, anything) is ignored; the CA builds the leaf.

use std::net::IpAddr;

use rcgen::{CertificateParams, DistinguishedName, DnType, SanType};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ED25519};
use x509_parser::prelude::FromDer;

use crate::inspect::ip_from_bytes;
use crate::key::{KeyType, PrivateKey};
use crate::policy::{PolicyError, check_dns_name};

/// Largest CSR the CA parses. A P-256 CSR with a dozen names is well under 1 KiB.
pub const MAX_CSR_BYTES: usize = 16 * 1024;
/// Most DNS plus IP names one certificate may carry.
pub const MAX_SANS: usize = 100;

/// A CSR whose signature was verified, reduced to what the CA uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCsr {
    /// DER SubjectPublicKeyInfo; the key the leaf will certify.
    pub public_key_der: Vec<u8>,
    /// Algorithm of that key.
    pub key_type: KeyType,
    /// Requested DNS names, lower-case, de-duplicated, in request order.
    pub dns_names: Vec<String>,
    /// Requested IP addresses, de-duplicated, in request order.
    pub ip_addresses: Vec<IpAddr>,
    /// How many requested extensions or SAN entries were ignored (for the log).
    pub ignored: usize,
}

impl VerifiedCsr {
    /// Parses a DER CSR and verifies its signature with its own public key.
    ///
    /// # Errors
    /// [`CsrError::TooLarge`], [`CsrError::Malformed`], [`CsrError::BadSignature`],
    /// [`CsrError::UnsupportedKey`], [`CsrError::BadName`] or [`CsrError::TooManyNames`].
    pub fn from_der(der: &[u8]) -> Result<Self, CsrError> {
        if der.len() > MAX_CSR_BYTES {
            return Err(CsrError::TooLarge(der.len()));
        }
        let (rest, csr) = X509CertificationRequest::from_der(der)
            .map_err(|e| CsrError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CsrError::Malformed(
                "trailing bytes after the request".into(),
            ));
        }
        // Signature first: nothing from an unverified request is looked at further.
        csr.verify_signature().map_err(|_| CsrError::BadSignature)?;
        let spki = &csr.certification_request_info.subject_pki;
        let key_type = if spki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            if curve.as_ref() != Some(&OID_EC_P256) {
                return Err(CsrError::UnsupportedKey);
            }
            KeyType::P256
        } else if spki.algorithm.algorithm == OID_SIG_ED25519 {
            KeyType::Ed25519
        } else {
            return Err(CsrError::UnsupportedKey);
        };

        let mut out = VerifiedCsr {
            public_key_der: spki.raw.to_vec(),
            key_type,
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            ignored: 0,
        };
        for ext in csr.requested_extensions().into_iter().flatten() {
            let ParsedExtension::SubjectAlternativeName(san) = ext else {
                out.ignored += 1;
                continue;
            };
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(dns) => {
                        check_dns_name(dns).map_err(CsrError::BadName)?;
                        let dns = dns.trim_end_matches('.').to_ascii_lowercase();
                        if !out.dns_names.contains(&dns) {
                            out.dns_names.push(dns);
                        }
                    }
                    GeneralName::IPAddress(bytes) => {
                        let ip = ip_from_bytes(bytes).ok_or_else(|| {
                            CsrError::Malformed("an IP address SAN is not 4 or 16 bytes".into())
                        })?;
                        if !out.ip_addresses.contains(&ip) {
                            out.ip_addresses.push(ip);
                        }
                    }
                    _ => out.ignored += 1,
                }
            }
        }
        if out.dns_names.len() + out.ip_addresses.len() > MAX_SANS {
            return Err(CsrError::TooManyNames(
                out.dns_names.len() + out.ip_addresses.len(),
            ));
        }
        Ok(out)
    }
}

/// Builds a DER CSR for `key` with subject CN `name` and the given SANs.
///
/// # Errors
/// [`CsrError::BadName`] for a malformed DNS name, [`CsrError::Malformed`] when rcgen
/// cannot encode the request.
pub fn build(
    key: &PrivateKey,
    name: &str,
    dns_names: &[String],
    ips: &[IpAddr],
) -> Result<Vec<u8>, CsrError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    for dns in dns_names {
        check_dns_name(dns).map_err(CsrError::BadName)?;
        let ia5 = dns
            .clone()
            .try_into()
            .map_err(|_| CsrError::BadName(PolicyError::BadDnsName(dns.clone())))?;
        params.subject_alt_names.push(SanType::DnsName(ia5));
    }
    params
        .subject_alt_names
        .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    let csr = params
        .serialize_request(key.pair())
        .map_err(|e| CsrError::Malformed(e.to_string()))?;
    Ok(csr.der().to_vec())
}

/// Why a CSR was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    #[error("certificate request of {0} bytes is larger than the 16 KiB limit")]
    TooLarge(usize),
    #[error("malformed certificate request: {0}")]
    Malformed(String),
    #[error("the certificate request's signature does not verify with its own public key")]
    BadSignature,
    #[error("unsupported key in the certificate request: use ECDSA P-256 or Ed25519")]
    UnsupportedKey,
    #[error("{0}")]
    BadName(PolicyError),
    #[error("the certificate request asks for {0} names; at most 100 are allowed")]
    TooManyNames(usize),
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, IsCa, KeyUsagePurpose};

    #[test]
    fn accepts_a_well_formed_csr_and_reads_its_names() {
        let key = PrivateKey::generate(KeyType::P256).unwrap();
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let der = build(&key, "web-1", &["Web-1.Example.com".into()], &[ip]).unwrap();
        let csr = VerifiedCsr::from_der(&der).unwrap();
        assert_eq!(csr.public_key_der, key.public_key_der());
        assert_eq!(csr.dns_names, vec!["web-1.example.com"]);
        assert_eq!(csr.ip_addresses, vec![ip]);
        assert_eq!(csr.key_type, KeyType::P256);
    }

    #[test]
    fn accepts_ed25519_requests() {
        let key = PrivateKey::generate(KeyType::Ed25519).unwrap();
        let der = build(&key, "n", &[], &[]).unwrap();
        assert_eq!(
            VerifiedCsr::from_der(&der).unwrap().key_type,
            KeyType::Ed25519
        );
    }

    #[test]
    fn rejects_csr_signed_by_another_key() {
        // Same request body, signature from a different key: splice the signature.
        let a = PrivateKey::generate(KeyType::Ed25519).unwrap();
        let b = PrivateKey::generate(KeyType::Ed25519).unwrap();
        let der_a = build(&a, "n", &["x.example".into()], &[]).unwrap();
        let der_b = build(&b, "n", &["x.example".into()], &[]).unwrap();
        // Ed25519 signatures are the last 64 bytes of the DER.
        let mut forged = der_a.clone();
        let n = forged.len();
        forged[n - 64..].copy_from_slice(&der_b[der_b.len() - 64..]);
        assert_eq!(
            VerifiedCsr::from_der(&forged).unwrap_err(),
            CsrError::BadSignature
        );
    }

    #[test]
    fn rejects_malformed_der_and_trailing_bytes() {
        assert!(matches!(
            VerifiedCsr::from_der(b"not a csr"),
            Err(CsrError::Malformed(_))
        ));
        assert!(matches!(
            VerifiedCsr::from_der(&[]),
            Err(CsrError::Malformed(_))
        ));
        let key = PrivateKey::generate(KeyType::P256).unwrap();
        let mut der = build(&key, "n", &[], &[]).unwrap();
        der.push(0);
        assert!(matches!(
            VerifiedCsr::from_der(&der),
            Err(CsrError::Malformed(_))
        ));
    }

    #[test]
    fn rejects_oversized_requests() {
        let big = vec![0x30; MAX_CSR_BYTES + 1];
        assert_eq!(
            VerifiedCsr::from_der(&big).unwrap_err(),
            CsrError::TooLarge(MAX_CSR_BYTES + 1)
        );
    }

    #[test]
    fn ignores_requested_ca_and_key_usage_extensions() {
        let key = PrivateKey::generate(KeyType::P256).unwrap();
        let mut params = CertificateParams::new(vec!["a.example".to_string()]).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        params
            .subject_alt_names
            .push(SanType::URI("dtca://c/admin/evil".try_into().unwrap()));
        let der = params.serialize_request(key.pair()).unwrap().der().to_vec();
        let csr = VerifiedCsr::from_der(&der).unwrap();
        assert_eq!(csr.dns_names, vec!["a.example"]);
        assert!(csr.ignored >= 3, "ignored {}", csr.ignored);
    }

    #[test]
    fn rejects_wildcard_dns_requests() {
        let key = PrivateKey::generate(KeyType::P256).unwrap();
        let params = CertificateParams::new(vec!["*.example.com".to_string()]).unwrap();
        let der = params.serialize_request(key.pair()).unwrap().der().to_vec();
        assert!(matches!(
            VerifiedCsr::from_der(&der),
            Err(CsrError::BadName(_))
        ));
    }

    #[test]
    fn rejects_too_many_names() {
        let key = PrivateKey::generate(KeyType::P256).unwrap();
        let names: Vec<String> = (0..=MAX_SANS).map(|i| format!("n{i}.example")).collect();
        let der = build(&key, "n", &names, &[]).unwrap();
        assert_eq!(
            VerifiedCsr::from_der(&der).unwrap_err(),
            CsrError::TooManyNames(MAX_SANS + 1)
        );
    }
}
