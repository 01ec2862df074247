#!/usr/bin/env bash
# Soak: REQUESTS requests (default 1 000 000) through one pipegate bridge, counting every
# error. A bounded check, not a benchmark: exits non-zero if any request failed.
#
#   wrk -> pipegate serve --listen tcp://127.0.0.1:P --upstream unix://up.sock -> nginx
#
# The upstream is nginx on a Unix socket serving a 64-byte body (/small). wrk keeps CONNS
# connections alive; a Lua script checks every response (status 200, 64 bytes) and stops
# each wrk thread after its share of REQUESTS, then wrk is stopped and its summary read.
# Errors counted: wrk's socket errors (connect, read, write, timeout) and non-2xx/3xx
# responses, responses the Lua check rejects, and pipegate's own 5xx and upstream-error
# counters (from /_pipegate/metrics). Reported: requests, errors, duration, req/s, and
# pipegate's RSS and open descriptors before and after.
#
# Environment:
#   REQUESTS       requests to make                            (default 1000000)
#   CONNS, THREADS wrk -c / -t                                 (default 32, 1)
#   PIPEGATE_BIN   pipegate binary used as is (default: cargo build --release -p pipegate,
#                  then $CARGO_TARGET_DIR or ./target /release/pipegate)
#   MAX_SECONDS    watchdog: abort the run after this long     (default 600)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
REQUESTS=${REQUESTS:-1000000}
CONNS=${CONNS:-32}
THREADS=${THREADS:-1}
MAX_SECONDS=${MAX_SECONDS:-600}
CMDLINE="REQUESTS=$REQUESTS CONNS=$CONNS THREADS=$THREADS${PIPEGATE_BIN:+ PIPEGATE_BIN=$PIPEGATE_BIN} $0${*:+ $*}"

die() { echo "soak.sh: $*" >&2; exit 2; }
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
for tool in wrk nginx curl; do
    command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install wrk nginx curl)"
done
(( REQUESTS >= THREADS && THREADS >= 1 && CONNS >= THREADS )) || die "need REQUESTS >= THREADS >= 1 and CONNS >= THREADS"

build_pipegate soak.sh

# ------------------------------------------------------------------ processes & cleanup
WORK=$(mktemp -d /tmp/pgsoak.XXXXXX)
chmod 0755 "$WORK"
PIDS=()
WRK_PID=
cleanup() {
    [[ -n $WRK_PID ]] && kill -KILL "$WRK_PID" 2>/dev/null || true
    stop_pids 3
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo "soak.sh: interrupted" >&2; exit 130' INT TERM

# The whole run is bounded (bench/lib.sh).
start_watchdog soak.sh "$MAX_SECONDS"


# ------------------------------------------------------------------ upstream: nginx on a Unix socket
SOCK="$WORK/up.sock"
mkdir -p "$WORK/www" "$WORK/up/tmp"
head -c 63 /dev/zero | tr '\0' 'x' >"$WORK/www/small"; echo >>"$WORK/www/small"   # 64 bytes
USER_LINE=""
(( EUID == 0 )) && USER_LINE="user root;"   # workers must read the temp dir's files
cat >"$WORK/up/nginx.conf" <<EOF
$USER_LINE
daemon off;
master_process on;
worker_processes 1;
pid $WORK/up/nginx.pid;
error_log $WORK/up/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/up/tmp/body; proxy_temp_path $WORK/up/tmp/proxy;
    fastcgi_temp_path $WORK/up/tmp/fcgi; uwsgi_temp_path $WORK/up/tmp/uwsgi; scgi_temp_path $WORK/up/tmp/scgi;
    default_type application/octet-stream;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    server {
        listen unix:$SOCK;
        root $WORK/www;
        location = /small { sendfile off; }
    }
}
EOF
nginx -p "$WORK/up" -c "$WORK/up/nginx.conf" -e "$WORK/up/error.log" >"$WORK/up/stdout.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [[ -S $SOCK ]] && break; sleep 0.05; done
[[ -S $SOCK ]] || { cat "$WORK/up/error.log" >&2; die "the upstream nginx made no socket at $SOCK"; }

