#!/usr/bin/env bash
# How each proxy's upstream connections spread over the upstream's worker processes, sampled
# while a benchmark runs (bench.sh runs it beside proxy-gunicorn). A gunicorn worker owns every
# connection it accepted, so a proxy whose 64 keep-alive connections landed 5 / 59 on two workers
# queues most requests behind one worker: which worker wins each accept is luck, and it moves
# p99 and req/s from round to round whichever proxy is in front.
#
# Usage: scripts/upstream-spread.sh PORT OUT_LOG [INTERVAL_S]
# Every INTERVAL_S (default 2) seconds, one line: the time, then "proxy:worker_pid=count" for
# every established connection to 127.0.0.1:PORT (from `ss -tnp`; the proxy is the process that
# owns the other end). On SIGTERM or SIGINT it appends a summary: per proxy, the distinct splits
# seen in time order (consecutive repeats folded), the busiest worker's count first.
# `upstream-spread.sh --summarize LOG` prints that summary for a log's samples.
set -euo pipefail
usage="usage: upstream-spread.sh PORT OUT_LOG [INTERVAL_S] | --summarize LOG"
port="${1:?$usage}"
out="${2:?$usage}"
interval="${3:-2}"

sample() {
    ss -tnpH state established 2>/dev/null | awk -v port="$port" '
        {
            n = split($3, l, ":"); lp = l[n]; n = split($4, r, ":"); rp = r[n]
            u = ""
            if (match($0, /users:\(\("[^"]+",pid=[0-9]+/)) {
                u = substr($0, RSTART + 9, RLENGTH - 9); gsub(/"/, "", u); sub(/,pid/, "", u)
            }
            if (lp == port) worker[rp] = u; else if (rp == port) proxy[lp] = u
        }
        END {
            for (k in worker) if (k in proxy) { split(proxy[k], p, "="); c[p[1] ":" worker[k]]++ }
            line = ""
            for (x in c) line = line " " x "=" c[x]
            print line
        }'
}

summary() {
    echo "# summary: per proxy, its connections per upstream worker (busiest first; every worker seen in the log counted, 0 where it had none), distinct splits in time order"
    awk '
        /^#/ { next }
        # First pass: every upstream worker that owned a connection at some point.
        FNR == NR { for (i = 2; i <= NF; i++) { split($i, a, "="); split(a[1], b, ":"); w[b[2]] = 1 } next }
        {
            delete n
            for (i = 2; i <= NF; i++) { split($i, a, "="); split(a[1], b, ":"); n[b[1], b[2]] = a[2]; px[b[1]] = 1; seen[b[1]] = 1 }
            for (p in seen) {
                k = 0
                for (x in w) v[++k] = ((p, x) in n) ? n[p, x] : 0
                for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (v[j] + 0 > v[i] + 0) { t = v[i]; v[i] = v[j]; v[j] = t }
                s = v[1]; for (i = 2; i <= k; i++) s = s "/" v[i]
                if (last[p] != s) { splits[p] = splits[p] (splits[p] == "" ? "" : ", ") s; last[p] = s }
            }
            delete seen
        }
        END { for (p in splits) print p ": " splits[p] }' "$out" "$out" | sort
}

if [[ "$port" == --summarize ]]; then
    summary
    exit 0
fi
[[ "$port" =~ ^[0-9]+$ ]] || { echo "$usage" >&2; exit 2; }

stop=0
trap 'stop=1' TERM INT
echo "# upstream-spread: established connections to 127.0.0.1:$port, proxy:worker_pid=count, every ${interval}s" >"$out"
while ((stop == 0)); do
    echo "$(date -u +%T)$(sample)" >>"$out"
    sleep "$interval" &
    wait $! 2>/dev/null || true
done
summary >>"$out"
