use super::*;

#[tokio::test]
async fn token_specs_are_checked() {
    let f = fixture().await;
    let bad = [
        TokenSpec {
            uses: Some(0),
            ..spec(Role::Node)
        },
        TokenSpec {
            ttl: Some(Duration::from_secs(400 * 86_400)),
            ..spec(Role::Node)
        },
        TokenSpec {
            name: Some("../etc".into()),
            ..spec(Role::Node)
        },
        TokenSpec {
            allow_dns: vec!["a..b".into()],
            ..spec(Role::Node)
        },
        TokenSpec {
            allow_ip: vec!["10.0.0.0/8".into()],
            ..spec(Role::Operator)
        },
        TokenSpec {
            cert_ttl: Some(Duration::from_secs(40 * 86_400)),
            ..spec(Role::Operator)
        },
        spec(Role::Ca),
    ];
    for s in bad {
        assert!(
            matches!(
                f.registrar.create_token(&f.admin, s.clone(), now()).await,
                Err(Refusal::InvalidArgument(_))
            ),
            "{s:?} accepted"
        );
    }
}

#[tokio::test]
async fn a_token_tells_its_holder_what_it_allows_and_spends_nothing() {
    let f = fixture().await;
    let (token, record) = f
        .token(TokenSpec {
            name: Some("web-1".into()),
            replace: true,
            allow_dns: vec!["*.nodes.example.com".into()],
            allow_ip: vec!["10.0.0.0/8".into()],
            ..spec(Role::Node)
        })
        .await;
    let allowance = f.registrar.token_allowance(&token, now()).await.unwrap();
    assert_eq!(allowance.role, Role::Node);
    assert_eq!(allowance.name.as_deref(), Some("web-1"));
    assert!(allowance.replace);
    assert_eq!(
        allowance.expires_at.unix_timestamp(),
        record.expires_at.unix_timestamp()
    );
    assert_eq!(allowance.policy, record.policy);
    // Asked twice: no use spent.
    f.registrar.token_allowance(&token, now()).await.unwrap();
    let stored = f
        .registrar
        .store()
        .token(&record.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.uses, 0);
}

#[tokio::test]
async fn refuses_to_describe_a_token_it_would_refuse_to_enroll_with() {
    let f = fixture().await;
    let key = PrivateKey::generate(KeyType::P256).unwrap();
    let ask = |t: String| {
        let r = &f.registrar;
        async move { r.token_allowance(&t, now()).await.unwrap_err() }
    };
    assert!(matches!(
        ask("DTCA-1-nope".into()).await,
        Refusal::TokenMalformed(_)
    ));
    let stranger =
        dtca_pki::token::JoinToken::generate(f.registrar.ca().active_root().digest()).unwrap();
    assert_eq!(ask(stranger.expose()).await, Refusal::TokenUnknown);
    let foreign =
        dtca_pki::token::JoinToken::generate(dtca_pki::token::RootDigest::of(b"x")).unwrap();
    assert_eq!(ask(foreign.expose()).await, Refusal::TokenForeignCa);

    let (once, _) = f.token(spec(Role::Node)).await;
    f.enroll_node(&once, &key).await.unwrap();
    assert_eq!(ask(once).await, Refusal::TokenUsedUp);

    let (revoked, record) = f.token(spec(Role::Node)).await;
    f.registrar
        .revoke_token(&f.admin, &record.id, now())
        .await
        .unwrap();
    assert_eq!(ask(revoked).await, Refusal::TokenRevoked);

    let (short, _) = f
        .token(TokenSpec {
            ttl: Some(Duration::from_secs(1)),
            ..spec(Role::Node)
        })
        .await;
    let later = now() + time::Duration::seconds(5);
    assert!(matches!(
        f.registrar.token_allowance(&short, later).await,
        Err(Refusal::TokenExpired { .. })
    ));
}
