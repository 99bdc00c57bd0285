//! The whole benchmark, in order: fixtures, raw crypto, a fresh server and an idle window
//! (while the million-certificate store is written), durable issuance against dtca and
//! cfssl, a profile under load, the storm, memory after the load, inventory at scale.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cfssl::{self, Cfssl, CfsslWorker};
use crate::dtca::{
    self, Bins, Server, State, connections_for, enroll_channel, enroll_config, renew_config,
};
use crate::footprint::{self, BinarySize, Idle, IdleProbe};
use crate::grpc::{self, UnaryWorker};
use crate::inventory::{self, Filled};
use crate::load::{self, Outcome, Window};
use crate::pg::Postgres;
use crate::proc::{Child, Usage, output};
use crate::profile::{self, Profile};
use crate::raw::{self, Rates};
use crate::storm::{self, Storm};
use crate::{csrs, machine::Machine};

/// What to run, and how big.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Requests in flight for each issuance row.
    pub in_flight: Vec<usize>,
    /// Warm-up before each measured window.
    pub warmup: Duration,
    /// Each measured window.
    pub measure: Duration,
    /// Distinct pre-generated CSRs.
    pub csrs: usize,
    /// Nodes in the storm.
    pub storm: usize,
    /// Nodes connecting at once in the storm.
    pub storm_parallel: usize,
    /// Certificates in the inventory store.
    pub inventory: u64,
    /// Certificates per node in the inventory (renewal history).
    pub chain: u64,
    /// The idle window.
    pub idle: Duration,
    /// Issuances before "RSS after load" is read.
    pub min_issued: u64,
    /// Where temporary state goes.
    pub work_dir: PathBuf,
    /// Criterion's output directory (for the pure-core table).
    pub criterion_dir: PathBuf,
}

/// Everything measured.
#[derive(Debug)]
pub struct Results {
    /// The plan it ran.
    pub plan: Plan,
    /// The machine.
    pub machine: Machine,
    /// Load average and time at the end.
    pub machine_end: Machine,
    /// Time to generate the CSR pool.
    pub csr_generation: Duration,
    /// Raw ring verify+sign.
    pub raw: Rates,
    /// dtca Enroll at each in-flight count.
    pub ours: Vec<Outcome>,
    /// dtca Renew (mTLS) at the highest in-flight count.
    pub renew: Outcome,
    /// cfssl sign at each in-flight count.
    pub cfssl: Vec<Outcome>,
    /// `cfssl version`.
    pub cfssl_version: String,
    /// The profiled run and its profile (or why there is none).
    pub profile: Result<(Outcome, Profile), String>,
    /// The storm.
    pub storm: Storm,
    /// Idle processes.
    pub idle: Vec<Idle>,
    /// What happened with `ca-client agent`.
    pub agent_note: String,
    /// ca-server right after start.
    pub server_fresh: Usage,
    /// ca-server after the load.
    pub server_loaded: Usage,
    /// Certificates the server issued before `server_loaded` was read.
    pub issued: u64,
    /// One-shot CLI commands against the small store: (what, wall times, peak RSS KiB).
    pub one_shot: Vec<(String, Vec<Duration>, u64)>,
    /// Binary sizes.
    pub binaries: Vec<BinarySize>,
    /// Inventory at scale.
    pub inventory: Inventory,
    /// Criterion results: (benchmark, mean ns, median ns).
    pub criterion: Vec<(String, f64, f64)>,
    /// dtca Enroll with `serve --database postgres://...` at each in-flight count, or why
    /// there is no such row.
    pub postgres: Result<Vec<Outcome>, String>,
    /// `postgres --version`, when it ran.
    pub postgres_version: String,
    /// 4 KiB write + fsync in the state dir's file system.
    pub fsync: crate::load::Latency,
}

