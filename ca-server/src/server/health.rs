//! The gRPC Health service's answer: SERVING only while the CA can sign a test leaf and
//! its store answers a round trip, re-checked every `health_interval`. Load balancers and
//! the end-to-end tests wait on it.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tonic_health::ServingStatus;

use crate::registrar::Registrar;

/// The services whose health the loop reports: the server as a whole, and each API.
const HEALTH_SERVICES: [&str; 3] = ["", "dtca.v1.Ca", "dtca.v1.Admin"];

/// The health detail of the CA's own certificates: NOT_SERVING while the lifecycle warns
/// (the active intermediate ends soon without a successor, the root ends), while the
/// server itself still serves. The log and `ca status` say why.
pub(super) const LIFECYCLE_SERVICE: &str = "dtca.ca-lifecycle";

/// Checks every `every` and tells the reporter whenever the answer changes.
pub(super) async fn health_loop(
    registrar: Arc<Registrar>,
    reporter: tonic_health::server::HealthReporter,
    every: Duration,
) {
    let mut was: Option<ServingStatus> = None;
    let mut lifecycle_was: Option<ServingStatus> = None;
    loop {
        let status = serving_status(&registrar, OffsetDateTime::now_utc()).await;
        if was != Some(status) {
            for service in HEALTH_SERVICES {
                reporter.set_service_status(service, status).await;
            }
            was = Some(status);
        }
        let lifecycle = match registrar.custody().map(|c| c.warnings()) {
            Some(w) if !w.is_empty() => ServingStatus::NotServing,
            _ => ServingStatus::Serving,
        };
        if lifecycle_was != Some(lifecycle) {
            reporter
                .set_service_status(LIFECYCLE_SERVICE, lifecycle)
                .await;
            lifecycle_was = Some(lifecycle);
        }
        tokio::time::sleep(every).await;
    }
}

