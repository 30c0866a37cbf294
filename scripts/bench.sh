#!/usr/bin/env bash
# Runs `rafter bench kv` (Rafter's store against a 3-member etcd on this
# machine, about 2 minutes) from a fresh checkout: installs the system
# packages when missing (etcd-server among them), builds `rafter` in release
# mode — figures from a debug build mean nothing — and passes this script's
# arguments on, e.g. `scripts/bench.sh --duration 5s --out /tmp/bench`.
# See docs/BENCHMARKS.md. A preset CARGO_TARGET_DIR is respected.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

"$root/scripts/install-build-deps.sh"

echo "==> cargo build --release --bin rafter"
(cd "$root" && cargo build --release --bin rafter)

target="${CARGO_TARGET_DIR:-target}"
case "$target" in
    /*) ;;
    *) target="$root/$target" ;;
esac

echo "==> rafter bench kv $*"
exec "$target/release/rafter" bench kv "$@"
