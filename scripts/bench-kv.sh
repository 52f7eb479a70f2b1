#!/usr/bin/env bash
# bench-kv.sh: unibus's replicated KV against etcd, side by side on loopback.
#
# For R1 (one node) and R3 (three nodes) it starts a unibus cluster and an
# etcd cluster next to each other (fresh temp dirs), drives both with the same
# client (scripts/bench/kvbench.c) and prints one table: sequential put
# latency, put throughput with 64 in flight, linearizable read latency,
# compare-and-swap latency, peak RSS under load and, for R3, the failover
# time after a SIGKILL of the leader. Medians of --runs runs (3).
#
#   scripts/bench-kv.sh            full run (about 5-10 minutes on 2 cores)
#   scripts/bench-kv.sh --quick    1 run, small N, 1 failover trial
#
# Options:
#   --quick          1 run, N=300 sequential, 3000 puts for throughput
#   --runs N         runs per figure (default 3; 0: failover only)
#   --failover-trials N  SIGKILLs of the leader per system in R3 (default 3)
#   --only r1|r3     one configuration only
#   --out DIR        where the raw results and the table go
#                    (default build/bench/kv-results)
#   --no-build       use the existing build/src/membershipd
#   -h, --help
#
# Everything it starts is stopped and its temp dir removed on exit, Ctrl-C
# included. It installs etcd-server and etcd-client with apt-get if missing.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${UNIBUS_BUILD_DIR:-$ROOT/build}
RUNS=3
N_SEQ=2000
N_TP=20000
CONC=64
FO_TRIALS=3
ONLY=""
OUT=""
DO_BUILD=1
QUICK=0

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
    --quick) QUICK=1; RUNS=1; N_SEQ=300; N_TP=3000; FO_TRIALS=1 ;;
    --runs) RUNS=$2; shift ;;
    --failover-trials) FO_TRIALS=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --out) OUT=$2; shift ;;
    --no-build) DO_BUILD=0 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench-kv: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
case "$ONLY" in "" | r1 | r3) ;; *) echo "bench-kv: --only r1|r3" >&2; exit 2 ;; esac
OUT=${OUT:-$BUILD/bench/kv-results}

