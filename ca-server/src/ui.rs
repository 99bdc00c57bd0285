//! The read-only web page (`serve --ui-listen ADDR`): the fleet table with filters, an
//! expiry timeline, the CA's lifecycle and the latest audit events.
//!
//! Everything it serves is in the binary (`include_str!`): the page, its script and its
//! style; the script draws the chart itself and fetches only `/data.json` from the same
//! origin. Nothing in the data is secret: names, addresses, serials, expiry dates, audit
//! lines (token ids, never token secrets; no key ever reaches the store). There is no
//! login: whoever reaches the address sees the page, so it is meant for loopback or a
//! trusted network. Requests whose `Host` is a name other than `localhost` are refused,
//! so a web page elsewhere cannot read it through DNS rebinding; a strict
//! Content-Security-Policy keeps the page to its own script, and the script writes text,
//! never markup, so a node name cannot inject any.

use std::future::Future;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::net::TcpListener;

use crate::fleet;
use crate::registrar::Registrar;
use crate::service::lifecycle;

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");

/// How many audit entries the page shows.
const AUDIT_ENTRIES: u32 = 20;

const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// Serves the page on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    registrar: Arc<Registrar>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let handler = move |req: Request<hyper::body::Incoming>| {
        let registrar = registrar.clone();
        async move { answer(&req, &registrar).await }
    };
    crate::side_http::serve(listener, handler, shutdown).await;
}

async fn answer<B>(req: &Request<B>, registrar: &Registrar) -> Response<Full<Bytes>> {
    if !host_allowed(req.headers().get(header::HOST)) {
        return plain(
            StatusCode::MISDIRECTED_REQUEST,
            "this page answers to an IP address or localhost only",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "read-only");
    }
    match req.uri().path() {
        "/" | "/index.html" => page(INDEX, "text/html; charset=utf-8"),
        "/app.js" => page(SCRIPT, "text/javascript; charset=utf-8"),
        "/app.css" => page(STYLE, "text/css; charset=utf-8"),
        "/data.json" => {
            let states: Vec<String> = req
                .uri()
                .query()
                .unwrap_or_default()
                .split('&')
                .filter_map(|kv| kv.strip_prefix("state="))
                .map(str::to_string)
                .collect();
            match data(registrar, &states, OffsetDateTime::now_utc()).await {
                Ok(body) => page_owned(body, "application/json"),
                Err((status, message)) => plain(status, &message),
            }
        }
        _ => plain(StatusCode::NOT_FOUND, "not found"),
    }
}

/// What the page shows, as JSON text: the fleet view (as `fleet --json` prints it), the
/// CA's lifecycle (as `ca status --json` prints it) and the newest audit entries.
///
/// # Errors
/// The HTTP status and message for a bad filter or a failed store.
pub async fn data(
    registrar: &Registrar,
    states: &[String],
    now: OffsetDateTime,
) -> Result<String, (StatusCode, String)> {
    let failed = |e: crate::registrar::Refusal| match e {
        crate::registrar::Refusal::InvalidArgument(m) => (StatusCode::BAD_REQUEST, m),
        other => {
            tracing::warn!(error = %other, "web page: cannot read the fleet");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the CA cannot read its store right now".into(),
            )
        }
    };
    let (fleet, ca, audit) = tokio::try_join!(
        fleet::view(registrar, states, now),
        registrar.lifecycle_report(now),
        registrar.audit(AUDIT_ENTRIES),
    )
    .map_err(failed)?;
    let ca = lifecycle::status(&ca, now);
    let data = Data {
        cluster: &ca.cluster,
        fleet: fleet::json::view(&fleet),
        ca: lifecycle::status_json(&ca),
        audit: audit
            .iter()
            .map(|e| {
                json!({
                    "at": fleet::json::time(e.at.unix_timestamp()),
                    "kind": e.kind, "actor": e.actor, "subject": e.subject, "detail": e.detail,
                })
            })
            .collect(),
    };
    serde_json::to_string(&data).map_err(|e| {
        tracing::warn!(error = %e, "web page: cannot write the data");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot write the data".into(),
        )
    })
}

/// The data endpoint's document; the fleet's rows are written straight from the view.
#[derive(Serialize)]
struct Data<'a> {
    cluster: &'a str,
    fleet: fleet::json::View<'a>,
    ca: Value,
    audit: Vec<Value>,
}

/// An IP literal (with or without port) or `localhost`; anything else may be a name an
/// attacker's DNS points at this address.
fn host_allowed(host: Option<&HeaderValue>) -> bool {
    let Some(host) = host.and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let Ok(authority) = host.parse::<http::uri::Authority>() else {
        return false;
    };
    let name = authority.host();
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost") || bare.parse::<std::net::IpAddr>().is_ok()
}

fn page(body: &'static str, content_type: &'static str) -> Response<Full<Bytes>> {
    respond(
        StatusCode::OK,
        Bytes::from_static(body.as_bytes()),
        content_type,
    )
}

fn page_owned(body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    respond(StatusCode::OK, Bytes::from(body), content_type)
}

fn plain(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    respond(
        status,
        Bytes::from(format!("{message}\n")),
        "text/plain; charset=utf-8",
    )
}

fn respond(status: StatusCode, body: Bytes, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ip_literals_and_localhost_are_answered() {
        let ok = |h: &str| host_allowed(Some(&HeaderValue::from_str(h).unwrap()));
        assert!(ok("127.0.0.1:9000"));
        assert!(ok("[::1]:9000"));
        assert!(ok("localhost:9000"));
        assert!(ok("10.0.0.5"));
        assert!(!ok("evil.example.com:9000"));
        assert!(!ok("127.0.0.1.nip.io"));
        assert!(!host_allowed(None));
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        // The one URL is the SVG namespace, a name rather than a place.
        for text in [INDEX, SCRIPT, STYLE] {
            let rest = text.replace("http://www.w3.org/2000/svg", "");
            for outside in ["http:", "https:", "//", "@import", "url("] {
                let found = rest
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("//"))
                    .any(|l| l.contains(outside));
                assert!(!found, "{outside} in an embedded asset");
            }
        }
    }
}
