//! Waiting for a restart slot, decided from the facts alone (tested as a table): what the
//! CA last said, how long it has been unreachable, and when the certificate in service
//! expires.
//!
//! - Granted: restart now, renewing the slot's lease while restarting.
//! - Queued (the CA is there and coordinating): wait and ask again, until the
//!   certificate in service would expire before a restart could complete; then restart
//!   without a slot (an engine serving an expired certificate helps no one).
//! - The CA unreachable: ask again every few seconds, for up to the wait limit and never
//!   past that same point. At that point restart without a slot; before it, once the
//!   limit is reached, give up this rotation (the renewal is retried later).
//! - A CA that predates restart slots (it does not know the call): restart, as before.

use std::time::Duration;

use time::OffsetDateTime;

/// How often an agent that cannot reach the CA asks again.
pub(super) const UNREACHABLE_RETRY: Duration = Duration::from_secs(5);

/// Default for `agent --restart-slot-wait`.
pub const DEFAULT_WAIT_LIMIT: Duration = Duration::from_secs(30 * 60);

/// What the CA last answered a slot request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Heard {
    /// The slot is ours for `lease`.
    Granted { lease: Duration },
    /// Wait `retry_after`, because of `why`.
    Queued { retry_after: Duration, why: String },
    /// The request did not get through.
    Failed(String),
    /// The CA does not know restart slots.
    Unsupported,
}

/// The facts besides the answer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Facts {
    pub(super) now: OffsetDateTime,
    /// Since when every request failed (`None` while the CA answers).
    pub(super) unreachable_since: Option<OffsetDateTime>,
    /// The last moment a restart can start and still finish before the certificate in
    /// service expires (see [`deadline`]).
    pub(super) deadline: OffsetDateTime,
    /// How long to wait for an unreachable CA.
    pub(super) wait_limit: Duration,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// Restart, holding a slot whose lease is `lease`.
    Restart { lease: Duration },
    /// Restart with no coordination (the CA predates restart slots).
    RestartUncoordinated,
    /// Restart although no slot was granted, for the reason given.
    RestartWithoutSlot(String),
    /// Ask again after this long.
    Wait(Duration),
    /// Give up this rotation: the CA was unreachable for the whole limit.
    GiveUp(String),
}

/// Decides the next step.
pub(super) fn step(heard: &Heard, facts: &Facts) -> Step {
    let left = facts.deadline - facts.now;
    let expiry_reached = left <= time::Duration::ZERO;
    match heard {
        Heard::Granted { lease } => Step::Restart { lease: *lease },
        Heard::Unsupported => Step::RestartUncoordinated,
        Heard::Queued { why, .. } if expiry_reached => Step::RestartWithoutSlot(format!(
            "the CA queued this restart ({why}) until the certificate in service was about to expire"
        )),
        Heard::Failed(error) if expiry_reached => Step::RestartWithoutSlot(format!(
            "the CA could not be reached for a restart slot ({error}) and the certificate in service was about to expire"
        )),
        Heard::Queued { retry_after, .. } => Step::Wait(until(*retry_after, left)),
        Heard::Failed(error) => {
            let since = facts.unreachable_since.unwrap_or(facts.now);
            if facts.now - since >= facts.wait_limit {
                Step::GiveUp(format!(
                    "no restart slot: the CA was unreachable for {} ({error}); the rotation is retried later",
                    dtca_pki::duration::format(facts.wait_limit)
                ))
            } else {
                let limit_left = (since + facts.wait_limit) - facts.now;
                Step::Wait(until(UNREACHABLE_RETRY, left.min(limit_left)))
            }
        }
    }
}

/// The last moment to start a restart of an engine whose certificate in service expires
/// at `not_after`, for a wait that begins `now`: a restart and its verify may take up to
/// `restart_time`, or a quarter of the time left when that is shorter (short-lived
/// certificates restart in seconds, and must not give the whole wait away).
pub(super) fn deadline(
    now: OffsetDateTime,
    not_after: OffsetDateTime,
    restart_time: Duration,
) -> OffsetDateTime {
    let left = (not_after - now).max(time::Duration::ZERO);
    let margin = time::Duration::try_from(restart_time)
        .unwrap_or(time::Duration::MAX)
        .min(left / 4);
    not_after - margin
}

