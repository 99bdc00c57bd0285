#!/usr/bin/env bash
# Benchmarks, in one command; writes BENCHMARKS.md at the repository root.
#
#   scripts/bench.sh                 # the full run (about 5 minutes on 2 cores, plus the build)
#   scripts/bench.sh --measure 2 --storm 1000 --inventory 20000 --idle 5   # a quick look
#
# Installs cfssl (Debian's golang-cfssl, the peer measured side by side), perf (for the
# profile) and PostgreSQL (for the PostgreSQL row, when the backend is built) when they
# are missing; builds the release binaries; runs the criterion benches of the pure core;
# then target/release/dtca-bench starts a real ca-server and cfssl on loopback, measures,
# stops every process it started, and writes the report. Extra arguments go to
# dtca-bench (`target/release/dtca-bench --help`). Not part of `cargo test`.
# Run as root on a quiet machine: the report shows how busy the machine was.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cfssl >/dev/null 2>&1 || need+=(golang-cfssl)
command -v perf >/dev/null 2>&1 || need+=(linux-perf)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  # perf may not exist for this kernel's distribution; the report then says so.
  apt-get install -y -qq "${need[@]}" >/dev/null ||
    apt-get install -y -qq golang-cfssl >/dev/null
fi

cargo build --release -p dtca-bench -p ca-server -p ca-client
cargo bench -p dtca-pki --bench issuance
exec target/release/dtca-bench --out BENCHMARKS.md --command "scripts/bench.sh${*:+ $*}" "$@"
