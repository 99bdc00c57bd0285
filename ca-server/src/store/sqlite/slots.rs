//! Restart slots in the embedded store: the writer thread applies each request alone
//! (reclaim, decide, grant; `apply` adds the audit lines), so no two decisions interleave.

use rusqlite::{Connection, params};
use time::OffsetDateTime;

use super::db_error;
use crate::restart::{Decision, RestartLimits, Slot, SlotRequest};
use crate::store::columns;
use crate::store::{AuditEntry, StoreError};

pub(super) fn request(
    tx: &mut rusqlite::Savepoint<'_>,
    request: &SlotRequest,
    limits: &RestartLimits,
    actor: &str,
    now: OffsetDateTime,
) -> Result<(Decision, Vec<AuditEntry>), StoreError> {
    let change = crate::store::slots::change(all(tx)?, request, limits, actor, now);
    for slot in &change.expired {
        tx.execute(
            "DELETE FROM restart_slots WHERE name = ?1",
            params![slot.name],
        )
        .map_err(db_error)?;
    }
    if let Some(slot) = &change.slot {
        tx.execute(
            "INSERT INTO restart_slots (name, serial, manager_of, granted_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (name) DO UPDATE SET expires_at = excluded.expires_at",
            params![
                slot.name,
                slot.serial,
                slot.manager_of.clone().unwrap_or_default(),
                slot.granted_at.unix_timestamp(),
                slot.expires_at.unix_timestamp()
            ],
        )
        .map_err(db_error)?;
    }
    Ok((change.decision, change.audit))
}

/// Whether `name` held a slot (now deleted).
pub(super) fn release(tx: &mut rusqlite::Savepoint<'_>, name: &str) -> Result<bool, StoreError> {
    let gone = tx
        .execute("DELETE FROM restart_slots WHERE name = ?1", params![name])
        .map_err(db_error)?;
    Ok(gone > 0)
}

/// Every restart slot, expired or not.
pub(super) fn all(c: &Connection) -> Result<Vec<Slot>, StoreError> {
    let mut stmt = c
        .prepare_cached(
            "SELECT name, serial, manager_of, granted_at, expires_at FROM restart_slots ORDER BY granted_at, name",
        )
        .map_err(db_error)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })
        .map_err(db_error)?;
    let mut out = Vec::new();
    for row in rows {
        let (name, serial, manager_of, granted, expires) = row.map_err(db_error)?;
        out.push(Slot {
            name,
            serial,
            manager_of: Some(manager_of).filter(|m| !m.is_empty()),
            granted_at: columns::time(granted).map_err(StoreError::Corrupt)?,
            expires_at: columns::time(expires).map_err(StoreError::Corrupt)?,
        });
    }
    Ok(out)
}
