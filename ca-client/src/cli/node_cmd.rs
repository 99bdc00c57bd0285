//! A node's `renew`, and what `enroll` and `renew` print: the result (text or JSON) and
//! the next step, as a command that runs as printed.

use std::path::Path;
use std::process::ExitCode;

use dtca_pki::duration;
use serde_json::{Value, json};

use super::settings;
use super::{FileConfig, RenewArgs};
use crate::agent::rotation::{self, Via};
use crate::enroll::Obtained;
use crate::error::ClientError;
use crate::lock::AgentLock;

pub(super) async fn renew_command(
    args: RenewArgs,
    file: &FileConfig,
) -> Result<ExitCode, ClientError> {
    let out = settings::out_dir(&args.out, file);
    let server = args.server.or_else(|| file.server.clone());
    let timeout = settings::duration_or(
        args.docker_timeout.as_deref(),
        file.docker_timeout.as_deref(),
        "60s",
        "--docker-timeout",
    )?;
    let (obtained, via) = rotation::renew_now(&out, server.as_deref(), timeout).await?;
    if args.json || file.json == Some(true) {
        println!("{}", result_json("renewed", &out, &obtained, Some(via)));
        return Ok(ExitCode::SUCCESS);
    }
    report("renewed", &out, &obtained);
    if let Some(d) = &obtained.state.docker {
        let how = match d.mode {
            crate::state::EngineMode::Guard => "served by the guard (no engine restart)",
            crate::state::EngineMode::Native => "rotated onto it",
        };
        println!("  engine:    {how}, serving mutual TLS on {}", d.listen);
    }
    if let Some(plan) = obtained.state.next_renewal_of(&obtained.info) {
        println!("  next:      renewal planned at {}", plan.at);
    }
    if let Via::Agent(pid) = via {
        println!("  by:        the running agent (pid {pid}), asked to renew now");
    }
    Ok(ExitCode::SUCCESS)
}

/// What `enroll` prints at the end: the result (text or JSON) and, for a node, how to
/// start its agent.
pub(super) fn enrolled(out: &Path, obtained: &Obtained, as_json: bool) {
    if as_json {
        println!("{}", result_json("enrolled", out, obtained, None));
        return;
    }
    report("enrolled", out, obtained);
    if let Some(d) = &obtained.state.docker {
        println!(
            "  engine:    switched to mutual TLS on {} (published as {}), {} mode{}",
            d.listen,
            d.advertise,
            d.mode,
            match d.mode {
                crate::state::EngineMode::Guard =>
                    ": the agent serves it in front of dockerd's socket",
                crate::state::EngineMode::Native => "",
            }
        );
        println!(
            "  operators: `ca-client login` gives a docker context for it (this node's own certificate is no docker client)"
        );
    }
    if obtained
        .info
        .identity
        .as_ref()
        .is_some_and(|i| i.role == dtca_pki::Role::Node)
    {
        agent_hint(out);
    }
}

/// `enroll` and `renew` as JSON: times RFC 3339, absent values null.
pub(super) fn result_json(what: &str, out: &Path, obtained: &Obtained, via: Option<Via>) -> Value {
    let info = &obtained.info;
    let state = &obtained.state;
    let mut names: Vec<String> = info.dns_names.clone();
    names.extend(info.ip_addresses.iter().map(ToString::to_string));
    let next = state
        .next_renewal_of(info)
        .and_then(|p| time::OffsetDateTime::from_unix_timestamp(p.at_unix).ok())
        .map(duration::rfc3339);
    json!({
        "result": what,
        "identity": info.identity.as_ref().map(|i| i.uri()),
        "cluster": state.cluster,
        "server": state.server,
        "serial": info.serial.to_string(),
        "names": names,
        "left_out": obtained.left_out,
        "not_before": duration::rfc3339(info.not_before),
        "not_after": duration::rfc3339(info.not_after),
        "state_dir": out.display().to_string(),
        "engine": state.docker.as_ref().map(|d| json!({
            "listen": d.listen.to_string(),
            "advertise": d.advertise.to_string(),
            "mode": d.mode.as_str(),
        })),
        "next_renewal": next,
        "renewed_by": via.map(|v| match v {
            Via::Here => "here",
            Via::Agent(_) => "agent",
        }),
        "agent_pid": via.and_then(|v| match v {
            Via::Agent(pid) => Some(pid),
            Via::Here => None,
        }),
        "agent_command": agent_command(out),
    })
}

/// The command that keeps the certificates in `out` fresh, as it runs from here.
fn agent_command(out: &Path) -> String {
    if out == Path::new(crate::state::DEFAULT_OUT) {
        "ca-client agent".to_string()
    } else {
        format!(
            "ca-client agent --state-dir {}",
            crate::operator::shell_quote(&out.display().to_string())
        )
    }
}

/// After `enroll`: how to start the agent, as commands that run as printed (the systemd
/// unit only where systemd runs and the unit is installed).
fn agent_hint(out: &Path) {
    if let Some(pid) = AgentLock::holder(out) {
        println!(
            "An agent already runs for {} (pid {pid}): it keeps the certificate fresh.",
            out.display()
        );
        return;
    }
    println!(
        "Next, keep it fresh (renewals, engine rotation): {}",
        agent_command(out)
    );
    let unit_installed = [
        "/etc/systemd/system",
        "/lib/systemd/system",
        "/usr/lib/systemd/system",
    ]
    .iter()
    .any(|d| Path::new(d).join("dtca-agent.service").exists());
    if out == Path::new(crate::state::DEFAULT_OUT)
        && Path::new("/run/systemd/system").exists()
        && unit_installed
    {
        println!("  or as a service: systemctl enable --now dtca-agent.service");
    }
}

/// What `enroll` and `renew` obtained, for people.
pub(super) fn report(what: &str, out: &Path, obtained: &Obtained) {
    let info = &obtained.info;
    let now = time::OffsetDateTime::now_utc();
    println!(
        "{what} as {} (serial {})",
        info.identity.as_ref().map(|i| i.uri()).unwrap_or_default(),
        info.serial
    );
    let mut names: Vec<String> = info.dns_names.clone();
    names.extend(info.ip_addresses.iter().map(ToString::to_string));
    if !names.is_empty() {
        println!("  names:     {}", names.join(" "));
    }
    if !obtained.left_out.is_empty() {
        println!(
            "  left out:  {} (names of this host the token does not allow)",
            obtained.left_out.join(" ")
        );
    }
    println!(
        "  valid to:  {} ({} left)",
        duration::timestamp(info.not_after),
        duration::human(info.seconds_left(now))
    );
    println!("  files:     {}/{{ca.pem,cert.pem,key.pem}}", out.display());
}
