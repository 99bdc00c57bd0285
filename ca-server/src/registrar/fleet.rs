//! What the fleet view needs besides the store: the operator's stale threshold, and the
//! gauges other parts of the server set (restarts under way). Kept by the registrar, which
//! the services, the page and the metrics all hold; the view itself is `crate::fleet`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Agents report every five minutes (jittered down to 3/4 of it): three reports missed.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(15 * 60);

/// What the fleet view needs besides the store: the operator's threshold, and what other
/// parts of the server tell it.
#[derive(Debug)]
pub struct Fleet {
    /// A node whose agent has not reported for longer than this is stale.
    pub stale_after: Duration,
    /// Engine restarts granted and not given back yet (the restart slots set it).
    restarts_in_progress: AtomicU64,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet::new(DEFAULT_STALE_AFTER)
    }
}

impl Fleet {
    /// A fleet view whose reports go stale after `stale_after`.
    pub fn new(stale_after: Duration) -> Self {
        Fleet {
            stale_after,
            restarts_in_progress: AtomicU64::new(0),
        }
    }

    /// Records how many engine restarts are under way now (a gauge).
    pub fn set_restarts_in_progress(&self, n: u64) {
        self.restarts_in_progress.store(n, Ordering::Relaxed);
    }

    /// How many engine restarts are under way now.
    pub fn restarts_in_progress(&self) -> u64 {
        self.restarts_in_progress.load(Ordering::Relaxed)
    }
}
