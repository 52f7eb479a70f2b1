#!/usr/bin/env bash
# bench-bus.sh: unibus's embedded NATS bus against nats-server, side by side.
#
# Each run starts a fresh membershipd (one node, --bus-auth enforce) and a
# fresh nats-server 2.9 (Debian) next to each other on loopback, both
# requiring the same NATS user nkey, and drives both with the same client,
# scripts/bench/busbench.c (nats.c, Debian libnats-dev):
#   pubsub   1 publisher + 1 subscriber connection, --msgs x 128 B:
#            end-to-end msgs/s (first publish to last receipt), msgs lost
#   fanout   1 publisher + 10 subscriber connections, --msgs/10 x 128 B
#            published (so --msgs deliveries): delivered msgs/s
#   reqrep   20,000 sequential 128 B requests, responder on its own
#            connection (send-ASAP): latency p50/p90/p99 in us
#   rss      the server's VmRSS idle after start, its VmHWM over the run,
#            VmRSS idle after the load; VmRSS sampled every 0.1 s per mode
# and the server's CPU time (/proc/<pid>/stat) per million messages or per
# request. It prints one table per mode (medians over the runs, min-max, the
# ratio unibus/nats) and the raw per-run figures, plus the machine's loopback
# TCP round trip (busbench --tcp-rtt) to put latencies in context.
#
#   scripts/bench-bus.sh                      3 runs, both servers
#   scripts/bench-bus.sh --only nats          nats-server alone
#
# Options:
#   --runs N            runs (default 3); servers are fresh in every run
#   --msgs N            pubsub messages (default 1000000; fanout publishes N/10)
#   --reqs N            request/reply round trips (default 20000)
#   --only nats|unibus  one server only
#   --out DIR           raw.txt and table.md (default build/bench/bus-results)
#   --no-build          use the existing build/src/membershipd
#   -h, --help
#
# The nkey is the admin seed an empty single membershipd writes to
# <data-dir>/admin.nk; nats-server gets its public key with full
# permissions. With --only nats, busbench makes a fresh seed instead.
# Every process it starts is stopped, and its temp dir removed, on exit
# (Ctrl-C and SIGTERM included). It installs nats-server and libnats-dev with
# apt-get if they are missing.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${UNIBUS_BUILD_DIR:-$ROOT/build}
RUNS=3
MSGS=1000000
REQS=20000
WARMUP=500 # untimed requests before the timed ones
SUBS=10
ONLY=""
OUT=""
DO_BUILD=1

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
    --runs) RUNS=$2; shift ;;
    --msgs) MSGS=$2; shift ;;
    --reqs) REQS=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --out) OUT=$2; shift ;;
    --no-build) DO_BUILD=0 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench-bus: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
case "$ONLY" in "" | nats | unibus) ;; *) echo "bench-bus: --only nats|unibus" >&2; exit 2 ;; esac
case "$RUNS$MSGS$REQS" in *[!0-9]*) echo "bench-bus: --runs, --msgs and --reqs take numbers" >&2; exit 2 ;; esac
if [ "$RUNS" -lt 1 ] || [ "$MSGS" -lt 10 ] || [ "$REQS" -lt 1 ]; then
    echo "bench-bus: --runs >= 1, --msgs >= 10, --reqs >= 1" >&2
    exit 2
fi
FAN_MSGS=$((MSGS / SUBS))
OUT=${OUT:-$BUILD/bench/bus-results}
TARGETS="unibus nats"
[ -n "$ONLY" ] && TARGETS=$ONLY

T_START=$(date +%s)
log() { printf '[bench-bus %4ss] %s\n' "$(($(date +%s) - T_START))" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------------------
# cleanup: every process we start is in ALL_PIDS until it is reaped
ALL_PIDS=()
SAMPLER_PID=""
BB_PID=""
WORK=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [ -n "$BB_PID" ] && kill -KILL "$BB_PID" 2>/dev/null
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

forget_pid() {
    local p=$1 keep=() q
    for q in "${ALL_PIDS[@]}"; do [ "$q" != "$p" ] && keep+=("$q"); done
    ALL_PIDS=("${keep[@]}")
}

# Runs busbench in the background and waits for it, so that a signal to this
# script is handled at once (bash runs traps only between commands).
bb() { # outfile args...
    local out=$1 rc=0
    shift
    "$BB" "$@" >"$out" 2>>"$WORK/busbench.err" &
    BB_PID=$!
    wait "$BB_PID" || rc=$?
    BB_PID=""
    return $rc
}

# ---------------------------------------------------------------------------
# prerequisites
if ! command -v nats-server >/dev/null || ! pkg-config --exists libnats 2>/dev/null; then
    log "installing nats-server and libnats-dev (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq nats-server libnats-dev >/dev/null 2>&1 || {
        apt-get update -qq >/dev/null && apt-get install -y -qq nats-server libnats-dev >/dev/null
    }
