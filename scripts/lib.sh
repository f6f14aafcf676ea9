# shellcheck shell=bash
# Shared helpers for scripts/peers.sh, scripts/bench.sh and scripts/tune-kernel.sh: logging,
# process bookkeeping by PID, port checks, CPU lists and installing what the peers need.
# Sourced, never run. Expects `set -euo pipefail` in the caller.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPTS_DIR="$REPO_ROOT/scripts"
# Run directory for configs, logs, PID files and the served root (git-ignored).
RUN_DIR="${RINGD_RUN_DIR:-$REPO_ROOT/.peers}"
WWW_DIR="$RUN_DIR/www"
VENV_DIR="${RINGD_VENV_DIR:-$REPO_ROOT/.venv}"
# gunicorn version installed from PyPI (or from the wheels in --peers-dir).
GUNICORN_SPEC="${GUNICORN_SPEC:-gunicorn>=23,<28}"

# Loopback ports, each overridable from the environment.
NGINX_PORT="${NGINX_PORT:-18081}"
# A second nginx listener with `deferred` (TCP_DEFER_ACCEPT), on the same workers, when set
# (bench.sh sets it: its connect scenario compares ringd's deferred accept with nginx's).
NGINX_DEFERRED_PORT="${NGINX_DEFERRED_PORT:-}"
GUNICORN_HELLO_PORT="${GUNICORN_HELLO_PORT:-18082}"
CADDY_PORT="${CADDY_PORT:-18085}"
GUNICORN_FILES_PORT="${GUNICORN_FILES_PORT:-18083}"
# The proxy scenarios (bench.sh proxy-*): gunicorn's upstream app (hello + /files/NAME) and
# the proxies in front of an upstream: nginx and Caddy (second instances, proxying) and HAProxy.
GUNICORN_UPSTREAM_PORT="${GUNICORN_UPSTREAM_PORT:-18086}"
NGINX_PROXY_PORT="${NGINX_PROXY_PORT:-18087}"
HAPROXY_PORT="${HAPROXY_PORT:-18088}"
CADDY_PROXY_PORT="${CADDY_PROXY_PORT:-18089}"
RINGD_PORT_BASE="${RINGD_PORT_BASE:-18090}"

