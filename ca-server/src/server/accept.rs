//! The accept loop: at most `max_connections` open at once (more wait in the kernel's
//! backlog), at most `max_unauthenticated_per_address` from one source before it has
//! authenticated (more are closed at once), accept errors and refusals logged at most once
//! a second with a count; on stop, no more accepts, open calls drain, then it returns.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use super::budget::{Budget, Source};
use super::conn::{self, Shared};
use crate::metrics::ConnectionEnd;

/// Connections the kernel may queue before `accept` (capped by `net.core.somaxconn`).
const LISTEN_BACKLOG: i32 = 4096;
/// How often a repeated problem is logged at most.
const LOG_EVERY: Duration = Duration::from_secs(1);
/// How long to pause accepting when the process is out of descriptors or memory.
const EXHAUSTED_PAUSE: Duration = Duration::from_millis(50);

/// How many connections the loop admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Admission {
    /// Open at once.
    pub(super) max_connections: usize,
    /// From one source address that has not authenticated.
    pub(super) per_address: usize,
}

/// Accepts on `listener` until `shutdown` completes, then waits for the connections to
/// finish (each has at most its drain time).
pub(super) async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    admission: Admission,
    shutdown: impl Future<Output = ()>,
) {
    // A fleet that boots together connects together. tokio's `bind` listens with a
    // backlog of 128; while both cores are busy with handshakes and issuances the accept
    // queue overflows, the kernel drops SYNs and those nodes retry a whole second later
    // (measured: ~1 % of a 10,000-node enrollment storm waited 1-1.3 s). Calling listen()
    // again on a listening socket only raises its queue.
    if let Err(e) = socket2::SockRef::from(&listener).listen(LISTEN_BACKLOG) {
        tracing::warn!(error = %e, "cannot raise the listen backlog; keeping the default");
    }
    let metrics = shared.registrar.metrics().clone();
    let limit = Arc::new(Semaphore::new(admission.max_connections));
    let budget = Budget::new(admission.per_address);
    let (stop, stopping) = watch::channel(false);
    let mut logs = Logs::default();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = match limit.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if let Some(n) = logs.full.note(Instant::now()) {
                    tracing::warn!(
                        max_connections = admission.max_connections,
                        times = n,
                        "connection limit reached: new connections wait in the backlog"
                    );
                }
                tokio::select! {
                    permit = limit.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let flush_at = logs.due();
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
            () = tokio::time::sleep_until(flush_at.unwrap_or_else(Instant::now)), if flush_at.is_some() => {
                logs.flush(Instant::now());
                continue;
            }
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                metrics.accept_error();
                if let Some(n) = logs.errors.note(Instant::now()) {
                    tracing::warn!(error = %e, count = n, "accept failed");
                }
                if exhausted(&e) {
                    tokio::time::sleep(EXHAUSTED_PAUSE).await;
                }
                continue;
            }
        };
        let Some(ip) = tcp.peer_addr().ok().map(|a| a.ip()) else {
            continue;
        };
        let Some(slot) = budget.take(ip) else {
            metrics.connection_ended(ConnectionEnd::AddressLimit);
            logs.refused_from = Some(Source::of(ip));
            if let Some(n) = logs.refused.note(Instant::now()) {
                log_refused(n, Source::of(ip), admission.per_address);
            }
            // Closed at once: the descriptor is back before the next accept.
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(conn::serve(
            shared.clone(),
            tcp,
            slot,
            permit,
            stopping.clone(),
        ));
    }
    drop(listener);
    logs.flush(Instant::now() + LOG_EVERY);
    let _ = stop.send(true);
    drop(stopping);
    stop.closed().await;
}

/// Out of descriptors, buffers or memory: accepting again at once would only spin.
fn exhausted(e: &std::io::Error) -> bool {
    use nix::errno::Errno;
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)
    )
}

fn log_refused(n: u64, last: Source, per_address: usize) {
    tracing::warn!(
        count = n,
        last_from = %last,
        per_address,
        "refused connections from addresses over their limit of unauthenticated connections"
    );
}

/// The loop's rate-limited logs.
#[derive(Debug, Default)]
struct Logs {
    errors: Throttle,
    refused: Throttle,
    refused_from: Option<Source>,
    full: Throttle,
}

impl Logs {
    /// When counted events are waiting to be logged.
    fn due(&self) -> Option<Instant> {
        [self.errors.due(), self.refused.due()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Logs the counts that are due at `now`.
    fn flush(&mut self, now: Instant) {
        if let Some(n) = self.errors.flush(now) {
            tracing::warn!(count = n, "accept failed (more times)");
        }
        if let (Some(n), Some(from)) = (self.refused.flush(now), self.refused_from) {
            tracing::warn!(
                count = n,
                last_from = %from,
                "refused more connections from addresses over their limit"
            );
        }
    }
}

/// Counts events and says when to log them: the first at once, then at most one line
/// per [`LOG_EVERY`] with how many there were since the last line.
#[derive(Debug, Default)]
struct Throttle {
    logged_at: Option<Instant>,
    pending: u64,
}

impl Throttle {
    /// Counts an event at `now`; `Some(count)` when a line is due now.
    fn note(&mut self, now: Instant) -> Option<u64> {
        self.pending += 1;
        self.flush(now)
    }

    /// When the events counted but not logged are due.
    fn due(&self) -> Option<Instant> {
        match self.logged_at {
            Some(at) if self.pending > 0 => Some(at + LOG_EVERY),
            _ => None,
        }
    }

    /// `Some(count)` of the events not logged yet, when a line is due at `now`.
    fn flush(&mut self, now: Instant) -> Option<u64> {
        let due = self.logged_at.is_none_or(|at| now >= at + LOG_EVERY);
        if self.pending == 0 || !due {
            return None;
        }
        self.logged_at = Some(now);
        Some(std::mem::take(&mut self.pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_errors_gives_one_line_at_once_and_one_with_the_rest_a_second_later() {
        let t = Instant::now();
        let mut throttle = Throttle::default();
        assert_eq!(throttle.note(t), Some(1));
        for i in 1..=499u64 {
            assert_eq!(throttle.note(t + Duration::from_millis(i)), None);
        }
        assert_eq!(throttle.due(), Some(t + LOG_EVERY));
        assert_eq!(throttle.flush(t + Duration::from_millis(999)), None);
        assert_eq!(throttle.flush(t + LOG_EVERY), Some(499));
        assert_eq!(throttle.due(), None);
        assert_eq!(throttle.flush(t + 5 * LOG_EVERY), None);
    }

    #[test]
    fn errors_a_second_apart_are_each_logged() {
        let t = Instant::now();
        let mut throttle = Throttle::default();
        for i in 0..5u32 {
            assert_eq!(throttle.note(t + LOG_EVERY * i), Some(1));
        }
    }

    #[test]
    fn out_of_descriptors_pauses_accepting_and_a_reset_connection_does_not() {
        let emfile = std::io::Error::from_raw_os_error(nix::errno::Errno::EMFILE as i32);
        let aborted = std::io::Error::from_raw_os_error(nix::errno::Errno::ECONNABORTED as i32);
        assert!(exhausted(&emfile));
        assert!(!exhausted(&aborted));
    }
}
