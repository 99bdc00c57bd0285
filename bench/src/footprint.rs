//! Footprint: resident memory, CPU and wake-ups of idle processes, peak memory of one-shot
//! commands, binary sizes.
//!
//! Wake-ups are context switches (voluntary and involuntary, summed over the process's
//! live threads, from `/proc/PID/task/*/status`): an idle process that sleeps until its
//! next renewal has none.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::proc::{Usage, output};

/// A process watched while idle.
#[derive(Debug, Clone)]
pub struct IdleProbe {
    targets: Vec<(String, u32, Usage)>,
    started: Instant,
}

/// What an idle process did over the window.
#[derive(Debug, Clone)]
pub struct Idle {
    /// Which process.
    pub label: String,
    /// RSS at the start, KiB.
    pub rss_start_kib: u64,
    /// RSS at the end, KiB.
    pub rss_end_kib: u64,
    /// CPU over the window.
    pub cpu: Duration,
    /// Context switches over the window.
    pub wakeups: u64,
    /// Threads at the end.
    pub threads: u64,
    /// The window.
    pub window: Duration,
}

impl IdleProbe {
    /// Starts watching `targets` (label, pid).
    pub fn start(targets: &[(String, u32)]) -> IdleProbe {
        IdleProbe {
            targets: targets
                .iter()
                .map(|(l, p)| (l.clone(), *p, Usage::of(&p.to_string()).unwrap_or_default()))
                .collect(),
            started: Instant::now(),
        }
    }

    /// When the window started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Reads the targets again.
    pub fn finish(&self) -> Vec<Idle> {
        let window = self.started.elapsed();
        self.targets
            .iter()
            .map(|(label, pid, before)| {
                let after = Usage::of(&pid.to_string()).unwrap_or_default();
                Idle {
                    label: label.clone(),
                    rss_start_kib: before.rss_kib,
                    rss_end_kib: after.rss_kib,
                    cpu: after.cpu_since(before),
                    wakeups: after.switches_since(before),
                    threads: after.threads,
                    window,
                }
            })
            .collect()
    }
}

/// A binary's size on disk, as built and stripped.
#[derive(Debug, Clone)]
pub struct BinarySize {
    /// File name.
    pub name: String,
    /// As built (the release profile keeps line tables for backtraces).
    pub bytes: u64,
    /// After `strip`, when strip is available.
    pub stripped: Option<u64>,
}

/// Sizes of `path`, as built and stripped (into `scratch`).
pub fn binary_size(path: &Path, scratch: &Path) -> BinarySize {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let out = scratch.join(format!("{name}.stripped"));
    let stripped = output(Command::new("strip").arg("-o").arg(&out).arg(path))
        .ok()
        .and_then(|_| std::fs::metadata(&out).ok())
        .map(|m| m.len());
    let _ = std::fs::remove_file(&out);
    BinarySize {
        name,
        bytes,
        stripped,
    }
}

/// Runs a command through this binary's `exec-maxrss` helper (so that only that command
/// is counted) and returns its wall time (measured by the helper: spawn to exit), its peak
/// RSS in KiB and its stdout.
///
/// # Errors
/// When it fails.
pub fn timed_with_peak(cmd: &[&std::ffi::OsStr]) -> anyhow::Result<(Duration, u64, String)> {
    let me = std::env::current_exe()?;
    let started = Instant::now();
    let out = output(Command::new(me).arg("exec-maxrss").args(cmd))?;
    let mut took = started.elapsed();
    let mut peak = 0;
    let mut stdout = String::new();
    for line in out.lines() {
        if let Some(v) = line.strip_prefix("dtca-bench-maxrss-kib=") {
            peak = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("dtca-bench-wall-us=") {
            took = Duration::from_micros(v.trim().parse().unwrap_or(0));
        } else {
            stdout.push_str(line);
            stdout.push('\n');
        }
    }
    Ok((took, peak, stdout))
}

/// The `exec-maxrss` helper: runs `args` as a child, prints its peak RSS, exits with its
/// status.
pub fn exec_maxrss(args: &[String]) -> std::process::ExitCode {
    let Some((program, rest)) = args.split_first() else {
        eprintln!("usage: dtca-bench exec-maxrss PROGRAM [ARGS...]");
        return std::process::ExitCode::from(64);
    };
    let started = Instant::now();
    let status = Command::new(program).args(rest).status();
    println!("dtca-bench-wall-us={}", started.elapsed().as_micros());
    println!(
        "dtca-bench-maxrss-kib={}",
        crate::proc::children_max_rss_kib()
    );
    match status {
        Ok(s) if s.success() => std::process::ExitCode::SUCCESS,
        // `cert list --expiring-within` exits 52 when it lists something: a result.
        Ok(s) if s.code() == Some(i32::from(dtca_common::Reason::Expiring.exit_code())) => {
            std::process::ExitCode::SUCCESS
        }
        Ok(s) => std::process::ExitCode::from(u8::try_from(s.code().unwrap_or(1)).unwrap_or(1)),
        Err(e) => {
            eprintln!("cannot run {program}: {e}");
            std::process::ExitCode::from(127)
        }
    }
}

/// Latency of a 4 KiB write plus `fsync` in `dir`: the floor under every durable commit.
///
/// # Errors
/// When the file cannot be written.
pub fn fsync_latency(dir: &Path, rounds: usize) -> anyhow::Result<crate::load::Latency> {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path)?;
    let block = [0u8; 4096];
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        f.write_all(&block)?;
        let t = Instant::now();
        f.sync_data()?;
        samples.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
    }
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok(crate::load::Latency::of(&mut samples))
}
