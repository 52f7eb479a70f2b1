#!/usr/bin/env bash
# Stops the local cluster started by scripts/cluster-up.sh (SIGTERM, then
# waits for a clean exit). --wipe also deletes its state and certificates.
set -euo pipefail
cd "$(dirname "$0")/.."
root=local_files/cluster
for i in 1 2 3; do
    pidf="$root/n$i.pid"
    [ -f "$pidf" ] || continue
    pid=$(cat "$pidf")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "n$i (pid $pid) did not stop in 10 s; killing it" >&2
            kill -KILL "$pid"
        else
            echo "==> stopped n$i"
        fi
    fi
    rm -f "$pidf"
done
if [ "${1:-}" = "--wipe" ]; then
    rm -rf "$root"
    echo "==> removed $root"
fi
