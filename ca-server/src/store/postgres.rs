//! The PostgreSQL store, for several `ca-server` replicas behind one address.
//!
//! Same semantics as the embedded store, and the same group commit: writes go to a shared
//! queue drained by a few writer tasks, each with its own connection; a writer applies
//! whatever has queued up as one transaction (each write in its own savepoint, so one
//! refused write does not undo the others) and commits once. Several writers mean one
//! batch is being committed while the next one forms.
//!
//! Replicas never coordinate outside the database:
//! - a token use is consumed by a conditional `UPDATE ... WHERE uses < max_uses AND ...`
//!   whose row count decides, so a single-use token is spent once across replicas (the
//!   row lock makes a concurrent enrollment wait, then re-check, then fail);
//! - nothing is cached: every read goes to the database, so a revocation committed by one
//!   replica is seen by the next call on any other, and `record_issuance` re-checks it in
//!   its own transaction;
//! - serial numbers are random, so inserts never collide;
//! - the schema is migrated at start under a transaction-scoped advisory lock, so
//!   replicas starting together apply it once.
//!
//! When the database is down every call fails at once with [`StoreError::Unavailable`];
//! connections are opened again on the next call, so the server recovers by itself when
//! the database returns.
//!
//! Layout: this file (the store, its reads and its writer tasks), [`schema`] (tables and
//! migrations), [`import`] (copying another store in, for `ca-server store migrate`).
//!
//! Not done here: TLS to the database (run PostgreSQL on loopback or a trusted network,
//! or through a TLS tunnel), connection strings other than `postgres://` URLs.

mod import;
mod schema;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use dtca_pki::Serial;
use dtca_pki::identity::Identity;
use time::OffsetDateTime;
use tokio::sync::{Semaphore, SemaphorePermit, mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row, Statement};

pub use import::{Counts, ImportError};

use super::columns;
use super::{
    AuditEntry, AuditKind, CertQuery, CertRecord, CertSummary, EngineRecord, Issuance, NodeRecord,
    RevokeTarget, Store, StoreError, TokenRecord,
};

/// Writer tasks, each with its own connection.
const WRITERS: usize = 4;
/// Most writes applied in one transaction.
const MAX_BATCH: usize = 512;
/// Writes that may wait for a writer before callers are held back.
const QUEUE: usize = 8192;
/// Read connections open at most.
const READERS: usize = 16;
/// How long opening a connection may take, unless the URL says (`connect_timeout=`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one read or one batch may take before the connection is given up.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(20);
/// Rounds a batch is retried for writes that hit a deadlock or serialization failure.
const RETRY_ROUNDS: usize = 4;

const SUMMARY_COLUMNS: &str =
    "serial, identity, dns, ips, not_before, not_after, revoked_at, renewed_by";

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    writer: mpsc::Sender<Job>,
    readers: Arc<Readers>,
}