/// Inventory at scale.
#[derive(Debug, Default)]
pub struct Inventory {
    /// What was written.
    pub filled: Filled,
    /// Database size after writing.
    pub db_bytes: u64,
    /// How long `ca-server serve` took to listen on it.
    pub server_start: Duration,
    /// `cert list --expiring-within 7d` wall times.
    pub list: Vec<Duration>,
    /// Rows it printed.
    pub rows: usize,
    /// Peak RSS of the list command, KiB.
    pub list_peak_kib: u64,
    /// `ca-client renew` wall times.
    pub renew: Vec<Duration>,
    /// Server RSS after the list and renewals, KiB.
    pub server_rss_kib: u64,
}

/// Runs everything.
///
/// # Errors
/// When a step cannot be set up; measurements that merely fail are reported as such.
pub async fn all(plan: Plan) -> anyhow::Result<Results> {
    let machine = Machine::now();
    let cores = machine.cores;
    let bins = Bins::beside_me()?;
    let work = plan.work_dir.clone();
    std::fs::create_dir_all(&work)?;
    step("generating CSRs");
    let started = Instant::now();
    let n = plan.csrs;
    let pool = tokio::task::spawn_blocking(move || csrs::generate(n, cores)).await??;
    let csr_generation = started.elapsed();

    step("raw P-256 verify+sign with ring");
    let raw_pool = pool.clone();
    let raw =
        tokio::task::spawn_blocking(move || raw::measure(&raw_pool, cores, Duration::from_secs(3)))
            .await??;

    step("starting ca-server (embedded store)");
    let fsync = footprint::fsync_latency(&work, 200)?;
    let s1 = State::init(&bins, &work.join("ca"))?;
    let mut server = Server::start(&bins, &s1).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let server_fresh = Usage::of(&server.pid().to_string())?;
    let token = server.token(&bins, 1_000_000)?;
    let node = dtca::enroll_node(
        enroll_channel(&server.addr, &token).await?,
        &token,
        "renewer",
    )
    .await?;
    let mut issued = 1u64;

    step("one-shot commands (ca-client enroll, renew; ca-server cert list)");
    let mut one_shot = Vec::new();
    let d1 = work.join("client-once");
    let (t, peak, _) = footprint::timed_with_peak(&[
        bins.client.as_os_str(),
        "enroll".as_ref(),
        "--server".as_ref(),
        server.addr.as_ref(),
        "--token".as_ref(),
        token.as_ref(),
        "--name".as_ref(),
        "once-1".as_ref(),
        "--no-default-sans".as_ref(),
        "--san".as_ref(),
        "once-1.bench.internal".as_ref(),
        "--out".as_ref(),
        d1.as_os_str(),
    ])?;
    issued += 1;
    one_shot.push(("ca-client enroll".to_string(), vec![t], peak));
    let renews = cli_renew(&bins, &d1, 3)?;
    issued += 3;
    one_shot.push(("ca-client renew".to_string(), renews.0, renews.1));
    let lists = cli_list(&bins, &s1.dir, 3)?;
    one_shot.push((
        "ca-server cert list --expiring-within 7d".to_string(),
        lists.0,
        lists.2,
    ));

    step("idle window (the million-certificate store is written meanwhile)");
    let (agent, agent_note) = start_agent(&bins, &server, &token, &work).await;
    if let Some(a) = &agent {
        issued += 1;
        let _ = a;
    }
    let mut targets = vec![("ca-server serve (fresh)".to_string(), server.pid())];
    if let Some(a) = &agent {
        targets.push(("ca-client agent".to_string(), a.pid()));
    }
    let probe = IdleProbe::start(&targets);
    let s2 = State::init(&bins, &work.join("ca-inventory"))?;
    let fill = tokio::spawn(inventory::fill(
        s2.store_db(),
        "bench",
        plan.inventory,
        plan.chain,
        node.leaf_der.clone(),
    ));
    tokio::time::sleep_until((probe.started() + plan.idle).into()).await;
    let idle = probe.finish();
    drop(agent);
    let filled = fill.await.context("inventory writer")??;

    step("durable issuance: dtca Enroll");
    let window = Window {
        warmup: plan.warmup,
        measure: plan.measure,
    };
    let token_arc: Arc<str> = token.as_str().into();
    let mut ours = Vec::new();
    for &n in &plan.in_flight {
        let o = enroll_run(&server, &token_arc, &pool, n, window, &[server.pid()]).await?;
        issued += o.ok_total;
        say_run("dtca Enroll", &o);
        ours.push(o);
    }

    step("durable issuance: dtca Renew (mutual TLS)");
    let top = plan.in_flight.iter().copied().max().unwrap_or(64);
    let renew_bodies = Arc::new(
        pool.iter()
            .map(|c| {
                grpc::frame(&dtca_proto::v1::RenewRequest {
                    csr_der: c.der.clone(),
                })
            })
            .collect::<Vec<_>>(),
    );
    let renew = unary_run(
        &server.addr,
        renew_config(&node)?,
        "/dtca.v1.Ca/Renew",
        &renew_bodies,
        top,
        window,
        &[server.pid()],
    )
    .await?;
    issued += renew.ok_total;
    say_run("dtca Renew", &renew);

    step("durable issuance: dtca Enroll, PostgreSQL store");
    let (postgres, postgres_version) = match postgres_status(&bins, &s1) {
        Err(why) => (Err(why), String::new()),
        Ok(()) => match postgres_rows(&bins, &work, &pool, &plan.in_flight, window).await {
            Ok((rows, version)) => (Ok(rows), version),
            Err(e) => (
                Err(format!("the PostgreSQL row failed: {e:#}")),
                String::new(),
            ),
        },
    };

    step("cfssl serve: sign");
    let cf = Cfssl::start(&work.join("cfssl")).await?;
    let bodies = cfssl::bodies(&pool);
    CfsslWorker::connect(&cf.addr, bodies.clone())
        .await?
        .sign(0)
        .await
        .map_err(|e| anyhow::anyhow!("cfssl sign does not work: {e}"))?;
    let mut cfssl_runs = Vec::new();
    for &n in &plan.in_flight {
        let mut workers = Vec::new();
        for _ in 0..n {
            workers.push(CfsslWorker::connect(&cf.addr, bodies.clone()).await?);
        }
        let o = load::run(workers, n, window, &[cf.pid()]).await;
        say_run("cfssl sign", &o);
        cfssl_runs.push(o);
    }
    let cfssl_version = cf.version.clone();
    drop(cf);

    step("profile: perf record of ca-server under Enroll load");
    let profile = profiled(&server, &token_arc, &pool, top, window, &work).await;
    if let Ok((o, _)) = &profile {
        issued += o.ok_total;
    }

    step("enrollment storm");
    let storm = storm::run(
        &server.addr,
        &token,
        pool.clone(),
        plan.storm,
        plan.storm_parallel,
        server.pid(),
    )
    .await;
    issued += storm.enrolled as u64;
    println!(
        "  storm: {} of {} nodes in {:.2} s",
        storm.enrolled,
        storm.nodes,
        storm.total.as_secs_f64()
    );

    while issued < plan.min_issued {
        step("more issuance until the memory reading");
        let o = enroll_run(
            &server,
            &token_arc,
            &pool,
            top,
            Window {
                warmup: Duration::ZERO,
                measure: plan.measure,
            },
            &[],
        )
        .await?;
        if o.ok_total == 0 {
            break;
        }
        issued += o.ok_total;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let server_loaded = Usage::of(&server.pid().to_string())?;
    server.stop();

    step("inventory at scale");
    let inventory = inventory_at_scale(&bins, &s2, filled).await?;

    let mut binaries = vec![
        footprint::binary_size(&bins.server, &work),
        footprint::binary_size(&bins.client, &work),
    ];
    if let Ok(me) = std::env::current_exe() {
        binaries.push(footprint::binary_size(&me, &work));
    }

    Ok(Results {
        machine,
        machine_end: Machine::now(),
        criterion: criterion(&plan.criterion_dir),
        plan,
        csr_generation,
        raw,
        ours,
        renew,
        cfssl: cfssl_runs,
        cfssl_version,
        profile,
        storm,
        idle,
        agent_note,
        server_fresh,
        server_loaded,
        issued,
        one_shot,
        binaries,
        inventory,
        postgres,
        postgres_version,
        fsync,
    })
}

/// Enroll load against a running server (`dtca-bench drive`), printed as one line.
///
/// # Errors
/// When the CSRs cannot be made or the server cannot be reached.
pub async fn drive(
    addr: String,
    token: String,
    in_flight: usize,
    measure: Duration,
    csrs: usize,
    pid: Option<u32>,
) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pool = tokio::task::spawn_blocking(move || csrs::generate(csrs, cores)).await??;
    let token: Arc<str> = token.into();
    let bodies = Arc::new(
        pool.iter()
            .map(|c| {
                grpc::frame(&dtca_proto::v1::EnrollRequest {
                    token: token.to_string(),
                    csr_der: c.der.clone(),
                    name: c.name.clone(),
                })
            })
            .collect::<Vec<_>>(),
    );
    let window = Window {
        warmup: Duration::from_secs(1),
        measure,
    };
    let pids: Vec<u32> = pid.into_iter().collect();
    let o = unary_run(
        &addr,
        enroll_config(&token)?,
        "/dtca.v1.Ca/Enroll",
        &bodies,
        in_flight,
        window,
        &pids,
    )
    .await?;
    say_run("dtca Enroll", &o);
    let per_cert = |d: Duration| d.as_secs_f64() * 1e6 / o.ok.max(1) as f64;
    println!(
        "  CPU in window: server {:.0} µs/cert, load generator {:.0} µs/cert ({:.2} cores), machine {:.2} cores",
        o.cpu.first().map_or(0.0, |c| per_cert(*c)),
        per_cert(o.own_cpu),
        o.own_cpu.as_secs_f64() / measure.as_secs_f64(),
        o.machine_cpu.as_secs_f64() / measure.as_secs_f64()
    );
    Ok(())
}

