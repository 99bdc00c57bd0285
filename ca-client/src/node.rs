//! `ca-client enroll --docker`: enroll, then switch the engine to mutual TLS.

use std::net::IpAddr;

use dtca_common::bundle::{Bundle, Layout};
use dtca_common::tls::ServerAddr;
use dtca_pki::duration;
use dtca_pki::policy::check_host_name;
use time::OffsetDateTime;
use tokio::signal::unix::{SignalKind, signal};

use crate::ca;
use crate::docker::{self, DockerOptions, backup_dir};
use crate::enroll::{self, EnrollOptions, Obtained};
use crate::error::ClientError;
use crate::sans::Sans;
use crate::state::{ClientState, FailedSwitch};

/// Enrolls and switches the engine. The engine and its files are checked before the CA
/// is contacted, so a node that cannot be switched does not spend a token.
///
/// A node that is already enrolled in `--out` (`current`, from [`current_enrollment`]) switches
/// with a renewal of that certificate and needs no token: that is how a switch that failed
/// and rolled back is tried again, and a token is never spent twice on one node.
///
/// SIGTERM and ctrl-c wait until the switch is done or rolled back: an engine is never
/// left half-switched by a stop request.
///
/// # Errors
/// [`ClientError`]; when the switch fails after enrollment, the credentials are still
/// written to `--out` (the certificate was issued, and the failure is recorded for
/// `status`) and the engine is back as it was.
pub async fn enroll_docker(
    opts: &EnrollOptions,
    docker_opts: &DockerOptions,
    current: Option<(ClientState, Bundle)>,
) -> Result<Obtained, ClientError> {
    let _held = HeldSignals::hold();
    let backups = backup_dir(&opts.out);
    if let Some(how) = docker::recover_interrupted(&backups, docker_opts.timeout).await? {
        tracing::warn!(%how, "rolled back an interrupted docker switch first");
    }
    let pre = docker::preflight(docker_opts).await?;
    tracing::info!(
        engine = %pre.info.version,
        swarm = pre.info.swarm,
        config = %pre.config.display(),
        flag_hosts = ?pre.flag_hosts,
        "engine found"
    );
    println!(
        "engine: dockerd {} started by {} ({}); config {}; restart with `{}`",
        pre.info.version,
        pre.launcher.kind,
        pre.launcher.evidence,
        pre.config.display(),
        pre.restart
    );
    if docker_opts.mode == crate::state::EngineMode::Guard {
        docker::guarded::check_agent_start(&opts.out, docker_opts.agent_start.as_deref())?;
    }
    let opts = &with_engine_names(opts, docker_opts);
    let mut obtained = match current {
        Some((state, current)) => renew_enrolled(opts, state, current).await?,
        None => enroll::obtain(opts).await?,
    };
    let handoff = docker::guarded::Handoff {
        out: &opts.out,
        state: &obtained.state,
    };
    match docker::switch(docker_opts, &pre, &obtained.bundle, &backups, &handoff).await {
        Ok(state) => {
            obtained.state.docker = Some(state.clone());
            obtained.state.last_error = None;
            obtained.state.failed_switch = None;
            enroll::write(&opts.out, &obtained.bundle, &obtained.state)?;
            let addr = ServerAddr::parse(&obtained.state.server)?;
            if let Err(e) = ca::report_engine(&addr, &obtained.bundle, &state.advertise).await {
                tracing::warn!(error = %e, "could not report the engine address to the CA");
            }
            Ok(obtained)
        }
        Err(e) => {
            // The certificate exists; keep it so the node is at least enrolled, and say
            // what failed so `status` shows it and a plain `enroll --docker` retries.
            let at = duration::timestamp(OffsetDateTime::now_utc());
            obtained.state.last_error = Some(format!(
                "{at}: docker switch failed (retry with `ca-client enroll --docker`, no token needed): {e}"
            ));
            let (step, rolled_back) = match e.switch_step() {
                Some((step, rolled_back)) => (Some(step), rolled_back),
                None => (None, true),
            };
            obtained.state.failed_switch = Some(FailedSwitch {
                at,
                step,
                rolled_back,
                error: e.to_string(),
                flags: Some(docker_opts.given.clone()),
            });
            enroll::write(&opts.out, &obtained.bundle, &obtained.state)?;
            Err(e)
        }
    }
}

