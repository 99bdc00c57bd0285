//! Issuances, the hot path: one statement each, sent with its savepoint marker, and the
//! uses of a shared token counted once per batch while its row is locked.

use dtca_pki::identity::Role;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::claims::claim;
use super::conn::Conn;
use super::failure::{BatchFail, WriteFail, broken};
use super::{columns, corrupt, parse_serial, time_of};
use crate::store::{Issuance, SUPERSEDED_UNUSED, StoreError};

/// A token whose row this transaction has locked by consuming a use.
#[derive(Debug, Clone, Copy)]
pub(super) struct TokenState {
    /// Uses left, as this transaction sees them.
    left: i64,
    /// Its expiry, Unix seconds.
    expires_at: i64,
    /// Uses taken since the row was last written, to add before the commit.
    pending: i64,
}

/// Tokens whose rows this transaction holds locked. A token shared by many enrollments
/// (`--uses 500` for a fleet) would otherwise have its row updated once per
/// certificate, each update waiting behind the others and lengthening the row's version
/// chain. Instead the first enrollment of a batch takes the row lock with the
/// conditional update, and the next ones are counted here, exactly (no one else can
/// change the row while the lock is held), and written with one update before the
/// commit, or before any other write to that token.
#[derive(Debug, Default)]
pub(super) struct Locked {
    pub(super) tokens: std::collections::HashMap<String, TokenState>,
}

impl Locked {
    /// `None`: not locked here, consume in the database. `Some(Ok)`: a use is left.
    pub(super) fn check(&self, i: &Issuance) -> Option<Result<(), StoreError>> {
        let state = self.tokens.get(i.token_id.as_ref()?)?;
        Some(if state.expires_at <= i.at.unix_timestamp() {
            time_of(state.expires_at).and_then(|at| Err(StoreError::TokenExpired(at)))
        } else if state.left <= 0 {
            Err(StoreError::TokenUsedUp)
        } else {
            Ok(())
        })
    }

    pub(super) fn took_one(&mut self, i: &Issuance) {
        if let Some(state) = i.token_id.as_ref().and_then(|id| self.tokens.get_mut(id)) {
            state.left -= 1;
            state.pending += 1;
        }
    }

    /// Writes the counted uses of one token (and forgets it), or of all.
    pub(super) async fn flush(
        &mut self,
        conn: &mut Conn,
        only: Option<&str>,
    ) -> Result<(), tokio_postgres::Error> {
        let taken: Vec<(String, i64)> = match only {
            Some(id) => self
                .tokens
                .remove(id)
                .map(|s| (id.to_string(), s.pending))
                .into_iter()
                .collect(),
            None => self
                .tokens
                .iter_mut()
                .map(|(id, s)| (id.clone(), std::mem::take(&mut s.pending)))
                .collect(),
        };
        for (id, pending) in taken.into_iter().filter(|(_, p)| *p > 0) {
            conn.execute(
                "UPDATE tokens SET uses = uses + $2 WHERE id = $1",
                &[&id, &pending],
            )
            .await?;
        }
        Ok(())
    }
}

