//! Prometheus metrics, kept and encoded by `prometheus-client` (OpenMetrics text):
//! issued, renewed and revoked certificates, refusals by reason, request latency,
//! connections (open, refused or closed by the server and why, accept errors), the CA's
//! own certificates and the earliest node certificate's expiry (as Unix timestamps),
//! build info, the embedded store ([`store`]) and the process ([`process`]).
//!
//! Layout: this file (the families and the calls that count), [`process`] (RSS, CPU,
//! descriptors, start time from /proc), [`store`] (the embedded store's files),
//! [`http`] (`GET /metrics`).
//!
//! **Adding metrics.** Every family is registered once, in [`Metrics::new`], or later
//! through [`Metrics::register`] / [`Metrics::register_collector`] (for values read at
//! scrape time); counting stays lock-free.

mod http;
mod process;
mod store;

use std::sync::Mutex;
use std::time::Duration;

use dtca_common::Reason;
use dtca_pki::identity::Role;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Metric, Registry};
use time::OffsetDateTime;

pub use http::serve;

/// Families another part of the server sets at each scrape from state it must read first
/// (the fleet's), so that this module needs to know nothing of it.
#[async_trait::async_trait]
pub trait Refresh: Send + Sync {
    /// Sets the families' values for a scrape at `now`.
    async fn refresh(&self, now: OffsetDateTime);
}
pub use store::StoreCollector;

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

/// One label: its name and value.
type Label = [(&'static str, &'static str); 1];

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

/// The server's metrics: the families it counts in, and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    issued: Family<Label, Counter>,
    renewed: Family<Label, Counter>,
    revoked: Counter,
    refused: Family<Label, Counter>,
    latency: Family<Label, Histogram, fn() -> Histogram>,
    connections_open: Gauge,
    connections_ended: Family<Label, Counter>,
    accept_errors: Counter,
    ca_warnings: Gauge,
    intermediate_expiry: Gauge,
    intermediate_switch: Gauge,
    earliest_node_expiry: Gauge,
    admin_expiry: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

impl Metrics {
    /// Every family, registered, with each label value the server can count at 0 (so a
    /// rate is defined before the first event), plus build info and the process.
    pub fn new() -> Self {
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            issued: Family::default(),
            renewed: Family::default(),
            revoked: Counter::default(),
            refused: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            connections_open: Gauge::default(),
            connections_ended: Family::default(),
            accept_errors: Counter::default(),
            ca_warnings: Gauge::default(),
            intermediate_expiry: Gauge::default(),
            intermediate_switch: Gauge::default(),
            earliest_node_expiry: Gauge::default(),
            admin_expiry: Gauge::default(),
        };
        for role in Role::ALL {
            let _ = m.issued.get_or_create(&[("role", role.as_str())]);
            let _ = m.renewed.get_or_create(&[("role", role.as_str())]);
        }
        for reason in Reason::ALL.iter().filter(|r| r.sent_by_server()) {
            let _ = m.refused.get_or_create(&[("reason", reason.as_str())]);
        }
        for rpc in Rpc::ALL {
            let _ = m.latency.get_or_create(&[("rpc", rpc.as_str())]);
        }
        for end in ConnectionEnd::ALL {
            let _ = m
                .connections_ended
                .get_or_create(&[("reason", end.as_str())]);
        }
        m.register(
            "dtca_certificates_issued",
            "Certificates issued by enrollment",
            m.issued.clone(),
        );
        m.register(
            "dtca_certificates_renewed",
            "Certificates issued by renewal",
            m.renewed.clone(),
        );
        m.register(
            "dtca_certificates_revoked",
            "Certificates revoked",
            m.revoked.clone(),
        );
        m.register(
            "dtca_requests_refused",
            "Requests refused, by reason",
            m.refused.clone(),
        );
        m.register(
            "dtca_request_duration_seconds",
            "Time to answer a request",
            m.latency.clone(),
        );
        m.register(
            "dtca_connections_open",
            "Client connections open now",
            m.connections_open.clone(),
        );
        m.register(
            "dtca_connections_ended",
            "Connections the server refused or closed, by why",
            m.connections_ended.clone(),
        );
        m.register(
            "dtca_accept_errors",
            "Failed accepts (out of descriptors and the like)",
            m.accept_errors.clone(),
        );
        m.register(
            "dtca_ca_warnings",
            "Warnings about the CA's own certificates (see the log and ca status)",
            m.ca_warnings.clone(),
        );
        m.register(
            "dtca_intermediate_expiry_timestamp_seconds",
            "When the signing intermediate expires (Unix time)",
            m.intermediate_expiry.clone(),
        );
        m.register(
            "dtca_intermediate_switch_timestamp_seconds",
            "When the prepared intermediate takes over (Unix time; 0 while none is prepared)",
            m.intermediate_switch.clone(),
        );
        m.register(
            "dtca_node_cert_earliest_expiry_timestamp_seconds",
            "When the earliest current node certificate expires (Unix time; 0 while there is none)",
            m.earliest_node_expiry.clone(),
        );
        m.register(
            "dtca_admin_cert_expiry_timestamp_seconds",
            "When the state dir's admin certificate expires (Unix time; admin commands renew it)",
            m.admin_expiry.clone(),
        );
        m.register(
            "dtca_build",
            "The ca-server build",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        m.register_collector(Box::new(process::ProcessCollector));
        m
    }

