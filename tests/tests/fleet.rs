//! The fleet view with real parts: a `ca-server serve` process, real dockerd engines on
//! loopback addresses, real `ca-client enroll --docker` switches and agents. Five nodes,
//! one in each situation an operator must tell apart: on mutual TLS, on mutual TLS with a
//! certificate expiring this week, left plain, a failed switch, and an agent that stopped.
//! `ca-server fleet` (text, JSON, filters), the metrics and the web page (in Debian's
//! headless chromium, a screenshot kept under target/test-artifacts/) must each say so.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Timings of the phases are printed from a plain thread, where no tokio clock runs.
#![allow(clippy::disallowed_types)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use dtca_common::Reason;
use dtca_tests::bins::bin;
use dtca_tests::browser::{artifacts_dir, dump_dom, http_get, screenshot};
use dtca_tests::cli::{expect_exit, run, stdout, text, token};
use dtca_tests::docker::{Engine, free_port};
use dtca_tests::process::{Proc, wait_until};
use dtca_tests::serve::{ServeProcess, init_insecure};

/// How long an agent may be silent: short, so the stopped agent goes stale quickly; long
/// enough that the running agents' report at start stays fresh through the checks.
const STALE_AFTER: &str = "25s";

struct Fleet {
    state: PathBuf,
    serve: ServeProcess,
    /// Every token made, to check that none leaks.
    tokens: Vec<String>,
}

impl Fleet {
    /// A fresh CA in `dir` and its `serve` (with `extra` flags), the web page and the
    /// metrics on loopback: the fleet, the page's address and the metrics' address.
    fn start(dir: &Path, extra: &[&str]) -> (Fleet, String, String) {
        let state = dir.join("ca");
        init_insecure(&state);
        let ui = format!("127.0.0.1:{}", free_port("127.0.0.1"));
        let metrics = format!("127.0.0.1:{}", free_port("127.0.0.1"));
        let mut args = vec![
            "--insecure-no-passphrase",
            "--ui-listen",
            &ui,
            "--metrics-listen",
            &metrics,
        ];
        args.extend_from_slice(extra);
        let serve = ServeProcess::start(&state, &args, &[]);
        let fleet = Fleet {
            state,
            serve,
            tokens: Vec::new(),
        };
        (fleet, ui, metrics)
    }

    fn token(&mut self, args: &[&str]) -> String {
        let t = token(&self.state, args);
        self.tokens.push(t.clone());
        t
    }

    /// `ca-client enroll` of node `name` into `out`, switching `engine` when given
    /// (`restart` overrides its restart command).
    fn enroll(
        &mut self,
        name: &str,
        out: &Path,
        engine: Option<(&Engine, Option<&str>)>,
        token_args: &[&str],
    ) -> Output {
        let mut args = vec!["--role", "node"];
        args.extend_from_slice(token_args);
        let t = self.token(&args);
        let mut cmd = Command::new(bin("ca-client"));
        cmd.args(["enroll", "--server", &self.serve.addr, "--token", &t])
            .args(["--name", name, "--no-default-sans", "--out"])
            .arg(out);
        match engine {
            Some((e, restart)) => {
                let listen = format!("tcp://{}:{}", e.ip, free_port(&e.ip));
                cmd.args(["--docker", "--san", &e.ip, "--docker-timeout", "20s"]);
                match restart {
                    Some(r) => cmd.args(e.switch_flags(&listen, r)),
                    None => cmd.args(e.switch_flags(&listen, &e.restart)),
                };
            }
            None => {
                cmd.args(["--san", "127.0.0.1"]);
            }
        }
        cmd.output().unwrap()
    }

    fn fleet(&self, extra: &[&str]) -> Output {
        let mut args = vec!["fleet", "--state-dir", self.state.to_str().unwrap()];
        args.extend_from_slice(extra);
        run("ca-server", &args)
    }

