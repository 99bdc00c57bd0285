//! Issuing: enrollment with a join token, renewal by a caller's certificate, and the
//! server's own certificates; each signed by the authority and committed to the store
//! (with the token use or the renewal link, and its audit) before it is returned.

use std::net::IpAddr;
use std::time::Duration;

use dtca_pki::access::Access;
use dtca_pki::authority::LeafTemplate;
use dtca_pki::csr::VerifiedCsr;
use dtca_pki::identity::{Identity, Role, check_name};
use dtca_pki::inspect::CertInfo;
use dtca_pki::key::{KeyType, PrivateKey};
use dtca_pki::policy::{SanPolicy, check_host_name};
use dtca_pki::profile::{BACKDATE, Profile};
use dtca_pki::{Serial, duration};
use time::OffsetDateTime;

use super::{Caller, Refusal, Registrar};
use crate::store::{AuditEntry, AuditKind, CertRecord, CertSummary, Issuance};

/// A certificate just issued and stored.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The leaf, DER.
    pub leaf_der: Vec<u8>,
    /// Its parsed fields.
    pub info: CertInfo,
    /// What goes after the leaf: the intermediate that signed it, then during a root
    /// rotation the new root cross-signed by the old one.
    pub chain: Vec<Vec<u8>>,
}

impl Registrar {
    /// Enrolls with a join token: checks the token, the CSR and the names, issues, and
    /// stores the certificate together with the token use.
    ///
    /// # Errors
    /// A [`Refusal`] saying which check failed; no token use is consumed then.
    pub async fn enroll(
        &self,
        token_text: &str,
        csr_der: &[u8],
        name: &str,
        now: OffsetDateTime,
    ) -> Result<Issued, Refusal> {
        let record = self.usable_token(token_text, now).await?;
        let mut csr = VerifiedCsr::from_der(csr_der).map_err(Refusal::Csr)?;
        let name = match &record.name {
            Some(fixed) => fixed.clone(),
            None => name.trim().to_string(),
        };
        if name.is_empty() {
            return Err(Refusal::InvalidArgument(
                "a name is required (the token does not fix one)".into(),
            ));
        }
        check_name(&name).map_err(|e| Refusal::InvalidArgument(e.to_string()))?;
        let identity = Identity::new(&self.cluster(), record.role, &name)
            .map_err(|e| Refusal::InvalidArgument(e.to_string()))?;
        names_for_role(record.role, &mut csr)?;
        record
            .policy
            .check(&csr.dns_names, &csr.ip_addresses)
            .map_err(Refusal::NameNotAllowed)?;
        let template = LeafTemplate {
            identity,
            public_key_der: csr.public_key_der,
            dns_names: csr.dns_names,
            ip_addresses: csr.ip_addresses,
            access: record.access,
            lifetime: Profile::of(record.role).lifetime(record.cert_ttl),
        };
        let signer = self.signer(now)?;
        let leaf = signer.issue(&template, now)?;
        let chain = self.ca().chain_of(signer.intermediate_der());
        let audit = vec![
            AuditEntry::new(
                now,
                AuditKind::TokenUse,
                format!("token:{}", record.id),
                template.identity.uri(),
                format!(
                    "use {} of {} for serial {}{}",
                    record.uses + 1,
                    record.max_uses,
                    leaf.info.serial,
                    if record.replace {
                        " (replaces the identity's certificates)"
                    } else {
                        ""
                    }
                ),
            ),
            issue_audit(
                AuditKind::Issue,
                &format!("token:{}", record.id),
                &leaf.info,
                now,
            ),
        ];
        self.commit(
            leaf.der.clone(),
            &leaf.info,
            Some(record.id.clone()),
            None,
            record.replace,
            record.policy.clone(),
            audit,
            now,
        )
        .await?;
        self.metrics.issued(record.role);
        Ok(Issued {
            leaf_der: leaf.der,
            info: leaf.info,
            chain,
        })
    }

