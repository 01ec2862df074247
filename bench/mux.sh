#!/usr/bin/env bash
# Mux benchmark: reaching a Windows named pipe from Linux, the WSL way, on one machine
# with Wine standing in for Windows. Two paths to the same pipe, side by side in one run:
#
#   exec-per-conn  client -> socat UNIX-LISTEN,fork EXEC:"wine pipegate.exe relay npipe://P"
#                  (one Windows process per connection: today's socat + npiperelay pattern)
#   mux            client -> pipegate serve --mode raw --via exec:"wine pipegate.exe mux
#                  --allow npipe://P" (one Windows helper for every connection)
#
# Behind the pipe: pipegate.exe serve --mode raw --listen npipe://P (under Wine) forwarding
# to a Linux TCP server (Python, below), the same for both paths. A named pipe has no
# half-close, so the server ends each exchange by closing: an echo connection gets its
# byte back and is closed; a bulk connection sends "B" + an 8-byte length + that many
# bytes, gets the count back, and is closed.
#
# Measures new-connection latency (connect, 1 byte, its echo; sequential) and bulk
# throughput, then checks the target: mux new-connection p50 at least 50x lower than
# exec-per-conn. A measurement, not a test: exits 0 whether the target is met or missed
# (non-zero only if the harness fails).
#
# Environment:
#   LAT_COUNT_EXEC  new connections through exec-per-conn        (default 40)
#   LAT_COUNT_MUX   new connections through mux                  (default 1000)
#   LAT_WARMUP      extra uncounted connections per path         (default 5)
#   BULK_BYTES      bytes per bulk transfer                      (default 268435456 = 256 MiB)
#   BULK_ROUNDS     bulk transfers per path, median reported     (default 3)
#   PIPEGATE_BIN    Linux pipegate (default: $CARGO_TARGET_DIR or ./target, release, built if missing)
#   PIPEGATE_EXE    Windows pipegate.exe (default: the same, x86_64-pc-windows-gnu release, built if missing)
#   PYTHON          Python 3 interpreter                         (default python3)
#   MAX_SECONDS     watchdog: abort the run after this long      (default 600)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
LAT_COUNT_EXEC=${LAT_COUNT_EXEC:-40}
LAT_COUNT_MUX=${LAT_COUNT_MUX:-1000}
LAT_WARMUP=${LAT_WARMUP:-5}
BULK_BYTES=${BULK_BYTES:-268435456}
BULK_ROUNDS=${BULK_ROUNDS:-3}
PYTHON=${PYTHON:-python3}
MAX_SECONDS=${MAX_SECONDS:-600}
WIN_TARGET=x86_64-pc-windows-gnu
CMDLINE="LAT_COUNT_EXEC=$LAT_COUNT_EXEC LAT_COUNT_MUX=$LAT_COUNT_MUX BULK_BYTES=$BULK_BYTES BULK_ROUNDS=$BULK_ROUNDS $0${*:+ $*}"

die() { echo "mux.sh: $*" >&2; exit 1; }
command -v socat >/dev/null || die "socat is not installed"
command -v wine >/dev/null || die "wine is not installed (scripts/test installs it)"
command -v "$PYTHON" >/dev/null || die "$PYTHON is not installed"
# shellcheck source=scripts/wine-env.sh
. "$ROOT/scripts/wine-env.sh"
WINE_RUN="$ROOT/scripts/wine-run"

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [[ -z ${PIPEGATE_BIN:-} ]]; then
    PIPEGATE_BIN="$TARGET_DIR/release/pipegate"
    if [[ ! -x $PIPEGATE_BIN ]]; then
        echo "building $PIPEGATE_BIN (cargo build --release -p pipegate)" >&2
        (cd "$ROOT" && cargo build --release -p pipegate) >&2
    fi
fi
if [[ -z ${PIPEGATE_EXE:-} ]]; then
    PIPEGATE_EXE="$TARGET_DIR/$WIN_TARGET/release/pipegate.exe"
    if [[ ! -f $PIPEGATE_EXE ]]; then
        echo "building $PIPEGATE_EXE (cargo build --release --target $WIN_TARGET -p pipegate)" >&2
        (cd "$ROOT" && cargo build --release --target "$WIN_TARGET" -p pipegate) >&2
    fi
fi
[[ -x $PIPEGATE_BIN ]] || die "no pipegate binary at $PIPEGATE_BIN"
[[ -f $PIPEGATE_EXE ]] || die "no pipegate.exe at $PIPEGATE_EXE"
# Paths go through socat's EXEC and --via exec: unquoted.
[[ $PIPEGATE_EXE$WINE_RUN != *" "* ]] || die "paths with spaces are not supported here"

