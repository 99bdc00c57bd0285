//! The fuzz targets' bodies: one plain function per target, each feeding untrusted input
//! to one parser and checking properties of what comes out, not only that nothing panics.
//!
//! `fuzz/` (cargo-fuzz, nightly, outside the workspace) wraps each in `fuzz_target!`;
//! `tests/corpus.rs` here replays every committed input of `fuzz/corpus/<target>/` on
//! stable, so CI re-checks what the fuzzers found without running them.
//!
//! - [`csr`]: `VerifiedCsr::from_der` on DER, and `csr::build` -> `from_der` round trips.
//! - [`token`]: join-token parsing; a token that parses re-serialises to its own text.
//! - [`policy`]: SAN policy matching against a label-by-label reference matcher.
//! - [`daemon_json`]: the `daemon.json` plan: keeps every unrelated key, is idempotent.
//! - [`systemd`]: docker.service, drop-in and EnvironmentFile parsing; our drop-in undoes
//!   every `-H` and keeps every other word.
//! - [`config`]: both TOML config files, durations and engine addresses in them.
//!
//! A broken property panics with a message saying which: that is how a fuzzer reports.
//! Nothing here reads files or the network.

pub mod config;
pub mod csr;
pub mod daemon_json;
pub mod policy;
pub mod systemd;
pub mod token;

/// A target's body: panics when a property does not hold for the input.
pub type Body = fn(&[u8]);

/// Every target by the name of its corpus directory, for the replay test.
pub const TARGETS: &[(&str, Body)] = &[
    ("config", config::run),
    ("csr", csr::run),
    ("daemon_json", daemon_json::run),
    ("policy", policy::run),
    ("systemd", systemd::run),
    ("token", token::run),
];

/// Splits fuzzer text into sections at lines that are exactly `--`.
fn sections(data: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(data);
    let mut out = vec![String::new()];
    for line in text.split_inclusive('\n') {
        if line.trim_end_matches(['\r', '\n']) == "--" {
            out.push(String::new());
        } else if let Some(last) = out.last_mut() {
            last.push_str(line);
        }
    }
    out
}
