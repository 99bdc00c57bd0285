//! Rolling restarts with real engines, real agents and real time: five native engines
//! with one-minute certificates, their agents started together (each renews at once,
//! then again at its planned point), so their rotations collide. The CA's audit log
//! (restart-grant, restart-release, restart-expire) must never show more restarts at
//! once than `--max-concurrent-restarts`, nor the two managers of one swarm restarting
//! together; every engine must really have restarted for each slot it was granted.
//!
//! One engine is a real swarm manager (`swarm init`); the second "manager" of that swarm
//! is a plain engine whose agent claims the same swarm through the test-only
//! `DTCA_INSECURE_TEST_SWARM_MANAGER_OF` (two engines of one network namespace cannot
//! both hold the host's `docker_gwbridge` of a real two-manager swarm).

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Real time on plain threads: no tokio clock runs here.
#![allow(clippy::disallowed_types)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use dtca_tests::bins::bin;
use dtca_tests::cli::{run, stdout, text, token};
use dtca_tests::docker::{Engine, free_port};
use dtca_tests::process::{Proc, wait_until};
use dtca_tests::serve::{ServeProcess, init_insecure};

/// The limit the CA is started with.
const MAX_CONCURRENT: usize = 2;
/// Rotations each engine must go through: the one at start, and one planned.
const ROTATIONS: usize = 2;

/// An engine switched to mutual TLS under `name` (its agent started later).
struct Node {
    name: String,
    engine: Engine,
    agent: Option<Proc>,
    /// Restarts before the agent started (start and switch).
    restarts_before: usize,
}

impl Node {
    fn enroll(state: &Path, serve: &ServeProcess, name: &str, ip: &str, swarm: bool) -> Node {
        let engine = Engine::start_plain(ip);
        if swarm {
            let init = engine.docker(&[
                "swarm",
                "init",
                "--advertise-addr",
                ip,
                "--listen-addr",
                &format!("{ip}:{}", free_port(ip)),
            ]);
            assert!(init.status.success(), "swarm init: {}", text(&init));
        }
        let listen = format!("tcp://{ip}:{}", free_port(ip));
        let t = token(
            state,
            &["--role", "node", "--name", name, "--cert-ttl", "60s"],
        );
        let out = engine.enroll(&serve.addr, &t, ip, &listen);
        assert!(out.status.success(), "enroll {name}: {}", text(&out));
        let restarts_before = engine.restarts();
        Node {
            name: name.to_string(),
            engine,
            agent: None,
            restarts_before,
        }
    }

    fn start_agent(&mut self, claims_manager_of: Option<&str>) {
        let mut cmd = Command::new(bin("ca-client"));
        cmd.args(["agent", "--renew-now", "--docker-timeout", "30s", "--out"])
            .arg(self.engine.dir.join("client"));
        if let Some(cluster) = claims_manager_of {
            cmd.env("DTCA_INSECURE_TEST_SWARM_MANAGER_OF", cluster);
        }
        self.agent = Some(Proc::spawn(
            "ca-client agent",
            cmd,
            &self.engine.dir.join("agent.log"),
        ));
    }

    fn agent_log(&self) -> String {
        std::fs::read_to_string(self.engine.dir.join("agent.log")).unwrap_or_default()
    }

    fn restarts_since_agent(&self) -> usize {
        self.engine.restarts() - self.restarts_before
    }
}

/// One line of the audit log.
#[derive(Debug, Clone)]
struct Event {
    kind: String,
    subject: String,
    detail: String,
}

/// The audit log, oldest first.
fn audit(state: &Path) -> Vec<Event> {
    let out = run(
        "ca-server",
        &[
            "audit",
            "--json",
            "--limit",
            "2000",
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "audit: {}", text(&out));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).unwrap();
    let mut events: Vec<Event> = rows
        .iter()
        .map(|r| Event {
            kind: r["kind"].as_str().unwrap_or_default().to_string(),
            subject: r["subject"].as_str().unwrap_or_default().to_string(),
            detail: r["detail"].as_str().unwrap_or_default().to_string(),
        })
        .collect();
    events.reverse();
    events
}

/// Walks the slot events in order: the most restarts at once, whether the managers ever
/// overlapped, and the grants per node.
fn replay(events: &[Event], managers: &[&str]) -> (usize, Vec<String>, BTreeMap<String, usize>) {
    let mut holding: BTreeSet<String> = BTreeSet::new();
    let mut most = 0;
    let mut manager_overlaps = Vec::new();
    let mut grants: BTreeMap<String, usize> = BTreeMap::new();
    for e in events {
        match e.kind.as_str() {
            "restart-grant" => {
                assert!(
                    holding.insert(e.subject.clone()),
                    "{} granted a second slot: {e:?}",
                    e.subject
                );
                *grants.entry(e.subject.clone()).or_default() += 1;
                most = most.max(holding.len());
                if managers.iter().all(|m| holding.contains(*m)) {
                    manager_overlaps.push(format!("{holding:?} at {e:?}"));
                }
            }
            "restart-release" | "restart-expire" => {
                holding.remove(&e.subject);
            }
            _ => {}
        }
    }
    (most, manager_overlaps, grants)
}

