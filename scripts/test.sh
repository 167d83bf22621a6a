#!/usr/bin/env bash
# The test command: installs what the tests use, then runs every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
# Make the binaries the end-to-end tests start (kanmon-proxy, kanmon, kanmon-bench) first.
cargo build --workspace --bins
cargo test --workspace "$@"
