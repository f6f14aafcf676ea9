#!/usr/bin/env bash
# Slow-client floods (issue 16): slowhttptest's slowloris (slow headers), slow body
# (R-U-Dead-Yet) and slow read against ONE server worker pinned to CPU 0, while a normal client
# (loadgen, open loop, pinned to CPU 1) keeps fetching a small file. Records the normal client's
# p50/p99/errors without and with each flood, and the server's open fds and RSS (from /proc)
# before, during and after each flood. ringd first, then nginx (one worker) for comparison.
# Everything on loopback, every run bounded, every process stopped by its PID.
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<EOF
Usage: scripts/flood.sh [options]

  --conns N        flood connections per mode (default: 10000)
  --rate N         flood connections opened per second (default: 2000)
  --length S       seconds each flood lasts (default: 30); the normal client measures during
                   the middle of it (from S/3 to S-5)
  --normal-rate R  the normal client's open-loop rate, req/s (default: 500)
  --modes LIST     of slowloris,slowbody,slowread (default: all three)
  --servers LIST   of ringd,nginx (default: both)
  --backend B      ringd's backend (default: uring)
  --repeat N       run the list of modes N times against the same server process (default: 1);
                   the later passes are labelled MODE-2, MODE-3...: whether RSS and fds return
                   to the same level each time (retained, not leaked) or keep growing
  --out DIR        where the tables go (default: results/<date>-vm-flood)
  --smoke          200 connections, 8 s per mode: checks the script, not the servers
  -h, --help       this text

Installs slowhttptest (Debian) and nginx when missing (apt-get). Writes DIR/summary.md
(generated tables), DIR/flood.json, DIR/env.txt and DIR/raw/ (loadgen JSON, slowhttptest
output, /proc samples).
EOF
}

CONNS=10000
RATE=2000
LENGTH=30
NORMAL_RATE=500
MODES="slowloris,slowbody,slowread"
SERVERS="ringd,nginx"
BACKEND="uring"
REPEAT=1
OUT=""
while [[ $# -gt 0 ]]; do
    case "$1" in
    --conns) CONNS="$2"; shift 2 ;;
    --rate) RATE="$2"; shift 2 ;;
    --length) LENGTH="$2"; shift 2 ;;
    --normal-rate) NORMAL_RATE="$2"; shift 2 ;;
    --modes) MODES="$2"; shift 2 ;;
    --servers) SERVERS="$2"; shift 2 ;;
    --backend) BACKEND="$2"; shift 2 ;;
    --repeat) REPEAT="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --smoke) CONNS=200; RATE=200; LENGTH=8; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
    esac
done
[[ -n "$OUT" ]] || OUT="$REPO_ROOT/results/$(date -u +%Y-%m-%d)-vm-flood"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)" # absolute: nginx resolves relative paths against its prefix
RAW="$OUT/raw"
mkdir -p "$RAW"
UPTIME_START="$(uptime)"
RUN="$(mktemp -d /tmp/ringd-flood.XXXXXX)"
chmod 755 "$RUN"
WWW="$RUN/www"
mkdir -p "$WWW"
head -c 1000 /dev/zero | tr '\0' 'x' >"$WWW/small.txt"
head -c $((1024 * 1024)) /dev/zero | tr '\0' 'y' >"$WWW/big.bin"
chmod -R a+rX "$WWW"

RINGD="$REPO_ROOT/target/release/ringd"
LOADGEN="$REPO_ROOT/target/release/loadgen"
[[ -x "$RINGD" && -x "$LOADGEN" ]] || die "build first: cargo build --release --workspace"
command -v slowhttptest >/dev/null || apt_install slowhttptest
if [[ ",$SERVERS," == *",nginx,"* ]] && ! command -v nginx >/dev/null; then
    apt_install nginx
fi
HARD_NOFILE="$(ulimit -Hn)"
[[ "$HARD_NOFILE" == unlimited ]] && HARD_NOFILE=1048576
if ((HARD_NOFILE < CONNS + 1000)); then
    warn "the hard open-file limit ($HARD_NOFILE) is below --conns + 1000; floods will hit EMFILE"
fi
PORT=18190

