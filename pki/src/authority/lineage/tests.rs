use std::time::Duration;

use time::macros::datetime;
use x509_parser::prelude::FromDer;

use super::*;
use crate::authority::hierarchy::{self, Lifetimes};
use crate::authority::{Authority, LeafTemplate};
use crate::chain::{ChainError, Usage, verify_any};
use crate::identity::{Identity, Role};
use crate::key::{KeyType, PrivateKey};

const NOW: OffsetDateTime = datetime!(2026-11-26 12:00 UTC);
const LIFETIMES: Lifetimes = Lifetimes {
    root: Duration::from_secs(3600),
    intermediate: Duration::from_secs(90),
};

struct Ca {
    root: Vec<u8>,
    root_key: PrivateKey,
    inter: Vec<u8>,
    inter_key: PrivateKey,
}

fn ca(now: OffsetDateTime) -> Ca {
    let h = hierarchy::create_with("prod", KeyType::P256, now, LIFETIMES).unwrap();
    Ca {
        root: h.root_der,
        root_key: h.root_key,
        inter: h.intermediate_der,
        inter_key: h.intermediate_key,
    }
}

fn cert(kind: CaKind, der: &[u8]) -> CaCert {
    CaCert::new(kind, der.to_vec(), false).unwrap()
}

fn leaf(root: &[u8], inter: &[u8], key: &PrivateKey, role: Role, now: OffsetDateTime) -> Vec<u8> {
    let a = Authority::new(
        "prod",
        root.to_vec(),
        inter.to_vec(),
        PrivateKey::from_pkcs8_der(&key.pkcs8_der()).unwrap(),
    )
    .unwrap();
    let k = PrivateKey::generate(KeyType::P256).unwrap();
    a.issue(
        &LeafTemplate {
            identity: Identity::new("prod", role, "web-1").unwrap(),
            public_key_der: k.public_key_der(),
            dns_names: vec!["web-1.example.com".into()],
            ip_addresses: vec![],
            access: crate::access::Access::Full,
            lifetime: Duration::from_secs(30 * 86_400),
        },
        now,
    )
    .unwrap()
    .der
}

fn path_len(der: &[u8]) -> Option<Option<u32>> {
    let (_, c) = x509_parser::certificate::X509Certificate::from_der(der).unwrap();
    c.basic_constraints()
        .unwrap()
        .map(|bc| bc.value.path_len_constraint)
}

#[test]
fn roots_are_unconstrained_and_every_ca_subject_is_its_own() {
    let a = ca(NOW);
    let b = ca(NOW);
    assert_eq!(path_len(&a.root), Some(None));
    assert_eq!(path_len(&a.inter), Some(Some(0)));
    let ra = CertInfo::from_der(&a.root).unwrap();
    let rb = CertInfo::from_der(&b.root).unwrap();
    let ia = CertInfo::from_der(&a.inter).unwrap();
    assert_ne!(ra.subject, rb.subject);
    assert!(ra.subject.contains("prod root CA "), "{}", ra.subject);
    assert!(
        ia.subject.contains("prod intermediate CA "),
        "{}",
        ia.subject
    );
    // An intermediate starts BACKDATE before its start and lives its lifetime from it.
    assert_eq!(ia.not_before, NOW - crate::profile::BACKDATE);
    assert_eq!(ia.not_after, NOW + time::Duration::seconds(90));
}

#[test]
fn a_lineage_of_one_signs_with_its_intermediate_and_plans_the_successor() {
    let a = ca(NOW);
    let l = Lineage::single(a.root.clone(), a.inter.clone()).unwrap();
    assert_eq!(l.roots().len(), 1);
    assert_eq!(l.rotation_started(), None);
    assert_eq!(l.signing(NOW).unwrap().der, a.inter);
    assert!(l.successor(NOW).is_none());
    let s = Schedule::of(&CertInfo::from_der(&a.inter).unwrap());
    let plan = l.plan(NOW, LIFETIMES.intermediate);
    assert!(!plan.prepare && plan.warnings.is_empty(), "{plan:?}");
    let plan = l.plan(s.prepare_at, LIFETIMES.intermediate);
    assert!(plan.prepare && plan.warnings.is_empty(), "{plan:?}");
    assert_eq!(plan.successor_start, s.switch_at);
    let plan = l.plan(s.warn_at, LIFETIMES.intermediate);
    assert_eq!(
        plan.warnings,
        vec![Warning::NoSuccessor { ends: s.not_after }]
    );
    // Past the switch with no successor: it keeps signing (cut short), and says so.
    assert_eq!(l.signing(s.switch_at).unwrap().der, a.inter);
    // Expired: nothing signs.
    let after = s.not_after + time::Duration::seconds(1);
    assert!(l.signing(after).is_none());
    assert!(
        l.plan(after, LIFETIMES.intermediate)
            .warnings
            .contains(&Warning::NoIntermediate)
    );
}

