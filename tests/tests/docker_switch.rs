//! The docker switch and rotation with real dockerd engines (Debian's docker.io), the
//! real docker CLI, the real `ca-server` and `ca-client` binaries. Engines listen on
//! loopback only; every process is stopped by pid.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use dtca_common::Reason;
use dtca_tests::bins::bin;
use dtca_tests::cli::{operator, text, token};
use dtca_tests::docker::{Engine, IMAGE, free_port};
use dtca_tests::process::{Proc, wait_until};
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

/// `ca-client enroll --docker` for `engine`, switching to `listen`.
fn switch(ca: &Ca, engine: &Engine, out: &Path, listen: &str, extra: &[&str]) -> Output {
    let token = token(&ca.state, &["--role", "node"]);
    let mut cmd = Command::new(bin("ca-client"));
    cmd.args([
        "enroll",
        "--docker",
        "--server",
        &ca.serve.addr,
        "--token",
        &token,
    ])
    .arg("--out")
    .arg(out)
    .arg("--docker-tls-dir")
    .arg(engine.dir.join("tls"))
    .arg("--docker-listen")
    .arg(listen)
    .arg("--docker-restart")
    .arg(&engine.restart)
    .arg("--san")
    .arg(&engine.ip)
    .args(extra);
    if !extra.contains(&"--docker-timeout") {
        cmd.args(["--docker-timeout", "20s"]);
    }
    if engine.systemd.is_none() {
        cmd.arg("--docker-config").arg(&engine.config);
    }
    cmd.arg("--systemd-dir").arg(
        engine
            .systemd
            .clone()
            .unwrap_or_else(|| engine.dir.join("no-systemd")),
    );
    cmd.output().unwrap()
}

fn plain_ping(addr: &str) -> bool {
    let hostport = addr.trim_start_matches("tcp://");
    std::net::TcpStream::connect_timeout(&hostport.parse().unwrap(), Duration::from_secs(2)).is_ok()
}

/// The engine at `listen` serves mutual TLS only: an operator of `ca` gets in; the node's
/// own certificate (`creds`, and the same pair as dockerd's TLS directory holds it), a
/// client without a certificate and one from another CA do not; the old plain address
/// is closed.
fn assert_mtls_only(ca: &Ca, engine: &Engine, creds: &Path, listen: &str) {
    let operator = operator(&ca.state, &ca.serve.addr, &engine.dir.join("operator"));
    let version = engine.docker_tls(
        listen,
        &operator,
        &["version", "--format", "{{.Server.Version}}"],
    );
    assert!(
        version.status.success(),
        "docker --tlsverify version as an operator: {}",
        text(&version)
    );
    assert!(
        !plain_ping(&engine.plain),
        "the old plain address {} still accepts connections",
        engine.plain
    );
    assert_refused_as_client(engine, listen, creds);
    // No client certificate: refused.
    let no_cert = Command::new("docker")
        .args(["--tls", "-H", listen, "--tlscacert"])
        .arg(creds.join("ca.pem"))
        .args(["version"])
        .env("DOCKER_CONFIG", engine.dir.join("cli"))
        .output()
        .unwrap();
    assert!(
        !no_cert.status.success(),
        "a client without a certificate got in"
    );
    // A certificate from another CA: refused.
    let foreign = foreign_credentials(&engine.dir.join("foreign"));
    let out = engine.docker_tls(listen, &foreign, &["version"]);
    assert!(
        !out.status.success(),
        "a foreign-CA certificate got in: {}",
        text(&out)
    );
}

/// Regression: node certificates carried clientAuth, so a node's key (root on one node, a
/// token left in cloud-init) was a docker client of every engine. The node's pair, as
/// `enroll` wrote it and as dockerd's TLS directory holds it, is refused by the engine at
/// `listen` (its own, or another).
fn assert_refused_as_client(engine: &Engine, listen: &str, node_creds: &Path) {
    let tls = node_creds
        .parent()
        .map(|d| d.join("tls"))
        .filter(|d| d.join("server-cert.pem").exists());
    let mut pairs = vec![node_creds.to_path_buf()];
    if let Some(tls) = tls {
        // dockerd's own files under the names the docker CLI reads.
        let as_client = engine
            .dir
            .join(format!("as-client-{}", listen.replace([':', '/'], "-")));
        std::fs::create_dir_all(&as_client).unwrap();
        std::fs::copy(tls.join("ca.pem"), as_client.join("ca.pem")).unwrap();
        std::fs::copy(tls.join("server-cert.pem"), as_client.join("cert.pem")).unwrap();
        std::fs::copy(tls.join("server-key.pem"), as_client.join("key.pem")).unwrap();
        pairs.push(as_client);
    }
    for pair in pairs {
        let out = engine.docker_tls(listen, &pair, &["version"]);
        assert!(
            !out.status.success(),
            "the node's own certificate ({}) is a docker client of {listen}: {}",
            pair.display(),
            text(&out)
        );
        assert!(
            text(&out).contains("bad certificate"),
            "refused for another reason: {}",
            text(&out)
        );
    }
}

