//! The agent's half of the agent channel: one `Watch` stream to the CA, kept open on a
//! task of its own (reconnecting with capped, jittered backoff, so a fleet whose CA
//! restarts does not come back in step), whose events become [`Signal`]s for the loop.
//!
//! The stream is opened with the node's current certificate; the loop re-opens it with
//! each new one ([`Channel::reopen`]), which is also the new certificate's first use.

use std::time::Duration;

use dtca_common::bundle::Bundle;
use dtca_common::tls::ServerAddr;
use dtca_common::{Reason, reason};
use dtca_pki::renewal;
use dtca_proto::v1::{self, agent_event::Event};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::ca;
use crate::guard::Guard;

/// Silence longer than this (the CA says Hello every minute) means the stream is dead.
const SILENCE: Duration = Duration::from_secs(150);
/// First and longest wait before reconnecting.
const RETRY_BASE: Duration = Duration::from_secs(1);
const RETRY_CAP: Duration = Duration::from_secs(60);

/// What the CA asked of this agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Signal {
    /// Renew now.
    Renew(String),
    /// The CA's trust state changed (a root rotation, an intermediate switch): fetch the
    /// trust bundle; renew now when `renew`.
    TrustChanged { generation: u64, renew: bool },
    /// Certificates revoked (serials, openssl's notation).
    Revoked(Vec<String>),
}

/// The stream's task and what it forwards.
#[derive(Debug)]
pub(super) struct Channel {
    addr: ServerAddr,
    signals: mpsc::Receiver<Signal>,
    sender: mpsc::Sender<Signal>,
    task: JoinHandle<()>,
    /// The trust generation last heard, kept across re-opens.
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Told of revocations as they arrive, ahead of the agent's loop.
    guard: Guard,
}

impl Channel {
    /// Opens the stream to the CA at `addr` with `bundle`'s certificate, on a task.
    /// Revocations also go straight to `guard`.
    pub(super) fn open(addr: ServerAddr, bundle: Bundle, guard: Guard) -> Channel {
        let (sender, signals) = mpsc::channel(64);
        let generation = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
        let task = tokio::spawn(keep(
            addr.clone(),
            bundle,
            sender.clone(),
            generation.clone(),
            guard.clone(),
        ));
        Channel {
            addr,
            signals,
            sender,
            task,
            generation,
            guard,
        }
    }

    /// Opens the stream again with a new certificate (the old one's ends).
    pub(super) fn reopen(&mut self, bundle: Bundle) {
        self.task.abort();
        self.task = tokio::spawn(keep(
            self.addr.clone(),
            bundle,
            self.sender.clone(),
            self.generation.clone(),
            self.guard.clone(),
        ));
    }

