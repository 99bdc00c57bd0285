//! BENCHMARKS.md: every number comes from one run of the bench; the prose around them is
//! computed from the same numbers (what was busy, what bounds what).
//!
//! - [`load`]: issuance side by side, PostgreSQL, raw crypto, the profile.
//! - [`fleet`]: the storm, footprint, inventory at scale, the pure core.
//! - [`store`]: the embedded store under sustained load, WAL bytes per certificate.

mod fleet;
mod load;
mod store;

use std::fmt::Write as _;
use std::time::Duration;

use crate::run::Results;

/// Renders the report.
pub fn markdown(r: &Results, command: &str) -> String {
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# Benchmarks\n");
    let _ = writeln!(
        w,
        "Written by `{command}` on {}. Do not edit by hand: run the command again; every \
         number below comes from that one run.\n",
        r.machine.date
    );
    machine(w, r);
    summary(w, r);
    load::issuance(w, r);
    load::raw(w, r);
    fleet::storm(w, r);
    load::profile(w, r);
    fleet::footprint(w, r);
    fleet::inventory(w, r);
    fleet::criterion(w, r);
    store::sustained(w, r);
    method(w, r, command);
    md
}

fn machine(w: &mut String, r: &Results) {
    let m = &r.machine;
    let _ = writeln!(w, "## Machine\n");
    let _ = writeln!(w, "| | |\n|---|---|");
    let _ = writeln!(
        w,
        "| CPU | {} ({} cores{}) |",
        m.cpu,
        m.cores,
        if m.virtualised {
            ", virtual machine"
        } else {
            ""
        }
    );
    let _ = writeln!(w, "| memory | {} MiB |", m.memory_mib);
    let _ = writeln!(w, "| kernel | {} |", m.kernel);
    let _ = writeln!(w, "| date (UTC) | {} to {} |", m.date, r.machine_end.date);
    let _ = writeln!(
        w,
        "| load average (1, 5, 15 min) | {} at the start, {} at the end |",
        m.load, r.machine_end.load
    );
    let _ = writeln!(
        w,
        "| 4 KiB write + fsync (state dir's disk) | p50 {}, p99 {} |",
        ms(r.fsync.p50),
        ms(r.fsync.p99)
    );
    let _ = writeln!(
        w,
        "\nThe load generator runs on the same {} cores as the server it measures. Each load \
         table shows the CPU that the measured server, the load generator and everything else \
         on the machine (other builds, other agents, PostgreSQL in its row) used during its \
         measured window, in cores: \"other\" is noise, and it is reported rather than \
         hidden.\n",
        m.cores
    );
}

struct Target {
    what: String,
    result: String,
    met: Option<bool>,
}

fn summary(w: &mut String, r: &Results) {
    let _ = writeln!(w, "## Targets\n");
    let _ = writeln!(w, "| target | result | met |\n|---|---|---|");
    for t in targets(r) {
        let met = match t.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        let _ = writeln!(w, "| {} | {} | {} |", t.what, t.result, met);
    }
    let _ = writeln!(w);
}

