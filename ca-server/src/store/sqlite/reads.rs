//! The reads: scans run on a small pool of connections (on the blocking thread pool),
//! point lookups on the calling thread (see `SqliteStore::lookup`). A WAL reader never
//! waits for the writer.

use std::path::PathBuf;
use std::sync::Mutex;

use dtca_pki::Serial;
use dtca_pki::identity::Role;
use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;

use super::db_error;
use super::rows::{SUMMARY_COLUMNS, record_from_row, summary_from_row, token_from_row};
use super::schema::open_connection;
use crate::store::columns::{self, parse_serial, secs};
use crate::store::{
    AgentRecord, AuditEntry, CertQuery, CertRecord, CertSummary, EngineRecord, NodeRecord,
    StoreError, TokenRecord,
};

/// Read connections, opened on demand and kept (up to 16) for the next read.
#[derive(Debug)]
pub(super) struct ReadPool {
    pub(super) path: PathBuf,
    pub(super) idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    pub(super) fn take(&self) -> Result<Connection, StoreError> {
        let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
        match idle {
            Some(conn) => Ok(conn),
            None => open_connection(&self.path),
        }
    }

    pub(super) fn put(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < 16
        {
            idle.push(conn);
        }
    }
}

pub(super) fn ping(c: &Connection) -> Result<(), StoreError> {
    c.query_row("SELECT 1", [], |_| Ok(())).map_err(db_error)
}

pub(super) fn token(c: &Connection, id: &str) -> Result<Option<TokenRecord>, StoreError> {
    c.prepare_cached("SELECT * FROM tokens WHERE id = ?1")
        .map_err(db_error)?
        .query_row([id], token_from_row)
        .optional()
        .map_err(db_error)?
        .transpose()
}

pub(super) fn tokens(c: &Connection) -> Result<Vec<TokenRecord>, StoreError> {
    let mut stmt = c
        .prepare_cached("SELECT * FROM tokens ORDER BY created_at DESC, rowid DESC")
        .map_err(db_error)?;
    let rows = stmt.query_map([], token_from_row).map_err(db_error)?;
    rows.map(|r| r.map_err(db_error)?).collect()
}

pub(super) fn current(c: &Connection, now: OffsetDateTime) -> Result<Vec<CertRecord>, StoreError> {
    let mut stmt = c
        .prepare_cached(&format!(
            "SELECT {SUMMARY_COLUMNS}, der, token_id, renewed_from, policy, issued_at, revocation_reason,
                    first_used_at
             FROM certificates
             WHERE role != 'ca' AND revoked_at IS NULL AND renewed_by IS NULL AND not_after > ?1
             ORDER BY role, name, not_after"
        ))
        .map_err(db_error)?;
    let rows = stmt
        .query_map([now.unix_timestamp()], record_from_row)
        .map_err(db_error)?;
    rows.map(|r| r.map_err(db_error)?).collect()
}

pub(super) fn certificate(c: &Connection, serial: &str) -> Result<Option<CertRecord>, StoreError> {
    c.prepare_cached(&format!(
        "SELECT {SUMMARY_COLUMNS}, der, token_id, renewed_from, policy, issued_at, revocation_reason,
                first_used_at
         FROM certificates WHERE serial = ?1"
    ))
    .map_err(db_error)?
    .query_row([serial], record_from_row)
    .optional()
    .map_err(db_error)?
    .transpose()
}

pub(super) fn certificates(
    c: &Connection,
    query: &CertQuery,
) -> Result<Vec<CertSummary>, StoreError> {
    let now = query.now.unix_timestamp();
    let limit = query.limit.map(i64::from).unwrap_or(-1);
    let role = query.role.map(|r| r.as_str());
    // ?1 now, ?2 expiry bound, ?3 role (NULL: any), ?4 limit (-1: none), ?5 name.
    let filter = match query.expiring_within {
        Some(_) => {
            "revoked_at IS NULL AND renewed_by IS NULL AND not_after > ?1 AND not_after <= ?2"
        }
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
    let mut stmt = c.prepare_cached(&sql).map_err(db_error)?;
    let rows = stmt
        .query_map(
            params![now, bound, role, limit, query.name],
            summary_from_row,
        )
        .map_err(db_error)?;
    rows.map(|r| r.map_err(db_error)?).collect()
}

pub(super) fn revoked(
    c: &Connection,
    now: OffsetDateTime,
) -> Result<Vec<(Serial, OffsetDateTime)>, StoreError> {
    let mut stmt = c
        .prepare_cached(
            "SELECT serial, revoked_at FROM certificates
             WHERE revoked_at IS NOT NULL AND not_after > ?1 ORDER BY revoked_at",
        )
        .map_err(db_error)?;
    let rows = stmt
        .query_map([now.unix_timestamp()], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })
        .map_err(db_error)?;
    rows.map(|r| {
        let (serial, at) = r.map_err(db_error)?;
        Ok((
            parse_serial(&serial)?,
            columns::time(at).map_err(StoreError::Corrupt)?,
        ))
    })
    .collect()
}

