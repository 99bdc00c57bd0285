//! When an intermediate hands over to its successor: one small pure function of the
//! intermediate's validity, so every replica, `ca status` and the tests compute the same
//! instants.
//!
//! An intermediate meant to start at `start` (its `not_before` plus [`BACKDATE`]) and
//! ending at `not_after` lives `life = not_after - start`. Then:
//!
//! - **leaf cap** = life / 3: no leaf it signs lives longer;
//! - **switch** = not_after - cap - margin (margin = cap / 10): its successor starts
//!   signing, while it still has more than a leaf's life left, so no leaf is ever cut
//!   short and none chains to an expired issuer;
//! - **prepare** = switch - cap: the successor is made (new key, signed by the root), to
//!   start at the switch; replicas read it from the store long before they need it;
//! - **warn** = not_after - 2 cap: from here on, with no successor, `serve` warns (where no
//!   running instance holds the root key, `ca rotate-intermediate` must be run); from
//!   `not_after - cap` on, leaves would be cut short.
//!
//! With the default year-long intermediate: leaves of at most 121 days, a successor made
//! about 110 days in and switched to about 231 days in, each intermediate signing for
//! about two thirds of its life. With a 90-second intermediate (the tests): 30-second
//! leaves, a switch every 57 seconds.

use std::time::Duration;

use time::OffsetDateTime;

use crate::inspect::CertInfo;
use crate::profile::BACKDATE;

/// A leaf lives at most this fraction (1/n) of its intermediate's life.
pub const LEAF_SHARE: u32 = 3;
/// The switch comes this fraction (1/n) of a leaf's life before the last moment.
pub const MARGIN_SHARE: u32 = 10;

/// The instants of one intermediate's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// When it was meant to start signing.
    pub start: OffsetDateTime,
    /// When it expires.
    pub not_after: OffsetDateTime,
    /// The longest life of a leaf it signs.
    pub leaf_cap: Duration,
    /// When its successor takes over.
    pub switch_at: OffsetDateTime,
    /// When its successor should be made.
    pub prepare_at: OffsetDateTime,
    /// From when a missing successor is warned about.
    pub warn_at: OffsetDateTime,
}

impl Schedule {
    /// The schedule of an intermediate valid from `not_before` to `not_after`.
    pub fn new(not_before: OffsetDateTime, not_after: OffsetDateTime) -> Schedule {
        let start = (not_before + BACKDATE).min(not_after);
        let life: Duration = (not_after - start).try_into().unwrap_or(Duration::ZERO);
        // Whole seconds, as X.509 validity is written.
        let leaf_cap = Duration::from_secs(life.as_secs() / u64::from(LEAF_SHARE));
        let margin = Duration::from_secs(leaf_cap.as_secs() / u64::from(MARGIN_SHARE));
        let switch_at = not_after - leaf_cap - margin;
        Schedule {
            start,
            not_after,
            leaf_cap,
            switch_at,
            prepare_at: switch_at - leaf_cap,
            warn_at: not_after - leaf_cap * 2,
        }
    }

    /// The schedule of a parsed intermediate.
    pub fn of(intermediate: &CertInfo) -> Schedule {
        Schedule::new(intermediate.not_before, intermediate.not_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_year_long_intermediate() {
        let start = datetime!(2026-01-01 0:00 UTC);
        let s = Schedule::new(start - BACKDATE, start + time::Duration::days(365));
        assert_eq!(s.start, start);
        assert_eq!(s.leaf_cap, Duration::from_secs(365 * 86_400 / 3));
        // Ordered: prepare < warn < switch < last full leaf < end.
        assert!(s.start < s.prepare_at && s.prepare_at < s.warn_at);
        assert!(s.warn_at < s.switch_at);
        assert!(s.switch_at + s.leaf_cap < s.not_after);
        let days = |t: OffsetDateTime| (t - start).whole_days();
        assert_eq!(days(s.prepare_at), 109);
        assert_eq!(days(s.switch_at), 231);
        assert_eq!(days(s.warn_at), 121);
    }

    #[test]
    fn a_leaf_issued_before_the_switch_ends_before_its_issuer() {
        let start = datetime!(2026-01-01 0:00 UTC);
        for life in [90, 180, 600, 86_400, 365 * 86_400] {
            let s = Schedule::new(start - BACKDATE, start + time::Duration::seconds(life));
            let last_leaf_end = s.switch_at + s.leaf_cap;
            assert!(last_leaf_end <= s.not_after, "{life}");
            assert!(s.prepare_at >= s.start, "{life}");
        }
    }

    #[test]
    fn a_ninety_second_intermediate_switches_after_57_seconds() {
        let start = datetime!(2026-01-01 0:00 UTC);
        let s = Schedule::new(start - BACKDATE, start + time::Duration::seconds(90));
        assert_eq!(s.leaf_cap, Duration::from_secs(30));
        assert_eq!(s.switch_at, start + time::Duration::seconds(57));
        assert_eq!(s.prepare_at, start + time::Duration::seconds(27));
        assert_eq!(s.warn_at, start + time::Duration::seconds(30));
    }

    /// An intermediate cut short by its root's end has a shorter schedule, never one
    /// that starts before it does.
    #[test]
    fn a_degenerate_validity_does_not_panic() {
        let t = datetime!(2026-01-01 0:00 UTC);
        let s = Schedule::new(t, t);
        assert_eq!(s.leaf_cap, Duration::ZERO);
        let s = Schedule::new(t, t - time::Duration::seconds(5));
        assert_eq!(s.leaf_cap, Duration::ZERO);
    }
}