# ------------------------------------------------------------------ processes & cleanup
WORK=$(mktemp -d /tmp/pgmux.XXXXXX)
chmod 0700 "$WORK"
PIPE="pgbench-mux-$$"
PIDS=()
SOCAT_PID=
cleanup() {
    local pid
    # socat forks one child per connection, each running a Wine relay: end those first.
    if [[ -n $SOCAT_PID ]]; then
        for pid in $(pgrep -P "$SOCAT_PID" 2>/dev/null); do
            pkill -KILL -P "$pid" 2>/dev/null || true
            kill -KILL "$pid" 2>/dev/null || true
        done
    fi
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo "mux.sh: interrupted" >&2; exit 130' INT TERM

(
    trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
    sleep "$MAX_SECONDS" & sleeper=$!
    wait "$sleeper" || exit 0
    trap - TERM
    echo "mux.sh: watchdog: over ${MAX_SECONDS}s, aborting" >&2
    kill -TERM $$ 2>/dev/null
    exit 0
) &
PIDS+=($!)

wait_for_line() {  # file, pattern, what, tenths of a second
    for _ in $(seq "${4:-600}"); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    cat "$1" >&2 || true
    die "timed out waiting for $3"
}

# ------------------------------------------------------------------ the load generator
cat >"$WORK/load.py" <<'PY'
import json, socket, struct, sys, threading, time

def serve(port_file):
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1024)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(lsock.getsockname()[1]))
    import os; os.rename(port_file + ".tmp", port_file)
    def handle(conn):
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            mode = recv_exact(conn, 1)
            if mode == b"E":
                conn.sendall(recv_exact(conn, 1))
            elif mode == b"B":
                left = struct.unpack(">Q", recv_exact(conn, 8))[0]
                total = left
                buf = bytearray(1 << 20)
                while left:
                    n = conn.recv_into(buf, min(left, len(buf)))
                    if n == 0:
                        raise EOFError
                    left -= n
                conn.sendall(struct.pack(">Q", total))
        except (OSError, EOFError):
            pass
        finally:
            conn.close()
    while True:
        conn, _ = lsock.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()

def recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise EOFError
        out += chunk
    return out

def dial(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s

def latency(path, count, warmup):
    samples = []
    for i in range(count + warmup):
        t0 = time.perf_counter()
        s = dial(path)
        s.sendall(b"Ex")
        if recv_exact(s, 1) != b"x":
            raise SystemExit("bad echo")
        dt = time.perf_counter() - t0
        s.close()
        if i >= warmup:
            samples.append(dt * 1e6)
    samples.sort()
    pick = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))]
    print(json.dumps({"count": count, "p50_us": pick(0.50), "p99_us": pick(0.99),
                      "max_us": samples[-1]}))

def bulk(path, nbytes):
    s = dial(path)
    t0 = time.perf_counter()
    s.sendall(b"B" + struct.pack(">Q", nbytes))
    chunk = bytes(1 << 20)
    left = nbytes
    while left:
        k = min(left, len(chunk))
        s.sendall(chunk[:k])
        left -= k
    got = struct.unpack(">Q", recv_exact(s, 8))[0]
    dt = time.perf_counter() - t0
    s.close()
    if got != nbytes:
        raise SystemExit(f"sink got {got} of {nbytes} bytes")
    print(json.dumps({"bytes": nbytes, "seconds": dt, "mib_s": nbytes / dt / 1048576}))

cmd = sys.argv[1]
if cmd == "server":
    serve(sys.argv[2])
