//! One refusing test per [`LeafMismatch`] variant: an otherwise good leaf, made the way
//! `Authority::issue` makes it, with exactly one field tampered with (in the parameters
//! rcgen signs, in the DER, or in what the leaf is expected to say).

use std::time::Duration;

use rcgen::{
    CertificateParams, CustomExtension, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType,
    SerialNumber, SubjectPublicKeyInfo,
};
use ring::rand::SystemRandom;
use time::macros::datetime;

use super::*;
use crate::authority::{Authority, hierarchy, leaf_params};
use crate::identity::{Identity, Role};
use crate::key::{KeyType, PrivateKey};
use crate::profile::BACKDATE;

const NOW: OffsetDateTime = datetime!(2026-11-26 12:00 UTC);

const SUBJECT_KEY_ID: &[u64] = &[2, 5, 29, 14];
const SUBJECT_ALT_NAME: &[u64] = &[2, 5, 29, 17];
const BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
const AUTHORITY_KEY_ID: &[u64] = &[2, 5, 29, 35];

/// ecdsa-with-SHA256, as it appears in a P-256 intermediate's signatures.
const ECDSA_SHA256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
/// `[0] EXPLICIT INTEGER 2`: version 3.
const VERSION_3: &[u8] = &[0xa0, 0x03, 0x02, 0x01, 0x02];

/// What `Authority::issue` decides for one node leaf; each test changes one piece.
struct Case {
    authority: Authority,
    template: LeafTemplate,
    profile: Profile,
    serial: Serial,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

fn authority(cluster: &str) -> Authority {
    let h = hierarchy::create(cluster, KeyType::P256, NOW).unwrap();
    Authority::new(cluster, h.root_der, h.intermediate_der, h.intermediate_key).unwrap()
}

fn case() -> Case {
    let key = PrivateKey::generate(KeyType::P256).unwrap();
    Case {
        authority: authority("prod"),
        template: LeafTemplate {
            identity: Identity::new("prod", Role::Node, "web-1").unwrap(),
            public_key_der: key.public_key_der(),
            dns_names: vec!["web-1.example.com".into()],
            ip_addresses: vec!["10.0.0.5".parse().unwrap()],
            access: crate::access::Access::Full,
            lifetime: Duration::from_secs(30 * 86_400),
        },
        profile: Profile::of(Role::Node),
        serial: Serial::random(&SystemRandom::new()).unwrap(),
        not_before: NOW - BACKDATE,
        not_after: NOW + time::Duration::days(30),
    }
}

impl Case {
    /// The parameters `Authority::issue` would sign.
    fn params(&self) -> CertificateParams {
        leaf_params(
            &self.template,
            &self.profile,
            &self.serial,
            self.not_before,
            self.not_after,
        )
        .unwrap()
    }

    fn sign_by(&self, params: &CertificateParams, authority: &Authority) -> Vec<u8> {
        let public_key = SubjectPublicKeyInfo::from_der(&self.template.public_key_der).unwrap();
        params
            .signed_by(&public_key, &authority.issuer)
            .unwrap()
            .der()
            .to_vec()
    }

    /// The leaf as `Authority::issue` signs it.
    fn good(&self) -> Vec<u8> {
        self.sign_by(&self.params(), &self.authority)
    }

    /// Signs the usual parameters after `tamper` changed them.
    fn signed(&self, tamper: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
        let mut params = self.params();
        tamper(&mut params);
        self.sign_by(&params, &self.authority)
    }

    fn check(&self, der: &[u8]) -> Result<CertInfo, LeafMismatch> {
        leaf(
            der,
            &Expected {
                template: &self.template,
                profile: &self.profile,
                serial: &self.serial,
                not_before: self.not_before,
                not_after: self.not_after,
                issuer: &self.authority.intermediate,
            },
        )
    }

