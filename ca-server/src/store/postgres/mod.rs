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
//! Layout: this file (the store and its reads), [`writer`] (the writer tasks), [`issue`]
//! (issuances, the hot path), [`failure`] (how a write in a batch fails), [`conn`]
//! (connections), [`rows`] (rows to records), [`schema`] (tables and migrations),
//! [`import`] (copying another store in, for `ca-server store migrate`), [`url`]
//! (checking and redacting database URLs).
//!
//! Not done here: TLS to the database (run PostgreSQL on loopback or a trusted network,
//! or through a TLS tunnel), connection strings other than `postgres://` URLs.

mod audit;
mod ca;
mod claims;
mod conn;
mod failure;
mod import;
mod issue;
mod reads;
mod rows;
mod schema;
mod slots;
mod url;
mod writer;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use dtca_pki::Serial;
use dtca_pki::identity::Role;
use time::OffsetDateTime;
use tokio::sync::{Semaphore, mpsc};
use tokio_postgres::Config;
use tokio_postgres::types::ToSql;

pub use import::{Counts, ImportError};
pub use url::redact;

/// The schema version this build reads and writes (the number of migrations).
pub fn schema_version() -> i32 {
    schema::current()
}

use audit::insert_audit;
use conn::{Conn, Readers, within};
use failure::{corrupt, describe, time_of, unavailable};
use rows::{SUMMARY_COLUMNS, TOKEN_COLUMNS, record_from_row, summary_from_row, token_from_row};
use writer::writer_loop;

use super::columns::{self, parse_serial, secs};
use super::queue::{self, Change, Job, Outcome, Write};
use super::{
    AgentRecord, AuditEntry, CaMaterial, CaUpdate, CertQuery, CertRecord, CertSummary,
    EngineRecord, Issuance, NodeRecord, RevokeTarget, Store, StoreError, TokenRecord,
};
use crate::restart::{Decision, RestartLimits, Slot, SlotRequest};

/// Writer tasks, each with its own connection.
const WRITERS: usize = 4;
/// Most writes applied in one transaction.
const MAX_BATCH: usize = 512;
/// Writes that may wait for a writer before callers are held back.
const QUEUE: usize = 8192;
/// Read connections open at most.
const READERS: usize = 16;
/// How long one read or one batch may take before the connection is given up.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(20);
/// Rounds a batch is retried for writes that hit a deadlock or serialization failure.
const RETRY_ROUNDS: usize = 4;

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
        url::parse(url)
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
        queue::submit(&self.writer, write, "the writer tasks have stopped").await
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
        self.write(Write::Change(Box::new(Change::Token(token, audit))))
            .await
            .map(|_| ())
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
        within(async {
            let mut c = self.readers.take().await?;
            let rows = c
                .query(
                    &format!(
                        "SELECT {SUMMARY_COLUMNS}, der, token_id, renewed_from, policy, issued_at, revocation_reason,
                                first_used_at
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
        // The name, when given, is the parameter after the filter's own.
        let by_name = match query.name {
            Some(_) => format!("name = ${}", 3 + extra.len()),
            None => "TRUE".to_string(),
        };
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS} FROM certificates
             WHERE {filter} AND {by_name} AND ($1::text IS NULL OR role = $1)
             ORDER BY not_after, serial LIMIT $2"
        );
        within(async {
            let mut c = self.readers.take().await?;
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&role, &limit];
            params.extend(extra.iter().map(|v| v as &(dyn ToSql + Sync)));
            if let Some(name) = &query.name {
                params.push(name);
            }
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

    async fn revocations_since(
        &self,
        since: OffsetDateTime,
    ) -> Result<Vec<(Serial, OffsetDateTime)>, StoreError> {
        within(async {
            let mut c = self.readers.take().await?;
            reads::revocations_since(&mut c, since).await
        })
        .await
    }

    async fn record_report(&self, report: AgentRecord) -> Result<(), StoreError> {
        self.write(Write::Change(Box::new(Change::Report(report))))
            .await
            .map(|_| ())
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
        within(async { slots::live(&mut *self.readers.take().await?, now).await }).await
    }

    async fn reports(&self, since: OffsetDateTime) -> Result<Vec<AgentRecord>, StoreError> {
        within(async {
            let mut c = self.readers.take().await?;
            reads::reports(&mut c, since).await
        })
        .await
    }

    async fn report_times(&self, since: OffsetDateTime) -> Result<Vec<(String, i64)>, StoreError> {
        within(async {
            let mut c = self.readers.take().await?;
            reads::report_times(&mut c, since).await
        })
        .await
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
        within(async {
            let mut c = self.readers.take().await?;
            reads::holders(&mut c, identities).await
        })
        .await
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
        within(async {
            let mut c = self.readers.take().await?;
            reads::nodes(&mut c, now).await
        })
        .await
    }

    async fn engines(&self) -> Result<Vec<EngineRecord>, StoreError> {
        within(async {
            let mut c = self.readers.take().await?;
            reads::engines(&mut c).await
        })
        .await
    }

    async fn audit(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        within(async {
            let mut c = self.readers.take().await?;
            reads::audit(&mut c, limit).await
        })
        .await
    }

    async fn current_certificates(
        &self,
        now: OffsetDateTime,
    ) -> Result<Vec<CertRecord>, StoreError> {
        within(async {
            let mut c = self.readers.take().await?;
            ca::current(&mut c, now).await
        })
        .await
    }

    async fn ca_generation(&self) -> Result<u64, StoreError> {
        within(async {
            let mut c = self.readers.take().await?;
            ca::generation(&mut c).await
        })
        .await
    }

    async fn ca_material(&self) -> Result<CaMaterial, StoreError> {
        within(async {
            let mut c = self.readers.take().await?;
            ca::material(&mut c).await
        })
        .await
    }

    async fn update_ca(&self, update: CaUpdate) -> Result<u64, StoreError> {
        self.write(Write::Change(Box::new(Change::Ca(update))))
            .await
            .map(|o| o.generation())
    }
}
