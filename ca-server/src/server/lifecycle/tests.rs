//! The lifecycle against a real state directory and embedded store, with time as an
//! argument: intermediates prepared and switched on schedule with full-length leaves, and
//! a root rotation from start to finish.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dtca_pki::authority::hierarchy::Lifetimes;
use dtca_pki::chain::{self, Usage};
use dtca_pki::csr;
use dtca_pki::identity::{Identity, Role};
use dtca_pki::key::{KeyType, PrivateKey};
use time::OffsetDateTime;

use crate::channel::Event;
use crate::lifecycle::{CaState, Custody, ops, status};
use crate::metrics::Metrics;
use crate::registrar::{Caller, Issued, Refusal, Registrar, Rules, TokenSpec};
use crate::state::{Passphrase, StateDir};
use crate::store::Store;
use crate::store::sqlite::SqliteStore;

struct Ca {
    registrar: Arc<Registrar>,
    _dir: tempfile::TempDir,
}

async fn ca(lifetimes: Lifetimes, now: OffsetDateTime) -> Ca {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = StateDir::new(dir.path().join("ca"));
    state_dir
        .init_with(
            "prod",
            KeyType::P256,
            lifetimes,
            &Passphrase::InsecureNone,
            now,
        )
        .await
        .unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&state_dir.store_path()).unwrap());
    ops::import(store.as_ref(), state_dir.ca_files().unwrap(), now)
        .await
        .unwrap();
    let material = store.ca_material().await.unwrap();
    let state = CaState::load("prod", &material, &Passphrase::InsecureNone, now).unwrap();
    let custody = Custody {
        root_keys: Box::new(state_dir),
        passphrase: Passphrase::InsecureNone,
        lifetimes,
        poll: Duration::from_secs(1),
        warnings: Mutex::default(),
    };
    let registrar = Registrar::with_state(
        state,
        Some(Arc::new(custody)),
        store,
        Rules::default(),
        Arc::new(Metrics::default()),
    );
    Ca {
        registrar: Arc::new(registrar),
        _dir: dir,
    }
}

impl Ca {
    fn store(&self) -> &dyn Store {
        self.registrar.store().as_ref()
    }

    fn custody(&self) -> &Custody {
        self.registrar.custody().unwrap()
    }

    async fn leaf(&self, role: Role, name: &str, at: OffsetDateTime) -> Issued {
        let id = Identity::new("prod", role, name).unwrap();
        let (issued, _) = self
            .registrar
            .issue_local(id, vec![], vec![], Duration::from_secs(86_400), at)
            .await
            .unwrap();
        issued
    }

    async fn caller(&self, issued: &Issued, at: OffsetDateTime) -> Result<Caller, Refusal> {
        let mut chain = vec![issued.leaf_der.clone()];
        chain.extend(issued.chain.iter().cloned());
        self.registrar.authenticate(Some(&chain), at, false).await
    }

    async fn renew(&self, issued: &Issued, at: OffsetDateTime) -> Issued {
        let caller = self.caller(issued, at).await.unwrap();
        let key = PrivateKey::generate(KeyType::P256).unwrap();
        let csr = csr::build(&key, &caller.identity.name, &[], &[]).unwrap();
        self.registrar.renew(&caller, &csr, at).await.unwrap()
    }
}

fn verifies(issued: &Issued, roots: &[&[u8]], at: OffsetDateTime) -> bool {
    chain::verify_any(&issued.leaf_der, &issued.chain, roots, at, Usage::Client).is_ok()
}

fn whole(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap()
}

