//! A node's state, decided from its certificate and its agent's last report: the one
//! pure decision of the fleet view, and the view built from it.
//!
//! The view is the wire answer (`FleetResponse`) itself: the CLI, the page and the metrics
//! all read that one shape, so there is nothing to translate twice.

use std::collections::HashMap;
use std::time::Duration;

use dtca_proto::v1;
use time::OffsetDateTime;

use crate::store::{AgentRecord, AgentState, NodeRecord};

/// A certificate expiring within this is flagged (the summary's "expiring within 7 days").
pub const EXPIRING_WITHIN: Duration = Duration::from_secs(7 * 86_400);

/// Where a node stands, most urgent first when several apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeState {
    /// Its newest certificate has expired: its engine and its clients refuse each other,
    /// and its agent can no longer reach the CA to renew (it needs a new token).
    Expired,
    /// Its agent has not reported for longer than the stale threshold: what it last said
    /// may no longer hold.
    Stale,
    /// Its agent never reported (enrolled without an agent, or the agent never reached
    /// the CA).
    Unreported,
    /// The last `enroll --docker` failed (the engine was left as it was).
    Failed,
    /// The engine is not switched, or still listens on a plain TCP address.
    Plain,
    /// Switched, but the engine did not answer the agent's check as it should.
    Unhealthy,
    /// Served over mutual TLS only, and answering.
    Mtls,
}

impl NodeState {
    /// Every state, in the order the summary names them.
    pub const ALL: [NodeState; 7] = [
        NodeState::Mtls,
        NodeState::Plain,
        NodeState::Failed,
        NodeState::Unhealthy,
        NodeState::Stale,
        NodeState::Unreported,
        NodeState::Expired,
    ];

    /// The word the CLI, the JSON and the metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Mtls => "mtls",
            NodeState::Plain => "plain",
            NodeState::Failed => "failed",
            NodeState::Unhealthy => "unhealthy",
            NodeState::Stale => "stale",
            NodeState::Unreported => "unreported",
            NodeState::Expired => "expired",
        }
    }

    /// The state a node is in, from its certificate's expiry and its agent's last report
    /// (and when it arrived).
    pub fn of(
        not_after: OffsetDateTime,
        report: Option<(&AgentState, OffsetDateTime)>,
        now: OffsetDateTime,
        stale_after: Duration,
    ) -> NodeState {
        if not_after <= now {
            return NodeState::Expired;
        }
        let Some((state, received)) = report else {
            return NodeState::Unreported;
        };
        if now - received > stale_after {
            NodeState::Stale
        } else if !state.failed_switch.is_empty() {
            NodeState::Failed
        } else if !matches!(state.mode.as_str(), "native" | "guard")
            || !state.plain_listeners.is_empty()
        {
            NodeState::Plain
        } else if !state.engine_healthy {
            NodeState::Unhealthy
        } else {
            NodeState::Mtls
        }
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for NodeState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown node state {s:?} (expected {})", FILTER_WORDS))
    }
}

/// What `--state` accepts.
pub const FILTER_WORDS: &str =
    "mtls, plain, failed, unhealthy, stale, unreported, expired or expiring";

/// Which rows to show: nodes in any of `states`, or expiring when `expiring`; every node
/// when both are empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    states: Vec<NodeState>,
    expiring: bool,
}

impl Filter {
    /// Reads the words of `--state` (comma-separated lists allowed).
    ///
    /// # Errors
    /// The first word that names no state.
    pub fn parse(words: &[String]) -> Result<Filter, String> {
        let mut filter = Filter::default();
        for word in words.iter().flat_map(|w| w.split(',')) {
            match word.trim() {
                "" => {}
                "expiring" => filter.expiring = true,
                other => filter.states.push(other.parse()?),
            }
        }
        Ok(filter)
    }

    fn admits(&self, state: NodeState, expiring: bool) -> bool {
        (self.states.is_empty() && !self.expiring)
            || self.states.contains(&state)
            || (self.expiring && expiring)
    }
}

