//! `dtca.v1.Ca`: trust bundle, enrollment, renewal, CRL, node inventory.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use dtca_common::{Reason, reason};
use dtca_pki::Serial;
use dtca_pki::identity::Role;
use dtca_proto::v1::{self, ca_server};
use time::OffsetDateTime;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{Context, peer, role_to_proto};
use crate::channel::{Event, Hub};
use crate::metrics::Rpc;
use crate::registrar::{Issued, require};
use crate::restart::Decision;
use crate::store::AgentState;

/// How often a `Watch` stream says Hello (with the CA's clock): an agent that hears
/// nothing for twice this long reconnects.
pub const HELLO_EVERY: Duration = Duration::from_secs(60);

/// The `Ca` service.
#[derive(Debug, Clone)]
pub struct CaService {
    cx: Context,
}

impl CaService {
    /// Serves the registrar behind `cx`.
    pub fn new(cx: Context) -> Self {
        CaService { cx }
    }

    fn issued(&self, issued: Issued) -> v1::IssuedCertificate {
        let ca = self.cx.registrar.ca();
        let mut chain = issued.chain.into_iter();
        v1::IssuedCertificate {
            leaf_der: issued.leaf_der,
            intermediate_der: chain.next().unwrap_or_default(),
            // The root the leaf reaches through its own intermediate (the new one during
            // a root rotation); `roots_der` is the whole bundle.
            root_der: ca.active_root().der.clone(),
            serial: issued.info.serial.to_string(),
            identity: issued.info.identity.map(|i| i.uri()).unwrap_or_default(),
            not_after_unix: issued.info.not_after.unix_timestamp(),
            roots_der: ca.roots(),
            chain_der: chain.collect(),
            access: issued.info.access.as_str().to_string(),
        }
    }
}

#[tonic::async_trait]
impl ca_server::Ca for CaService {
    type WatchStream = Pin<Box<dyn Stream<Item = Result<v1::AgentEvent, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<v1::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let peer = peer(&request);
        let since = request.get_ref().revoked_since_unix;
        let cx = &self.cx;
        // Subscribed before the backlog is read, so nothing falls between the two.
        let events = cx.registrar.hub().subscribe();
        let (caller, backlog) = cx
            .call(Rpc::Other, "Watch", peer.clone(), async {
                let caller = cx.caller(peer.as_ref(), false).await?;
                let backlog = match OffsetDateTime::from_unix_timestamp(since) {
                    Ok(t) if since > 0 => cx.registrar.revocations_since(t).await?,
                    _ => Vec::new(),
                };
                Ok((caller, backlog))
            })
            .await?;
        tracing::debug!(identity = %caller.identity.uri(), serial = %caller.serial, "agent channel open");
        let (tx, rx) = mpsc::channel(64);
        let watcher = Watcher {
            serial: caller.serial,
            issued_at: caller.record.issued_at,
            hub: cx.registrar.hub().clone(),
            tx,
        };
        tokio::spawn(watcher.run(events, backlog));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn report(
        &self,
        request: Request<v1::AgentReport>,
    ) -> Result<Response<v1::ReportResponse>, Status> {
        let peer = peer(&request);
        let r = request.into_inner();
        let cx = &self.cx;
        let state = AgentState {
            mode: r.mode,
            engine_healthy: r.engine_healthy,
            engine_error: r.engine_error,
            plain_listeners: r.plain_listeners,
            swarm_role: r.swarm_role,
            engine_version: r.engine_version,
            agent_version: r.agent_version,
            addresses: r.addresses,
            last_rotation_unix: r.last_rotation_unix,
            next_renewal_unix: r.next_renewal_unix,
            last_error: r.last_error,
            trusted_roots: r.trusted_roots,
            restart_without_slot: r.restart_without_slot,
            not_after_unix: r.not_after_unix,
            failed_switch: r.failed_switch,
        };
        let now = OffsetDateTime::now_utc();
        cx.call(Rpc::Other, "Report", peer.clone(), async {
            let caller = cx.caller(peer.as_ref(), false).await?;
            cx.registrar.record_report(&caller, state, now).await
        })
        .await?;
        Ok(Response::new(v1::ReportResponse {
            server_time_unix: now.unix_timestamp(),
        }))
    }

