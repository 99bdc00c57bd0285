//! What the fleet view needs besides the store: the operator's stale threshold, and the
//! agents' reports kept in memory. Kept by the registrar, which the services, the page and
//! the metrics all hold; the view itself is `crate::fleet`, and restarts under way are in
//! the store (restart slots).

use std::collections::HashMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use time::OffsetDateTime;

use crate::store::{AgentRecord, Store, StoreError};

/// Agents report every five minutes (jittered down to 3/4 of it): three reports missed.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(15 * 60);

/// How far back from its previous read a view reads the reports again: a report another
/// replica stores carries that replica's clock and commits a moment after it was stamped,
/// so this covers clocks that disagree by up to about a minute.
pub const CATCH_UP_MARGIN: Duration = Duration::from_secs(60);

/// How often a view reads every report again whatever the clocks: the longest another
/// replica's report can stay out of this replica's view.
pub const FULL_READ_EVERY: Duration = Duration::from_secs(10 * 60);

/// What the fleet view needs besides the store: the operator's threshold, and the reports.
#[derive(Debug)]
pub struct Fleet {
    /// A node whose agent has not reported for longer than this is stale.
    pub stale_after: Duration,
    /// The agents' newest reports, so a view does not parse each from the store again.
    pub reports: Reports,
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
            reports: Reports::default(),
        }
    }
}

/// Every node's newest agent report, by name, kept in memory: parsing 10,000 report
/// documents from the store at every view cost a fleet view more than all the rest.
///
/// The store stays the truth. The first read (`serve` makes it at start) reads every
/// report; each later one (a view's) reads only the rows received since its previous
/// read, less [`CATCH_UP_MARGIN`] (the way a report another replica stored reaches this
/// one), and every [`FULL_READ_EVERY`] all of them again. This replica's own reports are
/// kept as they are stored. A restart starts again from the store. Nothing is ever
/// removed: the store removes no report either.
#[derive(Debug, Default)]
pub struct Reports {
    kept: RwLock<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    by_name: HashMap<String, AgentRecord>,
    /// When the newest read started, by this replica's clock; `None` before the first.
    read_at: Option<OffsetDateTime>,
    /// When the newest read of every report started.
    full_read_at: Option<OffsetDateTime>,
}

impl Reports {
    /// Keeps `report`, which this replica has just stored (nothing before the first read:
    /// that read will find it).
    pub fn keep(&self, report: AgentRecord) {
        let mut kept = self.write();
        if kept.read_at.is_some() {
            kept.by_name.insert(report.name.clone(), report);
        }
    }

    /// Reads what the store received since the previous read (everything at the first, and
    /// every [`FULL_READ_EVERY`]) into the kept reports. When every report received since
    /// is one already kept (same node, same second), none is read again: then only their
    /// names and times were.
    ///
    /// # Errors
    /// The store's.
    pub async fn refresh(&self, store: &dyn Store, now: OffsetDateTime) -> Result<(), StoreError> {
        let since = self.read().catch_up_since(now);
        let rows = match since {
            None => store.reports(OffsetDateTime::UNIX_EPOCH).await?,
            Some(since) => {
                let times = store.report_times(since).await?;
                if self.read().holds(&times) {
                    Vec::new()
                } else {
                    store.reports(since).await?
                }
            }
        };
        let mut kept = self.write();
        if since.is_none() {
            kept.by_name.clear();
            kept.full_read_at = Some(now);
        }
        // A row read is what the store holds now: it replaces what was kept, even a
        // report kept while the read was under way (the next read brings that back).
        kept.by_name
            .extend(rows.into_iter().map(|r| (r.name.clone(), r)));
        kept.read_at = kept.read_at.max(Some(now));
        Ok(())
    }

    /// Runs `f` over the kept reports, by node name (hold no lock across an await in it:
    /// it runs under the lock).
    pub fn with<R>(&self, f: impl FnOnce(&HashMap<String, AgentRecord>) -> R) -> R {
        f(&self.read().by_name)
    }

    fn read(&self) -> RwLockReadGuard<'_, Kept> {
        self.kept.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Kept> {
        self.kept.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Kept {
    /// Whether every `(name, Unix second)` is the report kept for that name. Two reports
    /// of one node in one second, through two replicas, look alike here: the later
    /// shows at the next full read.
    fn holds(&self, times: &[(String, i64)]) -> bool {
        times.iter().all(|(name, at)| {
            self.by_name
                .get(name)
                .is_some_and(|r| r.received_at.unix_timestamp() == *at)
        })
    }

    /// Where the next read starts; `None`: read everything.
    fn catch_up_since(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let (Some(read_at), Some(full)) = (self.read_at, self.full_read_at) else {
            return None;
        };
        (now - full < FULL_READ_EVERY).then(|| read_at - CATCH_UP_MARGIN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000) + time::Duration::seconds(secs)
    }

    #[test]
    fn reads_everything_first_then_since_the_last_read_and_everything_again_later() {
        let mut kept = Kept::default();
        assert_eq!(kept.catch_up_since(at(0)), None);
        kept.read_at = Some(at(0));
        kept.full_read_at = Some(at(0));
        assert_eq!(kept.catch_up_since(at(5)), Some(at(0) - CATCH_UP_MARGIN));
        kept.read_at = Some(at(300));
        assert_eq!(
            kept.catch_up_since(at(301)),
            Some(at(300) - CATCH_UP_MARGIN)
        );
        let full = i64::try_from(FULL_READ_EVERY.as_secs()).unwrap();
        assert_eq!(kept.catch_up_since(at(full)), None);
    }

    #[test]
    fn only_a_report_of_another_second_or_node_is_read_again() {
        let mut kept = Kept::default();
        let report = |name: &str, secs: i64| AgentRecord {
            name: name.into(),
            serial: dtca_pki::Serial::from_be_bytes(&[1]),
            received_at: at(secs),
            state: Default::default(),
        };
        kept.by_name.insert("a".into(), report("a", 10));
        let t = |name: &str, secs: i64| (name.to_string(), at(secs).unix_timestamp());
        assert!(kept.holds(&[]));
        assert!(kept.holds(&[t("a", 10)]));
        assert!(!kept.holds(&[t("a", 11)]));
        assert!(!kept.holds(&[t("a", 10), t("b", 10)]));
    }
}