SERVER_PID=""
FLOOD_PID=""
cleanup() {
    [[ -n "$FLOOD_PID" ]] && stop_pid "$FLOOD_PID" INT
    [[ -n "$SERVER_PID" ]] && stop_pid "$SERVER_PID"
    rm -rf "$RUN"
}
trap cleanup EXIT

start_server() {
    local name="$1"
    port_busy "$PORT" && die "port $PORT is busy"
    case "$name" in
    ringd)
        taskset -c 0 "$RINGD" --listen "127.0.0.1:$PORT" --workers 1 --backend "$BACKEND" \
            --no-pin "$WWW" >"$RAW/ringd.log" 2>&1 &
        SERVER_PID=$!
        ;;
    nginx)
        mkdir -p "$RUN/nginx"
        cat >"$RUN/nginx.conf" <<EOF
# One nginx process (no master) so that its fds and RSS are the serving worker's.
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile $HARD_NOFILE;
pid $RUN/nginx/nginx.pid;
error_log $RAW/nginx-error.log error;
events { use epoll; worker_connections $((HARD_NOFILE - 100)); }
http {
    access_log off;
    sendfile on;
    tcp_nodelay on;
    client_body_temp_path $RUN/nginx/body;
    proxy_temp_path $RUN/nginx/proxy;
    fastcgi_temp_path $RUN/nginx/fastcgi;
    uwsgi_temp_path $RUN/nginx/uwsgi;
    scgi_temp_path $RUN/nginx/scgi;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$PORT backlog=4096;
        root $WWW;
    }
}
EOF
        (
            ulimit -n "$HARD_NOFILE"
            exec taskset -c 0 nginx -e "$RAW/nginx-error.log" -p "$RUN/nginx" -c "$RUN/nginx.conf"
        ) >"$RAW/nginx.log" 2>&1 &
        SERVER_PID=$!
        ;;
    esac
    wait_http "http://127.0.0.1:$PORT/small.txt" 15 "$SERVER_PID" || die "$name did not start (see $RAW/$name.log)"
}

stop_server() {
    stop_pid "$SERVER_PID"
    SERVER_PID=""
    # Let the kernel finish the closes before the next server binds the port.
    sleep 1
}

# One /proc sample of the server: "fds rss_kib".
sample() {
    local fds rss
    fds="$(find "/proc/$SERVER_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)"
    rss="$(awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status" 2>/dev/null || echo 0)"
    echo "$fds ${rss:-0}"
}

# The normal client: open loop at NORMAL_RATE for $2 seconds; JSON into $1.
normal_client() {
    taskset -c 1 "$LOADGEN" "http://127.0.0.1:$PORT/small.txt" -R "$NORMAL_RATE" -c 16 -t 1 \
        --no-pin -d "$2s" --timeout 5s --quiet --json "$1" >/dev/null 2>"$1.stderr" || true
}

flood_args() {
    local common=(-c "$CONNS" -r "$RATE" -l "$LENGTH" -p 3)
    case "$1" in
    # Slowloris: a header line every 10 s, never the end of the header.
    slowloris) echo -H "${common[@]}" -i 10 -x 24 -u "http://127.0.0.1:$PORT/small.txt" ;;
    # R-U-Dead-Yet: a POST announcing 8 KiB of body, sent a few bytes every 10 s.
    slowbody) echo -B "${common[@]}" -i 10 -x 10 -s 8192 -u "http://127.0.0.1:$PORT/small.txt" ;;
    # Slow read: GET a 1 MiB file three times per connection with a tiny receive window,
    # reading 32 bytes a second.
    slowread) echo -X "${common[@]}" -k 3 -n 1 -w 16 -y 64 -z 32 -u "http://127.0.0.1:$PORT/big.bin" ;;
    esac
}

SAMPLES="$RAW/samples.txt"
: >"$SAMPLES"
IFS=',' read -r -a SERVER_LIST <<<"$SERVERS"
IFS=',' read -r -a MODE_LIST <<<"$MODES"
MEASURE_FROM=$((LENGTH / 3))
MEASURE_LEN=$((LENGTH - MEASURE_FROM - 5))
((MEASURE_LEN >= 2)) || MEASURE_LEN=2

