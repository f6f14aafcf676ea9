#!/usr/bin/env bash
# Issue 3's memory bar: loadgen in open loop at a fixed rate against ringd (1000-byte file) for a
# long run, sampling loadgen's and ringd's VmRSS from /proc every few seconds, with ringd's open
# fds listed before and after as a leak check. Writes rss.csv, env.txt and a generated summary.md.
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<EOF
Usage: scripts/soak.sh [options]

Starts ringd --workers 1 (uring) pinned to the first CPU this process may use and runs

  taskset -c GEN loadgen URL/small.bin -R RATE -t 1 -c C -d D --json DIR/loadgen.json

on the next CPU, sampling VmRSS and VmHWM of loadgen and ringd (/proc/PID/status) and ringd's
open fd count every interval (and once more half a second before the end) into DIR/rss.csv.
ringd's fds (/proc/PID/fd) are listed before the run and after it, once its connections have
closed. 'scripts/benchtool.py soak' then writes DIR/summary.md: loadgen's VmRSS growth from the
30 s sample to the last one against issue 3's bar (a 10-minute run grows by less than 1 MiB),
the fd counts before and after, and the run's achieved rate, errors and latency.

Options:
  --duration D      run length, whole seconds or minutes: 600s, 10m (default 600s; at least
                    40s, so that there is a sample after the 30 s one)
  --rate R          open-loop request rate, req/s (default 20000)
  --connections C   loadgen connections (default 64)
  --interval S      seconds between samples (default 10)
  --out DIR         output directory (default results/<YYYY-MM-DD>-<host>/soak)
  --no-build        use target/release/{ringd,loadgen} as they are (default: build them with
                    'cargo build --release --workspace')
  --server-cpu N    CPU for ringd (default: the first this process may use)
  --gen-cpu N       CPU for loadgen (default: the next one)
  -h, --help        this text

Every process it starts is stopped by its PID when it exits, also on Ctrl-C.
EOF
}

DURATION=600s
RATE=20000
CONNECTIONS=64
INTERVAL=10
OUT=""
BUILD=1
SERVER_CPU=""
GEN_CPU=""
ORIG_ARGS=("$@")

while (($#)); do
    case "$1" in
    --duration) DURATION="${2:?--duration needs a value}" && shift ;;
    --rate) RATE="${2:?--rate needs a value}" && shift ;;
    --connections) CONNECTIONS="${2:?--connections needs a value}" && shift ;;
    --interval) INTERVAL="${2:?--interval needs a value}" && shift ;;
    --out) OUT="${2:?--out needs a value}" && shift ;;
    --no-build) BUILD=0 ;;
    --server-cpu) SERVER_CPU="${2:?--server-cpu needs a value}" && shift ;;
    --gen-cpu) GEN_CPU="${2:?--gen-cpu needs a value}" && shift ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
done

if [[ "$DURATION" =~ ^([1-9][0-9]*)s?$ ]]; then
    DURATION_S="${BASH_REMATCH[1]}"
elif [[ "$DURATION" =~ ^([1-9][0-9]*)m$ ]]; then
    DURATION_S=$((BASH_REMATCH[1] * 60))
else
    die "--duration wants whole seconds or minutes, e.g. 600s or 10m; got '$DURATION'"
fi
DURATION="${DURATION_S}s"
((DURATION_S >= 40)) || die "--duration must be at least 40s: the growth is measured from the 30 s sample on"
[[ "$RATE" =~ ^[1-9][0-9]*$ ]] || die "--rate wants a positive integer (req/s), got '$RATE'"
[[ "$CONNECTIONS" =~ ^[1-9][0-9]*$ ]] || die "--connections wants a positive integer, got '$CONNECTIONS'"
[[ "$INTERVAL" =~ ^[1-9][0-9]*$ ]] || die "--interval wants whole seconds, got '$INTERVAL'"
((INTERVAL <= 30)) || die "--interval must be at most 30 (there must be a sample at 30 s)"
((30 % INTERVAL == 0)) || die "--interval must divide 30 (there must be a sample at 30 s)"

