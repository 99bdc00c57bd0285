//! `ca-client agent`: keeps a node's certificate fresh with no one watching.
//!
//! It sleeps until a random point between 50 % and 70 % of the certificate's life (drawn
//! once per certificate and recorded, so a restart does not move it), renews with a new
//! key, puts the new pair into the Docker engine (write, restart, verify, fall back), and
//! records what it did for `ca-client status`. While the CA is unreachable it keeps the
//! current pair and retries with capped exponential backoff, jittered so a fleet does not
//! retry in step. When the node's addresses change and no longer match the certificate,
//! it re-issues early with the new names.
//!
//! - [`plan`]: what to do next, decided from the facts alone (tested as a table).
//! - `channel`: the agent channel's stream to the CA (revocations, trust changes, renew
//!   now), kept open on a task of its own; `report`: what the agent reports about its node
//!   (every few minutes and after every renewal attempt).
//! - `stop`: SIGTERM races only the agent's waits: while idle it stops at once; during a
//!   renewal it lets the rotation finish (or roll back) first, so the engine never keeps
//!   serving a certificate the node's files do not hold.
//! - `watch`: the kernel's address notifications, and the names the certificate should
//!   carry.
//! - [`slot`] (pure) and `rolling`: a restart slot from the CA before a native engine
//!   restarts for a rotation (never too many at once, nor two managers of one swarm).
//!
//! This file is the loop: gather the facts, ask [`plan::next`], do it.

mod channel;
mod enrolled;
pub mod plan;
mod report;
pub(crate) mod rolling;
pub mod rotation;
pub mod slot;
mod stop;
pub(crate) mod watch;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use dtca_common::Reason;
use dtca_common::bundle::{Bundle, Layout};
use dtca_common::tls::ServerAddr;
use dtca_pki::inspect::CertInfo;
use dtca_pki::{duration, renewal};
use time::OffsetDateTime;
use tokio::time::Instant;

use self::channel::{Channel, Signal};
use self::enrolled::Enrolled;
use self::plan::{Action, Facts, Failed, Timing, Until, Why};
use self::stop::Stop;
use self::watch::AddressWatch;
use crate::docker;
use crate::enroll;
use crate::error::ClientError;
use crate::lock::AgentLock;
use crate::sans::Sans;
use crate::state::{ClientState, EngineMode};

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Credential directory (as written by `enroll`).
    pub out: PathBuf,
    /// CA address override; default: the one enrolled with.
    pub server: Option<String>,
    /// First retry delay after a failure (jittered down to half of it).
    pub retry_base: Duration,
    /// Longest retry delay (jittered down to half of it).
    pub retry_cap: Duration,
    /// How long to wait for the engine after a restart.
    pub docker_timeout: Duration,
    /// Renew right away once at start (for operators and tests).
    pub renew_now: bool,
    /// How long to wait for a restart slot while the CA cannot be reached (never past
    /// the point where the certificate in service would expire first).
    pub restart_slot_wait: Duration,
}

impl AgentOptions {
    /// Defaults for `out`.
    pub fn new(out: PathBuf) -> Self {
        AgentOptions {
            out,
            server: None,
            retry_base: Duration::from_secs(5),
            retry_cap: Duration::from_secs(600),
            docker_timeout: docker::DEFAULT_TIMEOUT,
            renew_now: false,
            restart_slot_wait: slot::DEFAULT_WAIT_LIMIT,
        }
    }
}

