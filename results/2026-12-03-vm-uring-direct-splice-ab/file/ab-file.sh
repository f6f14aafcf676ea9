#!/usr/bin/env bash
# A/B: two ringd binaries serving the same file on uring, pinned to core 0; loadgen on core 1.
set -euo pipefail
OLD=${OLD:-/tmp/ringd-old}; NEW=${NEW:-/work/main/target/release/ringd}
ROOT=${ROOT:-/tmp/w/www}; PATH_=${URLPATH:-/f.bin}; OUT=${OUT:-/tmp/abfile-out}
ROUNDS=${ROUNDS:-4}; DUR=${DUR:-6s}; CONNS=${CONNS:-16}
taskset -c 0 "$OLD" "$ROOT" --backend uring --workers 1 --listen 127.0.0.1:18091 >/tmp/ab-old.log 2>&1 & P1=$!
taskset -c 0 "$NEW" "$ROOT" --backend uring --workers 1 --listen 127.0.0.1:18092 >/tmp/ab-new.log 2>&1 & P2=$!
trap 'kill $P1 $P2 2>/dev/null; wait $P1 $P2 2>/dev/null || true' EXIT
sleep 1
curl -s -o /dev/null http://127.0.0.1:18091$PATH_; curl -s -o /dev/null http://127.0.0.1:18092$PATH_
taskset -c 1 /work/main/target/release/loadgen compare -t 1 -c "$CONNS" -d "$DUR" --rounds "$ROUNDS" \
  --target old=http://127.0.0.1:18091$PATH_ --target new=http://127.0.0.1:18092$PATH_ \
  --server-pid old=$P1 --server-pid new=$P2 --out "$OUT" \
  --title "uring static file: io-wq splices (old) vs direct splices (new)" \
  --meta "file=$(stat -c %s $ROOT$PATH_) bytes" --meta "server_cpus=0" --meta "loadgen_cpus=1" \
  --meta "old=$(sha256sum $OLD | cut -c1-12)" --meta "new=$(sha256sum $NEW | cut -c1-12)"
