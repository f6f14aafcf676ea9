#!/usr/bin/env bash
# What CI runs for the benchmark harness: installs the peers if missing (nginx, caddy and haproxy
# from Debian's packages, gunicorn into .venv/), then `scripts/bench.sh --smoke`, so the harness cannot rot.
# Exits non-zero when any scenario fails, a target does not answer or a report is missing.
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case "${1:-}" in
-h | --help)
    cat <<USAGE
Usage: scripts/ci-smoke.sh [bench.sh options]

Installs nginx, caddy, haproxy and fcgiwrap (apt-get) and gunicorn (venv) when missing, then runs
'scripts/bench.sh --smoke' (about a second per scenario, debug build, output in a temp dir)
with any extra options given. Needs no terminal or standard input.
USAGE
    exit 0
    ;;
esac

exec </dev/null
export DEBIAN_FRONTEND=noninteractive
ensure_nginx ""
ensure_caddy ""
ensure_haproxy ""
ensure_gunicorn ""
# The TLS scenarios make their certificates with openssl.
command -v openssl >/dev/null || apt_install openssl
# cgi-hello compares ringd's CGI with nginx + fcgiwrap.
[[ -x /usr/sbin/fcgiwrap ]] || command -v fcgiwrap >/dev/null || apt_install fcgiwrap
log "nginx: $NGINX_BIN; caddy: $CADDY_BIN; haproxy: $HAPROXY_BIN; gunicorn: $GUNICORN_BIN"
python3 "$SCRIPTS_DIR/test_benchtool.py"
# Every script answers --help with its usage and exit 0 within seconds, and starts nothing (two
# once ran their whole job when asked for help).
for s in "$SCRIPTS_DIR"/*.sh "$SCRIPTS_DIR"/*_report.py "$SCRIPTS_DIR"/benchtool.py "$SCRIPTS_DIR"/differential.py; do
    [[ "${s##*/}" == lib.sh ]] && continue
    case "$s" in *.py) run=(python3 "$s") ;; *) run=(bash "$s") ;; esac
    help_out="$(timeout 10 "${run[@]}" --help </dev/null 2>&1)" || die "$s --help failed (exit $?)"
    [[ "$help_out" == *[Uu]sage* || "$help_out" == *nvironment* ]] || die "$s --help printed no usage"
done
log "every script answers --help"
"$SCRIPTS_DIR/bench.sh" --smoke "$@"
