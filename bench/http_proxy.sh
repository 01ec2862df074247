#!/usr/bin/env bash
# HTTP proxy benchmark: one run, side by side on loopback. Every path listens on loopback
# TCP and reaches the same upstream, nginx on a Unix socket serving a 64-byte body
# (/small) and a 1 MiB file (/big):
#   direct    wrk -> the upstream nginx's own TCP listener (same server block)
#   socat     wrk -> socat TCP-LISTEN:P,fork,reuseaddr UNIX-CONNECT:up.sock
#   haproxy   wrk -> haproxy (mode http, keep-alive, http-reuse always) -> unix@up.sock
#   nginx     wrk -> a second nginx (proxy_pass to an upstream{} block, keepalive 64)
#   pipegate  wrk -> pipegate serve --listen tcp://127.0.0.1:P --upstream unix://up.sock
#   floor     wrk -> crates/proxy/examples/hyper_floor.rs: one upstream connection per client
#             connection, nothing checked, rewritten or logged; not a peer, the floor any
#             hyper/tokio proxy stands on (FLOOR=0 leaves it out)
# Load: ROUNDS interleaved rounds (round-robin over the paths, the starting path rotating)
# of `wrk -t1 -c32 -d5s --latency` per body; the median round is reported. Then memory:
# pipegate's RSS with IDLE_CONNS idle kept-alive client connections (bench/idle_conns.py).
# Prints req/s, p99 and ratios to direct, and PASS/MISS against the targets of issue 7.
# A measurement, not a test: exits 0 whether targets are met or missed (non-zero only if
# the harness itself fails).
#
# Environment:
#   ROUNDS           rounds per body, median reported            (default 5)
#   DURATION         seconds per wrk run                         (default 5)
#   CONNS, THREADS   wrk -c / -t                                 (default 32, 1)
#   BODIES           which bodies: "small big"                   (default both)
#   IDLE_CONNS       idle client connections for the RSS step    (default 10000; 0 = skip)
#   PIPEGATE_BIN     pipegate binary used as is (default: cargo build --release -p pipegate, then
#                    $CARGO_TARGET_DIR or ./target /release/pipegate)
#   FLOOR_BIN        hyper_floor binary used as is (default: built next to pipegate with
#                    cargo build --release -p pipegate-proxy --example hyper_floor)
#   FLOOR            1 = measure the floor path too                (default 1)
#   PIPEGATE_ARGS    extra `pipegate serve` options for the throughput instance (word-split)
#   UP_WORKERS       worker_processes of the upstream nginx      (default auto)
#   PROXY_WORKERS    worker_processes of the proxying nginx      (default auto)
#   PYTHON           Python 3 interpreter                        (default python3)
#   MAX_SECONDS      watchdog: abort the run after this long     (default 900)
#   QUIET_BUDGET     total seconds the run may spend waiting, before each round, for other
#                    CPU load to drop below QUIET_PCT% busy      (default 90; 0 = never wait)
#   QUIET_PCT        what counts as quiet                        (default 10)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
CONNS=${CONNS:-32}
THREADS=${THREADS:-1}
BODIES=${BODIES-small big}
IDLE_CONNS=${IDLE_CONNS:-10000}
UP_WORKERS=${UP_WORKERS:-auto}
PROXY_WORKERS=${PROXY_WORKERS:-auto}
PYTHON=${PYTHON:-python3}
MAX_SECONDS=${MAX_SECONDS:-900}
QUIET_BUDGET=${QUIET_BUDGET:-90}
QUIET_PCT=${QUIET_PCT:-10}
PIPEGATE_ARGS=${PIPEGATE_ARGS:-}
FLOOR=${FLOOR:-1}
CMDLINE="ROUNDS=$ROUNDS DURATION=$DURATION CONNS=$CONNS THREADS=$THREADS IDLE_CONNS=$IDLE_CONNS"
CMDLINE+=" UP_WORKERS=$UP_WORKERS PROXY_WORKERS=$PROXY_WORKERS FLOOR=$FLOOR"
[[ $BODIES != "small big" ]] && CMDLINE+=" BODIES=\"$BODIES\""
[[ -n $PIPEGATE_ARGS ]] && CMDLINE+=" PIPEGATE_ARGS=\"$PIPEGATE_ARGS\""
[[ -n ${TOKIO_WORKER_THREADS:-} ]] && CMDLINE+=" TOKIO_WORKER_THREADS=$TOKIO_WORKER_THREADS"
[[ -n ${PIPEGATE_BIN:-} ]] && CMDLINE+=" PIPEGATE_BIN=$PIPEGATE_BIN"
CMDLINE+=" $0${*:+ $*}"

