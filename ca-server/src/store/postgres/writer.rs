//! The writer tasks: group commit of queued writes, one transaction per batch.
//!
//! Issuances (the hot path, in [`super::issue`]) cost one round trip each; other writes
//! run statement by statement in their savepoint. A refused or failed write is rolled
//! back to its savepoint and the batch goes on ([`super::failure`] says which).

use std::sync::Arc;

use dtca_pki::Serial;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_postgres::Config;

use super::conn::Conn;
use super::failure::{BatchFail, WriteFail, broken};
use super::issue::{Locked, issue};
use super::{
    MAX_BATCH, OPERATION_TIMEOUT, RETRY_ROUNDS, corrupt, insert_audit, parse_serial, secs,
    unavailable,
};
use crate::store::queue::{Change, Job, Outcome, Write};
use crate::store::{AuditEntry, AuditKind, RevokeTarget, StoreError};

/// The row a write locks first, as (table rank, key): a batch is applied in this order so
/// that concurrent batches (other writers, other replicas) take row locks in the same
/// order and do not deadlock. Writes in one batch are concurrent requests, so any order is
/// a valid one.
fn lock_key(write: &Write) -> (u8, String) {
    match write {
        Write::Issue(i) => match (&i.token_id, &i.renewal_of) {
            (Some(id), _) => (0, id.clone()),
            (None, Some(old)) => (1, old.to_string()),
            (None, None) => (1, i.cert.summary.serial.to_string()),
        },
        Write::Change(change) => match change.as_ref() {
            Change::Token(t, _) => (0, t.id.clone()),
            Change::RevokeToken(id, _) => (0, id.clone()),
            Change::Revoke {
                target: RevokeTarget::Serial(s),
                ..
            } => (1, s.to_string()),
            Change::Revoke {
                target: RevokeTarget::Name { name, .. },
                ..
            } => (2, name.clone()),
            Change::Engine { name, .. } => (3, name.clone()),
            Change::MarkUsed { serial, .. } => (1, serial.to_string()),
            Change::Report(report) => (4, report.name.clone()),
            Change::Ca(_) => (5, String::new()),
            // Last: the restart table's lock is taken after every row lock of the batch.
            Change::RestartRequest { request, .. } => (6, request.name.clone()),
            Change::RestartRelease { name, .. } => (6, name.clone()),
        },
    }
}

pub(super) async fn writer_loop(
    config: Arc<Config>,
    queue: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
    mut conn: Option<Conn>,
) {
    loop {
        let mut batch = {
            let mut rx = queue.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            batch
        };
        batch.sort_by_cached_key(|j| lock_key(&j.write));
        let results = apply_with_retries(&config, &mut conn, &batch).await;
        for (job, result) in batch.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
    }
}

