//! `ca-client login --watch`: an operator's certificate kept fresh while the workstation
//! is on, so that a laptop that sleeps through the night does not come back to a login
//! that can no longer renew.
//!
//! In the foreground, until SIGINT or SIGTERM: it renews at the usual point of the
//! certificate's life (a random point of 50-70 %, as the node agent does), retries a
//! failed renewal with capped, jittered backoff while the certificate is still valid,
//! and every renewal rewrites the credentials and the cluster's contexts file by file
//! atomically (`login --renew`). Waits are re-checked against the wall clock at least
//! every minute: the monotonic clock stands still while the machine is suspended.
//!
//! The trade-off: while it runs, whoever holds the laptop holds a valid certificate;
//! revocation (`ca-server cert revoke --name`) is the answer, and a revoked login stops
//! the watch at its next renewal.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use dtca_common::Reason;
use dtca_common::bundle::{Bundle, Layout};
use dtca_pki::{duration, renewal};
use time::OffsetDateTime;

use crate::error::ClientError;
use crate::operator::{self, LoginReport};
use crate::state::ClientState;

/// How `login --watch` runs.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The docker CLI's configuration directory.
    pub docker_config: PathBuf,
    /// The cluster logged in to (the only one when `None`).
    pub cluster: Option<String>,
    /// CA address override.
    pub server: Option<String>,
    /// First retry delay after a failure.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_cap: Duration,
}

/// Longest single wait: the wall clock is looked at again after it (a suspended machine's
/// monotonic clock does not advance).
const LOOK_AGAIN: Duration = Duration::from_secs(60);

/// Renews the login whenever it is due until `shutdown` completes; `renewed` hears of
/// every renewal.
///
/// # Errors
/// [`ClientError`] when there is no login, or when the CA refuses the certificate for
/// good (expired, revoked, superseded): a new token is needed then. Anything else is
/// retried.
pub async fn watch(
    opts: &WatchOptions,
    shutdown: impl Future<Output = ()>,
    mut renewed: impl FnMut(&LoginReport),
) -> Result<(), ClientError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let cluster = match &opts.cluster {
        Some(c) => c.clone(),
        None => operator::only_cluster(&opts.docker_config)?,
    };
    let dir = operator::credentials_dir(&opts.docker_config, &cluster);
    let mut failures: u32 = 0;
    loop {
        let wait = if failures == 0 {
            let mut state = ClientState::load(&dir)?;
            let leaf = Bundle::load(&dir, Layout::CLIENT)?.leaf()?;
            let due = state.planned_renewal(&leaf, &dir);
            let wait = until(OffsetDateTime::now_utc(), due);
            if wait > Duration::ZERO {
                tracing::info!(at = %duration::timestamp(due), serial = %leaf.serial, "next renewal of the login planned");
            }
            wait
        } else {
            renewal::backoff(
                failures - 1,
                opts.retry_base,
                opts.retry_cap,
                renewal::jitter(),
            )
        };
        if !wait.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(wait.min(LOOK_AGAIN)) => {}
                () = &mut shutdown => return Ok(()),
            }
            if wait > LOOK_AGAIN && failures == 0 {
                continue;
            }
        }
        let attempt = operator::renew(&opts.docker_config, Some(&cluster), opts.server.as_deref());
        let outcome = tokio::select! {
            outcome = attempt => outcome,
            () = &mut shutdown => return Ok(()),
        };
        match outcome {
            Ok(report) => {
                failures = 0;
                renewed(&report);
            }
            Err(e) if for_good(e.reason()) => return Err(e),
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(error = %e, failures, "renewing the login failed; retrying");
            }
        }
    }
}

/// How long from `now` until `due`; zero when it is past.
fn until(now: OffsetDateTime, due: OffsetDateTime) -> Duration {
    (due - now).try_into().unwrap_or(Duration::ZERO)
}

/// Refusals no retry can change: the certificate is no longer one to renew with.
fn for_good(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::CertExpired
            | Reason::CertRevoked
            | Reason::CertForeign
            | Reason::CertUnknown
            | Reason::CertSuperseded
            | Reason::NotInitialized
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_until_due_and_not_at_all_once_past() {
        let now = OffsetDateTime::now_utc();
        assert_eq!(
            until(now, now + time::Duration::seconds(90)),
            Duration::from_secs(90)
        );
        assert_eq!(until(now, now - time::Duration::seconds(5)), Duration::ZERO);
    }

    #[test]
    fn only_a_dead_certificate_ends_the_watch() {
        for reason in [Reason::CertExpired, Reason::CertRevoked] {
            assert!(for_good(reason), "{reason}");
        }
        for reason in [
            Reason::Unreachable,
            Reason::StoreUnavailable,
            Reason::ClockSkew,
        ] {
            assert!(!for_good(reason), "{reason}");
        }
    }
}