die() { echo "http_proxy.sh: $*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
for tool in wrk nginx haproxy socat "$PYTHON"; do
    command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install wrk nginx haproxy socat)"
done

build_pipegate http_proxy.sh
if (( FLOOR )) && [[ -z ${FLOOR_BIN:-} ]]; then
    FLOOR_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/hyper_floor"
    echo "building $FLOOR_BIN (cargo build --release -p pipegate-proxy --example hyper_floor)" >&2
    (cd "$ROOT" && cargo build --release -p pipegate-proxy --example hyper_floor) >&2 \
        || die "cargo build of the hyper_floor example failed"
fi
(( FLOOR )) && { [[ -x $FLOOR_BIN ]] || die "no hyper_floor binary at $FLOOR_BIN"; }

# 10 000 idle connections need as many descriptors in the client and in pipegate.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
if [[ $NOFILE != unlimited ]] && (( IDLE_CONNS + 256 > NOFILE )); then
    echo "note: open-file limit is $NOFILE; IDLE_CONNS lowered from $IDLE_CONNS to $(( NOFILE - 256 ))" >&2
    IDLE_CONNS=$(( NOFILE - 256 ))
fi

# ------------------------------------------------------------------ processes & cleanup
WORK=$(mktemp -d /tmp/pghttp.XXXXXX)
chmod 0755 "$WORK"
PIDS=()
SOCAT_PID=
IDLE_PID=
cleanup() {
    local pid
    [[ -n $IDLE_PID ]] && kill -KILL "$IDLE_PID" 2>/dev/null || true
    # socat forks one child per connection; end any still running (children of our socat only).
    if [[ -n $SOCAT_PID ]]; then
        for pid in $(pgrep -P "$SOCAT_PID" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    fi
    stop_pids 3
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo "http_proxy.sh: interrupted" >&2; exit 130' INT TERM

# The whole run is bounded (bench/lib.sh).
start_watchdog http_proxy.sh "$MAX_SECONDS"

wait_for_port() {  # port, what
    for _ in $(seq 200); do
        if "$PYTHON" -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1).close()" \
            "$1" 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    die "timed out waiting for $2 on port $1"
}
# N free loopback ports (held together while chosen, so they differ).
free_ports() {
    "$PYTHON" - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}
read -r DIRECT_PORT SOCAT_PORT HAP_PORT NGX_PORT < <(free_ports 4)

# ------------------------------------------------------------------ upstream: nginx on a Unix socket
SOCK="$WORK/up.sock"
mkdir -p "$WORK/www" "$WORK/up/tmp" "$WORK/px/tmp"
head -c 63 /dev/zero | tr '\0' 'x' >"$WORK/www/small"; echo >>"$WORK/www/small"   # 64 bytes
head -c 1048576 /dev/urandom >"$WORK/www/big"
USER_LINE=""
(( EUID == 0 )) && USER_LINE="user root;"   # workers must read the 0700 temp dir's files
temp_paths() {  # dir
    local d=$1
    echo "client_body_temp_path $d/body; proxy_temp_path $d/proxy; fastcgi_temp_path $d/fcgi;"
    echo "    uwsgi_temp_path $d/uwsgi; scgi_temp_path $d/scgi;"
}
cat >"$WORK/up/nginx.conf" <<EOF
$USER_LINE
daemon off;
master_process on;
worker_processes $UP_WORKERS;
pid $WORK/up/nginx.pid;
error_log $WORK/up/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    $(temp_paths "$WORK/up/tmp")
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    open_file_cache max=16;
    keepalive_timeout 300s;
    keepalive_requests 10000000;
    server {
        listen unix:$SOCK;
        listen 127.0.0.1:$DIRECT_PORT;
        root $WORK/www;
        # The small body goes out in one write with its head (as an API server's answer
        # would); with sendfile the head and the body are two writes on the Unix socket, and
        # a byte relay without TCP_NODELAY (socat) then stalls on Nagle + delayed ACK.
        location = /small { sendfile off; }
    }
}
EOF
nginx -p "$WORK/up" -c "$WORK/up/nginx.conf" -e "$WORK/up/error.log" >"$WORK/up/stdout.log" 2>&1 &
UP_PID=$!
PIDS+=($!)
wait_for_port "$DIRECT_PORT" "the upstream nginx"
for _ in $(seq 100); do [[ -S $SOCK ]] && break; sleep 0.05; done
[[ -S $SOCK ]] || die "the upstream nginx made no socket at $SOCK"

