#!/usr/bin/env bash
# Proves the README's two commands work on a fresh clone with nothing beside it: clones the
# committed tree (HEAD) into an empty temporary folder (so there is no ../shared), runs the
# README's test command there, then the README's serve command, and fetches its index page.
# It builds in its own target folder: artefacts shared with this checkout would carry the
# clone's paths (CARGO_MANIFEST_DIR) into this checkout's later test runs.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
case "${1:-}" in
-h | --help)
    echo "Usage: scripts/fresh-clone-check.sh   (no options; needs cargo and curl)"
    exit 0
    ;;
esac

tmp="$(mktemp -d /tmp/ringd-fresh-XXXXXX)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# Two levels below the temporary folder: the test looks for the corpus at ../shared and
# ../../shared, and neither may exist here.
mkdir -p "$tmp/box"
git clone --quiet --no-local "$here" "$tmp/box/ringd"
cd "$tmp/box/ringd"
for d in ../shared ../../shared; do
    [ ! -e "$d" ] || { echo "fresh-clone-check: $(realpath "$d") exists" >&2; exit 1; }
done
export CARGO_TARGET_DIR="$tmp/target"

# The test command, read from the README so that the two cannot drift apart.
test_cmd="$(grep -m1 -oE '^cargo test[^#]*' README.md | sed 's/ *$//')"
[ -n "$test_cmd" ] || { echo "fresh-clone-check: no 'cargo test' line in README.md" >&2; exit 1; }
echo "fresh-clone-check: $test_cmd (in $tmp/box/ringd, no ../shared)"
log="$tmp/test.log"
env -u RINGD_CORPUS_DIR -u RINGD_REQUIRE_CORPUS -u RINGD_REQUIRE_GUNICORN -u RINGD_REQUIRE_PEBBLE -u RINGD_GUNICORN $test_cmd 2>&1 | tee "$log"
# The corpus replay must say it skipped, not pass silently.
grep -q "SKIP .*llhttp corpus not found" "$log" || {
    echo "fresh-clone-check: the llhttp replay did not report a skip without ../shared" >&2
    exit 1
}

# The serve command, verbatim from the README.
serve_cmd="$(grep -m1 -oE '^cargo run --release -- [^#]*' README.md | sed 's/ *$//')"
[ -n "$serve_cmd" ] || { echo "fresh-clone-check: no serve command in README.md" >&2; exit 1; }
echo "fresh-clone-check: $serve_cmd"
out="$tmp/serve.out"
$serve_cmd >"$out" 2>&1 &
server_pid=$!
url=""
for _ in $(seq 1 600); do
    url="$(grep -m1 -oE 'http://[0-9.]+:[0-9]+/' "$out" || true)"
    [ -n "$url" ] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$out" >&2; echo "fresh-clone-check: the serve command exited" >&2; exit 1; }
    sleep 0.5
done
[ -n "$url" ] || { cat "$out" >&2; echo "fresh-clone-check: no URL printed" >&2; exit 1; }
page="$(curl -fsS --max-time 5 "$url")"
echo "$page" | grep -q "ringd" || { echo "fresh-clone-check: $url did not serve the index page" >&2; exit 1; }
curl -fsS --max-time 5 -o /dev/null "${url}big.txt"
kill -TERM "$server_pid" 2>/dev/null || true
wait "$server_pid" 2>/dev/null || true
server_pid=""
# The README's config-file commands work on the example config the repository carries.
cargo run --release -q -- check ringd.toml
echo "fresh-clone-check: OK ($url served index.html and big.txt; ringd.toml checks)"
