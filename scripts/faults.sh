#!/usr/bin/env bash
# Issue 16's fault runs: ringd under steady open-loop mixed load (static files, ranges, a proxy
# route to a real nginx origin, a caching proxy route, CGI), with one fault injected per phase:
# SIGTERM, SIGHUP with a changed route, EMFILE, the pipe budget exhausted, the access log's disk
# full, the upstream killed and started again. Each phase is one loadgen run (per-second
# intervals with their own histograms), so what clients saw before, during and after the fault
# comes from the same run; ringd's RSS, fds and CPU are sampled every 0.5 s and its stderr is
# kept. scripts/faults_report.py turns the folder into summary.md. Bounded (about 4 minutes),
# loopback only; every process it starts is stopped by its PID.
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ALL_FAULTS="sigterm sighup emfile pipes logfull upstream"
usage() {
    cat <<EOF
Usage: scripts/faults.sh [options]

Starts nginx (the proxy routes' origin) and, for each fault, a fresh

  ringd --config faults.toml --workers 1 --access-log FILE --shutdown-timeout 5s

under loadgen open loop at --load times the mix's measured closed-loop capacity (or --rate),
and injects the fault --before seconds into a --secs second run:

  sigterm   SIGTERM: graceful drain, exit status and time; a new ringd is started on the
            same port once it has exited (requests meanwhile are refused, never cut)
  sighup    SIGHUP after faults.toml gained a route (/probe: 404 before, 200 after)
  emfile    ringd started under 'ulimit -n' --nofile; --flood idle connections held 8 s
  pipes     fs.pipe-user-pages-hard set to 1 page (root only; restored on exit) and ringd
            started without CAP_SYS_RESOURCE/CAP_SYS_ADMIN, so it can create no pipe at all
  logfull   --access-log /dev/full
  upstream  the nginx origin killed (SIGKILL) and started again --down seconds later

Options:
  --faults LIST   comma-separated subset (default: all, in the order above)
  --secs N        seconds of load per fault (default 30)
  --before N      seconds of load before the fault (default 10)
  --down N        seconds the upstream stays down (default 8)
  --load F        fraction of the measured capacity (default 0.3)
  --rate N        open-loop rate in req/s (skips the capacity run)
  --flood N       idle connections of the emfile flood (default 400)
  --nofile N      the emfile run's fd limit (default 256: above what the load itself holds,
                  up to ~130 fds on uring with its splice pipes, well below load + flood)
  --backend B     ringd's --backend: auto (default), uring, epoll or tokio-uring (the CGI
                  route and its share of the mix are left out there: tokio-uring runs no CGI)
  --out DIR       output directory (default results/<YYYY-MM-DD>-<host>-faults)
  --no-build      use target/release/{ringd,loadgen} as they are
  -h, --help      this text

Writes, per fault, DIR/<fault>/{load.json,samples.csv,events.csv,ringd.log,...} and then
DIR/summary.md and DIR/faults.json (scripts/faults_report.py; never edit them by hand).
EOF
}

FAULTS="$ALL_FAULTS"
SECS=30
BEFORE=10
DOWN=8
LOAD=0.3
RATE=""
FLOOD=400
NOFILE=256
BACKEND=auto
OUT=""
BUILD=1
while (($#)); do
    case "$1" in
    --faults) FAULTS="${2:?--faults needs a value}" && FAULTS="${FAULTS//,/ }" && shift ;;
    --secs) SECS="${2:?--secs needs a value}" && shift ;;
    --before) BEFORE="${2:?--before needs a value}" && shift ;;
    --down) DOWN="${2:?--down needs a value}" && shift ;;
    --load) LOAD="${2:?--load needs a value}" && shift ;;
    --rate) RATE="${2:?--rate needs a value}" && shift ;;
    --flood) FLOOD="${2:?--flood needs a value}" && shift ;;
    --nofile) NOFILE="${2:?--nofile needs a value}" && shift ;;
    --backend) BACKEND="${2:?--backend needs a value}" && shift ;;
    --out) OUT="${2:?--out needs a value}" && shift ;;
    --no-build) BUILD=0 ;;
    -h | --help) usage && exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
done
for f in $FAULTS; do
    [[ " $ALL_FAULTS " == *" $f "* ]] || die "unknown fault '$f' (one of: $ALL_FAULTS)"
