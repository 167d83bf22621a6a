#!/usr/bin/env bash
# The one command to try kanmon locally: installs what is missing (PostgreSQL, build tools),
# builds `kanmon` and the demo node `kanmon-bench` in release, then runs `kanmon up` with its
# state in ./.kanmon (Ctrl-C stops everything; running this again resumes the deployments).
# Extra arguments go to `kanmon up` (see `kanmon up --help`), e.g. `scripts/run.sh --no-database`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh run
cargo build --release -p kanmon-control -p kanmon-bench --bin kanmon --bin kanmon-bench
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/kanmon" up "$@"
