use dtca_pki::authority::LeafTemplate;

use super::*;
use crate::store::RevokeTarget;

#[tokio::test]
async fn authentication_refuses_missing_foreign_unknown_and_revoked_certificates() {
    let f = fixture().await;
    assert_eq!(
        f.registrar
            .authenticate(None, now(), false)
            .await
            .unwrap_err(),
        Refusal::CertMissing
    );
    assert_eq!(
        f.registrar
            .authenticate(Some(&[]), now(), false)
            .await
            .unwrap_err(),
        Refusal::CertMissing
    );

    let other = fixture().await;
    let (token, _) = other.token(spec(Role::Node)).await;
    let foreign = other
        .enroll_node(&token, &PrivateKey::generate(KeyType::P256).unwrap())
        .await
        .unwrap();
    assert_eq!(
        f.registrar
            .authenticate(Some(&[foreign.leaf_der]), now(), false)
            .await
            .unwrap_err(),
        Refusal::CertForeign
    );

    // Signed by this CA but never stored (as if the database lost it): unknown.
    let key = PrivateKey::generate(KeyType::P256).unwrap();
    let unstored = f
        .registrar
        .signer(OffsetDateTime::now_utc())
        .unwrap()
        .issue(
            &LeafTemplate {
                identity: Identity::new("prod", Role::Admin, "ghost").unwrap(),
                public_key_der: key.public_key_der(),
                dns_names: vec![],
                ip_addresses: vec![],
                access: dtca_pki::access::Access::Full,
                lifetime: Duration::from_secs(600),
            },
            now(),
        )
        .unwrap();
    assert!(matches!(
        f.registrar
            .authenticate(Some(&[unstored.der]), now(), false)
            .await,
        Err(Refusal::CertUnknown(_))
    ));

    let (token, _) = f.token(spec(Role::Node)).await;
    let issued = f.enroll_node(&token, &key).await.unwrap();
    f.registrar
        .revoke(
            &f.admin,
            RevokeTarget::Serial(issued.info.serial.clone()),
            "test",
            now(),
        )
        .await
        .unwrap();
    assert!(matches!(
        f.registrar
            .authenticate(Some(&[issued.leaf_der]), now(), true)
            .await,
        Err(Refusal::CertRevoked(_))
    ));
}

#[tokio::test]
async fn expired_certificates_renew_only_within_the_grace() {
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
    let issued = f
        .enroll_node(&token, &PrivateKey::generate(KeyType::P256).unwrap())
        .await
        .unwrap();
    let chain = [issued.leaf_der.clone()];
    let soon_after = issued.info.not_after + time::Duration::minutes(10);
    let long_after = issued.info.not_after + time::Duration::hours(2);
    f.registrar
        .authenticate(Some(&chain), soon_after, true)
        .await
        .unwrap();
    assert!(matches!(
        f.registrar
            .authenticate(Some(&chain), soon_after, false)
            .await,
        Err(Refusal::CertExpired { .. })
    ));
    assert!(matches!(
        f.registrar
            .authenticate(Some(&chain), long_after, true)
            .await,
        Err(Refusal::CertExpired { .. })
    ));
}

#[tokio::test]
async fn roles_are_enforced() {
    let f = fixture().await;
    let node = f.node().await;
    assert!(matches!(
        require(&node, &[Role::Admin], "x"),
        Err(Refusal::RoleNotAllowed { .. })
    ));
    require(&f.admin, &[Role::Admin], "x").unwrap();
    assert!(matches!(
        f.registrar
            .report_engine(&f.admin, "tcp://10.0.0.5:2376", now())
            .await,
        Err(Refusal::RoleNotAllowed { .. })
    ));
    f.registrar
        .report_engine(&node, "tcp://10.0.0.5:2376", now())
        .await
        .unwrap();
    f.registrar
        .report_engine(&node, "tcp://WEB-1.example.com:2376", now())
        .await
        .unwrap();
    f.registrar
        .report_engine(&node, "tcp://10.0.0.5:2376", now())
        .await
        .unwrap();
    // Malformed, or a host the node's certificate does not name (another engine).
    for bad in [
        "http://x",
        "tcp://10.0.0.6:2376",
        "tcp://evil.example.org:2376",
    ] {
        assert!(
            matches!(
                f.registrar.report_engine(&node, bad, now()).await,
                Err(Refusal::InvalidArgument(_))
            ),
            "{bad}"
        );
    }
    let nodes = f.registrar.nodes(now()).await.unwrap();
    assert_eq!(nodes[0].endpoint.as_deref(), Some("tcp://10.0.0.5:2376"));
}
