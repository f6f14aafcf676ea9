#!/usr/bin/env bash
# Long fuzzing runs (issue 16: "run each target for at least an hour here and commit the
# figures"). Runs the chosen cargo-fuzz targets at the same time, each for FUZZ_SECONDS of wall
# time (default 3600) under `nice -n 19` (so other work on the machine keeps its share), starting
# from the committed seeds, and writes results/<date>-<host>-fuzz/ with one row per target
# (executions, exec/s, coverage and features at start and end, corpus, crashes) taken from
# libFuzzer's own output, plus the machine, load average and commit beside them.
#
# With FUZZ_MERGE=1 the inputs each run found (targets that did not crash) are merged, minimised (`-merge=1`), into the
# committed seeds fuzz/corpus/<target>/, so CI's short runs start where the long ones ended.
#
# Environment: FUZZ_SECONDS (3600), FUZZ_TARGETS (all), FUZZ_OUT (results dir), FUZZ_MERGE (0),
# FUZZ_JOBS (cargo build jobs, 2), FUZZ_NICE (19). Exits non-zero when any target crashed; the reproducer is in
# fuzz/artifacts/<target>/ and named in the summary.
set -euo pipefail
case "${1:-}" in
-h | --help)
    # The comment above is the help: no options, only the environment it names.
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
    exit 0
    ;;
"") ;;
*)
    echo "${0##*/}: no options (got '$1'); settings come from the environment, see --help" >&2
    exit 2
    ;;
esac

cd "$(dirname "$0")/.."
REPO_ROOT="$(pwd)"
seconds="${FUZZ_SECONDS:-3600}"
jobs="${FUZZ_JOBS:-2}"
nice="${FUZZ_NICE:-19}"
targets="${FUZZ_TARGETS:-parse_request session headers config diff_httparse gateway}"
host="$(hostname -s 2>/dev/null || hostname)"
out="${FUZZ_OUT:-$REPO_ROOT/results/$(date +%F)-$host-fuzz}"
mkdir -p "$out"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-long: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked -j "$jobs" >&2
fi
CARGO_BUILD_JOBS="$jobs" nice -n 19 cargo fuzz build -s none -a >&2

