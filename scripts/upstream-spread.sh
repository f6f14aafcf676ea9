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
# seen in time order (consecutive repeats folded), the busiest worker's count first, leaving out
# samples with under half of that proxy's most connections (a pool draining while idle).
# `upstream-spread.sh --summarize LOG` prints that summary for a log's samples.
set -euo pipefail
usage="usage: upstream-spread.sh PORT OUT_LOG [INTERVAL_S] | --summarize LOG"
if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
    sed -n '2,15p' "$0"
    exit 0
fi
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
            split(u, nv, "=")
            # the upstream side by its worker PID, the proxy side by its process name
            if (lp == port) worker[rp] = nv[2]; else if (rp == port) proxy[lp] = nv[1]
        }
        END {
            for (k in worker) if ((k in proxy) && proxy[k] != "") c[proxy[k] ":" worker[k]]++
            line = ""
            for (x in c) line = line " " x "=" c[x]
            print line
        }'
}

summary() {
    echo "# summary: per proxy, its connections per upstream worker (busiest first; every worker seen in the log counted, 0 where it had none), distinct splits in time order, samples with under half its most connections left out"
    awk '
        /^#/ { next }
        # First pass: every upstream worker that owned a connection at some point.
        function parse(f,   m, j) {
            # "proxy:pid=count" (older logs: "proxy:name=pid=count")
            m = split(f, a, "="); cnt = a[m]; j = index(f, ":"); px_ = substr(f, 1, j - 1)
            wk = a[m - 1]; sub(/.*:/, "", wk)
        }
        FNR == NR { for (i = 2; i <= NF; i++) { parse($i); w[wk] = 1 } next }
        {
            delete n
            for (i = 2; i <= NF; i++) { parse($i); n[px_, wk] = cnt; seen[px_] = 1 }
            for (p in seen) {
                k = 0
                for (x in w) v[++k] = ((p, x) in n) ? n[p, x] : 0
                for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (v[j] + 0 > v[i] + 0) { t = v[i]; v[i] = v[j]; v[j] = t }
                s = v[1]; for (i = 2; i <= k; i++) s = s "/" v[i]
                if (last[p] != s) { splits[p] = splits[p] (splits[p] == "" ? "" : ", ") s; last[p] = s }
            }
            delete seen
        }
        # Only the splits of at least half the most connections of that proxy: the pool in use, not one
        # draining while the other proxies run.
        END {
            for (p in splits) {
                k = split(splits[p], e, ", "); most = 0
                for (i = 1; i <= k; i++) { m = split(e[i], v, "/"); tot[i] = 0; for (j = 1; j <= m; j++) tot[i] += v[j]; if (tot[i] > most) most = tot[i] }
                line = ""; prev = ""
                for (i = 1; i <= k; i++) if (tot[i] * 2 >= most && e[i] != prev) { line = line (line == "" ? "" : ", ") e[i]; prev = e[i] }
                print p ": " line
            }
        }' "$out" "$out" | sort
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
