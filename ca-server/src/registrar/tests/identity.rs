//! One name, one holder; node certificates that are no docker clients; revocation and
//! renewal that cannot be side-stepped with an old copy.

use dtca_pki::chain::{self, Usage};

use super::*;
use crate::store::RevokeTarget;

fn key() -> PrivateKey {
    PrivateKey::generate(KeyType::P256).unwrap()
}

/// Regression: with a node token that fixes no name, `enroll --name web-1` took the name
/// of a live node, whose engine address and audit trail it then shared.
#[tokio::test]
async fn refuses_a_name_held_by_a_live_certificate_and_keeps_the_token() {
    let f = fixture().await;
    let (first, _) = f.token(spec(Role::Node)).await;
    let holder = f.enroll_node(&first, &key()).await.unwrap();
    let (second, record) = f.token(spec(Role::Node)).await;
    let refusal = f.enroll_node(&second, &key()).await.unwrap_err();
    assert!(
        matches!(&refusal, Refusal::NameTaken { holder: h, .. } if *h == holder.info.serial),
        "{refusal:?}"
    );
    assert_eq!(refusal.reason(), dtca_common::Reason::NameTaken);
    assert!(refusal.to_string().contains("--replace"), "{refusal}");
    let stored = f
        .registrar
        .store()
        .token(&record.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.uses, 0, "the refused enrollment spent the token");
}

#[tokio::test]
async fn a_replacing_token_takes_the_name_and_revokes_the_old_holder() {
    let f = fixture().await;
    let (first, _) = f.token(spec(Role::Node)).await;
    let holder = f.enroll_node(&first, &key()).await.unwrap();
    let holder_caller = f.caller_for(&holder).await;
    let (replacing, record) = f
        .token(TokenSpec {
            name: Some("web-1".into()),
            replace: true,
            ..spec(Role::Node)
        })
        .await;
    assert!(record.replace);
    let heir = f.enroll_node(&replacing, &key()).await.unwrap();
    assert!(matches!(
        f.registrar
            .authenticate(Some(std::slice::from_ref(&holder.leaf_der)), now(), false)
            .await,
        Err(Refusal::CertRevoked(_))
    ));
    // The old holder can no longer renew, whichever copy it uses.
    assert!(matches!(
        f.registrar
            .renew(
                &holder_caller,
                &node_csr(&key(), &["web-1.example.com"], &[]),
                now()
            )
            .await,
        Err(Refusal::CertRevoked(_))
    ));
    f.caller_for(&heir).await;
}

#[tokio::test]
async fn a_replacing_token_needs_the_name_it_replaces() {
    let f = fixture().await;
    let refused = f
        .registrar
        .create_token(
            &f.admin,
            TokenSpec {
                replace: true,
                ..spec(Role::Node)
            },
            now(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, Refusal::InvalidArgument(_)),
        "{refused:?}"
    );
}

