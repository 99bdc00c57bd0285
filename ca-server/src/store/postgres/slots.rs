//! Restart slots on PostgreSQL: every decision holds the table's lock (it conflicts with
//! itself, not with plain reads) until its transaction commits, so the decisions of every
//! writer of every replica are made one at a time and never over-grant.

use time::OffsetDateTime;

use super::audit::insert_audit;
use super::conn::Conn;
use super::failure::WriteFail;
use super::rows::slot_from_row;
use super::unavailable;
use crate::restart::{RestartLimits, Slot, SlotRequest};
use crate::store::queue::Outcome;
use crate::store::{AuditEntry, StoreError};

const LOCK: &str = "LOCK TABLE restart_slots IN SHARE ROW EXCLUSIVE MODE";

pub(super) async fn request(
    conn: &mut Conn,
    request: &SlotRequest,
    limits: &RestartLimits,
    actor: &str,
    now: OffsetDateTime,
) -> Result<Outcome, WriteFail> {
    conn.batch(LOCK).await?;
    let rows = conn
        .query(
            "SELECT name, serial, manager_of, granted_at, expires_at FROM restart_slots
             ORDER BY granted_at, name",
            &[],
        )
        .await?;
    let all = rows
        .iter()
        .map(slot_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let change = crate::store::slots::change(all, request, limits, actor, now);
    let expired: Vec<&str> = change.expired.iter().map(|s| s.name.as_str()).collect();
    if !expired.is_empty() {
        conn.execute(
            "DELETE FROM restart_slots WHERE name = ANY($1)",
            &[&expired],
        )
        .await?;
    }
    if let Some(slot) = &change.slot {
        conn.execute(
            "INSERT INTO restart_slots (name, serial, manager_of, granted_at, expires_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (name) DO UPDATE SET expires_at = excluded.expires_at",
            &[
                &slot.name,
                &slot.serial,
                &slot.manager_of.clone().unwrap_or_default(),
                &slot.granted_at.unix_timestamp(),
                &slot.expires_at.unix_timestamp(),
            ],
        )
        .await?;
    }
    insert_audit(conn, &change.audit).await?;
    Ok(Outcome::Restart(change.decision))
}

pub(super) async fn release(
    conn: &mut Conn,
    name: &str,
    audit: &AuditEntry,
) -> Result<Outcome, WriteFail> {
    conn.batch(LOCK).await?;
    let gone = conn
        .execute("DELETE FROM restart_slots WHERE name = $1", &[&name])
        .await?;
    if gone > 0 {
        insert_audit(conn, std::slice::from_ref(audit)).await?;
    }
    Ok(Outcome::Released(gone > 0))
}

/// The slots whose lease has not run out at `now`.
pub(super) async fn live(c: &mut Conn, now: OffsetDateTime) -> Result<Vec<Slot>, StoreError> {
    let rows = c
        .query(
            "SELECT name, serial, manager_of, granted_at, expires_at FROM restart_slots
             WHERE expires_at > $1 ORDER BY granted_at, name",
            &[&now.unix_timestamp()],
        )
        .await
        .map_err(unavailable)?;
    rows.iter().map(slot_from_row).collect()
}
