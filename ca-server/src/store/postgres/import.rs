//! Copying another store into an empty PostgreSQL database (`ca-server store migrate`).
//!
//! Everything goes in one transaction that first locks the tables against writers and
//! checks they are empty; the copy is counted again inside the transaction and once more
//! after the commit. Nothing is merged: a target that holds records is refused, so a
//! second run changes nothing. Tokens and audit entries keep their order (oldest first
//! into the identity columns), certificates keep their revocations and renewal links, the
//! CA's own certificates their lifecycle (a root rotation under way stays under way).

use std::fmt;

use time::OffsetDateTime;

use super::{Conn, columns, describe, secs, unavailable};
use crate::store::{CertQuery, CertRecord, Store, StoreError};

/// Rows sent per statement.
const CHUNK: usize = 500;

/// How many records each table holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Join tokens.
    pub tokens: u64,
    /// Certificates, of which `revoked` are revoked and `renewed` superseded by a renewal.
    pub certificates: u64,
    /// Revoked certificates.
    pub revoked: u64,
    /// Certificates renewed by another one.
    pub renewed: u64,
    /// Reported node engine addresses.
    pub engines: u64,
    /// Audit log entries.
    pub audit: u64,
}

impl Counts {
    /// Whether no table holds anything.
    pub fn is_empty(&self) -> bool {
        self.tokens == 0 && self.certificates == 0 && self.engines == 0 && self.audit == 0
    }

    fn differences(&self, other: &Counts) -> Option<(&'static str, u64, u64)> {
        [
            ("tokens", self.tokens, other.tokens),
            ("certificates", self.certificates, other.certificates),
            ("revoked certificates", self.revoked, other.revoked),
            ("renewed certificates", self.renewed, other.renewed),
            ("node engines", self.engines, other.engines),
            ("audit entries", self.audit, other.audit),
        ]
        .into_iter()
        .find(|(_, a, b)| a != b)
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} tokens, {} certificates ({} revoked, {} renewed), {} node engines, {} audit entries",
            self.tokens, self.certificates, self.revoked, self.renewed, self.engines, self.audit
        )
    }
}

/// Why a copy was refused or undone. Nothing is committed in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(
        "the target database is not empty (it holds {0}); records are never merged, so nothing was copied: use an empty database"
    )]
    NotEmpty(Counts),
    #[error(
        "the source store changed while it was copied ({0}); nothing was copied: stop every `ca-server serve` using it and run again"
    )]
    SourceChanged(String),
    #[error(
        "the copy does not check out: the target holds {found} {table}, the source {expected}; nothing was copied"
    )]
    Mismatch {
        table: &'static str,
        expected: u64,
        found: u64,
    },
    #[error("reading the source store: {0}")]
    Source(StoreError),
    #[error("writing the target database: {0}")]
    Target(StoreError),
}

fn target(e: tokio_postgres::Error) -> ImportError {
    ImportError::Target(unavailable(e))
}

/// Counts every table.
pub(super) async fn count(conn: &mut Conn) -> Result<Counts, tokio_postgres::Error> {
    let rows = conn
        .query(
            "SELECT (SELECT count(*) FROM tokens),
                    (SELECT count(*) FROM certificates),
                    (SELECT count(*) FROM certificates WHERE revoked_at IS NOT NULL),
                    (SELECT count(*) FROM certificates WHERE renewed_by IS NOT NULL),
                    (SELECT count(*) FROM nodes),
                    (SELECT count(*) FROM audit)",
            &[],
        )
        .await?;
    let n = |i: usize| -> u64 {
        rows.first()
            .and_then(|r| r.try_get::<_, i64>(i).ok())
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0)
    };
    Ok(Counts {
        tokens: n(0),
        certificates: n(1),
        revoked: n(2),
        renewed: n(3),
        engines: n(4),
        audit: n(5),
    })
}

/// Copies `source` into the (empty) database behind `conn`; returns the committed counts.
pub(super) async fn run(conn: &mut Conn, source: &dyn Store) -> Result<Counts, ImportError> {
    let result = copy(conn, source).await;
    if result.is_err() {
        let _ = conn.batch("ROLLBACK").await;
    }
    let expected = result?;
    let committed = count(conn).await.map_err(target)?;
    if let Some((table, expected, found)) = expected.differences(&committed) {
        return Err(ImportError::Mismatch {
            table,
            expected,
            found,
        });
    }
    Ok(committed)
}

