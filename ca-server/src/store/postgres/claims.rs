//! Names have one holder: an issuance claims its identity's name (taking it from its
//! holder when the token replaces) and, for a node, its DNS names, in the savepoint of the
//! issuance, before the certificate is stored.

use dtca_pki::identity::Role;
use tokio_postgres::types::ToSql;

use super::conn::Conn;
use super::failure::WriteFail;
use super::{corrupt, insert_audit, parse_serial, time_of};
use crate::store::{AuditEntry, AuditKind, Issuance, REPLACED, StoreError};

/// Gives the issued certificate its identity's name (and, for a node, its DNS names),
/// or says who holds them. A conditional upsert: a concurrent claim of the same name
/// waits for the row lock and re-checks the row it finds.
const CLAIM_NAME: &str = "
WITH replaced AS (
    UPDATE certificates SET revoked_at = $5, revocation_reason = $8
    WHERE $7 AND role = $1 AND name = $2 AND revoked_at IS NULL
    RETURNING serial
), claimed AS (
    INSERT INTO identities (role, name, serial, not_after) VALUES ($1, $2, $3, $4)
    ON CONFLICT (role, name) DO UPDATE SET serial = excluded.serial, not_after = excluded.not_after
    WHERE $6 OR $7 OR identities.not_after <= $5
       OR EXISTS (SELECT 1 FROM certificates c
                  WHERE c.serial = identities.serial AND c.revoked_at IS NOT NULL)
    RETURNING 1
)
SELECT (SELECT count(*) FROM claimed), ARRAY(SELECT serial FROM replaced)";

/// The identity's DNS names it no longer carries are released; each of the certificate's
/// is taken unless another identity's live certificate carries it.
const CLAIM_HOST_NAMES: &str = "
WITH released AS (
    DELETE FROM host_names WHERE role = $1 AND name = $2 AND NOT (dns = ANY($3))
), claimed AS (
    INSERT INTO host_names (dns, role, name, serial, not_after)
    SELECT d, $1, $2, $4, $5 FROM unnest($3::text[]) AS d
    ON CONFLICT (dns) DO UPDATE SET role = excluded.role, name = excluded.name,
                                    serial = excluded.serial, not_after = excluded.not_after
    WHERE (host_names.role = excluded.role AND host_names.name = excluded.name)
       OR host_names.not_after <= $6
       OR EXISTS (SELECT 1 FROM certificates c
                  WHERE c.serial = host_names.serial AND c.revoked_at IS NOT NULL)
    RETURNING dns
)
SELECT ARRAY(SELECT dns FROM claimed)";

pub(super) async fn claim(conn: &mut Conn, i: &Issuance) -> Result<(), WriteFail> {
    let c = &i.cert.summary;
    let (role, name) = (c.identity.role.as_str(), c.identity.name.as_str());
    let serial = c.serial.to_string();
    let (not_after, at) = (c.not_after.unix_timestamp(), i.at.unix_timestamp());
    let renewal = i.renewal_of.is_some();
    let replace = i.replace && !renewal;
    let row = conn
        .query_one_row(
            CLAIM_NAME,
            &[
                &role as &(dyn ToSql + Sync),
                &name,
                &serial,
                &not_after,
                &at,
                &renewal,
                &replace,
                &REPLACED,
            ],
        )
        .await?;
    let claimed: i64 = row.try_get(0).map_err(corrupt)?;
    if claimed == 0 {
        let holder = conn
            .query_one_row(
                "SELECT serial, not_after FROM identities WHERE role = $1 AND name = $2",
                &[&role, &name],
            )
            .await?;
        let holder_serial: String = holder.try_get(0).map_err(corrupt)?;
        return Err(StoreError::NameTaken {
            identity: c.identity.uri(),
            holder: parse_serial(&holder_serial)?,
            until: time_of(holder.try_get(1).map_err(corrupt)?)?,
        }
        .into());
    }
    let replaced: Vec<String> = row.try_get(1).map_err(corrupt)?;
    if !replaced.is_empty() {
        let actor = i
            .cert
            .token_id
            .as_deref()
            .map_or("ca-server".to_string(), |t| format!("token:{t}"));
        let entries: Vec<AuditEntry> = replaced
            .iter()
            .map(|s| AuditEntry::new(i.at, AuditKind::Revoke, actor.clone(), s.clone(), REPLACED))
            .collect();
        insert_audit(conn, &entries).await?;
    }
    if c.identity.role != Role::Node {
        return Ok(());
    }
    let wanted: Vec<&str> = c.dns_names.iter().map(String::as_str).collect();
    let row = conn
        .query_one_row(
            CLAIM_HOST_NAMES,
            &[
                &role as &(dyn ToSql + Sync),
                &name,
                &wanted,
                &serial,
                &not_after,
                &at,
            ],
        )
        .await?;
    let claimed: Vec<String> = row.try_get(0).map_err(corrupt)?;
    let Some(taken) = wanted.iter().find(|d| !claimed.iter().any(|c| c == *d)) else {
        return Ok(());
    };
    let holder = conn
        .query_one_row(
            "SELECT role, name, serial, not_after FROM host_names WHERE dns = $1",
            &[taken],
        )
        .await?;
    let (holder_role, holder_name, holder_serial): (String, String, String) = (
        holder.try_get(0).map_err(corrupt)?,
        holder.try_get(1).map_err(corrupt)?,
        holder.try_get(2).map_err(corrupt)?,
    );
    Err(StoreError::HostNameTaken {
        dns: (*taken).to_string(),
        identity: format!("{holder_role}/{holder_name}"),
        holder: parse_serial(&holder_serial)?,
        until: time_of(holder.try_get(3).map_err(corrupt)?)?,
    }
    .into())
}