#[tokio::test]
async fn a_three_minute_ca_switches_three_times_and_every_leaf_has_its_full_life() {
    let t0 = whole(OffsetDateTime::now_utc());
    let lifetimes = Lifetimes {
        root: Duration::from_secs(3600),
        intermediate: Duration::from_secs(180),
    };
    let ca = ca(lifetimes, t0).await;
    let root = ca.registrar.ca().active_root().der.clone();
    let none = Passphrase::InsecureNone;
    let mut t = t0;
    let mut generations = vec![ca.registrar.ca().trust_generation(t)];
    for round in 0..3 {
        let state = ca.registrar.ca();
        let current = state.lineage().signing(t).unwrap().schedule();
        let key = ca.custody().root_key(state.active_root()).unwrap().unwrap();
        // Before the prepare point nothing is made; at it, the successor is.
        let early = current.prepare_at - time::Duration::seconds(1);
        let made = ops::prepare(ca.store(), &state, &key, lifetimes, &none, true, "t", early)
            .await
            .unwrap();
        assert!(made.is_none(), "round {round}: prepared before its time");
        let at = current.prepare_at;
        let made = ops::prepare(ca.store(), &state, &key, lifetimes, &none, true, "t", at)
            .await
            .unwrap()
            .expect("due at the prepare point");
        assert_eq!(made.start, current.switch_at, "round {round}");
        ca.registrar.reload().await.unwrap();
        // A replica reading the store now finds the same successor.
        let replica =
            CaState::load("prod", &ca.store().ca_material().await.unwrap(), &none, t0).unwrap();
        assert_eq!(
            replica.signing_id(current.switch_at),
            ca.registrar.ca().signing_id(current.switch_at)
        );
        // The last leaf before the switch: full length, ends before its issuer.
        let before = current.switch_at - time::Duration::seconds(1);
        let old_signer = ca.registrar.signer(before).unwrap();
        let leaf = ca
            .leaf(Role::Operator, &format!("op-{round}-a"), before)
            .await;
        assert_eq!(
            leaf.info.not_after - before,
            time::Duration::seconds(60),
            "round {round}"
        );
        assert!(leaf.info.not_after <= old_signer.intermediate_not_after());
        assert!(verifies(&leaf, &[&root], before));
        // At the switch the successor signs, with full-length leaves too.
        let switch = current.switch_at;
        let new_signer = ca.registrar.signer(switch).unwrap();
        assert_ne!(
            old_signer.intermediate_der(),
            new_signer.intermediate_der(),
            "round {round}"
        );
        let after = ca
            .leaf(Role::Operator, &format!("op-{round}-b"), switch)
            .await;
        assert_eq!(
            after.info.not_after - switch,
            time::Duration::seconds(60),
            "round {round}"
        );
        assert!(verifies(&after, &[&root], switch));
        // The previous intermediate's leaf still authenticates after the switch.
        ca.caller(&leaf, switch + time::Duration::seconds(30))
            .await
            .unwrap();
        generations.push(ca.registrar.ca().trust_generation(switch));
        t = switch;
    }
    generations.dedup();
    assert_eq!(
        generations.len(),
        4,
        "every switch is a new trust generation"
    );
}

#[tokio::test]
async fn without_a_successor_the_ca_warns_from_twice_the_leaf_life_before_the_end() {
    let t0 = whole(OffsetDateTime::now_utc());
    let lifetimes = Lifetimes {
        root: Duration::from_secs(3600),
        intermediate: Duration::from_secs(180),
    };
    let ca = ca(lifetimes, t0).await;
    let state = ca.registrar.ca();
    let s = state.lineage().signing(t0).unwrap().schedule();
    assert_eq!(s.not_after - s.warn_at, time::Duration::seconds(120));
    let plan = |at| state.lineage().plan(at, lifetimes.intermediate);
    assert!(
        plan(s.warn_at - time::Duration::seconds(1))
            .warnings
            .is_empty()
    );
    assert_eq!(plan(s.warn_at).warnings.len(), 1);
}