done
for v in SECS BEFORE DOWN FLOOD NOFILE; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "--${v,,} wants a whole number"
done
case "$BACKEND" in auto | epoll | uring) CGI=1 ;; tokio-uring) CGI=0 ;; *) die "--backend: auto, epoll, uring or tokio-uring" ;; esac
((BEFORE + DOWN + 5 <= SECS)) || die "--secs must leave room: at least --before + --down + 5"

HOST="$(hostname -s 2>/dev/null || echo host)"
OUT="${OUT:-$REPO_ROOT/results/$(date +%F)-$HOST-faults/$BACKEND}"
mkdir -p "$OUT"
DIR="$RUN_DIR/faults"
mkdir -p "$DIR/cgi-bin" "$DIR/logs"
ORIGIN_PORT="${FAULTS_ORIGIN_PORT:-18141}"
RINGD_PORT="${FAULTS_RINGD_PORT:-18142}"
RINGD_BIN="${RINGD_BIN:-$REPO_ROOT/target/release/ringd}"
LOADGEN="${LOADGEN_BIN:-$REPO_ROOT/target/release/loadgen}"
SHUTDOWN_TIMEOUT=5
mapfile -t CPUS < <(expand_cpus "$(taskset -pc $$ | sed 's/.*: //')")
SERVER_CPU="${CPUS[0]}"
GEN_CPU="${CPUS[1]:-${CPUS[0]}}"

ORIGIN_PID=""
RINGD_PID=""
LOADGEN_PID=""
SAMPLER_PID=""
FLOOD_PID=""
PIPE_HARD_SAVED=""
cleanup() {
    local rc=$?
    [[ -n "$FLOOD_PID" ]] && stop_pid "$FLOOD_PID" TERM
    [[ -n "$LOADGEN_PID" ]] && stop_pid "$LOADGEN_PID" TERM
    [[ -n "$SAMPLER_PID" ]] && stop_pid "$SAMPLER_PID" TERM
    [[ -n "$RINGD_PID" ]] && stop_pid "$RINGD_PID" TERM
    [[ -n "$ORIGIN_PID" ]] && stop_pid "$ORIGIN_PID" TERM
    if [[ -n "$PIPE_HARD_SAVED" ]]; then
        echo "$PIPE_HARD_SAVED" >/proc/sys/fs/pipe-user-pages-hard || warn "could not restore fs.pipe-user-pages-hard=$PIPE_HARD_SAVED"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

((BUILD)) && (cd "$REPO_ROOT" && cargo build --release -p ringd -p loadgen >&2)
[[ -x "$LOADGEN" ]] || die "no $LOADGEN (build it, or drop --no-build)"
[[ -x "$RINGD_BIN" ]] || die "no $RINGD_BIN (build it, or drop --no-build)"
ensure_nginx ""
make_www
printf '%s\n' '#!/bin/sh' "printf 'Content-Type: text/plain\\r\\n\\r\\nhello from cgi\\n'" >"$DIR/cgi-bin/hello.sh"
chmod +x "$DIR/cgi-bin/hello.sh"

write_nginx_conf() {
    cat >"$DIR/nginx.conf" <<EOF
worker_processes 1;
master_process off;
daemon off;
pid $DIR/nginx.pid;
error_log $DIR/logs/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server { listen 127.0.0.1:$ORIGIN_PORT; root $WWW_DIR; }
}
EOF
}
# write_config [probe]: the ringd config; with "probe", one more route (the SIGHUP change).
write_config() {
    {
        cat <<EOF
[upstreams.origin]
servers = ["127.0.0.1:$ORIGIN_PORT"]
keepalive = 16
max_fails = 3
fail_timeout = "2s"

[cache]
max_bytes = "16MiB"

[[sites]]
hosts = ["_"]
root = "$WWW_DIR"
EOF
        if [[ "${1:-}" == probe ]]; then
            cat <<EOF

  [[sites.routes]]
  path = "/probe"
  respond = { status = 200, body = "reloaded\n" }
EOF
        fi
        cat <<EOF

  [[sites.routes]]
  path = "/api/*"
  proxy = { upstream = "origin", strip_prefix = "/api" }

  [[sites.routes]]
  path = "/cached/*"
  proxy = { upstream = "origin", strip_prefix = "/cached" }
  cache = { default_ttl = "2s" }
EOF
        ((CGI)) && cat <<EOF

  [[sites.routes]]
  path = "/cgi-bin/*"
  cgi = { dir = "$DIR/cgi-bin", timeout = "10s" }
EOF
        :
    } >"$DIR/faults.toml.tmp"
    mv "$DIR/faults.toml.tmp" "$DIR/faults.toml"
}
write_nginx_conf
write_config
cat >"$DIR/mix.txt" <<EOF
20 GET /small.bin
5 GET /medium.bin
{"method":"GET","path":"/medium.bin","headers":{"Range":"bytes=100-4195"},"weight":5}
10 GET /api/small.bin
3 GET /api/medium.bin
20 GET /cached/small.bin
3 GET /missing.html
3 HEAD /small.bin
EOF
((CGI)) && echo "2 GET /cgi-bin/hello.sh" >>"$DIR/mix.txt"

