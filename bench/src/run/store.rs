//! The embedded store under sustained load: the WAL's size sampled while `Enroll` runs at
//! full speed, how soon it shrinks once the load stops, what a clean stop leaves, and the
//! WAL bytes written per certificate; for this build and, when given, a baseline
//! `ca-server` (the previous build) side by side.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::issuance::Requests;
use super::{say_run, step};
use crate::csrs;
use crate::dtca::{Bins, Server, State};
use crate::load::{Outcome, Window};

/// Bytes of a WAL file's header.
const WAL_HEADER: u64 = 32;

/// One build under sustained load.
#[derive(Debug, Clone)]
pub struct Sustained {
    /// Which build: "this build" or "baseline".
    pub build: String,
    /// The load at the highest in-flight count, for the whole window.
    pub outcome: Outcome,
    /// The WAL file's size, sampled every 100 ms during the load: (seconds, bytes).
    pub samples: Vec<(f64, u64)>,
    /// The largest sample.
    pub wal_max: u64,
    /// Bytes appended to the WAL during the run, and how that was known.
    pub written: Option<(u64, &'static str)>,
    /// Times the WAL started over (this build's metric).
    pub resets: Option<u64>,
    /// Transactions committed during the run (this build's metric).
    pub commits: Option<u64>,
    /// After the load stopped: how long until the WAL was under 64 MiB, and until empty.
    pub under_64: Option<Duration>,
    /// See `under_64`.
    pub emptied: Option<Duration>,
    /// The WAL left after a clean stop (SIGTERM).
    pub after_stop: u64,
    /// WAL bytes per certificate with one request in flight (every certificate its own
    /// transaction), when measured.
    pub single: Option<(Outcome, Option<u64>)>,
}

impl Sustained {
    /// The previous build's run.
    pub fn is_baseline(&self) -> bool {
        self.build.starts_with("baseline")
    }

    /// This build's run side by side with the baseline (it has the one-in-flight row).
    pub fn is_paired(&self) -> bool {
        !self.is_baseline() && self.single.is_some()
    }

    /// WAL bytes written per certificate issued under the sustained load.
    pub fn bytes_per_cert(&self) -> Option<f64> {
        let (bytes, _) = self.written?;
        Some(bytes as f64 / self.outcome.ok_total.max(1) as f64)
    }

