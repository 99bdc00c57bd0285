//! `dtca.v1.Ca`: trust bundle, enrollment, renewal, CRL, node inventory.

use dtca_pki::identity::Role;
use dtca_proto::v1::{self, ca_server};
use time::OffsetDateTime;
use tonic::{Request, Response, Status};

use super::{Context, peer};
use crate::metrics::Rpc;
use crate::registrar::{Issued, require};

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
        let authority = self.cx.registrar.authority();
        v1::IssuedCertificate {
            leaf_der: issued.leaf_der,
            intermediate_der: authority.intermediate_der().to_vec(),
            root_der: authority.root_der().to_vec(),
            serial: issued.info.serial.to_string(),
            identity: issued.info.identity.map(|i| i.uri()).unwrap_or_default(),
            not_after_unix: issued.info.not_after.unix_timestamp(),
            roots_der: vec![authority.root_der().to_vec()],
            chain_der: Vec::new(),
        }
    }
}

#[tonic::async_trait]
impl ca_server::Ca for CaService {
    async fn trust_bundle(
        &self,
        _: Request<v1::TrustBundleRequest>,
    ) -> Result<Response<v1::TrustBundleResponse>, Status> {
        let (root_pem, intermediate_pem) = self.cx.registrar.trust_bundle();
        Ok(Response::new(v1::TrustBundleResponse {
            cluster: self.cx.registrar.authority().cluster().to_string(),
            root_pem,
            intermediate_pem,
            roots_der: vec![self.cx.registrar.authority().root_der().to_vec()],
            rotation_started_unix: 0,
            active_root_der: self.cx.registrar.authority().root_der().to_vec(),
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
                cx.registrar.nodes(OffsetDateTime::now_utc()).await
            })
            .await?;
        Ok(Response::new(v1::ListNodesResponse {
            nodes: nodes
                .into_iter()
                .map(|n| v1::Node {
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
                })
                .collect(),
        }))
    }
}
