//! What the agent does next, decided from the facts alone: no clock, no files, no
//! network. The loop (`agent::run`) gathers the facts, does what this says, and asks
//! again; the decision is tested here as a table.

use std::time::Duration;

use dtca_pki::renewal;
use time::OffsetDateTime;

/// What the agent knows when it decides.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// The wall clock (certificates are judged by it).
    pub now: OffsetDateTime,
    /// The planned renewal of the current certificate.
    pub due: OffsetDateTime,
    /// The node's names changed and the certificate should follow (and the CA has not
    /// just refused the new names).
    pub names_changed: bool,
    /// A renewal was asked for (`agent --renew-now`) and has not succeeded yet.
    pub forced: bool,
    /// The renewal attempts that failed in a row, most recent last.
    pub failed: Option<Failed>,
    /// How long ago this process last renewed successfully.
    pub since_success: Option<Duration>,
    /// A stop was requested.
    pub stop: bool,
}

/// Renewals that failed in a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Failed {
    /// How many.
    pub count: u32,
    /// How long ago the last one failed.
    pub ago: Duration,
    /// Drawn when it failed (`renewal::jitter`), to place the retry.
    pub jitter: f64,
}

/// How the agent spaces its attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// First retry delay after a failure (jittered down to half of it).
    pub retry_base: Duration,
    /// Longest retry delay; also the least time between two successful renewals when a
    /// new certificate is already due (its issuer expires soon, say).
    pub retry_cap: Duration,
}

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stop the agent.
    Stop,
    /// Renew now.
    Renew(Why),
    /// Wait this long (or until the addresses change, or a stop), then decide again.
    Wait(Duration, Until),
}

/// Why a renewal happens now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Asked for.
    Forced,
    /// The node's names changed.
    NamesChanged,
    /// The planned point has come.
    Due,
    /// The previous attempt failed and its back-off is over.
    Retry,
}

/// What a wait is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// The planned renewal.
    Due,
    /// The back-off after a failed attempt.
    Retry,
    /// The certificate just obtained is already due: renewals are spaced by the retry
    /// cap instead of running back to back.
    HoldOff,
}

