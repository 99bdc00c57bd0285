#!/usr/bin/env bash
# Runs the fuzz targets of fuzz/ (cargo-fuzz, nightly) and keeps their corpora small.
#   scripts/fuzz.sh                  # every target, 10 minutes each, two at a time
#   scripts/fuzz.sh policy 60        # one target for 60 seconds
# Installs cargo-fuzz and the nightly toolchain when missing. New inputs land in
# fuzz/corpus/<target>/, which is minimised to edge coverage after each run (cargo fuzz
# cmin without hit counts, so the committed corpora stay a few hundred KB); a crash is left
# in fuzz/artifacts/<target>/ and stops that target (see FUZZING.md).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGETS=(csr token policy daemon_json systemd config)
SECONDS_EACH="${2:-600}"
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
# Our code has no unsafe: a sanitizer would find nothing a panic does not, at a third of the speed.
FLAGS=(-s none)
cargo +nightly fuzz build "${FLAGS[@]}"

run() {
    local target="$1" log="fuzz/artifacts/$1.log"
    mkdir -p fuzz/artifacts
    nice -n 19 timeout $((SECONDS_EACH + 60)) cargo +nightly fuzz run "${FLAGS[@]}" "$target" -- \
        -max_total_time="$SECONDS_EACH" -print_final_stats=1 -rss_limit_mb=2048 >"$log" 2>&1 || {
        echo "$target: stopped early (crash?), see $log and fuzz/artifacts/$target/" >&2
        return 1
    }
    nice -n 19 cargo +nightly fuzz cmin "${FLAGS[@]}" "$target" -- \
        -use_counters=0 -use_value_profile=0 >>"$log" 2>&1
    grep -E "stat::number_of_executed_units|cov:" "$log" | tail -2
}

if [[ $# -ge 1 ]]; then
    run "$1"
    exit
fi
status=0
for ((i = 0; i < ${#TARGETS[@]}; i += 2)); do
    run "${TARGETS[i]}" & a=$!
    run "${TARGETS[i + 1]}" & b=$!
    wait "$a" || status=1
    wait "$b" || status=1
done
exit "$status"