    /// The next signal; never resolves while there is none.
    pub(super) async fn next(&mut self) -> Signal {
        match self.signals.recv().await {
            Some(signal) => signal,
            None => std::future::pending().await,
        }
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Keeps one stream open, forever: connect, forward, reconnect after a jittered wait.
async fn keep(
    addr: ServerAddr,
    bundle: Bundle,
    signals: mpsc::Sender<Signal>,
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
    guard: Guard,
) {
    let mut failures: u32 = 0;
    // Revocations are asked for again from the last one heard, so a reconnect misses none.
    let mut revoked_since: i64 = 0;
    loop {
        match watch(&addr, &bundle, revoked_since).await {
            Ok(mut stream) => {
                tracing::info!(ca = %addr, "agent channel open");
                loop {
                    let message = tokio::time::timeout(SILENCE, stream.message()).await;
                    let event = match message {
                        Ok(Ok(Some(v1::AgentEvent { event: Some(event) }))) => event,
                        Ok(Ok(Some(_))) => continue,
                        Ok(Ok(None)) => break,
                        Ok(Err(status)) => {
                            tracing::info!(error = %status.message(), "agent channel closed by the CA");
                            if reason::of_status(&status) == Some(Reason::CertRevoked) {
                                // This certificate is done for: say so, and wait for the
                                // next one instead of knocking again.
                                if let Ok(leaf) = bundle.leaf() {
                                    let _ = signals
                                        .send(Signal::Revoked(vec![leaf.serial.to_string()]))
                                        .await;
                                }
                                return;
                            }
                            break;
                        }
                        Err(_) => {
                            tracing::info!("the agent channel went silent; reconnecting");
                            break;
                        }
                    };
                    failures = 0;
                    let signal = translate(event, &generation, &mut revoked_since);
                    if let Some(Signal::Revoked(serials)) = &signal {
                        guard.revoke(serials);
                    }
                    if let Some(signal) = signal
                        && signals.send(signal).await.is_err()
                    {
                        return;
                    }
                }
            }
            Err(e) if e.reason() == Reason::CertRevoked => {
                tracing::info!(error = %e, "agent channel refused");
                if let Ok(leaf) = bundle.leaf() {
                    let _ = signals
                        .send(Signal::Revoked(vec![leaf.serial.to_string()]))
                        .await;
                }
                return;
            }
            Err(e) => tracing::debug!(error = %e, "agent channel: cannot connect"),
        }
        failures = failures.saturating_add(1);
        let wait = renewal::backoff(failures - 1, RETRY_BASE, RETRY_CAP, renewal::jitter());
        tokio::time::sleep(wait).await;
    }
}

async fn watch(
    addr: &ServerAddr,
    bundle: &Bundle,
    revoked_since: i64,
) -> Result<tonic::Streaming<v1::AgentEvent>, crate::error::ClientError> {
    let mut client = ca::authenticated(addr, bundle).await?;
    Ok(client
        .watch(v1::WatchRequest {
            revoked_since_unix: revoked_since,
        })
        .await?
        .into_inner())
}

/// What an event asks of the agent, if anything. A Hello whose trust generation differs
/// from the last one heard means a change was missed while disconnected.
fn translate(
    event: Event,
    generation: &std::sync::atomic::AtomicU64,
    revoked_since: &mut i64,
) -> Option<Signal> {
    use std::sync::atomic::Ordering;
    match event {
        Event::Hello(hello) => {
            let before = generation.swap(hello.trust_generation, Ordering::Relaxed);
            (before != u64::MAX && before != hello.trust_generation).then_some(
                Signal::TrustChanged {
                    generation: hello.trust_generation,
                    renew: false,
                },
            )
        }
        Event::TrustChanged(changed) => {
            generation.store(changed.trust_generation, Ordering::Relaxed);
            Some(Signal::TrustChanged {
                generation: changed.trust_generation,
                renew: changed.renew,
            })
        }
        Event::RenewNow(renew) => Some(Signal::Renew(renew.reason)),
        Event::Revocations(list) => {
            if let Some(newest) = list.revoked.iter().map(|r| r.revoked_unix).max() {
                *revoked_since = (*revoked_since).max(newest);
            }
            Some(Signal::Revoked(
                list.revoked.into_iter().map(|r| r.serial).collect(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    fn hello(generation: u64) -> Event {
        Event::Hello(v1::Hello {
            server_time_unix: 0,
            trust_generation: generation,
        })
    }

    #[test]
    fn a_trust_change_missed_while_away_is_noticed_from_the_hello() {
        let generation = AtomicU64::new(u64::MAX);
        let mut since = 0;
        // The first Hello only tells the generation.
        assert_eq!(translate(hello(3), &generation, &mut since), None);
        assert_eq!(translate(hello(3), &generation, &mut since), None);
        assert_eq!(
            translate(hello(4), &generation, &mut since),
            Some(Signal::TrustChanged {
                generation: 4,
                renew: false
            })
        );
    }

    #[test]
    fn revocations_move_the_catch_up_point() {
        let generation = AtomicU64::new(u64::MAX);
        let mut since = 10;
        let event = Event::Revocations(v1::Revocations {
            revoked: vec![
                v1::Revoked {
                    serial: "0A".into(),
                    revoked_unix: 50,
                },
                v1::Revoked {
                    serial: "0B".into(),
                    revoked_unix: 40,
                },
            ],
        });
        assert_eq!(
            translate(event, &generation, &mut since),
            Some(Signal::Revoked(vec!["0A".into(), "0B".into()]))
        );
        assert_eq!(since, 50);
        let renew = Event::TrustChanged(v1::TrustChanged {
            trust_generation: 9,
            renew: true,
        });
        assert_eq!(
            translate(renew, &generation, &mut since),
            Some(Signal::TrustChanged {
                generation: 9,
                renew: true
            })
        );
        assert_eq!(translate(hello(9), &generation, &mut since), None);
    }
}
