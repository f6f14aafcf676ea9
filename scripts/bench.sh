#!/usr/bin/env bash
# One command that benchmarks ringd (every backend it has) against nginx, Caddy and gunicorn on this
# machine: builds, starts and pins the servers, runs `loadgen compare` per scenario, and writes
# results/<date>-<host>/ (reports, raw JSON, histograms, env.txt) plus results/README.md.
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# nginx also listens here with `deferred`, so that the connect scenario can compare ringd's
# deferred accept (--defer-accept, on by default) with nginx's.
export NGINX_DEFERRED_PORT="${NGINX_DEFERRED_PORT:-18084}"

ALL_SCENARIOS="small,pipelined,medium,large,connect,latency,hello,sites,proxy-small,proxy-large,proxy-gunicorn,cache-hit,compress,tls-small,tls-handshake,tls-large,wsgi-hello,wsgi-10k,wsgi-echo,cgi-hello,stack"
# ringd's backend as a proxy: uring is what `--backend auto` picks for a proxying config.
PROXY_BACKEND="${PROXY_BACKEND:-uring}"
# Side scenarios: ringd against itself (sites) or in front of an upstream (proxy-*); a run of
# only these is named apart (results/<date>-<host>-sites, -proxy) and never the headline.
SIDE_SCENARIO_RE='^(sites|proxy-small|proxy-large|proxy-gunicorn|cache-hit|compress|tls-small|tls-handshake|tls-large|wsgi-hello|wsgi-10k|wsgi-echo|cgi-hello|stack)$'
# proxy-gunicorn: the slow clients (issue 12), their response and the gunicorn settings.
SLOW_CLIENTS="${SLOW_CLIENTS:-50}"
SLOW_RATE="${SLOW_RATE:-1KiB/s}"
SLOW_PATH=/files/1mib.bin
GUNICORN_UPSTREAM_WORKERS=2
GUNICORN_GTHREAD_THREADS=4
# Set here, above usage(), which names them.
FCGIWRAP_CHILDREN="${FCGIWRAP_CHILDREN:-4}"
CGI_CONNECTIONS="${CGI_CONNECTIONS:-16}"
WSGI_GTHREAD_THREADS="${WSGI_GTHREAD_THREADS:-8}"