impl PostgresStore {
    /// Checks a database URL (`postgres://user:password@host:port/dbname?options`).
    ///
    /// # Errors
    /// A message for the user (without the password) when it is not a usable URL.
    pub fn parse_url(url: &str) -> Result<Config, String> {
        let redacted = redact(url);
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(format!(
                "database {redacted:?}: use a PostgreSQL URL, postgres://USER:PASSWORD@HOST:PORT/DBNAME (omit it for the embedded store)"
            ));
        }
        let mut config: Config = url
            .parse()
            .map_err(|e| format!("database {redacted:?}: {}", describe(&e)))?;
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err(format!(
                "database {redacted:?}: sslmode=require is not supported by this build; reach PostgreSQL over loopback, a trusted network or a TLS tunnel"
            ));
        }
        if config.get_hosts().is_empty() {
            return Err(format!("database {redacted:?}: the URL names no host"));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("ca-server");
        }
        Ok(config)
    }

    /// Connects, applies the schema migrations, and starts the writer tasks (on the
    /// current Tokio runtime).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database cannot be reached or migrated, or
    /// holds a schema newer than this ca-server.
    pub async fn connect(config: Config) -> Result<Self, StoreError> {
        let config = Arc::new(config);
        let mut conn = Conn::open(&config).await.map_err(unavailable)?;
        schema::migrate(&mut conn).await?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let queue = Arc::new(tokio::sync::Mutex::new(rx));
        let mut first = Some(conn);
        for _ in 0..WRITERS {
            tokio::spawn(writer_loop(config.clone(), queue.clone(), first.take()));
        }
        Ok(PostgresStore {
            writer: tx,
            readers: Arc::new(Readers {
                config,
                idle: Mutex::new(Vec::new()),
                permits: Semaphore::new(READERS),
            }),
        })
    }

    /// How many records each table holds.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn counts(&self) -> Result<Counts, StoreError> {
        within(async {
            let mut c = self.readers.take().await?;
            import::count(&mut c).await.map_err(unavailable)
        })
        .await
    }

    /// Copies every record of `source` into this database, which must be empty, in one
    /// transaction, and checks the copy by counting again. See [`import`].
    ///
    /// # Errors
    /// [`ImportError`]: the target is not empty, the source changed during the copy, a
    /// count does not match, or a database failed.
    pub async fn import_from(&self, source: &dyn Store) -> Result<Counts, ImportError> {
        let mut conn = Conn::open(&self.readers.config)
            .await
            .map_err(|e| ImportError::Target(unavailable(e)))?;
        import::run(&mut conn, source).await
    }

    async fn write(&self, write: Write) -> Result<Outcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Job { write, reply })
            .await
            .map_err(|_| StoreError::Unavailable("the writer tasks have stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the writer tasks have stopped".into()))?
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        within(async {
            let mut c = self.readers.take().await?;
            c.query("SELECT 1", &[]).await.map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn insert_token(&self, token: TokenRecord, audit: AuditEntry) -> Result<(), StoreError> {
        self.write(Write::Token(token, audit)).await.map(|_| ())
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        within(async {
            let mut c = self.readers.take().await?;
            let rows = c
                .query(
                    &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = $1"),
                    &[&id],
                )
                .await
                .map_err(unavailable)?;
            rows.first().map(token_from_row).transpose()
        })
        .await
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        within(async {
            let mut c = self.readers.take().await?;
            let rows = c
                .query(
                    &format!(
                        "SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_at DESC, seq DESC"
                    ),
                    &[],
                )
                .await
                .map_err(unavailable)?;
            rows.iter().map(token_from_row).collect()
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
        within(async {
            let mut c = self.readers.take().await?;
            let rows = c
                .query(
                    &format!(
                        "SELECT {SUMMARY_COLUMNS}, der, token_id, renewed_from, policy, issued_at, revocation_reason
                         FROM certificates WHERE serial = $1"
                    ),
                    &[&serial],
                )
                .await
                .map_err(unavailable)?;
            rows.first().map(record_from_row).transpose()
        })
        .await
    }

    async fn certificates(&self, query: &CertQuery) -> Result<Vec<CertSummary>, StoreError> {
        let now = query.now.unix_timestamp();
        let limit = query.limit.map(i64::from);
        let role = query.role.map(|r| r.as_str().to_string());
        let bound = now.saturating_add(query.expiring_within.map(secs).unwrap_or(0));
        // $1 role (NULL: any), $2 limit (NULL: none), then the filter's own.
        let (filter, extra): (&str, Vec<i64>) = match query.expiring_within {
            Some(_) => (
                "revoked_at IS NULL AND renewed_by IS NULL AND not_after > $3 AND not_after <= $4",
                vec![now, bound],
            ),
            None if query.include_inactive => ("TRUE", vec![]),
            None => ("revoked_at IS NULL AND not_after > $3", vec![now]),
        };
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS} FROM certificates
             WHERE {filter} AND ($1::text IS NULL OR role = $1)
             ORDER BY not_after, serial LIMIT $2"
        );
        within(async {
            let mut c = self.readers.take().await?;
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&role, &limit];
            params.extend(extra.iter().map(|v| v as &(dyn ToSql + Sync)));
            let rows = c.query(&sql, &params).await.map_err(unavailable)?;
            rows.iter().map(summary_from_row).collect()
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
        within(async {
            let mut c = self.readers.take().await?;
            let rows = c
                .query(
                    "SELECT serial, revoked_at FROM certificates
                     WHERE revoked_at IS NOT NULL AND not_after > $1 ORDER BY revoked_at, serial",
                    &[&now.unix_timestamp()],
                )
                .await
                .map_err(unavailable)?;
            rows.iter()
                .map(|r| {
                    let serial: String = r.try_get(0).map_err(corrupt)?;
                    let at: i64 = r.try_get(1).map_err(corrupt)?;
                    Ok((parse_serial(&serial)?, time_of(at)?))
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
        within(async {
            let mut c = self.readers.take().await?;
            let rows = c
                .query(
                    "SELECT DISTINCT ON (c.name)
                            c.serial, c.identity, c.dns, c.ips, c.not_before, c.not_after,
                            c.revoked_at, c.renewed_by, c.name, n.endpoint
                     FROM certificates c LEFT JOIN nodes n ON n.name = c.name
                     WHERE c.role = 'node' AND c.revoked_at IS NULL AND c.renewed_by IS NULL
                           AND c.not_after > $1
                     ORDER BY c.name, c.not_after DESC",
                    &[&now.unix_timestamp()],
                )
                .await
                .map_err(unavailable)?;
            rows.iter()
                .map(|r| {
                    Ok(NodeRecord {
                        cert: summary_from_row(r)?,
                        name: r.try_get(8).map_err(corrupt)?,
                        endpoint: r.try_get(9).map_err(corrupt)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn engines(&self) -> Result<Vec<EngineRecord>, StoreError> {
        within(async {
            let mut c = self.readers.take().await?;
            let rows = c
                .query(
                    "SELECT name, endpoint, updated_at FROM nodes ORDER BY name",
                    &[],
                )
                .await
                .map_err(unavailable)?;
            rows.iter()
                .map(|r| {
                    Ok(EngineRecord {
                        name: r.try_get(0).map_err(corrupt)?,
                        endpoint: r.try_get(1).map_err(corrupt)?,
                        updated_at: time_of(r.try_get(2).map_err(corrupt)?)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn audit(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        within(async {
            let mut c = self.readers.take().await?;
            let rows = c
                .query(
                    "SELECT at, kind, actor, subject, detail FROM audit ORDER BY id DESC LIMIT $1",
                    &[&i64::from(limit)],
                )
                .await
                .map_err(unavailable)?;
            rows.iter()
                .map(|r| {
                    Ok(AuditEntry {
                        at: time_of(r.try_get(0).map_err(corrupt)?)?,
                        kind: r.try_get(1).map_err(corrupt)?,
                        actor: r.try_get(2).map_err(corrupt)?,
                        subject: r.try_get(3).map_err(corrupt)?,
                        detail: r.try_get(4).map_err(corrupt)?,
                    })
                })
                .collect()
        })
        .await
    }
}

/// One connection with its prepared statements.
struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
    /// Set while a call is on the wire, so a connection whose call was abandoned (timed
    /// out, cancelled) is not reused with an answer still pending.
    busy: bool,
}

impl Conn {
    async fn open(config: &Config) -> Result<Conn, tokio_postgres::Error> {
        let (client, connection) = config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %describe(&e), "PostgreSQL connection closed");
            }
        });
        Ok(Conn {
            client,
            statements: HashMap::new(),
            busy: false,
        })
    }

    fn usable(&self) -> bool {
        !self.busy && !self.client.is_closed()
    }

    async fn statement(&mut self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        self.busy = true;
        let s = self.client.prepare(sql).await;
        self.busy = false;
        let s = s?;
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    async fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.busy = true;
        let rows = self.client.query(&statement, params).await;
        self.busy = false;
        rows
    }

    async fn execute(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.busy = true;
        let n = self.client.execute(&statement, params).await;
        self.busy = false;
        n
    }

    /// Runs plain SQL (transaction control, DDL): no parameters, no rows.
    async fn batch(&mut self, sql: &str) -> Result<(), tokio_postgres::Error> {
        self.busy = true;
        let done = self.client.batch_execute(sql).await;
        self.busy = false;
        done
    }
}

/// Read connections: opened on demand, kept while healthy.
#[derive(Debug)]
struct Readers {
    config: Arc<Config>,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Conn")
    }
}

impl Readers {
    async fn take(&self) -> Result<Reader<'_>, StoreError> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
        let idle = loop {
            let next = self.idle.lock().ok().and_then(|mut v| v.pop());
            match next {
                Some(c) if c.usable() => break Some(c),
                Some(_) => continue,
                None => break None,
            }
        };
        let conn = match idle {
            Some(c) => c,
            None => Conn::open(&self.config).await.map_err(unavailable)?,
        };
        Ok(Reader {
            readers: self,
            conn: Some(conn),
            _permit: permit,
        })
    }
}

/// A read connection on loan; back to the pool on drop when still usable.
struct Reader<'a> {
    readers: &'a Readers,
    conn: Option<Conn>,
    _permit: SemaphorePermit<'a>,
}

impl std::ops::Deref for Reader<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn
            .as_ref()
            .unwrap_or_else(|| unreachable!("taken only on drop"))
    }
}

impl std::ops::DerefMut for Reader<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn
            .as_mut()
            .unwrap_or_else(|| unreachable!("taken only on drop"))
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && conn.usable()
            && let Ok(mut idle) = self.readers.idle.lock()
        {
            idle.push(conn);
        }
    }
}

/// Bounds one read: a database that stopped answering fails the call instead of hanging.
async fn within<T>(f: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    tokio::time::timeout(OPERATION_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "PostgreSQL did not answer within {}s",
                OPERATION_TIMEOUT.as_secs()
            )))
        })
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

impl Write {
    /// The row a write locks first, as (table rank, key): a batch is applied in this order
    /// so that concurrent batches (other writers, other replicas) take row locks in the
    /// same order and do not deadlock. Writes in one batch are concurrent requests, so
    /// any order is a valid one.
    fn lock_key(&self) -> (u8, String) {
        match self {
            Write::Token(t, _) => (0, t.id.clone()),
            Write::RevokeToken(id, _) => (0, id.clone()),
            Write::Issuance(i) => match (&i.token_id, &i.renewal_of) {
                (Some(id), _) => (0, id.clone()),
                (None, Some(old)) => (1, old.to_string()),
                (None, None) => (1, i.cert.summary.serial.to_string()),
            },
            Write::Revoke {
                target: RevokeTarget::Serial(s),
                ..
            } => (1, s.to_string()),
            Write::Revoke {
                target: RevokeTarget::Name(n),
                ..
            } => (2, n.clone()),
            Write::Engine { name, .. } => (3, name.clone()),
        }
    }
}

enum Outcome {
    Done,
    Serials(Vec<Serial>),
}

struct Job {
    write: Write,
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

/// Why one write in a batch did not apply.
enum WriteFail {
    /// A refusal or failure to report.
    Store(StoreError),
    /// A deadlock or serialization failure: apply it again in a later transaction.
    Retry(String),
}

impl From<StoreError> for WriteFail {
    fn from(e: StoreError) -> Self {
        WriteFail::Store(e)
    }
}

impl From<tokio_postgres::Error> for WriteFail {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.code() {
            Some(c)
                if *c == SqlState::T_R_DEADLOCK_DETECTED
                    || *c == SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == SqlState::LOCK_NOT_AVAILABLE =>
            {
                WriteFail::Retry(describe(&e))
            }
            _ => WriteFail::Store(unavailable(e)),
        }
    }
}

/// A batch that failed as a whole; `begun` tells whether anything reached the database.
struct BatchFail {
    begun: bool,
    error: StoreError,
}

async fn writer_loop(
    config: Arc<Config>,
    queue: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
    mut conn: Option<Conn>,
) {
    loop {
        let mut batch = {
            let mut rx = queue.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            batch
        };
        batch.sort_by_cached_key(|j| j.write.lock_key());
        let results = apply_with_retries(&config, &mut conn, &batch).await;
        for (job, result) in batch.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
    }
}

/// Applies a batch, again for the writes that hit a deadlock, with a fresh connection
/// when the one held went stale while idle (the database restarted).
async fn apply_with_retries(
    config: &Config,
    conn: &mut Option<Conn>,
    batch: &[Job],
) -> Vec<Result<Outcome, StoreError>> {
    let mut results: Vec<Option<Result<Outcome, StoreError>>> =
        batch.iter().map(|_| None).collect();
    let mut pending: Vec<usize> = (0..batch.len()).collect();
    let mut round = 0;
    let mut reconnected = false;
    while !pending.is_empty() {
        round += 1;
        let fresh = !conn.as_ref().is_some_and(Conn::usable);
        if fresh {
            *conn = None;
            match Conn::open(config).await {
                Ok(c) => *conn = Some(c),
                Err(e) => {
                    let e = unavailable(e);
                    for i in pending.drain(..) {
                        results[i] = Some(Err(e.clone()));
                    }
                    break;
                }
            }
        }
        let Some(c) = conn.as_mut() else { break };
        let writes: Vec<&Write> = pending.iter().map(|&i| &batch[i].write).collect();
        let outcome = match tokio::time::timeout(OPERATION_TIMEOUT, apply_batch(c, &writes)).await {
            Ok(r) => r,
            Err(_) => Err(BatchFail {
                begun: true,
                error: StoreError::Unavailable(format!(
                    "PostgreSQL did not commit within {}s",
                    OPERATION_TIMEOUT.as_secs()
                )),
            }),
        };
        match outcome {
            Ok(applied) => {
                let mut again = Vec::new();
                for (i, r) in pending.iter().copied().zip(applied) {
                    match r {
                        Ok(o) => results[i] = Some(Ok(o)),
                        Err(WriteFail::Store(e)) => results[i] = Some(Err(e)),
                        Err(WriteFail::Retry(why)) if round < RETRY_ROUNDS => {
                            tracing::debug!(%why, "write retried");
                            again.push(i);
                        }
                        Err(WriteFail::Retry(why)) => {
                            results[i] = Some(Err(StoreError::Unavailable(why)));
                        }
                    }
                }
                pending = again;
            }
            Err(BatchFail { begun, error }) => {
                *conn = None;
                // A connection that died while idle failed before anything was sent:
                // safe to try once more on a new one.
                if !begun && !fresh && !reconnected {
                    reconnected = true;
                    continue;
                }
                for i in pending.drain(..) {
                    results[i] = Some(Err(error.clone()));
                }
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(StoreError::Unavailable("write not applied".into()))))
        .collect()
}

/// One transaction: each write in a savepoint, one commit. The per-write results count
/// only if the commit succeeds, so any failure of the transaction fails the whole batch.
async fn apply_batch(
    conn: &mut Conn,
    writes: &[&Write],
) -> Result<Vec<Result<Outcome, WriteFail>>, BatchFail> {
    let fail = |begun: bool| {
        move |e: tokio_postgres::Error| BatchFail {
            begun,
            error: unavailable(e),
        }
    };
    conn.batch("BEGIN").await.map_err(fail(false))?;
    let mut results = Vec::with_capacity(writes.len());
    for write in writes {
        conn.batch("SAVEPOINT w").await.map_err(fail(true))?;
        match apply(conn, write).await {
            Ok(outcome) => {
                conn.batch("RELEASE SAVEPOINT w")
                    .await
                    .map_err(fail(true))?;
                results.push(Ok(outcome));
            }
            Err(e) => {
                conn.batch("ROLLBACK TO SAVEPOINT w; RELEASE SAVEPOINT w")
                    .await
                    .map_err(fail(true))?;
                results.push(Err(e));
            }
        }
    }
    conn.batch("COMMIT").await.map_err(fail(true))?;
    Ok(results)
}

async fn apply(conn: &mut Conn, write: &Write) -> Result<Outcome, WriteFail> {
    match write {
        Write::Token(t, audit) => {
            let policy =
                serde_json::to_string(&t.policy).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let inserted = conn
                .execute(
                    "INSERT INTO tokens (id, secret_hash, role, name, max_uses, uses, created_at,
                                         expires_at, revoked_at, policy, cert_ttl)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, $9, $10)
                     ON CONFLICT (id) DO NOTHING",
                    &[
                        &t.id,
                        &t.secret_hash,
                        &t.role.as_str(),
                        &t.name,
                        &i64::from(t.max_uses),
                        &i64::from(t.uses),
                        &t.created_at.unix_timestamp(),
                        &t.expires_at.unix_timestamp(),
                        &policy,
                        &t.cert_ttl.map(secs),
                    ],
                )
                .await?;
            if inserted == 0 {
                return Err(StoreError::Conflict(format!("token {}", t.id)).into());
            }
            insert_audit(conn, std::slice::from_ref(audit)).await?;
        }
        Write::RevokeToken(id, audit) => {
            let n = conn
                .execute(
                    "UPDATE tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
                    &[id, &audit.at.unix_timestamp()],
                )
                .await?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("token {id}")).into());
            }
            insert_audit(conn, std::slice::from_ref(audit)).await?;
        }
        Write::Issuance(issuance) => apply_issuance(conn, issuance).await?,
        Write::Revoke {
            target,
            at,
            reason,
            actor,
        } => {
            return revoke(conn, target, *at, reason, actor)
                .await
                .map(Outcome::Serials);
        }
        Write::Engine {
            name,
            endpoint,
            audit,
        } => {
            conn.execute(
                "INSERT INTO nodes (name, endpoint, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET endpoint = excluded.endpoint,
                                                  updated_at = excluded.updated_at",
                &[name, endpoint, &audit.at.unix_timestamp()],
            )
            .await?;
            insert_audit(conn, std::slice::from_ref(audit)).await?;
        }
    }
    Ok(Outcome::Done)
}

async fn apply_issuance(conn: &mut Conn, issuance: &Issuance) -> Result<(), WriteFail> {
    let at = issuance.at.unix_timestamp();
    if let Some(id) = &issuance.token_id {
        // The row count decides: a concurrent enrollment on another connection holds the
        // row lock until it commits, and this one then re-checks the updated row.
        let consumed = conn
            .execute(
                "UPDATE tokens SET uses = uses + 1
                 WHERE id = $1 AND uses < max_uses AND revoked_at IS NULL AND expires_at > $2",
                &[id, &at],
            )
            .await?;
        if consumed == 0 {
            return Err(why_token_refused(conn, id, at).await?.into());
        }
    }
    let c = &issuance.cert;
    let serial = c.summary.serial.to_string();
    if let Some(old) = &issuance.renewal_of {
        let old = old.to_string();
        let superseded = conn
            .execute(
                "UPDATE certificates SET renewed_by = $2 WHERE serial = $1 AND revoked_at IS NULL",
                &[&old, &serial],
            )
            .await?;
        if superseded == 0 {
            let rows = conn
                .query("SELECT 1 FROM certificates WHERE serial = $1", &[&old])
                .await?;
            return Err(if rows.is_empty() {
                StoreError::NotFound(format!("certificate {old}"))
            } else {
                StoreError::CertRevoked(parse_serial(&old)?)
            }
            .into());
        }
    }
    let policy =
        serde_json::to_string(&c.policy).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let id = &c.summary.identity;
    conn.execute(
        "INSERT INTO certificates (serial, identity, role, name, dns, ips, not_before, not_after,
                                   der, token_id, renewed_from, renewed_by, policy, issued_at,
                                   revoked_at, revocation_reason)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, $12, $13, NULL, NULL)",
        &[
            &serial,
            &id.uri(),
            &id.role.as_str(),
            &id.name,
            &columns::join(&c.summary.dns_names),
            &columns::join(&c.summary.ip_addresses),
            &c.summary.not_before.unix_timestamp(),
            &c.summary.not_after.unix_timestamp(),
            &c.der,
            &c.token_id,
            &c.renewed_from.as_ref().map(ToString::to_string),
            &policy,
            &c.issued_at.unix_timestamp(),
        ],
    )
    .await
    .map_err(|e| {
        if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
            WriteFail::Store(StoreError::Conflict(format!("certificate {serial}")))
        } else {
            WriteFail::from(e)
        }
    })?;
    insert_audit(conn, &issuance.audit).await?;
    Ok(())
}

