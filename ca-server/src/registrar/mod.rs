//! What the CA does, independent of the wire: enroll with a token, authenticate a caller
//! by certificate, renew, revoke, manage tokens. The gRPC services translate protobuf to
//! these calls and [`Refusal`]s to statuses; the pure signing is `dtca_pki::Authority`.
//!
//! Every decision takes `now` as an argument.

mod refusal;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use dtca_pki::authority::{Authority, LeafTemplate};
use dtca_pki::chain::{self, ChainError, Usage};
use dtca_pki::csr::VerifiedCsr;
use dtca_pki::identity::{Identity, Role, check_name};
use dtca_pki::inspect::{self, CertInfo};
use dtca_pki::key::{KeyType, PrivateKey};
use dtca_pki::policy::SanPolicy;
use dtca_pki::profile::{BACKDATE, Profile};
use dtca_pki::token::{JoinToken, RootDigest};
use dtca_pki::{Serial, duration};
use time::OffsetDateTime;

pub use refusal::Refusal;

use crate::metrics::Metrics;
use crate::store::{
    AuditEntry, AuditKind, CertQuery, CertRecord, CertSummary, Issuance, NodeRecord, RevokeTarget,
    Store, StoreError, TokenRecord,
};

/// Longest a token may stay valid.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(365 * 86_400);
/// Most enrollments one token may allow.
pub const MAX_TOKEN_USES: u32 = 1_000_000;
/// How long a CRL is valid.
pub const CRL_VALIDITY: Duration = Duration::from_secs(86_400);

/// Operator choices that shape decisions.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// How long after expiry a node may still renew with its expired certificate; zero
    /// means never (it re-enrolls with a token).
    pub renew_grace: Duration,
}

/// A certificate just issued and stored.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The leaf, DER.
    pub leaf_der: Vec<u8>,
    /// Its parsed fields.
    pub info: CertInfo,
}

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

/// What a new token should allow.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// Role of the certificates it enrolls.
    pub role: Role,
    /// How long it stays valid (default 24 hours).
    pub ttl: Option<Duration>,
    /// How many enrollments (default 1).
    pub uses: Option<u32>,
    /// Fixed identity name, if any.
    pub name: Option<String>,
    /// DNS patterns allowed in node SANs.
    pub allow_dns: Vec<String>,
    /// IP networks allowed in node SANs.
    pub allow_ip: Vec<String>,
    /// Lifetime of the certificates it enrolls (default: the role's).
    pub cert_ttl: Option<Duration>,
}

/// The CA's decisions, over an [`Authority`] and a [`Store`].
#[derive(Debug)]
pub struct Registrar {
    authority: Authority,
    root_digest: RootDigest,
    store: Arc<dyn Store>,
    rules: Rules,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Registrar {
    /// Puts the pieces together.
    pub fn new(
        authority: Authority,
        store: Arc<dyn Store>,
        rules: Rules,
        metrics: Arc<Metrics>,
    ) -> Self {
        Registrar {
            root_digest: RootDigest::of(authority.root_der()),
            authority,
            store,
            rules,
            metrics,
        }
    }

    /// The signing authority.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Metrics this registrar counts into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

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
        let token: JoinToken = token_text.parse().map_err(Refusal::TokenMalformed)?;
        if token.root != self.root_digest {
            return Err(Refusal::TokenForeignCa);
        }
        let hash = token.secret_hash();
        let record = self
            .store
            .token(&hash.id())
            .await?
            .filter(|t| hash.verify(&t.secret_hash))
            .ok_or(Refusal::TokenUnknown)?;
        if record.revoked_at.is_some() {
            return Err(Refusal::TokenRevoked);
        }
        if record.expires_at <= now {
            return Err(Refusal::TokenExpired {
                at: record.expires_at,
            });
        }
        if record.uses >= record.max_uses {
            return Err(Refusal::TokenUsedUp);
        }
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
        let identity = Identity::new(self.authority.cluster(), record.role, &name)
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
            lifetime: Profile::of(record.role).lifetime(record.cert_ttl),
        };
        let leaf = self.authority.issue(&template, now)?;
        let audit = vec![
            AuditEntry::new(
                now,
                AuditKind::TokenUse,
                format!("token:{}", record.id),
                template.identity.uri(),
                format!("use {} of {}", record.uses + 1, record.max_uses),
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
            record.policy.clone(),
            audit,
            now,
        )
        .await?;
        self.metrics.issued(record.role);
        Ok(Issued {
            leaf_der: leaf.der,
            info: leaf.info,
        })
    }

