//! The certificate authority's heart: bytes and `now` in, bytes out.
//!
//! Issuance is template -> sign -> validate. The template comes only from what the CA
//! decided (identity, profile, checked names, lifetime); from the request it takes the
//! public key. After signing, the leaf is parsed again and every field checked
//! ([`validate`]) before it may leave the process.
//!
//! - [`hierarchy`]: making CA certificates: root and intermediate at `init`, the next
//!   intermediates, a new root and its cross-signature at a root rotation.
//! - [`schedule`]: when an intermediate hands over to its successor, and how long a leaf
//!   may live.
//! - [`lineage`]: the CA's roots and intermediates over time: which signs now, which
//!   roots to trust, what goes in a chain, what to do next.
//! - [`validate`]: the post-signing checks.

pub mod hierarchy;
pub mod lineage;
pub mod schedule;
pub mod validate;

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use ring::rand::SystemRandom;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::access::{self, Access};
use crate::identity::{Identity, Role};
use crate::inspect::CertInfo;
use crate::key::PrivateKey;
use crate::profile::{BACKDATE, Profile};
use crate::serial::Serial;
use schedule::Schedule;

/// What the CA has decided a leaf should say; built by the server from a verified CSR and
/// the caller's token or certificate, never from requested extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafTemplate {
    /// Goes into the URI SAN and the subject.
    pub identity: Identity,
    /// DER SubjectPublicKeyInfo from the verified CSR.
    pub public_key_der: Vec<u8>,
    /// Checked DNS SANs (nodes only).
    pub dns_names: Vec<String>,
    /// Checked IP SANs (nodes only).
    pub ip_addresses: Vec<IpAddr>,
    /// The operator's access level ([`Access::Full`] for every other role).
    pub access: Access,
    /// Asked lifetime; capped by the role's profile, the intermediate's leaf cap (a third
    /// of its life, see [`schedule`]) and the intermediate's expiry.
    pub lifetime: Duration,
}

/// A signed, validated leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedLeaf {
    /// The leaf, DER.
    pub der: Vec<u8>,
    /// Its parsed fields.
    pub info: CertInfo,
}

/// The online signing authority: the intermediate's key, its certificate and the root.
pub struct Authority {
    cluster: String,
    root_der: Vec<u8>,
    intermediate_der: Vec<u8>,
    intermediate: CertInfo,
    schedule: Schedule,
    issuer: Issuer<'static, KeyPair>,
    rng: SystemRandom,
}

impl Authority {
    /// Loads the authority, checking that the pieces belong together: the key is the
    /// intermediate's, the intermediate is a CA issued by the root, and the root is a CA.
    ///
    /// # Errors
    /// [`AuthorityError::Mismatch`] naming what does not fit, or
    /// [`AuthorityError::Certificate`] when a certificate cannot be parsed.
    pub fn new(
        cluster: &str,
        root_der: Vec<u8>,
        intermediate_der: Vec<u8>,
        intermediate_key: PrivateKey,
    ) -> Result<Self, AuthorityError> {
        let root = CertInfo::from_der(&root_der)
            .map_err(|e| AuthorityError::Certificate(e.to_string()))?;
        let intermediate = CertInfo::from_der(&intermediate_der)
            .map_err(|e| AuthorityError::Certificate(e.to_string()))?;
        if !root.is_ca || !intermediate.is_ca {
            return Err(AuthorityError::Mismatch(
                "the root or intermediate is not a CA certificate",
            ));
        }
        if intermediate.public_key_der != intermediate_key.public_key_der() {
            return Err(AuthorityError::Mismatch(
                "the intermediate key does not match its certificate",
            ));
        }
        if intermediate.issuer != root.subject
            || intermediate.authority_key_id != root.subject_key_id
        {
            return Err(AuthorityError::Mismatch(
                "the intermediate was not issued by this root",
            ));
        }
        crate::chain::verify_ca_signature(&intermediate_der, &root_der).map_err(|_| {
            AuthorityError::Mismatch("the intermediate's signature does not verify with the root")
        })?;
        let issuer = Issuer::from_ca_cert_der(
            &CertificateDer::from(intermediate_der.as_slice()),
            intermediate_key.into_pair(),
        )
        .map_err(|e| AuthorityError::Certificate(e.to_string()))?;
        Ok(Authority {
            cluster: cluster.to_string(),
            root_der,
            intermediate_der,
            schedule: Schedule::of(&intermediate),
            intermediate,
            issuer,
            rng: SystemRandom::new(),
        })
    }

