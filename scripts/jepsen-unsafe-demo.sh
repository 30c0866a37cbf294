#!/usr/bin/env bash
# Shows that the Jepsen suite catches a real bug: runs the register workload
# RUNS times (default 5) for SECS seconds each (default 60) against masters
# started with `--unsafe-local-reads` (test only: linearizable reads answered
# from local state, without the read index) under leader-isolation
# partitions, and prints how many runs the checker found invalid.
#
#   sudo scripts/jepsen-unsafe-demo.sh [RUNS] [SECS]
#
# Needs root, `ip` and `iptables` (network namespaces), and a built
# workspace (`cargo build --workspace`; CARGO_TARGET_DIR is honoured). Run
# directories go to jepsen-runs/unsafe-demo-<time>/run-<n>. Exit code 0 when
# at least one run was invalid (the bug was caught), 1 otherwise.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

runs=${1:-5}
secs=${2:-60}
target=${CARGO_TARGET_DIR:-target}
jepsen="$target/debug/rafter-jepsen"
rafter="$target/debug/rafter"
for bin in "$jepsen" "$rafter"; do
    if [[ ! -x $bin ]]; then
        echo "error: $bin not found; run \`cargo build --workspace\` first" >&2
        exit 2
    fi
done

out="jepsen-runs/unsafe-demo-$(date +%s)"
mkdir -p "$out"
invalid=0 valid=0 other=0
for n in $(seq 1 "$runs"); do
    dir="$out/run-$n"
    set +e
    "$jepsen" test --workload register --nemesis partition-leader --net netns \
        --fault-interval 4 --time-limit "$secs" --rafter-bin "$rafter" \
        --run-dir "$dir" --server-arg=--unsafe-local-reads >"$dir.out" 2>"$dir.err"
    code=$?
    set -e
    case $code in
        0) verdict=valid; valid=$((valid + 1)) ;;
        1) verdict=invalid; invalid=$((invalid + 1)) ;;
        2) verdict=unknown; other=$((other + 1)) ;;
        *) verdict="run failed (exit $code, see $dir.err)"; other=$((other + 1)) ;;
    esac
    echo "run $n/$runs: $verdict  ($(grep -m1 '^operations:' "$dir.out" 2>/dev/null || true))"
done
echo
echo "--unsafe-local-reads under partition-leader, $runs runs of $secs s: $invalid invalid, $valid valid, $other unknown or failed"
echo "run directories: $out"
[[ $invalid -gt 0 ]]
