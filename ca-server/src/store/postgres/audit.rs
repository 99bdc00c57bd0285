//! Appending to the audit log: every write of the store adds its entries in the same
//! transaction.

use super::Conn;
use crate::store::AuditEntry;

/// Appends entries to the audit log in one statement, in their order.
pub(super) async fn insert_audit(
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
