#!/usr/bin/env bash
# Brings up a local cluster of Rafter masters (3 by default) on this machine:
# installs the system packages the build needs when missing, builds `rafter`
# in release mode and runs `rafter local up` with this script's arguments,
# e.g. `scripts/local-up.sh --masters 5 --dir /tmp/rafter`.
#
# `rafter local up` runs in the directory you call this script from, so its
# default --dir is ./.rafter-local there. The masters keep running in the
# background; stop them with `rafter local down` (same --dir). A preset
# CARGO_TARGET_DIR is respected.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

"$root/scripts/install-build-deps.sh"

echo "==> cargo build --release --bin rafter"
(cd "$root" && cargo build --release --bin rafter)

# Where cargo put it: $CARGO_TARGET_DIR (relative to where cargo ran, the
# workspace root) or the workspace's target/.
target="${CARGO_TARGET_DIR:-target}"
case "$target" in
    /*) ;;
    *) target="$root/$target" ;;
esac
rafter="$target/release/rafter"

echo "==> $rafter local up $*"
exec "$rafter" local up "$@"