    /// The mismatch the check finds; fails the test when it accepts the leaf.
    fn refusal(&self, der: &[u8]) -> LeafMismatch {
        match self.check(der) {
            Ok(_) => panic!("a tampered leaf was accepted"),
            Err(e) => e,
        }
    }
}

/// The good leaf's extension `oid`, as a custom extension of the given criticality: how
/// a test writes what rcgen will not (a critical key identifier, a non-critical
/// basicConstraints).
fn copied(der: &[u8], oid: &[u64], critical: bool) -> CustomExtension {
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    let dotted: Vec<String> = oid.iter().map(u64::to_string).collect();
    let ext = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == dotted.join("."))
        .unwrap();
    let mut custom = CustomExtension::from_oid_content(oid, ext.value.to_vec());
    custom.set_criticality(critical);
    custom
}

/// `der` with the bytes of one occurrence of `from` (the first or the last) replaced.
fn patched(der: &[u8], from: &[u8], to: &[u8], last: bool) -> Vec<u8> {
    let mut hits = der
        .windows(from.len())
        .enumerate()
        .filter(|(_, w)| *w == from);
    let (at, _) = if last { hits.next_back() } else { hits.next() }.unwrap();
    let mut out = der.to_vec();
    out[at..at + to.len()].copy_from_slice(to);
    out
}

#[test]
fn accepts_the_leaf_it_decided() {
    let c = case();
    let info = c.check(&c.good()).unwrap();
    assert_eq!(info.serial, c.serial);
    assert_eq!(info.identity.as_ref(), Some(&c.template.identity));
}

#[test]
fn refuses_bytes_that_are_not_a_certificate() {
    let c = case();
    let good = c.good();
    let e = c.refusal(&good[..good.len() - 10]);
    assert!(matches!(e, LeafMismatch::Unparsable(_)), "{e:?}");
}

#[test]
fn refuses_a_leaf_followed_by_trailing_bytes() {
    let c = case();
    let mut der = c.good();
    der.push(0);
    assert_eq!(c.refusal(&der), LeafMismatch::TrailingBytes { len: 1 });
}

#[test]
fn refuses_a_leaf_that_is_not_version_3() {
    let c = case();
    let der = patched(&c.good(), VERSION_3, &[0xa0, 0x03, 0x02, 0x01, 0x01], false);
    assert_eq!(c.refusal(&der), LeafMismatch::Version { found: 1 });
}

#[test]
fn refuses_a_leaf_whose_outer_signature_algorithm_differs_from_the_inner() {
    let c = case();
    // The last occurrence is the outer signatureAlgorithm: make it ecdsa-with-SHA384.
    let mut sha384 = ECDSA_SHA256.to_vec();
    sha384[9] = 0x03;
    let der = patched(&c.good(), ECDSA_SHA256, &sha384, true);
    assert_eq!(c.refusal(&der), LeafMismatch::SignatureAlgorithms);
}

#[test]
fn refuses_a_leaf_whose_serial_differs() {
    let c = case();
    let other = Serial::random(&SystemRandom::new()).unwrap();
    let der = c.signed(|p| p.serial_number = Some(SerialNumber::from_slice(other.as_bytes())));
    let e = c.refusal(&der);
    assert!(
        matches!(&e, LeafMismatch::Serial { found, .. } if *found == other),
        "{e:?}"
    );
}

#[test]
fn refuses_a_leaf_signed_by_another_intermediate() {
    let c = case();
    let der = c.sign_by(&c.params(), &authority("other"));
    let e = c.refusal(&der);
    assert!(matches!(e, LeafMismatch::Issuer { .. }), "{e:?}");
}

#[test]
fn refuses_a_leaf_without_the_intermediates_key_identifier() {
    let c = case();
    let der = c.signed(|p| p.use_authority_key_identifier_extension = false);
    assert_eq!(c.refusal(&der), LeafMismatch::AuthorityKeyId);
}

#[test]
fn refuses_a_leaf_naming_another_key_of_the_intermediate() {
    // Same issuer name, another key identifier: as if the intermediate had been re-keyed
    // under the same name.
    let mut c = case();
    let der = c.good();
    c.authority.intermediate.subject_key_id = Some(vec![0xab; 32]);
    assert_eq!(c.refusal(&der), LeafMismatch::AuthorityKeyId);
}

