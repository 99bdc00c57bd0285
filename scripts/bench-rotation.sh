#!/usr/bin/env bash
# Issuance during a root rotation against the normal rate, on one server in one run:
# Enroll load for SECONDS (default 10) before `ca rotate-root`, then the same load while
# the rotation runs (every leaf signed under the new root, its chain carrying the
# cross-signed root), then `--finish`. Prints both rates and their ratio (target: at
# least 90 %). Not part of `cargo test`.
#   scripts/bench-rotation.sh [SECONDS] [IN_FLIGHT]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-10}"
IN_FLIGHT="${2:-64}"
cargo build --release --locked -q -p ca-server -p dtca-bench
S=target/release/ca-server
B=target/release/dtca-bench
work=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
$S init --cluster bench --insecure-no-passphrase --state-dir "$work/ca" >/dev/null
$S serve --state-dir "$work/ca" --insecure-no-passphrase --listen 127.0.0.1:0 \
  --max-unauthenticated-per-address 100000 >"$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 100); do [ -s "$work/ca/server.addr" ] && break; sleep 0.1; done
addr=$(cat "$work/ca/server.addr")
csrs=$((SECONDS_EACH * 4000 + 8000))
rate() { grep -oE '[0-9]+/s' | head -1 | tr -d '/s'; }
token=$($S token create --quiet --state-dir "$work/ca" --role node --uses 1000000 --ttl 1h 2>/dev/null)
before=$($B drive --server "$addr" --token "$token" --in-flight "$IN_FLIGHT" \
  --seconds "$SECONDS_EACH" --csrs "$csrs" --pid "$pid")
echo "$before"
$S ca rotate-root --state-dir "$work/ca" >/dev/null
during=$($B drive --server "$addr" --token "$token" --in-flight "$IN_FLIGHT" \
  --seconds "$SECONDS_EACH" --csrs "$csrs" --pid "$pid")
echo "$during"
$S ca rotate-root --finish --force --state-dir "$work/ca" >/dev/null 2>&1 || true
r1=$(echo "$before" | rate)
r2=$(echo "$during" | rate)
echo "normal ${r1}/s, during the root rotation ${r2}/s: $((r2 * 100 / r1)) % (target >= 90 %)"
