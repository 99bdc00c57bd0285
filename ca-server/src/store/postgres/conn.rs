//! Connections: one per writer task, and a pool of readers opened on demand and dropped
//! when they break, so the store reconnects by itself after the database comes back.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row, Statement};

use super::{OPERATION_TIMEOUT, StoreError, describe, unavailable};

/// One connection with its prepared statements.
pub(super) struct Conn {
    pub(super) client: Client,
    statements: HashMap<String, Statement>,
    /// Set while a call is on the wire, so a connection whose call was abandoned (timed
    /// out, cancelled) is not reused with an answer still pending.
    pub(super) busy: bool,
}

impl Conn {
    pub(super) async fn open(config: &Config) -> Result<Conn, tokio_postgres::Error> {
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

    pub(super) fn usable(&self) -> bool {
        !self.busy && !self.client.is_closed()
    }

    pub(super) async fn statement(
        &mut self,
        sql: &str,
    ) -> Result<Statement, tokio_postgres::Error> {
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

    pub(super) async fn query(
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

    /// One row, or an error (as `Client::query_one`).
    pub(super) async fn query_one_row(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.busy = true;
        let row = self.client.query_one(&statement, params).await;
        self.busy = false;
        row
    }

    pub(super) async fn execute(
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
    pub(super) async fn batch(&mut self, sql: &str) -> Result<(), tokio_postgres::Error> {
        self.busy = true;
        let done = self.client.batch_execute(sql).await;
        self.busy = false;
        done
    }
}

/// Read connections: opened on demand, kept while healthy.
#[derive(Debug)]
pub(super) struct Readers {
    pub(super) config: Arc<Config>,
    pub(super) idle: Mutex<Vec<Conn>>,
    pub(super) permits: Semaphore,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Conn")
    }
}

impl Readers {
    pub(super) async fn take(&self) -> Result<Reader<'_>, StoreError> {
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
pub(super) struct Reader<'a> {
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
pub(super) async fn within<T>(
    f: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(OPERATION_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "PostgreSQL did not answer within {}s",
                OPERATION_TIMEOUT.as_secs()
            )))
        })
}
