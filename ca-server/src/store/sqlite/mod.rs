//! The embedded store: one SQLite file in the state directory (WAL, `synchronous=FULL`).
//!
//! Writes go to one writer thread that applies whatever has queued up as one transaction
//! (each write in its own savepoint, so one refused write does not undo the others) and
//! then commits once: concurrent issuances share an fsync instead of paying one each.
//! WAL checkpoints run on a maintenance thread of their own, so no commit waits for one,
//! and the WAL stays bounded ([`wal`]). Point lookups (a token, a certificate by serial)
//! run on the calling thread; scans use a small pool of connections on the blocking
//! thread pool. The file is checked when the store opens; a full disk or a damaged file
//! stops writes with reasons of their own ([`condition`]).
//!
//! Layout: this file (the store, and the trait calls as reads or queued writes),
//! [`writer`] (the writer thread), [`apply`] (the statements of each write: issuances
//! with their name claims, revocations, the rest), [`wal`] (checkpoints and the WAL's
//! bounds), [`condition`] (full disk, damage, the reserve), [`reads`] (queries and the
//! read connections), [`rows`] (rows to records), [`schema`] (tables, migrations, the
//! check at open), [`ca`] (the CA's own certificates and lifecycle), [`backup`] (an online copy of the file),
//! [`snapshot`] (a read-only connection for admin commands while `serve` is down).

mod apply;
pub mod backup;
mod ca;
mod condition;
mod reads;
mod rows;
mod schema;
mod slots;
mod snapshot;
mod wal;
mod writer;

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use dtca_pki::Serial;
use dtca_pki::identity::Role;
use rusqlite::Connection;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use condition::Condition;
pub use condition::DEFAULT_RESERVE;
use reads::ReadPool;
use schema::{check, migrate, open_connection};
pub use snapshot::Snapshot;
use wal::{Poke, Wal, maintenance_loop};
use writer::writer_loop;

use super::queue::{self, Change, Job, Outcome, Write};
use super::{
    AgentRecord, AuditEntry, CaMaterial, CaUpdate, CertQuery, CertRecord, CertSummary,
    EngineRecord, Issuance, NodeRecord, RevokeTarget, Store, StoreError, StoreStats, TokenRecord,
};
use crate::restart::{Decision, RestartLimits, Slot, SlotRequest};

/// Writes that may wait for the writer before callers are held back.
const QUEUE: usize = 8192;

/// How the embedded store opens.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Space kept for the store on its file system (see [`condition`]): `None` leaves
    /// whatever reserve is there alone (tools that open the store for a moment), `Some(0)`
    /// keeps none.
    pub reserve: Option<u64>,
    /// Check the file with SQLite's quick check before using it.
    pub check: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            reserve: None,
            check: true,
        }
    }
}

