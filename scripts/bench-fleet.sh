#!/usr/bin/env bash
# The fleet view at scale: a release ca-server with --ui-listen, NODES enrolled nodes
# (default 10000) whose simulated agents each hold a mutually-authenticated Watch channel
# open from one of 40 loopback source addresses (127.0.1.x, as behind NATs) and report
# once; then `ca-server fleet --json` and the page's /data.json (5 times each), the CA's
# CPU per report and memory, and a revocation's fan-out to every channel. Prints the
# BENCHMARKS.md rows (section "Fleet view"). Not part of `cargo test`.
#   scripts/bench-fleet.sh [NODES]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q -p ca-server -p dtca-bench
exec target/release/dtca-bench fleet --nodes "${1:-10000}" --addresses 40