#[test]
fn five_engines_rotate_with_at_most_the_allowed_restarts_and_never_two_managers_of_one_swarm() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("ca");
    init_insecure(&state);
    let limit = MAX_CONCURRENT.to_string();
    let serve = ServeProcess::start(
        &state,
        &[
            "--insecure-no-passphrase",
            "--max-concurrent-restarts",
            &limit,
        ],
        &[],
    );

    let enrolling = Instant::now();
    // Switched side by side (each switch is one engine's own restart).
    let mut nodes: Vec<Node> = std::thread::scope(|scope| {
        let (state, serve) = (&state, &serve);
        let enrolling: Vec<_> = [
            "127.0.0.21",
            "127.0.0.22",
            "127.0.0.23",
            "127.0.0.24",
            "127.0.0.25",
        ]
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            scope.spawn(move || Node::enroll(state, serve, &format!("rr-{i}"), ip, i == 0))
        })
        .collect();
        enrolling.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let cluster = stdout(
        &nodes[0]
            .engine
            .docker(&["info", "--format", "{{.Swarm.Cluster.ID}}"]),
    );
    assert!(!cluster.is_empty(), "the first engine is a swarm manager");
    let managers = [nodes[0].name.clone(), nodes[1].name.clone()];
    eprintln!(
        "five engines switched in {} s",
        enrolling.elapsed().as_secs()
    );

    // All five agents at once, each renewing right away: five restarts asked for together.
    for (i, node) in nodes.iter_mut().enumerate() {
        node.start_agent((i == 1).then_some(cluster.as_str()));
    }
    let started = Instant::now();
    let grants_done = || {
        let (_, _, grants) = replay(&audit(&state), &[]);
        nodes
            .iter()
            .all(|n| grants.get(&n.name).copied().unwrap_or(0) >= ROTATIONS)
    };
    let done = wait_until(Duration::from_secs(150), grants_done);
    // Stopping an agent lets a restart under way finish and give its slot back (and ends
    // a wait for one): after this every slot granted has been released.
    let stopping = Instant::now();
    for node in &mut nodes {
        drop(node.agent.take());
    }
    eprintln!("agents stopped in {} s", stopping.elapsed().as_secs());
    let elapsed = started.elapsed();
    let events = audit(&state);
    let logs: String = nodes
        .iter()
        .map(|n| format!("--- {}\n{}", n.name, n.agent_log()))
        .collect();
    assert!(
        done,
        "every engine rotates {ROTATIONS} times within the time: {events:#?}\n{logs}"
    );
    let granted = events.iter().filter(|e| e.kind == "restart-grant").count();
    let released = events
        .iter()
        .filter(|e| e.kind == "restart-release")
        .count();
    assert_eq!(
        granted, released,
        "every slot is given back: {events:#?}\n{logs}"
    );

    let manager_names: Vec<&str> = managers.iter().map(String::as_str).collect();
    let (most, manager_overlaps, grants) = replay(&events, &manager_names);
    eprintln!(
        "{} s; at most {most} restarts at once; grants {grants:?}",
        elapsed.as_secs()
    );
    assert!(
        most <= MAX_CONCURRENT,
        "{most} restarts at once, the limit is {MAX_CONCURRENT}: {events:#?}"
    );
    assert!(
        manager_overlaps.is_empty(),
        "the two managers of one swarm restarted together: {manager_overlaps:#?}"
    );
    // Five rotations asked for at once against two slots: some waited.
    assert!(
        logs.contains("waiting for a restart slot"),
        "no agent ever waited for a slot:\n{logs}"
    );
    // Both managers' grants say whose swarm they manage.
    for m in &managers {
        assert!(
            events.iter().any(|e| e.kind == "restart-grant"
                && e.subject == *m
                && e.detail.contains(&format!("manager of swarm {cluster}"))),
            "{m}'s grants name its swarm: {events:#?}"
        );
    }
    // No agent vanished, so no slot expired; and no restart went ahead without a slot.
    assert!(
        !events.iter().any(|e| e.kind == "restart-expire"),
        "{events:#?}"
    );
    assert!(!logs.contains("WITHOUT a restart slot"), "{logs}");
    // Each slot was a real restart of that engine.
    for node in &nodes {
        let granted = grants.get(&node.name).copied().unwrap_or(0);
        assert!(
            node.restarts_since_agent() >= granted,
            "{}: {} restarts for {granted} slots",
            node.name,
            node.restarts_since_agent()
        );
    }
    let stopping = Instant::now();
    drop(nodes);
    eprintln!("engines stopped in {} s", stopping.elapsed().as_secs());
}