work="$(mktemp -d)"
pids=()
load_pid=""
cleanup() {
    if [ -n "$load_pid" ]; then kill "$load_pid" 2>/dev/null || true; fi
    # Each target runs in its own process group (setsid): cargo and the fuzz binary it starts.
    for p in "${pids[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

{
    echo "host:          $host"
    echo "kernel:        $(uname -srvm)"
    echo "cpus:          $(nproc) ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
    echo "memory:        $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "commit:        $(git rev-parse --short HEAD)$(git status --porcelain -- src fuzz | grep -q . && echo ' (+ uncommitted changes)' || true)"
    echo "toolchain:     $(rustc --version)"
    echo "cargo-fuzz:    $(cargo fuzz --version 2>/dev/null)"
    echo "build:         cargo fuzz build -s none -a (no sanitizer; debug assertions, overflow checks)"
    echo "run:           all targets at once, nice -n $nice, -max_total_time=$seconds -timeout=10, 1 job each"
    echo "started:       $(date -u +%FT%TZ)"
    echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$out/env.txt"

# Sample the load average once a minute while the targets run (shared machine: say how shared).
(while sleep 60; do echo "$(date -u +%T) $(cut -d' ' -f1-3 /proc/loadavg)"; done) >"$out/load.txt" &
load_pid=$!

for t in $targets; do
    mkdir -p "$work/$t" "fuzz/artifacts/$t"
    CARGO_BUILD_JOBS="$jobs" setsid nice -n "$nice" cargo fuzz run -s none -a "$t" "$work/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts/$t/" >"$work/$t.log" 2>&1 &
    pids+=("$!")
    echo "$t" >"$work/$t.name"
done

failed=0
i=0
for t in $targets; do
    rc=0
    wait "${pids[$i]}" || rc=$?
    echo "$rc" >"$work/$t.rc"
    i=$((i + 1))
done
kill "$load_pid" 2>/dev/null || true
echo "finished:      $(date -u +%FT%TZ)" >>"$out/env.txt"
echo "load at end:   $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/env.txt"

for t in $targets; do
    # Keep the head (INITED) and the tail (final stats) of each log; the middle is NEW lines.
    { head -40 "$work/$t.log"; echo "[...]"; tail -40 "$work/$t.log"; } >"$out/$t.log"
    if [ "$(cat "$work/$t.rc")" != 0 ]; then failed=1; fi
done

python3 - "$out" "$work" "$seconds" $targets <<'PY'
import re, sys, pathlib
out, work, seconds, targets = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3], sys.argv[4:]
def status(line):
    m = {k: re.search(rf"\b{k}: (\d+)", line) for k in ("cov", "ft", "corp")}
    return {k: (v.group(1) if v else "?") for k, v in m.items()}
rows = []
for t in targets:
    log = (work / f"{t}.log").read_text(errors="replace").splitlines()
    rc = (work / f"{t}.rc").read_text().strip()
    inited = next((l for l in log if "INITED" in l), "")
    last = [l for l in log if re.match(r"#\d+", l) and "cov:" in l]
    last = last[-1] if last else ""
    stats = {}
    for l in log:
        m = re.match(r"stat::(\w+):\s*(\d+)", l)
        if m:
            stats[m.group(1)] = int(m.group(2))
    s0, s1 = status(inited), status(last)
    corp = re.search(r"corp: (\d+)/(\S+)", last)
    artifact = next((l.split("Test unit written to ")[1] for l in log if "Test unit written to" in l), "")
    crashed = rc != "0"
    execs = stats.get("number_of_executed_units")
    secs = int(seconds)
    # How long it ran: libFuzzer's executions over its average rate (a crash ends it early).
    rate = stats.get("average_exec_per_sec")
    ran = round(execs / rate) if execs and rate else secs
    rows.append("| {} | {} | {} | {} | {} → {} | {} → {} | {} | {} |".format(
        t, ran, f"{execs:,}" if execs is not None else "?",
        f"{rate:,}" if rate else "?", s0["cov"], s1["cov"], s0["ft"], s1["ft"],
        f"{corp.group(1)} / {corp.group(2)}" if corp else "?",
        f"**crash** (exit {rc}; {artifact or 'no reproducer written'})" if crashed else "0"))
env = (out / "env.txt").read_text()
load = (out / "load.txt").read_text().split("\n") if (out / "load.txt").exists() else []
ones = [float(l.split()[1]) for l in load if l.strip()]
summary = [
    "<!-- Generated by scripts/fuzz-long.sh from libFuzzer's own output (INITED line, last status",
    "     line, -print_final_stats); the logs' head and tail are beside it. Do not edit. -->",
    "# Long fuzzing run", "", "```", env.rstrip(), "```", "",
    "| target | seconds run | executions | exec/s | cov (edges) start → end | features start → end | corpus at end | crashes |",
    "|---|---|---|---|---|---|---|---|", *rows, "",
    f"Load average (1 min) sampled each minute: min {min(ones):.2f}, median {sorted(ones)[len(ones)//2]:.2f}, max {max(ones):.2f} ({len(ones)} samples, load.txt)." if ones else "",
    f"Each target was given {seconds} s; 'seconds run' is executions / libFuzzer's average exec/s.",
    "All targets ran at the same time under `nice` (see run: above) on a shared 2-core machine, so each got",
    "only the CPU left over: compare executions, not seconds, with other runs.",
    "`cov`/`features` count the whole binary (ringd, its dependencies and the harness).", "",
    "Reproduce: `FUZZ_SECONDS=3600 bash scripts/fuzz-long.sh` (`FUZZ_MERGE=1` also merges the new",
    "inputs, minimised, into fuzz/corpus/).",
]
(out / "summary.md").write_text("\n".join(summary) + "\n")
print((out / "summary.md").read_text())
PY

if [ "${FUZZ_MERGE:-0}" = 1 ]; then
    for t in $targets; do
        # A target that crashed keeps its seeds: its new inputs include the crash.
        [ "$(cat "$work/$t.rc")" = 0 ] || continue
        merged="$work/merged-$t"
        mkdir -p "$merged"
        nice -n 19 cargo fuzz run -s none -a "$t" "$merged" "fuzz/corpus/$t" "$work/$t" -- \
            -merge=1 >"$work/$t.merge.log" 2>&1
        rm -rf "fuzz/corpus/$t" && mv "$merged" "fuzz/corpus/$t"
        echo "fuzz-long: fuzz/corpus/$t now $(ls "fuzz/corpus/$t" | wc -l) inputs (minimised)" >&2
    done
fi
exit "$failed"
