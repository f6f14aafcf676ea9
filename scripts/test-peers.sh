#!/usr/bin/env bash
# Installs what the integration tests use beside ringd itself: gunicorn (PyPI, into .venv/,
# the same one the benchmarks use) for the proxy tests. Idempotent; needs python3 with venv.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
case "${1:-}" in
-h | --help)
    echo "Usage: scripts/test-peers.sh   (installs gunicorn into .venv/ when missing)"
    exit 0
    ;;
esac
exec </dev/null
ensure_gunicorn ""
log "gunicorn for the tests: $GUNICORN_BIN"