async fn copy(conn: &mut Conn, source: &dyn Store) -> Result<Counts, ImportError> {
    // Every write to a store appends to its audit log in the same transaction, so the
    // log read first and again last tells whether anything changed in between.
    let audit = source.audit(u32::MAX).await.map_err(ImportError::Source)?;
    let tokens = source.tokens().await.map_err(ImportError::Source)?;
    let summaries = source
        .certificates(&CertQuery {
            now: OffsetDateTime::now_utc(),
            expiring_within: None,
            include_inactive: true,
            limit: None,
            role: None,
            name: None,
        })
        .await
        .map_err(ImportError::Source)?;
    let engines = source.engines().await.map_err(ImportError::Source)?;
    let len = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    let expected = Counts {
        tokens: len(tokens.len()),
        certificates: len(summaries.len()),
        revoked: len(summaries.iter().filter(|c| c.revoked_at.is_some()).count()),
        renewed: len(summaries.iter().filter(|c| c.renewed_by.is_some()).count()),
        engines: len(engines.len()),
        audit: len(audit.len()),
    };

    conn.batch("BEGIN").await.map_err(target)?;
    conn.batch(
        "LOCK TABLE tokens, certificates, nodes, audit, identities, host_names
         IN SHARE ROW EXCLUSIVE MODE",
    )
    .await
    .map_err(target)?;
    let present = count(conn).await.map_err(target)?;
    if !present.is_empty() {
        return Err(ImportError::NotEmpty(present));
    }

    // Oldest first, so the identity column keeps the source's order.
    for chunk in tokens.rchunks(CHUNK).map(|c| c.iter().rev()) {
        let chunk: Vec<_> = chunk.collect();
        let mut policies = Vec::with_capacity(chunk.len());
        for t in &chunk {
            policies.push(
                serde_json::to_string(&t.policy)
                    .map_err(|e| ImportError::Source(StoreError::Corrupt(e.to_string())))?,
            );
        }
        let id: Vec<&str> = chunk.iter().map(|t| t.id.as_str()).collect();
        let hash: Vec<&[u8]> = chunk.iter().map(|t| t.secret_hash.as_slice()).collect();
        let role: Vec<&str> = chunk.iter().map(|t| t.role.as_str()).collect();
        let name: Vec<Option<&str>> = chunk.iter().map(|t| t.name.as_deref()).collect();
        let max_uses: Vec<i64> = chunk.iter().map(|t| i64::from(t.max_uses)).collect();
        let uses: Vec<i64> = chunk.iter().map(|t| i64::from(t.uses)).collect();
        let created: Vec<i64> = chunk
            .iter()
            .map(|t| t.created_at.unix_timestamp())
            .collect();
        let expires: Vec<i64> = chunk
            .iter()
            .map(|t| t.expires_at.unix_timestamp())
            .collect();
        let revoked: Vec<Option<i64>> = chunk
            .iter()
            .map(|t| t.revoked_at.map(OffsetDateTime::unix_timestamp))
            .collect();
        let ttl: Vec<Option<i64>> = chunk.iter().map(|t| t.cert_ttl.map(secs)).collect();
        let replaces: Vec<bool> = chunk.iter().map(|t| t.replace).collect();
        let access: Vec<&str> = chunk.iter().map(|t| t.access.as_str()).collect();
        conn.execute(
            "INSERT INTO tokens (id, secret_hash, role, name, max_uses, uses, created_at,
                                 expires_at, revoked_at, policy, cert_ttl, replaces, access)
             SELECT id, secret_hash, role, name, max_uses, uses, created_at, expires_at,
                    revoked_at, policy, cert_ttl, replaces, access
             FROM unnest($1::text[], $2::bytea[], $3::text[], $4::text[], $5::bigint[],
                         $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::text[],
                         $11::bigint[], $12::boolean[], $13::text[])
                  WITH ORDINALITY AS t(id, secret_hash, role, name, max_uses, uses, created_at,
                                       expires_at, revoked_at, policy, cert_ttl, replaces,
                                       access, n)
             ORDER BY n",
            &[
                &id, &hash, &role, &name, &max_uses, &uses, &created, &expires, &revoked,
                &policies, &ttl, &replaces, &access,
            ],
        )
        .await
        .map_err(target)?;
    }

    for chunk in summaries.chunks(CHUNK) {
        let mut records = Vec::with_capacity(chunk.len());
        for s in chunk {
            let record = source
                .certificate(&s.serial)
                .await
                .map_err(ImportError::Source)?
                .ok_or_else(|| {
                    ImportError::SourceChanged(format!("certificate {} disappeared", s.serial))
                })?;
            records.push(record);
        }
        insert_certificates(conn, &records).await?;
    }
    conn.batch(super::schema::DERIVE_HOLDERS)
        .await
        .map_err(target)?;

    for chunk in engines.chunks(CHUNK) {
        let name: Vec<&str> = chunk.iter().map(|e| e.name.as_str()).collect();
        let endpoint: Vec<&str> = chunk.iter().map(|e| e.endpoint.as_str()).collect();
        let updated: Vec<i64> = chunk
            .iter()
            .map(|e| e.updated_at.unix_timestamp())
            .collect();
        let serial: Vec<Option<String>> = chunk
            .iter()
            .map(|e| e.serial.as_ref().map(ToString::to_string))
            .collect();
        conn.execute(
            "INSERT INTO nodes (name, endpoint, updated_at, serial)
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[])",
            &[&name, &endpoint, &updated, &serial],
        )
        .await
        .map_err(target)?;
    }

    for chunk in audit.rchunks(CHUNK * 4) {
        let chunk: Vec<_> = chunk.iter().rev().cloned().collect();
        super::insert_audit(conn, &chunk).await.map_err(target)?;
    }

    // The CA's own certificates and lifecycle (a root rotation under way stays so).
    let material = source.ca_material().await.map_err(ImportError::Source)?;
    if !material.certs.is_empty() {
        let update = crate::store::CaUpdate {
            expected_generation: 0,
            add: material.certs,
            remove: Vec::new(),
            retire: Vec::new(),
            active_root: material.active_root,
            rotation: material.rotation_started.map_or(
                crate::store::RotationChange::Keep,
                crate::store::RotationChange::Start,
            ),
            audit: Vec::new(),
            at: OffsetDateTime::now_utc(),
        };
        super::ca::apply(conn, &update).await.map_err(|e| match e {
            super::failure::WriteFail::Store(e) => ImportError::Target(e),
            super::failure::WriteFail::Retry(m) => ImportError::Target(StoreError::Unavailable(m)),
        })?;
    }

    let again = source.audit(u32::MAX).await.map_err(ImportError::Source)?;
    if again != audit {
        return Err(ImportError::SourceChanged(format!(
            "its audit log went from {} to {} entries",
            audit.len(),
            again.len()
        )));
    }
    let found = count(conn).await.map_err(target)?;
    if let Some((table, expected, found)) = expected.differences(&found) {
        return Err(ImportError::Mismatch {
            table,
            expected,
            found,
        });
    }
    conn.batch("COMMIT").await.map_err(|e| {
        ImportError::Target(StoreError::Unavailable(format!(
            "PostgreSQL: the commit failed ({}); check the target before running again",
            describe(&e)
        )))
    })?;
    Ok(expected)
}