    /// Cluster name, as in every identity this CA issues.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The root certificate, DER.
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// The intermediate certificate, DER.
    pub fn intermediate_der(&self) -> &[u8] {
        &self.intermediate_der
    }

    /// When the intermediate (and so every leaf) stops being valid.
    pub fn intermediate_not_after(&self) -> OffsetDateTime {
        self.intermediate.not_after
    }

    /// The intermediate's parsed fields.
    pub fn intermediate(&self) -> &CertInfo {
        &self.intermediate
    }

    /// The intermediate's schedule: its leaf cap and when its successor takes over.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Builds, signs and validates a leaf.
    ///
    /// # Errors
    /// [`AuthorityError::WrongCluster`] for an identity of another cluster,
    /// [`AuthorityError::IssuerExpired`] when the intermediate has expired,
    /// [`AuthorityError::Signing`] or [`AuthorityError::Validation`] (naming the field
    /// that came out wrong) when signing went wrong (never the caller's fault).
    pub fn issue(
        &self,
        template: &LeafTemplate,
        now: OffsetDateTime,
    ) -> Result<IssuedLeaf, AuthorityError> {
        if template.identity.cluster != self.cluster {
            return Err(AuthorityError::WrongCluster(
                template.identity.cluster.clone(),
            ));
        }
        // X.509 times have whole seconds; decide in whole seconds so validation compares
        // like with like.
        let now = truncate(now);
        let role = template.identity.role;
        let profile = Profile::of(role).with_access(template.access).ok_or(
            AuthorityError::AccessForRole {
                role,
                access: template.access,
            },
        )?;
        let not_before = (now - BACKDATE).max(self.intermediate.not_before);
        let lifetime = profile
            .lifetime(Some(template.lifetime))
            .min(self.schedule.leaf_cap);
        let not_after = (now + lifetime).min(self.intermediate.not_after);
        if not_after <= now {
            return Err(AuthorityError::IssuerExpired {
                not_after: self.intermediate.not_after,
            });
        }
        let serial = Serial::in_issue_order(&self.rng, now)
            .map_err(|e| AuthorityError::Signing(e.to_string()))?;
        let params = leaf_params(template, &profile, &serial, not_before, not_after)?;
        let public_key = SubjectPublicKeyInfo::from_der(&template.public_key_der)
            .map_err(|e| AuthorityError::Signing(format!("public key: {e}")))?;
        let cert = params
            .signed_by(&public_key, &self.issuer)
            .map_err(|e| AuthorityError::Signing(e.to_string()))?;
        let der = cert.der().to_vec();
        let expected = validate::Expected {
            template,
            profile: &profile,
            serial: &serial,
            not_before,
            not_after,
            issuer: &self.intermediate,
        };
        let info = validate::leaf(&der, &expected).map_err(AuthorityError::Validation)?;
        Ok(IssuedLeaf { der, info })
    }

