//! `dtca-bench guard`: the guard against native TLS on the same engine in one run.
//!
//! One CA, one real dockerd. The engine is switched to native mutual TLS and measured,
//! then switched to guard mode on the same address (the agent in front of the same
//! dockerd's socket) and measured the same way, and so on for [`CYCLES`] cycles: `GET
//! /_ping` latency on one kept-alive connection (curl, p50 and p99 of 2,000), requests per
//! second with 32 connections (curl `--parallel`) of each of five [`API`] reads, with
//! [`RUNNING`] containers up, and a 1 GiB `docker cp` each way (in: the median of
//! [`COPIES_IN`] copies). Each comparison is made within a cycle (native and guard
//! measured a minute apart), and the report gives the median over cycles: on a shared
//! 2-core machine the throughput of both modes drifts by 20 % from one minute to the
//! next, more than the difference being measured. Then, for the guard alone, the agent's
//! RSS idle and holding 200 open connections, and the time from a renewed pair on disk
//! to the first handshake that serves it. The engine and CA come from the test helpers
//! (`dtca-tests`); every process started is stopped by pid.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use dtca_tests::bins::bin;
use dtca_tests::cli::operator;
use dtca_tests::docker::{Engine, IMAGE, free_port};
use dtca_tests::serve::{ServeProcess, init_insecure};

use self::report::{median, report};

mod report;

/// Requests timed one after another on one connection.
const PINGS: usize = 2000;
/// The connections the throughput requests share.
const CONNECTIONS: usize = 32;
/// The API requests timed for throughput, each on its own, and how many of each: the
/// reads behind the docker CLI's everyday commands (every command pings first; `docker
/// version`, which dockerd answers slowly, asking containerd and runc; `docker ps` with
/// [`RUNNING`] containers; `docker inspect`; `docker images`).
const API: [(&str, &str, usize); 5] = [
    ("`GET /_ping`", "/_ping", 20_000),
    ("`GET /version`", "/v1.41/version", 2_000),
    ("`GET /containers/json`", "/v1.41/containers/json", 10_000),
    (
        "`GET /containers/{id}/json`",
        "/v1.41/containers/bench-cp/json",
        20_000,
    ),
    ("`GET /images/json`", "/v1.41/images/json", 20_000),
];
/// Containers running while the API is measured (the copy's among them).
const RUNNING: usize = 5;
/// The copy, in MiB.
const COPY_MIB: usize = 1024;
/// Copies in per mode and cycle, their median kept: one 1 GiB copy in (dockerd writing
/// it out through overlayfs) varies by 10-20 % from one copy to the next on this machine,
/// more than the margin judged.
const COPIES_IN: usize = 3;
/// Cycles of native then guard (the report gives medians over them).
const CYCLES: usize = 3;
/// Connections held open for the RSS figure.
const HELD: usize = 200;

/// What one engine mode measured in one cycle.
#[derive(Debug, Default, Clone)]
struct Mode {
    p50_ms: f64,
    p99_ms: f64,
    /// Requests per second of each [`API`] request, 32 connections.
    api_per_s: [f64; API.len()],
    copy_in_mib_s: f64,
    copy_out_mib_s: f64,
}

/// Runs the comparison and returns the BENCHMARKS.md section.
///
/// # Errors
/// A step that fails (the switch, a tool missing, a copy).
pub fn run() -> anyhow::Result<String> {
    let tmp = tempfile::Builder::new()
        .prefix("dtca-bench-guard-")
        .tempdir()?;
    let state = tmp.path().join("ca");
    init_insecure(&state);
    let serve = ServeProcess::start(&state, &["--insecure-no-passphrase"], &[]);
    let engine = Engine::start_plain("127.0.0.1");
    engine.import_busybox();
    let out = engine.dir.join("client");
    let port = free_port("127.0.0.1");
    let listen = format!("tcp://127.0.0.1:{port}");
    let agent_pid = engine.dir.join("agent.pid");
    let creds = operator(&state, &serve.addr, &engine.dir.join("op"));
    engine.context("bench", &listen, &creds);
    let big = tmp.path().join("big");
    make_file(&big, COPY_MIB)?;

    let result = (|| -> anyhow::Result<String> {
        let mut cycles = Vec::with_capacity(CYCLES);
        for cycle in 0..CYCLES {
            // The first switch enrolls the node; later ones move it between modes.
            let first = (cycle == 0).then_some((state.as_path(), serve.addr.as_str()));
            switch(&engine, &out, &listen, "native", first, &agent_pid)?;
            if cycle == 0 {
                hold("native", &engine, &creds, &out, port, &agent_pid, &big)?;
            }
            let native = measure(&engine, &creds, port, &big)?;
            switch(&engine, &out, &listen, "guard", None, &agent_pid)?;
            if cycle == 0 {
                hold("guard", &engine, &creds, &out, port, &agent_pid, &big)?;
            }
            let guard = measure(&engine, &creds, port, &big)?;
            eprintln!(
                "cycle {}: {} native {:.0}/s, guard {:.0}/s",
                cycle + 1,
                API[0].0,
                native.api_per_s[0],
                guard.api_per_s[0],
            );
            cycles.push((native, guard));
        }
        let pid = read_pid(&agent_pid)?;
        let rss_idle = rss_kib(pid)?;
        let rss_held = with_open_connections(&creds, port, HELD, || rss_kib(pid))??;
        let first_use = pair_to_first_use(&out, &creds, port)?;
        Ok(report(&cycles, rss_idle, rss_held, first_use))
    })();
    stop_agent(&agent_pid);
    drop(engine);
    drop(serve);
    result
}

