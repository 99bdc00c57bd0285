//! A read-only look at the embedded store, for the admin commands that only read
//! (`cert list`, `audit`, `token list`) while `serve` is not running.
//!
//! The connection is opened read-only (`SQLITE_OPEN_READ_ONLY`): it never writes,
//! migrates, checkpoints or truncates, so it is safe beside a running server (a WAL
//! reader never blocks the writer) and on a store whose server was killed.

use std::path::Path;

use dtca_pki::Serial;
use dtca_pki::identity::Role;
use rusqlite::{Connection, OpenFlags};

use super::db_error;
use super::reads;
use super::schema::SCHEMA_VERSION;
use crate::store::{AuditEntry, CaMaterial, CertQuery, CertSummary, StoreError, TokenRecord};

/// A read-only connection to the embedded store.
#[derive(Debug)]
pub struct Snapshot {
    conn: Connection,
}

impl Snapshot {
    /// Opens `path` read-only; it must exist and have this build's schema.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the file is missing, unreadable, or of another
    /// schema version (start `serve` once to upgrade it).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let unavailable =
            |why: String| StoreError::Unavailable(format!("cannot read {}: {why}", path.display()));
        if !path.exists() {
            return Err(unavailable("no such file".into()));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| unavailable(e.to_string()))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db_error)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| unavailable(e.to_string()))?;
        if version != SCHEMA_VERSION {
            return Err(unavailable(format!(
                "schema version {version}, this ca-server reads {SCHEMA_VERSION} (start `ca-server serve` once to upgrade it)"
            )));
        }
        Ok(Snapshot { conn })
    }

    /// Certificates as [`crate::store::Store::certificates`] lists them.
    ///
    /// # Errors
    /// [`StoreError`] from SQLite.
    pub fn certificates(&self, query: &CertQuery) -> Result<Vec<CertSummary>, StoreError> {
        reads::certificates(&self.conn, query)
    }

    /// Who holds each name now, as [`crate::store::Store::holders`] says.
    ///
    /// # Errors
    /// [`StoreError`] from SQLite.
    pub fn holders(
        &self,
        identities: &[(Role, String)],
    ) -> Result<Vec<(Role, String, Serial)>, StoreError> {
        reads::holders(&self.conn, identities)
    }

    /// The newest `limit` audit entries.
    ///
    /// # Errors
    /// [`StoreError`] from SQLite.
    pub fn audit(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        reads::audit(&self.conn, limit)
    }

    /// Every token.
    ///
    /// # Errors
    /// [`StoreError`] from SQLite.
    pub fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        reads::tokens(&self.conn)
    }

    /// The CA's certificates (and its keys, sealed), as [`crate::store::Store::ca_material`]
    /// reads them.
    ///
    /// # Errors
    /// [`StoreError`] from SQLite.
    pub fn ca_material(&self) -> Result<CaMaterial, StoreError> {
        super::ca::material(&self.conn)
    }
}
