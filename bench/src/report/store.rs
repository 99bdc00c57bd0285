//! The embedded store under sustained load: the WAL's bounds, the issuance rate beside the
//! baseline build's, and WAL bytes per certificate before and after, with what each part
//! of a stored certificate costs.

use std::fmt::Write as _;

use super::{dur_ms, int, ms};
use crate::run::Results;
use crate::run::store::Sustained;

const MIB: f64 = (1u64 << 20) as f64;

pub(super) fn sustained(w: &mut String, r: &Results) {
    if r.sustained.is_empty() {
        return;
    }
    let _ = writeln!(w, "## 8. The embedded store under sustained load\n");
    let paired = if r.sustained.iter().any(Sustained::is_baseline) {
        format!(
            "the baseline and this build {} s each, one after the other, then this build \
             alone for {} s. \"baseline\" is the `ca-server` of {}",
            r.plan.compare.as_secs(),
            r.plan.sustain.as_secs(),
            r.plan.baseline_label
        )
    } else {
        format!("this build for {} s", r.plan.sustain.as_secs())
    };
    let _ = writeln!(
        w,
        "`Enroll` at {} in flight (after 1 s of warm-up), each run on a fresh state dir, every \
         certificate committed before its reply; the WAL file's size sampled every 100 ms \
         during the load and every 50 ms after it: {paired}.\n",
        r.sustained[0].outcome.in_flight,
    );
    let _ = writeln!(
        w,
        "| build | cert/s | p50 | p99 | failed | WAL largest | under 64 MiB after the load | empty after the load | WAL after a clean stop | WAL written | WAL started over | certificates per commit |"
    );
    let _ = writeln!(
        w,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for s in &r.sustained {
        let o = &s.outcome;
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {:.1} MiB | {} | {} | {:.1} MiB | {} | {} | {} |",
            s.build,
            int(o.rate()),
            ms(o.latency.p50),
            ms(o.latency.p99),
            int(o.errors as f64),
            s.wal_max as f64 / MIB,
            s.under_64.map_or("not within 15 s".into(), dur_ms),
            s.emptied.map_or("not within 15 s".into(), dur_ms),
            s.after_stop as f64 / MIB,
            s.written
                .map_or("?".into(), |(b, _)| format!("{:.0} MiB", b as f64 / MIB)),
            s.resets.map_or("never".into(), |n| format!("{n} times")),
            s.commits.map_or("?".into(), |c| format!(
                "{:.1}",
                o.ok_total as f64 / c.max(1) as f64
            )),
        );
    }
    let _ = writeln!(w);
    rates(w, r);
    bytes_per_cert(w, r);
    costs(w, r);
}

fn rates(w: &mut String, r: &Results) {
    let base = r.sustained.iter().find(|s| s.is_baseline());
    let Some(now) = r
        .sustained
        .iter()
        .find(|s| s.is_paired())
        .or_else(|| r.sustained.last())
    else {
        return;
    };
    let mut said = format!(
        "Issuance with the bounded WAL: {}/s at {} in flight",
        int(now.outcome.rate()),
        now.outcome.in_flight
    );
    if let Some(base) = base {
        let _ = write!(
            said,
            ", {:.0} % of the baseline's {}/s just before it",
            100.0 * now.outcome.rate() / base.outcome.rate().max(1e-9),
            int(base.outcome.rate())
        );
    }
    if let Some((rate, date)) = &r.plan.previous {
        let _ = write!(
            said,
            "; the previous report ({date}) measured {}/s at 64 in flight (section 1 of that \
             run, 5 s windows)",
            int(*rate)
        );
    }
    let ours = r
        .ours
        .iter()
        .find(|o| o.in_flight == now.outcome.in_flight)
        .map(|o| o.rate());
    if let Some(rate) = ours {
        let _ = write!(said, "; this run's section 1 row: {}/s", int(rate));
    }
    let _ = writeln!(
        w,
        "{said}. The machine was shared (see the load average above): compare rates within \
         one run.\n"
    );
    let _ = writeln!(
        w,
        "How the WAL is kept small: a maintenance thread runs passive checkpoints (they never \
         block the writer or readers); once the WAL passes 16 MiB, right after such a pass the \
         writer copies the little that is left between two transactions, and its next \
         transaction starts the WAL over; past 128 MiB it does so after every commit. \
         `journal_size_limit` (64 MiB) trims the file once it has started over, a second \
         without writes empties it, and so does a clean stop.\n"
    );
}

