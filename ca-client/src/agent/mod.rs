//! `ca-client agent`: keeps a node's certificate fresh with no one watching.
//!
//! It sleeps until a random point between 50 % and 70 % of the certificate's life (drawn
//! once per certificate and recorded, so a restart does not move it), renews with a new
//! key, puts the new pair into the Docker engine (write, restart, verify, fall back), and
//! records what it did for `ca-client status`. While the CA is unreachable it keeps the
//! current pair and retries with capped exponential backoff, jittered so a fleet does not
//! retry in step. When the node's addresses change (it listens to the kernel's address
//! notifications, so it does not wake up otherwise) and no longer match the certificate,
//! it re-issues early with the new names; container and virtual-network interfaces
//! (`docker0`, a new Docker network's bridge) do not count.
//!
//! SIGTERM races only the agent's waits: while idle it stops at once; during a renewal it
//! lets the rotation finish (or roll back) first, so the engine never keeps serving a
//! certificate the node's files do not hold.

use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Waker};
use std::time::Duration;

use dtca_common::bundle::{Bundle, Layout};
use dtca_common::net;
use dtca_common::tls::ServerAddr;
use dtca_pki::inspect::CertInfo;
use dtca_pki::{duration, renewal};
use time::OffsetDateTime;

use crate::docker;
use crate::enroll::{self, renew_with};
use crate::error::ClientError;
use crate::sans::Sans;
use crate::state::{ClientState, PlannedRenewal};

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
}

impl AgentOptions {
    /// Defaults for `out`.
    pub fn new(out: PathBuf) -> Self {
        AgentOptions {
            out,
            server: None,
            retry_base: Duration::from_secs(5),
            retry_cap: Duration::from_secs(600),
            docker_timeout: Duration::from_secs(60),
            renew_now: false,
        }
    }
}

/// Why the agent woke up.
enum Wake {
    Due,
    Addresses,
    Stop,
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
    let mut state = ClientState::load(&opts.out)?;
    Bundle::load(&opts.out, Layout::CLIENT)?;
    tracing::info!(out = %opts.out.display(), identity = %state.identity, "agent started");

    let recovered = stop
        .finish(
            "the roll-back of an interrupted docker switch",
            docker::recover_interrupted(&backup_dir(&opts.out), opts.docker_timeout),
        )
        .await?;
    if let Some(how) = recovered {
        tracing::warn!(%how, "rolled back an interrupted docker switch");
    }
    if let Some(d) = &state.docker
        && let Err(e) = stop
            .finish(
                "bringing the engine onto the current certificate",
                docker::reconcile(d, opts.docker_timeout),
            )
            .await
    {
        tracing::error!(error = %e, "the engine does not serve the current certificate");
    }

