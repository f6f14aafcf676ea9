#!/usr/bin/env bash
# The exact measurements issues 2 and 3 ask for, with wrk as the yardstick: ringd (--workers 1)
# against nginx (1 worker), both pinned to one core with the generator pinned to the next,
# measured alternately over rounds (req/s, bytes/s, the server's CPU per request and per byte),
# then loadgen against wrk on the same targets (req/s, the generator's own CPU per request) and
# one pipelined loadgen run. Writes the raw outputs, env.txt and a generated summary.md.
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<EOF
Usage: scripts/wrk-check.sh [options]

Runs, in one go, on the first CPU this process may use (servers) and the next one (generator):

  server     issue 2: ringd --workers 1 --backend B (uring; epoll and tokio-uring as extra
             rows) and nginx (1 worker, sendfile, tcp_nopush, open_file_cache, access_log off,
             from scripts/peers/nginx.conf.tmpl), alternately per round:
               taskset -c GEN wrk -t1 -c64 -dD URL/small.bin   (1000 bytes)
               taskset -c GEN wrk -t1 -c8  -dD URL/large.bin   (10 MiB)
             and the server's utime+stime (every ringd thread; nginx's master and workers) from
             /proc/PID/stat over exactly each wrk run
  generator  issue 3: against ringd (uring) and nginx, alternately per round:
               taskset -c GEN wrk -t1 -c64 -dD URL/small.bin
               taskset -c GEN loadgen URL/small.bin -t 1 -c 64 -d D --json FILE
             with each generator's own user+sys time from GNU time, then once
               taskset -c GEN loadgen URL/small.bin --pipeline 16 -t 1 -c 64 -d D
             against ringd (uring)

Output (DIR): raw/ (every wrk output, loadgen JSON and GNU time line), runs.tsv (one line per
run), env.txt (machine, versions, the exact commands) and summary.md, generated from them by
'scripts/benchtool.py wrk-check' with every round's figures, medians, ratios and the pass/fail
lines against the issues' bars.

Options:
  --rounds N        rounds per measurement (default 3)
  --duration D      each run's length, e.g. 5s or 1m (default 5s)
  --warmup D        an unrecorded wrk run per target and file before the rounds (default 1s;
                    0 for none)
  --out DIR         output directory (default results/<YYYY-MM-DD>-<host>/wrk-check)
  --no-build        use target/release/{ringd,loadgen} as they are (default: build them with
                    'cargo build --release --workspace')
  --backends LIST   ringd backends (default uring,epoll,tokio-uring; uring is required, one
                    that does not start is left out with a warning)
  --busy-poll D     also measure ringd --backend uring --busy-poll D in the server part, as
                    target ringd-uring-busy-poll (default 100us; 0 leaves it out). It shows
                    what wrk reaches against a worker that never sleeps, so never needs a
                    wakeup, and what that polling costs in server CPU
  --parts LIST      server,generator (default both)
  --server-cpu N    CPU for the servers (default: the first this process may use)
  --gen-cpu N       CPU for wrk and loadgen (default: the next one)
  --peers-dir DIR   nginx offline, as scripts/peers.sh --peers-dir takes it
  -h, --help        this text

Installs wrk, nginx and GNU time with apt-get when they are missing. Every process it starts
is stopped by its PID when it exits, also on Ctrl-C.
EOF
}

ROUNDS=3
DURATION=5s
WARMUP=1s
OUT=""
BUILD=1
BACKENDS="uring,epoll,tokio-uring"
PARTS="server,generator"
BUSY_POLL=100us
SERVER_CPU=""
GEN_CPU=""
PEERS_DIR=""
ORIG_ARGS=("$@")

while (($#)); do
    case "$1" in
    --rounds) ROUNDS="${2:?--rounds needs a value}" && shift ;;
    --duration) DURATION="${2:?--duration needs a value}" && shift ;;
    --warmup) WARMUP="${2:?--warmup needs a value}" && shift ;;
    --out) OUT="${2:?--out needs a value}" && shift ;;
    --no-build) BUILD=0 ;;
    --backends) BACKENDS="${2:?--backends needs a value}" && shift ;;
    --parts) PARTS="${2:?--parts needs a value}" && shift ;;
    --busy-poll) BUSY_POLL="${2:?--busy-poll needs a value}" && shift ;;
    --server-cpu) SERVER_CPU="${2:?--server-cpu needs a value}" && shift ;;
    --gen-cpu) GEN_CPU="${2:?--gen-cpu needs a value}" && shift ;;
    --peers-dir) PEERS_DIR="${2:?--peers-dir needs a value}" && shift ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
