//! The CA's own lifecycle with real engines, the real docker CLI and real time: native
//! engines with their agents and an operator's contexts ride through intermediate switches
//! (a three-minute intermediate) and a root rotation from start to `--finish`, while a probe
//! asks each engine for its version every second.
//!
//! A native engine restarts to take a new certificate (that is what native mode is), so
//! the probe sorts "nothing listening for a moment" apart from real failures (a refused
//! certificate, an untrusted chain): the latter must never happen, the former only around
//! a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Real time on plain threads: no tokio clock runs here.
#![allow(clippy::disallowed_types)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use dtca_tests::bins::bin;
use dtca_tests::cli::{run, text, token};
use dtca_tests::docker::{Engine, free_port};
use dtca_tests::probe::{Probe, Seen};
use dtca_tests::process::{Proc, wait_until};
use dtca_tests::serve::ServeProcess;

/// `ca-server init` (no passphrase, cluster `cli`) with `extra` flags.
fn init(state: &Path, extra: &[&str]) {
    let mut args = vec!["init", "--cluster", "cli", "--insecure-no-passphrase"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--state-dir", state.to_str().unwrap()]);
    let out = run("ca-server", &args);
    assert!(out.status.success(), "init: {}", text(&out));
}

/// An engine switched to mutual TLS under `name`, with its agent running.
struct Node {
    name: String,
    engine: Engine,
    agent: Proc,
}

impl Node {
    fn enroll(state: &Path, serve: &ServeProcess, name: &str) -> Node {
        let engine = Engine::start_plain("127.0.0.1");
        let listen = format!("tcp://127.0.0.1:{}", free_port("127.0.0.1"));
        let t = token(state, &["--role", "node", "--name", name]);
        let out = Command::new(bin("ca-client"))
            .args([
                "enroll",
                "--docker",
                "--no-default-sans",
                "--san",
                "127.0.0.1",
                "--server",
                &serve.addr,
                "--token",
                &t,
            ])
            .arg("--out")
            .arg(engine.dir.join("client"))
            .args(engine.switch_flags(&listen, &engine.restart))
            .output()
            .unwrap();
        assert!(out.status.success(), "enroll {name}: {}", text(&out));
        let mut cmd = Command::new(bin("ca-client"));
        cmd.args(["agent", "--docker-timeout", "30s", "--out"])
            .arg(engine.dir.join("client"));
        let agent = Proc::spawn("ca-client agent", cmd, &engine.dir.join("agent.log"));
        Node {
            name: name.to_string(),
            engine,
            agent,
        }
    }

    fn served_leaf(&self) -> Option<Leaf> {
        Leaf::read(&self.engine.dir.join("tls/server-cert.pem"))
    }

    fn agent_log(&self) -> String {
        std::fs::read_to_string(self.engine.dir.join("agent.log")).unwrap_or_default()
    }
}

/// An operator whose docker contexts `login` made.
struct Operator {
    docker_config: PathBuf,
}

impl Operator {
    fn login(state: &Path, serve: &ServeProcess, dir: &Path) -> Operator {
        let op = Operator {
            docker_config: dir.to_path_buf(),
        };
        std::fs::create_dir_all(dir).unwrap();
        let t = token(state, &["--role", "operator", "--name", "alice"]);
        let out = op.client(&["login", "--server", &serve.addr, "--token", &t]);
        assert!(out.status.success(), "login: {}", text(&out));
        op
    }

    fn client(&self, args: &[&str]) -> Output {
        Command::new(bin("ca-client"))
            .args(args)
            .env("DOCKER_CONFIG", &self.docker_config)
            .output()
            .unwrap()
    }

    fn renew(&self) -> Output {
        self.client(&["login", "--renew"])
    }

    fn leaf(&self) -> Option<Leaf> {
        Leaf::read(&self.docker_config.join("dtca/cli/cert.pem"))
    }
}

/// What a test needs of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Leaf {
    serial: String,
    issuer: String,
    lifetime: i64,
}

impl Leaf {
    fn read(path: &Path) -> Option<Leaf> {
        let pem = std::fs::read(path).ok()?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).ok()?;
        let cert = pem.parse_x509().ok()?;
        Some(Leaf {
            serial: cert.raw_serial_as_string(),
            issuer: cert.issuer().to_string(),
            lifetime: cert.validity().not_after.timestamp()
                - cert.validity().not_before.timestamp(),
        })
    }
}