usage() {
    cat <<EOF
Usage: scripts/bench.sh [options]

Builds ringd and loadgen (release), starts ringd once per backend it has, nginx, Caddy and
gunicorn (scripts/peers.sh), pins the servers and the generator to separate cores and runs
'loadgen compare' for each scenario (nginx is the baseline):

  small      1000-byte file, keep-alive, C connections, closed loop
  pipelined  the same with pipelining depth 16 (gunicorn left out: it does not pipeline)
             (Caddy takes part in every static-file scenario, configured per its docs)
  medium     100 KiB file            large   10 MiB file (bytes/s matters)
  connect    a new connection per request
  latency    open loop at 50% and 80% of the slowest server's closed-loop maximum (from the
             small scenario, run first if needed), percentile spectrum compared
  hello      ringd and nginx serve hello.txt, gunicorn its hello WSGI app
  sites      issue 11's speed bar: ringd (uring) with --config of 10 sites x 20 routes
             (scripts/benchtool.py sites-config, checked with 'ringd check'), the request
             (1000-byte file, Host of the last site) answered by the last site's last route,
             against the same ringd flag-only on the same root: targets ringd-flags (the
             baseline) and ringd-config, no peers; sites/summary.md has the server CPU/req
             ratio per round and the verdict (bar <= 1.10x)

  Proxy scenarios (issue 12): each proxy on the first server CPU with one worker (ringd
  --workers 1 --backend $PROXY_BACKEND with a [upstreams] config, nginx worker_processes 1, HAProxy
  nbthread 1, Caddy GOMAXPROCS=1), the upstream and loadgen on the loadgen CPUs; upstream
  keep-alive on for every proxy (scripts/peers/*proxy*, haproxy.cfg.tmpl). Targets ringd,
  nginx (the baseline), haproxy and caddy; CPU/req is the proxy process's own (its /proc), the
  machine columns count the upstream too. Each writes summary.md (scripts/benchtool.py proxy)
  with the verdicts, every round's ratios and the load average at the start:
  TLS scenarios (issue 15): ringd (--backend uring, --tls-cert) against nginx (ssl_protocols
  TLSv1.3), the same certificate (ECDSA P-256, made per run by openssl) and cipher (the
  client's first choice, TLS_AES_256_GCM_SHA384), $WORKERS worker(s) each; loadgen offers TLS 1.3 only.
  tls-small       1000-byte file, keep-alive: ringd's req/s >= 1.3x nginx's, CPU/req <= 0.7x
  tls-handshake   1000-byte file, a new connection per request: full handshakes (resumption
                  off) and resumed ones (tickets), handshakes/s and CPU per handshake
  tls-large       10 MiB file, keep-alive: ringd's bytes/s >= nginx's (without the kernel's
                  tls ULP ringd reads and encrypts in user space, as nginx without kTLS does;
                  with it ringd runs kTLS and sends by sendfile; the report's title says which)

  proxy-small     in front of nginx serving the 1000-byte file: ringd's CPU/req <= 0.5x
                  nginx's and <= HAProxy's; req/s >= 1.3x nginx's where ringd is the limit;
                  also relay and relay-uring (loadgen's relay binary on epoll and io_uring: a
                  TCP relay, no HTTP, one upstream connection per client), whose CPU/req is
                  the floor of a proxy's here
  proxy-large     in front of nginx serving the 10 MiB file: ringd's bytes/s >= nginx's at
                  no more CPU per byte
  wsgi-hello      issue 13: the WSGI app scripts/peers/wsgi_bench.py served by ringd-wsgi
                  (.venv, pip install ./python), gunicorn sync, gunicorn gthread
                  ($WSGI_GTHREAD_THREADS threads) and Granian (--interface wsgi), each 1 worker
                  process on the first server CPU: the 14-byte hello; ringd's req/s >= 1.3x
                  Granian's at <= 0.75x its CPU/req, and >= 10x gunicorn sync's
  wsgi-10k        the same servers, a 10 KiB body
  wsgi-echo       the same servers, POST of 10 KiB echoed
  cgi-hello       issue 13: a shell CGI script printing a header and a line, run by ringd
                  (--cgi, uring backend, 1 worker) and by nginx + fcgiwrap (Debian's
                  packages; 1 nginx worker, $FCGIWRAP_CHILDREN fcgiwrap processes), all on the
                  first server CPU, $CGI_CONNECTIONS connections: ringd's req/s >= 1.2x at no
                  more CPU per request, the scripts' CPU included for both
  stack           issue 13: one ringd-wsgi (static files + the WSGI app in-process, 1 worker)
                  against nginx (1 worker) -> gunicorn (sync, $GUNICORN_UPSTREAM_WORKERS workers) serving the
                  same site, each whole stack on the first server CPU: req/s and the whole
                  stack's CPU per request for the app (stack-app) and a static file
                  (stack-static), reported
  proxy-gunicorn  in front of gunicorn's hello app (scripts/peers/app.py upstream), once
                  with sync workers (proxy-gunicorn-sync) and once with gthread
                  (proxy-gunicorn-gthread, $GUNICORN_GTHREAD_THREADS threads), $GUNICORN_UPSTREAM_WORKERS workers: ringd's req/s >= nginx's;
                  then, for ringd and nginx, the hello load again (slow-ringd/, slow-nginx/)
                  while $SLOW_CLIENTS slow clients (a second loadgen in the background,
                  --read-rate $SLOW_RATE) take $SLOW_PATH through the same proxy: ringd's
                  p99 with them <= 2x its p99 without them (nginx's reported)

  Cache scenarios (issue 14): nginx serves the files (1 worker, loadgen CPUs); in front of it,
  each on the first server CPU with one worker: ringd-cache (--backend uring, config
  scripts/peers/ringd-cache.toml.tmpl: cache default_ttl 1h, compress) and nginx with
  proxy_cache + gzip level 5 (NGINX_PROXY_CACHE=1, the baseline); beside them ringd-static
  (--backend uring, serving the same root itself). summary.md: scripts/benchtool.py cache.
  cache-hit       the 1000-byte file from the cache: ringd-cache's req/s >= 0.9x ringd-static's
                  and >= 1.3x nginx's, at <= 0.6x nginx's CPU/req
  compress        a 100 KiB HTML page (page.html) with Accept-Encoding: gzip, cached
                  compressed: req/s and bytes per response of ringd-cache and nginx

Results go to results/<YYYY-MM-DD>-<host>/<scenario>/ with env.txt beside them (a run of only
--scenarios sites: results/<YYYY-MM-DD>-<host>-sites/, of only proxy scenarios (and sites):
results/<YYYY-MM-DD>-<host>-proxy/), and results/README.md is regenerated (scripts/benchtool.py
headline) from the newest run with a static-file scenario against nginx.

Options:
  --workers N          server workers/processes for every target (default: half the cores, >= 1)
  --rounds R           interleaved rounds per target (default 3)
  --duration D         duration of each measured run, e.g. 10s (default 10s)
  --warmup D           warm-up before each measured run, measured apart by loadgen (default 1s;
                       none with --smoke)
  --connections C      connections (default 64)
  --pipeline N         depth for the pipelined scenario (default 16)
  --scenarios LIST     comma-separated subset of: $ALL_SCENARIOS
  --backends LIST      ringd backends to try (default: every one 'ringd --help' names)
  --smoke              about 1 s per scenario, 1 round, debug build; checks that every target
                       answered and every report was written; writes to a temp dir (or --out)
  --compare-tuning     run small and connect before and after 'scripts/tune-kernel.sh apply'
                       (root), report the difference, then revert
  --scaling LIST       e.g. 1,2,4,8: small and large for ringd (uring) and nginx with that many
                       workers on that many cores (generator on the rest), plus a plot
  --peers-dir DIR      offline peers: nginx, caddy and haproxy as unpacked .deb (or .deb files),
                       gunicorn wheels
  --out DIR            output directory (default: results/<date>-<host>)
  --server-cpus LIST   CPUs for the servers (default: the first --workers cores, leaving >= 1)
  --gen-cpus LIST      CPUs for loadgen (default: the remaining cores)
  --gunicorn-class C   gunicorn worker class (default sync)
  --release | --debug  build profile (default: release; --smoke defaults to debug)
  --no-build           use the binaries already built (target/<profile>/, or \$RINGD_BIN and
                       \$LOADGEN_BIN when set)
  -h, --help           this text

Ports (environment): RINGD_PORT_BASE=$RINGD_PORT_BASE (+1 uring, +2 epoll, +3 tokio-uring;
sites: +4 ringd-flags, +5 ringd-config; proxy scenarios: +6 ringd as a proxy, +10 ringd-copy,
+11 relay, +12 relay-uring; cache scenarios: +7 ringd-cache, +8 ringd-static),
NGINX_PORT=$NGINX_PORT, CADDY_PORT=$CADDY_PORT, NGINX_DEFERRED_PORT=$NGINX_DEFERRED_PORT (the same nginx with \`listen ...
deferred\`, target nginx-deferred in the connect scenario), GUNICORN_HELLO_PORT=$GUNICORN_HELLO_PORT,
GUNICORN_FILES_PORT=$GUNICORN_FILES_PORT; proxy scenarios: NGINX_PROXY_PORT=$NGINX_PROXY_PORT,
HAPROXY_PORT=$HAPROXY_PORT, CADDY_PROXY_PORT=$CADDY_PROXY_PORT, GUNICORN_UPSTREAM_PORT=$GUNICORN_UPSTREAM_PORT. SLOW_CLIENTS and SLOW_RATE
(environment) change proxy-gunicorn's slow clients; PROXY_BACKEND (default uring, auto's pick)
is ringd's backend in the proxy scenarios; PROXY_KEEPALIVE (default twice --connections, at least
128) is every proxy's bound on idle upstream connections (ringd's and nginx's keepalive,
Caddy's keepalive_idle_conns_per_host; HAProxy keeps every idle one).
EOF
}

# ------------------------------------------------------------------------------ options

WORKERS=""
ROUNDS=3
DURATION=10s
WARMUP=1s
CONNECTIONS=64
PIPELINE=16
SCENARIOS="$ALL_SCENARIOS"
BACKENDS=""
SMOKE=0
COMPARE_TUNING=0
SCALING=""
PEERS_DIR=""
OUT=""
SERVER_CPUS=""
GEN_CPUS=""
GUNICORN_CLASS=sync
PROFILE=""
BUILD=1
ROUNDS_SET=0
DURATION_SET=0
WARMUP_SET=0
ORIG_ARGS=("$@")

while (($#)); do
    case "$1" in
    --workers) WORKERS="${2:?--workers needs a value}" && shift ;;
    --rounds) ROUNDS="${2:?--rounds needs a value}" && ROUNDS_SET=1 && shift ;;
    --duration) DURATION="${2:?--duration needs a value}" && DURATION_SET=1 && shift ;;
    --warmup) WARMUP="${2:?--warmup needs a value}" && WARMUP_SET=1 && shift ;;
    --connections) CONNECTIONS="${2:?--connections needs a value}" && shift ;;
    --pipeline) PIPELINE="${2:?--pipeline needs a value}" && shift ;;
    --scenarios) SCENARIOS="${2:?--scenarios needs a value}" && shift ;;
    --backends) BACKENDS="${2:?--backends needs a value}" && shift ;;
    --smoke) SMOKE=1 ;;
    --compare-tuning) COMPARE_TUNING=1 ;;
    --scaling) SCALING="${2:?--scaling needs a list such as 1,2,4,8}" && shift ;;
    --peers-dir) PEERS_DIR="${2:?--peers-dir needs a value}" && shift ;;
    --out) OUT="${2:?--out needs a value}" && shift ;;
    --server-cpus) SERVER_CPUS="${2:?--server-cpus needs a value}" && shift ;;
    --gen-cpus) GEN_CPUS="${2:?--gen-cpus needs a value}" && shift ;;
    --gunicorn-class) GUNICORN_CLASS="${2:?--gunicorn-class needs a value}" && shift ;;
    --release) PROFILE=release ;;
    --debug) PROFILE=debug ;;
    --no-build) BUILD=0 ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
done

is_posint() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }
is_posint "$ROUNDS" || die "--rounds wants a positive integer, got '$ROUNDS'"
is_posint "$CONNECTIONS" || die "--connections wants a positive integer, got '$CONNECTIONS'"
is_posint "$PIPELINE" || die "--pipeline wants a positive integer, got '$PIPELINE'"
[[ "$DURATION" =~ ^[0-9]+(\.[0-9]+)?(ms|s|m)?$ ]] || die "--duration wants e.g. 10s, got '$DURATION'"
[[ -z "$WARMUP" || "$WARMUP" =~ ^[0-9]+(\.[0-9]+)?(ms|s|m)?$ ]] || die "--warmup wants e.g. 2s, got '$WARMUP'"
[[ -z "$PEERS_DIR" || -d "$PEERS_DIR" ]] || die "--peers-dir $PEERS_DIR is not a directory"
[[ -n "$PEERS_DIR" ]] && PEERS_DIR="$(cd "$PEERS_DIR" && pwd)"
((COMPARE_TUNING == 0 || ${#SCALING} == 0)) || die "--compare-tuning and --scaling are separate runs; pick one"
# The proxies' bound on idle upstream connections (ringd's and nginx's `keepalive`, Caddy's idle
# connections per host): above the client connections, so that none of them opens upstream
# connections in the measured run (nginx closes any connection returned beyond its bound).
PROXY_KEEPALIVE="${PROXY_KEEPALIVE:-$((CONNECTIONS * 2 > 128 ? CONNECTIONS * 2 : 128))}"
is_posint "$PROXY_KEEPALIVE" || die "PROXY_KEEPALIVE wants a positive integer, got '$PROXY_KEEPALIVE'"
export PROXY_KEEPALIVE

declare -A SCENARIO_OK=()
IFS=',' read -r -a SCENARIO_LIST <<<"$SCENARIOS"
for s in "${SCENARIO_LIST[@]}"; do
    case "$s" in
    small | pipelined | medium | large | connect | latency | hello | sites | proxy-small | proxy-large | proxy-gunicorn | cache-hit | compress | tls-small | tls-handshake | tls-large | wsgi-hello | wsgi-10k | wsgi-echo | cgi-hello | stack)
        SCENARIO_OK[$s]=1
        ;;
    *) die "unknown scenario '$s' (want a subset of $ALL_SCENARIOS)" ;;
    esac
done

# True when a scenario other than the side ones (sites, proxy-*) is selected: they need the
# static-file peers and every backend.
main_scenarios() {
    local s
    for s in "${!SCENARIO_OK[@]}"; do [[ "$s" =~ $SIDE_SCENARIO_RE ]] || return 0; done
    return 1
}

# True when a cache scenario is selected.
cache_scenarios() {
    [[ -n "${SCENARIO_OK[cache-hit]:-}${SCENARIO_OK[compress]:-}" ]]
}

# True when a TLS scenario is selected.
tls_scenarios() {
    local s
    for s in "${!SCENARIO_OK[@]}"; do [[ "$s" == tls-* ]] && return 0; done
    return 1
}

# True when a proxy scenario is selected.
proxy_scenarios() {
    local s
    for s in "${!SCENARIO_OK[@]}"; do [[ "$s" == proxy-* ]] && return 0; done
    return 1
}

if ((SMOKE)); then
    ((DURATION_SET)) || DURATION=1s
    ((ROUNDS_SET)) || ROUNDS=1
    ((WARMUP_SET)) || WARMUP=""
    PROFILE="${PROFILE:-debug}"
fi
PROFILE="${PROFILE:-release}"

NCPU="$(ncpus)"
if [[ -z "$WORKERS" ]]; then
    WORKERS=$((NCPU / 2))
    ((WORKERS >= 1)) || WORKERS=1
fi
is_posint "$WORKERS" || die "--workers wants a positive integer, got '$WORKERS'"

# Servers on the first cores, the generator on the rest.
layout_cpus() {
    local workers="$1" n="$NCPU" s
    if ((n == 1)); then
        L_SERVER_CPUS=0 L_GEN_CPUS=0
        warn "one CPU: servers and generator share it; figures will understate every server"
        return
    fi
    s=$((workers < n - 1 ? workers : n - 1))
    L_SERVER_CPUS="$(cpu_range 0 $((s - 1)))"
    L_GEN_CPUS="$(cpu_range "$s" $((n - 1)))"
}
layout_cpus "$WORKERS"
SERVER_CPUS="${SERVER_CPUS:-$L_SERVER_CPUS}"
GEN_CPUS="${GEN_CPUS:-$L_GEN_CPUS}"
expand_cpus "$SERVER_CPUS" >/dev/null
expand_cpus "$GEN_CPUS" >/dev/null

HOST="$(hostname -s 2>/dev/null || hostname)"
if [[ -z "$OUT" ]]; then
    if ((SMOKE)); then
        OUT="$(mktemp -d "${TMPDIR:-/tmp}/ringd-smoke.XXXXXX")"
    else
        base="$REPO_ROOT/results/$(date +%F)-$HOST"
        # A run of side scenarios alone is a side run, named apart from full runs.
        # Its name lists the families it ran: -proxy, -cache-cgi-stack, ...
        if ! main_scenarios; then
            local_fams=""
            for fam in sites proxy cache tls wsgi cgi stack; do
                for s in "${!SCENARIO_OK[@]}"; do
                    case "$fam:$s" in
                    sites:sites | proxy:proxy-* | cache:cache-hit | cache:compress | tls:tls-* | \
                        wsgi:wsgi-* | cgi:cgi-* | stack:stack)
                        local_fams+="-$fam"
                        break
                        ;;
                    esac
                done
            done
            base+="$local_fams"
        fi
        OUT="$base"
        i=2
        while [[ -e "$OUT" ]]; do
            OUT="$base-$i"
            i=$((i + 1))
        done
    fi
fi
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
ENV_TXT="$OUT/env.txt"
# Where scenario directories go: OUT, or a sub-directory of it in tuning and scaling runs.
BASE="$OUT"
MANIFEST="$OUT/scenarios.tsv"

# ------------------------------------------------------------------------------ cleanup

declare -A RINGD_PID=() RINGD_PORT=()
PEERS_STARTED=0
LOADGEN_PID=""
SPREAD_PID=""
declare -A RELAY_PID=() RELAY_PORT=()
TUNED=0
CLEANED=0

stop_ringds() {
    local b
    for b in "${!RINGD_PID[@]}"; do
        stop_pid "${RINGD_PID[$b]}" TERM
        rm -f "$RUN_DIR/ringd-$b.pid"
        unset "RINGD_PID[$b]"
    done
}

stop_peers() {
    if ((PEERS_STARTED)); then
        "$SCRIPTS_DIR/peers.sh" stop || warn "peers.sh stop failed"
        PEERS_STARTED=0
    fi
}

revert_tuning() {
    if ((TUNED)); then
        log "reverting kernel settings"
        record "$SCRIPTS_DIR/tune-kernel.sh" revert
        "$SCRIPTS_DIR/tune-kernel.sh" revert || warn "tune-kernel.sh revert failed; run it by hand"
        TUNED=0
    fi
}

cleanup() {
    local rc=$?
    ((CLEANED)) && return
    CLEANED=1
    trap - INT TERM
    # TERM, not INT: commands a script starts in the background ignore SIGINT.
    [[ -n "$LOADGEN_PID" ]] && stop_pid "$LOADGEN_PID" TERM
    [[ -n "$SLOW_PID" ]] && stop_pid "$SLOW_PID" TERM
    [[ -n "$SPREAD_PID" ]] && stop_pid "$SPREAD_PID" TERM
    stop_relays
    stop_ringds
    stop_peers
    stop_wsgi
    stop_cgi
    stop_stack
    revert_tuning
    if ((rc != 0)); then
        warn "bench.sh failed (exit $rc); partial output in $OUT"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------------------ environment

# Append a command line to env.txt's list of the exact commands run.
record() {
    quote_cmd "$@" >>"$OUT/commands.txt"
}

write_env() {
    {
        env_header "ringd benchmark environment"
        echo "build profile: $PROFILE"
        echo "workers:       $WORKERS"
        echo "server cpus:   $SERVER_CPUS"
        echo "loadgen cpus:  $GEN_CPUS (threads: $(count_cpus "$GEN_CPUS"))"
        echo "rounds:        $ROUNDS"
        echo "duration:      $DURATION${WARMUP:+ (warm-up $WARMUP)}"
        echo "connections:   $CONNECTIONS"
        echo "pipeline:      $PIPELINE"
        echo "proxy keepalive: $PROXY_KEEPALIVE (idle upstream connections each proxy keeps)"
        echo
        echo "## tool versions"
        echo "rustc:    $(rustc -V 2>/dev/null || echo missing)"
        echo "cargo:    $(cargo -V 2>/dev/null || echo missing)"
        echo "ringd:    $("$RINGD_BIN" --version 2>/dev/null | head -n1 || echo '?') ($RINGD_BIN)"
        echo "loadgen:  $("$LOADGEN_BIN" --version 2>/dev/null | head -n1 || echo '?') ($LOADGEN_BIN)"
        if [[ -n "$NGINX_BIN" ]]; then
            echo "nginx:    $(nginx_cmd -v 2>&1 | head -n1) ($NGINX_BIN)"
            echo "caddy:    $("$CADDY_BIN" version 2>&1 | head -n1) ($CADDY_BIN)"
            echo "gunicorn: $("$GUNICORN_BIN" --version 2>&1 | head -n1) ($GUNICORN_BIN)"
            [[ -n "$HAPROXY_BIN" ]] && echo "haproxy:  $(haproxy_cmd -v 2>&1 | head -n1) ($HAPROXY_BIN)"
        else
            echo "peers:    none (only the sites scenario: ringd against itself)"
        fi
        echo "python3:  $(python3 -V 2>&1)"
        echo
        echo "## limits (this shell; the servers inherit them)"
        echo "RLIMIT_NOFILE soft/hard:  $(ulimit -Sn)/$(ulimit -Hn)"
        echo "RLIMIT_MEMLOCK soft/hard: $(ulimit -Sl)/$(ulimit -Hl) KiB"
        echo
        echo "## kernel settings (scripts/tune-kernel.sh check)"
        "$SCRIPTS_DIR/tune-kernel.sh" check 2>&1 || true
        echo
        echo "## ringd doctor (what this kernel and build offer)"
        timeout 10 "$RINGD_BIN" doctor 2>&1 || true
        echo
        echo "## scaling governor / turbo"
        echo "governor: $(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null || echo 'n/a')"
        echo "no_turbo: $(cat /sys/devices/system/cpu/intel_pstate/no_turbo 2>/dev/null || echo 'n/a')"
    } >"$ENV_TXT"
}

# Close env.txt with each peer's configuration as it ran (the last one started) and the exact
# commands, in order.
finish_env() {
    {
        local f
        for f in "$RUN_DIR/nginx/nginx.conf" "$RUN_DIR/caddy/Caddyfile" \
            "$RUN_DIR/gunicorn-hello.conf.py" "$RUN_DIR/gunicorn-files.conf.py" \
            "$RUN_DIR/ringd-proxy.toml" "$RUN_DIR/ringd-cache.toml" "$RUN_DIR/nginx-proxy/nginx.conf" "$RUN_DIR/haproxy/haproxy.cfg" \
            "$RUN_DIR/caddy-proxy/Caddyfile" "$RUN_DIR/gunicorn-upstream.conf.py"; do
            # Only configs this run wrote (a run of only the sites scenario starts no peer; one of
            # only proxy scenarios starts no static Caddy), not ones left by an earlier run.
            [[ -n "$NGINX_BIN" && -s "$f" && "$f" -nt "$OUT/.started" ]] || continue
            echo
            echo "## peer config: ${f#"$RUN_DIR"/}"
            cat "$f"
        done
        echo
        echo "## commands run (in order)"
        cat "$OUT/commands.txt" 2>/dev/null || true
    } >>"$ENV_TXT"
    rm -f "$OUT/commands.txt" "$OUT/.started"
}

# ------------------------------------------------------------------------------ build

TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
RINGD_BIN="${RINGD_BIN:-$TARGET_DIR/$PROFILE/ringd}"
LOADGEN_BIN="${LOADGEN_BIN:-$TARGET_DIR/$PROFILE/loadgen}"
RELAY_BIN="${RELAY_BIN:-$TARGET_DIR/$PROFILE/relay}"

build() {
    local -a cmd=(cargo build --workspace --bins)
    [[ "$PROFILE" == release ]] && cmd+=(--release)
    if ((BUILD)); then
        log "building: ${cmd[*]}"
        record "${cmd[@]}"
        (cd "$REPO_ROOT" && "${cmd[@]}") >&2
    fi
    [[ -x "$RINGD_BIN" ]] || die "no ringd binary at $RINGD_BIN"
    [[ -x "$LOADGEN_BIN" ]] || die "no loadgen binary at $LOADGEN_BIN"
}

# ------------------------------------------------------------------------------ servers

backend_port() {
    case "$1" in
    uring) echo $((RINGD_PORT_BASE + 1)) ;;
    epoll) echo $((RINGD_PORT_BASE + 2)) ;;
    tokio-uring) echo $((RINGD_PORT_BASE + 3)) ;;
    *) die "unknown backend '$1'" ;;
    esac
}

# The backends this ringd build names in its --help (all three when it does not say).
detect_backends() {
    local help found=() b
    help="$("$RINGD_BIN" --help 2>&1 || true)"
    for b in uring epoll tokio-uring; do
        if grep -Eq "(^|[^-a-z])$b([^-a-z]|$)" <<<"$help"; then found+=("$b"); fi
    done
    ((${#found[@]})) || found=(uring epoll tokio-uring)
    echo "${found[*]}"
}

# Start one ringd per backend; a backend that fails to start is skipped with a message.
start_ringds() {
    local workers="$1" cpus="$2" b port pid log_file
    local -a want
    if [[ -n "$BACKENDS" ]]; then
        IFS=',' read -r -a want <<<"$BACKENDS"
    else
        read -r -a want <<<"$(detect_backends)"
    fi
    for b in "${want[@]}"; do
        port="$(backend_port "$b")"
        # A ringd left behind by an earlier run that was killed outright: ours, by its PID file.
        pid="$(head -n1 "$RUN_DIR/ringd-$b.pid" 2>/dev/null || true)"
        if [[ -n "$pid" ]] && pid_is "$pid" ringd; then
            warn "stopping ringd --backend $b left by an earlier run (PID $pid)"
            stop_pid "$pid" TERM
        fi
        rm -f "$RUN_DIR/ringd-$b.pid"
        if port_busy "$port"; then
            die "port $port for ringd --backend $b is taken (set RINGD_PORT_BASE)"
        fi
        log_file="$RUN_DIR/ringd-$b.log"
        local -a cmd=(taskset -c "$cpus" "$RINGD_BIN" --listen "127.0.0.1:$port" --workers "$workers"
            --backend "$b" "$WWW_DIR")
        record "${cmd[@]}"
        "${cmd[@]}" </dev/null >"$log_file" 2>&1 &
        pid=$!
        echo "$pid" >"$RUN_DIR/ringd-$b.pid"
        if wait_http "http://127.0.0.1:$port/hello.txt" 15 "$pid"; then
            RINGD_PID[$b]="$pid"
            RINGD_PORT[$b]="$port"
            log "ringd --backend $b up on 127.0.0.1:$port (PID $pid, CPUs $cpus)"
        else
            warn "ringd --backend $b did not come up; skipping it. Its output:"
            sed 's/^/    /' "$log_file" | tail -n 15 >&2 || true
            stop_pid "$pid" TERM
            rm -f "$RUN_DIR/ringd-$b.pid"
        fi
    done
    ((${#RINGD_PID[@]})) || die "no ringd backend started (see the messages above)"
}

start_peers() {
    local workers="$1" cpus="$2" only="${3:-}"
    local -a args=(--workers "$workers" --cpus "$cpus" --gunicorn-class "$GUNICORN_CLASS")
    [[ -n "$only" ]] && args+=(--only "$only")
    peers_start "${args[@]}"
}

# peers_start ARGS...: scripts/peers.sh start ARGS (with --peers-dir), recorded.
peers_start() {
    local -a cmd=("$SCRIPTS_DIR/peers.sh" start "$@")
    [[ -n "$PEERS_DIR" ]] && cmd+=(--peers-dir "$PEERS_DIR")
    record "${cmd[@]}"
    PEERS_STARTED=1
    "${cmd[@]}"
    cat "$RUN_DIR/commands.txt" >>"$OUT/commands.txt"
}

start_servers() {
    local workers="$1" cpus="$2" only_peers="${3:-}"
    start_ringds "$workers" "$cpus"
    start_peers "$workers" "$cpus" "$only_peers"
}

stop_servers() {
    stop_ringds
    stop_peers
}

# Ordered ringd target names (ringd-uring, ringd-epoll, ringd-tokio-uring) that are running.
ringd_targets() {
    local b
    for b in uring epoll tokio-uring; do
        [[ -n "${RINGD_PID[$b]:-}" ]] && echo "ringd-$b"
    done
    return 0
}

# URL of target NAME for file PATH (a path under the served root, e.g. /small.bin).
target_url() {
    local name="$1" path="$2"
    case "$name" in
    ringd-tls) echo "https://127.0.0.1:${RINGD_PORT[tls]}$path" ;;
    ringd-*) echo "http://127.0.0.1:${RINGD_PORT[${name#ringd-}]}$path" ;;
    nginx) echo "http://127.0.0.1:$NGINX_PORT$path" ;;
    nginx-deferred) echo "http://127.0.0.1:$NGINX_DEFERRED_PORT$path" ;;
    caddy) echo "http://127.0.0.1:$CADDY_PORT$path" ;;
    gunicorn) echo "http://127.0.0.1:$GUNICORN_FILES_PORT$path" ;;
    gunicorn-hello) echo "http://127.0.0.1:$GUNICORN_HELLO_PORT/" ;;
    ringd-proxy) echo "http://127.0.0.1:${RINGD_PORT[proxy]}$path" ;;
    relay | relay-uring) echo "http://127.0.0.1:${RELAY_PORT[$name]}$path" ;;
    wsgi-*) echo "http://127.0.0.1:${WSGI_PORT[${name#wsgi-}]}$path" ;;
    nginx-cgi) echo "http://127.0.0.1:$NGINX_CGI_PORT$path" ;;
    stack-ringd) echo "http://127.0.0.1:$STACK_RINGD_PORT$path" ;;
    stack-nginx) echo "http://127.0.0.1:$STACK_NGINX_PORT$path" ;;
    nginx-proxy) echo "http://127.0.0.1:$NGINX_PROXY_PORT$path" ;;
    haproxy) echo "http://127.0.0.1:$HAPROXY_PORT$path" ;;
    caddy-proxy) echo "http://127.0.0.1:$CADDY_PROXY_PORT$path" ;;
    nginx-tls) echo "https://127.0.0.1:$NGINX_TLS_PORT$path" ;;
    esac
}

# The PID whose CPU time is the server's: ringd's process, nginx's or gunicorn's master.
# loadgen adds up the whole process tree (threads, live worker processes and reaped children),
# so the master stands for its workers, whose time reaches the master's own counters only
# after they exit.
target_pid() {
    local pids
    case "$1" in
    ringd-*) echo "${RINGD_PID[${1#ringd-}]}" ;;
    wsgi-*) echo "${WSGI_PID[${1#wsgi-}]}" ;;
    nginx-cgi) echo "$CGI_WRAPPER_PID" ;;
    stack-ringd) echo "$STACK_RINGD_PID" ;;
    stack-nginx) echo "$STACK_WRAPPER_PID" ;;
    relay | relay-uring) echo "${RELAY_PID[$1]}" ;;
    nginx | nginx-deferred | nginx-tls) pids="$("$SCRIPTS_DIR/peers.sh" pids nginx)" && echo "${pids%% *}" ;;
    caddy) pids="$("$SCRIPTS_DIR/peers.sh" pids caddy)" && echo "${pids%% *}" ;;
    gunicorn) pids="$("$SCRIPTS_DIR/peers.sh" pids gunicorn-files)" && echo "${pids%% *}" ;;
    gunicorn-hello) pids="$("$SCRIPTS_DIR/peers.sh" pids gunicorn-hello)" && echo "${pids%% *}" ;;
    nginx-proxy | haproxy | caddy-proxy) pids="$("$SCRIPTS_DIR/peers.sh" pids "$1")" && echo "${pids%% *}" ;;
    esac
}

# ------------------------------------------------------------------------------ scenarios

# run_compare DIR TITLE PATH "TARGETS" [loadgen args...]: TARGETS are names; gunicorn-hello
# is reported as "gunicorn", the proxies (ringd-proxy, nginx-proxy, caddy-proxy) as ringd,
# nginx and caddy. CMP_CONNECTIONS, when set, replaces --connections. CMP_BASELINE (default nginx) names the baseline; CMP_HOST, when
# set, is the Host header of every request (and of the readiness check).
run_compare() {
    local dir="$1" title="$2" path="$3" targets="$4" t name pid rel
    local baseline="${CMP_BASELINE:-nginx}" host="${CMP_HOST:-}" conns="${CMP_CONNECTIONS:-$CONNECTIONS}"
    shift 4
    local -a args=(compare -t "$(count_cpus "$GEN_CPUS")" --rounds "$ROUNDS" -c "$conns"
        -d "$DURATION" --baseline "$baseline" --out "$dir" --title "$title"
        --meta "host=$HOST" --meta "kernel=$(uname -r)" --meta "workers=$CUR_WORKERS"
        --meta "server_cpus=$CUR_SERVER_CPUS" --meta "loadgen_cpus=$CUR_GEN_CPUS"
        --meta "commit=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
        --meta "profile=$PROFILE" --meta "loadavg=$(cut -d' ' -f1-3 /proc/loadavg)")
    [[ -n "$WARMUP" ]] && args+=(--warmup "$WARMUP")
    [[ -n "$host" ]] && args+=(-H "Host: $host")
    local names=()
    for t in $targets; do
        name="$(target_name "$t")"
        names+=("$name")
        pid="$(target_pid "$t")"
        args+=(--target "$name=$(target_url "$t" "$path")" --server-pid "$name=$pid")
    done
    args+=("$@")
    mkdir -p "$dir"
    rel="${dir#"$OUT"/}"
    printf '%s\t%s\t%s\n' "$rel" "$(
        IFS=,
        echo "${names[*]}"
    )" "$title" >>"$MANIFEST"
    # Every server must answer once before the scenario starts: one still working through the
    # previous scenario's queued requests (gunicorn's single sync worker after 64 queued 10 MiB
    # responses) would otherwise be measured on its leftovers (seen: 0 responses in a 1 s run).
    for t in $targets; do
        wait_http "$(target_url "$t" "$path")" 30 "$(target_pid "$t")" "$host" ||
            die "$t did not answer $(target_url "$t" "$path") within 30 s before $rel"
    done
    local -a cmd=(taskset -c "$CUR_GEN_CPUS" "$LOADGEN_BIN" "${args[@]}")
    record "${cmd[@]}"
    log "== $rel: $title"
    # In the background and waited for, so a signal to this script is handled at once (bash
    # runs traps only between foreground commands) and cleanup can stop loadgen by its PID.
    "${cmd[@]}" </dev/null > >(tee "$dir/loadgen.log" >&2) 2>&1 &
    LOADGEN_PID=$!
    local rc=0
    wait "$LOADGEN_PID" || rc=$?
    LOADGEN_PID=""
    ((rc == 0)) || die "loadgen failed (exit $rc) in $rel; see $dir/loadgen.log"
}

FILE_TARGETS_EXTRA="nginx caddy gunicorn"

# The name a target is reported under.
target_name() {
    case "$1" in
    gunicorn-hello) echo gunicorn ;;
    ringd-proxy | nginx-proxy | caddy-proxy) echo "${1%-proxy}" ;;
    ringd-tls | nginx-tls) echo "${1%-tls}" ;;
    wsgi-ringd-wsgi) echo ringd ;;
    ringd-cgi | nginx-cgi) echo "${1%-cgi}" ;;
    stack-ringd) echo ringd ;;
    stack-nginx) echo nginx-gunicorn ;;
    wsgi-*) echo "${1#wsgi-}" ;;
    *) echo "$1" ;;
    esac
}

# ------------------------------------------------------------------------------ sites

SITES_BACKEND=uring
SITES_CONF="$RUN_DIR/sites.toml"

# start_sites_ringd KEY PORT HOST FLAG...: ringd --backend uring with FLAGs, pinned like the
# other ringds, registered as target ringd-KEY; HOST is sent in the readiness check.
start_sites_ringd() {
    local key="$1" port="$2" host="$3" pid log_file="$RUN_DIR/ringd-$1.log"
    shift 3
    pid="$(head -n1 "$RUN_DIR/ringd-$key.pid" 2>/dev/null || true)"
    if [[ -n "$pid" ]] && pid_is "$pid" ringd; then
        warn "stopping ringd-$key left by an earlier run (PID $pid)"
        stop_pid "$pid" TERM
    fi
    rm -f "$RUN_DIR/ringd-$key.pid"
    port_busy "$port" && die "port $port for ringd-$key is taken (set RINGD_PORT_BASE)"
    local -a cmd=(taskset -c "$CUR_SERVER_CPUS" "$RINGD_BIN" --listen "127.0.0.1:$port"
        --workers "$CUR_WORKERS" --backend "$SITES_BACKEND" "$@")
    record "${cmd[@]}"
    "${cmd[@]}" </dev/null >"$log_file" 2>&1 &
    pid=$!
    echo "$pid" >"$RUN_DIR/ringd-$key.pid"
    RINGD_PID[$key]="$pid"
    RINGD_PORT[$key]="$port"
    if ! wait_http "${SITES_SCHEME:-http}://127.0.0.1:$port/hello.txt" 15 "$pid" "$host"; then
        warn "ringd-$key did not come up. Its output:"
        sed 's/^/    /' "$log_file" | tail -n 15 >&2 || true
        die "ringd-$key did not start"
    fi
    log "ringd-$key up on 127.0.0.1:$port (PID $pid, CPUs $CUR_SERVER_CPUS)"
}

# The answer to the benchmark request must be the file, through the last site's last route
# (the header only that route sets): otherwise the scenario would measure something else.
check_sites_answer() {
    local name="$1" host="$2" want_header="$3" url head body
    url="$(target_url "$name" /small.bin)"
    head="$RUN_DIR/sites-check.head" body="$RUN_DIR/sites-check.body"
    curl -fsS --max-time 5 -H "Host: $host" -D "$head" -o "$body" "$url" ||
        die "$name: GET $url (Host: $host) failed"
    cmp -s "$body" "$WWW_DIR/small.bin" || die "$name: GET $url (Host: $host) did not return small.bin"
    if [[ -n "$want_header" ]] && ! tr -d '\r' <"$head" | grep -qiFx "$want_header"; then
        die "$name: the answer lacks '$want_header': the last site's last route did not answer it"
    fi
    rm -f "$head" "$body"
}

run_sites() {
    local dir="$BASE/sites" host port_flags=$((RINGD_PORT_BASE + 4)) port_config=$((RINGD_PORT_BASE + 5))
    local -a gen=(python3 "$SCRIPTS_DIR/benchtool.py" sites-config "$SITES_CONF" --www "$WWW_DIR"
        --sites-dir "$RUN_DIR/sites" --sites 10 --routes 20)
    record "${gen[@]}"
    local want
    { read -r host && read -r want; } < <("${gen[@]}")
    [[ -n "$host" && -n "$want" ]] || die "benchtool.py sites-config printed no host"
    record "$RINGD_BIN" check "$SITES_CONF"
    "$RINGD_BIN" check "$SITES_CONF" >&2 || die "ringd check rejected $SITES_CONF"
    mkdir -p "$dir"
    cp "$SITES_CONF" "$dir/ringd-sites.toml"
    start_sites_ringd flags "$port_flags" "$host" "$WWW_DIR"
    start_sites_ringd config "$port_config" "$host" --config "$SITES_CONF"
    check_sites_answer ringd-flags "$host" ""
    check_sites_answer ringd-config "$host" "$want"
    CMP_BASELINE=ringd-flags CMP_HOST="$host" run_compare "$dir" \
        "sites: 1000-byte file, 10 sites x 20 routes (--config, last site's last route) against flag-only, $CONNECTIONS connections" \
        /small.bin "ringd-flags ringd-config"
    local k
    for k in flags config; do
        stop_pid "${RINGD_PID[$k]}" TERM
        rm -f "$RUN_DIR/ringd-$k.pid"
        unset "RINGD_PID[$k]" "RINGD_PORT[$k]"
    done
    record python3 "$SCRIPTS_DIR/benchtool.py" sites "$dir"
    python3 "$SCRIPTS_DIR/benchtool.py" sites "$dir" >&2
}

# ------------------------------------------------------------------------------ proxy (issue 12)

PROXY_TARGETS="ringd-proxy nginx-proxy haproxy caddy-proxy"
PROXY_CONF="$RUN_DIR/ringd-proxy.toml"
SLOW_PID=""

# start_proxies UPSTREAM: ringd (config from scripts/peers/ringd-proxy.toml.tmpl, backend
# $PROXY_BACKEND, one worker), nginx, HAProxy and Caddy as proxies to UPSTREAM (HOST:PORT), each on CUR_SERVER_CPUS
# with one worker.
start_proxies() {
    local upstream="$1" port=$((RINGD_PORT_BASE + 6)) pid log_file="$RUN_DIR/ringd-proxy.log"
    render_template "$SCRIPTS_DIR/peers/ringd-proxy.toml.tmpl" "$PROXY_CONF" "UPSTREAM=$upstream" \
        "KEEPALIVE=$PROXY_KEEPALIVE"
    record "$RINGD_BIN" check "$PROXY_CONF"
    "$RINGD_BIN" check "$PROXY_CONF" >&2 || die "ringd check rejected $PROXY_CONF"
    pid="$(head -n1 "$RUN_DIR/ringd-proxy.pid" 2>/dev/null || true)"
    if [[ -n "$pid" ]] && pid_is "$pid" ringd; then
        warn "stopping ringd-proxy left by an earlier run (PID $pid)"
        stop_pid "$pid" TERM
    fi
    port_busy "$port" && die "port $port for ringd-proxy is taken (set RINGD_PORT_BASE)"
    local -a cmd=(taskset -c "$CUR_SERVER_CPUS" "$RINGD_BIN" --listen "127.0.0.1:$port"
        --workers 1 --backend "$PROXY_BACKEND" --config "$PROXY_CONF")
    record "${cmd[@]}"
    "${cmd[@]}" </dev/null >"$log_file" 2>&1 &
    pid=$!
    echo "$pid" >"$RUN_DIR/ringd-proxy.pid"
    RINGD_PID[proxy]="$pid"
    RINGD_PORT[proxy]="$port"
    if ! wait_http "http://127.0.0.1:$port/hello.txt" 15 "$pid"; then
        warn "ringd-proxy did not come up (or does not forward to $upstream). Its output:"
        sed 's/^/    /' "$log_file" | tail -n 15 >&2 || true
        die "ringd-proxy did not start"
    fi
    log "ringd-proxy up on 127.0.0.1:$port (PID $pid, CPUs $CUR_SERVER_CPUS) -> $upstream"
    if [[ -n "${SCENARIO_OK[proxy-large]:-}" ]]; then
        # The same ringd with splicing off: proxy-large compares splice and copy in one run.
        CUR_WORKERS=1 SITES_BACKEND="$PROXY_BACKEND" start_sites_ringd copy $((RINGD_PORT_BASE + 10)) "" \
            --config "$PROXY_CONF" --proxy-splice-min 0
    fi
    peers_start --only nginx-proxy,haproxy,caddy-proxy --workers 1 --cpus "$CUR_SERVER_CPUS" \
        --upstream "$upstream"
}

# The relays (loadgen/src/bin/relay.rs): TCP relays with one upstream connection per client,
# which parse nothing, on epoll (relay) and on io_uring (relay-uring). Their CPU per request is
# the kernel's share of any proxy's, the floor that proxy-small's CPU bars are read against.
# start_relay NAME PORT UPSTREAM [relay flags...]
start_relay() {
    local name="$1" port="$2" upstream="$3" pid
    shift 3
    [[ -x "$RELAY_BIN" ]] || die "$RELAY_BIN is missing (cargo build --release --workspace --bins)"
    port_busy "$port" && die "port $port for $name is taken (set RINGD_PORT_BASE)"
    local -a cmd=(taskset -c "$CUR_SERVER_CPUS" "$RELAY_BIN" --listen "127.0.0.1:$port"
        --upstream "$upstream" "$@")
    record "${cmd[@]}"
    "${cmd[@]}" </dev/null >"$RUN_DIR/$name.log" 2>&1 &
    pid=$!
    RELAY_PID[$name]=$pid
    RELAY_PORT[$name]=$port
    wait_http "http://127.0.0.1:$port/small.bin" 15 "$pid" ||
        die "$name did not come up on 127.0.0.1:$port; see $RUN_DIR/$name.log"
    log "$name up on 127.0.0.1:$port (PID $pid, CPUs $CUR_SERVER_CPUS) -> $upstream"
}

stop_relays() {
    local name
    for name in "${!RELAY_PID[@]}"; do
        stop_pid "${RELAY_PID[$name]}" TERM
        unset "RELAY_PID[$name]" "RELAY_PORT[$name]"
    done
}

stop_proxy_ringd() {
    if [[ -n "${RINGD_PID[proxy]:-}" ]]; then
        stop_pid "${RINGD_PID[proxy]}" TERM
        rm -f "$RUN_DIR/ringd-proxy.pid"
        unset "RINGD_PID[proxy]" "RINGD_PORT[proxy]"
    fi
    if [[ -n "${RINGD_PID[copy]:-}" ]]; then
        stop_pid "${RINGD_PID[copy]}" TERM
        rm -f "$RUN_DIR/ringd-copy.pid"
        unset "RINGD_PID[copy]" "RINGD_PORT[copy]"
    fi
}

proxy_summary() {
    local dir="$1" kind="$2"
    record python3 "$SCRIPTS_DIR/benchtool.py" proxy "$dir" --kind "$kind"
    python3 "$SCRIPTS_DIR/benchtool.py" proxy "$dir" --kind "$kind" >&2
}

# proxy-small and proxy-large: the proxies in front of the static nginx (one worker, on the
# loadgen CPUs).
run_proxy_nginx() {
    peers_start --only nginx --workers 1 --cpus "$CUR_GEN_CPUS"
    start_proxies "127.0.0.1:$NGINX_PORT"
    if [[ -n "${SCENARIO_OK[proxy-small]:-}" ]]; then
        start_relay relay $((RINGD_PORT_BASE + 11)) "127.0.0.1:$NGINX_PORT"
        start_relay relay-uring $((RINGD_PORT_BASE + 12)) "127.0.0.1:$NGINX_PORT" --uring
        run_compare "$BASE/proxy-small" "proxy-small: each proxy (1 worker, CPU $CUR_SERVER_CPUS) in front of nginx (CPU $CUR_GEN_CPUS), 1000-byte file, upstream keep-alive, $CONNECTIONS connections; relay, relay-uring: TCP relays, the floor" \
            /small.bin "$PROXY_TARGETS relay relay-uring"
        stop_relays
        proxy_summary "$BASE/proxy-small" small
    fi
    if [[ -n "${SCENARIO_OK[proxy-large]:-}" ]]; then
        # A smoke run of about a second: 64 connections sharing a proxy's few hundred MB/s would
        # each be under way with its first 10 MiB when the second ends (seen: HAProxy with 0
        # responses); a few connections finish some.
        local conns="$CONNECTIONS"
        ((SMOKE && conns > 4)) && conns=4
        CMP_CONNECTIONS="$conns" run_compare "$BASE/proxy-large" "proxy-large: each proxy (1 worker, CPU $CUR_SERVER_CPUS) in front of nginx (CPU $CUR_GEN_CPUS), 10 MiB file, upstream keep-alive, $conns connections" \
            /large.bin "ringd-proxy ringd-copy ${PROXY_TARGETS#ringd-proxy }"
        proxy_summary "$BASE/proxy-large" large
    fi
    stop_proxy_ringd
    stop_peers
}

# run_slow_clients DIR TARGET TITLE: TARGET's hello load (one target, the same rounds) while
# SLOW_CLIENTS connections of a second loadgen, started first in the background, read
# SLOW_PATH through the same proxy at SLOW_RATE; that loadgen's summary (its bytes/s shows the
# slow clients were reading all along) goes to DIR/slow-clients.log and its result to
# DIR/slow-clients.json.
run_slow_clients() {
    local dir="$1" t="$2" title="$3" secs url
    mkdir -p "$dir"
    url="$(target_url "$t" "$SLOW_PATH")"
    # Longer than the measured rounds; stopped by its PID once they are done.
    secs=$((ROUNDS * ($(dur_secs "$DURATION") + $(dur_secs "${WARMUP:-0s}") + 5) + 60))
    local -a cmd=(taskset -c "$CUR_GEN_CPUS" "$LOADGEN_BIN" "$url" -c "$SLOW_CLIENTS" -t 1
        --read-rate "$SLOW_RATE" --timeout 30m -d "${secs}s" --json "$dir/slow-clients.json")
    record "${cmd[@]}"
    log "== ${dir#"$OUT"/}: $SLOW_CLIENTS slow clients ($SLOW_RATE) on $url in the background"
    "${cmd[@]}" </dev/null >"$dir/slow-clients.log" 2>&1 &
    SLOW_PID=$!
    # Let every slow client connect and send its request before the measured load starts.
    sleep 2
    kill -0 "$SLOW_PID" 2>/dev/null || die "the slow clients' loadgen exited early; see $dir/slow-clients.log"
    CMP_BASELINE="$(target_name "$t")" run_compare "$dir" "$title" / "$t"
    kill -0 "$SLOW_PID" 2>/dev/null ||
        die "the slow clients' loadgen ended before the measured run did; see $dir/slow-clients.log"
    # SIGINT: loadgen stops early and still prints its summary and writes its JSON.
    stop_pid "$SLOW_PID" INT
    SLOW_PID=""
}

# Seconds in a duration like 10s, 500ms or 1m (rounded up).
dur_secs() {
    local d="$1"
    case "$d" in
    *ms) echo $(((${d%ms} + 999) / 1000)) ;;
    *m) echo $((${d%m} * 60)) ;;
    *s) echo "${d%s}" | awk '{print int($1 + 0.999)}' ;;
    *) echo "$d" | awk '{print int($1 + 0.999)}' ;;
    esac
}

# proxy-gunicorn: the proxies in front of gunicorn's upstream app (hello, and /files/ for the
# slow clients), once per worker class.
run_proxy_gunicorn() {
    local klass dir t
    for klass in sync gthread; do
        local -a gargs=(--only gunicorn-upstream --workers 1 --cpus "$CUR_GEN_CPUS"
            --gunicorn-workers "$GUNICORN_UPSTREAM_WORKERS" --gunicorn-class "$klass")
        [[ "$klass" == gthread ]] && gargs+=(--gunicorn-threads "$GUNICORN_GTHREAD_THREADS")
        peers_start "${gargs[@]}"
        start_proxies "127.0.0.1:$GUNICORN_UPSTREAM_PORT"
        dir="$BASE/proxy-gunicorn-$klass"
        mkdir -p "$dir"
        if [[ "$klass" == gthread ]]; then
            # Which gunicorn worker each proxy's keep-alive upstream connections landed on (luck
            # of accept): the cause of most of gthread's round-to-round swing. (Sync workers
            # close every connection after one response: nothing to sample.)
            taskset -c "$CUR_GEN_CPUS" "$SCRIPTS_DIR/upstream-spread.sh" "$GUNICORN_UPSTREAM_PORT" \
                "$dir/upstream-spread.log" </dev/null >/dev/null 2>&1 &
            SPREAD_PID=$!
        fi
        run_compare "$dir" "proxy-gunicorn ($klass): each proxy (1 worker, CPU $CUR_SERVER_CPUS) in front of gunicorn $klass ($GUNICORN_UPSTREAM_WORKERS workers, CPU $CUR_GEN_CPUS), hello app, $CONNECTIONS connections" \
            / "$PROXY_TARGETS"
        [[ -n "$SPREAD_PID" ]] && stop_pid "$SPREAD_PID" TERM
        SPREAD_PID=""
        for t in ringd-proxy nginx-proxy; do
            run_slow_clients "$dir/slow-$(target_name "$t")" "$t" \
                "proxy-gunicorn ($klass), $(target_name "$t") with $SLOW_CLIENTS slow clients ($SLOW_RATE, $SLOW_PATH) in the background: hello app, $CONNECTIONS connections"
        done
        proxy_summary "$dir" gunicorn
        stop_proxy_ringd
        stop_peers
    done
}

# ------------------------------------------------------------------------------ TLS (issue 15)

TLS_DIR="$RUN_DIR/tls"

# A CA and an ECDSA P-256 leaf for 127.0.0.1 and localhost, made by openssl per run: both
# servers get the same certificate; loadgen trusts the CA.
make_tls_cert() {
    mkdir -p "$TLS_DIR"
    local ext="$TLS_DIR/leaf.ext"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$ext"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
        -subj "/CN=ringd bench CA" -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.pem" 2>/dev/null ||
        die "openssl could not make the bench CA"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=127.0.0.1 \
        -keyout "$TLS_DIR/leaf.key" -out "$TLS_DIR/leaf.csr" 2>/dev/null || die "openssl: leaf key"
    openssl x509 -req -in "$TLS_DIR/leaf.csr" -CA "$TLS_DIR/ca.pem" -CAkey "$TLS_DIR/ca.key" \
        -CAcreateserial -days 30 -extfile "$ext" -out "$TLS_DIR/leaf.pem" 2>/dev/null ||
        die "openssl: leaf certificate"
}

run_tls() {
    command -v openssl >/dev/null || die "the TLS scenarios need openssl (apt-get install openssl)"
    make_tls_cert
    CUR_WORKERS="$WORKERS" CUR_SERVER_CPUS="$SERVER_CPUS" CUR_GEN_CPUS="$GEN_CPUS"
    # nginx's static server gains an ssl listener (scripts/peers.sh reads these).
    export NGINX_TLS_PORT="${NGINX_TLS_PORT:-18080}" NGINX_TLS_CERT="$TLS_DIR/leaf.pem" \
        NGINX_TLS_KEY="$TLS_DIR/leaf.key"
    start_peers "$WORKERS" "$SERVER_CPUS" nginx
    SITES_SCHEME=https SITES_BACKEND=uring start_sites_ringd tls $((RINGD_PORT_BASE + 7)) "" \
        --tls-cert "$TLS_DIR/leaf.pem" --tls-key "$TLS_DIR/leaf.key" "$WWW_DIR"
    local -a tls_args=(--tls-ca "$TLS_DIR/ca.pem" --tls13-only)
    # Which record path ringd runs: kTLS where the kernel has the tls ULP, else userspace.
    local kind ulp
    ulp=$("$RINGD_BIN" doctor 2>/dev/null | grep -o 'kernel TLS (tls ULP): [a-z]*' | sed 's/.*: //')
    if [[ "$ulp" == available ]]; then
        kind="kernel TLS after the handshake (kTLS: files by sendfile; rustls handshakes)"
    else
        kind="userspace TLS (rustls, ring; kTLS: ${ulp:-unknown})"
    fi
    if [[ -n "${SCENARIO_OK[tls-small]:-}" ]]; then
        run_compare "$BASE/tls-small" "tls-small: 1000-byte file over TLS 1.3, keep-alive, $CONNECTIONS connections; ringd $kind" \
            /small.bin "ringd-tls nginx-tls" "${tls_args[@]}"
    fi
    if [[ -n "${SCENARIO_OK[tls-handshake]:-}" ]]; then
        run_compare "$BASE/tls-handshake-full" "tls-handshake (full): a new connection and full TLS 1.3 handshake per request, 1000-byte file, $CONNECTIONS concurrent" \
            /small.bin "ringd-tls nginx-tls" "${tls_args[@]}" --no-keepalive --tls-resume off
        run_compare "$BASE/tls-handshake-resumed" "tls-handshake (resumed): a new connection per request resuming by ticket, 1000-byte file, $CONNECTIONS concurrent" \
            /small.bin "ringd-tls nginx-tls" "${tls_args[@]}" --no-keepalive --tls-resume on
    fi
    if [[ -n "${SCENARIO_OK[tls-large]:-}" ]]; then
        # A smoke run's second is too short for 64 connections to finish 10 MiB each.
        local lconns="$CONNECTIONS"
        ((SMOKE)) && lconns=2
        CMP_CONNECTIONS="$lconns" run_compare "$BASE/tls-large" "tls-large: 10 MiB file over TLS 1.3, keep-alive, $lconns connections; ringd $kind" \
            /large.bin "ringd-tls nginx-tls" "${tls_args[@]}"
    fi
    stop_pid "${RINGD_PID[tls]}" TERM
    rm -f "$RUN_DIR/ringd-tls.pid"
    unset "RINGD_PID[tls]" "RINGD_PORT[tls]"
    stop_peers
    unset NGINX_TLS_CERT NGINX_TLS_KEY
}

run_proxy() {
    local cpus
    mapfile -t cpus < <(expand_cpus "$SERVER_CPUS")
    # One worker per proxy, on the first server CPU; the upstream shares the generator's CPUs.
    CUR_WORKERS=1 CUR_SERVER_CPUS="${cpus[0]}" CUR_GEN_CPUS="$GEN_CPUS"
    if [[ -n "${SCENARIO_OK[proxy-small]:-}${SCENARIO_OK[proxy-large]:-}" ]]; then
        run_proxy_nginx
    fi
    [[ -n "${SCENARIO_OK[proxy-gunicorn]:-}" ]] && run_proxy_gunicorn
    return 0
}

# ------------------------------------------------------------------------------ cache (issue 14)

CACHE_CONF="$RUN_DIR/ringd-cache.toml"

# cache-hit and compress: ringd-cache and nginx proxy_cache in front of the static nginx, and
# ringd-static beside them; each on the first server CPU with one worker, the origin and
# loadgen on the loadgen CPUs.
run_cache() {
    local cpus k
    mapfile -t cpus < <(expand_cpus "$SERVER_CPUS")
    CUR_WORKERS=1 CUR_SERVER_CPUS="${cpus[0]}" CUR_GEN_CPUS="$GEN_CPUS"
    peers_start --only nginx --workers 1 --cpus "$CUR_GEN_CPUS"
    NGINX_PROXY_CACHE=1 peers_start --only nginx-proxy --workers 1 --cpus "$CUR_SERVER_CPUS" \
        --upstream "127.0.0.1:$NGINX_PORT"
    render_template "$SCRIPTS_DIR/peers/ringd-cache.toml.tmpl" "$CACHE_CONF" "UPSTREAM=127.0.0.1:$NGINX_PORT"
    record "$RINGD_BIN" check "$CACHE_CONF"
    "$RINGD_BIN" check "$CACHE_CONF" >&2 || die "ringd check rejected $CACHE_CONF"
    start_sites_ringd cache $((RINGD_PORT_BASE + 7)) "" --config "$CACHE_CONF"
    start_sites_ringd static $((RINGD_PORT_BASE + 8)) "" "$WWW_DIR"
    if [[ -n "${SCENARIO_OK[cache-hit]:-}" ]]; then
        run_compare "$BASE/cache-hit" "cache-hit: 1000-byte file from ringd's cache and nginx proxy_cache (1 worker, CPU $CUR_SERVER_CPUS) in front of nginx (CPU $CUR_GEN_CPUS), and ringd serving it statically, $CONNECTIONS connections" \
            /small.bin "ringd-cache ringd-static nginx-proxy"
        record python3 "$SCRIPTS_DIR/benchtool.py" cache "$BASE/cache-hit" --kind hit
        python3 "$SCRIPTS_DIR/benchtool.py" cache "$BASE/cache-hit" --kind hit >&2
    fi
    if [[ -n "${SCENARIO_OK[compress]:-}" ]]; then
        run_compare "$BASE/compress" "compress: 100 KiB HTML page, Accept-Encoding: gzip, cached compressed by ringd; nginx gzip on (level 5) + proxy_cache (1 worker, CPU $CUR_SERVER_CPUS) in front of nginx (CPU $CUR_GEN_CPUS), $CONNECTIONS connections" \
            /page.html "ringd-cache nginx-proxy" -H "Accept-Encoding: gzip"
        record python3 "$SCRIPTS_DIR/benchtool.py" cache "$BASE/compress" --kind compress
        python3 "$SCRIPTS_DIR/benchtool.py" cache "$BASE/compress" --kind compress >&2
    fi
    for k in cache static; do
        stop_pid "${RINGD_PID[$k]}" TERM
        rm -f "$RUN_DIR/ringd-$k.pid"
        unset "RINGD_PID[$k]" "RINGD_PORT[$k]"
    done
    stop_peers
}

# ------------------------------------------------------------------------------ cgi (issue 13)

NGINX_CGI_PORT="${NGINX_CGI_PORT:-18121}"
CGI_WRAPPER_PID=""

# Stops nginx and fcgiwrap of the cgi scenario (each by the PID its wrapper wrote), then the
# wrapper.
stop_cgi() {
    stop_tree "$CGI_WRAPPER_PID"
    CGI_WRAPPER_PID=""
    rm -f "$RUN_DIR/cgi-nginx.pid" "$RUN_DIR/cgi-fcgiwrap.pid"
    return 0
}

# stop_tree PID: every process under PID (found by parent PID before any of them goes), then
# PID itself, each by its PID.
stop_tree() {
    [[ -n "${1:-}" ]] || return 0
    local -a tree=() todo=("$1")
    local p c
    while ((${#todo[@]})); do
        p="${todo[0]}"
        todo=("${todo[@]:1}")
        for c in $(pgrep -P "$p" 2>/dev/null || true); do
            tree+=("$c")
            todo+=("$c")
        done
    done
    for p in "${tree[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    stop_pid "$1" TERM
}

# cgi-hello: ringd's CGI handler against nginx + fcgiwrap, the same script for both.
run_cgi() {
    local cpus fcgiwrap nginx_bin dir="$RUN_DIR/cgi"
    local sock="$dir/fcgiwrap.sock"
    mapfile -t cpus < <(expand_cpus "$SERVER_CPUS")
    CUR_WORKERS=1 CUR_SERVER_CPUS="${cpus[0]}" CUR_GEN_CPUS="$GEN_CPUS"
    fcgiwrap="$(command -v fcgiwrap || echo /usr/sbin/fcgiwrap)"
    if [[ ! -x "$fcgiwrap" ]]; then
        log "apt-get install fcgiwrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fcgiwrap >&2 ||
            die "cgi-hello needs fcgiwrap (apt-get install fcgiwrap)"
        fcgiwrap=/usr/sbin/fcgiwrap
    fi
    nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
    mkdir -p "$dir/cgi-bin" "$dir/logs"
    printf '%s\n' '#!/bin/sh' "printf 'Content-Type: text/plain\\r\\n\\r\\nhello, world\\n'" \
        >"$dir/cgi-bin/hello.sh"
    chmod +x "$dir/cgi-bin/hello.sh"
    cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $dir/nginx-master.pid;
error_log $dir/logs/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$NGINX_CGI_PORT;
        location /cgi-bin/ {
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $dir\$fastcgi_script_name;
            fastcgi_pass unix:$sock;
        }
    }
}
EOF
    echo "fcgiwrap: $(dpkg-query -W -f '${Version}' fcgiwrap 2>/dev/null || echo unknown) ($fcgiwrap -c $FCGIWRAP_CHILDREN)" >>"$ENV_TXT"
    port_busy "$NGINX_CGI_PORT" && die "port $NGINX_CGI_PORT for nginx-cgi is taken (set NGINX_CGI_PORT)"
    rm -f "$sock"
    # One wrapper process whose descendants are nginx (master, worker) and fcgiwrap (which
    # forks the scripts and reaps them): loadgen counts that whole tree, scripts included.
    # umask 000: nginx's worker (another user when started as root) must reach the socket.
    local -a cmd=(taskset -c "$CUR_SERVER_CPUS" bash -c "
        umask 000
        '$fcgiwrap' -c '$FCGIWRAP_CHILDREN' -s 'unix:$sock' & echo \$! >'$RUN_DIR/cgi-fcgiwrap.pid'
        '$nginx_bin' -c '$dir/nginx.conf' -p '$dir' & echo \$! >'$RUN_DIR/cgi-nginx.pid'
        wait")
    record "${cmd[@]}"
    "${cmd[@]}" </dev/null >"$dir/wrapper.log" 2>&1 &
    CGI_WRAPPER_PID=$!
    # ringd reaps its scripts itself: their CPU is in its own counters.
    SITES_BACKEND=uring start_sites_ringd cgi $((RINGD_PORT_BASE + 9)) "" "$WWW_DIR" \
        --cgi "/cgi-bin=$dir/cgi-bin"
    CMP_CONNECTIONS="$CGI_CONNECTIONS" run_compare "$BASE/cgi-hello" "cgi-hello: a shell CGI script (header + one line), ringd --cgi (uring, 1 worker) and nginx (1 worker) + fcgiwrap ($FCGIWRAP_CHILDREN processes), all on CPU $CUR_SERVER_CPUS, scripts' CPU included; $CGI_CONNECTIONS connections" \
        /cgi-bin/hello.sh "ringd-cgi nginx-cgi"
    stop_pid "${RINGD_PID[cgi]}" TERM
    rm -f "$RUN_DIR/ringd-cgi.pid"
    unset "RINGD_PID[cgi]" "RINGD_PORT[cgi]"
    stop_cgi
}

# ------------------------------------------------------------------------------ stack (issue 13)

STACK_RINGD_PORT="${STACK_RINGD_PORT:-18122}"
STACK_NGINX_PORT="${STACK_NGINX_PORT:-18123}"
STACK_GUNICORN_PORT="${STACK_GUNICORN_PORT:-18124}"
STACK_RINGD_PID=""
STACK_WRAPPER_PID=""

stop_stack() {
    stop_tree "$STACK_WRAPPER_PID"
    STACK_WRAPPER_PID=""
    [[ -n "$STACK_RINGD_PID" ]] && stop_pid "$STACK_RINGD_PID" TERM
    STACK_RINGD_PID=""
    return 0
}

# stack: the whole site from one ringd-wsgi (static files + the WSGI app in-process) against
# the classic pair, nginx (static files, proxy with upstream keep-alive) in front of gunicorn
# (sync, $GUNICORN_UPSTREAM_WORKERS workers); each stack on the first server CPU; CPU is the
# whole stack's (nginx and gunicorn under one wrapper process).
run_stack() {
    local cpus v="$VENV_DIR/bin" dir="$RUN_DIR/stack"
    mapfile -t cpus < <(expand_cpus "$SERVER_CPUS")
    CUR_WORKERS=1 CUR_SERVER_CPUS="${cpus[0]}" CUR_GEN_CPUS="$GEN_CPUS"
    ensure_gunicorn "$PEERS_DIR"
    [[ -x "$v/ringd-wsgi" ]] || die "no $v/ringd-wsgi: run scripts/test-peers.sh (pip install ./python)"
    local nginx_bin
    nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
    mkdir -p "$dir/logs"
    cat >"$dir/ringd.toml" <<EOF
# ringd-wsgi alone: static files from the benchmark's root, the app under /app/.
[[sites]]
hosts = ["_"]
root = "$WWW_DIR"

  [[sites.routes]]
  path = "/app/*"
  wsgi = { app = "wsgi_bench:application" }
EOF
    cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $dir/nginx-master.pid;
error_log $dir/logs/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    upstream app {
        server 127.0.0.1:$STACK_GUNICORN_PORT;
        keepalive 32;
    }
    server {
        listen 127.0.0.1:$STACK_NGINX_PORT;
        root $WWW_DIR;
        location /app/ {
            proxy_pass http://app/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    port_busy "$STACK_RINGD_PORT" && die "port $STACK_RINGD_PORT is taken (set STACK_RINGD_PORT)"
    port_busy "$STACK_NGINX_PORT" && die "port $STACK_NGINX_PORT is taken (set STACK_NGINX_PORT)"
    local -a rcmd=(taskset -c "$CUR_SERVER_CPUS" "$v/ringd-wsgi" --config "$dir/ringd.toml"
        --bind "127.0.0.1:$STACK_RINGD_PORT" --workers 1)
    record "${rcmd[@]}"
    (cd "$SCRIPTS_DIR/peers" && exec "${rcmd[@]}") </dev/null >"$dir/ringd.log" 2>&1 &
    STACK_RINGD_PID=$!
    local -a ncmd=(taskset -c "$CUR_SERVER_CPUS" bash -c "
        cd '$SCRIPTS_DIR/peers'
        '$v/gunicorn' --workers '$GUNICORN_UPSTREAM_WORKERS' --bind '127.0.0.1:$STACK_GUNICORN_PORT' wsgi_bench:application &
        '$nginx_bin' -c '$dir/nginx.conf' -p '$dir' &
        wait")
    record "${ncmd[@]}"
    "${ncmd[@]}" </dev/null >"$dir/wrapper.log" 2>&1 &
    STACK_WRAPPER_PID=$!
    wait_http "http://127.0.0.1:$STACK_RINGD_PORT/app/" 30 "$STACK_RINGD_PID" ||
        die "ringd-wsgi (stack) did not come up; see $dir/ringd.log"
    wait_http "http://127.0.0.1:$STACK_NGINX_PORT/app/" 30 "$STACK_WRAPPER_PID" ||
        die "nginx + gunicorn (stack) did not come up; see $dir/wrapper.log"
    log "stack: ringd-wsgi PID $STACK_RINGD_PID, nginx + gunicorn under PID $STACK_WRAPPER_PID (CPU $CUR_SERVER_CPUS)"
    CMP_BASELINE=nginx-gunicorn run_compare "$BASE/stack-app" "stack-app: the hello WSGI app at /app/ through each whole stack, ringd-wsgi (1 worker) vs nginx (1 worker) -> gunicorn (sync, $GUNICORN_UPSTREAM_WORKERS workers), each stack on CPU $CUR_SERVER_CPUS, CPU of the whole stack; $CONNECTIONS connections" \
        /app/ "stack-ringd stack-nginx"
    CMP_BASELINE=nginx-gunicorn run_compare "$BASE/stack-static" "stack-static: the 1000-byte file from the same stacks (ringd-wsgi's static route, nginx's root); $CONNECTIONS connections" \
        /small.bin "stack-ringd stack-nginx"
    stop_stack
}

# ------------------------------------------------------------------------------ wsgi

WSGI_PORT_BASE="${WSGI_PORT_BASE:-18110}"
declare -A WSGI_PID=() WSGI_PORT=()

# True when a wsgi scenario is selected.
wsgi_scenarios() {
    local s
    for s in "${!SCENARIO_OK[@]}"; do [[ "$s" == wsgi-* ]] && return 0; done
    return 1
}

stop_wsgi() {
    local k
    for k in "${!WSGI_PID[@]}"; do
        stop_pid "${WSGI_PID[$k]}" TERM
        unset "WSGI_PID[$k]"
    done
    return 0
}

# start_wsgi NAME PORT CMD...: one WSGI server on the first server CPU, in the app's folder.
start_wsgi() {
    local name="$1" port="$2" pid log_file="$RUN_DIR/wsgi-$1.log"
    shift 2
    port_busy "$port" && die "port $port for $name is taken (set WSGI_PORT_BASE)"
    local -a cmd=(taskset -c "$CUR_SERVER_CPUS" "$@")
    record "${cmd[@]}"
    (cd "$SCRIPTS_DIR/peers" && exec "${cmd[@]}") </dev/null >"$log_file" 2>&1 &
    pid=$!
    if wait_http "http://127.0.0.1:$port/" 30 "$pid"; then
        WSGI_PID[$name]="$pid"
        WSGI_PORT[$name]="$port"
        log "$name up on 127.0.0.1:$port (PID $pid, CPU $CUR_SERVER_CPUS)"
    else
        sed 's/^/    /' "$log_file" | tail -n 15 >&2 || true
        stop_pid "$pid" TERM
        die "$name did not come up"
    fi
}

# wsgi-hello, wsgi-10k, wsgi-echo: ringd-wsgi against gunicorn (sync; gthread) and Granian,
# each one worker process on the first server CPU, side by side in one compare per scenario.
run_wsgi() {
    local cpus v="$VENV_DIR/bin" p="$WSGI_PORT_BASE" rounds_note
    mapfile -t cpus < <(expand_cpus "$SERVER_CPUS")
    CUR_WORKERS=1 CUR_SERVER_CPUS="${cpus[0]}" CUR_GEN_CPUS="$GEN_CPUS"
    ensure_gunicorn "$PEERS_DIR"
    [[ -x "$v/ringd-wsgi" ]] || die "no $v/ringd-wsgi: run scripts/test-peers.sh (pip install ./python)"
    if [[ ! -x "$v/granian" ]]; then
        log "pip install granian into $VENV_DIR"
        "$v/python" -m pip install -q --disable-pip-version-check granian >&2
    fi
    {
        echo "ringd-wsgi: $("$v/ringd-wsgi" --version 2>&1 | head -n1) ($v/ringd-wsgi)"
        echo "granian: $("$v/granian" --version 2>&1 | head -n1)"
        echo "python: $("$v/python" --version 2>&1)"
    } >>"$ENV_TXT"
    rm -rf "$SCRIPTS_DIR/peers/__pycache__"
    start_wsgi ringd-wsgi "$p" "$v/ringd-wsgi" wsgi_bench:application --bind "127.0.0.1:$p" --workers 1
    start_wsgi gunicorn-sync $((p + 1)) "$v/gunicorn" --workers 1 --bind "127.0.0.1:$((p + 1))" \
        wsgi_bench:application
    start_wsgi gunicorn-gthread $((p + 2)) "$v/gunicorn" --workers 1 --worker-class gthread \
        --threads "$WSGI_GTHREAD_THREADS" --bind "127.0.0.1:$((p + 2))" wsgi_bench:application
    start_wsgi granian $((p + 3)) "$v/granian" --interface wsgi --workers 1 --host 127.0.0.1 \
        --port $((p + 3)) wsgi_bench:application
    local targets="wsgi-ringd-wsgi wsgi-granian wsgi-gunicorn-sync wsgi-gunicorn-gthread"
    local s body="$RUN_DIR/wsgi-echo.body"
    head -c 10240 /dev/zero | tr '\0' 'e' >"$body"
    for s in wsgi-hello wsgi-10k wsgi-echo; do
        [[ -n "${SCENARIO_OK[$s]:-}" ]] || continue
        case "$s" in
        wsgi-hello)
            CMP_BASELINE=granian run_compare "$BASE/$s" "$s: the 14-byte hello WSGI app, 1 worker process each (CPU $CUR_SERVER_CPUS), keep-alive, $CONNECTIONS connections" / "$targets"
            ;;
        wsgi-10k)
            CMP_BASELINE=granian run_compare "$BASE/$s" "$s: a 10 KiB body from the WSGI app, 1 worker process each (CPU $CUR_SERVER_CPUS), keep-alive, $CONNECTIONS connections" /10k "$targets"
            ;;
        wsgi-echo)
            CMP_BASELINE=granian run_compare "$BASE/$s" "$s: POST 10 KiB echoed by the WSGI app, 1 worker process each (CPU $CUR_SERVER_CPUS), keep-alive, $CONNECTIONS connections" /echo "$targets" -m POST --body "@$body"
            ;;
        esac
        python3 "$SCRIPTS_DIR/benchtool.py" wsgi "$BASE/$s" >/dev/null
    done
    stop_wsgi
}

run_scenario() {
    local s="$1" ringd
    ringd="$(ringd_targets | tr '\n' ' ')"
    case "$s" in
    small)
        run_compare "$BASE/small" "small: 1000-byte file, keep-alive, $CONNECTIONS connections, closed loop" \
            /small.bin "$ringd $FILE_TARGETS_EXTRA"
        ;;
    pipelined)
        run_compare "$BASE/pipelined" "pipelined: 1000-byte file, pipeline depth $PIPELINE, $CONNECTIONS connections" \
            /small.bin "$ringd nginx caddy" --pipeline "$PIPELINE"
        ;;
    medium)
        run_compare "$BASE/medium" "medium: 100 KiB file, keep-alive, $CONNECTIONS connections, closed loop" \
            /medium.bin "$ringd $FILE_TARGETS_EXTRA"
        ;;
    large)
        run_compare "$BASE/large" "large: 10 MiB file, keep-alive, $CONNECTIONS connections, closed loop" \
            /large.bin "$ringd $FILE_TARGETS_EXTRA"
        ;;
    connect)
        run_compare "$BASE/connect" "connect: 1000-byte file, a new connection per request, $CONNECTIONS concurrent" \
            /small.bin "$ringd nginx nginx-deferred caddy gunicorn" --no-keepalive
        ;;
    latency)
        if [[ ! -s "$BASE/small/report.json" ]]; then
            log "latency needs the closed-loop maximum: running small first"
            run_scenario small
        fi
        local max pct rate
        # shellcheck disable=SC2086 # $ringd is a list of names
        max="$(python3 "$SCRIPTS_DIR/benchtool.py" max-rps "$BASE/small" $ringd nginx caddy)"
        for pct in 50 80; do
            rate=$((max * pct / 100))
            ((rate >= 1)) || rate=1
            run_compare "$BASE/latency-$pct" "latency: open loop at $pct% of the slowest server's maximum ($rate of $max req/s), 1000-byte file" \
                /small.bin "$ringd nginx caddy" -R "$rate"
        done
        ;;
    hello)
        run_compare "$BASE/hello" "hello: 13-byte hello body (ringd/nginx/caddy: hello.txt, gunicorn: WSGI app), keep-alive" \
            /hello.txt "$ringd nginx caddy gunicorn-hello"
        ;;
    sites) run_sites ;;
    esac
}

run_matrix() {
    local s
    CUR_WORKERS="$WORKERS" CUR_SERVER_CPUS="$SERVER_CPUS" CUR_GEN_CPUS="$GEN_CPUS"
    # sites starts its own two ringds (and stops them); it needs no peer.
    main_scenarios && start_servers "$WORKERS" "$SERVER_CPUS"
    for s in small pipelined medium large connect latency hello sites; do
        [[ -n "${SCENARIO_OK[$s]:-}" ]] || continue
        # latency may already have run small; never run a scenario twice.
        if [[ "$s" == small && -s "$BASE/small/report.json" ]]; then continue; fi
        run_scenario "$s"
    done
    stop_servers
    proxy_scenarios && run_proxy
    cache_scenarios && run_cache
    tls_scenarios && run_tls
    wsgi_scenarios && run_wsgi
    [[ -n "${SCENARIO_OK[cgi-hello]:-}" ]] && run_cgi
    [[ -n "${SCENARIO_OK[stack]:-}" ]] && run_stack
    return 0
}

run_compare_tuning() {
    [[ $EUID -eq 0 ]] || die "--compare-tuning applies kernel settings and needs root"
    local state="${TUNE_STATE:-/var/tmp/ringd-tune.state}"
    [[ ! -e "$state" ]] || die "kernel settings are already applied ($state); revert them first"
    local phase s
    CUR_WORKERS="$WORKERS" CUR_SERVER_CPUS="$SERVER_CPUS" CUR_GEN_CPUS="$GEN_CPUS"
    mkdir -p "$OUT/tuning"
    for phase in before after; do
        if [[ "$phase" == after ]]; then
            log "applying recommended kernel settings"
            record "$SCRIPTS_DIR/tune-kernel.sh" apply
            TUNED=1
            "$SCRIPTS_DIR/tune-kernel.sh" apply | tee "$OUT/tuning/applied.txt" >&2
        fi
        # Restart the servers in each phase: listen() backlogs are capped when they listen.
        start_servers "$WORKERS" "$SERVER_CPUS"
        BASE="$OUT/tuning/$phase"
        for s in small connect; do run_scenario "$s"; done
        BASE="$OUT"
        stop_servers
    done
    revert_tuning
    python3 "$SCRIPTS_DIR/benchtool.py" tuning-diff "$OUT/tuning/before" "$OUT/tuning/after" \
        --applied "$OUT/tuning/applied.txt" >"$OUT/tuning/README.md"
    cat "$OUT/tuning/README.md"
}

run_scaling() {
    local w n="$NCPU" ran=0
    local -a ws
    IFS=',' read -r -a ws <<<"$SCALING"
    for w in "${ws[@]}"; do is_posint "$w" || die "--scaling wants positive worker counts, got '$w'"; done
    BACKENDS=uring
    for w in "${ws[@]}"; do
        if ((n > 1 && w >= n)); then
            warn "scaling: skipping $w workers: needs $((w + 1)) cores (this machine has $n)"
            continue
        fi
        layout_cpus "$w"
        CUR_WORKERS="$w" CUR_SERVER_CPUS="$L_SERVER_CPUS" CUR_GEN_CPUS="$L_GEN_CPUS"
        GEN_CPUS="$L_GEN_CPUS"
        start_servers "$w" "$L_SERVER_CPUS" nginx
        BASE="$OUT/scaling/w$w"
        run_compare "$BASE/small" "scaling, $w workers: 1000-byte file, keep-alive, $CONNECTIONS connections" \
            /small.bin "ringd-uring nginx"
        run_compare "$BASE/large" "scaling, $w workers: 10 MiB file, keep-alive, $CONNECTIONS connections" \
            /large.bin "ringd-uring nginx"
        BASE="$OUT"
        stop_servers
        ran=$((ran + 1))
    done
    ((ran)) || die "scaling: no worker count in '$SCALING' fits $n cores"
    python3 "$SCRIPTS_DIR/benchtool.py" scaling "$OUT/scaling"
}

# ------------------------------------------------------------------------------ main

main() {
    mkdir -p "$RUN_DIR"
    : >"$OUT/commands.txt"
    : >"$MANIFEST"
    # Configs newer than this are this run's (finish_env); the files' times are whole seconds
    # on some filesystems, so it is dated a second back.
    touch -d '-1 second' "$OUT/.started"
    record "$SCRIPTS_DIR/bench.sh" "${ORIG_ARGS[@]}"
    # Every connection is a file descriptor; raise the soft limit as far as allowed.
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

    build
    make_www
    # The sites scenario alone compares ringd with itself: no peer to install.
    if main_scenarios || proxy_scenarios || cache_scenarios || tls_scenarios || [[ -n "${SCENARIO_OK[cgi-hello]:-}${SCENARIO_OK[stack]:-}" ]] || ((COMPARE_TUNING)) || [[ -n "$SCALING" ]]; then
        ensure_nginx "$PEERS_DIR"
        ensure_caddy "$PEERS_DIR"
        ensure_gunicorn "$PEERS_DIR"
    fi
    proxy_scenarios && ensure_haproxy "$PEERS_DIR"
    write_env
    log "output: $OUT (servers on CPUs $SERVER_CPUS, loadgen on CPUs $GEN_CPUS)"

    if ((COMPARE_TUNING)); then
        run_compare_tuning
    elif [[ -n "$SCALING" ]]; then
        run_scaling
    else
        run_matrix
    fi
    finish_env

    if ((SMOKE)); then
        python3 "$SCRIPTS_DIR/benchtool.py" check "$OUT"
        log "smoke passed: every target answered and every report was written ($OUT)"
    fi
    if [[ "$OUT" == "$REPO_ROOT/results/"* ]]; then
        local -a headline=(python3 "$SCRIPTS_DIR/benchtool.py" headline "$REPO_ROOT/results")
        # The project README shows the headline; a sites-only run never changes it.
        main_scenarios && headline+=(--readme "$REPO_ROOT/README.md")
        "${headline[@]}"
        log "results/README.md regenerated"
    fi
    log "done: $OUT"
}

main
