//! The BENCHMARKS.md section of `dtca-bench guard`: each mode's median over the cycles,
//! and guard against native compared within each cycle.

use std::fmt::Write as _;
use std::time::Duration;

use super::{API, CONNECTIONS, COPIES_IN, COPY_MIB, CYCLES, HELD, Mode, PINGS, RUNNING};

/// One figure of a mode's measurements.
type Figure<'a> = &'a dyn Fn(&Mode) -> f64;
/// A figure made on the way (one per API request).
type Measured = Box<dyn Fn(&Mode) -> f64>;

/// The middle value (of an odd count; the upper middle of an even one).
pub(super) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

pub(super) fn report(cycles: &[(Mode, Mode)], idle: u64, held: u64, first_use: Duration) -> String {
    let mut s = String::new();
    let mib = |kib: u64| kib as f64 / 1024.0;
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    // A figure of each mode (median over cycles), and guard against native within each
    // cycle: the median of the differences or ratios, and each cycle's.
    let of = |f: Figure| {
        let native = median(cycles.iter().map(|(n, _)| f(n)).collect());
        let guard = median(cycles.iter().map(|(_, g)| f(g)).collect());
        (native, guard)
    };
    let ratios = |f: Figure| -> (f64, String) {
        let each: Vec<f64> = cycles.iter().map(|(n, g)| f(g) / f(n) * 100.0).collect();
        let listed: Vec<String> = each.iter().map(|r| format!("{r:.0}")).collect();
        (median(each), listed.join(", "))
    };
    let _ = writeln!(
        s,
        "## The guard against native TLS (same engine, one run)\n"
    );
    let _ = writeln!(
        s,
        "`dtca-bench guard` ({}): one dockerd switched to native mutual TLS, then to guard mode on the same address, {CYCLES} times over. Latency: `GET /_ping`, {PINGS} requests on one kept-alive connection (curl); throughput: requests per second over {CONNECTIONS} connections (curl --parallel) of each of {} API reads behind the docker CLI's everyday commands, with {RUNNING} containers running; copy: `docker cp` of {COPY_MIB} MiB each way (in: the median of {COPIES_IN} copies per mode and cycle). Each figure is the median over the {CYCLES} cycles; each comparison is made within a cycle (native and guard a minute apart), and its median is given, with each cycle's in brackets.\n",
        {
            let m = crate::machine::Machine::now();
            format!(
                "{}, {} cores, load {} at {}",
                m.cpu, m.cores, m.load, m.date
            )
        },
        API.len(),
    );
    let _ = writeln!(s, "| | native TLS | guard | target | |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    for (what, f, target) in [
        ("p50", (&|m: &Mode| m.p50_ms) as Figure, Some(0.3)),
        ("p99", &|m: &Mode| m.p99_ms, None),
    ] {
        let (native, guard) = of(f);
        let each: Vec<f64> = cycles.iter().map(|(n, g)| f(g) - f(n)).collect();
        let listed: Vec<String> = each.iter().map(|d| format!("{d:+.3}")).collect();
        let added = median(each);
        let _ = writeln!(
            s,
            "| `/_ping` {what} | {native:.3} ms | {guard:.3} ms ({added:+.3}; {}) | {} | {} |",
            listed.join(", "),
            target.map_or(String::new(), |t| format!("at most +{t} ms")),
            target.map_or("", |t| verdict(added <= t)),
        );
    }
    let mut rows: Vec<(String, Measured, &str, f64)> = Vec::new();
    for (i, (name, _, n)) in API.iter().enumerate() {
        let what = format!("{name}, {n} over {CONNECTIONS} connections");
        rows.push((what, Box::new(move |m| m.api_per_s[i]), " /s", 80.0));
    }
    rows.push((
        format!("`docker cp` in, {COPY_MIB} MiB"),
        Box::new(|m| m.copy_in_mib_s),
        " MiB/s",
        90.0,
    ));
    rows.push((
        format!("`docker cp` out, {COPY_MIB} MiB"),
        Box::new(|m| m.copy_out_mib_s),
        " MiB/s",
        90.0,
    ));
    for (what, f, unit, target) in rows {
        let (native, guard) = of(f.as_ref());
        let (ratio, listed) = ratios(f.as_ref());
        let _ = writeln!(
            s,
            "| {what} | {native:.0}{unit} | {guard:.0}{unit} ({ratio:.0} %; {listed}) | at least {target:.0} % | {} |",
            verdict(ratio >= target)
        );
    }
    let _ = writeln!(
        s,
        "| agent RSS idle | | {:.1} MiB | 12 MiB | {} |",
        mib(idle),
        verdict(mib(idle) <= 12.0)
    );
    let _ = writeln!(
        s,
        "| agent RSS, {HELD} open connections | | {:.1} MiB | 40 MiB | {} |",
        mib(held),
        verdict(mib(held) <= 40.0)
    );
    let _ = writeln!(
        s,
        "| new pair on disk to first handshake serving it | | {} ms | | |",
        first_use.as_millis()
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(rate: f64, p50: f64) -> Mode {
        Mode {
            p50_ms: p50,
            p99_ms: p50 * 2.0,
            api_per_s: [rate, rate / 10.0, rate, rate, rate],
            copy_in_mib_s: 400.0,
            copy_out_mib_s: 90.0,
        }
    }

    #[test]
    fn median_is_the_middle_value_whatever_the_order() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![5.0]), 5.0);
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn comparisons_are_made_within_each_cycle() {
        // The machine got twice as fast in the second cycle: the best rates of each mode
        // would compare 100 with 150 (150 %); within each cycle the guard is at 75 %.
        let cycles = [
            (mode(100.0, 0.2), mode(75.0, 0.3)),
            (mode(200.0, 0.1), mode(150.0, 0.2)),
            (mode(120.0, 0.2), mode(90.0, 0.3)),
        ];
        let text = report(&cycles, 10 * 1024, 18 * 1024, Duration::from_millis(300));
        assert!(
            text.contains("(75 %; 75, 75, 75) | at least 80 % | MISSED |"),
            "{text}"
        );
        assert!(text.contains("of each of 5 API reads"), "{text}");
        // Each API request is judged on its own.
        assert!(
            text.contains("| `GET /_ping`, 20000 over 32 connections | 120 /s | 90 /s (75 %; 75, 75, 75) | at least 80 % | MISSED |"),
            "{text}"
        );
        assert!(
            text.contains(
                "| `GET /version`, 2000 over 32 connections | 12 /s | 9 /s (75 %; 75, 75, 75) |"
            ),
            "{text}"
        );
        assert!(text.contains("(+0.100; +0.100, +0.100, +0.100)"), "{text}");
        assert!(
            text.contains("| agent RSS idle | | 10.0 MiB | 12 MiB | met |"),
            "{text}"
        );
    }
}
