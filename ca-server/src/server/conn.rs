//! One connection from accept to close: the TLS handshake within its deadline, a first
//! request within its own, then HTTP/2 until the client leaves, the connection has been
//! idle too long (no open stream) or the server stops.
//!
//! Every deadline is a decision of [`due`], a pure function of the connection's state;
//! [`serve`] only waits for whichever comes first. An idle connection is closed with a
//! GOAWAY, so a client that was about to send learns to reconnect instead of losing the
//! request; a connection that never sent a request is dropped (there is nothing to drain).

use std::sync::Arc;
use std::time::Duration;

use dtca_pki::chain::{self, Usage};
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use time::OffsetDateTime;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::service::Routes;

use super::activity::{Activity, Streams};
use super::budget::Slot;
use super::request::{ConnService, REQUEST_TIMEOUT};
use crate::metrics::{ConnectionEnd, Metrics};
use crate::registrar::Registrar;
use crate::tls::PeerInfo;

/// How long calls in flight may run on once the server is stopping.
const DRAIN: Duration = REQUEST_TIMEOUT;
/// How long a client with nothing in flight gets to close after a GOAWAY.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// The deadlines of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limits {
    /// From accept to the end of the TLS handshake.
    pub(super) handshake: Duration,
    /// From the end of the handshake to the first request's headers; also the idle time
    /// allowed to a connection that has not authenticated.
    pub(super) first_request: Duration,
    /// How long an authenticated connection may stay with no open stream.
    pub(super) idle: Duration,
}

/// What every connection task shares.
pub(super) struct Shared {
    /// TLS with the server's current certificate.
    pub(super) acceptor: TlsAcceptor,
    /// The gRPC services.
    pub(super) routes: Routes,
    /// Whose CA a client certificate must chain to, and the metrics.
    pub(super) registrar: Arc<Registrar>,
    /// The deadlines.
    pub(super) limits: Limits,
    /// HTTP/2 settings.
    pub h2: http2::Builder<TokioExecutor>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

type H2Conn = http2::Connection<TokioIo<TlsStream<TcpStream>>, ConnService, TokioExecutor>;

/// Serves one accepted connection until it closes. `slot` is its place in its source's
/// budget, `permit` its place in the connection limit; `stop` turns true when the
/// server stops.
pub(super) async fn serve(
    shared: Arc<Shared>,
    tcp: TcpStream,
    slot: Slot,
    permit: OwnedSemaphorePermit,
    mut stop: watch::Receiver<bool>,
) {
    let metrics = shared.registrar.metrics().clone();
    let _open = OpenConnection::new(metrics.clone(), permit);
    let remote = tcp.peer_addr().ok();
    let handshake = tokio::time::timeout(shared.limits.handshake, shared.acceptor.accept(tcp));
    let tls = tokio::select! {
        result = handshake => match result {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(?remote, error = %e, "TLS handshake failed");
                metrics.connection_ended(ConnectionEnd::HandshakeFailed);
                return;
            }
            Err(_) => {
                tracing::debug!(?remote, "TLS handshake timed out");
                metrics.connection_ended(ConnectionEnd::HandshakeTimeout);
                return;
            }
        },
        _ = stop.wait_for(|stopping| *stopping) => return,
    };
    let peer = PeerInfo::of(&tls);
    let verified = peer
        .chain
        .as_deref()
        .is_some_and(|c| chains_to_this_ca(&shared.registrar, c));
    let activity = Activity::new(verified, slot);
    let service = ConnService::new(
        shared.routes.clone(),
        activity.clone(),
        peer,
        metrics.clone(),
    );
    let conn = shared.h2.serve_connection(TokioIo::new(tls), service);
    if let Some(end) = drive(conn, &activity, shared.limits, &mut stop).await {
        tracing::debug!(
            ?remote,
            end = end.as_str(),
            "connection closed by the server"
        );
        metrics.connection_ended(end);
    }
}

/// Whether `chain` (leaf first) is a certificate of this CA, valid now, for either TLS
/// use. Revocation is not looked at here: every call that needs an identity asks the
/// registrar, which does.
fn chains_to_this_ca(registrar: &Registrar, chain: &[Vec<u8>]) -> bool {
    let Some((leaf, presented)) = chain.split_first() else {
        return false;
    };
    let ca = registrar.ca();
    let mut intermediates = ca.intermediates();
    intermediates.extend(presented.iter().cloned());
    let roots = ca.roots();
    let roots: Vec<&[u8]> = roots.iter().map(Vec::as_slice).collect();
    let now = OffsetDateTime::now_utc();
    [
        Usage::Client,
        Usage::Server,
        Usage::Restricted(dtca_pki::access::Access::ReadOnly),
    ]
    .into_iter()
    .any(|usage| chain::verify_any(leaf, &intermediates, &roots, now, usage).is_ok())
}

