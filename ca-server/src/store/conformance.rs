//! The behaviour every [`Store`] backend must have, as one suite: the embedded backend runs
//! it in its unit tests, the PostgreSQL backend against a real server.

#![allow(clippy::unwrap_used)] // test support: a failed step should stop the suite loudly.

use std::sync::Arc;
use std::time::Duration;

use dtca_pki::Serial;
use dtca_pki::identity::{Identity, Role};
use dtca_pki::policy::SanPolicy;
use time::OffsetDateTime;

use crate::restart::{Decision, RestartLimits, SlotRequest, Wait};

use super::{
    AuditEntry, AuditKind, CertQuery, CertRecord, CertSummary, Issuance, NodeRecord, RevokeTarget,
    Store, StoreError, TokenRecord,
};

/// Runs every check against a fresh, empty store.
///
/// # Panics
/// On the first behaviour that differs from the contract.
pub async fn run_all(store: Arc<dyn Store>) {
    tokens(&*store).await;
    enrollment_consumes_exactly_the_uses_allowed(&*store).await;
    single_use_token_is_spent_once_under_concurrency(store.clone()).await;
    renewal_supersedes_and_revocation_blocks_it(&*store).await;
    lists_and_revocation_by_name(&*store).await;
    nodes_and_engines(&*store).await;
    audit_is_newest_first(&*store).await;
    a_name_has_one_holder_unless_a_token_replaces_it(&*store).await;
    a_dns_name_belongs_to_one_identity(&*store).await;
    a_renewed_certificate_renews_again_only_while_its_successor_is_unused(&*store).await;
    an_engine_address_reported_by_a_revoked_certificate_is_not_shown(&*store).await;
    an_expired_node_stays_listed_until_a_newer_certificate_of_it_is_revoked(&*store).await;
    revocations_since_a_time_oldest_first(&*store).await;
    the_newest_agent_report_of_each_node_is_kept(&*store).await;
    ca_material_changes_whole_and_only_from_the_generation_read(&*store).await;
    current_certificates_are_the_valid_unrenewed_ones(&*store).await;
    restart_slots_are_leases_that_expire_and_keep_swarm_managers_apart(&*store).await;
    access_levels_are_kept_with_tokens_and_certificates(&*store).await;
    restart_slots_are_never_over_granted(store.clone(), store, "crowd").await;
}

async fn access_levels_are_kept_with_tokens_and_certificates(store: &dyn Store) {
    use dtca_pki::access::Access;
    let later = now() + time::Duration::hours(1);
    let read_only = TokenRecord {
        role: Role::Operator,
        access: Access::ReadOnly,
        ..token("t-read-only", 1, later)
    };
    store
        .insert_token(read_only, audit(AuditKind::TokenCreate, "t-read-only"))
        .await
        .unwrap();
    let stored = store.token("t-read-only").await.unwrap().unwrap();
    assert_eq!(stored.access, Access::ReadOnly);
    assert!(
        store
            .tokens()
            .await
            .unwrap()
            .iter()
            .any(|t| t.id == "t-read-only" && t.access == Access::ReadOnly)
    );
    let mut c = cert(Role::Operator, "reader", later);
    c.summary.dns_names.clear();
    c.summary.ip_addresses.clear();
    c.summary.access = Access::ReadOnly;
    let serial = c.summary.serial.clone();
    store
        .record_issuance(enrollment(c, "t-read-only"))
        .await
        .unwrap();
    let record = store.certificate(&serial).await.unwrap().unwrap();
    assert_eq!(record.summary.access, Access::ReadOnly);
    let listed = store
        .certificates(&CertQuery {
            now: now(),
            expiring_within: None,
            include_inactive: false,
            limit: None,
            role: Some(Role::Operator),
            name: Some("reader".into()),
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].access, Access::ReadOnly);
}

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(OffsetDateTime::now_utc().unix_timestamp())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// A token record with fixed limits.
pub fn token(id: &str, max_uses: u32, expires_at: OffsetDateTime) -> TokenRecord {
    TokenRecord {
        id: id.to_string(),
        secret_hash: vec![7; 32],
        role: Role::Node,
        name: None,
        max_uses,
        uses: 0,
        created_at: now(),
        expires_at,
        revoked_at: None,
        policy: SanPolicy::default(),
        cert_ttl: Some(Duration::from_secs(600)),
        replace: false,
        access: dtca_pki::access::Access::Full,
    }
}

/// A certificate record (its DER is a placeholder: stores do not parse it).
pub fn cert(role: Role, name: &str, not_after: OffsetDateTime) -> CertRecord {
    let rng = ring::rand::SystemRandom::new();
    let serial = Serial::random(&rng).unwrap_or_else(|_| Serial::from_be_bytes(&[1]));
    CertRecord {
        summary: CertSummary {
            serial,
            identity: Identity {
                cluster: "test".into(),
                role,
                name: name.into(),
            },
            dns_names: vec![format!("{name}.example")],
            ip_addresses: vec![
                "192.0.2.1"
                    .parse()
                    .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0])),
            ],
            not_before: now() - time::Duration::minutes(5),
            not_after,
            revoked_at: None,
            renewed_by: None,
            access: dtca_pki::access::Access::Full,
        },
        der: vec![0x30, 0x00],
        token_id: None,
        renewed_from: None,
        policy: SanPolicy::default(),
        issued_at: now(),
        revocation_reason: None,
        first_used_at: None,
    }
}

