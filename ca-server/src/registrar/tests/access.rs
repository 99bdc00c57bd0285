//! Operator access levels: which tokens may carry one, what a read-only certificate looks
//! like, and that renewals keep the level.

use dtca_pki::access::Access;
use dtca_pki::chain::{self, Usage};
use dtca_pki::inspect::CertInfo;

use super::*;

#[tokio::test]
async fn only_operator_tokens_take_an_access_level() {
    let f = fixture().await;
    for role in [Role::Node, Role::Admin] {
        for access in [Access::Full, Access::ReadOnly] {
            let refused = f
                .registrar
                .create_token(
                    &f.admin,
                    TokenSpec {
                        access: Some(access),
                        ..spec(role)
                    },
                    now(),
                )
                .await;
            assert!(
                matches!(refused, Err(Refusal::AccessForRole { .. })),
                "{role} {access}: {refused:?}"
            );
            assert_eq!(
                refused.unwrap_err().reason(),
                dtca_common::Reason::AccessLevel
            );
        }
    }
    let (token, record) = f
        .token(TokenSpec {
            access: Some(Access::ReadOnly),
            ..spec(Role::Operator)
        })
        .await;
    assert_eq!(record.access, Access::ReadOnly);
    let allowance = f.registrar.token_allowance(&token, now()).await.unwrap();
    assert_eq!(allowance.access, Access::ReadOnly);
    let listed = f.registrar.tokens().await.unwrap();
    assert_eq!(listed[0].access, Access::ReadOnly);
    // No level means full.
    let (_, default) = f.token(spec(Role::Operator)).await;
    assert_eq!(default.access, Access::Full);
}

async fn read_only_operator(f: &Fixture, name: &str) -> (Issued, PrivateKey) {
    let (token, _) = f
        .token(TokenSpec {
            access: Some(Access::ReadOnly),
            ..spec(Role::Operator)
        })
        .await;
    let key = PrivateKey::generate(KeyType::P256).unwrap();
    let csr = csr::build(&key, name, &[], &[]).unwrap();
    let issued = f.registrar.enroll(&token, &csr, name, now()).await.unwrap();
    (issued, key)
}

fn verifies(f: &Fixture, issued: &Issued, usage: Usage) -> bool {
    let ca = f.registrar.ca();
    let roots = ca.roots();
    let roots: Vec<&[u8]> = roots.iter().map(Vec::as_slice).collect();
    chain::verify_any(&issued.leaf_der, &issued.chain, &roots, now(), usage).is_ok()
}

#[tokio::test]
async fn a_read_only_certificate_carries_its_eku_instead_of_client_auth() {
    let f = fixture().await;
    let (issued, _) = read_only_operator(&f, "reader").await;
    assert_eq!(issued.info.access, Access::ReadOnly);
    assert!(!issued.info.client_auth && !issued.info.server_auth);
    // No plain client: a verifier asking for clientAuth (as dockerd does) refuses it.
    assert!(!verifies(&f, &issued, Usage::Client));
    assert!(verifies(&f, &issued, Usage::Restricted(Access::ReadOnly)));
    // The CA's own mutual TLS takes it, as the operator it is, and lists its level.
    let caller = f.caller_for(&issued).await;
    assert_eq!(caller.identity.role, Role::Operator);
    assert_eq!(caller.record.summary.access, Access::ReadOnly);
    let shown = f.registrar.certificate(&issued.info.serial).await.unwrap();
    assert_eq!(shown.summary.access, Access::ReadOnly);
}

#[tokio::test]
async fn a_full_access_operator_certificate_is_a_plain_client() {
    let f = fixture().await;
    let (token, _) = f.token(spec(Role::Operator)).await;
    let key = PrivateKey::generate(KeyType::P256).unwrap();
    let issued = f
        .registrar
        .enroll(
            &token,
            &csr::build(&key, "w", &[], &[]).unwrap(),
            "writer",
            now(),
        )
        .await
        .unwrap();
    assert_eq!(issued.info.access, Access::Full);
    assert!(issued.info.client_auth);
    assert!(verifies(&f, &issued, Usage::Client));
    assert!(!verifies(&f, &issued, Usage::Restricted(Access::ReadOnly)));
}

#[tokio::test]
async fn renewal_keeps_read_only_and_never_widens_it() {
    let f = fixture().await;
    let (first, _) = read_only_operator(&f, "reader").await;
    let mut current = first;
    // Twice: a renewed certificate renews into read-only again.
    for _ in 0..2 {
        let caller = f.caller_for(&current).await;
        let key = PrivateKey::generate(KeyType::P256).unwrap();
        let renewed = f
            .registrar
            .renew(&caller, &csr::build(&key, "r", &[], &[]).unwrap(), now())
            .await
            .unwrap();
        assert_eq!(renewed.info.access, Access::ReadOnly);
        assert!(!renewed.info.client_auth);
        assert!(!verifies(&f, &renewed, Usage::Client));
        current = renewed;
    }
}

#[test]
fn the_narrower_level_wins_at_renewal() {
    use crate::store::conformance::cert;
    let mut record = cert(Role::Operator, "o", now()).summary;
    let ca_said = |access| CertInfo {
        access,
        ..CertInfo::from_der(
            &hierarchy::create("x", KeyType::P256, now())
                .unwrap()
                .root_der,
        )
        .unwrap()
    };
    for (eku, stored, kept) in [
        (Access::Full, Access::Full, Access::Full),
        (Access::ReadOnly, Access::Full, Access::ReadOnly),
        (Access::Full, Access::ReadOnly, Access::ReadOnly),
        (Access::ReadOnly, Access::ReadOnly, Access::ReadOnly),
    ] {
        record.access = stored;
        assert_eq!(
            super::super::issue::renewal_access(&ca_said(eku), &record),
            kept
        );
    }
}
