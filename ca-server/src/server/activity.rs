//! What one connection is doing: how many requests it has started, how many streams are
//! open now, and whether it still counts against its source's budget.
//!
//! A stream opens when a request's headers arrive and closes when its response body is
//! done (or the request is abandoned), so a server-streaming call keeps its connection
//! busy for as long as it runs and the idle timeout never cuts it.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::watch;

use super::budget::Slot;

/// Streams of one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Streams {
    /// Requests whose response is not finished.
    pub(super) open: usize,
    /// Requests since the connection was established.
    pub(super) started: u64,
}

/// One connection's activity, shared by its driver and its requests.
#[derive(Debug)]
pub(super) struct Activity {
    streams: watch::Sender<Streams>,
    /// The client presented a certificate that chains to this CA.
    verified: bool,
    /// Its place in the unauthenticated budget, until it has authenticated.
    slot: Mutex<Option<Slot>>,
}

impl Activity {
    /// A new connection, `verified` when its client certificate chains to this CA.
    pub(super) fn new(verified: bool, slot: Slot) -> Arc<Activity> {
        Arc::new(Activity {
            streams: watch::Sender::new(Streams::default()),
            verified,
            slot: Mutex::new(Some(slot)),
        })
    }

    /// A request arrived: a stream is open until the guard is dropped. With a verified
    /// certificate, the first request authenticates the connection and gives its slot back.
    pub(super) fn open(self: &Arc<Self>) -> OpenStream {
        self.streams.send_modify(|s| {
            s.open += 1;
            s.started += 1;
        });
        if self.verified {
            self.slot_lock().take();
        }
        OpenStream(self.clone())
    }

    /// Whether the connection no longer counts against its source's budget.
    pub(super) fn authenticated(&self) -> bool {
        self.slot_lock().is_none()
    }

    /// Changes to the streams, for the connection's driver.
    pub(super) fn watch(&self) -> watch::Receiver<Streams> {
        self.streams.subscribe()
    }

    fn slot_lock(&self) -> std::sync::MutexGuard<'_, Option<Slot>> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An open stream; closes when dropped.
#[derive(Debug)]
pub(super) struct OpenStream(Arc<Activity>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0
            .streams
            .send_modify(|s| s.open = s.open.saturating_sub(1));
    }
}

/// A response body that holds its stream open until it is dropped.
#[derive(Debug)]
pub(super) struct Guarded<B> {
    inner: B,
    _stream: OpenStream,
}

impl<B> Guarded<B> {
    /// `inner`, keeping `stream` open while it lives.
    pub(super) fn new(inner: B, stream: OpenStream) -> Self {
        Guarded {
            inner,
            _stream: stream,
        }
    }
}

impl<B: Body + Unpin> Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::budget::Budget;

    #[test]
    fn a_verified_connection_leaves_the_budget_at_its_first_request() {
        let budget = Budget::new(4);
        let ip = "192.0.2.1".parse().unwrap();
        let activity = Activity::new(true, budget.take(ip).unwrap());
        assert!(!activity.authenticated());
        assert_eq!(budget.held(ip), 1);
        let stream = activity.open();
        assert!(activity.authenticated());
        assert_eq!(budget.held(ip), 0);
        drop(stream);
    }

    #[test]
    fn an_unverified_connection_stays_in_the_budget_whatever_it_asks() {
        let budget = Budget::new(4);
        let ip = "192.0.2.1".parse().unwrap();
        let activity = Activity::new(false, budget.take(ip).unwrap());
        drop(activity.open());
        drop(activity.open());
        assert!(!activity.authenticated());
        assert_eq!(budget.held(ip), 1);
        drop(activity);
        assert_eq!(budget.held(ip), 0);
    }

    #[test]
    fn streams_count_open_and_started_requests() {
        let budget = Budget::new(4);
        let activity = Activity::new(false, budget.take("192.0.2.1".parse().unwrap()).unwrap());
        let watch = activity.watch();
        let a = activity.open();
        let b = activity.open();
        assert_eq!(
            *watch.borrow(),
            Streams {
                open: 2,
                started: 2
            }
        );
        drop(a);
        drop(b);
        assert_eq!(
            *watch.borrow(),
            Streams {
                open: 0,
                started: 2
            }
        );
    }
}
