//! The embedded store: one SQLite file in the state directory (WAL, `synchronous=FULL`).
//!
//! Writes go to one writer thread that applies whatever has queued up as one transaction
//! (each write in its own savepoint, so one refused write does not undo the others) and
//! then commits once: concurrent issuances share an fsync instead of paying one each.
//! WAL checkpoints run on a thread of their own, so no commit waits for one. Point
//! lookups (a token, a certificate by serial) run on the calling thread; scans use a
//! small pool of connections on the blocking thread pool.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use dtca_pki::Serial;
use dtca_pki::identity::Identity;
use dtca_pki::policy::SanPolicy;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use super::columns;
use super::{
    AuditEntry, AuditKind, CertQuery, CertRecord, CertSummary, EngineRecord, Issuance, NodeRecord,
    RevokeTarget, Store, StoreError, TokenRecord,
};

/// Most writes applied in one transaction.
const MAX_BATCH: usize = 1024;
/// Writes that may wait for the writer before callers are held back.
const QUEUE: usize = 8192;
/// Shortest time between two WAL checkpoints.
const CHECKPOINT_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);
/// Schema version kept in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    secret_hash BLOB NOT NULL,
    role TEXT NOT NULL,
    name TEXT,
    max_uses INTEGER NOT NULL,
    uses INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER,
    policy TEXT NOT NULL,
    cert_ttl INTEGER
);
CREATE TABLE IF NOT EXISTS certificates (
    serial TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    role TEXT NOT NULL,
    name TEXT NOT NULL,
    dns TEXT NOT NULL,
    ips TEXT NOT NULL,
    not_before INTEGER NOT NULL,
    not_after INTEGER NOT NULL,
    der BLOB NOT NULL,
    token_id TEXT,
    renewed_from TEXT,
    renewed_by TEXT,
    policy TEXT NOT NULL,
    issued_at INTEGER NOT NULL,
    revoked_at INTEGER,
    revocation_reason TEXT
);
CREATE INDEX IF NOT EXISTS certificates_current_expiry ON certificates (not_after)
    WHERE revoked_at IS NULL AND renewed_by IS NULL;