    async fn request_restart(
        &self,
        request: Request<v1::RestartRequest>,
    ) -> Result<Response<v1::RestartReply>, Status> {
        let peer = peer(&request);
        let req = request.into_inner();
        let cx = &self.cx;
        let now = OffsetDateTime::now_utc();
        let manager_of = Some(req.swarm_cluster).filter(|c| !c.is_empty());
        let decision = cx
            .call(Rpc::Other, "RequestRestart", peer.clone(), async {
                let caller = cx.caller(peer.as_ref(), false).await?;
                cx.registrar.request_restart(&caller, manager_of, now).await
            })
            .await?;
        let limits = cx.registrar.restart_limits();
        let lease_seconds = i64::try_from(limits.lease.as_secs()).unwrap_or(i64::MAX);
        Ok(Response::new(match decision {
            Decision::Granted { expires_at } | Decision::Renewed { expires_at } => {
                v1::RestartReply {
                    granted: true,
                    lease_expires_unix: expires_at.unix_timestamp(),
                    lease_seconds,
                    ..Default::default()
                }
            }
            Decision::Queued(why) => v1::RestartReply {
                granted: false,
                lease_seconds,
                retry_after_seconds: i64::try_from(limits.retry_after().as_secs())
                    .unwrap_or(i64::MAX),
                waiting_for: why.to_string(),
                ..Default::default()
            },
        }))
    }

    async fn release_restart(
        &self,
        request: Request<v1::RestartRelease>,
    ) -> Result<Response<v1::RestartReleased>, Status> {
        let peer = peer(&request);
        let req = request.into_inner();
        let cx = &self.cx;
        let released = cx
            .call(Rpc::Other, "ReleaseRestart", peer.clone(), async {
                let caller = cx.caller(peer.as_ref(), false).await?;
                cx.registrar
                    .release_restart(&caller, &req.outcome, OffsetDateTime::now_utc())
                    .await
            })
            .await?;
        Ok(Response::new(v1::RestartReleased { released }))
    }

    async fn trust_bundle(
        &self,
        _: Request<v1::TrustBundleRequest>,
    ) -> Result<Response<v1::TrustBundleResponse>, Status> {
        let now = OffsetDateTime::now_utc();
        let (root_pem, intermediate_pem) = self.cx.registrar.trust_bundle(now);
        let ca = self.cx.registrar.ca();
        Ok(Response::new(v1::TrustBundleResponse {
            cluster: ca.cluster().to_string(),
            root_pem,
            intermediate_pem,
            server_time_unix_ms: i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
            leaf_backdate_seconds: i64::try_from(dtca_pki::profile::BACKDATE.as_secs())
                .unwrap_or(0),
            roots_der: ca.roots(),
            rotation_started_unix: ca
                .lineage()
                .rotation_started()
                .map_or(0, OffsetDateTime::unix_timestamp),
            active_root_der: ca.active_root().der.clone(),
        }))
    }

    async fn enroll(
        &self,
        request: Request<v1::EnrollRequest>,
    ) -> Result<Response<v1::IssuedCertificate>, Status> {
        let peer = peer(&request);
        let req = request.into_inner();
        let registrar = &self.cx.registrar;
        let issued = self
            .cx
            .call(
                Rpc::Enroll,
                "Enroll",
                peer,
                registrar.enroll(
                    &req.token,
                    &req.csr_der,
                    &req.name,
                    OffsetDateTime::now_utc(),
                ),
            )
            .await?;
        tracing::info!(serial = %issued.info.serial, identity = ?issued.info.identity.as_ref().map(|i| i.uri()), "enrolled");
        Ok(Response::new(self.issued(issued)))
    }

