//! `ca-client doctor`: read-only checks of a node, each OK, WARN or FAIL with the fix in
//! one line. Nothing is written and nothing is renewed; the CA is asked only for its
//! trust bundle and CRL (which also tell its clock and this certificate's revocation).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use dtca_common::bundle::{Bundle, Layout};
use dtca_common::endpoint::EngineAddr;
use dtca_common::tls::ServerAddr;
use dtca_pki::duration;
use dtca_pki::inspect::CertInfo;
use serde::Serialize;
use time::OffsetDateTime;

use crate::docker::{self, daemon_json, engine, launcher};
use crate::state::ClientState;
use crate::state::EngineMode;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

/// One check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// How it came out.
    pub level: Level,
    /// What was found.
    pub detail: String,
    /// What to do about it (WARN and FAIL; null for OK).
    pub fix: Option<String>,
}

/// Every check, in order.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// No enrollment in the credential directory.
    pub missing: bool,
    /// The checks.
    pub checks: Vec<Check>,
}

impl Report {
    fn add(&mut self, name: &'static str, level: Level, detail: String, fix: Option<String>) {
        self.checks.push(Check {
            name,
            level,
            detail,
            fix,
        });
    }

    fn ok(&mut self, name: &'static str, detail: String) {
        self.add(name, Level::Ok, detail, None);
    }

    fn warn(&mut self, name: &'static str, detail: String, fix: impl Into<String>) {
        self.add(name, Level::Warn, detail, Some(fix.into()));
    }

    fn fail(&mut self, name: &'static str, detail: String, fix: impl Into<String>) {
        self.add(name, Level::Fail, detail, Some(fix.into()));
    }

    /// The worst level found.
    pub fn worst(&self) -> Level {
        self.checks
            .iter()
            .map(|c| c.level)
            .max()
            .unwrap_or(Level::Ok)
    }

    /// As `check`: 0 all OK, 1 a warning, 2 a failure, 3 no enrollment.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match (self.missing, self.worst()) {
            (true, _) => 3,
            (false, Level::Ok) => 0,
            (false, Level::Warn) => 1,
            (false, Level::Fail) => 2,
        })
    }

    /// One line per check, its fix on the next.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let level = match c.level {
                Level::Ok => "OK  ",
                Level::Warn => "WARN",
                Level::Fail => "FAIL",
            };
            out.push_str(&format!("{level} {:<12} {}\n", c.name, c.detail));
            if let Some(fix) = &c.fix {
                out.push_str(&format!("     {:<12} fix: {fix}\n", ""));
            }
        }
        out
    }
}

/// How long a network check may take.
const NET_TIMEOUT: Duration = Duration::from_secs(5);
/// Clock skew beyond this is worth a warning.
const SKEW_WARN: i64 = 30;