/// The view: a row per node in `nodes` (sorted by name) that `filter` admits, with its
/// agent's report from `reports` (by node name), and the summary of every node.
pub fn build(
    nodes: Vec<NodeRecord>,
    reports: &HashMap<String, AgentRecord>,
    filter: &Filter,
    now: OffsetDateTime,
    stale_after: Duration,
) -> v1::FleetResponse {
    let mut summary = v1::FleetSummary::default();
    let mut rows = Vec::new();
    let mut nodes = nodes;
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    for node in nodes {
        let report = reports.get(&node.name);
        let state = NodeState::of(
            node.cert.not_after,
            report.map(|r| (&r.state, r.received_at)),
            now,
            stale_after,
        );
        let expiring = state != NodeState::Expired && node.cert.not_after - now <= EXPIRING_WITHIN;
        count(&mut summary, state, expiring, node.cert.not_after);
        if !filter.admits(state, expiring) {
            continue;
        }
        rows.push(row(node, report, state, expiring));
    }
    v1::FleetResponse {
        generated_unix: now.unix_timestamp(),
        stale_after_seconds: i64::try_from(stale_after.as_secs()).unwrap_or(i64::MAX),
        expiring_within_seconds: i64::try_from(EXPIRING_WITHIN.as_secs()).unwrap_or(i64::MAX),
        summary: Some(summary),
        nodes: rows,
    }
}

fn count(
    summary: &mut v1::FleetSummary,
    state: NodeState,
    expiring: bool,
    not_after: OffsetDateTime,
) {
    summary.nodes += 1;
    *match state {
        NodeState::Mtls => &mut summary.mtls,
        NodeState::Plain => &mut summary.plain,
        NodeState::Failed => &mut summary.failed,
        NodeState::Unhealthy => &mut summary.unhealthy,
        NodeState::Stale => &mut summary.stale,
        NodeState::Unreported => &mut summary.unreported,
        NodeState::Expired => &mut summary.expired,
    } += 1;
    summary.expiring += u32::from(expiring);
    let at = not_after.unix_timestamp();
    if summary.earliest_expiry_unix == 0 || at < summary.earliest_expiry_unix {
        summary.earliest_expiry_unix = at;
    }
}