    /// `fleet --json`: the rows by name.
    fn rows(&self, extra: &[&str]) -> (serde_json::Value, HashMap<String, serde_json::Value>) {
        let mut args = vec!["--json"];
        args.extend_from_slice(extra);
        let out = self.fleet(&args);
        assert!(out.status.success(), "fleet --json: {}", text(&out));
        let view: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        let rows = view["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["name"].as_str().unwrap().to_string(), n.clone()))
            .collect();
        (view, rows)
    }

    fn state_of(&self, name: &str) -> Option<String> {
        self.rows(&[])
            .1
            .get(name)
            .map(|n| n["state"].as_str().unwrap().to_string())
    }
}

fn agent(out: &Path, log: &Path) -> Proc {
    let mut cmd = Command::new(bin("ca-client"));
    cmd.args(["agent", "--out"]).arg(out);
    Proc::spawn("ca-client agent", cmd, log)
}

/// The expiry timeline's SVG in the page's DOM.
fn timeline(dom: &str) -> &str {
    dom.split("<svg id=\"timeline\"")
        .nth(1)
        .and_then(|rest| rest.split("</svg>").next())
        .unwrap_or_else(|| panic!("no timeline chart:\n{dom}"))
}

fn rfc3339(v: &serde_json::Value) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(
        v.as_str().unwrap_or_default(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap_or_else(|e| panic!("{v} is not RFC 3339: {e}"))
}

#[test]
fn fleet_shows_each_node_in_its_state_in_text_json_metrics_and_the_web_page() {
    let started = std::time::Instant::now();
    let phase = |what: &str| eprintln!("[{:>6.1}s] {what}", started.elapsed().as_secs_f64());
    let tmp = tempfile::tempdir().unwrap();
    let (mut fleet, ui, metrics) = Fleet::start(tmp.path(), &["--stale-after", STALE_AFTER]);
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let dir = |name: &str| tmp.path().join(name);

    // The agent that stops: it reports once, then goes quiet.
    let out = fleet.enroll("stale-1", &dir("stale-1"), None, &[]);
    assert!(out.status.success(), "enroll stale-1: {}", text(&out));
    let mut quiet = agent(&dir("stale-1"), &logs.join("stale-1.log"));
    assert!(
        wait_until(Duration::from_secs(30), || fleet
            .state_of("stale-1")
            .is_some_and(|s| s != "unreported")),
        "stale-1 never reported: {}",
        std::fs::read_to_string(logs.join("stale-1.log")).unwrap_or_default()
    );
    quiet.stop();
    phase("stale-1 reported and stopped");

    // Meanwhile: two engines switched (one with a certificate that ends in 3 days), one
    // whose switch fails (its restart command does), one node enrolled without a switch.
    let engines: Vec<Engine> = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        .iter()
        .map(|ip| Engine::start_plain(ip))
        .collect();
    let out = fleet.enroll("mtls-1", &dir("mtls-1"), Some((&engines[0], None)), &[]);
    assert!(
        out.status.success(),
        "switch mtls-1: {}\n{}",
        text(&out),
        engines[0].log_text()
    );
    let out = fleet.enroll(
        "expiring-1",
        &dir("expiring-1"),
        Some((&engines[1], None)),
        &["--cert-ttl", "3d"],
    );
    assert!(out.status.success(), "switch expiring-1: {}", text(&out));
    let out = fleet.enroll(
        "failed-1",
        &dir("failed-1"),
        Some((&engines[2], Some("echo engine busy >&2; exit 3"))),
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(i32::from(Reason::DockerSwitch.exit_code())),
        "the failed-1 switch was meant to fail: {}",
        text(&out)
    );
    let out = fleet.enroll("plain-1", &dir("plain-1"), None, &[]);
    assert!(out.status.success(), "enroll plain-1: {}", text(&out));

    phase("engines switched (and one failed)");
    assert!(
        wait_until(Duration::from_secs(60), || fleet
            .state_of("stale-1")
            .as_deref()
            == Some("stale")),
        "stale-1 never went stale: {:?}",
        fleet.rows(&[]).0
    );
    // The other agents start now, so their first report is fresh through the checks.
    let running = ["mtls-1", "expiring-1", "failed-1", "plain-1"];
    let mut agents: Vec<Proc> = running
        .iter()
        .map(|n| agent(&dir(n), &logs.join(format!("{n}.log"))))
        .collect();
    let want: HashMap<&str, &str> = [
        ("mtls-1", "mtls"),
        ("expiring-1", "mtls"),
        ("failed-1", "failed"),
        ("plain-1", "plain"),
        ("stale-1", "stale"),
    ]
    .into_iter()
    .collect();
    let settled = wait_until(Duration::from_secs(20), || {
        let rows = fleet.rows(&[]).1;
        want.iter()
            .all(|(n, s)| rows.get(*n).and_then(|r| r["state"].as_str()) == Some(*s))
    });
    let (view, rows) = fleet.rows(&[]);
    let agent_logs = || {
        running
            .iter()
            .map(|n| {
                format!(
                    "--- {n}\n{}",
                    std::fs::read_to_string(logs.join(format!("{n}.log"))).unwrap_or_default()
                )
            })
            .collect::<String>()
    };
    assert!(settled, "{view:#}\n{}", agent_logs());
    phase("every node in its state");

    // JSON: states, flags, times, what each row says about its node.
    assert_eq!(rows.len(), 5, "{view:#}");
    let s = &view["summary"];
    for (key, n) in [
        ("nodes", 5),
        ("mtls", 2),
        ("plain", 1),
        ("failed", 1),
        ("stale", 1),
        ("unhealthy", 0),
        ("unreported", 0),
        ("expired", 0),
        ("expiring", 1),
    ] {
        assert_eq!(s[key], n, "summary {key}: {view:#}");
    }
    let now = time::OffsetDateTime::now_utc();
    for (name, row) in &rows {
        assert_eq!(row["expiring"], *name == "expiring-1", "{row}");
        assert_eq!(row["stale"], *name == "stale-1", "{row}");
        let expires = rfc3339(&row["expires_at"]);
        assert!(expires > now, "{row}");
        assert!(rfc3339(&row["last_report_at"]) <= now + time::Duration::seconds(5));
    }
    assert!(rfc3339(&rows["expiring-1"]["expires_at"]) < now + time::Duration::days(4));
    assert!(rfc3339(&rows["mtls-1"]["expires_at"]) > now + time::Duration::days(20));
    let mtls = &rows["mtls-1"];
    assert_eq!(mtls["mode"], "native", "{mtls}");
    assert_eq!(mtls["engine_healthy"], true, "{mtls}");
    assert!(
        mtls["engine"]
            .as_str()
            .unwrap()
            .starts_with("tcp://127.0.0.2:"),
        "{mtls}"
    );
    assert!(mtls["engine_version"].is_string() && mtls["agent_version"].is_string());
    assert_eq!(mtls["swarm_role"], "none", "{mtls}");
    assert!(mtls["last_error"].is_null(), "{mtls}");
    assert!(mtls["next_renewal_at"].is_string(), "{mtls}");
    let failed = &rows["failed-1"];
    assert!(
        failed["last_error"]
            .as_str()
            .unwrap()
            .contains("engine busy"),
        "{failed}"
    );
    assert_eq!(
        failed["plain_listeners"],
        serde_json::json!([engines[2].plain])
    );
    assert_eq!(rows["plain-1"]["mode"], "none");
    assert!(rows["plain-1"]["engine"].is_null());

    // Filters keep the summary whole and the rows to the state asked for.
    let (filtered, only) = fleet.rows(&["--state", "stale,expiring"]);
    let mut names: Vec<&String> = only.keys().collect();
    names.sort();
    assert_eq!(names, ["expiring-1", "stale-1"], "{filtered:#}");
    assert_eq!(filtered["summary"]["nodes"], 5);
    expect_exit(&fleet.fleet(&["--state", "bogus"]), Reason::Config);

    // Text: a row per node with its state, the stale report flagged, the summary line.
    let out = fleet.fleet(&[]);
    assert!(out.status.success(), "{}", text(&out));
    let table = stdout(&out);
    for (name, st) in &want {
        let line = table
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}:\n{table}"));
        assert!(line.split_whitespace().any(|w| w == *st), "{line}");
    }
    let stale_line = table.lines().find(|l| l.starts_with("stale-1 ")).unwrap();
    assert!(stale_line.contains("(stale)"), "{stale_line}");
    let exp_line = table
        .lines()
        .find(|l| l.starts_with("expiring-1 "))
        .unwrap();
    assert!(exp_line.contains("(expiring)"), "{exp_line}");
    assert!(
        table.contains(
            "5 nodes: 2 on mTLS, 1 still plain, 1 failed switch, 0 unhealthy, 1 stale, 0 unreported, 0 expired; 1 expiring within 7 days"
        ),
        "{table}"
    );

    // Metrics: the fleet by state, no node names.
    let (code, scraped) = http_get(&metrics, "/metrics");
    assert_eq!(code, 200);
    for line in [
        "dtca_fleet_nodes{state=\"mtls\"} 2",
        "dtca_fleet_nodes{state=\"stale\"} 1",
        "dtca_fleet_stale_agents 1",
        "dtca_fleet_nodes_expiring 1",
        "dtca_fleet_restarts_in_progress 0",
    ] {
        assert!(
            scraped.lines().any(|l| l == line),
            "{line} missing:\n{scraped}"
        );
    }
    assert!(scraped.contains("dtca_fleet_earliest_node_expiry_timestamp_seconds "));
    assert!(!scraped.contains("mtls-1"), "a node name became a label");

    // The page and its data: the same states, and nothing secret.
    let (code, data) = http_get(&ui, "/data.json");
    assert_eq!(code, 200, "{data}");
    let data: serde_json::Value = serde_json::from_str(&data).unwrap();
    for node in data["fleet"]["nodes"].as_array().unwrap() {
        let name = node["name"].as_str().unwrap();
        assert_eq!(node["state"], want[name], "{node}");
    }
    assert!(
        data["ca"]["roots"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    );
    assert!(data["audit"].as_array().is_some_and(|a| !a.is_empty()));
    let mut served = String::new();
    for path in ["/", "/app.js", "/app.css", "/data.json"] {
        let (code, body) = http_get(&ui, path);
        assert_eq!(code, 200, "{path}");
        served.push_str(&body);
    }
    assert!(!served.contains("PRIVATE KEY"), "key material served");
    for t in &fleet.tokens {
        let secret = t.rsplit('-').next().unwrap();
        assert!(!served.contains(secret), "a token secret is served");
    }

    phase("fleet, metrics and data checked");
    let url = format!("http://{ui}/");
    let dom = dump_dom(&url);
    assert!(
        dom.contains("data-loaded=\"true\""),
        "the script did not finish:\n{dom}"
    );
    for (name, st) in &want {
        assert!(
            dom.contains(&format!("data-name=\"{name}\" data-state=\"{st}\"")),
            "{name} not listed as {st}:\n{dom}"
        );
    }
    let chart = timeline(&dom);
    let bars = chart.matches("<rect class=\"bar").count();
    assert!(bars >= 2, "the chart drew {bars} bars: {chart}");
    assert!(
        chart.contains("soon-bar"),
        "the expiring node is not in the 7-day band"
    );
    assert!(!dom.contains("PRIVATE KEY"));
    let artifacts = artifacts_dir();
    screenshot(&url, &artifacts.join("fleet-page.png"), 1280, 1800);
    screenshot(&url, &artifacts.join("fleet-page-phone.png"), 390, 2400);

    phase("page checked");
    for a in &mut agents {
        a.stop();
    }
    drop(engines);
}

/// A node whose certificate has expired stays in the view, as `expired`, until its
/// certificate is revoked (how a node is retired).
#[test]
fn an_expired_node_shows_as_expired_until_it_is_retired() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut fleet, ui, metrics) = Fleet::start(tmp.path(), &[]);
    let out = fleet.enroll(
        "lapsed-1",
        &tmp.path().join("lapsed-1"),
        None,
        &["--cert-ttl", "3s"],
    );
    assert!(out.status.success(), "enroll lapsed-1: {}", text(&out));
    let out = fleet.enroll("fine-1", &tmp.path().join("fine-1"), None, &[]);
    assert!(out.status.success(), "enroll fine-1: {}", text(&out));
    assert!(
        wait_until(Duration::from_secs(20), || fleet
            .state_of("lapsed-1")
            .as_deref()
            == Some("expired")),
        "lapsed-1 never showed as expired: {:#}",
        fleet.rows(&[]).0
    );
    let (view, rows) = fleet.rows(&[]);
    assert_eq!(rows.len(), 2, "{view:#}");
    assert_eq!(view["summary"]["expired"], 1, "{view:#}");
    assert_eq!(view["summary"]["expiring"], 0, "{view:#}");
    assert_eq!(rows["lapsed-1"]["expiring"], false, "{view:#}");
    assert!(rfc3339(&rows["lapsed-1"]["expires_at"]) <= time::OffsetDateTime::now_utc());
    let (_, only) = fleet.rows(&["--state", "expired"]);
    assert_eq!(only.keys().collect::<Vec<_>>(), ["lapsed-1"]);
    let table = stdout(&fleet.fleet(&[]));
    let line = table.lines().find(|l| l.starts_with("lapsed-1 ")).unwrap();
    assert!(line.contains("expired"), "{table}");
    assert!(
        table.contains("2 nodes: 0 on mTLS, 0 still plain, 0 failed switch, 0 unhealthy, 0 stale, 1 unreported, 1 expired; 0 expiring within 7 days"),
        "{table}"
    );