/// SERVING only when the CA can sign a test leaf and the store answers a round trip.
async fn serving_status(registrar: &Registrar, now: OffsetDateTime) -> ServingStatus {
    match registrar.self_test(now).await {
        Ok(()) => ServingStatus::Serving,
        Err(e) => {
            tracing::error!(error = %e, "health check failed: the CA cannot sign or store");
            ServingStatus::NotServing
        }
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use dtca_pki::Serial;
    use dtca_pki::authority::{Authority, hierarchy};
    use dtca_pki::identity::Role;
    use dtca_pki::key::KeyType;
    use tonic_health::pb::health_check_response::ServingStatus as Wire;
    use tonic_health::pb::health_server::Health;
    use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
    use tonic_health::server::{HealthReporter, HealthService};

    use super::*;
    use crate::metrics::Metrics;
    use crate::registrar::Rules;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{
        AgentRecord, AuditEntry, CertQuery, CertRecord, CertSummary, EngineRecord, Issuance,
        NodeRecord, RevokeTarget, Store, StoreError, TokenRecord,
    };

    /// A store whose database has gone away: every call fails the way both backends fail
    /// then.
    struct DownStore;

    fn down<T>() -> Result<T, StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }

    #[async_trait]
    impl Store for DownStore {
        async fn ping(&self) -> Result<(), StoreError> {
            down()
        }
        async fn insert_token(&self, _: TokenRecord, _: AuditEntry) -> Result<(), StoreError> {
            down()
        }
        async fn token(&self, _: &str) -> Result<Option<TokenRecord>, StoreError> {
            down()
        }
        async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
            down()
        }
        async fn revoke_token(&self, _: &str, _: AuditEntry) -> Result<(), StoreError> {
            down()
        }
        async fn record_issuance(&self, _: Issuance) -> Result<(), StoreError> {
            down()
        }
        async fn certificate(&self, _: &Serial) -> Result<Option<CertRecord>, StoreError> {
            down()
        }
        async fn certificates(&self, _: &CertQuery) -> Result<Vec<CertSummary>, StoreError> {
            down()
        }
        async fn revoke(
            &self,
            _: &RevokeTarget,
            _: OffsetDateTime,
            _: &str,
            _: &str,
        ) -> Result<Vec<Serial>, StoreError> {
            down()
        }
        async fn revoked(
            &self,
            _: OffsetDateTime,
        ) -> Result<Vec<(Serial, OffsetDateTime)>, StoreError> {
            down()
        }
        async fn mark_used(&self, _: &Serial, _: OffsetDateTime) -> Result<(), StoreError> {
            down()
        }
        async fn revocations_since(
            &self,
            _: OffsetDateTime,
        ) -> Result<Vec<(Serial, OffsetDateTime)>, StoreError> {
            down()
        }
        async fn record_report(&self, _: AgentRecord) -> Result<(), StoreError> {
            down()
        }
        async fn reports(&self) -> Result<Vec<AgentRecord>, StoreError> {
            down()
        }
        async fn holders(
            &self,
            _: &[(Role, String)],
        ) -> Result<Vec<(Role, String, Serial)>, StoreError> {
            down()
        }
        async fn set_engine(
            &self,
            _: &str,
            _: &str,
            _: &Serial,
            _: AuditEntry,
        ) -> Result<(), StoreError> {
            down()
        }
        async fn nodes(&self, _: OffsetDateTime) -> Result<Vec<NodeRecord>, StoreError> {
            down()
        }
        async fn engines(&self) -> Result<Vec<EngineRecord>, StoreError> {
            down()
        }
        async fn audit(&self, _: u32) -> Result<Vec<AuditEntry>, StoreError> {
            down()
        }
        async fn current_certificates(
            &self,
            _: OffsetDateTime,
        ) -> Result<Vec<CertRecord>, StoreError> {
            down()
        }
        async fn ca_generation(&self) -> Result<u64, StoreError> {
            down()
        }
        async fn ca_material(&self) -> Result<crate::store::CaMaterial, StoreError> {
            down()
        }
        async fn update_ca(&self, _: crate::store::CaUpdate) -> Result<u64, StoreError> {
            down()
        }
    }

    /// An authority whose hierarchy was made at `made` (its intermediate lasts a year).
    fn authority(made: OffsetDateTime) -> Authority {
        let h = hierarchy::create("prod", KeyType::P256, made).unwrap();
        Authority::new("prod", h.root_der, h.intermediate_der, h.intermediate_key).unwrap()
    }

    fn registrar(authority: Authority, store: Arc<dyn Store>) -> Arc<Registrar> {
        Arc::new(Registrar::new(
            authority,
            store,
            Rules::default(),
            Arc::new(Metrics::default()),
        ))
    }

    fn sqlite(dir: &tempfile::TempDir) -> Arc<dyn Store> {
        Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap())
    }

    #[tokio::test]
    async fn serving_when_the_ca_signs_and_the_store_answers() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let r = registrar(authority(now), sqlite(&dir));
        assert_eq!(serving_status(&r, now).await, ServingStatus::Serving);
    }

    #[tokio::test]
    async fn not_serving_when_the_store_does_not_answer() {
        let now = OffsetDateTime::now_utc();
        let r = registrar(authority(now), Arc::new(DownStore));
        assert_eq!(serving_status(&r, now).await, ServingStatus::NotServing);
    }

    #[tokio::test]
    async fn not_serving_when_the_authority_cannot_sign() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let expired = authority(now - time::Duration::days(400));
        let r = registrar(expired, sqlite(&dir));
        assert_eq!(serving_status(&r, now).await, ServingStatus::NotServing);
    }

    /// What the Health service answers for `service` once the loop has reported it.
    async fn reported(health: &HealthService, service: &str) -> HealthCheckResponse {
        let ask = || {
            health.check(tonic::Request::new(HealthCheckRequest {
                service: service.into(),
            }))
        };
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match ask().await {
                    Ok(answer) => return answer.into_inner(),
                    // Not registered yet: the loop has not run its first check.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        })
        .await
        .expect("the health loop never reported")
    }

    #[tokio::test]
    async fn health_says_not_serving_for_every_service_while_the_store_is_down() {
        let now = OffsetDateTime::now_utc();
        let reporter = HealthReporter::new();
        let health = HealthService::from_health_reporter(reporter.clone());
        let down = registrar(authority(now), Arc::new(DownStore));
        let task = tokio::spawn(health_loop(down, reporter, Duration::from_secs(3600)));
        // The loop reports the services in order: once the last one is there, all are.
        reported(&health, HEALTH_SERVICES[2]).await;
        for service in HEALTH_SERVICES {
            let answer = reported(&health, service).await;
            assert_eq!(answer.status, Wire::NotServing as i32, "{service:?}");
        }
        task.abort();
    }

    #[tokio::test]
    async fn health_says_serving_for_every_service_when_the_ca_can_sign_and_store() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let reporter = HealthReporter::new();
        let health = HealthService::from_health_reporter(reporter.clone());
        let good = registrar(authority(now), sqlite(&dir));
        let task = tokio::spawn(health_loop(good, reporter, Duration::from_secs(3600)));
        reported(&health, HEALTH_SERVICES[2]).await;
        for service in HEALTH_SERVICES {
            let answer = reported(&health, service).await;
            assert_eq!(answer.status, Wire::Serving as i32, "{service:?}");
        }
        task.abort();
    }
}
