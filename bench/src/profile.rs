//! Where the server's time goes: `perf record` of the running `ca-server` (all its
//! threads, kernel included) while it is under load, summarised by symbol and grouped
//! into what the symbols do.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::proc::{Child, output};

/// A flat profile.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    /// Samples taken.
    pub samples: u64,
    /// Share of samples per group, largest first (percent).
    pub groups: Vec<(String, f64)>,
    /// The heaviest symbols (percent, where, symbol).
    pub top: Vec<(f64, String, String)>,
}

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
    cmd.args(["record", "-F", "1999"]);
    // For digging further by hand (`--keep`, then `perf report -i .../perf.data`).
    if let Ok(mode) = std::env::var("DTCA_BENCH_PERF_CALL_GRAPH") {
        cmd.args(["--call-graph", &mode]);
    }
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
    let text = output(
        Command::new("perf")
            .args(["report", "--stdio", "--no-children", "--sort", "dso,sym"])
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
        assert_eq!(parse_count("12K of event 'cpu-clock'"), 12_000);
    }
}
