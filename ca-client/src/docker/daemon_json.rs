//! Editing `daemon.json` as JSON: every key the user had stays; dtca sets the TLS keys,
//! the hosts (unix socket plus the mutual-TLS address, no plain TCP) and live-restore.

use std::path::{Path, PathBuf};

use dtca_common::endpoint::EngineAddr;
use serde_json::{Map, Value};

/// Where dockerd's TLS files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    /// `tlscacert`: the root.
    pub ca: PathBuf,
    /// `tlscert`: leaf + intermediate.
    pub cert: PathBuf,
    /// `tlskey`: the key.
    pub key: PathBuf,
}

/// The edited configuration and what it implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The new `daemon.json`.
    pub text: String,
    /// The hosts it sets.
    pub hosts: Vec<String>,
    /// Plain TCP hosts that were removed (they must refuse connections afterwards).
    pub removed_tcp: Vec<EngineAddr>,
    /// The unix socket to reach the engine locally, when one is configured.
    pub socket: Option<PathBuf>,
    /// Whether it turns live-restore on.
    pub live_restore: bool,
}

/// The keys of a daemon.json (absent or empty: none).
///
/// # Errors
/// [`PlanError`] when it is not valid JSON or not a JSON object.
pub fn parse(existing: Option<&str>) -> Result<Map<String, Value>, PlanError> {
    match existing.map(str::trim) {
        None | Some("") => Ok(Map::new()),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(PlanError("daemon.json is not a JSON object".into())),
            Err(e) => Err(PlanError(format!("daemon.json is not valid JSON: {e}"))),
        },
    }
}

/// `existing` with only `live-restore` turned on: what a running dockerd can reload on
/// SIGHUP before the real switch (a reload that also changed `hosts` would be refused
/// while dockerd has `-H` on its command line).
///
/// # Errors
/// [`PlanError`] when `existing` is not a JSON object.
pub fn with_live_restore(existing: Option<&str>) -> Result<String, PlanError> {
    let mut config = parse(existing)?;
    config.insert("live-restore".into(), Value::Bool(true));
    serde_json::to_string_pretty(&Value::Object(config))
        .map(|t| t + "\n")
        .map_err(|e| PlanError(e.to_string()))
}

/// Default unix socket of dockerd.
pub const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";

/// Computes the new `daemon.json`.
///
/// `existing` is the current file (None when absent), `moved_hosts` the `-H` values taken
/// off the systemd unit's command line (they move here), `listen` the mutual-TLS address,
/// `swarm` whether the engine is in swarm mode (dockerd refuses live-restore there).
///
/// # Errors
/// [`PlanError`] when the file is not a JSON object or has a non-list `hosts`.
pub fn plan(
    existing: Option<&str>,
    moved_hosts: &[String],
    tls: &TlsPaths,
    listen: &EngineAddr,
    swarm: bool,
) -> Result<Plan, PlanError> {
    plan_for(existing, moved_hosts, Some(tls), listen, swarm)
}

/// TLS keys dockerd reads; guard mode removes them all (dockerd serves no TLS there).
const TLS_KEYS: [&str; 5] = ["tls", "tlsverify", "tlscacert", "tlscert", "tlskey"];