/// Current node certificates by name. The expiry index is named: ordered by name, the
/// planner would otherwise walk the whole name index (every certificate ever issued)
/// instead of the valid ones.
pub(super) const NODES: &str =
    "SELECT serial, identity, dns, ips, not_before, not_after, revoked_at, renewed_by, access,
        name,
        (SELECT n.endpoint FROM nodes n WHERE n.name = certificates.name
           AND NOT EXISTS (SELECT 1 FROM certificates r
                           WHERE r.serial = n.serial AND r.revoked_at IS NOT NULL))
     FROM certificates INDEXED BY certificates_expiry
     WHERE role = 'node' AND revoked_at IS NULL AND renewed_by IS NULL AND not_after > ?2
       AND (not_after > ?1
            OR NOT EXISTS (SELECT 1 FROM certificates r INDEXED BY certificates_name
                           WHERE r.name = certificates.name AND r.role = 'node'
                             AND r.revoked_at IS NOT NULL
                             AND r.not_after > certificates.not_after))
     ORDER BY name, not_after DESC";

pub(super) fn nodes(c: &Connection, now: OffsetDateTime) -> Result<Vec<NodeRecord>, StoreError> {
    let mut stmt = c.prepare_cached(NODES).map_err(db_error)?;
    let rows = stmt
        .query_map(
            [now.unix_timestamp(), crate::store::expired_since(now)],
            |row| {
                Ok((
                    summary_from_row(row)?,
                    row.get::<_, String>(9)?,
                    row.get::<_, Option<String>>(10)?,
                ))
            },
        )
        .map_err(db_error)?;
    let mut out: Vec<NodeRecord> = Vec::new();
    for row in rows {
        let (summary, name, endpoint) = row.map_err(db_error)?;
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
}

pub(super) fn revocations_since(
    c: &Connection,
    since: OffsetDateTime,
) -> Result<Vec<(Serial, OffsetDateTime)>, StoreError> {
    let mut stmt = c
        .prepare_cached(
            "SELECT serial, revoked_at FROM certificates
             WHERE revoked_at IS NOT NULL AND revoked_at >= ?1 ORDER BY revoked_at",
        )
        .map_err(db_error)?;
    let rows = stmt
        .query_map([since.unix_timestamp()], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })
        .map_err(db_error)?;
    rows.map(|r| {
        let (serial, at) = r.map_err(db_error)?;
        Ok((
            parse_serial(&serial)?,
            columns::time(at).map_err(StoreError::Corrupt)?,
        ))
    })
    .collect()
}

pub(super) fn reports(
    c: &Connection,
    since: OffsetDateTime,
) -> Result<Vec<AgentRecord>, StoreError> {
    let mut stmt = c
        .prepare_cached(
            "SELECT name, serial, received_at, state FROM agent_reports
             WHERE received_at >= ?1 ORDER BY name",
        )
        .map_err(db_error)?;
    let rows = stmt
        .query_map([since.unix_timestamp()], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, String>(3)?,
            ))
        })
        .map_err(db_error)?;
    rows.map(|r| {
        let (name, serial, at, state) = r.map_err(db_error)?;
        Ok(AgentRecord {
            name,
            serial: parse_serial(&serial)?,
            received_at: columns::time(at).map_err(StoreError::Corrupt)?,
            state: serde_json::from_str(&state).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        })
    })
    .collect()
}

pub(super) fn report_times(
    c: &Connection,
    since: OffsetDateTime,
) -> Result<Vec<(String, i64)>, StoreError> {
    let mut stmt = c
        .prepare_cached("SELECT name, received_at FROM agent_reports WHERE received_at >= ?1")
        .map_err(db_error)?;
    let rows = stmt
        .query_map([since.unix_timestamp()], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .map_err(db_error)?;
    rows.map(|r| r.map_err(db_error)).collect()
}

pub(super) fn holders(
    c: &Connection,
    identities: &[(Role, String)],
) -> Result<Vec<(Role, String, Serial)>, StoreError> {
    let mut stmt = c
        .prepare_cached("SELECT serial FROM identities WHERE role = ?1 AND name = ?2")
        .map_err(db_error)?;
    let mut out = Vec::new();
    for (role, name) in identities {
        let serial: Option<String> = stmt
            .query_row(params![role.as_str(), name], |r| r.get(0))
            .optional()
            .map_err(db_error)?;
        if let Some(serial) = serial {
            out.push((*role, name.clone(), parse_serial(&serial)?));
        }
    }
    Ok(out)
}

pub(super) fn engines(c: &Connection) -> Result<Vec<EngineRecord>, StoreError> {
    let mut stmt = c
        .prepare_cached("SELECT name, endpoint, updated_at, serial FROM nodes ORDER BY name")
        .map_err(db_error)?;
    let rows = stmt
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, Option<String>>(3)?,
            ))
        })
        .map_err(db_error)?;
    rows.map(|r| {
        let (name, endpoint, at, serial) = r.map_err(db_error)?;
        Ok(EngineRecord {
            name,
            endpoint,
            updated_at: columns::time(at).map_err(StoreError::Corrupt)?,
            serial: serial.as_deref().map(parse_serial).transpose()?,
        })
    })
    .collect()
}

pub(super) fn audit(c: &Connection, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
    let mut stmt = c
        .prepare_cached(
            "SELECT at, kind, actor, subject, detail FROM audit ORDER BY id DESC LIMIT ?1",
        )
        .map_err(db_error)?;
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
        .map_err(db_error)?;
    rows.map(|r| {
        let (at, entry) = r.map_err(db_error)?;
        Ok(AuditEntry {
            at: columns::time(at).map_err(StoreError::Corrupt)?,
            ..entry
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nodes_query_reads_the_summary_columns_first() {
        assert!(
            NODES.starts_with(&format!("SELECT {SUMMARY_COLUMNS},")),
            "{NODES}"
        );
    }
}
