//! The writer thread: writes queue up, and whatever has queued is applied as one
//! transaction (each write in its own savepoint) with one commit. Before each batch it
//! asks the store's [`Condition`] whether it may write at all (not with a full disk or a
//! damaged file); after each commit it lets the [`Wal`] start over when it is due.

use std::sync::Arc;
use std::sync::mpsc::SyncSender;

use dtca_pki::Serial;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::condition::Condition;
use super::db_error;
use super::wal::{Poke, Wal};
use crate::store::columns::{self, parse_serial, secs};
use crate::store::queue::{Change, Job, Outcome, Write};
use crate::store::{AuditEntry, AuditKind, Issuance, RevokeTarget, StoreError};

/// Most writes applied in one transaction.
const MAX_BATCH: usize = 1024;

pub(super) fn writer_loop(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    wal: Arc<Wal>,
    condition: Arc<Condition>,
    pokes: SyncSender<Poke>,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        let results = match condition.check_space() {
            Ok(()) => apply_batch(&mut conn, &mut batch, &mut rx),
            Err(refused) => {
                // Nothing is begun: every write waiting now gets the same answer.
                drain(&mut batch, &mut rx);
                batch.iter().map(|_| Err(refused.clone())).collect()
            }
        };
        let committed = results.iter().any(Result::is_ok);
        for e in results.iter().filter_map(|r| r.as_ref().err()) {
            condition.note(e);
        }
        for (job, result) in batch.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
        if committed {
            wal.after_commit(&conn);
        }
        // Full (a poke is already waiting) or closed: either way nothing to do.
        let _ = pokes.try_send(Poke::Wrote);
    }
}

/// Applies `batch` in one transaction, each write in its own savepoint, and keeps taking
/// the writes that queue up meanwhile (up to [`MAX_BATCH`]) before the one commit: under
/// load the fsync is shared by more certificates, and nothing ever waits on purpose. The
/// results are only good if the commit succeeds, so a failed commit fails them all.
fn apply_batch(
    conn: &mut Connection,
    batch: &mut Vec<Job>,
    rx: &mut mpsc::Receiver<Job>,
) -> Vec<Result<Outcome, StoreError>> {
    let fail_all = |n: usize, e: StoreError| (0..n).map(|_| Err(e.clone())).collect();
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => return fail_all(batch.len(), db_error(e)),
    };
    let mut results = Vec::with_capacity(batch.len());
    loop {
        for job in &batch[results.len()..] {
            let result = match tx.savepoint() {
                Ok(mut sp) => match apply(&mut sp, &job.write) {
                    Ok(outcome) => sp.commit().map(|()| outcome).map_err(db_error),
                    Err(e) => {
                        // Dropping the savepoint rolls this write back; the batch goes on.
                        drop(sp);
                        Err(e)
                    }
                },
                Err(e) => Err(db_error(e)),
            };
            results.push(result);
        }
        if !drain(batch, rx) {
            break;
        }
    }
    match tx.commit() {
        Ok(()) => results,
        Err(e) => fail_all(batch.len(), db_error(e)),
    }
}

/// Moves writes that are already queued into `batch`, up to [`MAX_BATCH`]; whether any were.
fn drain(batch: &mut Vec<Job>, rx: &mut mpsc::Receiver<Job>) -> bool {
    let before = batch.len();
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    batch.len() > before
}

fn apply(tx: &mut rusqlite::Savepoint<'_>, write: &Write) -> Result<Outcome, StoreError> {
    match write {
        Write::Issue(issuance) => apply_issuance(tx, issuance).map(|()| Outcome::Done),
        Write::Change(change) => apply_change(tx, change),
    }
}

fn apply_change(tx: &mut rusqlite::Savepoint<'_>, change: &Change) -> Result<Outcome, StoreError> {
    match change {
        Change::Token(t, audit) => {
            let policy =
                serde_json::to_string(&t.policy).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO tokens (id, secret_hash, role, name, max_uses, uses, created_at, expires_at, revoked_at, policy, cert_ttl)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL, ?9, ?10) ON CONFLICT (id) DO NOTHING",
                )
                .map_err(db_error)?
                .execute(params![
                    t.id,
                    t.secret_hash,
                    t.role.as_str(),
                    t.name,
                    t.max_uses,
                    t.uses,
                    t.created_at.unix_timestamp(),
                    t.expires_at.unix_timestamp(),
                    policy,
                    t.cert_ttl.map(secs),
                ])
                .map_err(db_error)?;
            if inserted == 0 {
                return Err(StoreError::Conflict(format!("token {}", t.id)));
            }
            insert_audit(tx, audit)?;
        }
        Change::RevokeToken(id, audit) => {
            let n = tx
                .execute(
                    "UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                    params![id, audit.at.unix_timestamp()],
                )
                .map_err(db_error)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("token {id}")));
            }
            insert_audit(tx, audit)?;
        }
        Change::Revoke {
            target,
            at,
            reason,
            actor,
        } => return revoke(tx, target, *at, reason, actor).map(Outcome::Serials),
        Change::Engine {
            name,
            endpoint,
            audit,
        } => {
            tx.execute(
                "INSERT INTO nodes (name, endpoint, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET endpoint = excluded.endpoint, updated_at = excluded.updated_at",
                params![name, endpoint, audit.at.unix_timestamp()],
            )
            .map_err(db_error)?;
            insert_audit(tx, audit)?;
        }
    }
    Ok(Outcome::Done)
}