/// Runs every check on the enrollment in `out`.
pub async fn doctor(out: &Path, server: Option<&str>, warn_within: Duration) -> Report {
    let mut r = Report {
        missing: false,
        checks: Vec::new(),
    };
    let now = OffsetDateTime::now_utc();
    let loaded = ClientState::load(out).and_then(|s| {
        Bundle::load(out, Layout::CLIENT)
            .map_err(Into::into)
            .map(|b| (s, b))
    });
    let (state, bundle, leaf) = match loaded.and_then(|(s, b)| Ok((s, b.leaf()?, b))) {
        Ok((s, leaf, b)) => (s, b, leaf),
        Err(e) => {
            r.missing = true;
            r.fail(
                "enrollment",
                format!("none usable in {}: {e}", out.display()),
                "ca-client enroll --docker --server HOST:PORT --token TOKEN",
            );
            return r;
        }
    };
    r.ok(
        "enrollment",
        format!(
            "{} (serial {}), CA {}",
            state.identity, leaf.serial, state.server
        ),
    );
    expiry(&mut r, "certificate", &leaf, now, warn_within);
    for der in bundle.chain.iter().skip(1).chain(&bundle.roots) {
        if let Ok(info) = CertInfo::from_der(der) {
            expiry(&mut r, "chain", &info, now, warn_within);
        }
    }
    engine_checks(&mut r, &state, &bundle, out).await;
    match crate::agent::watch::wanted_names(&state, &leaf, None) {
        Some(wanted) => {
            let mut has: Vec<String> = leaf.dns_names.clone();
            has.extend(leaf.ip_addresses.iter().map(ToString::to_string));
            let mut want: Vec<String> = wanted.dns.clone();
            want.extend(wanted.ips.iter().map(ToString::to_string));
            r.warn(
                "names",
                format!(
                    "the certificate names {}, this host now has {}",
                    has.join(" "),
                    want.join(" ")
                ),
                "the agent re-issues it by itself when it runs (ca-client agent); at once: ca-client agent --renew-now",
            );
        }
        None => r.ok(
            "names",
            "the certificate's names match this host's".to_string(),
        ),
    }
    ca_checks(&mut r, &state, &bundle, server).await;
    match agent_pid(out) {
        Some(pid) => r.ok("agent", format!("running (pid {pid})")),
        None => r.warn(
            "agent",
            "no `ca-client agent` runs: certificates will not renew".to_string(),
            "systemctl enable --now dtca-agent.service (or run `ca-client agent`)",
        ),
    }
    r
}

fn expiry(
    r: &mut Report,
    name: &'static str,
    info: &CertInfo,
    now: OffsetDateTime,
    warn: Duration,
) {
    let left = info.seconds_left(now);
    let what = format!(
        "{} expires {} ({})",
        if info.is_ca { &info.subject } else { "leaf" },
        duration::timestamp(info.not_after),
        if left > 0 {
            format!("{} left", duration::human(left))
        } else {
            "expired".into()
        }
    );
    let warn_secs = i64::try_from(warn.as_secs()).unwrap_or(i64::MAX);
    if left <= 0 {
        let fix = if info.is_ca {
            "the CA must rotate (ca-server ca status), then ca-client renew"
        } else {
            "enroll again: ca-client enroll --docker --token TOKEN (the token wins over the expired enrollment)"
        };
        r.fail(name, what, fix);
    } else if left <= warn_secs {
        r.warn(
            name,
            what,
            "ca-client renew (the agent renews by itself when it runs)",
        );
    } else {
        r.ok(name, what);
    }
}

