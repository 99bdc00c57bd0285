//! Who is calling: a client certificate this CA issued, still valid, known and not
//! revoked; and whether the caller's role may make a call.

use std::time::Duration;

use dtca_pki::Serial;
use dtca_pki::access::Access;
use dtca_pki::chain::{self, ChainError, Usage};
use dtca_pki::identity::{Identity, Role};
use dtca_pki::inspect::CertInfo;
use time::OffsetDateTime;

use super::{Refusal, Registrar};
use crate::store::CertRecord;

/// Who is calling, proven by a certificate this CA issued and still honours.
#[derive(Debug, Clone)]
pub struct Caller {
    /// From the certificate's URI SAN.
    pub identity: Identity,
    /// The certificate's serial.
    pub serial: Serial,
    /// What the store knows of it.
    pub record: CertRecord,
}

impl Registrar {
    /// Authenticates a caller by the client chain it presented in the TLS handshake (the
    /// handshake proved it holds the key). The chain must lead to this CA's root, be
    /// valid now (or within the renewal grace, when `allow_grace`), be known to the store,
    /// not revoked, and not superseded by a successor that is in use. A node's
    /// certificate is checked as the server certificate it is (it carries no clientAuth,
    /// so that no engine takes it as a docker client); every other as a client's. The
    /// first call a certificate makes is recorded: from then on, its predecessor cannot
    /// renew again.
    ///
    /// # Errors
    /// [`Refusal::CertMissing`], [`Refusal::CertForeign`], [`Refusal::CertExpired`],
    /// [`Refusal::CertInvalid`], [`Refusal::CertUnknown`], [`Refusal::CertRevoked`] or
    /// [`Refusal::CertSuperseded`].
    pub async fn authenticate(
        &self,
        chain: Option<&[Vec<u8>]>,
        now: OffsetDateTime,
        allow_grace: bool,
    ) -> Result<Caller, Refusal> {
        let chain = chain
            .filter(|c| !c.is_empty())
            .ok_or(Refusal::CertMissing)?;
        let leaf = &chain[0];
        // Whatever the client sent as intermediates, our own intermediates are the ones
        // that count: put them first so path building needs nothing else. Only trusted
        // roots anchor: after a root rotation, a certificate of the old root is foreign.
        let ca = self.ca();
        let mut intermediates = ca.intermediates();
        intermediates.extend(chain[1..].iter().cloned());
        let roots = ca.roots();
        let grace = if allow_grace {
            self.rules.renew_grace
        } else {
            Duration::ZERO
        };
        let info = CertInfo::from_der(leaf).map_err(|e| Refusal::CertInvalid(e.to_string()))?;
        // Only operators have levels: any other certificate naming one is refused (the
        // CA never issues such a thing).
        if info.access != Access::Full
            && info.identity.as_ref().map(|i| i.role) != Some(Role::Operator)
        {
            return Err(Refusal::CertInvalid(format!(
                "a {} access level on a certificate that is not an operator's",
                info.access
            )));
        }
        let usage = Usage::of(&info);
        chain::verify_any_with_grace(
            leaf,
            &intermediates,
            &roots.iter().map(Vec::as_slice).collect::<Vec<_>>(),
            now,
            usage,
            grace,
        )
        .map_err(|e| match e {
            ChainError::Expired { not_after } => Refusal::CertExpired { not_after },
            ChainError::UnknownIssuer => Refusal::CertForeign,
            other => Refusal::CertInvalid(other.to_string()),
        })?;
        let identity = info
            .identity
            .clone()
            .filter(|i| i.cluster == self.cluster())
            .ok_or_else(|| {
                Refusal::CertInvalid("no identity of this cluster in the certificate".into())
            })?;
        let record = self
            .store
            .certificate(&info.serial)
            .await?
            .ok_or_else(|| Refusal::CertUnknown(info.serial.clone()))?;
        if record.der != *leaf {
            return Err(Refusal::CertUnknown(info.serial));
        }
        if record.summary.revoked_at.is_some() {
            return Err(Refusal::CertRevoked(info.serial));
        }
        if let Some(successor) = &record.summary.renewed_by
            && self
                .store
                .certificate(successor)
                .await?
                .is_some_and(|s| s.first_used_at.is_some())
        {
            return Err(Refusal::CertSuperseded {
                serial: info.serial,
                successor: successor.clone(),
            });
        }
        if record.first_used_at.is_none() {
            self.store.mark_used(&info.serial, now).await?;
        }
        Ok(Caller {
            identity,
            serial: info.serial,
            record,
        })
    }
}

/// Requires a role the caller must have.
///
/// # Errors
/// [`Refusal::RoleNotAllowed`] otherwise.
pub fn require(caller: &Caller, allowed: &[Role], action: &'static str) -> Result<(), Refusal> {
    if allowed.contains(&caller.identity.role) {
        Ok(())
    } else {
        Err(Refusal::RoleNotAllowed {
            role: caller.identity.role,
            action,
        })
    }
}
