//! The embedded store: one SQLite file in the state directory (WAL, `synchronous=FULL`).
//!
//! Writes go to one writer thread that applies whatever has queued up as one transaction
//! (each write in its own savepoint, so one refused write does not undo the others) and
//! then commits once: concurrent issuances share an fsync instead of paying one each.
//! WAL checkpoints run on a thread of their own, so no commit waits for one. Point
//! lookups (a token, a certificate by serial) run on the calling thread; scans use a
//! small pool of connections on the blocking thread pool.
//!
//! Layout: this file (the store, and the trait calls as reads or queued writes),
//! [`writer`] (the writer and checkpoint threads), [`apply`] (the statements of each
//! write: issuances with their name claims, revocations, the rest), [`ca`] (the CA's own
//! certificates and lifecycle), [`reads`] (queries and the read connections), [`rows`]
//! (rows to records), [`schema`] (tables, opening a connection).

mod apply;
mod ca;
mod reads;
mod rows;
mod schema;
mod writer;

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use dtca_pki::Serial;
use dtca_pki::identity::Role;
use rusqlite::Connection;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use reads::ReadPool;
use schema::{migrate, open_connection};
use writer::{checkpoint_loop, writer_loop};

use super::queue::{self, Change, Job, Outcome, Write};
use super::{
    AgentRecord, AuditEntry, CaMaterial, CaUpdate, CertQuery, CertRecord, CertSummary,
    EngineRecord, Issuance, NodeRecord, RevokeTarget, Store, StoreError, TokenRecord,
};

/// Writes that may wait for the writer before callers are held back.
const QUEUE: usize = 8192;

/// The embedded store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: mpsc::Sender<Job>,
    readers: Arc<ReadPool>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and starts its writer thread.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the file cannot be opened or the schema applied.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
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
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(unavailable)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(unavailable)?;
        migrate(&mut conn)?;
        // Checkpoints run on their own thread (see `checkpoint_loop`), not inside a commit.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(unavailable)?;
        let checkpointer = open_connection(path)?;
        let (wrote, written) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, written))
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot start the checkpoint thread: {e}"))
            })?;
        let (tx, rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, wrote))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            writer: tx,
            readers: Arc::new(ReadPool {
                path: path.to_path_buf(),
                idle: Mutex::new(Vec::new()),
            }),
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
        tokio::task::spawn_blocking(move || {
            let conn = pool.take()?;
            let result = f(&conn);
            pool.put(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("reader task failed: {e}")))?
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
        result
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.read(reads::ping).await
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

    async fn reports(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.read(reads::reports).await
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

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
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
