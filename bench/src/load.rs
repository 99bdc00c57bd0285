//! A closed-loop load driver: N workers, each with one request in flight, for a warm-up
//! and then a measured window. Throughput counts the requests that completed inside the
//! window; latency is measured from just before the request is sent to the full answer.
//!
//! A worker owns its connection state (a gRPC client on a shared HTTP/2 connection, or a
//! keep-alive HTTP/1.1 connection of its own), so the driver does not care which system
//! it drives.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::proc::{Usage, machine_busy};

/// Something that sends one request at a time.
pub trait Worker: Send + 'static {
    /// Sends request number `i` (callers map it onto their pool of CSRs) and waits for
    /// the complete answer; `Err` carries a description of what went wrong.
    fn call(&mut self, i: usize) -> impl Future<Output = Result<(), String>> + Send + '_;
}

/// How long to run.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Not measured: connections and caches warm up, the store's writer settles.
    pub warmup: Duration,
    /// Measured.
    pub measure: Duration,
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Requests in flight (workers).
    pub in_flight: usize,
    /// Connections they shared.
    pub connections: usize,
    /// Requests that succeeded inside the window.
    pub ok: u64,
    /// Requests that succeeded over the whole run, warm-up included.
    pub ok_total: u64,
    /// Requests that failed (whole run).
    pub errors: u64,
    /// The first failure, verbatim.
    pub first_error: Option<String>,
    /// The measured window.
    pub window: Duration,
    /// Latency percentiles of the requests completed in the window.
    pub latency: Latency,
    /// CPU used inside the window by each watched process, in the order given.
    pub cpu: Vec<Duration>,
    /// CPU used inside the window by this (the load generating) process.
    pub own_cpu: Duration,
    /// CPU used inside the window by the whole machine (all processes, kernel).
    pub machine_cpu: Duration,
}

impl Outcome {
    /// Successful requests per second inside the window.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64().max(1e-9)
    }
}

/// Latency summary, microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Worst.
    pub max: u64,
    /// Mean.
    pub mean: u64,
}

impl Latency {
    /// Summarises samples (microseconds); sorts them.
    pub fn of(samples: &mut [u32]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            u64::from(samples[i.min(samples.len() - 1)])
        };
        let sum: u64 = samples.iter().map(|s| u64::from(*s)).sum();
        Latency {
            p50: at(0.50),
            p99: at(0.99),
            max: u64::from(samples[samples.len() - 1]),
            mean: sum / samples.len() as u64,
        }
    }
}

struct Tally {
    samples: Vec<u32>,
    ok_total: u64,
    errors: u64,
    first_error: Option<String>,
}

/// Runs `workers` (one request in flight each) for `window`, watching the CPU of `pids`.
pub async fn run<W: Worker>(
    workers: Vec<W>,
    connections: usize,
    window: Window,
    pids: &[u32],
) -> Outcome {
    let in_flight = workers.len();
    let start = Instant::now();
    let measure_from = start + window.warmup;
    let end = measure_from + window.measure;
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|mut w| {
            let next = next.clone();
            tokio::spawn(async move {
                let mut t = Tally {
                    samples: Vec::with_capacity(16 * 1024),
                    ok_total: 0,
                    errors: 0,
                    first_error: None,
                };
                loop {
                    let sent = Instant::now();
                    if sent >= end {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let result = w.call(i).await;
                    let done = Instant::now();
                    match result {
                        Ok(()) => {
                            t.ok_total += 1;
                            if done >= measure_from && done <= end {
                                let us = (done - sent).as_micros();
                                t.samples.push(u32::try_from(us).unwrap_or(u32::MAX));
                            }
                        }
                        Err(e) => {
                            t.errors += 1;
                            if t.first_error.is_none() {
                                t.first_error = Some(e);
                            }
                            // A failing system should not be hammered in a tight loop.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                t
            })
        })
        .collect();

    // CPU of the watched processes and of this one, exactly over the window.
    tokio::time::sleep_until(measure_from.into()).await;
    let before: Vec<Usage> = pids
        .iter()
        .map(|p| Usage::of(&p.to_string()).unwrap_or_default())
        .collect();
    let own_before = Usage::of("self").unwrap_or_default();
    let machine_before = machine_busy();
    tokio::time::sleep_until(end.into()).await;
    let machine_after = machine_busy();
    let after: Vec<Usage> = pids
        .iter()
        .map(|p| Usage::of(&p.to_string()).unwrap_or_default())
        .collect();
    let own_after = Usage::of("self").unwrap_or_default();

    let mut samples = Vec::new();
    let mut out = Outcome {
        in_flight,
        connections,
        window: window.measure,
        cpu: before
            .iter()
            .zip(&after)
            .map(|(b, a)| a.cpu.saturating_sub(b.cpu))
            .collect(),
        own_cpu: own_after.cpu.saturating_sub(own_before.cpu),
        machine_cpu: machine_after.saturating_sub(machine_before),
        ..Outcome::default()
    };
    for task in tasks {
        match task.await {
            Ok(t) => {
                out.ok_total += t.ok_total;
                out.errors += t.errors;
                if out.first_error.is_none() {
                    out.first_error = t.first_error;
                }
                samples.extend(t.samples);
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    out.ok = samples.len() as u64;
    out.latency = Latency::of(&mut samples);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut s: Vec<u32> = (1..=100).rev().collect();
        let l = Latency::of(&mut s);
        assert_eq!((l.p50, l.p99, l.max), (51, 99, 100));
        assert_eq!(Latency::of(&mut []).p99, 0);
    }
}
