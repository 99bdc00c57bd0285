//! When to renew: a random point between 50 % and 70 % of a certificate's life, so a
//! fleet enrolled together does not renew together; and how long to wait after a failed
//! attempt, also jittered, so a fleet whose CA went down does not retry in step.

use time::OffsetDateTime;

/// Earliest renewal point, as a fraction of the lifetime.
pub const EARLIEST: f64 = 0.5;
/// Latest renewal point, as a fraction of the lifetime.
pub const LATEST: f64 = 0.7;

/// The moment to renew a certificate valid from `not_before` to `not_after`.
///
/// `jitter` in `[0, 1)` picks the point between 50 % and 70 % of the life; callers draw it
/// once per certificate (so restarts do not move it much) and tests pass fixed values.
/// Values outside `[0, 1]` are clamped.
pub fn renew_at(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    jitter: f64,
) -> OffsetDateTime {
    let life = not_after - not_before;
    let fraction = EARLIEST + (LATEST - EARLIEST) * jitter.clamp(0.0, 1.0);
    not_before + life * fraction
}

/// [`renew_at`] for a certificate issued by this CA, whose `not_before` is backdated by
/// [`crate::profile::BACKDATE`]: the life that counts starts at issuance, so a short
/// certificate is not renewed the moment it arrives.
pub fn renew_at_issued(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    jitter: f64,
) -> OffsetDateTime {
    let issued = (not_before + crate::profile::BACKDATE).min(not_after);
    renew_at(issued, not_after, jitter)
}

/// A uniform draw in `[0, 1)` from the system's random source, for [`renew_at`] and
/// [`backoff`] (0.5 when the source fails: the middle of the window).
pub fn jitter() -> f64 {
    let mut b = [0u8; 4];
    match ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b) {
        Ok(()) => f64::from(u32::from_le_bytes(b)) / 4_294_967_296.0,
        Err(_) => 0.5,
    }
}

/// How long to wait after `failures` consecutive failed attempts ("equal jitter"): the
/// ceiling doubles from `base` and is capped at `cap`; the wait is between half the
/// ceiling and the ceiling, placed by `jitter` in `[0, 1]` (callers draw it each time with
/// [`jitter`]; tests pass fixed values; out of range or NaN is clamped). Half stays fixed
/// so that a node never retries in a tight loop, the other half spreads a fleet out.
pub fn backoff(
    failures: u32,
    base: std::time::Duration,
    cap: std::time::Duration,
    jitter: f64,
) -> std::time::Duration {
    let factor = 1u32.checked_shl(failures.min(30)).unwrap_or(u32::MAX);
    let ceiling = base.saturating_mul(factor).min(cap);
    let jitter = if jitter.is_nan() {
        0.5
    } else {
        jitter.clamp(0.0, 1.0)
    };
    let half = ceiling / 2;
    // At most `half` (times 1.0), so neither the product nor the sum can overflow.
    half.saturating_add(half.mul_f64(jitter)).min(ceiling)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use time::macros::datetime;

    #[test]
    fn renews_between_half_and_seventy_percent_of_life() {
        let nb = datetime!(2026-01-01 0:00 UTC);
        let na = datetime!(2026-01-31 0:00 UTC);
        assert_eq!(renew_at(nb, na, 0.0), datetime!(2026-01-16 0:00 UTC));
        assert_eq!(renew_at(nb, na, 1.0), datetime!(2026-01-22 0:00 UTC));
        let mid = renew_at(nb, na, 0.5);
        assert!(mid > renew_at(nb, na, 0.0) && mid < renew_at(nb, na, 1.0));
    }

    #[test]
    fn backdating_does_not_count_as_life() {
        // A 30-second certificate, backdated five minutes: renewed 15-21 s after issue.
        let issued = datetime!(2026-01-01 0:05 UTC);
        let nb = datetime!(2026-01-01 0:00 UTC);
        let na = issued + time::Duration::seconds(30);
        assert_eq!(
            renew_at_issued(nb, na, 0.0),
            issued + time::Duration::seconds(15)
        );
        assert_eq!(
            renew_at_issued(nb, na, 1.0),
            issued + time::Duration::seconds(21)
        );
        // For a 30-day certificate it hardly matters.
        let long = renew_at_issued(nb, issued + time::Duration::days(30), 0.0);
        assert_eq!(long, issued + time::Duration::days(15));
    }

    #[test]
    fn clamps_out_of_range_jitter() {
        let nb = datetime!(2026-01-01 0:00 UTC);
        let na = datetime!(2026-01-11 0:00 UTC);
        assert_eq!(renew_at(nb, na, -3.0), renew_at(nb, na, 0.0));
        assert_eq!(renew_at(nb, na, 7.0), renew_at(nb, na, 1.0));
    }

    #[test]
    fn backoff_doubles_then_caps() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(300);
        assert_eq!(backoff(0, base, cap, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(3, base, cap, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(20, base, cap, 1.0), cap);
        assert_eq!(backoff(u32::MAX, base, cap, 1.0), cap);
        assert_eq!(backoff(3, base, cap, 0.0), Duration::from_secs(4));
        assert_eq!(backoff(u32::MAX, base, cap, 0.0), cap / 2);
    }

    #[test]
    fn backoff_stays_between_half_the_ceiling_and_the_cap() {
        let base = Duration::from_secs(2);
        let cap = Duration::from_secs(20);
        for failures in [0, 1, 2, 3, 4, 5, 10, 31, u32::MAX] {
            let ceiling = (base * 2u32.saturating_pow(failures.min(30))).min(cap);
            for j in [
                0.0,
                0.1,
                0.5,
                0.999,
                1.0,
                -1.0,
                2.0,
                f64::NAN,
                f64::INFINITY,
            ] {
                let wait = backoff(failures, base, cap, j);
                assert!(
                    wait >= ceiling / 2 && wait <= ceiling && wait <= cap,
                    "failures {failures}, jitter {j}: {wait:?} outside [{:?}, {ceiling:?}]",
                    ceiling / 2
                );
            }
        }
        // Extreme inputs neither overflow nor panic.
        assert!(backoff(u32::MAX, Duration::MAX, Duration::MAX, 1.0) <= Duration::MAX);
        assert_eq!(backoff(5, Duration::ZERO, cap, 0.7), Duration::ZERO);
    }

    /// Regression: a fleet whose CA went down retried in lockstep (exactly 2, 4, 8, 16,
    /// 20 s). With the drawn jitter, nodes at the same failure count wait different times.
    #[test]
    fn a_fleet_does_not_retry_in_step() {
        let base = Duration::from_secs(2);
        let cap = Duration::from_secs(20);
        let mut waits: Vec<Duration> = (0..50).map(|_| backoff(3, base, cap, jitter())).collect();
        waits.sort();
        waits.dedup();
        assert!(waits.len() > 10, "{waits:?}");
        assert!(
            waits
                .iter()
                .all(|w| *w >= Duration::from_secs(8) && *w <= Duration::from_secs(16))
        );
    }
}
