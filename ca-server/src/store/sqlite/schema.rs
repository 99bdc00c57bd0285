//! The tables, and opening a connection to them: the file is checked and the schema
//! applied (and its version checked) once, when the store opens.
//!
//! Each version of the schema is one step in [`MIGRATIONS`], applied in order inside one
//! transaction from whatever version the file is at: version 1 made the tables, later
//! steps change them. A new step goes at the end; steps never change once released.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, Transaction};

use super::db_error;
use crate::store::StoreError;

/// Version 1: the tables as first released.
const V1_TABLES: &str = "
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

/// Version 2, one holder per name: `identities` records the certificate each identity's name
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

/// Version 3: fewer pages written per certificate.
///
/// - The audit log without AUTOINCREMENT. AUTOINCREMENT keeps the highest id in
///   `sqlite_sequence`, one more page rewritten by every transaction that audits anything
///   (every issuance). Audit rows are never deleted, so a plain `INTEGER PRIMARY KEY`
///   (the largest id plus one) gives the same ever-growing ids, and `ORDER BY id` the
///   same order. The table is copied as it is.
/// - One index on expiry instead of two: `(not_after, renewed_by)` answers both the full
///   list and the list of current certificates (renewed ones are skipped inside the
///   index, without reading their rows), and every certificate stored writes one index
///   page fewer.
const V3_FEWER_PAGES_PER_CERTIFICATE: &str = "
CREATE TABLE audit_v3 (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL
);
INSERT INTO audit_v3 (id, at, kind, actor, subject, detail)
    SELECT id, at, kind, actor, subject, detail FROM audit ORDER BY id;
DROP TABLE audit;
ALTER TABLE audit_v3 RENAME TO audit;
DROP INDEX certificates_current_expiry;
DROP INDEX certificates_expiry;
CREATE INDEX certificates_expiry ON certificates (not_after, renewed_by);
";

/// The steps, in order: step `i` brings the file to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    V1_TABLES,
    IDENTITIES_V2,
    V3_FEWER_PAGES_PER_CERTIFICATE,
    AGENT_REPORTS_V4,
    CA_LIFECYCLE_V5,
    ACCESS_V6,
    RESTART_SLOTS_V7,
];

/// Version 6: operator access levels. A token enrolls certificates of its level; a
/// certificate's level (also in its EKU) is kept beside it for listing. Everything stored
/// before is full access.
const ACCESS_V6: &str = "
ALTER TABLE tokens ADD COLUMN access TEXT NOT NULL DEFAULT 'full';
ALTER TABLE certificates ADD COLUMN access TEXT NOT NULL DEFAULT 'full';
";

/// Version 7: restart slots (rolling restarts of native-mode engines), one row per node
/// restarting; `manager_of` is the swarm cluster ID of a manager, empty otherwise.
const RESTART_SLOTS_V7: &str = "
CREATE TABLE restart_slots (
    name TEXT PRIMARY KEY,
    serial TEXT NOT NULL,
    manager_of TEXT NOT NULL,
    granted_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Version 4: what each node's agent last reported (the agent channel), one row per node.
const AGENT_REPORTS_V4: &str = "
CREATE TABLE agent_reports (
    name TEXT PRIMARY KEY,
    serial TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    state TEXT NOT NULL
) WITHOUT ROWID;
";

/// Schema version kept in `PRAGMA user_version`: the number of [`MIGRATIONS`] applied.
pub(super) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Version 5: the CA's own certificates (intermediate keys encrypted) and its lifecycle: one row
/// whose generation every change bumps. Filled at `init`, or at the first `serve` from the
/// state dir of a CA made before.
const CA_LIFECYCLE_V5: &str = "
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
    .map_err(|e| match db_error(e) {
        StoreError::Unavailable(why) => {
            StoreError::Unavailable(format!("cannot open {}: {why}", path.display()))
        }
        other => other,
    })?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(db_error)?;
    Ok(conn)
}

