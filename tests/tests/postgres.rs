//! The PostgreSQL store and several `ca-server serve` replicas on one real PostgreSQL
//! (Debian's packages; a private server per test on loopback, stopped by pid).
//!
//! Replicas are the real binary, each with its own state dir holding copies of the same
//! CA files (as the README's scale-out section says), all on one database filled by
//! `ca-server store migrate`. Clients talk gRPC over mutual TLS to both.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Measures real processes from plain threads, where no tokio clock runs.
#![allow(clippy::disallowed_types)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ca_server::store::postgres::PostgresStore;
use ca_server::store::sqlite::SqliteStore;
use ca_server::store::{
    AuditEntry, AuditKind, CertQuery, Issuance, Store, StoreError, conformance,
};
use dtca_common::Reason;
use dtca_common::bundle::{Bundle, Layout};
use dtca_common::reason;
use dtca_common::tls::{self, ClientIdentity, ServerAddr, Trust};
use dtca_pki::csr;
use dtca_pki::key::{KeyType, PrivateKey};
use dtca_proto::v1::{self, admin_client::AdminClient, ca_client::CaClient};
use dtca_tests::bins::bin;
use dtca_tests::cli::{expect_exit, stderr};
use dtca_tests::postgres::Postgres;
use dtca_tests::serve::{ServeProcess, init_insecure};
use nix::sys::signal::Signal;
use time::OffsetDateTime;
use tonic::Code;
use tonic::transport::Channel;

/// The files a replica needs from the state dir made by `init` (not the root key).
const REPLICA_FILES: &[&str] = &[
    "ca.pem",
    "intermediate.pem",
    "intermediate-key.pem",
    "cluster.toml",
    "admin/ca.pem",
    "admin/cert.pem",
    "admin/key.pem",
];

async fn connect_store(url: &str) -> PostgresStore {
    PostgresStore::connect(PostgresStore::parse_url(url).unwrap())
        .await
        .unwrap()
}

fn ca_server(args: &[&str]) -> Output {
    Command::new(bin("ca-server")).args(args).output().unwrap()
}

/// A CA made by `init`, copied into PostgreSQL, served by replicas on one database.
struct Replicas {
    dir: tempfile::TempDir,
    pg: Postgres,
    db: String,
    url: String,
    states: Vec<PathBuf>,
    serves: Vec<ServeProcess>,
    root: Vec<u8>,
}

impl Replicas {
    fn start(db: &str, count: usize) -> Replicas {
        Self::start_with(db, count, &[])
    }

    /// Replicas of a CA made with `init <init_args>`; only the first holds the root key.
    fn start_with(db: &str, count: usize, init_args: &[&str]) -> Replicas {
        let pg = Postgres::start();
        let url = pg.create_database(db);
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("replica-0");
        if init_args.is_empty() {
            init_insecure(&first);
        } else {
            let mut args = vec![
                "init",
                "--cluster",
                "cli",
                "--insecure-no-passphrase",
                "--state-dir",
                first.to_str().unwrap(),
            ];
            args.extend_from_slice(init_args);
            let out = ca_server(&args);
            assert!(out.status.success(), "init: {}", stderr(&out));
        }
        let out = ca_server(&[
            "store",
            "migrate",
            "--state-dir",
            first.to_str().unwrap(),
            "--database",
            &url,
        ]);
        assert!(out.status.success(), "store migrate: {}", stderr(&out));
        let mut states = vec![first.clone()];
        for i in 1..count {
            let state = dir.path().join(format!("replica-{i}"));
            copy_ca_files(&first, &state);
            states.push(state);
        }
        let serves = states
            .iter()
            .map(|s| serve(s, &url))
            .collect::<Vec<ServeProcess>>();
        let root = Bundle::load(&first.join("admin"), Layout::CLIENT)
            .unwrap()
            .roots
            .remove(0);
        Replicas {
            dir,
            pg,
            db: db.to_string(),
            url,
            states,
            serves,
            root,
        }
    }

    async fn ca(&self, replica: usize) -> CaClient<Channel> {
        CaClient::new(self.channel(replica, None).await)
    }

    async fn admin(&self, replica: usize) -> AdminClient<Channel> {
        let bundle = Bundle::load(&self.states[replica].join("admin"), Layout::CLIENT).unwrap();
        AdminClient::new(self.channel(replica, Some(bundle.client_identity())).await)
    }

    async fn channel(&self, replica: usize, identity: Option<ClientIdentity>) -> Channel {
        let config = tls::client_config(Trust::Root(self.root.clone()), identity).unwrap();
        tls::connect(
            &ServerAddr::parse(&self.serves[replica].addr).unwrap(),
            config,
        )
        .await
        .unwrap()
    }

