//! The client's first hour and day two, with the real binaries: every hint runs as
//! printed; `renew` on a switched node rotates the engine (or has the running agent do
//! it) and `status` agrees with what the engine serves; `env` lists, names the valid
//! nodes, unsets; `nodes` shows the CA's inventory; `login --watch` keeps a short login
//! fresh; JSON times are RFC 3339 and absent values null; the old flag spellings still
//! work; `scripts/demo.sh` asks only for names a node may hold.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use dtca_common::Reason;
use dtca_common::bundle::{Bundle, Layout};
use dtca_tests::bins::bin;
use dtca_tests::cli::{expect_exit, text, token};
use dtca_tests::docker::{Engine, free_port};
use dtca_tests::openssl::served_serial;
use dtca_tests::process::{Proc, wait_until};
use dtca_tests::serve::ServeProcess;
use nix::sys::signal::Signal;
use serde_json::Value;

/// A CA on a real process, and an operator's docker configuration directory.
struct Ca {
    tmp: tempfile::TempDir,
    state: PathBuf,
    serve: ServeProcess,
    docker_config: PathBuf,
}

impl Ca {
    fn start() -> Ca {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("ca");
        let serve = ServeProcess::init_and_start(&state);
        let docker_config = tmp.path().join("docker-config");
        std::fs::create_dir_all(&docker_config).unwrap();
        Ca {
            tmp,
            state,
            serve,
            docker_config,
        }
    }

    /// `ca-client ARGS` as the operator (their DOCKER_CONFIG).
    fn client(&self, args: &[&str]) -> Output {
        self.client_cmd(args).output().unwrap()
    }

    fn client_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("ca-client"));
        cmd.args(args)
            .env("DOCKER_CONFIG", &self.docker_config)
            .env_remove("DTCA_JSON");
        cmd
    }

    /// `sh -c LINE` with the built binaries first on PATH and the operator's
    /// DOCKER_CONFIG: a printed hint, run as printed.
    fn shell(&self, line: &str) -> Output {
        Command::new("sh")
            .arg("-c")
            .arg(line)
            .env("PATH", path_with_bins())
            .env("DOCKER_CONFIG", &self.docker_config)
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CERT_PATH")
            .env_remove("DOCKER_TLS_VERIFY")
            .output()
            .unwrap()
    }

    fn login(&self, extra: &[&str]) -> Output {
        let t = token(&self.state, &["--role", "operator"]);
        let mut args = vec!["login", "--server", &self.serve.addr, "--token", &t];
        args.extend_from_slice(extra);
        self.client(&args)
    }
}

fn path_with_bins() -> String {
    format!(
        "{}:{}",
        bin("ca-client").parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(out)))
}

