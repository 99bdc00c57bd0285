//! `dtca-bench`: parse flags, run the benchmark, write BENCHMARKS.md.

// A benchmark measures wall-clock time of real processes, not a testable clock.
#![allow(clippy::disallowed_types)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use dtca_bench::{footprint, report, run};

/// Benchmarks a real ca-server (durable issuance, storm, footprint, inventory) side by
/// side with cfssl and the raw P-256 limit, and writes BENCHMARKS.md.
#[derive(Debug, Parser)]
#[command(name = "dtca-bench")]
struct Flags {
    /// Where to write the report.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// Requests in flight for each issuance row.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,64")]
    in_flight: Vec<usize>,
    /// Seconds of warm-up before each measured window.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds measured per row.
    #[arg(long, default_value_t = 5.0)]
    measure: f64,
    /// Distinct pre-generated CSRs (cfssl, the raw limit).
    #[arg(long, default_value_t = 20_000)]
    csrs: usize,
    /// Distinct identities for dtca's enrollments: a name has one holder, so no server is
    /// sent one twice; the most any one server is sent (a minute at full speed and more).
    #[arg(long, default_value_t = 600_000)]
    enrollments: usize,
    /// Nodes in the enrollment storm.
    #[arg(long, default_value_t = 10_000)]
    storm: usize,
    /// Storm nodes connecting at the same time, at most.
    #[arg(long, default_value_t = 256)]
    storm_parallel: usize,
    /// Certificates in the inventory store.
    #[arg(long, default_value_t = 1_000_000)]
    inventory: u64,
    /// Certificates per node in the inventory store (renewal history).
    #[arg(long, default_value_t = 10)]
    chain: u64,
    /// Seconds of the idle window.
    #[arg(long, default_value_t = 60.0)]
    idle: f64,
    /// Issuances before the server's memory is read after load.
    #[arg(long, default_value_t = 100_000)]
    min_issued: u64,
    /// Criterion's output directory.
    #[arg(long, default_value = "target/criterion")]
    criterion_dir: PathBuf,
    /// Where temporary state goes (removed at the end). [default: a new temp dir]
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the temporary state (logs, databases) for inspection.
    #[arg(long)]
    keep: bool,
    /// How the run was started, for the report.
    #[arg(long, default_value = "scripts/bench.sh")]
    command: String,
    /// Seconds of sustained Enroll load on the embedded store (WAL size sampled); 0 skips it.
    #[arg(long, default_value_t = 60.0)]
    sustain: f64,
    /// A previous build's ca-server, measured beside this one (see --compare).
    #[arg(long)]
    baseline_server: Option<PathBuf>,
    /// What the baseline is, for the report (its commit, how it keeps its WAL).
    #[arg(long, default_value = "the previous build")]
    baseline_label: String,
    /// Seconds the baseline and this build each run side by side (with --baseline-server):
    /// the baseline's WAL grows without bound, about a gigabyte every 30 s at full speed.
    #[arg(long, default_value_t = 20.0)]
    compare: f64,
}

/// `dtca-bench wal`: the embedded store under sustained Enroll load only (WAL size
/// sampled, WAL bytes per certificate), printed; this build and, when given, a baseline.
#[derive(Debug, Parser)]
#[command(name = "dtca-bench wal")]
struct Wal {
    /// Seconds of load.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Distinct identities enrolled, at most, per server.
    #[arg(long, default_value_t = 600_000)]
    enrollments: usize,
    /// A previous build's ca-server, measured first under the same load.
    #[arg(long)]
    baseline_server: Option<PathBuf>,
}

/// `dtca-bench drive`: Enroll load against a ca-server that is already running, for
/// profiling by hand (e.g. under `perf record -p`).
#[derive(Debug, Parser)]
#[command(name = "dtca-bench drive")]
struct Drive {
    /// The server, HOST:PORT.
    #[arg(long)]
    server: String,
    /// A node token with enough uses.
    #[arg(long, env = "DTCA_TOKEN")]
    token: String,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Seconds measured (after one second of warm-up).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Distinct CSRs.
    #[arg(long, default_value_t = 2000)]
    csrs: usize,
    /// The server's pid, to report its CPU.
    #[arg(long)]
    pid: Option<u32>,
    /// Instead of persistent connections: a storm of this many fresh ones, one enrollment
    /// each, `--in-flight` of them connecting at once.
    #[arg(long)]
    storm: Option<usize>,
}