    let mut watch = AddressWatch::new();
    let mut failures: u32 = 0;
    // Names the CA refused (outside the enrolling token's limits): not asked for again
    // until the addresses change once more; renewals keep the current names meanwhile.
    let mut refused: Option<Sans> = None;
    // When the certificate just obtained is already due (its issuer expires soon, say),
    // renewals are spaced by the retry cap instead of running back to back.
    let mut last_success: Option<std::time::Instant> = None;
    let mut force = opts.renew_now;
    loop {
        if stop.requested_now() {
            break;
        }
        let bundle = Bundle::load(&opts.out, Layout::CLIENT)?;
        let leaf = bundle.leaf()?;
        let now = OffsetDateTime::now_utc();
        let due = planned(&mut state, &leaf, &opts.out);
        let wanted = wanted_names(&state, &leaf, refused.as_ref());
        let names_changed = wanted.is_some();
        let too_soon = last_success.is_some_and(|t| t.elapsed() < opts.retry_cap);
        if now >= due && !force && !names_changed && failures == 0 && too_soon {
            tracing::warn!(
                "the new certificate is already due for renewal; waiting before renewing again"
            );
            let wait = opts
                .retry_cap
                .saturating_sub(last_success.map(|t| t.elapsed()).unwrap_or_default());
            match sleep_or_wake(wait, &mut watch, &mut stop).await {
                Wake::Stop => break,
                Wake::Addresses => refused = None,
                Wake::Due => {}
            }
            last_success = None;
            continue;
        }
        if force || names_changed || now >= due || failures > 0 {
            if names_changed {
                tracing::info!("the node's addresses changed; re-issuing with the new names");
            }
            let renewed = stop
                .finish(
                    "the renewal under way",
                    renew_once(&opts, &mut state, &bundle, wanted.clone()),
                )
                .await;
            match renewed {
                Ok(new) => {
                    tracing::info!(serial = %new.serial, not_after = %duration::timestamp(new.not_after), "renewed");
                    failures = 0;
                    force = false;
                    last_success = Some(std::time::Instant::now());
                    continue;
                }
                Err(e) if names_changed && e.reason() == dtca_common::Reason::NameNotAllowed => {
                    tracing::warn!(error = %e, "the CA refused the node's new names; keeping the current ones");
                    state.last_error = Some(format!(
                        "{}: {e}",
                        duration::timestamp(OffsetDateTime::now_utc())
                    ));
                    let _ = state.save(&opts.out);
                    refused = wanted;
                    continue;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let wait = renewal::backoff(
                        failures - 1,
                        opts.retry_base,
                        opts.retry_cap,
                        renewal::jitter(),
                    );
                    tracing::warn!(error = %e, retry_in = %duration::format(wait), "renewal failed; keeping the current certificate");
                    state.last_error = Some(format!(
                        "{}: {e}",
                        duration::timestamp(OffsetDateTime::now_utc())
                    ));
                    let _ = state.save(&opts.out);
                    match sleep_or_wake(wait, &mut watch, &mut stop).await {
                        Wake::Stop => break,
                        Wake::Addresses => refused = None,
                        Wake::Due => {}
                    }
                    continue;
                }
            }
        }
        let wait: Duration = (due - now).try_into().unwrap_or(Duration::ZERO);
        tracing::info!(at = %duration::timestamp(due), "next renewal planned");
        match sleep_or_wake(wait, &mut watch, &mut stop).await {
            Wake::Stop => break,
            Wake::Addresses => refused = None,
            Wake::Due => {}
        }
    }
    tracing::info!("agent stopped");
    Ok(())
}

/// One renewal, applied to the engine when this node switched it.
async fn renew_once(
    opts: &AgentOptions,
    state: &mut ClientState,
    current: &Bundle,
    names: Option<Sans>,
) -> Result<CertInfo, ClientError> {
    let leaf = current.leaf()?;
    let sans = names.unwrap_or(Sans {
        dns: leaf.dns_names.clone(),
        ips: leaf.ip_addresses.clone(),
    });
    let addr = ServerAddr::parse(opts.server.as_deref().unwrap_or(&state.server))?;
    let new = renew_with(&addr, current, &sans, state.key_type).await?;
    if let Some(d) = &state.docker {
        docker::rotate(d, &new, opts.docker_timeout).await?;
    }
    let info = new.leaf()?;
    state.last_renewal = Some(duration::timestamp(OffsetDateTime::now_utc()));
    state.last_error = None;
    state.next_renewal = None;
    enroll::write(&opts.out, &new, state)?;
    if let Some(d) = &state.docker
        && let Err(e) = crate::node::report_engine(&addr, &new, &d.advertise).await
    {
        tracing::warn!(error = %e, "could not report the engine address to the CA");
    }
    Ok(info)
}

/// The planned renewal of `leaf`: recorded when it is for this certificate, else drawn
/// now (50-70 % of its life) and recorded.
fn planned(state: &mut ClientState, leaf: &CertInfo, out: &Path) -> OffsetDateTime {
    let serial = leaf.serial.to_string();
    if let Some(plan) = &state.next_renewal
        && plan.serial == serial
        && let Ok(at) = OffsetDateTime::from_unix_timestamp(plan.at_unix)
    {
        return at;
    }
    let drawn = renewal::renew_at_issued(leaf.not_before, leaf.not_after, renewal::jitter());
    // Whole seconds, as recorded, so the plan reads back the same.
    let at = OffsetDateTime::from_unix_timestamp(drawn.unix_timestamp()).unwrap_or(drawn);
    state.next_renewal = Some(PlannedRenewal {
        serial,
        at: duration::timestamp(at),
        at_unix: at.unix_timestamp(),
    });
    if let Err(e) = state.save(out) {
        tracing::warn!(error = %e, "cannot record the planned renewal");
    }
    at
}

