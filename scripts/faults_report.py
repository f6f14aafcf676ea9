#!/usr/bin/env python3
"""summary.md and faults.json of a scripts/faults.sh run (issue 16's fault runs).

Reads, per fault folder: load.json (one open-loop loadgen run with per-second intervals, each
with its own HdrHistogram), events.csv (wall-clock times of the fault, its end, restarts and
probes), samples.csv (ringd's RSS, fds and CPU ticks every 0.5 s) and ringd.log (its stderr).
Windows are cut from the same run: before the fault, during it (until 2 s after it ended) and
after. Window percentiles come from the intervals' histograms added together, not averaged.
Nothing in the output is typed by hand.

Usage: scripts/faults_report.py RUN_DIR
"""

import base64
import json
import math
import os
import re
import struct
import sys
import zlib

SETTLE_S = 2.0  # the "during" window runs until this long after the fault ended
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
ERROR_CUT = ("closed", "reset", "parse", "io", "timeout")


# ------------------------------------------------------------------ HdrHistogram V2 decoding

def _zigzag_leb128(buf, pos):
    """One ZigZag LEB128 value as HdrHistogram writes it (9th byte carries 8 bits)."""
    v = 0
    shift = 0
    for i in range(9):
        b = buf[pos]
        pos += 1
        if i == 8:
            v |= b << shift
            break
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    return (v >> 1) ^ -(v & 1), pos


class Hist:
    """The counts of one decoded histogram (value = highest equivalent value of its bucket)."""

    def __init__(self):
        self.counts = {}  # highest equivalent value -> count

    @staticmethod
    def decode(text):
        h = Hist()
        raw = base64.b64decode(text)
        cookie, length = struct.unpack(">ii", raw[:8])
        if cookie & ~0xF0 != 0x1C849304 & ~0xF0:
            raise ValueError(f"not a V2 compressed histogram (cookie {cookie:#x})")
        data = zlib.decompress(raw[8:8 + length])
        (_cookie, payload_len, _norm, sig, lowest, _highest, _ratio) = struct.unpack(
            ">iiiiqqd", data[:40])
        sub_bucket_count_mag = math.ceil(math.log2(2 * 10**sig))
        half_mag = max(sub_bucket_count_mag, 1) - 1
        half = 1 << half_mag
        unit_mag = int(math.floor(math.log2(max(lowest, 1))))
        pos, end, index = 40, 40 + payload_len, 0
        while pos < end:
            v, pos = _zigzag_leb128(data, pos)
            if v < 0:
                index += -v
                continue
            if v:
                bucket = (index >> half_mag) - 1
                sub = (index & (half - 1)) + half
                if bucket < 0:
                    sub -= half
                    bucket = 0
                value = sub << (bucket + unit_mag)
                top = value + (1 << (bucket + unit_mag)) - 1
                h.counts[top] = h.counts.get(top, 0) + v
            index += 1
        return h

    def add(self, other):
        for k, v in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + v

    def total(self):
        return sum(self.counts.values())

    def percentile(self, p):
        total = self.total()
        if not total:
            return None
        want = max(1, math.ceil(p / 100.0 * total - 1e-9))
        run = 0
        for k in sorted(self.counts):
            run += self.counts[k]
            if run >= want:
                return k
        return max(self.counts)


# ------------------------------------------------------------------ reading a fault folder

