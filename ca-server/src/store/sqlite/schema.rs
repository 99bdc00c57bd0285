//! The tables, and opening a connection to them: the schema is applied (and its version
//! checked) once, when the store opens.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::unavailable;
use crate::store::StoreError;

/// Schema version kept in `PRAGMA user_version`: the number of [`MIGRATIONS`] applied.
const SCHEMA_VERSION: i64 = 4;

/// Each version's changes, applied in order from the database's version on.
const MIGRATIONS: &[&str] = &[SCHEMA_V1, IDENTITIES_V2, AGENT_REPORTS_V3, CA_LIFECYCLE_V4];

/// What each node's agent last reported (the agent channel), one row per node.
const AGENT_REPORTS_V3: &str = "
CREATE TABLE agent_reports (
    name TEXT PRIMARY KEY,
    serial TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    state TEXT NOT NULL
) WITHOUT ROWID;
";

const SCHEMA_V1: &str = "
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

/// One holder per name: `identities` records the certificate each identity's name
/// belongs to (until its end), `host_names` the identity whose live certificate carries
/// each DNS name; certificates remember their first use (a renewed certificate may renew
/// again only while its successor is unused), engine addresses the certificate that
/// reported them. Filled from the certificates already stored: the newest current one of
/// each identity holds its name and DNS names.
const IDENTITIES_V2: &str = "
ALTER TABLE certificates ADD COLUMN first_used_at INTEGER;
ALTER TABLE nodes ADD COLUMN serial TEXT;
ALTER TABLE tokens ADD COLUMN replaces INTEGER NOT NULL DEFAULT 0;
CREATE TABLE identities (
    role TEXT NOT NULL,
    name TEXT NOT NULL,
    serial TEXT NOT NULL,
    not_after INTEGER NOT NULL,
    PRIMARY KEY (role, name)
) WITHOUT ROWID;
CREATE TABLE host_names (
    dns TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    name TEXT NOT NULL,
    serial TEXT NOT NULL,
    not_after INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX host_names_identity ON host_names (role, name);
INSERT OR REPLACE INTO identities (role, name, serial, not_after)
    SELECT role, name, serial, not_after FROM certificates
    WHERE role != 'ca' AND revoked_at IS NULL AND renewed_by IS NULL
    ORDER BY not_after;
INSERT OR REPLACE INTO host_names (dns, role, name, serial, not_after)
    SELECT j.value, c.role, c.name, c.serial, c.not_after
    FROM certificates c, json_each('[\"' || replace(c.dns, ' ', '\",\"') || '\"]') j
    WHERE c.role = 'node' AND c.dns != '' AND c.revoked_at IS NULL AND c.renewed_by IS NULL
    ORDER BY c.not_after;
";

/// The CA's own certificates (intermediate keys encrypted) and its lifecycle: one row
/// whose generation every change bumps. Filled at `init`, or at the first `serve` from the
/// state dir of a CA made before.
const CA_LIFECYCLE_V4: &str = "
CREATE TABLE ca_certificates (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    der BLOB NOT NULL,
    key_pem TEXT,
    added_at INTEGER NOT NULL,
    retired_at INTEGER
);
CREATE TABLE ca_lifecycle (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL,
    active_root TEXT,
    rotation_started_at INTEGER
);
INSERT INTO ca_lifecycle (id, generation) VALUES (1, 0);
";

pub(super) fn open_connection(path: &Path) -> Result<Connection, StoreError> {
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

pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(unavailable)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Unavailable(format!(
            "the database has schema version {version}, newer than this ca-server ({SCHEMA_VERSION}); upgrade ca-server"
        )));
    }
    let tx = conn.transaction().map_err(unavailable)?;
    let from = usize::try_from(version).unwrap_or(0);
    for migration in MIGRATIONS.iter().skip(from) {
        tx.execute_batch(migration).map_err(unavailable)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(unavailable)?;
    tx.commit().map_err(unavailable)
}
