//! `dtca.v1.Admin`: tokens, inventory, revocation, audit. Admin certificates only.

use dtca_pki::access::UnknownAccess;
use std::time::Duration;

use dtca_pki::Serial;
use dtca_pki::identity::Role;
use dtca_proto::v1::{self, admin_server};
use time::OffsetDateTime;
use tonic::{Request, Response, Status};

use super::{Context, peer, role_from_proto, role_to_proto};
use crate::metrics::Rpc;
use crate::registrar::{Caller, Refusal, TokenSpec, require};
use crate::store::{AuditEntry, CertQuery, CertSummary, RevokeTarget, TokenRecord};

/// The `Admin` service.
#[derive(Debug, Clone)]
pub struct AdminService {
    cx: Context,
}

impl AdminService {
    /// Serves the registrar behind `cx`.
    pub fn new(cx: Context) -> Self {
        AdminService { cx }
    }

    async fn admin(&self, peer: Option<&crate::tls::PeerInfo>) -> Result<Caller, Refusal> {
        let caller = self.cx.caller(peer, false).await?;
        require(&caller, &[Role::Admin], "use the admin API")?;
        Ok(caller)
    }
}

fn seconds(value: i64, what: &str) -> Result<Option<Duration>, Refusal> {
    match value {
        0 => Ok(None),
        v if v > 0 => Ok(Some(Duration::from_secs(v.unsigned_abs()))),
        _ => Err(Refusal::InvalidArgument(format!(
            "{what} must not be negative"
        ))),
    }
}

/// The store query a `ListCertificates` request asks for.
///
/// # Errors
/// [`Refusal::InvalidArgument`] for a negative duration.
pub(crate) fn cert_query(
    req: &v1::ListCertificatesRequest,
    now: OffsetDateTime,
) -> Result<CertQuery, Refusal> {
    Ok(CertQuery {
        now,
        expiring_within: seconds(req.expiring_within_seconds, "expiring_within")?,
        include_inactive: req.include_inactive,
        limit: (req.limit > 0).then_some(req.limit),
        role: None,
        name: None,
    })
}

fn parse_serial(text: &str) -> Result<Serial, Refusal> {
    text.parse()
        .map_err(|e: dtca_pki::serial::SerialError| Refusal::InvalidArgument(e.to_string()))
}

pub(crate) fn token_info(t: &TokenRecord) -> v1::TokenInfo {
    v1::TokenInfo {
        id: t.id.clone(),
        role: role_to_proto(t.role).into(),
        name: t.name.clone().unwrap_or_default(),
        uses: t.uses,
        max_uses: t.max_uses,
        expires_unix: t.expires_at.unix_timestamp(),
        revoked: t.revoked_at.is_some(),
        allow_dns: t.policy.allow_dns.clone(),
        allow_ip: t.policy.allow_ip.iter().map(ToString::to_string).collect(),
        created_unix: t.created_at.unix_timestamp(),
        cert_ttl_seconds: t
            .cert_ttl
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0),
        replace: t.replace,
        access: t.access.as_str().to_string(),
    }
}

pub(crate) fn summary(c: &CertSummary, now: OffsetDateTime) -> v1::CertificateSummary {
    v1::CertificateSummary {
        serial: c.serial.to_string(),
        role: role_to_proto(c.identity.role).into(),
        name: c.identity.name.clone(),
        not_before_unix: c.not_before.unix_timestamp(),
        not_after_unix: c.not_after.unix_timestamp(),
        status: c.status(now).to_string(),
        dns_names: c.dns_names.clone(),
        ip_addresses: c.ip_addresses.iter().map(ToString::to_string).collect(),
        identity: c.identity.uri(),
        forked: false,
        access: c.access.as_str().to_string(),
    }
}

pub(crate) fn audit_event(e: AuditEntry) -> v1::AuditEvent {
    v1::AuditEvent {
        at_unix: e.at.unix_timestamp(),
        kind: e.kind,
        actor: e.actor,
        subject: e.subject,
        detail: e.detail,
    }
}

#[tonic::async_trait]
impl admin_server::Admin for AdminService {
    async fn ca_status(
        &self,
        request: Request<v1::CaStatusRequest>,
    ) -> Result<Response<v1::CaStatusResponse>, Status> {
        let peer = peer(&request);
        let now = OffsetDateTime::now_utc();
        let report = self
            .cx
            .call(Rpc::Admin, "CaStatus", peer.clone(), async {
                let caller = self.admin(peer.as_ref()).await?;
                self.cx.registrar.ca_report(&caller, now).await
            })
            .await?;
        Ok(Response::new(super::lifecycle::status(&report, now)))
    }