/// The names the certificate should carry now, when they differ from what it carries
/// (only for nodes that use the detected names).
fn wanted_names(state: &ClientState, leaf: &CertInfo, refused: Option<&Sans>) -> Option<Sans> {
    let is_node = leaf
        .identity
        .as_ref()
        .is_some_and(|i| i.role == dtca_pki::Role::Node);
    if !state.default_sans || !is_node {
        return None;
    }
    let wanted = Sans::collect(&state.extra_sans, true).ok()?;
    differs(wanted, leaf, &net::Addresses::now().plumbing, refused)
}

/// `wanted` when it names something `leaf` does not (or the other way round), leaving out
/// addresses on container and virtual-network interfaces (`ignored`), and the CA did not
/// just refuse it.
fn differs(
    wanted: Sans,
    leaf: &CertInfo,
    ignored: &[IpAddr],
    refused: Option<&Sans>,
) -> Option<Sans> {
    if wanted.same_as(&leaf.dns_names, &leaf.ip_addresses, ignored) || refused == Some(&wanted) {
        return None;
    }
    Some(wanted)
}

/// Waits for the renewal to be due, the node's addresses to change, or a stop request.
async fn sleep_or_wake<F: Future<Output = ()>>(
    wait: Duration,
    watch: &mut Option<AddressWatch>,
    stop: &mut Stop<'_, F>,
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
        () = stop.requested() => Wake::Stop,
    }
}

/// The shutdown future, polled so that a stop request ends the agent's waits at once but
/// its work (a renewal, a rotation of the engine) only after that work is done.
struct Stop<'a, F> {
    signal: Pin<&'a mut F>,
    /// The signal has completed (an `async fn` must not be polled again after that).
    seen: bool,
}

impl<'a, F: Future<Output = ()>> Stop<'a, F> {
    fn new(signal: Pin<&'a mut F>) -> Self {
        Stop {
            signal,
            seen: false,
        }
    }

    /// Resolves once a stop is requested; at once when one was.
    async fn requested(&mut self) {
        if !self.seen {
            self.signal.as_mut().await;
            self.seen = true;
        }
    }

    /// Whether a stop has been requested, without waiting.
    fn requested_now(&mut self) -> bool {
        if !self.seen {
            let mut cx = Context::from_waker(Waker::noop());
            self.seen = self.signal.as_mut().poll(&mut cx).is_ready();
        }
        self.seen
    }

    /// Runs `work` to its end. A stop requested meanwhile is logged (`what` is finishing)
    /// and takes effect afterwards, at the agent's next wait.
    async fn finish<T>(&mut self, what: &str, work: impl Future<Output = T>) -> T {
        let mut work = std::pin::pin!(work);
        if !self.seen {
            tokio::select! {
                out = &mut work => return out,
                () = self.requested() => {
                    tracing::info!("stop requested; finishing {what} before stopping");
                }
            }
        }
        work.await
    }
}

/// Where the docker switch keeps its backups, inside the credential directory.
pub fn backup_dir(out: &Path) -> PathBuf {
    out.join("docker-backup")
}

/// Kernel notifications of address changes (rtnetlink), so the agent learns of a new
/// address without polling. Only changes to the node's own addresses count: Docker
/// creating a network (a `br-…` bridge, `veth` links) is not one.
struct AddressWatch {
    socket: netlink_sys::TokioSocket,
    /// The node's addresses ([`net::addresses`]) when last reported.
    seen: Vec<IpAddr>,
}

impl AddressWatch {
    const RTMGRP_IPV4_IFADDR: u32 = 0x10;
    const RTMGRP_IPV6_IFADDR: u32 = 0x100;

    fn new() -> Option<Self> {
        use netlink_sys::AsyncSocket;
        let mut socket =
            netlink_sys::TokioSocket::new(netlink_sys::protocols::NETLINK_ROUTE).ok()?;
        socket
            .socket_mut()
            .bind(&netlink_sys::SocketAddr::new(
                0,
                Self::RTMGRP_IPV4_IFADDR | Self::RTMGRP_IPV6_IFADDR,
            ))
            .ok()?;
        Some(AddressWatch {
            socket,
            seen: net::addresses(),
        })
    }

