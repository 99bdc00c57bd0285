//! Reading certificates: PEM bundles and the fields dtca cares about.

use std::net::IpAddr;

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::access::Access;
use crate::identity::Identity;
use crate::serial::Serial;

/// PEM label of certificates.
pub const CERT_LABEL: &str = "CERTIFICATE";

/// What dtca reads from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Serial number.
    pub serial: Serial,
    /// The `dtca://` URI SAN, when there is exactly one well-formed one.
    pub identity: Option<Identity>,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// IP SANs.
    pub ip_addresses: Vec<IpAddr>,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// basicConstraints CA flag.
    pub is_ca: bool,
    /// Subject DN, RFC 4514 style.
    pub subject: String,
    /// Issuer DN, RFC 4514 style.
    pub issuer: String,
    /// DER SubjectPublicKeyInfo.
    pub public_key_der: Vec<u8>,
    /// EKU serverAuth present.
    pub server_auth: bool,
    /// EKU clientAuth present.
    pub client_auth: bool,
    /// The operator access level its EKU names (full when it names none; see
    /// [`Access::of_ekus`]).
    pub access: Access,
    /// Subject key identifier, when present.
    pub subject_key_id: Option<Vec<u8>>,
    /// Authority key identifier, when present.
    pub authority_key_id: Option<Vec<u8>>,
}

impl CertInfo {
    /// Parses one DER certificate.
    ///
    /// # Errors
    /// [`InspectError::Malformed`] when the bytes are not exactly one X.509 certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, InspectError> {
        let (rest, cert) =
            X509Certificate::from_der(der).map_err(|e| InspectError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(InspectError::Malformed(
                "trailing bytes after the certificate".into(),
            ));
        }
        Ok(Self::from_parsed(&cert))
    }

    pub(crate) fn from_parsed(cert: &X509Certificate<'_>) -> Self {
        let mut info = CertInfo {
            serial: Serial::from_be_bytes(cert.raw_serial()),
            identity: None,
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
            is_ca: false,
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            public_key_der: cert.public_key().raw.to_vec(),
            server_auth: false,
            client_auth: false,
            access: Access::Full,
            subject_key_id: None,
            authority_key_id: None,
        };
        let mut uris = Vec::new();
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    for name in &san.general_names {
                        match name {
                            GeneralName::DNSName(d) => info.dns_names.push(d.to_string()),
                            GeneralName::IPAddress(b) => {
                                if let Some(ip) = ip_from_bytes(b) {
                                    info.ip_addresses.push(ip);
                                }
                            }
                            GeneralName::URI(u) => uris.push(u.to_string()),
                            _ => {}
                        }
                    }
                }
                ParsedExtension::BasicConstraints(bc) => info.is_ca = bc.ca,
                ParsedExtension::ExtendedKeyUsage(eku) => {
                    info.server_auth = eku.server_auth;
                    info.client_auth = eku.client_auth;
                    info.access = Access::of_ekus(eku.other.iter().map(|o| o.as_bytes()));
                }
                ParsedExtension::SubjectKeyIdentifier(ski) => {
                    info.subject_key_id = Some(ski.0.to_vec());
                }
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    info.authority_key_id = aki.key_identifier.as_ref().map(|k| k.0.to_vec());
                }
                _ => {}
            }
        }
        let ids: Vec<Identity> = uris
            .iter()
            .filter_map(|u| Identity::from_uri(u).ok())
            .collect();
        if ids.len() == 1 {
            info.identity = ids.into_iter().next();
        }
        info
    }

    /// Seconds from `now` until expiry (negative once expired).
    pub fn seconds_left(&self, now: OffsetDateTime) -> i64 {
        (self.not_after - now).whole_seconds()
    }
}

/// The DER encoding of a certificate's subject name (what TLS servers list as acceptable
/// client certificate issuers).
pub fn subject_der(der: &[u8]) -> Option<Vec<u8>> {
    X509Certificate::from_der(der)
        .ok()
        .map(|(_, cert)| cert.tbs_certificate.subject.as_raw().to_vec())
}

/// Reads every `CERTIFICATE` block of a PEM text, in order, as DER.
///
/// # Errors
/// [`InspectError::Pem`] when the text has no certificate or a block is broken;
/// [`InspectError::Malformed`] when a block is not a certificate.
pub fn certs_from_pem(text: &str) -> Result<Vec<Vec<u8>>, InspectError> {
    let blocks = pem::parse_many(text).map_err(|e| InspectError::Pem(e.to_string()))?;
    let certs: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| b.tag() == CERT_LABEL)
        .map(|b| b.into_contents())
        .collect();
    if certs.is_empty() {
        return Err(InspectError::Pem("no CERTIFICATE block found".into()));
    }
    for der in &certs {
        CertInfo::from_der(der)?;
    }
    Ok(certs)
}

/// The serials a CRL lists, once its signature is checked against `issuer_der` (the
/// certificate that signed it).
///
/// # Errors
/// [`InspectError::Malformed`] when either is not what it should be, or the signature
/// does not verify.
pub fn revoked_serials(crl_der: &[u8], issuer_der: &[u8]) -> Result<Vec<Serial>, InspectError> {
    read_crl(crl_der, issuer_der).map(|c| c.revoked)
}

/// What a CRL says, once its signature is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlInfo {
    /// The serials it lists.
    pub revoked: Vec<Serial>,
    /// Its thisUpdate.
    pub this_update: OffsetDateTime,
}

/// Reads a CRL signed by `issuer_der`.
///
/// # Errors
/// As [`revoked_serials`].
pub fn read_crl(crl_der: &[u8], issuer_der: &[u8]) -> Result<CrlInfo, InspectError> {
    use x509_parser::revocation_list::CertificateRevocationList;
    let (_, crl) = CertificateRevocationList::from_der(crl_der)
        .map_err(|e| InspectError::Malformed(format!("CRL: {e}")))?;
    let (_, issuer) = X509Certificate::from_der(issuer_der)
        .map_err(|e| InspectError::Malformed(e.to_string()))?;
    crl.verify_signature(issuer.public_key())
        .map_err(|e| InspectError::Malformed(format!("CRL signature: {e}")))?;
    Ok(CrlInfo {
        revoked: crl
            .iter_revoked_certificates()
            .map(|r| Serial::from_be_bytes(r.raw_serial()))
            .collect(),
        this_update: crl.last_update().to_datetime(),
    })
}

/// Encodes DER certificates as one PEM text, in order.
pub fn certs_to_pem<'a>(ders: impl IntoIterator<Item = &'a [u8]>) -> String {
    let blocks: Vec<pem::Pem> = ders
        .into_iter()
        .map(|der| pem::Pem::new(CERT_LABEL, der.to_vec()))
        .collect();
    pem::encode_many_config(
        &blocks,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

pub(crate) fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// A certificate or PEM text that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InspectError {
    #[error("malformed certificate: {0}")]
    Malformed(String),
    #[error("malformed PEM: {0}")]
    Pem(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage_pem_and_der() {
        assert!(certs_from_pem("hello").is_err());
        assert!(certs_from_pem("").is_err());
        let fake = pem::encode(&pem::Pem::new(CERT_LABEL, vec![0x30, 0x03, 1, 2, 3]));
        assert!(matches!(
            certs_from_pem(&fake),
            Err(InspectError::Malformed(_))
        ));
        assert!(CertInfo::from_der(&[0xff; 40]).is_err());
    }
}
