#!/usr/bin/env bash
# PTY session benchmark: keystroke echo latency and output throughput of a program on a
# terminal, reached five ways, side by side in one run:
#   local         the program on a local PTY (Python pty.fork), read from the master
#   ws-unix       the agent's WebSocket API directly (a Python client, pipegate.pty.v1) on the
#                 agent's Unix socket: pipegate serve --listen unix://…/agent.sock
#   ws-bridge     the same client through a bridge in front of the agent:
#                 pipegate serve --listen unix://…/bridge.sock --upstream unix://…/agent.sock
#   shell-unix    `pipegate shell unix://…/agent.sock -- PROGRAM` itself, run on a local PTY:
#                 local PTY -> pipegate shell -> socket -> agent -> remote PTY, and back
#   shell-bridge  the same through the bridge
# Latency: PROGRAM is `sh -c 'echo READY; exec cat'` in the terminal's normal mode (canonical,
# echo on); one sample = write one byte, wait for its echo (from the remote terminal's line
# discipline). Throughput: PROGRAM is `cat FILE` (FILE_MIB MiB of base64 text lines), timed
# until the end of output; the received byte count is checked. Ratios are to `local`.
# bench/pty_client.py (Python 3, standard library only) is the client for every path.
# A measurement, not a test: exits 0 (non-zero only if the harness itself fails).
#
# Environment:
#   LAT_COUNT     keystrokes timed per path                       (default 2000)
#   LAT_WARMUP    extra untimed keystrokes first                  (default 100)
#   FILE_MIB      size of the file cat prints, MiB                (default 256)
#   CAT_ROUNDS    cat runs per path, median reported              (default 3)
#   PATHS         which paths                (default "local ws-unix ws-bridge shell-unix shell-bridge")
#   PIPEGATE_BIN  pipegate binary used as is (default: cargo build --release -p pipegate, then
#                 $CARGO_TARGET_DIR or ./target /release/pipegate)
#   PYTHON        Python 3 interpreter                            (default python3)
#   MAX_SECONDS   watchdog: abort the run after this long         (default 900)
#   QUIET_BUDGET  total seconds the run may spend waiting, before each step, for other CPU
#                 load to drop below QUIET_PCT% busy               (default 90; 0 = never wait)
#   QUIET_PCT     what counts as quiet                            (default 10)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
LAT_COUNT=${LAT_COUNT:-2000}
LAT_WARMUP=${LAT_WARMUP:-100}
FILE_MIB=${FILE_MIB:-256}
CAT_ROUNDS=${CAT_ROUNDS:-3}
PATHS_LIST=${PATHS:-local ws-unix ws-bridge shell-unix shell-bridge}
PYTHON=${PYTHON:-python3}
MAX_SECONDS=${MAX_SECONDS:-900}
QUIET_BUDGET=${QUIET_BUDGET:-90}
QUIET_PCT=${QUIET_PCT:-10}
CLIENT="$HERE/pty_client.py"
CMDLINE="LAT_COUNT=$LAT_COUNT LAT_WARMUP=$LAT_WARMUP FILE_MIB=$FILE_MIB CAT_ROUNDS=$CAT_ROUNDS"
[[ -n ${PATHS:-} ]] && CMDLINE+=" PATHS=\"$PATHS_LIST\""
[[ -n ${TOKIO_WORKER_THREADS:-} ]] && CMDLINE+=" TOKIO_WORKER_THREADS=$TOKIO_WORKER_THREADS"
[[ -n ${PIPEGATE_BIN:-} ]] && CMDLINE+=" PIPEGATE_BIN=$PIPEGATE_BIN"
CMDLINE+=" $0${*:+ $*}"

die() { echo "pty.sh: $*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
command -v "$PYTHON" >/dev/null || die "$PYTHON is not installed"
read -r -a PATHS_ARR <<<"$PATHS_LIST"
for p in "${PATHS_ARR[@]}"; do
    case $p in local|ws-unix|ws-bridge|shell-unix|shell-bridge) ;; *) die "unknown path $p in PATHS" ;; esac
done

build_pipegate pty.sh