for server in "${SERVER_LIST[@]}"; do
    log "$server: starting (one worker on CPU 0)"
    start_server "$server"
    echo "$server idle $(date +%s) $(sample)" >>"$SAMPLES"
    log "$server: baseline, normal client only (${MEASURE_LEN}s at $NORMAL_RATE req/s)"
    normal_client "$RAW/$server-baseline.json" "$MEASURE_LEN"
    for ((pass = 1; pass <= REPEAT; pass++)); do
    for base in "${MODE_LIST[@]}"; do
        mode="$base"
        ((pass == 1)) || mode="$base-$pass"
        echo "$server $mode:before $(date +%s) $(sample)" >>"$SAMPLES"
        log "$server: $mode flood, $CONNS connections at $RATE/s for ${LENGTH}s"
        # shellcheck disable=SC2046 # the words of flood_args are separate arguments
        (
            ulimit -n "$HARD_NOFILE"
            exec slowhttptest $(flood_args "$base")
        ) >"$RAW/$server-$mode-slowhttptest.txt" 2>&1 &
        FLOOD_PID=$!
        start=$(date +%s)
        # Sample every 2 s while the flood ramps up, then run the normal client in the middle.
        while (($(date +%s) - start < MEASURE_FROM)); do
            echo "$server $mode:during $(date +%s) $(sample)" >>"$SAMPLES"
            sleep 2
        done
        normal_client "$RAW/$server-$mode.json" "$MEASURE_LEN" &
        NC_PID=$!
        while kill -0 "$NC_PID" 2>/dev/null; do
            echo "$server $mode:during $(date +%s) $(sample)" >>"$SAMPLES"
            sleep 2
        done
        wait "$NC_PID" || true
        # slowhttptest stops itself after -l seconds; give it 15 s more, then SIGINT by PID.
        for ((i = 0; i < 150; i++)); do
            kill -0 "$FLOOD_PID" 2>/dev/null || break
            (((i % 20) == 0)) && echo "$server $mode:during $(date +%s) $(sample)" >>"$SAMPLES"
            sleep 0.1
        done
        stop_pid "$FLOOD_PID" INT
        wait "$FLOOD_PID" 2>/dev/null || true
        FLOOD_PID=""
        sleep 3
        echo "$server $mode:after $(date +%s) $(sample)" >>"$SAMPLES"
        log "$server: $mode done: $(tail -1 "$SAMPLES")"
    done
    done
    normal_client "$RAW/$server-after.json" 3
    stop_server
done

# Environment, then the tables (generated, never edited by hand).
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git -C "$REPO_ROOT" rev-parse --short HEAD)$(git -C "$REPO_ROOT" status --porcelain --untracked-files=no | grep -q . && echo ' (dirty)')"
    echo "kernel: $(uname -r)"
    echo "cpus: $(nproc)"
    echo "uptime at start: $UPTIME_START"
    echo "uptime at end: $(uptime)"
    echo "nofile hard: $HARD_NOFILE"
    echo "ringd: $("$RINGD" --version) (--workers 1 --backend $BACKEND, pinned to CPU 0 with taskset)"
    echo "nginx: $(nginx -v 2>&1 | head -1) (one process: master_process off, pinned to CPU 0)"
    echo "slowhttptest: $(slowhttptest -h 2>&1 | grep -m1 -o 'version [0-9.]*')"
    echo "loadgen: $("$LOADGEN" --version), open loop at $NORMAL_RATE req/s, 16 connections, 1 thread pinned to CPU 1"
    echo "repeat: $REPEAT pass(es) of the modes per server process"
    echo "flood: $CONNS connections at $RATE/s for ${LENGTH}s per mode; normal client measured from ${MEASURE_FROM}s for ${MEASURE_LEN}s"
    echo "modes: $(for m in "${MODE_LIST[@]}"; do printf '%s: slowhttptest %s; ' "$m" "$(flood_args "$m" | sed "s/$PORT/PORT/")"; done)"
    echo "sysctl: somaxconn=$(cat /proc/sys/net/core/somaxconn) tcp_max_syn_backlog=$(cat /proc/sys/net/ipv4/tcp_max_syn_backlog) ip_local_port_range=$(tr '\t' '-' </proc/sys/net/ipv4/ip_local_port_range) tcp_tw_reuse=$(cat /proc/sys/net/ipv4/tcp_tw_reuse)"
} >"$OUT/env.txt"
python3 "$SCRIPTS_DIR/flood_report.py" "$OUT"
log "wrote $OUT/summary.md"
