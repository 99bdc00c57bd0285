//! The `daemon.json` plan of the docker switch: whatever file the user had, the plan keeps
//! every key dtca does not manage, leaves no plain TCP host, serves the mutual-TLS address
//! once, and planning its own output again changes nothing.

use ca_client::docker::daemon_json::{self, TlsPaths};
use dtca_common::endpoint::EngineAddr;
use serde_json::{Map, Value};

/// Keys the plan sets; every other key must come through unchanged.
const MANAGED: &[&str] = &[
    "hosts",
    "tls",
    "tlsverify",
    "tlscacert",
    "tlscert",
    "tlskey",
    "live-restore",
];

/// Input: sections split by `--` lines: the listen address (`tcp://HOST:PORT`; the
/// default when it does not parse) and `swarm` on its second line, the `-H` values moved
/// off the unit (one a line), then the daemon.json text.
pub fn run(data: &[u8]) {
    let parts = super::sections(data);
    let head = parts.first().map(String::as_str).unwrap_or("");
    let mut head_lines = head.lines();
    let listen_text = head_lines.next().unwrap_or("");
    let swarm = head_lines.next().is_some_and(|l| l.trim() == "swarm");
    let listen = match EngineAddr::parse(listen_text) {
        Ok(addr) => {
            check_engine_addr(&addr);
            addr
        }
        Err(_) => default_listen(),
    };
    let moved: Vec<String> = parts
        .get(1)
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default();
    let existing = parts.get(2).map(String::as_str);
    let tls = TlsPaths {
        ca: "/etc/docker/tls/ca.pem".into(),
        cert: "/etc/docker/tls/server-cert.pem".into(),
        key: "/etc/docker/tls/server-key.pem".into(),
    };
    let Ok(plan) = daemon_json::plan(existing, &moved, &tls, &listen, swarm) else {
        return;
    };
    let before = match daemon_json::parse(existing) {
        Ok(map) => map,
        Err(e) => panic!("plan accepted a file that parse refuses: {e}"),
    };
    let after = object(&plan.text);
    for (key, value) in &before {
        if !MANAGED.contains(&key.as_str()) {
            assert_eq!(after.get(key), Some(value), "key {key:?} was not kept");
        }
    }
    for key in after.keys() {
        assert!(
            before.contains_key(key) || MANAGED.contains(&key.as_str()),
            "key {key:?} appeared from nowhere"
        );
    }
    let hosts: Vec<&str> = match after.get("hosts") {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        other => panic!("hosts is not a list of strings: {other:?}"),
    };
    assert_eq!(
        hosts, plan.hosts,
        "Plan::hosts differs from the file's hosts"
    );
    let listen_text = listen.to_string();
    assert_eq!(
        hosts.iter().filter(|h| **h == listen_text).count(),
        1,
        "the listen address is not in hosts exactly once: {hosts:?}"
    );
    for host in &hosts {
        if host.trim().starts_with("tcp://") {
            assert_eq!(*host, listen_text, "a plain TCP host was left: {host}");
        }
    }
    assert!(
        hosts
            .iter()
            .any(|h| h.starts_with("unix://") || h.starts_with("fd://")),
        "no local socket left: {hosts:?}"
    );
    assert!(
        !plan.removed_tcp.contains(&listen),
        "the listen address is among the removed ones"
    );
    assert_eq!(after.get("tlsverify"), Some(&Value::Bool(true)));
    assert_eq!(after.get("tls"), Some(&Value::Bool(true)));
    if swarm {
        assert_ne!(
            after.get("live-restore"),
            Some(&Value::Bool(true)),
            "live-restore on in swarm mode"
        );
    } else {
        assert_eq!(after.get("live-restore"), Some(&Value::Bool(true)));
    }

    let again = match daemon_json::plan(Some(&plan.text), &[], &tls, &listen, swarm) {
        Ok(p) => p,
        Err(e) => panic!("the plan's own output is refused: {e}"),
    };
    assert_eq!(again.text, plan.text, "planning twice is not idempotent");
    assert!(
        again.removed_tcp.is_empty(),
        "a second plan removes hosts again"
    );
    assert!(
        daemon_json::with_live_restore(existing).is_ok(),
        "with_live_restore refuses what plan accepted"
    );
}

fn object(text: &str) -> Map<String, Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => map,
        other => panic!("the plan wrote no JSON object: {other:?}"),
    }
}

fn default_listen() -> EngineAddr {
    match EngineAddr::parse("tcp://0.0.0.0:2376") {
        Ok(addr) => addr,
        Err(e) => panic!("the default listen address does not parse: {e}"),
    }
}

/// An engine address prints in a form that parses back to itself.
pub(crate) fn check_engine_addr(addr: &EngineAddr) {
    let text = addr.to_string();
    match EngineAddr::parse(&text) {
        Ok(again) => assert_eq!(&again, addr, "{text} does not parse back to itself"),
        Err(e) => panic!("{text} does not parse: {e}"),
    }
    assert_eq!(
        EngineAddr::from_docker_host(&text).as_ref(),
        Some(addr),
        "dockerd's reading of {text} differs"
    );
}
