//! The real command lines: one-shot `ca-client` and `ca-server` commands, `ca-client
//! agent`, the inventory server; and criterion's estimates.

use std::path::Path;
use std::time::{Duration, Instant};

use super::Inventory;
use crate::dtca::{Bins, Server, State};
use crate::footprint;
use crate::inventory::{self, Filled};
use crate::proc::{Child, Usage, output};

/// Enrolls a client dir and runs `ca-client agent` on it, when the agent exists.
pub(super) async fn start_agent(
    bins: &Bins,
    server: &Server,
    token: &str,
    work: &Path,
) -> (Option<Child>, String) {
    let help = std::process::Command::new(&bins.client)
        .args(["agent", "--help"])
        .output();
    if !help.map(|o| o.status.success()).unwrap_or(false) {
        return (
            None,
            "`ca-client agent` does not exist in this build (`ca-client agent --help` fails): \
             the agent's idle footprint is not measured; the one-shot `ca-client` commands are."
                .into(),
        );
    }
    let dir = work.join("agent");
    if let Err(e) = output(
        std::process::Command::new(&bins.client)
            .args(["enroll", "--server", &server.addr, "--token", token])
            .args(["--name", "agent-1", "--no-default-sans"])
            .args(["--san", "agent-1.bench.internal", "--out"])
            .arg(&dir),
    ) {
        return (None, format!("cannot enroll the agent's directory: {e:#}"));
    }
    let child = Child::spawn(
        "ca-client agent",
        std::process::Command::new(&bins.client)
            .args(["agent", "--out"])
            .arg(&dir),
        &work.join("agent.log"),
    );
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return (None, format!("cannot start `ca-client agent`: {e:#}")),
    };
    // Let it start, check its certificate and go to sleep.
    tokio::time::sleep(Duration::from_secs(3)).await;
    if let Some(status) = child.exited() {
        return (
            None,
            format!(
                "`ca-client agent --out DIR` exited at once ({status}): {}",
                child.log_text().trim()
            ),
        );
    }
    (
        Some(child),
        "`ca-client agent --out DIR` (no docker flags), enrolled against the bench's CA, \
         measured from 3 s after its start."
            .into(),
    )
}

pub(super) fn cli_renew(
    bins: &Bins,
    dir: &Path,
    runs: usize,
) -> anyhow::Result<(Vec<Duration>, u64)> {
    let mut times = Vec::new();
    let mut peak = 0;
    for _ in 0..runs {
        let (t, p, _) = footprint::timed_with_peak(&[
            bins.client.as_os_str(),
            "renew".as_ref(),
            "--out".as_ref(),
            dir.as_os_str(),
        ])?;
        times.push(t);
        peak = peak.max(p);
    }
    Ok((times, peak))
}

pub(super) fn cli_list(
    bins: &Bins,
    state: &Path,
    runs: usize,
) -> anyhow::Result<(Vec<Duration>, usize, u64)> {
    let mut times = Vec::new();
    let mut rows = 0;
    let mut peak = 0;
    for _ in 0..runs {
        let (t, p, out) = footprint::timed_with_peak(&[
            bins.server.as_os_str(),
            "cert".as_ref(),
            "list".as_ref(),
            "--expiring-within".as_ref(),
            "7d".as_ref(),
            "--state-dir".as_ref(),
            state.as_os_str(),
        ])?;
        times.push(t);
        peak = peak.max(p);
        rows = out.lines().skip(1).filter(|l| !l.trim().is_empty()).count();
    }
    Ok((times, rows, peak))
}

pub(super) async fn inventory_at_scale(
    bins: &Bins,
    s2: &State,
    filled: Filled,
) -> anyhow::Result<Inventory> {
    let db_bytes = inventory::db_bytes(&s2.store_db());
    let started = Instant::now();
    let mut server = Server::start(bins, s2).await?;
    let server_start = started.elapsed();
    // serve logs how long SQLite's quick check of the store took when it opened it.
    let check_ms = server.child.log_text().lines().find_map(|l| {
        l.split("checked_ms=")
            .nth(1)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    });
    let (list, rows, list_peak_kib) = cli_list(bins, &s2.dir, 5)?;
    let token = server.token(bins, 1)?;
    let dir = s2.dir.with_extension("client");
    output(
        std::process::Command::new(&bins.client)
            .args(["enroll", "--server", &server.addr, "--token", &token])
            .args(["--name", "late-node", "--no-default-sans"])
            .args(["--san", "late-node.bench.internal", "--out"])
            .arg(&dir),
    )?;
    let (renew, _) = cli_renew(bins, &dir, 5)?;
    let server_rss_kib = Usage::of(&server.pid().to_string())?.rss_kib;
    server.stop();
    Ok(Inventory {
        filled,
        db_bytes,
        server_start,
        check_ms,
        list,
        rows,
        list_peak_kib,
        renew,
        server_rss_kib,
    })
}

/// Criterion's estimates for the pure-core benches, when they have run.
pub(super) fn criterion(dir: &Path) -> Vec<(String, f64, f64)> {
    let mut out = Vec::new();
    for id in ["csr_verify", "issue_leaf", "verify_and_issue"] {
        let path = dir.join("pki").join(id).join("new").join("estimates.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let mean = v["mean"]["point_estimate"].as_f64().unwrap_or(0.0);
        let median = v["median"]["point_estimate"].as_f64().unwrap_or(0.0);
        out.push((format!("pki/{id}"), mean, median));
    }
    out
}
