//! The fleet's Prometheus families, set from one fleet view at each scrape. Labels are
//! bounded (a node state, never a node name), so 10,000 nodes make the same handful of
//! series as ten.

use std::sync::Arc;

use dtca_proto::v1;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use time::OffsetDateTime;

use super::NodeState;
use crate::metrics::Metrics;
use crate::registrar::Registrar;

/// One label: its name and value.
type Label = [(&'static str, &'static str); 1];

/// The fleet's families, refreshed at scrape time from the registrar's fleet view.
#[derive(Debug)]
pub struct FleetFamilies {
    registrar: Arc<Registrar>,
    gauges: FleetGauges,
}

impl FleetFamilies {
    /// The families of `registrar`'s fleet, registered in `metrics`.
    pub fn register(registrar: Arc<Registrar>, metrics: &Metrics) -> Self {
        FleetFamilies {
            registrar,
            gauges: FleetGauges::register(metrics),
        }
    }
}

/// The fleet's gauges.
#[derive(Debug)]
pub struct FleetGauges {
    nodes: Family<Label, Gauge>,
    expiring: Gauge,
    stale: Gauge,
    earliest_expiry: Gauge,
    restarts: Gauge,
    channels: Gauge,
}

impl FleetGauges {
    /// The gauges, registered in `metrics`.
    pub fn register(metrics: &Metrics) -> Self {
        let f = FleetGauges {
            nodes: Family::default(),
            expiring: Gauge::default(),
            stale: Gauge::default(),
            earliest_expiry: Gauge::default(),
            restarts: Gauge::default(),
            channels: Gauge::default(),
        };
        for state in NodeState::ALL {
            let _ = f.nodes.get_or_create(&[("state", state.as_str())]);
        }
        metrics.register(
            "dtca_fleet_nodes",
            "Enrolled nodes by state (see `ca-server fleet`)",
            f.nodes.clone(),
        );
        metrics.register(
            "dtca_fleet_nodes_expiring",
            "Nodes whose certificate expires within 7 days",
            f.expiring.clone(),
        );
        metrics.register(
            "dtca_fleet_stale_agents",
            "Nodes whose agent stopped reporting",
            f.stale.clone(),
        );
        metrics.register(
            "dtca_fleet_earliest_node_expiry_timestamp_seconds",
            "When the first node certificate of the fleet expires (Unix time; 0 while there is none)",
            f.earliest_expiry.clone(),
        );
        metrics.register(
            "dtca_fleet_restarts_in_progress",
            "Engine restarts granted and not given back yet",
            f.restarts.clone(),
        );
        metrics.register(
            "dtca_fleet_agent_channels",
            "Agent channels open to this replica",
            f.channels.clone(),
        );
        f
    }

    /// Sets the gauges from `view`, with `channels` agent channels open and `restarts`
    /// engine restarts under way.
    pub fn set(&self, view: &v1::FleetResponse, channels: usize, restarts: u64) {
        let s = view.summary.unwrap_or_default();
        for state in NodeState::ALL {
            let n = match state {
                NodeState::Mtls => s.mtls,
                NodeState::Plain => s.plain,
                NodeState::Failed => s.failed,
                NodeState::Unhealthy => s.unhealthy,
                NodeState::Stale => s.stale,
                NodeState::Unreported => s.unreported,
                NodeState::Expired => s.expired,
            };
            self.nodes
                .get_or_create(&[("state", state.as_str())])
                .set(i64::from(n));
        }
        self.expiring.set(i64::from(s.expiring));
        self.stale.set(i64::from(s.stale));
        self.earliest_expiry.set(s.earliest_expiry_unix);
        self.restarts
            .set(i64::try_from(restarts).unwrap_or(i64::MAX));
        self.channels
            .set(i64::try_from(channels).unwrap_or(i64::MAX));
    }
}

#[async_trait::async_trait]
impl crate::metrics::Refresh for FleetFamilies {
    async fn refresh(&self, now: OffsetDateTime) {
        let registrar = &self.registrar;
        match super::view(registrar, &[], now).await {
            Ok(view) => {
                // Slots held in the store: every replica's restarts, not only this one's.
                let restarts = registrar.restarts_in_progress(now).await.unwrap_or(0);
                self.gauges.set(
                    &view,
                    registrar.hub().watchers(),
                    u64::try_from(restarts).unwrap_or(u64::MAX),
                );
            }
            // The scrape keeps the last values and the server's own counters.
            Err(e) => tracing::debug!(error = %e, "fleet metrics: cannot read the fleet"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_is_a_series_and_no_node_is_a_label() {
        let metrics = Metrics::new();
        let gauges = FleetGauges::register(&metrics);
        let view = v1::FleetResponse {
            summary: Some(v1::FleetSummary {
                nodes: 3,
                mtls: 2,
                stale: 1,
                expiring: 1,
                earliest_expiry_unix: 1_800_000_000,
                ..Default::default()
            }),
            nodes: vec![v1::FleetNode {
                name: "secret-name".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        gauges.set(&view, 7, 2);
        let text = metrics.render();
        for line in [
            "dtca_fleet_nodes{state=\"mtls\"} 2\n",
            "dtca_fleet_nodes{state=\"unreported\"} 0\n",
            "dtca_fleet_stale_agents 1\n",
            "dtca_fleet_earliest_node_expiry_timestamp_seconds 1800000000\n",
            "dtca_fleet_restarts_in_progress 2\n",
            "dtca_fleet_agent_channels 7\n",
        ] {
            assert!(text.contains(line), "{line} not in {text}");
        }
        assert!(!text.contains("secret-name"), "{text}");
    }
}
