//! Guard mode with real dockerd engines, the real docker CLI (through docker contexts)
//! and the real binaries: the switch to guard mode, every kind of Docker API traffic
//! through the guard (streams, hijacked sessions with half-closes, uploads and downloads),
//! hot rotation under an open stream, revocation closing an open exec session, node
//! certificates refused, and moves between the modes. Engines listen on loopback only;
//! every process is stopped by pid.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Real processes on plain threads: no tokio clock runs here.
#![allow(clippy::disallowed_types)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dtca_common::bundle::{Bundle, Layout};
use dtca_tests::bins::bin;
use dtca_tests::cli::{operator, operator_with, run, stderr, text, token};
use dtca_tests::docker::{Engine, IMAGE, free_port};
use dtca_tests::process::wait_until;
use dtca_tests::serve::{ServeProcess, init_insecure};

/// A CA, a plain engine and the node's credential directory.
struct Node {
    _tmp: tempfile::TempDir,
    state: PathBuf,
    serve: ServeProcess,
    engine: Engine,
    out: PathBuf,
    listen: String,
    /// The agent `--agent-start` started (its pid file), stopped on drop.
    agent_pid: PathBuf,
}

impl Node {
    fn new() -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("ca");
        init_insecure(&state);
        let serve = ServeProcess::start(&state, &["--insecure-no-passphrase"], &[]);
        let engine = Engine::start_plain("127.0.0.1");
        engine.import_busybox();
        let out = engine.dir.join("client");
        let listen = format!("tcp://127.0.0.1:{}", free_port("127.0.0.1"));
        let agent_pid = engine.dir.join("agent.pid");
        Node {
            _tmp: tmp,
            state,
            serve,
            engine,
            out,
            listen,
            agent_pid,
        }
    }

    /// `--agent-start`: the agent in the background, its pid recorded for the test.
    fn agent_start(&self) -> String {
        self.engine
            .agent_start(&self.out, "--docker-timeout 20s", &self.agent_pid)
    }

    /// `ca-client enroll --docker --docker-mode MODE` (with a token the first time).
    fn switch(&self, mode: &str, first: bool) -> Output {
        let mut cmd = self
            .engine
            .mode_switch(&self.out, &self.listen, mode, &self.agent_start());
        cmd.args(["--docker-timeout", "20s"]);
        if first {
            let t = token(&self.state, &["--role", "node"]);
            cmd.args(["--server", &self.serve.addr, "--token", &t]);
        }
        cmd.output().unwrap()
    }

    fn status(&self) -> serde_json::Value {
        let out = run(
            "ca-client",
            &["status", "--json", "--out", self.out.to_str().unwrap()],
        );
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    fn serial(&self) -> String {
        Bundle::load(&self.out, Layout::CLIENT)
            .unwrap()
            .leaf()
            .unwrap()
            .serial
            .to_string()
    }

    /// An operator bundle and a docker context `name` for the engine's address.
    fn operator_context(&self, name: &str) -> PathBuf {
        let creds = operator(&self.state, &self.serve.addr, &self.engine.dir.join(name));
        self.engine.context(name, &self.listen, &creds);
        creds
    }

    fn docker(&self, context: &str, args: &[&str]) -> Output {
        self.engine.cli(context).args(args).output().unwrap()
    }

    fn agent_log(&self) -> String {
        std::fs::read_to_string(self.engine.dir.join("agent.log")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.agent_pid)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let gone = wait_until(Duration::from_secs(10), || {
                !Path::new(&format!("/proc/{pid}")).exists()
            });
            if !gone {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

fn ok(out: &Output, what: &str) -> String {
    assert!(out.status.success(), "{what}: {}", text(out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `docker run -d --name NAME` of a container that prints `line-N` ten times a second,
/// through the operator's context `gd`.
fn run_logger(node: &Node, name: &str) -> Output {
    node.docker(
        "gd",
        &[
            "run",
            "-d",
            "--name",
            name,
            IMAGE,
            "sh",
            "-c",
            "i=0; while true; do echo line-$i; i=$((i+1)); sleep 0.1; done",
        ],
    )
}

/// Writes `request` (raw bytes, requests pipelined) to the guard on `port` over mutual TLS
/// with the operator's `creds` and returns all it answered until it closed the connection.
fn raw_exchange(creds: &Path, port: &str, request: &str) -> String {
    let mut child = Command::new("timeout")
        .args(["20", "openssl", "s_client", "-quiet", "-ign_eof"])
        .args(["-connect", &format!("127.0.0.1:{port}")])
        .arg("-CAfile")
        .arg(creds.join("ca.pem"))
        .arg("-cert")
        .arg(creds.join("cert.pem"))
        // The intermediate goes along, as the docker CLI sends it.
        .arg("-cert_chain")
        .arg(creds.join("cert.pem"))
        .arg("-key")
        .arg(creds.join("key.pem"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(request.as_bytes()).unwrap();
    // Stdin stays open: s_client would otherwise end the connection before the answers.
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    drop(stdin);
    let _ = child.wait();
    out
}

fn accepts(addr: &str) -> bool {
    let hostport = addr.trim_start_matches("tcp://");
    std::net::TcpStream::connect_timeout(&hostport.parse().unwrap(), Duration::from_secs(2)).is_ok()
}

/// Lines a child prints, collected on a thread.
/// `docker logs -f NAME` through `context`, running, and the lines it printed so far.
fn follow_logs(
    node: &Node,
    context: &str,
    name: &str,
) -> (std::process::Child, Arc<Mutex<Vec<String>>>) {
    let mut logs = node
        .engine
        .cli(context)
        .args(["logs", "-f", name])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = collect_lines(&mut logs);
    (logs, lines)
}

fn collect_lines(child: &mut std::process::Child) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let stdout = child.stdout.take().unwrap();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

fn count(lines: &Arc<Mutex<Vec<String>>>) -> usize {
    lines.lock().unwrap().len()
}

/// Switches `node` to guard mode and checks what the switch promises: success, dockerd on
/// its socket only (no TCP, no TLS keys), the old plain address closed, the mode recorded.
fn switch_to_guard(node: &Node, first: bool) {
    let out = node.switch("guard", first);
    assert!(
        out.status.success(),
        "switch to guard: {}\nagent log:\n{}",
        text(&out),
        node.agent_log()
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&node.engine.config).unwrap()).unwrap();
    let hosts = config["hosts"].as_array().unwrap();
    assert!(
        hosts
            .iter()
            .all(|h| h.as_str().unwrap().starts_with("unix://")),
        "dockerd still listens on TCP: {hosts:?}"
    );
    for key in ["tls", "tlsverify", "tlscacert", "tlscert", "tlskey"] {
        assert!(config.get(key).is_none(), "daemon.json keeps {key}");
    }
    assert!(
        !accepts(&node.engine.plain),
        "the plain address still answers"
    );
    let status = node.status();
    assert_eq!(status["engine"]["mode"], "guard", "{status}");
    assert_eq!(
        status["engine"]["served_serial"].as_str(),
        Some(node.serial().as_str()),
        "{status}"
    );
}

#[test]
fn every_docker_command_works_through_the_guard() {
    let node = Node::new();
    switch_to_guard(&node, true);
    let restarts = node.engine.restarts();
    node.operator_context("gd");

    let version = ok(
        &node.docker("gd", &["version", "--format", "{{.Server.Version}}"]),
        "version",
    );
    assert!(!version.is_empty());
    ok(&node.docker("gd", &["info"]), "info");
    ok(&node.docker("gd", &["ps", "-a"]), "ps");
    let id = ok(
        &node.docker("gd", &["run", "-d", "--name", "ct", IMAGE, "sleep", "600"]),
        "run -d",
    );
    assert!(!id.is_empty());

    // exec with stdin: the client's end of input reaches the process (a half-close
    // through the guard), and the output after it comes back.
    let mut exec = node
        .engine
        .cli("gd")
        .args(["exec", "-i", "ct", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    exec.stdin
        .take()
        .unwrap()
        .write_all(b"through the guard\n")
        .unwrap();
    let exec = exec.wait_with_output().unwrap();
    assert_eq!(ok(&exec, "exec -i"), "through the guard");

    // exec with a tty, under script(1): the terminal's input reaches the shell in the
    // container and its answer comes back.
    let inner = "docker --context gd exec -it ct sh -c 'read x; echo got-$x; exit 3'";
    let mut tty = Command::new("script")
        .args(["-qefc", inner, "/dev/null"])
        .env("DOCKER_CONFIG", node.engine.dir.join("cli"))
        .env_remove("DOCKER_HOST")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut typing = tty.stdin.take().unwrap();
    typing.write_all(b"abc\n").unwrap();
    let mut tty_out = String::new();
    let mut reader = tty.stdout.take().unwrap();
    let done = std::thread::spawn(move || {
        let _ = reader.read_to_string(&mut tty_out);
        tty_out
    });
    let finished = wait_until(Duration::from_secs(30), || {
        tty.try_wait().unwrap().is_some()
    });
    drop(typing);
    if !finished {
        let _ = tty.kill();
    }
    let status = tty.wait().unwrap();
    let tty_out = done.join().unwrap();
    assert!(finished, "exec -it did not finish: {tty_out}");
    assert!(tty_out.contains("got-abc"), "exec -it: {tty_out}");
    assert_eq!(status.code(), Some(3), "exec -it exit code: {tty_out}");

    // attach to a container waiting for input.
    ok(
        &node.docker(
            "gd",
            &[
                "run",
                "-d",
                "-i",
                "--name",
                "at",
                IMAGE,
                "sh",
                "-c",
                "read x; echo attached-$x",
            ],
        ),
        "run -d -i",
    );
    let mut attach = node
        .engine
        .cli("gd")
        .args(["attach", "at"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Typed while attached; stdin stays open, as a terminal's would, until the
    // container has answered and exited (which ends the attach).
    let mut typing = attach.stdin.take().unwrap();
    typing.write_all(b"hi\n").unwrap();
    let lines = collect_lines(&mut attach);
    let answered = wait_until(Duration::from_secs(20), || {
        lines.lock().unwrap().iter().any(|l| l == "attached-hi")
    });
    let ended = wait_until(Duration::from_secs(20), || {
        attach.try_wait().unwrap().is_some()
    });
    drop(typing);
    if !ended {
        let _ = attach.kill();
    }
    let _ = attach.wait();
    assert!(answered, "attach: {:?}", lines.lock().unwrap());
    assert!(ended, "attach did not end with the container");

    // logs -f: a stream that keeps coming.
    ok(&run_logger(&node, "lg"), "run -d (logs)");
    let (mut logs, lines) = follow_logs(&node, "gd", "lg");
    assert!(
        wait_until(Duration::from_secs(20), || count(&lines) >= 20),
        "logs -f stopped at {} lines",
        count(&lines)
    );
    let _ = logs.kill();
    let _ = logs.wait();

    // events: what happened so far, up to now.
    let until = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
    let events = ok(
        &node.docker("gd", &["events", "--since", "0", "--until", &until]),
        "events",
    );
    assert!(events.contains("container start"), "events: {events}");

    // cp both ways, 50 MiB.
    let big = node.engine.dir.join("big.bin");
    let mut data = vec![0u8; 50 * 1024 * 1024];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i.wrapping_mul(2_654_435_761) >> 13) as u8;
    }
    std::fs::write(&big, &data).unwrap();
    ok(
        &node.docker("gd", &["cp", big.to_str().unwrap(), "ct:/big.bin"]),
        "cp in",
    );
    let back = node.engine.dir.join("back.bin");
    ok(
        &node.docker("gd", &["cp", "ct:/big.bin", back.to_str().unwrap()]),
        "cp out",
    );
    assert!(
        std::fs::read(&back).unwrap() == data,
        "cp: the file came back different"
    );

    // build from a local Dockerfile, then save and load the image.
    let ctx = node.engine.dir.join("build");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {IMAGE}\nCOPY hello.txt /hello.txt\nRUN echo built >/built\n"),
    )
    .unwrap();
    std::fs::write(ctx.join("hello.txt"), "hello\n").unwrap();
    ok(
        &node.docker(
            "gd",
            &["build", "-t", "dtca-test/built:1", ctx.to_str().unwrap()],
        ),
        "build",
    );
    let built = ok(
        &node.docker(
            "gd",
            &[
                "run",
                "--rm",
                "dtca-test/built:1",
                "cat",
                "/built",
                "/hello.txt",
            ],
        ),
        "run the built image",
    );
    assert_eq!(built, "built\nhello");
    let tar = node.engine.dir.join("image.tar");
    ok(
        &node.docker(
            "gd",
            &["save", "-o", tar.to_str().unwrap(), "dtca-test/built:1"],
        ),
        "save",
    );
    ok(&node.docker("gd", &["rmi", "dtca-test/built:1"]), "rmi");
    ok(
        &node.docker("gd", &["load", "-i", tar.to_str().unwrap()]),
        "load",
    );
    ok(
        &node.docker("gd", &["image", "inspect", "dtca-test/built:1"]),
        "inspect the loaded image",
    );

    // Nothing of this restarted the engine, and every request was audited.
    assert_eq!(node.engine.restarts(), restarts);
    let audit = std::fs::read_to_string(node.out.join("audit.log")).unwrap_or_default();
    assert!(
        audit.lines().any(|l| l.contains("/containers/create")),
        "no audit line for the create: {audit}"
    );
}

#[test]
fn a_node_certificate_and_no_certificate_are_refused_as_clients() {
    let node = Node::new();
    switch_to_guard(&node, true);
    // The node's own pair, under the names the docker CLI reads.
    let own = node
        .engine
        .docker_tls(&node.listen, &node.out, &["version"]);
    assert!(
        !own.status.success(),
        "the node's certificate got in: {}",
        text(&own)
    );
    assert!(
        text(&own).contains("node certificate"),
        "refused without the guard's message: {}",
        text(&own)
    );
    let none = Command::new("docker")
        .args(["--tls", "-H", &node.listen, "--tlscacert"])
        .arg(node.out.join("ca.pem"))
        .arg("version")
        .env("DOCKER_CONFIG", node.engine.dir.join("cli"))
        .output()
        .unwrap();
    assert!(
        !none.status.success(),
        "a client without a certificate got in"
    );
}

#[test]
fn a_new_pair_is_served_at_once_while_a_logs_stream_keeps_flowing() {
    let node = Node::new();
    switch_to_guard(&node, true);
    node.operator_context("gd");
    ok(&run_logger(&node, "lg"), "run -d");
    let pid = node.engine.pid();
    let restarts = node.engine.restarts();
    let (mut logs, lines) = follow_logs(&node, "gd", "lg");
    assert!(wait_until(Duration::from_secs(20), || count(&lines) >= 5));

    let before = node.serial();
    let renew = run("ca-client", &["renew", "--out", node.out.to_str().unwrap()]);
    assert!(renew.status.success(), "renew: {}", text(&renew));
    let after = node.serial();
    assert_ne!(before, after);
    let written = Instant::now();
    // New connections get the new pair.
    assert!(
        wait_until(
            Duration::from_secs(10),
            || node.status()["engine"]["served_serial"].as_str() == Some(after.as_str())
        ),
        "the guard does not serve the new pair: {}\n{}",
        node.status(),
        node.agent_log()
    );
    println!(
        "new pair on disk to first use: {} ms",
        written.elapsed().as_millis()
    );
    // The open stream carries on.
    let seen = count(&lines);
    assert!(
        wait_until(Duration::from_secs(10), || count(&lines) >= seen + 10),
        "the logs stream stopped at the rotation ({} lines)",
        count(&lines)
    );
    assert!(logs.try_wait().unwrap().is_none(), "logs -f ended");
    ok(&node.docker("gd", &["ps"]), "ps after the rotation");
    // dockerd was not touched.
    assert_eq!(node.engine.pid(), pid);
    assert_eq!(node.engine.restarts(), restarts);
    let _ = logs.kill();
    let _ = logs.wait();
}

#[test]
fn a_read_only_operator_reads_through_the_guard_and_is_refused_the_rest() {
    let node = Node::new();
    switch_to_guard(&node, true);
    node.operator_context("full");
    ok(
        &node.docker(
            "full",
            &["run", "-d", "--name", "web", IMAGE, "sleep", "600"],
        ),
        "run -d",
    );
    let creds = operator_with(
        &node.state,
        &node.serve.addr,
        &node.engine.dir.join("reader"),
        &["--access", "read-only"],
    );
    node.engine.context("reader", &node.listen, &creds);

    // Reading state works.
    let ps = ok(
        &node.docker("reader", &["ps", "--format", "{{.Names}}"]),
        "ps",
    );
    assert_eq!(ps, "web");
    let state = ok(
        &node.docker(
            "reader",
            &["inspect", "--format", "{{.State.Status}}", "web"],
        ),
        "inspect",
    );
    assert_eq!(state, "running");
    for args in [
        &["version"][..],
        &["info"],
        &["images"],
        &["logs", "web"],
        &["top", "web"],
        &["network", "ls"],
        &["volume", "ls"],
        &["system", "df"],
    ] {
        ok(&node.docker("reader", args), &args.join(" "));
    }

    // Changing state, running code and reading files are refused, and the CLI prints
    // why (the guard's Docker-style 403).
    let build_dir = node.engine.dir.join("build");
    std::fs::create_dir_all(&build_dir).unwrap();
    std::fs::write(
        build_dir.join("Dockerfile"),
        format!("FROM {IMAGE}\nRUN echo built\n"),
    )
    .unwrap();
    let build_dir = build_dir.to_str().unwrap().to_string();
    for (args, why) in [
        (
            vec!["create", "--name", "new", IMAGE],
            "read-only access: POST /containers/create changes state",
        ),
        (
            vec!["exec", "web", "true"],
            "read-only access: POST /containers/web/exec runs code",
        ),
        (
            vec!["cp", "web:/etc/hostname", "-"],
            "read-only access: GET /containers/web/archive reads file contents",
        ),
        (
            vec!["build", "-t", "x", &build_dir],
            "read-only access: POST /build runs code",
        ),
        (
            vec!["stop", "web"],
            "read-only access: POST /containers/web/stop changes state",
        ),
    ] {
        let out = node.docker("reader", &args);
        assert!(
            !out.status.success(),
            "{args:?} was allowed: {}",
            text(&out)
        );
        assert!(stderr(&out).contains(why), "{args:?}: {}", text(&out));
    }
    // Requests written by hand cannot slip a change past the check: each pipelined request
    // is checked on its own, and a head that dockerd could read differently from the
    // guard (a length and a chunked coding both) is refused and the connection closed.
    let port = node.listen.rsplit(':').next().unwrap();
    let pipelined = raw_exchange(
        &creds,
        port,
        "GET /containers/json HTTP/1.1\r\nHost: x\r\n\r\n\
         POST /containers/web/stop HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    let statuses: Vec<&str> = pipelined
        .lines()
        .filter(|l| l.starts_with("HTTP/1.1 "))
        .collect();
    assert_eq!(statuses.len(), 2, "{pipelined}");
    assert!(statuses[0].starts_with("HTTP/1.1 200"), "{pipelined}");
    assert!(statuses[1].starts_with("HTTP/1.1 403"), "{pipelined}");
    assert!(
        pipelined.contains("POST /containers/web/stop changes state"),
        "{pipelined}"
    );
    let smuggled = raw_exchange(
        &creds,
        port,
        "GET /containers/json HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
         0\r\n\r\nPOST /containers/web/stop HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    let statuses: Vec<&str> = smuggled
        .lines()
        .filter(|l| l.starts_with("HTTP/1.1 "))
        .collect();
    assert_eq!(statuses, ["HTTP/1.1 400 Bad Request"], "{smuggled}");

    // Nothing happened: no new container, the old one still runs.
    let all = ok(
        &node.docker("full", &["ps", "-a", "--format", "{{.Names}} {{.State}}"]),
        "ps -a",
    );
    assert_eq!(all, "web running");

    // The node's audit log shows the requests, the reader's and the refusals among them
    // (read once the writer has caught up: it writes in batches every 25 ms).
    let audit_json = || {
        run(
            "ca-client",
            &["audit", "--json", "--out", node.out.to_str().unwrap()],
        )
    };
    let mut out = audit_json();
    assert!(
        wait_until(Duration::from_secs(5), || {
            std::thread::sleep(Duration::from_millis(100));
            let again = audit_json();
            let settled = again.stdout == out.stdout;
            out = again;
            settled
        }),
        "the audit log kept growing"
    );
    assert!(out.status.success(), "audit: {}", text(&out));
    let records: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reader: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["access"] == "read-only")
        .collect();
    assert!(
        reader.iter().any(|r| r["method"] == "GET"
            && r["path"].as_str().unwrap().contains("/containers/json")
            && r["status"] == 200),
        "{reader:?}"
    );
    let refused = reader
        .iter()
        .find(|r| r["path"].as_str().unwrap().contains("/containers/create"))
        .unwrap();
    assert_eq!(refused["status"], 403);
    assert_eq!(
        refused["refused"],
        "read-only access: POST /containers/create changes state"
    );
    let identity = refused["identity"].as_str().unwrap();
    assert!(identity.contains("/operator/"), "{identity}");
    assert!(
        records
            .iter()
            .any(|r| r["access"] == "full" && r["status"] == 201),
        "the full operator's run is audited too"
    );
    // The text form, one line per record.
    let out = run("ca-client", &["audit", "--out", node.out.to_str().unwrap()]);
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(shown.lines().count(), records.len());
    assert!(
        shown.contains("refused: read-only access: POST /containers/exec")
            || shown.contains("refused: read-only access: POST /containers/web/exec"),
        "{shown}"
    );
}

#[test]
fn revoking_an_operator_closes_its_exec_session_and_refuses_it_within_seconds() {
    let node = Node::new();
    switch_to_guard(&node, true);
    let creds = node.operator_context("gd");
    ok(
        &node.docker("gd", &["run", "-d", "--name", "ct", IMAGE, "sleep", "600"]),
        "run -d",
    );
    assert!(
        wait_until(Duration::from_secs(30), || node
            .agent_log()
            .contains("agent channel open")),
        "agent channel never opened: {}",
        node.agent_log()
    );
    let mut exec = node
        .engine
        .cli("gd")
        .args([
            "exec",
            "-i",
            "ct",
            "sh",
            "-c",
            "while read x; do echo got-$x; done",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = exec.stdin.take().unwrap();
    let lines = collect_lines(&mut exec);
    input.write_all(b"one\n").unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l == "got-one")),
        "the exec session does not answer"
    );

    let serial = Bundle::load(&creds, Layout::CLIENT)
        .unwrap()
        .leaf()
        .unwrap()
        .serial
        .to_string();
    let revoked_at = Instant::now();
    let revoke = run(
        "ca-server",
        &[
            "cert",
            "revoke",
            &serial,
            "--state-dir",
            node.state.to_str().unwrap(),
        ],
    );
    assert!(revoke.status.success(), "revoke: {}", stderr(&revoke));
    // The session is closed (the CLI exits), though its stdin is still open.
    let closed = wait_until(Duration::from_secs(5), || {
        exec.try_wait().unwrap().is_some()
    });
    let took = revoked_at.elapsed();
    if !closed {
        let _ = exec.kill();
    }
    let _ = exec.wait();
    drop(input);
    assert!(
        closed,
        "the exec session is still open 5 s after the revocation: {}",
        node.agent_log()
    );
    println!("revoke to closed exec session: {} ms", took.as_millis());
    // New calls are refused, with a message the CLI prints.
    let refused = node.docker("gd", &["ps"]);
    assert!(!refused.status.success(), "a revoked certificate got in");
    assert!(text(&refused).contains("revoked"), "{}", text(&refused));
}

#[test]
fn native_to_guard_to_native_on_one_node_keeps_its_containers() {
    let node = Node::new();
    let native = node.switch("native", true);
    assert!(native.status.success(), "native switch: {}", text(&native));
    assert_eq!(node.status()["engine"]["mode"], "native");
    node.operator_context("nt");
    let id = ok(
        &node.docker("nt", &["run", "-d", "--name", "ct", IMAGE, "sleep", "600"]),
        "run -d",
    );
    let started = ok(
        &node.docker("nt", &["inspect", "-f", "{{.State.StartedAt}}", "ct"]),
        "inspect",
    );

    switch_to_guard(&node, false);
    let dockerd = node.engine.pid();
    ok(
        &node.docker("nt", &["version"]),
        "version through the guard",
    );
    let running = ok(
        &node.docker(
            "nt",
            &[
                "inspect",
                "-f",
                "{{.Id}} {{.State.Running}} {{.State.StartedAt}}",
                "ct",
            ],
        ),
        "inspect through the guard",
    );
    assert_eq!(
        running,
        format!("{id} true {started}"),
        "the container did not survive"
    );

    let back = node.switch("native", false);
    assert!(
        back.status.success(),
        "back to native: {}\nagent log:\n{}",
        text(&back),
        node.agent_log()
    );
    assert_eq!(node.status()["engine"]["mode"], "native");
    assert_ne!(
        node.engine.pid(),
        dockerd,
        "dockerd serves TLS itself again"
    );
    let running = ok(
        &node.docker(
            "nt",
            &[
                "inspect",
                "-f",
                "{{.Id}} {{.State.Running}} {{.State.StartedAt}}",
                "ct",
            ],
        ),
        "inspect through dockerd's TLS",
    );
    assert_eq!(
        running,
        format!("{id} true {started}"),
        "the container did not survive"
    );
}

/// Why the README recommends guard mode for swarm nodes, measured: dockerd refuses
/// live-restore in swarm mode, so the restart a native rotation makes stops every
/// container of the node; in guard mode a rotation leaves dockerd and its containers be.
#[test]
fn on_a_swarm_node_a_restart_stops_containers_and_a_guard_rotation_does_not() {
    let node = Node::new();
    let init = node
        .engine
        .docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
    assert!(init.status.success(), "swarm init: {}", text(&init));
    let running = |args: &[&str]| -> String {
        let mut all = vec!["inspect", "-f", "{{.State.Running}} {{.State.StartedAt}}"];
        all.extend_from_slice(args);
        ok(&node.engine.docker(&all), "inspect")
    };
    // What a native rotation does to the engine: a restart.
    ok(
        &node
            .engine
            .docker(&["run", "-d", "--name", "before", IMAGE, "sleep", "600"]),
        "run -d",
    );
    let restart = Command::new(&node.engine.restart).status().unwrap();
    assert!(restart.success());
    assert!(wait_until(Duration::from_secs(30), || node
        .engine
        .docker(&["version"])
        .status
        .success()));
    assert!(
        running(&["before"]).starts_with("false"),
        "a swarm node's container survived a restart: {}",
        running(&["before"])
    );

    switch_to_guard(&node, true);
    node.operator_context("sw");
    ok(
        &node.docker(
            "sw",
            &["run", "-d", "--name", "after", IMAGE, "sleep", "600"],
        ),
        "run -d through the guard",
    );
    let state = running(&["after"]);
    let pid = node.engine.pid();
    let before = node.serial();
    let renew = run("ca-client", &["renew", "--out", node.out.to_str().unwrap()]);
    assert!(renew.status.success(), "renew: {}", text(&renew));
    let after = node.serial();
    assert!(
        wait_until(
            Duration::from_secs(10),
            || node.status()["engine"]["served_serial"].as_str() == Some(after.as_str())
        ),
        "the guard does not serve the new pair"
    );
    assert_ne!(before, after);
    assert_eq!(node.engine.pid(), pid, "dockerd was restarted");
    assert_eq!(
        running(&["after"]),
        state,
        "the container did not survive the rotation"
    );
    assert!(state.starts_with("true"));
}

/// Without a way to start the agent (no systemd here, no `--agent-start`) the switch is
/// refused before anything is spent (exit 47); an agent start that starts nothing is
/// rolled back like any failed switch (exit 48), the engine back on its plain address.
#[test]
fn a_guard_switch_without_an_agent_is_refused_or_rolled_back() {
    use dtca_common::Reason;
    use dtca_tests::cli::expect_exit;
    let node = Node::new();
    let config_before = std::fs::read_to_string(&node.engine.config).unwrap();
    let enroll = |extra: &[&str]| {
        let t = token(&node.state, &["--role", "node"]);
        Command::new(bin("ca-client"))
            .args([
                "enroll",
                "--docker",
                "--no-default-sans",
                "--san",
                "127.0.0.1",
            ])
            .args(["--docker-mode", "guard", "--docker-timeout", "5s"])
            .args(["--server", &node.serve.addr, "--token", &t, "--out"])
            .arg(&node.out)
            .args(node.engine.switch_flags(&node.listen, &node.engine.restart))
            .args(extra)
            .output()
            .unwrap()
    };
    let refused = enroll(&[]);
    expect_exit(&refused, Reason::AgentStart);
    assert!(
        stderr(&refused).contains("--agent-start"),
        "{}",
        stderr(&refused)
    );
    assert!(
        !node.out.join("client.toml").exists(),
        "something was spent"
    );
    assert_eq!(
        std::fs::read_to_string(&node.engine.config).unwrap(),
        config_before
    );

    let failed = enroll(&["--agent-start", "true"]);
    expect_exit(&failed, Reason::GuardSwitch);
    assert!(
        stderr(&failed).contains("start the agent"),
        "{}",
        stderr(&failed)
    );
    assert_eq!(
        std::fs::read_to_string(&node.engine.config).unwrap(),
        config_before
    );
    assert!(
        accepts(&node.engine.plain),
        "the engine is not back on its plain address"
    );
    assert!(
        !accepts(&node.listen),
        "something still listens on the guard's address"
    );
    let status = node.status();
    assert_eq!(status["engine"]["managed"], false, "{status}");
    assert_eq!(
        status["engine"]["failed_switch"]["step"], "start-agent",
        "{status}"
    );
}
