//! The agent's harder promises: a kill -9 at any moment leaves a matching pair and an
//! engine that starts; SIGTERM during a rotation lets it finish; a node whose addresses
//! change gets a certificate with the new names without waiting for its renewal, and a
//! new container bridge is no such change (in a network namespace made here).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use dtca_common::bundle::{Bundle, Layout};
use dtca_tests::bins::bin;
use dtca_tests::cli::token;
use dtca_tests::docker::{Engine, free_port};
use dtca_tests::process::{Proc, wait_until};
use dtca_tests::serve::{ServeProcess, init_insecure};
use nix::sys::signal::Signal;

fn served_serial(creds: &Path) -> Option<String> {
    let out = Command::new(bin("ca-client"))
        .args(["status", "--json", "--out"])
        .arg(creds)
        .output()
        .unwrap();
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v["engine"]["served_serial"].as_str().map(str::to_string))
}

/// `enroll --docker` of `engine` (names: 127.0.0.1 only) into `engine.dir/client`, with
/// `restart` as its restart command.
fn switch(state: &Path, serve: &ServeProcess, engine: &Engine, listen: &str, restart: &Path) {
    let t = token(state, &["--role", "node"]);
    let out = engine
        .enroll_command(&serve.addr, &t, &engine.dir.join("client"), listen, restart)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn kill_9_at_any_moment_leaves_a_matching_pair_and_an_engine_that_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("ca");
    init_insecure(&state);
    let serve = ServeProcess::start(&state, &["--insecure-no-passphrase"], &[]);
    let engine = Engine::start_plain("127.0.0.1");
    let creds = engine.dir.join("client");
    let tls = engine.dir.join("tls");
    let listen = format!("tcp://127.0.0.1:{}", free_port("127.0.0.1"));
    switch(&state, &serve, &engine, &listen, &engine.restart);

    // Kill the agent at different points of a renewal: before it has asked, while it
    // writes the pair, while the engine restarts, while it verifies.
    for (round, delay_ms) in [0u64, 150, 400, 900, 1600, 2500, 3500]
        .into_iter()
        .enumerate()
    {
        let log = engine.dir.join(format!("agent-{round}.log"));
        let mut cmd = Command::new(bin("ca-client"));
        cmd.args(["agent", "--renew-now", "--docker-timeout", "30s", "--out"])
            .arg(&creds);
        let mut agent = Proc::spawn("ca-client agent", cmd, &log);
        std::thread::sleep(Duration::from_millis(delay_ms)); // the moment of the crash is the variable here
        agent.signal_and_wait(Signal::SIGKILL, Duration::from_secs(5));
        // Whatever the moment, both credential sets are whole pairs.
        let pair = Bundle::load(&tls, Layout::DOCKERD)
            .unwrap_or_else(|e| panic!("round {round}: docker pair broken: {e}"));
        Bundle::load(&creds, Layout::CLIENT)
            .unwrap_or_else(|e| panic!("round {round}: client pair broken: {e}"));
        // And the engine starts with the pair on disk (the restart a reboot would do).
        let restart = Command::new(&engine.restart).status().unwrap();
        assert!(restart.success());
        let serial = pair.leaf().unwrap().serial.to_string();
        assert!(
            wait_until(Duration::from_secs(30), || served_serial(&creds).as_deref()
                == Some(serial.as_str())),
            "round {round}: the engine does not come up with the pair on disk ({serial}): {}",
            engine.log_text()
        );
    }
    // A last agent run finishes cleanly from whatever state the kills left.
    let log = engine.dir.join("agent-final.log");
    let mut cmd = Command::new(bin("ca-client"));
    cmd.args(["agent", "--renew-now", "--out"]).arg(&creds);
    let mut agent = Proc::spawn("ca-client agent", cmd, &log);
    assert!(
        wait_until(Duration::from_secs(60), || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("next renewal planned")),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let current = Bundle::load(&tls, Layout::DOCKERD)
        .unwrap()
        .leaf()
        .unwrap()
        .serial
        .to_string();
    assert_eq!(served_serial(&creds), Some(current));
    assert!(
        agent
            .signal_and_wait(Signal::SIGTERM, Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
}

/// Regression: SIGTERM during a rotation ended the agent at once, mid restart/verify,
/// leaving the engine on the new serial while the node's cert.pem was still the old one.
#[test]
fn sigterm_during_a_rotation_lets_it_finish_then_stops() {
    use std::os::unix::fs::PermissionsExt;

    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("ca");
    init_insecure(&state);
    let serve = ServeProcess::start(&state, &["--insecure-no-passphrase"], &[]);
    let engine = Engine::start_plain("127.0.0.1");
    let creds = engine.dir.join("client");
    let tls = engine.dir.join("tls");
    let listen = format!("tcp://127.0.0.1:{}", free_port("127.0.0.1"));
    // The engine's restart, slowed down and announced, so the signal lands inside it.
    let restarting = engine.dir.join("restarting");
    let restart = engine.dir.join("slow-restart.sh");
    std::fs::write(
        &restart,
        format!(
            "#!/bin/sh\ntouch {}\nsleep 2\nexec {}\n",
            restarting.display(),
            engine.restart.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&restart, std::fs::Permissions::from_mode(0o755)).unwrap();
    switch(&state, &serve, &engine, &listen, &restart);
    let serial = |dir: &Path, layout: Layout| {
        Bundle::load(dir, layout)
            .unwrap()
            .leaf()
            .unwrap()
            .serial
            .to_string()
    };
    let before = serial(&creds, Layout::CLIENT);
    std::fs::remove_file(&restarting).unwrap();

    let log = engine.dir.join("agent.log");
    let mut cmd = Command::new(bin("ca-client"));
    cmd.args(["agent", "--renew-now", "--docker-timeout", "30s", "--out"])
        .arg(&creds);
    let mut agent = Proc::spawn("ca-client agent", cmd, &log);
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(60), || restarting.exists()),
        "the agent did not restart the engine: {}",
        read_log()
    );
    let status = agent.signal_and_wait(Signal::SIGTERM, Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}: {}",
        read_log()
    );
    let text = read_log();
    let finishing = text.find("finishing the renewal under way");
    let renewed = text.find("renewed");
    let stopped = text.find("agent stopped");
    assert!(
        finishing.is_some() && finishing < renewed && renewed < stopped,
        "{text}"
    );
    // The rotation completed: the node's files, the engine's pair and what it serves agree.
    let after = serial(&creds, Layout::CLIENT);
    assert_ne!(after, before);
    assert_eq!(serial(&tls, Layout::DOCKERD), after);
    assert_eq!(served_serial(&creds), Some(after));
}

/// A network namespace made for one test, deleted when dropped.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("dtca-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        assert!(
            Command::new("ip")
                .args(["netns", "add", &name])
                .status()
                .unwrap()
                .success()
        );
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A command run inside the namespace (nsenter execs it: the pid is the program's).
    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.name))
            .arg(program);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn a_node_whose_addresses_change_gets_a_certificate_with_the_new_names() {
    let ns = Netns::new("addr");
    // Both ends of the pair stay inside the namespace.
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    ns.ip(&["addr", "add", "10.77.1.1/24", "dev", "d0"]);
    ns.ip(&["link", "set", "d0", "up"]);
    ns.ip(&["link", "set", "d1", "up"]);
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("ca");
    init_insecure(&state);
    // The CA runs inside the namespace too (the namespace has no route out).
    let mut cmd = ns.command(&bin("ca-server"));
    cmd.args([
        "serve",
        "--insecure-no-passphrase",
        "--listen",
        "127.0.0.1:8443",
        "--state-dir",
    ])
    .arg(&state);
    let serve_log = tmp.path().join("serve.log");
    let _serve = Proc::spawn("ca-server serve", cmd, &serve_log);
    assert!(wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(&serve_log)
            .unwrap_or_default()
            .contains("ca-server listening")
    }));

    let creds = tmp.path().join("node");
    let out = ns
        .command(&bin("ca-server"))
        .args([
            "token",
            "create",
            "--quiet",
            "--role",
            "node",
            "--state-dir",
        ])
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let out = ns
        .command(&bin("ca-client"))
        .args([
            "enroll",
            "--server",
            "127.0.0.1:8443",
            "--token",
            &t,
            "--out",
        ])
        .arg(&creds)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = |creds: &Path| {
        Bundle::load(creds, Layout::CLIENT)
            .unwrap()
            .leaf()
            .unwrap()
            .ip_addresses
    };
    assert_eq!(
        names(&creds),
        vec!["10.77.1.1".parse::<std::net::IpAddr>().unwrap()]
    );

    let log = tmp.path().join("agent.log");
    let mut cmd = ns.command(&bin("ca-client"));
    cmd.args(["agent", "--out"])
        .arg(&creds)
        .env("RUST_LOG", "info,ca_client::agent=debug");
    let mut agent = Proc::spawn("ca-client agent", cmd, &log);
    assert!(wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("next renewal planned")
    }));
    let first = Bundle::load(&creds, Layout::CLIENT)
        .unwrap()
        .leaf()
        .unwrap()
        .serial;

    // Docker's bridges appear (docker0, a user network): not the node's addresses, so no
    // re-issue (regression: a new Docker network re-issued and restarted the engine).
    ns.ip(&["link", "add", "docker0", "type", "bridge"]);
    ns.ip(&["addr", "add", "172.17.0.1/16", "dev", "docker0"]);
    ns.ip(&["link", "add", "br-0123456789ab", "type", "bridge"]);
    ns.ip(&["addr", "add", "172.18.0.1/16", "dev", "br-0123456789ab"]);
    assert!(
        wait_until(Duration::from_secs(20), || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("container or virtual-network interfaces only")
        }),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("addresses changed"), "{text}");
    assert_eq!(
        Bundle::load(&creds, Layout::CLIENT)
            .unwrap()
            .leaf()
            .unwrap()
            .serial,
        first
    );

    // The node gets a new address: a certificate with it follows, long before renewal.
    ns.ip(&["addr", "add", "10.77.2.1/24", "dev", "d0"]);
    let new: std::net::IpAddr = "10.77.2.1".parse().unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || names(&creds).contains(&new)),
        "no re-issue after the address change: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // The bridges' addresses are left out of the new names.
    assert_eq!(
        names(&creds),
        vec!["10.77.1.1".parse::<std::net::IpAddr>().unwrap(), new]
    );
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("addresses changed")
    );
    assert!(
        agent
            .signal_and_wait(Signal::SIGTERM, Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
}