# ------------------------------------------------------------------ the proxies
socat TCP-LISTEN:"$SOCAT_PORT",bind=127.0.0.1,fork,reuseaddr UNIX-CONNECT:"$SOCK" \
    >"$WORK/socat.log" 2>&1 &
SOCAT_PID=$!
PIDS+=($!)

cat >"$WORK/haproxy.cfg" <<EOF
global
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
frontend fe
    bind 127.0.0.1:$HAP_PORT
    default_backend be
backend be
    http-reuse always
    server up unix@$SOCK
EOF
haproxy -db -q -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
HAP_PID=$!
PIDS+=($!)

cat >"$WORK/px/nginx.conf" <<EOF
$USER_LINE
daemon off;
master_process on;
worker_processes $PROXY_WORKERS;
pid $WORK/px/nginx.pid;
error_log $WORK/px/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    $(temp_paths "$WORK/px/tmp")
    keepalive_timeout 300s;
    keepalive_requests 10000000;
    upstream up {
        server unix:$SOCK;
        keepalive 64;
        keepalive_requests 10000000;
    }
    server {
        listen 127.0.0.1:$NGX_PORT;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
nginx -p "$WORK/px" -c "$WORK/px/nginx.conf" -e "$WORK/px/error.log" >"$WORK/px/stdout.log" 2>&1 &
NGX_PID=$!
PIDS+=($!)

PG_HELP=$("$PIPEGATE_BIN" serve --help 2>&1 || true)
PG_OPTS=(--name "hbench-$$")
grep -q -- '--no-discovery' <<<"$PG_HELP" && PG_OPTS+=(--no-discovery)
# The benchmark's peers have no authentication either.
grep -q -- '--no-auth' <<<"$PG_HELP" && PG_OPTS+=(--no-auth)
# shellcheck disable=SC2206  # PIPEGATE_ARGS is word-split on purpose
PG_EXTRA=($PIPEGATE_ARGS)
PG_CMD=("$PIPEGATE_BIN" --log warn serve "${PG_OPTS[@]}" --listen tcp://127.0.0.1:0
    --upstream "unix://$SOCK" "${PG_EXTRA[@]}")
"${PG_CMD[@]}" >"$WORK/pg.log" 2>&1 &
PG_PID=$!
PIDS+=($!)
wait_for_line "$WORK/pg.log" '^pipegate: listening on' "pipegate to start"
PG_PORT=$(sed -n 's|^pipegate: listening on tcp://127.0.0.1:\([0-9]*\)$|\1|p' "$WORK/pg.log" | head -n1)
[[ -n $PG_PORT ]] || { cat "$WORK/pg.log" >&2; die "could not read pipegate's port"; }

FLOOR_PID= FLOOR_PORT=
if (( FLOOR )); then
    "$FLOOR_BIN" 127.0.0.1:0 "unix://$SOCK" >"$WORK/floor.log" 2>&1 &
    FLOOR_PID=$!
    PIDS+=($!)
    wait_for_line "$WORK/floor.log" '^hyper_floor: listening on' "hyper_floor to start"
    FLOOR_PORT=$(sed -n 's|^hyper_floor: listening on 127.0.0.1:\([0-9]*\)$|\1|p' "$WORK/floor.log" | head -n1)
    [[ -n $FLOOR_PORT ]] || { cat "$WORK/floor.log" >&2; die "could not read hyper_floor's port"; }
fi

wait_for_port "$SOCAT_PORT" socat
wait_for_port "$HAP_PORT" haproxy
wait_for_port "$NGX_PORT" "the proxying nginx"

PATHS=(direct socat haproxy nginx pipegate)
(( FLOOR )) && PATHS+=(floor)
declare -A PORT=([direct]=$DIRECT_PORT [socat]=$SOCAT_PORT [haproxy]=$HAP_PORT [nginx]=$NGX_PORT [pipegate]=$PG_PORT [floor]=$FLOOR_PORT)
declare -A PROXY_PID=([socat]=$SOCAT_PID [haproxy]=$HAP_PID [nginx]=$NGX_PID [pipegate]=$PG_PID [floor]=$FLOOR_PID)
declare -A BODY_SIZE=([small]=64 [big]=1048576)
declare -A BODY_NAME=([small]="64-byte body" [big]="1 MiB file")

# Every path must return both bodies intact before anything is measured.
for p in "${PATHS[@]}"; do
    for b in small big; do
        "$PYTHON" - "${PORT[$p]}" "/$b" "$WORK/www/$b" <<'EOF' || die "path $p does not serve /$b correctly"
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=10)
for _ in range(2):  # twice: the second request reuses the connection
    c.request("GET", sys.argv[2])
    r = c.getresponse()
    body = r.read()
    if r.status != 200 or body != open(sys.argv[3], "rb").read():
        sys.exit(f"status {r.status}, {len(body)} bytes: {body[:200]!r}")