fi
for tool in cc pkg-config curl; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done

UB=$BUILD/src/membershipd
if [ "$ONLY" != nats ]; then
    if [ $DO_BUILD = 1 ]; then
        log "building membershipd (RelWithDebInfo) in $BUILD"
        cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
        make -C "$BUILD" -j2 membershipd >/dev/null
    fi
    [ -x "$UB" ] || die "no $UB (build it, or drop --no-build)"
fi
BB=$BUILD/bench/busbench
mkdir -p "$BUILD/bench"
# shellcheck disable=SC2046 # the flags are words
cc -O2 -std=c11 -Wall -Wextra -pthread -o "$BB" "$ROOT/scripts/bench/busbench.c" \
    $(pkg-config --cflags --libs libnats) $(pkg-config --libs libcrypto 2>/dev/null || echo -lcrypto)

WORK=$(mktemp -d /tmp/unibus-bench-bus.XXXXXX)
mkdir -p "$OUT"
RAW=$OUT/raw.txt
: >"$RAW"
CLK_TCK=$(getconf CLK_TCK)
log "measuring the loopback TCP round trip (machine context)"
bb "$WORK/rtt" --tcp-rtt || true
RTT=$(sed -n 's/^RESULT mode=tcp-rtt n=[0-9]* //p' "$WORK/rtt")
{
    echo "# bench-bus $(date -u '+%Y-%m-%d %H:%M:%SZ') runs=$RUNS msgs=$MSGS fanout=${FAN_MSGS}x$SUBS reqs=$REQS size=128 only=${ONLY:-both}"
    echo "# unibus $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$([ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null)" ] && echo ' (dirty tree)')"
    echo "# nats-server $(nats-server --version 2>/dev/null | sed 's/.*v//'), nats.c $(pkg-config --modversion libnats)"
    echo "# machine: $(nproc) cpu ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
    echo "# loopback tcp round trip (us): $RTT"
    echo "# loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >>"$RAW"

USED_PORTS=" "
port() {
    local p
    while :; do
        p=$("$BB" --free-port)
        case "$USED_PORTS" in *" $p "*) continue ;; esac
        USED_PORTS="$USED_PORTS$p "
        echo "$p"
        return
    done
}

# Does something accept TCP connections on 127.0.0.1:$1?
accepts() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# ---------------------------------------------------------------------------
# servers
declare -A PID URL SLOG
SEED=""
PUB=""

ub_start() { # run
    local dir=$WORK/run$1/unibus http bus
    mkdir -p "$dir"
    http=$(port)
    bus=$(port)
    "$UB" --name n1 --data-dir "$dir/data" --log-level warn \
        --http-listen "127.0.0.1:$http" --bus-listen "127.0.0.1:$bus" \
        --bus-auth enforce >>"$dir/membershipd.log" 2>&1 </dev/null &
    PID[unibus]=$!
    ALL_PIDS+=("$!")
    URL[unibus]="nats://127.0.0.1:$bus"
    SLOG[unibus]=$dir/membershipd.log
    # an empty single node elects itself and writes the admin seed
    local deadline=$(($(date +%s) + 30))
    while [ "$(date +%s)" -lt $deadline ]; do
        kill -0 "${PID[unibus]}" 2>/dev/null || { tail -20 "$dir/membershipd.log" >&2; die "membershipd exited at start"; }
        if [ -s "$dir/data/admin.nk" ] &&
            [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$http/healthz" 2>/dev/null)" = 200 ]; then
            break
        fi
        sleep 0.1
    done
    [ -s "$dir/data/admin.nk" ] || { tail -20 "$dir/membershipd.log" >&2; die "membershipd wrote no $dir/data/admin.nk within 30 s"; }
    SEED=$dir/data/admin.nk
    # the bus must accept connections; until it exists, say so plainly
    deadline=$(($(date +%s) + 20))
    until accepts "$bus"; do
        kill -0 "${PID[unibus]}" 2>/dev/null || { tail -20 "$dir/membershipd.log" >&2; die "membershipd died while we waited for its bus port"; }
        if [ "$(date +%s)" -ge $deadline ]; then
            tail -5 "$dir/membershipd.log" >&2
            die "unibus: membershipd is up (/healthz 200 on 127.0.0.1:$http) but its bus port 127.0.0.1:$bus (--bus-listen) accepted no connection in 20 s: this membershipd has no working embedded bus yet. Measure nats-server alone with --only nats."
        fi
        sleep 0.1
    done
}