/// Checks the file with SQLite's `quick_check` (every page of every table and index is
/// read and its structure checked; index contents are not compared with their tables):
/// a damaged file is refused before anything is written to it.
///
/// # Errors
/// [`StoreError::Corrupt`] naming the file, with SQLite's first findings, when it is
/// damaged or not a database at all.
pub(super) fn check(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let damaged = |finding: String| damaged(path, &finding);
    let findings = conn
        .prepare("PRAGMA quick_check(5)")
        .and_then(|mut stmt| {
            stmt.query_map([], |row| row.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|e| match db_error(e) {
            StoreError::Corrupt(why) => damaged(why),
            other => other,
        })?;
    if findings.len() == 1 && findings[0] == "ok" {
        Ok(())
    } else {
        Err(damaged(format!(
            "SQLite's quick check: {}",
            findings.join("; ")
        )))
    }
}

/// The file at `path` is damaged: what was found, and what to do.
pub(super) fn damaged(path: &Path, finding: &str) -> StoreError {
    let p = path.display();
    StoreError::Corrupt(format!(
        "{p} is damaged ({finding}). ca-server will not use it: move it aside for inspection and restore the last backup made with `ca-server store backup` (rm -f {p}-wal {p}-shm && install -m 0600 BACKUP {p})"
    ))
}

/// Brings the schema to [`SCHEMA_VERSION`], in one transaction.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(db_error)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Unavailable(format!(
            "the database has schema version {version}, newer than this ca-server ({SCHEMA_VERSION}); upgrade ca-server"
        )));
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn.transaction().map_err(db_error)?;
    apply_migrations(&tx, version)?;
    tx.commit().map_err(db_error)
}

