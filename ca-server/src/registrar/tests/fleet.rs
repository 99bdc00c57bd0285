use super::*;
use crate::store::AgentState;

fn report(mode: &str) -> AgentState {
    AgentState {
        mode: mode.into(),
        engine_healthy: true,
        ..Default::default()
    }
}

/// The engine mode of the (only) node as `registrar` would show it in a fleet view made at
/// `at`: what it keeps after the refresh every view makes first (`crate::fleet::view`).
async fn mode_seen_by(registrar: &Registrar, at: OffsetDateTime) -> String {
    registrar.refresh_reports(at).await.unwrap();
    registrar.fleet().reports.with(|reports| {
        reports
            .values()
            .next()
            .map(|r| r.state.mode.clone())
            .unwrap_or_default()
    })
}

#[tokio::test]
async fn a_report_shows_in_the_view_of_every_replica_at_its_next_view() {
    let f = fixture().await;
    let replica = f.replica();
    let node = f.node().await;
    let t = now();
    let second = |s: i64| t + time::Duration::seconds(s);
    // Both have read the reports (none yet) before any arrives.
    assert_eq!(mode_seen_by(&f.registrar, t).await, "");
    assert_eq!(mode_seen_by(&replica, t).await, "");

    f.registrar
        .record_report(&node, report("native"), second(1))
        .await
        .unwrap();
    assert_eq!(mode_seen_by(&f.registrar, second(1)).await, "native");
    assert_eq!(mode_seen_by(&replica, second(1)).await, "native");

    replica
        .record_report(&node, report("guard"), second(2))
        .await
        .unwrap();
    assert_eq!(mode_seen_by(&replica, second(2)).await, "guard");
    assert_eq!(mode_seen_by(&f.registrar, second(2)).await, "guard");
}

#[tokio::test]
async fn a_replica_started_after_the_reports_reads_them_from_the_store() {
    let f = fixture().await;
    let node = f.node().await;
    f.registrar
        .record_report(&node, report("native"), now())
        .await
        .unwrap();
    assert_eq!(mode_seen_by(&f.replica(), now()).await, "native");
}
