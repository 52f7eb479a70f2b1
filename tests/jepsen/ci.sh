#!/usr/bin/env bash
# CI entry point of the fault-injection tests (tests/jepsen/README.md, "Running").
#
#   bash tests/jepsen/ci.sh            the CI set: 4 runs of 60 s of faults each
#
# Installs what it needs (idempotent), builds membershipd if needed (reusing
# build/ from scripts/test.sh), runs the checker self-test, then the CI set
# of JEPSEN.md section 6:
#   register   + partition,kill
#   register   + pause,clock
#   nonce      + partition,kill
#   membership + partition,kill
# Every run prints one verdict line per checker and the command replaying its
# seed; results (history, node logs, nemesis timeline, report) stay under
# tests/jepsen/results/ci-<time>/. Exit status 0 only if every run is valid
# (1: an anomaly, 2: unknown / harness error). Needs root: without network
# namespaces it says why and fails.
#
# Environment: MEMBERSHIPD (binary to test), JEPSEN_TIME_LIMIT (default 60),
# JEPSEN_SEED (default: random; each run uses it), JEPSEN_OUT (results dir),
# JEPSEN_KEEP_DATA=1 (keep the nodes' data dirs of valid runs too; by default
# only failing runs keep them, and only the 10 latest ci-* result sets stay).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
start=$(date +%s)
say() { echo "ci.sh [$(( $(date +%s) - start ))s] $*"; }

# -- root and network namespaces ---------------------------------------------
if [ "$(id -u)" -ne 0 ]; then
    echo "ci.sh: the fault-injection tests need root (network namespaces, iptables);" \
         "running as uid $(id -u). Not skipping: failing." >&2
    exit 1
fi
probe="ubci-probe-$$"
if ! err=$(ip netns add "$probe" 2>&1); then
    echo "ci.sh: cannot create a network namespace: $err" >&2
    echo "ci.sh: the fault-injection tests need CAP_SYS_ADMIN and a kernel with network" \
         "namespaces. Not skipping: failing." >&2
    exit 1
fi
ip netns del "$probe"

# -- packages -----------------------------------------------------------------
export DEBIAN_FRONTEND=noninteractive
pkgs=(iptables nftables faketime libfaketime libnetfilter-queue-dev iproute2 python3
      python3-cryptography openssl build-essential cmake pkg-config)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    if ! apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${missing[@]}"; then
        apt-get -o DPkg::Lock::Timeout=300 update -qq
        apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${missing[@]}"
    fi
fi

# -- membershipd ----------------------------------------------------------------
jobs=$(nproc 2>/dev/null || echo 2)
if [ -n "${MEMBERSHIPD:-}" ]; then
    binary=$MEMBERSHIPD
elif [ -f build/CMakeCache.txt ]; then
    say "building membershipd in build/ (incremental)"
    if ! cmake --build build --target membershipd -j "$jobs" > /tmp/jepsen-build.$$ 2>&1; then
        cat /tmp/jepsen-build.$$; rm -f /tmp/jepsen-build.$$
        echo "ci.sh: building membershipd failed" >&2
        exit 2
    fi
    rm -f /tmp/jepsen-build.$$
    binary=build/src/membershipd
else
    say "no build/: setting up and building membershipd"
    bash scripts/setup.sh
    cmake -S "$root" -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build build --target membershipd -j "$jobs" >/dev/null
    binary=build/src/membershipd
fi
[ -x "$binary" ] || { echo "ci.sh: no membershipd at $binary" >&2; exit 1; }

# -- checker self-test ---------------------------------------------------------------
say "checker self-test"
(cd tests/jepsen && /usr/bin/python3 -m checker.selftest --quick > /tmp/jepsen-selftest.$$ 2>&1) || {
    cat /tmp/jepsen-selftest.$$; rm -f /tmp/jepsen-selftest.$$
    echo "ci.sh: the checker self-test failed: the checker is broken, not unibus" >&2
    exit 2
}
tail -1 /tmp/jepsen-selftest.$$; rm -f /tmp/jepsen-selftest.$$

# -- the CI set ------------------------------------------------------------------------
out=${JEPSEN_OUT:-tests/jepsen/results/ci-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
tl=${JEPSEN_TIME_LIMIT:-60}
seed=${JEPSEN_SEED:-$(( RANDOM << 15 | RANDOM ))}
runs=("register:partition,kill" "register:pause,clock" "nonce:partition,kill"
      "membership:partition,kill")
worst=0
summary=()
for r in "${runs[@]}"; do
    wl=${r%%:*}
    nem=${r#*:}
    name="$wl-${nem//,/-}"
    say "run $name (seed $seed, $tl s)"
    rc=0
    /usr/bin/python3 tests/jepsen/run.py --workload "$wl" --nemesis "$nem" --seed "$seed" \
        --time-limit "$tl" --binary "$binary" --out "$out/$name" || rc=$?
    case $rc in
        0) word=VALID ;;
        1) word=INVALID ;;
        *) word=UNKNOWN ;;
    esac
    summary+=("$(printf '%-8s %-28s %s' "$word" "$name" "$out/$name")")
    # The nodes' data dirs (raft segments, ~25 MB a node) are kept only for
    # runs that are not valid, unless JEPSEN_KEEP_DATA=1.
    if [ "$rc" -eq 0 ] && [ "${JEPSEN_KEEP_DATA:-0}" != 1 ]; then
        rm -rf "${out:?}/$name/data"
    fi
    if [ "$rc" -eq 1 ] || { [ "$rc" -ne 0 ] && [ "$worst" -eq 0 ]; }; then worst=$rc; fi
done

# Keep the 10 most recent CI result sets.
if [ -z "${JEPSEN_OUT:-}" ]; then
    find tests/jepsen/results -maxdepth 1 -type d -name 'ci-*' | sort | head -n -10 |
        xargs -r rm -rf
fi

echo
say "fault-injection CI set done"
for s in "${summary[@]}"; do echo "  $s"; done
echo "  results: $out (history.jsonl, nemesis.jsonl, logs/, report.txt per run)"
echo "  replay one run: /usr/bin/python3 tests/jepsen/run.py --workload W --nemesis N --seed $seed --time-limit $tl"
if [ "$worst" -ne 0 ]; then
    echo "ci.sh: FAILED (exit $worst)" >&2
    exit "$worst"
fi
echo "ci.sh: all runs valid"