fn apply_migrations(tx: &Transaction<'_>, from: i64) -> Result<(), StoreError> {
    let done = usize::try_from(from).unwrap_or(0);
    for (i, step) in MIGRATIONS.iter().enumerate().skip(done) {
        tx.execute_batch(step).map_err(db_error)?;
        if from > 0 {
            tracing::info!(version = i + 1, "store schema upgraded");
        }
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(db_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(conn: &Connection) -> String {
        conn.query_row(
            "SELECT group_concat(sql, ';') FROM sqlite_master WHERE name = 'audit'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    }

    #[test]
    fn a_new_store_gets_the_audit_log_without_autoincrement() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        assert!(
            !tables(&conn).contains("AUTOINCREMENT"),
            "{}",
            tables(&conn)
        );
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    /// What SQLite plans for `sql` (its `EXPLAIN QUERY PLAN` lines, joined).
    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let n = stmt.parameter_count();
        let params: Vec<i64> = (0..n).map(|_| 0).collect();
        stmt.query_map(rusqlite::params_from_iter(params), |r| {
            r.get::<_, String>(3)
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
        .join("; ")
    }

    #[test]
    fn the_lists_search_the_one_expiry_index() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        let expiring = plan(
            &conn,
            "SELECT serial FROM certificates WHERE revoked_at IS NULL AND renewed_by IS NULL
             AND not_after > ?1 AND not_after <= ?2 ORDER BY not_after",
        );
        assert!(
            expiring.contains("SEARCH certificates USING INDEX certificates_expiry"),
            "{expiring}"
        );
        let nodes = plan(&conn, super::super::reads::NODES);
        assert!(
            nodes.contains("SEARCH certificates USING INDEX certificates_expiry"),
            "{nodes}"
        );
        let indexes: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name LIKE 'certificates_%expiry'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 1);
    }

    #[test]
    fn a_version_1_store_keeps_its_audit_log_and_ids_when_upgraded() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(V1_TABLES).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        for (i, kind) in ["issue", "token-use", "revoke"].iter().enumerate() {
            conn.execute(
                "INSERT INTO audit (at, kind, actor, subject, detail) VALUES (?1, ?2, 'a', 's', 'd')",
                rusqlite::params![i64::try_from(i).unwrap(), kind],
            )
            .unwrap();
        }
        migrate(&mut conn).unwrap();
        assert!(!tables(&conn).contains("AUTOINCREMENT"));
        let rows: Vec<(i64, String)> = conn
            .prepare("SELECT id, kind FROM audit ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            vec![
                (1, "issue".into()),
                (2, "token-use".into()),
                (3, "revoke".into())
            ]
        );
        let sequences: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_sequence WHERE name = 'audit'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(sequences, 0);
        conn.execute(
            "INSERT INTO audit (at, kind, actor, subject, detail) VALUES (9, 'issue', 'a', 's', 'd')",
            [],
        )
        .unwrap();
        let newest: i64 = conn
            .query_row("SELECT max(id) FROM audit", [], |r| r.get(0))
            .unwrap();
        assert_eq!(newest, 4);
    }

    /// A store written by the release with identities (version 2) comes up to version 3
    /// with its certificates, identities and audit log as they were.
    #[test]
    fn a_version_2_store_is_upgraded_with_its_identities_and_audit_log() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(V1_TABLES).unwrap();
        conn.execute_batch(IDENTITIES_V2).unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.execute_batch(
            "INSERT INTO certificates (serial, identity, role, name, dns, ips, not_before,
                 not_after, der, policy, issued_at, first_used_at)
             VALUES ('01', 'node/n1', 'node', 'n1', 'n1.example', '', 0, 100, x'00', '{}', 0, 5);
             INSERT INTO identities (role, name, serial, not_after) VALUES ('node', 'n1', '01', 100);
             INSERT INTO host_names (dns, role, name, serial, not_after)
                 VALUES ('n1.example', 'node', 'n1', '01', 100);
             INSERT INTO audit (at, kind, actor, subject, detail) VALUES (1, 'issue', 'a', '01', 'd');
             INSERT INTO audit (at, kind, actor, subject, detail) VALUES (2, 'revoke', 'a', '01', 'd');",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(SCHEMA_VERSION, 7);
        assert!(!tables(&conn).contains("AUTOINCREMENT"));
        let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(
            count("SELECT count(*) FROM certificates WHERE first_used_at = 5"),
            1
        );
        assert_eq!(
            count("SELECT count(*) FROM identities WHERE serial = '01'"),
            1
        );
        assert_eq!(
            count("SELECT count(*) FROM host_names WHERE serial = '01'"),
            1
        );
        assert_eq!(count("SELECT max(id) FROM audit WHERE kind = 'revoke'"), 2);
        assert_eq!(
            count(
                "SELECT count(*) FROM sqlite_master WHERE type = 'index'
                 AND name IN ('certificates_current_expiry', 'certificates_expiry')"
            ),
            1
        );
    }

    /// A store of the release before access levels (version 5) reads every token and
    /// certificate it holds as full access.
    #[test]
    fn a_version_5_store_reads_everything_as_full_access() {
        let mut conn = Connection::open_in_memory().unwrap();
        for step in &MIGRATIONS[..5] {
            conn.execute_batch(step).unwrap();
        }
        conn.pragma_update(None, "user_version", 5).unwrap();
        conn.execute_batch(
            "INSERT INTO tokens (id, secret_hash, role, max_uses, created_at, expires_at, policy)
                 VALUES ('t', x'00', 'operator', 1, 0, 100, '{}');
             INSERT INTO certificates (serial, identity, role, name, dns, ips, not_before,
                 not_after, der, policy, issued_at)
             VALUES ('01', 'dtca://c/operator/o', 'operator', 'o', '', '', 0, 100, x'00', '{}', 0);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let access = |sql: &str| -> String { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(access("SELECT access FROM tokens WHERE id = 't'"), "full");
        assert_eq!(
            access("SELECT access FROM certificates WHERE serial = '01'"),
            "full"
        );
    }
}
