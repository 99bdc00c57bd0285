//! The whole benchmark, in order: fixtures, raw crypto, a fresh server and an idle window
//! (while the million-certificate store is written), durable issuance against dtca's
//! embedded store, a profile under the same load, renewal, the PostgreSQL store, cfssl, the
//! storm, memory after the load, inventory at scale.
//!
//! - [`issuance`]: the load rows (dtca, PostgreSQL, cfssl), the profile, `drive`.
//! - [`store`]: the embedded store under sustained load (WAL size, bytes per certificate),
//!   this build and a baseline build side by side.
//! - [`commands`]: the real CLIs (one-shot commands, the agent, inventory), criterion.

mod commands;
mod issuance;
pub mod store;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;

use issuance::Requests;
pub use issuance::drive;

use crate::dtca::{self, Bins, Server, State, enroll_channel};
use crate::footprint::{self, BinarySize, Idle, IdleProbe};
use crate::inventory::{self, Filled};
use crate::load::{Outcome, Window};
use crate::proc::Usage;
use crate::profile::Profile;
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
    /// Distinct identities' CSRs for dtca's enrollments (at most this many per server).
    pub enrollments: usize,
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
    /// How long the sustained load runs; zero skips it.
    pub sustain: Duration,
    /// A previous build's `ca-server`, measured under the same sustained load.
    pub baseline_server: Option<PathBuf>,
    /// What the baseline is, in the report's words.
    pub baseline_label: String,
    /// How long the baseline and this build each run side by side (with a baseline).
    pub compare: Duration,
    /// The rate at 64 in flight of the report this run replaces, and its date.
    pub previous: Option<(f64, String)>,
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
    /// The store under sustained load: the baseline build first (when given), then this one.
    pub sustained: Vec<store::Sustained>,
    /// WAL bytes of each part of a stored certificate, or why they were not measured.
    pub costs: Result<Vec<crate::storecost::Cost>, String>,
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
    /// Of that, SQLite's quick check of the store (ms), as serve logged it.
    pub check_ms: Option<u64>,
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
    let e = plan.enrollments;
    let enrollments =
        tokio::task::spawn_blocking(move || csrs::Enrollments::generate(e, cores, "node"))
            .await??;
    let csr_generation = started.elapsed();

    step("raw P-256 verify+sign with ring");
    let raw_pool = pool.clone();
    let raw =
        tokio::task::spawn_blocking(move || raw::measure(&raw_pool, cores, Duration::from_secs(3)))
            .await??;

    step("starting ca-server (embedded store)");
    let fsync = footprint::fsync_latency(&work, 200)?;
    let s1 = State::init(&bins, &work.join("ca"))?;
    // The storm's nodes all connect from 127.0.0.1, where a fleet has an address each.
    let fleet = ["--max-unauthenticated-per-address", "1000000"];
    let mut server = Server::start_with(&bins, &s1, &fleet).await?;
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
    let renews = commands::cli_renew(&bins, &d1, 3)?;
    issued += 3;
    one_shot.push(("ca-client renew".to_string(), renews.0, renews.1));
    let lists = commands::cli_list(&bins, &s1.dir, 3)?;
    one_shot.push((
        "ca-server cert list --expiring-within 7d".to_string(),
        lists.0,
        lists.2,
    ));

    step("idle window (the million-certificate store is written meanwhile)");
    let (agent, agent_note) = commands::start_agent(&bins, &server, &token, &work).await;
    if agent.is_some() {
        issued += 1;
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
    let enroll = Requests::enroll(&server.addr, &token, &enrollments)?;
    let mut ours = Vec::new();
    for &n in &plan.in_flight {
        let o = enroll.run(n, window, &[server.pid()]).await?;
        issued += o.ok_total;
        say_run("dtca Enroll", &o);
        ours.push(o);
    }

    step("profile: perf record of ca-server under Enroll load");
    let top = plan.in_flight.iter().copied().max().unwrap_or(64);
    let profile = issuance::profiled(&server, &enroll, top, window, &work).await;
    if let Ok((o, _)) = &profile {
        issued += o.ok_total;
    }

    step("durable issuance: dtca Renew (mutual TLS)");
    let renew = Requests::renew(&server.addr, &node, 1000)?
        .run(top, window, &[server.pid()])
        .await?;
    issued += renew.ok_total;
    say_run("dtca Renew", &renew);

    step("durable issuance: dtca Enroll, PostgreSQL store");
    let (postgres, postgres_version) = match issuance::postgres_status(&bins, &s1) {
        Err(why) => (Err(why), String::new()),
        Ok(()) => {
            match issuance::postgres_rows(&bins, &work, &enrollments, &plan.in_flight, window).await
            {
                Ok((rows, version)) => (Ok(rows), version),
                Err(e) => (
                    Err(format!("the PostgreSQL row failed: {e:#}")),
                    String::new(),
                ),
            }
        }
    };

    step("cfssl serve: sign");
    let (cfssl_runs, cfssl_version) =
        issuance::cfssl_rows(&work, &pool, &plan.in_flight, window).await?;

    step("enrollment storm");
    let storm = storm::run(
        &server.addr,
        &token,
        &enrollments,
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

    let mut sustained = Vec::new();
    if let Some(baseline) = &plan.baseline_server
        && !plan.compare.is_zero()
    {
        // Side by side, the same way, one after the other: the rate and the WAL bytes.
        let old = Bins {
            server: baseline.clone(),
            client: bins.client.clone(),
        };
        let secs = plan.compare.as_secs();
        let (base, ours) = (
            format!("baseline, {secs} s"),
            format!("this build, {secs} s"),
        );
        match store::sustained(&base, &old, &work, &enrollments, top, plan.compare, true).await {
            Ok(run) => sustained.push(run),
            Err(e) => println!("  the baseline run failed: {e:#}"),
        }
        sustained.push(
            store::sustained(&ours, &bins, &work, &enrollments, top, plan.compare, true).await?,
        );
    }
    if !plan.sustain.is_zero() {
        let label = format!("this build, {} s", plan.sustain.as_secs());
        sustained.push(
            store::sustained(&label, &bins, &work, &enrollments, top, plan.sustain, false).await?,
        );
    }
    step("what each part of a stored certificate costs in WAL bytes");
    let costs = crate::storecost::measure(&work, &node.leaf_der)
        .await
        .map_err(|e| format!("{e:#}"));

    while issued < plan.min_issued {
        step("more issuance until the memory reading");
        let more = Window {
            warmup: Duration::ZERO,
            measure: plan.measure,
        };
        let o = enroll.run(top, more, &[]).await?;
        if o.ok_total == 0 {
            break;
        }
        issued += o.ok_total;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let server_loaded = Usage::of(&server.pid().to_string())?;
    server.stop();

    step("inventory at scale");
    let inventory = commands::inventory_at_scale(&bins, &s2, filled).await?;

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
        criterion: commands::criterion(&plan.criterion_dir),
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
        sustained,
        costs,
    })
}