    async fn rotate_intermediate(
        &self,
        request: Request<v1::RotateIntermediateRequest>,
    ) -> Result<Response<v1::RotateIntermediateResponse>, Status> {
        let peer = peer(&request);
        let prepared = self
            .cx
            .call(Rpc::Admin, "RotateIntermediate", peer.clone(), async {
                let caller = self.admin(peer.as_ref()).await?;
                self.cx
                    .registrar
                    .rotate_intermediate(&caller, OffsetDateTime::now_utc())
                    .await
            })
            .await?;
        Ok(Response::new(super::lifecycle::prepared(prepared)))
    }

    async fn rotate_root(
        &self,
        request: Request<v1::RotateRootRequest>,
    ) -> Result<Response<v1::RotateRootResponse>, Status> {
        let peer = peer(&request);
        let req = request.into_inner();
        let now = OffsetDateTime::now_utc();
        let answer = self
            .cx
            .call(Rpc::Admin, "RotateRoot", peer.clone(), async {
                let caller = self.admin(peer.as_ref()).await?;
                let registrar = &self.cx.registrar;
                if req.finish {
                    let before = registrar.ca();
                    let left = registrar
                        .finish_root_rotation(&caller, req.force, now)
                        .await?;
                    return Ok(v1::RotateRootResponse {
                        old_root_digest: before
                            .lineage()
                            .roots()
                            .iter()
                            .find(|r| r.der != before.active_root().der)
                            .map(|r| r.digest().to_string())
                            .unwrap_or_default(),
                        new_root_digest: before.active_root().digest().to_string(),
                        not_after_unix: before.active_root().info.not_after.unix_timestamp(),
                        left_behind: left,
                        finished: true,
                    });
                }
                let key_type = match req.key_type.trim() {
                    "" => None,
                    k => Some(k.parse().map_err(|e: dtca_pki::key::KeyError| {
                        Refusal::InvalidArgument(e.to_string())
                    })?),
                };
                let started = registrar
                    .start_root_rotation(&caller, key_type, now)
                    .await?;
                Ok(super::lifecycle::started(&started))
            })
            .await?;
        Ok(Response::new(answer))
    }

