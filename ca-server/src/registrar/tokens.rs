//! Join tokens: making one (the spec checked against the limits), revoking one, listing
//! them. Using one is enrollment, in [`super::issue`].

use std::time::Duration;

use dtca_pki::access::Access;
use dtca_pki::duration;
use dtca_pki::identity::{Role, check_name};
use dtca_pki::policy::SanPolicy;
use dtca_pki::profile::Profile;
use dtca_pki::token::JoinToken;
use time::OffsetDateTime;

use super::{Caller, Refusal, Registrar};
use crate::store::{AuditEntry, AuditKind, TokenRecord};

/// Longest a token may stay valid.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(365 * 86_400);

/// Most enrollments one token may allow.
pub const MAX_TOKEN_USES: u32 = 1_000_000;

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
    /// Takes the fixed name from the identity holding it (revoking every certificate of
    /// that identity) instead of being refused.
    pub replace: bool,
    /// Access level of the operator certificates it enrolls (default full); refused for
    /// other roles, whatever the level.
    pub access: Option<Access>,
}

/// What a usable token allows, as [`Registrar::token_allowance`] tells its holder: no
/// more than enrollment with it would reveal (not its id, uses or creation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenAllowance {
    /// Role of the certificate it enrolls.
    pub role: Role,
    /// The identity name it fixes, if it does.
    pub name: Option<String>,
    /// The names a node certificate may carry.
    pub policy: SanPolicy,
    /// After this it is refused.
    pub expires_at: OffsetDateTime,
    /// Enrolling with it takes its name from the identity holding it.
    pub replace: bool,
    /// The access level of the certificate it enrolls.
    pub access: Access,
}

impl Registrar {
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
        if let Some(access) = spec.access
            && spec.role != Role::Operator
        {
            return Err(Refusal::AccessForRole {
                role: spec.role,
                access,
            });
        }
        if spec.replace && spec.name.is_none() {
            return Err(invalid(
                "--replace takes a name from its holder: say which with --name".into(),
            ));
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
        let token = JoinToken::generate(self.ca().active_root().digest())
            .map_err(|e| Refusal::Internal(e.to_string()))?;
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
            replace: spec.replace,
            access: spec.access.unwrap_or_default(),
        };
        let detail = format!(
            "role {} uses {} expires {}{}{}{}",
            record.role,
            record.max_uses,
            duration::timestamp(record.expires_at),
            record
                .name
                .as_deref()
                .map(|n| format!(" name {n}"))
                .unwrap_or_default(),
            if record.replace { " replace" } else { "" },
            if record.access == Access::Full {
                String::new()
            } else {
                format!(" access {}", record.access)
            },
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

    /// What a join token allows, for a client deciding which names to ask for before it
    /// spends a use: its role, fixed name, name limits, expiry and whether it replaces.
    /// Authorised by the token itself and refused exactly as enrollment would refuse it
    /// (an unknown, foreign, expired, revoked or used-up token learns nothing more);
    /// spends nothing.
    ///
    /// # Errors
    /// The token refusals of [`Registrar::enroll`].
    pub async fn token_allowance(
        &self,
        token_text: &str,
        now: OffsetDateTime,
    ) -> Result<TokenAllowance, Refusal> {
        let record = self.usable_token(token_text, now).await?;
        Ok(TokenAllowance {
            role: record.role,
            name: record.name,
            policy: record.policy,
            expires_at: record.expires_at,
            replace: record.replace,
            access: record.access,
        })
    }

    /// The record of a token that may be used now: well formed, made by this CA, known
    /// (its secret verified), not revoked, not expired, with a use left.
    ///
    /// # Errors
    /// [`Refusal::TokenMalformed`], [`Refusal::TokenForeignCa`], [`Refusal::TokenUnknown`],
    /// [`Refusal::TokenRevoked`], [`Refusal::TokenExpired`] or [`Refusal::TokenUsedUp`].
    pub(super) async fn usable_token(
        &self,
        token_text: &str,
        now: OffsetDateTime,
    ) -> Result<TokenRecord, Refusal> {
        let token: JoinToken = token_text.parse().map_err(Refusal::TokenMalformed)?;
        if !self.ca().trusts(&token.root) {
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
        Ok(record)
    }

    /// Token records, newest first.
    ///
    /// # Errors
    /// [`Refusal::Store`] when the store fails.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, Refusal> {
        Ok(self.store.tokens().await?)
    }
}