fn step(what: &str) {
    println!("== {what}");
}

fn say_run(what: &str, o: &Outcome) {
    println!(
        "  {what:<12} {:>3} in flight: {:>8.0}/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}{}",
        o.in_flight,
        o.rate(),
        o.latency.p50 as f64 / 1000.0,
        o.latency.p99 as f64 / 1000.0,
        o.errors,
        o.first_error
            .as_deref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
}

async fn enroll_run(
    server: &Server,
    token: &Arc<str>,
    pool: &Arc<Vec<csrs::Csr>>,
    n: usize,
    window: Window,
    pids: &[u32],
) -> anyhow::Result<Outcome> {
    let bodies = Arc::new(
        pool.iter()
            .map(|c| {
                grpc::frame(&dtca_proto::v1::EnrollRequest {
                    token: token.to_string(),
                    csr_der: c.der.clone(),
                    name: c.name.clone(),
                })
            })
            .collect::<Vec<_>>(),
    );
    unary_run(
        &server.addr,
        enroll_config(token)?,
        "/dtca.v1.Ca/Enroll",
        &bodies,
        n,
        window,
        pids,
    )
    .await
}

/// `n` requests in flight over [`connections_for`]`(n)` persistent connections.
async fn unary_run(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
    path: &'static str,
    bodies: &Arc<Vec<hyper::body::Bytes>>,
    n: usize,
    window: Window,
    pids: &[u32],
) -> anyhow::Result<Outcome> {
    let conns = connections_for(n);
    let mut connections = Vec::new();
    for _ in 0..conns {
        connections.push(grpc::Connection::open(addr, config.clone()).await?);
    }
    let workers = (0..n)
        .map(|i| UnaryWorker {
            conn: connections[i % conns].clone(),
            path,
            bodies: bodies.clone(),
        })
        .collect();
    Ok(load::run(workers, conns, window, pids).await)
}

async fn profiled(
    server: &Server,
    token: &Arc<str>,
    pool: &Arc<Vec<csrs::Csr>>,
    n: usize,
    window: Window,
    work: &Path,
) -> Result<(Outcome, Profile), String> {
    let data = work.join("perf.data");
    let mut perf = profile::record(server.pid(), window.warmup + window.measure, &data)
        .map_err(|e| format!("{e:#}"))?;
    let run = enroll_run(server, token, pool, n, window, &[server.pid()])
        .await
        .map_err(|e| format!("{e:#}"))?;
    say_run("under perf", &run);
    // perf stops by itself after the window; give it time to write.
    let _ = crate::proc::wait_until(Duration::from_secs(20), || perf.exited().is_some()).await;
    perf.stop();
    let summary = profile::summarise(&data).map_err(|e| format!("{e:#}: {}", perf.log_text()))?;
    Ok((run, summary))
}

/// Enrolls a client dir and runs `ca-client agent` on it, when the agent exists.
async fn start_agent(
    bins: &Bins,
    server: &Server,
    token: &str,
    work: &Path,
) -> (Option<Child>, String) {
    let help = std::process::Command::new(&bins.client)
        .args(["agent", "--help"])
        .output();
    if !help.map(|o| o.status.success()).unwrap_or(false) {
        return (
            None,
            "`ca-client agent` does not exist in this build (`ca-client agent --help` fails): \
             the agent's idle footprint is not measured; the one-shot `ca-client` commands are."
                .into(),
        );
    }
    let dir = work.join("agent");
    if let Err(e) = output(
        std::process::Command::new(&bins.client)
            .args(["enroll", "--server", &server.addr, "--token", token])
            .args(["--name", "agent-1", "--no-default-sans"])
            .args(["--san", "agent-1.bench.internal", "--out"])
            .arg(&dir),
    ) {
        return (None, format!("cannot enroll the agent's directory: {e:#}"));
    }
    let child = Child::spawn(
        "ca-client agent",
        std::process::Command::new(&bins.client)
            .args(["agent", "--out"])
            .arg(&dir),
        &work.join("agent.log"),
    );
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return (None, format!("cannot start `ca-client agent`: {e:#}")),
    };
    // Let it start, check its certificate and go to sleep.
    tokio::time::sleep(Duration::from_secs(3)).await;
    if let Some(status) = child.exited() {
        return (
            None,
            format!(
                "`ca-client agent --out DIR` exited at once ({status}): {}",
                child.log_text().trim()
            ),
        );
    }
    (
        Some(child),
        "`ca-client agent --out DIR` (no docker flags), enrolled against the bench's CA, \
         measured from 3 s after its start."
            .into(),
    )
}

