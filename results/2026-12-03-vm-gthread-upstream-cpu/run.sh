#!/usr/bin/env bash
# gunicorn gthread's own CPU per request behind ringd and behind nginx (loadgen compare with
# gunicorn's master as each target's "server").
set -euo pipefail
cd /tmp/gth
ls /work/main/.peers/www/hello.txt >/dev/null
taskset -c 1 /work/main/.venv/bin/gunicorn -c /tmp/gth/gunicorn.conf.py app:upstream >/tmp/gth/gunicorn.log 2>&1 & PG=$!
taskset -c 0 /usr/sbin/nginx -c /tmp/gth/nginx.conf >/tmp/gth/nginx.out 2>&1 & PN=$!
taskset -c 0 /work/main/target/release/ringd --config /tmp/gth/ringd.toml --backend uring --workers 1 --listen 127.0.0.1:18302 >/tmp/gth/ringd.log 2>&1 & PR=$!
trap 'kill $PR $PN $PG 2>/dev/null; wait $PR $PN $PG 2>/dev/null || true' EXIT
sleep 2
curl -s http://127.0.0.1:18301/ | head -c 50; echo; curl -s http://127.0.0.1:18302/ | head -c 50; echo
taskset -c 1 /work/main/target/release/loadgen compare -t 1 -c 64 -d ${DUR:-8s} --rounds ${ROUNDS:-4} \
  --target ringd=http://127.0.0.1:18302/ --target nginx=http://127.0.0.1:18301/ \
  --server-pid ringd=$PG --server-pid nginx=$PG --baseline nginx --out /tmp/gth/out${TAG:-} \
  --title "gunicorn gthread's CPU per request behind each proxy" >/tmp/gth/loadgen${TAG:-}.log 2>&1
echo done
