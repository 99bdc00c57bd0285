//! The gRPC Health service's answer: SERVING only while the CA can sign a test leaf and
//! its store answers a round trip and would accept writes, re-checked every
//! `health_interval`. Load balancers and the end-to-end tests wait on it.
//!
//! NOT_SERVING carries its reason: in the log when it changes, and as `dtca-reason`
//! metadata on every Check answer (`store-full`, `store-corrupt`, `store-unavailable`,
//! `internal`), so a probe can tell a full disk from a damaged store or an outage.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dtca_common::{Reason, reason};
use time::OffsetDateTime;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::Health;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService, WatchStream};

use crate::registrar::Registrar;

/// The services whose health the loop reports: the server as a whole, and each API.
const HEALTH_SERVICES: [&str; 3] = ["", "dtca.v1.Ca", "dtca.v1.Admin"];

/// The health detail of the CA's own certificates: NOT_SERVING while the lifecycle warns
/// (the active intermediate ends soon without a successor, the root ends), while the
/// server itself still serves. The log and `ca status` say why.
pub(super) const LIFECYCLE_SERVICE: &str = "dtca.ca-lifecycle";

/// Why the server is not serving, when it is not: shared by the loop and the service.
#[derive(Debug, Clone, Default)]
pub(super) struct Why(Arc<Mutex<Option<Reason>>>);

impl Why {
    fn set(&self, reason: Option<Reason>) {
        if let Ok(mut r) = self.0.lock() {
            *r = reason;
        }
    }

    fn get(&self) -> Option<Reason> {
        self.0.lock().ok().and_then(|r| *r)
    }
}

/// tonic's Health service, with the reason for NOT_SERVING on each Check answer.
pub(super) struct ReasonedHealth {
    inner: HealthService,
    why: Why,
}

impl ReasonedHealth {
    /// The Health service answering what `reporter` is told, with `why`.
    pub(super) fn new(reporter: &HealthReporter, why: Why) -> Self {
        ReasonedHealth {
            inner: HealthService::from_health_reporter(reporter.clone()),
            why,
        }
    }
}

#[tonic::async_trait]
impl Health for ReasonedHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let mut answer = self.inner.check(request).await?;
        let not_serving = answer.get_ref().status
            == tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
        if not_serving
            && let Some(why) = self.why.get()
            && let Ok(value) = why.as_str().parse()
        {
            answer.metadata_mut().insert(reason::METADATA_KEY, value);
        }
        Ok(answer)
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.inner.watch(request).await
    }
}

/// While not serving, how often to look again: a disk that has room again is seen at once.
const RECHECK: Duration = Duration::from_secs(1);

/// Checks every `every` (every second while not serving) and tells the reporter whenever
/// the answer changes.
pub(super) async fn health_loop(
    registrar: Arc<Registrar>,
    reporter: HealthReporter,
    why: Why,
    every: Duration,
) {
    let mut was: Option<(ServingStatus, Option<Reason>)> = None;
    let mut lifecycle_was: Option<ServingStatus> = None;
    loop {
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
        let now = serving_status(&registrar, OffsetDateTime::now_utc()).await;
        if was != Some(now) {
            let (status, reason) = now;
            why.set(reason);
            if let Some(reason) = reason {
                tracing::error!(%reason, "health: NOT_SERVING: {}", reason.describe());
            }
            for service in HEALTH_SERVICES {
                reporter.set_service_status(service, status).await;
            }
            if was.is_some() && reason.is_none() {
                tracing::info!("health: SERVING again");
            }
            was = Some(now);
        }
        let wait = if now.1.is_some() {
            every.min(RECHECK)
        } else {
            every
        };
        tokio::time::sleep(wait).await;
    }
}