#[tokio::test]
async fn a_root_rotation_cross_signs_and_finishes_only_when_nothing_lags() {
    let t0 = OffsetDateTime::now_utc();
    let ca = ca(Lifetimes::default(), t0).await;
    let r = &ca.registrar;
    let old_root = r.ca().active_root().der.clone();
    let admin_leaf = ca.leaf(Role::Admin, "boss", t0).await;
    let admin = ca.caller(&admin_leaf, t0).await.unwrap();
    let op = ca.leaf(Role::Operator, "op", t0).await;
    let stays_behind = ca.leaf(Role::Operator, "late", t0).await;
    let spec = |role| TokenSpec {
        role,
        ttl: None,
        uses: Some(5),
        name: None,
        allow_dns: vec![],
        allow_ip: vec![],
        cert_ttl: None,
        replace: false,
        access: None,
    };
    let (old_token, _) = r
        .create_token(&admin, spec(Role::Operator), t0)
        .await
        .unwrap();

    let started = r.start_root_rotation(&admin, None, t0).await.unwrap();
    assert!(matches!(
        r.start_root_rotation(&admin, None, t0).await,
        Err(Refusal::RotationState(_))
    ));
    let new_root = r.ca().active_root().der.clone();
    assert_ne!(new_root, old_root);
    assert_eq!(r.ca().roots(), vec![old_root.clone(), new_root.clone()]);
    assert_eq!(started.new_root, r.ca().active_root().digest());
    // A new leaf chains to the new root, and through the cross certificate to the old.
    let fresh = ca.leaf(Role::Operator, "fresh", t0).await;
    assert_eq!(fresh.chain.len(), 2, "intermediate and cross certificate");
    for roots in [
        vec![&old_root[..]],
        vec![&new_root[..]],
        vec![&old_root[..], &new_root[..]],
    ] {
        assert!(verifies(&fresh, &roots, t0));
    }
    // Old leaves still work; tokens made before and after the start both enroll.
    ca.caller(&op, t0).await.unwrap();
    let (new_token, _) = r
        .create_token(&admin, spec(Role::Operator), t0)
        .await
        .unwrap();
    assert!(new_token.contains(&started.new_root.to_string()));
    for (token, name) in [(&old_token, "by-old-token"), (&new_token, "by-new-token")] {
        let key = PrivateKey::generate(KeyType::P256).unwrap();
        let csr = csr::build(&key, name, &[], &[]).unwrap();
        r.enroll(token, &csr, name, t0).await.unwrap();
    }
    // Who lags: certificates issued before the start.
    let lagging = |members: Vec<status::Member>| -> Vec<String> {
        members
            .into_iter()
            .filter(|m| m.lagging)
            .map(|m| format!("{}/{}", m.role, m.name))
            .collect()
    };
    let members = status::members(ca.store(), &r.ca(), t0).await.unwrap();
    assert_eq!(
        lagging(members),
        vec!["admin/admin", "admin/boss", "operator/late", "operator/op"]
    );
    let op = ca.renew(&op, t0).await;
    let admin_leaf = ca.renew(&admin_leaf, t0).await;
    let admin = ca.caller(&admin_leaf, t0).await.unwrap();
    match r.finish_root_rotation(&admin, false, t0).await {
        Err(Refusal::RotationLagging(names)) => {
            assert_eq!(names, vec!["admin/admin", "operator/late"]);
        }
        other => panic!("finished while one lags: {other:?}"),
    }
    let left = r.finish_root_rotation(&admin, true, t0).await.unwrap();
    assert_eq!(left, vec!["admin/admin", "operator/late"]);
    // Afterwards: one root; the old chain is refused, the renewed one works.
    assert_eq!(r.ca().roots(), vec![new_root.clone()]);
    assert!(matches!(
        ca.caller(&stays_behind, t0).await,
        Err(Refusal::CertForeign)
    ));
    ca.caller(&op, t0).await.unwrap();
    let fresh = ca.leaf(Role::Operator, "after", t0).await;
    assert_eq!(
        fresh.chain.len(),
        1,
        "no cross certificate after the rotation"
    );
    assert!(verifies(&fresh, &[&new_root], t0));
    assert!(!verifies(&fresh, &[&old_root], t0));
    let key = PrivateKey::generate(KeyType::P256).unwrap();
    let csr = csr::build(&key, "too-late", &[], &[]).unwrap();
    assert!(matches!(
        r.enroll(&old_token, &csr, "too-late", t0).await,
        Err(Refusal::TokenForeignCa)
    ));
    // A restart reads the same state from the store.
    let reread = CaState::load(
        "prod",
        &ca.store().ca_material().await.unwrap(),
        &Passphrase::InsecureNone,
        t0,
    )
    .unwrap();
    assert_eq!(reread.roots(), vec![new_root]);
    assert!(reread.lineage().rotation_started().is_none());
}