nats_start() { # run
    local dir=$WORK/run$1/nats p
    mkdir -p "$dir"
    p=$(port)
    cat >"$dir/nats.conf" <<EOF
# bench-bus: nkey auth, one user with full permissions, no JetStream
server_name: bench
listen: 127.0.0.1:$p
authorization {
  users = [
    { nkey: $PUB, permissions: { publish: ">", subscribe: ">" } }
  ]
}
EOF
    nats-server -c "$dir/nats.conf" -l "$dir/nats.log" >>"$dir/nats.out" 2>&1 </dev/null &
    PID[nats]=$!
    ALL_PIDS+=("$!")
    URL[nats]="nats://127.0.0.1:$p"
    SLOG[nats]=$dir/nats.log
}

STOP_HOW=""
stop_pid() { # SIGTERM, wait up to 20 s, then SIGKILL; sets STOP_HOW
    local p=$1 t=0 rc=0
    if ! kill -TERM "$p" 2>/dev/null; then
        wait "$p" 2>/dev/null || true
        forget_pid "$p"
        STOP_HOW=gone
        return 0
    fi
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

check_alive() { # run
    local tgt bad=0
    for tgt in $TARGETS; do
        if ! kill -0 "${PID[$tgt]}" 2>/dev/null; then
            log "PROBLEM: $tgt server (pid ${PID[$tgt]}) died; log tail:"
            tail -20 "${SLOG[$tgt]}" >&2
            echo "$1 $tgt PROBLEM server died" >>"$RAW"
            bad=1
        fi
    done
    [ $bad = 0 ] || die "a server died during the benchmark (see above)"
}

# ---------------------------------------------------------------------------
# memory and CPU of a server
status_kb() { # pid field -> kB
    awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status" 2>/dev/null || echo 0
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

rss_start() { # pid
    local f=$WORK/rss.samples
    : >"$f"
    (
        trap 'exit 0' TERM
        while :; do
            awk '$1 == "VmRSS:" {print $2}' "/proc/$1/status" 2>/dev/null
            sleep 0.1
        done >>"$f"
    ) &
    SAMPLER_PID=$!
}

rss_stop() { # prints the peak sampled VmRSS in MB
    kill "$SAMPLER_PID" 2>/dev/null || true
    wait "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=""
    awk '$1 > m {m = $1} END {printf "%.1f\n", m / 1024}' "$WORK/rss.samples"
}

# One figure for one server: appends "RUN TARGET MODE key=value ..." to RAW.
bench_one() { # run target mode
    local run=$1 tgt=$2 mode=$3 args line c0 c1 rss
    case $mode in
    pubsub) args=(-n "$MSGS" --subject "room.bench.x") ;;
    fanout) args=(-n "$FAN_MSGS" --subs "$SUBS" --subject "room.bench.fan") ;;
    reqrep) args=(-n "$REQS" --warmup "$WARMUP" --subject "room.bench.req") ;;
    esac
    log "run $run/$RUNS $tgt $mode"
    rss_start "${PID[$tgt]}"
    c0=$(cpu_ticks "${PID[$tgt]}")
    local rc=0
    bb "$WORK/out" --url "${URL[$tgt]}" --seed-file "$SEED" --mode "$mode" "${args[@]}" || rc=$?
    c1=$(cpu_ticks "${PID[$tgt]}")
    rss=$(rss_stop)
    if ! line=$(grep '^RESULT' "$WORK/out"); then
        # no figures at all: busbench could not connect or gave up
        tail -3 "$WORK/busbench.err" >&2
        echo "$run $tgt $mode PROBLEM busbench failed: $(tail -1 "$WORK/busbench.err" | tr -s ' ' '_')" >>"$RAW"
        log "PROBLEM: $tgt $mode: busbench failed"
        check_alive "$run"
        return 0
    fi
    line="${line#RESULT } server_cpu_s=$(awk -v a="$c0" -v b="$c1" -v t="$CLK_TCK" 'BEGIN {printf "%.2f", (b - a) / t}') rss_peak_mb=$rss"
    echo "$run $tgt $mode $line" >>"$RAW"
    log "    $(echo "$line" | grep -o '\b\(msgs_s\|delivered_msgs_s\|lost\|p50_us\|p99_us\|errors\|server_cpu_s\|rss_peak_mb\|auth_retries\)=[^ ]*' | tr '\n' ' ')"
    if [ $rc != 0 ]; then
        # figures, but messages lost or requests failed: they stay in the
        # table (the "lost"/"failed" rows) and are listed as problems
        log "PROBLEM: $tgt $mode: $(echo "$line" | grep -o '\b\(lost\|flush_fail\|slow_consumer\|errors\|first_error\)=[^ ]*' | tr '\n' ' ')"
        echo "$run $tgt $mode-PROBLEM $(echo "$line" | grep -o '\b\(received\|lost\|flush_fail\|slow_consumer\|errors\|first_error\)=[^ ]*' | tr '\n' ' ')" >>"$RAW"
    fi
    check_alive "$run"
}

