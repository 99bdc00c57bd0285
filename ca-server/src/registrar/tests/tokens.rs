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
