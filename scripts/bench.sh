#!/usr/bin/env bash
# Benchmarks, in one command; writes BENCHMARKS.md at the repository root.
#
#   scripts/bench.sh                 # the full run: about 10 minutes on 2 cores after the build
#   scripts/bench.sh --baseline-server OLD/ca-server --baseline-label "main at abc1234"
#                                    # the store under load beside a previous build
#   scripts/bench.sh --measure 2 --storm 1000 --inventory 20000 --idle 5   # a quick look
#
# Installs what it measures against or with when missing (Debian packages): cfssl
# (golang-cfssl, the peer side by side; required), perf (linux-perf, for the profile) and
# PostgreSQL (for the PostgreSQL row); without the last two the report says what is
# missing. Builds the release binaries, runs the criterion benches of the pure core, then
# target/release/dtca-bench starts a real ca-server, cfssl and PostgreSQL on loopback,
# measures, stops every process it started (also on error and ctrl-c) and writes the
# report. Extra arguments go to dtca-bench (`target/release/dtca-bench --help`).
# Not part of `cargo test`. Run as root on a quiet machine: the report shows how busy the
# machine was during each measurement.
set -euo pipefail
cd "$(dirname "$0")/.."

missing() {
  case "$1" in
    golang-cfssl) ! command -v cfssl >/dev/null 2>&1 ;;
    linux-perf) ! command -v perf >/dev/null 2>&1 ;;
    postgresql) ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 ;;
  esac
}
updated=0
for pkg in golang-cfssl linux-perf postgresql; do
  if missing "$pkg"; then
    if [ "$updated" = 0 ]; then
      apt-get update -qq >/dev/null
      updated=1
    fi
    echo "installing $pkg" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null ||
      echo "could not install $pkg; the report will say what is missing" >&2
  fi
done
command -v cfssl >/dev/null 2>&1 || { echo "cfssl is required (apt-get install golang-cfssl)" >&2; exit 1; }

cargo build --release -p dtca-bench -p ca-server -p ca-client
cargo bench -p dtca-pki --bench issuance
# The command as it was typed, for the report: arguments with spaces or quotes in quotes.
command="scripts/bench.sh"
for arg in "$@"; do
  case "$arg" in
    *[!A-Za-z0-9_./,:=@%+-]*) command+=" '${arg//\'/\'\\\'\'}'" ;;
    *) command+=" $arg" ;;
  esac
done
exec target/release/dtca-bench --out BENCHMARKS.md --command "$command" "$@"
