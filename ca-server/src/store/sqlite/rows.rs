//! Rows to records. A row that reads but does not make a record (a bad serial, an
//! unknown role) is [`StoreError::Corrupt`], returned inside the row's `Ok`.

use dtca_pki::identity::Identity;
use dtca_pki::policy::SanPolicy;
use rusqlite::Row;

use crate::store::columns::{self, parse_serial};
use crate::store::{CertRecord, CertSummary, StoreError, TokenRecord};

pub(super) const SUMMARY_COLUMNS: &str =
    "serial, identity, dns, ips, not_before, not_after, revoked_at, renewed_by, access";

pub(super) fn token_from_row(row: &Row<'_>) -> rusqlite::Result<Result<TokenRecord, StoreError>> {
    let role: String = row.get("role")?;
    let policy: String = row.get("policy")?;
    let created: i64 = row.get("created_at")?;
    let expires: i64 = row.get("expires_at")?;
    let revoked: Option<i64> = row.get("revoked_at")?;
    let ttl: Option<i64> = row.get("cert_ttl")?;
    let replace: bool = row.get("replaces")?;
    let id: String = row.get("id")?;
    let secret_hash: Vec<u8> = row.get("secret_hash")?;
    let name: Option<String> = row.get("name")?;
    let max_uses: u32 = row.get("max_uses")?;
    let uses: u32 = row.get("uses")?;
    let access: String = row.get("access")?;
    Ok((|| {
        Ok(TokenRecord {
            id,
            secret_hash,
            role: role
                .parse()
                .map_err(|e: dtca_pki::identity::IdentityError| {
                    StoreError::Corrupt(e.to_string())
                })?,
            name,
            max_uses,
            uses,
            created_at: columns::time(created).map_err(StoreError::Corrupt)?,
            expires_at: columns::time(expires).map_err(StoreError::Corrupt)?,
            revoked_at: revoked
                .map(columns::time)
                .transpose()
                .map_err(StoreError::Corrupt)?,
            policy: serde_json::from_str(&policy)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            cert_ttl: ttl.map(|s| std::time::Duration::from_secs(u64::try_from(s).unwrap_or(0))),
            replace,
            access: columns::access(&access)?,
        })
    })())
}

pub(super) fn summary_from_row(row: &Row<'_>) -> rusqlite::Result<Result<CertSummary, StoreError>> {
    let serial: String = row.get(0)?;
    let identity: String = row.get(1)?;
    let dns: String = row.get(2)?;
    let ips: String = row.get(3)?;
    let not_before: i64 = row.get(4)?;
    let not_after: i64 = row.get(5)?;
    let revoked_at: Option<i64> = row.get(6)?;
    let renewed_by: Option<String> = row.get(7)?;
    let access: String = row.get(8)?;
    Ok((|| {
        Ok(CertSummary {
            serial: parse_serial(&serial)?,
            identity: Identity::from_uri(&identity)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            dns_names: columns::dns(&dns),
            ip_addresses: columns::ips(&ips).map_err(StoreError::Corrupt)?,
            not_before: columns::time(not_before).map_err(StoreError::Corrupt)?,
            not_after: columns::time(not_after).map_err(StoreError::Corrupt)?,
            revoked_at: revoked_at
                .map(columns::time)
                .transpose()
                .map_err(StoreError::Corrupt)?,
            renewed_by: renewed_by.as_deref().map(parse_serial).transpose()?,
            access: columns::access(&access)?,
        })
    })())
}

pub(super) fn record_from_row(row: &Row<'_>) -> rusqlite::Result<Result<CertRecord, StoreError>> {
    let summary = summary_from_row(row)?;
    let der: Vec<u8> = row.get(9)?;
    let token_id: Option<String> = row.get(10)?;
    let renewed_from: Option<String> = row.get(11)?;
    let policy: String = row.get(12)?;
    let issued_at: i64 = row.get(13)?;
    let revocation_reason: Option<String> = row.get(14)?;
    let first_used_at: Option<i64> = row.get(15)?;
    Ok((|| {
        Ok(CertRecord {
            summary: summary?,
            der,
            token_id,
            renewed_from: renewed_from.as_deref().map(parse_serial).transpose()?,
            policy: serde_json::from_str::<SanPolicy>(&policy)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            issued_at: columns::time(issued_at).map_err(StoreError::Corrupt)?,
            revocation_reason,
            first_used_at: first_used_at
                .map(columns::time)
                .transpose()
                .map_err(StoreError::Corrupt)?,
        })
    })())
}