# ------------------------------------------------------------------ pipegate
PG_CMD=("$PIPEGATE_BIN" --log warn serve --name "soak-$$" --no-discovery --no-auth
    --listen tcp://127.0.0.1:0 --upstream "unix://$SOCK")
"${PG_CMD[@]}" >"$WORK/pg.log" 2>&1 &
PG_PID=$!
PIDS+=($!)
wait_for_line "$WORK/pg.log" '^pipegate: listening on' "pipegate to start"
PG_PORT=$(sed -n 's|^pipegate: listening on tcp://127.0.0.1:\([0-9]*\)$|\1|p' "$WORK/pg.log" | head -n1)
[[ -n $PG_PORT ]] || { cat "$WORK/pg.log" >&2; die "could not read pipegate's port"; }
URL="http://127.0.0.1:$PG_PORT"

body=$(curl -sS --max-time 10 "$URL/small") || die "GET /small through pipegate failed"
[[ ${#body} == 63 ]] || die "GET /small through pipegate returned ${#body}+1 bytes, not 64"

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$PG_PID/status"; }
fds() { ls "/proc/$PG_PID/fd" | wc -l; }
metric() {  # series -> value from pipegate's metrics
    curl -sS --max-time 10 "$URL/_pipegate/metrics" | awk -v s="$1" '$1 == s { print $2 }'
}

# ------------------------------------------------------------------ the soak
git_commit
echo "== soak, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "command:   $CMDLINE"
echo "machine:   nproc=$(nproc), kernel $(uname -sr), loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
echo "pipegate:  $("$PIPEGATE_BIN" --version), tree $GIT_COMMIT; ${PG_CMD[*]}"
echo "load:      $(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2) -t$THREADS -c$CONNS GET /small (64 bytes) from nginx $(nginx -v 2>&1 | sed 's/.*\///') on unix:$SOCK"

RSS_BEFORE=$(rss_kib); FDS_BEFORE=$(fds)
FIVE_BEFORE=$(metric 'pipegate_requests_total{class="5xx"}')
UPERR_BEFORE=$(metric pipegate_upstream_errors_total)

# Each thread stops after its share; when all have, wrk is told to finish (SIGINT) and
# prints its summary and the Lua totals.
SHARE=$(( (REQUESTS + THREADS - 1) / THREADS ))
DONE_FILE="$WORK/threads.done"
cat >"$WORK/soak.lua" <<'EOF'
local threads = {}
function setup(thread)
    table.insert(threads, thread)
end
function init(args)
    limit = tonumber(args[1])
    done_file = args[2]
    ok, bad, finished = 0, 0, false
end
function response(status, headers, body)
    if finished then return end
    if status == 200 and #body == 64 then ok = ok + 1 else bad = bad + 1 end
    if ok + bad >= limit then
        finished = true
        local f = io.open(done_file, "a")
        f:write("done\n")
        f:close()
        wrk.thread:stop()
    end
end
function done(summary, latency, requests)
    local ok_all, bad_all = 0, 0
    for _, t in ipairs(threads) do
        ok_all = ok_all + t:get("ok")
        bad_all = bad_all + t:get("bad")
    end
    io.write(string.format("lua: ok %d bad %d\n", ok_all, bad_all))
end
EOF
: >"$DONE_FILE"
START=$(date +%s.%N)
wrk -t"$THREADS" -c"$CONNS" -d"$MAX_SECONDS"s --timeout 10s -s "$WORK/soak.lua" "$URL/small" \
    -- "$SHARE" "$DONE_FILE" >"$WORK/wrk.txt" 2>&1 &
WRK_PID=$!
while kill -0 "$WRK_PID" 2>/dev/null && (( $(wc -l <"$DONE_FILE") < THREADS )); do sleep 0.05; done
END=$(date +%s.%N)
kill -INT "$WRK_PID" 2>/dev/null || true
wait "$WRK_PID" || true
WRK_PID=
sleep 2   # let the client connections close

RSS_AFTER=$(rss_kib); FDS_AFTER=$(fds)
FIVE_AFTER=$(metric 'pipegate_requests_total{class="5xx"}')
UPERR_AFTER=$(metric pipegate_upstream_errors_total)
OPEN_AFTER=$(metric 'pipegate_connections_open{transport="tcp"}')

read -r OK BAD < <(awk '/^lua: ok/ { print $3, $5 }' "$WORK/wrk.txt")
[[ -n ${OK:-} ]] || { cat "$WORK/wrk.txt" >&2; die "wrk printed no Lua totals"; }
SOCKET_ERRORS=$(awk '/Socket errors:/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) n += $i + 0 } END { print n + 0 }' "$WORK/wrk.txt")
NON_2XX=$(awk '/Non-2xx or 3xx/ { n += $NF } END { print n + 0 }' "$WORK/wrk.txt")
PG_5XX=$(( FIVE_AFTER - FIVE_BEFORE ))
PG_UPSTREAM=$(( UPERR_AFTER - UPERR_BEFORE ))
REQS=$(( OK + BAD ))
ERRORS=$(( BAD + SOCKET_ERRORS + NON_2XX + PG_5XX + PG_UPSTREAM ))
SECS=$(awk -v a="$START" -v b="$END" 'BEGIN { printf "%.1f", b - a }')
RPS=$(awk -v n="$REQS" -v s="$SECS" 'BEGIN { printf "%.0f", (s > 0 ? n / s : 0) }')

echo
sed -n '/Latency/,/Transfer/p' "$WORK/wrk.txt" | sed 's/^/  wrk: /'
echo
echo "requests:  $REQS checked responses of $REQUESTS asked for ($OK ok, $BAD wrong status or body)"
echo "errors:    $ERRORS (wrk socket errors $SOCKET_ERRORS, wrk non-2xx/3xx $NON_2XX, Lua-rejected $BAD, pipegate 5xx $PG_5XX, pipegate upstream errors $PG_UPSTREAM)"
echo "duration:  ${SECS}s, $RPS req/s"
echo "pipegate:  VmRSS $RSS_BEFORE KiB before, $RSS_AFTER KiB after; open fds $FDS_BEFORE before, $FDS_AFTER after (client connections open after: $(( OPEN_AFTER - 1 )); the rest are idle pooled upstream connections, closed after 90 s idle)"
if (( ERRORS > 0 || REQS < REQUESTS )); then
    echo "FAIL: $ERRORS errors, $REQS of $REQUESTS requests checked"
    exit 1
fi
echo "PASS: $REQS requests, zero errors"
