//! The fleet view as JSON: what `ca-server fleet --json` prints and what the web page's
//! data endpoint serves (the README documents it). Times are RFC 3339 in UTC; a value the
//! CA does not know is `null`, never an empty string or a zero.
//!
//! The rows are written straight from the wire answer, borrowed: no intermediate
//! `serde_json::Value` (a map per row, a string per field), which at 10,000 nodes cost
//! more than reading the store.

use dtca_proto::v1;
use serde::{Serialize, Serializer};
use time::OffsetDateTime;

/// The whole view, ready to serialize (`serde_json::to_writer` and friends).
pub fn view(v: &v1::FleetResponse) -> View<'_> {
    View {
        generated_at: time(v.generated_unix),
        stale_after_seconds: v.stale_after_seconds,
        expiring_within_seconds: v.expiring_within_seconds,
        summary: summary(v.summary.unwrap_or_default()),
        nodes: Rows(&v.nodes),
    }
}

/// One row.
pub fn node(n: &v1::FleetNode) -> Node<'_> {
    Node {
        name: &n.name,
        engine: text(&n.endpoint),
        state: &n.state,
        mode: text(&n.mode),
        serial: text(&n.serial),
        expires_at: time(n.not_after_unix),
        expiring: n.expiring,
        last_report_at: time(n.reported_unix),
        stale: n.stale,
        last_error: text(&n.last_error),
        engine_healthy: (n.reported_unix > 0).then_some(n.engine_healthy),
        plain_listeners: &n.plain_listeners,
        swarm_role: text(&n.swarm_role),
        engine_version: text(&n.engine_version),
        agent_version: text(&n.agent_version),
        addresses: &n.addresses,
        last_rotation_at: time(n.last_rotation_unix),
        next_renewal_at: time(n.next_renewal_unix),
    }
}

/// RFC 3339, or null for 0 (the wire's "unknown").
pub fn time(unix: i64) -> Time {
    Time(unix)
}

/// The view as JSON (field order is the documented one).
#[derive(Debug, Serialize)]
pub struct View<'a> {
    generated_at: Time,
    stale_after_seconds: i64,
    expiring_within_seconds: i64,
    summary: Summary,
    nodes: Rows<'a>,
}

/// The counts over every node, whatever the filter.
#[derive(Debug, Serialize)]
struct Summary {
    nodes: u32,
    mtls: u32,
    plain: u32,
    failed: u32,
    unhealthy: u32,
    stale: u32,
    unreported: u32,
    expired: u32,
    expiring: u32,
    earliest_expiry: Time,
}

fn summary(s: v1::FleetSummary) -> Summary {
    Summary {
        nodes: s.nodes,
        mtls: s.mtls,
        plain: s.plain,
        failed: s.failed,
        unhealthy: s.unhealthy,
        stale: s.stale,
        unreported: s.unreported,
        expired: s.expired,
        expiring: s.expiring,
        earliest_expiry: time(s.earliest_expiry_unix),
    }
}

/// The rows, each written as it is serialized (none is built beforehand).
#[derive(Debug)]
struct Rows<'a>(&'a [v1::FleetNode]);

impl Serialize for Rows<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(node))
    }
}

/// One row as JSON.
#[derive(Debug, Serialize)]
pub struct Node<'a> {
    name: &'a str,
    engine: Option<&'a str>,
    state: &'a str,
    mode: Option<&'a str>,
    serial: Option<&'a str>,
    expires_at: Time,
    expiring: bool,
    last_report_at: Time,
    stale: bool,
    last_error: Option<&'a str>,
    /// Unknown until the agent reported.
    engine_healthy: Option<bool>,
    plain_listeners: &'a [String],
    swarm_role: Option<&'a str>,
    engine_version: Option<&'a str>,
    agent_version: Option<&'a str>,
    addresses: &'a [String],
    last_rotation_at: Time,
    next_renewal_at: Time,
}

/// A Unix time written as RFC 3339 in UTC (`2027-01-15T08:00:00Z`), or null for 0 and
/// for a time RFC 3339 cannot write (before year 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time(i64);

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let at = (self.0 != 0)
            .then(|| OffsetDateTime::from_unix_timestamp(self.0).ok())
            .flatten()
            .filter(|t| t.year() >= 0);
        match at {
            // Written field by field: the `time` crate's RFC 3339 formatter allocates a
            // string per call, four per row.
            Some(t) => s.collect_str(&format_args!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )),
            None => s.serialize_none(),
        }
    }
}

fn text(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::format_description::well_known::Rfc3339;

    #[test]
    fn unknown_values_are_null_and_times_rfc3339() {
        let n = v1::FleetNode {
            name: "n1".into(),
            state: "unreported".into(),
            not_after_unix: 1_800_000_000,
            ..Default::default()
        };
        let j = serde_json::to_value(node(&n)).unwrap();
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

    #[test]
    fn times_read_as_the_time_crate_writes_rfc3339() {
        for unix in [1, 59, 951_782_400, 1_800_000_000, 253_402_300_799, -1] {
            let want = OffsetDateTime::from_unix_timestamp(unix)
                .unwrap()
                .format(&Rfc3339)
                .unwrap();
            assert_eq!(serde_json::to_value(time(unix)).unwrap(), want, "{unix}");
        }
        assert!(serde_json::to_value(time(0)).unwrap().is_null());
        assert!(serde_json::to_value(time(i64::MAX)).unwrap().is_null());
        assert!(
            serde_json::to_value(time(-62_167_219_201))
                .unwrap()
                .is_null()
        );
    }

    #[test]
    fn a_row_keeps_the_documented_fields_in_order() {
        let n = v1::FleetNode {
            name: "n1".into(),
            endpoint: "tcp://10.0.0.5:2376".into(),
            state: "mtls".into(),
            mode: "native".into(),
            serial: "0a".into(),
            not_after_unix: 1_800_000_000,
            reported_unix: 1_799_000_000,
            engine_healthy: true,
            addresses: vec!["10.0.0.5".into()],
            ..Default::default()
        };
        let got = serde_json::to_string(&node(&n)).unwrap();
        assert_eq!(
            got,
            concat!(
                r#"{"name":"n1","engine":"tcp://10.0.0.5:2376","state":"mtls","mode":"native","#,
                r#""serial":"0a","expires_at":"2027-01-15T08:00:00Z","expiring":false,"#,
                r#""last_report_at":"2027-01-03T18:13:20Z","stale":false,"last_error":null,"#,
                r#""engine_healthy":true,"plain_listeners":[],"swarm_role":null,"#,
                r#""engine_version":null,"agent_version":null,"addresses":["10.0.0.5"],"#,
                r#""last_rotation_at":null,"next_renewal_at":null}"#
            )
        );
    }
}