T_START=$(date +%s)
log() { printf '[bench-kv %4ss] %s\n' "$(($(date +%s) - T_START))" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Variables from a system etcd setup must not leak into ours.
for v in $(compgen -e | grep -E '^(ETCD|ETCDCTL)_' || true); do unset "$v"; done
export ETCDCTL_API=3

# ---------------------------------------------------------------------------
# cleanup: every process we start is in ALL_PIDS until it is reaped
ALL_PIDS=()
SAMPLER_PID=""
KVB_PID=""
WORK=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [ -n "$KVB_PID" ] && kill -KILL "$KVB_PID" 2>/dev/null
    if [ -n "$SAMPLER_PID" ]; then
        kill "$SAMPLER_PID" 2>/dev/null || true
        wait "$SAMPLER_PID" 2>/dev/null || true
    fi
    local p
    for p in "${ALL_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 50); do
        local alive=0
        for p in "${ALL_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for p in "${ALL_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    for p in "${ALL_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    ALL_PIDS=()
    [ -n "$WORK" ] && rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# Runs kvbench in the background and waits for it, so that a signal to this
# script is handled at once (bash runs traps only between commands).
kvb() { # outfile args...
    local out=$1 rc=0
    shift
    "$KVB" "$@" >"$out" 2>>"$WORK/kvbench.err" &
    KVB_PID=$!
    wait "$KVB_PID" || rc=$?
    KVB_PID=""
    return $rc
}

forget_pid() {
    local p=$1 out=() q
    for q in "${ALL_PIDS[@]}"; do [ "$q" != "$p" ] && out+=("$q"); done
    ALL_PIDS=("${out[@]}")
}

# ---------------------------------------------------------------------------
# prerequisites
if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; then
    log "installing etcd-server and etcd-client (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq etcd-server etcd-client >/dev/null 2>&1 || {
        apt-get update -qq >/dev/null && apt-get install -y -qq etcd-server etcd-client >/dev/null
    }
fi
for tool in curl openssl cc pkg-config; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done

UB=$BUILD/src/membershipd
if [ $DO_BUILD = 1 ]; then
    log "building membershipd (RelWithDebInfo) in $BUILD"
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    make -C "$BUILD" -j2 membershipd unibusctl >/dev/null
fi
[ -x "$UB" ] || die "no $UB (build it, or drop --no-build)"
UBCTL=$BUILD/src/cli/unibusctl
[ -x "$UBCTL" ] || die "no $UBCTL (build it, or drop --no-build)"
SIGNED=yes
"$UBCTL" --help 2>&1 | grep -q keygen || SIGNED="no (build predates signed requests)"
KVB=$BUILD/bench/kvbench
mkdir -p "$BUILD/bench"
# shellcheck disable=SC2046 # the flags are words
cc -O2 -std=c11 -Wall -Wextra -o "$KVB" "$ROOT/scripts/bench/kvbench.c" $(pkg-config --libs libcrypto 2>/dev/null || echo -lcrypto)

WORK=$(mktemp -d /tmp/unibus-bench-kv.XXXXXX)
mkdir -p "$OUT"
RAW=$OUT/raw.txt
: >"$RAW"
{
    echo "# bench-kv $(date -u '+%Y-%m-%d %H:%M:%SZ') runs=$RUNS n_seq=$N_SEQ n_tp=$N_TP conc=$CONC"
    echo "# unibus $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || cut -c1-7 "$ROOT/COMMIT" 2>/dev/null || echo '?') $("$UB" --version 2>/dev/null | head -1)"
    echo "# unibus requests signed: $SIGNED"
    echo "# $(etcd --version | head -1)"
    echo "# machine: $(nproc) cpu, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
    echo "# loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >>"$RAW"

USED_PORTS=" "
port() {
    local p
    while :; do
        p=$("$KVB" --free-port)
        case "$USED_PORTS" in *" $p "*) continue ;; esac
        USED_PORTS="$USED_PORTS$p "
        echo "$p"
        return
    done
}

# ---------------------------------------------------------------------------
# unibus cluster: UB_N nodes n1..nN
declare -a UB_HTTP UB_ROUTE UB_BUS UB_PID
UB_N=0
UB_DIR=""
UB_ADMIN_PUB=""
UB_SIGN=()

ub_start_node() { # index (1-based)
    local i=$1 name=n$1 args
    args=(--name "$name" --data-dir "$UB_DIR/$name" --log-level info
        --http-listen "127.0.0.1:${UB_HTTP[$i]}" --bus-listen "127.0.0.1:${UB_BUS[$i]}")
    [ -n "$UB_ADMIN_PUB" ] && args+=(--bootstrap-admin "bench=$UB_ADMIN_PUB")
    if [ "$UB_N" -gt 1 ]; then
        local routes="" j
        for j in $(seq "$UB_N"); do
            [ "$j" = "$i" ] && continue
            routes="${routes:+$routes,}nats://127.0.0.1:${UB_ROUTE[$j]}"
        done
        args+=(--route-listen "127.0.0.1:${UB_ROUTE[$i]}" --routes "$routes"
            --route-tls-cert "$UB_DIR/certs/$name/route.crt"
            --route-tls-key "$UB_DIR/certs/$name/route.key"
            --route-tls-ca "$UB_DIR/certs/cluster-ca.crt"
            --cluster-pass-file "$UB_DIR/certs/cluster.pass")
    fi
    "$UB" "${args[@]}" >>"$UB_DIR/$name.log" 2>&1 </dev/null &
    UB_PID[$i]=$!
    ALL_PIDS+=("$!")
}

ub_start() { # nodes
    UB_N=$1
    UB_DIR=$WORK/unibus-r$1
    mkdir -p "$UB_DIR"
    # every /v1/ request is signed by a member; this one is the first admin
    # (builds from before the control plane have no keygen: unsigned then)
    UB_ADMIN_PUB=$("$UBCTL" keygen --out "$UB_DIR/bench" 2>/dev/null | awk '/^sign_pub/ {print $2}' || true)
    if [ -n "$UB_ADMIN_PUB" ]; then
        UB_SIGN=(--handle bench --seed-file "$UB_DIR/bench.nk")
    else
        log "unibusctl has no keygen: this build predates signed requests; running unsigned"
        UB_SIGN=()
    fi
    local i names=()
    for i in $(seq "$UB_N"); do
        UB_HTTP[$i]=$(port)
        UB_ROUTE[$i]=$(port)
        UB_BUS[$i]=$(port)
        names+=("n$i")
    done
    if [ "$UB_N" -gt 1 ]; then
        "$ROOT/deploy/cluster/generate-cluster-certs.sh" --out "$UB_DIR/certs" "${names[@]}" >/dev/null
    fi
    for i in $(seq "$UB_N"); do ub_start_node "$i"; done
}

ub_leader_name() { # asks node i
    curl -s --max-time 2 "http://127.0.0.1:${UB_HTTP[$1]}/healthz" 2>/dev/null |
        sed -n 's/.*"leader":"\([^"]*\)".*/\1/p'
}

# Waits until every live node answers /healthz 200 naming the same leader;
# prints the leader's index.
ub_wait() {
    local deadline=$(($(date +%s) + 60)) i code leader agreed
    while [ "$(date +%s)" -lt $deadline ]; do
        agreed=""
        leader=""
        for i in $(seq "$UB_N"); do
            [ -n "${UB_PID[$i]}" ] || continue
            code=$(curl -s -o "$WORK/hz" -w '%{http_code}' --max-time 2 \
                "http://127.0.0.1:${UB_HTTP[$i]}/healthz" 2>/dev/null || true)
            local l
            l=$(sed -n 's/.*"leader":"\([^"]*\)".*/\1/p' "$WORK/hz" 2>/dev/null || true)
            if [ "$code" != 200 ] || [ -z "$l" ] || { [ -n "$leader" ] && [ "$l" != "$leader" ]; }; then
                agreed=no
                break
            fi
            leader=$l
        done
        if [ -z "$agreed" ] && [ -n "$leader" ]; then
            echo "${leader#n}"
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------------------
# etcd cluster: ET_N members e1..eN
declare -a ET_CLIENT ET_PEER ET_PID
ET_N=0
ET_DIR=""
ET_INITIAL=""

et_start_node() {
    local i=$1 name=e$1
    etcd --name "$name" --data-dir "$ET_DIR/$name" \
        --listen-client-urls "http://127.0.0.1:${ET_CLIENT[$i]}" \
        --advertise-client-urls "http://127.0.0.1:${ET_CLIENT[$i]}" \
        --listen-peer-urls "http://127.0.0.1:${ET_PEER[$i]}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${ET_PEER[$i]}" \
        --initial-cluster "$ET_INITIAL" --initial-cluster-state new \
        --initial-cluster-token "bench-kv-$$-$ET_N" \
        --logger zap --log-outputs "$ET_DIR/$name.log" \
        >>"$ET_DIR/$name.out" 2>&1 </dev/null &
    ET_PID[$i]=$!
    ALL_PIDS+=("$!")
}

et_start() {
    ET_N=$1
    ET_DIR=$WORK/etcd-r$1
    mkdir -p "$ET_DIR"
    local i
    ET_INITIAL=""
    for i in $(seq "$ET_N"); do
        ET_CLIENT[$i]=$(port)
        ET_PEER[$i]=$(port)
        ET_INITIAL="${ET_INITIAL:+$ET_INITIAL,}e$i=http://127.0.0.1:${ET_PEER[$i]}"
    done
    for i in $(seq "$ET_N"); do et_start_node "$i"; done
}

et_endpoints() {
    local i e=""
    for i in $(seq "$ET_N"); do
        [ -n "${ET_PID[$i]}" ] || continue
        e="${e:+$e,}127.0.0.1:${ET_CLIENT[$i]}"
    done
    echo "$e"
}

# Waits until every live member is healthy and exactly one is leader; prints
# the leader's index (found with `etcdctl endpoint status`).
et_wait() {
    local deadline=$(($(date +%s) + 60)) st ep i
    while [ "$(date +%s)" -lt $deadline ]; do
        if etcdctl --endpoints="$(et_endpoints)" --command-timeout=2s endpoint health >/dev/null 2>&1 &&
            st=$(etcdctl --endpoints="$(et_endpoints)" --command-timeout=2s endpoint status -w simple 2>/dev/null); then
            ep=$(echo "$st" | awk -F', ' '$5 == "true" {print $1}')
            if [ "$(echo "$ep" | grep -c .)" = 1 ]; then
                for i in $(seq "$ET_N"); do
                    if [ "$ep" = "127.0.0.1:${ET_CLIENT[$i]}" ]; then
                        echo "$i"
                        return 0
                    fi
                done
            fi
        fi
        sleep 0.2
    done
    return 1
}

# ---------------------------------------------------------------------------
STOP_HOW=""
stop_pid() { # SIGTERM, wait up to 20 s, then SIGKILL; sets STOP_HOW
    local p=$1 t=0 rc=0
    if ! kill -TERM "$p" 2>/dev/null; then
        wait "$p" 2>/dev/null || true
        forget_pid "$p"
        STOP_HOW=gone
        return 0
    fi
    # our child: kill -0 succeeds until it is reaped, so look at its state
    while [ $t -lt 200 ]; do
        case "$(ps -o stat= -p "$p" 2>/dev/null)" in "" | Z*) break ;; esac
        sleep 0.1
        t=$((t + 1))
    done
    if [ $t -ge 200 ]; then
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
        forget_pid "$p"
        STOP_HOW="hung>20s(SIGKILL)"
        return 0
    fi
    wait "$p" 2>/dev/null || rc=$?
    forget_pid "$p"
    STOP_HOW="rc=$rc,$((t * 100))ms"
}

check_alive() { # config
    local i bad=0
    for i in $(seq "$UB_N"); do
        if [ -n "${UB_PID[$i]}" ] && ! kill -0 "${UB_PID[$i]}" 2>/dev/null; then
            log "PROBLEM: unibus n$i (pid ${UB_PID[$i]}) died; log tail:"
            tail -20 "$UB_DIR/n$i.log" >&2
            echo "$1 unibus PROBLEM node n$i died" >>"$RAW"
            bad=1
        fi
    done
    for i in $(seq "$ET_N"); do
        if [ -n "${ET_PID[$i]}" ] && ! kill -0 "${ET_PID[$i]}" 2>/dev/null; then
            log "PROBLEM: etcd e$i died"
            echo "$1 etcd PROBLEM member e$i died" >>"$RAW"
            bad=1
        fi
    done
    [ $bad = 0 ] || die "a server died during the benchmark (see above)"
}

rss_start() { # pids...
    local f=$WORK/rss.samples
    : >"$f"
    (
        trap 'exit 0' TERM
        while :; do
            for p in "$@"; do
                r=$(ps -o rss= -p "$p" 2>/dev/null | tr -d ' ')
                [ -n "$r" ] && echo "$p $r"
            done
            sleep 0.2
        done >>"$f"
    ) &
    SAMPLER_PID=$!
}

rss_stop() { # prints "peak_mb_of_largest min_peak_mb"
    kill "$SAMPLER_PID" 2>/dev/null || true
    wait "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=""
    awk '{ if ($2 > m[$1]) m[$1] = $2 }
         END { hi = 0; lo = -1
               for (p in m) { if (m[p] > hi) hi = m[p]; if (lo < 0 || m[p] < lo) lo = m[p] }
               printf "%.1f %.1f\n", hi / 1024, lo / 1024 }' "$WORK/rss.samples"
}

# One figure for one target: runs kvbench, appends "CFG TARGET MODE RUN ..."
bench_one() { # cfg target mode run url pids...
    local cfg=$1 tgt=$2 mode=$3 run=$4 url=$5
    shift 5
    local n=$N_SEQ line rss
    [ "$mode" = put-tp ] && n=$N_TP
    log "$cfg run $run/$RUNS $tgt $mode (n=$n)"
    [ "$mode" = put-tp ] && rss_start "$@"
    local sign=()
    [ "$tgt" = unibus ] && sign=("${UB_SIGN[@]}")
    if ! kvb "$WORK/out" --target "$tgt" --url "$url" --mode "$mode" -n "$n" \
        --conc $CONC --prefix "run$run" "${sign[@]}" || ! line=$(grep '^RESULT' "$WORK/out"); then
        [ "$mode" = put-tp ] && rss_stop >/dev/null
        tail -5 "$WORK/kvbench.err" >&2
        echo "$cfg $tgt $mode $run PROBLEM kvbench failed: $(tail -1 "$WORK/kvbench.err")" >>"$RAW"
        check_alive "$cfg"
        return 0
    fi
    if [ "$mode" = put-tp ]; then
        rss=$(rss_stop)
        line="$line rss_peak_mb=${rss% *} rss_low_mb=${rss#* }"
    fi
    echo "$cfg $tgt $mode $run ${line#RESULT }" >>"$RAW"
    local errs
    errs=$(echo "$line" | sed -n 's/.* errors=\([0-9]*\).*/\1/p')
    if [ "${errs:-0}" != 0 ]; then
        log "PROBLEM: $tgt $mode had $errs errors: $(echo "$line" | sed -n 's/.*\(err_detail=[^ ]*\).*/\1/p')"
        tail -5 "$WORK/kvbench.err" >&2
    fi
    log "    $(echo "$line" | awk '{for (i = 1; i <= NF; i++) if ($i ~ /^(p50_ms|p99_ms|ops_s|errors|rss_peak_mb)=/) printf "%s ", $i}')"
    check_alive "$cfg"
}

run_config() { # 1 or 3
    local nodes=$1 cfg=R$1 ubl etl run tgt mode order
    log "== $cfg: starting unibus ($nodes node(s)) and etcd ($nodes member(s)) side by side"
    ub_start "$nodes"
    et_start "$nodes"
    ubl=$(ub_wait) || { tail -20 "$UB_DIR"/n*.log >&2; die "unibus $cfg: no agreed leader within 60 s"; }
    etl=$(et_wait) || { tail -5 "$ET_DIR"/e*.out >&2; die "etcd $cfg: no leader within 60 s"; }
    kvb "$WORK/ready" --target unibus --url "http://127.0.0.1:${UB_HTTP[$ubl]}" --mode ready "${UB_SIGN[@]}" ||
        { cat "$WORK/ready" >&2; die "unibus $cfg: signed requests never succeeded"; }
    log "$cfg up: unibus leader n$ubl (http ${UB_HTTP[$ubl]}), etcd leader e$etl (client ${ET_CLIENT[$etl]})"
    local ub_url="http://127.0.0.1:${UB_HTTP[$ubl]}" et_url="http://127.0.0.1:${ET_CLIENT[$etl]}"
    local ub_pids=("${UB_PID[@]:1:$nodes}") et_pids=("${ET_PID[@]:1:$nodes}")
    echo "$cfg unibus idle_rss_mb $(ps -o rss= -p "$(IFS=,; echo "${ub_pids[*]}")" | awk '{printf "%.1f ", $1/1024}')" >>"$RAW"
    echo "$cfg etcd idle_rss_mb $(ps -o rss= -p "$(IFS=,; echo "${et_pids[*]}")" | awk '{printf "%.1f ", $1/1024}')" >>"$RAW"

    for run in $(seq 1 "$RUNS"); do
        # alternate who goes first so slow drifts of the machine hit both
        if [ $((run % 2)) = 1 ]; then order="unibus etcd"; else order="etcd unibus"; fi
        for mode in put-seq put-tp get-seq cas-seq; do
            for tgt in $order; do
                if [ "$tgt" = unibus ]; then
                    bench_one "$cfg" unibus "$mode" "$run" "$ub_url" "${ub_pids[@]}"
                else
                    bench_one "$cfg" etcd "$mode" "$run" "$et_url" "${et_pids[@]}"
                fi
            done
        done
    done

    if [ "$nodes" -gt 1 ]; then
        local trial
        for trial in $(seq 1 "$FO_TRIALS"); do
            failover_unibus "$cfg" "$trial"
            failover_etcd "$cfg" "$trial"
        done
    fi

    log "$cfg: stopping"
    local i
    for i in $(seq "$UB_N"); do
        [ -n "${UB_PID[$i]}" ] || continue
        stop_pid "${UB_PID[$i]}"
        echo "$cfg unibus stop n$i $STOP_HOW" >>"$RAW"
        case "$STOP_HOW" in rc=0,*) ;; *) log "PROBLEM: unibus n$i on SIGTERM: $STOP_HOW" ;; esac
        UB_PID[$i]=""
    done
    for i in $(seq "$ET_N"); do
        [ -n "${ET_PID[$i]}" ] || continue
        stop_pid "${ET_PID[$i]}"
        echo "$cfg etcd stop e$i $STOP_HOW" >>"$RAW"
        ET_PID[$i]=""
    done
    # a unibus log line at error level is worth a look
    local errlines
    errlines=$(grep -h ' error ' "$UB_DIR"/n*.log 2>/dev/null | head -5 || true)
    if [ -n "$errlines" ]; then
        log "unibus $cfg logged errors (first 5):"
        echo "$errlines" >&2
        echo "$errlines" | sed "s/^/$cfg unibus LOG /" >>"$RAW"
    fi
    rm -rf "$UB_DIR" "$ET_DIR"
}