log() { printf '%s %s\n' "[$(date +%H:%M:%S)]" "$*" >&2; }
warn() { printf '%s warning: %s\n' "[$(date +%H:%M:%S)]" "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Quote a command line so it can be pasted back into a shell.
quote_cmd() {
    local out="" arg
    for arg in "$@"; do
        out+="$(printf '%q' "$arg") "
    done
    printf '%s\n' "${out% }"
}

ncpus() { nproc 2>/dev/null || getconf _NPROCESSORS_ONLN; }

# Expand a CPU list such as "0-2,5" into one CPU number per line.
expand_cpus() {
    local part lo hi i
    local IFS=','
    for part in $1; do
        if [[ "$part" =~ ^([0-9]+)-([0-9]+)$ ]]; then
            lo="${BASH_REMATCH[1]}" hi="${BASH_REMATCH[2]}"
            for ((i = lo; i <= hi; i++)); do echo "$i"; done
        elif [[ "$part" =~ ^[0-9]+$ ]]; then
            echo "$part"
        else
            die "bad CPU list '$1' (want e.g. 0-3,6)"
        fi
    done
}

# Number of CPUs in a list such as "0-2,5".
count_cpus() { expand_cpus "$1" | wc -l; }

# "a-b" for a non-empty range, used to build taskset lists.
cpu_range() {
    if (($1 == $2)); then echo "$1"; else echo "$1-$2"; fi
}

# nginx worker_cpu_affinity masks: worker i on the i-th CPU of the list (wrapping around).
nginx_affinity_masks() {
    local workers="$1" cpus="$2" i j cpu mask masks=""
    local -a list
    mapfile -t list < <(expand_cpus "$cpus")
    for ((i = 0; i < workers; i++)); do
        cpu="${list[i % ${#list[@]}]}"
        mask="1"
        for ((j = 0; j < cpu; j++)); do mask+="0"; done
        masks+="$mask "
    done
    echo "${masks% }"
}

# The most open files a process started from here may have: 1048576 where the hard limit can be
# raised that far (root with CAP_SYS_RESOURCE), else the current hard limit.
max_nofile() {
    local hard
    if (ulimit -Hn 1048576) 2>/dev/null; then
        echo 1048576
        return
    fi
    hard="$(ulimit -Hn)"
    [[ "$hard" == unlimited ]] && hard=1048576
    echo "$hard"
}

# True when PID is alive and its command line contains WORD (guards against PID reuse).
pid_is() {
    local pid="$1" word="$2"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$word"
}

# Stop one process by PID: SIGTERM (or the given signal), wait up to 10 s, then SIGKILL.
stop_pid() {
    local pid="$1" sig="${2:-TERM}" i
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -s "$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        # Reap it if it is our child, so it does not linger as a zombie.
        if [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" == "Z" ]]; then
            wait "$pid" 2>/dev/null || true
            return 0
        fi
        sleep 0.1
    done
    warn "PID $pid did not exit after SIG$sig; sending SIGKILL"
    kill -s KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# Direct children of a PID (by parent PID, never by name).
child_pids() {
    pgrep -P "$1" 2>/dev/null | tr '\n' ' ' | sed 's/ $//' || true
}

# True when something listens on 127.0.0.1:PORT.
port_busy() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Wait until URL answers 200 (up to $2 seconds, default 15) while PID $3 (if given) lives;
# $4, when given, is the Host header to send (a server of name-based sites).
wait_http() {
    local url="$1" secs="${2:-15}" pid="${3:-}" host="${4:-}" i
    local -a hdr=()
    [[ -n "$host" ]] && hdr=(-H "Host: $host")
    # https on loopback: readiness only, the benchmark's client verifies the certificate.
    [[ "$url" == https://* ]] && hdr+=(-k)
    for ((i = 0; i < secs * 10; i++)); do
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        if curl -fsS -o /dev/null --max-time 2 "${hdr[@]}" "$url" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# Create the served root: small.bin (1000 B), medium.bin (100 KiB), large.bin (10 MiB) and
# hello.txt, with deterministic content (rewritten only when it differs).
make_www() {
    python3 "$SCRIPTS_DIR/benchtool.py" mkdata "$WWW_DIR" >&2
}

# Debian package installation without starting services; runs `apt-get update` only when the
# package is not known to apt yet.
apt_install() {
    local pkg="$1"
    command -v apt-get >/dev/null || die "apt-get not found; install $pkg yourself or use --peers-dir"
    [[ $EUID -eq 0 ]] || die "installing $pkg needs root (or install it yourself, or use --peers-dir)"
    if ! apt-cache show "$pkg" >/dev/null 2>&1; then
        log "apt-get update (package lists lack $pkg)"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    fi
    log "apt-get install -y $pkg"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >&2; then
        log "apt-get install failed; retrying after apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >&2
    fi
}

# Path of the nginx binary, installing or unpacking it when missing. With a peers dir, nginx comes
# from it: either an unpacked tree (DIR/usr/sbin/nginx) or .deb files unpacked with dpkg -x.
NGINX_BIN=""
NGINX_LD_PATH=""
ensure_nginx() {
    local peers_dir="${1:-}"
    if [[ -n "$peers_dir" ]]; then
        local root="" deb
        if [[ -x "$peers_dir/usr/sbin/nginx" ]]; then
            root="$peers_dir"
        else
            root="$RUN_DIR/offline-root"
            if [[ ! -x "$root/usr/sbin/nginx" ]]; then
                local found=0
                mkdir -p "$root"
                for deb in "$peers_dir"/*.deb; do
                    [[ -e "$deb" ]] || continue
                    log "unpacking $(basename "$deb") (dpkg -x)"
                    dpkg -x "$deb" "$root"
                    found=1
                done
                ((found)) || die "--peers-dir $peers_dir holds neither usr/sbin/nginx nor .deb files"
            fi
            [[ -x "$root/usr/sbin/nginx" ]] || die "no usr/sbin/nginx in the .deb files of $peers_dir"
        fi
        NGINX_BIN="$root/usr/sbin/nginx"
        if [[ -d "$root/usr/lib/x86_64-linux-gnu" || -d "$root/lib/x86_64-linux-gnu" ]]; then
            NGINX_LD_PATH="$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu"
        fi
        return 0
    fi
    if command -v nginx >/dev/null; then
        NGINX_BIN="$(command -v nginx)"
    elif [[ -x /usr/sbin/nginx ]]; then
        NGINX_BIN=/usr/sbin/nginx
    else
        # Debian's policy-rc.d/no-init keeps the packaged service from starting on port 80;
        # we never use it, only the binary.
        apt_install nginx
        NGINX_BIN=/usr/sbin/nginx
    fi
}

# Path of the caddy binary (Debian's `caddy` package), installing it when missing. With a peers
# dir, caddy comes from it: DIR/usr/bin/caddy, a static DIR/caddy, or a caddy .deb in DIR
# (unpacked with dpkg -x).
CADDY_BIN=""
ensure_caddy() {
    local peers_dir="${1:-}"
    if [[ -n "$peers_dir" ]]; then
        local root="$RUN_DIR/offline-root" deb
        if [[ -x "$peers_dir/usr/bin/caddy" ]]; then
            CADDY_BIN="$peers_dir/usr/bin/caddy"
        elif [[ -x "$peers_dir/caddy" ]]; then
            CADDY_BIN="$peers_dir/caddy"
        else
            if [[ ! -x "$root/usr/bin/caddy" ]]; then
                mkdir -p "$root"
                for deb in "$peers_dir"/caddy_*.deb; do
                    [[ -e "$deb" ]] || continue
                    log "unpacking $(basename "$deb") (dpkg -x)"
                    dpkg -x "$deb" "$root"
                done
            fi
            [[ -x "$root/usr/bin/caddy" ]] ||
                die "--peers-dir $peers_dir holds neither usr/bin/caddy, caddy nor a caddy_*.deb"
            CADDY_BIN="$root/usr/bin/caddy"
        fi
        return 0
    fi
    if command -v caddy >/dev/null; then
        CADDY_BIN="$(command -v caddy)"
    else
        # Like nginx: no service is started in a container; only the binary is used.
        apt_install caddy
        CADDY_BIN=/usr/bin/caddy
    fi
}

# Path of the haproxy binary (Debian's `haproxy` package), installing it when missing. With a
# peers dir, haproxy comes from it: DIR/usr/sbin/haproxy, a static DIR/haproxy, or a haproxy
# .deb in DIR (unpacked with dpkg -x; the libraries it needs beyond the base system, such as
# liblua5.3, as further .deb files there).
HAPROXY_BIN=""
HAPROXY_LD_PATH=""
ensure_haproxy() {
    local peers_dir="${1:-}"
    if [[ -n "$peers_dir" ]]; then
        local root="$RUN_DIR/offline-root" deb
        if [[ -x "$peers_dir/usr/sbin/haproxy" ]]; then
            root="$peers_dir"
        elif [[ -x "$peers_dir/haproxy" ]]; then
            HAPROXY_BIN="$peers_dir/haproxy"
            return 0
        elif [[ ! -x "$root/usr/sbin/haproxy" ]]; then
            mkdir -p "$root"
            for deb in "$peers_dir"/*.deb; do
                [[ -e "$deb" ]] || continue
                log "unpacking $(basename "$deb") (dpkg -x)"
                dpkg -x "$deb" "$root"
            done
        fi
        [[ -x "$root/usr/sbin/haproxy" ]] ||
            die "--peers-dir $peers_dir holds neither usr/sbin/haproxy, haproxy nor a haproxy_*.deb"
        HAPROXY_BIN="$root/usr/sbin/haproxy"
        if [[ -d "$root/usr/lib/x86_64-linux-gnu" || -d "$root/lib/x86_64-linux-gnu" ]]; then
            HAPROXY_LD_PATH="$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu"
        fi
        return 0
    fi
    if command -v haproxy >/dev/null; then
        HAPROXY_BIN="$(command -v haproxy)"
    elif [[ -x /usr/sbin/haproxy ]]; then
        HAPROXY_BIN=/usr/sbin/haproxy
    else
        # Like nginx: no service is started in a container; only the binary is used.
        apt_install haproxy
        HAPROXY_BIN=/usr/sbin/haproxy
    fi
}

# Run haproxy with the library path an offline unpacked tree may need.
haproxy_cmd() {
    if [[ -n "$HAPROXY_LD_PATH" ]]; then
        env LD_LIBRARY_PATH="$HAPROXY_LD_PATH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$HAPROXY_BIN" "$@"
    else
        "$HAPROXY_BIN" "$@"
    fi
}

# Run nginx with the library path an offline unpacked tree may need.
nginx_cmd() {
    if [[ -n "$NGINX_LD_PATH" ]]; then
        env LD_LIBRARY_PATH="$NGINX_LD_PATH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$NGINX_BIN" "$@"
    else
        "$NGINX_BIN" "$@"
    fi
}

# gunicorn in the project's venv: from PyPI, or offline from wheels in the peers dir.
GUNICORN_BIN=""
ensure_gunicorn() {
    local peers_dir="${1:-}"
    GUNICORN_BIN="$VENV_DIR/bin/gunicorn"
    [[ -x "$GUNICORN_BIN" ]] && return 0
    if [[ ! -x "$VENV_DIR/bin/python" ]]; then
        log "creating venv $VENV_DIR"
        python3 -m venv "$VENV_DIR" >&2 || die "python3 -m venv failed (apt-get install python3-venv?)"
    fi
    if [[ -n "$peers_dir" ]]; then
        log "pip install --no-index --find-links $peers_dir '$GUNICORN_SPEC'"
        "$VENV_DIR/bin/python" -m pip install -q --disable-pip-version-check --no-index \
            --find-links "$peers_dir" "$GUNICORN_SPEC" >&2
    else
        log "pip install '$GUNICORN_SPEC' into $VENV_DIR"
        "$VENV_DIR/bin/python" -m pip install -q --disable-pip-version-check "$GUNICORN_SPEC" >&2
    fi
    [[ -x "$GUNICORN_BIN" ]] || die "gunicorn did not install into $VENV_DIR"
}

# Render a template: replaces every @KEY@ with its value from KEY=VALUE arguments.
render_template() {
    local tmpl="$1" out="$2" pair key val content
    shift 2
    content="$(<"$tmpl")"
    for pair in "$@"; do
        key="${pair%%=*}" val="${pair#*=}"
        content="${content//@"$key"@/$val}"
    done
    if [[ "$content" =~ @[A-Z_]+@ ]]; then
        die "template $tmpl left ${BASH_REMATCH[0]} unfilled"
    fi
    printf '%s\n' "$content" >"$out"
}

# ------------------------------------------------------------------------------ shared by the
# stand-alone measurement scripts (wrk-check.sh, soak.sh); each defines `record` and sets BUILD,
# RINGD_BIN and LOADGEN_BIN.

# cargo build --release --workspace (unless BUILD=0), then check both binaries exist.
build_release() {
    local -a cmd=(cargo build --release --workspace)
    if ((BUILD)); then
        log "building: ${cmd[*]}"
        record "${cmd[@]}"
        (cd "$REPO_ROOT" && "${cmd[@]}") >&2
    fi
    [[ -x "$RINGD_BIN" ]] || die "no ringd binary at $RINGD_BIN (run without --no-build)"
    [[ -x "$LOADGEN_BIN" ]] || die "no loadgen binary at $LOADGEN_BIN (run without --no-build)"
}

# launch_ringd BACKEND CPU ROOT LOG [FLAG...]: start ringd (with the extra FLAGs, if any) with
# one worker pinned to CPU on an ephemeral port; sets LAUNCHED_PID and LAUNCHED_URL (http://127.0.0.1:PORT). Returns 1, with ringd
# stopped and its output shown, when it did not come up.
# shellcheck disable=SC2034 # LAUNCHED_* are read by the calling script
launch_ringd() {
    local backend="$1" cpu="$2" root="$3" log_file="$4" pid url="" i
    shift 4
    local -a cmd=(taskset -c "$cpu" "$RINGD_BIN" --listen 127.0.0.1:0 --workers 1 --backend "$backend" "$@" "$root")
    record "${cmd[@]}"
    "${cmd[@]}" </dev/null >"$log_file" 2>&1 &
    pid=$!
    LAUNCHED_PID="$pid"
    LAUNCHED_URL=""
    for ((i = 0; i < 150; i++)); do
        url="$(grep -o -m1 'http://127\.0\.0\.1:[0-9]*' "$log_file" || true)"
        [[ -n "$url" ]] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -z "$url" ]] || ! wait_http "$url/hello.txt" 10 "$pid"; then
        warn "ringd --backend $backend${*:+ $*} did not come up. Its output:"
        sed 's/^/    /' "$log_file" | tail -n 15 >&2 || true
        stop_pid "$pid" TERM
        LAUNCHED_PID=""
        return 1
    fi
    LAUNCHED_URL="$url"
}

# env_footer ENV_TXT COMMANDS: append the load average and the commands run, then drop COMMANDS.
# env_header TITLE: the lines every env.txt starts with (machine, load, commit). A tree with
# uncommitted changes outside results/ (which the run itself writes) names them, so that the
# record says which code ran, not just which commit it started from.
env_header() {
    local commit dirty
    commit="$(git -C "$REPO_ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
    dirty="$(git -C "$REPO_ROOT" status --porcelain -- . ':!results' 2>/dev/null || true)"
    echo "# $1"
    echo "date:          $(date -u +%FT%TZ)"
    echo "host:          $(hostname -s 2>/dev/null || hostname)"
    echo "kernel:        $(uname -srvm)"
    echo "cpu:           $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //' || echo unknown)"
    echo "cores online:  $(ncpus) ($(cat /sys/devices/system/cpu/online 2>/dev/null || echo '?')); allowed here: $(awk '/^Cpus_allowed_list:/ {print $2}' /proc/self/status)"
    echo "memory:        $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "load average:  $(cut -d' ' -f1-3 /proc/loadavg) (at the start)"
    echo "git commit:    $commit (uncommitted changes: $(grep -c . <<<"$dirty" || true) files)"
    if [[ -n "$dirty" ]]; then
        echo "uncommitted:   $(awk '{print $NF}' <<<"$dirty" | paste -sd' ')"
    fi
}

env_footer() {
    {
        echo
        echo "## load average at the end"
        cut -d' ' -f1-3 /proc/loadavg
        echo
        echo "## commands run (in order)"
        cat "$2"
    } >>"$1"
    rm -f "$2"
}

# pick_out_dir NAME: results/<date>-<host>/NAME, or NAME-2, NAME-3 ... when taken; printed.
pick_out_dir() {
    local base out i=2
    base="$REPO_ROOT/results/$(date +%F)-$(hostname -s 2>/dev/null || hostname)/$1"
    out="$base"
    while [[ -e "$out" ]]; do
        out="$base-$i"
        i=$((i + 1))
    done
    printf '%s\n' "$out"
}