/// Every string under a key that names a time is RFC 3339 in UTC, whole seconds
/// (`2026-12-03T01:11:36Z`), or null.
fn assert_times(v: &Value) {
    fn walk(key: &str, v: &Value) {
        match v {
            Value::Object(map) => map.iter().for_each(|(k, v)| walk(k, v)),
            Value::Array(items) => items.iter().for_each(|v| walk(key, v)),
            Value::String(s)
                if [
                    "not_before",
                    "not_after",
                    "last_renewal",
                    "next_renewal",
                    "enrolled_at",
                    "last_report",
                    "at",
                ]
                .contains(&key) =>
            {
                let b = s.as_bytes();
                let ok = s.len() == 20
                    && b[4] == b'-'
                    && b[7] == b'-'
                    && b[10] == b'T'
                    && b[13] == b':'
                    && b[16] == b':'
                    && b[19] == b'Z'
                    && time::OffsetDateTime::parse(
                        s,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .is_ok();
                assert!(ok, "{key}: {s:?} is not RFC 3339 UTC");
            }
            _ => {}
        }
    }
    walk("", v);
}

fn serial_of(dir: &Path, layout: Layout) -> String {
    Bundle::load(dir, layout)
        .unwrap()
        .leaf()
        .unwrap()
        .serial
        .to_string()
}

/// A plain enrollment prints the agent's command; run as printed, it starts and plans
/// the next renewal. `--json` results and `check`/`status` JSON have RFC 3339 times and
/// nulls for what does not apply; the renamed flags and variables answer to their old
/// names too.
#[test]
fn enroll_says_how_to_start_the_agent_and_json_is_rfc3339_with_nulls() {
    let ca = Ca::start();
    let dir = ca.tmp.path().join("node one");
    let dir_s = dir.to_str().unwrap();
    let t = token(&ca.state, &["--role", "node"]);
    let out = ca.client(&[
        "enroll",
        "--server",
        &ca.serve.addr,
        "--token",
        &t,
        "--no-default-sans",
        "--san",
        "127.0.0.1",
        "--state-dir",
        dir_s,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    let hint = printed
        .lines()
        .find_map(|l| l.split_once("keep it fresh (renewals, engine rotation): "))
        .map(|(_, cmd)| cmd.to_string())
        .unwrap_or_else(|| panic!("no agent hint: {printed}"));
    assert!(hint.starts_with("ca-client agent --state-dir '"), "{hint}");
    let log = ca.tmp.path().join("agent.log");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("exec {hint}"))
        .env("PATH", path_with_bins());
    let mut agent = Proc::spawn("the printed agent command", cmd, &log);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(20), || read()
            .contains("next renewal planned")),
        "{}",
        read()
    );
    // status --json: the agent's plan, for this certificate, in RFC 3339; the engine's
    // keys all there, null (not switched).
    let status = json(&ca.client(&["status", "--json", "--state-dir", dir_s]));
    assert_times(&status);
    assert!(status["next_renewal"].is_string(), "{status:#}");
    assert!(status["last_renewal"].is_null(), "{status:#}");
    assert!(status["last_error"].is_null(), "{status:#}");
    for key in [
        "listen",
        "advertise",
        "served_serial",
        "error",
        "failed_switch",
    ] {
        assert!(
            status["engine"].get(key).is_some_and(Value::is_null),
            "engine.{key}: {status:#}"
        );
    }
    assert!(
        agent
            .signal_and_wait(Signal::SIGTERM, Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );

    // check --json; the old spellings of --state-dir and --expiring-within (flags,
    // variables) are the same settings.
    let check = ca.client(&[
        "check",
        "--json",
        "--expiring-within",
        "1h",
        "--state-dir",
        dir_s,
    ]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    let checked = json(&check);
    assert_times(&checked);
    assert_eq!(checked["status"], "OK");
    assert!(checked["certificates"][0]["problem"].is_null());
    let warned = |out: Output| out.status.code();
    assert_eq!(
        warned(ca.client(&["check", "--warn-within", "400d", "--out", dir_s])),
        Some(1),
        "--warn-within and --out"
    );
    assert_eq!(
        warned(
            ca.client_cmd(&["check"])
                .env("DTCA_OUT", &dir)
                .env("DTCA_WARN_WITHIN", "400d")
                .output()
                .unwrap()
        ),
        Some(1),
        "DTCA_OUT and DTCA_WARN_WITHIN"
    );
    assert_eq!(
        warned(
            ca.client_cmd(&["check"])
                .env("DTCA_STATE_DIR", &dir)
                .env("DTCA_EXPIRING_WITHIN", "400d")
                .output()
                .unwrap()
        ),
        Some(1)
    );
    let config = ca.tmp.path().join("client.toml");
    std::fs::write(
        &config,
        format!("out = {:?}\nwarn_within = \"400d\"\n", dir_s),
    )
    .unwrap();
    assert_eq!(
        warned(ca.client(&["--config", config.to_str().unwrap(), "check"])),
        Some(1),
        "old keys in the config file"
    );
    // The old spellings are hidden from help.
    for (command, old) in [
        ("check", "--warn-within"),
        ("status", "--out"),
        ("enroll", "--docker-config"),
    ] {
        let help = text(&ca.client(&[command, "--help"]));
        assert!(!help.contains(old), "{command} --help shows {old}: {help}");
    }
    assert!(text(&ca.client(&["enroll", "--help"])).contains("--daemon-json"));

    // enroll --json and renew --json: the same shape, nulls where nothing applies.
    let t3 = token(&ca.state, &["--role", "node"]);
    let third = ca.tmp.path().join("third");
    let out = ca.client(&[
        "enroll",
        "--json",
        "--server",
        &ca.serve.addr,
        "--token",
        &t3,
        "--no-default-sans",
        "--san",
        "127.0.0.3",
        "--name",
        "third",
        "--state-dir",
        third.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let enrolled = json(&out);
    assert_times(&enrolled);
    assert_eq!(enrolled["result"], "enrolled");
    assert!(enrolled["engine"].is_null() && enrolled["next_renewal"].is_null());
    let renewed = json(&ca.client(&["renew", "--json", "--state-dir", third.to_str().unwrap()]));
    assert_times(&renewed);
    assert_eq!(renewed["renewed_by"], "here");
    assert!(renewed["agent_pid"].is_null());
    assert_ne!(renewed["serial"], enrolled["serial"]);
    assert_eq!(
        renewed["serial"].as_str().unwrap(),
        serial_of(&third, Layout::CLIENT)
    );
    assert!(renewed["next_renewal"].is_string(), "{renewed:#}");
}

/// `env`: no name lists the contexts, an unknown name lists the valid ones and fails
/// (exit 56), `--unset` undoes what `env NODE` set; login prints the contexts it made
/// and how to use one, and those lines run as printed.
#[test]
fn login_lists_its_contexts_and_env_lists_refuses_and_unsets() {
    let ca = Ca::start();
    let a = format!("tcp://127.0.0.1:{}", free_port("127.0.0.1"));
    let b = format!("db=tcp://127.0.0.1:{}", free_port("127.0.0.1"));
    let out = ca.login(&["--name", "alice", "--host", &a, "--host", &b]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    let first = format!("127.0.0.1-{}", a.rsplit_once(':').unwrap().1);
    assert!(
        printed.contains(&format!("Contexts made: {first} db"))
            || printed.contains(&format!("Contexts made: db {first}")),
        "{printed}"
    );
    let eval_line = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("or: "))
        .and_then(|l| l.split("   (undo").next())
        .unwrap_or_else(|| panic!("no env hint: {printed}"))
        .to_string();
    assert!(
        eval_line.starts_with("eval \"$(ca-client env "),
        "{eval_line}"
    );
    // Run as printed: the variables are set; then the printed undo clears them.
    let set = ca.shell(&format!(
        "{eval_line} && echo \"$DOCKER_HOST|$DOCKER_TLS_VERIFY|$DOCKER_CERT_PATH\""
    ));
    let line = String::from_utf8_lossy(&set.stdout).trim().to_string();
    let parts: Vec<&str> = line.split('|').collect();
    assert!(
        parts.len() == 3 && parts[0].starts_with("tcp://127.0.0.1:") && parts[1] == "1",
        "{}",
        text(&set)
    );
    assert!(Path::new(parts[2]).join("cert.pem").exists(), "{line}");
    let unset = ca.shell(&format!(
        "{eval_line} && eval \"$(ca-client env --unset)\" && test -z \"${{DOCKER_HOST+x}}${{DOCKER_TLS_VERIFY+x}}${{DOCKER_CERT_PATH+x}}\" && echo clean"
    ));
    assert_eq!(
        String::from_utf8_lossy(&unset.stdout).trim(),
        "clean",
        "{}",
        text(&unset)
    );

    // No name: the list, for people and as JSON.
    let list = ca.client(&["env"]);
    assert!(list.status.success(), "{}", text(&list));
    let listed = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(listed.contains("db") && listed.contains(&first), "{listed}");
    let listed = json(&ca.client(&["env", "--json"]));
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec![first.as_str(), "db"]);
    assert_eq!(listed[0]["cluster"], "cli");

    // An unknown name: exit 56, one error line naming the valid ones.
    let unknown = ca.client(&["env", "nope"]);
    expect_exit(&unknown, Reason::UnknownNode);
    assert_eq!(unknown.status.code(), Some(56));
    let message = text(&unknown);
    assert!(
        message.contains("db") && message.contains(&first),
        "{message}"
    );

    // env NODE --json: the same values the exports carry.
    let one = json(&ca.client(&["env", "db", "--json"]));
    assert_eq!(one["docker_host"], b.split_once('=').unwrap().1);
    assert_eq!(one["docker_tls_verify"], "1");

    // login --json: the result in one object.
    let out = ca.login(&["--name", "bob", "--json", "--host", &a]);
    assert!(out.status.success(), "{}", text(&out));
    let logged = json(&out);
    assert_times(&logged);
    assert_eq!(logged["identity"], "dtca://cli/operator/bob");
    assert!(
        logged["contexts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == first
                && c["outcome"] == "updated"
                && c["owner_cluster"].is_null()),
        "{logged:#}"
    );
}

/// `login --watch` renews a short login by itself (contexts' files rewritten), and stops
/// cleanly on SIGTERM.
#[test]
fn login_watch_keeps_a_short_login_fresh_until_stopped() {
    let ca = Ca::start();
    let host = format!("tcp://127.0.0.1:{}", free_port("127.0.0.1"));
    let t = token(&ca.state, &["--role", "operator", "--cert-ttl", "20s"]);
    let log = ca.tmp.path().join("watch.log");
    let mut cmd = ca.client_cmd(&[
        "login",
        "--watch",
        "--json",
        "--server",
        &ca.serve.addr,
        "--token",
        &t,
        "--name",
        "carol",
        "--host",
        &host,
    ]);
    cmd.env("RUST_LOG", "warn");
    let mut watch = Proc::spawn("ca-client login --watch", cmd, &log);
    let lines = || -> Vec<Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    // Logged in, then renewed twice (at 50-70 % of 20 s each time) without a hand on it.
    assert!(
        wait_until(Duration::from_secs(60), || lines().len() >= 3),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let results = lines();
    assert_eq!(results[0]["result"], "logged in");
    assert_eq!(results[1]["result"], "renewed login");
    let serials: Vec<&str> = results
        .iter()
        .map(|r| r["serial"].as_str().unwrap())
        .collect();
    assert!(
        serials[0] != serials[1] && serials[1] != serials[2],
        "{serials:?}"
    );
    for r in &results {
        assert_times(r);
    }
    // The files follow: the login's and the context's copy hold a current serial.
    let creds = ca.docker_config.join("dtca/cli");
    let now = serial_of(&creds, Layout::CLIENT);
    assert!(serials.contains(&now.as_str()), "{now} {serials:?}");
    let exports = json(&ca.client(&["env", "--json"]));
    assert_eq!(
        exports[0]["name"],
        format!("127.0.0.1-{}", host.rsplit_once(':').unwrap().1)
    );
    let status = watch.signal_and_wait(Signal::SIGTERM, Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

/// The heart of it: `renew` on a node switched with `--docker` rotates the engine (the
/// served serial, read with openssl, is the new one), `status` agrees on the serial and
/// plans the next renewal for it; with an agent running, `renew` hands the renewal to it.
/// `nodes` lists the node with its engine address, mode and serial.
#[test]
fn renew_on_a_switched_node_rotates_the_engine_and_status_agrees() {
    let ca = Ca::start();
    let engine = Engine::start_plain("127.0.0.1");
    let port = free_port("127.0.0.1");
    let listen = format!("tcp://127.0.0.1:{port}");
    let served = || served_serial(&format!("127.0.0.1:{port}"));
    let creds = engine.dir.join("client");
    let creds_s = creds.to_str().unwrap().to_string();
    let t = token(&ca.state, &["--role", "node", "--name", "web-1"]);
    // The new spellings (--state-dir, --daemon-json).
    let out = engine
        .enroll_command(&ca.serve.addr, &t, &creds, &listen, &engine.restart)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("ca-client agent --state-dir {creds_s}")),
        "{}",
        text(&out)
    );
    let first = serial_of(&creds, Layout::CLIENT);
    assert!(served().is_some_and(|s| s.eq_ignore_ascii_case(&first)));

    // No agent: renew here, and the engine rotates onto the new pair.
    let out = ca.client(&["renew", "--state-dir", &creds_s, "--docker-timeout", "30s"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("rotated onto it"), "{}", text(&out));
    let second = serial_of(&creds, Layout::CLIENT);
    assert_ne!(second, first);
    assert_eq!(serial_of(&engine.dir.join("tls"), Layout::DOCKERD), second);
    let on_wire = served().unwrap_or_default();
    assert!(
        on_wire.eq_ignore_ascii_case(&second),
        "served {on_wire}, files {second}"
    );
    let status = json(&ca.client(&["status", "--json", "--state-dir", &creds_s]));
    assert_times(&status);
    assert_eq!(status["serial"], second.as_str());
    assert_eq!(status["engine"]["served_serial"], second.as_str());
    let next = time::OffsetDateTime::parse(
        status["next_renewal"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    // 50-70 % of the life counted from issuance (the CA backdates by 5 minutes).
    let leaf = Bundle::load(&creds, Layout::CLIENT)
        .unwrap()
        .leaf()
        .unwrap();
    let issued = leaf.not_before + time::Duration::minutes(5);
    let life = leaf.not_after - issued;
    assert!(
        next >= issued + life * 0.5 - time::Duration::seconds(1)
            && next <= issued + life * 0.7 + time::Duration::seconds(1),
        "{next} for {} .. {}",
        leaf.not_before,
        leaf.not_after
    );
    let text_status = text(&ca.client(&["status", "--state-dir", &creds_s]));
    assert!(
        text_status.contains(&format!("answering with certificate {second}"))
            && !text_status.contains("not planned"),
        "{text_status}"
    );

    // An agent runs: renew hands the renewal to it (one rotation at a time).
    let log = engine.dir.join("agent.log");
    let mut cmd = Command::new(bin("ca-client"));
    cmd.args(["agent", "--docker-timeout", "30s", "--state-dir", &creds_s]);
    let mut agent = Proc::spawn("ca-client agent", cmd, &log);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(30), || read()
            .contains("next renewal planned")),
        "{}",
        read()
    );
    let out = ca.client(&[
        "renew",
        "--json",
        "--state-dir",
        &creds_s,
        "--docker-timeout",
        "30s",
    ]);
    assert!(out.status.success(), "{}\n{}", text(&out), read());
    let renewed = json(&out);
    assert_eq!(renewed["renewed_by"], "agent", "{renewed:#}");
    assert_eq!(renewed["agent_pid"], agent.pid());
    let third = serial_of(&creds, Layout::CLIENT);
    assert_eq!(renewed["serial"], third.as_str());
    assert!(served().is_some_and(|s| s.eq_ignore_ascii_case(&third)));
    assert!(
        read().contains("`ca-client renew` asked for it"),
        "{}",
        read()
    );
    let status = json(&ca.client(&["status", "--json", "--state-dir", &creds_s]));
    assert_eq!(status["engine"]["served_serial"], third.as_str());
    assert!(status["next_renewal"].is_string());
    assert_eq!(status["next_renewal"], renewed["next_renewal"]);

    // nodes: the inventory as an operator sees it.
    let out = ca.login(&["--name", "dave"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        wait_until(Duration::from_secs(20), || {
            let nodes = json(&ca.client(&["nodes", "--json"]));
            nodes[0]["mode"] == "native" && nodes[0]["serial"] == third.as_str()
        }),
        "{}",
        text(&ca.client(&["nodes", "--json"]))
    );
    let nodes = json(&ca.client(&["nodes", "--json"]));
    assert_times(&nodes);
    assert_eq!(nodes[0]["name"], "web-1");
    assert_eq!(nodes[0]["endpoint"], listen.as_str());
    assert!(nodes[0]["last_report"].is_string());
    let table = text(&ca.client(&["nodes"]));
    assert!(
        table.contains("web-1") && table.contains(&listen) && table.contains("native"),
        "{table}"
    );

    assert!(
        agent
            .signal_and_wait(Signal::SIGTERM, Duration::from_secs(30))
            .is_some_and(|s| s.success())
    );
}

/// `scripts/demo.sh`, the README's first command, asks only for names a node may hold:
/// addresses, or DNS names of hosts (the CA and the client refuse `localhost` and names
/// that are addresses written as names, and the demo stopped at its enrollment when it
/// still asked for `localhost`).
#[test]
fn the_demo_asks_only_for_names_a_node_may_hold() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/demo.sh");
    let text = std::fs::read_to_string(&script).unwrap();
    let words: Vec<&str> = text.split_whitespace().collect();
    let sans: Vec<String> = words
        .windows(2)
        .filter(|w| w[0] == "--san")
        .map(|w| w[1].trim_matches(|c| c == '"' || c == '\'').to_string())
        .collect();
    assert!(!sans.is_empty(), "no --san in {}", script.display());
    // The client's own reading of `--san` (what `enroll` does with them), no names of
    // this host added.
    if let Err(e) = ca_client::sans::Wanted::collect(&sans, false) {
        panic!("scripts/demo.sh asks for {sans:?}: {e}");
    }
}
