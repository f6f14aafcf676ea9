#!/usr/bin/env bash
# Issue 16's soak: one ringd (ringd-wsgi --config, so that the WSGI app runs in-process beside
# static files, proxy routes, a caching route, CGI and an HTTPS site) under open-loop mixed traffic at a
# fraction of its measured capacity, minute after minute. Each minute is one loadgen run of 60 s
# (so its p99.9 is that minute's own, from a full histogram); after each, ringd's RSS (master
# and workers) and the worker's fd count are sampled. Writes minutes.csv, env.txt, the loadgen
# JSON of every minute and a generated summary.md (zero errors; RSS and fds flat after warm-up).
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<EOF
Usage: scripts/soak-mixed.sh [options]

Starts nginx (the origin of the proxy routes; on the loadgen CPU) and

  ringd-wsgi --config soak.toml --workers 1 --threads 2      (on the first CPU)

whose site serves, from one worker: static files (/small.bin, /medium.bin, ranges of it),
a proxy route (/api/ -> nginx), a caching proxy route (/cached/, default_ttl 2s, so hits and
refreshes both happen), the WSGI hello app (/app/, and POST /app/echo) and a CGI shell script
(/cgi-bin/hello.sh), plus 404s and HEADs. The same listener also carries an HTTPS site
(localhost, a certificate made by openssl per run) with the same routes. It measures the
capacity with a 10 s closed-loop run of the plain mix, then, for --minutes one-minute runs,
drives three open-loop loadgen streams at once whose rates add up to --load times it:
  plain   the mix over plain HTTP, keep-alive, 64 connections  (the rest of the rate)
  tls     the mix over TLS 1.3, keep-alive, 16 connections      (--tls-share of the rate)
  hs      GET /small.bin over TLS, a new connection and a full handshake per request
          (--hs-rate req/s, taken out of the tls share)

Options:
  --minutes N     minutes of soak (default 30)
  --load F        fraction of the measured capacity (default 0.5)
  --tls-share F   part of that rate sent over TLS (default 0.2; 0 turns the TLS streams off)
  --hs-rate N     of the TLS part, requests/s that each make a new connection (default 50)
  --out DIR       output directory (default results/<YYYY-MM-DD>-<host>-soak-mixed)
  --no-build      use target/release/loadgen as it is (default: cargo build --release)
  -h, --help      this text

Needs ringd-wsgi in .venv/ (scripts/test-peers.sh installs it), nginx (installed from
Debian's packages when missing) and openssl (for the TLS streams). Loopback only; every process it starts is stopped by its PID
when it exits, also on Ctrl-C.
EOF
}

MINUTES=30
LOAD=0.5
TLS_SHARE=0.2
HS_RATE=50
OUT=""
BUILD=1
while (($#)); do
    case "$1" in
    --minutes) MINUTES="${2:?--minutes needs a value}" && shift ;;
    --load) LOAD="${2:?--load needs a value}" && shift ;;
    --tls-share) TLS_SHARE="${2:?--tls-share needs a value}" && shift ;;
    --hs-rate) HS_RATE="${2:?--hs-rate needs a value}" && shift ;;
    --out) OUT="${2:?--out needs a value}" && shift ;;
    --no-build) BUILD=0 ;;
    -h | --help) usage && exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
done
[[ "$MINUTES" =~ ^[1-9][0-9]*$ ]] || die "--minutes wants a whole number of minutes"

HOST="$(hostname -s 2>/dev/null || echo host)"
OUT="${OUT:-$REPO_ROOT/results/$(date +%F)-$HOST-soak-mixed}"
mkdir -p "$OUT"
DIR="$RUN_DIR/soak-mixed"
mkdir -p "$DIR/cgi-bin" "$DIR/logs"
ORIGIN_PORT="${SOAK_ORIGIN_PORT:-18131}"
RINGD_PORT="${SOAK_RINGD_PORT:-18132}"
LOADGEN="$REPO_ROOT/target/release/loadgen"
RINGD_WSGI="$VENV_DIR/bin/ringd-wsgi"
mapfile -t CPUS < <(expand_cpus "$(taskset -pc $$ | sed 's/.*: //')")
SERVER_CPU="${CPUS[0]}"
GEN_CPU="${CPUS[1]:-${CPUS[0]}}"