EOF
    done
done

# ------------------------------------------------------------------ CPU accounting, load
# CPU clock ticks used so far by a process, its reaped children, and its live children
# (nginx's workers, socat's per-connection children).
cpu_ticks() {
    local total=0 pid
    for pid in "$1" $(pgrep -P "$1" 2>/dev/null); do
        total=$(( total + $(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$pid/stat" 2>/dev/null || echo 0) ))
    done
    echo "$total"
}
TCK=$(getconf CLK_TCK)

# ------------------------------------------------------------------ facts
git_commit
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== HTTP proxy benchmark, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "command:   $CMDLINE"
echo "machine:   nproc=$(nproc), kernel $(uname -sr), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "pipegate:  $("$PIPEGATE_BIN" --version), tree $GIT_COMMIT; binary $PIPEGATE_BIN built $(date -u -r "$PIPEGATE_BIN" '+%Y-%m-%d %H:%M UTC')"
echo "           ${PG_CMD[*]}"
echo "tools:     $(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2), $(nginx -v 2>&1 | sed 's/.*: //'), $(haproxy -v | head -n1 | cut -d' ' -f1-3), $(socat -V 2>/dev/null | sed -n 's/^socat version \([^ ]*\).*/socat \1/p'), $("$PYTHON" --version 2>&1)"
echo "upstream:  nginx, worker_processes $UP_WORKERS, on unix:$SOCK (+ 127.0.0.1:$DIRECT_PORT for direct); proxying nginx worker_processes $PROXY_WORKERS; haproxy default threads"
echo "loadavg:   $LOAD_BEFORE before starting; busy now $(cpu_busy)% of all CPUs"
echo

# ------------------------------------------------------------------ throughput & latency
# One wrk run; prints "req/s p99_ms errors requests".
wrk_run() {  # port, body, outfile, seconds
    timeout $(( $4 + 30 )) wrk -t"$THREADS" -c"$CONNS" -d"$4"s --latency \
        "http://127.0.0.1:$1/$2" >"$3" 2>&1 || true
    awk '
        /^Requests\/sec:/ { rps = $2 }
        / requests in / { reqs = $1 }
        /^ +99%/ { v = $2; u = v; gsub(/[0-9.]/, "", u); n = v + 0
                   if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
                   p99 = n }
        /Socket errors:/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) err += $i + 0 }
        /Non-2xx or 3xx/ { err += $NF }
        END { printf "%s %.3f %d %d\n", (rps == "" ? 0 : rps), p99, err, reqs }' "$3"
}

declare -A RPS P99 CPU ERRS MED_RPS MED_P99 MED_CPU
for b in $BODIES; do
    echo "${BODY_NAME[$b]} (/$b): $ROUNDS rounds of wrk -t$THREADS -c$CONNS -d${DURATION}s --latency, req/s (p99 ms)"
    # Warm-up: connection pools, page cache, nginx's open-file cache.
    for p in "${PATHS[@]}"; do wrk_run "${PORT[$p]}" "$b" "$WORK/wrk-warm-$p-$b.txt" 1 >/dev/null; done
    for round in $(seq "$ROUNDS"); do
        settle "$b$round"
        line="  round $round:"
        n=${#PATHS[@]}
        for i in $(seq 0 $(( n - 1 ))); do
            p=${PATHS[$(( (i + round - 1) % n ))]}   # rotate who goes first
            pid=${PROXY_PID[$p]:-}
            [[ -n $pid ]] && t0=$(cpu_ticks "$pid")
            read -r rps p99 err reqs < <(wrk_run "${PORT[$p]}" "$b" "$WORK/wrk-$p-$b-$round.txt" "$DURATION")
            sleep 0.3   # let socat reap its per-connection children
            if [[ -n $pid ]]; then
                CPU[$p$b]+="$(awk -v t=$(( $(cpu_ticks "$pid") - t0 )) -v hz="$TCK" -v n="$reqs" \
                    'BEGIN { printf "%.1f", (n > 0 ? t / hz * 1e6 / n : 0) }') "
            fi
            RPS[$p$b]+="$rps "
            P99[$p$b]+="$p99 "
            ERRS[$p$b]=$(( ${ERRS[$p$b]:-0} + err ))
            line+=" $p=$(printf '%.0f' "$rps")($p99)"
        done
        echo "$line"
    done
    for p in "${PATHS[@]}"; do
        MED_RPS[$p$b]=$(echo "${RPS[$p$b]}" | median)
        MED_P99[$p$b]=$(echo "${P99[$p$b]}" | median)
        MED_CPU[$p$b]=$([[ -n ${CPU[$p$b]:-} ]] && echo "${CPU[$p$b]}" | median || echo -)
    done
    echo
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
declare -A RATIO
for b in $BODIES; do
    echo "${BODY_NAME[$b]}: median of $ROUNDS rounds"
    printf '  %-9s %11s %9s %9s %11s %15s %7s\n' path "req/s" "x direct" "p99 ms" "p99/direct" \
        "proxy CPU µs/req" errors
    for p in "${PATHS[@]}"; do
        RATIO[$p$b]=$(ratio "${MED_RPS[$p$b]}" "${MED_RPS[direct$b]}")
        mib=""
        [[ $b == big ]] && mib=" ($(awk -v r="${MED_RPS[$p$b]}" 'BEGIN { printf "%.0f", r }') MiB/s)"
        printf '  %-9s %11.0f %9s %9s %11s %15s %7s%s\n' "$p" "${MED_RPS[$p$b]}" "${RATIO[$p$b]}" \
            "${MED_P99[$p$b]}" "$(ratio "${MED_P99[$p$b]}" "${MED_P99[direct$b]}")" \
            "${MED_CPU[$p$b]}" "${ERRS[$p$b]}" "$mib"
    done
    echo
done
echo "(proxy CPU: user+sys CPU time of the proxy's processes per request, median round)"
echo

# ------------------------------------------------------------------ RSS with idle connections
RSS_BASE= RSS_WARM= RSS_IDLE= IDLE_OK=0 PG_FDS=
if (( IDLE_CONNS > 0 )); then
    settle rss
    rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
    RSS_CMD=("$PIPEGATE_BIN" --log warn serve --name "hbench-rss-$$" "${PG_OPTS[@]:2}"
        --listen tcp://127.0.0.1:0 --upstream "unix://$SOCK"
        --max-connections 20000 --header-timeout 300s)
    "${RSS_CMD[@]}" >"$WORK/pg-rss.log" 2>&1 &
    RSS_PID=$!
    PIDS+=($!)
    wait_for_line "$WORK/pg-rss.log" '^pipegate: listening on' "pipegate (rss) to start"
    RSS_PORT=$(sed -n 's|^pipegate: listening on tcp://127.0.0.1:\([0-9]*\)$|\1|p' "$WORK/pg-rss.log" | head -n1)
    sleep 1
    RSS_BASE=$(rss_kib "$RSS_PID")
    "$PYTHON" -c 'import http.client,sys; c=http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=10); c.request("GET","/small"); c.getresponse().read()' "$RSS_PORT"
    sleep 0.5
    RSS_WARM=$(rss_kib "$RSS_PID")
    "$PYTHON" "$HERE/idle_conns.py" --port "$RSS_PORT" --path /small --count "$IDLE_CONNS" \
        --hold 240 --ready-file "$WORK/idle.ready" >"$WORK/idle.log" 2>&1 &
    IDLE_PID=$!
    for _ in $(seq 1200); do [[ -s $WORK/idle.ready ]] && break; kill -0 "$IDLE_PID" 2>/dev/null || break; sleep 0.1; done
    [[ -s $WORK/idle.ready ]] || { cat "$WORK/idle.log" >&2; die "the idle-connection client did not get ready"; }
    read -r _ IDLE_OK IDLE_FAILED <"$WORK/idle.ready"
    sleep 2
    RSS_IDLE=$(rss_kib "$RSS_PID")
    PG_FDS=$(ls "/proc/$RSS_PID/fd" | wc -l)
    RSS_HWM=$(awk '/^VmHWM:/ { print $2 }' "/proc/$RSS_PID/status")
    kill -TERM "$IDLE_PID" 2>/dev/null || true
    wait "$IDLE_PID" 2>/dev/null || true
    IDLE_PID=
    per_conn=$(awk -v a="$RSS_IDLE" -v b="$RSS_BASE" -v n="$IDLE_OK" 'BEGIN { printf "%.2f", (n > 0 ? (a - b) / n : 0) }')
    per_conn_warm=$(awk -v a="$RSS_IDLE" -v b="$RSS_WARM" -v n="$IDLE_OK" 'BEGIN { printf "%.2f", (n > 0 ? (a - b) / n : 0) }')
    echo "idle connections: ${RSS_CMD[*]}"
    echo "  $IDLE_OK of $IDLE_CONNS connections each completed one keep-alive GET /small and stayed idle ($IDLE_FAILED failed; pipegate holds $PG_FDS fds)"
    grep '^error' "$WORK/idle.log" | sed 's/^/  client /' || true
    echo "  pipegate VmRSS: $RSS_BASE KiB after start, $RSS_WARM KiB after one request, $RSS_IDLE KiB with the idle connections (VmHWM $RSS_HWM KiB)"
    echo "  = $per_conn KiB per idle connection above the start baseline ($per_conn_warm KiB above the one-request baseline)"
    echo
fi

# ------------------------------------------------------------------ targets
check() {  # label, awk condition, detail
    if awk "BEGIN { exit !($2) }"; then echo "PASS  $1  ($3)"; else echo "MISS  $1  ($3)"; fi
}
if [[ " $BODIES " == *" small "* ]]; then
    best=socat
    for p in haproxy nginx; do
        awk -v a="${RATIO[${p}small]}" -v b="${RATIO[${best}small]}" 'BEGIN { exit !(a > b) }' && best=$p
    done
    pg=${RATIO[pipegatesmall]}; bp=${RATIO[${best}small]}
    check "64-byte body: pipegate ratio >= 1.25 x best peer's" "$pg >= 1.25 * $bp" \
        "pipegate $pg x direct vs $best $bp x direct = $(ratio "$pg" "$bp") x; needs pipegate >= $(awk -v b="$bp" 'BEGIN { printf "%.2f", 1.25 * b }')"
    if (( FLOOR )); then
        fl=${RATIO[floorsmall]}
        echo "      floor (bare hyper proxy) $fl x direct = $(ratio "$fl" "$bp") x $best; pipegate = $(ratio "$pg" "$fl") x the floor"
    fi
fi
if [[ " $BODIES " == *" big "* ]]; then
    check "1 MiB file: pipegate >= 0.85 x direct" "${RATIO[pipegatebig]} >= 0.85" \
        "pipegate ${RATIO[pipegatebig]} x direct"
fi
if (( IDLE_CONNS > 0 )); then
    check "RSS per idle kept-alive connection <= 16 KiB" "$per_conn <= 16 && $IDLE_OK > 0" \
        "$per_conn KiB x $IDLE_OK connections"
fi
echo
report_load round
echo "loadavg: $LOAD_BEFORE before, $(cut -d' ' -f1-3 /proc/loadavg) after; elapsed ${SECONDS}s"
exit 0
