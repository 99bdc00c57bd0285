//! A fleet's view: the enrollment storm, footprint, inventory at scale, the pure core.

use std::fmt::Write as _;
use std::time::Duration;

use super::{dur_ms, int, median, mib, ms};
use crate::run::Results;

pub(super) fn storm(w: &mut String, r: &Results) {
    let s = &r.storm;
    let _ = writeln!(w, "## 3. Enrollment storm\n");
    let _ = writeln!(
        w,
        "{} simulated nodes boot together: each opens its own fresh TLS connection (no \
         session resumption), pins the CA by the root digest in the token, fetches the trust \
         bundle and enrolls once with the shared multi-use token, then hangs up, as \
         `ca-client enroll` does, each with a name of its own. At most {} nodes are \
         connecting at any moment (more would only queue in the kernel's accept backlog). \
         They all connect from 127.0.0.1, where a fleet has an address per node, so the \
         server runs with `--max-unauthenticated-per-address` raised past the storm.\n",
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

pub(super) fn footprint(w: &mut String, r: &Results) {
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
    let _ = writeln!(
        w,
        "\nAgent: {} It sleeps until its next renewal (at 50-70 % of the certificate's \
         life); ca-server wakes every 10 s for its health check (a test signature and a store \
         round trip).\n",
        r.agent_note
    );
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

pub(super) fn inventory(w: &mut String, r: &Results) {
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
    let check = match i.check_ms {
        Some(ms) => format!(
            "; of that, SQLite's quick check of the {} store (every page of every table and \
             index read and its structure checked, before `serve` trusts the file) took {:.2} s",
            mib(i.db_bytes / 1024),
            ms as f64 / 1000.0
        ),
        None => String::new(),
    };
    let _ = writeln!(
        w,
        "\n`ca-server serve` was listening {:.2} s after start on this store{check}; its RSS \
         after these commands: {}. Peak RSS of the list command: {}.\n",
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
        "What bounds it: the query walks the index on `(not_after, renewed_by)` from now to the \
         bound, skipping renewed certificates inside the index, so its cost grows with the \
         certificates expiring in the window, not with the store. The \
         same commands against the small store took {} (list) and {} (renew): the rest is the \
         command itself (process start, loading the admin bundle, a mutual-TLS handshake, \
         printing).\n",
        dur_ms(small_list),
        dur_ms(small_renew)
    );
}

pub(super) fn criterion(w: &mut String, r: &Results) {
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