/// Engine reachable, launcher and mode, what it serves, plain TCP listeners left.
async fn engine_checks(r: &mut Report, state: &ClientState, bundle: &Bundle, out: &Path) {
    let sockets: Vec<PathBuf> = match &state.docker {
        Some(d) => vec![d.socket.clone()],
        None => std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
            .into_iter()
            .chain([
                PathBuf::from("/var/run/docker.sock"),
                PathBuf::from("/run/docker.sock"),
            ])
            .collect(),
    };
    let Some(l) = launcher::detect(&sockets, false).await else {
        let restart = state.docker.as_ref().map(|d| d.restart.clone());
        r.fail(
            "engine",
            format!(
                "no Docker engine answers on {}",
                sockets
                    .iter()
                    .map(|s| format!("unix://{}", s.display()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            restart.map_or_else(
                || "start dockerd".to_string(),
                |c| format!("start dockerd: {c}"),
            ),
        );
        return;
    };
    match engine::info_unix(&l.socket).await {
        Ok(info) => r.ok(
            "engine",
            format!(
                "dockerd {} answers on unix://{}{}",
                info.version,
                l.socket.display(),
                if info.swarm { " (swarm)" } else { "" }
            ),
        ),
        Err(e) => r.fail(
            "engine",
            format!("unix://{} does not answer: {e}", l.socket.display()),
            "start dockerd, or check its log",
        ),
    }
    let launched = format!("started by {} ({})", l.kind, l.evidence);
    match (&state.docker, &state.failed_switch) {
        (Some(d), _) => {
            let serving = serving(&d.listen, bundle, docker::served_pair(d, out)).await;
            let fix = match d.mode {
                EngineMode::Native => format!(
                    "restart the engine ({}) or run ca-client agent, which restarts it onto the current pair",
                    d.restart
                ),
                EngineMode::Guard => {
                    "run ca-client agent (in guard mode it serves the engine's address)".to_string()
                }
            };
            match serving {
                Ok(()) => r.ok(
                    "mode",
                    format!(
                        "{}: mutual TLS on {} with the current pair; {launched}",
                        d.mode, d.listen
                    ),
                ),
                Err(e) => r.fail(
                    "mode",
                    format!(
                        "switched to {} ({} mode), but {e}; {launched}",
                        d.listen, d.mode
                    ),
                    fix,
                ),
            }
        }
        (None, Some(f)) => r.fail(
            "mode",
            format!(
                "the docker switch failed at {}: {}; {launched}",
                f.at, f.error
            ),
            "ca-client enroll --docker (no token needed; it retries with the same settings)",
        ),
        (None, None) => r.warn(
            "mode",
            format!("not switched to mutual TLS by dtca; {launched}"),
            "ca-client enroll --docker",
        ),
    }
    let config = state
        .docker
        .as_ref()
        .map(|d| d.config.clone())
        .or_else(|| l.config.clone())
        .unwrap_or_else(|| PathBuf::from(docker::DEFAULT_CONFIG));
    let mut hosts = std::fs::read_to_string(&config)
        .map(|t| daemon_json::hosts_of(&t))
        .unwrap_or_default();
    hosts.extend(l.flag_hosts.iter().cloned());
    let mut plain = Vec::new();
    for host in daemon_json::tcp_hosts(&hosts) {
        if let Some(addr) = dial(&host).await
            && tokio::time::timeout(NET_TIMEOUT, engine::ping_plain(addr))
                .await
                .is_ok_and(|r| r.is_ok())
        {
            plain.push(host.to_string());
        }
    }
    if plain.is_empty() {
        r.ok(
            "plain-tcp",
            "the engine answers no plain TCP address".to_string(),
        );
    } else {
        r.fail(
            "plain-tcp",
            format!(
                "the engine answers without TLS on {}: whoever reaches it owns this host",
                plain.join(", ")
            ),
            if state.docker.is_some() {
                "ca-client enroll --docker --force (switches again and closes it)"
            } else {
                "ca-client enroll --docker"
            },
        );
    }
}

async fn dial(host: &EngineAddr) -> Option<SocketAddr> {
    engine::dial_addr(host).await.ok()
}

/// The engine serves the pair it should now (`current`), verified against the root.
async fn serving(
    listen: &EngineAddr,
    bundle: &Bundle,
    current: Result<Bundle, crate::error::ClientError>,
) -> Result<(), String> {
    let current = current.map_err(|e| e.to_string())?;
    let want = current.leaf().map_err(|e| e.to_string())?.serial;
    let name = docker::tls_name(&current).ok_or("its certificate names no host")?;
    let addr = engine::dial_addr(listen).await.map_err(|e| e.to_string())?;
    let probe = tokio::time::timeout(
        NET_TIMEOUT,
        engine::probe_tls(addr, &name, &bundle.roots, None),
    )
    .await
    .map_err(|_| format!("{listen} did not answer within {}s", NET_TIMEOUT.as_secs()))?
    .map_err(|e| e.to_string())?;
    match probe.served {
        Some(s) if s == want => Ok(()),
        Some(s) => Err(format!("it serves certificate {s}, not the current {want}")),
        None => Err(format!(
            "{listen} serves no certificate of this cluster ({})",
            probe
                .answered
                .err()
                .map_or_else(String::new, |e| e.to_string())
        )),
    }
}

/// CA reachable, clock skew against it, revocation.
async fn ca_checks(r: &mut Report, state: &ClientState, bundle: &Bundle, server: Option<&str>) {
    let at = server.unwrap_or(&state.server);
    let asked = match ServerAddr::parse(at) {
        Ok(addr) => tokio::time::timeout(NET_TIMEOUT, crate::ca::revocation(&addr, bundle))
            .await
            .unwrap_or_else(|_| {
                Err(crate::error::EngineFailure::Address(format!(
                    "no answer within {}s",
                    NET_TIMEOUT.as_secs()
                ))
                .into())
            }),
        Err(e) => Err(e.into()),
    };
    let answer = match asked {
        Ok(a) => a,
        Err(e) => {
            r.fail(
                "ca",
                format!("the CA at {at} cannot be asked: {e}"),
                "check that ca-server serve runs there and this host reaches it (or give --server)",
            );
            r.warn(
                "clock",
                "unknown (the CA did not answer)".into(),
                "check again once the CA answers",
            );
            r.warn(
                "revocation",
                "unknown (the CA did not answer)".into(),
                "check again once the CA answers",
            );
            return;
        }
    };
    r.ok("ca", format!("the CA at {at} answers"));
    let skew = (OffsetDateTime::now_utc() - answer.ca_time).whole_seconds();
    let backdate = i64::try_from(dtca_pki::profile::BACKDATE.as_secs()).unwrap_or(300);
    let what = format!("this host's clock is {skew:+} s from the CA's");
    if skew.abs() > backdate {
        r.fail(
            "clock",
            what,
            "set this host's clock (timedatectl set-ntp true, or chrony/ntpd): new certificates look not yet valid",
        );
    } else if skew.abs() > SKEW_WARN {
        r.warn(
            "clock",
            what,
            "set this host's clock (timedatectl set-ntp true, or chrony/ntpd)",
        );
    } else {
        r.ok("clock", what);
    }
    if answer.revoked {
        r.fail(
            "revocation",
            "the CA has revoked this certificate".into(),
            "enroll again with a new token: ca-client enroll --docker --token TOKEN (it replaces the revoked enrollment)",
        );
    } else {
        r.ok("revocation", "not revoked (the CA's CRL, asked now)".into());
    }
}

/// The pid of a running `ca-client agent` for the credentials in `out`: the one holding
/// its lock, else one whose `--state-dir` (or `--out`) is `out` (or none and `out` the
/// default).
fn agent_pid(out: &Path) -> Option<u32> {
    if let Some(pid) = crate::lock::AgentLock::holder(out) {
        return Some(pid);
    }
    let same = |dir: &str| {
        std::fs::canonicalize(dir).ok() == std::fs::canonicalize(out).ok() || Path::new(dir) == out
    };
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_string_lossy().parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let words: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|w| String::from_utf8_lossy(w).to_string())
            .collect();
        let is_client = words.first().is_some_and(|w| w.ends_with("ca-client"));
        let given = words.iter().enumerate().find_map(|(i, w)| {
            if w == "--out" || w == "--state-dir" {
                words.get(i + 1).cloned()
            } else {
                w.strip_prefix("--out=")
                    .or_else(|| w.strip_prefix("--state-dir="))
                    .map(str::to_string)
            }
        });
        let ours = match given {
            Some(dir) => same(&dir),
            None => same(crate::state::DEFAULT_OUT),
        };
        (is_client && ours && words.iter().skip(1).any(|w| w == "agent")).then_some(pid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_worst_check() {
        let mut r = Report {
            missing: false,
            checks: Vec::new(),
        };
        r.ok("a", "fine".into());
        assert_eq!(r.worst(), Level::Ok);
        r.warn("b", "meh".into(), "do this");
        assert_eq!(r.worst(), Level::Warn);
        assert!(r.text().contains("fix: do this"));
        r.fail("c", "bad".into(), "do that");
        assert_eq!(r.worst(), Level::Fail);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["checks"][2]["level"], "fail");
    }
}
