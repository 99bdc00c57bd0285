use std::time::Duration;

use time::macros::datetime;

use super::*;
use crate::chain::{self, ChainError, Usage};
use crate::csr::VerifiedCsr;
use crate::key::KeyType;

const NOW: OffsetDateTime = datetime!(2026-11-26 12:00 UTC);

fn authority(key_type: KeyType) -> (Authority, hierarchy::Hierarchy) {
    let h = hierarchy::create("prod", key_type, NOW).unwrap();
    let key = PrivateKey::from_pkcs8_der(&h.intermediate_key.pkcs8_der()).unwrap();
    let a = Authority::new("prod", h.root_der.clone(), h.intermediate_der.clone(), key).unwrap();
    (a, h)
}

fn template(role: Role, key: &PrivateKey) -> LeafTemplate {
    LeafTemplate {
        identity: Identity::new("prod", role, "web-1").unwrap(),
        public_key_der: key.public_key_der(),
        dns_names: vec!["web-1.example.com".into()],
        ip_addresses: vec!["10.0.0.5".parse().unwrap()],
        access: crate::access::Access::Full,
        lifetime: Duration::from_secs(30 * 86_400),
    }
}

#[test]
fn hierarchy_is_a_two_tier_ca_chain() {
    let (_, h) = authority(KeyType::P256);
    let root = CertInfo::from_der(&h.root_der).unwrap();
    let inter = CertInfo::from_der(&h.intermediate_der).unwrap();
    assert!(root.is_ca && inter.is_ca);
    assert_eq!(inter.issuer, root.subject);
    assert_eq!(inter.authority_key_id, root.subject_key_id);
    assert!(root.not_after - NOW >= time::Duration::days(3649));
    let inter_life = inter.not_after - NOW;
    assert!(inter_life >= time::Duration::days(364) && inter_life <= time::Duration::days(366));
    chain::verify_ca_signature(&h.intermediate_der, &h.root_der).unwrap();
}

#[test]
fn issues_a_node_leaf_that_webpki_accepts_as_a_server_and_refuses_as_a_client() {
    for key_type in [KeyType::P256, KeyType::Ed25519] {
        let (a, _) = authority(key_type);
        let key = PrivateKey::generate(KeyType::P256).unwrap();
        let leaf = a.issue(&template(Role::Node, &key), NOW).unwrap();
        let inter = vec![a.intermediate_der().to_vec()];
        chain::verify(&leaf.der, &inter, a.root_der(), NOW, Usage::Server).unwrap();
        assert_eq!(
            chain::verify(&leaf.der, &inter, a.root_der(), NOW, Usage::Client),
            Err(ChainError::WrongUsage)
        );
        assert!(leaf.info.server_auth && !leaf.info.client_auth && !leaf.info.is_ca);
        assert_eq!(
            leaf.info.identity.as_ref().unwrap().uri(),
            "dtca://prod/node/web-1"
        );
    }
}

#[test]
fn operator_leaf_is_client_only() {
    let (a, _) = authority(KeyType::P256);
    let key = PrivateKey::generate(KeyType::P256).unwrap();
    let leaf = a.issue(&template(Role::Operator, &key), NOW).unwrap();
    assert!(leaf.info.client_auth && !leaf.info.server_auth);
    let inter = vec![a.intermediate_der().to_vec()];
    assert_eq!(
        chain::verify(&leaf.der, &inter, a.root_der(), NOW, Usage::Server).unwrap_err(),
        ChainError::WrongUsage
    );
    // Operators get at most their role's maximum, whatever was asked.
    assert!(leaf.info.not_after - NOW <= time::Duration::days(30));
}

