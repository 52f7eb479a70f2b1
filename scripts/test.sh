#!/usr/bin/env bash
# Sets up the machine (idempotent), builds, and runs the whole test suite
# through ctest: once in a normal build, once under ASan+UBSan.
#   scripts/test.sh            both builds, then the fault-injection CI set
#                              (tests/jepsen/ci.sh: needs root, ~6-9 min)
#   scripts/test.sh --quick    the normal build only
#   UNIBUS_CTEST_ARGS="-R kv"  extra ctest arguments
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

bash scripts/setup.sh

jobs=$(nproc 2>/dev/null || echo 2)
run_suite() {
    local dir=$1; shift
    echo "==> configuring $dir ($*)"
    cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
    echo "==> building $dir"
    cmake --build "$dir" -j "$jobs"
    echo "==> testing $dir"
    (cd "$dir" && ctest --output-on-failure --timeout 900 ${UNIBUS_CTEST_ARGS:-})
}

run_suite build
if [ "${1:-}" != "--quick" ]; then
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:fast_unwind_on_malloc=0
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    run_suite build-asan -DUB_SANITIZE=address,undefined
fi
if [ "${1:-}" != "--quick" ]; then
    echo "==> fault injection (tests/jepsen/ci.sh)"
    bash tests/jepsen/ci.sh
fi
echo "==> all tests passed"