failover_unibus() { # cfg trial
    local cfg=$1 trial=$2 l urls="" i line
    l=$(ub_wait) || die "unibus: no leader before failover trial $trial"
    for i in $(seq "$UB_N"); do
        [ "$i" = "$l" ] && continue
        urls="${urls:+$urls,}http://127.0.0.1:${UB_HTTP[$i]}"
    done
    log "$cfg failover $trial/$FO_TRIALS unibus: SIGKILL leader n$l"
    kvb "$WORK/out" --target unibus --url "http://127.0.0.1:${UB_HTTP[$l]}" --mode failover \
        --urls "$urls" --kill-pid "${UB_PID[$l]}" --prefix "fo$trial" "${UB_SIGN[@]}" || true
    line=$(grep '^RESULT' "$WORK/out") ||
        line="RESULT target=unibus mode=failover ok=0 kvbench-failed:$(tail -1 "$WORK/kvbench.err" | tr ' ' '_')"
    kill -KILL "${UB_PID[$l]}" 2>/dev/null || true # if kvbench gave up before its kill
    wait "${UB_PID[$l]}" 2>/dev/null || true
    forget_pid "${UB_PID[$l]}"
    echo "$cfg unibus failover $trial ${line#RESULT }" >>"$RAW"
    log "    $(echo "$line" | grep -o 'failover_ms=[^ ]*\|lost=[^ ]*\|err_detail=[^ ]*\|kvbench-failed.*' | tr '\n' ' ')"
    case "$line" in *" ok=1 "*) ;; *) log "PROBLEM: unibus failover trial $trial: no acknowledged write"; tail -3 "$WORK/kvbench.err" >&2 ;; esac
    UB_PID[$l]=""
    ub_start_node "$l"
    ub_wait >/dev/null || { tail -20 "$UB_DIR/n$l.log" >&2; die "unibus: n$l did not rejoin after restart"; }
    sleep 2 # let the restarted node catch up before the next trial
}