    /// Renews the caller's certificate with a new key: same identity, the same lifetime
    /// as before, names within what the identity was enrolled with.
    ///
    /// # Errors
    /// A [`Refusal`]; [`Refusal::CertRevoked`] also when a revocation lands while this
    /// renewal is being stored.
    pub async fn renew(
        &self,
        caller: &Caller,
        csr_der: &[u8],
        now: OffsetDateTime,
    ) -> Result<Issued, Refusal> {
        let role = caller.identity.role;
        if role == Role::Ca {
            return Err(Refusal::RoleNotAllowed {
                role,
                action: "renew through the API",
            });
        }
        let mut csr = VerifiedCsr::from_der(csr_der).map_err(Refusal::Csr)?;
        let current = CertInfo::from_der(&caller.record.der)
            .map_err(|e| Refusal::CertInvalid(e.to_string()))?;
        if csr.public_key_der == current.public_key_der {
            return Err(Refusal::InvalidArgument(
                "renewal needs a new key: the request carries the current certificate's key".into(),
            ));
        }
        // A node renewing without names keeps the ones it has.
        if role == Role::Node && csr.dns_names.is_empty() && csr.ip_addresses.is_empty() {
            csr.dns_names.clone_from(&current.dns_names);
            csr.ip_addresses.clone_from(&current.ip_addresses);
        }
        names_for_role(role, &mut csr)?;
        let (dns_names, ip_addresses) = (csr.dns_names, csr.ip_addresses);
        // Names already held are always fine; new ones must fit the enrollment's policy.
        let new_dns: Vec<String> = dns_names
            .iter()
            .filter(|d| !current.dns_names.contains(d))
            .cloned()
            .collect();
        let new_ips: Vec<IpAddr> = ip_addresses
            .iter()
            .filter(|i| !current.ip_addresses.contains(i))
            .copied()
            .collect();
        caller
            .record
            .policy
            .check(&new_dns, &new_ips)
            .map_err(Refusal::NameNotAllowed)?;
        let previous_life = (current.not_after - current.not_before)
            .unsigned_abs()
            .saturating_sub(BACKDATE);
        let template = LeafTemplate {
            identity: caller.identity.clone(),
            public_key_der: csr.public_key_der,
            dns_names,
            ip_addresses,
            access: renewal_access(&current, &caller.record.summary),
            lifetime: Profile::of(role).lifetime(Some(previous_life.max(Duration::from_secs(10)))),
        };
        let signer = self.signer(now)?;
        let leaf = signer.issue(&template, now)?;
        let chain = self.ca().chain_of(signer.intermediate_der());
        let audit = vec![issue_audit(
            AuditKind::Renew,
            &caller.identity.uri(),
            &leaf.info,
            now,
        )];
        self.commit(
            leaf.der.clone(),
            &leaf.info,
            None,
            Some(caller.serial.clone()),
            false,
            caller.record.policy.clone(),
            audit,
            now,
        )
        .await?;
        self.metrics.renewed(role);
        Ok(Issued {
            leaf_der: leaf.der,
            info: leaf.info,
            chain,
        })
    }