run_one() { # run
    local run=$1 tgt mode order idle
    log "== run $run/$RUNS: starting $(echo "$TARGETS" | sed 's/unibus/membershipd/; s/nats/nats-server/; s/ / and /')"
    if [ "$ONLY" != nats ]; then
        ub_start "$run"
    else
        SEED=$WORK/run$run/bench.nk
        mkdir -p "$WORK/run$run"
        "$BB" --keygen "$SEED" >/dev/null
    fi
    PUB=$("$BB" --pubkey --seed-file "$SEED")
    [ "$ONLY" != unibus ] && nats_start "$run"
    for tgt in $TARGETS; do
        bb "$WORK/ready" --url "${URL[$tgt]}" --seed-file "$SEED" --mode ready --timeout-ms 20000 || {
            tail -5 "${SLOG[$tgt]}" >&2
            die "$tgt: ${URL[$tgt]} did not accept our nkey ($PUB) within 20 s: $(tail -1 "$WORK/busbench.err")"
        }
    done
    sleep 1
    for tgt in $TARGETS; do
        idle=$(status_kb "${PID[$tgt]}" VmRSS)
        echo "$run $tgt rss-idle rss_mb=$(awk -v k="$idle" 'BEGIN {printf "%.1f", k / 1024}')" >>"$RAW"
    done
    # alternate who goes first so slow drifts of the machine hit both
    if [ $((run % 2)) = 1 ]; then order=$TARGETS; else order=$(echo "$TARGETS" | awk '{for (i = NF; i > 0; i--) printf "%s ", $i}'); fi
    for mode in pubsub fanout reqrep; do
        for tgt in $order; do bench_one "$run" "$tgt" "$mode"; done
    done
    sleep 1
    for tgt in $TARGETS; do
        echo "$run $tgt rss-end hwm_mb=$(awk -v k="$(status_kb "${PID[$tgt]}" VmHWM)" 'BEGIN {printf "%.1f", k / 1024}') rss_mb=$(awk -v k="$(status_kb "${PID[$tgt]}" VmRSS)" 'BEGIN {printf "%.1f", k / 1024}')" >>"$RAW"
    done
    for tgt in $TARGETS; do
        stop_pid "${PID[$tgt]}"
        echo "$run $tgt stop $STOP_HOW" >>"$RAW"
        # nats-server 2.9 exits 1 on SIGTERM; only membershipd must exit 0
        case "$tgt:$STOP_HOW" in *:rc=0,* | nats:rc=1,*) ;; *) log "PROBLEM: $tgt on SIGTERM: $STOP_HOW" ;; esac
    done
    # unibus errors, and the bus's warnings (slow consumers), are worth a look
    if [ "$ONLY" != nats ]; then
        local errlines
        errlines=$(grep -hE ' error | warn +[^ ]+ bus: ' "${SLOG[unibus]}" 2>/dev/null | head -5 || true)
        if [ -n "$errlines" ]; then
            log "unibus logged errors or bus warnings (first 5):"
            echo "$errlines" >&2
            echo "$errlines" | sed "s/^/$run unibus LOG /" >>"$RAW"
        fi
    fi
    rm -rf "$WORK/run$run"
}