/// Says which check a token failed (the conditional update matched nothing). Uses only
/// grow and revocations are final, so what this reads is at least as strict as what the
/// update saw.
async fn why_token_refused(conn: &mut Conn, id: &str, at: i64) -> Result<StoreError, WriteFail> {
    let rows = conn
        .query(
            "SELECT uses, max_uses, expires_at, revoked_at FROM tokens WHERE id = $1",
            &[&id],
        )
        .await?;
    let Some(row) = rows.first() else {
        return Ok(StoreError::TokenUnknown);
    };
    let expires_at: i64 = row.try_get(2).map_err(corrupt)?;
    let revoked_at: Option<i64> = row.try_get(3).map_err(corrupt)?;
    Ok(if revoked_at.is_some() {
        StoreError::TokenRevoked
    } else if expires_at <= at {
        StoreError::TokenExpired(time_of(expires_at)?)
    } else {
        StoreError::TokenUsedUp
    })
}

async fn revoke(
    conn: &mut Conn,
    target: &RevokeTarget,
    at: OffsetDateTime,
    reason: &str,
    actor: &str,
) -> Result<Vec<Serial>, WriteFail> {
    let at_secs = at.unix_timestamp();
    let serials: Vec<String> = match target {
        RevokeTarget::Serial(serial) => {
            let serial = serial.to_string();
            let rows = conn
                .query(
                    "UPDATE certificates SET revoked_at = $2, revocation_reason = $3
                     WHERE serial = $1 AND revoked_at IS NULL RETURNING serial",
                    &[&serial, &at_secs, &reason],
                )
                .await?;
            if rows.is_empty() {
                let exists = conn
                    .query("SELECT 1 FROM certificates WHERE serial = $1", &[&serial])
                    .await?;
                if exists.is_empty() {
                    return Err(StoreError::NotFound(format!("certificate {serial}")).into());
                }
                Vec::new()
            } else {
                vec![serial]
            }
        }
        RevokeTarget::Name(name) => conn
            .query(
                "UPDATE certificates SET revoked_at = $2, revocation_reason = $3
                 WHERE name = $1 AND role <> 'ca' AND revoked_at IS NULL AND not_after > $2
                 RETURNING serial",
                &[name, &at_secs, &reason],
            )
            .await?
            .iter()
            .map(|r| r.try_get(0).map_err(corrupt))
            .collect::<Result<_, _>>()?,
    };
    let entries: Vec<AuditEntry> = serials
        .iter()
        .map(|s| AuditEntry::new(at, AuditKind::Revoke, actor, s.clone(), reason.to_string()))
        .collect();
    insert_audit(conn, &entries).await?;
    Ok(serials
        .iter()
        .map(|s| parse_serial(s))
        .collect::<Result<_, _>>()?)
}