/// The subjects of the certificates in a PEM file (a CA file: the roots it trusts).
fn subjects(path: &Path) -> Vec<String> {
    let data = std::fs::read(path).unwrap_or_default();
    x509_parser::pem::Pem::iter_from_buffer(&data)
        .filter_map(Result::ok)
        .filter_map(|pem| pem.parse_x509().ok().map(|cert| cert.subject().to_string()))
        .collect()
}

/// Asserts what the probes saw: answers, never a real failure, and "nothing listening"
/// only around the engine's restarts (a few seconds each).
fn assert_probes(name: &str, seen: &Seen, restarts: usize, min_answers: u32) {
    assert!(
        seen.failures.is_empty(),
        "{name}: the probe failed: {:#?}",
        seen.failures
    );
    assert!(
        seen.answered >= min_answers,
        "{name}: only {} answers",
        seen.answered
    );
    assert!(
        seen.restarting.len() <= 6 * restarts.max(1),
        "{name}: nothing listening {} times for {restarts} restarts: {:?}",
        seen.restarting.len(),
        seen.restarting
    );
    eprintln!(
        "{name}: {} answers, {} while restarting ({restarts} restarts)",
        seen.answered,
        seen.restarting.len()
    );
}

#[test]
fn an_engine_and_an_operator_ride_through_three_intermediate_switches() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("ca");
    // A three-minute intermediate: leaves are capped at a third of it (one minute).
    init(&state, &["--intermediate-ttl", "3m"]);
    let serve = ServeProcess::start(&state, &["--insecure-no-passphrase"], &[]);
    let node = Node::enroll(&state, &serve, "web-1");
    let operator = Operator::login(&state, &serve, &tmp.path().join("docker-config"));
    let probe = Probe::start(&operator.docker_config, &node.name);

    // Sample the engine's and the operator's certificates; the operator renews as an
    // operator does (login --renew), every 15 s.
    let mut leaves: BTreeMap<String, Leaf> = BTreeMap::new();
    let mut renew_failures = Vec::new();
    let started = Instant::now();
    let mut last_renew = Instant::now();
    let issuers = |leaves: &BTreeMap<String, Leaf>| {
        leaves
            .values()
            .map(|l| l.issuer.clone())
            .collect::<BTreeSet<_>>()
    };
    while issuers(&leaves).len() < 4 && started.elapsed() < Duration::from_secs(720) {
        for leaf in [node.served_leaf(), operator.leaf()].into_iter().flatten() {
            leaves.entry(leaf.serial.clone()).or_insert(leaf);
        }
        if last_renew.elapsed() >= Duration::from_secs(15) {
            let out = operator.renew();
            if !out.status.success() {
                renew_failures.push(text(&out));
            }
            last_renew = Instant::now();
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let seen = probe.finish();
    let issuers = issuers(&leaves);
    assert!(
        issuers.len() >= 4,
        "three switches expected in 12 minutes; issuers seen: {issuers:#?}\nagent log:\n{}",
        node.agent_log()
    );
    assert!(
        renew_failures.is_empty(),
        "login --renew failed: {renew_failures:#?}"
    );
    // Full-length leaves, whichever intermediate signed them: none cut short by its
    // issuer's end.
    let lifetimes: BTreeSet<i64> = leaves.values().map(|l| l.lifetime).collect();
    let (shortest, longest) = (*lifetimes.first().unwrap(), *lifetimes.last().unwrap());
    assert!(
        longest - shortest <= 2 && shortest >= 55,
        "leaf lifetimes differ: {leaves:#?}"
    );
    if !seen.failures.is_empty() {
        eprintln!(
            "agent log:\n{}\nCA log:\n{}",
            node.agent_log(),
            serve.log_text()
        );
    }
    assert_probes(&node.name, &seen, node.engine.restarts(), 60);
    drop(node.agent);
}

#[test]
fn a_root_rotation_reaches_two_engines_and_an_operator_with_one_restart_each() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("ca");
    init(&state, &[]);
    let serve = ServeProcess::start(&state, &["--insecure-no-passphrase"], &[]);
    let nodes = [
        Node::enroll(&state, &serve, "web-1"),
        Node::enroll(&state, &serve, "web-2"),
    ];
    let operator = Operator::login(&state, &serve, &tmp.path().join("docker-config"));
    let old_root = subjects(&state.join("ca.pem"));
    assert_eq!(old_root.len(), 1, "{old_root:?}");
    // A copy of the operator's credentials of the old chain, for the end.
    let old_operator = tmp.path().join("old-operator");
    copy_dir(&operator.docker_config.join("dtca/cli"), &old_operator);
    for node in &nodes {
        assert!(
            wait_until(Duration::from_secs(30), || node
                .agent_log()
                .contains("agent channel open")),
            "{}: no channel: {}",
            node.name,
            node.agent_log()
        );
    }
    let restarts_before: Vec<usize> = nodes.iter().map(|n| n.engine.restarts()).collect();
    let serials_before: Vec<Option<Leaf>> = nodes.iter().map(Node::served_leaf).collect();
    let probes: Vec<Probe> = nodes
        .iter()
        .map(|n| Probe::start(&operator.docker_config, &n.name))
        .collect();

    let started = Instant::now();
    let out = run(
        "ca-server",
        &["ca", "rotate-root", "--state-dir", state.to_str().unwrap()],
    );
    assert!(out.status.success(), "rotate-root: {}", text(&out));

    // The agents hear it over their channel and renew early: each engine takes a leaf of
    // the new chain (and the two-root bundle) with one restart.
    for (node, before) in nodes.iter().zip(&serials_before) {
        assert!(
            wait_until(Duration::from_secs(120), || node.served_leaf() != *before),
            "{} kept its certificate: {}",
            node.name,
            node.agent_log()
        );
        let ca_file = subjects(&node.engine.dir.join("tls/ca.pem"));
        assert_eq!(
            ca_file.len(),
            2,
            "{}: engine CA file {ca_file:?}",
            node.name
        );
    }
    eprintln!("engines renewed {:?} after rotate-root", started.elapsed());
    let out = operator.renew();
    assert!(out.status.success(), "login --renew: {}", text(&out));

    // Finish, once nothing lags (refused until then).
    let mut refusals = Vec::new();
    let finished = wait_until(Duration::from_secs(120), || {
        let out = run(
            "ca-server",
            &[
                "ca",
                "rotate-root",
                "--finish",
                "--state-dir",
                state.to_str().unwrap(),
            ],
        );
        if !out.status.success() {
            refusals.push(text(&out));
        }
        out.status.success()
    });
    assert!(finished, "--finish kept refusing: {refusals:#?}");
    eprintln!("finished {:?} after rotate-root", started.elapsed());

    // The old root leaves every bundle at the next contact.
    let out = operator.renew();
    assert!(
        out.status.success(),
        "login --renew after finish: {}",
        text(&out)
    );
    let only_new = |path: &Path| {
        let s = subjects(path);
        s.len() == 1 && s != old_root
    };
    assert!(
        only_new(&operator.docker_config.join("dtca/cli/ca.pem")),
        "operator: {:?}",
        subjects(&operator.docker_config.join("dtca/cli/ca.pem"))
    );
    for node in &nodes {
        for file in ["client/ca.pem", "tls/ca.pem"] {
            let path = node.engine.dir.join(file);
            assert!(
                wait_until(Duration::from_secs(60), || only_new(&path)),
                "{} {file}: {:?}\n{}",
                node.name,
                subjects(&path),
                node.agent_log()
            );
        }
    }
    let seen: Vec<Seen> = probes.into_iter().map(Probe::finish).collect();
    for ((node, before), seen) in nodes.iter().zip(&restarts_before).zip(&seen) {
        let restarts = node.engine.restarts() - before;
        assert!(
            restarts <= 1,
            "{} restarted {restarts} times; agent log:\n{}",
            node.name,
            node.agent_log()
        );
        assert_probes(&node.name, seen, restarts, 1);
    }

    // A certificate of the old chain is refused: by the CA, and by an engine once it has
    // restarted on its new CA file.
    let old = Command::new(bin("ca-client"))
        .args(["status", "--out"])
        .arg(&old_operator)
        .output()
        .unwrap();
    eprintln!("old operator status: {}", text(&old));
    let engine = &nodes[0].engine;
    let status = Command::new(&engine.restart).status().unwrap();
    assert!(status.success());
    let context_host = docker_host(&operator, &nodes[0].name);
    assert!(
        wait_until(Duration::from_secs(30), || engine
            .docker_tls(
                &context_host,
                &operator.docker_config.join("dtca/cli"),
                &["version"]
            )
            .status
            .success()),
        "the engine did not come back"
    );
    let refused = engine.docker_tls(&context_host, &old_operator, &["version"]);
    assert!(
        !refused.status.success(),
        "the engine accepted a certificate of the old chain"
    );
    for node in nodes {
        drop(node.agent);
    }
}

/// The address docker's context `name` points at.
fn docker_host(operator: &Operator, name: &str) -> String {
    let out = Command::new("docker")
        .args([
            "context",
            "inspect",
            name,
            "--format",
            "{{.Endpoints.docker.Host}}",
        ])
        .env("DOCKER_CONFIG", &operator.docker_config)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}
