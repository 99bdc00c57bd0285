//! `GET /metrics` on its own listener: values that need the store or a file are read at
//! each scrape, then everything registered is encoded.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dtca_pki::identity::Role;
use dtca_pki::inspect;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response};
use time::OffsetDateTime;
use tokio::net::TcpListener;

use super::{Metrics, Refresh, StoreCollector};
use crate::store::{CertQuery, Store};

/// The OpenMetrics text format, which Prometheus asks for and reads.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` on `listener` until `shutdown` completes, with the store's
/// metrics, the expiry of the admin certificate at `admin_cert` (the state dir's
/// `admin/cert.pem`), and what `refresh` sets at each scrape.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    store: Arc<dyn Store>,
    admin_cert: Option<PathBuf>,
    refresh: Vec<Arc<dyn Refresh>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    metrics.register_collector(Box::new(StoreCollector(store.clone())));
    let admin_cert = Arc::new(admin_cert);
    let refresh = Arc::new(refresh);
    let handler = move |req: Request<hyper::body::Incoming>| {
        let (metrics, store, admin_cert) = (metrics.clone(), store.clone(), admin_cert.clone());
        let refresh = refresh.clone();
        async move {
            answer(
                &req,
                &metrics,
                &*store,
                admin_cert.as_ref().as_ref(),
                &refresh,
            )
            .await
        }
    };
    crate::side_http::serve(listener, handler, shutdown).await;
}

async fn answer(
    req: &Request<hyper::body::Incoming>,
    metrics: &Metrics,
    store: &dyn Store,
    admin_cert: Option<&PathBuf>,
    refresh: &[Arc<dyn Refresh>],
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    if req.uri().path() != "/metrics" {
        *response.status_mut() = hyper::StatusCode::NOT_FOUND;
        return response;
    }
    let now = OffsetDateTime::now_utc();
    let earliest = store
        .certificates(&CertQuery {
            now,
            expiring_within: Some(Duration::from_secs(100 * 365 * 86_400)),
            include_inactive: false,
            limit: Some(1),
            role: Some(Role::Node),
            name: None,
        })
        .await
        .ok()
        .and_then(|certs| certs.first().map(|c| c.not_after));
    metrics.set_earliest_node_expiry(earliest);
    if let Some(path) = admin_cert {
        metrics.set_admin_expiry(not_after(path));
    }
    for r in refresh {
        r.refresh(now).await;
    }
    *response.body_mut() = Full::new(Bytes::from(metrics.render()));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(CONTENT_TYPE),
    );
    response
}

/// When the first certificate in the PEM file at `path` expires, if it can be read.
fn not_after(path: &PathBuf) -> Option<OffsetDateTime> {
    let pem = std::fs::read_to_string(path).ok()?;
    let der = inspect::certs_from_pem(&pem).ok()?.into_iter().next()?;
    Some(inspect::CertInfo::from_der(&der).ok()?.not_after)
}
