//! The fleet: every enrolled node's state in one view, for `ca-server fleet`, the web page
//! (`serve --ui-listen`) and the metrics.
//!
//! - [`state`]: the pure decision, a node's state from its certificate and its agent's
//!   last report, and the view built from them.
//! - [`json`]: the view as JSON (the CLI's `--json` and the page's data endpoint).
//! - [`metrics`]: the fleet's Prometheus families (bounded labels, no per-node ones).
//!
//! The web page that shows it is `crate::ui`; the settings and gauges it reads live with
//! the registrar (`registrar::fleet`), which every part of the server holds.
//! It changes nothing: it reads the inventory and the agents' reports.

pub mod json;
pub mod metrics;
pub mod state;

use dtca_proto::v1;
use time::OffsetDateTime;

pub use crate::registrar::fleet::{DEFAULT_STALE_AFTER, Fleet};
pub use state::{EXPIRING_WITHIN, NodeState};

use crate::registrar::{Refusal, Registrar};

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
    let (nodes, ()) = tokio::try_join!(registrar.nodes(now), registrar.refresh_reports(now))?;
    let fleet = registrar.fleet();
    Ok(fleet
        .reports
        .with(|reports| state::build(nodes, reports, &filter, now, fleet.stale_after)))
}
