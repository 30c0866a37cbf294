#!/usr/bin/env bash
# Makes sure a Docker engine answers on this machine: the node agent's
# tests run real containers. Starts dockerd when it is installed but not
# running (a fresh CI machine), and fails loudly when there is none: those
# tests are never skipped. Used by scripts/test.sh.
set -euo pipefail

if docker info >/dev/null 2>&1; then
    echo "Docker engine: $(docker version --format '{{.Server.Version}}' 2>/dev/null)"
    exit 0
fi
if command -v dockerd >/dev/null 2>&1; then
    echo "starting dockerd (log: /tmp/rafter-dockerd.log)"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    $sudo sh -c 'nohup dockerd >/tmp/rafter-dockerd.log 2>&1 &'
    for _ in $(seq 1 60); do
        if docker info >/dev/null 2>&1; then
            echo "Docker engine: $(docker version --format '{{.Server.Version}}' 2>/dev/null)"
            exit 0
        fi
        sleep 1
    done
fi
echo "ERROR: no Docker engine answers (docker info failed). The node agent tests need one:" >&2
echo "install Docker (Debian: apt-get install docker.io) and start it (systemctl start docker)." >&2
exit 1