fn bytes_per_cert(w: &mut String, r: &Results) {
    let _ = writeln!(w, "WAL bytes written per certificate:\n");
    let _ = writeln!(
        w,
        "| build | 1 in flight (each certificate its own transaction) | {} in flight | certificates per commit at {} | measured by |",
        r.sustained[0].outcome.in_flight, r.sustained[0].outcome.in_flight
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---|");
    for s in r.sustained.iter().filter(|s| s.single.is_some()) {
        let frames = |b: f64| format!("{} ({:.1} pages)", int(b), b / 4120.0);
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} |",
            s.build,
            s.single_bytes_per_cert().map_or("?".into(), frames),
            s.bytes_per_cert().map_or("?".into(), frames),
            s.commits.map_or("?".into(), |c| format!(
                "{:.1}",
                s.outcome.ok_total as f64 / c.max(1) as f64
            )),
            s.written.map_or("-", |(_, how)| how),
        );
    }
    let _ = writeln!(
        w,
        "\nA WAL frame is one 4 KiB page and its 24-byte header. One certificate alone rewrites \
         one page of each structure it touches; under load, certificates committed together \
         share the pages they have in common (the table's last page, the ends of the indexes \
         that grow at one end, the token's row), so fewer are written per certificate, and \
         how many depends on how many share a commit (which depends on how long a commit's \
         fsync takes on the machine at that moment: compare the one-in-flight column first). \
         The baseline's commits are counted from its WAL file's commit frames.\n"
    );
}

fn costs(w: &mut String, r: &Results) {
    let costs = match &r.costs {
        Ok(c) if !c.is_empty() => c,
        Ok(_) => return,
        Err(why) => {
            let _ = writeln!(w, "What each part costs: not measured ({why}).\n");
            return;
        }
    };
    let _ = writeln!(
        w,
        "What each part of a stored certificate costs: the store's own code in process \
         (`SqliteStore`, no TLS, no signing), into a store already holding 20,000 \
         certificates, 1,000 written one at a time and 3,200 by 64 writers at once (group \
         commit), first as this build stores them, then with one part left out at a time. \
         Names arrive in no particular order, as new nodes' do.\n"
    );
    let _ = writeln!(
        w,
        "| stored | WAL bytes per certificate, one at a time | the part costs | 64 writers at once | the part costs | certificates per commit |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|");
    let base = &costs[0];
    for c in costs {
        let saved = |a: f64, b: f64| {
            if std::ptr::eq(c, base) {
                "-".to_string()
            } else {
                int(a - b)
            }
        };
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {:.1} |",
            c.what,
            int(c.one),
            saved(base.one, c.one),
            int(c.batched),
            saved(base.batched, c.batched),
            c.per_commit
        );
    }
    let _ = writeln!(
        w,
        "\n\"the part costs\" is the first row less that row (negative for random serials: \
         serials in issue order save that much). What changed in this build: the audit log lost AUTOINCREMENT \
         (its `sqlite_sequence` row was one more page in every transaction), the two indexes \
         on expiry became one on `(not_after, renewed_by)`, and serials start with the second \
         of issue, so the serial index grows at one end. The audit rows, the name index and \
         the token's use stay: the audit trail is complete and queryable, revocation by name \
         needs the index, and a token's uses are counted where they are checked.\n"
    );
}
