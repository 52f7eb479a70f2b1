#!/usr/bin/env bash
# Installs everything unibus needs to build, test and benchmark on Debian 12.
# Idempotent: safe to run again. Needs root (or sudo).
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# libraft 0.22 lives in bookworm-backports (bookworm's own 0.15 has Raft safety bugs).
# We copy the archive address from this machine's own apt sources rather than naming a host.
if [ ! -f /etc/apt/sources.list.d/backports.sources ] &&
   ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
    uris=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    if [ -z "$uris" ]; then
        echo "setup.sh: cannot find a URIs: line in /etc/apt/sources.list.d/debian.sources;" >&2
        echo "  add a bookworm-backports source by hand, then run this again." >&2
        exit 1
    fi
    echo "setup.sh: adding the bookworm-backports suite from $uris"
    $SUDO tee /etc/apt/sources.list.d/backports.sources >/dev/null <<SRC
Types: deb
URIs: $uris
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

export DEBIAN_FRONTEND=noninteractive
need_update=1
stamp=/var/lib/apt/periodic/update-success-stamp
if [ -f "$stamp" ] && [ -n "$(find "$stamp" -mmin -60 2>/dev/null)" ]; then need_update=0; fi
if [ "$need_update" = 1 ] || [ ! -f /var/lib/apt/lists/lock ]; then
    $SUDO apt-get update -qq
fi

pkgs=(build-essential cmake pkg-config clang
      libuv1-dev libssl-dev openssl libsqlite3-dev sqlite3
      libprotobuf-c-dev protobuf-c-compiler libjansson-dev libcmocka-dev
      libh2o-dev libsystemd-dev libnats-dev nats-server
      libcurl4-openssl-dev curl jq python3 python3-cryptography iproute2 procps)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup.sh: installing ${missing[*]}"
    $SUDO apt-get install -y -qq "${missing[@]}"
fi

# Node.js runs the signing example of docs/signing.md in the tests.
if ! command -v node >/dev/null 2>&1; then
    echo "setup.sh: installing nodejs"
    $SUDO apt-get install -y -qq nodejs
fi

# The nats.js client suite (tests/compat/js) installs the client pinned in its
# package-lock.json; Debian's nodejs ships without npm.
if ! command -v npm >/dev/null 2>&1; then
    echo "setup.sh: installing npm"
    $SUDO apt-get install -y -qq npm
fi
compat_js="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/compat/js"
if [ ! -d "$compat_js/node_modules/nats" ] ||
   [ "$compat_js/package-lock.json" -nt "$compat_js/node_modules/.package-lock.json" ]; then
    echo "setup.sh: npm ci in tests/compat/js"
    npm ci --prefix "$compat_js" --no-audit --no-fund
fi

if ! dpkg-query -W -f='${Version}' libraft-dev 2>/dev/null | grep -q '^0\.22'; then
    echo "setup.sh: installing libraft-dev 0.22 from bookworm-backports"
    $SUDO apt-get install -y -qq -t bookworm-backports libraft-dev
fi

v=$(pkg-config --modversion raft)
case "$v" in
    0.22.*) ;;
    *) echo "setup.sh: libraft is $v, unibus needs 0.22.x from bookworm-backports" >&2; exit 1 ;;
esac
echo "setup.sh: dependencies ready (libraft $v)"
