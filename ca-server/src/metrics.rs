//! Prometheus metrics: issued, renewed and revoked certificates, refusals by reason,
//! request latency, days until the earliest node certificate expires, and connections
//! (open, refused or closed by the server and why, accept errors).
//!
//! Counters are plain atomics (no locks on the issuance path); `render` writes the
//! Prometheus text format, and [`serve`] answers `GET /metrics` on its own listener.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dtca_common::Reason;
use dtca_pki::identity::Role;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use time::OffsetDateTime;
use tokio::net::TcpListener;

use crate::store::{CertQuery, Store, StoreStats};

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Which RPCs get their own latency histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    /// `Enroll`.
    Enroll,
    /// `Renew`.
    Renew,
    /// Admin service calls.
    Admin,
    /// Everything else.
    Other,
}

impl Rpc {
    const ALL: [Rpc; 4] = [Rpc::Enroll, Rpc::Renew, Rpc::Admin, Rpc::Other];

    fn as_str(self) -> &'static str {
        match self {
            Rpc::Enroll => "enroll",
            Rpc::Renew => "renew",
            Rpc::Admin => "admin",
            Rpc::Other => "other",
        }
    }
}

/// Why the server refused or closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionEnd {
    /// Refused at accept: its source address has its limit of unauthenticated connections.
    AddressLimit,
    /// The TLS handshake did not finish in time.
    HandshakeTimeout,
    /// The TLS handshake failed.
    HandshakeFailed,
    /// No request arrived in time after the handshake.
    NoRequest,
    /// No open stream for too long.
    Idle,
}

impl ConnectionEnd {
    const ALL: [ConnectionEnd; 5] = [
        ConnectionEnd::AddressLimit,
        ConnectionEnd::HandshakeTimeout,
        ConnectionEnd::HandshakeFailed,
        ConnectionEnd::NoRequest,
        ConnectionEnd::Idle,
    ];

    /// Its label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionEnd::AddressLimit => "address-limit",
            ConnectionEnd::HandshakeTimeout => "handshake-timeout",
            ConnectionEnd::HandshakeFailed => "handshake-failed",
            ConnectionEnd::NoRequest => "no-request",
            ConnectionEnd::Idle => "idle",
        }
    }
}

/// Connection counters.
#[derive(Debug, Default)]
struct Connections {
    open: AtomicU64,
    ended: [AtomicU64; ConnectionEnd::ALL.len()],
    accept_errors: AtomicU64,
}

#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

/// The server's counters.
#[derive(Debug)]
pub struct Metrics {
    issued: [AtomicU64; 4],
    renewed: [AtomicU64; 4],
    revoked: AtomicU64,
    refused: Vec<AtomicU64>,
    latency: [Histogram; 4],
    connections: Connections,
    ca: std::sync::Mutex<CaGauges>,
}

/// The CA's own certificates, as the lifecycle driver last saw them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaGauges {
    /// Warnings an operator must act on (an intermediate ending without a successor, the
    /// root ending).
    pub warnings: u64,
    /// When the signing intermediate ends.
    pub intermediate_not_after: Option<OffsetDateTime>,
    /// When its successor takes over, when one is prepared.
    pub next_switch: Option<OffsetDateTime>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            issued: Default::default(),
            renewed: Default::default(),
            revoked: AtomicU64::new(0),
            refused: Reason::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            latency: Default::default(),
            connections: Connections::default(),
            ca: std::sync::Mutex::default(),
        }
    }
}

fn role_index(role: Role) -> usize {
    Role::ALL.iter().position(|r| *r == role).unwrap_or(0)
}

impl Metrics {
    /// Records what the lifecycle driver saw.
    pub fn set_ca(&self, gauges: CaGauges) {
        if let Ok(mut ca) = self.ca.lock() {
            *ca = gauges;
        }
    }

