//! The CA's own certificates and lifecycle: the update (in the writer's savepoint; the
//! writer adds its audit entries) and the reads.

use rusqlite::{Connection, OptionalExtension, params};

use super::db_error;
use crate::store::columns;
use crate::store::{CaCertRecord, CaMaterial, CaUpdate, StoreError};

pub(super) fn apply(tx: &rusqlite::Savepoint<'_>, u: &CaUpdate) -> Result<u64, StoreError> {
    let expected = i64::try_from(u.expected_generation).unwrap_or(i64::MAX);
    let (mode, started) = u.rotation.columns();
    let at = u.at.unix_timestamp();
    let moved = tx
        .execute(
            "UPDATE ca_lifecycle SET generation = generation + 1,
                 active_root = COALESCE(?2, active_root),
                 rotation_started_at = CASE ?3 WHEN 0 THEN rotation_started_at WHEN 1 THEN ?4 ELSE NULL END
             WHERE id = 1 AND generation = ?1",
            params![expected, u.active_root, mode, started],
        )
        .map_err(db_error)?;
    if moved == 0 {
        return Err(StoreError::Conflict(
            "the CA's certificates changed meanwhile".into(),
        ));
    }
    for id in &u.remove {
        tx.execute("DELETE FROM ca_certificates WHERE id = ?1", [id])
            .map_err(db_error)?;
    }
    for c in &u.add {
        let n = tx
            .execute(
                "INSERT INTO ca_certificates (id, kind, der, key_pem, added_at, retired_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING",
                params![
                    c.id,
                    c.kind.as_str(),
                    c.der,
                    c.key_pem,
                    c.added_at.unix_timestamp(),
                    c.retired_at.map(time::OffsetDateTime::unix_timestamp)
                ],
            )
            .map_err(db_error)?;
        if n == 0 {
            return Err(StoreError::Conflict(format!("CA certificate {}", c.id)));
        }
    }
    for id in &u.retire {
        tx.execute(
            "UPDATE ca_certificates SET retired_at = ?2 WHERE id = ?1 AND retired_at IS NULL",
            params![id, at],
        )
        .map_err(db_error)?;
    }
    Ok(u.expected_generation + 1)
}

pub(super) fn generation(c: &Connection) -> Result<u64, StoreError> {
    let g: Option<i64> = c
        .prepare_cached("SELECT generation FROM ca_lifecycle WHERE id = 1")
        .map_err(db_error)?
        .query_row([], |r| r.get(0))
        .optional()
        .map_err(db_error)?;
    Ok(g.and_then(|g| u64::try_from(g).ok()).unwrap_or(0))
}

pub(super) fn material(c: &Connection) -> Result<CaMaterial, StoreError> {
    let row: Option<(i64, Option<String>, Option<i64>)> = c
        .query_row(
            "SELECT generation, active_root, rotation_started_at FROM ca_lifecycle WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(db_error)?;
    let Some((generation, active_root, rotation)) = row else {
        return Ok(CaMaterial::default());
    };
    let mut stmt = c
        .prepare(
            "SELECT id, kind, der, key_pem, added_at, retired_at FROM ca_certificates ORDER BY rowid",
        )
        .map_err(db_error)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, Option<i64>>(5)?,
            ))
        })
        .map_err(db_error)?;
    let mut certs = Vec::new();
    for row in rows {
        let (id, kind, der, key_pem, added, retired) = row.map_err(db_error)?;
        certs.push(CaCertRecord {
            id,
            kind: kind
                .parse()
                .map_err(|e: dtca_pki::AuthorityError| StoreError::Corrupt(e.to_string()))?,
            der,
            key_pem,
            added_at: columns::time(added).map_err(StoreError::Corrupt)?,
            retired_at: retired
                .map(columns::time)
                .transpose()
                .map_err(StoreError::Corrupt)?,
        });
    }
    Ok(CaMaterial {
        generation: u64::try_from(generation).unwrap_or(0),
        certs,
        active_root,
        rotation_started: rotation
            .map(columns::time)
            .transpose()
            .map_err(StoreError::Corrupt)?,
    })
}
