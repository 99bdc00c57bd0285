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
echo "== cargo test" >&2
cargo test --workspace --locked "$@"
