//! BENCHMARKS.md: every number comes from one run of the bench; the prose around them is
//! computed from the same numbers (what was busy, what bounds what).

use std::fmt::Write as _;
use std::time::Duration;

use crate::load::Outcome;
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
    issuance(w, r);
    raw(w, r);
    storm(w, r);
    profile(w, r);
    footprint(w, r);
    inventory(w, r);
    criterion(w, r);
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
        "\nThe load generator runs on the same {} cores as the server it measures (as the \
         cfssl figures in FACTS.md were taken). Each load table shows the CPU the server, the \
         load generator and everything else on the machine (other builds, other agents) used \
         during its measured window, in cores: \"other\" is noise, and it is reported rather \
         than hidden.\n",
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
    out
}

fn issuance(w: &mut String, r: &Results) {
    let _ = writeln!(w, "## 1. Durable issuance, side by side\n");
    let _ = writeln!(
        w,
        "dtca: `Enroll` with one multi-use node token (uses up to 1,000,000) over persistent \
         TLS connections (HTTP/2, four requests in flight per connection at most); each \
         certificate is committed to the embedded store (WAL, synchronous=FULL, group commit) \
         before its reply. cfssl: `POST /api/v1/cfssl/sign` over keep-alive HTTP/1.1 \
         connections (one per request in flight), no TLS, no database. Same CSRs, same \
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
         verifications) and reads its record.\n",
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
    let _ = writeln!(w, "### What bounds it\n");
    let per = |o: &Outcome, cpu: Duration| cpu.as_secs_f64() * 1e6 / (o.ok.max(1) as f64);
    let crypto_us = 1e6 / r.raw.one_thread.max(1e-9);
    if let Some(top) = r.ours.iter().max_by_key(|o| o.in_flight) {
        let busy = top.machine_cpu.as_secs_f64() / top.window.as_secs_f64();
        let server = top.cpu.first().copied().unwrap_or_default();
        let _ = writeln!(
            w,
            "- At {} in flight the machine was {:.0} % busy ({:.2} of {} cores): dtca is \
             **CPU-bound**{}. Per certificate the server spent {:.0} µs of CPU and the load \
             generator {:.0} µs; the raw verify+sign alone costs {:.0} µs on one core, so \
             {:.0} % of the server's CPU per certificate is the unavoidable ECDSA work and \
             the rest is TLS, HTTP/2 and gRPC, parsing and building the certificate, the store \
             and logging (see the profile below).",
            top.in_flight,
            100.0 * busy / r.machine.cores as f64,
            busy,
            r.machine.cores,
            if busy < 0.9 * r.machine.cores as f64 {
                " only partly (cores were left idle: latency, not CPU, bounds this row)"
            } else {
                ""
            },
            per(top, server),
            per(top, top.own_cpu),
            crypto_us,
            100.0 * crypto_us / per(top, server).max(1e-9),
        );
        let _ = writeln!(
            w,
            "- The raw ceiling assumes both cores do nothing but ECDSA. Here the load \
             generator takes {:.0} µs per certificate from the same cores (TLS client, HTTP/2, \
             protobuf), which a real fleet spends on its own machines.",
            per(top, top.own_cpu)
        );
    }
    if let Some(one) = r.ours.iter().min_by_key(|o| o.in_flight) {
        let _ = writeln!(
            w,
            "- At {} in flight nothing overlaps: p50 {} is one round trip through TLS and \
             HTTP/2, one CSR verification and one signature ({:.0} µs of crypto), the store's \
             transaction and its fsync (p50 {} on this disk), and the reply. Concurrency \
             turns the fsync into a shared cost: one commit per batch of waiting writes.",
            one.in_flight,
            ms(one.latency.p50),
            crypto_us,
            ms(r.fsync.p50)
        );
    }
    if let Some(c) = r.cfssl.iter().max_by_key(|o| o.in_flight) {
        let cf_cpu = c.cpu.first().copied().unwrap_or_default();
        let _ = writeln!(
            w,
            "- cfssl at {} in flight: {:.0} µs of its own CPU per certificate (Go's P-256, \
             JSON, PEM, no storage, no TLS).",
            c.in_flight,
            per(c, cf_cpu)
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
         {} on loopback (durable defaults: fsync and synchronous_commit on; the state dir's \
         store copied in with `ca-server store migrate`). \"other\" CPU is mostly PostgreSQL.\n",
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

fn raw(w: &mut String, r: &Results) {
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

fn storm(w: &mut String, r: &Results) {
    let s = &r.storm;
    let _ = writeln!(w, "## 3. Enrollment storm\n");
    let _ = writeln!(
        w,
        "{} simulated nodes boot together: each opens its own fresh TLS connection (no \
         session resumption), pins the CA by the root digest in the token, fetches the trust \
         bundle and enrolls once with the shared multi-use token, then hangs up, as \
         `ca-client enroll` does. At most {} nodes are connecting at any moment (more would \
         only queue in the kernel's accept backlog).\n",
        int(s.nodes as f64),
        s.parallel
    );
    let _ = writeln!(
        w,
        "| nodes | enrolled | total | enrollments/s | per node p50 | p99 | max | server CPU per node | load gen CPU per node |"
    );
    let _ = writeln!(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let per = |d: Duration| d.as_secs_f64() * 1e6 / (s.enrolled.max(1) as f64);
    let _ = writeln!(
        w,
        "| {} | {} | {:.2} s | {} | {} | {} | {} | {:.0} µs | {:.0} µs |\n",
        int(s.nodes as f64),
        int(s.enrolled as f64),
        s.total.as_secs_f64(),
        int(s.rate()),
        ms(s.latency.p50),
        ms(s.latency.p99),
        ms(s.latency.max),
        per(s.server_cpu),
        per(s.own_cpu)
    );
    if let Some(e) = &s.first_error {
        let _ = writeln!(w, "First failure: {e}\n");
    }
    let _ = writeln!(
        w,
        "What bounds it: CPU. Every node costs a full TLS handshake on both sides (server: \
         key exchange and a P-256 signature; client: key exchange and three P-256 \
         verifications of the server's chain and handshake) on top of the issuance itself; \
         the server and the {} simulated nodes share the machine's {} cores.\n",
        int(s.nodes as f64),
        r.machine.cores
    );
}

fn profile(w: &mut String, r: &Results) {
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

fn footprint(w: &mut String, r: &Results) {
    let _ = writeln!(w, "## 5. Footprint\n");
    let _ = writeln!(
        w,
        "Idle processes over the same window ({}). \"Wake-ups\" are context \
         switches of all the process's threads (`/proc/PID/task/*/status`, voluntary and \
         involuntary): each is a thread that went to sleep and was woken. CPU and wake-ups are \
         summed thread by thread from `/proc/PID/task/*/{{status,schedstat}}`; a thread that \
         exits inside the window takes its counts along, so they are lower bounds.\n",
        r.idle
            .first()
            .map(|i| format!("{:.0} s", i.window.as_secs_f64()))
            .unwrap_or_default()
    );
    let _ = writeln!(
        w,
        "| process | RSS at start | RSS at end | CPU in window | wake-ups | threads |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|");
    for i in &r.idle {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {:.2} ms | {} | {} |",
            i.label,
            mib(i.rss_start_kib),
            mib(i.rss_end_kib),
            i.cpu.as_secs_f64() * 1000.0,
            i.wakeups,
            i.threads
        );
    }
    let _ = writeln!(w, "\nAgent: {}\n", r.agent_note);
    let _ = writeln!(
        w,
        "ca-server RSS: {} one second after start; {} (peak {}) after {} certificates were \
         issued by this process.\n",
        mib(r.server_fresh.rss_kib),
        mib(r.server_loaded.rss_kib),
        mib(r.server_loaded.hwm_kib),
        int(r.issued as f64)
    );
    let _ = writeln!(
        w,
        "One-shot commands against the small store (wall time from spawn to exit, and peak RSS):\n"
    );
    let _ = writeln!(
        w,
        "| command | runs | median | peak RSS |\n|---|---:|---:|---:|"
    );
    for (what, times, peak) in &r.one_shot {
        let _ = writeln!(
            w,
            "| `{what}` | {} | {} | {} |",
            times.len(),
            dur_ms(median(times)),
            mib(*peak)
        );
    }
    let _ = writeln!(
        w,
        "\nBinaries (release profile, which keeps line tables for backtraces):\n"
    );
    let _ = writeln!(w, "| binary | as built | stripped |\n|---|---:|---:|");
    for b in &r.binaries {
        let _ = writeln!(
            w,
            "| {} | {} | {} |",
            b.name,
            mib(b.bytes / 1024),
            b.stripped
                .map(|s| mib(s / 1024))
                .unwrap_or_else(|| "-".into())
        );
    }
    let _ = writeln!(w);
}

fn inventory(w: &mut String, r: &Results) {
    let i = &r.inventory;
    let _ = writeln!(w, "## 6. Inventory at scale\n");
    let _ = writeln!(
        w,
        "{} certificates of {} nodes written through the store API (the server's own code \
         path: group commit, an audit entry each, renewals marking what they supersede) in \
         {:.1} s ({}/s); the database is {} on disk. History: each node has {} certificates \
         of 30 days renewed every 18 days; its newest has 9 to 30 days left for 98 % of nodes, \
         0 to 7 days for 1 % (behind on renewal) and expired for 1 %. {} current certificates \
         expire within 7 days.\n",
        int(i.filled.certs as f64),
        int(i.filled.nodes as f64),
        i.filled.took.as_secs_f64(),
        int(i.filled.certs as f64 / i.filled.took.as_secs_f64().max(1e-9)),
        mib(i.db_bytes / 1024),
        r.plan.chain,
        int(i.filled.expiring_7d as f64)
    );
    let _ = writeln!(
        w,
        "| command (real CLI, against the running server) | runs | min | median | max | rows |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|");
    let row = |w: &mut String, what: &str, t: &[Duration], rows: String| {
        let min = t.iter().min().copied().unwrap_or_default();
        let max = t.iter().max().copied().unwrap_or_default();
        let _ = writeln!(
            w,
            "| {what} | {} | {} | {} | {} | {rows} |",
            t.len(),
            dur_ms(min),
            dur_ms(median(t)),
            dur_ms(max)
        );
    };
    row(
        w,
        "`ca-server cert list --expiring-within 7d`",
        &i.list,
        int(i.rows as f64),
    );
    row(w, "`ca-client renew`", &i.renew, "-".into());
    let _ = writeln!(
        w,
        "\n`ca-server serve` was listening {:.2} s after start on this store; its RSS after \
         these commands: {}. Peak RSS of the list command: {}.\n",
        i.server_start.as_secs_f64(),
        mib(i.server_rss_kib),
        mib(i.list_peak_kib)
    );
    let small_list = r
        .one_shot
        .iter()
        .find(|(w, _, _)| w.contains("cert list"))
        .map(|(_, t, _)| median(t))
        .unwrap_or_default();
    let small_renew = r
        .one_shot
        .iter()
        .find(|(w, _, _)| w.contains("renew"))
        .map(|(_, t, _)| median(t))
        .unwrap_or_default();
    let _ = writeln!(
        w,
        "What bounds it: the query walks a partial index on `not_after` that holds only current \
         certificates, so its cost grows with the rows it returns, not with the store. The \
         same commands against the small store took {} (list) and {} (renew): the rest is the \
         command itself (process start, loading the admin bundle, a mutual-TLS handshake, \
         printing).\n",
        dur_ms(small_list),
        dur_ms(small_renew)
    );
}

fn criterion(w: &mut String, r: &Results) {
    let _ = writeln!(w, "## 7. Pure core (criterion)\n");
    if r.criterion.is_empty() {
        let _ = writeln!(
            w,
            "Not run (`cargo bench -p dtca-pki --bench issuance` writes them; scripts/bench.sh runs it).\n"
        );
        return;
    }
    let _ = writeln!(
        w,
        "`cargo bench -p dtca-pki --bench issuance`: the CA's pure functions on one core, no I/O.\n"
    );
    let _ = writeln!(
        w,
        "| bench | mean | median | per second, one core |\n|---|---:|---:|---:|"
    );
    for (id, mean, median) in &r.criterion {
        let _ = writeln!(
            w,
            "| {id} | {:.1} µs | {:.1} µs | {} |",
            mean / 1000.0,
            median / 1000.0,
            int(1e9 / mean.max(1e-9))
        );
    }
    let _ = writeln!(
        w,
        "\n`csr_verify` is `VerifiedCsr::from_der` (parse, P-256 signature check, names); \
         `issue_leaf` is `Authority::issue` (template, rcgen build, P-256 signature, re-parse and \
         field checks); `verify_and_issue` is both, the CA core of one enrollment.\n"
    );
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
         --san ...`) are generated before any measurement ({:.1} s) and cycled through; \
         every system gets the same ones.\n\
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
        r.csr_generation.as_secs_f64(),
        p.warmup.as_secs_f64(),
        p.measure.as_secs_f64(),
        r.cfssl_version,
        p.idle.as_secs_f64()
    );
}

// Formatting helpers.

fn int(x: f64) -> String {
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

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

fn dur_ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn median(t: &[Duration]) -> Duration {
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