/// A client bundle from a CA the engine does not trust, with the engine's own ca.pem so
/// the CLI accepts the server: only the client certificate is foreign.
fn foreign_credentials(dir: &Path) -> std::path::PathBuf {
    use dtca_pki::authority::{Authority, LeafTemplate, hierarchy};
    use dtca_pki::key::{KeyType, PrivateKey};
    let now = time::OffsetDateTime::now_utc();
    let h = hierarchy::create("other", KeyType::P256, now).unwrap();
    let a = Authority::new("other", h.root_der, h.intermediate_der, h.intermediate_key).unwrap();
    let key = PrivateKey::generate(KeyType::P256).unwrap();
    let leaf = a
        .issue(
            &LeafTemplate {
                identity: dtca_pki::Identity::new("other", dtca_pki::Role::Operator, "mallory")
                    .unwrap(),
                public_key_der: key.public_key_der(),
                dns_names: vec![],
                ip_addresses: vec![],
                access: dtca_pki::access::Access::Full,
                lifetime: Duration::from_secs(3600),
            },
            now,
        )
        .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let engine_ca = dir.parent().unwrap().join("tls/ca.pem");
    std::fs::copy(engine_ca, dir.join("ca.pem")).unwrap();
    std::fs::write(
        dir.join("cert.pem"),
        dtca_pki::inspect::certs_to_pem([leaf.der.as_slice(), a.intermediate_der()]),
    )
    .unwrap();
    std::fs::write(dir.join("key.pem"), key.to_pem().as_bytes()).unwrap();
    dir.to_path_buf()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn switches_a_plain_engine_to_mutual_tls_and_refuses_everyone_else() {
    let ca = Ca::start();
    let engine = Engine::start_plain("127.0.0.1");
    assert!(plain_ping(&engine.plain));
    let before = json(&engine.config);
    let creds = engine.dir.join("client");
    let listen = format!("tcp://127.0.0.1:{}", free_port("127.0.0.1"));
    let out = switch(&ca, &engine, &creds, &listen, &[]);
    assert!(
        out.status.success(),
        "enroll --docker: {}\n{}",
        text(&out),
        engine.log_text()
    );

    assert_mtls_only(&ca, &engine, &creds, &listen);
    let after = json(&engine.config);
    for key in [
        "data-root",
        "exec-root",
        "pidfile",
        "iptables",
        "bridge",
        "deprecated-key-path",
        "log-level",
    ] {
        assert_eq!(after[key], before[key], "{key} was not kept");
    }
    assert_eq!(after["tlsverify"], true);
    assert_eq!(after["live-restore"], true);
    let hosts: Vec<String> = serde_json::from_value(after["hosts"].clone()).unwrap();
    assert_eq!(
        hosts,
        vec![
            format!("unix://{}", engine.socket.display()),
            listen.clone()
        ]
    );
    use std::os::unix::fs::PermissionsExt;
    let key_mode = std::fs::metadata(engine.dir.join("tls/server-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);

    // status and check describe it; the CA's inventory knows where the engine is.
    let status = Command::new(bin("ca-client"))
        .args(["status", "--json", "--out"])
        .arg(&creds)
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["engine"]["tlsverify"], true);
    assert!(status["engine"]["served_serial"].is_string(), "{status}");
    let check = Command::new(bin("ca-client"))
        .args(["check", "--out"])
        .arg(&creds)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    let check = Command::new(bin("ca-client"))
        .args(["check", "--warn-within", "60d", "--out"])
        .arg(&creds)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
}

#[test]
fn switches_an_engine_whose_systemd_unit_passes_hosts_with_h() {
    let ca = Ca::start();
    let engine = Engine::start_with_unit("127.0.0.1");
    assert!(plain_ping(&engine.plain));
    // A running container survives even this first switch: live-restore is turned on by a
    // reload that dockerd accepts despite -H on its command line.
    engine.import_busybox();
    let run = engine.docker(&["run", "-d", "--name", "keeper", IMAGE, "/bin/sleep", "3600"]);
    assert!(run.status.success(), "{}", text(&run));
    let started = inspect(&engine, "{{.State.StartedAt}}");
    let creds = engine.dir.join("client");
    let listen = format!("tcp://127.0.0.1:{}", free_port("127.0.0.1"));
    // No --docker-config: the path comes from the unit's --config-file.
    let out = switch(&ca, &engine, &creds, &listen, &[]);
    assert!(
        out.status.success(),
        "enroll --docker: {}\n{}",
        text(&out),
        engine.log_text()
    );
    assert_mtls_only(&ca, &engine, &creds, &listen);
    assert_eq!(
        inspect(&engine, "{{.State.Running}} {{.State.StartedAt}}"),
        format!("true {started}"),
        "the container did not survive the switch: {}",
        engine.log_text()
    );

    let systemd = engine.systemd.clone().unwrap();
    let dropin =
        std::fs::read_to_string(systemd.join("docker.service.d/zz-dtca-tls.conf")).unwrap();
    assert!(dropin.contains("ExecStart=\n"), "{dropin}");
    let exec = dropin.lines().last().unwrap();
    assert!(!exec.contains("-H"), "{exec}");
    assert!(exec.contains("--config-file"), "other flags kept: {exec}");
    let config = json(&engine.config);
    assert_eq!(config["labels"], serde_json::json!(["seed=yes"]));
    let hosts: Vec<String> = serde_json::from_value(config["hosts"].clone()).unwrap();
    assert_eq!(
        hosts,
        vec![format!("unix://{}", engine.socket.display()), listen]
    );
}

#[test]
fn a_failing_restart_command_is_rolled_back() {
    let ca = Ca::start();
    let engine = Engine::start_plain("127.0.0.1");
    let before = std::fs::read(&engine.config).unwrap();
    let creds = engine.dir.join("client");
    let listen = format!("tcp://127.0.0.1:{}", free_port("127.0.0.1"));
    let token = token(&ca.state, &["--role", "node"]);
    let out = Command::new(bin("ca-client"))
        .args([
            "enroll",
            "--docker",
            "--server",
            &ca.serve.addr,
            "--token",
            &token,
            "--san",
            "127.0.0.1",
        ])
        .arg("--out")
        .arg(&creds)
        .arg("--docker-config")
        .arg(&engine.config)
        .arg("--docker-tls-dir")
        .arg(engine.dir.join("tls"))
        .args([
            "--docker-listen",
            &listen,
            "--docker-restart",
            "echo engine busy >&2; exit 3",
            "--docker-timeout",
            "10s",
        ])
        .arg("--systemd-dir")
        .arg(engine.dir.join("none"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(i32::from(Reason::DockerSwitch.exit_code())),
        "{}",
        text(&out)
    );
    let message = text(&out);
    assert!(
        message.contains("step `restart` failed") && message.contains("engine busy"),
        "{message}"
    );
    assert!(message.contains("answers again"), "{message}");
    assert_eq!(
        std::fs::read(&engine.config).unwrap(),
        before,
        "daemon.json was not restored"
    );
    assert!(
        plain_ping(&engine.plain),
        "the engine no longer answers on its old address"
    );
    assert!(engine.docker(&["version"]).status.success());
    assert!(!engine.dir.join("tls/server-cert.pem").exists());

    // The node is enrolled (the certificate was issued) and `status` says the switch
    // failed; `enroll --docker` again, with the token already spent, switches with a
    // renewal of that certificate. Once switched, running it again changes nothing.
    let status = Command::new(bin("ca-client"))
        .args(["status", "--out"])
        .arg(&creds)
        .output()
        .unwrap();
    assert!(
        text(&status).contains("docker switch failed"),
        "{}",
        text(&status)
    );
    let first_serial = client_serial(&creds);
    for round in ["retry", "again"] {
        let out = Command::new(bin("ca-client"))
            .args(["enroll", "--docker", "--token", &token, "--out"])
            .arg(&creds)
            .args(engine.switch_flags(&listen, &engine.restart))
            .output()
            .unwrap();
        assert!(out.status.success(), "{round}: {}", text(&out));
        if round == "again" {
            assert!(text(&out).contains("nothing to do"), "{}", text(&out));
        }
    }
    assert_ne!(
        client_serial(&creds),
        first_serial,
        "not switched with a renewal"
    );
    assert_mtls_only(&ca, &engine, &creds, &listen);
}

/// The serial of the client certificate in `dir`.
fn client_serial(dir: &Path) -> String {
    let pem = std::fs::read_to_string(dir.join("cert.pem")).unwrap();
    let der = dtca_pki::inspect::certs_from_pem(&pem).unwrap().remove(0);
    dtca_pki::inspect::CertInfo::from_der(&der)
        .unwrap()
        .serial
        .to_string()
}

#[test]
fn a_config_that_stops_dockerd_from_starting_is_rolled_back() {
    let ca = Ca::start();
    let engine = Engine::start_plain("127.0.0.1");
    let before = std::fs::read(&engine.config).unwrap();
    // The new port is already taken.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    let creds = engine.dir.join("client");
    let old_pid = engine.pid();
    // Given as an address, the switch sees that before it touches anything.
    let out = switch(
        &ca,
        &engine,
        &creds,
        &format!("tcp://127.0.0.1:{port}"),
        &["--docker-timeout", "8s"],
    );
    assert_eq!(
        out.status.code(),
        Some(i32::from(Reason::InvalidArgument.exit_code())),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("cannot listen there"), "{}", text(&out));
    assert_eq!(std::fs::read(&engine.config).unwrap(), before);
    assert_eq!(
        engine.pid(),
        old_pid,
        "the engine was restarted for nothing"
    );
    // Given as a host name, only the new dockerd finds out, by failing to start: the
    // switch rolls back.
    let listen = format!("tcp://localhost:{port}");
    let out = switch(&ca, &engine, &creds, &listen, &["--docker-timeout", "8s"]);
    assert_eq!(
        out.status.code(),
        Some(i32::from(Reason::DockerSwitch.exit_code())),
        "{}",
        text(&out)
    );
    let message = text(&out);
    assert!(message.contains("step `verify` failed"), "{message}");
    assert_eq!(
        std::fs::read(&engine.config).unwrap(),
        before,
        "daemon.json was not restored"
    );
    assert!(
        wait_until(Duration::from_secs(10), || plain_ping(&engine.plain)),
        "the engine no longer answers on its old address: {}",
        engine.log_text()
    );
    assert!(engine.docker(&["version"]).status.success());
    assert_ne!(engine.pid(), old_pid, "the engine was not restarted");
    drop(squatter);
}

#[test]
fn the_agent_rotates_keeps_the_old_pair_while_the_ca_is_down_and_containers_survive() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("ca");
    init_insecure(&state);
    let ca_addr = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let mut serve = ServeProcess::start_at(&state, &ca_addr, &["--insecure-no-passphrase"], &[]);
    let token = {
        let out = Command::new(bin("ca-server"))
            .args([
                "token",
                "create",
                "--quiet",
                "--role",
                "node",
                "--cert-ttl",
                "30s",
                "--state-dir",
                state.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let engine = Engine::start_plain("127.0.0.1");
    engine.import_busybox();
    let creds = engine.dir.join("client");
    let listen = format!("tcp://127.0.0.1:{}", free_port("127.0.0.1"));
    let out = Command::new(bin("ca-client"))
        // Fixed names: other tests create interfaces (swarm), and a node whose addresses
        // change re-issues early; that is not what this test is about.
        .args([
            "enroll",
            "--docker",
            "--server",
            &ca_addr,
            "--token",
            &token,
            "--san",
            "127.0.0.1",
            "--no-default-sans",
        ])
        .arg("--out")
        .arg(&creds)
        .args(engine.switch_flags(&listen, &engine.restart))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let operator = operator(&state, &ca_addr, &engine.dir.join("operator"));
    let run = engine.docker(&["run", "-d", "--name", "keeper", IMAGE, "/bin/sleep", "3600"]);
    assert!(run.status.success(), "{}", text(&run));
    let started = inspect(&engine, "{{.State.StartedAt}}");

    let served = || {
        let out = Command::new(bin("ca-client"))
            .args(["status", "--json", "--out"])
            .arg(&creds)
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v["engine"]["served_serial"].as_str().map(str::to_string))
    };
    let first = served().expect("engine serves a certificate");

    let log = engine.dir.join("agent.log");
    let mut cmd = Command::new(bin("ca-client"));
    cmd.args([
        "agent",
        "--retry-base",
        "1s",
        "--retry-cap",
        "2s",
        "--docker-timeout",
        "30s",
        "--out",
    ])
    .arg(&creds);
    let mut agent = Proc::spawn("ca-client agent", cmd, &log);

    // The 30-second certificate is renewed at 50-70 % of its life and rotated in.
    // Kept from the poll that saw it: asked again, a busy machine may not answer in time.
    let mut rotated = None;
    assert!(
        wait_until(Duration::from_secs(60), || {
            rotated = served().filter(|s| *s != first);
            rotated.is_some()
        }),
        "the agent did not rotate: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let second = rotated.unwrap();
    assert_eq!(inspect(&engine, "{{.State.Running}}"), "true");
    assert_eq!(
        inspect(&engine, "{{.State.StartedAt}}"),
        started,
        "the container was restarted"
    );

    // CA down: the agent keeps the current pair and retries.
    serve.proc.stop();
    assert!(
        wait_until(Duration::from_secs(60), || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("keeping the current certificate")),
        "no retry logged: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(served().as_deref(), Some(second.as_str()));
    assert!(
        engine
            .docker_tls(&listen, &operator, &["version"])
            .status
            .success()
    );
    let status = Command::new(bin("ca-client"))
        .args(["status", "--out"])
        .arg(&creds)
        .output()
        .unwrap();
    assert!(text(&status).contains("last error"), "{}", text(&status));

    // CA back: the agent renews again.
    let _serve = ServeProcess::start_at(&state, &ca_addr, &["--insecure-no-passphrase"], &[]);
    assert!(
        wait_until(Duration::from_secs(60), || served()
            .is_some_and(|s| s != second)),
        "no renewal after the CA came back: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(
        inspect(&engine, "{{.State.StartedAt}}"),
        started,
        "the container was restarted"
    );

    // SIGTERM stops the agent cleanly.
    let status = agent
        .signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10))
        .expect("agent did not stop");
    assert!(status.success());
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("agent stopped")
    );
}

fn inspect(engine: &Engine, format: &str) -> String {
    let out = engine.docker(&["inspect", "--format", format, "keeper"]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_swarm_engine_is_switched_without_live_restore_and_stays_in_the_swarm() {
    let ca = Ca::start();
    let engine = Engine::start_plain("127.0.0.1");
    let init = engine.docker(&[
        "swarm",
        "init",
        "--advertise-addr",
        "127.0.0.1",
        "--listen-addr",
        &format!("127.0.0.1:{}", free_port("127.0.0.1")),
    ]);
    assert!(init.status.success(), "swarm init: {}", text(&init));
    let creds = engine.dir.join("client");
    let listen = format!("tcp://127.0.0.1:{}", free_port("127.0.0.1"));
    let out = switch(&ca, &engine, &creds, &listen, &[]);
    assert!(
        out.status.success(),
        "enroll --docker: {}\n{}",
        text(&out),
        engine.log_text()
    );
    let config = json(&engine.config);
    assert_ne!(config["live-restore"], true, "live-restore in swarm mode");
    let operator = operator(&ca.state, &ca.serve.addr, &engine.dir.join("operator"));
    let state = engine.docker_tls(
        &listen,
        &operator,
        &[
            "info",
            "--format",
            "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&state.stdout).trim(),
        "active true",
        "{}",
        text(&state)
    );
    engine.stop();
    assert!(
        !Path::new("/sys/class/net/docker_gwbridge").exists(),
        "swarm left an interface behind"
    );
}

#[test]
fn three_engines_on_their_own_loopback_addresses_are_all_switched() {
    let ca = Ca::start();
    let engines: Vec<Engine> = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        .iter()
        .map(|ip| Engine::start_plain(ip))
        .collect();
    let listens: Vec<String> = engines
        .iter()
        .map(|e| format!("tcp://{}:{}", e.ip, free_port(&e.ip)))
        .collect();
    let results: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = engines
            .iter()
            .zip(&listens)
            .map(|(e, l)| {
                let ca = &ca;
                s.spawn(move || {
                    switch(
                        ca,
                        e,
                        &e.dir.join("client"),
                        l,
                        &[
                            "--no-default-sans",
                            "--name",
                            &format!("node-{}", e.ip.replace('.', "-")),
                        ],
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ((engine, listen), out) in engines.iter().zip(&listens).zip(&results) {
        assert!(
            out.status.success(),
            "{}: {}\n{}",
            engine.ip,
            text(out),
            engine.log_text()
        );
        assert_mtls_only(&ca, engine, &engine.dir.join("client"), listen);
        let cert = std::fs::read_to_string(engine.dir.join("client/cert.pem")).unwrap();
        let leaf = dtca_pki::inspect::CertInfo::from_der(
            &dtca_pki::inspect::certs_from_pem(&cert).unwrap()[0],
        )
        .unwrap();
        assert_eq!(
            leaf.ip_addresses,
            vec![engine.ip.parse::<std::net::IpAddr>().unwrap()]
        );
    }
    // Root on one node opens no other engine: each node's pair is refused by the next.
    for (i, engine) in engines.iter().enumerate() {
        let next = (i + 1) % engines.len();
        assert_refused_as_client(&engines[next], &listens[next], &engine.dir.join("client"));
    }
}