CREATE INDEX IF NOT EXISTS certificates_expiry ON certificates (not_after);
CREATE INDEX IF NOT EXISTS certificates_name ON certificates (name);
CREATE INDEX IF NOT EXISTS certificates_revoked ON certificates (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS nodes (
    name TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL
);
";

const SUMMARY_COLUMNS: &str =
    "serial, identity, dns, ips, not_before, not_after, revoked_at, renewed_by";

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
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Job { write, reply })
            .await
            .map_err(|_| StoreError::Unavailable("the writer thread has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the writer thread has stopped".into()))?
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
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(unavailable))
            .await
    }

    async fn insert_token(&self, token: TokenRecord, audit: AuditEntry) -> Result<(), StoreError> {
        self.write(Write::Token(token, audit)).await.map(|_| ())
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.lookup(|c| {
            c.prepare_cached("SELECT * FROM tokens WHERE id = ?1")
                .map_err(unavailable)?
                .query_row([id], token_from_row)
                .optional()
                .map_err(unavailable)?
                .transpose()
        })
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached("SELECT * FROM tokens ORDER BY created_at DESC, rowid DESC")
                .map_err(unavailable)?;
            let rows = stmt.query_map([], token_from_row).map_err(unavailable)?;
            rows.map(|r| r.map_err(unavailable)?).collect()
        })
        .await
    }

    async fn revoke_token(&self, id: &str, audit: AuditEntry) -> Result<(), StoreError> {
        self.write(Write::RevokeToken(id.to_string(), audit))
            .await
            .map(|_| ())
    }

    async fn record_issuance(&self, issuance: Issuance) -> Result<(), StoreError> {
        self.write(Write::Issuance(Box::new(issuance)))
            .await
            .map(|_| ())
    }

    async fn certificate(&self, serial: &Serial) -> Result<Option<CertRecord>, StoreError> {
        let serial = serial.to_string();
        self.lookup(|c| {
            c.prepare_cached(&format!(
                "SELECT {SUMMARY_COLUMNS}, der, token_id, renewed_from, policy, issued_at, revocation_reason
                 FROM certificates WHERE serial = ?1"
            ))
            .map_err(unavailable)?
            .query_row([serial], record_from_row)
            .optional()
            .map_err(unavailable)?
            .transpose()
        })
    }

    async fn certificates(&self, query: &CertQuery) -> Result<Vec<CertSummary>, StoreError> {
        let query = query.clone();
        self.read(move |c| {
            let now = query.now.unix_timestamp();
            let limit = query.limit.map(i64::from).unwrap_or(-1);
            let role = query.role.map(|r| r.as_str());
            // ?1 now, ?2 expiry bound, ?3 role (NULL: any), ?4 limit (-1: none), ?5 name.
            let filter = match query.expiring_within {
                Some(_) => "revoked_at IS NULL AND renewed_by IS NULL AND not_after > ?1 AND not_after <= ?2",
                None if query.include_inactive => "?1 IS NOT NULL AND ?2 IS NOT NULL",
                None => "revoked_at IS NULL AND not_after > ?1 AND ?2 IS NOT NULL",
            };
            // Spelled out rather than `(?5 IS NULL OR ...)`, so a name uses its index.
            let by_name = if query.name.is_some() {
                "name = ?5"
            } else {
                "?5 IS NULL"
            };
            let bound = now.saturating_add(query.expiring_within.map(secs).unwrap_or(0));
            let sql = format!(
                "SELECT {SUMMARY_COLUMNS} FROM certificates
                 WHERE {filter} AND {by_name} AND (?3 IS NULL OR role = ?3) ORDER BY not_after LIMIT ?4"
            );
            let mut stmt = c.prepare_cached(&sql).map_err(unavailable)?;
            let rows = stmt
                .query_map(params![now, bound, role, limit, query.name], summary_from_row)
                .map_err(unavailable)?;
            rows.map(|r| r.map_err(unavailable)?).collect()
        })
        .await
    }

    async fn revoke(
        &self,
        target: &RevokeTarget,
        at: OffsetDateTime,
        reason: &str,
        actor: &str,
    ) -> Result<Vec<Serial>, StoreError> {
        let outcome = self
            .write(Write::Revoke {
                target: target.clone(),
                at,
                reason: reason.to_string(),
                actor: actor.to_string(),
            })
            .await?;
        match outcome {
            Outcome::Serials(serials) => Ok(serials),
            Outcome::Done => Ok(Vec::new()),
        }
    }

    async fn revoked(
        &self,
        now: OffsetDateTime,
    ) -> Result<Vec<(Serial, OffsetDateTime)>, StoreError> {
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT serial, revoked_at FROM certificates
                     WHERE revoked_at IS NOT NULL AND not_after > ?1 ORDER BY revoked_at",
                )
                .map_err(unavailable)?;
            let rows = stmt
                .query_map([now.unix_timestamp()], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                })
                .map_err(unavailable)?;
            rows.map(|r| {
                let (serial, at) = r.map_err(unavailable)?;
                Ok((
                    parse_serial(&serial)?,
                    columns::time(at).map_err(StoreError::Corrupt)?,
                ))
            })
            .collect()
        })
        .await
    }

    async fn set_engine(
        &self,
        name: &str,
        endpoint: &str,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        self.write(Write::Engine {
            name: name.to_string(),
            endpoint: endpoint.to_string(),
            audit,
        })
        .await
        .map(|_| ())
    }

    async fn nodes(&self, now: OffsetDateTime) -> Result<Vec<NodeRecord>, StoreError> {
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {SUMMARY_COLUMNS}, name, (SELECT endpoint FROM nodes WHERE nodes.name = certificates.name)
                     FROM certificates
                     WHERE role = 'node' AND revoked_at IS NULL AND renewed_by IS NULL AND not_after > ?1
                     ORDER BY name, not_after DESC"
                ))
                .map_err(unavailable)?;
            let rows = stmt
                .query_map([now.unix_timestamp()], |row| {
                    Ok((summary_from_row(row)?, row.get::<_, String>(8)?, row.get::<_, Option<String>>(9)?))
                })
                .map_err(unavailable)?;
            let mut out: Vec<NodeRecord> = Vec::new();
            for row in rows {
                let (summary, name, endpoint) = row.map_err(unavailable)?;
                if out.last().is_some_and(|n| n.name == name) {
                    continue;
                }
                out.push(NodeRecord {
                    name,
                    endpoint,
                    cert: summary?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn engines(&self) -> Result<Vec<EngineRecord>, StoreError> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached("SELECT name, endpoint, updated_at FROM nodes ORDER BY name")
                .map_err(unavailable)?;
            let rows = stmt
                .query_map([], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                })
                .map_err(unavailable)?;
            rows.map(|r| {
                let (name, endpoint, at) = r.map_err(unavailable)?;
                Ok(EngineRecord {
                    name,
                    endpoint,
                    updated_at: columns::time(at).map_err(StoreError::Corrupt)?,
                })
            })
            .collect()
        })
        .await
    }

    async fn audit(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT at, kind, actor, subject, detail FROM audit ORDER BY id DESC LIMIT ?1",
                )
                .map_err(unavailable)?;
            let rows = stmt
                .query_map([i64::from(limit)], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        AuditEntry {
                            at: OffsetDateTime::UNIX_EPOCH,
                            kind: row.get(1)?,
                            actor: row.get(2)?,
                            subject: row.get(3)?,
                            detail: row.get(4)?,
                        },
                    ))
                })
                .map_err(unavailable)?;
            rows.map(|r| {
                let (at, entry) = r.map_err(unavailable)?;
                Ok(AuditEntry {
                    at: columns::time(at).map_err(StoreError::Corrupt)?,
                    ..entry
                })
            })
            .collect()
        })
        .await
    }
}