elif cmd == "latency":
    latency(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
elif cmd == "bulk":
    bulk(sys.argv[2], int(sys.argv[3]))
PY
load() { "$PYTHON" "$WORK/load.py" "$@"; }

# ------------------------------------------------------------------ start everything
load server "$WORK/upstream.port" >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [[ -s $WORK/upstream.port ]] && break; sleep 0.05; done
UP=$(cat "$WORK/upstream.port" 2>/dev/null) || die "the upstream server did not start"

# The Windows side's pipe server (Wine), the same for both paths.
"$WINE_RUN" "$PIPEGATE_EXE" --log warn serve --no-discovery --mode raw \
    --listen "npipe://$PIPE" --upstream "tcp://127.0.0.1:$UP" >"$WORK/pipe-server.log" 2>&1 &
PIDS+=($!)
wait_for_line "$WORK/pipe-server.log" '^pipegate: listening on' "pipegate.exe serve (Wine)"

# (a) one Windows process per connection.
# socat splits EXEC's string at ':' (npipe://…), so the command goes in a script.
mkdir -m 0700 "$WORK/s"
SOCK_EXEC="$WORK/s/exec.sock"
printf '#!/bin/sh\nexec %s %s --log warn relay npipe://%s\n' "$WINE_RUN" "$PIPEGATE_EXE" "$PIPE" \
    >"$WORK/relay.sh"
chmod +x "$WORK/relay.sh"
socat UNIX-LISTEN:"$SOCK_EXEC",fork EXEC:"$WORK/relay.sh" >"$WORK/socat.log" 2>&1 &
SOCAT_PID=$!
PIDS+=($!)

# (b) one Windows helper for every connection.
SOCK_MUX="$WORK/s/mux.sock"
"$PIPEGATE_BIN" --log warn serve --no-discovery --mode raw --listen "unix://$SOCK_MUX" \
    --upstream "npipe://$PIPE" \
    --via "exec:$WINE_RUN $PIPEGATE_EXE --log warn mux --allow npipe://$PIPE" \
    >"$WORK/mux.log" 2>&1 &
PIDS+=($!)
wait_for_line "$WORK/mux.log" '^pipegate: listening on' "pipegate serve --via (helper start included)"
for _ in $(seq 100); do [[ -S $SOCK_EXEC ]] && break; sleep 0.05; done

helpers() {  # Wine processes running the mux helper now (not serve, whose --via names it)
    local pid n=0
    for pid in $(pgrep -f "pipegate.exe --log warn mux --allow npipe://$PIPE"); do
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q ' serve ' || n=$((n + 1))
    done
    echo "$n"
}

# ------------------------------------------------------------------ facts
GIT_COMMIT=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
    GIT_COMMIT="$GIT_COMMIT (tracked files modified)"
fi
echo "== mux benchmark, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "command:   $CMDLINE"
echo "machine:   nproc=$(nproc), kernel $(uname -sr), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "pipegate:  $("$PIPEGATE_BIN" --version) @ $GIT_COMMIT ($PIPEGATE_BIN, $PIPEGATE_EXE)"
echo "tools:     $(wine --version 2>/dev/null), $(socat -V 2>/dev/null | sed -n 's/^socat version \([^ ]*\).*/socat \1/p'), $("$PYTHON" --version 2>&1)"
echo "loadavg:   $(cut -d' ' -f1-3 /proc/loadavg) before starting"
echo "pipe:      npipe://$PIPE -> tcp://127.0.0.1:$UP (pipegate.exe serve under Wine)"
echo

# mux first: the exec-per-conn run leaves Wine processes winding down behind it.
PATHS=(mux exec-per-conn)
declare -A SOCK=([exec-per-conn]=$SOCK_EXEC [mux]=$SOCK_MUX)
declare -A COUNT=([exec-per-conn]=$LAT_COUNT_EXEC [mux]=$LAT_COUNT_MUX)

# ------------------------------------------------------------------ new-connection latency
declare -A P50 P99
echo "latency: sequential new connections (connect, 1 byte, its echo), +$LAT_WARMUP warm-up each"
for p in "${PATHS[@]}"; do
    out=$(timeout $((MAX_SECONDS / 2)) "$PYTHON" "$WORK/load.py" latency "${SOCK[$p]}" \
        "${COUNT[$p]}" "$LAT_WARMUP") || die "latency run via $p failed"
    read -r P50[$p] P99[$p] < <("$PYTHON" -c 'import json,sys; d=json.loads(sys.argv[1]); print("%.0f %.0f" % (d["p50_us"], d["p99_us"]))' "$out")
    echo "  $p: ${COUNT[$p]} connections, p50=${P50[$p]} p99=${P99[$p]} µs (loadavg after: $(cut -d' ' -f1 /proc/loadavg))"
done
echo "  mux helper processes running: $(helpers)"
echo

# ------------------------------------------------------------------ bulk throughput
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
declare -A BULK TPUT
echo "bulk: $BULK_ROUNDS x $BULK_BYTES bytes per path (MiB/s per round)"
for round in $(seq "$BULK_ROUNDS"); do
    line="  round $round:"
    for p in "${PATHS[@]}"; do
        out=$(timeout 120 "$PYTHON" "$WORK/load.py" bulk "${SOCK[$p]}" "$BULK_BYTES") \
            || die "bulk transfer via $p failed"
        v=$("$PYTHON" -c 'import json,sys; print("%.1f" % json.loads(sys.argv[1])["mib_s"])' "$out")
        BULK[$p]+="$v "
        line+=" $p=$v"
    done
    echo "$line"
done
for p in "${PATHS[@]}"; do TPUT[$p]=$(echo "${BULK[$p]}" | median); done
echo

# ------------------------------------------------------------------ table & target
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "n/a" }'; }
printf '%-14s %12s %12s %10s\n' path "p50 µs" "p99 µs" "MiB/s"
for p in "${PATHS[@]}"; do
    printf '%-14s %12s %12s %10s\n' "$p" "${P50[$p]}" "${P99[$p]}" "${TPUT[$p]}"
done
echo "(MiB/s: median of $BULK_ROUNDS rounds)"
speedup=$(ratio "${P50[exec-per-conn]}" "${P50[mux]}")
if awk -v a="${P50[exec-per-conn]}" -v b="${P50[mux]}" 'BEGIN { exit !(b * 50 <= a) }'; then
    echo "PASS  mux new-connection p50 >= 50x lower than exec-per-conn  (${speedup}x)"
else
    echo "MISS  mux new-connection p50 >= 50x lower than exec-per-conn  (${speedup}x)"
fi
echo "mux helper processes at the end: $(helpers); helper exits logged: $(grep -c 'mux helper exited' "$WORK/mux.log" || true)"
echo "after run: loadavg $(cut -d' ' -f1-3 /proc/loadavg); elapsed ${SECONDS}s"
exit 0