fn targets(r: &Results) -> Vec<Target> {
    let mut out = Vec::new();
    let top = r.ours.iter().max_by_key(|o| o.in_flight);
    let cf = top.and_then(|t| r.cfssl.iter().find(|c| c.in_flight == t.in_flight));
    if let (Some(t), Some(c)) = (top, cf) {
        let ratio = t.rate() / c.rate().max(1e-9);
        out.push(Target {
            what: format!(
                "durable issuance at {} in flight >= 2x cfssl's sign rate",
                t.in_flight
            ),
            result: format!("{}/s vs {}/s: {:.2}x", int(t.rate()), int(c.rate()), ratio),
            met: Some(ratio >= 2.0),
        });
    }
    if let Some(t) = top {
        let share = t.rate() / r.raw.all_cores.max(1e-9);
        out.push(Target {
            what: format!(
                "durable issuance at {} in flight >= 60 % of raw verify+sign (all cores)",
                t.in_flight
            ),
            result: format!(
                "{}/s vs {}/s: {:.0} %",
                int(t.rate()),
                int(r.raw.all_cores),
                share * 100.0
            ),
            met: Some(share >= 0.6),
        });
        out.push(Target {
            what: format!("p99 <= 20 ms at {} in flight", t.in_flight),
            result: format!("p99 {} (p50 {})", ms(t.latency.p99), ms(t.latency.p50)),
            met: Some(t.latency.p99 <= 20_000),
        });
    }
    out.push(Target {
        what: format!("storm of {} enrollments <= 10 s", int(r.storm.nodes as f64)),
        result: format!(
            "{} enrolled in {:.2} s ({}/s)",
            int(r.storm.enrolled as f64),
            r.storm.total.as_secs_f64(),
            int(r.storm.rate())
        ),
        met: Some(r.storm.enrolled == r.storm.nodes && r.storm.total <= Duration::from_secs(10)),
    });
    match r.idle.iter().find(|i| i.label.contains("agent")) {
        Some(a) => out.push(Target {
            what: "agent idle RSS <= 8 MiB and no wake-ups between renewals".into(),
            result: format!(
                "RSS {}, {} wake-ups in {:.0} s",
                mib(a.rss_end_kib),
                a.wakeups,
                a.window.as_secs_f64()
            ),
            met: Some(a.rss_end_kib <= 8 * 1024 && a.wakeups == 0),
        }),
        None => out.push(Target {
            what: "agent idle RSS <= 8 MiB and no wake-ups between renewals".into(),
            result: "`ca-client agent` not in this build (see Footprint)".into(),
            met: None,
        }),
    }
    let list = median(&r.inventory.list);
    out.push(Target {
        what: format!(
            "{} stored certificates, `cert list --expiring-within 7d` <= 100 ms",
            int(r.inventory.filled.certs as f64)
        ),
        result: format!(
            "median {} ({} rows)",
            dur_ms(list),
            int(r.inventory.rows as f64)
        ),
        met: Some(list <= Duration::from_millis(100)),
    });
    let long = r.sustained.iter().rev().find(|s| !s.is_baseline());
    if let Some(s) = long {
        out.push(Target {
            what: format!(
                "WAL never above 256 MiB under {} s of full-speed issuance",
                s.outcome.window.as_secs()
            ),
            result: format!("largest {:.1} MiB", s.wal_max as f64 / f64::from(1 << 20)),
            met: Some(s.wal_max <= 256 << 20),
        });
        out.push(Target {
            what: "WAL under 64 MiB within 10 s after the load stops".into(),
            result: s
                .under_64
                .map_or("not within 15 s".into(), |d| format!("after {}", dur_ms(d))),
            met: Some(s.under_64.is_some_and(|d| d <= Duration::from_secs(10))),
        });
        let base = r.sustained.iter().find(|s| s.is_baseline());
        let paired = r.sustained.iter().find(|s| s.is_paired());
        if let (Some(base), Some(s)) = (base, paired) {
            let share = s.outcome.rate() / base.outcome.rate().max(1e-9);
            out.push(Target {
                what: "issuance with the bounded WAL >= 90 % of the baseline build's".into(),
                result: format!(
                    "{}/s vs {}/s: {:.0} %",
                    int(s.outcome.rate()),
                    int(base.outcome.rate()),
                    share * 100.0
                ),
                met: Some(share >= 0.9),
            });
        }
    }
    out
}

fn method(w: &mut String, r: &Results, command: &str) {
    let p = &r.plan;
    let _ = writeln!(w, "## How this was measured\n");
    let _ = writeln!(w, "```sh\n{command}\n```\n");
    let _ = writeln!(
        w,
        "- Everything runs on loopback. `ca-server` is the release binary started with \
         `ca-server init` (cluster `bench`, P-256, keys encrypted with a passphrase file) and \
         `ca-server serve --listen 127.0.0.1:0` with its defaults: embedded store in the state \
         dir, info logging to a file (one line per certificate). Tokens are made with \
         `ca-server token create`.\n\
         - {} distinct P-256 CSRs (one DNS name each, like `ca-client enroll --no-default-sans \
         --san ...`) are generated before any measurement and cycled through by cfssl and the \
         raw limit; dtca's enrollments use {} CSRs of distinct identities (a name and a DNS \
         name have one holder, so no server is sent one twice), also made beforehand (both \
         pools {:.1} s); renewals ask for no names (the node keeps its own).\n\
         - Each load row: {} s warm-up, then {} s measured; a request counts when its reply \
         arrived inside the measured window. Latency is per request, from sending to the full \
         reply.\n\
         - cfssl: `cfssl serve` ({}) with a P-256 CA from `cfssl gencert -initca`, default \
         profile (720h, signing + server auth + client auth), driven by the same program over \
         hyper.\n\
         - Idle window: {} s; meanwhile the bench process itself writes the inventory store \
         (another state dir; the idle processes do not touch it).\n\
         - Every process the bench starts is stopped by pid when it ends, on error and on \
         ctrl-c.\n",
        p.csrs,
        int(p.enrollments as f64),
        r.csr_generation.as_secs_f64(),
        p.warmup.as_secs_f64(),
        p.measure.as_secs_f64(),
        r.cfssl_version,
        p.idle.as_secs_f64()
    );
}

// Formatting helpers.

pub(super) fn int(x: f64) -> String {
    let n = x.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

pub(super) fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

pub(super) fn dur_ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

pub(super) fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub(super) fn median(t: &[Duration]) -> Duration {
    let mut v = t.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers_for_people() {
        assert_eq!(int(1_234_567.4), "1,234,567");
        assert_eq!(int(999.0), "999");
        assert_eq!(ms(1500), "1.50 ms");
        assert_eq!(
            median(&[
                Duration::from_millis(3),
                Duration::from_millis(1),
                Duration::from_millis(2)
            ]),
            Duration::from_millis(2)
        );
    }
}