/// The embedded store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: mpsc::Sender<Job>,
    readers: Arc<ReadPool>,
    wal: Arc<Wal>,
    condition: Arc<Condition>,
    maintenance: SyncSender<Poke>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, checked, with no reserve of its
    /// own, and starts its threads.
    ///
    /// # Errors
    /// See [`SqliteStore::open_with`].
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, &SqliteOptions::default())
    }

    /// Opens (creating if needed) the database at `path` and starts its writer and
    /// maintenance threads.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the file is damaged (naming it and what to do),
    /// [`StoreError::Full`] when the schema cannot be written for want of space,
    /// [`StoreError::Unavailable`] when the file cannot be opened or is of a newer version.
    pub fn open_with(path: &Path, options: &SqliteOptions) -> Result<Self, StoreError> {
        Self::start(path, options).map_err(|e| match e {
            StoreError::Corrupt(finding) if !finding.contains("ca-server will not use it") => {
                schema::damaged(path, &finding)
            }
            other => other,
        })
    }

    fn start(path: &Path, options: &SqliteOptions) -> Result<Self, StoreError> {
        // Made here, 0600, so SQLite gives its WAL and shared-memory files the same mode.
        if !path.exists() {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(dtca_common::fs::PRIVATE)
                .open(path)
                .map_err(|e| {
                    StoreError::Unavailable(format!("cannot create {}: {e}", path.display()))
                })?;
        }
        let mut conn = open_connection(path)?;
        if options.check {
            check(&conn, path)?;
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_error)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db_error)?;
        migrate(&mut conn)?;
        // Checkpoints run on their own thread (see `wal`), not inside a commit.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(db_error)?;
        conn.pragma_update(None, "journal_size_limit", wal::SIZE_LIMIT as i64)
            .map_err(db_error)?;
        let page_size: i64 = conn
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .map_err(db_error)?;
        let wal = Arc::new(Wal::new(path, u64::try_from(page_size).unwrap_or(4096)));
        wal.watch(&mut conn)?;
        let condition = Arc::new(Condition::new(path, options.reserve));
        let maintainer = open_connection(path)?;
        let (pokes, poked) = sync_channel(1);
        {
            let (wal, condition) = (wal.clone(), condition.clone());
            std::thread::Builder::new()
                .name("sqlite-maintenance".into())
                .spawn(move || maintenance_loop(maintainer, poked, wal, condition))
                .map_err(|e| {
                    StoreError::Unavailable(format!("cannot start the maintenance thread: {e}"))
                })?;
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        {
            let (wal, condition, pokes) = (wal.clone(), condition.clone(), pokes.clone());
            std::thread::Builder::new()
                .name("sqlite-writer".into())
                .spawn(move || writer_loop(conn, rx, wal, condition, pokes))
                .map_err(|e| {
                    StoreError::Unavailable(format!("cannot start the writer thread: {e}"))
                })?;
        }
        Ok(SqliteStore {
            writer: tx,
            readers: Arc::new(ReadPool {
                path: path.to_path_buf(),
                idle: Mutex::new(Vec::new()),
            }),
            wal,
            condition,
            maintenance: pokes,
        })
    }

    async fn write(&self, write: Write) -> Result<Outcome, StoreError> {
        queue::submit(&self.writer, write, "the writer thread has stopped").await
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = self.readers.clone();
        let result = tokio::task::spawn_blocking(move || {
            let conn = pool.take()?;
            let result = f(&conn);
            pool.put(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("reader task failed: {e}")))?;
        self.noted(result)
    }

    /// Runs a point lookup (one row by primary key) on the calling thread.
    ///
    /// Such a read takes microseconds: the page is cached and a WAL reader never waits
    /// for the writer. Handing it to the blocking pool costs more than the read (a thread
    /// wake-up there and another one back, on every enrollment and every authenticated
    /// call), so only scans go through [`SqliteStore::read`].
    fn lookup<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.readers.take()?;
        let result = f(&conn);
        self.readers.put(conn);
        self.noted(result)
    }

    /// A read that found the file damaged stops writes too.
    fn noted<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &result {
            self.condition.note(e);
        }
        result
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.condition.check_space()?;
        self.read(reads::ping).await
    }

    fn stats(&self) -> Option<StoreStats> {
        Some(self.wal.stats(&self.condition))
    }

    async fn close(&self) {
        let (done, closed) = sync_channel(1);
        let pokes = self.maintenance.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if pokes.send(Poke::Close(done)).is_ok() {
                let _ = closed.recv();
            }
        })
        .await;
    }

    async fn insert_token(&self, token: TokenRecord, audit: AuditEntry) -> Result<(), StoreError> {
        self.write(Write::Change(Box::new(Change::Token(token, audit))))
            .await
            .map(|_| ())
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.lookup(|c| reads::token(c, id))
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.read(reads::tokens).await
    }

    async fn revoke_token(&self, id: &str, audit: AuditEntry) -> Result<(), StoreError> {
        self.write(Write::Change(Box::new(Change::RevokeToken(
            id.to_string(),
            audit,
        ))))
        .await
        .map(|_| ())
    }

    async fn record_issuance(&self, issuance: Issuance) -> Result<(), StoreError> {
        self.write(Write::Issue(Box::new(issuance)))
            .await
            .map(|_| ())
    }

    async fn certificate(&self, serial: &Serial) -> Result<Option<CertRecord>, StoreError> {
        let serial = serial.to_string();
        self.lookup(|c| reads::certificate(c, &serial))
    }

    async fn certificates(&self, query: &CertQuery) -> Result<Vec<CertSummary>, StoreError> {
        let query = query.clone();
        self.read(move |c| reads::certificates(c, &query)).await
    }

    async fn revoke(
        &self,
        target: &RevokeTarget,
        at: OffsetDateTime,
        reason: &str,
        actor: &str,
    ) -> Result<Vec<Serial>, StoreError> {
        let outcome = self
            .write(Write::Change(Box::new(Change::Revoke {
                target: target.clone(),
                at,
                reason: reason.to_string(),
                actor: actor.to_string(),
            })))
            .await?;
        Ok(outcome.into_serials())
    }

    async fn revoked(
        &self,
        now: OffsetDateTime,
    ) -> Result<Vec<(Serial, OffsetDateTime)>, StoreError> {
        self.read(move |c| reads::revoked(c, now)).await
    }

    async fn revocations_since(
        &self,
        since: OffsetDateTime,
    ) -> Result<Vec<(Serial, OffsetDateTime)>, StoreError> {
        self.read(move |c| reads::revocations_since(c, since)).await
    }

    async fn record_report(&self, report: AgentRecord) -> Result<(), StoreError> {
        self.write(Write::Change(Box::new(Change::Report(report))))
            .await
            .map(|_| ())
    }

    async fn reports(&self, since: OffsetDateTime) -> Result<Vec<AgentRecord>, StoreError> {
        self.read(move |c| reads::reports(c, since)).await
    }

    async fn report_times(&self, since: OffsetDateTime) -> Result<Vec<(String, i64)>, StoreError> {
        self.read(move |c| reads::report_times(c, since)).await
    }

    async fn request_restart(
        &self,
        request: SlotRequest,
        limits: RestartLimits,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<Decision, StoreError> {
        self.write(Write::restart_request(request, limits, actor, now))
            .await?
            .into_decision()
    }

    async fn release_restart(&self, name: &str, audit: AuditEntry) -> Result<bool, StoreError> {
        let outcome = self.write(Write::restart_release(name, audit)).await?;
        Ok(outcome.released())
    }

    async fn restart_slots(&self, now: OffsetDateTime) -> Result<Vec<Slot>, StoreError> {
        let all = self.read(slots::all).await?;
        Ok(all.into_iter().filter(|s| !s.expired(now)).collect())
    }

    async fn mark_used(&self, serial: &Serial, at: OffsetDateTime) -> Result<(), StoreError> {
        self.write(Write::Change(Box::new(Change::MarkUsed {
            serial: serial.clone(),
            at,
        })))
        .await
        .map(|_| ())
    }

    async fn holders(
        &self,
        identities: &[(Role, String)],
    ) -> Result<Vec<(Role, String, Serial)>, StoreError> {
        let identities = identities.to_vec();
        self.read(move |c| reads::holders(c, &identities)).await
    }

    async fn set_engine(
        &self,
        name: &str,
        endpoint: &str,
        serial: &Serial,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        self.write(Write::Change(Box::new(Change::Engine {
            name: name.to_string(),
            endpoint: endpoint.to_string(),
            serial: serial.clone(),
            audit,
        })))
        .await
        .map(|_| ())
    }

    async fn nodes(&self, now: OffsetDateTime) -> Result<Vec<NodeRecord>, StoreError> {
        self.read(move |c| reads::nodes(c, now)).await
    }

    async fn engines(&self) -> Result<Vec<EngineRecord>, StoreError> {
        self.read(reads::engines).await
    }

    async fn audit(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        self.read(move |c| reads::audit(c, limit)).await
    }

    async fn current_certificates(
        &self,
        now: OffsetDateTime,
    ) -> Result<Vec<CertRecord>, StoreError> {
        self.read(move |c| reads::current(c, now)).await
    }

    async fn ca_generation(&self) -> Result<u64, StoreError> {
        self.lookup(ca::generation)
    }

    async fn ca_material(&self) -> Result<CaMaterial, StoreError> {
        self.read(ca::material).await
    }

    async fn update_ca(&self, update: CaUpdate) -> Result<u64, StoreError> {
        self.write(Write::Change(Box::new(Change::Ca(update))))
            .await
            .map(|o| o.generation())
    }
}

