#!/usr/bin/env bash
# Raw relay benchmark: the same work, on loopback, side by side in one run, done
#   direct        client -> upstream
#   socat         client -> socat TCP-LISTEN:P,fork,reuseaddr TCP:127.0.0.1:UP -> upstream
#   pipegate-tcp  client -> pipegate serve --mode raw --listen tcp://127.0.0.1:P -> upstream
#   pipegate-unix client -> pipegate serve --mode raw --listen unix:///tmp/.../b.sock -> upstream
# Measures bulk throughput (client streams zeros into a sink) and new-connection latency
# (connect + 1 byte + 1 byte echo + close), then checks the targets. A measurement, not a
# test: exits 0 whether targets are met or missed (non-zero only if the harness fails).
#
# Environment:
#   BULK_BYTES     bytes per bulk transfer                  (default 1073741824 = 1 GiB)
#   BULK_ROUNDS    bulk transfers per path, median reported (default 3)
#   LAT_COUNT      new connections per path                 (default 2000)
#   LAT_WARMUP     extra uncounted connections per path     (default 50)
#   PIPEGATE_BIN   pipegate binary to use as is (default: `cargo build --release -p pipegate`
#                  first, then $CARGO_TARGET_DIR/release/pipegate, or ./target/release/pipegate)
#   TOKIO_WORKER_THREADS  passed through to pipegate (tokio's runtime reads it); for experiments
#   PYTHON         Python 3 interpreter                     (default python3)
#   MAX_SECONDS    watchdog: abort the run after this long  (default 180)
#   QUIET_BUDGET   on a shared machine: total seconds the run may spend waiting, before each
#                  measurement step, for other CPU load to drop below QUIET_PCT% (default 60, 0 = never wait)
#   QUIET_PCT      what counts as quiet: whole-machine CPU busy percentage (default 10)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BULK_BYTES=${BULK_BYTES:-1073741824}
BULK_ROUNDS=${BULK_ROUNDS:-3}
LAT_COUNT=${LAT_COUNT:-2000}
LAT_WARMUP=${LAT_WARMUP:-50}
PYTHON=${PYTHON:-python3}
MAX_SECONDS=${MAX_SECONDS:-180}
QUIET_BUDGET=${QUIET_BUDGET:-60}
QUIET_PCT=${QUIET_PCT:-10}
LOADGEN="$HERE/loadgen.py"
CMDLINE="${TOKIO_WORKER_THREADS:+TOKIO_WORKER_THREADS=$TOKIO_WORKER_THREADS }BULK_BYTES=$BULK_BYTES BULK_ROUNDS=$BULK_ROUNDS LAT_COUNT=$LAT_COUNT LAT_WARMUP=$LAT_WARMUP${PIPEGATE_BIN:+ PIPEGATE_BIN=$PIPEGATE_BIN} $0${*:+ $*}"