port_busy "$ORIGIN_PORT" && die "port $ORIGIN_PORT is taken (set FAULTS_ORIGIN_PORT)"
port_busy "$RINGD_PORT" && die "port $RINGD_PORT is taken (set FAULTS_RINGD_PORT)"

start_origin() {
    taskset -c "$GEN_CPU" "$(command -v nginx || echo /usr/sbin/nginx)" -c "$DIR/nginx.conf" -p "$DIR" \
        </dev/null >>"$DIR/logs/nginx.out" 2>&1 &
    ORIGIN_PID=$!
    wait_http "http://127.0.0.1:$ORIGIN_PORT/small.bin" 30 "$ORIGIN_PID" || die "the nginx origin did not come up"
}

# start_ringd LOG [PREFIX...]: ringd on RINGD_PORT (the prefix runs it: ulimit, setpriv, ...),
# with the access log in ACCESS_LOG; waits until every kind of route answers.
ACCESS_LOG=""
start_ringd() {
    local log_file="$1" p
    shift
    "$@" taskset -c "$SERVER_CPU" "$RINGD_BIN" --config "$DIR/faults.toml" \
        --listen "127.0.0.1:$RINGD_PORT" --workers 1 --backend "$BACKEND" --access-log "$ACCESS_LOG" \
        --shutdown-timeout "${SHUTDOWN_TIMEOUT}s" </dev/null >>"$log_file" 2>&1 &
    RINGD_PID=$!
    local paths=(/small.bin /api/small.bin /cached/small.bin)
    ((CGI)) && paths+=(/cgi-bin/hello.sh)
    for p in "${paths[@]}"; do
        wait_http "http://127.0.0.1:$RINGD_PORT$p" 30 "$RINGD_PID" ||
            die "ringd did not answer $p; see $log_file"
    done
}

now() { date +%s.%N; }
# event FAULT_DIR NAME [DETAIL]: one line of events.csv, stamped with the wall clock.
event() { printf '%s,%s,%s\n' "$(now)" "$2" "${3:-}" >>"$1/events.csv"; }
sleep_until() { python3 -c "import time,sys; time.sleep(max(0.0, float(sys.argv[1]) - time.time()))" "$1"; }

# The sampler: every 0.5 s, the wall clock, the PID of the ringd now running (from a file the
# script rewrites on restart), its RSS, open fds and CPU ticks (utime + stime).
start_sampler() {
    local fdir="$1"
    echo "t,pid,rss_kib,fds,cpu_ticks" >"$fdir/samples.csv"
    (
        while :; do
            p="$(cat "$fdir/ringd.pid" 2>/dev/null || true)"
            if [[ -n "$p" && -r "/proc/$p/status" ]]; then
                rss="$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo)"
                fds="$(find "/proc/$p/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)"
                cpu="$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo)"
                echo "$(date +%s.%N),$p,$rss,$fds,$cpu"
            fi
            sleep 0.5
        done
    ) >>"$fdir/samples.csv" 2>/dev/null &
    SAMPLER_PID=$!
}

# The emfile flood: N idle connections opened as fast as the kernel lets (the backlog holds
# what ringd cannot accept), held HOLD seconds, then closed; prints how many it opened.
flood_conns() {
    python3 - "$RINGD_PORT" "$1" "$2" <<'EOF'
import socket, sys, time
port, n, hold = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
socks, failed = [], 0
for _ in range(n):
    s = socket.socket()
    s.settimeout(1)
    try:
        s.connect(("127.0.0.1", port))
        socks.append(s)
    except OSError:
        failed += 1
        s.close()
print(f"flood: {len(socks)} connected, {failed} failed", flush=True)
time.sleep(hold)
for s in socks:
    s.close()
print("flood: closed", flush=True)
EOF
}

