//! Operator access with the real docker CLI against a real dockerd on mutual TLS:
//! `ca-client login` makes a short-lived client certificate and a docker context per
//! enrolled node; `login --renew` keeps them working; revocation stops renewal; the
//! user's other docker configuration is left exactly as it was.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dtca_common::Reason;
use dtca_tests::bins::bin;
use dtca_tests::cli::{text, token};
use dtca_tests::docker::{Engine, free_port};
use dtca_tests::process::wait_past;
use dtca_tests::serve::{ServeProcess, init_insecure};

struct Fleet {
    _tmp: tempfile::TempDir,
    state: PathBuf,
    serve: ServeProcess,
    engine: Engine,
    node: String,
    /// The engine's mutual-TLS address.
    listen: String,
    docker_config: PathBuf,
}

impl Fleet {
    /// A CA and one engine switched to mutual TLS (which reports its address to the CA).
    fn start() -> Fleet {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("ca");
        init_insecure(&state);
        let serve = ServeProcess::start(&state, &["--insecure-no-passphrase"], &[]);
        let engine = Engine::start_plain("127.0.0.1");
        let listen = format!("tcp://127.0.0.1:{}", free_port("127.0.0.1"));
        let node = "web-1".to_string();
        let fleet_tmp = tmp;
        let f = Fleet {
            docker_config: fleet_tmp.path().join("docker-config"),
            _tmp: fleet_tmp,
            state,
            serve,
            engine,
            node,
            listen: listen.clone(),
        };
        let token = token(&f.state, &["--role", "node", "--name", &f.node]);
        let out = Command::new(bin("ca-client"))
            .args([
                "enroll",
                "--docker",
                "--no-default-sans",
                "--san",
                "127.0.0.1",
                "--server",
                &f.serve.addr,
                "--token",
                &token,
            ])
            .arg("--out")
            .arg(f.engine.dir.join("client"))
            .args(f.engine.switch_flags(&listen, &f.engine.restart))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        std::fs::create_dir_all(&f.docker_config).unwrap();
        f
    }

    /// `ca-client <args>` as the operator (their DOCKER_CONFIG).
    fn client(&self, args: &[&str]) -> Output {
        self.client_in(&self.docker_config, args)
    }

    /// `ca-client <args>` as another operator, whose DOCKER_CONFIG is `docker_config`.
    fn client_in(&self, docker_config: &Path, args: &[&str]) -> Output {
        Command::new(bin("ca-client"))
            .args(args)
            .env("DOCKER_CONFIG", docker_config)
            .output()
            .unwrap()
    }

    fn login(&self, token: &str, name: &str) -> Output {
        self.client(&[
            "login",
            "--server",
            &self.serve.addr,
            "--token",
            token,
            "--name",
            name,
        ])
    }

    /// The real docker CLI as the operator.
    fn docker(&self, args: &[&str]) -> Output {
        self.docker_in(&self.docker_config, args)
    }

    /// The real docker CLI as the operator whose DOCKER_CONFIG is `docker_config`.
    fn docker_in(&self, docker_config: &Path, args: &[&str]) -> Output {
        Command::new("docker")
            .args(args)
            .env("DOCKER_CONFIG", docker_config)
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .output()
            .unwrap()
    }