failover_etcd() {
    local cfg=$1 trial=$2 l urls="" i line
    l=$(et_wait) || die "etcd: no leader before failover trial $trial"
    for i in $(seq "$ET_N"); do
        [ "$i" = "$l" ] && continue
        urls="${urls:+$urls,}http://127.0.0.1:${ET_CLIENT[$i]}"
    done
    log "$cfg failover $trial/$FO_TRIALS etcd: SIGKILL leader e$l"
    kvb "$WORK/out" --target etcd --url "http://127.0.0.1:${ET_CLIENT[$l]}" --mode failover \
        --urls "$urls" --kill-pid "${ET_PID[$l]}" --prefix "fo$trial" || true
    line=$(grep '^RESULT' "$WORK/out") ||
        line="RESULT target=etcd mode=failover ok=0 kvbench-failed:$(tail -1 "$WORK/kvbench.err" | tr ' ' '_')"
    kill -KILL "${ET_PID[$l]}" 2>/dev/null || true
    wait "${ET_PID[$l]}" 2>/dev/null || true
    forget_pid "${ET_PID[$l]}"
    echo "$cfg etcd failover $trial ${line#RESULT }" >>"$RAW"
    log "    $(echo "$line" | grep -o 'failover_ms=[^ ]*\|lost=[^ ]*\|err_detail=[^ ]*' | tr '\n' ' ')"
    ET_PID[$l]=""
    et_start_node "$l"
    et_wait >/dev/null || die "etcd: e$l did not rejoin after restart"
    sleep 2
}

