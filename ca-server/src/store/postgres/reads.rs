//! The scans behind the store's reads, each on a read connection taken from the pool by
//! the caller (see `Readers`).

use dtca_pki::Serial;
use dtca_pki::identity::Role;
use time::OffsetDateTime;

use super::conn::Conn;
use super::rows::summary_from_row;
use super::{corrupt, parse_serial, time_of, unavailable};
use crate::store::{AgentRecord, AuditEntry, EngineRecord, NodeRecord, StoreError};

pub(super) async fn revocations_since(
    c: &mut Conn,
    since: OffsetDateTime,
) -> Result<Vec<(Serial, OffsetDateTime)>, StoreError> {
    let rows = c
        .query(
            "SELECT serial, revoked_at FROM certificates
             WHERE revoked_at IS NOT NULL AND revoked_at >= $1 ORDER BY revoked_at",
            &[&since.unix_timestamp()],
        )
        .await
        .map_err(unavailable)?;
    rows.iter()
        .map(|r| {
            let serial: String = r.try_get(0).map_err(corrupt)?;
            Ok((
                parse_serial(&serial)?,
                time_of(r.try_get(1).map_err(corrupt)?)?,
            ))
        })
        .collect()
}

pub(super) async fn reports(
    c: &mut Conn,
    since: OffsetDateTime,
) -> Result<Vec<AgentRecord>, StoreError> {
    let rows = c
        .query(
            "SELECT name, serial, received_at, state FROM agent_reports
             WHERE received_at >= $1 ORDER BY name",
            &[&since.unix_timestamp()],
        )
        .await
        .map_err(unavailable)?;
    rows.iter()
        .map(|r| {
            let serial: String = r.try_get(1).map_err(corrupt)?;
            let state: String = r.try_get(3).map_err(corrupt)?;
            Ok(AgentRecord {
                name: r.try_get(0).map_err(corrupt)?,
                serial: parse_serial(&serial)?,
                received_at: time_of(r.try_get(2).map_err(corrupt)?)?,
                state: serde_json::from_str(&state)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            })
        })
        .collect()
}

pub(super) async fn report_times(
    c: &mut Conn,
    since: OffsetDateTime,
) -> Result<Vec<(String, i64)>, StoreError> {
    let rows = c
        .query(
            "SELECT name, received_at FROM agent_reports WHERE received_at >= $1",
            &[&since.unix_timestamp()],
        )
        .await
        .map_err(unavailable)?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get(0).map_err(corrupt)?,
                r.try_get(1).map_err(corrupt)?,
            ))
        })
        .collect()
}

pub(super) async fn holders(
    c: &mut Conn,
    identities: &[(Role, String)],
) -> Result<Vec<(Role, String, Serial)>, StoreError> {
    let roles: Vec<&str> = identities.iter().map(|(r, _)| r.as_str()).collect();
    let names: Vec<&str> = identities.iter().map(|(_, n)| n.as_str()).collect();
    let rows = c
        .query(
            "SELECT i.role, i.name, i.serial FROM identities i
             JOIN unnest($1::text[], $2::text[]) AS w(role, name)
               ON i.role = w.role AND i.name = w.name",
            &[&roles, &names],
        )
        .await
        .map_err(unavailable)?;
    rows.iter()
        .map(|r| {
            let role: String = r.try_get(0).map_err(corrupt)?;
            let serial: String = r.try_get(2).map_err(corrupt)?;
            Ok((
                role.parse()
                    .map_err(|e: dtca_pki::identity::IdentityError| {
                        StoreError::Corrupt(e.to_string())
                    })?,
                r.try_get(1).map_err(corrupt)?,
                parse_serial(&serial)?,
            ))
        })
        .collect()
}

pub(super) async fn nodes(
    c: &mut Conn,
    now: OffsetDateTime,
) -> Result<Vec<NodeRecord>, StoreError> {
    let rows = c
        .query(
            "SELECT DISTINCT ON (c.name)
                    c.serial, c.identity, c.dns, c.ips, c.not_before, c.not_after,
                    c.revoked_at, c.renewed_by, c.access, c.name, n.endpoint
             FROM certificates c LEFT JOIN nodes n ON n.name = c.name
                  AND NOT EXISTS (SELECT 1 FROM certificates r
                                  WHERE r.serial = n.serial AND r.revoked_at IS NOT NULL)
             WHERE c.role = 'node' AND c.revoked_at IS NULL AND c.renewed_by IS NULL
                   AND c.not_after > $2
                   AND (c.not_after > $1
                        OR NOT EXISTS (SELECT 1 FROM certificates r
                                       WHERE r.name = c.name AND r.role = 'node'
                                         AND r.revoked_at IS NOT NULL
                                         AND r.not_after > c.not_after))
             ORDER BY c.name, c.not_after DESC",
            &[&now.unix_timestamp(), &crate::store::expired_since(now)],
        )
        .await
        .map_err(unavailable)?;
    rows.iter()
        .map(|r| {
            Ok(NodeRecord {
                cert: summary_from_row(r)?,
                name: r.try_get(9).map_err(corrupt)?,
                endpoint: r.try_get(10).map_err(corrupt)?,
            })
        })
        .collect()
}

pub(super) async fn engines(c: &mut Conn) -> Result<Vec<EngineRecord>, StoreError> {
    let rows = c
        .query(
            "SELECT name, endpoint, updated_at, serial FROM nodes ORDER BY name",
            &[],
        )
        .await
        .map_err(unavailable)?;
    rows.iter()
        .map(|r| {
            Ok(EngineRecord {
                name: r.try_get(0).map_err(corrupt)?,
                endpoint: r.try_get(1).map_err(corrupt)?,
                updated_at: time_of(r.try_get(2).map_err(corrupt)?)?,
                serial: r
                    .try_get::<_, Option<String>>(3)
                    .map_err(corrupt)?
                    .as_deref()
                    .map(parse_serial)
                    .transpose()?,
            })
        })
        .collect()
}

pub(super) async fn audit(c: &mut Conn, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
    let rows = c
        .query(
            "SELECT at, kind, actor, subject, detail FROM audit ORDER BY id DESC LIMIT $1",
            &[&i64::from(limit)],
        )
        .await
        .map_err(unavailable)?;
    rows.iter()
        .map(|r| {
            Ok(AuditEntry {
                at: time_of(r.try_get(0).map_err(corrupt)?)?,
                kind: r.try_get(1).map_err(corrupt)?,
                actor: r.try_get(2).map_err(corrupt)?,
                subject: r.try_get(3).map_err(corrupt)?,
                detail: r.try_get(4).map_err(corrupt)?,
            })
        })
        .collect()
}