    /// `ca-server <args> --state-dir STATE` on the CA's host.
    fn admin(&self, args: &[&str]) -> Output {
        Command::new(bin("ca-server"))
            .args(args)
            .arg("--state-dir")
            .arg(&self.state)
            .output()
            .unwrap()
    }
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn login_gives_working_contexts_and_leaves_other_docker_config_alone() {
    let f = Fleet::start();
    // The operator's existing docker configuration.
    let config_json = r#"{"auths":{"registry.example.com":{"auth":"dXNlcjpwYXNz"}},"psFormat":"table {{.ID}}\t{{.Names}}","currentContext":"other"}"#;
    std::fs::write(f.docker_config.join("config.json"), config_json).unwrap();
    let created = f.docker(&[
        "context",
        "create",
        "other",
        "--description",
        "mine",
        "--docker",
        "host=unix:///run/elsewhere.sock",
    ]);
    assert!(created.status.success(), "{}", text(&created));
    let other_meta = std::fs::read_dir(f.docker_config.join("contexts/meta"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("meta.json");
    let other_before = std::fs::read(&other_meta).unwrap();

    // Besides the inventory's node, the same engine twice by --host: once named after
    // its address and port, once named by the operator.
    let port = f.listen.rsplit_once(':').unwrap().1;
    let by_address = format!("127.0.0.1-{port}");
    let named = format!("direct={}", f.listen);
    let token = token(&f.state, &["--role", "operator"]);
    let out = f.client(&[
        "login",
        "--server",
        &f.serve.addr,
        "--token",
        &token,
        "--name",
        "alice",
        "--host",
        &f.listen,
        "--host",
        &named,
    ]);
    assert!(out.status.success(), "login: {}", text(&out));
    let printed = text(&out);
    assert!(
        printed.contains("context web-1") && printed.contains("created"),
        "{printed}"
    );
    for context in [by_address.as_str(), "direct"] {
        let v = f.docker(&["--context", context, "version"]);
        assert!(v.status.success(), "--context {context}: {}", text(&v));
    }
    assert!(printed.contains("docker --context web-1 ps"), "{printed}");

    let ps = f.docker(&["--context", &f.node, "ps"]);
    assert!(
        ps.status.success(),
        "docker --context web-1 ps: {}",
        text(&ps)
    );
    let version = f.docker(&[
        "--context",
        &f.node,
        "version",
        "--format",
        "{{.Server.Version}}",
    ]);
    assert!(version.status.success(), "{}", text(&version));

    // Keys are 0600: the login's and the context's own copy.
    let creds = f.docker_config.join("dtca/cli");
    assert_eq!(mode(&creds.join("key.pem")), 0o600);
    let key_text = std::fs::read_to_string(creds.join("key.pem")).unwrap();
    assert!(
        key_text.starts_with("-----BEGIN PRIVATE KEY-----"),
        "unencrypted PKCS#8 for the docker CLI"
    );
    let tls_keys: Vec<PathBuf> = walk(&f.docker_config.join("contexts/tls"))
        .into_iter()
        .filter(|p| p.ends_with("key.pem"))
        .collect();
    assert_eq!(tls_keys.len(), 3, "{tls_keys:?}");
    assert!(tls_keys.iter().all(|k| mode(k) == 0o600));

    // Nothing else changed.
    assert_eq!(
        std::fs::read_to_string(f.docker_config.join("config.json")).unwrap(),
        config_json
    );
    assert_eq!(std::fs::read(&other_meta).unwrap(), other_before);
    let ls = f.docker(&["context", "ls", "--format", "{{.Name}}"]);
    let names = String::from_utf8_lossy(&ls.stdout);
    assert!(
        names.contains("other") && names.contains("web-1"),
        "{names}"
    );

    // env: the same engine without contexts.
    let env = f.client(&["env", "web-1"]);
    assert!(env.status.success(), "{}", text(&env));
    let exports = String::from_utf8_lossy(&env.stdout).to_string();
    let mut docker = Command::new("docker");
    docker
        .args(["version", "--format", "{{.Server.Version}}"])
        .env("DOCKER_CONFIG", f.docker_config.join("empty"));
    for line in exports.lines() {
        let (k, v) = line.trim_start_matches("export ").split_once('=').unwrap();
        docker.env(k, v.trim_matches('\''));
    }
    let out = docker.output().unwrap();
    assert!(
        out.status.success(),
        "docker with {exports}: {}",
        text(&out)
    );
    // An unknown node: its own exit code, and the valid names.
    let unknown = f.client(&["env", "nope"]);
    assert_eq!(
        unknown.status.code(),
        Some(i32::from(Reason::UnknownNode.exit_code()))
    );
    assert!(text(&unknown).contains("web-1"), "{}", text(&unknown));

    // The audit log says who got which certificate when.
    let audit = Command::new(bin("ca-server"))
        .args(["audit", "--json", "--state-dir", f.state.to_str().unwrap()])
        .output()
        .unwrap();
    let events: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "issue"
                && e["detail"]
                    .as_str()
                    .unwrap()
                    .contains("dtca://cli/operator/alice")),
        "{events}"
    );
}

#[test]
fn a_short_login_stops_working_at_expiry_unless_renewed_before() {
    let f = Fleet::start();
    let out = f.login(
        &token(&f.state, &["--role", "operator", "--cert-ttl", "20s"]),
        "bob",
    );
    assert!(out.status.success(), "{}", text(&out));
    let first = not_after(&f.docker_config.join("dtca/cli/cert.pem"));
    assert!(
        f.docker(&["--context", &f.node, "version"])
            .status
            .success()
    );

    // Renewed before it expires (half-way through its 20 seconds): the context keeps
    // working past the first expiry.
    wait_past(first - time::Duration::seconds(12));
    let out = f.client(&["login", "--renew"]);
    assert!(out.status.success(), "login --renew: {}", text(&out));
    assert!(text(&out).contains("updated"), "{}", text(&out));
    let second = not_after(&f.docker_config.join("dtca/cli/cert.pem"));
    assert!(second > first);
    wait_past(first);
    let v = f.docker(&["--context", &f.node, "version"]);
    assert!(v.status.success(), "renewed context failed: {}", text(&v));

    // Not renewed again: at expiry the engine refuses it, and renewal is refused too.
    wait_past(second);
    let v = f.docker(&["--context", &f.node, "version"]);
    assert!(
        !v.status.success(),
        "an expired operator certificate was accepted"
    );
    let out = f.client(&["login", "--renew"]);
    assert_eq!(
        out.status.code(),
        Some(i32::from(Reason::CertExpired.exit_code())),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("log in again"), "{}", text(&out));
}

#[test]
fn a_revoked_operator_cannot_renew() {
    let f = Fleet::start();
    let out = f.login(&token(&f.state, &["--role", "operator"]), "alice");
    assert!(out.status.success(), "{}", text(&out));
    let revoke = Command::new(bin("ca-server"))
        .args([
            "cert",
            "revoke",
            "--name",
            "alice",
            "--reason",
            "left the team",
            "--state-dir",
            f.state.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        revoke.status.success() && text(&revoke).contains("revoked"),
        "{}",
        text(&revoke)
    );
    let out = f.client(&["login", "--renew"]);
    assert_eq!(
        out.status.code(),
        Some(i32::from(Reason::CertRevoked.exit_code())),
        "{}",
        text(&out)
    );
    let message = text(&out);
    assert!(
        message.contains("revoked")
            && message.lines().filter(|l| l.starts_with("error:")).count() == 1,
        "{message}"
    );
}

#[test]
fn an_admin_login_drives_the_admin_commands_from_a_workstation() {
    let f = Fleet::start();
    let out = f.login(&token(&f.state, &["--role", "admin"]), "root");
    assert!(out.status.success(), "{}", text(&out));
    let admin_dir = f.docker_config.join("dtca/cli");
    // No state dir here: only the admin bundle and the server address.
    let list = Command::new(bin("ca-server"))
        .args([
            "cert",
            "list",
            "--json",
            "--server",
            &f.serve.addr,
            "--admin-dir",
        ])
        .arg(&admin_dir)
        .arg("--state-dir")
        .arg(f.docker_config.join("no-state"))
        .output()
        .unwrap();
    assert!(list.status.success(), "{}", text(&list));
    let certs: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert!(
        certs
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["identity"] == "dtca://cli/admin/root")
    );
    // An operator login cannot.
    let f2 = Fleet::start();
    let out = f2.login(&token(&f2.state, &["--role", "operator"]), "carol");
    assert!(out.status.success());
    let denied = Command::new(bin("ca-server"))
        .args(["token", "list", "--server", &f2.serve.addr, "--admin-dir"])
        .arg(f2.docker_config.join("dtca/cli"))
        .output()
        .unwrap();
    assert_eq!(
        denied.status.code(),
        Some(i32::from(Reason::PermissionDenied.exit_code()))
    );
}

/// Regression guard for access levels: a native engine cannot enforce them, so it must
/// refuse a read-only certificate outright (its EKU is not clientAuth) rather than give it
/// full access, while a full-access operator of the same CA works as before.
#[test]
fn a_native_engine_refuses_a_read_only_operator_and_serves_a_full_one() {
    let f = Fleet::start();
    let out = f.login(&token(&f.state, &["--role", "operator"]), "writer");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("access: full"), "{}", text(&out));
    let ps = f.docker(&["--context", &f.node, "ps"]);
    assert!(ps.status.success(), "full access: {}", text(&ps));

