//! Making CA certificates: the root and first intermediate at `ca-server init`, the next
//! intermediates as the active one ages, a new root at a root rotation, and the new root
//! cross-signed by the old one so that verifiers trusting only the old root accept the
//! new chain (as SwarmKit does).
//!
//! Every CA certificate gets a subject of its own (`<cluster> root CA <key id>`,
//! `<cluster> intermediate CA <key id>`): Go's and pyca's path building trip over two
//! roots that share a subject, and an intermediate's successor must never be mistaken for
//! it. Roots carry no path length constraint, so that a cross-signed successor fits under
//! them (old root -> cross-signed new root -> intermediate -> leaf); intermediates have
//! path length 0, cross certificates 1.
//!
//! A CA certificate starts [`BACKDATE`] before the moment it is meant to start (`start`)
//! and ends its lifetime after that moment, never after its issuer.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, IsCa, Issuer,
    KeyIdMethod, KeyUsagePurpose, SerialNumber, SubjectPublicKeyInfo,
};
use ring::rand::SystemRandom;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use super::AuthorityError;
use crate::identity::check_cluster;
use crate::inspect::CertInfo;
use crate::key::{KeyType, PrivateKey};
use crate::profile::{BACKDATE, INTERMEDIATE_LIFETIME, ROOT_LIFETIME};
use crate::serial::Serial;

/// Shortest intermediate lifetime `init` accepts: a leaf may live a third of it, and
/// X.509 counts whole seconds.
pub const MIN_INTERMEDIATE_LIFETIME: Duration = Duration::from_secs(60);

/// How long the CA certificates live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// Root CA lifetime (default 10 years).
    pub root: Duration,
    /// Lifetime of each intermediate (default 1 year). Leaves live at most a third of it.
    pub intermediate: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Lifetimes {
            root: ROOT_LIFETIME,
            intermediate: INTERMEDIATE_LIFETIME,
        }
    }
}

impl Lifetimes {
    /// Checks that the lifetimes make a CA that can renew itself: an intermediate of at
    /// least [`MIN_INTERMEDIATE_LIFETIME`], and a root that outlives at least two of them
    /// (the root rotation needs the old root while the new one spreads).
    ///
    /// # Errors
    /// A message saying which lifetime is wrong.
    pub fn check(&self) -> Result<(), String> {
        if self.intermediate < MIN_INTERMEDIATE_LIFETIME {
            return Err(format!(
                "the intermediate lifetime must be at least {}s",
                MIN_INTERMEDIATE_LIFETIME.as_secs()
            ));
        }
        if self.root < self.intermediate.saturating_mul(2) {
            return Err(
                "the root lifetime must be at least twice the intermediate lifetime".into(),
            );
        }
        Ok(())
    }
}

/// A freshly made root and intermediate with their keys.
#[derive(Debug)]
pub struct Hierarchy {
    /// Root certificate, DER: `ca.pem` for dockerd and clients.
    pub root_der: Vec<u8>,
    /// Root key; only needed to issue intermediates (and cross-sign a successor root).
    pub root_key: PrivateKey,
    /// Intermediate certificate, DER.
    pub intermediate_der: Vec<u8>,
    /// Intermediate key: signs every leaf.
    pub intermediate_key: PrivateKey,
}

/// Makes a new root and intermediate for `cluster` with the default lifetimes.
///
/// # Errors
/// As [`create_with`].
pub fn create(
    cluster: &str,
    key_type: KeyType,
    now: OffsetDateTime,
) -> Result<Hierarchy, AuthorityError> {
    create_with(cluster, key_type, now, Lifetimes::default())
}

/// Makes a new root and intermediate for `cluster`, both starting at `now`.
///
/// # Errors
/// [`AuthorityError::Certificate`] for a bad cluster name or lifetimes,
/// [`AuthorityError::Signing`] when key generation or signing fails.
pub fn create_with(
    cluster: &str,
    key_type: KeyType,
    now: OffsetDateTime,
    lifetimes: Lifetimes,
) -> Result<Hierarchy, AuthorityError> {
    lifetimes.check().map_err(AuthorityError::Certificate)?;
    let (root_der, root_key) = root(cluster, key_type, now, lifetimes.root)?;
    let (intermediate_der, intermediate_key) = intermediate(
        cluster,
        &root_der,
        &root_key,
        key_type,
        now,
        lifetimes.intermediate,
    )?;
    Ok(Hierarchy {
        root_der,
        root_key,
        intermediate_der,
        intermediate_key,
    })
}