fn cli_renew(bins: &Bins, dir: &Path, runs: usize) -> anyhow::Result<(Vec<Duration>, u64)> {
    let mut times = Vec::new();
    let mut peak = 0;
    for _ in 0..runs {
        let (t, p, _) = footprint::timed_with_peak(&[
            bins.client.as_os_str(),
            "renew".as_ref(),
            "--out".as_ref(),
            dir.as_os_str(),
        ])?;
        times.push(t);
        peak = peak.max(p);
    }
    Ok((times, peak))
}

fn cli_list(bins: &Bins, state: &Path, runs: usize) -> anyhow::Result<(Vec<Duration>, usize, u64)> {
    let mut times = Vec::new();
    let mut rows = 0;
    let mut peak = 0;
    for _ in 0..runs {
        let (t, p, out) = footprint::timed_with_peak(&[
            bins.server.as_os_str(),
            "cert".as_ref(),
            "list".as_ref(),
            "--expiring-within".as_ref(),
            "7d".as_ref(),
            "--state-dir".as_ref(),
            state.as_os_str(),
        ])?;
        times.push(t);
        peak = peak.max(p);
        rows = out.lines().skip(1).filter(|l| !l.trim().is_empty()).count();
    }
    Ok((times, rows, peak))
}

async fn inventory_at_scale(bins: &Bins, s2: &State, filled: Filled) -> anyhow::Result<Inventory> {
    let db_bytes = inventory::db_bytes(&s2.store_db());
    let started = Instant::now();
    let mut server = Server::start(bins, s2).await?;
    let server_start = started.elapsed();
    let (list, rows, list_peak_kib) = cli_list(bins, &s2.dir, 5)?;
    let token = server.token(bins, 1)?;
    let dir = s2.dir.with_extension("client");
    output(
        std::process::Command::new(&bins.client)
            .args(["enroll", "--server", &server.addr, "--token", &token])
            .args(["--name", "late-node", "--no-default-sans"])
            .args(["--san", "late-node.bench.internal", "--out"])
            .arg(&dir),
    )?;
    let (renew, _) = cli_renew(bins, &dir, 5)?;
    let server_rss_kib = Usage::of(&server.pid().to_string())?.rss_kib;
    server.stop();
    Ok(Inventory {
        filled,
        db_bytes,
        server_start,
        list,
        rows,
        list_peak_kib,
        renew,
        server_rss_kib,
    })
}