    let reader_config = f.docker_config.with_file_name("reader-config");
    std::fs::create_dir_all(&reader_config).unwrap();
    let read_only = token(&f.state, &["--role", "operator", "--access", "read-only"]);
    let out = f.client_in(
        &reader_config,
        &[
            "login",
            "--server",
            &f.serve.addr,
            "--token",
            &read_only,
            "--name",
            "reader",
        ],
    );
    assert!(out.status.success(), "read-only login: {}", text(&out));
    assert!(text(&out).contains("access: read-only"), "{}", text(&out));
    let refused = |what: &str| {
        let ps = f.docker_in(&reader_config, &["--context", &f.node, "ps"]);
        assert!(
            !ps.status.success(),
            "{what}: a native engine served a read-only certificate: {}",
            text(&ps)
        );
        // Refused at the handshake, not by some later error.
        assert!(
            text(&ps).contains("bad certificate"),
            "{what}: {}",
            text(&ps)
        );
    };
    refused("first certificate");
    let creds = reader_config.join("dtca/cli");
    let status = f.client_in(
        &reader_config,
        &["status", "--out", creds.to_str().unwrap()],
    );
    assert!(status.status.success(), "{}", text(&status));
    assert!(
        text(&status).contains("access:       read-only"),
        "{}",
        text(&status)
    );
    let state = std::fs::read_to_string(creds.join("client.toml")).unwrap();
    assert!(state.contains("access = \"read-only\""), "{state}");

