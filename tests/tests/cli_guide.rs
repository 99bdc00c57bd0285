//! The command lines guide and script well (issue 16, server side and both binaries'
//! conventions): every hint runs as printed, `token create` prints the command that uses
//! the token, admin commands without a running server say so and read the embedded store,
//! `cert list --expiring-within` alerts by its exit code, boolean environment variables,
//! JSON final errors, usage errors, short subcommand help, completions and man pages,
//! and the metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use dtca_common::Reason;
use dtca_tests::bins::bin;
use dtca_tests::cli::{expect_exit, line_after, printed, run, stderr, stdout, text};
use dtca_tests::process::{Proc, wait_until};
use dtca_tests::serve::{ServeProcess, init_insecure};

/// `ca-server ARGS...` with extra environment variables.
fn server_with(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(bin("ca-server"));
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// `ca-client ARGS...` with extra environment variables.
fn client_with(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(bin("ca-client"));
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// `ca-server token create ARGS... --state-dir STATE`, as printed.
fn token_create(state: &Path, args: &[&str]) -> std::process::Output {
    let mut full = vec!["token", "create"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--state-dir", s(state)]);
    run("ca-server", &full)
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn init_prints_a_next_step_that_runs_as_printed() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("ca");
    let passphrase = dir.path().join("passphrase");
    std::fs::write(&passphrase, "correct horse battery staple\n").unwrap();
    std::fs::set_permissions(&passphrase, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run(
        "ca-server",
        &[
            "init",
            "--state-dir",
            s(&state),
            "--passphrase-file",
            s(&passphrase),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let next = line_after(&stdout(&out), "Next:");
    assert!(next.contains("--passphrase-file"), "{next}");
    // Exactly as printed; only the listen address is moved off 0.0.0.0:8443 (other
    // tests and servers share this machine), through its environment variable.
    let log = dir.path().join("serve.log");
    let mut serve = Proc::spawn(
        "printed serve",
        printed(&next, &[("DTCA_LISTEN", "127.0.0.1:0")]),
        &log,
    );
    let listening = wait_until(Duration::from_secs(20), || {
        serve.try_wait().is_some()
            || std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("ca-server listening")
    });
    assert!(
        listening && serve.try_wait().is_none(),
        "the printed command did not serve: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    serve.stop();
}

#[test]
fn token_create_prints_the_command_that_uses_it_and_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("ca");
    init_insecure(&state);
    let serve = ServeProcess::start(&state, &["--insecure-no-passphrase"], &[]);

    let created = token_create(&state, &["--role", "operator"]);
    assert!(created.status.success(), "{}", text(&created));
    let login = line_after(&stdout(&created), "ca-client login");
    let login = format!("ca-client login {login}");
    assert!(
        login.contains(&format!("--server {}", serve.addr)),
        "{login}"
    );
    let docker_config = dir.path().join("docker");
    let ran = printed(
        &login,
        &[
            ("DOCKER_CONFIG", s(&docker_config)),
            ("HOME", s(dir.path())),
        ],
    )
    .output()
    .unwrap();
    assert!(ran.status.success(), "{login}: {}", text(&ran));
    assert!(
        docker_config.join("dtca/cli/cert.pem").exists(),
        "{}",
        text(&ran)
    );

    // A node token: the enroll --docker line; --quiet prints the token alone.
    let node = token_create(&state, &["--role", "node"]);
    let enroll = line_after(&stdout(&node), "ca-client enroll");
    assert!(
        enroll.starts_with(&format!("--docker --server {} --token DTCA-1-", serve.addr)),
        "{enroll}"
    );
    let quiet = token_create(&state, &["-q", "--role", "node"]);
    let token = stdout(&quiet);
    assert!(
        token.starts_with("DTCA-1-") && !token.contains(' '),
        "{token}"
    );
    drop(serve);

    // --advertise is what the commands name, and the state dir records it.
    let serve = ServeProcess::start(
        &state,
        &[
            "--insecure-no-passphrase",
            "--advertise",
            "ca.example.test:9443",
        ],
        &[],
    );
    let node = token_create(&state, &["--role", "node"]);
    assert!(
        stdout(&node)
            .contains("ca-client enroll --docker --server ca.example.test:9443 --token DTCA-1-"),
        "{}",
        text(&node)
    );
    let record = std::fs::read_to_string(state.join("server.toml")).unwrap();
    assert!(
        record.contains("ca.example.test:9443") && record.contains(&serve.addr),
        "{record}"
    );
    drop(serve);

    // A wildcard listen address is replaced by this host's name, with a note.
    let _serve = ServeProcess::start_at(&state, "0.0.0.0:0", &["--insecure-no-passphrase"], &[]);
    let node = token_create(&state, &["--role", "node"]);
    assert!(node.status.success(), "{}", text(&node));
    assert!(stderr(&node).contains("every address"), "{}", text(&node));
    assert!(!stdout(&node).contains("0.0.0.0"), "{}", text(&node));
}

#[test]
fn admin_commands_without_a_server_say_so_and_read_only_ones_read_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("ca");
    init_insecure(&state);
    let mut serve = ServeProcess::start(&state, &["--insecure-no-passphrase"], &[]);
    let addr = serve.addr.clone();
    let online = run(
        "ca-server",
        &["cert", "list", "--json", "--state-dir", s(&state)],
    );
    assert!(online.status.success(), "{}", text(&online));
    let online_status = run(
        "ca-server",
        &["ca", "status", "--json", "--state-dir", s(&state)],
    );
    assert!(online_status.status.success(), "{}", text(&online_status));
    let online_status: serde_json::Value = serde_json::from_str(&stdout(&online_status)).unwrap();

    // A read while the server runs (its address file gone, as after a kill -9 and a
    // cleanup) opens the store read-only beside it; the server goes on writing.
    let addr_file = state.join("server.addr");
    std::fs::rename(&addr_file, dir.path().join("addr")).unwrap();
    let beside = run(
        "ca-server",
        &["cert", "list", "--json", "--state-dir", s(&state)],
    );
    assert!(beside.status.success(), "{}", text(&beside));
    assert_eq!(stdout(&beside), stdout(&online));
    std::fs::rename(dir.path().join("addr"), &addr_file).unwrap();
    let t = dtca_tests::cli::token(&state, &["--role", "node"]);
    assert!(t.starts_with("DTCA-1-"));
    serve.proc.stop();

    // A write says the server is not running, naming where it last listened.
    let refused = token_create(&state, &["--role", "node"]);
    expect_exit(&refused, Reason::NotRunning);
    assert!(
        stderr(&refused).contains("not running") && stderr(&refused).contains(&addr),
        "{}",
        text(&refused)
    );
    // Reads come from the store, with a note.
    let offline = run(
        "ca-server",
        &["cert", "list", "--json", "--state-dir", s(&state)],
    );
    assert!(offline.status.success(), "{}", text(&offline));
    assert_eq!(stdout(&offline), stdout(&online));
    assert!(
        stderr(&offline).contains("store.db directly"),
        "{}",
        text(&offline)
    );
    let tokens = run(
        "ca-server",
        &["token", "list", "--json", "--state-dir", s(&state)],
    );
    let tokens: serde_json::Value = serde_json::from_str(&stdout(&tokens)).unwrap();
    assert_eq!(tokens.as_array().unwrap().len(), 1, "{tokens}");
    let audit = run("ca-server", &["audit", "--json", "--state-dir", s(&state)]);
    let audit: serde_json::Value = serde_json::from_str(&stdout(&audit)).unwrap();
    assert!(!audit.as_array().unwrap().is_empty(), "{audit}");
    // `ca status` from the store's certificates, no key opened: the same roots and
    // intermediates the running server showed.
    let status = run(
        "ca-server",
        &["ca", "status", "--json", "--state-dir", s(&state)],
    );
    assert!(status.status.success(), "{}", text(&status));
    let offline_status: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    assert_eq!(offline_status["cluster"], online_status["cluster"]);
    assert_eq!(offline_status["roots"], online_status["roots"]);
    assert_eq!(
        offline_status["intermediates"],
        online_status["intermediates"]
    );
    let text_status = run("ca-server", &["ca", "status", "--state-dir", s(&state)]);
    assert!(
        stdout(&text_status).contains("intermediates:"),
        "{}",
        text(&text_status)
    );

    // --expiring-within: 52 when something matches (the admin certificate, 121 days),
    // 0 when nothing does.
    let soon = run(
        "ca-server",
        &[
            "cert",
            "list",
            "--expiring-within",
            "400d",
            "--state-dir",
            s(&state),
        ],
    );
    assert_eq!(
        soon.status.code(),
        Some(i32::from(Reason::Expiring.exit_code())),
        "{}",
        text(&soon)
    );
    assert!(stdout(&soon).contains("admin"), "{}", text(&soon));
    let none = run(
        "ca-server",
        &[
            "cert",
            "list",
            "--expiring-within",
            "1d",
            "--state-dir",
            s(&state),
        ],
    );
    assert_eq!(none.status.code(), Some(0), "{}", text(&none));
}

#[test]
fn boolean_environment_variables_take_the_usual_forms_and_errors_name_them() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("ca");
    init_insecure(&state);
    let list = ["cert", "list", "--state-dir", s(&state)];
    for yes in ["1", "true", "YES", "On"] {
        let out = server_with(&list, &[("DTCA_JSON", yes)]);
        assert!(
            stdout(&out).starts_with('['),
            "DTCA_JSON={yes}: {}",
            text(&out)
        );
    }
    for no in ["0", "False", "no", "OFF"] {
        let out = server_with(&list, &[("DTCA_JSON", no)]);
        assert!(
            stdout(&out).starts_with("SERIAL"),
            "DTCA_JSON={no}: {}",
            text(&out)
        );
    }
    let bad = server_with(&list, &[("DTCA_JSON", "maybe")]);
    expect_exit(&bad, Reason::Usage);
    assert!(
        stderr(&bad).contains("DTCA_JSON") && !stderr(&bad).contains("--json"),
        "{}",
        text(&bad)
    );
    let bad = client_with(
        &["status", "--out", s(&dir.path().join("none"))],
        &[("DTCA_JSON", "sure")],
    );
    expect_exit(&bad, Reason::Usage);
    assert!(
        stderr(&bad).contains("DTCA_JSON=\"sure\""),
        "{}",
        text(&bad)
    );
}

#[test]
fn under_log_format_json_the_final_error_is_a_json_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none");
    let cases = [
        server_with(
            &[
                "--log-format",
                "json",
                "cert",
                "list",
                "--state-dir",
                s(&missing),
            ],
            &[],
        ),
        server_with(&["token", "create"], &[("DTCA_LOG_FORMAT", "json")]),
        client_with(&["--log-format=json", "renew", "--out", s(&missing)], &[]),
    ];
    for out in &cases {
        let last = stderr(out).lines().last().unwrap_or_default().to_string();
        let line: serde_json::Value = serde_json::from_str(&last)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {}", text(out)));
        assert_eq!(line["level"], "ERROR", "{line}");
        assert_eq!(
            line["fields"]["exit_code"].as_i64(),
            out.status.code().map(i64::from),
            "{line}"
        );
        assert!(
            line["fields"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert!(!stderr(out).contains("error:"), "{}", text(out));
    }
}

#[test]
fn a_missing_required_flag_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("ca");
    init_insecure(&state);
    let st = s(&state);
    for args in [
        vec!["token", "create", "--state-dir", st],
        vec!["store", "backup", "--state-dir", st],
        vec!["store", "migrate", "--state-dir", st],
        vec!["cert", "revoke", "--state-dir", st],
    ] {
        let out = run("ca-server", &args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", text(&out));
    }
    let out = dir.path().join("out");
    for args in [vec!["enroll", "--out", s(&out)], vec!["login"]] {
        let ran = client_with(&args, &[("DOCKER_CONFIG", s(dir.path()))]);
        assert_eq!(ran.status.code(), Some(64), "{args:?}: {}", text(&ran));
    }
}

#[test]
fn subcommand_help_is_short_and_the_exit_codes_are_in_the_top_level_help() {
    for (binary, subcommands) in [
        (
            "ca-server",
            vec![
                "init",
                "serve",
                "token create",
                "cert list",
                "audit",
                "ca status",
                "store backup",
            ],
        ),
        (
            "ca-client",
            vec![
                "enroll", "renew", "agent", "check", "status", "doctor", "login", "env",
            ],
        ),
    ] {
        let top = run(binary, &["--help"]);
        assert!(stdout(&top).contains("Exit codes:"), "{binary}");
        assert!(stdout(&top).contains("52 "), "{binary}: {}", stdout(&top));
        for sub in subcommands {
            let mut args: Vec<&str> = sub.split(' ').collect();
            args.push("--help");
            let help = run(binary, &args);
            assert!(help.status.success(), "{binary} {sub}");
            assert!(!stdout(&help).contains("Exit codes"), "{binary} {sub}");
        }
    }
}

#[test]
fn completions_and_man_pages_come_from_the_flag_definitions() {
    let dir = tempfile::tempdir().unwrap();
    for (binary, sub) in [("ca-server", "token"), ("ca-client", "enroll")] {
        for shell in ["bash", "zsh", "fish"] {
            let out = run(binary, &["completions", shell]);
            assert!(out.status.success(), "{binary} {shell}: {}", text(&out));
            assert!(stdout(&out).contains(sub), "{binary} {shell}");
        }
        let bash = run(binary, &["completions", "bash"]);
        let script = dir.path().join(format!("{binary}.bash"));
        std::fs::write(&script, &bash.stdout).unwrap();
        let check = Command::new("bash")
            .arg("-n")
            .arg(&script)
            .output()
            .unwrap();
        assert!(check.status.success(), "{}", text(&check));
    }
    expect_exit(&run("ca-server", &["completions", "tcsh"]), Reason::Usage);

    // The install step puts binaries, completions and man pages in place.
    let dest = dir.path().join("dest");
    let from = bin("ca-server").parent().unwrap().to_path_buf();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let installed = Command::new(workspace.join("scripts/install.sh"))
        .env("FROM", &from)
        .env("DESTDIR", &dest)
        .env("PREFIX", "/usr")
        .output()
        .unwrap();
    assert!(installed.status.success(), "{}", text(&installed));
    let usr = dest.join("usr");
    for file in [
        "bin/ca-server",
        "bin/ca-client",
        "share/bash-completion/completions/ca-client",
        "share/zsh/site-functions/_ca-server",
        "share/fish/vendor_completions.d/ca-client.fish",
        "share/man/man1/ca-server.1",
        "share/man/man1/ca-server-token-create.1",
        "share/man/man1/ca-client-enroll.1",
    ] {
        assert!(usr.join(file).exists(), "{file} not installed");
    }
    let page =
        std::fs::read_to_string(usr.join("share/man/man1/ca-server-token-create.1")).unwrap();
    assert!(
        page.contains(".TH") && page.contains("\\-\\-quiet"),
        "{page}"
    );
}

#[test]
fn metrics_are_openmetrics_with_expiry_timestamps_build_and_process_info() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("ca");
    init_insecure(&state);
    let port = dtca_tests::docker::free_port("127.0.0.1");
    let metrics = format!("127.0.0.1:{port}");
    let _serve = ServeProcess::start(
        &state,
        &["--insecure-no-passphrase", "--metrics-listen", &metrics],
        &[],
    );
    let mut body = String::new();
    assert!(wait_until(Duration::from_secs(10), || {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        body.clear();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .is_ok()
            && s.read_to_string(&mut body).is_ok()
            && body.contains("# EOF")
            // The lifecycle driver's first look at the CA's certificates.
            && !body.contains("dtca_intermediate_expiry_timestamp_seconds 0\n")
    }));
    let value = |series: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{body}"))
    };
    assert!(body.contains("application/openmetrics-text"), "{body}");
    let admin_pem = std::fs::read_to_string(state.join("admin/cert.pem")).unwrap();
    let admin_der = dtca_pki::inspect::certs_from_pem(&admin_pem)
        .unwrap()
        .remove(0);
    let admin = dtca_pki::inspect::CertInfo::from_der(&admin_der).unwrap();
    assert_eq!(
        value("dtca_admin_cert_expiry_timestamp_seconds"),
        admin.not_after.unix_timestamp() as f64
    );
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
    assert!(value("dtca_intermediate_expiry_timestamp_seconds") > now);
    assert_eq!(
        value("dtca_node_cert_earliest_expiry_timestamp_seconds"),
        0.0
    );
    assert!(value("process_resident_memory_bytes") > 1e6);
    assert!(value("process_open_fds") > 0.0);
    let started = value("process_start_time_seconds");
    assert!(
        started <= now + 1.0 && started > now - 600.0,
        "{started} {now}"
    );
    assert!(body.contains(&format!(
        "dtca_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));
    assert_eq!(
        value("dtca_requests_refused_total{reason=\"token-unknown\"}"),
        0.0
    );
    assert!(!body.contains("reason=\"docker-switch\""), "{body}");
    assert!(value("dtca_store_commits_total") >= 1.0);
    assert!(!body.contains("_days"), "{body}");
}
