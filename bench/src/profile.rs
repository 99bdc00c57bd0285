//! Where the server's time goes: `perf record` of the running `ca-server` (all its
//! threads, kernel included) while it is under load, summarised by symbol and grouped
//! into what the symbols do.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::proc::{Child, output};

/// A profile: where the server's CPU went, by what the code was doing (inclusive, from
/// call stacks) and by symbol (exclusive).
#[derive(Debug, Clone, Default)]
pub struct Profile {
    /// Samples taken.
    pub samples: u64,
    /// Share of samples per activity, largest first (percent): each sample counts for the
    /// first activity (in [`ACTIVITIES`] order) found anywhere on its stack.
    pub activities: Vec<(String, f64)>,
    /// Share of samples per symbol group, largest first (percent, exclusive time).
    pub groups: Vec<(String, f64)>,
    /// The heaviest symbols (percent, where, symbol), exclusive time.
    pub top: Vec<(f64, String, String)>,
}

/// What the server can be busy with, most specific first: (name, frames that mark it).
pub const ACTIVITIES: &[(&str, &[&str])] = &[
    (
        "CSR check: parse, P-256 signature verification, names",
        &["VerifiedCsr::from_der"],
    ),
    (
        "leaf: build and P-256 signature (rcgen, ring)",
        &["CertificateParams::signed_by"],
    ),
    ("leaf: re-parse and field checks", &["validate::leaf"]),
    (
        "leaf: template, serial, the rest of issue",
        &["Authority::issue"],
    ),
    (
        "store: lookups (token by id, certificate by serial)",
        &[
            "token_from_row",
            "record_from_row",
            "SqliteStore::lookup",
            "ReadPool",
            "TokenRecord",
        ],
    ),
    (
        "store: commit (WAL frames, fsync)",
        &["pagerWalFrames", "sqlite3PagerCommitPhaseOne"],
    ),
    (
        "store: SQL of each write (certificate, audit, token use)",
        &["writer_loop"],
    ),
    ("store: WAL checkpoint (own thread)", &["checkpoint_loop"]),
    (
        "logging (tracing, one line per certificate)",
        &["tracing_subscriber", "tracing_core"],
    ),
    (
        "TLS records and HTTP/2 frames (connection I/O)",
        &[
            "serve_connection",
            "h2::codec",
            "tokio_rustls",
            "rustls::conn",
        ],
    ),
    (
        "TLS handshakes (accept loop)",
        &["accept_loop", "rustls::server::hs"],
    ),
    ("health check (every 10 s)", &["health_loop", "self_test"]),
    (
        "registrar and service: checks, audit entries, the reply, their allocations",
        &["ca_server::registrar", "ca_server::service", "CaService"],
    ),
    (
        "gRPC request plumbing (tonic, hyper, prost, tower)",
        &[
            "tonic::",
            "hyper::",
            "prost",
            "tower::",
            "axum::",
            "dtca_proto",
        ],
    ),
    (
        "tokio scheduler, timers, idle polling",
        &["tokio::runtime", "mio::"],
    ),
];

/// Samples `pid` for `how_long` at ~2 kHz into `data`.
///
/// # Errors
/// When perf is missing or not permitted here.
pub fn record(pid: u32, how_long: Duration, data: &Path) -> anyhow::Result<Child> {
    if Command::new("perf")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        bail!("perf is not installed (apt-get install linux-perf)");
    }
    let mut cmd = Command::new("perf");
    // DWARF call graphs (the release build keeps line tables, not frame pointers), at a
    // rate that keeps perf's own cost and the data small.
    let graph =
        std::env::var("DTCA_BENCH_PERF_CALL_GRAPH").unwrap_or_else(|_| "dwarf,16384".into());
    cmd.args(["record", "-F", "499", "--call-graph", &graph]);
    Child::spawn(
        "perf record",
        cmd.arg("-p")
            .arg(pid.to_string())
            .arg("-o")
            .arg(data)
            .args(["--", "sleep"])
            .arg(format!("{}", how_long.as_secs_f64())),
        &data.with_extension("log"),
    )
}