#[test]
fn the_successor_signs_from_its_start_and_every_replica_agrees() {
    let a = ca(NOW);
    let s = Schedule::of(&CertInfo::from_der(&a.inter).unwrap());
    let (next, _) = hierarchy::intermediate(
        "prod",
        &a.root,
        &a.root_key,
        KeyType::P256,
        s.switch_at,
        LIFETIMES.intermediate,
    )
    .unwrap();
    let root = cert(CaKind::Root, &a.root);
    let id = root.id();
    let l = Lineage::new(
        vec![
            root,
            cert(CaKind::Intermediate, &a.inter),
            cert(CaKind::Intermediate, &next),
        ],
        &id,
        None,
    )
    .unwrap();
    let before = s.switch_at - time::Duration::seconds(1);
    assert_eq!(l.signing(before).unwrap().der, a.inter);
    assert_eq!(l.successor(before).unwrap().der, next);
    assert!(!l.plan(before, LIFETIMES.intermediate).prepare);
    assert_eq!(l.signing(s.switch_at).unwrap().der, next);
    assert!(l.successor(s.switch_at).is_none());
    // The last leaf of the old one ends before it does.
    let last = leaf(&a.root, &a.inter, &a.inter_key, Role::Node, before);
    let info = CertInfo::from_der(&last).unwrap();
    assert!(info.not_after <= s.not_after);
    assert_eq!(
        info.not_after - before.replace_nanosecond(0).unwrap(),
        time::Duration::seconds(30)
    );
}

#[test]
fn refuses_an_intermediate_of_a_foreign_root_and_a_retired_active_root() {
    let a = ca(NOW);
    let b = ca(NOW);
    let root = cert(CaKind::Root, &a.root);
    let id = root.id();
    assert!(matches!(
        Lineage::new(
            vec![root.clone(), cert(CaKind::Intermediate, &b.inter)],
            &id,
            None
        ),
        Err(AuthorityError::Mismatch(_))
    ));
    let retired = CaCert {
        retired: true,
        ..root
    };
    assert!(matches!(
        Lineage::new(
            vec![retired, cert(CaKind::Intermediate, &a.inter)],
            &id,
            None
        ),
        Err(AuthorityError::Mismatch(_))
    ));
}