/// A new self-signed root starting at `now`.
///
/// # Errors
/// [`AuthorityError::Certificate`] for a bad cluster name, [`AuthorityError::Signing`]
/// when key generation or signing fails.
pub fn root(
    cluster: &str,
    key_type: KeyType,
    now: OffsetDateTime,
    lifetime: Duration,
) -> Result<(Vec<u8>, PrivateKey), AuthorityError> {
    check_cluster(cluster).map_err(|e| AuthorityError::Certificate(e.to_string()))?;
    let start = super::truncate(now);
    let key = PrivateKey::generate(key_type).map_err(|e| sign_err(&e))?;
    let params = ca_params(
        &format!("{cluster} root CA {}", key_id(&key.public_key_der())),
        cluster,
        BasicConstraints::Unconstrained,
        start - BACKDATE,
        start + lifetime,
    )?;
    let issuer = Issuer::from_params(&params, key.pair());
    let cert = params
        .signed_by(key.pair(), &issuer)
        .map_err(|e| sign_err(&e))?;
    Ok((cert.der().to_vec(), key))
}

/// A new intermediate under `root_der` (whose key is `root_key`), meant to start signing
/// at `start` and to live `lifetime` from then, but never past the root.
///
/// # Errors
/// [`AuthorityError::Mismatch`] when the key is not the root's,
/// [`AuthorityError::IssuerExpired`] when the root ends before `start`,
/// [`AuthorityError::Signing`] when key generation or signing fails.
pub fn intermediate(
    cluster: &str,
    root_der: &[u8],
    root_key: &PrivateKey,
    key_type: KeyType,
    start: OffsetDateTime,
    lifetime: Duration,
) -> Result<(Vec<u8>, PrivateKey), AuthorityError> {
    let root = checked_issuer(root_der, root_key)?;
    let start = super::truncate(start);
    let not_after = (start + lifetime).min(root.not_after);
    if not_after <= start {
        return Err(AuthorityError::IssuerExpired {
            not_after: root.not_after,
        });
    }
    let key = PrivateKey::generate(key_type).map_err(|e| sign_err(&e))?;
    let params = ca_params(
        &format!(
            "{cluster} intermediate CA {}",
            key_id(&key.public_key_der())
        ),
        cluster,
        BasicConstraints::Constrained(0),
        (start - BACKDATE).max(root.not_before),
        not_after,
    )?;
    let root_cert = CertificateDer::from(root_der);
    let issuer = Issuer::from_ca_cert_der(&root_cert, root_key.pair())
        .map_err(|e| AuthorityError::Certificate(e.to_string()))?;
    let cert = params
        .signed_by(key.pair(), &issuer)
        .map_err(|e| sign_err(&e))?;
    Ok((cert.der().to_vec(), key))
}

/// The new root `new_root_der` cross-signed by the old root (`old_root_der`, its key
/// `old_key`): same subject and key as the new root, issued by the old one, valid from
/// `now` until the first of the two ends. Sent after a new intermediate in every chain
/// during a root rotation, it lets verifiers that trust only the old root reach it.
///
/// # Errors
/// [`AuthorityError::Mismatch`] when the key is not the old root's,
/// [`AuthorityError::Certificate`] when a certificate cannot be read,
/// [`AuthorityError::Signing`] when signing fails.
pub fn cross_sign(
    new_root_der: &[u8],
    old_root_der: &[u8],
    old_key: &PrivateKey,
    now: OffsetDateTime,
) -> Result<Vec<u8>, AuthorityError> {
    let old = checked_issuer(old_root_der, old_key)?;
    let new =
        CertInfo::from_der(new_root_der).map_err(|e| AuthorityError::Certificate(e.to_string()))?;
    let now = super::truncate(now);
    let not_after = new.not_after.min(old.not_after);
    if not_after <= now {
        return Err(AuthorityError::IssuerExpired {
            not_after: old.not_after,
        });
    }
    let mut params = ca_params(
        "",
        "",
        BasicConstraints::Constrained(1),
        (now - BACKDATE).max(old.not_before),
        not_after,
    )?;
    // The subject is the new root's, attribute by attribute with its string types, so that
    // verifiers comparing names byte for byte see one name (checked below).
    params.distinguished_name = subject_of(new_root_der)?;
    let public = SubjectPublicKeyInfo::from_der(&new.public_key_der)
        .map_err(|e| AuthorityError::Certificate(e.to_string()))?;
    let old_cert = CertificateDer::from(old_root_der);
    let issuer = Issuer::from_ca_cert_der(&old_cert, old_key.pair())
        .map_err(|e| AuthorityError::Certificate(e.to_string()))?;
    let cert = params
        .signed_by(&public, &issuer)
        .map_err(|e| sign_err(&e))?;
    let der = cert.der().to_vec();
    if crate::inspect::subject_der(&der) != crate::inspect::subject_der(new_root_der) {
        return Err(AuthorityError::Mismatch(
            "the cross certificate's subject is not encoded as the new root's",
        ));
    }
    Ok(der)
}