# probe FAULT_DIR NAME PATH: one curl on a new connection, its status (000 = none) as an event.
probe() {
    local code
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://127.0.0.1:$RINGD_PORT$3" 2>/dev/null || true)"
    event "$1" "$2" "${code:-000}"
}

{
    env_header "scripts/faults.sh"
    echo "ringd:         $("$RINGD_BIN" --version 2>&1 | head -n1) ($RINGD_BIN)"
    echo "nginx:         $(nginx -v 2>&1 | sed 's/.*: //')"
    echo "cpus:          ringd on $SERVER_CPU, loadgen and the nginx origin on $GEN_CPU"
    echo "settings:      backend=$BACKEND faults=$FAULTS secs=$SECS before=$BEFORE down=$DOWN flood=$FLOOD nofile=$NOFILE shutdown-timeout=${SHUTDOWN_TIMEOUT}s"
} >"$OUT/env.txt"
cp "$DIR/mix.txt" "$OUT/"
cp "$DIR/faults.toml" "$OUT/faults.toml"

start_origin

if [[ -z "$RATE" ]]; then
    ACCESS_LOG="$DIR/logs/capacity-access.log"
    start_ringd "$DIR/logs/capacity-ringd.log"
    log "capacity: 5 s closed loop of the mix"
    taskset -c "$GEN_CPU" "$LOADGEN" "http://127.0.0.1:$RINGD_PORT" --requests "$DIR/mix.txt" -t 1 -c 32 \
        -d 5s -q --json "$OUT/capacity.json" >"$OUT/capacity.log" 2>&1 &
    LOADGEN_PID=$!
    wait "$LOADGEN_PID"
    LOADGEN_PID=""
    stop_pid "$RINGD_PID" TERM
    RINGD_PID=""
    CAP="$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['rps'])" "$OUT/capacity.json")"
    RATE="$(python3 -c "print(max(1, round(float('$CAP') * float('$LOAD'))))")"
    echo "rate:          $RATE req/s open loop, 32 connections ($LOAD of $CAP req/s closed loop)" >>"$OUT/env.txt"
else
    echo "rate:          $RATE req/s open loop, 32 connections (--rate)" >>"$OUT/env.txt"
fi
log "load: $RATE req/s for $SECS s per fault; faults: $FAULTS"

