#!/usr/bin/env bash
# Runs every ringd fuzz target (fuzz/, cargo-fuzz + libFuzzer) for a bounded time on the
# stable toolchain, starting from the committed seeds in fuzz/corpus/<target>/, and prints one
# summary line per target (executions, coverage, features, corpus, crashes). Exits non-zero
# when any target crashes; the reproducer is left in fuzz/artifacts/<target>/.
#
# Stable works because the targets are built without a sanitizer (`-s none`): cargo-fuzz then
# passes only stable rustc flags (-Cpasses=sancov-module, -Cllvm-args=-sanitizer-coverage-*).
# `-a` keeps debug assertions and overflow checks on. cargo-fuzz is installed if missing.
#
# Environment: FUZZ_SECONDS (default 30) per target; FUZZ_TARGETS (default: all) a
# space-separated subset; FUZZ_JOBS (default 2) cargo build jobs.
# Defaults: ~3 min cold build on 2 cores + 5 × 30 s; add ~2.5 min the first time cargo-fuzz
# is installed (cache ~/.cargo/bin and fuzz/target between CI runs to avoid both).
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
seconds="${FUZZ_SECONDS:-30}"
jobs="${FUZZ_JOBS:-2}"
all_targets="parse_request session headers config diff_httparse gateway"
targets="${FUZZ_TARGETS:-$all_targets}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked -j "$jobs" >&2
fi

# Build all targets once (a later `cargo fuzz run` with the same flags reuses it).
CARGO_BUILD_JOBS="$jobs" cargo fuzz build -s none -a >&2

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=0
for t in $targets; do
    mkdir -p "$work/$t" "fuzz/artifacts/$t"
    log="$work/$t.log"
    rc=0
    # New inputs go to the scratch dir (first); the committed seeds are only read.
    CARGO_BUILD_JOBS="$jobs" cargo fuzz run -s none -a "$t" "$work/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1 || rc=$?
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    last="$(grep -E '^#[0-9]+' "$log" | grep -E 'cov: ' | tail -1 || true)"
    cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")"
    ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")"
    corp="$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")"
    crashes=0
    if [ "$rc" -ne 0 ]; then
        crashes=1
        failed=1
        artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)"
        echo "fuzz: $t FAILED (exit $rc); reproducer: ${artifact:-none written}" >&2
        echo "fuzz: re-run it with: cargo fuzz run -s none -a $t ${artifact:-<file>}" >&2
        grep -E "panicked at|ERROR: libFuzzer" -A2 "$log" | head -20 >&2 || tail -30 "$log" >&2
    fi
    echo "fuzz $t: ${seconds}s execs=${execs:-?} cov=${cov:-?} ft=${ft:-?} corpus=${corp:-?} crashes=$crashes"
done
exit "$failed"