    /// Creates a node token through `replica`; returns the token and its id.
    async fn token(&self, replica: usize, uses: u32) -> (String, String) {
        let response = self
            .admin(replica)
            .await
            .create_token(v1::CreateTokenRequest {
                role: v1::Role::Node.into(),
                uses,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        (response.token, response.info.unwrap().id)
    }

    async fn store(&self) -> PostgresStore {
        connect_store(&self.url).await
    }
}

fn serve(state: &Path, url: &str) -> ServeProcess {
    ServeProcess::start(state, &["--database", url, "--insecure-no-passphrase"], &[])
}

fn copy_ca_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("admin")).unwrap();
    for f in REPLICA_FILES {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

/// What a client holds after an enrollment or renewal.
#[derive(Debug, Clone)]
struct Held {
    serial: String,
    leaf: Vec<u8>,
    intermediate: Vec<u8>,
    key: Arc<PrivateKey>,
}

impl Held {
    /// An engine address this node may report: its certificate's DNS name.
    fn engine(&self) -> String {
        let info = dtca_pki::inspect::CertInfo::from_der(&self.leaf).unwrap();
        format!("tcp://{}:2376", info.dns_names[0])
    }

    fn identity(&self) -> ClientIdentity {
        ClientIdentity {
            chain: vec![self.leaf.clone(), self.intermediate.clone()],
            key_pkcs8: self.key.pkcs8_der().to_vec(),
        }
    }
}

async fn enroll(
    ca: &mut CaClient<Channel>,
    token: &str,
    name: &str,
) -> Result<Held, tonic::Status> {
    let key = PrivateKey::generate(KeyType::P256).unwrap();
    let csr = csr::build(&key, name, &[format!("{name}.example.com")], &[]).unwrap();
    let issued = ca
        .enroll(v1::EnrollRequest {
            token: token.to_string(),
            csr_der: csr,
            name: name.to_string(),
        })
        .await?
        .into_inner();
    Ok(Held {
        serial: issued.serial,
        leaf: issued.leaf_der,
        intermediate: issued.intermediate_der,
        key: Arc::new(key),
    })
}

async fn renew(r: &Replicas, replica: usize, held: &Held) -> Result<Held, tonic::Status> {
    renew_at(r.serves[replica].addr.clone(), r.root.clone(), held.clone()).await
}

/// Renews `held` with its own certificate over mutual TLS at `addr`.
async fn renew_at(addr: String, root: Vec<u8>, held: Held) -> Result<Held, tonic::Status> {
    let config = tls::client_config(Trust::Root(root), Some(held.identity())).unwrap();
    let channel = tls::connect(&ServerAddr::parse(&addr).unwrap(), config)
        .await
        .unwrap();
    let mut ca = CaClient::new(channel);
    let key = PrivateKey::generate(KeyType::P256).unwrap();
    let csr = csr::build(&key, "renewer", &[], &[]).unwrap();
    let issued = ca
        .renew(v1::RenewRequest { csr_der: csr })
        .await?
        .into_inner();
    Ok(Held {
        serial: issued.serial,
        leaf: issued.leaf_der,
        intermediate: issued.intermediate_der,
        key: Arc::new(key),
    })
}

fn reason_of(status: &tonic::Status) -> Option<Reason> {
    reason::of_status(status)
}

/// Every certificate a client received is in the inventory, byte for byte.
async fn assert_recorded(store: &PostgresStore, held: &[Held]) {
    for h in held {
        let record = store
            .certificate(&h.serial.parse().unwrap())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("certificate {} was returned but not recorded", h.serial));
        assert_eq!(record.der, h.leaf, "certificate {} differs", h.serial);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_contract_holds_and_migrations_are_safe_when_replicas_start_together() {
    let pg = Postgres::start();
    let url = pg.create_database("contract");
    // Four stores migrate one empty database at once: one applies, the others wait.
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { connect_store(&url).await })
        })
        .collect();
    let mut stores = Vec::new();
    for s in starts {
        stores.push(s.await.unwrap());
    }
    assert_eq!(
        pg.sql("contract", "SELECT version FROM dtca_schema"),
        ca_server::store::postgres::schema_version().to_string()
    );
    conformance::run_all(Arc::new(stores[0].clone())).await;
    // Restart slots asked for through two replicas at once: never more than the limit.
    conformance::restart_slots_are_never_over_granted(
        Arc::new(stores[1].clone()),
        Arc::new(stores[2].clone()),
        "replicas",
    )
    .await;