/// `opts` with the engine's own addresses (listen, advertise) among the given names: the
/// certificate must name the address operators will use, or their docker CLI refuses
/// the engine. (Not `localhost`: no node certificate names it, and the engine's own
/// checks dial the address, not the name.)
pub fn with_engine_names(opts: &EnrollOptions, docker_opts: &DockerOptions) -> EnrollOptions {
    let mut opts = opts.clone();
    for addr in std::iter::once(&docker_opts.listen).chain(docker_opts.advertise.as_ref()) {
        if let Some(host) = addr.named_host()
            && (addr.ip().is_some() || check_host_name(host).is_ok())
            && !opts.extra_sans.iter().any(|s| s == host)
        {
            opts.extra_sans.push(host.to_string());
        }
    }
    opts
}

/// The names a renewal of `leaf` for the switch asks for: its own plus `extra`.
pub fn renewal_names(leaf: &dtca_pki::inspect::CertInfo, extra: &[String]) -> Sans {
    let mut sans = Sans {
        dns: leaf.dns_names.clone(),
        ips: leaf.ip_addresses.clone(),
    };
    for name in extra {
        match name.parse::<IpAddr>() {
            Ok(ip) if !sans.ips.contains(&ip) => sans.ips.push(ip),
            Ok(_) => {}
            Err(_) if !sans.dns.contains(name) => sans.dns.push(name.clone()),
            Err(_) => {}
        }
    }
    sans
}

/// The enrollment in `out` when there is one with an unexpired certificate.
pub fn current_enrollment(out: &std::path::Path) -> Option<(ClientState, Bundle)> {
    let state = ClientState::load(out).ok()?;
    let current = Bundle::load(out, Layout::CLIENT).ok()?;
    let leaf = current.leaf().ok()?;
    (leaf.not_after > OffsetDateTime::now_utc()).then_some((state, current))
}

/// The node's current enrollment, renewed (new key) with its names plus `--san` and the
/// engine's address.
async fn renew_enrolled(
    opts: &EnrollOptions,
    mut state: ClientState,
    current: Bundle,
) -> Result<Obtained, ClientError> {
    let leaf = current.leaf()?;
    tracing::info!(
        identity = %state.identity,
        serial = %leaf.serial,
        "already enrolled: switching with a renewal of the current certificate"
    );
    let sans = renewal_names(&leaf, &opts.extra_sans);
    for name in &opts.extra_sans {
        if !state.extra_sans.contains(name) {
            state.extra_sans.push(name.clone());
        }
    }
    let server = if opts.server.is_empty() {
        state.server.clone()
    } else {
        opts.server.clone()
    };
    let addr = ServerAddr::parse(&server)?;
    let bundle = enroll::renew_with(&addr, &current, &sans, state.key_type).await?;
    state.server = addr.to_string();
    state.last_renewal = Some(duration::timestamp(OffsetDateTime::now_utc()));
    Ok(Obtained {
        info: bundle.leaf()?,
        bundle,
        state,
        left_out: Vec::new(),
    })
}

/// While alive, SIGTERM and SIGINT no longer end the process (tokio takes them over);
/// a stop request is logged and the switch goes on to its end.
struct HeldSignals {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl HeldSignals {
    fn hold() -> HeldSignals {
        // Registered here, before any work: a signal from now on is held.
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return HeldSignals { task: None };
        };
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                tracing::warn!(
                    "stop requested: finishing the docker switch (or its rollback) first"
                );
            }
        });
        HeldSignals { task: Some(task) }
    }
}

impl Drop for HeldSignals {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