/// `dtca-bench wal`: the sustained-load measurement alone, printed.
///
/// # Errors
/// When a server cannot be started or reached.
pub async fn wal(
    seconds: Duration,
    in_flight: usize,
    enrollments: usize,
    baseline: Option<PathBuf>,
) -> anyhow::Result<()> {
    let bins = Bins::beside_me()?;
    let work = tempfile::Builder::new()
        .prefix("dtca-bench-wal-")
        .tempdir()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pool = tokio::task::spawn_blocking(move || {
        csrs::Enrollments::generate(enrollments, cores, "node")
    })
    .await??;
    if let Some(server) = baseline {
        let old = Bins {
            server,
            client: bins.client.clone(),
        };
        store::sustained(
            "baseline",
            &old,
            work.path(),
            &pool,
            in_flight,
            seconds,
            true,
        )
        .await?;
    }
    store::sustained(
        "this build",
        &bins,
        work.path(),
        &pool,
        in_flight,
        seconds,
        true,
    )
    .await?;
    step("what each part of a stored certificate costs in WAL bytes");
    let der = pool
        .for_a_new_server()
        .take()
        .map(|(_, d)| d.to_vec())
        .unwrap_or_default();
    for c in crate::storecost::measure(work.path(), &der).await? {
        println!(
            "  {:<46} one at a time {:>7.0} B/cert   64 writers {:>7.0} B/cert ({:.1} per commit)",
            c.what, c.one, c.batched, c.per_commit
        );
    }
    Ok(())
}

pub(crate) fn step(what: &str) {
    println!("== {what}");
}

pub(crate) fn say_run(what: &str, o: &Outcome) {
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