#[tokio::test]
async fn a_rotation_survives_a_restart_and_the_ca_without_the_root_key_cannot_start_one() {
    let t0 = OffsetDateTime::now_utc();
    let ca = ca(Lifetimes::default(), t0).await;
    let r = &ca.registrar;
    let admin_leaf = ca.leaf(Role::Admin, "boss", t0).await;
    let admin = ca.caller(&admin_leaf, t0).await.unwrap();
    r.start_root_rotation(&admin, Some(KeyType::Ed25519), t0)
        .await
        .unwrap();
    let reread = CaState::load(
        "prod",
        &ca.store().ca_material().await.unwrap(),
        &Passphrase::InsecureNone,
        t0,
    )
    .unwrap();
    assert_eq!(reread.roots().len(), 2);
    assert!(reread.lineage().rotation_started().is_some());
    assert_eq!(reread.signing_id(t0), r.ca().signing_id(t0));
    // A registrar without custody (no root key here) refuses to start or prepare.
    let bare = Registrar::with_state(
        reread,
        None,
        r.store().clone(),
        Rules::default(),
        Arc::new(Metrics::default()),
    );
    assert!(matches!(
        bare.rotate_intermediate(&admin, t0).await,
        Err(Refusal::NoRootKey)
    ));
    // Finishing needs no root key.
    bare.finish_root_rotation(&admin, true, t0).await.unwrap();
}

#[tokio::test]
async fn agents_renew_at_a_rotation_start_and_only_refresh_at_its_end() {
    let t0 = OffsetDateTime::now_utc();
    let ca = ca(Lifetimes::default(), t0).await;
    let r = ca.registrar.clone();
    let mut events = r.hub().subscribe();
    let driver = tokio::spawn(super::run(r.clone()));
    // The first event is the driver's start.
    let (first, renew) = next_trust_change(&mut events).await;
    assert_eq!(renew, None);
    let admin_leaf = ca.leaf(Role::Admin, "boss", t0).await;
    let admin = ca.caller(&admin_leaf, t0).await.unwrap();
    r.start_root_rotation(&admin, None, t0).await.unwrap();
    let (started_gen, renew) = next_trust_change(&mut events).await;
    let started = r.ca().lineage().rotation_started().unwrap() + time::Duration::seconds(1);
    assert!(started_gen > first);
    assert_eq!(
        renew,
        Some(started),
        "certificates from before the start renew"
    );
    r.finish_root_rotation(&admin, true, t0).await.unwrap();
    let (finished_gen, renew) = next_trust_change(&mut events).await;
    assert!(finished_gen > started_gen);
    assert_eq!(renew, None, "the end asks no renewal: the bundle is enough");
    assert_eq!(r.hub().trust_generation(), finished_gen);
    driver.abort();
}

/// The next trust change the hub publishes (events queue from the subscription on).
async fn next_trust_change(
    events: &mut tokio::sync::broadcast::Receiver<Event>,
) -> (u64, Option<OffsetDateTime>) {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(Event::TrustChanged {
                generation,
                renew_before,
            }) = events.recv().await
            {
                return (generation, renew_before);
            }
        }
    })
    .await
    .expect("no trust change heard")
}