    /// The same with one request in flight.
    pub fn single_bytes_per_cert(&self) -> Option<f64> {
        let (o, bytes) = self.single.as_ref()?;
        Some((*bytes)? as f64 / o.ok_total.max(1) as f64)
    }
}

/// Runs `build` (its `ca-server`) for `seconds` at `in_flight`, then, with `single`, a
/// short run at one request in flight on a fresh state dir. Each state dir is removed
/// when measured: a build whose WAL grows without bound fills a disk in minutes.
///
/// # Errors
/// When the server cannot be started or reached.
pub async fn sustained(
    build: &str,
    bins: &Bins,
    work: &Path,
    enrollments: &csrs::Enrollments,
    in_flight: usize,
    seconds: Duration,
    single: bool,
) -> anyhow::Result<Sustained> {
    step(&format!(
        "sustained Enroll load, {build}: {} s at {in_flight} in flight, WAL sampled",
        seconds.as_secs()
    ));
    let slug = build.replace([' ', ','], "-");
    let state = State::init(bins, &work.join(format!("sustained-{slug}")))?;
    let port = free_port()?;
    let metrics = format!("127.0.0.1:{port}");
    let mut server = Server::start_with(bins, &state, &["--metrics-listen", &metrics]).await?;
    let token = server.token(bins, 1_000_000)?;
    let wal = state.dir.join("store.db-wal");
    let written_before = metric(port, "dtca_store_wal_written_bytes_total").await;
    let cycle_before = wal_cycle(&wal);
    let commits_before = metric(port, "dtca_store_commits_total").await;

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, wal) = (stop.clone(), wal.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                samples.push((started.elapsed().as_secs_f64(), size(&wal)));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            samples
        })
    };
    let window = Window {
        warmup: Duration::from_secs(1),
        measure: seconds,
    };
    let outcome = Requests::enroll(&server.addr, &token, &enrollments.for_a_new_server())?
        .run(in_flight, window, &[server.pid()])
        .await?;
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await?;
    say_run(build, &outcome);
    let at_end = size(&wal);
    let wal_max = samples.iter().map(|s| s.1).max().unwrap_or(0).max(at_end);
    let (written, resets) = match metric(port, "dtca_store_wal_written_bytes_total").await {
        Some(after) => (
            Some((
                after - written_before.unwrap_or(0),
                "the server's count of WAL frames appended",
            )),
            metric(port, "dtca_store_wal_resets_total").await,
        ),
        // A build without the metric: when its WAL did not start over (checked: the
        // header's checkpoint sequence and salts are the same), the file holds everything
        // written.
        None if cycle_before.is_some() && wal_cycle(&wal) == cycle_before => (
            Some((
                at_end.saturating_sub(WAL_HEADER),
                "the WAL file's growth (it never started over)",
            )),
            None,
        ),
        None => (None, None),
    };
    // A build without the metric: its WAL holds every commit (it never started over).
    let commits = match metric(port, "dtca_store_commits_total").await {
        Some(after) => Some(after - commits_before.unwrap_or(0)),
        None => wal_frames(&wal).map(|(_, commits)| commits),
    };
    let stopped = Instant::now();
    let (mut under_64, mut emptied) = (None, None);
    while stopped.elapsed() < Duration::from_secs(15) && emptied.is_none() {
        let now = size(&wal);
        if under_64.is_none() && now < 64 << 20 {
            under_64 = Some(stopped.elapsed());
        }
        if now == 0 {
            emptied = Some(stopped.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop();
    let after_stop = size(&wal);
    remove(&state);
    println!(
        "  WAL: largest {:.1} MiB, {:.0} bytes per certificate, {} commits, under 64 MiB {:?} and empty {:?} after the load, {} bytes after a clean stop",
        wal_max as f64 / f64::from(1 << 20),
        written.map_or(0.0, |(b, _)| b as f64 / outcome.ok_total.max(1) as f64),
        commits.map_or("?".to_string(), |c| c.to_string()),
        under_64,
        emptied,
        after_stop
    );
    let single = if single {
        single_in_flight(build, bins, work, enrollments).await.ok()
    } else {
        None
    };
    if let Some((o, Some(bytes))) = &single {
        println!(
            "  one in flight: {:.0} WAL bytes per certificate",
            *bytes as f64 / o.ok_total.max(1) as f64
        );
    }
    Ok(Sustained {
        build: build.to_string(),
        outcome,
        samples,
        wal_max,
        written,
        resets,
        commits,
        under_64,
        emptied,
        after_stop,
        single,
    })
}

/// Five seconds at one request in flight: every certificate its own transaction. A build
/// without the WAL metric is measured by its WAL file's growth, which only counts when the
/// WAL did not start over meanwhile (it may, between two transactions, once a checkpoint
/// caught up): then the window is run again, three times at most.
async fn single_in_flight(
    build: &str,
    bins: &Bins,
    work: &Path,
    enrollments: &csrs::Enrollments,
) -> anyhow::Result<(Outcome, Option<u64>)> {
    let slug = build.replace([' ', ','], "-");
    let state = State::init(bins, &work.join(format!("single-{slug}")))?;
    let port = free_port()?;
    let metrics = format!("127.0.0.1:{port}");
    let mut server = Server::start_with(bins, &state, &["--metrics-listen", &metrics]).await?;
    let token = server.token(bins, 1_000_000)?;
    let wal = state.dir.join("store.db-wal");
    let window = Window {
        warmup: Duration::ZERO,
        measure: Duration::from_secs(5),
    };
    let requests = Requests::enroll(&server.addr, &token, &enrollments.for_a_new_server())?;
    let mut result = None;
    for _ in 0..3 {
        let before = metric(port, "dtca_store_wal_written_bytes_total").await;
        let (wal_before, cycle_before) = (size(&wal), wal_cycle(&wal));
        let outcome = requests.run(1, window, &[server.pid()]).await?;
        let written = match metric(port, "dtca_store_wal_written_bytes_total").await {
            Some(after) => Some(after - before.unwrap_or(0)),
            None if cycle_before.is_some() && wal_cycle(&wal) == cycle_before => {
                Some(size(&wal).saturating_sub(wal_before.max(WAL_HEADER)))
            }
            None => None,
        };
        let done = written.is_some();
        result = Some((outcome, written));
        if done {
            break;
        }
        println!("  the WAL started over during the window: once more");
    }
    server.stop();
    remove(&state);
    let (outcome, written) = result.ok_or_else(|| anyhow::anyhow!("no window ran"))?;
    say_run(&format!("{build}, 1"), &outcome);
    Ok((outcome, written))
}

/// A WAL file's checkpoint sequence number and salts: they change each time it starts over.
fn wal_cycle(wal: &Path) -> Option<[u8; 12]> {
    use std::io::Read;
    let mut header = [0u8; 24];
    std::fs::File::open(wal)
        .ok()?
        .read_exact(&mut header)
        .ok()?;
    header[12..24].try_into().ok()
}

/// Frames and commit frames in a WAL file (of its current cycle: frames whose salts match
/// the header's).
pub fn wal_frames(wal: &Path) -> Option<(u64, u64)> {
    let bytes = std::fs::read(wal).ok()?;
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    let page = usize::try_from(word(8)?).ok()?;
    let salts = (word(16)?, word(20)?);
    let (mut frames, mut commits, mut at) = (0, 0, 32);
    while at + 24 + page <= bytes.len() {
        if (word(at + 8)?, word(at + 12)?) != salts {
            break;
        }
        frames += 1;
        if word(at + 4)? != 0 {
            commits += 1;
        }
        at += 24 + page;
    }
    Some((frames, commits))
}

/// Removes a measured state dir and its passphrase file.
fn remove(state: &State) {
    let _ = std::fs::remove_dir_all(&state.dir);
    let _ = std::fs::remove_file(&state.passphrase);
}

fn size(p: &PathBuf) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// One value of a server's Prometheus metrics, when it has it.
async fn metric(port: u16, name: &str) -> Option<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
        .await
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).await.ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

/// The issuance rate at 64 in flight that an earlier BENCHMARKS.md reported, and when.
pub fn previous_rate(report: &Path) -> Option<(f64, String)> {
    let text = std::fs::read_to_string(report).ok()?;
    let date = text
        .lines()
        .find_map(|l| l.strip_prefix("Written by "))
        // The date follows the last " on " (the command before it may hold one).
        .and_then(|l| l.rsplit(" on ").next())
        .map(|d| d.split(". ").next().unwrap_or(d).to_string())?;
    let rate = text.lines().find_map(|l| {
        let rest = l.strip_prefix("| durable issuance at 64 in flight >= 2x cfssl")?;
        let result = rest.split('|').nth(1)?.trim();
        let number = result.split("/s").next()?.replace(',', "");
        number.trim().parse::<f64>().ok()
    })?;
    Some((rate, date))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_previous_rate_from_a_report() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("BENCHMARKS.md");
        std::fs::write(
            &path,
            "# Benchmarks\n\nWritten by `scripts/bench.sh` on 2026-11-26T10:28:34Z. Do not edit by hand.\n\n\
             | durable issuance at 64 in flight >= 2x cfssl's sign rate | 5,621/s vs 5,303/s: 1.06x | **no** |\n",
        )
        .unwrap();
        assert_eq!(
            previous_rate(&path),
            Some((5621.0, "2026-11-26T10:28:34Z".to_string()))
        );
        std::fs::write(
            &path,
            "Written by `scripts/bench.sh --baseline-label 'indexes on expiry'` on 2026-12-07T05:06:39Z. Do not edit by hand.\n\n\
             | durable issuance at 64 in flight >= 2x cfssl's sign rate | 3,376/s vs 2,660/s: 1.27x | **no** |\n",
        )
        .unwrap();
        assert_eq!(
            previous_rate(&path),
            Some((3376.0, "2026-12-07T05:06:39Z".to_string()))
        );
        assert_eq!(previous_rate(&dir.path().join("none.md")), None);
    }
}
