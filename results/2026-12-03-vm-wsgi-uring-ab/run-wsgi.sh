#!/usr/bin/env bash
# ringd-wsgi on uring vs on epoll, side by side: wsgi-echo (POST 10 KiB) and wsgi-hello.
set -euo pipefail
cd /work/main/scripts/peers
V=/work/main/.venv/bin
taskset -c 0 $V/ringd-wsgi wsgi_bench:application --bind 127.0.0.1:18401 --workers 1 --backend uring >/tmp/wab/u.log 2>&1 & PU=$!
taskset -c 0 $V/ringd-wsgi wsgi_bench:application --bind 127.0.0.1:18402 --workers 1 --backend epoll >/tmp/wab/e.log 2>&1 & PE=$!
trap 'kill $PU $PE 2>/dev/null; wait $PU $PE 2>/dev/null || true' EXIT
sleep 3
head -1 /tmp/wab/u.log; head -1 /tmp/wab/e.log
L=/work/main/target/release/loadgen
taskset -c 1 $L compare -t 1 -c 64 -d ${DUR:-5s} --rounds ${ROUNDS:-5} -m POST --body @/tmp/wab/body.bin \
  --target uring=http://127.0.0.1:18401/echo --target epoll=http://127.0.0.1:18402/echo \
  --server-pid uring=$PU --server-pid epoll=$PE --baseline epoll --out /tmp/wab/echo \
  --title "ringd-wsgi wsgi-echo: uring vs epoll" >/tmp/wab/echo.log 2>&1
taskset -c 1 $L compare -t 1 -c 64 -d ${DUR:-5s} --rounds ${ROUNDS:-5} \
  --target uring=http://127.0.0.1:18401/ --target epoll=http://127.0.0.1:18402/ \
  --server-pid uring=$PU --server-pid epoll=$PE --baseline epoll --out /tmp/wab/hello \
  --title "ringd-wsgi wsgi-hello: uring vs epoll" >/tmp/wab/hello.log 2>&1
echo done
