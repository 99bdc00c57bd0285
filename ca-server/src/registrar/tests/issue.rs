use super::*;

#[tokio::test]
async fn enrolls_a_node_and_consumes_one_use() {
    let f = fixture().await;
    let (token, record) = f
        .token(TokenSpec {
            uses: Some(2),
            ..spec(Role::Node)
        })
        .await;
    let key = PrivateKey::generate(KeyType::P256).unwrap();
    let issued = f.enroll_node(&token, &key).await.unwrap();
    assert_eq!(
        issued.info.identity.as_ref().unwrap().uri(),
        "dtca://prod/node/web-1"
    );
    assert_eq!(issued.info.public_key_der, key.public_key_der());
    assert!(issued.info.server_auth && !issued.info.client_auth);
    let stored = f
        .registrar
        .store()
        .token(&record.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.uses, 1);
    assert!(f.registrar.certificate(&issued.info.serial).await.is_ok());
}

#[tokio::test]
async fn refuses_unknown_malformed_and_foreign_tokens() {
    let f = fixture().await;
    let key = PrivateKey::generate(KeyType::P256).unwrap();
    assert!(matches!(
        f.enroll_node("DTCA-1-nope", &key).await,
        Err(Refusal::TokenMalformed(_))
    ));
    // Well-formed, right root, never created.
    let stranger =
        dtca_pki::token::JoinToken::generate(f.registrar.ca().active_root().digest()).unwrap();
    assert_eq!(
        f.enroll_node(&stranger.expose(), &key).await.unwrap_err(),
        Refusal::TokenUnknown
    );
    // Another CA's token.
    let other =
        dtca_pki::token::JoinToken::generate(dtca_pki::token::RootDigest::of(b"x")).unwrap();
    assert_eq!(
        f.enroll_node(&other.expose(), &key).await.unwrap_err(),
        Refusal::TokenForeignCa
    );
}

#[tokio::test]
async fn refuses_expired_revoked_and_used_up_tokens() {
    let f = fixture().await;
    let key = PrivateKey::generate(KeyType::P256).unwrap();
    let (once, _) = f.token(spec(Role::Node)).await;
    f.enroll_node(&once, &key).await.unwrap();
    assert_eq!(
        f.enroll_node(&once, &key).await.unwrap_err(),
        Refusal::TokenUsedUp
    );

    let (revoked, record) = f.token(spec(Role::Node)).await;
    f.registrar
        .revoke_token(&f.admin, &record.id, now())
        .await
        .unwrap();
    assert_eq!(
        f.enroll_node(&revoked, &key).await.unwrap_err(),
        Refusal::TokenRevoked
    );

    let (short, _) = f
        .token(TokenSpec {
            ttl: Some(Duration::from_secs(1)),
            ..spec(Role::Node)
        })
        .await;
    let later = now() + time::Duration::seconds(5);
    let csr = node_csr(&key, &["a.example"], &[]);
    assert!(matches!(
        f.registrar.enroll(&short, &csr, "n", later).await,
        Err(Refusal::TokenExpired { .. })
    ));
}

#[tokio::test]
async fn a_refused_enrollment_does_not_burn_the_token() {
    let f = fixture().await;
    let (token, record) = f
        .token(TokenSpec {
            allow_dns: vec!["*.nodes.example".into()],
            allow_ip: vec!["10.1.0.0/16".into()],
            ..spec(Role::Node)
        })
        .await;
    let key = PrivateKey::generate(KeyType::P256).unwrap();
    let outside = node_csr(&key, &["evil.example"], &[]);
    assert!(matches!(
        f.registrar.enroll(&token, &outside, "n", now()).await,
        Err(Refusal::NameNotAllowed(_))
    ));
    let outside_ip = node_csr(&key, &["a.nodes.example"], &["10.2.0.1"]);
    assert!(matches!(
        f.registrar.enroll(&token, &outside_ip, "n", now()).await,
        Err(Refusal::NameNotAllowed(_))
    ));
    assert!(matches!(
        f.registrar.enroll(&token, b"garbage", "n", now()).await,
        Err(Refusal::Csr(_))
    ));
    assert_eq!(
        f.registrar
            .store()
            .token(&record.id)
            .await
            .unwrap()
            .unwrap()
            .uses,
        0
    );
    let inside = node_csr(&key, &["a.nodes.example"], &["10.1.2.3"]);
    f.registrar
        .enroll(&token, &inside, "n", now())
        .await
        .unwrap();
}

