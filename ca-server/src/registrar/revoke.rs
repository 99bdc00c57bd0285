//! Revoking certificates (one by serial, or every current one of a name) and the CRL
//! that lists them.

use std::time::Duration;

use dtca_pki::Serial;
use dtca_pki::identity::Role;
use time::OffsetDateTime;

use super::{Caller, Refusal, Registrar};
use crate::store::{CertQuery, CertSummary, RevokeTarget};

/// How long a CRL is valid.
pub const CRL_VALIDITY: Duration = Duration::from_secs(86_400);

impl Registrar {
    /// Revokes one certificate, or every unrevoked certificate of a name (of one role),
    /// expired ones too: an expired copy must not renew within a renewal grace.
    ///
    /// # Errors
    /// [`Refusal::NotFound`] when nothing matches a name; [`Refusal::InvalidArgument`]
    /// when a name is held by more than one role and none was given, or when the
    /// certificate making the call would be revoked (an admin never locks itself out).
    pub async fn revoke(
        &self,
        caller: &Caller,
        target: RevokeTarget,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<Serial>, Refusal> {
        let own = &caller.serial;
        let target = match target {
            RevokeTarget::Serial(serial) if &serial == own => {
                return Err(Refusal::InvalidArgument(format!(
                    "{serial} is the certificate making this call: revoke it with another admin's bundle"
                )));
            }
            RevokeTarget::Serial(serial) => RevokeTarget::Serial(serial),
            RevokeTarget::Name { name, role } => {
                let current: Vec<CertSummary> = self
                    .store
                    .certificates(&CertQuery {
                        now,
                        expiring_within: None,
                        include_inactive: true,
                        limit: None,
                        role,
                        name: Some(name.clone()),
                    })
                    .await?
                    .into_iter()
                    .filter(|c| c.identity.role != Role::Ca && c.revoked_at.is_none())
                    .collect();
                let mut roles: Vec<Role> = current.iter().map(|c| c.identity.role).collect();
                roles.sort_by_key(|r| r.as_str());
                roles.dedup();
                let role = match roles.as_slice() {
                    [] => {
                        return Err(Refusal::NotFound(format!(
                            "an unrevoked certificate named {name:?}{} (none, or all revoked)",
                            role.map(|r| format!(" of role {r}")).unwrap_or_default()
                        )));
                    }
                    [one] => *one,
                    many => {
                        let list: Vec<&str> = many.iter().map(|r| r.as_str()).collect();
                        return Err(Refusal::InvalidArgument(format!(
                            "{name:?} names certificates of roles {}: say which with --role",
                            list.join(", ")
                        )));
                    }
                };
                if current.iter().any(|c| &c.serial == own) {
                    return Err(Refusal::InvalidArgument(format!(
                        "{name:?} includes the certificate making this call ({own}): revoke it with another admin's bundle"
                    )));
                }
                RevokeTarget::Name {
                    name,
                    role: Some(role),
                }
            }
        };
        let revoked = self
            .store
            .revoke(&target, now, reason, &caller.identity.uri())
            .await?;
        self.metrics.revoked(revoked.len());
        Ok(revoked)
    }

    /// The CRL, freshly signed.
    ///
    /// # Errors
    /// [`Refusal::Store`] or signing failures.
    pub async fn crl(&self, now: OffsetDateTime) -> Result<Vec<u8>, Refusal> {
        let revoked = self.store.revoked(now).await?;
        let number = u64::try_from(now.unix_timestamp()).unwrap_or(0);
        Ok(self
            .signer(now)?
            .sign_crl(&revoked, number, now, CRL_VALIDITY)?)
    }
}
