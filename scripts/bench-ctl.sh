#!/usr/bin/env bash
# bench-ctl.sh: the control plane's signed requests at R1 and R3.
#
# Starts one node (R1) and a three-node cluster (R3) on loopback, each with a
# fresh admin key, and drives them with scripts/bench/ctlbench.py:
#   healthz  unsigned GET: the HTTP floor of this client
#   me       signed GET /v1/me: authentication and one nonce claim
#   kvput    signed PUT /v1/kv: the claim rides in the write (one entry)
#   room     signed room membership add + remove: read-modify-write txns
# Sequential latency (p50/p99) and throughput with --procs clients in
# flight; medians of --runs runs. "Cost of a nonce claim" = me p50 - healthz
# p50. The client is Python (one process per in-flight request), so absolute
# throughput is client-bound on two cores; compare the modes with each other.
#
#   scripts/bench-ctl.sh [--runs N] [--n N] [--procs P] [--only r1|r3]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUNS=3
N=1000
PROCS=8
ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --n) N=$2; shift 2 ;;
        --procs) PROCS=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "bench-ctl.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

BIN=$ROOT/build/src/membershipd
CTL=$ROOT/build/src/cli/unibusctl
if [ ! -x "$BIN" ] || [ ! -x "$CTL" ]; then
    bash scripts/setup.sh
    cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build build -j "$(nproc)" --target membershipd unibusctl
fi
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

WORK=$(mktemp -d /tmp/unibus-bench-ctl.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
log() { printf '[bench-ctl %4ds] %s\n' "$SECONDS" "$*" >&2; }

# A free port below the ephemeral range: a bind(0) port could be taken as a
# source port by a node's outbound connection before the node listens on it.
free_port() {
    $PY - <<'PYEOF'
import random, socket
while True:
    p = random.randint(10000, 32000)
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            continue
    print(p)
    break
PYEOF
}

# start_cluster NAME COUNT: prints the HTTP port of the first node.
start_cluster() {
    local name=$1 count=$2 dir=$WORK/$1
    mkdir -p "$dir"
    "$CTL" keygen --out "$dir/admin" --json | sed -n 's/.*"sign_pub": "\([^"]*\)".*/\1/p' >"$dir/admin.pub"
    local pub; pub=$(cat "$dir/admin.pub")
    local http=() route=() bus=() routes="" i
    for i in $(seq 1 "$count"); do http+=("$(free_port)"); route+=("$(free_port)"); bus+=("$(free_port)"); done
    if [ "$count" -gt 1 ]; then
        deploy/cluster/generate-cluster-certs.sh --out "$dir/certs" $(seq -f "n%g" 1 "$count") >/dev/null
        for i in $(seq 0 $((count - 1))); do routes+="nats://127.0.0.1:${route[$i]},"; done
    fi
    for i in $(seq 1 "$count"); do
        local args=(--name "n$i" --data-dir "$dir/n$i" --http-listen "127.0.0.1:${http[$((i - 1))]}"
                    --bus-listen "127.0.0.1:${bus[$((i - 1))]}"
                    --bootstrap-admin "admin=$pub")
        if [ "$count" -gt 1 ]; then
            args+=(--route-listen "127.0.0.1:${route[$((i - 1))]}" --routes "${routes%,}"
                   --route-tls-cert "$dir/certs/n$i/route.crt" --route-tls-key "$dir/certs/n$i/route.key"
                   --route-tls-ca "$dir/certs/cluster-ca.crt" --cluster-pass-file "$dir/certs/cluster.pass")
        fi
        "$BIN" "${args[@]}" >"$dir/n$i.log" 2>&1 &
        PIDS+=($!)
    done
    local port=${http[0]}
    for _ in $(seq 1 300); do
        if "$CTL" --url "http://127.0.0.1:$port" --handle admin --seed-file "$dir/admin.nk" me >/dev/null 2>&1; then
            echo "$port"
            return 0
        fi
        sleep 0.1
    done
    echo "bench-ctl.sh: $name did not come up; see $dir/*.log" >&2
    exit 1
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

run_mode() { # cfg port seed mode procs -> prints p50 p99 ops (medians)
    local cfg=$1 port=$2 seed=$3 mode=$4 procs=$5 n=$N r out p50s=() p99s=() opss=()
    [ "$procs" -gt 1 ] && n=$((N * 4))
    for r in $(seq 1 "$RUNS"); do
        out=$($PY scripts/bench/ctlbench.py --port "$port" --seed-file "$seed" --mode "$mode" -n "$n" --procs "$procs")
        log "$cfg $mode procs=$procs run $r: ${out#RESULT }"
        case "$out" in *"errors=0 "*) ;; *) echo "bench-ctl.sh: errors in $cfg $mode: $out" >&2 ;; esac
        p50s+=("$(sed 's/.*p50_ms=\([0-9.]*\).*/\1/' <<<"$out")")
        p99s+=("$(sed 's/.*p99_ms=\([0-9.]*\).*/\1/' <<<"$out")")
        opss+=("$(sed 's/.*ops_s=\([0-9]*\).*/\1/' <<<"$out")")
    done
    printf '%s %s %s\n' "$(printf '%s\n' "${p50s[@]}" | median)" \
        "$(printf '%s\n' "${p99s[@]}" | median)" "$(printf '%s\n' "${opss[@]}" | median)"
}

TABLE=$WORK/table
printf '%-4s %-8s %14s %14s %16s\n' cfg mode "seq p50 (ms)" "seq p99 (ms)" "ops/s (${PROCS} procs)" >"$TABLE"
for cfg in r1 r3; do
    [ -n "$ONLY" ] && [ "$ONLY" != "$cfg" ] && continue
    log "starting $cfg"
    count=1; [ "$cfg" = r3 ] && count=3
    port=$(start_cluster "$cfg" "$count")
    seed=$WORK/$cfg/admin.nk
    declare -A P50
    for mode in healthz me kvput room; do
        read -r p50 p99 _ < <(run_mode "$cfg" "$port" "$seed" "$mode" 1)
        read -r _ _ ops < <(run_mode "$cfg" "$port" "$seed" "$mode" "$PROCS")
        P50[$mode]=$p50
        printf '%-4s %-8s %14s %14s %16s\n' "$cfg" "$mode" "$p50" "$p99" "$ops" >>"$TABLE"
    done
    awk -v c="$cfg" -v a="${P50[me]}" -v b="${P50[healthz]}" \
        'BEGIN { printf "%-4s nonce claim cost (me - healthz, p50): %.3f ms\n", c, a - b }' \
        >>"$TABLE.notes"
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    PIDS=()
done
echo
echo "unibus $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, medians of $RUNS runs"
cat "$TABLE"
[ -f "$TABLE.notes" ] && cat "$TABLE.notes"
