//! The CA's own certificates and lifecycle: the update (in the writer's savepoint) and
//! the reads, each one statement so it sees one snapshot.

use tokio_postgres::Row;

use super::audit::insert_audit;
use super::failure::WriteFail;
use super::rows::{SUMMARY_COLUMNS, record_from_row};
use super::{Conn, corrupt, time_of, unavailable};
use crate::store::{CaCertRecord, CaMaterial, CaUpdate, CertRecord, StoreError};

/// The migration that makes the tables (appended to the schema's list).
pub(super) const MIGRATION: &str = "
CREATE TABLE ca_certificates (
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    der BYTEA NOT NULL,
    key_pem TEXT,
    added_at BIGINT NOT NULL,
    retired_at BIGINT
);
CREATE TABLE ca_lifecycle (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    generation BIGINT NOT NULL,
    active_root TEXT,
    rotation_started_at BIGINT
);
INSERT INTO ca_lifecycle (id, generation) VALUES (1, 0);
";

pub(super) async fn apply(conn: &mut Conn, u: &CaUpdate) -> Result<u64, WriteFail> {
    let expected = i64::try_from(u.expected_generation).unwrap_or(i64::MAX);
    let (mode, started) = u.rotation.columns();
    let at = u.at.unix_timestamp();
    let moved = conn
        .execute(
            "UPDATE ca_lifecycle SET generation = generation + 1,
                 active_root = COALESCE($2, active_root),
                 rotation_started_at = CASE $3::bigint WHEN 0 THEN rotation_started_at
                                                       WHEN 1 THEN $4 ELSE NULL END
             WHERE id = 1 AND generation = $1",
            &[&expected, &u.active_root, &mode, &started],
        )
        .await?;
    if moved == 0 {
        return Err(StoreError::Conflict("the CA's certificates changed meanwhile".into()).into());
    }
    for id in &u.remove {
        conn.execute("DELETE FROM ca_certificates WHERE id = $1", &[id])
            .await?;
    }
    for c in &u.add {
        let n = conn
            .execute(
                "INSERT INTO ca_certificates (id, kind, der, key_pem, added_at, retired_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
                &[
                    &c.id,
                    &c.kind.as_str(),
                    &c.der,
                    &c.key_pem,
                    &c.added_at.unix_timestamp(),
                    &c.retired_at.map(time::OffsetDateTime::unix_timestamp),
                ],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::Conflict(format!("CA certificate {}", c.id)).into());
        }
    }
    for id in &u.retire {
        conn.execute(
            "UPDATE ca_certificates SET retired_at = $2 WHERE id = $1 AND retired_at IS NULL",
            &[id, &at],
        )
        .await?;
    }
    insert_audit(conn, &u.audit).await?;
    Ok(u.expected_generation + 1)
}

pub(super) async fn generation(conn: &mut Conn) -> Result<u64, StoreError> {
    let rows = conn
        .query("SELECT generation FROM ca_lifecycle WHERE id = 1", &[])
        .await
        .map_err(unavailable)?;
    match rows.first() {
        Some(r) => Ok(u64::try_from(r.try_get::<_, i64>(0).map_err(corrupt)?).unwrap_or(0)),
        None => Ok(0),
    }
}

pub(super) async fn material(conn: &mut Conn) -> Result<CaMaterial, StoreError> {
    let rows = conn
        .query(
            "SELECT l.generation, l.active_root, l.rotation_started_at,
                    c.id, c.kind, c.der, c.key_pem, c.added_at, c.retired_at
             FROM ca_lifecycle l LEFT JOIN ca_certificates c ON TRUE
             WHERE l.id = 1 ORDER BY c.seq",
            &[],
        )
        .await
        .map_err(unavailable)?;
    let Some(first) = rows.first() else {
        return Ok(CaMaterial::default());
    };
    let generation: i64 = first.try_get(0).map_err(corrupt)?;
    let active_root: Option<String> = first.try_get(1).map_err(corrupt)?;
    let rotation: Option<i64> = first.try_get(2).map_err(corrupt)?;
    let mut certs = Vec::new();
    for r in &rows {
        if let Some(c) = cert_from_row(r)? {
            certs.push(c);
        }
    }
    Ok(CaMaterial {
        generation: u64::try_from(generation).unwrap_or(0),
        certs,
        active_root,
        rotation_started: rotation.map(time_of).transpose()?,
    })
}

fn cert_from_row(r: &Row) -> Result<Option<CaCertRecord>, StoreError> {
    let Some(id) = r.try_get::<_, Option<String>>(3).map_err(corrupt)? else {
        return Ok(None);
    };
    let kind: String = r.try_get(4).map_err(corrupt)?;
    Ok(Some(CaCertRecord {
        id,
        kind: kind
            .parse()
            .map_err(|e: dtca_pki::AuthorityError| StoreError::Corrupt(e.to_string()))?,
        der: r.try_get(5).map_err(corrupt)?,
        key_pem: r.try_get(6).map_err(corrupt)?,
        added_at: time_of(r.try_get(7).map_err(corrupt)?)?,
        retired_at: r
            .try_get::<_, Option<i64>>(8)
            .map_err(corrupt)?
            .map(time_of)
            .transpose()?,
    }))
}

pub(super) async fn current(
    conn: &mut Conn,
    now: time::OffsetDateTime,
) -> Result<Vec<CertRecord>, StoreError> {
    let rows = conn
        .query(
            &format!(
                "SELECT {SUMMARY_COLUMNS}, der, token_id, renewed_from, policy, issued_at, revocation_reason,
                        first_used_at
                 FROM certificates
                 WHERE role <> 'ca' AND revoked_at IS NULL AND renewed_by IS NULL AND not_after > $1
                 ORDER BY role, name, not_after"
            ),
            &[&now.unix_timestamp()],
        )
        .await
        .map_err(unavailable)?;
    rows.iter().map(record_from_row).collect()
}