    /// Resolves after the node's addresses changed, once the burst of notifications has
    /// settled.
    async fn changed(&mut self) {
        use netlink_sys::AsyncSocketExt;
        loop {
            if self.socket.recv_from_full().await.is_err() {
                std::future::pending::<()>().await;
            }
            // A change comes as several messages; let them settle, then drain them.
            tokio::time::sleep(Duration::from_secs(2)).await;
            while let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(10), self.socket.recv_from_full()).await
            {
            }
            let now = net::addresses();
            if now != self.seen {
                self.seen = now;
                return;
            }
            tracing::debug!("address change on container or virtual-network interfaces only");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_leaf(ips: &[&str]) -> CertInfo {
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
            client_auth: true,
            subject_key_id: None,
            authority_key_id: None,
        }
    }

    /// Regression: a new Docker network (or `docker0`'s address, in a certificate issued
    /// before bridge addresses were left out) made the agent re-issue and restart the
    /// engine.
    #[test]
    fn addresses_on_container_bridges_do_not_cause_a_re_issue() {
        let wanted = Sans::collect(&["node-1.example".into(), "10.0.0.5".into()], false).unwrap();
        let bridges: Vec<IpAddr> = vec!["172.17.0.1".parse().unwrap()];
        let old = node_leaf(&["10.0.0.5", "172.17.0.1"]);
        assert_eq!(differs(wanted.clone(), &old, &bridges, None), None);
        assert_eq!(
            differs(wanted.clone(), &node_leaf(&["10.0.0.5"]), &bridges, None),
            None
        );
        // A real change still re-issues, and the new names leave the bridge out.
        let moved = node_leaf(&["10.0.0.6", "172.17.0.1"]);
        assert_eq!(
            differs(wanted.clone(), &moved, &bridges, None),
            Some(wanted.clone())
        );
        // Unless the CA just refused those names.
        assert_eq!(
            differs(wanted.clone(), &moved, &bridges, Some(&wanted)),
            None
        );
    }

    #[tokio::test]
    async fn a_stop_while_idle_ends_the_wait_at_once() {
        let signal = std::pin::pin!(async {});
        let mut stop = Stop::new(signal);
        let wake = tokio::time::timeout(
            Duration::from_secs(5),
            sleep_or_wake(Duration::from_secs(3600), &mut None, &mut stop),
        )
        .await;
        assert!(matches!(wake, Ok(Wake::Stop)));
        // Seen once, it stays seen (the signal future is not polled again).
        assert!(stop.requested_now());
        assert!(matches!(
            sleep_or_wake(Duration::from_secs(3600), &mut None, &mut stop).await,
            Wake::Stop
        ));
    }

    /// Regression: SIGTERM during a rotation ended the agent mid restart/verify, leaving
    /// the engine on a certificate the node's files did not hold.
    #[tokio::test]
    async fn a_stop_during_work_lets_the_work_finish() {
        let signal = std::pin::pin!(async {});
        let mut stop = Stop::new(signal);
        let started = std::time::Instant::now();
        let out = stop
            .finish("the test work", async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                42
            })
            .await;
        assert_eq!(out, 42);
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(stop.requested_now());
    }

    #[tokio::test]
    async fn the_signal_is_armed_before_any_work() {
        // `wait_for_signal` installs its handlers when first polled; until then SIGTERM
        // would kill the process.
        let armed = std::cell::Cell::new(false);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let signal = std::pin::pin!(async {
            armed.set(true);
            let _ = rx.await;
        });
        let mut stop = Stop::new(signal);
        assert!(!stop.requested_now());
        assert!(armed.get());
        tx.send(()).unwrap();
        assert!(stop.requested_now());
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
        };
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        let mut leaf = CertInfo {
            dns_names: vec![],
            not_before: now,
            not_after: now + time::Duration::days(30),
            ..node_leaf(&[])
        };
        let first = planned(&mut state, &leaf, tmp.path());
        assert!(first >= now + time::Duration::days(15) && first <= now + time::Duration::days(21));
        assert_eq!(planned(&mut state, &leaf, tmp.path()), first);
        // Reloaded from disk: still the same point.
        let mut reloaded = ClientState::load(tmp.path()).unwrap();
        assert_eq!(planned(&mut reloaded, &leaf, tmp.path()), first);
        // A new certificate gets a new point.
        leaf.serial = "0C0D".parse().unwrap();
        leaf.not_before = now + time::Duration::days(1);
        leaf.not_after = now + time::Duration::days(31);
        assert_ne!(planned(&mut state, &leaf, tmp.path()), first);
    }
}
