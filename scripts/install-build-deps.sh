#!/usr/bin/env bash
# Installs the system packages the build needs, when they are missing:
# clang and libclang-dev (bindgen generates RocksDB's Rust bindings with
# libclang). Debian/Ubuntu; uses sudo when not run as root. Used by
# scripts/local-up.sh, scripts/test.sh and .ci/run.
set -euo pipefail

if command -v clang >/dev/null 2>&1 && dpkg -s libclang-dev >/dev/null 2>&1; then
    echo "clang and libclang-dev are installed"
    exit 0
fi

echo "installing clang and libclang-dev (needed to build RocksDB)"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
$sudo apt-get update
$sudo apt-get install -y --no-install-recommends clang libclang-dev