    // A shared token under concurrency (uses counted per batch while its row is
    // locked): exactly its uses are spent, each with its certificate.
    let later = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let s: Arc<dyn Store> = Arc::new(stores[2].clone());
    s.insert_token(
        conformance::token("t-fleet", 50, later),
        AuditEntry::new(
            OffsetDateTime::now_utc(),
            AuditKind::TokenCreate,
            "test",
            "t",
            "",
        ),
    )
    .await
    .unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            // Two stores: two sets of writers, as two replicas would have.
            let s: Arc<dyn Store> = if i % 2 == 0 {
                s.clone()
            } else {
                Arc::new(stores[3].clone())
            };
            tokio::spawn(async move {
                let cert = conformance::cert(dtca_pki::Role::Node, &format!("fleet-{i}"), later);
                s.record_issuance(Issuance {
                    cert,
                    token_id: Some("t-fleet".into()),
                    renewal_of: None,
                    replace: false,
                    audit: vec![],
                    at: OffsetDateTime::now_utc(),
                })
                .await
            })
        })
        .collect();
    let mut stored = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => stored += 1,
            Err(e) => assert_eq!(e, StoreError::TokenUsedUp),
        }
    }
    assert_eq!(stored, 50);
    assert_eq!(s.token("t-fleet").await.unwrap().unwrap().uses, 50);
    assert_eq!(
        pg.sql(
            "contract",
            "SELECT count(*) FROM certificates WHERE name LIKE 'fleet-%'"
        ),
        "50"
    );

    // A database from a newer ca-server is refused, not written to.
    let newer = pg.create_database("newer");
    drop(connect_store(&newer).await);
    pg.sql("newer", "UPDATE dtca_schema SET version = 99");
    let err = PostgresStore::connect(PostgresStore::parse_url(&newer).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("newer")),
        "{err:?}"
    );

    // Down: a clear error at once, for reads and writes; back: the same store serves
    // again (new connections), no restart.
    let s = &stores[1];
    s.ping().await.unwrap();
    pg.stop();
    let started = Instant::now();
    assert!(matches!(s.ping().await, Err(StoreError::Unavailable(_))));
    assert!(matches!(s.audit(1).await, Err(StoreError::Unavailable(_))));
    let audit = || {
        AuditEntry::new(
            OffsetDateTime::now_utc(),
            AuditKind::TokenCreate,
            "test",
            "t",
            "",
        )
    };
    let err = s
        .insert_token(conformance::token("t-down", 1, later), audit())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("PostgreSQL")),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "errors were slow"
    );
    pg.restart();
    s.ping().await.unwrap();
    s.insert_token(conformance::token("t-back", 1, later), audit())
        .await
        .unwrap();
    assert!(s.token("t-back").await.unwrap().is_some());
    assert!(s.token("t-down").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_use_token_gives_one_certificate_from_1000_concurrent_enrollments_on_two_replicas()
{
    let r = Replicas::start("race", 2);
    let (token, id) = r.token(0, 1).await;
    let mut channels = Vec::new();
    for i in 0..8 {
        channels.push(r.ca(i % 2).await);
    }
    let started = Instant::now();
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let mut ca = channels[i % channels.len()].clone();
            let token = token.clone();
            tokio::spawn(async move { enroll(&mut ca, &token, &format!("racer-{i}")).await })
        })
        .collect();
    let mut issued = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(held) => issued.push(held),
            Err(status) => assert_eq!(
                (status.code(), reason_of(&status)),
                (Code::ResourceExhausted, Some(Reason::TokenUsedUp)),
                "{status:?}"
            ),
        }
    }
    eprintln!(
        "1000 concurrent enrollments of one token on 2 replicas: {:?}",
        started.elapsed()
    );
    assert_eq!(
        issued.len(),
        1,
        "a single-use token issued {} certificates",
        issued.len()
    );
    let store = r.store().await;
    assert_recorded(&store, &issued).await;
    assert_eq!(
        r.pg.sql(
            &r.db,
            "SELECT count(*) FROM certificates WHERE name LIKE 'racer-%'"
        ),
        "1"
    );
    assert_eq!(store.token(&id).await.unwrap().unwrap().uses, 1);
    assert_eq!(
        r.pg.sql(&r.db, "SELECT count(*) FROM audit WHERE kind = 'token-use'"),
        "1"
    );
    // Both replicas answered: each one's log shows refusals.
    for s in &r.serves {
        assert!(s.proc.pid() > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_load_on_two_replicas_loses_no_row_and_revocations_apply_on_the_other_at_once() {
    let r = Replicas::start("mixed", 2);
    let (token, token_id) = r.token(0, 100_000).await;
    let channels = [r.ca(0).await, r.ca(1).await];

    // A first set of nodes, then everything at once on both replicas: enrollments,
    // renewals of the first set (each through the replica that did not enroll it),
    // engine reports, and token creations.
    let mut first = Vec::new();
    for i in 0..40 {
        let mut ca = channels[i % 2].clone();
        first.push(
            enroll(&mut ca, &token, &format!("load-first-{i}"))
                .await
                .unwrap(),
        );
    }
    let enrollments: Vec<_> = (0..300)
        .map(|i| {
            let mut ca = channels[i % 2].clone();
            let token = token.clone();
            tokio::spawn(async move { enroll(&mut ca, &token, &format!("load-{i}")).await })
        })
        .collect();
    let renewals: Vec<_> = first
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let (addr, root, h) = (
                r.serves[(i + 1) % 2].addr.clone(),
                r.root.clone(),
                h.clone(),
            );
            tokio::spawn(async move { (h.clone(), renew_at(addr, root, h).await) })
        })
        .collect();
    let reports: Vec<_> = first
        .iter()
        .take(10)
        .enumerate()
        .map(|(i, h)| {
            let config =
                tls::client_config(Trust::Root(r.root.clone()), Some(h.identity())).unwrap();
            let addr = ServerAddr::parse(&r.serves[i % 2].addr).unwrap();
            let endpoint = h.engine();
            tokio::spawn(async move {
                let mut ca = CaClient::new(tls::connect(&addr, config).await.unwrap());
                ca.report_engine(v1::ReportEngineRequest { endpoint }).await
            })
        })
        .collect();
    let mut made_tokens = Vec::new();
    for i in 0..10 {
        made_tokens.push(r.token(i % 2, 1).await.1);
    }
    let mut held = first.clone();
    for t in enrollments {
        held.push(t.await.unwrap().unwrap());
    }
    let mut renewed = Vec::new();
    for t in renewals {
        let (old, new) = t.await.unwrap();
        renewed.push((old, new.unwrap()));
    }
    for t in reports {
        t.await.unwrap().unwrap();
    }

    let store = r.store().await;
    let all: Vec<Held> = held
        .iter()
        .cloned()
        .chain(renewed.iter().map(|(_, new)| new.clone()))
        .collect();
    assert_recorded(&store, &all).await;
    for (old, new) in &renewed {
        let record = store
            .certificate(&old.serial.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            record.summary.renewed_by.map(|s| s.to_string()),
            Some(new.serial.clone())
        );
    }
    assert_eq!(
        r.pg.sql(
            &r.db,
            "SELECT count(*) FROM certificates WHERE name LIKE 'load-%'"
        ),
        all.len().to_string()
    );
    assert_eq!(store.token(&token_id).await.unwrap().unwrap().uses, 340);
    assert_eq!(store.engines().await.unwrap().len(), 10);
    for id in &made_tokens {
        assert!(store.token(id).await.unwrap().is_some());
    }
    // The inventory through either replica is complete.
    for replica in 0..2 {
        let listed = r
            .admin(replica)
            .await
            .list_certificates(v1::ListCertificatesRequest {
                include_inactive: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .certificates;
        let listed: HashSet<String> = listed.into_iter().map(|c| c.serial).collect();
        assert!(all.iter().all(|h| listed.contains(&h.serial)));
    }
    let issue_entries: HashSet<String> = store
        .audit(100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "issue" || e.kind == "renew")
        .map(|e| e.subject)
        .collect();
    assert!(all.iter().all(|h| issue_entries.contains(&h.serial)));

    // A revocation through one replica is honoured by the other on the next call.
    let victim = &renewed[0].1;
    let revoked = r
        .admin(0)
        .await
        .revoke_certificate(v1::RevokeCertificateRequest {
            target: Some(v1::revoke_certificate_request::Target::Serial(
                victim.serial.clone(),
            )),
            reason: "test".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .serials;
    assert_eq!(revoked, vec![victim.serial.clone()]);
    let refused = renew(&r, 1, victim).await.unwrap_err();
    assert_eq!(
        reason_of(&refused),
        Some(Reason::CertRevoked),
        "{refused:?}"
    );
    let (other, other_id) = r.token(1, 5).await;
    r.admin(1)
        .await
        .revoke_token(v1::RevokeTokenRequest { id: other_id })
        .await
        .unwrap();
    let mut ca = r.ca(0).await;
    let refused = enroll(&mut ca, &other, "late").await.unwrap_err();
    assert_eq!(
        reason_of(&refused),
        Some(Reason::TokenRevoked),
        "{refused:?}"
    );
}

/// Enrolls in a loop on every replica from `workers` tasks until `stop` is set or
/// `max` attempts were made; returns what clients received and the errors per replica.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<Mutex<Vec<Held>>>,
    errors: Arc<Mutex<Vec<(usize, tonic::Status)>>>,
    attempts: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(channels: &[CaClient<Channel>], token: &str, workers: usize, max: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let attempts = Arc::new(AtomicUsize::new(0));
        let tasks = (0..workers)
            .map(|w| {
                let replica = w % channels.len();
                let mut ca = channels[replica].clone();
                let (stop, ok, errors, attempts) =
                    (stop.clone(), ok.clone(), errors.clone(), attempts.clone());
                let token = token.to_string();
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let n = attempts.fetch_add(1, Ordering::Relaxed);
                        if n >= max {
                            break;
                        }
                        match enroll(&mut ca, &token, &format!("w{w}-{n}")).await {
                            Ok(h) => ok.lock().unwrap().push(h),
                            Err(s) => {
                                errors.lock().unwrap().push((replica, s));
                                // Do not spin on a replica that is gone.
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            errors,
            attempts,
            tasks,
        }
    }

    fn ok(&self) -> usize {
        self.ok.lock().unwrap().len()
    }

    fn errors(&self) -> usize {
        self.errors.lock().unwrap().len()
    }

    async fn wait_for(&self, what: &str, cond: impl Fn(&Load) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cond(self) {
            assert!(
                Instant::now() < deadline,
                "load: timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn finish(self) -> (Vec<Held>, Vec<(usize, tonic::Status)>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let ok = std::mem::take(&mut *self.ok.lock().unwrap());
        let errors = std::mem::take(&mut *self.errors.lock().unwrap());
        (ok, errors)
    }
}

/// Each replica keeps the agents' reports in memory for its fleet view (the store stays
/// the truth): a report one replica stored must still reach the other's view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_stored_by_one_replica_shows_in_the_fleet_view_of_the_other() {
    let r = Replicas::start("fleet_reports", 2);
    let (token, _) = r.token(0, 2).await;
    let a = enroll(&mut r.ca(0).await, &token, "node-a").await.unwrap();
    let b = enroll(&mut r.ca(1).await, &token, "node-b").await.unwrap();
    let modes = |replica: usize| {
        let r = &r;
        async move {
            let view = r
                .admin(replica)
                .await
                .fleet(v1::FleetRequest::default())
                .await
                .unwrap()
                .into_inner();
            view.nodes
                .into_iter()
                .map(|n| (n.name, n.mode))
                .collect::<Vec<_>>()
        }
    };
    let unreported = vec![
        ("node-a".to_string(), String::new()),
        ("node-b".to_string(), String::new()),
    ];
    // Both replicas have read the reports (none yet) before any arrives.
    assert_eq!(modes(0).await, unreported);
    assert_eq!(modes(1).await, unreported);

    for (replica, held, mode) in [(0, &a, "native"), (1, &b, "guard")] {
        let mut agent = CaClient::new(r.channel(replica, Some(held.identity())).await);
        agent
            .report(v1::AgentReport {
                serial: held.serial.clone(),
                mode: mode.into(),
                engine_healthy: true,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let reported = vec![
        ("node-a".to_string(), "native".to_string()),
        ("node-b".to_string(), "guard".to_string()),
    ];
    assert_eq!(modes(0).await, reported);
    assert_eq!(modes(1).await, reported);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_one_replica_mid_load_loses_nothing_a_client_received() {
    let mut r = Replicas::start("kill", 2);
    let (token, token_id) = r.token(1, 100_000).await;
    let channels = [r.ca(0).await, r.ca(1).await];
    let load = Load::start(&channels, &token, 16, 20_000);
    load.wait_for("100 certificates", |l| l.ok() >= 100).await;
    let killed = r.serves[0]
        .proc
        .signal_and_wait(Signal::SIGKILL, Duration::from_secs(10));
    assert!(killed.is_some(), "replica 0 did not die");
    let after_kill = load.ok();
    load.wait_for("100 more certificates from the survivor", |l| {
        l.ok() >= after_kill + 100
    })
    .await;
    let attempts = load.attempts.load(Ordering::Relaxed);
    let (held, errors) = load.finish().await;
    eprintln!(
        "kill -9 mid-load: {} certificates received, {} errors, {attempts} attempts",
        held.len(),
        errors.len()
    );
    // Only calls to the killed replica failed.
    for (replica, status) in &errors {
        assert_eq!(*replica, 0, "the surviving replica refused: {status:?}");
    }
    let store = r.store().await;
    assert_recorded(&store, &held).await;
    // A use is consumed with its certificate, in one transaction: none burned alone.
    let uses = store.token(&token_id).await.unwrap().unwrap().uses;
    let recorded = r.pg.sql(
        &r.db,
        &format!("SELECT count(*) FROM certificates WHERE token_id = '{token_id}'"),
    );
    assert_eq!(uses.to_string(), recorded);
    assert!(u32::try_from(held.len()).unwrap() <= uses);
    // The killed replica starts again on the same database and serves.
    r.serves[0] = serve(&r.states[0], &r.url);
    let mut ca = r.ca(0).await;
    enroll(&mut ca, &token, "after-restart").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_stopped_mid_load_refuses_with_store_unavailable_and_recovers_by_itself() {
    let r = Replicas::start("outage", 2);
    let (token, _) = r.token(0, 100_000).await;
    let channels = [r.ca(0).await, r.ca(1).await];
    let load = Load::start(&channels, &token, 16, 20_000);
    load.wait_for("50 certificates", |l| l.ok() >= 50).await;
    r.pg.stop();
    let before = load.errors();
    load.wait_for("20 refusals while the database is down", |l| {
        l.errors() >= before + 20
    })
    .await;
    // A replica cannot start without its database either: one clear line, exit 28.
    let out = ca_server(&[
        "serve",
        "--state-dir",
        r.dir.path().join("replica-1").to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--insecure-no-passphrase",
        "--database",
        &r.url,
    ]);
    expect_exit(&out, Reason::StoreUnavailable);
    r.pg.restart();
    let recovered_from = load.ok();
    load.wait_for("50 certificates after the database returned", |l| {
        l.ok() >= recovered_from + 50
    })
    .await;
    let (held, errors) = load.finish().await;
    eprintln!(
        "database outage mid-load: {} certificates received, {} refusals",
        held.len(),
        errors.len()
    );
    assert!(!errors.is_empty());
    for (_, status) in &errors {
        assert_eq!(
            (status.code(), reason_of(status)),
            (Code::Unavailable, Some(Reason::StoreUnavailable)),
            "{status:?}"
        );
        assert!(
            status.message().contains("nothing was issued"),
            "{status:?}"
        );
    }
    let store = r.store().await;
    assert_recorded(&store, &held).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_migrate_moves_a_populated_embedded_store_and_refuses_to_run_twice() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("ca");
    init_insecure(&state);
    let pg = Postgres::start();
    let url = pg.create_database("moved");

    // A replica on a database without this CA's records refuses to start, and says how.
    let out = ca_server(&[
        "serve",
        "--state-dir",
        state.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--insecure-no-passphrase",
        "--database",
        &url,
    ]);
    expect_exit(&out, Reason::NotInitialized);
    assert!(stderr(&out).contains("store migrate"), "{}", stderr(&out));

    // Populate the embedded store through a real server: tokens (one revoked),
    // enrollments, renewals, revocations (by serial and by name), engine reports.
    let embedded = ServeProcess::start(&state, &["--insecure-no-passphrase"], &[]);
    let root = Bundle::load(&state.join("admin"), Layout::CLIENT)
        .unwrap()
        .roots
        .remove(0);
    let admin_bundle = Bundle::load(&state.join("admin"), Layout::CLIENT).unwrap();
    let addr = ServerAddr::parse(&embedded.addr).unwrap();
    let channel = |id: Option<ClientIdentity>| {
        let config = tls::client_config(Trust::Root(root.clone()), id).unwrap();
        let addr = addr.clone();
        async move { tls::connect(&addr, config).await.unwrap() }
    };
    let mut admin = AdminClient::new(channel(Some(admin_bundle.client_identity())).await);
    let token = admin
        .create_token(v1::CreateTokenRequest {
            role: v1::Role::Node.into(),
            uses: 50,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let unused = admin
        .create_token(v1::CreateTokenRequest {
            role: v1::Role::Operator.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    admin
        .revoke_token(v1::RevokeTokenRequest {
            id: unused.info.unwrap().id,
        })
        .await
        .unwrap();
    let mut ca = CaClient::new(channel(None).await);
    let mut held = Vec::new();
    for i in 0..12 {
        held.push(
            enroll(&mut ca, &token, &format!("moved-{i}"))
                .await
                .unwrap(),
        );
    }
    for h in held.iter().take(4) {
        let mut node = CaClient::new(channel(Some(h.identity())).await);
        node.report_engine(v1::ReportEngineRequest {
            endpoint: h.engine(),
        })
        .await
        .unwrap();
    }
    let mut renewed = Vec::new();
    for h in held.iter().skip(4).take(3) {
        let mut node = CaClient::new(channel(Some(h.identity())).await);
        let key = PrivateKey::generate(KeyType::P256).unwrap();
        let issued = node
            .renew(v1::RenewRequest {
                csr_der: csr::build(&key, "x", &[], &[]).unwrap(),
            })
            .await
            .unwrap()
            .into_inner();
        renewed.push(Held {
            serial: issued.serial,
            leaf: issued.leaf_der,
            intermediate: issued.intermediate_der,
            key: Arc::new(key),
        });
    }
    admin
        .revoke_certificate(v1::RevokeCertificateRequest {
            target: Some(v1::revoke_certificate_request::Target::Serial(
                held[8].serial.clone(),
            )),
            reason: "key lost".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .revoke_certificate(v1::RevokeCertificateRequest {
            target: Some(v1::revoke_certificate_request::Target::Name(
                "moved-9".into(),
            )),
            reason: String::new(),
            ..Default::default()
        })
        .await
        .unwrap();
    drop((admin, ca));
    let mut embedded = embedded;
    embedded.proc.stop();

    // What the embedded store holds.
    let source = SqliteStore::open(&state.join("store.db")).unwrap();
    let all = CertQuery {
        now: OffsetDateTime::now_utc(),
        expiring_within: None,
        include_inactive: true,
        limit: None,
        role: None,
        name: None,
    };
    let mut source_certs = Vec::new();
    for c in source.certificates(&all).await.unwrap() {
        source_certs.push(source.certificate(&c.serial).await.unwrap().unwrap());
    }
    source_certs.sort_by(|a, b| {
        a.summary
            .serial
            .to_string()
            .cmp(&b.summary.serial.to_string())
    });
    let source_tokens = source.tokens().await.unwrap();
    let source_engines = source.engines().await.unwrap();
    let source_audit = source.audit(u32::MAX).await.unwrap();
    assert_eq!(source_engines.len(), 4);
    assert!(
        source_certs
            .iter()
            .filter(|c| c.summary.revoked_at.is_some())
            .count()
            >= 2
    );
    drop(source);

    let migrate = || {
        ca_server(&[
            "store",
            "migrate",
            "--state-dir",
            state.to_str().unwrap(),
            "--database",
            &url,
        ])
    };
    let out = migrate();
    assert!(out.status.success(), "store migrate: {}", stderr(&out));
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("{report}");
    let line = |label: &str| -> String {
        report
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label} line in {report}"))
            .to_string()
    };
    assert!(
        line("tokens")
            .split_whitespace()
            .any(|w| w == source_tokens.len().to_string())
    );
    assert!(
        line("certificates")
            .split_whitespace()
            .any(|w| w == source_certs.len().to_string())
    );
    assert!(line("node engines").split_whitespace().any(|w| w == "4"));
    assert!(
        line("audit entries")
            .split_whitespace()
            .any(|w| w == source_audit.len().to_string())
    );
    assert!(report.contains("Verified"), "{report}");

    // Everything arrived, record for record, in the same order.
    let target = connect_store(&url).await;
    assert_eq!(target.tokens().await.unwrap(), source_tokens);
    let mut target_certs = Vec::new();
    for c in target.certificates(&all).await.unwrap() {
        target_certs.push(target.certificate(&c.serial).await.unwrap().unwrap());
    }
    target_certs.sort_by(|a, b| {
        a.summary
            .serial
            .to_string()
            .cmp(&b.summary.serial.to_string())
    });
    assert_eq!(target_certs, source_certs);
    assert_eq!(target.engines().await.unwrap(), source_engines);
    assert_eq!(target.audit(u32::MAX).await.unwrap(), source_audit);

    // A second run refuses the non-empty target and changes nothing.
    let again = migrate();
    expect_exit(&again, Reason::AlreadyInitialized);
    assert!(stderr(&again).contains("not empty"), "{}", stderr(&again));
    assert_eq!(
        target.audit(u32::MAX).await.unwrap().len(),
        source_audit.len()
    );

    // A replica on the database carries on: admin CLI, renewal of a moved certificate,
    // and a moved revocation still refuses.
    let replica = serve(&state, &url);
    let out = ca_server(&[
        "cert",
        "list",
        "--all",
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "cert list: {}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("moved-11"));
    let r = Replicas {
        dir,
        pg,
        db: "moved".into(),
        url: url.clone(),
        states: vec![state.clone()],
        serves: vec![replica],
        root,
    };
    renew(&r, 0, &held[0]).await.unwrap();
    renew(&r, 0, &renewed[0]).await.unwrap();
    let refused = renew(&r, 0, &held[8]).await.unwrap_err();
    assert_eq!(
        reason_of(&refused),
        Some(Reason::CertRevoked),
        "{refused:?}"
    );
}

/// The intermediate a replica signs with now, as its trust bundle says.
async fn signing_intermediate(replicas: &Replicas, replica: usize) -> Vec<u8> {
    let bundle = replicas
        .ca(replica)
        .await
        .trust_bundle(v1::TrustBundleRequest {})
        .await
        .unwrap()
        .into_inner();
    dtca_pki::inspect::certs_from_pem(&bundle.intermediate_pem)
        .unwrap()
        .remove(0)
}

/// Two replicas of a CA with one-minute intermediates: the one holding the root key
/// prepares each successor, the other reads it from the database, and both switch to it
/// together; a kill -9 of the first between prepare and switch changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_switch_to_the_same_intermediate_across_a_kill() {
    let mut replicas = Replicas::start_with(
        "switch",
        2,
        &["--intermediate-ttl", "60s", "--root-ttl", "1h"],
    );
    let first = signing_intermediate(&replicas, 0).await;
    assert_eq!(signing_intermediate(&replicas, 1).await, first);
    // Once the successor is prepared (an audit entry in the shared store), kill -9 the
    // replica that made it and start it again.
    let store = connect_store(&replicas.url).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while store.ca_material().await.unwrap().certs.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "no successor prepared: {}",
            replicas.serves[0].log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let addr = replicas.serves[0].addr.clone();
    replicas.serves[0]
        .proc
        .signal_and_wait(Signal::SIGKILL, Duration::from_secs(10));
    replicas.serves[0] = ServeProcess::start_at(
        &replicas.states[0],
        &addr,
        &["--database", &replicas.url, "--insecure-no-passphrase"],
        &[],
    );
    // Both switch, to the same intermediate.
    let mut seen = vec![first];
    for _ in 0..2 {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let a = signing_intermediate(&replicas, 0).await;
            let b = signing_intermediate(&replicas, 1).await;
            if a == b && !seen.contains(&a) {
                seen.push(a);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the replicas did not switch together: {}",
                replicas.serves[1].log_text()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    assert!(
        replicas.serves[1]
            .log_text()
            .contains("intermediate switch")
    );
    assert!(
        !replicas.serves[1]
            .log_text()
            .contains("prepared the next intermediate")
    );
}

/// Where no running replica holds the root key: from twice the leaf life before its
/// intermediate ends, `serve` warns (log, `ca status`, health detail); `ca rotate-intermediate`
/// on the root's host prepares the successor through the database, and the replica
/// switches to it and stops warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_root_key_serve_warns_and_rotate_intermediate_on_the_root_host_helps() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut replicas = Replicas::start_with(
        "warn",
        2,
        &["--intermediate-ttl", "60s", "--root-ttl", "1h"],
    );
    // The root's host serves no more: only the replica without the root key does.
    replicas.serves[0].proc.stop();
    let first = signing_intermediate(&replicas, 1).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut health = HealthClient::new(replicas.channel(1, None).await);
        let detail = health
            .check(HealthCheckRequest {
                service: "dtca.ca-lifecycle".into(),
            })
            .await
            .map(|r| r.into_inner().status)
            .unwrap_or(-1);
        let log = replicas.serves[1].log_text();
        if detail == ServingStatus::NotServing as i32 && log.contains("has no successor") {
            break;
        }
        assert!(Instant::now() < deadline, "no warning: {log}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let out = ca_server(&[
        "ca",
        "rotate-intermediate",
        "--state-dir",
        replicas.states[0].to_str().unwrap(),
        "--database",
        &replicas.url,
        "--insecure-no-passphrase",
    ]);
    assert!(
        out.status.success(),
        "rotate-intermediate: {}",
        stderr(&out)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while signing_intermediate(&replicas, 1).await == first {
        assert!(
            Instant::now() < deadline,
            "no switch: {}",
            replicas.serves[1].log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // On a replica without the root key, the command says so with its own exit code.
    let out = ca_server(&[
        "ca",
        "rotate-intermediate",
        "--state-dir",
        replicas.states[1].to_str().unwrap(),
        "--database",
        &replicas.url,
        "--insecure-no-passphrase",
    ]);
    expect_exit(&out, Reason::NoRootKey);
}
