//! The statements of each write, applied by the writer thread inside its savepoint:
//! issuances (the token use or the renewal link, the name and DNS-name claims, the
//! certificate, its audit) and the other changes.

use dtca_pki::Serial;
use dtca_pki::identity::Role;
use rusqlite::{OptionalExtension, params};
use time::OffsetDateTime;

use super::db_error;
use crate::store::columns::{self, parse_serial, secs};
use crate::store::queue::{Change, Outcome, Write};
use crate::store::{
    AuditEntry, AuditKind, Issuance, REPLACED, RevokeTarget, SUPERSEDED_UNUSED, StoreError,
};

pub(super) fn apply(
    tx: &mut rusqlite::Savepoint<'_>,
    write: &Write,
) -> Result<Outcome, StoreError> {
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
                    "INSERT INTO tokens (id, secret_hash, role, name, max_uses, uses, created_at, expires_at, revoked_at, policy, cert_ttl, replaces, access)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL, ?9, ?10, ?11, ?12) ON CONFLICT (id) DO NOTHING",
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
                    t.replace,
                    t.access.as_str(),
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
            serial,
            audit,
        } => {
            tx.execute(
                "INSERT INTO nodes (name, endpoint, updated_at, serial) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET endpoint = excluded.endpoint,
                     updated_at = excluded.updated_at, serial = excluded.serial",
                params![
                    name,
                    endpoint,
                    audit.at.unix_timestamp(),
                    serial.to_string()
                ],
            )
            .map_err(db_error)?;
            insert_audit(tx, audit)?;
        }
        Change::Report(report) => {
            let state = serde_json::to_string(&report.state)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            tx.prepare_cached(
                "INSERT INTO agent_reports (name, serial, received_at, state) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET serial = excluded.serial,
                     received_at = excluded.received_at, state = excluded.state",
            )
            .map_err(db_error)?
            .execute(params![
                report.name,
                report.serial.to_string(),
                report.received_at.unix_timestamp(),
                state
            ])
            .map_err(db_error)?;
        }
        Change::Ca(update) => {
            let generation = super::ca::apply(tx, update)?;
            for entry in &update.audit {
                insert_audit(tx, entry)?;
            }
            return Ok(Outcome::Generation(generation));
        }
        Change::RestartRequest {
            request,
            limits,
            actor,
            now,
        } => {
            let (decision, audit) = super::slots::request(tx, request, limits, actor, *now)?;
            for entry in &audit {
                insert_audit(tx, entry)?;
            }
            return Ok(Outcome::Restart(decision));
        }
        Change::RestartRelease { name, audit } => {
            let released = super::slots::release(tx, name)?;
            if released {
                insert_audit(tx, audit)?;
            }
            return Ok(Outcome::Released(released));
        }
        Change::MarkUsed { serial, at } => {
            tx.prepare_cached(
                "UPDATE certificates SET first_used_at = ?2 WHERE serial = ?1 AND first_used_at IS NULL",
            )
            .map_err(db_error)?
            .execute(params![serial.to_string(), at.unix_timestamp()])
            .map_err(db_error)?;
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
        supersede(tx, old, &serial, issuance.at)?;
    }
    let id = &c.summary.identity;
    if id.role != Role::Ca {
        claim_name(tx, issuance)?;
    }
    if id.role == Role::Node {
        claim_host_names(tx, issuance)?;
    }
    let policy =
        serde_json::to_string(&c.policy).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    tx.prepare_cached(
        "INSERT INTO certificates (serial, identity, role, name, dns, ips, not_before, not_after, der,
                                   token_id, renewed_from, renewed_by, policy, issued_at, revoked_at, revocation_reason,
                                   access)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, NULL, ?12, ?13, NULL, NULL, ?14)",
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
        c.summary.access.as_str(),
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