/// Whether `serve --database postgres://...` is implemented in this build.
fn postgres_status(bins: &Bins, state: &State) -> Result<(), String> {
    let out = std::process::Command::new(&bins.server)
        .args(["serve", "--listen", "127.0.0.1:0", "--database"])
        .arg("postgres://bench@127.0.0.1:1/none")
        .arg("--state-dir")
        .arg(&state.dir)
        .arg("--passphrase-file")
        .arg(&state.passphrase)
        .output()
        .map_err(|e| format!("could not probe: {e}"))?;
    let said = String::from_utf8_lossy(&out.stderr);
    if said.contains("only the embedded database") {
        Err(
            "pending: the PostgreSQL backend is not in this build (`ca-server serve \
             --database postgres://...` answers \"only the embedded database is available in \
             this build\")."
                .into(),
        )
    } else {
        Ok(())
    }
}

/// The PostgreSQL row: a private PostgreSQL, the CA's embedded store copied into it with
/// `ca-server store migrate`, then `serve --database` under the same Enroll load.
async fn postgres_rows(
    bins: &Bins,
    work: &Path,
    pool: &Arc<Vec<csrs::Csr>>,
    in_flight: &[usize],
    window: Window,
) -> anyhow::Result<(Vec<Outcome>, String)> {
    let pg = Postgres::start(&work.join("postgres")).await?;
    let url = pg.create_database("dtca")?;
    let state = State::init(bins, &work.join("ca-postgres"))?;
    output(
        std::process::Command::new(&bins.server)
            .args(["store", "migrate", "--database", &url, "--state-dir"])
            .arg(&state.dir),
    )?;
    let server = Server::start_with(bins, &state, &["--database", &url]).await?;
    let token: Arc<str> = server.token(bins, 1_000_000)?.into();
    let mut rows = Vec::new();
    for &n in in_flight {
        let o = enroll_run(&server, &token, pool, n, window, &[server.pid()]).await?;
        say_run("dtca on PG", &o);
        rows.push(o);
    }
    Ok((rows, pg.version.clone()))
}

/// Criterion's estimates for the pure-core benches, when they have run.
fn criterion(dir: &Path) -> Vec<(String, f64, f64)> {
    let mut out = Vec::new();
    for id in ["csr_verify", "issue_leaf", "verify_and_issue"] {
        let path = dir.join("pki").join(id).join("new").join("estimates.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let mean = v["mean"]["point_estimate"].as_f64().unwrap_or(0.0);
        let median = v["median"]["point_estimate"].as_f64().unwrap_or(0.0);
        out.push((format!("pki/{id}"), mean, median));
    }
    out
}
