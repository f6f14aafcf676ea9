"""Prints README.md's table from report.json (python3 table.py)."""
import json
import os

r = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "report.json")))
t = {x["name"]: x for x in r["targets"]}
print("| round | req/s ringd/nginx | gunicorn CPU µs/req behind ringd | behind nginx | ratio | segs/req ringd | nginx |")
print("|---:|---:|---:|---:|---:|---:|---:|")
for i, (a, b) in enumerate(zip(t["ringd"]["runs"], t["nginx"]["runs"]), 1):
    ca, cb = a["server_cpu_us_per_request"], b["server_cpu_us_per_request"]
    print(f"| {i} | {a['rps'] / b['rps']:.2f}× | {ca:.1f} | {cb:.1f} | {ca / cb:.2f}× | "
          f"{a['tcp']['segs_per_request']:.2f} | {b['tcp']['segs_per_request']:.2f} |")
