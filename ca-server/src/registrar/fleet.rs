//! What the fleet view needs besides the store: the operator's stale threshold. Kept by
//! the registrar, which the services, the page and the metrics all hold; the view itself
//! is `crate::fleet`, and restarts under way are in the store (restart slots).

use std::time::Duration;

/// Agents report every five minutes (jittered down to 3/4 of it): three reports missed.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(15 * 60);

/// What the fleet view needs besides the store: the operator's threshold.
#[derive(Debug)]
pub struct Fleet {
    /// A node whose agent has not reported for longer than this is stale.
    pub stale_after: Duration,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet::new(DEFAULT_STALE_AFTER)
    }
}

impl Fleet {
    /// A fleet view whose reports go stale after `stale_after`.
    pub fn new(stale_after: Duration) -> Self {
        Fleet { stale_after }
    }
}
