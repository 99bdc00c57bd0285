//! The two-tier hierarchy made by `ca-server init`: an offline-grade root (10 years) and
//! the online intermediate (1 year) that signs leaves.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyIdMethod,
    KeyUsagePurpose, SerialNumber,
};
use ring::rand::SystemRandom;
use time::OffsetDateTime;

use super::AuthorityError;
use crate::identity::check_cluster;
use crate::key::{KeyType, PrivateKey};
use crate::profile::{BACKDATE, INTERMEDIATE_LIFETIME, ROOT_LIFETIME};
use crate::serial::Serial;

/// A freshly made root and intermediate with their keys.
#[derive(Debug)]
pub struct Hierarchy {
    /// Root certificate, DER: `ca.pem` for dockerd and clients.
    pub root_der: Vec<u8>,
    /// Root key; only needed to re-issue the intermediate.
    pub root_key: PrivateKey,
    /// Intermediate certificate, DER.
    pub intermediate_der: Vec<u8>,
    /// Intermediate key: signs every leaf.
    pub intermediate_key: PrivateKey,
}

/// Makes a new root and intermediate for `cluster`.
///
/// # Errors
/// [`AuthorityError::Certificate`] for a bad cluster name, [`AuthorityError::Signing`]
/// when key generation or signing fails.
pub fn create(
    cluster: &str,
    key_type: KeyType,
    now: OffsetDateTime,
) -> Result<Hierarchy, AuthorityError> {
    check_cluster(cluster).map_err(|e| AuthorityError::Certificate(e.to_string()))?;
    let now = super::truncate(now);
    let rng = SystemRandom::new();
    let sign_err = |e: &dyn std::fmt::Display| AuthorityError::Signing(e.to_string());

    let root_key = PrivateKey::generate(key_type).map_err(|e| sign_err(&e))?;
    let root_not_after = now + ROOT_LIFETIME;
    let root_params = ca_params(
        &format!("{cluster} root CA"),
        cluster,
        1,
        now - BACKDATE,
        root_not_after,
        &Serial::random(&rng).map_err(|e| sign_err(&e))?,
    );
    let root_issuer = Issuer::from_params(&root_params, root_key.pair());
    let root = root_params
        .signed_by(root_key.pair(), &root_issuer)
        .map_err(|e| sign_err(&e))?;

    let intermediate_key = PrivateKey::generate(key_type).map_err(|e| sign_err(&e))?;
    let intermediate_params = ca_params(
        &format!("{cluster} intermediate CA"),
        cluster,
        0,
        now - BACKDATE,
        (now + INTERMEDIATE_LIFETIME).min(root_not_after),
        &Serial::random(&rng).map_err(|e| sign_err(&e))?,
    );
    let intermediate = intermediate_params
        .signed_by(intermediate_key.pair(), &root_issuer)
        .map_err(|e| sign_err(&e))?;

    Ok(Hierarchy {
        root_der: root.der().to_vec(),
        root_key,
        intermediate_der: intermediate.der().to_vec(),
        intermediate_key,
    })
}

fn ca_params(
    common_name: &str,
    cluster: &str,
    path_len: u8,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    serial: &Serial,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, cluster);
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(SerialNumber::from_slice(serial.as_bytes()));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.extended_key_usages = Vec::new();
    params.subject_alt_names = Vec::new();
    params.use_authority_key_identifier_extension = true;
    params.key_identifier_method = KeyIdMethod::Sha256;
    params
}
