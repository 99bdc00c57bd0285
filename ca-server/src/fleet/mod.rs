//! The fleet: every enrolled node's state in one view, for `ca-server fleet`, the web page
//! (`serve --ui-listen`) and the metrics.
//!
//! - [`state`]: the pure decision, a node's state from its certificate and its agent's
//!   last report, and the view built from them.
//! - [`json`]: the view as JSON (the CLI's `--json` and the page's data endpoint).
//! - [`metrics`]: the fleet's Prometheus families (bounded labels, no per-node ones).
//! - [`ui`]: the read-only web page and its data endpoint.
//!
//! It changes nothing: it reads the inventory and the agents' reports.

pub mod json;
pub mod metrics;
pub mod state;
pub mod ui;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dtca_proto::v1;
use time::OffsetDateTime;

pub use state::{EXPIRING_WITHIN, NodeState};

use crate::registrar::{Refusal, Registrar};

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

/// The fleet as the CA sees it at `now`: a row per enrolled node, only those in `filter`
/// (every one when it is empty), and a summary of all of them.
///
/// # Errors
/// [`Refusal::InvalidArgument`] for a state that does not exist; store failures.
pub async fn view(
    registrar: &Registrar,
    filter: &[String],
    now: OffsetDateTime,
) -> Result<v1::FleetResponse, Refusal> {
    let filter = state::Filter::parse(filter).map_err(Refusal::InvalidArgument)?;
    let (nodes, reports) = tokio::try_join!(registrar.nodes(now), registrar.reports())?;
    Ok(state::build(
        nodes,
        reports,
        &filter,
        now,
        registrar.fleet().stale_after,
    ))
}
