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

# Waits (10 s at most) for a line matching $2 in file $1; on time-out prints the file
# and dies naming $3.
wait_for_line() {  # file, pattern, what
    for _ in $(seq 200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
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