/// Applies a batch, again for the writes that hit a deadlock, with a fresh connection
/// when the one held went stale while idle (the database restarted).
async fn apply_with_retries(
    config: &Config,
    conn: &mut Option<Conn>,
    batch: &[Job],
) -> Vec<Result<Outcome, StoreError>> {
    let mut results: Vec<Option<Result<Outcome, StoreError>>> =
        batch.iter().map(|_| None).collect();
    let mut pending: Vec<usize> = (0..batch.len()).collect();
    let mut round = 0;
    let mut reconnected = false;
    while !pending.is_empty() {
        round += 1;
        let fresh = !conn.as_ref().is_some_and(Conn::usable);
        if fresh {
            *conn = None;
            match Conn::open(config).await {
                Ok(c) => *conn = Some(c),
                Err(e) => {
                    let e = unavailable(e);
                    for i in pending.drain(..) {
                        results[i] = Some(Err(e.clone()));
                    }
                    break;
                }
            }
        }
        let Some(c) = conn.as_mut() else { break };
        let writes: Vec<&Write> = pending.iter().map(|&i| &batch[i].write).collect();
        let outcome = match tokio::time::timeout(OPERATION_TIMEOUT, apply_batch(c, &writes)).await {
            Ok(r) => r,
            Err(_) => Err(BatchFail {
                begun: true,
                error: StoreError::Unavailable(format!(
                    "PostgreSQL did not commit within {}s",
                    OPERATION_TIMEOUT.as_secs()
                )),
            }),
        };
        match outcome {
            Ok(applied) => {
                let mut again = Vec::new();
                for (i, r) in pending.iter().copied().zip(applied) {
                    match r {
                        Ok(o) => results[i] = Some(Ok(o)),
                        Err(WriteFail::Store(e)) => results[i] = Some(Err(e)),
                        Err(WriteFail::Retry(why)) if round < RETRY_ROUNDS => {
                            tracing::debug!(%why, "write retried");
                            again.push(i);
                        }
                        Err(WriteFail::Retry(why)) => {
                            results[i] = Some(Err(StoreError::Unavailable(why)));
                        }
                    }
                }
                pending = again;
            }
            Err(BatchFail { begun, error }) => {
                *conn = None;
                // A connection that died while idle failed before anything was sent:
                // safe to try once more on a new one.
                if !begun && !fresh && !reconnected {
                    reconnected = true;
                    continue;
                }
                for i in pending.drain(..) {
                    results[i] = Some(Err(error.clone()));
                }
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(StoreError::Unavailable("write not applied".into()))))
        .collect()
}

/// One transaction: each write in a savepoint, one commit. The per-write results count
/// only if the commit succeeds, so any failure of the transaction fails the whole batch.
async fn apply_batch(
    conn: &mut Conn,
    writes: &[&Write],
) -> Result<Vec<Result<Outcome, WriteFail>>, BatchFail> {
    conn.batch("BEGIN").await.map_err(|e| BatchFail {
        begun: false,
        error: unavailable(e),
    })?;
    let mut locked = Locked::default();
    let mut results = Vec::with_capacity(writes.len());
    for (n, write) in writes.iter().enumerate() {
        // One savepoint name, moved forward before each write (releasing the previous one
        // keeps the transaction's subtransactions few); COMMIT releases the last.
        let mark = if n == 0 {
            "SAVEPOINT w"
        } else {
            "RELEASE SAVEPOINT w; SAVEPOINT w"
        };
        let result = match write {
            Write::Issue(issuance) => match locked.check(issuance) {
                Some(Err(refusal)) => Err(refusal.into()),
                Some(Ok(())) => {
                    let result = issue(conn, mark, issuance, false).await?;
                    if result.is_ok() {
                        locked.took_one(issuance);
                    }
                    result.map(|_| Outcome::Done)
                }
                None => {
                    let result = issue(conn, mark, issuance, true).await?;
                    if let (Ok(Some(state)), Some(id)) = (&result, &issuance.token_id) {
                        locked.tokens.insert(id.clone(), *state);
                    }
                    result.map(|_| Outcome::Done)
                }
            },
            Write::Change(change) => {
                if let Some(id) = change.token_id() {
                    locked.flush(conn, Some(id)).await.map_err(broken)?;
                }
                conn.batch(mark).await.map_err(broken)?;
                let result = apply(conn, change).await;
                if result.is_err() {
                    conn.batch("ROLLBACK TO SAVEPOINT w")
                        .await
                        .map_err(broken)?;
                }
                result
            }
        };
        results.push(result);
    }
    locked.flush(conn, None).await.map_err(broken)?;
    conn.batch("COMMIT").await.map_err(broken)?;
    Ok(results)
}

async fn apply(conn: &mut Conn, change: &Change) -> Result<Outcome, WriteFail> {
    match change {
        Change::Token(t, audit) => {
            let policy =
                serde_json::to_string(&t.policy).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let inserted = conn
                .execute(
                    "INSERT INTO tokens (id, secret_hash, role, name, max_uses, uses, created_at,
                                         expires_at, revoked_at, policy, cert_ttl, replaces,
                                         access)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, $9, $10, $11, $12)
                     ON CONFLICT (id) DO NOTHING",
                    &[
                        &t.id,
                        &t.secret_hash,
                        &t.role.as_str(),
                        &t.name,
                        &i64::from(t.max_uses),
                        &i64::from(t.uses),
                        &t.created_at.unix_timestamp(),
                        &t.expires_at.unix_timestamp(),
                        &policy,
                        &t.cert_ttl.map(secs),
                        &t.replace,
                        &t.access.as_str(),
                    ],
                )
                .await?;
            if inserted == 0 {
                return Err(StoreError::Conflict(format!("token {}", t.id)).into());
            }
            insert_audit(conn, std::slice::from_ref(audit)).await?;
        }
        Change::RevokeToken(id, audit) => {
            let n = conn
                .execute(
                    "UPDATE tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
                    &[id, &audit.at.unix_timestamp()],
                )
                .await?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("token {id}")).into());
            }
            insert_audit(conn, std::slice::from_ref(audit)).await?;
        }
        Change::Revoke {
            target,
            at,
            reason,
            actor,
        } => {
            return revoke(conn, target, *at, reason, actor)
                .await
                .map(Outcome::Serials);
        }
        Change::Engine {
            name,
            endpoint,
            serial,
            audit,
        } => {
            conn.execute(
                "INSERT INTO nodes (name, endpoint, updated_at, serial) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET endpoint = excluded.endpoint,
                                                  updated_at = excluded.updated_at,
                                                  serial = excluded.serial",
                &[
                    name,
                    endpoint,
                    &audit.at.unix_timestamp(),
                    &serial.to_string(),
                ],
            )
            .await?;
            insert_audit(conn, std::slice::from_ref(audit)).await?;
        }
        Change::Report(report) => {
            let state = serde_json::to_string(&report.state)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            conn.execute(
                "INSERT INTO agent_reports (name, serial, received_at, state) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET serial = excluded.serial,
                     received_at = excluded.received_at, state = excluded.state",
                &[
                    &report.name,
                    &report.serial.to_string(),
                    &report.received_at.unix_timestamp(),
                    &state,
                ],
            )
            .await?;
        }
        Change::Ca(update) => {
            return super::ca::apply(conn, update)
                .await
                .map(Outcome::Generation);
        }
        Change::RestartRequest {
            request,
            limits,
            actor,
            now,
        } => return super::slots::request(conn, request, limits, actor, *now).await,
        Change::RestartRelease { name, audit } => {
            return super::slots::release(conn, name, audit).await;
        }
        Change::MarkUsed { serial, at } => {
            conn.execute(
                "UPDATE certificates SET first_used_at = $2
                 WHERE serial = $1 AND first_used_at IS NULL",
                &[&serial.to_string(), &at.unix_timestamp()],
            )
            .await?;
        }
    }
    Ok(Outcome::Done)
}

