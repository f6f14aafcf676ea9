#!/usr/bin/env bash
# A/B: two ringd binaries as uring proxies (core 0) in front of one upstream ringd (epoll,
# serving a 10 MiB file, core 1, with loadgen).
set -euo pipefail
OLD=${OLD:-/tmp/ringd-old}; NEW=${NEW:-/work/main/target/release/ringd}
OUT=${OUT:-/tmp/abproxy-out}; ROUNDS=${ROUNDS:-4}; DUR=${DUR:-6s}; CONNS=${CONNS:-16}
taskset -c 1 "$NEW" /tmp/w/www --backend epoll --workers 1 --listen 127.0.0.1:18190 >/tmp/ab-up.log 2>&1 & PU=$!
taskset -c 0 "$OLD" /tmp/w/empty --backend uring --workers 1 --listen 127.0.0.1:18191 --proxy 127.0.0.1:18190 >/tmp/ab-old.log 2>&1 & P1=$!
taskset -c 0 "$NEW" /tmp/w/empty --backend uring --workers 1 --listen 127.0.0.1:18192 --proxy 127.0.0.1:18190 >/tmp/ab-new.log 2>&1 & P2=$!
trap 'kill $P1 $P2 $PU 2>/dev/null; wait $P1 $P2 $PU 2>/dev/null || true' EXIT
sleep 1
curl -s -o /dev/null http://127.0.0.1:18191/f.bin; curl -s -o /dev/null http://127.0.0.1:18192/f.bin
taskset -c 1 /work/main/target/release/loadgen compare -t 1 -c "$CONNS" -d "$DUR" --rounds "$ROUNDS" \
  --target old=http://127.0.0.1:18191/f.bin --target new=http://127.0.0.1:18192/f.bin \
  --server-pid old=$P1 --server-pid new=$P2 --out "$OUT" \
  --title "uring proxy, 10 MiB body: io-wq splices (old) vs direct splices (new)" \
  --meta "upstream=ringd epoll serving a 10485760-byte file, cpu 1" --meta "proxy_cpus=0" --meta "loadgen_cpus=1" \
  --meta "old=$(sha256sum $OLD | cut -c1-12)" --meta "new=$(sha256sum $NEW | cut -c1-12)"
