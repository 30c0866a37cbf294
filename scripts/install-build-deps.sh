#!/usr/bin/env bash
# Installs the system packages the build and the tests need, when they are
# missing: clang and libclang-dev (bindgen generates RocksDB's Rust bindings
# with libclang), iproute2 and iptables (the Jepsen suite's partition nemeses
# put each master in a network namespace and drop packets with iptables),
# etcd-server (`rafter bench kv` and its smoke test run etcd 3.4 beside
# Rafter), busybox-static (the node agent builds its pod sandbox image and
# `rafter image build-demo` the demo image from it, with no registry).
# Debian/Ubuntu; uses sudo when not run as root. Used by scripts/local-up.sh,
# scripts/test.sh and .ci/run.
set -euo pipefail

missing=()
command -v clang >/dev/null 2>&1 || missing+=(clang)
dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ] || missing+=(etcd-server)
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)

if [ "${#missing[@]}" -eq 0 ]; then
    echo "clang, libclang-dev, iproute2, iptables, etcd-server and busybox-static are installed"
    exit 0
fi

echo "installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
$sudo apt-get update
$sudo apt-get install -y --no-install-recommends "${missing[@]}"