#[test]
fn refuses_a_leaf_without_a_subject_key_identifier() {
    let c = case();
    let good = c.good();
    // rcgen writes the subject key identifier with basicConstraints: drop both, put
    // basicConstraints back as it was.
    let der = c.signed(|p| {
        p.is_ca = IsCa::NoCa;
        p.custom_extensions = vec![copied(&good, BASIC_CONSTRAINTS, true)];
    });
    assert_eq!(c.refusal(&der), LeafMismatch::SubjectKeyId);
}

#[test]
fn refuses_a_leaf_whose_validity_differs() {
    let c = case();
    let der = c.signed(|p| p.not_after = c.not_after + time::Duration::hours(1));
    let e = c.refusal(&der);
    assert!(matches!(e, LeafMismatch::Validity { .. }), "{e:?}");
}

#[test]
fn refuses_a_leaf_that_outlives_its_intermediate() {
    // Validity as decided, but decided past the intermediate's end.
    let mut c = case();
    c.not_after = c.authority.intermediate.not_after + time::Duration::days(1);
    let e = c.refusal(&c.good());
    assert!(matches!(e, LeafMismatch::OutlivesIssuer { .. }), "{e:?}");
}

#[test]
fn refuses_a_leaf_for_another_public_key() {
    let c = case();
    let other = PrivateKey::generate(KeyType::P256)
        .unwrap()
        .public_key_der();
    let public_key = SubjectPublicKeyInfo::from_der(&other).unwrap();
    let der = c
        .params()
        .signed_by(&public_key, &c.authority.issuer)
        .unwrap()
        .der()
        .to_vec();
    assert_eq!(c.refusal(&der), LeafMismatch::PublicKey);
}

#[test]
fn refuses_a_leaf_that_is_a_ca() {
    let c = case();
    let der = c.signed(|p| p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained));
    assert_eq!(c.refusal(&der), LeafMismatch::CaFlag);
}

#[test]
fn refuses_a_leaf_whose_identity_differs() {
    let c = case();
    let der = c.signed(|p| {
        p.subject_alt_names[0] = SanType::URI("dtca://prod/node/web-2".try_into().unwrap());
    });
    assert_eq!(c.refusal(&der), LeafMismatch::Identity);
}

#[test]
fn refuses_a_leaf_whose_dns_names_differ() {
    let c = case();
    let der = c.signed(|p| {
        p.subject_alt_names
            .push(SanType::DnsName("bank.example".try_into().unwrap()));
    });
    let e = c.refusal(&der);
    assert!(matches!(e, LeafMismatch::DnsNames { .. }), "{e:?}");
}

#[test]
fn refuses_a_leaf_whose_ip_addresses_differ() {
    let c = case();
    let der = c.signed(|p| {
        p.subject_alt_names
            .push(SanType::IpAddress("10.9.9.9".parse().unwrap()));
    });
    let e = c.refusal(&der);
    assert!(matches!(e, LeafMismatch::IpAddresses { .. }), "{e:?}");
}

#[test]
fn refuses_a_leaf_whose_basic_constraints_are_not_critical() {
    let c = case();
    let good = c.good();
    let der = c.signed(|p| {
        p.is_ca = IsCa::NoCa;
        p.custom_extensions = vec![
            copied(&good, SUBJECT_KEY_ID, false),
            copied(&good, BASIC_CONSTRAINTS, false),
        ];
    });
    assert_eq!(c.refusal(&der), LeafMismatch::BasicConstraints);
}

#[test]
fn refuses_a_leaf_with_more_key_usage_than_digital_signature() {
    let c = case();
    let der = c.signed(|p| p.key_usages.push(KeyUsagePurpose::KeyEncipherment));
    assert_eq!(c.refusal(&der), LeafMismatch::KeyUsage);
}

#[test]
fn refuses_a_leaf_with_an_extended_key_usage_not_of_its_role() {
    let c = case();
    let der = c.signed(|p| {
        p.extended_key_usages
            .push(ExtendedKeyUsagePurpose::CodeSigning);
    });
    assert_eq!(c.refusal(&der), LeafMismatch::ExtendedKeyUsage);
}