    async fn create_token(
        &self,
        request: Request<v1::CreateTokenRequest>,
    ) -> Result<Response<v1::CreateTokenResponse>, Status> {
        let peer = peer(&request);
        let req = request.into_inner();
        let (token, record) =
            self.cx
                .call(Rpc::Admin, "CreateToken", peer.clone(), async {
                    let caller = self.admin(peer.as_ref()).await?;
                    let role = role_from_proto(req.role).ok_or_else(|| {
                        Refusal::InvalidArgument("role must be node, operator or admin".into())
                    })?;
                    let spec = TokenSpec {
                        role,
                        ttl: seconds(req.ttl_seconds, "ttl")?,
                        uses: (req.uses > 0).then_some(req.uses),
                        name: Some(req.name.trim().to_string()).filter(|n| !n.is_empty()),
                        allow_dns: req.allow_dns,
                        allow_ip: req.allow_ip,
                        cert_ttl: seconds(req.cert_ttl_seconds, "certificate ttl")?,
                        replace: req.replace,
                        access: match req.access.trim() {
                            "" => None,
                            level => Some(level.parse().map_err(|e: UnknownAccess| {
                                Refusal::InvalidArgument(e.to_string())
                            })?),
                        },
                    };
                    self.cx
                        .registrar
                        .create_token(&caller, spec, OffsetDateTime::now_utc())
                        .await
                })
                .await?;
        tracing::info!(id = %record.id, role = %record.role, uses = record.max_uses, "token created");
        Ok(Response::new(v1::CreateTokenResponse {
            token,
            info: Some(token_info(&record)),
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<v1::ListTokensRequest>,
    ) -> Result<Response<v1::ListTokensResponse>, Status> {
        let peer = peer(&request);
        let tokens = self
            .cx
            .call(Rpc::Admin, "ListTokens", peer.clone(), async {
                self.admin(peer.as_ref()).await?;
                self.cx.registrar.tokens().await
            })
            .await?;
        Ok(Response::new(v1::ListTokensResponse {
            tokens: tokens.iter().map(token_info).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<v1::RevokeTokenRequest>,
    ) -> Result<Response<v1::RevokeTokenResponse>, Status> {
        let peer = peer(&request);
        let req = request.into_inner();
        self.cx
            .call(Rpc::Admin, "RevokeToken", peer.clone(), async {
                let caller = self.admin(peer.as_ref()).await?;
                self.cx
                    .registrar
                    .revoke_token(&caller, &req.id, OffsetDateTime::now_utc())
                    .await
            })
            .await?;
        Ok(Response::new(v1::RevokeTokenResponse {}))
    }

    async fn list_certificates(
        &self,
        request: Request<v1::ListCertificatesRequest>,
    ) -> Result<Response<v1::ListCertificatesResponse>, Status> {
        let peer = peer(&request);
        let req = request.into_inner();
        let now = OffsetDateTime::now_utc();
        let certs = self
            .cx
            .call(Rpc::Admin, "ListCertificates", peer.clone(), async {
                self.admin(peer.as_ref()).await?;
                let query = cert_query(&req, now)?;
                let certs = self.cx.registrar.certificates(&query).await?;
                let forks = self.cx.registrar.forks(&certs, now).await?;
                Ok((certs, forks))
            })
            .await?;
        let (certs, forks) = certs;
        Ok(Response::new(v1::ListCertificatesResponse {
            certificates: certs
                .iter()
                .map(|c| v1::CertificateSummary {
                    forked: forks.contains(&c.serial),
                    ..summary(c, now)
                })
                .collect(),
        }))
    }

    async fn show_certificate(
        &self,
        request: Request<v1::ShowCertificateRequest>,
    ) -> Result<Response<v1::CertificateDetail>, Status> {
        let peer = peer(&request);
        let req = request.into_inner();
        let now = OffsetDateTime::now_utc();
        let record = self
            .cx
            .call(Rpc::Admin, "ShowCertificate", peer.clone(), async {
                self.admin(peer.as_ref()).await?;
                let serial = parse_serial(&req.serial)?;
                self.cx.registrar.certificate(&serial).await
            })
            .await?;
        Ok(Response::new(v1::CertificateDetail {
            summary: Some(summary(&record.summary, now)),
            pem: dtca_pki::inspect::certs_to_pem([record.der.as_slice()]),
            renewed_from: record
                .renewed_from
                .map(|s| s.to_string())
                .unwrap_or_default(),
            token_id: record.token_id.unwrap_or_default(),
            revoked_unix: record
                .summary
                .revoked_at
                .map(|t| t.unix_timestamp())
                .unwrap_or(0),
            revocation_reason: record.revocation_reason.unwrap_or_default(),
        }))
    }

    async fn revoke_certificate(
        &self,
        request: Request<v1::RevokeCertificateRequest>,
    ) -> Result<Response<v1::RevokeCertificateResponse>, Status> {
        let peer = peer(&request);
        let req = request.into_inner();
        let serials = self
            .cx
            .call(Rpc::Admin, "RevokeCertificate", peer.clone(), async {
                let caller = self.admin(peer.as_ref()).await?;
                let target = match req.target {
                    Some(v1::revoke_certificate_request::Target::Serial(s)) => {
                        RevokeTarget::Serial(parse_serial(&s)?)
                    }
                    Some(v1::revoke_certificate_request::Target::Name(n))
                        if !n.trim().is_empty() =>
                    {
                        RevokeTarget::Name {
                            name: n.trim().to_string(),
                            role: role_from_proto(req.role),
                        }
                    }
                    _ => {
                        return Err(Refusal::InvalidArgument(
                            "give a serial or a name to revoke".into(),
                        ));
                    }
                };
                let reason = if req.reason.trim().is_empty() {
                    "unspecified"
                } else {
                    req.reason.trim()
                };
                self.cx
                    .registrar
                    .revoke(&caller, target, reason, OffsetDateTime::now_utc())
                    .await
            })
            .await?;
        tracing::info!(count = serials.len(), "certificates revoked");
        Ok(Response::new(v1::RevokeCertificateResponse {
            serials: serials.iter().map(ToString::to_string).collect(),
        }))
    }

    async fn list_audit(
        &self,
        request: Request<v1::ListAuditRequest>,
    ) -> Result<Response<v1::ListAuditResponse>, Status> {
        let peer = peer(&request);
        let req = request.into_inner();
        let events = self
            .cx
            .call(Rpc::Admin, "ListAudit", peer.clone(), async {
                self.admin(peer.as_ref()).await?;
                let limit = if req.limit == 0 {
                    100
                } else {
                    req.limit.min(10_000)
                };
                self.cx.registrar.audit(limit).await
            })
            .await?;
        Ok(Response::new(v1::ListAuditResponse {
            events: events.into_iter().map(audit_event).collect(),
        }))
    }

    async fn fleet(
        &self,
        request: Request<v1::FleetRequest>,
    ) -> Result<Response<v1::FleetResponse>, Status> {
        let peer = peer(&request);
        let req = request.into_inner();
        let view = self
            .cx
            .call(Rpc::Admin, "Fleet", peer.clone(), async {
                self.admin(peer.as_ref()).await?;
                crate::fleet::view(&self.cx.registrar, &req.states, OffsetDateTime::now_utc()).await
            })
            .await?;
        Ok(Response::new(view))
    }
}
