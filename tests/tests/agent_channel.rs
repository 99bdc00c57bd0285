//! The agent channel with the real binaries: an agent's report reaches the CA's store at
//! start, and a revocation of its certificate reaches the agent within seconds (it says so
//! in its log and in `status`), over the stream it keeps open to the CA.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use dtca_tests::bins::bin;
use dtca_tests::cli::{run, stderr, token};
use dtca_tests::process::{Proc, wait_until};
use dtca_tests::serve::{ServeProcess, init_insecure};

/// What the CA's store holds of `name`'s last report: (serial, state JSON).
fn stored_report(state: &Path, name: &str) -> Option<(String, serde_json::Value)> {
    let db = rusqlite::Connection::open_with_flags(
        state.join("store.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .ok()?;
    db.query_row(
        "SELECT serial, state FROM agent_reports WHERE name = ?1",
        [name],
        |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)),
    )
    .ok()
    .map(|(serial, state)| (serial, serde_json::from_str(&state).unwrap()))
}

fn status(out: &Path) -> serde_json::Value {
    let st = Command::new(bin("ca-client"))
        .args(["status", "--json", "--out"])
        .arg(out)
        .output()
        .unwrap();
    serde_json::from_slice(&st.stdout).unwrap_or(serde_json::Value::Null)
}

#[test]
fn the_agent_reports_and_hears_its_revocation_within_seconds() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("ca");
    init_insecure(&state);
    let serve = ServeProcess::start(&state, &["--insecure-no-passphrase"], &[]);
    let creds = tmp.path().join("node");
    let t = token(&state, &["--role", "node"]);
    let out = run(
        "ca-client",
        &[
            "enroll",
            "--server",
            &serve.addr,
            "--token",
            &t,
            "--out",
            creds.to_str().unwrap(),
            "--no-default-sans",
            "--san",
            "127.0.0.1",
            "--name",
            "chan-1",
        ],
    );
    assert!(out.status.success(), "enroll: {}", stderr(&out));
    let serial = status(&creds)["serial"]
        .as_str()
        .map(str::to_string)
        .expect("status names the serial");

    let log = tmp.path().join("agent.log");
    let mut cmd = Command::new(bin("ca-client"));
    cmd.args(["agent", "--out"]).arg(&creds);
    let mut agent = Proc::spawn("ca-client agent", cmd, &log);

    // The report at start lands in the CA's store, for the current certificate.
    assert!(
        wait_until(Duration::from_secs(20), || stored_report(&state, "chan-1")
            .is_some()),
        "no report stored; agent log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let (reported_serial, report) = stored_report(&state, "chan-1").unwrap();
    assert!(
        reported_serial.eq_ignore_ascii_case(&serial),
        "{reported_serial} vs {serial}"
    );
    assert!(report.is_object(), "{report}");

    // Give the stream time to be open, then revoke: the agent hears it over the channel,
    // long before any renewal (the certificate has days left).
    assert!(
        wait_until(Duration::from_secs(20), || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("agent channel open")),
        "the channel never opened; agent log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let revoke = run(
        "ca-server",
        &[
            "cert",
            "revoke",
            "--name",
            "chan-1",
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    assert!(revoke.status.success(), "revoke: {}", stderr(&revoke));
    let heard = wait_until(Duration::from_secs(30), || {
        status(&creds)["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("revoked"))
    });
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        heard,
        "status never said revoked: {}\nagent log:\n{text}",
        status(&creds)
    );
    assert!(text.contains("revoked this node's certificate"), "{text}");
    assert!(
        agent.try_wait().is_none(),
        "the agent keeps running: {text}"
    );
    agent.stop();
}