enum Write {
    Token(TokenRecord, AuditEntry),
    RevokeToken(String, AuditEntry),
    Issuance(Box<Issuance>),
    Revoke {
        target: RevokeTarget,
        at: OffsetDateTime,
        reason: String,
        actor: String,
    },
    Engine {
        name: String,
        endpoint: String,
        audit: AuditEntry,
    },
}

enum Outcome {
    Done,
    Serials(Vec<Serial>),
}

struct Job {
    write: Write,
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

fn writer_loop(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    wrote: std::sync::mpsc::SyncSender<()>,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        let results = apply_batch(&mut conn, &mut batch, &mut rx);
        let committed = results.iter().any(Result::is_ok);
        for (job, result) in batch.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
        if committed {
            // Full (a checkpoint is already due) or closed: either way nothing to do.
            let _ = wrote.try_send(());
        }
    }
}

/// Applies `batch` in one transaction, each write in its own savepoint, and keeps taking
/// the writes that queue up meanwhile (up to [`MAX_BATCH`]) before the one commit: under
/// load the fsync is shared by more certificates, and nothing ever waits on purpose. The
/// results are only good if the commit succeeds, so a failed commit fails them all.
fn apply_batch(
    conn: &mut Connection,
    batch: &mut Vec<Job>,
    rx: &mut mpsc::Receiver<Job>,
) -> Vec<Result<Outcome, StoreError>> {
    let fail_all = |n: usize, e: StoreError| (0..n).map(|_| Err(e.clone())).collect();
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => return fail_all(batch.len(), unavailable(e)),
    };
    let mut results = Vec::with_capacity(batch.len());
    loop {
        for job in &batch[results.len()..] {
            let result = match tx.savepoint() {
                Ok(mut sp) => match apply(&mut sp, &job.write) {
                    Ok(outcome) => sp.commit().map(|()| outcome).map_err(unavailable),
                    Err(e) => {
                        // Dropping the savepoint rolls this write back; the batch goes on.
                        drop(sp);
                        Err(e)
                    }
                },
                Err(e) => Err(unavailable(e)),
            };
            results.push(result);
        }
        if !drain(batch, rx) {
            break;
        }
    }
    match tx.commit() {
        Ok(()) => results,
        Err(e) => fail_all(batch.len(), unavailable(e)),
    }
}

/// Moves writes that are already queued into `batch`, up to [`MAX_BATCH`]; whether any were.
fn drain(batch: &mut Vec<Job>, rx: &mut mpsc::Receiver<Job>) -> bool {
    let before = batch.len();
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    batch.len() > before
}

