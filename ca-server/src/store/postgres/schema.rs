//! The tables, and the migrations that make them, applied at start.
//!
//! Migrations run in one transaction holding a transaction-scoped advisory lock, so
//! replicas that start together apply them once: the others wait for the lock, then find
//! the version already current. The version is the row in `dtca_schema`.
//!
//! Times are Unix seconds (`BIGINT`) and lists are space-separated text, as in the
//! embedded store, so a record reads back identical from either backend.

use super::{Conn, StoreError, unavailable};

/// Advisory lock key held while migrating ("dtca" and 1).
const MIGRATION_LOCK: i64 = 0x6474_6361_0001;

/// Migration `i` brings the schema from version `i` to `i + 1`. Append only.
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE tokens (
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    id TEXT PRIMARY KEY,
    secret_hash BYTEA NOT NULL,
    role TEXT NOT NULL,
    name TEXT,
    max_uses BIGINT NOT NULL,
    uses BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT,
    policy TEXT NOT NULL,
    cert_ttl BIGINT
);
CREATE INDEX tokens_newest ON tokens (created_at DESC, seq DESC);
CREATE TABLE certificates (
    serial TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    role TEXT NOT NULL,
    name TEXT NOT NULL,
    dns TEXT NOT NULL,
    ips TEXT NOT NULL,
    not_before BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    der BYTEA NOT NULL,
    token_id TEXT,
    renewed_from TEXT,
    renewed_by TEXT,
    policy TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    revoked_at BIGINT,
    revocation_reason TEXT
);
CREATE INDEX certificates_current_expiry ON certificates (not_after)
    WHERE revoked_at IS NULL AND renewed_by IS NULL;
CREATE INDEX certificates_expiry ON certificates (not_after);
CREATE INDEX certificates_name ON certificates (name);
CREATE INDEX certificates_revoked ON certificates (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE TABLE nodes (
    name TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE audit (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL
);
",
    "
ALTER TABLE certificates ADD COLUMN first_used_at BIGINT;
ALTER TABLE nodes ADD COLUMN serial TEXT;
ALTER TABLE tokens ADD COLUMN replaces BOOLEAN NOT NULL DEFAULT false;
CREATE TABLE identities (
    role TEXT NOT NULL,
    name TEXT NOT NULL,
    serial TEXT NOT NULL,
    not_after BIGINT NOT NULL,
    PRIMARY KEY (role, name)
);
CREATE TABLE host_names (
    dns TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    name TEXT NOT NULL,
    serial TEXT NOT NULL,
    not_after BIGINT NOT NULL
);
CREATE INDEX host_names_identity ON host_names (role, name);
",
    DERIVE_HOLDERS,
    "
CREATE TABLE agent_reports (
    name TEXT PRIMARY KEY,
    serial TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    state TEXT NOT NULL
);
",
    super::ca::MIGRATION,
    // Version 6: operator access levels; everything stored before is full access.
    "
ALTER TABLE tokens ADD COLUMN access TEXT NOT NULL DEFAULT 'full';
ALTER TABLE certificates ADD COLUMN access TEXT NOT NULL DEFAULT 'full';
",
    // 7: restart slots (rolling restarts of native-mode engines), one row per node
    // restarting; `manager_of` is the swarm cluster ID of a manager, empty otherwise.
    "
CREATE TABLE restart_slots (
    name TEXT PRIMARY KEY,
    serial TEXT NOT NULL,
    manager_of TEXT NOT NULL,
    granted_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
",
];

/// Fills `identities` and `host_names` from the certificates (the newest current
/// certificate of each identity holds its name and DNS names): the migration after the
/// tables were made, and `store migrate` after it copied the certificates.
pub(super) const DERIVE_HOLDERS: &str = "
INSERT INTO identities (role, name, serial, not_after)
    SELECT DISTINCT ON (role, name) role, name, serial, not_after FROM certificates
    WHERE role <> 'ca' AND revoked_at IS NULL AND renewed_by IS NULL
    ORDER BY role, name, not_after DESC
ON CONFLICT DO NOTHING;
INSERT INTO host_names (dns, role, name, serial, not_after)
    SELECT DISTINCT ON (d.dns) d.dns, c.role, c.name, c.serial, c.not_after
    FROM certificates c, unnest(string_to_array(c.dns, ' ')) AS d(dns)
    WHERE c.role = 'node' AND c.dns <> '' AND c.revoked_at IS NULL AND c.renewed_by IS NULL
    ORDER BY d.dns, c.not_after DESC
ON CONFLICT DO NOTHING;
";

/// The schema version this build reads and writes.
pub(super) fn current() -> i32 {
    i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX)
}

/// Brings the database to [`current`], or refuses one that is newer.
///
/// # Errors
/// [`StoreError::Unavailable`] when a statement fails or the schema is newer.
pub(super) async fn migrate(conn: &mut Conn) -> Result<(), StoreError> {
    let result = steps(conn).await;
    if result.is_err() {
        let _ = conn.batch("ROLLBACK").await;
    }
    result
}

async fn steps(conn: &mut Conn) -> Result<(), StoreError> {
    conn.batch("BEGIN").await.map_err(unavailable)?;
    conn.query("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(unavailable)?;
    conn.batch("CREATE TABLE IF NOT EXISTS dtca_schema (version INTEGER NOT NULL)")
        .await
        .map_err(unavailable)?;
    let rows = conn
        .query("SELECT max(version) FROM dtca_schema", &[])
        .await
        .map_err(unavailable)?;
    let version: i32 = rows
        .first()
        .and_then(|r| r.try_get::<_, Option<i32>>(0).ok().flatten())
        .unwrap_or(0);
    let target = current();
    if version > target {
        return Err(StoreError::Unavailable(format!(
            "the database has schema version {version}, newer than this ca-server ({target}); upgrade ca-server"
        )));
    }
    for (from, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(version).unwrap_or(0))
    {
        tracing::info!(from, to = from + 1, "migrating the PostgreSQL schema");
        conn.batch(sql).await.map_err(unavailable)?;
    }
    if version < target {
        conn.batch("DELETE FROM dtca_schema")
            .await
            .map_err(unavailable)?;
        conn.execute("INSERT INTO dtca_schema (version) VALUES ($1)", &[&target])
            .await
            .map_err(unavailable)?;
    }
    conn.batch("COMMIT").await.map_err(unavailable)
}