done

[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "--rounds wants a positive integer, got '$ROUNDS'"
# wrk takes s, m and h; a bare number is seconds for both generators once it carries the 's'.
[[ "$DURATION" =~ ^[1-9][0-9]*[sm]?$ ]] || die "--duration wants whole seconds or minutes, e.g. 5s or 1m; got '$DURATION'"
[[ "$DURATION" =~ [sm]$ ]] || DURATION="${DURATION}s"
[[ "$WARMUP" =~ ^[0-9]+[sm]?$ ]] || die "--warmup wants whole seconds, e.g. 1s or 0; got '$WARMUP'"
[[ "$WARMUP" =~ [sm]$ ]] || WARMUP="${WARMUP}s"
[[ "$WARMUP" =~ ^0+[sm]$ ]] && WARMUP=""
[[ "$BUSY_POLL" =~ ^[0-9]+(us|ms)?$ ]] || die "--busy-poll wants e.g. 100us, 1ms or 0; got '$BUSY_POLL'"
[[ "$BUSY_POLL" =~ ^0+(us|ms)?$ ]] && BUSY_POLL=""
[[ -z "$PEERS_DIR" || -d "$PEERS_DIR" ]] || die "--peers-dir $PEERS_DIR is not a directory"
[[ -n "$PEERS_DIR" ]] && PEERS_DIR="$(cd "$PEERS_DIR" && pwd)"

declare -A PART=()
IFS=',' read -r -a _parts <<<"$PARTS"
for p in "${_parts[@]}"; do
    case "$p" in server | generator) PART[$p]=1 ;; *) die "unknown part '$p' (want server,generator)" ;; esac
done
IFS=',' read -r -a WANT_BACKENDS <<<"$BACKENDS"
for b in "${WANT_BACKENDS[@]}"; do
    case "$b" in uring | epoll | tokio-uring) ;; *) die "unknown backend '$b' (want uring, epoll, tokio-uring)" ;; esac
done
[[ ",$BACKENDS," == *,uring,* ]] || die "--backends must include uring (the backend the issues' bars are for)"

# ------------------------------------------------------------------------------ CPU layout

