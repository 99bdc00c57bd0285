//! The CA's half of the agent channel: what it has to tell agents, published once and
//! fanned out to every open `Watch` stream.
//!
//! Every revocation, made on this replica or another (PostgreSQL), reaches the streams
//! through [`revocation_feed`], which reads the store's newest revocations every half
//! second: one path, whoever revoked. Trust changes (a root rotation,
//! an intermediate switch) carry a generation number, so an agent that reconnects can tell
//! whether it missed one. The hub knows nothing of gRPC: `service::ca` turns its events
//! into `AgentEvent`s.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dtca_pki::Serial;
use time::OffsetDateTime;
use tokio::sync::{broadcast, watch};

use crate::store::Store;

/// Events that have not been read by the time this many more are published are dropped
/// for that stream; it then reconnects-by-resync (see [`Event::Lagged`] handling in the
/// service).
const BACKLOG: usize = 4096;

/// How often the store is read for revocations made elsewhere.
const FEED_INTERVAL: Duration = Duration::from_millis(500);
/// How far the replicas' clocks may disagree.
const SKEW: time::Duration = time::Duration::seconds(10);

/// Something every agent must hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Certificates revoked, with when.
    Revoked(Vec<(Serial, OffsetDateTime)>),
    /// The trust state changed (roots, intermediates, a rotation): fetch the bundle again.
    /// Certificates issued before `renew_before` should be renewed now.
    TrustChanged {
        generation: u64,
        renew_before: Option<OffsetDateTime>,
    },
}

/// The fan-out point.
#[derive(Debug)]
pub struct Hub {
    events: broadcast::Sender<Event>,
    trust: watch::Sender<u64>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            events: broadcast::channel(BACKLOG).0,
            trust: watch::channel(0).0,
        }
    }
}

impl Hub {
    /// A new stream's view: the events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Tells every open stream (no one listening is fine).
    pub fn publish(&self, event: Event) {
        if let Event::TrustChanged { generation, .. } = &event {
            self.trust.send_replace(*generation);
        }
        let _ = self.events.send(event);
    }

    /// The generation of the trust state, as last published.
    pub fn trust_generation(&self) -> u64 {
        *self.trust.borrow()
    }

    /// Hears every change of the trust generation.
    pub fn trust_watch(&self) -> watch::Receiver<u64> {
        self.trust.subscribe()
    }

    /// How many streams are open now.
    pub fn watchers(&self) -> usize {
        self.events.receiver_count()
    }
}

/// Publishes the revocations the store records from now on, whichever replica made them,
/// each serial once, until `shutdown` completes.
pub async fn revocation_feed(
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    // Revocation times are whole seconds, from the clock of whichever replica revoked:
    // each read reaches back SKEW before the newest one seen, and the serials seen in that
    // window are remembered, so none is missed and none published twice.
    let mut horizon = OffsetDateTime::now_utc() - SKEW;
    let mut seen: HashMap<Serial, OffsetDateTime> = HashMap::new();
    let mut ticker = tokio::time::interval(FEED_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = ticker.tick() => {}
        }
        let found = match store.revocations_since(horizon).await {
            Ok(found) => found,
            Err(e) => {
                tracing::debug!(error = %e, "revocation feed: store not readable; trying again");
                continue;
            }
        };
        let newest = found.iter().map(|(_, at)| *at).max();
        let fresh: Vec<(Serial, OffsetDateTime)> = found
            .into_iter()
            .filter(|(serial, at)| seen.insert(serial.clone(), *at).is_none())
            .collect();
        if let Some(newest) = newest {
            horizon = horizon.max(newest - SKEW);
        }
        seen.retain(|_, at| *at >= horizon);
        if !fresh.is_empty() {
            hub.publish(Event::Revoked(fresh));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::cert;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{Issuance, RevokeTarget};

    #[tokio::test]
    async fn every_open_stream_hears_an_event_and_the_trust_generation_is_kept() {
        let hub = Hub::default();
        let mut a = hub.subscribe();
        let mut b = hub.subscribe();
        assert_eq!(hub.watchers(), 2);
        hub.publish(Event::TrustChanged {
            generation: 7,
            renew_before: None,
        });
        for rx in [&mut a, &mut b] {
            assert!(matches!(
                rx.recv().await.unwrap(),
                Event::TrustChanged { generation: 7, .. }
            ));
        }
        assert_eq!(hub.trust_generation(), 7);
    }

    /// A revocation written straight into the store (as another replica would) reaches the
    /// streams of this one, once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn revocations_made_elsewhere_are_published_once() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap());
        let now = OffsetDateTime::now_utc();
        let c = cert(
            dtca_pki::Role::Operator,
            "feed",
            now + time::Duration::hours(1),
        );
        let serial = c.summary.serial.clone();
        store
            .record_issuance(Issuance {
                cert: c,
                token_id: None,
                renewal_of: None,
                replace: false,
                audit: vec![],
                at: now,
            })
            .await
            .unwrap();
        let hub = Arc::new(Hub::default());
        let mut rx = hub.subscribe();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let feed = tokio::spawn(revocation_feed(store.clone(), hub.clone(), async {
            let _ = stopped.await;
        }));
        // Let the feed take its starting point, then revoke behind its back.
        tokio::time::sleep(Duration::from_millis(100)).await;
        store
            .revoke(
                &RevokeTarget::Serial(serial.clone()),
                OffsetDateTime::now_utc(),
                "test",
                "admin",
            )
            .await
            .unwrap();
        let event = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        match event {
            Event::Revoked(list) => assert_eq!(
                list.iter().map(|(s, _)| s).collect::<Vec<_>>(),
                vec![&serial]
            ),
            other => panic!("{other:?}"),
        }
        // Nothing more about it.
        assert!(
            tokio::time::timeout(Duration::from_millis(1500), rx.recv())
                .await
                .is_err()
        );
        let _ = stop.send(());
        feed.await.unwrap();
    }
}