/// Appends entries to the audit log in one statement, in their order.
async fn insert_audit(
    conn: &mut Conn,
    entries: &[AuditEntry],
) -> Result<(), tokio_postgres::Error> {
    if entries.is_empty() {
        return Ok(());
    }
    let at: Vec<i64> = entries.iter().map(|e| e.at.unix_timestamp()).collect();
    let kind: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
    let actor: Vec<&str> = entries.iter().map(|e| e.actor.as_str()).collect();
    let subject: Vec<&str> = entries.iter().map(|e| e.subject.as_str()).collect();
    let detail: Vec<&str> = entries.iter().map(|e| e.detail.as_str()).collect();
    conn.execute(
        "INSERT INTO audit (at, kind, actor, subject, detail)
         SELECT at, kind, actor, subject, detail
         FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[])
              WITH ORDINALITY AS e(at, kind, actor, subject, detail, n)
         ORDER BY n",
        &[&at, &kind, &actor, &subject, &detail],
    )
    .await?;
    Ok(())
}

const TOKEN_COLUMNS: &str = "id, secret_hash, role, name, max_uses, uses, created_at, expires_at, revoked_at, policy, cert_ttl";

fn token_from_row(row: &Row) -> Result<TokenRecord, StoreError> {
    let role: String = row.try_get(2).map_err(corrupt)?;
    let policy: String = row.try_get(9).map_err(corrupt)?;
    let max_uses: i64 = row.try_get(4).map_err(corrupt)?;
    let uses: i64 = row.try_get(5).map_err(corrupt)?;
    let ttl: Option<i64> = row.try_get(10).map_err(corrupt)?;
    let revoked: Option<i64> = row.try_get(8).map_err(corrupt)?;
    Ok(TokenRecord {
        id: row.try_get(0).map_err(corrupt)?,
        secret_hash: row.try_get(1).map_err(corrupt)?,
        role: role
            .parse()
            .map_err(|e: dtca_pki::identity::IdentityError| StoreError::Corrupt(e.to_string()))?,
        name: row.try_get(3).map_err(corrupt)?,
        max_uses: u32::try_from(max_uses).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        uses: u32::try_from(uses).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        created_at: time_of(row.try_get(6).map_err(corrupt)?)?,
        expires_at: time_of(row.try_get(7).map_err(corrupt)?)?,
        revoked_at: revoked.map(time_of).transpose()?,
        policy: serde_json::from_str(&policy).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        cert_ttl: ttl.map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0))),
    })
}