async fn insert_certificates(conn: &mut Conn, records: &[CertRecord]) -> Result<(), ImportError> {
    let text =
        |f: &dyn Fn(&CertRecord) -> String| -> Vec<String> { records.iter().map(f).collect() };
    let serial = text(&|c| c.summary.serial.to_string());
    let identity = text(&|c| c.summary.identity.uri());
    let role = text(&|c| c.summary.identity.role.as_str().to_string());
    let name = text(&|c| c.summary.identity.name.clone());
    let dns = text(&|c| columns::join(&c.summary.dns_names));
    let ips = text(&|c| columns::join(&c.summary.ip_addresses));
    let mut policy = Vec::with_capacity(records.len());
    for c in records {
        policy.push(
            serde_json::to_string(&c.policy)
                .map_err(|e| ImportError::Source(StoreError::Corrupt(e.to_string())))?,
        );
    }
    let time = |f: &dyn Fn(&CertRecord) -> OffsetDateTime| -> Vec<i64> {
        records.iter().map(|c| f(c).unix_timestamp()).collect()
    };
    let not_before = time(&|c| c.summary.not_before);
    let not_after = time(&|c| c.summary.not_after);
    let issued_at = time(&|c| c.issued_at);
    let der: Vec<&[u8]> = records.iter().map(|c| c.der.as_slice()).collect();
    let token_id: Vec<Option<&str>> = records.iter().map(|c| c.token_id.as_deref()).collect();
    let renewed_from: Vec<Option<String>> = records
        .iter()
        .map(|c| c.renewed_from.as_ref().map(ToString::to_string))
        .collect();
    let renewed_by: Vec<Option<String>> = records
        .iter()
        .map(|c| c.summary.renewed_by.as_ref().map(ToString::to_string))
        .collect();
    let revoked_at: Vec<Option<i64>> = records
        .iter()
        .map(|c| c.summary.revoked_at.map(OffsetDateTime::unix_timestamp))
        .collect();
    let reason: Vec<Option<&str>> = records
        .iter()
        .map(|c| c.revocation_reason.as_deref())
        .collect();
    let first_used: Vec<Option<i64>> = records
        .iter()
        .map(|c| c.first_used_at.map(OffsetDateTime::unix_timestamp))
        .collect();
    let access: Vec<&str> = records.iter().map(|c| c.summary.access.as_str()).collect();
    conn.execute(
        "INSERT INTO certificates (serial, identity, role, name, dns, ips, not_before, not_after,
                                   der, token_id, renewed_from, renewed_by, policy, issued_at,
                                   revoked_at, revocation_reason, first_used_at, access)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                              $6::text[], $7::bigint[], $8::bigint[], $9::bytea[], $10::text[],
                              $11::text[], $12::text[], $13::text[], $14::bigint[],
                              $15::bigint[], $16::text[], $17::bigint[], $18::text[])",
        &[
            &serial,
            &identity,
            &role,
            &name,
            &dns,
            &ips,
            &not_before,
            &not_after,
            &der,
            &token_id,
            &renewed_from,
            &renewed_by,
            &policy,
            &issued_at,
            &revoked_at,
            &reason,
            &first_used,
            &access,
        ],
    )
    .await
    .map_err(target)?;
    Ok(())
}
