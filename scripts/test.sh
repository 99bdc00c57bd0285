#!/usr/bin/env bash
# Runs all tests: unit tests, end-to-end tests against real ca-server/ca-client binaries,
# a real dockerd and docker CLI, real PostgreSQL. Installs missing Debian packages first.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo test --workspace --locked "$@"