    /// Issues a certificate for a key made here (the admin bundle at `init`, the server's
    /// own TLS certificate), stored and audited like any other.
    ///
    /// # Errors
    /// A [`Refusal`] from signing or storing.
    pub async fn issue_local(
        &self,
        identity: Identity,
        dns_names: Vec<String>,
        ip_addresses: Vec<IpAddr>,
        lifetime: Duration,
        now: OffsetDateTime,
    ) -> Result<(Issued, PrivateKey), Refusal> {
        let key =
            PrivateKey::generate(KeyType::P256).map_err(|e| Refusal::Internal(e.to_string()))?;
        let template = LeafTemplate {
            identity,
            public_key_der: key.public_key_der(),
            dns_names,
            ip_addresses,
            access: Access::Full,
            lifetime,
        };
        let signer = self.signer(now)?;
        let leaf = signer.issue(&template, now)?;
        let chain = self.ca().chain_of(signer.intermediate_der());
        let audit = vec![issue_audit(AuditKind::Issue, "ca-server", &leaf.info, now)];
        self.commit(
            leaf.der.clone(),
            &leaf.info,
            None,
            None,
            false,
            SanPolicy::default(),
            audit,
            now,
        )
        .await?;
        Ok((
            Issued {
                leaf_der: leaf.der,
                info: leaf.info,
                chain,
            },
            key,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    async fn commit(
        &self,
        der: Vec<u8>,
        info: &CertInfo,
        token_id: Option<String>,
        renewal_of: Option<Serial>,
        replace: bool,
        policy: SanPolicy,
        audit: Vec<AuditEntry>,
        now: OffsetDateTime,
    ) -> Result<(), Refusal> {
        let identity = info
            .identity
            .clone()
            .ok_or_else(|| Refusal::Internal("issued leaf without identity".into()))?;
        let cert = CertRecord {
            summary: CertSummary {
                serial: info.serial.clone(),
                identity,
                dns_names: info.dns_names.clone(),
                ip_addresses: info.ip_addresses.clone(),
                not_before: info.not_before,
                not_after: info.not_after,
                revoked_at: None,
                renewed_by: None,
                access: info.access,
            },
            der,
            token_id: token_id.clone(),
            renewed_from: renewal_of.clone(),
            policy,
            issued_at: now,
            revocation_reason: None,
            first_used_at: None,
        };
        self.store
            .record_issuance(Issuance {
                cert,
                token_id,
                renewal_of,
                replace,
                audit,
                at: now,
            })
            .await
            .map_err(Refusal::from)
    }
}

/// Which requested host names a role's certificate keeps: nodes need at least one (a
/// server certificate nobody can match is useless), and each DNS name must name a host
/// (not `localhost`, not an address written as a name); operators and admins are clients
/// and get none (the client cannot know its token's role, so it may have asked).
fn names_for_role(role: Role, csr: &mut VerifiedCsr) -> Result<(), Refusal> {
    match role {
        Role::Node | Role::Ca if csr.dns_names.is_empty() && csr.ip_addresses.is_empty() => {
            Err(Refusal::InvalidArgument(
                "a node certificate needs at least one DNS name or IP address".into(),
            ))
        }
        Role::Node => {
            for name in &csr.dns_names {
                check_host_name(name).map_err(Refusal::NameNotAllowed)?;
            }
            Ok(())
        }
        Role::Ca => Ok(()),
        Role::Operator | Role::Admin => {
            csr.ignored += csr.dns_names.len() + csr.ip_addresses.len();
            csr.dns_names.clear();
            csr.ip_addresses.clear();
            Ok(())
        }
    }
}

/// The level a renewal keeps: the narrower of what the certificate says (its EKU) and
/// what the store recorded for it, so that no renewal ever widens access.
pub(super) fn renewal_access(current: &CertInfo, record: &CertSummary) -> Access {
    match (current.access, record.access) {
        (Access::Full, Access::Full) => Access::Full,
        _ => Access::ReadOnly,
    }
}

fn issue_audit(kind: AuditKind, actor: &str, info: &CertInfo, now: OffsetDateTime) -> AuditEntry {
    let identity = info
        .identity
        .as_ref()
        .map(Identity::uri)
        .unwrap_or_default();
    let mut names: Vec<String> = info.dns_names.clone();
    names.extend(info.ip_addresses.iter().map(IpAddr::to_string));
    AuditEntry::new(
        now,
        kind,
        actor,
        info.serial.to_string(),
        format!(
            "{identity} until {} names [{}]{}",
            duration::timestamp(info.not_after),
            names.join(" "),
            if info.access == Access::Full {
                String::new()
            } else {
                format!(" access {}", info.access)
            }
        ),
    )
}