fn summary_from_row(row: &Row) -> Result<CertSummary, StoreError> {
    let serial: String = row.try_get(0).map_err(corrupt)?;
    let identity: String = row.try_get(1).map_err(corrupt)?;
    let dns: String = row.try_get(2).map_err(corrupt)?;
    let ips: String = row.try_get(3).map_err(corrupt)?;
    let revoked_at: Option<i64> = row.try_get(6).map_err(corrupt)?;
    let renewed_by: Option<String> = row.try_get(7).map_err(corrupt)?;
    Ok(CertSummary {
        serial: parse_serial(&serial)?,
        identity: Identity::from_uri(&identity).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        dns_names: columns::dns(&dns),
        ip_addresses: columns::ips(&ips).map_err(StoreError::Corrupt)?,
        not_before: time_of(row.try_get(4).map_err(corrupt)?)?,
        not_after: time_of(row.try_get(5).map_err(corrupt)?)?,
        revoked_at: revoked_at.map(time_of).transpose()?,
        renewed_by: renewed_by.as_deref().map(parse_serial).transpose()?,
    })
}

fn record_from_row(row: &Row) -> Result<CertRecord, StoreError> {
    let renewed_from: Option<String> = row.try_get(10).map_err(corrupt)?;
    let policy: String = row.try_get(11).map_err(corrupt)?;
    Ok(CertRecord {
        summary: summary_from_row(row)?,
        der: row.try_get(8).map_err(corrupt)?,
        token_id: row.try_get(9).map_err(corrupt)?,
        renewed_from: renewed_from.as_deref().map(parse_serial).transpose()?,
        policy: serde_json::from_str(&policy).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        issued_at: time_of(row.try_get(12).map_err(corrupt)?)?,
        revocation_reason: row.try_get(13).map_err(corrupt)?,
    })
}