/// Consumes the token use (enrollment) or supersedes the renewed certificate (renewal),
/// stores the certificate and audits, in one statement: each step only when the one
/// before it matched. The row count of the conditional updates decides, so concurrent
/// enrollments of a single-use token on any replica store one certificate: the others
/// wait for the row lock, re-check the updated row, and match nothing.
const ISSUE: &str = "
WITH consumed AS (
    UPDATE tokens SET uses = uses + 1
    WHERE id = $1 AND uses < max_uses AND revoked_at IS NULL AND expires_at > $2
    RETURNING id, max_uses - uses AS remaining, expires_at
), superseded AS (
    UPDATE certificates SET renewed_by = $3
    WHERE serial = $4 AND revoked_at IS NULL
      AND (renewed_by IS NULL OR NOT EXISTS (
            SELECT 1 FROM certificates s
            WHERE s.serial = certificates.renewed_by AND s.first_used_at IS NOT NULL))
      AND ($1::text IS NULL OR EXISTS (SELECT 1 FROM consumed))
    RETURNING serial
), orphaned AS (
    UPDATE certificates SET revoked_at = $2, revocation_reason = $22
    WHERE serial = (SELECT renewed_by FROM certificates WHERE serial = $4)
      AND revoked_at IS NULL AND first_used_at IS NULL
      AND EXISTS (SELECT 1 FROM superseded)
    RETURNING serial
), checked AS (
    SELECT ($1::text IS NULL OR EXISTS (SELECT 1 FROM consumed))
       AND ($4::text IS NULL OR EXISTS (SELECT 1 FROM superseded)) AS ok
), stored AS (
    INSERT INTO certificates (serial, identity, role, name, dns, ips, not_before, not_after,
                              der, token_id, renewed_from, renewed_by, policy, issued_at,
                              revoked_at, revocation_reason, access)
    SELECT $3, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, NULL, $15, $16, NULL, NULL, $23
    FROM checked WHERE ok
    RETURNING serial
), logged AS (
    INSERT INTO audit (at, kind, actor, subject, detail)
    SELECT e.at, e.kind, e.actor, e.subject, e.detail
    FROM (
        SELECT 0::bigint AS n, $2::bigint AS at, 'revoke'::text AS kind,
               'ca-server'::text AS actor, o.serial AS subject, $22::text AS detail
        FROM orphaned o
        UNION ALL
        SELECT u.n, u.at, u.kind, u.actor, u.subject, u.detail
        FROM unnest($17::bigint[], $18::text[], $19::text[], $20::text[], $21::text[])
             WITH ORDINALITY AS u(at, kind, actor, subject, detail, n)
    ) e
    WHERE EXISTS (SELECT 1 FROM stored)
    ORDER BY e.n
    RETURNING id
)
SELECT EXISTS (SELECT 1 FROM stored), (SELECT count(*) FROM logged),
       (SELECT remaining FROM consumed), (SELECT expires_at FROM consumed)";

/// Runs [`ISSUE`] pipelined behind its savepoint `mark`: one round trip when it stores.
/// With `consume`, the token use is taken in the database and the token's state (now
/// locked by this transaction) returned; without, the caller has counted it.
pub(super) async fn issue(
    conn: &mut Conn,
    mark: &str,
    i: &Issuance,
    consume: bool,
) -> Result<Result<Option<TokenState>, WriteFail>, BatchFail> {
    let statement = conn.statement(ISSUE).await.map_err(broken)?;
    let c = &i.cert;
    let policy = match serde_json::to_string(&c.policy) {
        Ok(p) => p,
        Err(e) => return Ok(Err(StoreError::Corrupt(e.to_string()).into())),
    };
    let serial = c.summary.serial.to_string();
    let renewal_of = i.renewal_of.as_ref().map(ToString::to_string);
    let identity = &c.summary.identity;
    let audit_at: Vec<i64> = i.audit.iter().map(|e| e.at.unix_timestamp()).collect();
    let kind: Vec<&str> = i.audit.iter().map(|e| e.kind.as_str()).collect();
    let actor: Vec<&str> = i.audit.iter().map(|e| e.actor.as_str()).collect();
    let subject: Vec<&str> = i.audit.iter().map(|e| e.subject.as_str()).collect();
    let detail: Vec<&str> = i.audit.iter().map(|e| e.detail.as_str()).collect();
    let (at, uri, role) = (
        i.at.unix_timestamp(),
        identity.uri(),
        identity.role.as_str(),
    );
    let (dns, ips) = (
        columns::join(&c.summary.dns_names),
        columns::join(&c.summary.ip_addresses),
    );
    let (not_before, not_after) = (
        c.summary.not_before.unix_timestamp(),
        c.summary.not_after.unix_timestamp(),
    );
    let renewed_from = c.renewed_from.as_ref().map(ToString::to_string);
    let issued_at = c.issued_at.unix_timestamp();
    let token_id = if consume { i.token_id.as_deref() } else { None };
    let orphan_reason = SUPERSEDED_UNUSED;
    let access = c.summary.access.as_str();
    let params: [&(dyn ToSql + Sync); 23] = [
        &token_id,
        &at,
        &serial,
        &renewal_of,
        &uri,
        &role,
        &identity.name,
        &dns,
        &ips,
        &not_before,
        &not_after,
        &c.der,
        &c.token_id,
        &renewed_from,
        &policy,
        &issued_at,
        &audit_at,
        &kind,
        &actor,
        &subject,
        &detail,
        &orphan_reason,
        &access,
    ];
    // The CA's own certificates hold no name; the others claim theirs first (a second
    // round trip), in the same savepoint.
    let claims = identity.role != Role::Ca;
    if claims {
        conn.batch(mark).await.map_err(broken)?;
        if let Err(refusal) = claim(conn, i).await {
            conn.batch("ROLLBACK TO SAVEPOINT w")
                .await
                .map_err(broken)?;
            return Ok(Err(refusal));
        }
    }
    let stored = if claims {
        conn.busy = true;
        let stored = conn.client.query_one(&statement, &params).await;
        conn.busy = false;
        stored
    } else {
        conn.busy = true;
        let client = &conn.client;
        // `biased`: the savepoint marker goes on the wire first, then the statement.
        let (marked, stored) = tokio::join!(
            biased;
            client.batch_execute(mark),
            client.query_one(&statement, &params)
        );
        conn.busy = false;
        marked.map_err(broken)?;
        stored
    };
    match stored {
        Ok(row) if row.try_get::<_, bool>(0).unwrap_or(false) => {
            let left: Option<i64> = row.try_get(2).unwrap_or(None);
            let expires_at: Option<i64> = row.try_get(3).unwrap_or(None);
            Ok(Ok(left.zip(expires_at).map(|(left, expires_at)| {
                TokenState {
                    left,
                    expires_at,
                    pending: 0,
                }
            })))
        }
        Ok(_) => {
            // Refused: undo whatever matched, then say which check failed.
            conn.batch("ROLLBACK TO SAVEPOINT w")
                .await
                .map_err(broken)?;
            Ok(Err(why_not_stored(conn, i).await))
        }
        Err(e) => {
            conn.batch("ROLLBACK TO SAVEPOINT w")
                .await
                .map_err(broken)?;
            Ok(Err(if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                StoreError::Conflict(format!("certificate {serial}")).into()
            } else {
                e.into()
            }))
        }
    }
}

