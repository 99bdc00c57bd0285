//! Rows to records. Times are Unix seconds, lists space-separated, as in the embedded
//! store; a row that does not read back is [`StoreError::Corrupt`].

use std::time::Duration;

use dtca_pki::identity::Identity;
use tokio_postgres::Row;

use super::{columns, corrupt, parse_serial, time_of};
use crate::restart::Slot;
use crate::store::{CertRecord, CertSummary, StoreError, TokenRecord};

/// The columns of a [`CertSummary`], in the order [`summary_from_row`] reads.
pub(super) const SUMMARY_COLUMNS: &str =
    "serial, identity, dns, ips, not_before, not_after, revoked_at, renewed_by, access";

/// The columns of a [`TokenRecord`], in the order [`token_from_row`] reads.
pub(super) const TOKEN_COLUMNS: &str = "id, secret_hash, role, name, max_uses, uses, created_at, expires_at, revoked_at, policy, cert_ttl, replaces, access";

pub(super) fn token_from_row(row: &Row) -> Result<TokenRecord, StoreError> {
    let role: String = row.try_get(2).map_err(corrupt)?;
    let policy: String = row.try_get(9).map_err(corrupt)?;
    let max_uses: i64 = row.try_get(4).map_err(corrupt)?;
    let uses: i64 = row.try_get(5).map_err(corrupt)?;
    let ttl: Option<i64> = row.try_get(10).map_err(corrupt)?;
    let revoked: Option<i64> = row.try_get(8).map_err(corrupt)?;
    Ok(TokenRecord {
        id: row.try_get(0).map_err(corrupt)?,
        secret_hash: row.try_get(1).map_err(corrupt)?,
        role: role
            .parse()
            .map_err(|e: dtca_pki::identity::IdentityError| StoreError::Corrupt(e.to_string()))?,
        name: row.try_get(3).map_err(corrupt)?,
        max_uses: u32::try_from(max_uses).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        uses: u32::try_from(uses).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        created_at: time_of(row.try_get(6).map_err(corrupt)?)?,
        expires_at: time_of(row.try_get(7).map_err(corrupt)?)?,
        revoked_at: revoked.map(time_of).transpose()?,
        policy: serde_json::from_str(&policy).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        cert_ttl: ttl.map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0))),
        replace: row.try_get(11).map_err(corrupt)?,
        access: columns::access(row.try_get(12).map_err(corrupt)?)?,
    })
}

pub(super) fn summary_from_row(row: &Row) -> Result<CertSummary, StoreError> {
    let serial: String = row.try_get(0).map_err(corrupt)?;
    let identity: String = row.try_get(1).map_err(corrupt)?;
    let dns: String = row.try_get(2).map_err(corrupt)?;
    let ips: String = row.try_get(3).map_err(corrupt)?;
    let revoked_at: Option<i64> = row.try_get(6).map_err(corrupt)?;
    let renewed_by: Option<String> = row.try_get(7).map_err(corrupt)?;
    Ok(CertSummary {
        serial: parse_serial(&serial)?,
        identity: Identity::from_uri(&identity).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        dns_names: columns::dns(&dns),
        ip_addresses: columns::ips(&ips).map_err(StoreError::Corrupt)?,
        not_before: time_of(row.try_get(4).map_err(corrupt)?)?,
        not_after: time_of(row.try_get(5).map_err(corrupt)?)?,
        revoked_at: revoked_at.map(time_of).transpose()?,
        renewed_by: renewed_by.as_deref().map(parse_serial).transpose()?,
        access: columns::access(row.try_get(8).map_err(corrupt)?)?,
    })
}

pub(super) fn record_from_row(row: &Row) -> Result<CertRecord, StoreError> {
    let renewed_from: Option<String> = row.try_get(11).map_err(corrupt)?;
    let policy: String = row.try_get(12).map_err(corrupt)?;
    Ok(CertRecord {
        summary: summary_from_row(row)?,
        der: row.try_get(9).map_err(corrupt)?,
        token_id: row.try_get(10).map_err(corrupt)?,
        renewed_from: renewed_from.as_deref().map(parse_serial).transpose()?,
        policy: serde_json::from_str(&policy).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        issued_at: time_of(row.try_get(13).map_err(corrupt)?)?,
        revocation_reason: row.try_get(14).map_err(corrupt)?,
        first_used_at: row
            .try_get::<_, Option<i64>>(15)
            .map_err(corrupt)?
            .map(time_of)
            .transpose()?,
    })
}

/// A restart slot from `name, serial, manager_of, granted_at, expires_at`.
pub(super) fn slot_from_row(r: &Row) -> Result<Slot, StoreError> {
    let manager_of: String = r.try_get(2).map_err(corrupt)?;
    Ok(Slot {
        name: r.try_get(0).map_err(corrupt)?,
        serial: r.try_get(1).map_err(corrupt)?,
        manager_of: Some(manager_of).filter(|m| !m.is_empty()),
        granted_at: time_of(r.try_get(3).map_err(corrupt)?)?,
        expires_at: time_of(r.try_get(4).map_err(corrupt)?)?,
    })
}