# The CPUs this process may run on, in order: the servers get the first, the generator the next.
mapfile -t ALLOWED < <(expand_cpus "$(awk '/^Cpus_allowed_list:/ {print $2}' /proc/self/status)")
((${#ALLOWED[@]})) || die "cannot read the CPUs this process may use from /proc/self/status"
SERVER_CPU="${SERVER_CPU:-${ALLOWED[0]}}"
if [[ -z "$GEN_CPU" ]]; then
    if ((${#ALLOWED[@]} > 1)); then
        GEN_CPU="${ALLOWED[1]}"
        [[ "$GEN_CPU" == "$SERVER_CPU" ]] && GEN_CPU="${ALLOWED[0]}"
    else
        GEN_CPU="$SERVER_CPU"
    fi
fi
[[ "$SERVER_CPU" =~ ^[0-9]+$ && "$GEN_CPU" =~ ^[0-9]+$ ]] || die "--server-cpu and --gen-cpu want one CPU number each"
[[ "$SERVER_CPU" != "$GEN_CPU" ]] || warn "servers and generator share CPU $SERVER_CPU: every figure will understate the servers"

# ------------------------------------------------------------------------------ output and cleanup

[[ -n "$OUT" ]] || OUT="$(pick_out_dir wrk-check)"
[[ ! -e "$OUT/runs.tsv" ]] || die "$OUT already holds a run (runs.tsv); pick another --out"
mkdir -p "$OUT/raw"
OUT="$(cd "$OUT" && pwd)"
ENV_TXT="$OUT/env.txt"
RUNS_TSV="$OUT/runs.tsv"
COMMANDS="$OUT/commands.txt"

# A private run dir (nginx config, served root, logs), so this never meets bench.sh's .peers/.
RUN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/ringd-wrk-check.XXXXXX")"
WWW_DIR="$RUN_DIR/www"
export RINGD_RUN_DIR="$RUN_DIR"

declare -A TARGET_URL=() RINGD_PID=()
TARGETS=()
NGINX_STARTED=0
GEN_PID=""
CLEANED=0

stop_generator() {
    local kid
    [[ -n "$GEN_PID" ]] || return 0
    # GEN_PID is GNU time (taskset execs it); stop its child, the generator, first.
    for kid in $(child_pids "$GEN_PID"); do stop_pid "$kid" TERM; done
    stop_pid "$GEN_PID" TERM
    GEN_PID=""
}

cleanup() {
    local rc=$? b
    ((CLEANED)) && return 0
    CLEANED=1
    trap '' INT TERM
    stop_generator
    for b in "${!RINGD_PID[@]}"; do
        pid_is "${RINGD_PID[$b]}" ringd && stop_pid "${RINGD_PID[$b]}" TERM
    done
    if ((NGINX_STARTED)); then
        "$SCRIPTS_DIR/peers.sh" stop >&2 || warn "peers.sh stop failed; nginx PIDs were in $RUN_DIR/nginx.pid"
    fi
    [[ -d "$RUN_DIR" && "$RUN_DIR" == */ringd-wrk-check.* ]] && rm -rf "$RUN_DIR"
    ((rc == 0)) || warn "wrk-check stopped early (exit $rc); partial output in $OUT"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

record() { quote_cmd "$@" >>"$COMMANDS"; }

# ------------------------------------------------------------------------------ tools

TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
RINGD_BIN="$TARGET_DIR/release/ringd"
LOADGEN_BIN="$TARGET_DIR/release/loadgen"
GNU_TIME=/usr/bin/time
CLK_TCK="$(getconf CLK_TCK)"

ensure_tools() {
    command -v wrk >/dev/null || apt_install wrk
    command -v wrk >/dev/null || die "wrk did not install"
    # GNU time, not the shell keyword: it reports the generator's own user and system time.
    if ! "$GNU_TIME" -f '%e' true >/dev/null 2>&1; then apt_install time; fi
    "$GNU_TIME" -f '%e' true >/dev/null 2>&1 || die "$GNU_TIME (GNU time) does not work"
    command -v curl >/dev/null || apt_install curl
    ensure_nginx "$PEERS_DIR"
}

# ------------------------------------------------------------------------------ servers

# Start ringd with one worker on the server CPU; its URL comes from the line it prints.
start_ringd() {
    local b="$1"
    launch_ringd "$b" "$SERVER_CPU" "$WWW_DIR" "$RUN_DIR/ringd-$b.log" || {
        warn "leaving ringd --backend $b out"
        return 1
    }
    RINGD_PID[$b]="$LAUNCHED_PID"
    TARGET_URL[ringd-$b]="$LAUNCHED_URL"
    log "ringd --backend $b up at $LAUNCHED_URL (PID $LAUNCHED_PID, CPU $SERVER_CPU)"
}

# ringd --backend uring --busy-poll D, as target ringd-uring-busy-poll (RINGD_PID key
# uring-busy-poll).
start_ringd_busy_poll() {
    launch_ringd uring "$SERVER_CPU" "$WWW_DIR" "$RUN_DIR/ringd-uring-busy-poll.log" --busy-poll "$BUSY_POLL" || {
        warn "leaving ringd --busy-poll $BUSY_POLL out"
        return 1
    }
    RINGD_PID[uring-busy-poll]="$LAUNCHED_PID"
    TARGET_URL[ringd-uring-busy-poll]="$LAUNCHED_URL"
    log "ringd --backend uring --busy-poll $BUSY_POLL up at $LAUNCHED_URL (PID $LAUNCHED_PID, CPU $SERVER_CPU)"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start_nginx() {
    local port
    port="$(free_port)"
    export NGINX_PORT="$port"
    local -a cmd=("$SCRIPTS_DIR/peers.sh" start --only nginx --workers 1 --cpus "$SERVER_CPU")
    [[ -n "$PEERS_DIR" ]] && cmd+=(--peers-dir "$PEERS_DIR")
    NGINX_STARTED=1
    "${cmd[@]}"
    # peers.sh records the commands it ran (the pinned nginx) in the run dir.
    cat "$RUN_DIR/commands.txt" >>"$COMMANDS"
    cp "$RUN_DIR/nginx/nginx.conf" "$OUT/nginx.conf"
    TARGET_URL[nginx]="http://127.0.0.1:$port"
}

# PIDs whose CPU time is the target's: ringd's process (all its threads), nginx's master and
# its workers (read afresh each time, by parent PID).
target_pids() {
    case "$1" in
    ringd-*) echo "${RINGD_PID[${1#ringd-}]}" ;;
    nginx) "$SCRIPTS_DIR/peers.sh" pids nginx ;;
    esac
}

# Sum of utime+stime clock ticks of the given PIDs (/proc/PID/stat fields 14 and 15, which for a
# process cover all its threads, live and exited); empty when one of them is gone.
proc_ticks() {
    local pid line rest total=0
    local -a f
    for pid in "$@"; do
        line="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 0
        rest="${line##*) }"
        read -r -a f <<<"$rest"
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}

# Check that TARGET serves FILE whole before anything is measured.
check_target() {
    local target="$1" file="$2" size="$3" got
    got="$(curl -sS -o /dev/null --max-time 10 -w '%{http_code} %{size_download}' "${TARGET_URL[$target]}/$file" || true)"
    [[ "$got" == "200 $size" ]] || die "$target answered '$got' for /$file (want '200 $size')"
}

# ------------------------------------------------------------------------------ runs

printf 'section\tfile\tsize\tround\ttarget\ttool\traw\ttime\tserver_ticks\tclk_tck\n' >"$RUNS_TSV"

# measure SECTION FILE ROUND TARGET TOOL CONNS [loadgen args...]: one generator run on the
# generator CPU under GNU time, with the target's CPU ticks read just before and just after.
measure() {
    local section="$1" file="$2" round="$3" target="$4" tool="$5" conns="$6"
    shift 6
    local url="${TARGET_URL[$target]}/$file" size="${FILE_SIZE[$file]}"
    local stem="raw/$section-${file%.*}-r$round-$target-$tool" raw out_file pids before after ticks="" rc=0
    local -a gen
    case "$tool" in
    wrk)
        raw="$stem.txt" out_file="$stem.txt"
        gen=(wrk -t1 "-c$conns" "-d$DURATION" "$url")
        ;;
    loadgen)
        raw="$stem.json" out_file="$stem.txt"
        gen=("$LOADGEN_BIN" "$url" -t 1 -c "$conns" -d "$DURATION" --json "$OUT/$raw" "$@")
        ;;
    esac
    local -a cmd=(taskset -c "$GEN_CPU" "$GNU_TIME" -f '%e %U %S' -o "$OUT/$stem.time.txt" "${gen[@]}")
    record "${cmd[@]}"
    read -r -a pids <<<"$(target_pids "$target" || true)"
    ((${#pids[@]})) || die "$target is not running any more"
    before="$(proc_ticks "${pids[@]}")"
    # In the background and waited for, so Ctrl-C is handled at once and cleanup finds its PID.
    "${cmd[@]}" </dev/null >"$OUT/$out_file" 2>&1 &
    GEN_PID=$!
    wait "$GEN_PID" || rc=$?
    GEN_PID=""
    after="$(proc_ticks "${pids[@]}")"
    [[ -n "$before" && -n "$after" ]] && ticks=$((after - before))
    ((rc == 0)) || warn "$tool exited with $rc against $target (see $OUT/$out_file)"
    [[ -n "$ticks" ]] || warn "a process of $target (PIDs ${pids[*]}) went away during the run"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$section" "$file" "$size" "$round" "$target" \
        "$tool" "$raw" "$stem.time.txt" "$ticks" "$CLK_TCK" >>"$RUNS_TSV"
    local rps
    if [[ "$tool" == wrk ]]; then
        rps="$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$OUT/$raw")"
    else
        rps="$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["rps"]))' "$OUT/$raw" 2>/dev/null || true)"
    fi
    log "$section r$round $file $target $tool: ${rps:-?} req/s, server CPU ${ticks:-?} ticks"
    # Let the connections of this run close before the next one starts on the same cores.
    sleep 0.5
}

warm_up() {
    local target file conns
    [[ -n "$WARMUP" ]] || return 0
    for file in small.bin large.bin; do
        conns=64
        [[ "$file" == large.bin ]] && conns=8
        for target in "${TARGETS[@]}"; do
            local -a cmd=(taskset -c "$GEN_CPU" wrk -t1 "-c$conns" "-d$WARMUP" "${TARGET_URL[$target]}/$file")
            record "${cmd[@]}"
            "${cmd[@]}" </dev/null >"$RUN_DIR/warmup.txt" 2>&1 &
            GEN_PID=$!
            wait "$GEN_PID" || true
            GEN_PID=""
            sleep 0.5
        done
    done
    log "warm-up done ($WARMUP per target and file, not recorded)"
}

run_server_part() {
    local file round target conns
    for file in small.bin large.bin; do
        conns=64
        [[ "$file" == large.bin ]] && conns=8
        for ((round = 1; round <= ROUNDS; round++)); do
            for target in "${TARGETS[@]}"; do
                measure server "$file" "$round" "$target" wrk "$conns"
            done
        done
    done
}

run_generator_part() {
    local round target
    for ((round = 1; round <= ROUNDS; round++)); do
        for target in ringd-uring nginx; do
            measure generator small.bin "$round" "$target" wrk 64
            measure generator small.bin "$round" "$target" loadgen 64
        done
    done
    measure pipeline small.bin 1 ringd-uring loadgen 64 --pipeline 16
}

# ------------------------------------------------------------------------------ env.txt

write_env() {
    {
        env_header "ringd wrk check environment"
        echo "build profile: release"
        echo "server cpu:    $SERVER_CPU (ringd --workers 1, nginx worker_processes 1)"
        echo "generator cpu: $GEN_CPU (wrk -t1, loadgen -t 1)"
        echo "rounds:        $ROUNDS"
        echo "duration:      $DURATION${WARMUP:+ (unrecorded warm-up $WARMUP per target and file)}"
        echo "targets:       ${TARGETS[*]} (in this order in each round)"
        echo "clk_tck:       $CLK_TCK"
        echo "wrk:           $(wrk -v 2>&1 | head -n1 | sed 's/ Copyright.*//')"
        echo "nginx:         $(nginx_cmd -v 2>&1 | head -n1) ($NGINX_BIN)"
        echo "rustc:         $(rustc -V 2>/dev/null || echo missing)"
        echo "cargo:         $(cargo -V 2>/dev/null || echo missing)"
        echo "ringd:         $("$RINGD_BIN" --version 2>/dev/null | head -n1 || echo '?') ($RINGD_BIN)"
        echo "loadgen:       $("$LOADGEN_BIN" --version 2>/dev/null | head -n1 || echo '?') ($LOADGEN_BIN)"
        echo "gnu time:      $("$GNU_TIME" --version 2>&1 | head -n1)"
        echo
        echo "## limits (this shell; the servers inherit them)"
        echo "RLIMIT_NOFILE soft/hard:  $(ulimit -Sn)/$(ulimit -Hn)"
        echo "RLIMIT_MEMLOCK soft/hard: $(ulimit -Sl)/$(ulimit -Hl) KiB"
        echo
        echo "## scaling governor / turbo"
        echo "governor: $(cat "/sys/devices/system/cpu/cpu$SERVER_CPU/cpufreq/scaling_governor" 2>/dev/null || echo 'n/a')"
        echo "no_turbo: $(cat /sys/devices/system/cpu/intel_pstate/no_turbo 2>/dev/null || echo 'n/a')"
        echo
        echo "## ringd doctor"
        timeout 10 "$RINGD_BIN" doctor 2>&1 || true
        echo
        echo "## nginx.conf (rendered from scripts/peers/nginx.conf.tmpl): nginx.conf"
    } >"$ENV_TXT"
}

finish_env() { env_footer "$ENV_TXT" "$COMMANDS"; }

# ------------------------------------------------------------------------------ main

main() {
    : >"$COMMANDS"
    record "$SCRIPTS_DIR/wrk-check.sh" "${ORIG_ARGS[@]}"
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    ensure_tools
    build_release
    make_www
    declare -gA FILE_SIZE=([small.bin]="$(stat -c %s "$WWW_DIR/small.bin")" [large.bin]="$(stat -c %s "$WWW_DIR/large.bin")")

    local b
    for b in "${WANT_BACKENDS[@]}"; do
        if ! start_ringd "$b" && [[ "$b" == uring ]]; then
            die "ringd --backend uring did not start"
        fi
    done
    [[ -n "$BUSY_POLL" ]] && { start_ringd_busy_poll || true; }
    start_nginx
    # Alternate ringd (uring) and nginx first, the extra backends after them in each round.
    TARGETS=(ringd-uring nginx)
    for b in uring-busy-poll epoll tokio-uring; do
        [[ -n "${TARGET_URL[ringd-$b]:-}" ]] && TARGETS+=("ringd-$b")
    done
    local t
    for t in "${TARGETS[@]}"; do
        check_target "$t" small.bin "${FILE_SIZE[small.bin]}"
        check_target "$t" large.bin "${FILE_SIZE[large.bin]}"
    done
    write_env
    log "output: $OUT (servers on CPU $SERVER_CPU, generator on CPU $GEN_CPU; targets ${TARGETS[*]})"

    warm_up
    [[ -n "${PART[server]:-}" ]] && run_server_part
    [[ -n "${PART[generator]:-}" ]] && run_generator_part
    finish_env
    python3 "$SCRIPTS_DIR/benchtool.py" wrk-check "$OUT"
    log "done: $OUT/summary.md"
}

main