# ------------------------------------------------------------------ processes & cleanup
WORK=$(mktemp -d /tmp/pgpty.XXXXXX)
PIDS=()
cleanup() {
    stop_pids 5
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo "pty.sh: interrupted" >&2; exit 130' INT TERM

# The whole run is bounded (bench/lib.sh).
start_watchdog pty.sh "$MAX_SECONDS"


# ------------------------------------------------------------------ the agent and the bridge
mkdir -m 0700 "$WORK/s"
AGENT_SOCK="$WORK/s/agent.sock"
BRIDGE_SOCK="$WORK/s/bridge.sock"
PG_OPTS=(--no-discovery)
AGENT_CMD=("$PIPEGATE_BIN" --log warn serve --name "ptybench-agent-$$" "${PG_OPTS[@]}"
    --listen "unix://$AGENT_SOCK")
BRIDGE_CMD=("$PIPEGATE_BIN" --log warn serve --name "ptybench-bridge-$$" "${PG_OPTS[@]}"
    --listen "unix://$BRIDGE_SOCK" --upstream "unix://$AGENT_SOCK")
# A neutral environment for the sessions' programs (the agent passes its own on).
env -i PATH=/usr/bin:/bin HOME="$WORK" "${AGENT_CMD[@]}" >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
PIDS+=($!)
wait_for_line "$WORK/agent.log" '^pipegate: listening on' "the agent to start"
"${BRIDGE_CMD[@]}" >"$WORK/bridge.log" 2>&1 &
BRIDGE_PID=$!
PIDS+=($!)
wait_for_line "$WORK/bridge.log" '^pipegate: listening on' "the bridge to start"

# The file cat prints: base64 text, 76 characters and a newline per line (a log, say).
FILE="$WORK/big.txt"
head -c $(( FILE_MIB * 1048576 * 3 / 4 * 76 / 77 )) /dev/urandom | base64 -w 76 >"$FILE"
FILE_BYTES=$(stat -c %s "$FILE")

# How each path is reached (arguments to pty_client.py after the measurement name).
declare -A ARGS=(
    [local]="local"
    [ws-unix]="ws --connect unix:$AGENT_SOCK"
    [ws-bridge]="ws --connect unix:$BRIDGE_SOCK"
    [shell-unix]="shell --pipegate $PIPEGATE_BIN --endpoint unix://$AGENT_SOCK"
    [shell-bridge]="shell --pipegate $PIPEGATE_BIN --endpoint unix://$BRIDGE_SOCK"
)
# Every path works before anything is measured: a short latency run and a small cat.
head -c 100000 "$FILE" >"$WORK/small.txt"
for p in "${PATHS_ARR[@]}"; do
    # shellcheck disable=SC2086  # ARGS are word-split on purpose
    timeout 60 "$PYTHON" "$CLIENT" latency ${ARGS[$p]} --count 20 --warmup 5 >/dev/null \
        || die "path $p: the keystroke check failed"
    # shellcheck disable=SC2086
    timeout 60 "$PYTHON" "$CLIENT" cat ${ARGS[$p]} --file "$WORK/small.txt" >/dev/null \
        || die "path $p: the cat check failed"
done

# ------------------------------------------------------------------ CPU accounting, load
# User+system clock ticks of one process itself (not its children: the agent's children
# are the sessions' programs).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
TCK=$(getconf CLK_TCK)
json() {  # json-text, field
    "$PYTHON" -c 'import json,sys; v=json.loads(sys.argv[1])[sys.argv[2]]; print(("%.1f" % v) if isinstance(v, float) else v)' "$1" "$2"
}

# ------------------------------------------------------------------ facts
git_commit
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== PTY session benchmark, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "command:   $CMDLINE"
echo "machine:   nproc=$(nproc), kernel $(uname -sr), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "pipegate:  $("$PIPEGATE_BIN" --version), tree $GIT_COMMIT; binary $PIPEGATE_BIN built $(date -u -r "$PIPEGATE_BIN" '+%Y-%m-%d %H:%M UTC')"
echo "agent:     ${AGENT_CMD[*]}"
echo "bridge:    ${BRIDGE_CMD[*]}"
echo "tools:     $("$PYTHON" --version 2>&1), $(/bin/sh --version 2>/dev/null | head -n1 || readlink -f /bin/sh), $(/bin/cat --version | head -n1)"
echo "file:      $FILE_BYTES bytes of base64 lines ($(( FILE_BYTES / 77 )) lines)"
echo "loadavg:   $LOAD_BEFORE before starting; busy now $(cpu_busy)% of all CPUs"
echo

# ------------------------------------------------------------------ keystroke latency
declare -A P50 P99 MEAN
echo "keystroke echo: $LAT_COUNT keystrokes per path (+$LAT_WARMUP warm-up), µs"
for p in "${PATHS_ARR[@]}"; do
    settle "lat-$p"
    # shellcheck disable=SC2086
    out=$(timeout 120 "$PYTHON" "$CLIENT" latency ${ARGS[$p]} --count "$LAT_COUNT" \
        --warmup "$LAT_WARMUP") || die "latency run via $p failed"
    P50[$p]=$(json "$out" p50_us); P99[$p]=$(json "$out" p99_us); MEAN[$p]=$(json "$out" mean_us)
    echo "  $p: p50=${P50[$p]} p90=$(json "$out" p90_us) p99=${P99[$p]} max=$(json "$out" max_us) mean=${MEAN[$p]}"
done
echo

# ------------------------------------------------------------------ cat throughput
declare -A CAT CPU
echo "cat throughput: $CAT_ROUNDS rounds of cat $FILE_MIB MiB per path, MiB/s (pipegate CPU s/GiB)"
for round in $(seq "$CAT_ROUNDS"); do
    settle "cat$round"
    line="  round $round:"
    for p in "${PATHS_ARR[@]}"; do
        a0=$(cpu_ticks "$AGENT_PID"); b0=$(cpu_ticks "$BRIDGE_PID")
        # shellcheck disable=SC2086
        out=$(timeout 300 "$PYTHON" "$CLIENT" cat ${ARGS[$p]} --file "$FILE") \
            || die "cat via $p failed"
        a1=$(cpu_ticks "$AGENT_PID"); b1=$(cpu_ticks "$BRIDGE_PID")
        mib=$(json "$out" mib_s)
        CAT[$p]+="$mib "
        # pipegate's processes: the agent, the bridge, and pipegate shell (its rusage).
        cpu="-"
        if [[ $p != local ]]; then
            cpu=$("$PYTHON" -c 'import json,sys
d = json.loads(sys.argv[1]); ticks = int(sys.argv[2]) / int(sys.argv[3])
print("%.2f" % ((ticks + d["child_cpu_s"]) / (d["file_bytes"] / 2**30)))' \
                "$out" $(( a1 - a0 + b1 - b0 )) "$TCK")
            CPU[$p]+="$cpu "
        fi
        line+=" $p=$mib($cpu)"
    done
    echo "$line"
done
echo

# ------------------------------------------------------------------ table
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
declare -A TPUT PCPU
for p in "${PATHS_ARR[@]}"; do
    TPUT[$p]=$(echo "${CAT[$p]}" | median)
    PCPU[$p]=$([[ -n ${CPU[$p]:-} ]] && echo "${CPU[$p]}" | median || echo -)
done
HAVE_LOCAL=0
[[ " ${PATHS_ARR[*]} " == *" local "* ]] && HAVE_LOCAL=1
printf '%-13s %9s %9s %10s %10s %10s %9s %18s\n' path "p50 µs" "p99 µs" "p50/local" "p99/local" \
    "cat MiB/s" "x local" "pipegate CPU s/GiB"
for p in "${PATHS_ARR[@]}"; do
    if (( HAVE_LOCAL )); then
        r50=$(ratio "${P50[$p]}" "${P50[local]}"); r99=$(ratio "${P99[$p]}" "${P99[local]}")
        rt=$(ratio "${TPUT[$p]}" "${TPUT[local]}")
    else
        r50=-; r99=-; rt=-
    fi
    printf '%-13s %9s %9s %10s %10s %10s %9s %18s\n' "$p" "${P50[$p]}" "${P99[$p]}" "$r50" "$r99" \
        "${TPUT[$p]}" "$rt" "${PCPU[$p]}"
done
echo "(cat MiB/s: file bytes per second, median of $CAT_ROUNDS rounds; pipegate CPU: user+sys seconds"
echo " of the agent, the bridge and pipegate shell per GiB of the file, median round)"
echo
report_load step
echo "loadavg: $LOAD_BEFORE before, $(cut -d' ' -f1-3 /proc/loadavg) after; elapsed ${SECONDS}s"
exit 0