/// Copies committed pages from the WAL into the database file, off the commit path.
///
/// With SQLite's automatic checkpoints, the commit that crosses the WAL size limit copies
/// a thousand pages and syncs the database file before it returns, and every issuance
/// waiting behind it waits that long too (the p99 of issuance latency). Here the writer
/// only signals that it committed; this thread runs a passive checkpoint (which never
/// blocks the writer or readers) and then pauses, so under load it checkpoints a few
/// times a second, and an idle server does nothing at all.
fn checkpoint_loop(conn: Connection, wrote: std::sync::mpsc::Receiver<()>) {
    while wrote.recv().is_ok() {
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "WAL checkpoint failed; retrying after the next commit");
        }
        std::thread::sleep(CHECKPOINT_PAUSE);
    }
}

fn apply(tx: &mut rusqlite::Savepoint<'_>, write: &Write) -> Result<Outcome, StoreError> {
    match write {
        Write::Token(t, audit) => {
            let policy =
                serde_json::to_string(&t.policy).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO tokens (id, secret_hash, role, name, max_uses, uses, created_at, expires_at, revoked_at, policy, cert_ttl)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL, ?9, ?10) ON CONFLICT (id) DO NOTHING",
                )
                .map_err(unavailable)?
                .execute(params![
                    t.id,
                    t.secret_hash,
                    t.role.as_str(),
                    t.name,
                    t.max_uses,
                    t.uses,
                    t.created_at.unix_timestamp(),
                    t.expires_at.unix_timestamp(),
                    policy,
                    t.cert_ttl.map(secs),
                ])
                .map_err(unavailable)?;
            if inserted == 0 {
                return Err(StoreError::Conflict(format!("token {}", t.id)));
            }
            insert_audit(tx, audit)?;
        }
        Write::RevokeToken(id, audit) => {
            let n = tx
                .execute(
                    "UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                    params![id, audit.at.unix_timestamp()],
                )
                .map_err(unavailable)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("token {id}")));
            }
            insert_audit(tx, audit)?;
        }
        Write::Issuance(issuance) => apply_issuance(tx, issuance)?,
        Write::Revoke {
            target,
            at,
            reason,
            actor,
        } => return revoke(tx, target, *at, reason, actor).map(Outcome::Serials),
        Write::Engine {
            name,
            endpoint,
            audit,
        } => {
            tx.execute(
                "INSERT INTO nodes (name, endpoint, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET endpoint = excluded.endpoint, updated_at = excluded.updated_at",
                params![name, endpoint, audit.at.unix_timestamp()],
            )
            .map_err(unavailable)?;
            insert_audit(tx, audit)?;
        }
    }
    Ok(Outcome::Done)
}

fn apply_issuance(tx: &rusqlite::Savepoint<'_>, issuance: &Issuance) -> Result<(), StoreError> {
    let at = issuance.at.unix_timestamp();
    if let Some(id) = &issuance.token_id {
        let row: Option<(u32, u32, i64, Option<i64>)> = tx
            .prepare_cached(
                "SELECT uses, max_uses, expires_at, revoked_at FROM tokens WHERE id = ?1",
            )
            .map_err(unavailable)?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .optional()
            .map_err(unavailable)?;
        let (uses, max_uses, expires_at, revoked_at) = row.ok_or(StoreError::TokenUnknown)?;
        if revoked_at.is_some() {
            return Err(StoreError::TokenRevoked);
        }
        if expires_at <= at {
            return Err(StoreError::TokenExpired(
                columns::time(expires_at).map_err(StoreError::Corrupt)?,
            ));
        }
        if uses >= max_uses {
            return Err(StoreError::TokenUsedUp);
        }
        tx.prepare_cached("UPDATE tokens SET uses = uses + 1 WHERE id = ?1")
            .map_err(unavailable)?
            .execute([id])
            .map_err(unavailable)?;
    }
    let c = &issuance.cert;
    let serial = c.summary.serial.to_string();
    if let Some(old) = &issuance.renewal_of {
        let old = old.to_string();
        let revoked: Option<Option<i64>> = tx
            .prepare_cached("SELECT revoked_at FROM certificates WHERE serial = ?1")
            .map_err(unavailable)?
            .query_row([&old], |r| r.get(0))
            .optional()
            .map_err(unavailable)?;
        match revoked {
            None => return Err(StoreError::NotFound(format!("certificate {old}"))),
            Some(Some(_)) => return Err(StoreError::CertRevoked(parse_serial(&old)?)),
            Some(None) => {}
        }
        tx.prepare_cached("UPDATE certificates SET renewed_by = ?2 WHERE serial = ?1")
            .map_err(unavailable)?
            .execute([&old, &serial])
            .map_err(unavailable)?;
    }
    let policy =
        serde_json::to_string(&c.policy).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let id = &c.summary.identity;
    tx.prepare_cached(
        "INSERT INTO certificates (serial, identity, role, name, dns, ips, not_before, not_after, der,
                                   token_id, renewed_from, renewed_by, policy, issued_at, revoked_at, revocation_reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, NULL, ?12, ?13, NULL, NULL)",
    )
    .map_err(unavailable)?
    .execute(params![
        serial,
        id.uri(),
        id.role.as_str(),
        id.name,
        columns::join(&c.summary.dns_names),
        columns::join(&c.summary.ip_addresses),
        c.summary.not_before.unix_timestamp(),
        c.summary.not_after.unix_timestamp(),
        c.der,
        c.token_id,
        c.renewed_from.as_ref().map(ToString::to_string),
        policy,
        c.issued_at.unix_timestamp(),
    ])
    .map_err(|e| match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            StoreError::Conflict(format!("certificate {serial}"))
        }
        other => unavailable(other),
    })?;
    for entry in &issuance.audit {
        insert_audit(tx, entry)?;
    }
    Ok(())
}