fn parse_serial(text: &str) -> Result<Serial, StoreError> {
    text.parse()
        .map_err(|e: dtca_pki::serial::SerialError| StoreError::Corrupt(e.to_string()))
}

fn time_of(secs: i64) -> Result<OffsetDateTime, StoreError> {
    columns::time(secs).map_err(StoreError::Corrupt)
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn corrupt(e: tokio_postgres::Error) -> StoreError {
    StoreError::Corrupt(describe(&e))
}

fn unavailable(e: tokio_postgres::Error) -> StoreError {
    StoreError::Unavailable(format!("PostgreSQL: {}", describe(&e)))
}

/// The error with its causes: tokio-postgres puts the useful part ("connection refused",
/// the server's message) in the source.
fn describe(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A URL fit for messages: the password replaced.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            if userinfo.contains(':') {
                format!("{user}:***@{host}")
            } else {
                format!("{user}@{host}")
            }
        }
        None => authority.to_string(),
    };
    let tail = if tail.contains("password=") {
        tail.split('&')
            .map(|kv| {
                if kv.trim_start_matches('?').starts_with("password=") {
                    if kv.starts_with('?') {
                        "?password=***"
                    } else {
                        "password=***"
                    }
                } else {
                    kv
                }
            })
            .collect::<Vec<_>>()
            .join("&")
    } else {
        tail.to_string()
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_in_urls() {
        assert_eq!(
            redact("postgres://dtca:s3cret@db.example.com:5432/dtca"),
            "postgres://dtca:***@db.example.com:5432/dtca"
        );
        assert_eq!(
            redact("postgres://dtca@db/dtca?password=s3cret&connect_timeout=3"),
            "postgres://dtca@db/dtca?password=***&connect_timeout=3"
        );
        assert_eq!(redact("postgres://db/dtca"), "postgres://db/dtca");
    }

    #[test]
    fn accepts_postgres_urls_and_refuses_others_without_echoing_the_password() {
        let config = PostgresStore::parse_url("postgres://u:pw@127.0.0.1:5433/dtca").unwrap();
        assert_eq!(config.get_dbname(), Some("dtca"));
        assert_eq!(config.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        let err = PostgresStore::parse_url("mysql://u:pw@host/db").unwrap_err();
        assert!(
            err.contains("PostgreSQL URL") && !err.contains("pw"),
            "{err}"
        );
        let err = PostgresStore::parse_url("postgres://u:pw@h/db?sslmode=require").unwrap_err();
        assert!(err.contains("sslmode") && !err.contains(":pw"), "{err}");
    }

    #[test]
    fn batches_take_row_locks_in_one_order() {
        let later = OffsetDateTime::now_utc();
        let t = |id: &str| {
            Write::RevokeToken(
                id.into(),
                AuditEntry::new(later, AuditKind::TokenRevoke, "a", id, ""),
            )
        };
        let mut writes = [t("b"), t("a"), t("c")];
        writes.sort_by_cached_key(Write::lock_key);
        let keys: Vec<String> = writes.iter().map(|w| w.lock_key().1).collect();
        assert_eq!(keys, ["a", "b", "c"]);
    }
}
