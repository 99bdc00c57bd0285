//! Issuance side by side (embedded store, PostgreSQL, cfssl), the raw crypto limit, and
//! where the server's time goes.

use std::fmt::Write as _;
use std::time::Duration;

use super::{int, ms};
use crate::load::Outcome;
use crate::run::Results;

pub(super) fn issuance(w: &mut String, r: &Results) {
    let _ = writeln!(w, "## 1. Durable issuance, side by side\n");
    let _ = writeln!(
        w,
        "dtca: `Enroll` with one multi-use node token (uses up to 1,000,000; a renewal row \
         follows) over persistent TLS connections, HTTP/2 with at most four requests in flight \
         per connection, so 64 in flight use 16 connections; every certificate is committed \
         to the embedded store (WAL, synchronous=FULL, group commit) before its reply. The \
         load generator sends the same gRPC requests as tonic, the CSRs made beforehand (each \
         enrollment a new identity: a name has one holder), straight through hyper's HTTP/2 \
         client. cfssl: `POST /api/v1/cfssl/sign` over keep-alive HTTP/1.1 connections (one \
         per request in flight), no TLS, no database. CSRs of the same kind, same \
         concurrency; raw = ring verify+sign on all {} cores.\n",
        r.raw.threads
    );
    let _ = writeln!(
        w,
        "| in flight | dtca cert/s | p50 | p99 | cfssl cert/s | p50 | p99 | dtca/cfssl | dtca/raw | CPU dtca / load gen / other (cores) | CPU cfssl / load gen / other |"
    );
    let _ = writeln!(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|");
    for o in &r.ours {
        let c = r.cfssl.iter().find(|c| c.in_flight == o.in_flight);
        let (crate_, cp50, cp99, ratio, ccpu) = match c {
            Some(c) => (
                int(c.rate()),
                ms(c.latency.p50),
                ms(c.latency.p99),
                format!("{:.2}x", o.rate() / c.rate().max(1e-9)),
                cpu_split(c),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
        };
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} % | {} | {} |",
            o.in_flight,
            int(o.rate()),
            ms(o.latency.p50),
            ms(o.latency.p99),
            crate_,
            cp50,
            cp99,
            ratio,
            100.0 * o.rate() / r.raw.all_cores.max(1e-9),
            cpu_split(o),
            ccpu
        );
    }
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "Renewal (`Renew` over mutual TLS with a node certificate, {} in flight): {}/s, p50 {}, \
         p99 {}, CPU {}. A renewal also verifies the caller's chain (two more P-256 \
         verifications) and reads its record; the same certificate renews again and again \
         (its successors never used), asking for no names.\n",
        r.renew.in_flight,
        int(r.renew.rate()),
        ms(r.renew.latency.p50),
        ms(r.renew.latency.p99),
        cpu_split(&r.renew)
    );
    postgres(w, r);
    let errors: Vec<String> = r
        .ours
        .iter()
        .chain(r.cfssl.iter())
        .chain(r.postgres.iter().flatten())
        .chain(std::iter::once(&r.renew))
        .filter(|o| o.errors > 0)
        .map(|o| {
            format!(
                "{} errors at {} in flight (first: {})",
                o.errors,
                o.in_flight,
                o.first_error.as_deref().unwrap_or("?")
            )
        })
        .collect();
    if errors.is_empty() {
        let _ = writeln!(w, "No request failed.\n");
    } else {
        let _ = writeln!(w, "Failures: {}.\n", errors.join("; "));
    }
    bounds(w, r);
}

