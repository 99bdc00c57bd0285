//! The built binaries, as an operator runs them: `ca-server init`, `serve`, the admin
//! subcommands and `ca-client enroll --out` / `renew`, with their exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use dtca_common::Reason;
use dtca_tests::bins::bin;
use dtca_tests::cli::{expect_exit, run, stderr, stdout, token};
use dtca_tests::openssl;
use dtca_tests::serve::{ServeProcess, init_insecure};
use nix::sys::signal::Signal;

fn run_env(name: &str, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin(name));
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

#[test]
fn init_serve_token_enroll_renew_and_stop_with_the_real_binaries() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    set_mode(&pass, 0o600);
    let out = run(
        "ca-server",
        &[
            "init",
            "--cluster",
            "prod",
            "--state-dir",
            state.to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("root digest"));
    // The keys are encrypted at a cost openssl still reads (its scrypt memory limit).
    let key = std::process::Command::new("openssl")
        .args(["pkey", "-noout", "-in"])
        .arg(state.join("intermediate-key.pem"))
        .arg("-passin")
        .arg(format!("file:{}", pass.display()))
        .output()
        .unwrap();
    assert!(
        key.status.success(),
        "openssl cannot read the encrypted key: {}",
        String::from_utf8_lossy(&key.stderr)
    );
    // A second init refuses and leaves the CA alone.
    let before = std::fs::read(state.join("ca.pem")).unwrap();
    let again = run(
        "ca-server",
        &[
            "init",
            "--state-dir",
            state.to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
        ],
    );
    expect_exit(&again, Reason::AlreadyInitialized);
    assert_eq!(std::fs::read(state.join("ca.pem")).unwrap(), before);

    let mut serve =
        ServeProcess::start(&state, &["--passphrase-file", pass.to_str().unwrap()], &[]);
    let node_token = token(
        &state,
        &[
            "--role",
            "node",
            "--allow-dns",
            "*.example.com",
            "--allow-ip",
            "127.0.0.0/8",
        ],
    );
    assert!(node_token.starts_with("DTCA-1-"), "{node_token}");

    let creds = dir.path().join("node");
    let out = run_env(
        "ca-client",
        &[
            "enroll",
            "--server",
            &serve.addr,
            "--out",
            creds.to_str().unwrap(),
            "--no-default-sans",
            "--san",
            "web-1.example.com",
            "--san",
            "127.0.0.1",
            "--name",
            "web-1",
        ],
        &[("DTCA_TOKEN", &node_token)],
    );
    assert!(out.status.success(), "enroll: {}", stderr(&out));
    let verified = openssl::verify(&creds.join("ca.pem"), &creds.join("cert.pem")).unwrap();
    assert!(verified.contains("OK"));
    let text = Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-ext",
            "subjectAltName,extendedKeyUsage",
            "-in",
        ])
        .arg(creds.join("cert.pem"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    for want in [
        "DNS:web-1.example.com",
        "IP Address:127.0.0.1",
        "URI:dtca://prod/node/web-1",
        "TLS Web Server Authentication",
    ] {
        assert!(text.contains(want), "{want} missing from {text}");
    }
    assert!(
        !text.contains("TLS Web Client Authentication"),
        "a node certificate is a client certificate: {text}"
    );
    let first_serial = openssl::serial(&creds.join("cert.pem"));
    let first_key = std::fs::read(creds.join("key.pem")).unwrap();

    // renew needs no --server: the client remembers it.
    let out = run("ca-client", &["renew", "--out", creds.to_str().unwrap()]);
    assert!(out.status.success(), "renew: {}", stderr(&out));
    assert_ne!(openssl::serial(&creds.join("cert.pem")), first_serial);
    assert_ne!(std::fs::read(creds.join("key.pem")).unwrap(), first_key);
    openssl::verify(&creds.join("ca.pem"), &creds.join("cert.pem")).unwrap();

    // Admin commands find the server through the state dir.
    let list = run(
        "ca-server",
        &["cert", "list", "--state-dir", state.to_str().unwrap()],
    );
    assert!(list.status.success(), "{}", stderr(&list));
    assert!(stdout(&list).contains("web-1"));
    let serial = first_serial.trim_start_matches("serial=").to_lowercase();
    let show = run(
        "ca-server",
        &[
            "cert",
            "show",
            &serial,
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    assert!(
        stdout(&show).contains("dtca://prod/node/web-1"),
        "{}",
        stderr(&show)
    );
    let json = run(
        "ca-server",
        &[
            "token",
            "list",
            "--json",
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    let tokens: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(tokens[0]["uses"], 1);

    // SIGTERM stops it cleanly.
    let status = serve
        .proc
        .signal_and_wait(Signal::SIGTERM, Duration::from_secs(15))
        .expect("serve did not stop");
    assert!(
        status.success(),
        "serve exited with {status:?}: {}",
        serve.log_text()
    );
    assert!(serve.log_text().contains("stopped"));
    // Admin commands no longer try the address of a server that is gone.
    assert!(!state.join("server.addr").exists());
}

#[test]
fn serve_refuses_a_wrong_or_missing_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let out = run_env(
        "ca-server",
        &["init", "--state-dir", state.to_str().unwrap()],
        &[("DTCA_PASSPHRASE", "right")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let key = std::fs::read_to_string(state.join("intermediate-key.pem")).unwrap();
    assert!(key.contains("ENCRYPTED PRIVATE KEY"));

    let wrong = run_env(
        "ca-server",
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            state.to_str().unwrap(),
        ],
        &[("DTCA_PASSPHRASE", "wrong")],
    );
    expect_exit(&wrong, Reason::WrongPassphrase);
    let none = run(
        "ca-server",
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    expect_exit(&none, Reason::Config);
    assert!(stderr(&none).contains("passphrase"));
    // init without a passphrase refuses too.
    let other = dir.path().join("other");
    let out = run(
        "ca-server",
        &["init", "--state-dir", other.to_str().unwrap()],
    );
    expect_exit(&out, Reason::Config);
    assert!(!other.join("ca.pem").exists());
}

#[test]
fn client_exit_codes_say_what_was_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    init_insecure(&state);
    let serve = ServeProcess::start(&state, &["--insecure-no-passphrase"], &[]);
    let creds = dir.path().join("c");
    let enroll = |token: &str, server: &str, extra: &[&str]| {
        let mut args = vec![
            "enroll",
            "--server",
            server,
            "--out",
            creds.to_str().unwrap(),
            "--token",
            token,
            "--no-default-sans",
        ];
        args.extend_from_slice(extra);
        run("ca-client", &args)
    };

    expect_exit(
        &enroll("nonsense", &serve.addr, &["--san", "127.0.0.1"]),
        Reason::TokenMalformed,
    );
    let good = token(&state, &["--role", "node", "--allow-ip", "127.0.0.0/8"]);
    // A token whose digest names another root: refused before anything is sent.
    let mut foreign = good.clone();
    let swap = if foreign.as_bytes()[7] == b'A' {
        "B"
    } else {
        "A"
    };
    foreign.replace_range(7..8, swap);
    expect_exit(
        &enroll(&foreign, &serve.addr, &["--san", "127.0.0.1"]),
        Reason::RootMismatch,
    );
    expect_exit(
        &enroll(&good, "127.0.0.1:1", &["--san", "127.0.0.1"]),
        Reason::Unreachable,
    );
    expect_exit(
        &enroll(&good, &serve.addr, &["--san", "10.9.9.9"]),
        Reason::NameNotAllowed,
    );
    // An --out that cannot be written is refused before the CSR is sent, so the
    // single-use token is still unspent below.
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, b"a file, not a directory").unwrap();
    let blocked = blocker.join("creds");
    let out = run(
        "ca-client",
        &[
            "enroll",
            "--server",
            &serve.addr,
            "--out",
            blocked.to_str().unwrap(),
            "--token",
            &good,
            "--no-default-sans",
            "--san",
            "127.0.0.1",
        ],
    );
    expect_exit(&out, Reason::LocalIo);
    assert!(stderr(&out).contains("blocker"), "{}", stderr(&out));
    let out = enroll(&good, &serve.addr, &["--san", "127.0.0.1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    expect_exit(
        &enroll(&good, &serve.addr, &["--san", "127.0.0.1"]),
        Reason::TokenUsedUp,
    );
    let created: serde_json::Value =
        serde_json::from_str(&token(&state, &["--role", "node", "--json"])).unwrap();
    let (revoked, id) = (
        created["token"].as_str().unwrap().to_string(),
        created["id"].as_str().unwrap().to_string(),
    );
    assert!(
        run(
            "ca-server",
            &[
                "token",
                "revoke",
                &id,
                "--state-dir",
                state.to_str().unwrap()
            ]
        )
        .status
        .success()
    );
    expect_exit(
        &enroll(&revoked, &serve.addr, &["--san", "127.0.0.1"]),
        Reason::TokenRevoked,
    );

    // An admin command with a node certificate is refused.
    let denied = run(
        "ca-server",
        &[
            "token",
            "list",
            "--state-dir",
            state.to_str().unwrap(),
            "--admin-dir",
            creds.to_str().unwrap(),
        ],
    );
    expect_exit(&denied, Reason::PermissionDenied);

    // Revoked certificate: renew refused.
    let out = run(
        "ca-server",
        &[
            "cert",
            "revoke",
            "--name",
            &dtca_common::net::hostname(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    expect_exit(
        &run("ca-client", &["renew", "--out", creds.to_str().unwrap()]),
        Reason::CertRevoked,
    );
    // Renew where nothing was enrolled.
    expect_exit(
        &run(
            "ca-client",
            &["renew", "--out", dir.path().join("none").to_str().unwrap()],
        ),
        Reason::NotInitialized,
    );
    // Usage errors.
    assert_eq!(code(&run("ca-client", &["enroll", "--bogus"])), 64);
    assert!(serve.log_text().contains("request refused"));
}

#[test]
fn a_malformed_daemon_json_is_a_config_error_before_anything_is_asked() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("daemon.json");
    let broken = "{ \"hosts\": [ \"unix:///run/x.sock\", broken";
    std::fs::write(&config, broken).unwrap();
    let token = format!("DTCA-1-{}-{}", "A".repeat(52), "B".repeat(32));
    let out = run(
        "ca-client",
        &[
            "enroll",
            "--docker",
            "--server",
            "127.0.0.1:1",
            "--token",
            &token,
            "--out",
            dir.path().join("out").to_str().unwrap(),
            "--docker-config",
            config.to_str().unwrap(),
            "--systemd-dir",
            dir.path().join("none").to_str().unwrap(),
        ],
    );
    expect_exit(&out, Reason::Config);
    assert!(stderr(&out).contains("not valid JSON"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), broken);
}

#[test]
fn malformed_local_pem_is_reported_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    init_insecure(&state);
    let serve = ServeProcess::start(&state, &["--insecure-no-passphrase"], &[]);
    let creds = dir.path().join("c");
    let token = token(&state, &["--role", "node"]);
    let out = run(
        "ca-client",
        &[
            "enroll",
            "--server",
            &serve.addr,
            "--out",
            creds.to_str().unwrap(),
            "--token",
            &token,
            "--no-default-sans",
            "--san",
            "127.0.0.1",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let key_before = std::fs::read(creds.join("key.pem")).unwrap();
    for garbage in [
        "-----BEGIN CERTIFICATE-----\nnot base64!!\n-----END CERTIFICATE-----\n",
        "hello",
        "",
    ] {
        std::fs::write(creds.join("cert.pem"), garbage).unwrap();
        let out = run("ca-client", &["renew", "--out", creds.to_str().unwrap()]);
        expect_exit(&out, Reason::LocalIo);
        assert!(stderr(&out).contains("cert.pem"), "{}", stderr(&out));
        assert_eq!(std::fs::read(creds.join("key.pem")).unwrap(), key_before);
    }
}

#[test]
fn the_systemd_units_use_flags_the_binaries_accept() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("dist/systemd");
    let mut seen = 0;
    for unit in [
        "ca-server.service",
        "dtca-enroll.service",
        "dtca-agent.service",
    ] {
        let text = std::fs::read_to_string(dir.join(unit)).unwrap();
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap();
        let mut words = exec.split_whitespace();
        let program = words.next().unwrap();
        let name = Path::new(program).file_name().unwrap().to_str().unwrap();
        let args: Vec<&str> = words.collect();
        // clap refuses unknown flags before it prints help: success means every flag is known.
        let out = Command::new(bin(name))
            .args(&args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{unit}: {}", stderr(&out));
        seen += 1;
    }
    assert_eq!(seen, 3);
}

#[test]
fn check_reports_missing_credentials_with_its_own_code() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        "ca-client",
        &[
            "check",
            "--out",
            dir.path().join("nothing").to_str().unwrap(),
        ],
    );
    assert_eq!(code(&out), 3, "{}", stdout(&out));
    assert!(stdout(&out).starts_with("MISSING"));
    std::fs::create_dir_all(dir.path().join("broken")).unwrap();
    for f in ["ca.pem", "cert.pem", "key.pem"] {
        std::fs::write(dir.path().join("broken").join(f), "junk").unwrap();
    }
    let out = run(
        "ca-client",
        &[
            "check",
            "--out",
            dir.path().join("broken").to_str().unwrap(),
        ],
    );
    assert_eq!(code(&out), 2, "{}", stdout(&out));
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Regression: a passphrase file anyone could read was only warned about, and state and
/// credential directories kept whatever mode they were made with.
#[test]
fn loose_secrets_are_refused_and_open_directories_tightened() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    set_mode(&pass, 0o644);
    let init = |extra: &[&str]| {
        let mut args = vec![
            "init",
            "--state-dir",
            state.to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run("ca-server", &args)
    };
    let refused = init(&[]);
    expect_exit(&refused, Reason::Config);
    assert!(
        stderr(&refused).contains("chmod 600"),
        "{}",
        stderr(&refused)
    );
    assert!(!state.join("ca.pem").exists(), "refused, but a CA was made");
    let accepted = init(&["--insecure-passphrase-file-permissions"]);
    assert!(accepted.status.success(), "{}", stderr(&accepted));
    assert!(
        stderr(&accepted).contains("warning"),
        "{}",
        stderr(&accepted)
    );
    set_mode(&pass, 0o600);

    // A state directory left open is tightened when the CA starts, store files too.
    set_mode(&state, 0o755);
    let serve = ServeProcess::start(&state, &["--passphrase-file", pass.to_str().unwrap()], &[]);
    assert_eq!(mode_of(&state), 0o700);
    assert_eq!(mode_of(&state.join("store.db")), 0o600);
    assert_eq!(mode_of(&state.join("admin")), 0o700);

    // So is a credential directory a client enrolls into.
    let creds = dir.path().join("node");
    std::fs::create_dir(&creds).unwrap();
    set_mode(&creds, 0o755);
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
            "tight-1",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode_of(&creds), 0o700);
    assert_eq!(mode_of(&creds.join("key.pem")), 0o600);
}

#[test]
fn only_operator_tokens_take_an_access_level() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    init_insecure(&state);
    let _serve = ServeProcess::start(&state, &["--insecure-no-passphrase"], &[]);
    let admin = |args: &[&str]| {
        let mut full = args.to_vec();
        full.extend(["--state-dir", state.to_str().unwrap()]);
        run("ca-server", &full)
    };
    for role in ["node", "admin"] {
        for level in ["full", "read-only"] {
            let out = admin(&["token", "create", "--role", role, "--access", level]);
            expect_exit(&out, Reason::AccessLevel);
            assert!(
                stderr(&out).contains("for operator tokens only"),
                "{}",
                stderr(&out)
            );
        }
    }
    let out = admin(&["token", "create", "--role", "operator", "--access", "write"]);
    expect_exit(&out, Reason::Usage);
    let out = admin(&[
        "token",
        "create",
        "--role",
        "operator",
        "--access",
        "read-only",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("(read-only access)"),
        "{}",
        stdout(&out)
    );
    let out = admin(&["token", "create", "--role", "operator"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&admin(&["token", "list"]));
    assert!(table.lines().next().unwrap().contains("ACCESS"), "{table}");
    let levels: Vec<&str> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().last().unwrap())
        .collect();
    assert_eq!(levels, ["full", "read-only"], "{table}");
    let json = admin(&["token", "list", "--json"]);
    let tokens: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(
        tokens
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["role"] == "operator" && t["access"] == "read-only"),
        "{tokens}"
    );
}
