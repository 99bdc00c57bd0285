//! `ca-client agent`: keeps a node's certificate fresh with no one watching.
//!
//! It sleeps until a random point between 50 % and 70 % of the certificate's life (drawn
//! once per certificate and recorded, so a restart does not move it), renews with a new
//! key, puts the new pair into the Docker engine (write, restart, verify, fall back), and
//! records what it did for `ca-client status`. While the CA is unreachable it keeps the
//! current pair and retries with capped exponential backoff. When the node's addresses
//! change (it listens to the kernel's address notifications, so it does not wake up
//! otherwise) and no longer match the certificate, it re-issues early with the new names.
//! SIGTERM stops it between steps.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dtca_common::bundle::{Bundle, Layout};
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
    /// First retry delay after a failure.
    pub retry_base: Duration,
    /// Longest retry delay.
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

/// Runs until `shutdown` completes.
///
/// # Errors
/// [`ClientError`] only for problems that retrying cannot fix (no enrollment in `out`,
/// unreadable credentials); everything else is logged, recorded and retried.
pub async fn run(
    opts: AgentOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ClientError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut state = ClientState::load(&opts.out)?;
    Bundle::load(&opts.out, Layout::CLIENT)?;
    tracing::info!(out = %opts.out.display(), identity = %state.identity, "agent started");

    if let Some(how) =
        docker::recover_interrupted(&backup_dir(&opts.out), opts.docker_timeout).await?
    {
        tracing::warn!(%how, "rolled back an interrupted docker switch");
    }
    if let Some(d) = &state.docker
        && let Err(e) = docker::reconcile(d, opts.docker_timeout).await
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
            match sleep_or_wake(wait, &mut watch, &mut shutdown).await {
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
            match renew_once(&opts, &mut state, &bundle, wanted.clone()).await {
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
                    let wait = renewal::backoff(failures - 1, opts.retry_base, opts.retry_cap);
                    tracing::warn!(error = %e, retry_in = %duration::format(wait), "renewal failed; keeping the current certificate");
                    state.last_error = Some(format!(
                        "{}: {e}",
                        duration::timestamp(OffsetDateTime::now_utc())
                    ));
                    let _ = state.save(&opts.out);
                    match sleep_or_wake(wait, &mut watch, &mut shutdown).await {
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
        match sleep_or_wake(wait, &mut watch, &mut shutdown).await {
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
    if wanted.same_as(&leaf.dns_names, &leaf.ip_addresses) || refused == Some(&wanted) {
        return None;
    }
    Some(wanted)
}

async fn sleep_or_wake(
    wait: Duration,
    watch: &mut Option<AddressWatch>,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
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
        () = shutdown.as_mut() => Wake::Stop,
    }
}

/// Where the docker switch keeps its backups, inside the credential directory.
pub fn backup_dir(out: &Path) -> PathBuf {
    out.join("docker-backup")
}

/// Kernel notifications of address changes (rtnetlink), so the agent learns of a new
/// address without polling.
struct AddressWatch {
    socket: netlink_sys::TokioSocket,
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
        Some(AddressWatch { socket })
    }

    /// Resolves after an address change, once the burst of notifications has settled.
    async fn changed(&mut self) {
        use netlink_sys::AsyncSocketExt;
        if self.socket.recv_from_full().await.is_err() {
            std::future::pending::<()>().await;
        }
        // A change comes as several messages; let them settle, then drain them.
        tokio::time::sleep(Duration::from_secs(2)).await;
        while let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(10), self.socket.recv_from_full()).await
        {
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            serial: "0A0B".parse().unwrap(),
            identity: None,
            dns_names: vec![],
            ip_addresses: vec![],
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