ORIGIN_PID=""
RINGD_PID=""
LOADGEN_PID=""
TLS_PIDS=()
cleanup() {
    local rc=$?
    local p
    for p in "${TLS_PIDS[@]}"; do stop_pid "$p" TERM; done
    [[ -n "$LOADGEN_PID" ]] && stop_pid "$LOADGEN_PID" TERM
    [[ -n "$RINGD_PID" ]] && stop_pid "$RINGD_PID" TERM
    [[ -n "$ORIGIN_PID" ]] && stop_pid "$ORIGIN_PID" TERM
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

((BUILD)) && (cd "$REPO_ROOT" && cargo build --release -p loadgen >&2)
[[ -x "$LOADGEN" ]] || die "no $LOADGEN (build it, or drop --no-build)"
[[ -x "$RINGD_WSGI" ]] || die "no $RINGD_WSGI: run scripts/test-peers.sh first"
ensure_nginx ""
make_www
TLS_ON="$(python3 -c "print(1 if float('$TLS_SHARE') > 0 else 0)")"
if ((TLS_ON)); then
    command -v openssl >/dev/null || die "the TLS streams need openssl (or --tls-share 0)"
    # A CA and an ECDSA P-256 leaf for localhost; loadgen trusts the CA.
    printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$DIR/leaf.ext"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
        -subj "/CN=ringd soak CA" -keyout "$DIR/ca.key" -out "$DIR/ca.pem" 2>/dev/null ||
        die "openssl could not make the soak CA"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
        -keyout "$DIR/leaf.key" -out "$DIR/leaf.csr" 2>/dev/null || die "openssl: leaf key"
    openssl x509 -req -in "$DIR/leaf.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" \
        -CAcreateserial -days 30 -extfile "$DIR/leaf.ext" -out "$DIR/leaf.pem" 2>/dev/null ||
        die "openssl: leaf certificate"
fi
printf '%s\n' '#!/bin/sh' "printf 'Content-Type: text/plain\\r\\n\\r\\nhello from cgi\\n'" >"$DIR/cgi-bin/hello.sh"
chmod +x "$DIR/cgi-bin/hello.sh"

cat >"$DIR/nginx.conf" <<EOF
worker_processes 1;
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
routes() {
    cat <<EOF
  [[sites.routes]]
  path = "/api/*"
  proxy = { upstream = "origin", strip_prefix = "/api" }

  [[sites.routes]]
  path = "/cached/*"
  proxy = { upstream = "origin", strip_prefix = "/cached" }
  cache = { default_ttl = "2s" }

  [[sites.routes]]
  path = "/cgi-bin/*"
  cgi = { dir = "$DIR/cgi-bin", timeout = "10s" }

  [[sites.routes]]
  path = "/app/*"
  wsgi = { app = "wsgi_bench:application" }
EOF
}
{
    cat <<EOF
[upstreams.origin]
servers = ["127.0.0.1:$ORIGIN_PORT"]
keepalive = 16

[cache]
max_bytes = "16MiB"

[[sites]]
hosts = ["_"]
root = "$WWW_DIR"

EOF
    routes
    if ((TLS_ON)); then
        cat <<EOF

[[sites]]
hosts = ["localhost"]
root = "$WWW_DIR"
tls = { cert = "$DIR/leaf.pem", key = "$DIR/leaf.key" }

EOF
        routes
    fi
} >"$DIR/soak.toml"
body="$(head -c 2048 /dev/zero | tr '\0' 'p')"
cat >"$DIR/mix.txt" <<EOF
20 GET /small.bin
5 GET /medium.bin
{"method":"GET","path":"/medium.bin","headers":{"Range":"bytes=100-4195"},"weight":5}
10 GET /api/small.bin
20 GET /cached/small.bin
10 GET /app/
{"method":"POST","path":"/app/echo","body":"$body","weight":3}
2 GET /cgi-bin/hello.sh
3 GET /missing.html
3 HEAD /small.bin
EOF

port_busy "$ORIGIN_PORT" && die "port $ORIGIN_PORT is taken (set SOAK_ORIGIN_PORT)"
port_busy "$RINGD_PORT" && die "port $RINGD_PORT is taken (set SOAK_RINGD_PORT)"
taskset -c "$GEN_CPU" "$(command -v nginx || echo /usr/sbin/nginx)" -c "$DIR/nginx.conf" -p "$DIR" \
    </dev/null >"$DIR/logs/nginx.out" 2>&1 &
ORIGIN_PID=$!
(cd "$SCRIPTS_DIR/peers" && exec taskset -c "$SERVER_CPU" "$RINGD_WSGI" --config "$DIR/soak.toml" \
    --bind "127.0.0.1:$RINGD_PORT" --workers 1 --threads 2) </dev/null >"$DIR/logs/ringd.out" 2>&1 &
RINGD_PID=$!
wait_http "http://127.0.0.1:$ORIGIN_PORT/small.bin" 30 "$ORIGIN_PID" || die "the nginx origin did not come up"
for p in /small.bin /api/small.bin /cached/small.bin /app/ /cgi-bin/hello.sh; do
    wait_http "http://127.0.0.1:$RINGD_PORT$p" 30 "$RINGD_PID" || die "ringd-wsgi did not answer $p; see $DIR/logs/ringd.out"
done
if ((TLS_ON)); then
    curl -fsS --cacert "$DIR/ca.pem" "https://localhost:$RINGD_PORT/small.bin" -o /dev/null ||
        die "ringd-wsgi did not answer https://localhost:$RINGD_PORT/small.bin; see $DIR/logs/ringd.out"
fi

# ringd's processes: the master and its workers (their RSS summed); fds of the worker(s).
tree_pids() { echo "$RINGD_PID"; pgrep -P "$RINGD_PID" 2>/dev/null || true; }
rss_kib() {
    local p t=0 v
    for p in $(tree_pids); do
        v="$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)"
        t=$((t + ${v:-0}))
    done
    echo "$t"
}
fds() {
    local p t=0
    for p in $(pgrep -P "$RINGD_PID" 2>/dev/null || true); do
        t=$((t + $(find "/proc/$p/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)))
    done
    echo "$t"
}

{
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: $(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "kernel: $(uname -r)"
    echo "cpus: ringd on $SERVER_CPU, loadgen and the nginx origin on $GEN_CPU"
    echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "ringd-wsgi: $("$RINGD_WSGI" --version 2>&1 | head -n1)"
    echo "nginx: $(nginx -v 2>&1 | sed 's/.*: //')"
    echo "config: $DIR/soak.toml"
    echo "mix: $DIR/mix.txt"
} >"$OUT/env.txt"
cp "$DIR/soak.toml" "$DIR/mix.txt" "$OUT/"

log "capacity: 10 s closed loop of the mix"
taskset -c "$GEN_CPU" "$LOADGEN" "http://127.0.0.1:$RINGD_PORT" --requests "$DIR/mix.txt" -t 1 -c 32 \
    -d 10s --json "$OUT/capacity.json" >"$OUT/capacity.log" 2>&1 &
LOADGEN_PID=$!
wait "$LOADGEN_PID"
LOADGEN_PID=""
CAP="$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['rps'])" "$OUT/capacity.json")"
RATE="$(python3 -c "print(max(1, round(float('$CAP') * float('$LOAD'))))")"
log "capacity $CAP req/s; soak at $RATE req/s for $MINUTES min"
echo "capacity: $CAP req/s (closed loop, 32 connections); soak rate: $RATE req/s ($LOAD of it)" >>"$OUT/env.txt"
read -r PLAIN_RATE TLS_RATE HS < <(python3 -c "
r, share, hs = int('$RATE'), float('$TLS_SHARE'), int('$HS_RATE')
tls = round(r * share)
hs = min(hs, tls // 2) if tls else 0
print(max(1, r - tls), tls - hs, hs)")
if ((TLS_ON)); then
    echo "streams: plain $PLAIN_RATE req/s (keep-alive, 64 connections); tls $TLS_RATE req/s (TLS 1.3, keep-alive, 16 connections); hs $HS req/s (TLS, a new connection and a full handshake per request)" >>"$OUT/env.txt"
    printf '%s\n' "20 GET /small.bin" "5 GET /medium.bin" \
        '{"method":"GET","path":"/medium.bin","headers":{"Range":"bytes=100-4195"},"weight":5}' \
        "10 GET /api/small.bin" "20 GET /cached/small.bin" "10 GET /app/" "2 GET /cgi-bin/hello.sh" \
        "3 GET /missing.html" >"$DIR/mix-tls.txt"
    cp "$DIR/mix-tls.txt" "$OUT/"
fi

echo "minute,rss_kib,fds" >"$OUT/minutes.csv"
echo "0,$(rss_kib),$(fds)" >>"$OUT/minutes.csv"
for ((m = 1; m <= MINUTES; m++)); do
    TLS_PIDS=()
    if ((TLS_ON)); then
        taskset -c "$GEN_CPU" "$LOADGEN" "https://localhost:$RINGD_PORT" --tls-ca "$DIR/ca.pem" \
            --requests "$DIR/mix-tls.txt" -t 1 -c 16 -R "$TLS_RATE" -d 60s \
            --json "$OUT/minute-$m-tls.json" >"$OUT/minute-$m-tls.log" 2>&1 &
        TLS_PIDS+=($!)
        if ((HS > 0)); then
            taskset -c "$GEN_CPU" "$LOADGEN" "https://localhost:$RINGD_PORT/small.bin" \
                --tls-ca "$DIR/ca.pem" --tls-resume off --no-keepalive -t 1 -c 8 -R "$HS" -d 60s \
                --json "$OUT/minute-$m-hs.json" >"$OUT/minute-$m-hs.log" 2>&1 &
            TLS_PIDS+=($!)
        fi
    fi
    taskset -c "$GEN_CPU" "$LOADGEN" "http://127.0.0.1:$RINGD_PORT" --requests "$DIR/mix.txt" -t 1 -c 64 \
        -R "$PLAIN_RATE" -d 60s --json "$OUT/minute-$m.json" >"$OUT/minute-$m.log" 2>&1 &
    LOADGEN_PID=$!
    wait "$LOADGEN_PID" || die "loadgen failed in minute $m; see $OUT/minute-$m.log"
    LOADGEN_PID=""
    for p in "${TLS_PIDS[@]}"; do
        wait "$p" || die "a TLS loadgen stream failed in minute $m; see $OUT/minute-$m-*.log"
    done
    TLS_PIDS=()
    kill -0 "$RINGD_PID" 2>/dev/null || die "ringd-wsgi exited during minute $m"
    echo "$m,$(rss_kib),$(fds)" >>"$OUT/minutes.csv"
    log "minute $m/$MINUTES done"
done

python3 "$SCRIPTS_DIR/benchtool.py" soak-mixed "$OUT" | tee "$OUT/summary.md" >&2