/// Summarises a `perf record` file.
///
/// # Errors
/// When perf report fails or found no samples.
pub fn summarise(data: &Path) -> anyhow::Result<Profile> {
    let mut profile = flat(data)?;
    // Call stacks, when they were recorded; without them there is only the flat profile.
    if let Ok(script) = output(
        Command::new("perf")
            .args(["script", "-F", "tid,ip,sym", "-i"])
            .arg(data),
    ) {
        profile.activities = activities(&script);
    }
    Ok(profile)
}

/// Shares of [`ACTIVITIES`] in `perf script -F tid,ip,sym` output.
fn activities(script: &str) -> Vec<(String, f64)> {
    let mut counts = vec![0u64; ACTIVITIES.len() + 1];
    let mut total = 0u64;
    let mut stack: Vec<&str> = Vec::new();
    let mut flush = |stack: &mut Vec<&str>| {
        if stack.is_empty() {
            return;
        }
        let i = ACTIVITIES
            .iter()
            .position(|(_, marks)| stack.iter().any(|f| marks.iter().any(|m| f.contains(m))))
            .unwrap_or(ACTIVITIES.len());
        counts[i] += 1;
        total += 1;
        stack.clear();
    };
    for line in script.lines() {
        if line.starts_with('\t') {
            // "\t    55d0c1 symbol (inlined)": the symbol after the address.
            let frame = line.trim_start();
            let sym = frame.split_once(' ').map_or(frame, |(_, s)| s);
            stack.push(sym);
        } else {
            flush(&mut stack);
        }
    }
    flush(&mut stack);
    if total == 0 {
        return Vec::new();
    }
    let mut out: Vec<(String, f64)> = counts
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let name = ACTIVITIES
                .get(i)
                .map_or("other (kernel, libc, runtime glue)", |a| a.0);
            (name.to_string(), 100.0 * *n as f64 / total as f64)
        })
        .filter(|(_, pct)| *pct > 0.0)
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

fn flat(data: &Path) -> anyhow::Result<Profile> {
    let text = output(
        Command::new("perf")
            .args(["report", "--stdio", "--no-children", "-g", "none"])
            .args(["--sort", "dso,sym"])
            .args(["--percent-limit", "0", "-i"])
            .arg(data),
    )
    .context("perf report")?;
    let mut profile = Profile::default();
    let mut groups: Vec<(String, f64)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# Samples: ") {
            profile.samples = parse_count(rest);
            continue;
        }
        let Some((pct, dso, sym)) = parse_line(line) else {
            continue;
        };
        let group = group_of(&dso, &sym);
        match groups.iter_mut().find(|(g, _)| g == group) {
            Some((_, total)) => *total += pct,
            None => groups.push((group.to_string(), pct)),
        }
        if profile.top.len() < 15 {
            profile.top.push((pct, dso, sym));
        }
    }
    if groups.is_empty() {
        bail!("perf recorded no samples");
    }
    groups.sort_by(|a, b| b.1.total_cmp(&a.1));
    profile.groups = groups;
    Ok(profile)
}

fn parse_count(text: &str) -> u64 {
    let digits: String = text.chars().take_while(|c| c.is_ascii_digit()).collect();
    let n: u64 = digits.parse().unwrap_or(0);
    match text[digits.len()..].chars().next() {
        Some('K') => n * 1000,
        Some('M') => n * 1_000_000,
        _ => n,
    }
}