async fn revoke(
    conn: &mut Conn,
    target: &RevokeTarget,
    at: OffsetDateTime,
    reason: &str,
    actor: &str,
) -> Result<Vec<Serial>, WriteFail> {
    let at_secs = at.unix_timestamp();
    let serials: Vec<String> = match target {
        RevokeTarget::Serial(serial) => {
            let serial = serial.to_string();
            let rows = conn
                .query(
                    "UPDATE certificates SET revoked_at = $2, revocation_reason = $3
                     WHERE serial = $1 AND revoked_at IS NULL RETURNING serial",
                    &[&serial, &at_secs, &reason],
                )
                .await?;
            if rows.is_empty() {
                let exists = conn
                    .query("SELECT 1 FROM certificates WHERE serial = $1", &[&serial])
                    .await?;
                if exists.is_empty() {
                    return Err(StoreError::NotFound(format!("certificate {serial}")).into());
                }
                Vec::new()
            } else {
                vec![serial]
            }
        }
        RevokeTarget::Name { name, role } => conn
            .query(
                "UPDATE certificates SET revoked_at = $2, revocation_reason = $3
                 WHERE name = $1 AND role <> 'ca' AND ($4::text IS NULL OR role = $4)
                   AND revoked_at IS NULL
                 RETURNING serial",
                &[name, &at_secs, &reason, &role.map(|r| r.as_str())],
            )
            .await?
            .iter()
            .map(|r| r.try_get(0).map_err(corrupt))
            .collect::<Result<_, _>>()?,
    };
    let entries: Vec<AuditEntry> = serials
        .iter()
        .map(|s| AuditEntry::new(at, AuditKind::Revoke, actor, s.clone(), reason.to_string()))
        .collect();
    insert_audit(conn, &entries).await?;
    Ok(serials
        .iter()
        .map(|s| parse_serial(s))
        .collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_take_row_locks_in_one_order() {
        let now = OffsetDateTime::now_utc();
        let revoke = |id: &str| {
            Write::Change(Box::new(Change::RevokeToken(
                id.into(),
                AuditEntry::new(now, AuditKind::TokenRevoke, "a", id, ""),
            )))
        };
        let mut writes = [
            Write::Change(Box::new(Change::Engine {
                name: "a".into(),
                endpoint: "tcp://192.0.2.1:2376".into(),
                serial: "01".parse().unwrap(),
                audit: AuditEntry::new(now, AuditKind::EngineReport, "a", "a", ""),
            })),
            revoke("b"),
            revoke("a"),
        ];
        writes.sort_by_cached_key(lock_key);
        let keys: Vec<(u8, String)> = writes.iter().map(lock_key).collect();
        assert_eq!(keys, [(0, "a".into()), (0, "b".into()), (3, "a".into())]);
    }
}