fn revoke(
    tx: &rusqlite::Savepoint<'_>,
    target: &RevokeTarget,
    at: OffsetDateTime,
    reason: &str,
    actor: &str,
) -> Result<Vec<Serial>, StoreError> {
    let at_secs = at.unix_timestamp();
    let serials: Vec<String> = match target {
        RevokeTarget::Serial(serial) => {
            let serial = serial.to_string();
            let exists: Option<Option<i64>> = tx
                .query_row(
                    "SELECT revoked_at FROM certificates WHERE serial = ?1",
                    [&serial],
                    |r| r.get(0),
                )
                .optional()
                .map_err(unavailable)?;
            match exists {
                None => return Err(StoreError::NotFound(format!("certificate {serial}"))),
                Some(Some(_)) => Vec::new(),
                Some(None) => {
                    tx.execute(
                        "UPDATE certificates SET revoked_at = ?2, revocation_reason = ?3 WHERE serial = ?1",
                        params![serial, at_secs, reason],
                    )
                    .map_err(unavailable)?;
                    vec![serial]
                }
            }
        }
        RevokeTarget::Name { name, role } => {
            let mut stmt = tx
                .prepare(
                    "UPDATE certificates SET revoked_at = ?2, revocation_reason = ?3
                     WHERE name = ?1 AND role != 'ca' AND (?4 IS NULL OR role = ?4)
                       AND revoked_at IS NULL AND not_after > ?2 RETURNING serial",
                )
                .map_err(unavailable)?;
            let role = role.map(|r| r.as_str());
            let rows = stmt
                .query_map(params![name, at_secs, reason, role], |r| {
                    r.get::<_, String>(0)
                })
                .map_err(unavailable)?;
            rows.collect::<Result<_, _>>().map_err(unavailable)?
        }
    };
    let mut out = Vec::with_capacity(serials.len());
    for serial in serials {
        insert_audit(
            tx,
            &AuditEntry::new(
                at,
                AuditKind::Revoke,
                actor,
                serial.clone(),
                reason.to_string(),
            ),
        )?;
        out.push(parse_serial(&serial)?);
    }
    Ok(out)
}

fn insert_audit(tx: &rusqlite::Savepoint<'_>, entry: &AuditEntry) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO audit (at, kind, actor, subject, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .map_err(unavailable)?
    .execute(params![
        entry.at.unix_timestamp(),
        entry.kind,
        entry.actor,
        entry.subject,
        entry.detail
    ])
    .map_err(unavailable)?;
    Ok(())
}

