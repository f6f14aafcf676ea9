#!/usr/bin/env bash
# gunicorn sync's own CPU per request behind ringd, nginx and HAProxy (loadgen compare with
# gunicorn's master as each target's "server").
set -euo pipefail
cd /tmp/gsync
RINGD=${RINGD:-/work/main/target/release/ringd}
taskset -c 1 /work/main/.venv/bin/gunicorn -c /tmp/gsync/gunicorn.conf.py app:upstream >/tmp/gsync/gunicorn.log 2>&1 & PG=$!
taskset -c 0 /usr/sbin/nginx -c /tmp/gsync/nginx.conf >/tmp/gsync/nginx.out 2>&1 & PN=$!
taskset -c 0 /usr/sbin/haproxy -f /tmp/gsync/haproxy.cfg -db >/tmp/gsync/haproxy.out 2>&1 & PH=$!
taskset -c 0 $RINGD --config /tmp/gsync/ringd.toml --backend uring --workers 1 --listen 127.0.0.1:18302 >/tmp/gsync/ringd.log 2>&1 & PR=$!
trap 'kill $PR $PN $PH $PG 2>/dev/null; wait $PR $PN $PH $PG 2>/dev/null || true' EXIT
sleep 2
for p in 18301 18302 18303; do curl -s http://127.0.0.1:$p/ | head -c 20; echo; done
taskset -c 1 /work/main/target/release/loadgen compare -t 1 -c 64 -d ${DUR:-8s} --rounds ${ROUNDS:-4} \
  --target ringd=http://127.0.0.1:18302/ --target nginx=http://127.0.0.1:18301/ --target haproxy=http://127.0.0.1:18303/ \
  --server-pid ringd=$PG --server-pid nginx=$PG --server-pid haproxy=$PG --baseline nginx --out /tmp/gsync/out${TAG:-} \
  --title "gunicorn sync's CPU per request behind each proxy" >/tmp/gsync/loadgen${TAG:-}.log 2>&1
echo done