/// Runs the HTTP/2 connection until it ends; says why when the server ended it.
async fn drive(
    conn: H2Conn,
    activity: &Activity,
    limits: Limits,
    stop: &mut watch::Receiver<bool>,
) -> Option<ConnectionEnd> {
    let mut conn = std::pin::pin!(conn);
    let mut streams = activity.watch();
    let mut quiet_since = Instant::now();
    let mut closing: Option<Instant> = None;
    let mut ending = None;
    loop {
        let state = *streams.borrow_and_update();
        let next = due(
            limits,
            state,
            activity.authenticated(),
            quiet_since,
            closing,
        );
        let wake = next.map_or_else(far_future, |(at, _)| at);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return ending;
            }
            _ = streams.changed() => {
                if streams.borrow().open == 0 {
                    quiet_since = Instant::now();
                }
            }
            _ = stop.wait_for(|stopping| *stopping), if closing.is_none() => {
                let now = *streams.borrow();
                if now.started == 0 {
                    // Nothing asked, nothing to drain.
                    return ending;
                }
                conn.as_mut().graceful_shutdown();
                let grace = if now.open > 0 { DRAIN } else { CLOSE_GRACE };
                closing = Some(Instant::now() + grace);
            }
            () = tokio::time::sleep_until(wake), if next.is_some() => match next {
                Some((_, Due::FirstRequest)) => return Some(ConnectionEnd::NoRequest),
                Some((_, Due::Idle)) => {
                    conn.as_mut().graceful_shutdown();
                    closing = Some(Instant::now() + CLOSE_GRACE);
                    ending = Some(ConnectionEnd::Idle);
                }
                Some((_, Due::Closed)) | None => return ending,
            },
        }
    }
}

/// What the next deadline of a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// No request yet since the handshake.
    FirstRequest,
    /// No open stream for too long.
    Idle,
    /// The client did not close after a GOAWAY.
    Closed,
}

/// The next deadline of a connection that has been without open streams since
/// `quiet_since` (or established then), and is `closing` by a given time after a GOAWAY.
/// `None` while a stream is open: a long-running call is never cut for idleness.
fn due(
    limits: Limits,
    streams: Streams,
    authenticated: bool,
    quiet_since: Instant,
    closing: Option<Instant>,
) -> Option<(Instant, Due)> {
    if let Some(at) = closing {
        return Some((at, Due::Closed));
    }
    if streams.started == 0 {
        return Some((quiet_since + limits.first_request, Due::FirstRequest));
    }
    if streams.open > 0 {
        return None;
    }
    let idle = if authenticated {
        limits.idle
    } else {
        limits.first_request
    };
    Some((quiet_since + idle, Due::Idle))
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

/// Counts the connection as open, and holds its place in the connection limit.
#[derive(Debug)]
struct OpenConnection {
    metrics: Arc<Metrics>,
    _permit: OwnedSemaphorePermit,
}

impl OpenConnection {
    fn new(metrics: Arc<Metrics>, permit: OwnedSemaphorePermit) -> Self {
        metrics.connection_opened();
        OpenConnection {
            metrics,
            _permit: permit,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics.connection_closed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        handshake: Duration::from_secs(10),
        first_request: Duration::from_secs(10),
        idle: Duration::from_secs(300),
    };

    fn streams(open: usize, started: u64) -> Streams {
        Streams { open, started }
    }

    #[test]
    fn deadlines_follow_the_connection_state() {
        let t = Instant::now();
        let s = Duration::from_secs;
        // (streams, authenticated, closing) -> due
        let table = [
            (
                streams(0, 0),
                false,
                None,
                Some((t + s(10), Due::FirstRequest)),
            ),
            (
                streams(0, 0),
                true,
                None,
                Some((t + s(10), Due::FirstRequest)),
            ),
            (streams(1, 1), true, None, None),
            (streams(3, 7), false, None, None),
            (streams(0, 4), true, None, Some((t + s(300), Due::Idle))),
            (streams(0, 4), false, None, Some((t + s(10), Due::Idle))),
            (
                streams(0, 4),
                true,
                Some(t + s(5)),
                Some((t + s(5), Due::Closed)),
            ),
            (
                streams(2, 4),
                true,
                Some(t + s(30)),
                Some((t + s(30), Due::Closed)),
            ),
        ];
        for (state, authenticated, closing, want) in table {
            assert_eq!(
                due(LIMITS, state, authenticated, t, closing),
                want,
                "{state:?} authenticated={authenticated} closing={closing:?}"
            );
        }
    }

    #[test]
    fn an_open_stream_is_never_cut_for_idleness_however_long_it_runs() {
        let long_ago = Instant::now();
        assert_eq!(due(LIMITS, streams(1, 1), true, long_ago, None), None);
        assert_eq!(due(LIMITS, streams(1, 1), false, long_ago, None), None);
    }
}
