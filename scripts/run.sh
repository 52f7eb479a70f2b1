#!/usr/bin/env bash
# Sets up the machine (idempotent), builds membershipd, and runs one node with
# the embedded defaults: HTTP on 127.0.0.1:8470, state under ./local_files.
# Extra arguments go to membershipd (see `membershipd --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc 2>/dev/null || echo 2)" --target membershipd unibusctl
echo "==> starting membershipd; try: build/src/cli/unibusctl kv put demo hello world"
exec build/src/membershipd --http-listen 127.0.0.1:8470 --bus-listen 127.0.0.1:4250 "$@"