# ------------------------------------------------------------------------------ CPU layout

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

# ------------------------------------------------------------------------------ output and cleanup

[[ -n "$OUT" ]] || OUT="$(pick_out_dir soak)"
[[ ! -e "$OUT/rss.csv" ]] || die "$OUT already holds a run (rss.csv); pick another --out"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
ENV_TXT="$OUT/env.txt"
COMMANDS="$OUT/commands.txt"

RUN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/ringd-soak.XXXXXX")"
WWW_DIR="$RUN_DIR/www"

RINGD_PID=""
LOADGEN_PID=""
SLEEP_PID=""
CLEANED=0

cleanup() {
    local rc=$?
    ((CLEANED)) && return 0
    CLEANED=1
    trap '' INT TERM
    [[ -n "$SLEEP_PID" ]] && stop_pid "$SLEEP_PID" TERM
    [[ -n "$LOADGEN_PID" ]] && pid_is "$LOADGEN_PID" loadgen && stop_pid "$LOADGEN_PID" TERM
    [[ -n "$RINGD_PID" ]] && pid_is "$RINGD_PID" ringd && stop_pid "$RINGD_PID" TERM
    [[ -d "$RUN_DIR" && "$RUN_DIR" == */ringd-soak.* ]] && rm -rf "$RUN_DIR"
    ((rc == 0)) || warn "soak stopped early (exit $rc); partial output in $OUT"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

record() { quote_cmd "$@" >>"$COMMANDS"; }

TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
RINGD_BIN="$TARGET_DIR/release/ringd"
LOADGEN_BIN="$TARGET_DIR/release/loadgen"

start_ringd() {
    launch_ringd uring "$SERVER_CPU" "$WWW_DIR" "$RUN_DIR/ringd.log" || die "ringd did not come up"
    RINGD_PID="$LAUNCHED_PID"
    URL="$LAUNCHED_URL/small.bin"
    log "ringd up at $LAUNCHED_URL (PID $RINGD_PID, CPU $SERVER_CPU)"
}

# One "fd -> target" line per open fd of PID.
list_fds() {
    local fd
    for fd in "/proc/$1/fd/"*; do
        [[ -e "$fd" || -L "$fd" ]] || continue
        printf '%s -> %s\n' "${fd##*/}" "$(readlink "$fd" 2>/dev/null || echo '?')"
    done | sort -n
}

fd_count() { find "/proc/$1/fd/" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

# VmRSS and VmHWM of PID in KiB, as "rss,hwm" ("," when it is gone).
mem_kib() {
    local status
    status="$(cat "/proc/$1/status" 2>/dev/null)" || {
        printf ','
        return 0
    }
    awk '/^VmRSS:/ {r = $2} /^VmHWM:/ {h = $2} END {printf "%s,%s", r, h}' <<<"$status"
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# Sleep until the clock reads MS (milliseconds since the epoch), interruptibly.
sleep_until_ms() {
    local ms=$(($1 - $(now_ms)))
    ((ms > 0)) || return 0
    sleep "$((ms / 1000)).$(printf '%03d' $((ms % 1000)))" &
    SLEEP_PID=$!
    wait "$SLEEP_PID" || true
    SLEEP_PID=""
}

write_env() {
    {
        env_header "ringd soak environment"
        echo "build profile: release"
        echo "server cpu:    $SERVER_CPU (ringd --workers 1 --backend uring)"
        echo "generator cpu: $GEN_CPU (loadgen -t 1)"
        echo "duration:      $DURATION"
        echo "duration seconds: $DURATION_S"
        echo "rate:          $RATE req/s (open loop, constant arrivals)"
        echo "connections:   $CONNECTIONS"
        echo "interval:      ${INTERVAL}s"
        echo "url:           $URL"
        echo "rustc:         $(rustc -V 2>/dev/null || echo missing)"
        echo "ringd:         $("$RINGD_BIN" --version 2>/dev/null | head -n1 || echo '?') ($RINGD_BIN)"
        echo "loadgen:       $("$LOADGEN_BIN" --version 2>/dev/null | head -n1 || echo '?') ($LOADGEN_BIN)"
        echo
        echo "## limits (this shell; the processes inherit them)"
        echo "RLIMIT_NOFILE soft/hard:  $(ulimit -Sn)/$(ulimit -Hn)"
        echo "RLIMIT_MEMLOCK soft/hard: $(ulimit -Sl)/$(ulimit -Hl) KiB"
    } >"$ENV_TXT"
}

finish_env() { env_footer "$ENV_TXT" "$COMMANDS"; }

main() {
    : >"$COMMANDS"
    record "$SCRIPTS_DIR/soak.sh" "${ORIG_ARGS[@]}"
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    command -v curl >/dev/null || apt_install curl
    build_release
    make_www
    start_ringd
    write_env

    # Serve the file once so that ringd's open-file cache holds it before the fds are counted.
    curl -fsS -o /dev/null --max-time 5 "$URL" || die "ringd does not serve $URL"
    sleep 1
    list_fds "$RINGD_PID" >"$OUT/fds-before.txt"
    local fds_before
    fds_before="$(wc -l <"$OUT/fds-before.txt")"

    # Sample at 0, INTERVAL, 2*INTERVAL ... before the end, and once half a second before it.
    local -a at=()
    local t last_ms=$((DURATION_S * 1000 - 500))
    for ((t = 0; t * 1000 < last_ms; t += INTERVAL)); do at+=($((t * 1000))); done
    at+=("$last_ms")

    local -a cmd=(taskset -c "$GEN_CPU" "$LOADGEN_BIN" "$URL" -R "$RATE" -t 1 -c "$CONNECTIONS" -d "$DURATION"
        --json "$OUT/loadgen.json")
    record "${cmd[@]}"
    log "soak: $RATE req/s for $DURATION against $URL (ringd on CPU $SERVER_CPU, loadgen on CPU $GEN_CPU); output $OUT"
    echo "t_s,loadgen_rss_kib,loadgen_hwm_kib,ringd_rss_kib,ringd_hwm_kib,ringd_fds" >"$OUT/rss.csv"
    local t0
    t0="$(now_ms)"
    "${cmd[@]}" </dev/null >"$OUT/loadgen.txt" 2>&1 &
    LOADGEN_PID=$!

    local ms el lg rg fds
    for ms in "${at[@]}"; do
        sleep_until_ms $((t0 + ms))
        kill -0 "$LOADGEN_PID" 2>/dev/null || break
        el=$(($(now_ms) - t0))
        lg="$(mem_kib "$LOADGEN_PID")"
        rg="$(mem_kib "$RINGD_PID")"
        fds="$(fd_count "$RINGD_PID")"
        [[ "$lg" != "," ]] || break
        printf '%d.%03d,%s,%s,%s\n' $((el / 1000)) $((el % 1000)) "$lg" "$rg" "$fds" >>"$OUT/rss.csv"
        log "t=$((el / 1000))s loadgen VmRSS,VmHWM ${lg} KiB; ringd ${rg} KiB, $fds fds"
    done

    local rc=0
    wait "$LOADGEN_PID" || rc=$?
    LOADGEN_PID=""
    ((rc == 0)) || warn "loadgen exited with $rc (see $OUT/loadgen.txt)"

    # Let ringd close the run's connections (up to 10 s), then list its fds again.
    local i
    for ((i = 0; i < 100; i++)); do
        (($(fd_count "$RINGD_PID") <= fds_before)) && break
        sleep 0.1
    done
    list_fds "$RINGD_PID" >"$OUT/fds-after.txt"
    finish_env
    python3 "$SCRIPTS_DIR/benchtool.py" soak "$OUT"
    log "done: $OUT/summary.md"
    ((rc == 0)) || exit "$rc"
}

main
