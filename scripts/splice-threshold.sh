#!/usr/bin/env bash
# Where splicing a proxied body starts to pay (issue 12, `proxy_splice_min`): one ringd proxy
# that splices every Content-Length body (--proxy-splice-min 1) against the same proxy copying
# them (--proxy-splice-min 0), in front of a ringd serving files of each size, interleaved
# rounds by `loadgen compare`. Prints, per size, the median of the rounds' proxy CPU per
# request splice/copy (below 1: splice costs less) with the rounds' spread, and writes every
# report under OUT (default results/<date>-<host>-splice/threshold), with the machine and
# settings in OUT/env-<backend>.txt.
#
# Usage: scripts/splice-threshold.sh [--backend uring|epoll] [--rounds 3] [--duration 2s]
#        [--connections 8] [--sizes 4K,16K,64K,256K,1M] [--out DIR]
# Needs target/release/ringd and loadgen (cargo build --release --workspace --bins).
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
BACKEND=uring ROUNDS=3 DURATION=2s CONNS=8 SIZES=4K,16K,64K,256K,1M
OUT="results/$(date -u +%F)-$(hostname -s)-splice/threshold"
while (($#)); do
    case "$1" in
    --backend) BACKEND="$2" ;;
    --rounds) ROUNDS="$2" ;;
    --duration) DURATION="$2" ;;
    --connections) CONNS="$2" ;;
    --sizes) SIZES="$2" ;;
    --out) OUT="$2" ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "splice-threshold: unknown option $1" >&2; exit 2 ;;
    esac
    shift 2
done
((ROUNDS <= 3)) || { echo "splice-threshold: at most 3 rounds" >&2; exit 2; }
RINGD="${RINGD_BIN:-target/release/ringd}" LOADGEN="${LOADGEN_BIN:-target/release/loadgen}"
[[ -x "$RINGD" && -x "$LOADGEN" ]] || { echo "build first: cargo build --release --workspace --bins" >&2; exit 1; }
BASE="${SPLICE_PORT_BASE:-18390}"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/ringd-splice.XXXXXX")"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
mkdir -p "$TMP/files" "$TMP/empty" "$OUT"
# The machine and the settings beside the figures (OUT/env.txt, per backend).
{
    env_header "ringd splice threshold ($BACKEND)"
    echo "settings:      backend $BACKEND, 1 worker per proxy (not pinned), sizes $SIZES,"
    echo "               $CONNS connections, 1 loadgen thread, $DURATION per run, 0.5s warm-up, $ROUNDS rounds"
    echo "upstream:      ringd --backend $BACKEND serving the files (1 worker)"
} >"$OUT/env-$BACKEND.txt"
IFS=, read -ra LIST <<<"$SIZES"
for s in "${LIST[@]}"; do head -c "$(numfmt --from=iec "$s")" /dev/urandom >"$TMP/files/$s.bin"; done
start() { # NAME PORT ARGS...: a one-worker ringd, its PID recorded in PID_<NAME>
    local name="$1" port="$2"
    shift 2
    "$RINGD" --listen "127.0.0.1:$port" --workers 1 --backend "$BACKEND" "$@" \
        >"$TMP/$name.log" 2>&1 </dev/null &
    PIDS+=($!)
    printf -v "PID_$name" '%s' "$!"
    for _ in $(seq 100); do curl -fso /dev/null "http://127.0.0.1:$port/${LIST[0]}.bin" && return; sleep 0.1; done
    echo "ringd $name did not come up:" >&2
    cat "$TMP/$name.log" >&2
    exit 1
}
start upstream "$BASE" "$TMP/files"
start splice $((BASE + 1)) "$TMP/empty" --proxy "127.0.0.1:$BASE" --proxy-splice-min 1
start copy $((BASE + 2)) "$TMP/empty" --proxy "127.0.0.1:$BASE" --proxy-splice-min 0
{
echo "size | proxy CPU/req splice/copy (median of rounds) | rounds | loadavg"
for s in "${LIST[@]}"; do
    dir="$OUT/$BACKEND-$s"
    load="$(cut -d' ' -f1-3 /proc/loadavg)"
    "$LOADGEN" compare -t 1 -c "$CONNS" -d "$DURATION" --rounds "$ROUNDS" --warmup 500ms \
        --baseline copy --out "$dir" --title "splice threshold: $s body, ringd --backend $BACKEND" \
        --meta "loadavg=$load" --meta "commit=$(git rev-parse --short HEAD)" \
        --target "splice=http://127.0.0.1:$((BASE + 1))/$s.bin" --server-pid "splice=$PID_splice" \
        --target "copy=http://127.0.0.1:$((BASE + 2))/$s.bin" --server-pid "copy=$PID_copy" \
        >"$dir.log" 2>&1 || { echo "loadgen failed for $s (see $dir.log)" >&2; exit 1; }
    python3 - "$dir/report.json" "$s" "$load" <<'EOF'
import json, statistics, sys
rep = json.load(open(sys.argv[1]))
runs = {t["name"]: t.get("runs", []) for t in rep["targets"]}
cpu = lambda r: r.get("server_cpu_us_per_request")
ratios = [cpu(a) / cpu(b) for a, b in zip(runs["splice"], runs["copy"]) if cpu(a) and cpu(b)]
med = statistics.median(ratios) if ratios else float("nan")
print(f"{sys.argv[2]} | {med:.2f}x | {', '.join(f'{r:.2f}' for r in ratios)} | {sys.argv[3]}")
EOF
done
} | tee "$OUT/$BACKEND-summary.txt"
