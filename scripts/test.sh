#!/usr/bin/env bash
# Runs the workspace's tests: the command README and CI (.ci/run) both use.
#
# With cargo-nextest installed: `cargo nextest run --workspace --no-fail-fast`
# (settings in .config/nextest.toml); otherwise `cargo test --workspace`.
# Extra arguments are passed on, e.g. `scripts/test.sh -p rafter-raft-store`.
# First installs clang/libclang-dev when missing (scripts/install-build-deps.sh)
# and makes sure a Docker engine runs (scripts/ensure-docker.sh).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/install-build-deps.sh
scripts/ensure-docker.sh

if cargo nextest --version >/dev/null 2>&1; then
    echo "==> cargo nextest run --workspace --no-fail-fast $*"
    exec cargo nextest run --workspace --no-fail-fast "$@"
else
    echo "==> cargo-nextest not found; cargo test --workspace $*"
    exec cargo test --workspace "$@"
fi