/// `wanted`, but no later than `left` (and never negative).
fn until(wanted: Duration, left: time::Duration) -> Duration {
    let left = Duration::try_from(left).unwrap_or(Duration::ZERO);
    wanted.min(left)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + secs).unwrap()
    }

    fn facts(now: i64, unreachable_since: Option<i64>) -> Facts {
        Facts {
            now: at(now),
            unreachable_since: unreachable_since.map(at),
            deadline: at(1000),
            wait_limit: Duration::from_secs(300),
        }
    }

    /// A name, what the CA said, the facts, and what the step must be.
    type Case = (&'static str, Heard, Facts, fn(&Step) -> bool);

    fn queued() -> Heard {
        Heard::Queued {
            retry_after: Duration::from_secs(10),
            why: "2 restart(s) in progress (a, b)".into(),
        }
    }

    #[test]
    fn the_agent_waits_for_its_slot_and_restarts_without_one_only_at_expiry() {
        let failed = Heard::Failed("connection refused".into());
        let lease = Duration::from_secs(90);
        let cases: &[Case] = &[
            ("granted", Heard::Granted { lease }, facts(0, None), |s| {
                *s == Step::Restart {
                    lease: Duration::from_secs(90),
                }
            }),
            ("an old CA", Heard::Unsupported, facts(0, None), |s| {
                *s == Step::RestartUncoordinated
            }),
            (
                "queued: ask again after the hint",
                queued(),
                facts(0, None),
                |s| *s == Step::Wait(Duration::from_secs(10)),
            ),
            (
                "queued near the deadline: no later than it",
                queued(),
                facts(996, None),
                |s| *s == Step::Wait(Duration::from_secs(4)),
            ),
            (
                "queued past the wait limit: still waits (the CA is coordinating)",
                queued(),
                facts(900, None),
                |s| matches!(s, Step::Wait(_)),
            ),
            (
                "queued at the deadline: restart without a slot",
                queued(),
                facts(1000, None),
                |s| matches!(s, Step::RestartWithoutSlot(why) if why.contains("queued")),
            ),
            (
                "unreachable: ask again soon",
                failed.clone(),
                facts(10, Some(0)),
                |s| *s == Step::Wait(UNREACHABLE_RETRY),
            ),
            (
                "unreachable, the limit close: no later than it",
                failed.clone(),
                facts(298, Some(0)),
                |s| *s == Step::Wait(Duration::from_secs(2)),
            ),
            (
                "unreachable for the whole limit, expiry far: give up",
                failed.clone(),
                facts(300, Some(0)),
                |s| matches!(s, Step::GiveUp(why) if why.contains("unreachable for 5m")),
            ),
            (
                "unreachable at the deadline: restart without a slot",
                failed.clone(),
                facts(1000, Some(990)),
                |s| matches!(s, Step::RestartWithoutSlot(why) if why.contains("could not be reached")),
            ),
        ];
        for (name, heard, facts, ok) in cases {
            let got = step(heard, facts);
            assert!(ok(&got), "{name}: {got:?}");
        }
    }

    /// Regression: the margin was a tenth of the certificate's whole life, which for a
    /// one-minute certificate includes the CA's backdating of several minutes: the
    /// deadline fell before the planned renewal and every queued restart went ahead
    /// without a slot.
    #[test]
    fn the_deadline_leaves_room_for_a_restart_or_a_quarter_of_the_time_left() {
        let day = 86_400;
        // A 30-day certificate renewed with 12 days left: the restart time.
        assert_eq!(
            deadline(at(18 * day), at(30 * day), Duration::from_secs(60)),
            at(30 * day - 60)
        );
        // A one-minute certificate renewed with 20 s left: five seconds.
        assert_eq!(deadline(at(40), at(60), Duration::from_secs(30)), at(55));
        // Already expired: the deadline is its expiry (restart at once).
        assert_eq!(deadline(at(70), at(60), Duration::from_secs(30)), at(60));
    }
}