/// SERVING only when the CA can sign a test leaf and the store answers a round trip;
/// otherwise NOT_SERVING and why.
async fn serving_status(
    registrar: &Registrar,
    now: OffsetDateTime,
) -> (ServingStatus, Option<Reason>) {
    match registrar.self_test(now).await {
        Ok(()) => (ServingStatus::Serving, None),
        Err(e) => {
            let reason = e.reason();
            tracing::debug!(%reason, error = %e, "health check failed");
            (ServingStatus::NotServing, Some(reason))
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

    use super::*;
    use crate::metrics::Metrics;
    use crate::registrar::Rules;
    use crate::store::sqlite::{SqliteOptions, SqliteStore};
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
        async fn reports(&self, _: OffsetDateTime) -> Result<Vec<AgentRecord>, StoreError> {
            down()
        }
        async fn report_times(&self, _: OffsetDateTime) -> Result<Vec<(String, i64)>, StoreError> {
            down()
        }
        async fn request_restart(
            &self,
            _: crate::restart::SlotRequest,
            _: crate::restart::RestartLimits,
            _: &str,
            _: OffsetDateTime,
        ) -> Result<crate::restart::Decision, StoreError> {
            down()
        }
        async fn release_restart(&self, _: &str, _: AuditEntry) -> Result<bool, StoreError> {
            down()
        }
        async fn restart_slots(
            &self,
            _: OffsetDateTime,
        ) -> Result<Vec<crate::restart::Slot>, StoreError> {
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
        assert_eq!(
            serving_status(&r, now).await,
            (ServingStatus::Serving, None)
        );
    }

    #[tokio::test]
    async fn not_serving_when_the_store_does_not_answer() {
        let now = OffsetDateTime::now_utc();
        let r = registrar(authority(now), Arc::new(DownStore));
        assert_eq!(
            serving_status(&r, now).await,
            (ServingStatus::NotServing, Some(Reason::StoreUnavailable))
        );
    }

    #[tokio::test]
    async fn not_serving_with_a_reason_of_its_own_when_the_disk_is_full() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        // A reserve no file system has room for: the store starts out full.
        let options = SqliteOptions {
            reserve: Some(u64::MAX / 4),
            check: true,
        };
        let store = SqliteStore::open_with(&dir.path().join("store.db"), &options).unwrap();
        let r = registrar(authority(now), Arc::new(store));
        assert_eq!(
            serving_status(&r, now).await,
            (ServingStatus::NotServing, Some(Reason::StoreFull))
        );
    }

    #[tokio::test]
    async fn not_serving_when_the_authority_cannot_sign() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let expired = authority(now - time::Duration::days(400));
        let r = registrar(expired, sqlite(&dir));
        assert_eq!(serving_status(&r, now).await.0, ServingStatus::NotServing);
    }

    /// What the Health service answers for `service` once the loop has reported it.
    async fn reported(
        health: &ReasonedHealth,
        service: &str,
    ) -> (HealthCheckResponse, Option<Reason>) {
        let ask = || {
            health.check(tonic::Request::new(HealthCheckRequest {
                service: service.into(),
            }))
        };
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match ask().await {
                    Ok(answer) => {
                        let why = answer
                            .metadata()
                            .get(reason::METADATA_KEY)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse().ok());
                        return (answer.into_inner(), why);
                    }
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
        let why = Why::default();
        let health = ReasonedHealth::new(&reporter, why.clone());
        let down = registrar(authority(now), Arc::new(DownStore));
        let task = tokio::spawn(health_loop(down, reporter, why, Duration::from_secs(3600)));
        // The loop reports the services in order: once the last one is there, all are.
        reported(&health, HEALTH_SERVICES[2]).await;
        for service in HEALTH_SERVICES {
            let (answer, why) = reported(&health, service).await;
            assert_eq!(answer.status, Wire::NotServing as i32, "{service:?}");
            assert_eq!(why, Some(Reason::StoreUnavailable), "{service:?}");
        }
        task.abort();
    }

    #[tokio::test]
    async fn health_says_serving_for_every_service_when_the_ca_can_sign_and_store() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let reporter = HealthReporter::new();
        let why = Why::default();
        let health = ReasonedHealth::new(&reporter, why.clone());
        let good = registrar(authority(now), sqlite(&dir));
        let task = tokio::spawn(health_loop(good, reporter, why, Duration::from_secs(3600)));
        reported(&health, HEALTH_SERVICES[2]).await;
        for service in HEALTH_SERVICES {
            let (answer, why) = reported(&health, service).await;
            assert_eq!(answer.status, Wire::Serving as i32, "{service:?}");
            assert_eq!(why, None, "{service:?}");
        }
        task.abort();
    }
}