/// [`plan`] for either engine mode: `tls` `Some`, dockerd serves mutual TLS on `listen`
/// (native); `None`, dockerd keeps only its unix socket and no TLS keys, and `listen` is
/// left for the guard (guard mode).
///
/// # Errors
/// As [`plan`].
pub fn plan_for(
    existing: Option<&str>,
    moved_hosts: &[String],
    tls: Option<&TlsPaths>,
    listen: &EngineAddr,
    swarm: bool,
) -> Result<Plan, PlanError> {
    let mut config = parse(existing)?;
    let mut before: Vec<String> = match config.get("hosts") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| PlanError("daemon.json: hosts must be a list of strings".into()))
            })
            .collect::<Result<_, _>>()?,
        Some(Value::String(one)) => vec![one.clone()],
        Some(_) => {
            return Err(PlanError(
                "daemon.json: hosts must be a list of strings".into(),
            ));
        }
    };
    before.extend(moved_hosts.iter().cloned());

    let mut hosts: Vec<String> = Vec::new();
    let mut removed_tcp = Vec::new();
    for host in before {
        let host = host.trim().to_string();
        match tcp_host(&host) {
            // A tcp:// host dockerd could not read is dropped with the others.
            Some(tcp) => {
                if let Some(addr) = tcp.filter(|a| a != listen && !removed_tcp.contains(a)) {
                    removed_tcp.push(addr);
                }
            }
            None if !hosts.contains(&host) => hosts.push(host),
            None => {}
        }
    }
    if !hosts
        .iter()
        .any(|h| h.starts_with("unix://") || h.starts_with("fd://"))
    {
        hosts.insert(0, DEFAULT_SOCKET.to_string());
    }
    if tls.is_some() {
        hosts.push(listen.to_string());
    }
    let socket = hosts
        .iter()
        .find_map(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .or_else(|| {
            hosts
                .iter()
                .any(|h| h.starts_with("fd://"))
                .then(|| PathBuf::from("/var/run/docker.sock"))
        });

    config.insert("hosts".into(), Value::from(hosts.clone()));
    match tls {
        Some(tls) => {
            config.insert("tls".into(), Value::Bool(true));
            config.insert("tlsverify".into(), Value::Bool(true));
            config.insert("tlscacert".into(), path_value(&tls.ca));
            config.insert("tlscert".into(), path_value(&tls.cert));
            config.insert("tlskey".into(), path_value(&tls.key));
        }
        None => {
            for key in TLS_KEYS {
                config.shift_remove(key);
            }
        }
    }
    let live_restore = !swarm;
    if swarm {
        // dockerd refuses live-restore in swarm mode; a `true` here would stop it starting.
        if config.get("live-restore") == Some(&Value::Bool(true)) {
            config.insert("live-restore".into(), Value::Bool(false));
        }
    } else {
        config.insert("live-restore".into(), Value::Bool(true));
    }
    let mut text = serde_json::to_string_pretty(&Value::Object(config))
        .map_err(|e| PlanError(e.to_string()))?;
    text.push('\n');
    Ok(Plan {
        text,
        hosts,
        removed_tcp,
        socket,
        live_restore,
    })
}

/// The hosts a `daemon.json` text lists (for reading the engine's current state).
pub fn hosts_of(text: &str) -> Vec<String> {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.get("hosts").cloned())
        .map(|h| match h {
            Value::Array(items) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Value::String(one) => vec![one],
            _ => Vec::new(),
        })
        .unwrap_or_default()
}

/// Whether a `daemon.json` text turns on `tlsverify`.
pub fn tlsverify_of(text: &str) -> bool {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.get("tlsverify").and_then(Value::as_bool))
        .unwrap_or(false)
}

/// The plain TCP addresses among a daemon.json's (or a unit's) hosts, read with dockerd's
/// defaults.
pub fn tcp_hosts(hosts: &[String]) -> Vec<EngineAddr> {
    hosts.iter().filter_map(|h| tcp_host(h).flatten()).collect()
}

/// `None` for another scheme; `Some(None)` for a `tcp://` host dockerd could not read.
fn tcp_host(host: &str) -> Option<Option<EngineAddr>> {
    host.trim()
        .starts_with("tcp://")
        .then(|| EngineAddr::from_docker_host(host))
}

fn path_value(path: &Path) -> Value {
    Value::String(path.display().to_string())
}