/// A root rotation: the new root, cross-signed by the old one, and a new intermediate.
/// Every chain the CA serves verifies for verifiers that trust the old root, the new one,
/// or both; after the rotation is finished a certificate of the old chain does not.
#[test]
fn a_rotated_root_chains_for_old_new_and_both_trust_stores() {
    let old = ca(NOW);
    let later = NOW + time::Duration::seconds(20);
    let (new_root, new_key) =
        hierarchy::root("prod", KeyType::Ed25519, later, LIFETIMES.root).unwrap();
    let cross = hierarchy::cross_sign(&new_root, &old.root, &old.root_key, later).unwrap();
    assert_eq!(path_len(&cross), Some(Some(1)));
    assert_eq!(
        crate::inspect::subject_der(&cross),
        crate::inspect::subject_der(&new_root),
        "the cross certificate names the new root byte for byte"
    );
    let (inter, inter_key) = hierarchy::intermediate(
        "prod",
        &new_root,
        &new_key,
        KeyType::P256,
        later,
        LIFETIMES.intermediate,
    )
    .unwrap();
    let new = cert(CaKind::Root, &new_root);
    let new_id = new.id();
    let certs = vec![
        cert(CaKind::Root, &old.root),
        cert(CaKind::Intermediate, &old.inter),
        new,
        cert(CaKind::Cross, &cross),
        cert(CaKind::Intermediate, &inter),
    ];
    let l = Lineage::new(certs.clone(), &new_id, Some(later)).unwrap();
    assert_eq!(l.root_ders(), vec![old.root.clone(), new_root.clone()]);
    assert_eq!(l.rotation_started(), Some(later));
    assert_eq!(l.signing(later).unwrap().der, inter);
    let above: Vec<Vec<u8>> = l
        .chain_above(&CertInfo::from_der(&inter).unwrap())
        .into_iter()
        .map(|c| c.der.clone())
        .collect();
    assert_eq!(above, vec![cross.clone()]);
    // The old intermediate's chain needs nothing above it.
    assert!(
        l.chain_above(&CertInfo::from_der(&old.inter).unwrap())
            .is_empty()
    );

    let node = leaf(&new_root, &inter, &inter_key, Role::Node, later);
    let op = leaf(&new_root, &inter, &inter_key, Role::Operator, later);
    let chain = vec![inter.clone(), cross.clone()];
    for (what, roots) in [
        ("old root only", vec![old.root.as_slice()]),
        ("new root only", vec![new_root.as_slice()]),
        ("both roots", vec![old.root.as_slice(), new_root.as_slice()]),
    ] {
        verify_any(&node, &chain, &roots, later, Usage::Server)
            .unwrap_or_else(|e| panic!("node, {what}: {e}"));
        verify_any(&op, &chain, &roots, later, Usage::Client)
            .unwrap_or_else(|e| panic!("operator, {what}: {e}"));
    }
    let old_leaf = leaf(&old.root, &old.inter, &old.inter_key, Role::Node, later);
    assert_eq!(
        l.root_of_leaf(&CertInfo::from_der(&old_leaf).unwrap())
            .unwrap()
            .der,
        old.root
    );
    assert_eq!(
        l.root_of_leaf(&CertInfo::from_der(&node).unwrap())
            .unwrap()
            .der,
        new_root
    );

    // Finished: the old root and the cross certificate retire.
    let finished: Vec<CaCert> = certs
        .into_iter()
        .map(|c| {
            let retired = c.der == old.root || c.der == cross;
            CaCert { retired, ..c }
        })
        .collect();
    let l = Lineage::new(finished, &new_id, None).unwrap();
    assert_eq!(l.root_ders(), vec![new_root.clone()]);
    assert_eq!(l.retired_roots().len(), 1);
    assert!(l.rotation_started().is_none());
    assert!(
        l.chain_above(&CertInfo::from_der(&inter).unwrap())
            .is_empty()
    );
    let trusted: Vec<Vec<u8>> = l.root_ders();
    let roots: Vec<&[u8]> = trusted.iter().map(Vec::as_slice).collect();
    assert_eq!(
        verify_any(
            &old_leaf,
            std::slice::from_ref(&old.inter),
            &roots,
            later,
            Usage::Server
        ),
        Err(ChainError::UnknownIssuer)
    );
    verify_any(&node, &[inter], &roots, later, Usage::Server).unwrap();
}

#[test]
fn warns_when_the_root_ends_within_two_intermediate_lifetimes() {
    let a = ca(NOW);
    let l = Lineage::single(a.root, a.inter).unwrap();
    let root_end = l.active_root().info.not_after;
    let near = root_end - time::Duration::seconds(170);
    // The intermediate has expired by then; the root warning comes with the other one.
    assert!(
        l.plan(near, LIFETIMES.intermediate)
            .warnings
            .contains(&Warning::RootEnding {
                not_after: root_end
            })
    );
    assert!(
        !l.plan(NOW, LIFETIMES.intermediate)
            .warnings
            .iter()
            .any(|w| matches!(w, Warning::RootEnding { .. }))
    );
}

#[test]
fn lifetimes_that_cannot_renew_themselves_are_refused() {
    assert!(Lifetimes::default().check().is_ok());
    assert!(LIFETIMES.check().is_ok());
    for bad in [
        Lifetimes {
            root: Duration::from_secs(3600),
            intermediate: Duration::from_secs(59),
        },
        Lifetimes {
            root: Duration::from_secs(100),
            intermediate: Duration::from_secs(60),
        },
    ] {
        assert!(bad.check().is_err(), "{bad:?}");
    }
}
