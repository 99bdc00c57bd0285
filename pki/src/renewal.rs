//! When to renew: a random point between 50 % and 70 % of a certificate's life, so a
//! fleet enrolled together does not renew together.

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

/// A uniform draw in `[0, 1)` from the system's random source, for [`renew_at`]
/// (0.5 when the source fails: the middle of the window).
pub fn jitter() -> f64 {
    let mut b = [0u8; 4];
    match ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b) {
        Ok(()) => f64::from(u32::from_le_bytes(b)) / 4_294_967_296.0,
        Err(_) => 0.5,
    }
}

/// How long to wait after `failures` consecutive failed attempts: doubles from `base`,
/// capped at `cap`.
pub fn backoff(
    failures: u32,
    base: std::time::Duration,
    cap: std::time::Duration,
) -> std::time::Duration {
    let factor = 1u32.checked_shl(failures.min(30)).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(cap)
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
        assert_eq!(backoff(0, base, cap), Duration::from_secs(1));
        assert_eq!(backoff(3, base, cap), Duration::from_secs(8));
        assert_eq!(backoff(20, base, cap), cap);
        assert_eq!(backoff(u32::MAX, base, cap), cap);
    }
}
