//! A stop request, as the agent obeys it: it ends the agent's waits at once, but work
//! under way (a renewal, a rotation of the engine) only after that work is done.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Waker};

use tokio::sync::watch;

/// The shutdown future, polled so that a stop request ends the agent's waits at once but
/// its work only after that work is done.
pub(super) struct Stop<'a, F> {
    signal: Pin<&'a mut F>,
    /// The signal has completed (an `async fn` must not be polled again after that).
    seen: bool,
    /// Turns true once the stop is seen: for waits inside work that may end early (a
    /// restart slot not yet granted).
    seen_tx: watch::Sender<bool>,
}

impl<'a, F: Future<Output = ()>> Stop<'a, F> {
    pub(super) fn new(signal: Pin<&'a mut F>) -> Self {
        Stop {
            signal,
            seen: false,
            seen_tx: watch::channel(false).0,
        }
    }

    /// Turns true once a stop is seen (while the agent waits, or works under
    /// [`Stop::finish`]).
    pub(super) fn watch(&self) -> watch::Receiver<bool> {
        self.seen_tx.subscribe()
    }

    /// Resolves once a stop is requested; at once when one was.
    pub(super) async fn requested(&mut self) {
        if !self.seen {
            self.signal.as_mut().await;
            self.seen = true;
            self.seen_tx.send_replace(true);
        }
    }

    /// Whether a stop has been requested, without waiting.
    pub(super) fn requested_now(&mut self) -> bool {
        if !self.seen {
            let mut cx = Context::from_waker(Waker::noop());
            self.seen = self.signal.as_mut().poll(&mut cx).is_ready();
            if self.seen {
                self.seen_tx.send_replace(true);
            }
        }
        self.seen
    }

    /// Runs `work` to its end. A stop requested meanwhile is logged (`what` is finishing)
    /// and takes effect afterwards, at the agent's next wait.
    pub(super) async fn finish<T>(&mut self, what: &str, work: impl Future<Output = T>) -> T {
        let mut work = std::pin::pin!(work);
        if !self.seen {
            tokio::select! {
                out = &mut work => return out,
                () = self.requested() => {
                    tracing::info!("stop requested; finishing {what} before stopping");
                }
            }
        }
        work.await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Regression: SIGTERM during a rotation ended the agent mid restart/verify, leaving
    /// the engine on a certificate the node's files did not hold.
    #[tokio::test(start_paused = true)]
    async fn a_stop_during_work_lets_the_work_finish() {
        let signal = std::pin::pin!(async {});
        let mut stop = Stop::new(signal);
        let started = tokio::time::Instant::now();
        let out = stop
            .finish("the test work", async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                42
            })
            .await;
        assert_eq!(out, 42);
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(stop.requested_now());
    }

    #[tokio::test]
    async fn the_signal_is_armed_before_any_work() {
        // `wait_for_signal` installs its handlers when first polled; until then SIGTERM
        // would kill the process.
        let armed = std::cell::Cell::new(false);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let signal = std::pin::pin!(async {
            armed.set(true);
            let _ = rx.await;
        });
        let mut stop = Stop::new(signal);
        assert!(!stop.requested_now());
        assert!(armed.get());
        tx.send(()).unwrap();
        assert!(stop.requested_now());
    }
}