    // The metrics and the page say so too; the timeline ahead leaves it out.
    let (_, scraped) = http_get(&metrics, "/metrics");
    assert!(
        scraped
            .lines()
            .any(|l| l == "dtca_fleet_nodes{state=\"expired\"} 1"),
        "{scraped}"
    );
    let (code, data) = http_get(&ui, "/data.json");
    assert_eq!(code, 200, "{data}");
    let data: serde_json::Value = serde_json::from_str(&data).unwrap();
    assert_eq!(data["fleet"]["summary"]["expired"], 1, "{data:#}");
    let url = format!("http://{ui}/");
    let dom = dump_dom(&url);
    assert!(dom.contains("data-loaded=\"true\""), "{dom}");
    assert!(
        dom.contains("data-name=\"lapsed-1\" data-state=\"expired\""),
        "lapsed-1 not listed as expired:\n{dom}"
    );
    assert!(
        dom.contains("data-state=\"expired\"><b>1</b>expired</button>"),
        "no expired chip:\n{dom}"
    );
    let chart = timeline(&dom);
    assert_eq!(chart.matches("<rect class=\"bar").count(), 1, "{chart}");
    screenshot(
        &url,
        &artifacts_dir().join("fleet-page-expired.png"),
        1280,
        900,
    );

    // Retired: its certificate revoked, it leaves the view.
    let revoke = run(
        "ca-server",
        &[
            "cert",
            "revoke",
            "--name",
            "lapsed-1",
            "--state-dir",
            fleet.state.to_str().unwrap(),
        ],
    );
    assert!(revoke.status.success(), "revoke: {}", text(&revoke));
    let (view, rows) = fleet.rows(&[]);
    assert_eq!(rows.keys().collect::<Vec<_>>(), ["fine-1"], "{view:#}");
    assert_eq!(view["summary"]["expired"], 0, "{view:#}");
}