# ---------------------------------------------------------------------------
# the tables
report() {
    awk -v runs="$RUNS" -v msgs="$MSGS" -v fan="$FAN_MSGS" -v subs="$SUBS" -v reqs="$REQS" -v warmup="$WARMUP" '
    function field(name,   i) {
        for (i = 4; i <= NF; i++) if (index($i, name "=") == 1) return substr($i, length(name) + 2)
        return ""
    }
    function add(key, v) { if (v == "") return; v += 0; n[key]++; val[key, n[key]] = v }
    function med(key,   i, j, t, m, a) {
        m = n[key]; if (!m) return ""
        for (i = 1; i <= m; i++) a[i] = val[key, i]
        for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        lo[key] = a[1]; hi[key] = a[m]
        return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
    }
    function commas(x,   s, r) {
        s = sprintf("%.0f", x); r = ""
        while (length(s) > 3) { r = "," substr(s, length(s) - 2) r; s = substr(s, 1, length(s) - 3) }
        return s r
    }
    function fmt(x, unit) {
        if (x == "") return "-"
        if (unit == "int") return commas(x)
        if (unit == "us") return sprintf("%.0f", x)
        if (unit == "mb") return sprintf("%.1f", x)
        return sprintf("%.2f", x)
    }
    function cell(key, unit,   m) {
        m = med(key)
        if (m == "") return "-"
        if (n[key] > 1) return fmt(m, unit) " (" fmt(lo[key], unit) "-" fmt(hi[key], unit) ")"
        return fmt(m, unit)
    }
    function row(label, metric, unit, better,   u, s, r) {
        u = med("unibus" SUBSEP metric); s = med("nats" SUBSEP metric)
        if (u == "" && s == "") return
        r = (u != "" && s != "" && s > 0) ? sprintf("%.2f", u / s) : "-"
        printf "| %-38s | %-31s | %-31s | %-11s | %-6s |\n", label,
            cell("unibus" SUBSEP metric, unit), cell("nats" SUBSEP metric, unit), r, better
    }
    function header() {
        print "| figure                                 | unibus median (min-max)         | nats-server median (min-max)    | unibus/nats | better |"
        print "|----------------------------------------|---------------------------------|---------------------------------|-------------|--------|"
    }
    function rawlines(mode, keys,   i, k, t, line, f, j, nf, nk) {
        print ""
        print "per run:"
        for (i = 1; i <= nraw; i++) {
            nf = split(raw[i], f, " ")
            if (f[3] != mode && !(mode == "rss" && f[3] ~ /^rss-/)) continue
            line = sprintf("  run %s %-6s %-8s", f[1], f[2], f[3])
            if (raw[i] ~ / PROBLEM /) { print line " " substr(raw[i], index(raw[i], "PROBLEM")); continue }
            nk = split(keys, k, " ")
            for (t = 1; t <= nk; t++) for (j = 4; j <= nf; j++) if (index(f[j], k[t] "=") == 1) line = line " " f[j]
            print line
        }
    }
    /^#/ { next }
    { raw[++nraw] = $0 }
    /PROBLEM/ { problems = problems "\n  " $0; next }
    $3 == "pubsub" { add($2 SUBSEP "ps", field("msgs_s")); add($2 SUBSEP "ps_lost", field("lost"));
                     add($2 SUBSEP "ps_cpu", field("server_cpu_s") / msgs * 1e6); add($2 SUBSEP "ps_rss", field("rss_peak_mb")) }
    $3 == "fanout" { add($2 SUBSEP "fo", field("delivered_msgs_s")); add($2 SUBSEP "fo_lost", field("lost"));
                     add($2 SUBSEP "fo_cpu", field("server_cpu_s") / (fan * subs) * 1e6); add($2 SUBSEP "fo_rss", field("rss_peak_mb")) }
    $3 == "reqrep" { add($2 SUBSEP "p50", field("p50_us")); add($2 SUBSEP "p90", field("p90_us")); add($2 SUBSEP "p99", field("p99_us"));
                     add($2 SUBSEP "rr_err", field("errors")); add($2 SUBSEP "rr_rss", field("rss_peak_mb"))
                     add($2 SUBSEP "rr_cpu", field("server_cpu_s") / (reqs + warmup) * 1e6) }
    $3 == "rss-idle" { add($2 SUBSEP "idle", field("rss_mb")) }
    $3 == "rss-end" { add($2 SUBSEP "hwm", field("hwm_mb")); add($2 SUBSEP "after", field("rss_mb")) }
    $3 ~ /^(pubsub|fanout|reqrep)$/ { r = field("auth_retries") + 0; if (r > 0) retries[$2] += r }
    END {
        printf "### pub/sub: 1 publisher, 1 subscriber, %s x 128 B, end to end\n\n", commas(msgs)
        header()
        row("msgs/s (first publish to last receipt)", "ps", "int", "higher")
        row("msgs lost (must be 0)", "ps_lost", "int", "0")
        row("server CPU-s per million msgs", "ps_cpu", "cpu", "lower")
        row("server RSS peak in this mode (MB)", "ps_rss", "mb", "lower")
        rawlines("pubsub", "msgs_s lost dropped pub_msgs_s server_cpu_s client_cpu_s rss_peak_mb slow_consumer auth_retries")
        printf "\n### fan-out: 1 publisher, %d subscribers, %s x 128 B published (%s deliveries)\n\n", subs, commas(fan), commas(fan * subs)
        header()
        row("delivered msgs/s", "fo", "int", "higher")
        row("msgs lost (must be 0)", "fo_lost", "int", "0")
        row("server CPU-s per million deliveries", "fo_cpu", "cpu", "lower")
        row("server RSS peak in this mode (MB)", "fo_rss", "mb", "lower")
        rawlines("fanout", "delivered_msgs_s lost dropped pub_msgs_s server_cpu_s client_cpu_s rss_peak_mb slow_consumer auth_retries")
        printf "\n### request/reply: %s sequential requests of 128 B\n\n", commas(reqs)
        header()
        row("latency p50 (us)", "p50", "us", "lower")
        row("latency p90 (us)", "p90", "us", "lower")
        row("latency p99 (us)", "p99", "us", "lower")
        row("failed requests (must be 0)", "rr_err", "int", "0")
        row("server CPU per request (us)", "rr_cpu", "us", "lower")
        row("server RSS peak in this mode (MB)", "rr_rss", "mb", "lower")
        rawlines("reqrep", "p50_us p90_us p99_us p999_us max_us errors server_cpu_s rss_peak_mb auth_retries")
        print "\n### server memory (/proc/<pid>/status)\n"
        header()
        row("VmRSS idle after start (MB)", "idle", "mb", "lower")
        row("VmHWM over the run (MB)", "hwm", "mb", "lower")
        row("VmRSS idle after the load (MB)", "after", "mb", "lower")
        rawlines("rss", "rss_mb hwm_mb")
        for (t in retries) printf "\nnats.c #705: %s needed %d connect retries (a signature starting with a zero byte is dropped by nats.c 3.4)\n", t, retries[t]
        if (problems != "") printf "\nproblems:%s\n", problems
    }' "$RAW"
}

for run in $(seq 1 "$RUNS"); do run_one "$run"; done

echo "# loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RAW"
TABLE=$OUT/table.md
{
    echo "bench-bus $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) vCPU ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)), runs=$RUNS (median, min-max over runs), $(sed -n 's/^# nats-server /nats-server /p' "$RAW"), unibus $(sed -n 's/^# unibus //p' "$RAW")"
    echo "loopback TCP round trip (us): $RTT"
    echo "load average: $(grep '^# loadavg' "$RAW" | sed 's/# loadavg //' | tr '\n' ';' | sed 's/;$//')"
    echo
    report
} >"$TABLE"
echo
cat "$TABLE"
echo
log "done; raw results in $RAW, table in $TABLE"
