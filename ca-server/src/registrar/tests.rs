use std::sync::Arc;
use std::time::Duration;

use dtca_pki::authority::hierarchy;
use dtca_pki::csr;
use dtca_pki::key::KeyType;
use time::OffsetDateTime;

use super::*;
use crate::store::sqlite::SqliteStore;

struct Fixture {
    registrar: Registrar,
    admin: Caller,
    _dir: tempfile::TempDir,
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

async fn fixture_with(rules: Rules) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let h = hierarchy::create("prod", KeyType::P256, now()).unwrap();
    let authority =
        Authority::new("prod", h.root_der, h.intermediate_der, h.intermediate_key).unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("db")).unwrap());
    let registrar = Registrar::new(authority, store, rules, Arc::new(Metrics::default()));
    let (issued, _) = registrar
        .issue_local(
            Identity::new("prod", Role::Admin, "admin").unwrap(),
            vec![],
            vec![],
            Duration::from_secs(3600),
            now(),
        )
        .await
        .unwrap();
    let admin = registrar
        .authenticate(Some(&[issued.leaf_der]), now(), false)
        .await
        .unwrap();
    Fixture {
        registrar,
        admin,
        _dir: dir,
    }
}

async fn fixture() -> Fixture {
    fixture_with(Rules::default()).await
}

fn spec(role: Role) -> TokenSpec {
    TokenSpec {
        role,
        ttl: None,
        uses: None,
        name: None,
        allow_dns: vec![],
        allow_ip: vec![],
        cert_ttl: None,
    }
}

fn node_csr(key: &PrivateKey, dns: &[&str], ips: &[&str]) -> Vec<u8> {
    let dns: Vec<String> = dns.iter().map(|s| s.to_string()).collect();
    let ips: Vec<IpAddr> = ips.iter().map(|s| s.parse().unwrap()).collect();
    csr::build(key, "n", &dns, &ips).unwrap()
}

impl Fixture {
    async fn token(&self, spec: TokenSpec) -> (String, TokenRecord) {
        self.registrar
            .create_token(&self.admin, spec, now())
            .await
            .unwrap()
    }

    async fn enroll_node(&self, token: &str, key: &PrivateKey) -> Result<Issued, Refusal> {
        self.registrar
            .enroll(
                token,
                &node_csr(key, &["web-1.example.com"], &["10.0.0.5"]),
                "web-1",
                now(),
            )
            .await
    }

    async fn caller_for(&self, issued: &Issued) -> Caller {
        self.registrar
            .authenticate(Some(std::slice::from_ref(&issued.leaf_der)), now(), false)
            .await
            .unwrap()
    }
}

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
    assert!(issued.info.server_auth && issued.info.client_auth);
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
    let stranger = dtca_pki::token::JoinToken::generate(f.registrar.root_digest).unwrap();
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
        .authority()
        .issue(
            &LeafTemplate {
                identity: Identity::new("prod", Role::Admin, "ghost").unwrap(),
                public_key_der: key.public_key_der(),
                dns_names: vec![],
                ip_addresses: vec![],
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
    let (token, _) = f.token(spec(Role::Node)).await;
    let issued = f
        .enroll_node(&token, &PrivateKey::generate(KeyType::P256).unwrap())
        .await
        .unwrap();
    let node = f.caller_for(&issued).await;
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

#[tokio::test]
async fn crl_lists_revoked_certificates() {
    let f = fixture().await;
    let (token, _) = f.token(spec(Role::Node)).await;
    let issued = f
        .enroll_node(&token, &PrivateKey::generate(KeyType::P256).unwrap())
        .await
        .unwrap();
    f.registrar
        .revoke(
            &f.admin,
            RevokeTarget::Name {
                name: "web-1".into(),
                role: None,
            },
            "gone",
            now(),
        )
        .await
        .unwrap();
    let der = f.registrar.crl(now()).await.unwrap();
    use x509_parser::prelude::FromDer;
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&der).unwrap();
    let serials: Vec<Serial> = crl
        .iter_revoked_certificates()
        .map(|r| Serial::from_be_bytes(r.raw_serial()))
        .collect();
    assert_eq!(serials, vec![issued.info.serial]);
}

#[tokio::test]
async fn revoking_a_name_is_per_role_and_never_the_calling_admin() {
    let f = fixture().await;
    let (node_token, _) = f.token(spec(Role::Node)).await;
    let node = f
        .enroll_node(&node_token, &PrivateKey::generate(KeyType::P256).unwrap())
        .await
        .unwrap();
    // An operator who picked the node's name.
    let (op_token, _) = f.token(spec(Role::Operator)).await;
    let op_key = PrivateKey::generate(KeyType::P256).unwrap();
    let operator = f
        .registrar
        .enroll(
            &op_token,
            &csr::build(&op_key, "web-1", &[], &[]).unwrap(),
            "web-1",
            now(),
        )
        .await
        .unwrap();
    let by_name = |name: &str, role: Option<Role>| RevokeTarget::Name {
        name: name.into(),
        role,
    };

    let refused = f
        .registrar
        .revoke(&f.admin, by_name("web-1", None), "x", now())
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, Refusal::InvalidArgument(m) if m.contains("--role")),
        "{refused:?}"
    );
    assert!(matches!(
        f.registrar
            .revoke(&f.admin, by_name("nobody", None), "x", now())
            .await,
        Err(Refusal::NotFound(_))
    ));
    let revoked = f
        .registrar
        .revoke(&f.admin, by_name("web-1", Some(Role::Operator)), "x", now())
        .await
        .unwrap();
    assert_eq!(revoked, vec![operator.info.serial]);
    // The node is untouched and now the only "web-1": no role needed.
    let revoked = f
        .registrar
        .revoke(&f.admin, by_name("web-1", None), "x", now())
        .await
        .unwrap();
    assert_eq!(revoked, vec![node.info.serial]);

    // The admin making the call cannot revoke itself, by name or by serial.
    let own = f.admin.serial.clone();
    for target in [by_name("admin", None), RevokeTarget::Serial(own.clone())] {
        let refused = f
            .registrar
            .revoke(&f.admin, target, "x", now())
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, Refusal::InvalidArgument(m) if m.contains("another admin")),
            "{refused:?}"
        );
    }
    assert!(
        f.registrar
            .certificate(&own)
            .await
            .unwrap()
            .summary
            .revoked_at
            .is_none()
    );
}
