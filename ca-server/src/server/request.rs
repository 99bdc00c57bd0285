//! One connection's requests: each gets the caller's [`PeerInfo`], opens a stream on the
//! connection's [`Activity`] for as long as its response runs, and has a deadline.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use dtca_common::reason::{self, Reason};
use http::{HeaderMap, Request, Response};
use hyper::body::Incoming;
use tonic::body::Body;
use tonic::service::Routes;
use tower::ServiceExt;

use super::activity::{Activity, Guarded};
use crate::metrics::Metrics;
use crate::tls::PeerInfo;

/// Longest a request may take to produce its response headers (a client's shorter
/// `grpc-timeout` wins).
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The gRPC services as one connection sees them.
#[derive(Debug, Clone)]
pub(super) struct ConnService {
    routes: Routes,
    activity: Arc<Activity>,
    peer: PeerInfo,
    metrics: Arc<Metrics>,
}

impl ConnService {
    /// `routes` serving a connection from `peer`.
    pub(super) fn new(
        routes: Routes,
        activity: Arc<Activity>,
        peer: PeerInfo,
        metrics: Arc<Metrics>,
    ) -> Self {
        ConnService {
            routes,
            activity,
            peer,
            metrics,
        }
    }
}

type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(self.peer.clone());
        let stream = self.activity.open();
        let limit =
            grpc_timeout(request.headers()).map_or(REQUEST_TIMEOUT, |t| t.min(REQUEST_TIMEOUT));
        let routes = self.routes.clone();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let response = match tokio::time::timeout(limit, routes.oneshot(request)).await {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                // What tonic's own server answers when its timeout expires.
                Err(_) => tonic::Status::cancelled("Timeout expired").into_http(),
            };
            let response = tag_too_large(&metrics, response);
            Ok(response.map(|body| Body::new(Guarded::new(body, stream))))
        })
    }
}

/// Requests over the size limit are refused by tonic itself (`OUT_OF_RANGE`), before any
/// handler runs: give them the reason header and the metric every other refusal gets.
fn tag_too_large<B>(metrics: &Metrics, mut response: Response<B>) -> Response<B> {
    let headers = response.headers_mut();
    let out_of_range = headers
        .get("grpc-status")
        .is_some_and(|s| s.as_bytes() == b"11");
    if out_of_range && !headers.contains_key(reason::METADATA_KEY) {
        headers.insert(
            reason::METADATA_KEY,
            http::HeaderValue::from_static(Reason::TooLarge.as_str()),
        );
        metrics.refused(Reason::TooLarge);
    }
    response
}

/// The client's deadline from `grpc-timeout` (at most 8 digits and a unit: `H`, `M`,
/// `S`, `m`, `u`, `n`); `None` when absent or malformed.
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get("grpc-timeout")?.to_str().ok()?;
    let digits = text.get(..text.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match text.get(text.len() - 1..)? {
        "H" => Duration::from_secs(value * 3600),
        "M" => Duration::from_secs(value * 60),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout_of(value: &str) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-timeout", value.parse().unwrap());
        grpc_timeout(&headers)
    }

    #[test]
    fn grpc_timeout_reads_every_unit() {
        assert_eq!(timeout_of("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(timeout_of("3M"), Some(Duration::from_secs(180)));
        assert_eq!(timeout_of("5S"), Some(Duration::from_secs(5)));
        assert_eq!(timeout_of("250m"), Some(Duration::from_millis(250)));
        assert_eq!(timeout_of("7u"), Some(Duration::from_micros(7)));
        assert_eq!(
            timeout_of("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
    }

    #[test]
    fn grpc_timeout_refuses_malformed_values() {
        for bad in ["", "S", "5", "5s", "123456789S", "-5S", "+5S", "5 S"] {
            assert_eq!(timeout_of(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }
}