/// A read-only operator's leaf: the case's node leaf made an operator's at that level.
fn read_only_operator() -> Case {
    use crate::access::Access;
    let mut c = case();
    c.template.identity = Identity::new("prod", Role::Operator, "reader").unwrap();
    c.template.dns_names.clear();
    c.template.ip_addresses.clear();
    c.template.access = Access::ReadOnly;
    c.profile = Profile::of(Role::Operator)
        .with_access(Access::ReadOnly)
        .unwrap();
    c
}

#[test]
fn accepts_a_read_only_operator_leaf_with_exactly_its_eku() {
    let c = read_only_operator();
    let info = c.check(&c.good()).unwrap();
    assert_eq!(info.access, crate::access::Access::ReadOnly);
    assert!(!info.client_auth && !info.server_auth);
}

#[test]
fn refuses_a_read_only_leaf_that_is_also_a_plain_client_or_lacks_its_eku() {
    let c = read_only_operator();
    let with_client_auth = c.signed(|p| {
        p.extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth);
    });
    assert_eq!(c.refusal(&with_client_auth), LeafMismatch::ExtendedKeyUsage);
    let without_level = c.signed(|p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    });
    assert_eq!(c.refusal(&without_level), LeafMismatch::ExtendedKeyUsage);
    // A full-access operator leaf must not carry the level's EKU either.
    let mut full = read_only_operator();
    full.template.access = crate::access::Access::Full;
    full.profile = Profile::of(Role::Operator);
    let restricted = c.good();
    assert!(full.check(&restricted).is_err());
}

#[test]
fn refuses_a_leaf_whose_subject_alternative_name_is_critical() {
    let c = case();
    let good = c.good();
    let der = c.signed(|p| {
        p.subject_alt_names.clear();
        p.custom_extensions = vec![copied(&good, SUBJECT_ALT_NAME, true)];
    });
    assert_eq!(c.refusal(&der), LeafMismatch::SanCritical);
}

#[test]
fn refuses_a_leaf_with_an_email_address_among_its_names() {
    let c = case();
    let der = c.signed(|p| {
        p.subject_alt_names
            .push(SanType::Rfc822Name("root@example.com".try_into().unwrap()));
    });
    assert_eq!(c.refusal(&der), LeafMismatch::SanType);
}

#[test]
fn refuses_a_leaf_with_an_extension_nobody_asked_for() {
    let c = case();
    let der = c.signed(|p| {
        p.custom_extensions = vec![CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 99999, 1],
            vec![0x05, 0x00],
        )];
    });
    assert_eq!(
        c.refusal(&der),
        LeafMismatch::UnexpectedExtension {
            oid: "1.3.6.1.4.1.99999.1".into()
        }
    );
}

#[test]
fn refuses_a_leaf_whose_key_identifier_is_critical() {
    let c = case();
    let good = c.good();
    let der = c.signed(|p| {
        p.use_authority_key_identifier_extension = false;
        p.custom_extensions = vec![copied(&good, AUTHORITY_KEY_ID, true)];
    });
    assert_eq!(c.refusal(&der), LeafMismatch::KeyIdCritical);
}

#[test]
fn refuses_a_leaf_missing_basic_constraints_key_usage_or_extended_key_usage() {
    let c = case();
    let good = c.good();
    let without_bc = c.signed(|p| {
        p.is_ca = IsCa::NoCa;
        p.custom_extensions = vec![copied(&good, SUBJECT_KEY_ID, false)];
    });
    let without_ku = c.signed(|p| p.key_usages.clear());
    let without_eku = c.signed(|p| p.extended_key_usages.clear());
    for (der, which) in [
        (without_bc, "basicConstraints"),
        (without_ku, "keyUsage"),
        (without_eku, "extendedKeyUsage"),
    ] {
        assert_eq!(c.refusal(&der), LeafMismatch::MissingExtension { which });
    }
}
