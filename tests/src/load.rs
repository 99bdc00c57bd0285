//! Enrollment load against a running CA, for the tests of the store under faults: many
//! requests in flight over a few HTTP/2 connections, with a multi-use node token, each
//! under a new name (keys made beforehand), until told to stop. Every certificate delivered is remembered
//! by serial, and every refusal by its reason.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use dtca_common::Reason;
use dtca_common::reason;
use dtca_common::tls::{self, ServerAddr, Trust};
use dtca_pki::csr;
use dtca_pki::key::{KeyType, PrivateKey};
use dtca_pki::token::JoinToken;
use dtca_proto::v1::{self, ca_client::CaClient};
use tokio::task::JoinHandle;

/// What a load delivered and what it was refused.
#[derive(Debug, Default)]
pub struct Tally {
    /// Serials of the certificates returned, as the CA printed them.
    pub delivered: Vec<String>,
    /// Refusals by reason.
    pub refused: BTreeMap<String, u64>,
    /// A message of each reason, the first seen.
    pub messages: BTreeMap<String, String>,
}

impl Tally {
    /// Refusals of `reason`.
    pub fn refused(&self, reason: Reason) -> u64 {
        self.refused.get(reason.as_str()).copied().unwrap_or(0)
    }

    fn add(&mut self, other: Tally) {
        self.delivered.extend(other.delivered);
        for (k, v) in other.refused {
            *self.refused.entry(k).or_default() += v;
        }
        for (k, v) in other.messages {
            self.messages.entry(k).or_insert(v);
        }
    }
}

/// Loads started by this process: each names its identities apart from the others'.
static LOADS: AtomicU64 = AtomicU64::new(0);

/// Request `i` of a load: the identity `<prefix>-<i>`, one DNS name of its own.
fn request(prefix: &str, i: usize, key: &PrivateKey, token: &str) -> v1::EnrollRequest {
    let name = format!("{prefix}-{i}");
    let dns = vec![format!("{name}.load.test")];
    v1::EnrollRequest {
        token: token.to_string(),
        csr_der: csr::build(key, &name, &dns, &[]).unwrap(),
        name,
    }
}

/// A running load.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    /// Certificates delivered so far.
    pub delivered: Arc<AtomicU64>,
    /// Refusals so far, of any reason.
    pub refused: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<Tally>>,
}

impl Load {
    /// Starts `in_flight` enrollers over `connections` connections to `server`, with the
    /// multi-use `token`, each request under a name of its own (a name has one holder) and
    /// signed by one of `keys` keys made now.
    ///
    /// # Panics
    /// When the CA cannot be reached or the token does not parse.
    pub async fn start(
        server: &str,
        token: &str,
        in_flight: usize,
        connections: usize,
        keys: usize,
    ) -> Load {
        let parsed: JoinToken = token.parse().unwrap();
        let addr = ServerAddr::parse(server).unwrap();
        let config = tls::client_config(Trust::Pinned(parsed.root), None).unwrap();
        let mut channels = Vec::new();
        for _ in 0..connections.max(1) {
            channels.push(tls::connect(&addr, config.clone()).await.unwrap());
        }
        let keys: Arc<Vec<PrivateKey>> = Arc::new(
            tokio::task::spawn_blocking(move || {
                (0..keys.max(1))
                    .map(|_| PrivateKey::generate(KeyType::P256).unwrap())
                    .collect()
            })
            .await
            .unwrap(),
        );
        let prefix = format!("load{}", LOADS.fetch_add(1, Ordering::Relaxed));
        let stop = Arc::new(AtomicBool::new(false));
        let delivered = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let tasks = (0..in_flight)
            .map(|w| {
                let mut client = CaClient::new(channels[w % channels.len()].clone());
                let (stop, delivered, refused) = (stop.clone(), delivered.clone(), refused.clone());
                let (keys, token, prefix) = (keys.clone(), token.to_string(), prefix.clone());
                tokio::spawn(async move {
                    let mut tally = Tally::default();
                    let mut i = w;
                    while !stop.load(Ordering::Relaxed) {
                        let request = request(&prefix, i, &keys[i % keys.len()], &token);
                        i += in_flight;
                        match client.enroll(request).await {
                            Ok(answer) => {
                                tally.delivered.push(answer.into_inner().serial);
                                delivered.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(status) => {
                                let why = reason::of_status_or_code(&status).to_string();
                                tally
                                    .messages
                                    .entry(why.clone())
                                    .or_insert_with(|| status.message().to_string());
                                *tally.refused.entry(why).or_default() += 1;
                                refused.fetch_add(1, Ordering::Relaxed);
                                // A refusing CA is not hammered in a tight loop.
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                    tally
                })
            })
            .collect();
        Load {
            stop,
            delivered,
            refused,
            tasks,
        }
    }

    /// Stops the load and waits for every request in flight.
    ///
    /// # Panics
    /// When a worker panicked.
    pub async fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Tally::default();
        for task in self.tasks {
            all.add(task.await.unwrap());
        }
        all
    }
}