#[tokio::test]
async fn node_certificates_need_a_host_name() {
    let f = fixture().await;
    let (token, record) = f.token(spec(Role::Node)).await;
    let key = PrivateKey::generate(KeyType::P256).unwrap();
    let bare = csr::build(&key, "n", &[], &[]).unwrap();
    assert!(matches!(
        f.registrar.enroll(&token, &bare, "n", now()).await,
        Err(Refusal::InvalidArgument(_))
    ));
    assert_eq!(
        f.registrar
            .store()
            .token(&record.id)
            .await
            .unwrap()
            .unwrap()
            .uses,
        0
    );
}

#[tokio::test]
async fn token_name_wins_over_the_requested_name() {
    let f = fixture().await;
    let (token, _) = f
        .token(TokenSpec {
            name: Some("fixed".into()),
            ..spec(Role::Node)
        })
        .await;
    let key = PrivateKey::generate(KeyType::P256).unwrap();
    let issued = f.enroll_node(&token, &key).await.unwrap();
    assert_eq!(issued.info.identity.unwrap().name, "fixed");
}

#[tokio::test]
async fn operator_certificates_are_client_only_and_carry_no_host_names() {
    let f = fixture().await;
    let (token, _) = f
        .token(TokenSpec {
            uses: Some(2),
            ..spec(Role::Operator)
        })
        .await;
    let key = PrivateKey::generate(KeyType::P256).unwrap();
    // Host names asked for by an operator are dropped, never copied.
    let with_names = node_csr(&key, &["laptop.example"], &["10.0.0.9"]);
    let issued = f
        .registrar
        .enroll(&token, &with_names, "alice", now())
        .await
        .unwrap();
    assert!(issued.info.dns_names.is_empty() && issued.info.ip_addresses.is_empty());
    assert!(issued.info.client_auth && !issued.info.server_auth);
    let life = issued.info.not_after - issued.info.not_before;
    assert!(life <= time::Duration::hours(12) + time::Duration::minutes(5));
}

#[tokio::test]
async fn renewal_keeps_identity_and_lifetime_with_a_new_key() {
    let f = fixture().await;
    let (token, _) = f
        .token(TokenSpec {
            cert_ttl: Some(Duration::from_secs(600)),
            ..spec(Role::Node)
        })
        .await;
    let key = PrivateKey::generate(KeyType::P256).unwrap();
    let first = f.enroll_node(&token, &key).await.unwrap();
    let caller = f.caller_for(&first).await;
    let new_key = PrivateKey::generate(KeyType::P256).unwrap();
    let renewed = f
        .registrar
        .renew(
            &caller,
            &node_csr(&new_key, &["web-1.example.com"], &["10.0.0.5"]),
            now(),
        )
        .await
        .unwrap();
    assert_eq!(renewed.info.identity, first.info.identity);
    assert_ne!(renewed.info.serial, first.info.serial);
    assert_eq!(renewed.info.public_key_der, new_key.public_key_der());
    let life = renewed.info.not_after - renewed.info.not_before;
    assert!(life <= time::Duration::seconds(600 + 300), "{life}");
    // The same key again is refused.
    assert!(matches!(
        f.registrar
            .renew(&caller, &node_csr(&key, &["web-1.example.com"], &[]), now())
            .await,
        Err(Refusal::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn renewal_cannot_widen_names_beyond_the_enrollment_policy() {
    let f = fixture().await;
    let (token, _) = f
        .token(TokenSpec {
            allow_dns: vec!["*.nodes.example".into()],
            ..spec(Role::Node)
        })
        .await;
    let key = PrivateKey::generate(KeyType::P256).unwrap();
    let first = f
        .registrar
        .enroll(
            &token,
            &node_csr(&key, &["a.nodes.example"], &[]),
            "a",
            now(),
        )
        .await
        .unwrap();
    let caller = f.caller_for(&first).await;
    let wider = node_csr(
        &PrivateKey::generate(KeyType::P256).unwrap(),
        &["a.nodes.example", "bank.example"],
        &[],
    );
    assert!(matches!(
        f.registrar.renew(&caller, &wider, now()).await,
        Err(Refusal::NameNotAllowed(_))
    ));
    // A new name inside the policy is fine (the node's addresses changed).
    let moved = node_csr(
        &PrivateKey::generate(KeyType::P256).unwrap(),
        &["b.nodes.example"],
        &[],
    );
    let renewed = f.registrar.renew(&caller, &moved, now()).await.unwrap();
    assert_eq!(renewed.info.dns_names, vec!["b.nodes.example"]);
}

#[tokio::test]
async fn single_use_token_enrolls_once_under_concurrency() {
    let f = Arc::new(fixture().await);
    let (token, _) = f.token(spec(Role::Node)).await;
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let f = f.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            f.enroll_node(&token, &PrivateKey::generate(KeyType::P256).unwrap())
                .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(Refusal::TokenUsedUp) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(ok, 1);
}