/// `dtca-bench fleet`: the fleet view with many agents holding their channels open
/// (scripts/bench-fleet.sh); prints BENCHMARKS.md rows.
#[derive(Debug, Parser)]
#[command(name = "dtca-bench fleet")]
struct FleetBench {
    /// Nodes, each with an agent channel open.
    #[arg(long, default_value_t = 10_000)]
    nodes: usize,
    /// Loopback source addresses the agents connect from (127.0.1.1 up), many agents
    /// behind each as behind a NAT.
    #[arg(long, default_value_t = 40)]
    addresses: usize,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("exec-maxrss") => return footprint::exec_maxrss(&args[2..]),
        Some("wal") => {
            let wal = Wal::parse_from(args.iter().skip(1));
            return block_on(run::wal(
                Duration::from_secs_f64(wal.seconds),
                wal.in_flight,
                wal.enrollments,
                wal.baseline_server,
            ));
        }
        Some("fleet") => {
            let fleet = FleetBench::parse_from(args.iter().skip(1));
            return block_on(dtca_bench::fleet::run(
                fleet.nodes,
                fleet.addresses.clamp(1, 250),
            ));
        }
        Some("guard") => {
            // The section is printed; scripts/bench-guard.sh puts it into BENCHMARKS.md.
            return match dtca_bench::guard::run() {
                Ok(section) => {
                    print!("{section}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Some("drive") => {
            let drive = Drive::parse_from(args.iter().skip(1));
            return block_on(run::drive(
                drive.server,
                drive.token,
                drive.in_flight,
                Duration::from_secs_f64(drive.seconds),
                drive.csrs,
                drive.pid,
                drive.storm,
            ));
        }
        _ => {}
    }
    let flags = Flags::parse();
    block_on(main_async(flags))
}

fn block_on(work: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bench")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(work);
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn main_async(flags: Flags) -> anyhow::Result<()> {
    let temp = match &flags.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            tempfile::Builder::new()
                .prefix("dtca-bench-")
                .tempdir_in(dir)?
        }
        None => tempfile::Builder::new().prefix("dtca-bench-").tempdir()?,
    };
    let plan = run::Plan {
        in_flight: flags.in_flight.clone(),
        warmup: Duration::from_secs_f64(flags.warmup),
        measure: Duration::from_secs_f64(flags.measure),
        csrs: flags.csrs,
        enrollments: flags.enrollments,
        storm: flags.storm,
        storm_parallel: flags.storm_parallel,
        inventory: flags.inventory,
        chain: flags.chain.max(1),
        idle: Duration::from_secs_f64(flags.idle),
        min_issued: flags.min_issued,
        work_dir: temp.path().to_path_buf(),
        criterion_dir: flags.criterion_dir.clone(),
        sustain: Duration::from_secs_f64(flags.sustain),
        baseline_server: flags.baseline_server.clone(),
        baseline_label: flags.baseline_label.clone(),
        compare: Duration::from_secs_f64(flags.compare),
        previous: run::store::previous_rate(&flags.out),
    };
    let interrupted = async {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            _ => std::future::pending::<()>().await,
        }
    };
    // Dropping the run on a signal drops every child process guard: all are stopped.
    let results = tokio::select! {
        r = run::all(plan) => r,
        () = interrupted => Err(anyhow::anyhow!("interrupted; every process started was stopped")),
    };
    if flags.keep {
        let kept = temp.keep();
        println!("state kept in {}", kept.display());
    }
    let results = results?;
    let md = report::markdown(&results, &flags.command);
    std::fs::write(&flags.out, md)?;
    println!("wrote {}", flags.out.display());
    Ok(())
}