def read_csv(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = [ln.rstrip("\n") for ln in f if ln.strip()]
    head = lines[0].split(",")
    return [dict(zip(head, ln.split(",", len(head) - 1))) for ln in lines[1:]]


def read_text(path, default=None):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def fmt_us(us):
    if us is None:
        return "–"
    if us >= 1e6:
        return f"{us / 1e6:.2f} s"
    if us >= 1000:
        return f"{us / 1000:.2f} ms"
    return f"{us:.0f} µs"


def windows(fault_dir):
    """(start epoch of the measured run, fault offset, fault end offset) in seconds."""
    ev = read_csv(os.path.join(fault_dir, "events.csv"))
    start = next(float(e["detail"]) for e in ev if e["event"] == "load-start")
    fault = next(float(e["t"]) for e in ev if e["event"] == "fault")
    end = next((float(e["t"]) for e in ev if e["event"] == "fault-end"), fault)
    return start, fault - start, end - start, ev


def window_of(t, fault, end):
    if t < fault:
        return "before"
    if t < end + SETTLE_S:
        return "during"
    return "after"


def analyse(fault_dir, name):
    load = json.load(open(os.path.join(fault_dir, "load.json")))
    start, fault, end, ev = windows(fault_dir)
    out = {"fault": name, "fault_at_s": round(fault, 2), "fault_end_s": round(end, 2)}
    wins = {w: {"hist": Hist(), "requests": 0, "errors": 0, "sent": 0, "seconds": 0,
                "worst_second_p99_us": None} for w in ("before", "during", "after")}
    for iv in load.get("intervals", []):
        if iv.get("warmup"):
            continue
        w = wins[window_of(iv["t_s"] + 0.5, fault, end)]
        w["requests"] += iv["requests"]
        w["errors"] += iv["errors"]
        w["sent"] += iv.get("sent", 0)
        w["seconds"] += 1
        if iv.get("histogram"):
            w["hist"].add(Hist.decode(iv["histogram"]))
        p99 = iv.get("p99_us")
        if p99 is not None and (w["worst_second_p99_us"] is None or p99 > w["worst_second_p99_us"]):
            w["worst_second_p99_us"] = p99
    unit = 1000.0 if load.get("histograms", {}).get("unit", "ns") == "ns" else 1.0
    # ringd's process: RSS, fds, CPU per window (samples are wall-clock stamped).
    samples = read_csv(os.path.join(fault_dir, "samples.csv"))
    proc = {w: {"rss": [], "fds": [], "cpu": []} for w in wins}
    for s in samples:
        try:
            t = float(s["t"]) - start
        except ValueError:
            continue
        if t < 0:
            w = "before"
        elif t > load.get("duration_s", 0) + 1:
            continue
        else:
            w = window_of(t, fault, end)
        if s["rss_kib"]:
            proc[w]["rss"].append(int(s["rss_kib"]))
        if s["fds"]:
            proc[w]["fds"].append(int(s["fds"]))
        if s["cpu_ticks"]:
            proc[w]["cpu"].append((t, int(s["cpu_ticks"]), s["pid"]))
    out["windows"] = {}
    for w, d in wins.items():
        h = d["hist"]
        cpu = proc[w]["cpu"]
        cores = None
        if len(cpu) >= 2:
            # Only across samples of one process (a restart resets the counter).
            same = [c for c in cpu if c[2] == cpu[-1][2]]
            if len(same) >= 2 and same[-1][0] > same[0][0]:
                cores = (same[-1][1] - same[0][1]) / CLK_TCK / (same[-1][0] - same[0][0])
        out["windows"][w] = {
            "seconds": d["seconds"],
            "requests": d["requests"],
            "errors": d["errors"],
            "p50_us": None if not h.total() else h.percentile(50) / unit,
            "p99_us": None if not h.total() else h.percentile(99) / unit,
            "max_us": None if not h.total() else max(h.counts) / unit,
            "worst_second_p99_us": d["worst_second_p99_us"],
            "rss_kib_min": min(proc[w]["rss"], default=None),
            "rss_kib_max": max(proc[w]["rss"], default=None),
            "fds_min": min(proc[w]["fds"], default=None),
            "fds_max": max(proc[w]["fds"], default=None),
            "cpu_cores": None if cores is None else round(cores, 3),
        }
    out["requests"] = load.get("requests")
    out["target_rps"] = load.get("target_rps")
    out["status"] = load.get("status", {})
    out["errors"] = load.get("errors", {})
    out["unsent"] = load.get("unsent", 0)
    out["events"] = [(round(float(e["t"]) - start, 2), e["event"], e["detail"]) for e in ev
                     if e["event"] not in ("load-start",)]
    log = read_text(os.path.join(fault_dir, "ringd.log"), "") or ""
    counts = {}
    for ln in log.splitlines():
        if not ln.strip() or re.search(r"^ringd: serving |listening on", ln):
            continue
        key = re.sub(r"\d+", "N", ln) if "reload" not in ln else ln
        counts[key] = counts.get(key, 0) + 1
    out["log_lines"] = counts
    out["log_total_lines"] = len(log.splitlines())
    out["exit_status"] = read_text(os.path.join(fault_dir, "exit_status.txt"))
    out["drain_s"] = read_text(os.path.join(fault_dir, "drain_s.txt"))
    out["flood"] = read_text(os.path.join(fault_dir, "flood.log"))
    out["verdicts"] = verdicts(name, out)
    return out


def probe(out, name):
    return next((d for _, e, d in out["events"] if e == name), None)


def verdicts(name, o):
    v = []
    cut = {k: o["errors"].get(k, 0) for k in ERROR_CUT if o["errors"].get(k, 0)}
    five = {k: n for k, n in o["status"].items() if k.startswith("5")}
    during = o["windows"]["during"]
    after = o["windows"]["after"]

    def check(ok, text):
        v.append(("PASS" if ok else "FAIL", text))

    def log_count(pattern):
        return sum(n for k, n in o["log_lines"].items() if re.search(pattern, k))

    if name == "sigterm":
        check(o["exit_status"] == "0", f"ringd exited with status {o['exit_status']}")
        check(o["drain_s"] is not None and float(o["drain_s"]) <= 5.0,
              f"drained and exited in {o['drain_s']} s (--shutdown-timeout 5s)")
        check(not cut, f"no response lost or cut (errors other than refused connects: {cut or 'none'})")
        check(not five, f"no 5xx ({five or 'none'})")
        check(probe(o, "probe-while-down") == "000",
              f"a new connection after exit was refused (probe: {probe(o, 'probe-while-down')})")
    elif name == "sighup":
        check(not cut and not o["errors"].get("connect_refused"),
              f"no response lost, cut or refused (errors: {cut or 'none'})")
        check(not five, f"no 5xx ({five or 'none'})")
        check(probe(o, "probe-before") == "404" and probe(o, "probe-after") == "200",
              f"the new route took effect: /probe {probe(o, 'probe-before')} before, "
              f"{probe(o, 'probe-after')} after")
    elif name == "emfile":
        n = log_count(r"accept failed")
        check(n == 1, f"the accept failure logged {n} time(s) (want once)")
        base = o["windows"]["before"]["cpu_cores"]
        check(during["cpu_cores"] is not None and base is not None
              and during["cpu_cores"] < base + 0.25,
              f"no busy loop at the limit: ringd used {during['cpu_cores']} cores during the "
              f"flood, {base} before it (bar: less than 0.25 more)")
        check(not o["errors"].get("timeout"),
              f"no request timed out ({o['errors'].get('timeout', 0)})")
        check(probe(o, "probe-after") == "200",
              f"accepts again once fds free (probe after: {probe(o, 'probe-after')})")
    elif name == "pipes":
        n = log_count(r"pipe|cannot start|sendfile")
        check(n <= 3, f"the pipe failure logged {n} line(s) (bar: a few, not one per request)")
        check(not o["errors"].get("timeout"), f"nothing hung: {o['errors'].get('timeout', 0)} timeouts")
        check(not cut, f"no response cut (errors: {cut or 'none'})")
        check(probe(o, "probe-during-medium") == "200",
              f"a file body still goes out (probe during: {probe(o, 'probe-during-medium')})")
        after = probe(o, "probe-after-cgi") or probe(o, "probe-after-medium")
        check(after == "200", f"recovers once pipes can be made (probe after: {after})")
    elif name == "logfull":
        n = log_count(r"access log")
        check(n == 1, f"the access log failure logged {n} time(s) (want once)")
        check(not cut and not five, f"serving continued: errors {cut or 'none'}, 5xx {five or 'none'}")
        lo = o["windows"]["before"]["rss_kib_max"] or 0
        hi = max(o["windows"][w]["rss_kib_max"] or 0 for w in ("during", "after"))
        check(hi - lo < 2048, f"no memory growth: RSS {lo / 1024:.1f} → {hi / 1024:.1f} MiB (bar < 2 MiB)")
    elif name == "upstream":
        bad = sum(n for k, n in five.items() if k in ("502", "503", "504"))
        check(bad > 0, f"the lost upstream shows as 502/503/504 ({five or 'none'})")
        check(not o["errors"].get("timeout"),
              f"nothing hung: {o['errors'].get('timeout', 0)} client timeouts")
        check(not cut, f"no response cut (errors: {cut or 'none'})")
        check(probe(o, "probe-api-after") == "200",
              f"recovered when the upstream returned (probe after: {probe(o, 'probe-api-after')})")
        n = log_count(r"upstream")
        check(1 <= n <= 4, f"ringd logged {n} line(s) about the upstream (want: out once and back "
              f"once per worker, not one per request or per fail_timeout)")
    return v


# ------------------------------------------------------------------ rendering

FAULT_TITLES = {
    "sigterm": "SIGTERM under load (graceful drain, then a new ringd on the same port)",
    "sighup": "SIGHUP under load (config reload with a new route)",
    "emfile": "EMFILE (a low ulimit -n, a flood of idle connections)",
    "pipes": "The pipe budget exhausted (fs.pipe-user-pages-hard = 1, ringd without CAP_SYS_RESOURCE)",
    "logfull": "The access log's disk full (--access-log /dev/full)",
    "upstream": "The upstream killed and started again",
}


def render(run_dir, results):
    env = read_text(os.path.join(run_dir, "env.txt"), "")
    lines = [
        "# Fault runs (issue 16)",
        "",
        "Generated by `scripts/faults_report.py` from a `scripts/faults.sh` run: one open-loop",
        "loadgen run per fault (per-second intervals, window percentiles from their histograms",
        "added together), ringd's RSS/fds/CPU sampled every 0.5 s, and ringd's stderr. Windows:",
        f"*before* the fault, *during* it (until {SETTLE_S:.0f} s after it ended), *after*.",
        "Latency is corrected for coordinated omission (from the intended send time). Nothing",
        "here is typed by hand.",
        "",
        "```",
        env,
        "```",
        "",
        "## Verdicts",
        "",
    ]
    for r in results:
        for ok, text in r["verdicts"]:
            lines.append(f"- **{ok}** {r['fault']}: {text}")
    for r in results:
        lines += ["", f"## {r['fault']}: {FAULT_TITLES.get(r['fault'], '')}", ""]
        lines.append(f"Fault at {r['fault_at_s']} s, ended at {r['fault_end_s']} s of the run; "
                     f"{r['requests']:,} requests at {r['target_rps']:.0f} req/s target, "
                     f"{r['unsent']} unsent.")
        lines += ["", "| window | s | requests | errors | p50 | p99 | max | worst 1-s p99 | "
                  "RSS MiB | fds | ringd CPU (cores) |", "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
        for w in ("before", "during", "after"):
            d = r["windows"][w]
            rss = ("–" if d["rss_kib_min"] is None else
                   f"{d['rss_kib_min'] / 1024:.1f}–{d['rss_kib_max'] / 1024:.1f}")
            fds = "–" if d["fds_min"] is None else f"{d['fds_min']}–{d['fds_max']}"
            cpu = "–" if d["cpu_cores"] is None else f"{d['cpu_cores']:.2f}"
            lines.append(f"| {w} | {d['seconds']} | {d['requests']:,} | {d['errors']} | "
                         f"{fmt_us(d['p50_us'])} | {fmt_us(d['p99_us'])} | {fmt_us(d['max_us'])} | "
                         f"{fmt_us(d['worst_second_p99_us'])} | {rss} | {fds} | {cpu} |")
        st = ", ".join(f"{k}: {v:,}" for k, v in sorted(r["status"].items()))
        er = ", ".join(f"{k}: {v}" for k, v in r["errors"].items() if v) or "none"
        lines += ["", f"Statuses: {st}. Client errors: {er}."]
        ev = "; ".join(f"{t} s {e}{' ' + d if d else ''}" for t, e, d in r["events"])
        lines += ["", f"Events: {ev}."]
        if r["drain_s"]:
            lines += ["", f"Drain: SIGTERM to exit {r['drain_s']} s, exit status {r['exit_status']}."]
        if r["flood"]:
            lines += ["", "Flood: " + r["flood"].replace("\n", "; ") + "."]
        lines += ["", "ringd's stderr (start-up lines left out; digits folded to N; count × line):", ""]
        if r["log_lines"]:
            lines += ["```"] + [f"{n} × {k}" for k, n in r["log_lines"].items()] + ["```"]
        else:
            lines.append("(nothing)")
    return "\n".join(lines) + "\n"


def main(argv):
    if len(argv) == 2 and argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    run_dir = argv[1]
    results = []
    for name in ("sigterm", "sighup", "emfile", "pipes", "logfull", "upstream"):
        d = os.path.join(run_dir, name)
        if os.path.exists(os.path.join(d, "load.json")):
            results.append(analyse(d, name))
    with open(os.path.join(run_dir, "faults.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    text = render(run_dir, results)
    with open(os.path.join(run_dir, "summary.md"), "w") as f:
        f.write(text)
    sys.stdout.write(text)
    return 0 if all(ok == "PASS" for r in results for ok, _ in r["verdicts"]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