    /// Authenticates a caller by the client chain it presented in the TLS handshake (the
    /// handshake proved it holds the key). The chain must lead to this CA's root, be
    /// valid now (or within the renewal grace, when `allow_grace`), be known to the store
    /// and not revoked.
    ///
    /// # Errors
    /// [`Refusal::CertMissing`], [`Refusal::CertForeign`], [`Refusal::CertExpired`],
    /// [`Refusal::CertInvalid`], [`Refusal::CertUnknown`] or [`Refusal::CertRevoked`].
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
        // Whatever the client sent as intermediates, our own intermediate is the one that
        // counts: put it first so path building needs nothing else.
        let mut intermediates = vec![self.authority.intermediate_der().to_vec()];
        intermediates.extend(chain[1..].iter().cloned());
        let grace = if allow_grace {
            self.rules.renew_grace
        } else {
            Duration::ZERO
        };
        chain::verify_with_grace(
            leaf,
            &intermediates,
            self.authority.root_der(),
            now,
            Usage::Client,
            grace,
        )
        .map_err(|e| match e {
            ChainError::Expired { not_after } => Refusal::CertExpired { not_after },
            ChainError::UnknownIssuer => Refusal::CertForeign,
            other => Refusal::CertInvalid(other.to_string()),
        })?;
        let info = CertInfo::from_der(leaf).map_err(|e| Refusal::CertInvalid(e.to_string()))?;
        let identity = info
            .identity
            .clone()
            .filter(|i| i.cluster == self.authority.cluster())
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
        Ok(Caller {
            identity,
            serial: info.serial,
            record,
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
            lifetime: Profile::of(role).lifetime(Some(previous_life.max(Duration::from_secs(10)))),
        };
        let leaf = self.authority.issue(&template, now)?;
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
            caller.record.policy.clone(),
            audit,
            now,
        )
        .await?;
        self.metrics.renewed(role);
        Ok(Issued {
            leaf_der: leaf.der,
            info: leaf.info,
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
            lifetime,
        };
        let leaf = self.authority.issue(&template, now)?;
        let audit = vec![issue_audit(AuditKind::Issue, "ca-server", &leaf.info, now)];
        self.commit(
            leaf.der.clone(),
            &leaf.info,
            None,
            None,
            SanPolicy::default(),
            audit,
            now,
        )
        .await?;
        Ok((
            Issued {
                leaf_der: leaf.der,
                info: leaf.info,
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
            },
            der,
            token_id: token_id.clone(),
            renewed_from: renewal_of.clone(),
            policy,
            issued_at: now,
            revocation_reason: None,
        };
        self.store
            .record_issuance(Issuance {
                cert,
                token_id,
                renewal_of,
                audit,
                at: now,
            })
            .await
            .map_err(Refusal::from)
    }

    /// Creates a join token; returns its printed form (shown once) and its record.
    ///
    /// # Errors
    /// [`Refusal::InvalidArgument`] for a bad spec.
    pub async fn create_token(
        &self,
        caller: &Caller,
        spec: TokenSpec,
        now: OffsetDateTime,
    ) -> Result<(String, TokenRecord), Refusal> {
        let invalid = |m: String| Refusal::InvalidArgument(m);
        if !spec.role.enrollable() {
            return Err(invalid(format!("tokens cannot carry role {}", spec.role)));
        }
        let ttl = spec.ttl.unwrap_or(Duration::from_secs(86_400));
        if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
            return Err(invalid(format!(
                "token ttl {} is outside 1s..365d",
                duration::format(ttl)
            )));
        }
        let uses = spec.uses.unwrap_or(1);
        if uses == 0 || uses > MAX_TOKEN_USES {
            return Err(invalid(format!(
                "token uses {uses} is outside 1..{MAX_TOKEN_USES}"
            )));
        }
        if let Some(name) = &spec.name {
            check_name(name).map_err(|e| invalid(e.to_string()))?;
        }
        let policy = SanPolicy::parse(&spec.allow_dns, &spec.allow_ip)
            .map_err(|e| invalid(e.to_string()))?;
        if spec.role != Role::Node && !policy.is_unrestricted() {
            return Err(invalid(
                "--allow-dns and --allow-ip apply to node tokens only".into(),
            ));
        }
        let profile = Profile::of(spec.role);
        if let Some(t) = spec.cert_ttl
            && (t.is_zero() || t > profile.max_lifetime)
        {
            return Err(invalid(format!(
                "certificate lifetime {} is outside 1s..{} for role {}",
                duration::format(t),
                duration::format(profile.max_lifetime),
                spec.role
            )));
        }
        let token =
            JoinToken::generate(self.root_digest).map_err(|e| Refusal::Internal(e.to_string()))?;
        let hash = token.secret_hash();
        let record = TokenRecord {
            id: hash.id(),
            secret_hash: hash.0.to_vec(),
            role: spec.role,
            name: spec.name,
            max_uses: uses,
            uses: 0,
            created_at: now,
            expires_at: now + ttl,
            revoked_at: None,
            policy,
            cert_ttl: spec.cert_ttl,
        };
        let detail = format!(
            "role {} uses {} expires {}{}",
            record.role,
            record.max_uses,
            duration::timestamp(record.expires_at),
            record
                .name
                .as_deref()
                .map(|n| format!(" name {n}"))
                .unwrap_or_default()
        );
        self.store
            .insert_token(
                record.clone(),
                AuditEntry::new(
                    now,
                    AuditKind::TokenCreate,
                    caller.identity.uri(),
                    &record.id,
                    detail,
                ),
            )
            .await?;
        Ok((token.expose(), record))
    }