/// What limits each issuance row, from the same run's CPU accounting and profile.
fn bounds(w: &mut String, r: &Results) {
    let _ = writeln!(w, "### What bounds it\n");
    let per = |o: &Outcome, cpu: Duration| cpu.as_secs_f64() * 1e6 / (o.ok.max(1) as f64);
    let crypto_us = 1e6 / r.raw.one_thread.max(1e-9);
    let cores = r.machine.cores as f64;
    if let Some(top) = r.ours.iter().max_by_key(|o| o.in_flight) {
        let busy = top.machine_cpu.as_secs_f64() / top.window.as_secs_f64();
        let server = per(top, top.cpu.first().copied().unwrap_or_default());
        let client = per(top, top.own_cpu);
        let _ = writeln!(
            w,
            "- **CPU.** At {} in flight the machine was {:.0} % busy ({:.2} of {} cores{}). \
             Each certificate cost {:.0} µs of server CPU and {:.0} µs of load-generator CPU \
             on the same cores; one P-256 verify+sign alone is {:.0} µs on one core.",
            top.in_flight,
            100.0 * busy / cores,
            busy,
            r.machine.cores,
            if busy < 0.9 * cores {
                "; cores were left idle, so latency, not CPU, bounds this row"
            } else {
                ""
            },
            server,
            client,
            crypto_us,
        );
        if let Ok((_, p)) = &r.profile {
            let share = |prefix: &str| -> f64 {
                p.activities
                    .iter()
                    .filter(|(a, _)| a.starts_with(prefix))
                    .map(|(_, pct)| pct)
                    .sum::<f64>()
                    / 100.0
            };
            let csr = share("CSR check");
            let leaf = share("leaf:");
            let store = share("store:");
            let io = share("TLS records") + share("TLS handshakes");
            let grpc = share("gRPC") + share("registrar") + share("logging");
            let _ = writeln!(
                w,
                "- **Where the server's {server:.0} µs go** (shares from the profile below): CSR \
                 check {:.0} µs \
                 (mostly the P-256 verification), the leaf {:.0} µs (building, signing, \
                 re-checking), the store {:.0} µs (SQL, WAL frames and fsync, checkpoints, \
                 lookups), TLS records and HTTP/2 frames {:.0} µs (mostly the kernel's \
                 loopback TCP), gRPC, registrar, reply and logging {:.0} µs, the rest {:.0} µs.",
                csr * server,
                leaf * server,
                store * server,
                io * server,
                grpc * server,
                (1.0 - csr - leaf - store - io - grpc).max(0.0) * server,
            );
        }
        if let Some(c) = r.cfssl.iter().find(|c| c.in_flight == top.in_flight) {
            let budget = cores * 1e6 / (2.0 * c.rate().max(1e-9));
            let _ = writeln!(
                w,
                "- **Against the targets.** 2x cfssl ({}/s) on {} cores leaves {:.0} µs of CPU \
                 per certificate for server and load generator together; 60 % of the raw rate \
                 ({}/s) leaves {:.0} µs. This run spent {:.0} µs. The raw ceiling assumes every \
                 core does nothing but ECDSA; a CA that verifies the CSR and signs spends {:.0} \
                 µs there before any TLS, HTTP/2, certificate encoding, durable storage or the \
                 client's own work.",
                int(2.0 * c.rate()),
                r.machine.cores,
                budget,
                int(0.6 * r.raw.all_cores),
                cores * 1e6 / (0.6 * r.raw.all_cores.max(1e-9)),
                server + client,
                crypto_us,
            );
        }
        let mean_ms = top.in_flight as f64 / top.rate().max(1e-9) * 1000.0;
        let _ = writeln!(
            w,
            "- **p99.** With {} requests in flight at {}/s, the mean latency is {:.1} ms \
             (Little's law); p99 is {:.1}x that: a request waits for the store's next group \
             commit and for its turn on a core shared by the server's workers, its writer and \
             the load generator. Higher throughput lowers both.",
            top.in_flight,
            int(top.rate()),
            mean_ms,
            top.latency.p99 as f64 / 1000.0 / mean_ms.max(1e-9),
        );
    }
    if let Some(one) = r.ours.iter().min_by_key(|o| o.in_flight) {
        let _ = writeln!(
            w,
            "- **1 in flight** overlaps nothing: p50 {} is one round trip through TLS and \
             HTTP/2, the CSR verification and the signature ({:.0} µs), the store's transaction \
             and its fsync (a bare 4 KiB write + fsync is p50 {} on this disk), and the reply. \
             Under concurrency the fsync is shared: one commit per batch of waiting writes.",
            ms(one.latency.p50),
            crypto_us,
            ms(r.fsync.p50)
        );
    }
    if let Some(c) = r.cfssl.iter().max_by_key(|o| o.in_flight) {
        let cf_cpu = c.cpu.first().copied().unwrap_or_default();
        let _ = writeln!(
            w,
            "- **cfssl** at {} in flight: {:.0} µs of its own CPU per certificate (Go's P-256, \
             JSON and PEM, four log lines per request; no TLS, no storage) and {:.0} µs of the \
             load generator's.",
            c.in_flight,
            per(c, cf_cpu),
            per(c, c.own_cpu)
        );
    }
    let _ = writeln!(w);
}