/// The subject of a certificate as rcgen writes it: each attribute with its string type.
fn subject_of(der: &[u8]) -> Result<DistinguishedName, AuthorityError> {
    use x509_parser::der_parser::asn1_rs::Tag;
    use x509_parser::prelude::FromDer;
    let bad = |what: &str| AuthorityError::Certificate(format!("root subject: {what}"));
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
        .map_err(|e| AuthorityError::Certificate(e.to_string()))?;
    let mut dn = DistinguishedName::new();
    for rdn in cert.subject().iter() {
        let mut attrs = rdn.iter();
        let (Some(attr), None) = (attrs.next(), attrs.next()) else {
            return Err(bad("one attribute per name component expected"));
        };
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or_else(|| bad("attribute type"))?
            .collect();
        let text = std::str::from_utf8(attr.attr_value().data).map_err(|_| bad("not text"))?;
        let value = match attr.attr_value().header.tag() {
            Tag::Utf8String => DnValue::Utf8String(text.to_string()),
            Tag::PrintableString => {
                DnValue::PrintableString(text.try_into().map_err(|_| bad("printable string"))?)
            }
            Tag::Ia5String => DnValue::Ia5String(text.try_into().map_err(|_| bad("IA5 string"))?),
            _ => return Err(bad("unsupported string type")),
        };
        dn.push(DnType::from_oid(&oid), value);
    }
    Ok(dn)
}

/// Eight hex digits of the SHA-256 of a public key: what tells two CA subjects apart.
fn key_id(public_key_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, public_key_der);
    data_encoding::HEXLOWER.encode(&digest.as_ref()[..4])
}

/// The issuer's certificate, checked to be a CA whose key is `key`.
fn checked_issuer(der: &[u8], key: &PrivateKey) -> Result<CertInfo, AuthorityError> {
    let info = CertInfo::from_der(der).map_err(|e| AuthorityError::Certificate(e.to_string()))?;
    if !info.is_ca {
        return Err(AuthorityError::Mismatch(
            "the issuer is not a CA certificate",
        ));
    }
    if info.public_key_der != key.public_key_der() {
        return Err(AuthorityError::Mismatch(
            "the key does not match the issuing CA certificate",
        ));
    }
    Ok(info)
}

fn sign_err(e: &dyn std::fmt::Display) -> AuthorityError {
    AuthorityError::Signing(e.to_string())
}

fn ca_key_usages() -> Vec<KeyUsagePurpose> {
    vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ]
}

fn ca_params(
    common_name: &str,
    cluster: &str,
    constraints: BasicConstraints,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, AuthorityError> {
    let serial = Serial::random(&SystemRandom::new()).map_err(|e| sign_err(&e))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, cluster);
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(SerialNumber::from_slice(serial.as_bytes()));
    params.is_ca = IsCa::Ca(constraints);
    params.key_usages = ca_key_usages();
    params.extended_key_usages = Vec::new();
    params.subject_alt_names = Vec::new();
    params.use_authority_key_identifier_extension = true;
    params.key_identifier_method = KeyIdMethod::Sha256;
    Ok(params)
}