fn row(
    node: NodeRecord,
    report: Option<&AgentRecord>,
    state: NodeState,
    expiring: bool,
) -> v1::FleetNode {
    let mut row = v1::FleetNode {
        name: node.name,
        endpoint: node.endpoint.unwrap_or_default(),
        state: state.as_str().into(),
        serial: node.cert.serial.to_string(),
        not_after_unix: node.cert.not_after.unix_timestamp(),
        expiring,
        stale: state == NodeState::Stale,
        ..Default::default()
    };
    if let Some(r) = report {
        let s = &r.state;
        row.last_error = [&s.failed_switch, &s.last_error, &s.engine_error]
            .into_iter()
            .find(|e| !e.is_empty())
            .cloned()
            .unwrap_or_default();
        row.reported_unix = r.received_at.unix_timestamp();
        row.mode.clone_from(&s.mode);
        row.engine_healthy = s.engine_healthy;
        row.plain_listeners.clone_from(&s.plain_listeners);
        row.swarm_role.clone_from(&s.swarm_role);
        row.engine_version.clone_from(&s.engine_version);
        row.agent_version.clone_from(&s.agent_version);
        row.addresses.clone_from(&s.addresses);
        row.last_rotation_unix = s.last_rotation_unix;
        row.next_renewal_unix = s.next_renewal_unix;
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(mode: &str, healthy: bool, plain: &[&str], failed: &str) -> AgentState {
        AgentState {
            mode: mode.into(),
            engine_healthy: healthy,
            plain_listeners: plain.iter().map(|s| (*s).to_string()).collect(),
            failed_switch: failed.into(),
            ..Default::default()
        }
    }

    #[test]
    fn each_report_gives_the_state_it_describes() {
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(100);
        let stale_after = Duration::from_secs(600);
        let fresh = now - time::Duration::seconds(30);
        let old = now - time::Duration::seconds(601);
        let mtls = agent("native", true, &[], "");
        let table = [
            (None, NodeState::Unreported),
            (
                Some((agent("native", true, &[], ""), fresh)),
                NodeState::Mtls,
            ),
            (
                Some((agent("guard", true, &[], ""), fresh)),
                NodeState::Mtls,
            ),
            (Some((mtls.clone(), old)), NodeState::Stale),
            (
                Some((agent("none", false, &[], ""), fresh)),
                NodeState::Plain,
            ),
            (
                Some((agent("native", true, &["tcp://0.0.0.0:2375"], ""), fresh)),
                NodeState::Plain,
            ),
            (
                Some((
                    agent("none", false, &[], "the engine did not answer"),
                    fresh,
                )),
                NodeState::Failed,
            ),
            (
                Some((agent("native", false, &[], ""), fresh)),
                NodeState::Unhealthy,
            ),
            // Stale wins: what a silent agent last said may no longer hold.
            (
                Some((agent("none", false, &[], "broken"), old)),
                NodeState::Stale,
            ),
        ];
        let valid = now + time::Duration::days(30);
        for (report, want) in table {
            let report = report.as_ref().map(|(s, at)| (s, *at));
            assert_eq!(
                NodeState::of(valid, report, now, stale_after),
                want,
                "{report:?}"
            );
            // Expired wins over anything its agent says.
            assert_eq!(
                NodeState::of(now, report, now, stale_after),
                NodeState::Expired,
                "{report:?}"
            );
        }
    }

    #[test]
    fn an_expired_node_is_counted_as_expired_and_not_as_expiring() {
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(100);
        let node = |name: &str, not_after: OffsetDateTime| NodeRecord {
            name: name.into(),
            endpoint: None,
            cert: crate::store::conformance::cert(dtca_pki::identity::Role::Node, name, not_after)
                .summary,
        };
        let nodes = vec![
            node("gone", now - time::Duration::days(3)),
            node("soon", now + time::Duration::days(2)),
            node("fine", now + time::Duration::days(60)),
        ];
        let all = build(
            nodes.clone(),
            &HashMap::new(),
            &Filter::default(),
            now,
            Duration::from_secs(600),
        );
        let s = all.summary.unwrap();
        assert_eq!((s.nodes, s.expired, s.expiring, s.unreported), (3, 1, 1, 2));
        assert_eq!(
            s.earliest_expiry_unix,
            (now - time::Duration::days(3)).unix_timestamp()
        );
        let gone = all.nodes.iter().find(|n| n.name == "gone").unwrap();
        assert_eq!(
            (gone.name.as_str(), gone.state.as_str(), gone.expiring),
            ("gone", "expired", false)
        );
        let only = Filter::parse(&["expired".into()]).unwrap();
        let expired = build(nodes, &HashMap::new(), &only, now, Duration::from_secs(600));
        let names: Vec<&str> = expired.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["gone"]);
    }

    #[test]
    fn filter_words_are_states_or_expiring_and_nothing_else() {
        let f = Filter::parse(&["plain,stale".into(), "expiring".into()]).unwrap();
        assert!(f.admits(NodeState::Plain, false));
        assert!(f.admits(NodeState::Mtls, true));
        assert!(!f.admits(NodeState::Mtls, false));
        assert!(Filter::default().admits(NodeState::Mtls, false));
        let err = Filter::parse(&["tls".into()]).unwrap_err();
        assert!(err.contains("\"tls\""), "{err}");
    }

    #[test]
    fn every_state_reads_back_from_its_word() {
        for st in NodeState::ALL {
            assert_eq!(st.as_str().parse::<NodeState>(), Ok(st));
        }
    }
}