#[derive(Debug)]
struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    fn take(&self) -> Result<Connection, StoreError> {
        let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
        match idle {
            Some(conn) => Ok(conn),
            None => open_connection(&self.path),
        }
    }

    fn put(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < 16
        {
            idle.push(conn);
        }
    }
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(unavailable)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(unavailable)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Unavailable(format!(
            "the database has schema version {version}, newer than this ca-server ({SCHEMA_VERSION}); upgrade ca-server"
        )));
    }
    let tx = conn.transaction().map_err(unavailable)?;
    tx.execute_batch(SCHEMA).map_err(unavailable)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(unavailable)?;
    tx.commit().map_err(unavailable)
}

fn token_from_row(row: &Row<'_>) -> rusqlite::Result<Result<TokenRecord, StoreError>> {
    let role: String = row.get("role")?;
    let policy: String = row.get("policy")?;
    let created: i64 = row.get("created_at")?;
    let expires: i64 = row.get("expires_at")?;
    let revoked: Option<i64> = row.get("revoked_at")?;
    let ttl: Option<i64> = row.get("cert_ttl")?;
    let id: String = row.get("id")?;
    let secret_hash: Vec<u8> = row.get("secret_hash")?;
    let name: Option<String> = row.get("name")?;
    let max_uses: u32 = row.get("max_uses")?;
    let uses: u32 = row.get("uses")?;
    Ok((|| {
        Ok(TokenRecord {
            id,
            secret_hash,
            role: role
                .parse()
                .map_err(|e: dtca_pki::identity::IdentityError| {
                    StoreError::Corrupt(e.to_string())
                })?,
            name,
            max_uses,
            uses,
            created_at: columns::time(created).map_err(StoreError::Corrupt)?,
            expires_at: columns::time(expires).map_err(StoreError::Corrupt)?,
            revoked_at: revoked
                .map(columns::time)
                .transpose()
                .map_err(StoreError::Corrupt)?,
            policy: serde_json::from_str(&policy)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            cert_ttl: ttl.map(|s| std::time::Duration::from_secs(u64::try_from(s).unwrap_or(0))),
        })
    })())
}

fn summary_from_row(row: &Row<'_>) -> rusqlite::Result<Result<CertSummary, StoreError>> {
    let serial: String = row.get(0)?;
    let identity: String = row.get(1)?;
    let dns: String = row.get(2)?;
    let ips: String = row.get(3)?;
    let not_before: i64 = row.get(4)?;
    let not_after: i64 = row.get(5)?;
    let revoked_at: Option<i64> = row.get(6)?;
    let renewed_by: Option<String> = row.get(7)?;
    Ok((|| {
        Ok(CertSummary {
            serial: parse_serial(&serial)?,
            identity: Identity::from_uri(&identity)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            dns_names: columns::dns(&dns),
            ip_addresses: columns::ips(&ips).map_err(StoreError::Corrupt)?,
            not_before: columns::time(not_before).map_err(StoreError::Corrupt)?,
            not_after: columns::time(not_after).map_err(StoreError::Corrupt)?,
            revoked_at: revoked_at
                .map(columns::time)
                .transpose()
                .map_err(StoreError::Corrupt)?,
            renewed_by: renewed_by.as_deref().map(parse_serial).transpose()?,
        })
    })())
}

fn record_from_row(row: &Row<'_>) -> rusqlite::Result<Result<CertRecord, StoreError>> {
    let summary = summary_from_row(row)?;
    let der: Vec<u8> = row.get(8)?;
    let token_id: Option<String> = row.get(9)?;
    let renewed_from: Option<String> = row.get(10)?;
    let policy: String = row.get(11)?;
    let issued_at: i64 = row.get(12)?;
    let revocation_reason: Option<String> = row.get(13)?;
    Ok((|| {
        Ok(CertRecord {
            summary: summary?,
            der,
            token_id,
            renewed_from: renewed_from.as_deref().map(parse_serial).transpose()?,
            policy: serde_json::from_str::<SanPolicy>(&policy)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            issued_at: columns::time(issued_at).map_err(StoreError::Corrupt)?,
            revocation_reason,
        })
    })())
}

fn parse_serial(text: &str) -> Result<Serial, StoreError> {
    text.parse()
        .map_err(|e: dtca_pki::serial::SerialError| StoreError::Corrupt(e.to_string()))
}

fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

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
