#!/usr/bin/env bash
# ringd (uring) before and after deferring the drive of a multishot recv completion to the end
# of the pass: a 1000-byte file, keep-alive, side by side.
set -euo pipefail
cd /tmp/sab
taskset -c 0 /tmp/ringd-old /tmp/sab/www --listen 127.0.0.1:18501 --workers 1 --backend uring >/tmp/sab/old.log 2>&1 & PO=$!
taskset -c 0 /tmp/ringd-new /tmp/sab/www --listen 127.0.0.1:18502 --workers 1 --backend uring >/tmp/sab/new.log 2>&1 & PN=$!
trap 'kill $PO $PN 2>/dev/null; wait $PO $PN 2>/dev/null || true' EXIT
sleep 1
taskset -c 1 /work/main/target/release/loadgen compare -t 1 -c 64 -d ${DUR:-5s} --rounds ${ROUNDS:-5} \
  --target new=http://127.0.0.1:18502/small.bin --target old=http://127.0.0.1:18501/small.bin \
  --server-pid new=$PN --server-pid old=$PO --baseline old --out /tmp/sab/small \
  --title "ringd uring small file: recv drive deferred (new) vs immediate (old)" >/tmp/sab/small.log 2>&1
echo done