fn postgres(w: &mut String, r: &Results) {
    let rows = match &r.postgres {
        Err(why) => {
            let _ = writeln!(w, "PostgreSQL store: {why}\n");
            return;
        }
        Ok(rows) => rows,
    };
    let _ = writeln!(
        w,
        "The same `Enroll` load with `ca-server serve --database postgres://...` on a private \
         PostgreSQL server on loopback (`{}`; durable defaults: fsync and synchronous_commit \
         on; the state dir's store copied in with `ca-server store migrate`). \"other\" CPU \
         is mostly PostgreSQL.\n",
        if r.postgres_version.is_empty() {
            "PostgreSQL"
        } else {
            &r.postgres_version
        }
    );
    let _ = writeln!(
        w,
        "| in flight | dtca on PostgreSQL cert/s | p50 | p99 | vs embedded | CPU dtca / load gen / other (cores) |"
    );
    let _ = writeln!(w, "|---:|---:|---:|---:|---:|---|");
    for o in rows {
        let embedded = r.ours.iter().find(|e| e.in_flight == o.in_flight);
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} |",
            o.in_flight,
            int(o.rate()),
            ms(o.latency.p50),
            ms(o.latency.p99),
            embedded
                .map(|e| format!("{:.2}x", o.rate() / e.rate().max(1e-9)))
                .unwrap_or_else(|| "-".into()),
            cpu_split(o)
        );
    }
    let _ = writeln!(w);
}

fn cpu_split(o: &Outcome) -> String {
    let secs = o.window.as_secs_f64().max(1e-9);
    let server = o.cpu.first().map_or(0.0, |c| c.as_secs_f64()) / secs;
    let own = o.own_cpu.as_secs_f64() / secs;
    let machine = o.machine_cpu.as_secs_f64() / secs;
    format!(
        "{server:.2} / {own:.2} / {:.2}",
        (machine - server - own).max(0.0)
    )
}

pub(super) fn raw(w: &mut String, r: &Results) {
    let _ = writeln!(w, "## 2. Raw crypto limit (ring)\n");
    let _ = writeln!(
        w,
        "One P-256 ECDSA verification of a CSR's signature plus one P-256 ECDSA signature, \
         back to back, with ring 0.17: the least work per certificate.\n"
    );
    let _ = writeln!(
        w,
        "| threads | verify+sign pairs/s | µs per pair per core |"
    );
    let _ = writeln!(w, "|---:|---:|---:|");
    let _ = writeln!(
        w,
        "| 1 | {} | {:.1} |",
        int(r.raw.one_thread),
        1e6 / r.raw.one_thread.max(1e-9)
    );
    let _ = writeln!(
        w,
        "| {} (all cores) | {} | {:.1} |\n",
        r.raw.threads,
        int(r.raw.all_cores),
        1e6 * r.raw.threads as f64 / r.raw.all_cores.max(1e-9)
    );
}

pub(super) fn profile(w: &mut String, r: &Results) {
    let _ = writeln!(w, "## 4. Where the time goes\n");
    match &r.profile {
        Err(e) => {
            let _ = writeln!(w, "No profile: {e}\n");
        }
        Ok((o, p)) => {
            let server_us =
                o.cpu.first().map_or(0.0, |c| c.as_secs_f64()) * 1e6 / (o.ok.max(1) as f64);
            let _ = writeln!(
                w,
                "`perf record -F 499 --call-graph dwarf -p <ca-server pid>` (all its threads, \
                 kernel included) during a separate {}-in-flight `Enroll` run: {}/s under perf, \
                 {:.0} µs of server CPU per certificate (perf itself costs some), {} samples.\n",
                o.in_flight,
                int(o.rate()),
                server_us,
                int(p.samples as f64)
            );
            if !p.activities.is_empty() {
                let _ = writeln!(
                    w,
                    "By activity (inclusive: a sample counts for the first activity, in this \
                     order of specificity, found anywhere on its call stack; syscalls and the \
                     kernel work they cause count for the activity that made them):\n"
                );
                let _ = writeln!(
                    w,
                    "| activity | share of ca-server's CPU | µs per certificate |\n|---|---:|---:|"
                );
                for (a, pct) in &p.activities {
                    let _ = writeln!(w, "| {a} | {pct:.1} % | {:.0} |", pct / 100.0 * server_us);
                }
                let _ = writeln!(w);
            }
            let _ = writeln!(w, "By symbol (exclusive time), grouped:\n");
            let _ = writeln!(w, "| group | share of ca-server's CPU |\n|---|---:|");
            for (g, pct) in &p.groups {
                let _ = writeln!(w, "| {g} | {pct:.1} % |");
            }
            let _ = writeln!(w, "\nHeaviest symbols:\n");
            let _ = writeln!(w, "| share | object | symbol |\n|---:|---|---|");
            for (pct, dso, sym) in &p.top {
                let sym: String = sym.chars().take(110).collect();
                let _ = writeln!(w, "| {pct:.2} % | {dso} | `{}` |", sym.replace('|', "\\|"));
            }
            let _ = writeln!(w);
        }
    }
}
