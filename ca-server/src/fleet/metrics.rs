//! The fleet's Prometheus families, rendered from one fleet view at scrape time. Labels
//! are bounded (a node state, never a node name), so 10,000 nodes make the same handful
//! of series as ten.
//!
//! Kept apart from the server's counters (`crate::metrics`) so that it can move with them:
//! [`render`] needs only the view and two gauges.

use dtca_proto::v1;
use time::OffsetDateTime;

use super::NodeState;
use crate::registrar::Registrar;

/// The fleet's families for the `/metrics` endpoint.
#[derive(Debug)]
pub struct FleetFamilies(pub std::sync::Arc<Registrar>);

#[async_trait::async_trait]
impl crate::metrics::Families for FleetFamilies {
    async fn render(&self, now: OffsetDateTime) -> String {
        scrape(&self.0, now).await
    }
}

/// The families for `registrar`'s fleet at `now`; nothing when the store cannot be read
/// (the scrape keeps the server's own counters).
pub async fn scrape(registrar: &Registrar, now: OffsetDateTime) -> String {
    match super::view(registrar, &[], now).await {
        Ok(view) => render(
            &view,
            registrar.hub().watchers(),
            registrar.fleet().restarts_in_progress(),
        ),
        Err(e) => {
            tracing::debug!(error = %e, "fleet metrics: cannot read the fleet");
            String::new()
        }
    }
}

/// The families, in the Prometheus text exposition. `channels` is how many agent channels
/// are open now; `restarts` how many engine restarts are under way.
pub fn render(view: &v1::FleetResponse, channels: usize, restarts: u64) -> String {
    let s = view.summary.unwrap_or_default();
    let mut out = String::new();
    let mut line = |l: String| {
        out.push_str(&l);
        out.push('\n');
    };
    line("# HELP dtca_fleet_nodes Enrolled nodes by state (see `ca-server fleet`).".into());
    line("# TYPE dtca_fleet_nodes gauge".into());
    for state in NodeState::ALL {
        let n = match state {
            NodeState::Mtls => s.mtls,
            NodeState::Plain => s.plain,
            NodeState::Failed => s.failed,
            NodeState::Unhealthy => s.unhealthy,
            NodeState::Stale => s.stale,
            NodeState::Unreported => s.unreported,
        };
        line(format!("dtca_fleet_nodes{{state=\"{state}\"}} {n}"));
    }
    line("# HELP dtca_fleet_nodes_expiring Nodes whose certificate expires within 7 days.".into());
    line("# TYPE dtca_fleet_nodes_expiring gauge".into());
    line(format!("dtca_fleet_nodes_expiring {}", s.expiring));
    line("# HELP dtca_fleet_stale_agents Nodes whose agent stopped reporting.".into());
    line("# TYPE dtca_fleet_stale_agents gauge".into());
    line(format!("dtca_fleet_stale_agents {}", s.stale));
    if s.earliest_expiry_unix > 0 {
        line("# HELP dtca_fleet_earliest_node_expiry_timestamp_seconds When the first node certificate expires.".into());
        line("# TYPE dtca_fleet_earliest_node_expiry_timestamp_seconds gauge".into());
        line(format!(
            "dtca_fleet_earliest_node_expiry_timestamp_seconds {}",
            s.earliest_expiry_unix
        ));
    }
    line(
        "# HELP dtca_fleet_restarts_in_progress Engine restarts granted and not given back yet."
            .into(),
    );
    line("# TYPE dtca_fleet_restarts_in_progress gauge".into());
    line(format!("dtca_fleet_restarts_in_progress {restarts}"));
    line("# HELP dtca_fleet_agent_channels Agent channels open to this replica.".into());
    line("# TYPE dtca_fleet_agent_channels gauge".into());
    line(format!("dtca_fleet_agent_channels {channels}"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_is_a_series_and_no_node_is_a_label() {
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
        let text = render(&view, 7, 2);
        assert!(
            text.contains("dtca_fleet_nodes{state=\"mtls\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("dtca_fleet_nodes{state=\"unreported\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("dtca_fleet_stale_agents 1\n"), "{text}");
        assert!(text.contains("dtca_fleet_earliest_node_expiry_timestamp_seconds 1800000000\n"));
        assert!(
            text.contains("dtca_fleet_restarts_in_progress 2\n"),
            "{text}"
        );
        assert!(text.contains("dtca_fleet_agent_channels 7\n"), "{text}");
        assert!(!text.contains("secret-name"), "{text}");
    }
}