    // A renewal keeps the level: the new certificate is refused natively too.
    let before = std::fs::read(creds.join("cert.pem")).unwrap();
    let out = f.client_in(&reader_config, &["login", "--renew"]);
    assert!(out.status.success(), "login --renew: {}", text(&out));
    assert!(text(&out).contains("access: read-only"), "{}", text(&out));
    assert_ne!(std::fs::read(creds.join("cert.pem")).unwrap(), before);
    refused("renewed certificate");

    // The CA lists the level.
    let list = f.admin(&["cert", "list", "--json"]);
    let certs: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let access_of = |name: &str| -> Vec<String> {
        certs
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["name"] == name)
            .map(|c| c["access"].as_str().unwrap().to_string())
            .collect()
    };
    // Both of the reader's certificates: the first (renewed) and its successor.
    assert_eq!(access_of("reader"), ["read-only", "read-only"], "{certs}");
    assert_eq!(access_of("writer"), ["full"], "{certs}");
    assert_eq!(access_of(&f.node), ["-"], "{certs}");
}

fn not_after(cert: &Path) -> time::OffsetDateTime {
    let pem = std::fs::read_to_string(cert).unwrap();
    dtca_pki::inspect::CertInfo::from_der(&dtca_pki::inspect::certs_from_pem(&pem).unwrap()[0])
        .unwrap()
        .not_after
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