/// With `DTCA_BENCH_HOLD=DIR` (profiling by hand): writes what a shell needs to reach
/// the engine in `mode` to `DIR/<mode>.env` and waits until `DIR/go` appears (and removes
/// it) before measuring. Without it, does nothing.
fn hold(
    mode: &str,
    engine: &Engine,
    creds: &Path,
    out: &Path,
    port: u16,
    agent_pid: &Path,
    big: &Path,
) -> anyhow::Result<()> {
    let Some(dir) = std::env::var_os("DTCA_BENCH_HOLD").map(PathBuf::from) else {
        return Ok(());
    };
    std::fs::create_dir_all(&dir)?;
    let env = format!(
        "PORT={port}\nCREDS={}\nOUT={}\nAGENT_PID={}\nDOCKER_CONFIG={}\nBIG={}\nCLIENT={}\n",
        creds.display(),
        out.display(),
        agent_pid.display(),
        engine.dir.join("cli").display(),
        big.display(),
        bin("ca-client").display(),
    );
    std::fs::write(dir.join(format!("{mode}.env")), env)?;
    eprintln!("holding in {mode} mode: {}", dir.display());
    let go = dir.join("go");
    while std::fs::remove_file(&go).is_err() {
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn switch(
    engine: &Engine,
    out: &Path,
    listen: &str,
    mode: &str,
    first: Option<(&Path, &str)>,
    agent_pid: &Path,
) -> anyhow::Result<()> {
    let agent = engine.agent_start(out, "", agent_pid);
    let mut cmd = engine.mode_switch(out, listen, mode, &agent);
    if let Some((state, server)) = first {
        let token = dtca_tests::cli::token(state, &["--role", "node"]);
        cmd.args(["--server", server, "--token", &token]);
    }
    let done = cmd.output()?;
    if !done.status.success() {
        bail!(
            "switch to {mode}: {}",
            String::from_utf8_lossy(&done.stderr)
        );
    }
    Ok(())
}

fn measure(engine: &Engine, creds: &Path, port: u16, big: &Path) -> anyhow::Result<Mode> {
    let url = format!("https://127.0.0.1:{port}/_ping");
    let mut times = ping_times(creds, &url, PINGS)?;
    times.sort_by(f64::total_cmp);
    let docker = |args: &[&str]| -> anyhow::Result<()> {
        let out = engine.cli("bench").args(args).output()?;
        if !out.status.success() {
            bail!("docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    let running: Vec<String> = std::iter::once("bench-cp".to_string())
        .chain((1..RUNNING).map(|i| format!("bench-api-{i}")))
        .collect();
    for name in &running {
        let _ = docker(&["rm", "-f", name]);
        docker(&["run", "-d", "--name", name, IMAGE, "sleep", "3600"])?;
    }
    let big_text = big.to_str().context("path")?;
    let mut mode = Mode {
        p50_ms: percentile(&times, 0.50),
        p99_ms: percentile(&times, 0.99),
        ..Mode::default()
    };
    let base = format!("https://127.0.0.1:{port}");
    for (rate, (_, path, n)) in mode.api_per_s.iter_mut().zip(API) {
        *rate = curl_parallel(creds, &format!("{base}{path}"), n, CONNECTIONS)?;
    }
    let mut copies = Vec::with_capacity(COPIES_IN);
    for _ in 0..COPIES_IN {
        let started = Instant::now();
        docker(&["cp", big_text, "bench-cp:/big"])?;
        copies.push(COPY_MIB as f64 / started.elapsed().as_secs_f64());
    }
    mode.copy_in_mib_s = median(copies);
    let started = Instant::now();
    let out = engine
        .cli("bench")
        .args(["cp", "bench-cp:/big", "-"])
        .stdout(Stdio::null())
        .status()?;
    if !out.success() {
        bail!("docker cp out failed");
    }
    mode.copy_out_mib_s = COPY_MIB as f64 / started.elapsed().as_secs_f64();
    for name in &running {
        docker(&["rm", "-f", name])?;
    }
    Ok(mode)
}

fn curl(creds: &Path) -> Command {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--fail"])
        .arg("--cacert")
        .arg(creds.join("ca.pem"))
        .arg("--cert")
        .arg(creds.join("cert.pem"))
        .arg("--key")
        .arg(creds.join("key.pem"));
    cmd
}

/// Each request's time (ms) after the first, all on one kept-alive connection.
fn ping_times(creds: &Path, url: &str, n: usize) -> anyhow::Result<Vec<f64>> {
    let config: String = (0..=n)
        .map(|_| format!("url = \"{url}\"\noutput = \"/dev/null\"\n"))
        .collect();
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), config)?;
    let out = curl(creds)
        .args(["-w", "%{time_total} %{num_connects}\\n", "-K"])
        .arg(file.path())
        .output()?;
    if !out.status.success() {
        bail!("curl: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let times: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        // Only requests on the already open connection.
        .filter(|(_, connects)| *connects == "0")
        .filter_map(|(t, _)| t.parse::<f64>().ok())
        .map(|s| s * 1000.0)
        .collect();
    if times.len() < n / 2 {
        bail!(
            "curl reused its connection for only {} requests",
            times.len()
        );
    }
    Ok(times)
}

/// `n` requests of `url` over `connections` kept-alive connections: the requests per
/// second.
fn curl_parallel(creds: &Path, url: &str, n: usize, connections: usize) -> anyhow::Result<f64> {
    let config: String = (0..n)
        .map(|_| format!("url = \"{url}\"\noutput = \"/dev/null\"\n"))
        .collect();
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), config)?;
    let mut cmd = curl(creds);
    cmd.args([
        "--parallel",
        "--parallel-max",
        &connections.to_string(),
        "-K",
    ])
    .arg(file.path());
    let started = Instant::now();
    let out = cmd.output()?;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("curl --parallel: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(rate)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn make_file(path: &Path, mib: usize) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    // Not zeros only: nothing on the way may make light work of it.
    let block: Vec<u8> = (0..1024 * 1024)
        .map(|i: usize| (i * 7 + i / 251) as u8)
        .collect();
    for _ in 0..mib {
        file.write_all(&block)?;
    }
    file.flush()?;
    Ok(())
}

fn read_pid(path: &Path) -> anyhow::Result<i32> {
    Ok(std::fs::read_to_string(path)?.trim().parse()?)
}

fn rss_kib(pid: i32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

/// Runs `f` while `n` TLS connections (each having made one request) stay open.
fn with_open_connections<T>(
    creds: &Path,
    port: u16,
    n: usize,
    f: impl FnOnce() -> T,
) -> anyhow::Result<T> {
    let script = format!(
        r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile="{ca}")
ctx.load_cert_chain("{cert}", "{key}")
held = []
for _ in range({n}):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", {port})), server_hostname="127.0.0.1")
    s.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
    s.recv(4096)
    held.append(s)
print("open", flush=True)
sys.stdin.read()
"#,
        ca = creds.join("ca.pem").display(),
        cert = creds.join("cert.pem").display(),
        key = creds.join("key.pem").display(),
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    {
        use std::io::BufRead;
        let stdout = child.stdout.take().context("stdout")?;
        std::io::BufReader::new(stdout).read_line(&mut line)?;
    }
    let result = if line.trim() == "open" {
        // The guard's connection tasks are up once each answered; let allocations settle.
        std::thread::sleep(Duration::from_millis(500));
        Ok(f())
    } else {
        Err(anyhow::anyhow!("could not open {n} connections"))
    };
    drop(child.stdin.take());
    let _ = child.wait();
    result
}

/// Renews the node's pair (`ca-client renew` writes it to disk) and times, from the new
/// `cert.pem`'s modification, the first handshake that serves it.
fn pair_to_first_use(out: &Path, creds: &Path, port: u16) -> anyhow::Result<Duration> {
    let renewed = Command::new(bin("ca-client"))
        .args(["renew", "--out"])
        .arg(out)
        .output()?;
    if !renewed.status.success() {
        bail!("renew: {}", String::from_utf8_lossy(&renewed.stderr));
    }
    let cert: PathBuf = out.join("cert.pem");
    let written = std::fs::metadata(&cert)?.modified()?;
    let script = format!(
        r#"
import socket, ssl, time
want = ssl.PEM_cert_to_DER_cert(open("{cert}").read().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n")
ctx = ssl.create_default_context(cafile="{ca}")
ctx.load_cert_chain("{ocert}", "{okey}")
deadline = time.time() + 30
while time.time() < deadline:
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", {port})), server_hostname="127.0.0.1")
    got = s.getpeercert(binary_form=True)
    s.close()
    if got == want:
        print(repr(time.time()))
        break
    time.sleep(0.005)
"#,
        cert = cert.display(),
        ca = creds.join("ca.pem").display(),
        ocert = creds.join("cert.pem").display(),
        okey = creds.join("key.pem").display(),
    );
    let seen = Command::new("python3").args(["-c", &script]).output()?;
    let text = String::from_utf8_lossy(&seen.stdout);
    let at: f64 = text
        .trim()
        .parse()
        .context("the new pair was never served")?;
    let written = written.duration_since(std::time::UNIX_EPOCH)?.as_secs_f64();
    Ok(Duration::from_secs_f64((at - written).max(0.0)))
}

fn stop_agent(pid_file: &Path) {
    if let Ok(pid) = read_pid(pid_file) {
        let pid = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..100 {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
}
