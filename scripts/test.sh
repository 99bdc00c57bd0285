#!/usr/bin/env bash
# Runs all tests: unit tests, end-to-end tests against real ca-server/ca-client binaries,
# a real dockerd and docker CLI, real PostgreSQL. Installs missing Debian packages first.
# Before the tests, the style is enforced: unformatted code or any clippy warning fails
# the run, as a failing test does.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
if command -v rustup >/dev/null 2>&1; then
  for component in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$component" \
      || rustup component add "$component"
  done
fi
echo "== cargo fmt --check" >&2
cargo fmt --all --check
echo "== cargo clippy -D warnings" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
# Most end-to-end tests wait on real time (CA lifetimes, rotations, engine restarts), not
# on the CPU: cargo-nextest (on this kind of machine out of the box) runs them side by
# side, each in a process of its own (.config/nextest.toml); plain `cargo test` runs one
# test binary after another and takes about twice as long.
if cargo nextest --version >/dev/null 2>&1; then
  echo "== cargo nextest run" >&2
  cargo nextest run --workspace --locked "$@"
  echo "== cargo test --doc" >&2
  cargo test --workspace --locked --doc
else
  echo "== cargo test" >&2
  cargo test --workspace --locked "$@"
fi