    /// Signs a CRL listing `revoked` (serial, revocation time), valid for `validity`.
    ///
    /// # Errors
    /// [`AuthorityError::Signing`] when rcgen refuses the parameters.
    pub fn sign_crl(
        &self,
        revoked: &[(Serial, OffsetDateTime)],
        crl_number: u64,
        now: OffsetDateTime,
        validity: Duration,
    ) -> Result<Vec<u8>, AuthorityError> {
        let params = CertificateRevocationListParams {
            this_update: now - BACKDATE,
            next_update: now + validity,
            crl_number: SerialNumber::from_slice(&crl_number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|(serial, at)| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(serial.as_bytes()),
                    revocation_time: *at,
                    reason_code: Some(RevocationReason::Unspecified),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::PreSpecified(
                self.intermediate.subject_key_id.clone().unwrap_or_default(),
            ),
        };
        let crl = params
            .signed_by(&self.issuer)
            .map_err(|e| AuthorityError::Signing(e.to_string()))?;
        Ok(crl.der().to_vec())
    }

    /// Proves the CA can sign right now: issues a short throwaway leaf for a fresh key and
    /// validates it. Used by the health check.
    ///
    /// # Errors
    /// Whatever [`Authority::issue`] returns.
    pub fn self_test(&self, now: OffsetDateTime) -> Result<(), AuthorityError> {
        let key = PrivateKey::generate(crate::key::KeyType::P256)
            .map_err(|e| AuthorityError::Signing(e.to_string()))?;
        let identity = Identity::new(&self.cluster, Role::Ca, "self-test")
            .map_err(|e| AuthorityError::Signing(e.to_string()))?;
        self.issue(
            &LeafTemplate {
                identity,
                public_key_der: key.public_key_der(),
                dns_names: vec!["self-test.invalid".into()],
                ip_addresses: vec![],
                access: Access::Full,
                lifetime: Duration::from_secs(60),
            },
            now,
        )
        .map(|_| ())
    }
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("cluster", &self.cluster)
            .field("intermediate", &self.intermediate.subject)
            .field("not_after", &self.intermediate.not_after)
            .finish_non_exhaustive()
    }
}

/// `now` without its fraction of a second.
pub(crate) fn truncate(now: OffsetDateTime) -> OffsetDateTime {
    now.replace_nanosecond(0).unwrap_or(now)
}

fn leaf_params(
    template: &LeafTemplate,
    profile: &Profile,
    serial: &Serial,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, AuthorityError> {
    // Every field is set here; nothing is left to rcgen's defaults (which are valid from
    // 1975 to 4096 and carry a placeholder common name).
    let mut params = CertificateParams::default();
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(SerialNumber::from_slice(serial.as_bytes()));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, template.identity.cluster.as_str());
    dn.push(
        DnType::OrganizationalUnitName,
        template.identity.role.as_str(),
    );
    dn.push(DnType::CommonName, template.identity.name.as_str());
    params.distinguished_name = dn;
    let uri = template
        .identity
        .uri()
        .try_into()
        .map_err(|_| AuthorityError::Signing("identity URI is not IA5".into()))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    for dns in &template.dns_names {
        let ia5 = dns
            .clone()
            .try_into()
            .map_err(|_| AuthorityError::Signing(format!("DNS name {dns:?} is not IA5")))?;
        params.subject_alt_names.push(SanType::DnsName(ia5));
    }
    params.subject_alt_names.extend(
        template
            .ip_addresses
            .iter()
            .map(|ip| SanType::IpAddress(*ip)),
    );
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = Vec::new();
    if profile.server_auth {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    if profile.client_auth {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth);
    }
    // A restricted operator's level instead of clientAuth.
    if let Some(eku) = profile.access.eku() {
        let arcs = access::oid_components(eku)
            .ok_or_else(|| AuthorityError::Signing(format!("EKU {eku} is not an OID")))?;
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::Other(arcs));
    }
    params.name_constraints = None;
    params.crl_distribution_points = Vec::new();
    params.custom_extensions = Vec::new();
    params.use_authority_key_identifier_extension = true;
    params.key_identifier_method = KeyIdMethod::Sha256;
    Ok(params)
}

/// Why the CA could not load or sign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("CA certificate problem: {0}")]
    Certificate(String),
    #[error("CA material does not fit together: {0}")]
    Mismatch(&'static str),
    #[error("identity of cluster {0:?} cannot be issued by this CA")]
    WrongCluster(String),
    #[error("a {role} certificate cannot have {access} access: only operators' levels vary")]
    AccessForRole { role: Role, access: Access },
    #[error("the intermediate CA expired at {} and has no successor: run `ca-server ca rotate-intermediate` where the root key is", crate::duration::timestamp(*not_after))]
    IssuerExpired { not_after: OffsetDateTime },
    #[error("signing failed: {0}")]
    Signing(String),
    /// The signed leaf is not what was decided; it is never handed out.
    #[error("issued certificate failed validation: {0}")]
    Validation(validate::LeafMismatch),
}

#[cfg(test)]
mod tests;
