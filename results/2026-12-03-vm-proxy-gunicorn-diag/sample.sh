#!/usr/bin/env bash
# every 3 s: established connections to gunicorn's upstream port, per (proxy process, gunicorn worker pid)
port=${1:?port}; end=$((SECONDS+${2:-600}))
while ((SECONDS<end)); do
  ss -tnpH state established 2>/dev/null | awk -v port=$port '
    { split($3,l,":"); split($4,r,":"); lp=l[length(l)]; rp=r[length(r)];
      match($0,/users:\(\("[^"]+",pid=[0-9]+/); u=substr($0,RSTART+9,RLENGTH-9); gsub(/"/,"",u);
      if (lp==port) g[rp]=u; else if (rp==port) p[lp]=u }
    END { for (k in g) c[p[k] " -> " g[k]]++; for (x in c) print x, c[x] }' | sort | tr '\n' ';'
  echo " @$(date +%T)"
  sleep 3
done
