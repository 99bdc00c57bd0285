//! A node in any state gets back to a working enrollment: default names fitted to what
//! the token allows, an explicit token winning over a stale enrollment, no empty
//! directories left by a failed enroll. Real `ca-server serve` and `ca-client`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Output;

use dtca_common::Reason;
use dtca_tests::cli::{expect_exit, operator, run, text, token};
use dtca_tests::docker::{Engine, free_port};
use dtca_tests::serve::{ServeProcess, init_insecure};

struct Ca {
    _tmp: tempfile::TempDir,
    state: std::path::PathBuf,
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

fn enroll(ca: &Ca, token: &str, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "enroll",
        "--server",
        &ca.serve.addr,
        "--token",
        token,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run("ca-client", &args)
}

fn token_uses(ca: &Ca) -> String {
    text(&run(
        "ca-server",
        &["token", "list", "--state-dir", ca.state.to_str().unwrap()],
    ))
}

/// The README's example token (`--allow-dns '*.nodes.example.com' --allow-ip
/// 10.0.0.0/8`) on a host whose name and addresses are outside it: the default names
/// are left out and said so, a `--san` outside it is refused with a hint, and nothing
/// is spent or created by a refusal.
#[test]
fn default_names_outside_the_token_are_left_out_and_given_ones_refused() {
    let ca = Ca::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = token(
        &ca.state,
        &[
            "--role",
            "node",
            "--allow-dns",
            "*.nodes.example.com",
            "--allow-ip",
            "10.0.0.0/8",
        ],
    );
    let before = token_uses(&ca);

    // Only the host's own names: none is inside, so refused before spending.
    let out = tmp.path().join("a/b/creds");
    let refused = enroll(&ca, &t, &out, &[]);
    expect_exit(&refused, Reason::NameNotAllowed);
    assert!(
        text(&refused).contains("--san"),
        "no hint: {}",
        text(&refused)
    );
    assert!(
        !tmp.path().join("a").exists(),
        "a refused enroll left directories"
    );

    // A given name outside: refused, naming it.
    let refused = enroll(
        &ca,
        &t,
        &out,
        &[
            "--san",
            "web-1.nodes.example.com",
            "--san",
            "db.example.org",
        ],
    );
    expect_exit(&refused, Reason::NameNotAllowed);
    assert!(
        text(&refused).contains("db.example.org"),
        "{}",
        text(&refused)
    );
    assert!(!tmp.path().join("a").exists());
    assert_eq!(token_uses(&ca), before, "a refusal spent the token");

    // A name inside: enrolled, with the host's own names left out and listed.
    let ok = enroll(&ca, &t, &out, &["--san", "web-1.nodes.example.com"]);
    assert!(ok.status.success(), "enroll: {}", text(&ok));
    let printed = text(&ok);
    assert!(printed.contains("left out:"), "{printed}");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(printed.contains(host.trim()), "{printed}");
    let sans = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(out.join("cert.pem"))
        .output()
        .unwrap();
    let sans = String::from_utf8_lossy(&sans.stdout).to_string();
    assert!(sans.contains("DNS:web-1.nodes.example.com"), "{sans}");
    assert!(!sans.contains(&format!("DNS:{},", host.trim())), "{sans}");
}

/// `ca-client enroll --docker` for `engine` with `args` (no `--docker-*` flag but those
/// in `args`).
fn client(args: &[&std::ffi::OsStr]) -> Output {
    std::process::Command::new(dtca_tests::bins::bin("ca-client"))
        .args(args)
        .output()
        .unwrap()
}

fn docker_enroll(
    ca: &Ca,
    engine: &Engine,
    out: &Path,
    token: Option<&str>,
    restart: &Path,
    extra: &[&str],
) -> Output {
    let mut args: Vec<std::ffi::OsString> = vec![
        "enroll".into(),
        "--docker".into(),
        "--server".into(),
        ca.serve.addr.clone().into(),
        "--out".into(),
        out.into(),
        "--name".into(),
        "node-r".into(),
        "--san".into(),
        engine.ip.clone().into(),
        "--docker-timeout".into(),
        "20s".into(),
    ];
    if let Some(t) = token {
        args.extend(["--token".into(), t.into()]);
    }
    args.extend(engine.switch_flags(&listen_of(engine), restart));
    args.extend(extra.iter().map(Into::into));
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    client(&refs)
}

fn listen_of(engine: &Engine) -> String {
    format!("tcp://{}:{}", engine.ip, engine_port(engine))
}

/// One TLS port per engine, chosen once.
fn engine_port(engine: &Engine) -> u16 {
    let file = engine.dir.join("tls-port");
    if let Ok(p) = std::fs::read_to_string(&file) {
        return p.trim().parse().unwrap();
    }
    let p = free_port(&engine.ip);
    std::fs::write(&file, p.to_string()).unwrap();
    p
}

fn serial(out: &Path) -> String {
    dtca_tests::openssl::serial(&out.join("cert.pem"))
}

/// The engine answers over mutual TLS to an operator of `ca`.
fn answers_operator_of(ca: &Ca, engine: &Engine, name: &str) -> bool {
    let creds = operator(&ca.state, &ca.serve.addr, &engine.dir.join(name));
    engine
        .docker_tls(&listen_of(engine), &creds, &["version"])
        .status
        .success()
}

/// A node switched with one CA, then given a token of another: the token wins, and the
/// engine serves the new CA's certificate. Then that certificate is revoked: a new token
/// wins again. A valid enrollment of this CA does not spend a token (and says so), and
/// `--force` re-switches with a renewal.
#[test]
fn a_token_replaces_another_cas_enrollment_and_a_revoked_one() {
    let first = Ca::start();
    let second = Ca::start();
    let engine = Engine::start_plain("127.0.0.1");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("creds");

    let t = token(&first.state, &["--role", "node"]);
    let done = docker_enroll(&first, &engine, &out, Some(&t), &engine.restart, &[]);
    assert!(done.status.success(), "first switch: {}", text(&done));
    assert!(answers_operator_of(&first, &engine, "op-first"));

    // Another CA's token: a fresh enrollment, not "nothing to do", not BadSignature.
    let t = token(&second.state, &["--role", "node"]);
    let moved = docker_enroll(&second, &engine, &out, Some(&t), &engine.restart, &[]);
    assert!(
        moved.status.success(),
        "switch to the second CA: {}",
        text(&moved)
    );
    assert!(
        text(&moved).contains("another CA"),
        "did not say what was replaced: {}",
        text(&moved)
    );
    assert!(answers_operator_of(&second, &engine, "op-second"));
    assert!(!answers_operator_of(&first, &engine, "op-first-2"));

    // A valid enrollment of this CA with a token: nothing to do, the token unspent.
    let spare = token(&second.state, &["--role", "node"]);
    let again = docker_enroll(&second, &engine, &out, Some(&spare), &engine.restart, &[]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("the token was not used"),
        "{}",
        text(&again)
    );
    assert!(
        token_uses(&second).contains("0/1"),
        "the spare token was spent: {}",
        token_uses(&second)
    );

    // --force, no token: renewed and switched again.
    let before = serial(&out);
    let forced = docker_enroll(&second, &engine, &out, None, &engine.restart, &["--force"]);
    assert!(forced.status.success(), "--force: {}", text(&forced));
    assert_ne!(serial(&out), before, "--force did not renew");
    assert!(answers_operator_of(&second, &engine, "op-second-2"));

    // --force with a token: a fresh enrollment over the usable one (a token that takes
    // the name over, since the current certificate holds it).
    let before = serial(&out);
    let takeover = token(
        &second.state,
        &["--role", "node", "--name", "node-r", "--replace"],
    );
    let fresh = docker_enroll(
        &second,
        &engine,
        &out,
        Some(&takeover),
        &engine.restart,
        &["--force"],
    );
    assert!(fresh.status.success(), "--force --token: {}", text(&fresh));
    assert!(
        text(&fresh).contains("--force: replacing the enrollment"),
        "{}",
        text(&fresh)
    );
    assert_ne!(serial(&out), before);
    assert!(answers_operator_of(&second, &engine, "op-second-f"));

    // Revoked: the spare token enrolls afresh and says so.
    let revoke = run(
        "ca-server",
        &[
            "cert",
            "revoke",
            "--name",
            "node-r",
            "--role",
            "node",
            "--state-dir",
            second.state.to_str().unwrap(),
        ],
    );
    assert!(revoke.status.success(), "{}", text(&revoke));
    let revoked = serial(&out);
    let back = docker_enroll(&second, &engine, &out, Some(&spare), &engine.restart, &[]);
    assert!(back.status.success(), "after revocation: {}", text(&back));
    assert!(text(&back).contains("revoked"), "{}", text(&back));
    assert_ne!(serial(&out), revoked);
    assert!(answers_operator_of(&second, &engine, "op-second-3"));
}

/// A switch that failed (its restart command broke) keeps the `--docker-*` settings it
/// was given: the retry, with no token and no flag at all, switches.
#[test]
fn a_failed_switch_is_retried_with_no_flags_and_failed_enrolls_leave_no_directories() {
    let ca = Ca::start();
    let engine = Engine::start_plain("127.0.0.1");
    let tmp = tempfile::tempdir().unwrap();

    // An engine that does not answer: refused before anything, nothing left behind.
    let nowhere = tmp.path().join("x/creds");
    let mut args: Vec<std::ffi::OsString> = vec![
        "enroll".into(),
        "--docker".into(),
        "--server".into(),
        ca.serve.addr.clone().into(),
        "--token".into(),
        token(&ca.state, &["--role", "node"]).into(),
        "--out".into(),
        nowhere.clone().into(),
        "--docker-config".into(),
        tmp.path().join("none.json").into(),
    ];
    args.extend(["--docker-restart".into(), "true".into()]);
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let refused = client(&refs);
    assert!(!refused.status.success());
    assert!(!tmp.path().join("x").exists(), "{}", text(&refused));

    // A restart command that fails while a marker exists.
    let marker = tmp.path().join("broken");
    std::fs::write(&marker, "").unwrap();
    let flaky = tmp.path().join("restart.sh");
    std::fs::write(
        &flaky,
        format!(
            "#!/bin/sh\n[ -e {} ] && {{ echo 'restart refused (marker)' >&2; exit 1; }}\nexec {}\n",
            marker.display(),
            engine.restart.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&flaky)
        .status()
        .unwrap();
    let out = tmp.path().join("creds");
    let t = token(&ca.state, &["--role", "node"]);
    let failed = docker_enroll(&ca, &engine, &out, Some(&t), &flaky, &[]);
    assert!(!failed.status.success(), "{}", text(&failed));
    let state = std::fs::read_to_string(out.join("client.toml")).unwrap();
    assert!(state.contains("[failed_switch.flags]"), "{state}");
    assert!(engine.docker(&["version"]).status.success());

    std::fs::remove_file(&marker).unwrap();
    let bare = client(&[
        "enroll".as_ref(),
        "--docker".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert!(bare.status.success(), "bare retry: {}", text(&bare));
    assert!(answers_operator_of(&ca, &engine, "op"));
    let state = std::fs::read_to_string(out.join("client.toml")).unwrap();
    assert!(!state.contains("failed_switch"), "{state}");
}