/// A `daemon.json` that cannot be edited safely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    fn tls() -> TlsPaths {
        TlsPaths {
            ca: "/etc/docker/tls/ca.pem".into(),
            cert: "/etc/docker/tls/server-cert.pem".into(),
            key: "/etc/docker/tls/server-key.pem".into(),
        }
    }

    fn listen(text: &str) -> EngineAddr {
        EngineAddr::parse(text).unwrap()
    }

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    /// Found by the daemon_json fuzz target: serde_json's default float parser came back
    /// with 1.9999999999999997e50 for 2.0e50, so the switch changed a user's number.
    #[test]
    fn a_number_in_the_users_file_keeps_its_exact_value() {
        let existing = r#"{"x":2.0e50,"y":0.1,"z":123456789012345678901234567890}"#;
        let written = plan(
            Some(existing),
            &[],
            &tls(),
            &listen("tcp://0.0.0.0:2376"),
            false,
        )
        .unwrap()
        .text;
        let (before, after) = (parse(existing), parse(&written));
        for key in ["x", "y", "z"] {
            assert_eq!(
                before[key].as_f64().map(f64::to_bits),
                after[key].as_f64().map(f64::to_bits),
                "{key}: {written}"
            );
        }
        assert_eq!(after["x"].as_f64(), Some(2.0e50));
    }

    #[test]
    fn live_restore_alone_changes_nothing_else() {
        let existing = r#"{"hosts":["tcp://0.0.0.0:2375"],"debug":true}"#;
        let v = parse(&with_live_restore(Some(existing)).unwrap());
        assert_eq!(v["live-restore"], true);
        assert_eq!(v["hosts"][0], "tcp://0.0.0.0:2375");
        assert_eq!(v["debug"], true);
        assert_eq!(
            parse(&with_live_restore(None).unwrap())["live-restore"],
            true
        );
        assert!(with_live_restore(Some("[1]")).is_err());
    }

    #[test]
    fn keeps_every_unrelated_key_and_replaces_plain_tcp() {
        let existing = r#"{"log-driver":"json-file","log-opts":{"max-size":"10m"},"hosts":["unix:///var/run/docker.sock","tcp://0.0.0.0:2375"],"data-root":"/srv/docker"}"#;
        let plan = plan(
            Some(existing),
            &[],
            &tls(),
            &listen("tcp://0.0.0.0:2376"),
            false,
        )
        .unwrap();
        let v = parse(&plan.text);
        assert_eq!(v["log-driver"], "json-file");
        assert_eq!(v["log-opts"]["max-size"], "10m");
        assert_eq!(v["data-root"], "/srv/docker");
        assert_eq!(
            v["hosts"],
            serde_json::json!(["unix:///var/run/docker.sock", "tcp://0.0.0.0:2376"])
        );
        assert_eq!(v["tls"], true);
        assert_eq!(v["tlsverify"], true);
        assert_eq!(v["tlscert"], "/etc/docker/tls/server-cert.pem");
        assert_eq!(v["live-restore"], true);
        assert_eq!(plan.removed_tcp, vec![listen("tcp://0.0.0.0:2375")]);
        assert_eq!(plan.socket, Some(PathBuf::from("/var/run/docker.sock")));
        // Keys keep their order; ours come after.
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys[0], "log-driver");
    }

    #[test]
    fn absent_file_gets_the_default_socket() {
        let plan = plan(None, &[], &tls(), &listen("tcp://0.0.0.0:2376"), false).unwrap();
        assert_eq!(plan.hosts, vec![DEFAULT_SOCKET, "tcp://0.0.0.0:2376"]);
    }

    #[test]
    fn hosts_moved_from_the_unit_keep_socket_activation() {
        let moved = vec!["fd://".to_string(), "tcp://0.0.0.0:2375".to_string()];
        let plan = plan(
            Some("{}"),
            &moved,
            &tls(),
            &listen("tcp://0.0.0.0:2376"),
            false,
        )
        .unwrap();
        assert_eq!(plan.hosts, vec!["fd://", "tcp://0.0.0.0:2376"]);
        assert_eq!(plan.removed_tcp, vec![listen("tcp://0.0.0.0:2375")]);
        assert_eq!(plan.socket, Some(PathBuf::from("/var/run/docker.sock")));
    }

    #[test]
    fn swarm_engines_do_not_get_live_restore() {
        let plan = plan(
            Some(r#"{"live-restore":true}"#),
            &[],
            &tls(),
            &listen("tcp://0.0.0.0:2376"),
            true,
        )
        .unwrap();
        assert_eq!(parse(&plan.text)["live-restore"], false);
        let plan =
            super::plan(Some("{}"), &[], &tls(), &listen("tcp://0.0.0.0:2376"), true).unwrap();
        assert!(parse(&plan.text).get("live-restore").is_none());
    }

    #[test]
    fn refuses_files_it_cannot_edit_safely() {
        for bad in ["[1,2]", "{not json", r#"{"hosts": 5}"#, r#"{"hosts": [1]}"#] {
            assert!(
                plan(Some(bad), &[], &tls(), &listen("tcp://0.0.0.0:2376"), false).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn is_idempotent() {
        let once = plan(
            Some(r#"{"hosts":["unix:///run/d.sock","tcp://127.0.0.1:2375"]}"#),
            &[],
            &tls(),
            &listen("tcp://127.0.0.1:2376"),
            false,
        )
        .unwrap();
        let twice = plan(
            Some(&once.text),
            &[],
            &tls(),
            &listen("tcp://127.0.0.1:2376"),
            false,
        )
        .unwrap();
        assert_eq!(once.text, twice.text);
        assert!(twice.removed_tcp.is_empty());
    }

    #[test]
    fn reads_tcp_hosts_with_dockerds_defaults() {
        let hosts = [
            "tcp://10.0.0.1".to_string(),
            "tcp://10.0.0.1:2376/".to_string(),
            "unix:///var/run/docker.sock".to_string(),
            "fd://".to_string(),
        ];
        assert_eq!(
            tcp_hosts(&hosts),
            vec![listen("tcp://10.0.0.1:2375"), listen("tcp://10.0.0.1:2376")]
        );
    }

    #[test]
    fn guard_mode_keeps_only_the_socket_and_no_tls_keys() {
        let existing = r#"{"hosts":["unix:///run/d.sock","tcp://0.0.0.0:2376","tcp://0.0.0.0:2375"],"tls":true,"tlsverify":true,"tlscacert":"/x/ca.pem","tlscert":"/x/c.pem","tlskey":"/x/k.pem","debug":true}"#;
        let guard_addr = listen("tcp://0.0.0.0:2376");
        let guarded = plan_for(Some(existing), &[], None, &guard_addr, false).unwrap();
        let v = parse(&guarded.text);
        assert_eq!(v["hosts"], serde_json::json!(["unix:///run/d.sock"]));
        for key in TLS_KEYS {
            assert!(v.get(key).is_none(), "{key} left in {}", guarded.text);
        }
        assert_eq!(v["debug"], true);
        assert_eq!(v["live-restore"], true);
        // The guard's address is not among those that must refuse: the guard takes it.
        assert_eq!(guarded.removed_tcp, vec![listen("tcp://0.0.0.0:2375")]);
        // Back to native: dockerd takes the address and its TLS keys again.
        let back = plan(Some(&guarded.text), &[], &tls(), &guard_addr, false).unwrap();
        let v = parse(&back.text);
        assert_eq!(
            v["hosts"],
            serde_json::json!(["unix:///run/d.sock", "tcp://0.0.0.0:2376"])
        );
        assert_eq!(v["tlsverify"], true);
    }

    #[test]
    fn the_same_plain_address_written_twice_is_removed_once() {
        let existing = r#"{"hosts":["tcp://0.0.0.0:2375","tcp://0.0.0.0"]}"#;
        let plan = plan(
            Some(existing),
            &[],
            &tls(),
            &listen("tcp://0.0.0.0:2376"),
            false,
        )
        .unwrap();
        assert_eq!(plan.removed_tcp, vec![listen("tcp://0.0.0.0:2375")]);
    }
}