/// An SQLite error as the store reports it: a full disk and a damaged file are reasons
/// of their own; anything else is an outage to retry.
fn db_error(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::DiskFull => StoreError::Full(e.to_string()),
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                StoreError::Corrupt(e.to_string())
            }
            _ => StoreError::Unavailable(e.to_string()),
        },
        _ => StoreError::Unavailable(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AuditKind;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_store_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("store.db")).unwrap();
        super::super::conformance::run_all(Arc::new(store)).await;
    }

    #[tokio::test]
    async fn survives_reopening_with_everything_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let later = OffsetDateTime::now_utc() + time::Duration::hours(1);
        let serial = {
            let store = SqliteStore::open(&path).unwrap();
            let t = super::super::conformance::token("t", 1, later);
            store
                .insert_token(
                    t,
                    AuditEntry::new(
                        OffsetDateTime::now_utc(),
                        AuditKind::TokenCreate,
                        "a",
                        "t",
                        "",
                    ),
                )
                .await
                .unwrap();
            let c = super::super::conformance::cert(dtca_pki::Role::Node, "n", later);
            let serial = c.summary.serial.clone();
            store
                .record_issuance(Issuance {
                    cert: c,
                    token_id: Some("t".into()),
                    renewal_of: None,
                    replace: false,
                    audit: vec![],
                    at: OffsetDateTime::now_utc(),
                })
                .await
                .unwrap();
            serial
        };
        let store = SqliteStore::open(&path).unwrap();
        assert!(store.certificate(&serial).await.unwrap().is_some());
        assert_eq!(store.token("t").await.unwrap().unwrap().uses, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checkpoints_the_wal_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = Arc::new(SqliteStore::open(&path).unwrap());
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let before = size(&path);
        let later = OffsetDateTime::now_utc() + time::Duration::hours(1);
        let writes: Vec<_> = (0..200)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let c = super::super::conformance::cert(
                        dtca_pki::Role::Node,
                        &format!("n{i}"),
                        later,
                    );
                    store
                        .record_issuance(Issuance {
                            cert: c,
                            token_id: None,
                            renewal_of: None,
                            replace: false,
                            audit: vec![],
                            at: OffsetDateTime::now_utc(),
                        })
                        .await
                })
            })
            .collect();
        for w in writes {
            w.await.unwrap().unwrap();
        }
        // Automatic checkpoints are off on the writer: only the checkpoint thread moves
        // pages into the database file.
        let grown = (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            size(&path) > before
        });
        assert!(grown, "the database file never grew: no checkpoint ran");
        let query = CertQuery {
            now: OffsetDateTime::now_utc(),
            expiring_within: None,
            include_inactive: true,
            limit: None,
            role: None,
            name: None,
        };
        assert_eq!(store.certificates(&query).await.unwrap().len(), 200);
    }

    fn issuance(name: &str) -> Issuance {
        let later = OffsetDateTime::now_utc() + time::Duration::hours(1);
        Issuance {
            cert: super::super::conformance::cert(dtca_pki::Role::Node, name, later),
            token_id: None,
            renewal_of: None,
            replace: false,
            audit: vec![AuditEntry::new(
                OffsetDateTime::now_utc(),
                AuditKind::Issue,
                "test",
                name,
                "a detail about as long as the real ones, with names and an expiry",
            )],
            at: OffsetDateTime::now_utc(),
        }
    }

    fn file_size(p: &Path) -> u64 {
        std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
    }

    /// Regression: the WAL never started over under continuous writes (4 GB in 60 s),
    /// because only passive checkpoints ran and the writer never paused for one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_starts_over_under_continuous_writes_and_is_emptied_on_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = Arc::new(SqliteStore::open(&path).unwrap());
        let wal_file = dir.path().join("store.db-wal");
        let mut largest = 0;
        let mut n = 0;
        // Writers that never pause, until more than three times the rewind point has gone
        // through the WAL and it has started over at least twice. (On a busy machine the
        // writers do pause, and an idle checkpoint may start the WAL over early: that is
        // allowed; going past the rewind point without starting over is not.)
        loop {
            let stats = store.stats().unwrap();
            if stats.wal_written_bytes > 3 * wal::REWIND_AT && stats.wal_resets >= 2 {
                break;
            }
            assert!(
                n < 200_000,
                "no reset after {n} writes: {:?}",
                store.stats()
            );
            let writes: Vec<_> = (0..64)
                .map(|i| {
                    let store = store.clone();
                    let name = format!("n{n}-{i}");
                    tokio::spawn(async move { store.record_issuance(issuance(&name)).await })
                })
                .collect();
            for w in writes {
                w.await.unwrap().unwrap();
            }
            n += 64;
            largest = largest.max(file_size(&wal_file));
        }
        // Started over near the rewind point each time, not only when an idle moment
        // allowed it: the file stayed well under what went through it.
        assert!(
            largest < 2 * wal::REWIND_AT,
            "the WAL file reached {largest} bytes: {:?} after {n} writes",
            store.stats()
        );
        store.close().await;
        assert_eq!(file_size(&wal_file), 0, "close left a WAL behind");
        // Calls after close still work, and everything written is there.
        let query = CertQuery {
            now: OffsetDateTime::now_utc(),
            expiring_within: None,
            include_inactive: true,
            limit: None,
            role: None,
            name: None,
        };
        assert_eq!(store.certificates(&query).await.unwrap().len(), n);
    }

    /// Regression: `serve` started on a damaged file and called corruption an outage.
    #[test]
    fn refuses_a_damaged_file_naming_it_and_how_to_restore() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        {
            let conn = Connection::open(&path).unwrap();
            schema::migrate(&mut Connection::open(&path).unwrap()).unwrap();
            conn.execute_batch(
                "CREATE TABLE filler (x BLOB); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)
                 INSERT INTO filler SELECT randomblob(500) FROM n;",
            )
            .unwrap();
        }
        // Page 3 onwards belong to the tables: overwrite one with noise.
        let mut bytes = std::fs::read(&path).unwrap();
        let page = 4096 * 4;
        for (i, b) in bytes[page..page + 4096].iter_mut().enumerate() {
            *b = u8::try_from((i * 7919 + 13) % 251).unwrap();
        }
        std::fs::write(&path, bytes).unwrap();
        let Err(StoreError::Corrupt(why)) = SqliteStore::open(&path) else {
            panic!("a damaged file was opened");
        };
        assert!(why.contains(&path.display().to_string()), "{why}");
        assert!(why.contains("store backup"), "{why}");
        // Not a database at all.
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let Err(StoreError::Corrupt(why)) = SqliteStore::open(&path) else {
            panic!("noise was opened as a database");
        };
        assert!(why.contains(&path.display().to_string()), "{why}");
    }

    /// Regression: corruption met at run time was answered "unavailable, retry later".
    #[tokio::test]
    async fn damage_met_at_run_time_stops_writes_and_fails_the_health_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let serials: Vec<Serial> = {
            let store = SqliteStore::open(&path).unwrap();
            let mut serials = Vec::new();
            for i in 0..300 {
                let i = issuance(&format!("d{i}"));
                serials.push(i.cert.summary.serial.clone());
                store.record_issuance(i).await.unwrap();
            }
            store.close().await;
            serials
        };
        let root: i64 = Connection::open(&path)
            .unwrap()
            .query_row(
                "SELECT rootpage FROM sqlite_master WHERE name = 'sqlite_autoindex_certificates_1'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let at = usize::try_from((root - 1) * 4096).unwrap();
        bytes[at..at + 4096].fill(0x5a);
        std::fs::write(&path, bytes).unwrap();
        // Opened without the check `serve` makes: the damage is met by a lookup.
        let options = SqliteOptions {
            reserve: None,
            check: false,
        };
        let store = SqliteStore::open_with(&path, &options).unwrap();
        assert!(store.ping().await.is_ok());
        let Err(StoreError::Corrupt(_)) = store.certificate(&serials[7]).await else {
            panic!("a damaged index page read as an answer");
        };
        assert!(matches!(store.ping().await, Err(StoreError::Corrupt(_))));
        assert!(matches!(
            store.record_issuance(issuance("after")).await,
            Err(StoreError::Corrupt(_))
        ));
    }

    #[tokio::test]
    async fn a_full_disk_refuses_writes_with_its_own_reason_and_records_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let options = SqliteOptions {
            reserve: Some(u64::MAX / 4),
            check: true,
        };
        let store = SqliteStore::open_with(&path, &options).unwrap();
        let i = issuance("n");
        let serial = i.cert.summary.serial.clone();
        assert!(matches!(
            store.record_issuance(i).await,
            Err(StoreError::Full(_))
        ));
        assert!(matches!(store.ping().await, Err(StoreError::Full(_))));
        assert!(store.certificate(&serial).await.unwrap().is_none());
        assert!(store.audit(10).await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn backs_up_while_writing_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap());
        for i in 0..50 {
            store
                .record_issuance(issuance(&format!("b{i}")))
                .await
                .unwrap();
        }
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..200 {
                    store
                        .record_issuance(issuance(&format!("w{i}")))
                        .await
                        .unwrap();
                }
            })
        };
        let out = dir.path().join("backup.db");
        let (db, copy) = (dir.path().join("store.db"), out.clone());
        let report = tokio::task::spawn_blocking(move || backup::backup(&db, &copy))
            .await
            .unwrap()
            .unwrap();
        writer.await.unwrap();
        assert!((50..=250).contains(&report.certificates), "{report:?}");
        assert_eq!(report.audit, report.certificates);
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(&out).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), report.bytes);
        assert!(!dir.path().join("backup.db-wal").exists());
        // The backup opens as a store holding what it reported.
        let restored = SqliteStore::open(&out).unwrap();
        let query = CertQuery {
            now: OffsetDateTime::now_utc(),
            expiring_within: None,
            include_inactive: true,
            limit: None,
            role: None,
            name: None,
        };
        let n = restored.certificates(&query).await.unwrap().len();
        assert_eq!(u64::try_from(n).unwrap(), report.certificates);
        assert!(matches!(
            backup::backup(&dir.path().join("store.db"), &out),
            Err(backup::BackupError::Exists(_))
        ));
        assert!(matches!(
            backup::backup(&dir.path().join("none.db"), &dir.path().join("b2.db")),
            Err(backup::BackupError::Missing(_))
        ));
    }

    #[test]
    fn refuses_a_database_from_a_newer_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = SqliteStore::open(&path).unwrap_err();
        assert!(err.to_string().contains("newer"), "{err}");
    }
}
