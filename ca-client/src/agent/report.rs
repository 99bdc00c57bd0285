//! What the agent reports about its node (the agent channel's `Report`): the certificate in
//! use, how the engine is served and whether it answers, plain listeners left, swarm role,
//! versions, addresses, the last rotation and error, and the roots the node trusts.

use dtca_common::bundle::Bundle;
use dtca_common::net;
use dtca_pki::token::RootDigest;
use dtca_proto::v1;
use time::OffsetDateTime;

use crate::docker::{self, daemon_json, engine};
use crate::state::{ClientState, DockerState};

/// The node's state now, as the agent sees it.
pub(super) async fn gather(
    state: &ClientState,
    bundle: &Bundle,
    out: &std::path::Path,
) -> v1::AgentReport {
    let serial = bundle
        .leaf()
        .map(|l| l.serial.to_string())
        .unwrap_or_default();
    let mut report = v1::AgentReport {
        serial,
        mode: "none".into(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        addresses: net::addresses().iter().map(ToString::to_string).collect(),
        last_rotation_unix: state
            .last_renewal
            .as_deref()
            .and_then(|t| {
                OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            })
            .map_or(0, OffsetDateTime::unix_timestamp),
        next_renewal_unix: state.next_renewal.as_ref().map_or(0, |p| p.at_unix),
        last_error: state.last_error.clone().unwrap_or_default(),
        trusted_roots: bundle
            .roots
            .iter()
            .map(|r| RootDigest::of(r).to_string())
            .collect(),
        ..Default::default()
    };
    if let Some(d) = &state.docker {
        engine_facts(d, out, &mut report).await;
    }
    report
}

/// How the switched engine answers: its socket (version, swarm role), the certificate it
/// serves, and any plain TCP address its daemon.json still lists.
async fn engine_facts(d: &DockerState, out: &std::path::Path, report: &mut v1::AgentReport) {
    report.mode = d.mode.as_str().into();
    match engine::info_unix(&d.socket).await {
        Ok(info) => {
            report.engine_healthy = true;
            report.engine_version = info.version;
            report.swarm_role = match (info.swarm, info.manager) {
                (true, true) => "manager",
                (true, false) => "worker",
                (false, _) => "none",
            }
            .into();
        }
        Err(e) => {
            report.engine_healthy = false;
            report.engine_error = e.to_string();
        }
    }
    let config = std::fs::read_to_string(&d.config).unwrap_or_default();
    if !daemon_json::tlsverify_of(&config) {
        report.plain_listeners = daemon_json::tcp_hosts(&daemon_json::hosts_of(&config))
            .iter()
            .map(ToString::to_string)
            .collect();
    }
    if report.engine_healthy
        && let Ok(current) = docker::served_pair(d, out)
        && let (Some(name), Ok(addr)) = (
            docker::tls_name(&current),
            engine::dial_addr(&d.listen).await,
        )
    {
        let served = engine::probe_tls(addr, &name, &current.roots, None)
            .await
            .ok()
            .and_then(|p| p.served);
        let expected = current.leaf().ok().map(|l| l.serial);
        if served != expected {
            report.engine_healthy = false;
            report.engine_error = match served {
                Some(s) => format!("the engine serves certificate {s}, not the current one"),
                None => format!("no TLS answer at {}", d.listen),
            };
        }
    }
}