#[test]
fn a_read_only_operator_leaf_is_no_plain_client_and_other_roles_have_no_levels() {
    use crate::access::Access;
    let (a, _) = authority(KeyType::P256);
    let key = PrivateKey::generate(KeyType::P256).unwrap();
    let mut t = template(Role::Operator, &key);
    t.access = Access::ReadOnly;
    let leaf = a.issue(&t, NOW).unwrap();
    assert_eq!(leaf.info.access, Access::ReadOnly);
    assert!(!leaf.info.client_auth && !leaf.info.server_auth);
    let inter = vec![a.intermediate_der().to_vec()];
    assert_eq!(
        chain::verify(&leaf.der, &inter, a.root_der(), NOW, Usage::Client).unwrap_err(),
        ChainError::WrongUsage
    );
    chain::verify(
        &leaf.der,
        &inter,
        a.root_der(),
        NOW,
        Usage::Restricted(Access::ReadOnly),
    )
    .unwrap();
    assert_eq!(Usage::of(&leaf.info), Usage::Restricted(Access::ReadOnly));
    // A full-access certificate is not taken for a restricted one.
    let full = a.issue(&template(Role::Operator, &key), NOW).unwrap();
    assert!(
        chain::verify(
            &full.der,
            &inter,
            a.root_der(),
            NOW,
            Usage::Restricted(Access::ReadOnly)
        )
        .is_err()
    );
    for role in [Role::Node, Role::Admin] {
        let mut t = template(role, &key);
        t.access = Access::ReadOnly;
        assert!(matches!(
            a.issue(&t, NOW),
            Err(AuthorityError::AccessForRole { .. })
        ));
    }
}

#[test]
fn leaf_is_backdated_and_capped_at_the_intermediate() {
    let (a, _) = authority(KeyType::P256);
    let key = PrivateKey::generate(KeyType::P256).unwrap();
    let leaf = a.issue(&template(Role::Node, &key), NOW).unwrap();
    assert_eq!(leaf.info.not_before, NOW - BACKDATE);
    assert_eq!(leaf.info.not_after, NOW + time::Duration::days(30));
    let late = a.intermediate_not_after() - time::Duration::days(3);
    let leaf = a.issue(&template(Role::Node, &key), late).unwrap();
    assert_eq!(leaf.info.not_after, a.intermediate_not_after());
}

#[test]
fn refuses_to_issue_after_the_intermediate_expired() {
    let (a, _) = authority(KeyType::P256);
    let key = PrivateKey::generate(KeyType::P256).unwrap();
    let after = a.intermediate_not_after() + time::Duration::seconds(1);
    assert!(matches!(
        a.issue(&template(Role::Node, &key), after),
        Err(AuthorityError::IssuerExpired { .. })
    ));
}

#[test]
fn refuses_identities_of_another_cluster() {
    let (a, _) = authority(KeyType::P256);
    let key = PrivateKey::generate(KeyType::P256).unwrap();
    let mut t = template(Role::Node, &key);
    t.identity.cluster = "other".into();
    assert!(matches!(
        a.issue(&t, NOW),
        Err(AuthorityError::WrongCluster(_))
    ));
}

#[test]
fn leaf_from_a_csr_asking_for_ca_is_still_not_a_ca() {
    let (a, _) = authority(KeyType::P256);
    let key = PrivateKey::generate(KeyType::P256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["web-1.example.com".to_string()]).unwrap();
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let der = params.serialize_request(key.pair()).unwrap().der().to_vec();
    let csr = VerifiedCsr::from_der(&der).unwrap();
    let t = LeafTemplate {
        public_key_der: csr.public_key_der,
        dns_names: csr.dns_names,
        ..template(Role::Node, &key)
    };
    let leaf = a
        .issue(
            &LeafTemplate {
                ip_addresses: vec![],
                ..t
            },
            NOW,
        )
        .unwrap();
    assert!(!leaf.info.is_ca);
}

#[test]
fn issues_at_a_time_with_fractional_seconds() {
    let (a, _) = authority(KeyType::P256);
    let key = PrivateKey::generate(KeyType::P256).unwrap();
    let now = NOW + time::Duration::milliseconds(1234);
    let leaf = a.issue(&template(Role::Node, &key), now).unwrap();
    assert_eq!(
        leaf.info.not_before,
        NOW + time::Duration::seconds(1) - BACKDATE
    );
}

#[test]
fn serials_are_random_and_distinct() {
    let (a, _) = authority(KeyType::P256);
    let key = PrivateKey::generate(KeyType::P256).unwrap();
    let t = template(Role::Node, &key);
    let s1 = a.issue(&t, NOW).unwrap().info.serial;
    let s2 = a.issue(&t, NOW).unwrap().info.serial;
    assert_ne!(s1, s2);
    assert!(s1.as_bytes().len() >= 8);
}

#[test]
fn refuses_a_key_that_is_not_the_intermediates() {
    let h = hierarchy::create("prod", KeyType::P256, NOW).unwrap();
    let wrong = PrivateKey::generate(KeyType::P256).unwrap();
    assert!(matches!(
        Authority::new(
            "prod",
            h.root_der.clone(),
            h.intermediate_der.clone(),
            wrong
        ),
        Err(AuthorityError::Mismatch(_))
    ));
}