    /// Registers another family under `name` (the full name, `dtca_...`; counters get
    /// `_total` when encoded). Keep a clone of `metric` to count in.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        if let Ok(mut registry) = self.registry.lock() {
            registry.register(name, help, metric);
        }
    }

    /// Registers values read at each scrape (the store's files, the process).
    pub fn register_collector(&self, collector: Box<dyn Collector>) {
        if let Ok(mut registry) = self.registry.lock() {
            registry.register_collector(collector);
        }
    }

    /// Records what the lifecycle driver saw.
    pub fn set_ca(&self, gauges: CaGauges) {
        let unix = |t: Option<OffsetDateTime>| t.map_or(0, OffsetDateTime::unix_timestamp);
        self.ca_warnings
            .set(i64::try_from(gauges.warnings).unwrap_or(i64::MAX));
        self.intermediate_expiry
            .set(unix(gauges.intermediate_not_after));
        self.intermediate_switch.set(unix(gauges.next_switch));
    }

    /// Records when the earliest current node certificate expires (`None`: there is none).
    pub fn set_earliest_node_expiry(&self, at: Option<OffsetDateTime>) {
        self.earliest_node_expiry
            .set(at.map_or(0, OffsetDateTime::unix_timestamp));
    }

    /// Records when the admin bundle's certificate expires (`None`: unreadable).
    pub fn set_admin_expiry(&self, at: Option<OffsetDateTime>) {
        self.admin_expiry
            .set(at.map_or(0, OffsetDateTime::unix_timestamp));
    }

    /// Counts an enrollment.
    pub fn issued(&self, role: Role) {
        self.issued.get_or_create(&[("role", role.as_str())]).inc();
    }

    /// Counts a renewal.
    pub fn renewed(&self, role: Role) {
        self.renewed.get_or_create(&[("role", role.as_str())]).inc();
    }

    /// Counts revocations.
    pub fn revoked(&self, n: usize) {
        self.revoked.inc_by(n as u64);
    }

    /// Counts a refusal.
    pub fn refused(&self, reason: Reason) {
        self.refused
            .get_or_create(&[("reason", reason.as_str())])
            .inc();
    }

    /// Counts an accepted connection as open.
    pub fn connection_opened(&self) {
        self.connections_open.inc();
    }

    /// Counts an open connection as closed.
    pub fn connection_closed(&self) {
        self.connections_open.dec();
    }

    /// Counts a connection the server refused or closed, by why.
    pub fn connection_ended(&self, end: ConnectionEnd) {
        self.connections_ended
            .get_or_create(&[("reason", end.as_str())])
            .inc();
    }

    /// Counts a failed `accept`.
    pub fn accept_error(&self) {
        self.accept_errors.inc();
    }

    /// Records how long a call took.
    pub fn observe(&self, rpc: Rpc, elapsed: Duration) {
        self.latency
            .get_or_create(&[("rpc", rpc.as_str())])
            .observe(elapsed.as_secs_f64());
    }

    /// The OpenMetrics text exposition of everything registered.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if let Ok(registry) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        }
        text
    }
}

