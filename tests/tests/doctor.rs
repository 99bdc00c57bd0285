//! `ca-client doctor` on real nodes: a healthy switched one, then with drifted names, a
//! revoked certificate and the CA down; and a node whose engine still answers plain TCP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dtca_tests::bins::bin;
use dtca_tests::cli::{run, text, token};
use dtca_tests::docker::{Engine, free_port};
use dtca_tests::process::Proc;
use dtca_tests::serve::{ServeProcess, init_insecure};

struct Ca {
    _tmp: tempfile::TempDir,
    state: PathBuf,
    serve: ServeProcess,
}

impl Ca {
    fn start() -> Ca {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("ca");
        init_insecure(&state);
        let serve = ServeProcess::start(&state, &["--insecure-no-passphrase"], &[]);
        Ca {
            _tmp: tmp,
            state,
            serve,
        }
    }
}

fn doctor(out: &Path, engine: &Engine) -> (Output, serde_json::Value) {
    let output = Command::new(bin("ca-client"))
        .args(["doctor", "--json", "--out"])
        .arg(out)
        .env("DOCKER_HOST", format!("unix://{}", engine.socket.display()))
        .output()
        .unwrap();
    let json = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("doctor --json: {e}: {}", text(&output)));
    (output, json)
}

/// The level of check `name`.
fn level(report: &serde_json::Value, name: &str) -> String {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == name)
        .map(|c| c["level"].as_str().unwrap().to_string())
        .max_by_key(|l| match l.as_str() {
            "fail" => 2,
            "warn" => 1,
            _ => 0,
        })
        .unwrap_or_else(|| panic!("no check {name}: {report:#}"))
}

#[test]
fn doctor_on_a_healthy_node_then_drifted_revoked_and_with_the_ca_down() {
    let mut ca = Ca::start();
    let engine = Engine::start_plain("127.0.0.1");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("creds");
    let listen = format!("tcp://127.0.0.1:{}", free_port("127.0.0.1"));
    let t = token(&ca.state, &["--role", "node"]);
    let mut args: Vec<std::ffi::OsString> = vec![
        "enroll".into(),
        "--docker".into(),
        "--server".into(),
        ca.serve.addr.clone().into(),
        "--token".into(),
        t.into(),
        "--out".into(),
        out.clone().into(),
        "--san".into(),
        "127.0.0.1".into(),
        "--docker-timeout".into(),
        "20s".into(),
    ];
    args.extend(engine.switch_flags(&listen, &engine.restart));
    let switched = Command::new(bin("ca-client")).args(&args).output().unwrap();
    assert!(switched.status.success(), "switch: {}", text(&switched));

    let mut agent_cmd = Command::new(bin("ca-client"));
    agent_cmd.args(["agent", "--out"]).arg(&out);
    let mut agent = Proc::spawn("ca-client agent", agent_cmd, &tmp.path().join("agent.log"));
    let (o, report) = doctor(&out, &engine);
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    assert_eq!(o.status.code(), Some(0), "healthy node: {report:#}");
    for name in [
        "enrollment",
        "certificate",
        "engine",
        "mode",
        "plain-tcp",
        "names",
        "ca",
        "clock",
        "revocation",
        "agent",
    ] {
        assert_eq!(level(&report, name), "ok", "{name}: {report:#}");
    }
    agent.stop();

    // A name the host should have that the certificate lacks.
    let state_file = out.join("client.toml");
    let state = std::fs::read_to_string(&state_file).unwrap();
    let drifted = state.replace("extra_sans = [", "extra_sans = [\"drift.example.com\", ");
    assert_ne!(drifted, state, "{state}");
    std::fs::write(&state_file, drifted).unwrap();
    let (o, report) = doctor(&out, &engine);
    assert_eq!(o.status.code(), Some(1), "{report:#}");
    assert_eq!(level(&report, "names"), "warn", "{report:#}");
    assert_eq!(level(&report, "agent"), "warn", "{report:#}");
    std::fs::write(&state_file, state).unwrap();

    let revoke = run(
        "ca-server",
        &[
            "cert",
            "revoke",
            "--name",
            &dtca_common::net::hostname(),
            "--role",
            "node",
            "--state-dir",
            ca.state.to_str().unwrap(),
        ],
    );
    assert!(revoke.status.success(), "{}", text(&revoke));
    let (o, report) = doctor(&out, &engine);
    assert_eq!(o.status.code(), Some(2), "{report:#}");
    assert_eq!(level(&report, "revocation"), "fail", "{report:#}");
    assert_eq!(level(&report, "engine"), "ok", "{report:#}");

    ca.serve.proc.stop();
    let (o, report) = doctor(&out, &engine);
    assert_eq!(o.status.code(), Some(2), "{report:#}");
    assert_eq!(level(&report, "ca"), "fail", "{report:#}");
    assert_eq!(level(&report, "revocation"), "warn", "{report:#}");
    let human = Command::new(bin("ca-client"))
        .args(["doctor", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let human = text(&human);
    assert!(
        human.contains("FAIL ca") && human.contains("fix: "),
        "{human}"
    );
}

/// An enrolled node whose engine still listens on plain TCP: FAIL, with the fix.
#[test]
fn doctor_fails_a_node_whose_engine_still_answers_plain_tcp() {
    let ca = Ca::start();
    let engine = Engine::start_plain("127.0.0.1");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("creds");
    let t = token(&ca.state, &["--role", "node"]);
    let enrolled = run(
        "ca-client",
        &[
            "enroll",
            "--server",
            &ca.serve.addr,
            "--token",
            &t,
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(enrolled.status.success(), "{}", text(&enrolled));
    let (o, report) = doctor(&out, &engine);
    assert_eq!(o.status.code(), Some(2), "{report:#}");
    assert_eq!(level(&report, "plain-tcp"), "fail", "{report:#}");
    assert_eq!(level(&report, "mode"), "warn", "{report:#}");
    let detail = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "plain-tcp")
        .unwrap()
        .to_string();
    assert!(detail.contains(&engine.plain), "{detail}");
}