    async fn renew(
        &self,
        request: Request<v1::RenewRequest>,
    ) -> Result<Response<v1::IssuedCertificate>, Status> {
        let peer = peer(&request);
        let req = request.into_inner();
        let cx = &self.cx;
        let issued = cx
            .call(Rpc::Renew, "Renew", peer.clone(), async {
                let caller = cx.caller(peer.as_ref(), true).await?;
                cx.registrar
                    .renew(&caller, &req.csr_der, OffsetDateTime::now_utc())
                    .await
            })
            .await?;
        tracing::info!(serial = %issued.info.serial, identity = ?issued.info.identity.as_ref().map(|i| i.uri()), "renewed");
        Ok(Response::new(self.issued(issued)))
    }

    async fn crl(
        &self,
        request: Request<v1::CrlRequest>,
    ) -> Result<Response<v1::CrlResponse>, Status> {
        let peer = peer(&request);
        let der = self
            .cx
            .call(
                Rpc::Other,
                "Crl",
                peer,
                self.cx.registrar.crl(OffsetDateTime::now_utc()),
            )
            .await?;
        Ok(Response::new(v1::CrlResponse { crl_der: der }))
    }

    async fn report_engine(
        &self,
        request: Request<v1::ReportEngineRequest>,
    ) -> Result<Response<v1::ReportEngineResponse>, Status> {
        let peer = peer(&request);
        let req = request.into_inner();
        let cx = &self.cx;
        cx.call(Rpc::Other, "ReportEngine", peer.clone(), async {
            let caller = cx.caller(peer.as_ref(), false).await?;
            cx.registrar
                .report_engine(&caller, &req.endpoint, OffsetDateTime::now_utc())
                .await
        })
        .await?;
        Ok(Response::new(v1::ReportEngineResponse {}))
    }

    async fn token_allowance(
        &self,
        request: Request<v1::TokenAllowanceRequest>,
    ) -> Result<Response<v1::TokenAllowanceResponse>, Status> {
        let peer = peer(&request);
        let req = request.into_inner();
        let allowance = self
            .cx
            .call(
                Rpc::Other,
                "TokenAllowance",
                peer,
                self.cx
                    .registrar
                    .token_allowance(&req.token, OffsetDateTime::now_utc()),
            )
            .await?;
        Ok(Response::new(v1::TokenAllowanceResponse {
            role: role_to_proto(allowance.role).into(),
            name: allowance.name.unwrap_or_default(),
            allow_dns: allowance.policy.allow_dns,
            allow_ip: allowance
                .policy
                .allow_ip
                .iter()
                .map(ToString::to_string)
                .collect(),
            expires_unix: allowance.expires_at.unix_timestamp(),
            replace: allowance.replace,
            access: allowance.access.as_str().to_string(),
        }))
    }

    async fn list_nodes(
        &self,
        request: Request<v1::ListNodesRequest>,
    ) -> Result<Response<v1::ListNodesResponse>, Status> {
        let peer = peer(&request);
        let cx = &self.cx;
        let nodes = cx
            .call(Rpc::Other, "ListNodes", peer.clone(), async {
                let caller = cx.caller(peer.as_ref(), false).await?;
                require(&caller, &[Role::Operator, Role::Admin], "list nodes")?;
                let now = OffsetDateTime::now_utc();
                let (mut nodes, ()) =
                    tokio::try_join!(cx.registrar.nodes(now), cx.registrar.refresh_reports(now))?;
                // Engines a client can reach: an expired node (shown by `fleet`) is not.
                nodes.retain(|n| n.cert.not_after > now);
                Ok(nodes)
            })
            .await?;
        // The agents' reports as the fleet view keeps them, by name.
        let nodes = cx.registrar.fleet().reports.with(|reports| {
            nodes
                .into_iter()
                .map(|n| {
                    let reported = reports.get(&n.name);
                    v1::Node {
                        mode: reported.map(|r| r.state.mode.clone()).unwrap_or_default(),
                        reported_unix: reported.map_or(0, |r| r.received_at.unix_timestamp()),
                        serial: n.cert.serial.to_string(),
                        not_before_unix: n.cert.not_before.unix_timestamp(),
                        name: n.name,
                        endpoint: n.endpoint.unwrap_or_default(),
                        dns_names: n.cert.dns_names,
                        ip_addresses: n
                            .cert
                            .ip_addresses
                            .iter()
                            .map(ToString::to_string)
                            .collect(),
                        not_after_unix: n.cert.not_after.unix_timestamp(),
                    }
                })
                .collect()
        });
        Ok(Response::new(v1::ListNodesResponse { nodes }))
    }
}