run_fault() {
    local f="$1" fdir="$OUT/$1" start t_fault prefix=() rc t0
    rm -rf "$fdir"
    mkdir -p "$fdir"
    echo "t,event,detail" >"$fdir/events.csv"
    ACCESS_LOG="$DIR/logs/$f-access.log"
    rm -f "$ACCESS_LOG"
    write_config
    case "$f" in
    emfile) prefix=(bash -c "ulimit -n $NOFILE"' && exec "$@"' "ulimit-$NOFILE") ;;
    logfull) ACCESS_LOG=/dev/full ;;
    pipes)
        if [[ "$(id -u)" != 0 ]]; then
            warn "pipes: needs root (to lower fs.pipe-user-pages-hard); skipped"
            echo "SKIP: not root" >"$fdir/skipped.txt"
            return 0
        fi
        prefix=(setpriv --bounding-set -sys_resource,-sys_admin --inh-caps -sys_resource,-sys_admin)
        ;;
    esac
    if [[ "$f" == pipes ]]; then
        PIPE_HARD_SAVED="$(cat /proc/sys/fs/pipe-user-pages-hard)"
    fi
    start_ringd "$fdir/ringd.log" "${prefix[@]}"
    echo "$RINGD_PID" >"$fdir/ringd.pid"
    event "$fdir" ringd-started "$RINGD_PID"
    start_sampler "$fdir"
    start=$(($(date +%s) + 2))
    t_fault=$((start + BEFORE))
    event "$fdir" load-start "$start"
    taskset -c "$GEN_CPU" "$LOADGEN" "http://127.0.0.1:$RINGD_PORT" --requests "$DIR/mix.txt" -t 1 -c 32 \
        -R "$RATE" -d "${SECS}s" --start-at "$start" --timeout 5s -q --json "$fdir/load.json" \
        >"$fdir/load.log" 2>&1 &
    LOADGEN_PID=$!
    sleep_until "$t_fault"
    case "$f" in
    sigterm)
        event "$fdir" fault SIGTERM
        t0="$(now)"
        kill -TERM "$RINGD_PID"
        rc=0
        wait "$RINGD_PID" || rc=$?
        event "$fdir" ringd-exited "$rc"
        python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$t0" "$(now)" >"$fdir/drain_s.txt"
        echo "$rc" >"$fdir/exit_status.txt"
        RINGD_PID=""
        probe "$fdir" probe-while-down /small.bin
        start_ringd "$fdir/ringd.log"
        echo "$RINGD_PID" >"$fdir/ringd.pid"
        event "$fdir" ringd-started "$RINGD_PID"
        event "$fdir" fault-end
        ;;
    sighup)
        probe "$fdir" probe-before /probe
        write_config probe
        event "$fdir" fault SIGHUP
        kill -HUP "$RINGD_PID"
        for _ in $(seq 50); do
            [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$RINGD_PORT/probe" || true)" == 200 ]] && break
            sleep 0.1
        done
        probe "$fdir" probe-after /probe
        event "$fdir" fault-end
        ;;
    emfile)
        event "$fdir" fault "flood $FLOOD"
        flood_conns "$FLOOD" 8 >"$fdir/flood.log" 2>&1 &
        FLOOD_PID=$!
        sleep 3
        probe "$fdir" probe-at-limit /small.bin
        wait "$FLOOD_PID" || true
        FLOOD_PID=""
        event "$fdir" fault-end
        sleep 1
        probe "$fdir" probe-after /small.bin
        ;;
    pipes)
        event "$fdir" fault "pipe-user-pages-hard=1"
        echo 1 >/proc/sys/fs/pipe-user-pages-hard
        ((CGI)) && probe "$fdir" probe-during-cgi /cgi-bin/hello.sh
        probe "$fdir" probe-during-medium /medium.bin
        sleep "$DOWN"
        echo "$PIPE_HARD_SAVED" >/proc/sys/fs/pipe-user-pages-hard
        PIPE_HARD_SAVED=""
        event "$fdir" fault-end
        sleep 1
        ((CGI)) && probe "$fdir" probe-after-cgi /cgi-bin/hello.sh
        probe "$fdir" probe-after-medium /medium.bin
        ;;
    logfull)
        # The log is full from the start; mark the fault window as the whole run after BEFORE.
        event "$fdir" fault "access-log=/dev/full"
        sleep "$DOWN"
        event "$fdir" fault-end
        ;;
    upstream)
        event "$fdir" fault "SIGKILL nginx $ORIGIN_PID"
        kill -KILL "$ORIGIN_PID"
        wait "$ORIGIN_PID" 2>/dev/null || true
        ORIGIN_PID=""
        sleep 1
        probe "$fdir" probe-api-down /api/small.bin
        sleep $((DOWN - 1))
        start_origin
        event "$fdir" origin-started "$ORIGIN_PID"
        event "$fdir" fault-end
        sleep 3
        probe "$fdir" probe-api-after /api/small.bin
        ;;
    esac
    rc=0
    wait "$LOADGEN_PID" || rc=$?
    LOADGEN_PID=""
    ((rc == 0)) || warn "$f: loadgen exited $rc; see $fdir/load.log"
    event "$fdir" load-end
    sleep 1
    stop_pid "$SAMPLER_PID" TERM
    SAMPLER_PID=""
    if [[ -n "$RINGD_PID" ]]; then
        kill -0 "$RINGD_PID" 2>/dev/null || event "$fdir" ringd-died
        stop_pid "$RINGD_PID" TERM
        RINGD_PID=""
    fi
    [[ -f "$ACCESS_LOG" && "$ACCESS_LOG" != /dev/full ]] && wc -l <"$ACCESS_LOG" >"$fdir/access_lines.txt"
    log "$f: done"
}

for f in $FAULTS; do
    log "fault: $f"
    run_fault "$f"
done

{
    echo "load average:  $(cut -d' ' -f1-3 /proc/loadavg) (at the end)"
} >>"$OUT/env.txt"
python3 "$SCRIPTS_DIR/faults_report.py" "$OUT" >&2
log "wrote $OUT/summary.md"