#[tokio::test]
async fn refuses_a_dns_name_another_live_identity_carries() {
    let f = fixture().await;
    let (token, _) = f
        .token(TokenSpec {
            uses: Some(2),
            ..spec(Role::Node)
        })
        .await;
    f.enroll_node(&token, &key()).await.unwrap();
    let refused = f
        .registrar
        .enroll(
            &token,
            &node_csr(&key(), &["web-1.example.com"], &["10.0.0.5"]),
            "web-2",
            now(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, Refusal::HostNameTaken { dns, .. } if dns == "web-1.example.com"),
        "{refused:?}"
    );
    // The same IP address is fine: addresses move between hosts.
    f.registrar
        .enroll(
            &token,
            &node_csr(&key(), &["web-2.example.com"], &["10.0.0.5"]),
            "web-2",
            now(),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn refuses_addresses_and_localhost_as_dns_names_of_a_node() {
    let f = fixture().await;
    let (token, _) = f
        .token(TokenSpec {
            uses: Some(5),
            ..spec(Role::Node)
        })
        .await;
    for bad in ["10.0.0.1", "0x7f.1", "localhost"] {
        let refused = f
            .registrar
            .enroll(&token, &node_csr(&key(), &[bad], &[]), "odd", now())
            .await
            .unwrap_err();
        assert!(
            matches!(refused, Refusal::NameNotAllowed(_)),
            "{bad}: {refused:?}"
        );
    }
}

/// Regression: a node certificate was also a client certificate, and dockerd took it
/// as a docker client on every engine.
#[tokio::test]
async fn a_node_certificate_is_refused_as_a_client_but_serves_the_cas_node_calls() {
    let f = fixture().await;
    let (token, _) = f.token(spec(Role::Node)).await;
    let node = f.enroll_node(&token, &key()).await.unwrap();
    let signer = f.registrar.signer(OffsetDateTime::now_utc()).unwrap();
    let inter = vec![signer.intermediate_der().to_vec()];
    let root = signer.root_der();
    assert!(chain::verify(&node.leaf_der, &inter, root, now(), Usage::Client).is_err());
    chain::verify(&node.leaf_der, &inter, root, now(), Usage::Server).unwrap();
    // The CA's own check accepts it for the node's calls: renewal keeps working.
    let caller = f.caller_for(&node).await;
    let renewed = f
        .registrar
        .renew(
            &caller,
            &node_csr(&key(), &["web-1.example.com"], &[]),
            now(),
        )
        .await
        .unwrap();
    assert!(renewed.info.server_auth && !renewed.info.client_auth);
}

/// Regression: `cert revoke --name` skipped expired certificates, and an expired copy
/// could still renew within the grace window.
#[tokio::test]
async fn a_revoked_name_renews_with_no_copy_expired_or_not() {
    let f = fixture_with(Rules {
        renew_grace: Duration::from_secs(3600),
        ..Rules::default()
    })
    .await;
    let (token, _) = f
        .token(TokenSpec {
            cert_ttl: Some(Duration::from_secs(60)),
            ..spec(Role::Node)
        })
        .await;
    let issued = f.enroll_node(&token, &key()).await.unwrap();
    let after = issued.info.not_after + time::Duration::minutes(5);
    let revoked = f
        .registrar
        .revoke(
            &f.admin,
            RevokeTarget::Name {
                name: "web-1".into(),
                role: None,
            },
            "stolen",
            after,
        )
        .await
        .unwrap();
    assert_eq!(revoked, vec![issued.info.serial.clone()]);
    assert!(matches!(
        f.registrar
            .authenticate(Some(std::slice::from_ref(&issued.leaf_der)), after, true)
            .await,
        Err(Refusal::CertRevoked(_))
    ));
}

/// Regression: a renewed certificate kept renewing until it expired, so one stolen copy
/// forked the identity into several valid siblings.
#[tokio::test]
async fn an_old_copy_cannot_renew_once_its_successor_is_in_use() {
    let f = fixture().await;
    let (token, _) = f.token(spec(Role::Node)).await;
    let first = f.enroll_node(&token, &key()).await.unwrap();
    let old = f.caller_for(&first).await;
    let csr = || node_csr(&key(), &["web-1.example.com"], &[]);
    let lost = f.registrar.renew(&old, &csr(), now()).await.unwrap();
    // The successor was never used (its holder crashed before writing it): the old
    // certificate renews again, and the unused successor is revoked.
    let second = f.registrar.renew(&old, &csr(), now()).await.unwrap();
    assert!(matches!(
        f.registrar
            .authenticate(Some(std::slice::from_ref(&lost.leaf_der)), now(), false)
            .await,
        Err(Refusal::CertRevoked(_))
    ));
    // Once the successor authenticates a call, the old copy is refused, for a renewal
    // and for any other call.
    f.caller_for(&second).await;
    let refused = f.registrar.renew(&old, &csr(), now()).await.unwrap_err();
    assert!(
        matches!(&refused, Refusal::CertSuperseded { successor, .. } if *successor == second.info.serial),
        "{refused:?}"
    );
    assert_eq!(refused.reason(), dtca_common::Reason::CertSuperseded);
    assert!(matches!(
        f.registrar
            .authenticate(Some(std::slice::from_ref(&first.leaf_der)), now(), false)
            .await,
        Err(Refusal::CertSuperseded { .. })
    ));
}

#[tokio::test]
async fn the_engine_address_and_the_audit_name_the_reporting_serial() {
    let f = fixture().await;
    let (token, _) = f.token(spec(Role::Node)).await;
    let issued = f.enroll_node(&token, &key()).await.unwrap();
    let node = f.caller_for(&issued).await;
    f.registrar
        .report_engine(&node, "tcp://10.0.0.5:2376", now())
        .await
        .unwrap();
    let audit = f.registrar.audit(20).await.unwrap();
    let serial = issued.info.serial.to_string();
    assert!(
        audit
            .iter()
            .any(|e| e.kind == "engine-report" && e.detail.contains(&serial)),
        "{audit:?}"
    );
    assert!(
        audit
            .iter()
            .any(|e| e.kind == "token-use" && e.detail.contains(&serial)),
        "{audit:?}"
    );
    let nodes = f.registrar.nodes(now()).await.unwrap();
    assert_eq!(nodes[0].endpoint.as_deref(), Some("tcp://10.0.0.5:2376"));
}

#[tokio::test]
async fn lists_mark_an_identity_with_more_than_one_valid_certificate() {
    let f = fixture().await;
    let (token, _) = f.token(spec(Role::Node)).await;
    let issued = f.enroll_node(&token, &key()).await.unwrap();
    let query = crate::store::CertQuery {
        now: now(),
        expiring_within: None,
        include_inactive: false,
        limit: None,
        role: Some(Role::Node),
        name: None,
    };
    let certs = f.registrar.certificates(&query).await.unwrap();
    assert!(f.registrar.forks(&certs, now()).await.unwrap().is_empty());
    // A current certificate that does not hold the name (as stores from before names had
    // one holder can contain) is marked.
    let stray =
        crate::store::conformance::cert(Role::Node, "web-1", now() + time::Duration::hours(1));
    let mut stray_summary = stray.summary.clone();
    stray_summary.identity = issued.info.identity.clone().unwrap();
    let forks = f
        .registrar
        .forks(&[certs[0].clone(), stray_summary.clone()], now())
        .await
        .unwrap();
    assert_eq!(forks, vec![stray_summary.serial]);
}