# ---------------------------------------------------------------------------
# the table
report() {
    awk -v runs="$RUNS" '
    function field(name,   i) {
        for (i = 5; i <= NF; i++) if (index($i, name "=") == 1) return substr($i, length(name) + 2)
        return ""
    }
    function add(key, v) { if (v == "") return; v += 0; if (v < 0) return; n[key]++; val[key, n[key]] = v }
    function med(key,   i, j, t, m, a) {
        m = n[key]; if (!m) return ""
        for (i = 1; i <= m; i++) a[i] = val[key, i]
        for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        lo[key] = a[1]; hi[key] = a[m]
        return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
    }
    function fmt(x, unit) {
        if (x == "") return "-"
        if (unit == "ops") return sprintf("%.0f", x)
        if (unit == "mb") return sprintf("%.0f", x)
        if (unit == "s") return sprintf("%.2f", x / 1000)
        return sprintf("%.2f", x)
    }
    function cell(key, unit,   m) {
        m = med(key)
        if (m == "") return "-"
        if (n[key] > 1) return fmt(m, unit) " (" fmt(lo[key], unit) "-" fmt(hi[key], unit) ")"
        return fmt(m, unit)
    }
    function row(cfg, label, metric, unit, better,   u, e, r) {
        u = med(cfg SUBSEP "unibus" SUBSEP metric); e = med(cfg SUBSEP "etcd" SUBSEP metric)
        if (u == "" && e == "") return
        r = (u != "" && e != "" && e > 0) ? sprintf("%.2f", u / e) : "-"
        printf "| %-3s | %-34s | %-22s | %-22s | %-6s | %s |\n", cfg, label,
            cell(cfg SUBSEP "unibus" SUBSEP metric, unit), cell(cfg SUBSEP "etcd" SUBSEP metric, unit), r, better
    }
    /^#/ { next }
    $3 == "put-seq" { add($1 SUBSEP $2 SUBSEP "put_p50", field("p50_ms")); add($1 SUBSEP $2 SUBSEP "put_p99", field("p99_ms")) }
    $3 == "put-tp"  { add($1 SUBSEP $2 SUBSEP "tp", field("ops_s")); add($1 SUBSEP $2 SUBSEP "tp_p99", field("p99_ms"));
                      add($1 SUBSEP $2 SUBSEP "rss", field("rss_peak_mb")) }
    $3 == "get-seq" { add($1 SUBSEP $2 SUBSEP "get_p50", field("p50_ms")); add($1 SUBSEP $2 SUBSEP "get_p99", field("p99_ms")) }
    $3 == "cas-seq" { add($1 SUBSEP $2 SUBSEP "cas_p50", field("p50_ms")); add($1 SUBSEP $2 SUBSEP "cas_p99", field("p99_ms")) }
    $3 == "failover" { if (field("ok") == "1") add($1 SUBSEP $2 SUBSEP "fo", field("failover_ms"));
                       else fofail[$1 SUBSEP $2]++
                       if (field("lost") == "1") lost[$1 SUBSEP $2]++ }
    $3 ~ /^(put-seq|put-tp|get-seq|cas-seq)$/ { e = field("errors") + 0; if (e > 0) errs[$1 SUBSEP $2] += e }
    / PROBLEM / { problems = problems "\n  " $0 }
    END {
        print "| cfg | figure                             | unibus median (min-max) | etcd median (min-max)  | u/etcd | better |"
        print "|-----|------------------------------------|------------------------|------------------------|--------|--------|"
        split("R1 R3", cfgs, " ")
        for (c = 1; c <= 2; c++) {
            cfg = cfgs[c]
            row(cfg, "sequential put p50 (ms)", "put_p50", "ms", "lower")
            row(cfg, "sequential put p99 (ms)", "put_p99", "ms", "lower")
            row(cfg, "puts/s, 64 in flight", "tp", "ops", "higher")
            row(cfg, "  put p99 under that load (ms)", "tp_p99", "ms", "lower")
            row(cfg, "linearizable read p50 (ms)", "get_p50", "ms", "lower")
            row(cfg, "linearizable read p99 (ms)", "get_p99", "ms", "lower")
            row(cfg, "CAS (read+cond. write) p50 (ms)", "cas_p50", "ms", "lower")
            row(cfg, "CAS (read+cond. write) p99 (ms)", "cas_p99", "ms", "lower")
            row(cfg, "peak RSS under load, MB (max node)", "rss", "mb", "lower")
            row(cfg, "failover: kill -9 leader->ack (s)", "fo", "s", "lower")
        }
        for (k in errs) { split(k, p, SUBSEP); printf "errors: %s %s: %d failed requests\n", p[1], p[2], errs[k] }
        for (k in fofail) { split(k, p, SUBSEP); printf "failover: %s %s: %d trial(s) without an acknowledged write\n", p[1], p[2], fofail[k] }
        for (k in lost) { split(k, p, SUBSEP); printf "failover: %s %s: acknowledged marker LOST in %d trial(s)\n", p[1], p[2], lost[k] }
        if (problems != "") printf "problems:%s\n", problems
    }' "$RAW"
}

[ "$ONLY" = r3 ] || run_config 1
[ "$ONLY" = r1 ] || run_config 3

echo "# loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RAW"
TABLE=$OUT/table.md
{
    [ $QUICK = 1 ] && echo "QUICK RUN (1 run, small N): not for quoting"
    echo "bench-kv $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) vCPU, runs=$RUNS (median, min-max over runs), n=$N_SEQ sequential, $N_TP puts at $CONC in flight"
    echo "load average: $(grep '^# loadavg' "$RAW" | sed 's/# loadavg //' | tr '\n' ';' | sed 's/;$//')"
    echo
    report
} >"$TABLE"
echo
cat "$TABLE"
echo
log "done; raw results in $RAW, table in $TABLE"