fn apply_issuance(tx: &rusqlite::Savepoint<'_>, issuance: &Issuance) -> Result<(), StoreError> {
    let at = issuance.at.unix_timestamp();
    if let Some(id) = &issuance.token_id {
        let row: Option<(u32, u32, i64, Option<i64>)> = tx
            .prepare_cached(
                "SELECT uses, max_uses, expires_at, revoked_at FROM tokens WHERE id = ?1",
            )
            .map_err(db_error)?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .optional()
            .map_err(db_error)?;
        let (uses, max_uses, expires_at, revoked_at) = row.ok_or(StoreError::TokenUnknown)?;
        if revoked_at.is_some() {
            return Err(StoreError::TokenRevoked);
        }
        if expires_at <= at {
            return Err(StoreError::TokenExpired(
                columns::time(expires_at).map_err(StoreError::Corrupt)?,
            ));
        }
        if uses >= max_uses {
            return Err(StoreError::TokenUsedUp);
        }
        tx.prepare_cached("UPDATE tokens SET uses = uses + 1 WHERE id = ?1")
            .map_err(db_error)?
            .execute([id])
            .map_err(db_error)?;
    }
    let c = &issuance.cert;
    let serial = c.summary.serial.to_string();
    if let Some(old) = &issuance.renewal_of {
        let old = old.to_string();
        let revoked: Option<Option<i64>> = tx
            .prepare_cached("SELECT revoked_at FROM certificates WHERE serial = ?1")
            .map_err(db_error)?
            .query_row([&old], |r| r.get(0))
            .optional()
            .map_err(db_error)?;
        match revoked {
            None => return Err(StoreError::NotFound(format!("certificate {old}"))),
            Some(Some(_)) => return Err(StoreError::CertRevoked(parse_serial(&old)?)),
            Some(None) => {}
        }
        tx.prepare_cached("UPDATE certificates SET renewed_by = ?2 WHERE serial = ?1")
            .map_err(db_error)?
            .execute([&old, &serial])
            .map_err(db_error)?;
    }
    let policy =
        serde_json::to_string(&c.policy).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let id = &c.summary.identity;
    tx.prepare_cached(
        "INSERT INTO certificates (serial, identity, role, name, dns, ips, not_before, not_after, der,
                                   token_id, renewed_from, renewed_by, policy, issued_at, revoked_at, revocation_reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, NULL, ?12, ?13, NULL, NULL)",
    )
    .map_err(db_error)?
    .execute(params![
        serial,
        id.uri(),
        id.role.as_str(),
        id.name,
        columns::join(&c.summary.dns_names),
        columns::join(&c.summary.ip_addresses),
        c.summary.not_before.unix_timestamp(),
        c.summary.not_after.unix_timestamp(),
        c.der,
        c.token_id,
        c.renewed_from.as_ref().map(ToString::to_string),
        policy,
        c.issued_at.unix_timestamp(),
    ])
    .map_err(|e| match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            StoreError::Conflict(format!("certificate {serial}"))
        }
        other => db_error(other),
    })?;
    for entry in &issuance.audit {
        insert_audit(tx, entry)?;
    }
    Ok(())
}

fn revoke(
    tx: &rusqlite::Savepoint<'_>,
    target: &RevokeTarget,
    at: OffsetDateTime,
    reason: &str,
    actor: &str,
) -> Result<Vec<Serial>, StoreError> {
    let at_secs = at.unix_timestamp();
    let serials: Vec<String> = match target {
        RevokeTarget::Serial(serial) => {
            let serial = serial.to_string();
            let exists: Option<Option<i64>> = tx
                .query_row(
                    "SELECT revoked_at FROM certificates WHERE serial = ?1",
                    [&serial],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_error)?;
            match exists {
                None => return Err(StoreError::NotFound(format!("certificate {serial}"))),
                Some(Some(_)) => Vec::new(),
                Some(None) => {
                    tx.execute(
                        "UPDATE certificates SET revoked_at = ?2, revocation_reason = ?3 WHERE serial = ?1",
                        params![serial, at_secs, reason],
                    )
                    .map_err(db_error)?;
                    vec![serial]
                }
            }
        }
        RevokeTarget::Name { name, role } => {
            let mut stmt = tx
                .prepare(
                    "UPDATE certificates SET revoked_at = ?2, revocation_reason = ?3
                     WHERE name = ?1 AND role != 'ca' AND (?4 IS NULL OR role = ?4)
                       AND revoked_at IS NULL AND not_after > ?2 RETURNING serial",
                )
                .map_err(db_error)?;
            let role = role.map(|r| r.as_str());
            let rows = stmt
                .query_map(params![name, at_secs, reason, role], |r| {
                    r.get::<_, String>(0)
                })
                .map_err(db_error)?;
            rows.collect::<Result<_, _>>().map_err(db_error)?
        }
    };
    let mut out = Vec::with_capacity(serials.len());
    for serial in serials {
        insert_audit(
            tx,
            &AuditEntry::new(
                at,
                AuditKind::Revoke,
                actor,
                serial.clone(),
                reason.to_string(),
            ),
        )?;
        out.push(parse_serial(&serial)?);
    }
    Ok(out)
}

fn insert_audit(tx: &rusqlite::Savepoint<'_>, entry: &AuditEntry) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO audit (at, kind, actor, subject, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .map_err(db_error)?
    .execute(params![
        entry.at.unix_timestamp(),
        entry.kind,
        entry.actor,
        entry.subject,
        entry.detail
    ])
    .map_err(db_error)?;
    Ok(())
}