#[test]
fn refuses_an_intermediate_from_another_root() {
    let h1 = hierarchy::create("prod", KeyType::P256, NOW).unwrap();
    let h2 = hierarchy::create("prod", KeyType::P256, NOW).unwrap();
    assert!(matches!(
        Authority::new(
            "prod",
            h1.root_der,
            h2.intermediate_der,
            h2.intermediate_key
        ),
        Err(AuthorityError::Mismatch(_))
    ));
}

#[test]
fn chain_verification_refuses_foreign_and_expired_leaves() {
    let (a, _) = authority(KeyType::P256);
    let (b, _) = authority(KeyType::P256);
    let key = PrivateKey::generate(KeyType::P256).unwrap();
    let leaf = b.issue(&template(Role::Node, &key), NOW).unwrap();
    let inter_a = vec![a.intermediate_der().to_vec()];
    let inter_b = vec![b.intermediate_der().to_vec()];
    assert_eq!(
        chain::verify(&leaf.der, &inter_a, a.root_der(), NOW, Usage::Server).unwrap_err(),
        ChainError::UnknownIssuer
    );
    let later = leaf.info.not_after + time::Duration::hours(1);
    assert!(matches!(
        chain::verify(&leaf.der, &inter_b, b.root_der(), later, Usage::Server),
        Err(ChainError::Expired { .. })
    ));
    // Within a two-hour grace it passes; past it, it does not.
    chain::verify_with_grace(
        &leaf.der,
        &inter_b,
        b.root_der(),
        later,
        Usage::Server,
        Duration::from_secs(7200),
    )
    .unwrap();
    assert!(matches!(
        chain::verify_with_grace(
            &leaf.der,
            &inter_b,
            b.root_der(),
            later,
            Usage::Server,
            Duration::from_secs(1800)
        ),
        Err(ChainError::Expired { .. })
    ));
}

#[test]
fn crl_lists_revoked_serials_and_is_signed_by_the_intermediate() {
    use x509_parser::prelude::FromDer;
    let (a, _) = authority(KeyType::P256);
    let key = PrivateKey::generate(KeyType::P256).unwrap();
    let leaf = a.issue(&template(Role::Node, &key), NOW).unwrap();
    let der = a
        .sign_crl(
            &[(leaf.info.serial.clone(), NOW)],
            7,
            NOW,
            Duration::from_secs(86_400),
        )
        .unwrap();
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&der).unwrap();
    let (_, inter) =
        x509_parser::certificate::X509Certificate::from_der(a.intermediate_der()).unwrap();
    crl.verify_signature(inter.public_key()).unwrap();
    let serials: Vec<Serial> = crl
        .iter_revoked_certificates()
        .map(|r| Serial::from_be_bytes(r.raw_serial()))
        .collect();
    assert_eq!(serials, vec![leaf.info.serial.clone()]);
    assert_eq!(
        crate::inspect::revoked_serials(&der, a.intermediate_der()).unwrap(),
        vec![leaf.info.serial]
    );
    assert!(crate::inspect::revoked_serials(&der, &leaf.der).is_err());
}

#[test]
fn self_test_signs() {
    let (a, _) = authority(KeyType::Ed25519);
    a.self_test(NOW).unwrap();
}

/// Leaves live at most a third of their intermediate's life, whatever the role allows,
/// so the CA can hand over to the next intermediate before any leaf would be cut short.
#[test]
fn leaves_are_capped_at_a_third_of_the_intermediate() {
    let h = hierarchy::create_with(
        "prod",
        KeyType::P256,
        NOW,
        hierarchy::Lifetimes {
            root: Duration::from_secs(3600),
            intermediate: Duration::from_secs(600),
        },
    )
    .unwrap();
    let a = Authority::new("prod", h.root_der, h.intermediate_der, h.intermediate_key).unwrap();
    assert_eq!(a.schedule().leaf_cap, Duration::from_secs(200));
    let key = PrivateKey::generate(KeyType::P256).unwrap();
    let leaf = a.issue(&template(Role::Node, &key), NOW).unwrap();
    assert_eq!(leaf.info.not_after, NOW + time::Duration::seconds(200));
    let mut short = template(Role::Node, &key);
    short.lifetime = Duration::from_secs(30);
    let leaf = a.issue(&short, NOW).unwrap();
    assert_eq!(leaf.info.not_after, NOW + time::Duration::seconds(30));
}