die() { echo "raw_relay.sh: $*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
command -v socat >/dev/null || die "socat is not installed"
command -v "$PYTHON" >/dev/null || die "$PYTHON is not installed"

build_pipegate raw_relay.sh

# ------------------------------------------------------------------ processes & cleanup
WORK=$(mktemp -d /tmp/pgbench.XXXXXX)
PIDS=()
cleanup() {
    local pid
    # socat forks one child per connection; end any still running (children of our socat only).
    if [[ -n ${SOCAT_PID:-} ]]; then
        for pid in $(pgrep -P "$SOCAT_PID" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    fi
    stop_pids 1
    rm -rf "$WORK"
}
SOCAT_PID=
trap cleanup EXIT
trap 'echo "raw_relay.sh: interrupted" >&2; exit 130' INT TERM

# The whole run is bounded (bench/lib.sh).
start_watchdog raw_relay.sh "$MAX_SECONDS"

wait_for_file() {  # path, what
    for _ in $(seq 100); do [[ -s $1 ]] && return 0; sleep 0.05; done
    die "timed out waiting for $2"
}

# Two pipegate instances run side by side: give each its own instance name, and keep them
# out of the user's discovery records when this build has discovery.
PG_OPTS=()
if "$PIPEGATE_BIN" serve --help 2>/dev/null | grep -q -- '--no-discovery'; then
    PG_OPTS+=(--no-discovery)
fi

# ------------------------------------------------------------------ start everything
"$PYTHON" "$LOADGEN" server --listen tcp:127.0.0.1:0 --port-file "$WORK/upstream.port" \
    >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
wait_for_file "$WORK/upstream.port" "the upstream server"
UP=$(cat "$WORK/upstream.port")

SOCAT_PORT=$("$PYTHON" "$LOADGEN" freeport)
socat TCP-LISTEN:"$SOCAT_PORT",bind=127.0.0.1,fork,reuseaddr TCP:127.0.0.1:"$UP" \
    >"$WORK/socat.log" 2>&1 &
SOCAT_PID=$!
PIDS+=($!)

"$PIPEGATE_BIN" --log warn serve --mode raw --name "bench-tcp-$$" "${PG_OPTS[@]}" \
    --listen tcp://127.0.0.1:0 --upstream tcp://127.0.0.1:"$UP" >"$WORK/pg-tcp.log" 2>&1 &
PG_TCP_PID=$!
PIDS+=($!)
wait_for_line "$WORK/pg-tcp.log" '^pipegate: listening on' "pipegate (tcp) to start"
PG_TCP=$(sed -n 's|^pipegate: listening on tcp://\(.*\)$|\1|p' "$WORK/pg-tcp.log" | head -n1)

mkdir -m 0700 "$WORK/s"
SOCK="$WORK/s/b.sock"
"$PIPEGATE_BIN" --log warn serve --mode raw --name "bench-unix-$$" "${PG_OPTS[@]}" \
    --listen "unix://$SOCK" --upstream tcp://127.0.0.1:"$UP" >"$WORK/pg-unix.log" 2>&1 &
PG_UNIX_PID=$!
PIDS+=($!)
wait_for_line "$WORK/pg-unix.log" '^pipegate: listening on' "pipegate (unix) to start"

# socat has no "ready" line; wait until its port accepts.
for _ in $(seq 100); do
    if "$PYTHON" -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1).close()" \
        "$SOCAT_PORT" 2>/dev/null; then break; fi
    sleep 0.05
done

PATHS=(direct socat pipegate-tcp pipegate-unix)
declare -A PROXY_PID=([socat]=$SOCAT_PID [pipegate-tcp]=$PG_TCP_PID [pipegate-unix]=$PG_UNIX_PID)
declare -A EP=(
    [direct]="tcp:127.0.0.1:$UP"
    [socat]="tcp:127.0.0.1:$SOCAT_PORT"
    [pipegate-tcp]="tcp:$PG_TCP"
    [pipegate-unix]="unix:$SOCK"
)

# ------------------------------------------------------------------ CPU accounting
# CPU time (clock ticks) used so far by a process and its reaped children
# (socat's per-connection children are reaped by the listening socat).
cpu_ticks() { awk '{ print $14 + $15 + $16 + $17 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
TCK=$(getconf CLK_TCK)

# ------------------------------------------------------------------ facts
git_commit
echo "== raw relay benchmark, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "command:   $CMDLINE"
echo "machine:   nproc=$(nproc), kernel $(uname -sr), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "pipegate:  $("$PIPEGATE_BIN" --version), repo HEAD $GIT_COMMIT"
echo "binary:    $PIPEGATE_BIN (built $(date -u -r "$PIPEGATE_BIN" '+%Y-%m-%d %H:%M UTC'))"
[[ -n ${TOKIO_WORKER_THREADS:-} ]] && echo "env:       TOKIO_WORKER_THREADS=$TOKIO_WORKER_THREADS (pipegate's runtime threads)"
echo "tools:     $(socat -V 2>/dev/null | sed -n 's/^socat version \([^ ]*\).*/socat \1/p'), $("$PYTHON" --version 2>&1)"
echo "loadavg:   $(cut -d' ' -f1-3 /proc/loadavg) before starting; nice $(nice)"
echo "endpoints: upstream tcp:127.0.0.1:$UP; socat :$SOCAT_PORT; pipegate tcp://$PG_TCP; pipegate unix://$SOCK"
echo

# ------------------------------------------------------------------ bulk throughput
# Rounds are interleaved across paths so drift (thermal, noisy neighbours) hits all alike.
declare -A BULK PCPU
echo "bulk: $BULK_ROUNDS x $BULK_BYTES bytes per path (MiB/s per round)"
for round in $(seq "$BULK_ROUNDS"); do
    settle "bulk$round"
    line="  round $round:"
    for p in "${PATHS[@]}"; do
        pid=${PROXY_PID[$p]:-}
        [[ -n $pid ]] && t0=$(cpu_ticks "$pid")
        out=$(timeout 60 "$PYTHON" "$LOADGEN" bulk --connect "${EP[$p]}" --bytes "$BULK_BYTES") \
            || die "bulk transfer via $p failed"
        if [[ -n $pid ]]; then
            [[ $p == socat ]] && sleep 0.3  # let socat reap the connection's child
            PCPU[$p]+="$(awk -v t=$(( $(cpu_ticks "$pid") - t0 )) -v hz="$TCK" -v n="$BULK_BYTES" \
                'BEGIN { printf "%.2f", t / hz / (n / 1073741824) }') "
        fi
        v=$("$PYTHON" -c 'import json,sys; print("%.1f" % json.loads(sys.argv[1])["mib_s"])' "$out")
        BULK[$p]+="$v "
        line+=" $p=$v"
    done
    echo "$line"
done
declare -A TPUT
declare -A PROXY_CPU=([direct]=-)
for p in "${PATHS[@]}"; do
    TPUT[$p]=$(echo "${BULK[$p]}" | median)
    [[ -n ${PCPU[$p]:-} ]] && PROXY_CPU[$p]=$(echo "${PCPU[$p]}" | median)
done

# ------------------------------------------------------------------ new-connection latency
declare -A P50 P99
echo "latency: $LAT_COUNT sequential connections per path (+$LAT_WARMUP warm-up)"
for p in "${PATHS[@]}"; do
    settle "lat-$p"
    out=$(timeout 90 "$PYTHON" "$LOADGEN" latency --connect "${EP[$p]}" --count "$LAT_COUNT" \
        --warmup "$LAT_WARMUP") || die "latency run via $p failed"
    read -r P50[$p] P99[$p] < <("$PYTHON" -c 'import json,sys; d=json.loads(sys.argv[1]); print("%.1f %.1f" % (d["p50_us"], d["p99_us"]))' "$out")
    echo "  $p: p50=${P50[$p]} p99=${P99[$p]} µs"
done
echo

# ------------------------------------------------------------------ table & targets
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
printf '%-14s %10s %9s %10s %10s %11s %17s\n' path "MiB/s" "x direct" "p50 µs" "p99 µs" \
    "p50/direct" "proxy CPU s/GiB"
for p in "${PATHS[@]}"; do
    printf '%-14s %10s %9s %10s %10s %11s %17s\n' "$p" "${TPUT[$p]}" \
        "$(ratio "${TPUT[$p]}" "${TPUT[direct]}")" "${P50[$p]}" "${P99[$p]}" \
        "$(ratio "${P50[$p]}" "${P50[direct]}")" "${PROXY_CPU[$p]}"
done
echo "(MiB/s: median of $BULK_ROUNDS rounds; proxy CPU: user+sys seconds the proxy process spent per GiB relayed)"
direct_gbs=$(awk -v m="${TPUT[direct]}" 'BEGIN { printf "%.2f", m * 1048576 / 1e9 }')
if awk -v g="$direct_gbs" 'BEGIN { exit !(g < 3) }'; then
    echo "note: direct reached only $direct_gbs GB/s (< 3 GB/s): the load generator or a busy machine, not the proxies, may set the ceiling"
else
    echo "direct: $direct_gbs GB/s (>= 3 GB/s: the Python load generator is not the bottleneck)"
fi
echo

check() {  # label, awk condition, detail
    if awk "BEGIN { exit !($2) }"; then echo "PASS  $1  ($3)"; else echo "MISS  $1  ($3)"; fi
}
pg=${TPUT[pipegate-tcp]}; so=${TPUT[socat]}; di=${TPUT[direct]}
check "pipegate-tcp throughput >= 2x socat" "$pg >= 2 * $so" \
    "$pg vs $so MiB/s = $(ratio "$pg" "$so")x"
check "pipegate-tcp throughput >= 0.6x direct" "$pg >= 0.6 * $di" \
    "$pg vs $di MiB/s = $(ratio "$pg" "$di")x"
check "pipegate-tcp new-connection p50 <= 1/4 socat" "${P50[pipegate-tcp]} * 4 <= ${P50[socat]}" \
    "${P50[pipegate-tcp]} vs ${P50[socat]} µs = $(ratio "${P50[pipegate-tcp]}" "${P50[socat]}")x"
report_load step
echo "after run: loadavg $(cut -d' ' -f1-3 /proc/loadavg); elapsed ${SECONDS}s"
exit 0