/// Links the renewed certificate `old` to its successor `new`. `old` must be unrevoked;
/// if it was renewed before, that earlier successor must never have been used (then this
/// is crash recovery: its holder never got it, or lost it) and is revoked, so the
/// identity keeps one current certificate.
fn supersede(
    tx: &rusqlite::Savepoint<'_>,
    old: &Serial,
    new: &str,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    let old_text = old.to_string();
    let row: Option<(Option<i64>, Option<String>)> = tx
        .prepare_cached("SELECT revoked_at, renewed_by FROM certificates WHERE serial = ?1")
        .map_err(db_error)?
        .query_row([&old_text], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(db_error)?;
    let successor = match row {
        None => return Err(StoreError::NotFound(format!("certificate {old}"))),
        Some((Some(_), _)) => return Err(StoreError::CertRevoked(old.clone())),
        Some((None, successor)) => successor,
    };
    if let Some(successor) = successor {
        let used: Option<Option<i64>> = tx
            .prepare_cached("SELECT first_used_at FROM certificates WHERE serial = ?1")
            .map_err(db_error)?
            .query_row([&successor], |r| r.get(0))
            .optional()
            .map_err(db_error)?;
        if let Some(Some(_)) = used {
            return Err(StoreError::Superseded {
                serial: old.clone(),
                successor: parse_serial(&successor)?,
            });
        }
        let revoked = tx
            .prepare_cached(
                "UPDATE certificates SET revoked_at = ?2, revocation_reason = ?3
                 WHERE serial = ?1 AND revoked_at IS NULL",
            )
            .map_err(db_error)?
            .execute(params![successor, at.unix_timestamp(), SUPERSEDED_UNUSED])
            .map_err(db_error)?;
        if revoked > 0 {
            insert_audit(
                tx,
                &AuditEntry::new(
                    at,
                    AuditKind::Revoke,
                    "ca-server",
                    successor,
                    SUPERSEDED_UNUSED,
                ),
            )?;
        }
    }
    tx.prepare_cached("UPDATE certificates SET renewed_by = ?2 WHERE serial = ?1")
        .map_err(db_error)?
        .execute([&old_text, new])
        .map_err(db_error)?;
    Ok(())
}

/// Gives the issued certificate its identity's name. An enrollment of a name whose holder
/// is live (unexpired, unrevoked) is refused, unless the token replaces: then every
/// certificate of the identity is revoked. A renewal carries the name on.
fn claim_name(tx: &rusqlite::Savepoint<'_>, issuance: &Issuance) -> Result<(), StoreError> {
    let c = &issuance.cert;
    let id = &c.summary.identity;
    let at = issuance.at.unix_timestamp();
    if issuance.renewal_of.is_none() {
        let holder: Option<(String, i64, Option<i64>)> = tx
            .prepare_cached(
                "SELECT i.serial, i.not_after, c.revoked_at FROM identities i
                 LEFT JOIN certificates c ON c.serial = i.serial
                 WHERE i.role = ?1 AND i.name = ?2",
            )
            .map_err(db_error)?
            .query_row(params![id.role.as_str(), id.name], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
            .map_err(db_error)?;
        let live = holder.filter(|(_, until, revoked)| *until > at && revoked.is_none());
        if let (Some((holder, until, _)), false) = (&live, issuance.replace) {
            return Err(StoreError::NameTaken {
                identity: id.uri(),
                holder: parse_serial(holder)?,
                until: columns::time(*until).map_err(StoreError::Corrupt)?,
            });
        }
        if issuance.replace {
            revoke(
                tx,
                &RevokeTarget::Name {
                    name: id.name.clone(),
                    role: Some(id.role),
                },
                issuance.at,
                REPLACED,
                issuance
                    .cert
                    .token_id
                    .as_deref()
                    .map_or("ca-server".to_string(), |t| format!("token:{t}"))
                    .as_str(),
            )?;
        }
    }
    tx.prepare_cached(
        "INSERT INTO identities (role, name, serial, not_after) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (role, name) DO UPDATE SET serial = excluded.serial, not_after = excluded.not_after",
    )
    .map_err(db_error)?
    .execute(params![
        id.role.as_str(),
        id.name,
        c.summary.serial.to_string(),
        c.summary.not_after.unix_timestamp()
    ])
    .map_err(db_error)?;
    Ok(())
}

/// Gives a node certificate its DNS names: one another identity's live certificate
/// carries is refused. The identity's names it no longer carries are released.
fn claim_host_names(tx: &rusqlite::Savepoint<'_>, issuance: &Issuance) -> Result<(), StoreError> {
    let c = &issuance.cert;
    let id = &c.summary.identity;
    let at = issuance.at.unix_timestamp();
    for dns in &c.summary.dns_names {
        let holder: Option<(String, String, String, i64, Option<i64>)> = tx
            .prepare_cached(
                "SELECT h.role, h.name, h.serial, h.not_after, c.revoked_at FROM host_names h
                 LEFT JOIN certificates c ON c.serial = h.serial WHERE h.dns = ?1",
            )
            .map_err(db_error)?
            .query_row([dns], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .optional()
            .map_err(db_error)?;
        if let Some((role, name, serial, until, None)) = holder
            && until > at
            && (role.as_str(), name.as_str()) != (id.role.as_str(), id.name.as_str())
        {
            return Err(StoreError::HostNameTaken {
                dns: dns.clone(),
                identity: format!("{role}/{name}"),
                holder: parse_serial(&serial)?,
                until: columns::time(until).map_err(StoreError::Corrupt)?,
            });
        }
    }
    tx.prepare_cached("DELETE FROM host_names WHERE role = ?1 AND name = ?2")
        .map_err(db_error)?
        .execute(params![id.role.as_str(), id.name])
        .map_err(db_error)?;
    for dns in &c.summary.dns_names {
        tx.prepare_cached(
            "INSERT INTO host_names (dns, role, name, serial, not_after) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (dns) DO UPDATE SET role = excluded.role, name = excluded.name,
                 serial = excluded.serial, not_after = excluded.not_after",
        )
        .map_err(db_error)?
        .execute(params![
            dns,
            id.role.as_str(),
            id.name,
            c.summary.serial.to_string(),
            c.summary.not_after.unix_timestamp()
        ])
        .map_err(db_error)?;
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
                       AND revoked_at IS NULL RETURNING serial",
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