    /// Revokes a token by id.
    ///
    /// # Errors
    /// [`Refusal::NotFound`] for an unknown id.
    pub async fn revoke_token(
        &self,
        caller: &Caller,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<(), Refusal> {
        let id = id.trim().to_ascii_lowercase();
        self.store
            .revoke_token(
                &id,
                AuditEntry::new(now, AuditKind::TokenRevoke, caller.identity.uri(), &id, ""),
            )
            .await
            .map_err(Refusal::from)
    }

    /// Revokes one certificate or every current certificate of a name (of one role).
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
                        include_inactive: false,
                        limit: None,
                        role,
                        name: Some(name.clone()),
                    })
                    .await?
                    .into_iter()
                    .filter(|c| c.identity.role != Role::Ca)
                    .collect();
                let mut roles: Vec<Role> = current.iter().map(|c| c.identity.role).collect();
                roles.sort_by_key(|r| r.as_str());
                roles.dedup();
                let role = match roles.as_slice() {
                    [] => {
                        return Err(Refusal::NotFound(format!(
                            "a current certificate named {name:?}{} (none, or all revoked or expired)",
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

    /// Token records, newest first.
    ///
    /// # Errors
    /// [`Refusal::Store`] when the store fails.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, Refusal> {
        Ok(self.store.tokens().await?)
    }

    /// Certificates matching a query.
    ///
    /// # Errors
    /// [`Refusal::Store`] when the store fails.
    pub async fn certificates(&self, query: &CertQuery) -> Result<Vec<CertSummary>, Refusal> {
        Ok(self.store.certificates(query).await?)
    }

    /// One certificate.
    ///
    /// # Errors
    /// [`Refusal::NotFound`] when unknown.
    pub async fn certificate(&self, serial: &Serial) -> Result<CertRecord, Refusal> {
        self.store
            .certificate(serial)
            .await?
            .ok_or_else(|| Refusal::NotFound(format!("certificate {serial}")))
    }

    /// The CRL, freshly signed.
    ///
    /// # Errors
    /// [`Refusal::Store`] or signing failures.
    pub async fn crl(&self, now: OffsetDateTime) -> Result<Vec<u8>, Refusal> {
        let revoked = self.store.revoked(now).await?;
        let number = u64::try_from(now.unix_timestamp()).unwrap_or(0);
        Ok(self
            .authority
            .sign_crl(&revoked, number, now, CRL_VALIDITY)?)
    }

    /// Records where the calling node's engine listens.
    ///
    /// # Errors
    /// [`Refusal::RoleNotAllowed`] for non-nodes, [`Refusal::InvalidArgument`] for a bad URL.
    pub async fn report_engine(
        &self,
        caller: &Caller,
        endpoint: &str,
        now: OffsetDateTime,
    ) -> Result<(), Refusal> {
        if caller.identity.role != Role::Node {
            return Err(Refusal::RoleNotAllowed {
                role: caller.identity.role,
                action: "report an engine address",
            });
        }
        check_endpoint(endpoint, &caller.record.summary)?;
        self.store
            .set_engine(
                &caller.identity.name,
                endpoint,
                AuditEntry::new(
                    now,
                    AuditKind::EngineReport,
                    caller.identity.uri(),
                    &caller.identity.name,
                    endpoint,
                ),
            )
            .await
            .map_err(Refusal::from)
    }

    /// Enrolled nodes and their engines.
    ///
    /// # Errors
    /// [`Refusal::Store`] when the store fails.
    pub async fn nodes(&self, now: OffsetDateTime) -> Result<Vec<NodeRecord>, Refusal> {
        Ok(self.store.nodes(now).await?)
    }

    /// The newest audit entries.
    ///
    /// # Errors
    /// [`Refusal::Store`] when the store fails.
    pub async fn audit(&self, limit: u32) -> Result<Vec<AuditEntry>, Refusal> {
        Ok(self.store.audit(limit).await?)
    }

    /// Root and intermediate as PEM.
    pub fn trust_bundle(&self) -> (String, String) {
        (
            inspect::certs_to_pem([self.authority.root_der()]),
            inspect::certs_to_pem([self.authority.intermediate_der()]),
        )
    }

    /// Whether the CA can sign and store right now (the health check).
    ///
    /// # Errors
    /// What failed.
    pub async fn self_test(&self, now: OffsetDateTime) -> Result<(), Refusal> {
        self.authority.self_test(now)?;
        self.store.ping().await?;
        Ok(())
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

/// Which requested host names a role's certificate keeps: nodes need at least one (a
/// server certificate nobody can match is useless); operators and admins are clients and
/// get none (the client cannot know its token's role, so it may have asked).
fn names_for_role(role: Role, csr: &mut VerifiedCsr) -> Result<(), Refusal> {
    match role {
        Role::Node | Role::Ca if csr.dns_names.is_empty() && csr.ip_addresses.is_empty() => {
            Err(Refusal::InvalidArgument(
                "a node certificate needs at least one DNS name or IP address".into(),
            ))
        }
        Role::Node | Role::Ca => Ok(()),
        Role::Operator | Role::Admin => {
            csr.ignored += csr.dns_names.len() + csr.ip_addresses.len();
            csr.dns_names.clear();
            csr.ip_addresses.clear();
            Ok(())
        }
    }
}

/// A well-formed `tcp://HOST:PORT` whose host is one of the node certificate's names: the
/// docker CLI of an operator checks the engine's certificate against that host, and a node
/// must not point operators at someone else's engine.
fn check_endpoint(endpoint: &str, cert: &CertSummary) -> Result<(), Refusal> {
    let rest = endpoint.strip_prefix("tcp://").ok_or_else(|| {
        Refusal::InvalidArgument(format!(
            "engine address {endpoint:?} must be tcp://HOST:PORT"
        ))
    })?;
    let ok = rest.len() <= 260
        && rest
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        && !rest.contains('/')
        && !rest.contains(char::is_whitespace);
    if !ok {
        return Err(Refusal::InvalidArgument(format!(
            "engine address {endpoint:?} must be tcp://HOST:PORT"
        )));
    }
    let host = rest
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
        .unwrap_or_default();
    let named = match host.parse::<IpAddr>() {
        Ok(ip) => cert.ip_addresses.contains(&ip),
        Err(_) => cert.dns_names.iter().any(|d| d.eq_ignore_ascii_case(host)),
    };
    if named {
        Ok(())
    } else {
        Err(Refusal::InvalidArgument(format!(
            "engine address {endpoint:?}: {host} is not among this node's certificate names, so clients could not verify the engine"
        )))
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
            "{identity} until {} names [{}]",
            duration::timestamp(info.not_after),
            names.join(" ")
        ),
    )
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::TokenUnknown => Refusal::TokenUnknown,
            StoreError::TokenExpired(at) => Refusal::TokenExpired { at },
            StoreError::TokenRevoked => Refusal::TokenRevoked,
            StoreError::TokenUsedUp => Refusal::TokenUsedUp,
            StoreError::CertRevoked(s) => Refusal::CertRevoked(s),
            StoreError::NotFound(what) => Refusal::NotFound(what),
            other => Refusal::Store(other),
        }
    }
}

impl From<dtca_pki::AuthorityError> for Refusal {
    fn from(e: dtca_pki::AuthorityError) -> Self {
        Refusal::Authority(e)
    }
}

#[cfg(test)]
mod tests;