/// Decides what to do next.
pub fn next(facts: &Facts, timing: &Timing) -> Action {
    if facts.stop {
        return Action::Stop;
    }
    // A failing CA or engine is not asked again before its back-off, whatever else
    // happened meanwhile.
    if let Some(failed) = facts.failed {
        let wait = renewal::backoff(
            failed.count.saturating_sub(1),
            timing.retry_base,
            timing.retry_cap,
            failed.jitter,
        );
        if let Some(left) = wait.checked_sub(failed.ago).filter(|l| !l.is_zero()) {
            return Action::Wait(left, Until::Retry);
        }
    }
    if facts.forced {
        return Action::Renew(Why::Forced);
    }
    if facts.names_changed {
        return Action::Renew(Why::NamesChanged);
    }
    if facts.failed.is_some() {
        return Action::Renew(Why::Retry);
    }
    if facts.now < facts.due {
        let left = (facts.due - facts.now).try_into().unwrap_or(Duration::ZERO);
        return Action::Wait(left, Until::Due);
    }
    // Held off only when the certificate was already due as it arrived (a CA that issues
    // short ones): a certificate that became due at its planned point since, however short
    // its life, renews now.
    match facts.since_success {
        Some(ago) if ago < timing.retry_cap && facts.due <= facts.now - ago => {
            Action::Wait(timing.retry_cap - ago, Until::HoldOff)
        }
        _ => Action::Renew(Why::Due),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-07 12:00 UTC);
    const TIMING: Timing = Timing {
        retry_base: Duration::from_secs(5),
        retry_cap: Duration::from_secs(600),
    };

    fn facts() -> Facts {
        Facts {
            now: NOW,
            due: NOW + time::Duration::hours(1),
            names_changed: false,
            forced: false,
            failed: None,
            since_success: None,
            stop: false,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn failed(count: u32, ago: u64, jitter: f64) -> Option<Failed> {
        Some(Failed {
            count,
            ago: secs(ago),
            jitter,
        })
    }

    #[test]
    fn decides_from_the_facts() {
        let due_now = NOW - time::Duration::seconds(1);
        let table: Vec<(&str, Facts, Action)> = vec![
            (
                "idle: waits for the planned point",
                facts(),
                Action::Wait(secs(3600), Until::Due),
            ),
            (
                "a stop wins over everything",
                Facts {
                    stop: true,
                    forced: true,
                    due: due_now,
                    ..facts()
                },
                Action::Stop,
            ),
            (
                "the planned point has come",
                Facts {
                    due: due_now,
                    ..facts()
                },
                Action::Renew(Why::Due),
            ),
            (
                "exactly at the planned point",
                Facts {
                    due: NOW,
                    ..facts()
                },
                Action::Renew(Why::Due),
            ),
            (
                "--renew-now renews before the planned point",
                Facts {
                    forced: true,
                    ..facts()
                },
                Action::Renew(Why::Forced),
            ),
            (
                "new addresses renew before the planned point",
                Facts {
                    names_changed: true,
                    ..facts()
                },
                Action::Renew(Why::NamesChanged),
            ),
            (
                "a back-off holds even a forced renewal (no tight loop)",
                Facts {
                    forced: true,
                    names_changed: true,
                    failed: failed(1, 0, 1.0),
                    ..facts()
                },
                Action::Wait(secs(5), Until::Retry),
            ),
            (
                "after its back-off a forced renewal is still forced",
                Facts {
                    forced: true,
                    failed: failed(1, 5, 1.0),
                    ..facts()
                },
                Action::Renew(Why::Forced),
            ),
            (
                "first failure: waits half the base at the least jitter",
                Facts {
                    failed: failed(1, 0, 0.0),
                    ..facts()
                },
                Action::Wait(Duration::from_millis(2500), Until::Retry),
            ),
            (
                "first failure: the full base at the most jitter",
                Facts {
                    failed: failed(1, 0, 1.0),
                    ..facts()
                },
                Action::Wait(secs(5), Until::Retry),
            ),
            (
                "third failure: the ceiling has doubled twice; time already waited counts",
                Facts {
                    failed: failed(3, 5, 1.0),
                    ..facts()
                },
                Action::Wait(secs(15), Until::Retry),
            ),
            (
                "a back-off never exceeds the cap",
                Facts {
                    failed: failed(30, 0, 1.0),
                    ..facts()
                },
                Action::Wait(secs(600), Until::Retry),
            ),
            (
                "a back-off that is over retries, even before the planned point",
                Facts {
                    failed: failed(1, 5, 1.0),
                    ..facts()
                },
                Action::Renew(Why::Retry),
            ),
            (
                "a certificate due as it arrives waits out the cap",
                Facts {
                    due: NOW - time::Duration::seconds(200),
                    since_success: Some(secs(100)),
                    ..facts()
                },
                Action::Wait(secs(500), Until::HoldOff),
            ),
            (
                "and renews once the cap has passed",
                Facts {
                    due: NOW - time::Duration::seconds(200),
                    since_success: Some(secs(600)),
                    ..facts()
                },
                Action::Renew(Why::Due),
            ),
            (
                "a one-minute certificate due at its planned point renews, however recent the last success",
                Facts {
                    due: due_now,
                    since_success: Some(secs(33)),
                    ..facts()
                },
                Action::Renew(Why::Due),
            ),
            (
                "a recent success does not delay a certificate that is not due",
                Facts {
                    since_success: Some(secs(1)),
                    ..facts()
                },
                Action::Wait(secs(3600), Until::Due),
            ),
        ];
        for (case, facts, want) in table {
            assert_eq!(next(&facts, &TIMING), want, "{case}");
        }
    }
}