/// `   12.34%  ca-server   [.] symbol` -> (12.34, "ca-server", "symbol").
fn parse_line(line: &str) -> Option<(f64, String, String)> {
    let line = line.trim_start();
    let (pct, rest) = line.split_once('%')?;
    let pct: f64 = pct.trim().parse().ok()?;
    let rest = rest.trim_start();
    let (dso, sym) = match rest.find(" [.] ").or_else(|| rest.find(" [k] ")) {
        Some(at) => (rest[..at].trim(), rest[at + 5..].trim()),
        None => return None,
    };
    let kernel = rest[dso.len()..].trim_start().starts_with("[k]");
    let dso = if kernel && !dso.contains("kernel") {
        format!("{dso} (kernel)")
    } else {
        dso.to_string()
    };
    Some((pct, dso, sym.to_string()))
}

/// What a symbol is busy with.
fn group_of(dso: &str, sym: &str) -> &'static str {
    let s = sym.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| s.contains(w));
    if dso.contains("kernel") {
        return "kernel: network, syscalls, scheduling, fsync";
    }
    if has(&["sha256", "sha512", "sha2::", "sha_"]) {
        return "SHA-2";
    }
    if has(&["aes", "gcm", "ghash", "chacha", "poly1305", "gfmul"]) {
        return "TLS record encryption (AES-GCM)";
    }
    if has(&[
        "ring::",
        "ring_core",
        "p256",
        "nistz",
        "ecp_",
        "bn_mul",
        "limbs",
        "ecdsa",
    ]) {
        return "P-256 ECDSA (ring): CSR verify, leaf sign, TLS";
    }
    if has(&["sqlite"]) {
        return "SQLite (store)";
    }
    if has(&["rustls", "webpki"]) {
        return "rustls / webpki";
    }
    if has(&[
        "x509_parser",
        "der_parser",
        "asn1_rs",
        "nom::",
        "rcgen",
        "yasna",
        "der::",
    ]) {
        return "X.509 / DER parse and build (x509-parser, rcgen)";
    }
    if has(&["h2::", "hyper", "tonic", "prost", "http::", "tower"]) {
        return "HTTP/2 and gRPC (h2, hyper, tonic, prost)";
    }
    if has(&["tokio"]) {
        return "tokio runtime";
    }
    if has(&["tracing", "fmt::", "core::fmt"]) {
        return "logging and formatting";
    }
    if has(&[
        "malloc", "free", "realloc", "memcpy", "memmove", "memset", "memcmp", "_int_", "cfree",
        "alloc::",
    ]) {
        return "allocation and memcpy (libc)";
    }
    "other"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_perf_report_lines() {
        let (p, dso, sym) =
            parse_line("    12.34%  ca-server          [.] ring_core_0_17_14__p256_point_mul")
                .unwrap_or_default();
        assert_eq!((p, dso.as_str()), (12.34, "ca-server"));
        assert_eq!(
            group_of(&dso, &sym),
            "P-256 ECDSA (ring): CSR verify, leaf sign, TLS"
        );
        let (_, dso, sym) =
            parse_line("     3.00%  [kernel.kallsyms]  [k] do_syscall_64").unwrap_or_default();
        assert!(group_of(&dso, &sym).starts_with("kernel"));
        assert!(parse_line("# Overhead  Shared Object").is_none());
        let script = "ca-server 1 \n\t 1 ring_core_p256_point_mul\n\t 2 dtca_pki::csr::VerifiedCsr::from_der\n\n\
                      ca-server 1 \n\t 3 unixSync\n\t 4 pagerWalFrames\n\t 5 ca_server::store::sqlite::writer_loop\n\n\
                      ca-server 1 \n\t 6 memcpy\n";
        let a = activities(script);
        assert_eq!(a.len(), 3, "{a:?}");
        assert!(
            a.iter()
                .any(|(n, p)| n.starts_with("CSR") && (*p - 100.0 / 3.0).abs() < 0.01)
        );
        assert!(a.iter().any(|(n, _)| n.starts_with("store: commit")));
        assert!(a.iter().any(|(n, _)| n.starts_with("other")));
        assert_eq!(parse_count("12K of event 'cpu-clock'"), 12_000);
    }
}