/// Says which check an issuance failed. Uses only grow and revocations are final, so
/// what this reads is at least as strict as what the statement saw.
async fn why_not_stored(conn: &mut Conn, i: &Issuance) -> WriteFail {
    let at = i.at.unix_timestamp();
    if let Some(id) = &i.token_id {
        let rows = match conn
            .query(
                "SELECT expires_at, revoked_at, uses >= max_uses FROM tokens WHERE id = $1",
                &[id],
            )
            .await
        {
            Ok(rows) => rows,
            Err(e) => return e.into(),
        };
        let Some(row) = rows.first() else {
            return StoreError::TokenUnknown.into();
        };
        let read = || -> Result<Option<StoreError>, StoreError> {
            let expires_at: i64 = row.try_get(0).map_err(corrupt)?;
            let revoked_at: Option<i64> = row.try_get(1).map_err(corrupt)?;
            let used_up: bool = row.try_get(2).map_err(corrupt)?;
            Ok(if revoked_at.is_some() {
                Some(StoreError::TokenRevoked)
            } else if expires_at <= at {
                Some(StoreError::TokenExpired(time_of(expires_at)?))
            } else if used_up {
                Some(StoreError::TokenUsedUp)
            } else {
                None
            })
        };
        match read() {
            Ok(Some(refusal)) | Err(refusal) => return refusal.into(),
            Ok(None) => {}
        }
    }
    if let Some(old) = &i.renewal_of {
        let text = old.to_string();
        let rows = match conn
            .query(
                "SELECT revoked_at, renewed_by FROM certificates WHERE serial = $1",
                &[&text],
            )
            .await
        {
            Ok(rows) => rows,
            Err(e) => return e.into(),
        };
        let Some(row) = rows.first() else {
            return StoreError::NotFound(format!("certificate {old}")).into();
        };
        let read = || -> Result<StoreError, StoreError> {
            let revoked_at: Option<i64> = row.try_get(0).map_err(corrupt)?;
            let renewed_by: Option<String> = row.try_get(1).map_err(corrupt)?;
            Ok(match (revoked_at, renewed_by) {
                (None, Some(successor)) => StoreError::Superseded {
                    serial: old.clone(),
                    successor: parse_serial(&successor)?,
                },
                _ => StoreError::CertRevoked(old.clone()),
            })
        };
        return match read() {
            Ok(refusal) | Err(refusal) => refusal.into(),
        };
    }
    StoreError::Unavailable("the certificate was not stored".into()).into()
}