/// Encodes one value read at scrape time (for collectors).
fn constant(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    let metric_encoder = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(metric_encoder)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of one series (`name{labels}`) in `text`.
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::new();
        m.issued(Role::Node);
        m.renewed(Role::Operator);
        m.refused(Reason::TokenUsedUp);
        m.observe(Rpc::Enroll, Duration::from_millis(3));
        let text = m.render();
        assert_eq!(
            value(&text, "dtca_certificates_issued_total{role=\"node\"}"),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            value(&text, "dtca_certificates_renewed_total{role=\"operator\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                "dtca_requests_refused_total{reason=\"token-used-up\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                "dtca_request_duration_seconds_bucket{le=\"0.0025\",rpc=\"enroll\"}"
            ),
            Some(0.0),
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                "dtca_request_duration_seconds_bucket{le=\"0.005\",rpc=\"enroll\"}"
            ),
            Some(1.0),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn counts_only_reasons_the_server_can_send() {
        let text = Metrics::new().render();
        assert!(text.contains("dtca_requests_refused_total{reason=\"name-taken\"} 0"));
        for never in [Reason::DockerSwitch, Reason::Unreachable, Reason::Usage] {
            assert!(!text.contains(&format!("reason=\"{never}\"")), "{never}");
        }
    }

    #[test]
    fn renders_connection_counters() {
        let m = Metrics::new();
        m.connection_opened();
        m.connection_opened();
        m.connection_closed();
        m.connection_ended(ConnectionEnd::AddressLimit);
        m.connection_ended(ConnectionEnd::Idle);
        m.connection_ended(ConnectionEnd::Idle);
        m.accept_error();
        let text = m.render();
        assert_eq!(value(&text, "dtca_connections_open"), Some(1.0), "{text}");
        assert_eq!(
            value(
                &text,
                "dtca_connections_ended_total{reason=\"address-limit\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "dtca_connections_ended_total{reason=\"idle\"}"),
            Some(2.0)
        );
        assert_eq!(
            value(&text, "dtca_connections_ended_total{reason=\"no-request\"}"),
            Some(0.0)
        );
        assert_eq!(value(&text, "dtca_accept_errors_total"), Some(1.0));
    }

    #[test]
    fn ca_certificates_and_the_earliest_node_are_timestamps() {
        let m = Metrics::new();
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        assert_eq!(value(&m.render(), "dtca_ca_warnings"), Some(0.0));
        m.set_ca(CaGauges {
            warnings: 1,
            intermediate_not_after: Some(now + time::Duration::seconds(90)),
            next_switch: None,
        });
        m.set_earliest_node_expiry(Some(now + time::Duration::days(2)));
        let text = m.render();
        assert_eq!(value(&text, "dtca_ca_warnings"), Some(1.0), "{text}");
        assert_eq!(
            value(&text, "dtca_intermediate_expiry_timestamp_seconds"),
            Some(1_800_000_090.0)
        );
        assert_eq!(
            value(&text, "dtca_intermediate_switch_timestamp_seconds"),
            Some(0.0)
        );
        assert_eq!(
            value(&text, "dtca_node_cert_earliest_expiry_timestamp_seconds"),
            Some(1_800_172_800.0)
        );
    }

    #[test]
    fn build_info_and_process_metrics_are_there() {
        let text = Metrics::new().render();
        let version = format!(
            "dtca_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&version), "{text}");
        assert!(value(&text, "process_resident_memory_bytes").unwrap_or(0.0) > 0.0);
        assert!(value(&text, "process_open_fds").unwrap_or(0.0) > 0.0);
        assert!(value(&text, "process_start_time_seconds").unwrap_or(0.0) > 1.6e9);
        assert!(value(&text, "process_cpu_seconds_total").is_some());
    }
}