fn enrollment(cert: CertRecord, token_id: &str) -> Issuance {
    Issuance {
        audit: vec![AuditEntry::new(
            now(),
            AuditKind::Issue,
            format!("token:{token_id}"),
            cert.summary.serial.to_string(),
            "",
        )],
        cert,
        token_id: Some(token_id.to_string()),
        renewal_of: None,
        replace: false,
        at: now(),
    }
}

/// A renewal of `old` by `cert`.
fn renewal(mut cert: CertRecord, old: &Serial) -> Issuance {
    cert.renewed_from = Some(old.clone());
    Issuance {
        audit: vec![audit(AuditKind::Renew, &cert.summary.serial.to_string())],
        cert,
        token_id: None,
        renewal_of: Some(old.clone()),
        replace: false,
        at: now(),
    }
}

fn audit(kind: AuditKind, subject: &str) -> AuditEntry {
    AuditEntry::new(now(), kind, "dtca://test/admin/root", subject, "")
}

async fn tokens(store: &dyn Store) {
    let t = token("t-basic", 2, now() + time::Duration::hours(1));
    store
        .insert_token(t.clone(), audit(AuditKind::TokenCreate, "t-basic"))
        .await
        .unwrap();
    assert_eq!(store.token("t-basic").await.unwrap(), Some(t.clone()));
    assert_eq!(store.token("nope").await.unwrap(), None);
    assert!(matches!(
        store
            .insert_token(t, audit(AuditKind::TokenCreate, "t-basic"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(
        store
            .tokens()
            .await
            .unwrap()
            .iter()
            .any(|t| t.id == "t-basic")
    );
    store
        .revoke_token("t-basic", audit(AuditKind::TokenRevoke, "t-basic"))
        .await
        .unwrap();
    assert!(
        store
            .token("t-basic")
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );
    assert!(matches!(
        store
            .revoke_token("nope", audit(AuditKind::TokenRevoke, "nope"))
            .await,
        Err(StoreError::NotFound(_))
    ));
}

async fn enrollment_consumes_exactly_the_uses_allowed(store: &dyn Store) {
    let later = now() + time::Duration::hours(1);
    store
        .insert_token(
            token("t-two", 2, later),
            audit(AuditKind::TokenCreate, "t-two"),
        )
        .await
        .unwrap();
    for i in 0..2 {
        let c = cert(Role::Node, &format!("n-two-{i}"), later);
        let serial = c.summary.serial.clone();
        store.record_issuance(enrollment(c, "t-two")).await.unwrap();
        assert!(store.certificate(&serial).await.unwrap().is_some());
    }
    let refused = cert(Role::Node, "n-two-2", later);
    let serial = refused.summary.serial.clone();
    assert_eq!(
        store.record_issuance(enrollment(refused, "t-two")).await,
        Err(StoreError::TokenUsedUp)
    );
    assert_eq!(
        store.certificate(&serial).await.unwrap(),
        None,
        "a refused issuance stored its certificate"
    );
    assert_eq!(store.token("t-two").await.unwrap().unwrap().uses, 2);

    store
        .insert_token(
            token("t-old", 5, now() - time::Duration::seconds(1)),
            audit(AuditKind::TokenCreate, "t-old"),
        )
        .await
        .unwrap();
    assert!(matches!(
        store
            .record_issuance(enrollment(cert(Role::Node, "n", later), "t-old"))
            .await,
        Err(StoreError::TokenExpired(_))
    ));
    assert_eq!(
        store.token("t-old").await.unwrap().unwrap().uses,
        0,
        "an expired token use was consumed"
    );
    assert_eq!(
        store
            .record_issuance(enrollment(cert(Role::Node, "n", later), "t-none"))
            .await,
        Err(StoreError::TokenUnknown)
    );
    store
        .insert_token(
            token("t-rev", 5, later),
            audit(AuditKind::TokenCreate, "t-rev"),
        )
        .await
        .unwrap();
    store
        .revoke_token("t-rev", audit(AuditKind::TokenRevoke, "t-rev"))
        .await
        .unwrap();
    assert_eq!(
        store
            .record_issuance(enrollment(cert(Role::Node, "n", later), "t-rev"))
            .await,
        Err(StoreError::TokenRevoked)
    );
}

async fn single_use_token_is_spent_once_under_concurrency(store: Arc<dyn Store>) {
    let later = now() + time::Duration::hours(1);
    store
        .insert_token(
            token("t-once", 1, later),
            audit(AuditKind::TokenCreate, "t-once"),
        )
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .record_issuance(enrollment(
                    cert(Role::Node, &format!("race-{i}"), later),
                    "t-once",
                ))
                .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::TokenUsedUp) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(ok, 1, "a single-use token was spent {ok} times");
}

async fn renewal_supersedes_and_revocation_blocks_it(store: &dyn Store) {
    let later = now() + time::Duration::hours(1);
    store
        .insert_token(
            token("t-renew", 1, later),
            audit(AuditKind::TokenCreate, "t-renew"),
        )
        .await
        .unwrap();
    let first = cert(Role::Node, "renewer", now() + time::Duration::minutes(30));
    let first_serial = first.summary.serial.clone();
    store
        .record_issuance(enrollment(first, "t-renew"))
        .await
        .unwrap();
    let mut second = cert(Role::Node, "renewer", later);
    second.renewed_from = Some(first_serial.clone());
    let second_serial = second.summary.serial.clone();
    store
        .record_issuance(Issuance {
            cert: second,
            token_id: None,
            renewal_of: Some(first_serial.clone()),
            replace: false,
            audit: vec![audit(AuditKind::Renew, "x")],
            at: now(),
        })
        .await
        .unwrap();
    let old = store.certificate(&first_serial).await.unwrap().unwrap();
    assert_eq!(old.summary.renewed_by, Some(second_serial.clone()));
    assert_eq!(old.summary.status(now()), "renewed");
    let new = store.certificate(&second_serial).await.unwrap().unwrap();
    assert_eq!(new.renewed_from, Some(first_serial));
    assert_eq!(new.summary.status(now()), "valid");

    let revoked = store
        .revoke(
            &RevokeTarget::Serial(second_serial.clone()),
            now(),
            "test",
            "admin",
        )
        .await
        .unwrap();
    assert_eq!(revoked, vec![second_serial.clone()]);
    // Revoking again changes nothing and says so.
    assert!(
        store
            .revoke(
                &RevokeTarget::Serial(second_serial.clone()),
                now(),
                "test",
                "admin"
            )
            .await
            .unwrap()
            .is_empty()
    );
    let third = cert(Role::Node, "renewer", later);
    let third_serial = third.summary.serial.clone();
    assert_eq!(
        store
            .record_issuance(Issuance {
                cert: third,
                token_id: None,
                renewal_of: Some(second_serial.clone()),
                replace: false,
                audit: vec![],
                at: now(),
            })
            .await,
        Err(StoreError::CertRevoked(second_serial.clone()))
    );
    assert_eq!(store.certificate(&third_serial).await.unwrap(), None);
    assert!(
        store
            .revoked(now())
            .await
            .unwrap()
            .iter()
            .any(|(s, _)| *s == second_serial)
    );
    let unknown = "0102030405"
        .parse()
        .unwrap_or_else(|_| Serial::from_be_bytes(&[1]));
    assert!(matches!(
        store
            .revoke(&RevokeTarget::Serial(unknown), now(), "x", "admin")
            .await,
        Err(StoreError::NotFound(_))
    ));
}

async fn lists_and_revocation_by_name(store: &dyn Store) {
    store
        .insert_token(
            token("t-list", 10, now() + time::Duration::hours(1)),
            audit(AuditKind::TokenCreate, "t-list"),
        )
        .await
        .unwrap();
    let soon = cert(Role::Operator, "alice", now() + time::Duration::days(2));
    let soon_serial = soon.summary.serial.clone();
    let far = cert(Role::Operator, "alice", now() + time::Duration::days(20));
    let expired = cert(Role::Operator, "bob", now() - time::Duration::days(1));
    let expired_serial = expired.summary.serial.clone();
    for c in [soon, expired] {
        store
            .record_issuance(enrollment(c, "t-list"))
            .await
            .unwrap();
    }
    // alice's second certificate renews her first (one name, one holder).
    store
        .record_issuance(renewal(far, &soon_serial))
        .await
        .unwrap();
    let q = |within: Option<u64>, inactive: bool| CertQuery {
        now: now(),
        expiring_within: within.map(|d| Duration::from_secs(d * 86_400)),
        include_inactive: inactive,
        limit: None,
        role: None,
        name: None,
    };
    let expiring = store.certificates(&q(Some(7), false)).await.unwrap();
    assert!(
        expiring.iter().all(|c| c.serial != soon_serial),
        "a renewed certificate is listed as expiring"
    );
    assert!(
        expiring
            .iter()
            .all(|c| c.not_after <= now() + time::Duration::days(7) && c.not_after > now())
    );
    assert!(
        expiring
            .windows(2)
            .all(|w| w[0].not_after <= w[1].not_after),
        "not sorted by expiry"
    );
    let active = store.certificates(&q(None, false)).await.unwrap();
    assert!(active.iter().all(|c| c.serial != expired_serial));
    let all = store.certificates(&q(None, true)).await.unwrap();
    assert!(all.iter().any(|c| c.serial == expired_serial));
    assert_eq!(
        store
            .certificates(&CertQuery {
                limit: Some(1),
                ..q(None, true)
            })
            .await
            .unwrap()
            .len(),
        1
    );

    let server_own = cert(Role::Ca, "alice", now() + time::Duration::days(2));
    let server_serial = server_own.summary.serial.clone();
    let node_alice = cert(Role::Node, "alice", now() + time::Duration::days(3));
    let node_serial = node_alice.summary.serial.clone();
    for c in [server_own, node_alice] {
        store
            .record_issuance(enrollment(c, "t-list"))
            .await
            .unwrap();
    }
    let named = store
        .certificates(&CertQuery {
            name: Some("alice".into()),
            ..q(None, false)
        })
        .await
        .unwrap();
    assert_eq!(named.len(), 4, "{named:?}");
    assert!(named.iter().all(|c| c.identity.name == "alice"));
    let revoked = store
        .revoke(
            &RevokeTarget::Name {
                name: "alice".into(),
                role: Some(Role::Operator),
            },
            now(),
            "left",
            "admin",
        )
        .await
        .unwrap();
    assert_eq!(revoked.len(), 2);
    assert!(
        !revoked.contains(&server_serial) && !revoked.contains(&node_serial),
        "revoking the operator alice revoked another role's certificate"
    );
    let revoked = store
        .revoke(
            &RevokeTarget::Name {
                name: "alice".into(),
                role: None,
            },
            now(),
            "left",
            "admin",
        )
        .await
        .unwrap();
    assert_eq!(
        revoked,
        vec![node_serial],
        "revoking a name revoked the CA's own certificate"
    );
    let expiring = store.certificates(&q(Some(7), false)).await.unwrap();
    assert!(
        expiring.iter().all(|c| c.serial != soon_serial),
        "revoked certificate still listed as expiring"
    );
    assert!(
        store
            .revoked(now())
            .await
            .unwrap()
            .iter()
            .any(|(s, _)| *s == soon_serial),
        "the renewed certificate of a revoked name is not in the CRL"
    );
    let nodes_only = store
        .certificates(&CertQuery {
            role: Some(Role::Node),
            ..q(None, true)
        })
        .await
        .unwrap();
    assert!(nodes_only.iter().all(|c| c.identity.role == Role::Node));
    // Regression: an expired certificate was left unrevoked by a revocation of its name,
    // and could still renew within a renewal grace. It is revoked too (and, expired, it
    // stays out of the CRL).
    assert_eq!(
        store
            .revoke(
                &RevokeTarget::Name {
                    name: "bob".into(),
                    role: None
                },
                now(),
                "x",
                "admin"
            )
            .await
            .unwrap(),
        vec![expired_serial.clone()]
    );
    let bob = store.certificate(&expired_serial).await.unwrap().unwrap();
    assert!(bob.summary.revoked_at.is_some());
    assert!(
        store
            .revoked(now())
            .await
            .unwrap()
            .iter()
            .all(|(s, _)| *s != expired_serial)
    );
}

async fn nodes_and_engines(store: &dyn Store) {
    store
        .insert_token(
            token("t-nodes", 10, now() + time::Duration::hours(1)),
            audit(AuditKind::TokenCreate, "t-nodes"),
        )
        .await
        .unwrap();
    let older = cert(Role::Node, "engine-1", now() + time::Duration::days(1));
    let older_serial = older.summary.serial.clone();
    let newer = cert(Role::Node, "engine-1", now() + time::Duration::days(2));
    let newer_serial = newer.summary.serial.clone();
    store
        .record_issuance(enrollment(older, "t-nodes"))
        .await
        .unwrap();
    store
        .set_engine(
            "engine-1",
            "tcp://192.0.2.1:2376",
            &older_serial,
            audit(AuditKind::EngineReport, "engine-1"),
        )
        .await
        .unwrap();
    store
        .record_issuance(renewal(newer, &older_serial))
        .await
        .unwrap();
    store
        .set_engine(
            "engine-1",
            "tcp://192.0.2.9:2376",
            &newer_serial,
            audit(AuditKind::EngineReport, "engine-1"),
        )
        .await
        .unwrap();
    let nodes = store.nodes(now()).await.unwrap();
    let node = nodes.iter().find(|n| n.name == "engine-1").unwrap();
    assert_eq!(node.endpoint.as_deref(), Some("tcp://192.0.2.9:2376"));
    assert_eq!(node.cert.serial, newer_serial);
    assert_eq!(nodes.iter().filter(|n| n.name == "engine-1").count(), 1);
    assert!(nodes.iter().all(|n| n.cert.identity.role == Role::Node));
    // Engines are kept whatever becomes of the certificates.
    store
        .set_engine(
            "engine-gone",
            "tcp://192.0.2.7:2376",
            &newer_serial,
            audit(AuditKind::EngineReport, "engine-gone"),
        )
        .await
        .unwrap();
    let engines = store.engines().await.unwrap();
    let engine = engines.iter().find(|e| e.name == "engine-1").unwrap();
    assert_eq!(engine.endpoint, "tcp://192.0.2.9:2376");
    assert!(engines.iter().any(|e| e.name == "engine-gone"));
    assert_eq!(engines.iter().filter(|e| e.name == "engine-1").count(), 1);
}

async fn audit_is_newest_first(store: &dyn Store) {
    store
        .insert_token(
            token("t-audit", 1, now() + time::Duration::hours(1)),
            audit(AuditKind::TokenCreate, "last-one"),
        )
        .await
        .unwrap();
    let entries = store.audit(5).await.unwrap();
    assert_eq!(entries.len(), 5);
    assert_eq!(entries[0].subject, "last-one");
    assert_eq!(entries[0].kind, "token-create");
}

/// Enrolls `c` with a fresh token (of `role`, replacing when `replace`); the result.
async fn enroll_fresh(store: &dyn Store, c: CertRecord, replace: bool) -> Result<(), StoreError> {
    let id = format!("t-{}", c.summary.serial);
    store
        .insert_token(
            TokenRecord {
                role: c.summary.identity.role,
                replace,
                ..token(&id, 1, now() + time::Duration::hours(1))
            },
            audit(AuditKind::TokenCreate, &id),
        )
        .await
        .unwrap();
    let mut issuance = enrollment(c, &id);
    issuance.replace = replace;
    store.record_issuance(issuance).await
}

async fn a_name_has_one_holder_unless_a_token_replaces_it(store: &dyn Store) {
    let later = now() + time::Duration::hours(1);
    let holder = cert(Role::Node, "holder", later);
    let holder_serial = holder.summary.serial.clone();
    enroll_fresh(store, holder, false).await.unwrap();

    // Regression: any node token could enroll a name a live node holds.
    let thief = cert(Role::Node, "holder", later);
    let thief_serial = thief.summary.serial.clone();
    let id = format!("t-{thief_serial}");
    match enroll_fresh(store, thief, false).await {
        Err(StoreError::NameTaken { holder, until, .. }) => {
            assert_eq!(holder, holder_serial);
            assert_eq!(until, later);
        }
        other => panic!("a held name was enrolled again: {other:?}"),
    }
    assert_eq!(store.certificate(&thief_serial).await.unwrap(), None);
    assert_eq!(
        store.token(&id).await.unwrap().unwrap().uses,
        0,
        "a refused enrollment spent its token"
    );
    assert_eq!(
        store
            .holders(&[(Role::Node, "holder".into())])
            .await
            .unwrap(),
        vec![(Role::Node, "holder".to_string(), holder_serial.clone())]
    );
    // The same name in another role is another identity.
    enroll_fresh(store, cert(Role::Operator, "holder", later), false)
        .await
        .unwrap();

    // A replacing token takes the name and revokes the holder in the same transaction.
    let heir = cert(Role::Node, "holder", later);
    let heir_serial = heir.summary.serial.clone();
    enroll_fresh(store, heir, true).await.unwrap();
    let old = store.certificate(&holder_serial).await.unwrap().unwrap();
    assert!(
        old.summary.revoked_at.is_some(),
        "the replaced holder is valid"
    );
    assert_eq!(old.revocation_reason.as_deref(), Some(super::REPLACED));
    assert!(
        store
            .audit(50)
            .await
            .unwrap()
            .iter()
            .any(|e| e.kind == "revoke" && e.subject == holder_serial.to_string()),
        "the replacement's revocation is not audited"
    );
    assert_eq!(
        store
            .holders(&[(Role::Node, "holder".into())])
            .await
            .unwrap(),
        vec![(Role::Node, "holder".to_string(), heir_serial.clone())]
    );

    // A revoked or expired holder leaves the name free.
    store
        .revoke(&RevokeTarget::Serial(heir_serial), now(), "gone", "admin")
        .await
        .unwrap();
    enroll_fresh(store, cert(Role::Node, "holder", later), false)
        .await
        .unwrap();
    enroll_fresh(
        store,
        cert(Role::Admin, "lapsed", now() - time::Duration::seconds(1)),
        false,
    )
    .await
    .unwrap();
    enroll_fresh(store, cert(Role::Admin, "lapsed", later), false)
        .await
        .unwrap();
}

async fn a_dns_name_belongs_to_one_identity(store: &dyn Store) {
    let later = now() + time::Duration::hours(1);
    let mut a = cert(Role::Node, "dns-a", later);
    a.summary.dns_names = vec!["shared.example".into(), "a.example".into()];
    let a_serial = a.summary.serial.clone();
    enroll_fresh(store, a, false).await.unwrap();
    let mut b = cert(Role::Node, "dns-b", later);
    b.summary.dns_names = vec!["b.example".into(), "shared.example".into()];
    let b_serial = b.summary.serial.clone();
    match enroll_fresh(store, b.clone(), false).await {
        Err(StoreError::HostNameTaken { dns, holder, .. }) => {
            assert_eq!(dns, "shared.example");
            assert_eq!(holder, a_serial);
        }
        other => panic!("another identity's DNS name was issued: {other:?}"),
    }
    assert_eq!(store.certificate(&b_serial).await.unwrap(), None);
    // A renewal of `a` that drops the name releases it.
    let mut a2 = cert(Role::Node, "dns-a", later);
    a2.summary.dns_names = vec!["a.example".into()];
    store.record_issuance(renewal(a2, &a_serial)).await.unwrap();
    b.summary.serial = cert(Role::Node, "x", later).summary.serial;
    enroll_fresh(store, b, false).await.unwrap();
    // Operators carry no DNS names to claim; the CA's own certificates claim nothing.
    let mut ca = cert(Role::Ca, "dns-b", later);
    ca.summary.dns_names = vec!["shared.example".into()];
    store
        .record_issuance(Issuance {
            token_id: None,
            ..enrollment(ca, "unused")
        })
        .await
        .unwrap();
}

async fn a_renewed_certificate_renews_again_only_while_its_successor_is_unused(store: &dyn Store) {
    let later = now() + time::Duration::hours(1);
    let first = cert(Role::Node, "forker", later);
    let first_serial = first.summary.serial.clone();
    enroll_fresh(store, first, false).await.unwrap();
    let second = cert(Role::Node, "forker", later);
    let second_serial = second.summary.serial.clone();
    store
        .record_issuance(renewal(second, &first_serial))
        .await
        .unwrap();
    // Crash recovery: the successor was never used, so the old one renews again and the
    // unused successor is revoked (one current certificate per identity).
    let third = cert(Role::Node, "forker", later);
    let third_serial = third.summary.serial.clone();
    store
        .record_issuance(renewal(third, &first_serial))
        .await
        .unwrap();
    let orphan = store.certificate(&second_serial).await.unwrap().unwrap();
    assert!(orphan.summary.revoked_at.is_some(), "two current siblings");
    assert_eq!(
        orphan.revocation_reason.as_deref(),
        Some(super::SUPERSEDED_UNUSED)
    );
    assert_eq!(
        store
            .certificate(&first_serial)
            .await
            .unwrap()
            .unwrap()
            .summary
            .renewed_by,
        Some(third_serial.clone())
    );
    // Once the successor has been used, the old copy cannot renew.
    let at = now();
    store.mark_used(&third_serial, at).await.unwrap();
    store
        .mark_used(&third_serial, at + time::Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(
        store
            .certificate(&third_serial)
            .await
            .unwrap()
            .unwrap()
            .first_used_at,
        Some(at),
        "the first use was overwritten"
    );
    let fourth = cert(Role::Node, "forker", later);
    let fourth_serial = fourth.summary.serial.clone();
    assert_eq!(
        store.record_issuance(renewal(fourth, &first_serial)).await,
        Err(StoreError::Superseded {
            serial: first_serial.clone(),
            successor: third_serial.clone(),
        })
    );
    assert_eq!(store.certificate(&fourth_serial).await.unwrap(), None);
    assert!(
        store
            .certificate(&third_serial)
            .await
            .unwrap()
            .unwrap()
            .summary
            .revoked_at
            .is_none()
    );
}

async fn an_engine_address_reported_by_a_revoked_certificate_is_not_shown(store: &dyn Store) {
    let later = now() + time::Duration::hours(1);
    let old = cert(Role::Node, "moved", later);
    let old_serial = old.summary.serial.clone();
    enroll_fresh(store, old, false).await.unwrap();
    store
        .set_engine(
            "moved",
            "tcp://192.0.2.44:2376",
            &old_serial,
            audit(AuditKind::EngineReport, "moved"),
        )
        .await
        .unwrap();
    let new = cert(Role::Node, "moved", later);
    enroll_fresh(store, new, true).await.unwrap();
    let nodes = store.nodes(now()).await.unwrap();
    let node = nodes.iter().find(|n| n.name == "moved").unwrap();
    assert_eq!(
        node.endpoint, None,
        "the replaced holder's engine address is still shown"
    );
}

async fn an_expired_node_stays_listed_until_a_newer_certificate_of_it_is_revoked(
    store: &dyn Store,
) {
    let lapsed = cert(Role::Node, "lapsed", now() - time::Duration::days(1));
    let lapsed_serial = lapsed.summary.serial.clone();
    enroll_fresh(store, lapsed, false).await.unwrap();
    // Expired longer ago than the lists look back: gone.
    let long_gone = cert(Role::Node, "long-gone", now() - time::Duration::days(31));
    enroll_fresh(store, long_gone, false).await.unwrap();
    let retired_old = cert(Role::Node, "retired", now() - time::Duration::days(2));
    enroll_fresh(store, retired_old, false).await.unwrap();
    let retired_new = cert(Role::Node, "retired", now() + time::Duration::days(1));
    let retired_serial = retired_new.summary.serial.clone();
    enroll_fresh(store, retired_new, true).await.unwrap();
    let names = |nodes: &[NodeRecord]| -> Vec<(String, Serial)> {
        nodes
            .iter()
            .filter(|n| ["lapsed", "long-gone", "retired"].contains(&n.name.as_str()))
            .map(|n| (n.name.clone(), n.cert.serial.clone()))
            .collect()
    };
    assert_eq!(
        names(&store.nodes(now()).await.unwrap()),
        vec![
            ("lapsed".to_string(), lapsed_serial.clone()),
            ("retired".to_string(), retired_serial.clone())
        ],
        "an expired node is left out, or a node shows an older certificate than its newest"
    );
    store
        .revoke(
            &RevokeTarget::Serial(retired_serial),
            now(),
            "retired",
            "admin",
        )
        .await
        .unwrap();
    assert_eq!(
        names(&store.nodes(now()).await.unwrap()),
        vec![("lapsed".to_string(), lapsed_serial)],
        "a node retired by revoking its newest certificate still shows, as its expired one"
    );
}

async fn revocations_since_a_time_oldest_first(store: &dyn Store) {
    let later = now() + time::Duration::hours(1);
    let mut serials = Vec::new();
    for i in 0..3 {
        let c = cert(Role::Operator, &format!("since-{i}"), later);
        serials.push(c.summary.serial.clone());
        enroll_fresh(store, c, false).await.unwrap();
    }
    let t0 = now() + time::Duration::seconds(100);
    let t1 = t0 + time::Duration::seconds(5);
    for (serial, at) in [(&serials[1], t1), (&serials[0], t0)] {
        store
            .revoke(&RevokeTarget::Serial(serial.clone()), at, "x", "admin")
            .await
            .unwrap();
    }
    let all = store.revocations_since(t0).await.unwrap();
    assert_eq!(
        all,
        vec![(serials[0].clone(), t0), (serials[1].clone(), t1)],
        "not every revocation since t0, or not oldest first"
    );
    assert_eq!(
        store.revocations_since(t1).await.unwrap(),
        vec![(serials[1].clone(), t1)]
    );
    assert!(
        store
            .revocations_since(t1 + time::Duration::seconds(1))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn the_newest_agent_report_of_each_node_is_kept(store: &dyn Store) {
    let serial = cert(Role::Node, "r", now()).summary.serial;
    let report = |mode: &str, at: OffsetDateTime| super::AgentRecord {
        name: "reporter".into(),
        serial: serial.clone(),
        received_at: at,
        state: super::AgentState {
            mode: mode.into(),
            engine_healthy: true,
            plain_listeners: vec!["tcp://0.0.0.0:2375".into()],
            trusted_roots: vec!["ABC".into()],
            ..Default::default()
        },
    };
    store.record_report(report("native", now())).await.unwrap();
    let newer = report("guard", now() + time::Duration::seconds(1));
    store.record_report(newer.clone()).await.unwrap();
    let reports = store.reports(OffsetDateTime::UNIX_EPOCH).await.unwrap();
    let mine: Vec<_> = reports.iter().filter(|r| r.name == "reporter").collect();
    assert_eq!(mine, vec![&newer]);
    // Only what arrived since a moment: how a replica catches up with the others.
    let later = newer.received_at + time::Duration::seconds(1);
    let mine = |reports: Vec<super::AgentRecord>| {
        reports.into_iter().filter(|r| r.name == "reporter").count()
    };
    assert_eq!(mine(store.reports(newer.received_at).await.unwrap()), 1);
    assert_eq!(mine(store.reports(later).await.unwrap()), 0);
    let times_of_mine = |mut times: Vec<(String, i64)>| {
        times.retain(|(name, _)| name == "reporter");
        times
    };
    assert_eq!(
        times_of_mine(store.report_times(newer.received_at).await.unwrap()),
        vec![("reporter".to_string(), newer.received_at.unix_timestamp())]
    );
    assert!(times_of_mine(store.report_times(later).await.unwrap()).is_empty());
}

fn ca_record(
    kind: dtca_pki::authority::lineage::CaKind,
    der: Vec<u8>,
    key: Option<&str>,
) -> super::CaCertRecord {
    super::CaCertRecord {
        id: dtca_pki::authority::lineage::hex_digest(&der),
        kind,
        der,
        key_pem: key.map(str::to_string),
        added_at: now(),
        retired_at: None,
    }
}

fn ca_update(expected: u64) -> super::CaUpdate {
    super::CaUpdate {
        expected_generation: expected,
        add: Vec::new(),
        remove: Vec::new(),
        retire: Vec::new(),
        active_root: None,
        rotation: super::RotationChange::Keep,
        audit: vec![audit(AuditKind::Ca, "ca")],
        at: now(),
    }
}

async fn ca_material_changes_whole_and_only_from_the_generation_read(store: &dyn Store) {
    use super::RotationChange;
    use dtca_pki::authority::lineage::CaKind;
    assert_eq!(store.ca_generation().await.unwrap(), 0);
    let empty = store.ca_material().await.unwrap();
    assert!(empty.certs.is_empty() && empty.active_root.is_none());
    let h = dtca_pki::authority::hierarchy::create("test", dtca_pki::KeyType::P256, now()).unwrap();
    let root = ca_record(CaKind::Root, h.root_der.clone(), None);
    let inter = ca_record(
        CaKind::Intermediate,
        h.intermediate_der.clone(),
        Some("SEALED KEY"),
    );
    let mut first = ca_update(0);
    first.add = vec![root.clone(), inter.clone()];
    first.active_root = Some(root.id.clone());
    assert_eq!(store.update_ca(first.clone()).await.unwrap(), 1);
    let m = store.ca_material().await.unwrap();
    assert_eq!(m.generation, 1);
    assert_eq!(m.certs, vec![root.clone(), inter.clone()]);
    assert_eq!(m.active_root.as_deref(), Some(root.id.as_str()));
    assert_eq!(m.rotation_started, None);
    // A change decided on an older read is refused and changes nothing.
    let mut stale = ca_update(0);
    stale.active_root = Some("elsewhere".into());
    assert!(matches!(
        store.update_ca(stale).await,
        Err(StoreError::Conflict(_))
    ));
    // Adding a certificate twice is refused as a whole (the generation stays).
    let mut twice = ca_update(1);
    twice.add = vec![inter.clone()];
    twice.rotation = RotationChange::Start(now());
    assert!(matches!(
        store.update_ca(twice).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.ca_generation().await.unwrap(), 1);
    assert_eq!(store.ca_material().await.unwrap(), m);
    // A rotation starts, and a second root and cross certificate come with it.
    let other =
        dtca_pki::authority::hierarchy::create("test", dtca_pki::KeyType::P256, now()).unwrap();
    let new_root = ca_record(CaKind::Root, other.root_der.clone(), None);
    let extra = ca_record(
        CaKind::Intermediate,
        other.intermediate_der.clone(),
        Some("K2"),
    );
    let started = now() - time::Duration::seconds(30);
    let mut start = ca_update(1);
    start.add = vec![new_root.clone(), extra.clone()];
    start.active_root = Some(new_root.id.clone());
    start.rotation = RotationChange::Start(started);
    assert_eq!(store.update_ca(start).await.unwrap(), 2);
    let m = store.ca_material().await.unwrap();
    assert_eq!(m.rotation_started, Some(started));
    assert_eq!(m.active_root.as_deref(), Some(new_root.id.as_str()));
    assert_eq!(m.certs.len(), 4);
    // It finishes: the old root is retired, an unused certificate removed.
    let at = now();
    let mut finish = ca_update(2);
    finish.retire = vec![root.id.clone()];
    finish.remove = vec![extra.id.clone()];
    finish.rotation = RotationChange::End;
    finish.at = at;
    assert_eq!(store.update_ca(finish).await.unwrap(), 3);
    let m = store.ca_material().await.unwrap();
    assert_eq!(m.generation, 3);
    assert_eq!(m.rotation_started, None);
    assert_eq!(m.active_root.as_deref(), Some(new_root.id.as_str()));
    let ids: Vec<&str> = m.certs.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        vec![root.id.as_str(), inter.id.as_str(), new_root.id.as_str()]
    );
    assert_eq!(m.certs[0].retired_at, Some(at));
    assert_eq!(m.certs[1].retired_at, None);
    assert_eq!(store.ca_generation().await.unwrap(), 3);
}

async fn current_certificates_are_the_valid_unrenewed_ones(store: &dyn Store) {
    let later = now() + time::Duration::hours(1);
    let t = token("t-current", 10, later);
    store
        .insert_token(t, audit(AuditKind::TokenCreate, "t-current"))
        .await
        .unwrap();
    let kept = cert(Role::Operator, "current-kept", later);
    let renewed = cert(Role::Operator, "current-renewed", later);
    let expired = cert(
        Role::Operator,
        "current-expired",
        now() + time::Duration::seconds(2),
    );
    let revoked = cert(Role::Operator, "current-revoked", later);
    for c in [&kept, &renewed, &expired, &revoked] {
        store
            .record_issuance(enrollment(c.clone(), "t-current"))
            .await
            .unwrap();
    }
    let successor = cert(Role::Operator, "current-renewed", later);
    store
        .record_issuance(renewal(successor.clone(), &renewed.summary.serial))
        .await
        .unwrap();
    store
        .revoke(
            &RevokeTarget::Serial(revoked.summary.serial.clone()),
            now(),
            "test",
            "dtca://test/admin/root",
        )
        .await
        .unwrap();
    let current = store
        .current_certificates(now() + time::Duration::seconds(5))
        .await
        .unwrap();
    let serials: Vec<&Serial> = current.iter().map(|c| &c.summary.serial).collect();
    assert!(serials.contains(&&kept.summary.serial));
    assert!(serials.contains(&&successor.summary.serial));
    for gone in [&renewed, &expired, &revoked] {
        assert!(
            !serials.contains(&&gone.summary.serial),
            "{}",
            gone.summary.identity
        );
    }
    assert!(current.iter().all(|c| c.summary.identity.role != Role::Ca));
    let mine = current
        .iter()
        .find(|c| c.summary.serial == kept.summary.serial)
        .unwrap();
    assert_eq!(mine.der, kept.der);
}

async fn restart_slots_are_leases_that_expire_and_keep_swarm_managers_apart(store: &dyn Store) {
    let limits = RestartLimits {
        max_concurrent: 2,
        lease: Duration::from_secs(60),
    };
    let t0 = now();
    let ask = |name: &str, manager_of: Option<&str>, at: OffsetDateTime| {
        store.request_restart(
            SlotRequest {
                name: name.into(),
                serial: format!("{name}-serial"),
                manager_of: manager_of.map(Into::into),
            },
            limits,
            "test",
            at,
        )
    };
    let granted = |d: &Decision| matches!(d, Decision::Granted { .. });
    assert!(granted(
        &ask("lease-m1", Some("swarm-x"), t0).await.unwrap()
    ));
    // Another manager of that swarm waits, though a slot is free.
    assert!(matches!(
        ask("lease-m2", Some("swarm-x"), t0).await.unwrap(),
        Decision::Queued(Wait::SwarmManager { .. })
    ));
    assert!(granted(&ask("lease-w1", None, t0).await.unwrap()));
    assert!(matches!(
        ask("lease-w2", None, t0).await.unwrap(),
        Decision::Queued(Wait::Full { .. })
    ));
    assert_eq!(store.restarts_in_progress(t0).await.unwrap(), 2);
    // m1 renews its lease; w1 vanishes. After w1's lease ran out its slot is reclaimed.
    let t1 = t0 + time::Duration::seconds(40);
    assert_eq!(
        ask("lease-m1", Some("swarm-x"), t1).await.unwrap(),
        Decision::Renewed {
            expires_at: t1 + time::Duration::seconds(60)
        }
    );
    let t2 = t0 + time::Duration::seconds(61);
    assert_eq!(store.restarts_in_progress(t2).await.unwrap(), 1);
    assert!(granted(&ask("lease-w2", None, t2).await.unwrap()));
    let audit = store.audit(10).await.unwrap();
    let expire = audit.iter().find(|e| e.kind == "restart-expire").unwrap();
    assert_eq!(expire.subject, "lease-w1");
    // The manager gives its slot back: the other manager goes.
    let release = AuditEntry::new(
        t2,
        AuditKind::RestartRelease,
        "test",
        "lease-m1",
        "verified",
    );
    assert!(
        store
            .release_restart("lease-m1", release.clone())
            .await
            .unwrap()
    );
    assert!(!store.release_restart("lease-m1", release).await.unwrap());
    assert!(granted(
        &ask("lease-m2", Some("swarm-x"), t2).await.unwrap()
    ));
    let kinds: Vec<String> = store
        .audit(4)
        .await
        .unwrap()
        .into_iter()
        .map(|e| format!("{} {}", e.kind, e.subject))
        .collect();
    assert_eq!(
        kinds,
        [
            "restart-grant lease-m2",
            "restart-release lease-m1",
            "restart-grant lease-w2",
            "restart-expire lease-w1"
        ]
    );
    for name in ["lease-m2", "lease-w2"] {
        let audit = AuditEntry::new(t2, AuditKind::RestartRelease, "test", name, "");
        assert!(store.release_restart(name, audit).await.unwrap());
    }
    assert_eq!(store.restarts_in_progress(t2).await.unwrap(), 0);
}

/// Many agents ask at once, through `a` and `b` (two replicas on PostgreSQL): exactly
/// the limit is granted, and each grant is audited. `crowd` prefixes the node names (one
/// crowd per call on one database).
///
/// # Panics
/// When more (or fewer) slots are granted than the limit.
pub async fn restart_slots_are_never_over_granted(
    a: Arc<dyn Store>,
    b: Arc<dyn Store>,
    crowd: &str,
) {
    let limits = RestartLimits {
        max_concurrent: 3,
        lease: Duration::from_secs(60),
    };
    let at = now();
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let name = format!("{crowd}-{i}");
            tokio::spawn(async move {
                store
                    .request_restart(
                        SlotRequest {
                            name,
                            serial: format!("{i:02X}"),
                            manager_of: (i % 4 == 0).then(|| "swarm-crowd".to_string()),
                        },
                        limits,
                        "test",
                        at,
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut granted = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        if matches!(t.await.unwrap(), Decision::Granted { .. }) {
            granted.push(i);
        }
    }
    assert_eq!(granted.len(), 3, "granted {granted:?}");
    assert!(
        granted.iter().filter(|i| *i % 4 == 0).count() <= 1,
        "two managers of one swarm: {granted:?}"
    );
    assert_eq!(a.restarts_in_progress(at).await.unwrap(), 3);
    let grants = a
        .audit(50)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "restart-grant" && e.subject.starts_with(&format!("{crowd}-")))
        .count();
    assert_eq!(grants, 3);
    for i in granted {
        let name = format!("{crowd}-{i}");
        let audit = AuditEntry::new(at, AuditKind::RestartRelease, "test", name.clone(), "");
        assert!(a.release_restart(&name, audit).await.unwrap());
    }
}