/// Runs until `shutdown` completes; a renewal or engine rotation under way when it does
/// is finished first.
///
/// # Errors
/// [`ClientError`] only for problems that retrying cannot fix (no enrollment in `out`,
/// unreadable credentials); everything else is logged, recorded and retried.
pub async fn run(
    opts: AgentOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ClientError> {
    let shutdown = std::pin::pin!(shutdown);
    let mut stop = Stop::new(shutdown);
    // Armed before any work: a signal future may install its handler only when first
    // polled (`wait_for_signal` does), and until then SIGTERM kills the process mid-step.
    if stop.requested_now() {
        tracing::info!("agent stopped");
        return Ok(());
    }
    let state = ClientState::load(&opts.out)?;
    enroll::private_out(&opts.out)?;
    Bundle::load(&opts.out, Layout::CLIENT)?;
    // `ca-client renew` asks a running agent to renew with SIGUSR1 (see `rotation`): the
    // handler is in place before the lock that tells it an agent runs.
    let asked = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        .map_err(|e| {
            tracing::warn!(error = %e, "cannot listen for SIGUSR1; `ca-client renew` will renew beside the agent");
        })
        .ok();
    let lock = match AgentLock::take(&opts.out)? {
        Ok(lock) => Some(lock),
        Err(holder) => {
            tracing::warn!(
                pid = holder,
                "another agent runs for this state directory; two agents rotate the same engine"
            );
            None
        }
    };
    tracing::info!(out = %opts.out.display(), identity = %state.identity, "agent started");

    let recovered = stop
        .finish(
            "the roll-back of an interrupted docker switch",
            docker::recover_interrupted(&docker::backup_dir(&opts.out), opts.docker_timeout),
        )
        .await?;
    if let Some(how) = recovered {
        tracing::warn!(%how, "rolled back an interrupted docker switch");
    }
    // Guard mode: the agent serves the engine's address; it must, or nothing does.
    let guard = crate::guard::Guard::new(&opts.out);
    guard.follow(&state).await?;
    if let Some(d) = state
        .docker
        .as_ref()
        .filter(|d| d.mode == EngineMode::Native)
        && let Err(e) = stop
            .finish(
                "bringing the engine onto the current certificate",
                docker::reconcile(d, opts.docker_timeout),
            )
            .await
    {
        tracing::error!(error = %e, "the engine does not serve the current certificate");
    }

    let timing = Timing {
        retry_base: opts.retry_base,
        retry_cap: opts.retry_cap,
    };
    let addr = ServerAddr::parse(opts.server.as_deref().unwrap_or(&state.server)).ok();
    let channel = addr
        .clone()
        .zip(Bundle::load(&opts.out, Layout::CLIENT).ok())
        .map(|(addr, bundle)| Channel::open(addr, bundle, guard.clone()));
    let supervisor = tokio::spawn(guard.clone().supervise());
    let crl = addr.map(|addr| tokio::spawn(revocation_list(addr, opts.out.clone(), guard.clone())));
    let mut node = Enrolled {
        opts: &opts,
        state,
        current: None,
        channel,
        asked: asked.filter(|_| lock.is_some()),
        stopping: stop.watch(),
        guard,
    };
    let mut watch = AddressWatch::new();
    let driven = drive(
        &mut node,
        timing,
        opts.renew_now,
        &mut watch,
        &mut stop,
        OffsetDateTime::now_utc,
    )
    .await;
    supervisor.abort();
    if let Some(crl) = crl {
        crl.abort();
    }
    node.guard.flush_audit();
    driven?;
    tracing::info!("agent stopped");
    Ok(())
}

/// How often the guard's revoked serials are read again from the CA's CRL (the agent
/// channel delivers new ones within a second; this covers what it missed while away).
const CRL_EVERY: Duration = Duration::from_secs(60);

/// Feeds the guard the serials on the CA's CRL, at start and every [`CRL_EVERY`].
async fn revocation_list(addr: ServerAddr, out: PathBuf, guard: crate::guard::Guard) {
    loop {
        let fetched = async {
            let bundle = Bundle::load(&out, Layout::CLIENT)?;
            crate::ca::revoked_serials(&addr, &bundle).await
        };
        match fetched.await {
            Ok(serials) => guard.revoke_serials(&serials),
            Err(e) => tracing::debug!(error = %e, "cannot read the CA's CRL; trying again later"),
        }
        tokio::time::sleep(CRL_EVERY).await;
    }
}

/// What the loop sees of the certificate it keeps fresh.
struct Look {
    /// Its planned renewal.
    due: OffsetDateTime,
    /// The names it should carry now, when they differ from its own.
    wanted: Option<Sans>,
}

/// The certificate the loop keeps fresh, and how to renew it: the enrolled node
/// ([`Enrolled`]) in production, a script in the loop's tests.
trait Renewable {
    /// The current certificate's planned renewal and wanted names (`refused`: names the
    /// CA just refused, not asked for again).
    fn look(&mut self, refused: Option<&Sans>) -> Result<Look, ClientError>;
    /// Renews with `names` (the current ones when `None`) and puts the result in service.
    async fn renew(&mut self, names: Option<Sans>) -> Result<CertInfo, ClientError>;
    /// Records a failed attempt for `status`.
    fn failed(&mut self, error: &ClientError, now: OffsetDateTime);
    /// The agent channel's next signal; never resolves without a channel.
    async fn signal(&mut self) -> Signal;
    /// Fetches the CA's trust bundle and installs it where it takes effect without a
    /// restart (the engine's CA file follows with its next certificate).
    async fn refresh_trust(&mut self);
    /// Tells the CA the node's state.
    async fn report(&mut self);
    /// The CA revoked `serials`; when the current certificate is among them, says so and
    /// records it for `status` (renewing it is refused: the node needs a new token).
    fn revoked(&mut self, serials: &[String], now: OffsetDateTime);
}

/// How often the agent reports when nothing happens (jittered down to 3/4 of it).
const REPORT_EVERY: Duration = Duration::from_secs(300);

/// The loop: gather the facts, ask [`plan::next`], do it; until a stop.
async fn drive<N: Renewable, F: Future<Output = ()>>(
    node: &mut N,
    timing: Timing,
    mut forced: bool,
    watch: &mut Option<AddressWatch>,
    stop: &mut Stop<'_, F>,
    clock: impl Fn() -> OffsetDateTime,
) -> Result<(), ClientError> {
    // (count, when the last one failed, its jitter)
    let mut failed: Option<(u32, Instant, f64)> = None;
    let mut last_success: Option<Instant> = None;
    // Names the CA refused (outside the enrolling token's limits): not asked for again
    // until the addresses change once more; renewals keep the current names meanwhile.
    let mut refused: Option<Sans> = None;
    let mut next_report = Instant::now();
    loop {
        let now = clock();
        let look = node.look(refused.as_ref())?;
        // After `look`, so the report carries the renewal it planned.
        if Instant::now() >= next_report {
            node.report().await;
            next_report = Instant::now() + REPORT_EVERY.mul_f64(0.75 + renewal::jitter() / 4.0);
        }
        let facts = Facts {
            now,
            due: look.due,
            names_changed: look.wanted.is_some(),
            forced,
            failed: failed.map(|(count, at, jitter)| Failed {
                count,
                ago: at.elapsed(),
                jitter,
            }),
            since_success: last_success.map(|t| t.elapsed()),
            stop: stop.requested_now(),
        };
        let wait = match plan::next(&facts, &timing) {
            Action::Stop => return Ok(()),
            Action::Wait(wait, until) => {
                match until {
                    Until::Due => {
                        tracing::info!(at = %duration::timestamp(look.due), "next renewal planned");
                    }
                    Until::HoldOff => tracing::warn!(
                        "the new certificate is already due for renewal; waiting before renewing again"
                    ),
                    Until::Retry => {}
                }
                wait
            }
            Action::Renew(why) => {
                if why == Why::NamesChanged {
                    tracing::info!("the node's addresses changed; re-issuing with the new names");
                }
                let renewed = stop
                    .finish("the renewal under way", node.renew(look.wanted.clone()))
                    .await;
                // Whatever came of it, the CA hears about it.
                next_report = Instant::now();
                match renewed {
                    Ok(new) => {
                        tracing::info!(serial = %new.serial, not_after = %duration::timestamp(new.not_after), "renewed");
                        failed = None;
                        forced = false;
                        last_success = Some(Instant::now());
                    }
                    Err(e) if facts.names_changed && e.reason() == Reason::NameNotAllowed => {
                        tracing::warn!(error = %e, "the CA refused the node's new names; keeping the current ones");
                        node.failed(&e, clock());
                        refused = look.wanted;
                    }
                    Err(e) => {
                        let count = failed.map_or(1, |(n, _, _)| n.saturating_add(1));
                        let jitter = renewal::jitter();
                        let retry_in = renewal::backoff(
                            count - 1,
                            timing.retry_base,
                            timing.retry_cap,
                            jitter,
                        );
                        tracing::warn!(error = %e, retry_in = %duration::format(retry_in), "renewal failed; keeping the current certificate");
                        node.failed(&e, clock());
                        failed = Some((count, Instant::now(), jitter));
                    }
                }
                continue;
            }
        };
        let wait = wait.min(next_report.saturating_duration_since(Instant::now()));
        match sleep_or_wake(wait, watch, stop, node).await {
            Wake::Stop => return Ok(()),
            Wake::Addresses => {
                refused = None;
                next_report = Instant::now();
            }
            Wake::Due => {}
            Wake::Signal(Signal::Renew(why)) => {
                tracing::info!(%why, "the CA asks for a renewal now");
                forced = true;
            }
            Wake::Signal(Signal::TrustChanged { generation, renew }) => {
                tracing::info!(generation, renew, "the CA's trust changed");
                node.refresh_trust().await;
                forced |= renew;
                next_report = Instant::now();
            }
            Wake::Signal(Signal::Revoked(serials)) => {
                tracing::debug!(count = serials.len(), "revocations heard");
                node.revoked(&serials, clock());
            }
        }
    }
}

/// Why the agent woke up.
enum Wake {
    Due,
    Addresses,
    Stop,
    Signal(Signal),
}

/// Waits `wait`, or until the node's addresses change, the CA signals, or a stop request.
async fn sleep_or_wake<F: Future<Output = ()>, N: Renewable>(
    wait: Duration,
    watch: &mut Option<AddressWatch>,
    stop: &mut Stop<'_, F>,
    node: &mut N,
) -> Wake {
    let changed = async {
        match watch {
            Some(w) => w.changed().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = tokio::time::sleep(wait) => Wake::Due,
        () = changed => Wake::Addresses,
        signal = node.signal() => Wake::Signal(signal),
        () = stop.requested() => Wake::Stop,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::error::Invalid;

    pub(crate) fn node_leaf(ips: &[&str]) -> CertInfo {
        let now = OffsetDateTime::now_utc();
        CertInfo {
            serial: "0A0B".parse().unwrap(),
            identity: None,
            dns_names: vec!["node-1.example".into()],
            ip_addresses: ips.iter().map(|s| s.parse().unwrap()).collect(),
            not_before: now,
            not_after: now + time::Duration::days(30),
            is_ca: false,
            subject: String::new(),
            issuer: String::new(),
            public_key_der: vec![],
            server_auth: true,
            client_auth: false,
            access: dtca_pki::access::Access::Full,
            subject_key_id: None,
            authority_key_id: None,
        }
    }

    /// A node whose renewals follow a script, recording when (in the paused clock) each
    /// was attempted.
    struct Scripted {
        due: OffsetDateTime,
        /// Each attempt's outcome: `Some(next due)` succeeds, `None` fails.
        outcomes: VecDeque<Option<OffsetDateTime>>,
        attempts: Vec<Duration>,
        failures_recorded: usize,
        start: Instant,
        /// Signals from the CA, each delivered after its delay (paused clock).
        signals: VecDeque<(Duration, Signal)>,
        trust_refreshes: usize,
        reports: usize,
        revocations: usize,
    }

    impl Scripted {
        fn new(start: Instant, due: OffsetDateTime, outcomes: Vec<Option<OffsetDateTime>>) -> Self {
            Scripted {
                due,
                outcomes: outcomes.into(),
                attempts: Vec::new(),
                failures_recorded: 0,
                start,
                signals: VecDeque::new(),
                trust_refreshes: 0,
                reports: 0,
                revocations: 0,
            }
        }
    }

    impl Renewable for Scripted {
        fn look(&mut self, _refused: Option<&Sans>) -> Result<Look, ClientError> {
            Ok(Look {
                due: self.due,
                wanted: None,
            })
        }

        async fn renew(&mut self, _names: Option<Sans>) -> Result<CertInfo, ClientError> {
            self.attempts.push(self.start.elapsed());
            match self.outcomes.pop_front().flatten() {
                Some(next_due) => {
                    self.due = next_due;
                    Ok(node_leaf(&[]))
                }
                None => Err(Invalid::NoIdentity.into()),
            }
        }

        fn failed(&mut self, _error: &ClientError, _now: OffsetDateTime) {
            self.failures_recorded += 1;
        }

        async fn signal(&mut self) -> Signal {
            match self.signals.front() {
                Some((delay, _)) => {
                    tokio::time::sleep(*delay).await;
                    self.signals
                        .pop_front()
                        .map_or(Signal::Revoked(vec![]), |(_, s)| s)
                }
                None => std::future::pending().await,
            }
        }

        async fn refresh_trust(&mut self) {
            self.trust_refreshes += 1;
        }

        async fn report(&mut self) {
            self.reports += 1;
        }

        fn revoked(&mut self, serials: &[String], _now: OffsetDateTime) {
            self.revocations += serials.len();
        }
    }

    /// The loop on a paused clock: it waits for the planned point, retries a failing
    /// renewal on its growing back-off (never in a tight loop), goes back to waiting
    /// after a success, and a stop ends its wait at once.
    #[tokio::test(start_paused = true)]
    async fn the_loop_renews_when_due_backs_off_on_failure_and_stops_when_asked() {
        let start = Instant::now();
        let wall = OffsetDateTime::now_utc();
        let at = |s: i64| wall + time::Duration::seconds(s);
        let mut node = Scripted::new(start, at(100), vec![None, None, Some(at(100_000))]);
        let timing = Timing {
            retry_base: Duration::from_secs(10),
            retry_cap: Duration::from_secs(600),
        };
        let shutdown = std::pin::pin!(tokio::time::sleep(Duration::from_secs(5000)));
        let mut stop = Stop::new(shutdown);
        // The certificates' clock follows the paused one.
        let clock = || wall + (Instant::now() - start);
        drive(&mut node, timing, false, &mut None, &mut stop, clock)
            .await
            .unwrap();

        let s = |d: Duration| d.as_secs_f64();
        assert_eq!(node.attempts.len(), 3, "{:?}", node.attempts);
        assert_eq!(node.failures_recorded, 2);
        let (first, second, third) = (
            s(node.attempts[0]),
            s(node.attempts[1]),
            s(node.attempts[2]),
        );
        assert!((100.0..101.0).contains(&first), "renewed when due: {first}");
        // First back-off: 5-10 s; second: 10-20 s.
        assert!((5.0..=10.0).contains(&(second - first)), "{first} {second}");
        assert!(
            (10.0..=20.0).contains(&(third - second)),
            "{second} {third}"
        );
        // After the success it waited for the next planned point, and the stop ended
        // that wait when it came.
        assert_eq!(start.elapsed().as_secs(), 5000);
    }

    /// `--renew-now` renews at once, and only once.
    #[tokio::test(start_paused = true)]
    async fn a_forced_renewal_happens_at_once_and_once() {
        let start = Instant::now();
        let wall = OffsetDateTime::now_utc();
        let mut node = Scripted::new(
            start,
            wall + time::Duration::hours(1),
            vec![Some(wall + time::Duration::hours(2))],
        );
        let timing = Timing {
            retry_base: Duration::from_secs(10),
            retry_cap: Duration::from_secs(600),
        };
        let shutdown = std::pin::pin!(tokio::time::sleep(Duration::from_secs(60)));
        let mut stop = Stop::new(shutdown);
        let clock = || wall + (Instant::now() - start);
        drive(&mut node, timing, true, &mut None, &mut stop, clock)
            .await
            .unwrap();
        assert_eq!(node.attempts, vec![Duration::ZERO]);
    }

    /// The CA's signals: a renew-now renews at once (not at the planned point), a trust
    /// change refreshes the bundle and renews when asked to; the node reports at start,
    /// after each renewal and on its period.
    #[tokio::test(start_paused = true)]
    async fn signals_from_the_ca_renew_and_refresh_at_once() {
        let start = Instant::now();
        let wall = OffsetDateTime::now_utc();
        let far = wall + time::Duration::days(10);
        let mut node = Scripted::new(start, far, vec![Some(far), Some(far)]);
        node.signals = VecDeque::from([
            (Duration::from_secs(30), Signal::Renew("test".into())),
            (
                Duration::from_secs(30),
                Signal::TrustChanged {
                    generation: 2,
                    renew: false,
                },
            ),
            (
                Duration::from_secs(30),
                Signal::TrustChanged {
                    generation: 3,
                    renew: true,
                },
            ),
        ]);
        let timing = Timing {
            retry_base: Duration::from_secs(10),
            retry_cap: Duration::from_secs(600),
        };
        let shutdown = std::pin::pin!(tokio::time::sleep(Duration::from_secs(1000)));
        let mut stop = Stop::new(shutdown);
        let clock = || wall + (Instant::now() - start);
        drive(&mut node, timing, false, &mut None, &mut stop, clock)
            .await
            .unwrap();
        let at: Vec<u64> = node.attempts.iter().map(Duration::as_secs).collect();
        assert_eq!(at, vec![30, 90], "renewed at each signal that asks for it");
        assert_eq!(node.trust_refreshes, 2);
        // At start, after each renewal, then every 225-300 s: at least 2 + 3.
        assert!((5..=10).contains(&node.reports), "{} reports", node.reports);
    }

    #[tokio::test]
    async fn a_stop_while_idle_ends_the_wait_at_once() {
        let signal = std::pin::pin!(async {});
        let mut stop = Stop::new(signal);
        let mut idle = Scripted::new(Instant::now(), OffsetDateTime::now_utc(), vec![]);
        let wake = tokio::time::timeout(
            Duration::from_secs(5),
            sleep_or_wake(Duration::from_secs(3600), &mut None, &mut stop, &mut idle),
        )
        .await;
        assert!(matches!(wake, Ok(Wake::Stop)));
        // Seen once, it stays seen (the signal future is not polled again).
        assert!(stop.requested_now());
        assert!(matches!(
            sleep_or_wake(Duration::from_secs(3600), &mut None, &mut stop, &mut idle).await,
            Wake::Stop
        ));
    }

    #[test]
    fn the_planned_renewal_is_kept_for_the_same_certificate() {
        let tmp = tempfile::tempdir().unwrap();
        let mut state = ClientState {
            server: "x:1".into(),
            cluster: "c".into(),
            identity: "dtca://c/node/n".into(),
            key_type: Default::default(),
            enrolled_at: String::new(),
            extra_sans: vec![],
            default_sans: false,
            last_renewal: None,
            last_error: None,
            next_renewal: None,
            docker: None,
            failed_switch: None,
            token_policy: None,
            restart_without_slot: None,
            access: None,
        };
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        let mut leaf = CertInfo {
            dns_names: vec![],
            not_before: now,
            not_after: now + time::Duration::days(30),
            ..node_leaf(&[])
        };
        let first = state.planned_renewal(&leaf, tmp.path());
        assert!(first >= now + time::Duration::days(15) && first <= now + time::Duration::days(21));
        assert_eq!(state.planned_renewal(&leaf, tmp.path()), first);
        // Reloaded from disk: still the same point.
        let mut reloaded = ClientState::load(tmp.path()).unwrap();
        assert_eq!(reloaded.planned_renewal(&leaf, tmp.path()), first);
        // A new certificate gets a new point.
        leaf.serial = "0C0D".parse().unwrap();
        leaf.not_before = now + time::Duration::days(1);
        leaf.not_after = now + time::Duration::days(31);
        assert_ne!(state.planned_renewal(&leaf, tmp.path()), first);
    }
}