    /// Counts an enrollment.
    pub fn issued(&self, role: Role) {
        self.issued[role_index(role)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a renewal.
    pub fn renewed(&self, role: Role) {
        self.renewed[role_index(role)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts revocations.
    pub fn revoked(&self, n: usize) {
        self.revoked.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts a refusal.
    pub fn refused(&self, reason: Reason) {
        if let Some(i) = Reason::ALL.iter().position(|r| *r == reason) {
            self.refused[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts an accepted connection as open.
    pub fn connection_opened(&self) {
        self.connections.open.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an open connection as closed.
    pub fn connection_closed(&self) {
        let _ = self
            .connections
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Counts a connection the server refused or closed, by why.
    pub fn connection_ended(&self, end: ConnectionEnd) {
        if let Some(i) = ConnectionEnd::ALL.iter().position(|e| *e == end) {
            self.connections.ended[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a failed `accept`.
    pub fn accept_error(&self) {
        self.connections
            .accept_errors
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Records how long a call took.
    pub fn observe(&self, rpc: Rpc, elapsed: Duration) {
        let h = &self.latency[Rpc::ALL.iter().position(|r| *r == rpc).unwrap_or(3)];
        let secs = elapsed.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        h.count.fetch_add(1, Ordering::Relaxed);
        h.sum_nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The Prometheus text exposition; `earliest_node_expiry` is the soonest `not_after`
    /// among current node certificates, when there is one.
    pub fn render(
        &self,
        now: OffsetDateTime,
        earliest_node_expiry: Option<OffsetDateTime>,
    ) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line("# HELP dtca_certificates_issued_total Certificates issued by enrollment.".into());
        line("# TYPE dtca_certificates_issued_total counter".into());
        for role in Role::ALL {
            line(format!(
                "dtca_certificates_issued_total{{role=\"{role}\"}} {}",
                self.issued[role_index(role)].load(Ordering::Relaxed)
            ));
        }
        line("# HELP dtca_certificates_renewed_total Certificates issued by renewal.".into());
        line("# TYPE dtca_certificates_renewed_total counter".into());
        for role in Role::ALL {
            line(format!(
                "dtca_certificates_renewed_total{{role=\"{role}\"}} {}",
                self.renewed[role_index(role)].load(Ordering::Relaxed)
            ));
        }
        line("# HELP dtca_certificates_revoked_total Certificates revoked.".into());
        line("# TYPE dtca_certificates_revoked_total counter".into());
        line(format!(
            "dtca_certificates_revoked_total {}",
            self.revoked.load(Ordering::Relaxed)
        ));
        line("# HELP dtca_requests_refused_total Requests refused, by reason.".into());
        line("# TYPE dtca_requests_refused_total counter".into());
        for (i, reason) in Reason::ALL.iter().enumerate() {
            line(format!(
                "dtca_requests_refused_total{{reason=\"{reason}\"}} {}",
                self.refused[i].load(Ordering::Relaxed)
            ));
        }
        line("# HELP dtca_request_duration_seconds Time to answer a request.".into());
        line("# TYPE dtca_request_duration_seconds histogram".into());
        for (rpc, h) in Rpc::ALL.iter().zip(&self.latency) {
            let rpc = rpc.as_str();
            for (i, bound) in BUCKETS.iter().enumerate() {
                line(format!(
                    "dtca_request_duration_seconds_bucket{{rpc=\"{rpc}\",le=\"{bound}\"}} {}",
                    h.buckets[i].load(Ordering::Relaxed)
                ));
            }
            let count = h.count.load(Ordering::Relaxed);
            line(format!(
                "dtca_request_duration_seconds_bucket{{rpc=\"{rpc}\",le=\"+Inf\"}} {count}"
            ));
            line(format!(
                "dtca_request_duration_seconds_sum{{rpc=\"{rpc}\"}} {}",
                h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
            ));
            line(format!(
                "dtca_request_duration_seconds_count{{rpc=\"{rpc}\"}} {count}"
            ));
        }
        let c = &self.connections;
        line("# HELP dtca_connections_open Client connections open now.".into());
        line("# TYPE dtca_connections_open gauge".into());
        line(format!(
            "dtca_connections_open {}",
            c.open.load(Ordering::Relaxed)
        ));
        line(
            "# HELP dtca_connections_ended_total Connections the server refused or closed, by why."
                .into(),
        );
        line("# TYPE dtca_connections_ended_total counter".into());
        for (i, end) in ConnectionEnd::ALL.iter().enumerate() {
            line(format!(
                "dtca_connections_ended_total{{reason=\"{}\"}} {}",
                end.as_str(),
                c.ended[i].load(Ordering::Relaxed)
            ));
        }
        line(
            "# HELP dtca_accept_errors_total Failed accepts (out of descriptors and the like)."
                .into(),
        );
        line("# TYPE dtca_accept_errors_total counter".into());
        line(format!(
            "dtca_accept_errors_total {}",
            c.accept_errors.load(Ordering::Relaxed)
        ));
        let ca = self.ca.lock().map(|c| *c).unwrap_or_default();
        line("# HELP dtca_ca_warnings Warnings about the CA's own certificates (see the log and ca status).".into());
        line("# TYPE dtca_ca_warnings gauge".into());
        line(format!("dtca_ca_warnings {}", ca.warnings));
        for (name, help, at) in [
            (
                "dtca_intermediate_expiry_seconds",
                "Seconds until the signing intermediate expires.",
                ca.intermediate_not_after,
            ),
            (
                "dtca_intermediate_switch_seconds",
                "Seconds until the prepared intermediate takes over.",
                ca.next_switch,
            ),
        ] {
            if let Some(at) = at {
                line(format!("# HELP {name} {help}"));
                line(format!("# TYPE {name} gauge"));
                line(format!("{name} {}", (at - now).whole_seconds()));
            }
        }
        if let Some(expiry) = earliest_node_expiry {
            line("# HELP dtca_node_cert_earliest_expiry_days Days until the earliest current node certificate expires.".into());
            line("# TYPE dtca_node_cert_earliest_expiry_days gauge".into());
            line(format!(
                "dtca_node_cert_earliest_expiry_days {:.3}",
                (expiry - now).as_seconds_f64() / 86_400.0
            ));
        }
        out
    }
}

/// The embedded store's files in the Prometheus text format.
pub fn render_store(stats: &StoreStats) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    };
    metric(
        "dtca_store_wal_bytes",
        "gauge",
        "Size of the embedded store's WAL file.",
        stats.wal_bytes,
    );
    metric(
        "dtca_store_wal_written_bytes_total",
        "counter",
        "Bytes appended to the embedded store's WAL since the server started.",
        stats.wal_written_bytes,
    );
    metric(
        "dtca_store_wal_resets_total",
        "counter",
        "Times the embedded store's WAL started over from its beginning.",
        stats.wal_resets,
    );
    metric(
        "dtca_store_commits_total",
        "counter",
        "Transactions the embedded store committed (each a batch of writes).",
        stats.commits,
    );
    if let Some(free) = stats.free_bytes {
        metric(
            "dtca_store_free_bytes",
            "gauge",
            "Free space on the embedded store's file system.",
            free,
        );
    }
    out
}

/// Families another part of the server renders at scrape time (the fleet's), so that this
/// module needs to know nothing of it.
#[async_trait::async_trait]
pub trait Families: Send + Sync {
    /// The families at `now`, in the text exposition.
    async fn render(&self, now: OffsetDateTime) -> String;
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes, with `families` after
/// the server's own.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    store: Arc<dyn Store>,
    families: Vec<Arc<dyn Families>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut shutdown = Box::pin(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let metrics = metrics.clone();
        let store = store.clone();
        let families = families.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                let store = store.clone();
                let families = families.clone();
                async move { Ok::<_, Infallible>(answer(&req, &metrics, &*store, &families).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    req: &Request<hyper::body::Incoming>,
    metrics: &Metrics,
    store: &dyn Store,
    families: &[Arc<dyn Families>],
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
    let mut text = metrics.render(now, earliest);
    if let Some(stats) = store.stats() {
        text.push_str(&render_store(&stats));
    }
    for f in families {
        text.push_str(&f.render(now).await);
    }
    *response.body_mut() = Full::new(Bytes::from(text));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.issued(Role::Node);
        m.renewed(Role::Operator);
        m.refused(Reason::TokenUsedUp);
        m.observe(Rpc::Enroll, Duration::from_millis(3));
        let now = OffsetDateTime::now_utc();
        let text = m.render(now, Some(now + time::Duration::days(2)));
        assert!(text.contains("dtca_certificates_issued_total{role=\"node\"} 1"));
        assert!(text.contains("dtca_certificates_renewed_total{role=\"operator\"} 1"));
        assert!(text.contains("dtca_requests_refused_total{reason=\"token-used-up\"} 1"));
        assert!(
            text.contains("dtca_request_duration_seconds_bucket{rpc=\"enroll\",le=\"0.0025\"} 0")
        );
        assert!(
            text.contains("dtca_request_duration_seconds_bucket{rpc=\"enroll\",le=\"0.005\"} 1")
        );
        assert!(text.contains("dtca_node_cert_earliest_expiry_days 2.000"));
    }

    #[test]
    fn renders_connection_counters() {
        let m = Metrics::default();
        m.connection_opened();
        m.connection_opened();
        m.connection_closed();
        m.connection_ended(ConnectionEnd::AddressLimit);
        m.connection_ended(ConnectionEnd::Idle);
        m.connection_ended(ConnectionEnd::Idle);
        m.accept_error();
        let text = m.render(OffsetDateTime::now_utc(), None);
        assert!(text.contains("dtca_connections_open 1\n"), "{text}");
        assert!(text.contains("dtca_connections_ended_total{reason=\"address-limit\"} 1"));
        assert!(text.contains("dtca_connections_ended_total{reason=\"idle\"} 2"));
        assert!(text.contains("dtca_connections_ended_total{reason=\"no-request\"} 0"));
        assert!(text.contains("dtca_accept_errors_total 1"));
    }

    #[test]
    fn ca_warnings_and_the_next_switch_are_gauges() {
        let m = Metrics::default();
        let now = OffsetDateTime::now_utc();
        assert!(m.render(now, None).contains("dtca_ca_warnings 0"));
        m.set_ca(CaGauges {
            warnings: 1,
            intermediate_not_after: Some(now + time::Duration::seconds(90)),
            next_switch: None,
        });
        let text = m.render(now, None);
        assert!(text.contains("dtca_ca_warnings 1"), "{text}");
        assert!(
            text.contains("dtca_intermediate_expiry_seconds 90"),
            "{text}"
        );
        assert!(!text.contains("dtca_intermediate_switch_seconds"), "{text}");
    }
}
