#!/usr/bin/env bash
# Installs what the integration tests use beside ringd itself, into .venv/ (the same one the
# benchmarks use): gunicorn for the proxy tests; for the WSGI tests, this repo's Python package
# (`pip install ./python`: maturin builds ringd-wsgi from the crate in python/, in release
# mode, so rerun this after changing python/ or the core) with Flask and Django; Debian's
# pebble (apt-get) for the ACME tests; user-mode-linux and kmod (apt-get) for the kernel TLS
# test (tests/it/ktls.rs boots UML, whose kernel has the tls ULP). Idempotent;
# needs python3 with venv (and pip reaching PyPI, or --find-links wheels).
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
case "${1:-}" in
-h | --help)
    echo "Usage: scripts/test-peers.sh   (installs gunicorn, flask, django and ./python into .venv/; pebble, user-mode-linux, kmod with apt-get)"
    exit 0
    ;;
esac
exec </dev/null
ensure_gunicorn ""
log "gunicorn for the tests: $GUNICORN_BIN"
pip_q() { "$VENV_DIR/bin/python" -m pip install -q --disable-pip-version-check "$@" >&2; }
"$VENV_DIR/bin/python" -c 'import flask, django' 2>/dev/null || {
    log "pip install flask django into $VENV_DIR"
    pip_q flask django
}
log "pip install ./python (ringd-wsgi; maturin, release build) into $VENV_DIR"
# Always rebuilt: the installed wheel must match this checkout (cargo makes it incremental).
pip_q --force-reinstall --no-deps "$REPO_ROOT/python"
[[ -x "$VENV_DIR/bin/ringd-wsgi" ]] || die "ringd-wsgi did not install into $VENV_DIR"
log "ringd-wsgi for the tests: $VENV_DIR/bin/ringd-wsgi"
# Pebble (Let's Encrypt's test CA) and its DNS for the ACME tests (tests/it/acme.rs).
if ! command -v pebble >/dev/null || ! command -v pebble-challtestsrv >/dev/null; then
    log "apt-get install pebble (ACME tests)"
    as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
    as_root apt-get update -qq >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pebble >&2
fi
log "pebble for the tests: $(command -v pebble)"
# User-Mode Linux (its kernel has the tls ULP as a module) and kmod for the kernel TLS test
# (tests/it/ktls.rs, scripts/ktls-uml.sh).
if ! command -v linux.uml >/dev/null || ! command -v modprobe >/dev/null ||
    ! command -v curl >/dev/null; then
    log "apt-get install user-mode-linux kmod curl (kernel TLS test)"
    as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
    as_root apt-get update -qq >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq user-mode-linux kmod curl >&2
fi
log "user-mode-linux for the tests: $(command -v linux.uml)"