/// One open `Watch` stream: what its agent must hear, from the hub to the wire.
struct Watcher {
    /// The certificate the stream was opened with: its revocation ends the stream.
    serial: Serial,
    /// When that certificate was issued: a trust change asks it to renew when it predates
    /// the change's cut-off.
    issued_at: OffsetDateTime,
    hub: Arc<Hub>,
    tx: mpsc::Sender<Result<v1::AgentEvent, Status>>,
}

impl Watcher {
    async fn run(
        self,
        mut events: broadcast::Receiver<Event>,
        backlog: Vec<(Serial, OffsetDateTime)>,
    ) {
        if !self.send(self.hello()).await {
            return;
        }
        if !backlog.is_empty() && !self.send(revocations(&backlog)).await {
            return;
        }
        let mut hello =
            tokio::time::interval_at(tokio::time::Instant::now() + HELLO_EVERY, HELLO_EVERY);
        loop {
            let event = tokio::select! {
                () = self.tx.closed() => return,
                _ = hello.tick() => self.hello(),
                received = events.recv() => match received {
                    Ok(Event::Revoked(list)) => {
                        if list.iter().any(|(s, _)| *s == self.serial) {
                            // The agent hears it as a revocation, then the stream ends.
                            let _ = self.send(revocations(&list)).await;
                            let _ = self
                                .tx
                                .send(Err(reason::status(
                                    tonic::Code::PermissionDenied,
                                    Reason::CertRevoked,
                                    "the certificate of this stream was revoked",
                                )))
                                .await;
                            return;
                        }
                        revocations(&list)
                    }
                    Ok(Event::TrustChanged { generation, renew_before }) => {
                        trust_changed(generation, renew_before.is_some_and(|t| self.issued_at < t))
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        // Whatever was missed, the agent catches up by reconnecting with
                        // its last revocation time.
                        let _ = self
                            .tx
                            .send(Err(Status::unavailable(format!(
                                "the stream fell {missed} events behind; reconnect"
                            ))))
                            .await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            if !self.send(event).await {
                return;
            }
        }
    }

    fn hello(&self) -> v1::AgentEvent {
        v1::AgentEvent {
            event: Some(v1::agent_event::Event::Hello(v1::Hello {
                server_time_unix: OffsetDateTime::now_utc().unix_timestamp(),
                trust_generation: self.hub.trust_generation(),
            })),
        }
    }

    /// False when the agent is gone.
    async fn send(&self, event: v1::AgentEvent) -> bool {
        self.tx.send(Ok(event)).await.is_ok()
    }
}

fn revocations(list: &[(Serial, OffsetDateTime)]) -> v1::AgentEvent {
    v1::AgentEvent {
        event: Some(v1::agent_event::Event::Revocations(v1::Revocations {
            revoked: list
                .iter()
                .map(|(serial, at)| v1::Revoked {
                    serial: serial.to_string(),
                    revoked_unix: at.unix_timestamp(),
                })
                .collect(),
        })),
    }
}

fn trust_changed(generation: u64, renew: bool) -> v1::AgentEvent {
    v1::AgentEvent {
        event: Some(v1::agent_event::Event::TrustChanged(v1::TrustChanged {
            trust_generation: generation,
            renew,
        })),
    }
}
