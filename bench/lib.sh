# Sourced by the bench scripts: what every one of them needs the same way.
# The caller defines `die` (message to stderr, exit 1) and the array `PIDS` (processes
# its EXIT trap stops).

# Bounds the whole run: after $2 seconds, TERMs the calling script and its other children
# (so a client in flight does not delay the caller's trap, which then cleans up). $1 names
# the script in the message. The watchdog's pid goes into PIDS.
start_watchdog() {  # name, seconds
    local name=$1 seconds=$2
    (
        trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
        sleep "$seconds" & sleeper=$!
        wait "$sleeper" || exit 0
        trap - TERM
        echo "$name: watchdog: over ${seconds}s, aborting" >&2
        kill -TERM $$ 2>/dev/null
        for child in $(pgrep -P $$); do
            [[ $child != "$BASHPID" ]] && kill -TERM "$child" 2>/dev/null
        done
        exit 0
    ) &
    PIDS+=($!)
}

# Waits ($4 seconds at most, default 10) for a line matching $2 in file $1; on time-out
# prints the file and dies naming $3.
wait_for_line() {  # file, pattern, what, [seconds]
    for _ in $(seq $((${4:-10} * 20))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
    cat "$1" >&2 || true
    die "timed out waiting for $3"
}

# Sets PIPEGATE_BIN: as given, or built from this tree (a no-op when up to date; always
# run, so a binary left over from an older tree is never measured silently). $1 names
# the script in the message. The caller sets ROOT.
build_pipegate() {  # name
    if [[ -z ${PIPEGATE_BIN:-} ]]; then
        PIPEGATE_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/pipegate"
        echo "$1: cargo build --release -p pipegate" >&2
        (cd "$ROOT" && cargo build --release --quiet -p pipegate) >&2 || die "cargo build failed"
    fi
    [[ -x $PIPEGATE_BIN ]] || die "no pipegate binary at $PIPEGATE_BIN"
}

# Stops every process in PIDS: TERM to all, then up to $1 seconds (default 3) for each to
# exit before KILL; reaps them.
stop_pids() {  # [grace seconds]
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq $(( ${1:-3} * 10 ))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

# Whole-machine busy percentage over half a second (everything: this run and anybody else).
cpu_busy() {
    local a b
    a=$(head -n1 /proc/stat); sleep 0.5; b=$(head -n1 /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN {
        split(a, x); split(b, y); t = 0; i = 0
        for (k = 2; k <= 9; k++) t += y[k] - x[k]
        i = (y[5] - x[5]) + (y[6] - x[6])
        printf "%.0f", (t > 0 ? 100 * (1 - i / t) : 0) }'
}

# Before a measurement step named $1: waits (within QUIET_BUDGET seconds for the whole run,
# counted from the first call) until other load drops below QUIET_PCT% busy, and records
# the load the step started with in BG_LOAD.
BG_LOAD=()
settle() {  # step name
    local busy
    : "${QUIET_START:=$SECONDS}"
    busy=$(cpu_busy)
    while (( busy > QUIET_PCT && SECONDS - QUIET_START < QUIET_BUDGET )); do busy=$(cpu_busy); done
    BG_LOAD+=("$1:${busy}%/la$(cut -d' ' -f1 /proc/loadavg)")
}

# The median of the numbers on stdin (whitespace-separated).
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# Sets GIT_COMMIT: the tree's HEAD, marked when tracked files differ from it.
git_commit() {
    GIT_COMMIT=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
    if [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
        GIT_COMMIT="$GIT_COMMIT (tracked files modified)"
    fi
}

# Prints the load each step started with (BG_LOAD, from settle) and a WARNING if any step
# started over QUIET_PCT% busy. $1 names the steps ("step", "round").
report_load() {  # what a step is called
    local x v noisy=0
    echo "load at the start of each $1 (machine busy %, 1-min loadavg): ${BG_LOAD[*]}"
    for x in "${BG_LOAD[@]}"; do v=${x#*:}; v=${v%%\%*}; (( v > QUIET_PCT )) && noisy=1; done
    (( noisy )) && echo "WARNING: other load was running at the start of some ${1}s (over ${QUIET_PCT}% busy); those figures are noisy"
    return 0
}
