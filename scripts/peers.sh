#!/usr/bin/env bash
# Start, stop and inspect the servers ringd is compared with: nginx and Caddy (static files) and
# gunicorn (a hello WSGI app and a wsgi.file_wrapper file app), on loopback ports, and for the proxy
# scenarios the proxies (nginx, Caddy, HAProxy) and gunicorn's upstream app, from the templates in
# scripts/peers/, with their PIDs recorded in the run dir (.peers/).
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<EOF
Usage: scripts/peers.sh start|stop|status|pids [options]

  start    install what is missing (nginx and caddy from Debian's packages, gunicorn from PyPI into
           .venv/), write configs into $RUN_DIR from scripts/peers/, create the served root
           $WWW_DIR and start the peers on loopback; a peer already running is restarted
  stop     stop the peers by their recorded PIDs (never by name) and wait for them to exit
  status   show each peer's recorded PIDs, whether it is alive and whether it answers HTTP
  pids P   print the PIDs whose CPU time counts for peer P (master and workers)

Options (start):
  --workers N          worker processes for nginx and gunicorn (default: 1)
  --cpus LIST          CPUs to pin the peers to, e.g. 0 or 0-3 (default: the first N CPUs)
  --peers-dir DIR      offline: nginx from DIR/usr/sbin/nginx or DIR/*.deb (dpkg -x), caddy
                       from DIR/usr/bin/caddy, DIR/caddy or DIR/caddy_*.deb, haproxy from
                       DIR/usr/sbin/haproxy, DIR/haproxy or DIR/*.deb, gunicorn from the
                       wheels in DIR (pip --no-index --find-links DIR)
  --only LIST          start only these of: nginx,caddy,gunicorn-hello,gunicorn-files,
                       nginx-proxy,caddy-proxy,haproxy,gunicorn-upstream (default: the first
                       four; the proxies need --upstream)
  --upstream ADDR      HOST:PORT the proxies (nginx-proxy, caddy-proxy, haproxy) forward to
  --gunicorn-workers N gunicorn worker count (default: --workers)
  --gunicorn-class C   gunicorn worker class: sync (default), gthread, ...
  --gunicorn-threads N threads per gunicorn worker (gthread; default 1)
  -h, --help           this text

Ports (environment): NGINX_PORT=$NGINX_PORT CADDY_PORT=$CADDY_PORT NGINX_DEFERRED_PORT=${NGINX_DEFERRED_PORT:-(none)} GUNICORN_HELLO_PORT=$GUNICORN_HELLO_PORT
GUNICORN_FILES_PORT=$GUNICORN_FILES_PORT GUNICORN_UPSTREAM_PORT=$GUNICORN_UPSTREAM_PORT NGINX_PROXY_PORT=$NGINX_PROXY_PORT
HAPROXY_PORT=$HAPROXY_PORT CADDY_PROXY_PORT=$CADDY_PROXY_PORT. Run dir: RINGD_RUN_DIR (default .peers/).
EOF
}

# What `start` starts by default; the proxies and gunicorn's upstream app only on request (--only).
DEFAULT_PEERS=(nginx caddy gunicorn-hello gunicorn-files)
ALL_PEERS=("${DEFAULT_PEERS[@]}" nginx-proxy caddy-proxy haproxy gunicorn-upstream)

peer_port() {
    case "$1" in
    nginx) echo "$NGINX_PORT" ;;
    caddy) echo "$CADDY_PORT" ;;
    gunicorn-hello) echo "$GUNICORN_HELLO_PORT" ;;
    gunicorn-files) echo "$GUNICORN_FILES_PORT" ;;
    gunicorn-upstream) echo "$GUNICORN_UPSTREAM_PORT" ;;
    nginx-proxy) echo "$NGINX_PROXY_PORT" ;;
    caddy-proxy) echo "$CADDY_PROXY_PORT" ;;
    haproxy) echo "$HAPROXY_PORT" ;;
    *) die "unknown peer '$1' (want one of: ${ALL_PEERS[*]})" ;;
    esac
}

# The URL that proves a peer serves what the benchmark asks of it.
peer_probe_url() {
    local port
    port="$(peer_port "$1")"
    case "$1" in
    nginx | caddy) echo "http://127.0.0.1:$port/hello.txt" ;;
    gunicorn-hello | gunicorn-upstream) echo "http://127.0.0.1:$port/" ;;
    gunicorn-files) echo "http://127.0.0.1:$port/small.bin" ;;
    # A proxy is up when it forwards: nginx (the upstream) has hello.txt, gunicorn-upstream
    # answers any path.
    nginx-proxy | caddy-proxy | haproxy) echo "http://127.0.0.1:$port/hello.txt" ;;
    esac
}

# The word a live peer's command line contains (PID-reuse guard).
peer_word() {
    case "$1" in
    nginx | nginx-proxy) echo "nginx" ;;
    caddy | caddy-proxy) echo "caddy" ;;
    haproxy) echo "haproxy" ;;
    gunicorn-*) echo "gunicorn" ;;
    esac
}

recorded_pid() {
    local f="$RUN_DIR/$1.pid"
    if [[ -s "$f" ]]; then head -n1 "$f"; fi
}

peer_running() {
    local pid
    pid="$(recorded_pid "$1")"
    [[ -n "$pid" ]] && pid_is "$pid" "$(peer_word "$1")"
}

# Master PID and the worker PIDs (its children), space-separated.
peer_pids() {
    local pid kids
    peer_running "$1" || return 1
    pid="$(recorded_pid "$1")"
    kids="$(child_pids "$pid")"
    echo "$pid${kids:+ $kids}"
}

stop_peer() {
    local name="$1" pid w word
    word="$(peer_word "$name")"
    pid="$(recorded_pid "$name")"
    if [[ -n "$pid" ]] && pid_is "$pid" "$word"; then
        log "stopping $name (PID $pid)"
        # nginx: SIGQUIT is a graceful stop; gunicorn: SIGTERM is (HAProxy, Caddy: SIGTERM stops).
        if [[ "$name" == nginx* ]]; then stop_pid "$pid" QUIT; else stop_pid "$pid" TERM; fi
    fi
    # Workers recorded at start that somehow outlived their master.
    if [[ -s "$RUN_DIR/$name.workers" ]]; then
        for w in $(<"$RUN_DIR/$name.workers"); do
            if pid_is "$w" "$word"; then
                warn "$name worker $w outlived its master; stopping it"
                stop_pid "$w" TERM
            fi
        done
    fi
    rm -f "$RUN_DIR/$name.pid" "$RUN_DIR/$name.workers"
}

record_cmd() {
    quote_cmd "$@" >>"$RUN_DIR/commands.txt"
}

# The upstream HOST:PORT the proxies forward to (start --upstream).
PEER_UPSTREAM=""

# nginx-proxy's cache and gzip lines (NGINX_PROXY_CACHE=1, bench.sh's cache scenarios), or none.
nginx_cache_http() {
    [[ "${NGINX_PROXY_CACHE:-0}" == 1 ]] || return 0
    mkdir -p "$1/nginx-cache"
    printf '    proxy_cache_path %s/nginx-cache levels=1:2 keys_zone=rc:16m max_size=256m inactive=1h use_temp_path=off;\n' "$1"
    printf '    gzip on;\n    gzip_comp_level 5;\n    gzip_min_length 1024;\n'
}
nginx_cache_location() {
    [[ "${NGINX_PROXY_CACHE:-0}" == 1 ]] || return 0
    printf '            proxy_cache rc;\n            proxy_cache_valid 200 1h;\n            proxy_cache_lock on;\n'
    printf '            add_header X-Cache $upstream_cache_status;\n'
}

# start_nginx WORKERS CPUS [NAME]: NAME nginx (static files, the default) or nginx-proxy (a
# second instance, its own dir and PID, proxying to PEER_UPSTREAM).
start_nginx() {
    local workers="$1" cpus="$2" name="${3:-nginx}" nofile conns user_line pid
    local dir="$RUN_DIR/$name"
    mkdir -p "$dir/nginx-tmp"
    nofile="$(max_nofile)"
    if [[ $EUID -eq 0 ]]; then
        user_line="user root;"
    else
        user_line="# (not root: workers run as $(id -un))"
    fi
    conns=$((nofile / 2))
    ((conns > 65535)) && conns=65535
    # Optionally a second listener for the same site, with `deferred` (TCP_DEFER_ACCEPT).
    local deferred=""
    if [[ "$name" == nginx-proxy ]]; then
        render_template "$SCRIPTS_DIR/peers/nginx-proxy.conf.tmpl" "$dir/nginx.conf" \
            "USER_LINE=$user_line" "WORKERS=$workers" \
            "AFFINITY=$(nginx_affinity_masks "$workers" "$cpus")" "NOFILE=$nofile" \
            "WORKER_CONNECTIONS=$conns" "RUN=$dir" "PORT=$NGINX_PROXY_PORT" "BACKLOG=65535" \
            "UPSTREAM=$PEER_UPSTREAM" "KEEPALIVE=${PROXY_KEEPALIVE:-128}" \
            "CACHE_HTTP=$(nginx_cache_http "$dir")" \
            "CACHE_LOCATION=$(nginx_cache_location)"
    elif [[ -n "$NGINX_DEFERRED_PORT" ]]; then
        deferred=$'\n        listen 127.0.0.1:'"$NGINX_DEFERRED_PORT reuseport deferred backlog=65535;"
    fi
    # The TLS scenarios (bench.sh): an ssl listener for the same site, TLS 1.3 only, tickets on.
    if [[ "$name" == nginx && -n "${NGINX_TLS_PORT:-}" && -n "${NGINX_TLS_CERT:-}" ]]; then
        deferred+=$'\n        listen 127.0.0.1:'"$NGINX_TLS_PORT ssl reuseport backlog=65535;"
        deferred+=$'\n        ssl_certificate '"$NGINX_TLS_CERT;"
        deferred+=$'\n        ssl_certificate_key '"$NGINX_TLS_KEY;"
        deferred+=$'\n        ssl_protocols TLSv1.3;'
        deferred+=$'\n        ssl_session_cache shared:SSL:10m;'
        deferred+=$'\n        ssl_session_tickets on;'
    fi
    if [[ "$name" == nginx ]]; then
        render_template "$SCRIPTS_DIR/peers/nginx.conf.tmpl" "$dir/nginx.conf" \
            "USER_LINE=$user_line" "WORKERS=$workers" \
            "AFFINITY=$(nginx_affinity_masks "$workers" "$cpus")" "NOFILE=$nofile" \
            "WORKER_CONNECTIONS=$conns" "RUN=$dir" "PORT=$NGINX_PORT" "BACKLOG=65535" "WWW=$WWW_DIR" \
            "DEFERRED_LISTEN=$deferred"
    fi
    nginx_cmd -t -q -p "$dir/" -e "$dir/nginx-error.log" -c "$dir/nginx.conf" >&2 ||
        die "nginx rejected $dir/nginx.conf (see above)"
    local -a cmd=(taskset -c "$cpus" "$NGINX_BIN" -p "$dir/" -e "$dir/nginx-error.log" -c "$dir/nginx.conf")
    record_cmd "${cmd[@]}"
    if [[ -n "$NGINX_LD_PATH" ]]; then
        LD_LIBRARY_PATH="$NGINX_LD_PATH" "${cmd[@]}" </dev/null >>"$dir/stdout.log" 2>&1 &
    else
        "${cmd[@]}" </dev/null >>"$dir/stdout.log" 2>&1 &
    fi
    pid=$!
    echo "$pid" >"$RUN_DIR/$name.pid"
    finish_start "$name" "$pid" "$workers" "$dir/nginx-error.log"
}

# Caddy is one Go process: GOMAXPROCS stands for the worker count, taskset pins it; its data
# and config dirs go into the run dir (never $HOME).
# NAME (third argument) caddy (static files, the default) or caddy-proxy (reverse_proxy to
# PEER_UPSTREAM).
start_caddy() {
    local workers="$1" cpus="$2" name="${3:-caddy}" pid
    local dir="$RUN_DIR/$name"
    mkdir -p "$dir"
    if [[ "$name" == caddy-proxy ]]; then
        render_template "$SCRIPTS_DIR/peers/Caddyfile-proxy.tmpl" "$dir/Caddyfile" \
            "PORT=$CADDY_PROXY_PORT" "UPSTREAM=$PEER_UPSTREAM" \
            "KEEPALIVE=${PROXY_KEEPALIVE:-128}"
    else
        render_template "$SCRIPTS_DIR/peers/Caddyfile.tmpl" "$dir/Caddyfile" \
            "PORT=$CADDY_PORT" "WWW=$WWW_DIR"
    fi
    local -a envs=(env "GOMAXPROCS=$workers" "XDG_DATA_HOME=$dir/data" "XDG_CONFIG_HOME=$dir/config" "HOME=$dir")
    "${envs[@]}" "$CADDY_BIN" validate --adapter caddyfile --config "$dir/Caddyfile" >"$dir/validate.log" 2>&1 ||
        { cat "$dir/validate.log" >&2; die "caddy rejected $dir/Caddyfile (see above)"; }
    local -a cmd=(taskset -c "$cpus" "${envs[@]}" "$CADDY_BIN" run --adapter caddyfile --config "$dir/Caddyfile")
    record_cmd "${cmd[@]}"
    "${cmd[@]}" </dev/null >>"$dir/caddy.log" 2>&1 &
    pid=$!
    echo "$pid" >"$RUN_DIR/$name.pid"
    # No worker processes: threads of one process.
    finish_start "$name" "$pid" 0 "$dir/caddy.log"
}

# HAProxy in the foreground (-db: no daemon, no master-worker), one process with WORKERS
# threads (nbthread), pinned with taskset, proxying to PEER_UPSTREAM.
start_haproxy() {
    local workers="$1" cpus="$2" dir="$RUN_DIR/haproxy" pid maxconn
    mkdir -p "$dir"
    maxconn=$(($(max_nofile) / 2 - 100))
    ((maxconn > 100000)) && maxconn=100000
    render_template "$SCRIPTS_DIR/peers/haproxy.cfg.tmpl" "$dir/haproxy.cfg" \
        "THREADS=$workers" "MAXCONN=$maxconn" "RUN=$dir" "PORT=$HAPROXY_PORT" "UPSTREAM=$PEER_UPSTREAM"
    haproxy_cmd -c -q -f "$dir/haproxy.cfg" >&2 || die "haproxy rejected $dir/haproxy.cfg (see above)"
    local -a cmd=(taskset -c "$cpus" "$HAPROXY_BIN" -db -f "$dir/haproxy.cfg")
    record_cmd "${cmd[@]}"
    if [[ -n "$HAPROXY_LD_PATH" ]]; then
        LD_LIBRARY_PATH="$HAPROXY_LD_PATH" "${cmd[@]}" </dev/null >>"$dir/haproxy.log" 2>&1 &
    else
        "${cmd[@]}" </dev/null >>"$dir/haproxy.log" 2>&1 &
    fi
    pid=$!
    echo "$pid" >"$RUN_DIR/haproxy.pid"
    finish_start haproxy "$pid" 0 "$dir/haproxy.log"
}

start_gunicorn() {
    local name="$1" app="$2" workers="$3" cpus="$4" klass="$5" threads="$6" port pid conf
    port="$(peer_port "$name")"
    conf="$RUN_DIR/$name.conf.py"
    render_template "$SCRIPTS_DIR/peers/gunicorn.conf.py.tmpl" "$conf" \
        "PORT=$port" "WORKERS=$workers" "WORKER_CLASS=$klass" "THREADS=$threads" \
        "BACKLOG=2048" "RUN=$RUN_DIR" "APP=$app" "APP_DIR=$SCRIPTS_DIR/peers" "WWW=$WWW_DIR"
    local -a cmd=(taskset -c "$cpus" "$GUNICORN_BIN" -c "$conf" "app:$app")
    record_cmd "${cmd[@]}"
    # No __pycache__ beside app.py in the source tree.
    PYTHONDONTWRITEBYTECODE=1 "${cmd[@]}" </dev/null >>"$RUN_DIR/$name.out" 2>&1 &
    pid=$!
    echo "$pid" >"$RUN_DIR/$name.pid"
    finish_start "$name" "$pid" "$workers" "$RUN_DIR/gunicorn-$app-error.log"
}

# Wait until the peer answers and all its workers are up, then record the worker PIDs.
finish_start() {
    local name="$1" pid="$2" workers="$3" errlog="$4" url kids i
    url="$(peer_probe_url "$name")"
    if ! wait_http "$url" 20 "$pid"; then
        warn "$name (PID $pid) did not answer $url; last lines of $errlog:"
        tail -n 20 "$errlog" >&2 2>/dev/null || true
        stop_peer "$name"
        die "$name failed to start"
    fi
    for ((i = 0; i < 100; i++)); do
        kids="$(child_pids "$pid")"
        (($(wc -w <<<"$kids") >= workers)) && break
        sleep 0.1
    done
    echo "$kids" >"$RUN_DIR/$name.workers"
    log "$name up: $url (master $pid, workers $kids)"
}

cmd_start() {
    local workers=1 cpus="" peers_dir="" only="" gworkers="" gclass=sync gthreads=1 upstream=""
    while (($#)); do
        case "$1" in
        --workers) workers="${2:?--workers needs a value}" && shift ;;
        --cpus) cpus="${2:?--cpus needs a value}" && shift ;;
        --peers-dir) peers_dir="${2:?--peers-dir needs a value}" && shift ;;
        --only) only="${2:?--only needs a value}" && shift ;;
        --gunicorn-workers) gworkers="${2:?--gunicorn-workers needs a value}" && shift ;;
        --gunicorn-class) gclass="${2:?--gunicorn-class needs a value}" && shift ;;
        --gunicorn-threads) gthreads="${2:?--gunicorn-threads needs a value}" && shift ;;
        --upstream) upstream="${2:?--upstream needs HOST:PORT}" && shift ;;
        -h | --help) usage && exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
        esac
        shift
    done
    [[ "$workers" =~ ^[1-9][0-9]*$ ]] || die "--workers wants a positive integer, got '$workers'"
    gworkers="${gworkers:-$workers}"
    [[ "$gworkers" =~ ^[1-9][0-9]*$ ]] || die "--gunicorn-workers wants a positive integer"
    [[ "$gthreads" =~ ^[1-9][0-9]*$ ]] || die "--gunicorn-threads wants a positive integer"
    if [[ -z "$cpus" ]]; then
        local n
        n="$(ncpus)"
        cpus="$(cpu_range 0 $(((workers < n ? workers : n) - 1)))"
    fi
    expand_cpus "$cpus" >/dev/null
    [[ -z "$peers_dir" || -d "$peers_dir" ]] || die "--peers-dir $peers_dir is not a directory"
    local -a peers=("${DEFAULT_PEERS[@]}")
    if [[ -n "$only" ]]; then
        IFS=',' read -r -a peers <<<"$only"
        local p
        for p in "${peers[@]}"; do
            peer_port "$p" >/dev/null
            case "$p" in
            nginx-proxy | caddy-proxy | haproxy)
                [[ "$upstream" =~ ^[^:]+:[0-9]+$ ]] || die "$p needs --upstream HOST:PORT"
                ;;
            esac
        done
    fi
    PEER_UPSTREAM="$upstream"

    mkdir -p "$RUN_DIR"
    : >"$RUN_DIR/commands.txt"
    make_www
    local p want_nginx=0 want_gunicorn=0 want_caddy=0 want_haproxy=0
    for p in "${peers[@]}"; do
        case "$p" in
        nginx*) want_nginx=1 ;; caddy*) want_caddy=1 ;; haproxy) want_haproxy=1 ;; gunicorn-*) want_gunicorn=1 ;;
        esac
    done
    ((want_nginx)) && ensure_nginx "$peers_dir"
    ((want_caddy)) && ensure_caddy "$peers_dir"
    ((want_haproxy)) && ensure_haproxy "$peers_dir"
    ((want_gunicorn)) && ensure_gunicorn "$peers_dir"
    for p in "${peers[@]}"; do
        if peer_running "$p"; then
            log "$p is running; restarting it with the new settings"
            stop_peer "$p"
        fi
        if port_busy "$(peer_port "$p")"; then
            die "port $(peer_port "$p") for $p is taken by another process (set the port variables, see --help)"
        fi
    done
    for p in "${peers[@]}"; do
        case "$p" in
        nginx) start_nginx "$workers" "$cpus" ;;
        caddy) start_caddy "$workers" "$cpus" ;;
        gunicorn-hello) start_gunicorn "$p" hello "$gworkers" "$cpus" "$gclass" "$gthreads" ;;
        gunicorn-files) start_gunicorn "$p" files "$gworkers" "$cpus" "$gclass" "$gthreads" ;;
        gunicorn-upstream) start_gunicorn "$p" upstream "$gworkers" "$cpus" "$gclass" "$gthreads" ;;
        nginx-proxy) start_nginx "$workers" "$cpus" nginx-proxy ;;
        caddy-proxy) start_caddy "$workers" "$cpus" caddy-proxy ;;
        haproxy) start_haproxy "$workers" "$cpus" ;;
        esac
    done
}

cmd_stop() {
    local p
    # The proxies first: an upstream nginx stopping gracefully waits for their connections
    # (seen: the upstream nginx outlived SIGQUIT by 10 s and was killed).
    for p in nginx-proxy caddy-proxy haproxy "${DEFAULT_PEERS[@]}" gunicorn-upstream; do stop_peer "$p"; done
}

cmd_status() {
    local p pid state answer code=0
    for p in "${ALL_PEERS[@]}"; do
        pid="$(recorded_pid "$p")"
        if peer_running "$p"; then
            state="running (PIDs $(peer_pids "$p"))"
            if curl -fsS -o /dev/null --max-time 2 "$(peer_probe_url "$p")"; then
                answer="answers $(peer_probe_url "$p")"
            else
                answer="does NOT answer $(peer_probe_url "$p")"
                code=1
            fi
        elif [[ -n "$pid" ]]; then
            state="dead (recorded PID $pid)" answer=""
            code=1
        else
            state="stopped" answer=""
        fi
        printf '%-15s %s %s\n' "$p" "$state" "$answer"
    done
    return "$code"
}

main() {
    (($#)) || {
        usage >&2
        exit 2
    }
    local sub="$1"
    shift
    case "$sub" in
    start) cmd_start "$@" ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    pids)
        [[ $# -eq 1 ]] || die "usage: scripts/peers.sh pids PEER (one of: ${ALL_PEERS[*]})"
        peer_port "$1" >/dev/null
        peer_pids "$1" || die "$1 is not running"
        ;;
    -h | --help | help) usage ;;
    *) die "unknown command '$sub' (see --help)" ;;
    esac
}

main "$@"
