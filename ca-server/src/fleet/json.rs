//! The fleet view as JSON: what `ca-server fleet --json` prints and what the web page's
//! data endpoint serves (the README documents it). Times are RFC 3339 in UTC; a value the
//! CA does not know is `null`, never an empty string or a zero.

use dtca_proto::v1;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The whole view.
pub fn view(v: &v1::FleetResponse) -> Value {
    let summary = v.summary.unwrap_or_default();
    json!({
        "generated_at": time(v.generated_unix),
        "stale_after_seconds": v.stale_after_seconds,
        "expiring_within_seconds": v.expiring_within_seconds,
        "summary": {
            "nodes": summary.nodes,
            "mtls": summary.mtls,
            "plain": summary.plain,
            "failed": summary.failed,
            "unhealthy": summary.unhealthy,
            "stale": summary.stale,
            "unreported": summary.unreported,
            "expiring": summary.expiring,
            "earliest_expiry": time(summary.earliest_expiry_unix),
        },
        "nodes": v.nodes.iter().map(node).collect::<Vec<_>>(),
    })
}

/// One row.
pub fn node(n: &v1::FleetNode) -> Value {
    let reported = n.reported_unix > 0;
    json!({
        "name": n.name,
        "engine": text(&n.endpoint),
        "state": n.state,
        "mode": text(&n.mode),
        "serial": text(&n.serial),
        "expires_at": time(n.not_after_unix),
        "expiring": n.expiring,
        "last_report_at": time(n.reported_unix),
        "stale": n.stale,
        "last_error": text(&n.last_error),
        "engine_healthy": reported.then_some(n.engine_healthy),
        "plain_listeners": n.plain_listeners,
        "swarm_role": text(&n.swarm_role),
        "engine_version": text(&n.engine_version),
        "agent_version": text(&n.agent_version),
        "addresses": n.addresses,
        "last_rotation_at": time(n.last_rotation_unix),
        "next_renewal_at": time(n.next_renewal_unix),
    })
}

/// RFC 3339, or null for 0 (the wire's "unknown").
pub fn time(unix: i64) -> Value {
    if unix == 0 {
        return Value::Null;
    }
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .map_or(Value::Null, Value::String)
}

fn text(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::String(s.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_values_are_null_and_times_rfc3339() {
        let n = v1::FleetNode {
            name: "n1".into(),
            state: "unreported".into(),
            not_after_unix: 1_800_000_000,
            ..Default::default()
        };
        let j = node(&n);
        assert_eq!(j["expires_at"], "2027-01-15T08:00:00Z");
        for key in [
            "engine",
            "mode",
            "last_report_at",
            "last_error",
            "engine_healthy",
        ] {
            assert!(j[key].is_null(), "{key}: {j}");
        }
    }
}
