#!/usr/bin/env python3
"""Benchmark helpers for scripts/bench.sh (python3 stdlib only).

Subcommands:
  mkdata DIR                 create the served root (small/medium/large.bin, hello.txt)
  max-rps DIR TARGET...      closed-loop req/s of the slowest TARGET in DIR/report.json
  check DIR SCENARIO=T1,T2.. smoke check: report files exist, each target answered
  tuning-diff BEFORE AFTER   markdown table of before/after `tune-kernel.sh apply`
  scaling DIR                table + SVG of req/s against server cores from DIR/w*/
  headline RESULTS           regenerate RESULTS/README.md (index + headline table)

Every figure comes from loadgen's report.json files; nothing here is typed by hand.
"""

import argparse
import hashlib
import html
import json
import math
import os
import re
import sys

# ---------------------------------------------------------------------------- test data

HELLO_BODY = b"Hello, world!"
DATA_FILES = {
    "small.bin": 1000,
    "medium.bin": 100 * 1024,
    "large.bin": 10 * 1024 * 1024,
}


def deterministic_bytes(name, size):
    """SHA-256 in counter mode keyed by the file name: same bytes on every machine."""
    out = bytearray()
    counter = 0
    seed = name.encode()
    while len(out) < size:
        out += hashlib.sha256(seed + counter.to_bytes(8, "little")).digest()
        counter += 1
    return bytes(out[:size])


def write_if_changed(path, data):
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return False
    except OSError:
        pass
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return True


def cmd_mkdata(args):
    os.makedirs(args.dir, exist_ok=True)
    os.chmod(args.dir, 0o755)
    files = {name: deterministic_bytes(name, size) for name, size in DATA_FILES.items()}
    files["hello.txt"] = HELLO_BODY
    changed = [n for n, data in files.items() if write_if_changed(os.path.join(args.dir, n), data)]
    if changed:
        print(f"mkdata: wrote {', '.join(changed)} in {args.dir}")
    return 0


# ---------------------------------------------------------------------------- reading reports
#
# loadgen compare's report.json is read only through `load_report` and `target_stats`, so a
# change in its layout is fixed in one place.


def load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_report(scenario_dir):
    return load_json(os.path.join(scenario_dir, "report.json"))


def _num(x):
    return x if isinstance(x, (int, float)) else None


def target_stats(report):
    """Per target, in run order: the figures the headline, smoke check and plots use.

    loadgen compare's report.json has `targets: [{name, median{...}, min{...}, max{...},
    runs: [RunResult...]}]`; medians are across rounds. Each value returned is a dict with
    rps (median), rps_min, rps_max, rounds, requests and errors (summed over rounds),
    bytes_per_s (median), cpu_us (server CPU µs per response, median, or None), p50_us, p99_us,
    p999_us (medians across rounds), saturated (the generator was saturated in some round) and
    warnings (every round's, deduplicated).
    """
    out = {}
    targets = report.get("targets")
    if not isinstance(targets, list):
        raise ValueError("report.json has no 'targets' list")
    for t in targets:
        med, lo, hi = t.get("median", {}), t.get("min", {}), t.get("max", {})
        runs = [r for r in t.get("runs", []) if isinstance(r, dict)]
        bps = [_num(r.get("bytes_per_s")) for r in runs]
        bps = sorted(b for b in bps if b is not None)
        warnings = []
        for r in runs:
            for w in r.get("warnings", []):
                if w not in warnings:
                    warnings.append(w)
        out[t["name"]] = {
            "rps": _num(med.get("rps")),
            "rps_min": _num(lo.get("rps")),
            "rps_max": _num(hi.get("rps")),
            "rounds": len(runs),
            "requests": sum(_num(r.get("requests")) or 0 for r in runs),
            "errors": sum(_num(r.get("errors_total")) or 0 for r in runs),
            "bytes_per_s": _median(bps),
            "cpu_us": _num(med.get("server_cpu_us_per_request")),
            "p50_us": _num(med.get("p50_us")),
            "p99_us": _num(med.get("p99_us")),
            "p999_us": _num(med.get("p999_us")),
            "connections": max([_num((r.get("settings") or {}).get("connections")) or 0 for r in runs] or [0]),
            "saturated": any((r.get("generator_cpu") or {}).get("saturated") for r in runs),
            "warnings": warnings,
        }
    return out


def _median(sorted_vals):
    n = len(sorted_vals)
    if n == 0:
        return None
    if n % 2:
        return sorted_vals[n // 2]
    return (sorted_vals[n // 2 - 1] + sorted_vals[n // 2]) / 2


def read_manifest(run_dir):
    """[(relative scenario dir, [targets], title)] in run order, from bench.sh's scenarios.tsv."""
    path = os.path.join(run_dir, "scenarios.tsv")
    rows = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) >= 2 and parts[0]:
                    rows.append((parts[0], [t for t in parts[1].split(",") if t], parts[2] if len(parts) > 2 else ""))
    return rows


# ---------------------------------------------------------------------------- formatting


def fmt_num(x, digits=0):
    if x is None:
        return "–"
    if digits == 0:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def fmt_us(us):
    """A latency in µs, shown in the unit that reads best."""
    if us is None:
        return "–"
    if us >= 1_000_000:
        return f"{us / 1e6:.2f} s"
    if us >= 1000:
        return f"{us / 1000:.2f} ms"
    return f"{us:.0f} µs"


def fmt_mbps(bps):
    return "–" if bps is None else f"{bps / 1e6:,.1f}"


def fmt_spread(st):
    """The rounds' req/s range, e.g. "6,100–6,700"."""
    if st["rps_min"] is None or st["rps_max"] is None:
        return "–"
    return f"{st['rps_min']:,.0f}–{st['rps_max']:,.0f}"


def fmt_rps(st):
    """Median req/s, flagged when the generator was saturated (the server may not be the limit)."""
    return fmt_num(st["rps"]) + (" ⚠" if st.get("saturated") else "")


def fmt_ratio(x, base):
    if x is None or not base:
        return "–"
    return f"{x / base:.2f}×"


# ---------------------------------------------------------------------------- max-rps


def cmd_max_rps(args):
    stats = target_stats(load_report(args.dir))
    wanted = args.targets or list(stats)
    vals = []
    for t in wanted:
        if t not in stats:
            print(f"max-rps: target {t} missing from {args.dir}/report.json", file=sys.stderr)
            return 1
        if not stats[t]["rps"]:
            print(f"max-rps: target {t} served nothing in {args.dir}", file=sys.stderr)
            return 1
        vals.append(stats[t]["rps"])
    print(int(min(vals)))
    return 0


# ---------------------------------------------------------------------------- check (smoke)

REPORT_FILES = ("report.md", "report.html", "report.json")


def cmd_check(args):
    rows = read_manifest(args.dir)
    if not rows:
        print(f"check: no scenarios recorded in {args.dir}/scenarios.tsv", file=sys.stderr)
        return 1
    failures = []
    for rel, targets, _title in rows:
        sdir = os.path.join(args.dir, rel)
        for fname in REPORT_FILES:
            p = os.path.join(sdir, fname)
            if not os.path.isfile(p) or os.path.getsize(p) == 0:
                failures.append(f"{rel}: {fname} missing or empty")
        try:
            stats = target_stats(load_report(sdir))
        except (OSError, ValueError) as e:
            failures.append(f"{rel}: report.json unreadable: {e}")
            continue
        for t in targets:
            st = stats.get(t)
            if st is None:
                failures.append(f"{rel}: target {t} missing from report.json")
                continue
            # A run may end with about one failed request per connection (cut off at the end of
            # the window, or closed by a server that closes after each response), which in a
            # one-second smoke run can outnumber a slow server's responses; more than that
            # means the target failed.
            allowed = max(st["requests"], st["connections"] * max(st["rounds"], 1))
            if st["requests"] <= 0:
                failures.append(f"{rel}: {t} answered no request")
            elif st["errors"] > allowed:
                failures.append(
                    f"{rel}: {t} had {st['errors']} errors, more than its {st['requests']} responses "
                    f"and its {st['connections']} connections × {st['rounds']} rounds"
                )
            print(f"check: {rel:<12} {t:<18} {st['requests']:>9} responses {st['errors']:>6} errors")
    if failures:
        print("check FAILED:", file=sys.stderr)
        for f in failures:
            print("  " + f, file=sys.stderr)
        return 1
    print(f"check: {len(rows)} scenarios, every target answered and every report file exists")
    return 0


# ---------------------------------------------------------------------------- tuning-diff


def _pct(before, after):
    if before is None or after is None or not before:
        return "–"
    return f"{(after - before) / before * 100:+.1f}%"


def cmd_tuning_diff(args):
    lines = [
        "# Kernel tuning: before and after `scripts/tune-kernel.sh apply`",
        "",
        "Generated by `scripts/benchtool.py tuning-diff` from the report.json files in "
        "`before/` and `after/`. The servers were restarted after `apply` (listen backlogs are "
        "capped when a socket starts listening), and the settings were reverted afterwards.",
        "",
    ]
    if args.applied and os.path.exists(args.applied):
        with open(args.applied, encoding="utf-8") as f:
            applied = f.read().strip()
        lines += ["Settings applied:", "", "```", applied, "```", ""]
    lines += [
        "| scenario | target | req/s before | req/s after | change | p99 before | p99 after | errors before | errors after |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    scens = sorted(os.listdir(args.before), key=lambda sc: (SCENARIO_ORDER.index(sc) if sc in SCENARIO_ORDER else 99, sc))
    for scen in scens:
        bdir, adir = os.path.join(args.before, scen), os.path.join(args.after, scen)
        if not os.path.exists(os.path.join(bdir, "report.json")):
            continue
        before = target_stats(load_report(bdir))
        after = target_stats(load_report(adir)) if os.path.exists(os.path.join(adir, "report.json")) else {}
        for t, b in before.items():
            a = after.get(t, {})
            lines.append(
                f"| {scen} | {t} | {fmt_num(b['rps'])} | {fmt_num(a.get('rps'))} | {_pct(b['rps'], a.get('rps'))} "
                f"| {fmt_us(b['p99_us'])} | {fmt_us(a.get('p99_us'))} | {b['errors']} | {a.get('errors', '–')} |"
            )
    print("\n".join(lines))
    return 0


# ---------------------------------------------------------------------------- scaling

SCENARIO_ORDER = ["small", "pipelined", "medium", "large", "connect", "latency-50", "latency-80", "hello"]
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]


def _nice_max(v):
    if v <= 0:
        return 1
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * exp:
            return m * exp
    return 10 * exp


def scaling_svg(panels, width=900, height=380):
    """panels: [(title, {target: [(workers, rps), ...]})] → an SVG document (stdlib only)."""
    pw = width / len(panels)
    ml, mr, mt, mb = 70, 20, 40, 50
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    targets = sorted({t for _, series in panels for t in series})
    colors = {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(targets)}
    for pi, (title, series) in enumerate(panels):
        x0 = pi * pw + ml
        x1 = (pi + 1) * pw - mr
        y0, y1 = height - mb, mt
        xs = sorted({w for pts in series.values() for w, _ in pts}) or [1]
        ymax = _nice_max(max([v for pts in series.values() for _, v in pts if v] or [1]))
        xmin, xmax = min(xs), max(xs)

        def sx(w):
            return (x0 + x1) / 2 if xmax == xmin else x0 + (w - xmin) / (xmax - xmin) * (x1 - x0)

        def sy(v):
            return y0 - v / ymax * (y0 - y1)

        out.append(f'<text x="{(x0 + x1) / 2:.1f}" y="22" text-anchor="middle" font-size="14">{html.escape(title)}</text>')
        out.append(f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="black"/>')
        out.append(f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="black"/>')
        for i in range(6):
            v = ymax * i / 5
            y = sy(v)
            out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#ddd"/>')
            out.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{v:,.0f}</text>')
        for w in xs:
            out.append(f'<text x="{sx(w):.1f}" y="{y0 + 18}" text-anchor="middle">{w}</text>')
        out.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{height - 12}" text-anchor="middle">server cores (workers)</text>')
        out.append(
            f'<text x="{x0 - 55}" y="{(y0 + y1) / 2:.1f}" text-anchor="middle" '
            f'transform="rotate(-90 {x0 - 55} {(y0 + y1) / 2:.1f})">req/s</text>'
        )
        for t in targets:
            pts = sorted(p for p in series.get(t, []) if p[1] is not None)
            if not pts:
                continue
            if len(pts) > 1:
                # Linear scaling from the smallest worker count, for reference.
                w0, v0 = pts[0]
                ideal = " ".join(f"{sx(w):.1f},{sy(min(v0 * w / w0, ymax)):.1f}" for w, _ in pts)
                out.append(
                    f'<polyline points="{ideal}" fill="none" stroke="{colors[t]}" '
                    f'stroke-width="1" stroke-dasharray="4 4" opacity="0.6"/>'
                )
            path = " ".join(f"{sx(w):.1f},{sy(v):.1f}" for w, v in pts)
            out.append(f'<polyline points="{path}" fill="none" stroke="{colors[t]}" stroke-width="2"/>')
            for w, v in pts:
                out.append(f'<circle cx="{sx(w):.1f}" cy="{sy(v):.1f}" r="4" fill="{colors[t]}"/>')
        for i, t in enumerate(targets):
            ly = y1 + 4 + i * 16
            out.append(f'<rect x="{x0 + 10}" y="{ly}" width="12" height="12" fill="{colors[t]}"/>')
            out.append(f'<text x="{x0 + 28}" y="{ly + 10}">{html.escape(t)}</text>')
        ly = y1 + 4 + len(targets) * 16
        out.append(f'<line x1="{x0 + 10}" y1="{ly + 6}" x2="{x0 + 22}" y2="{ly + 6}" stroke="gray" stroke-dasharray="4 4"/>')
        out.append(f'<text x="{x0 + 28}" y="{ly + 10}" fill="gray">linear from the fewest workers</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def cmd_scaling(args):
    data = {}  # scenario -> target -> [(workers, stats)]
    for d in sorted(os.listdir(args.dir)):
        m = re.fullmatch(r"w(\d+)", d)
        if not m:
            continue
        w = int(m.group(1))
        for scen in sorted(os.listdir(os.path.join(args.dir, d))):
            sdir = os.path.join(args.dir, d, scen)
            if not os.path.exists(os.path.join(sdir, "report.json")):
                continue
            for t, st in target_stats(load_report(sdir)).items():
                data.setdefault(scen, {}).setdefault(t, []).append((w, st))
    if not data:
        print(f"scaling: no w*/<scenario>/report.json under {args.dir}", file=sys.stderr)
        return 1
    order = sorted(data, key=lambda sc: (SCENARIO_ORDER.index(sc) if sc in SCENARIO_ORDER else 99, sc))
    panels = [
        (f"{scen}: req/s against cores", {t: [(w, st["rps"]) for w, st in pts] for t, pts in data[scen].items()})
        for scen in order
    ]
    with open(os.path.join(args.dir, "scaling.svg"), "w", encoding="utf-8") as f:
        f.write(scaling_svg(panels))
    lines = [
        "# Scaling: req/s against server cores",
        "",
        "Generated by `scripts/benchtool.py scaling` from `w<N>/<scenario>/report.json` "
        "(N workers pinned to N cores, the generator on the remaining cores).",
        "",
        "![req/s against cores](scaling.svg)",
        "",
        "| scenario | target | workers | req/s | rounds' range | MB/s | CPU µs/req | p99 | req/s per worker |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for scen in order:
        for t in sorted(data[scen]):
            for w, st in sorted(data[scen][t], key=lambda p: p[0]):
                per = st["rps"] / w if st["rps"] else None
                lines.append(
                    f"| {scen} | {t} | {w} | {fmt_rps(st)} | {fmt_spread(st)} | "
                    f"{fmt_mbps(st['bytes_per_s'])} | {fmt_num(st['cpu_us'], 1)} | {fmt_us(st['p99_us'])} | {fmt_num(per)} |"
                )
    with open(os.path.join(args.dir, "README.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


# ---------------------------------------------------------------------------- headline

HEADLINE_START = "<!-- benchtool:headline:start -->"
HEADLINE_END = "<!-- benchtool:headline:end -->"


def read_env(run_dir):
    """The `key: value` lines at the top of env.txt."""
    env = {}
    path = os.path.join(run_dir, "env.txt")
    if not os.path.exists(path):
        return env
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("## "):
                break
            m = re.match(r"([a-z][a-z0-9 ]*):\s+(.*)", line.rstrip("\n"))
            if m:
                env[m.group(1).strip()] = m.group(2)
    return env


def run_dirs(results):
    """Run directories (those with an env.txt), oldest first by name (names start with the date)."""
    runs = []
    for d in sorted(os.listdir(results)):
        p = os.path.join(results, d)
        if os.path.isdir(p) and os.path.exists(os.path.join(p, "env.txt")):
            runs.append(d)
    return runs


def scenario_rows(run_dir):
    """[(rel, targets, title)] for the run's top-level scenarios (not tuning/ or scaling/)."""
    rows = [r for r in read_manifest(run_dir) if "/" not in r[0]]
    return [r for r in rows if os.path.exists(os.path.join(run_dir, r[0], "report.json"))]


def headline_table(run_dir, link_prefix):
    lines = [
        "| scenario | target | req/s | rounds' range | MB/s | CPU µs/req | p99 | req/s vs nginx | CPU/req vs nginx |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rel, targets, _title in scenario_rows(run_dir):
        stats = target_stats(load_report(os.path.join(run_dir, rel)))
        base = stats.get("nginx", {})
        first = True
        for t in targets or list(stats):
            st = stats.get(t)
            if st is None:
                continue
            scen = f"[{rel}]({link_prefix}{rel}/report.md)" if first else ""
            first = False
            lines.append(
                f"| {scen} | {t} | {fmt_rps(st)} | "
                f"{fmt_spread(st)} | {fmt_mbps(st['bytes_per_s'])} | "
                f"{fmt_num(st['cpu_us'], 1)} | {fmt_us(st['p99_us'])} | "
                f"{fmt_ratio(st['rps'], base.get('rps'))} | {fmt_ratio(st['cpu_us'], base.get('cpu_us'))} |"
            )
    return lines


def env_summary(env):
    keys = ["cpu", "cores online", "kernel", "workers", "server cpus", "loadgen cpus", "rounds", "duration", "connections", "git commit", "build profile"]
    return [f"- {k}: {env[k]}" for k in keys if k in env]


def cmd_headline(args):
    results = args.results
    runs = run_dirs(results)
    with_scenarios = [r for r in runs if scenario_rows(os.path.join(results, r))]
    newest = max(with_scenarios, key=lambda r: (r[:10], os.path.getmtime(os.path.join(results, r, "env.txt")))) if with_scenarios else None
    lines = [
        "# Benchmark results",
        "",
        "Generated by `scripts/benchtool.py headline` (run by `scripts/bench.sh`) from the "
        "`report.json` files committed beside it; no figure here is typed by hand. Each run "
        "directory holds one directory per scenario with loadgen's reports (`report.md`, "
        "`report.html` with plots, `report.json` with every round's raw result and base64 "
        "HdrHistograms, `NAME.hgrm` percentile distributions, `loadgen.log`) and `env.txt` "
        "(machine, kernel settings, limits, tool versions, commit, the exact commands run).",
        "",
        "Reproduce on your machine with `scripts/bench.sh` (see `scripts/bench.sh --help`; "
        "`--compare-tuning` and `--scaling 1,2,4,8` add the kernel-tuning and scaling runs).",
        "",
    ]
    if newest:
        env = read_env(os.path.join(results, newest))
        lines += [f"## Headline: [{newest}]({newest}/)", ""]
        lines += env_summary(env)
        lines += [
            "",
            "Each figure is the median over the interleaved rounds (req/s shows the rounds' range "
            "beside it). CPU µs/req is the server's own CPU time per response (its threads, "
            "worker processes and reaped children, from /proc); p99 is the response latency "
            "(measured from the intended send time in the open-loop latency runs). Ratios divide "
            "by nginx in the same scenario: above 1× is more req/s, below 1× is less CPU. "
            "⚠ marks a run whose generator was saturated, so the server may not have been the limit.",
            "",
        ]
        lines += headline_table(os.path.join(results, newest), f"{newest}/")
        lines.append("")
    else:
        lines += ["No run with scenario reports yet: run `scripts/bench.sh`.", ""]
    lines += ["## Runs", "", "| run | host | CPU | cores | kernel | commit | reports |", "|---|---|---|---|---|---|---|"]
    for r in reversed(runs):
        rd = os.path.join(results, r)
        env = read_env(rd)
        links = [f"[{rel}]({r}/{rel}/report.md)" for rel, _t, _ in scenario_rows(rd)]
        if os.path.exists(os.path.join(rd, "tuning", "README.md")):
            links.append(f"[tuning]({r}/tuning/README.md)")
        if os.path.exists(os.path.join(rd, "scaling", "README.md")):
            links.append(f"[scaling]({r}/scaling/README.md)")
        commit = env.get("git commit", "?").split(" ")[0][:10]
        lines.append(
            f"| [{r}]({r}/) | {env.get('host', '?')} | {env.get('cpu', '?')} | {env.get('cores online', '?')} | "
            f"{env.get('kernel', '?')} | {commit} | {' · '.join(links) or '–'} |"
        )
    text = "\n".join(lines) + "\n"
    with open(os.path.join(results, "README.md"), "w", encoding="utf-8") as f:
        f.write(text)
    # The project README may carry the headline between markers; refresh it there too.
    if args.readme and newest and os.path.exists(args.readme):
        with open(args.readme, encoding="utf-8") as f:
            readme = f.read()
        if HEADLINE_START in readme and HEADLINE_END in readme:
            rel_results = os.path.relpath(results, os.path.dirname(os.path.abspath(args.readme)))
            block = [HEADLINE_START, "", f"From [{rel_results}/{newest}]({rel_results}/{newest}/) "
                     f"(full table and every run: [{rel_results}/README.md]({rel_results}/README.md)):", ""]
            block += headline_table(os.path.join(results, newest), f"{rel_results}/{newest}/")
            block += ["", HEADLINE_END]
            head, rest = readme.split(HEADLINE_START, 1)
            _, tail = rest.split(HEADLINE_END, 1)
            with open(args.readme, "w", encoding="utf-8") as f:
                f.write(head + "\n".join(block) + tail)
    print(f"headline: wrote {os.path.join(results, 'README.md')}" + (f" (newest run {newest})" if newest else ""))
    return 0


# ---------------------------------------------------------------------------- main


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("mkdata", help="create the served root")
    s.add_argument("dir")
    s.set_defaults(func=cmd_mkdata)
    s = sub.add_parser("max-rps", help="closed-loop req/s of the slowest of TARGETS")
    s.add_argument("dir")
    s.add_argument("targets", nargs="*")
    s.set_defaults(func=cmd_max_rps)
    s = sub.add_parser("check", help="smoke check of a bench.sh output directory")
    s.add_argument("dir")
    s.set_defaults(func=cmd_check)
    s = sub.add_parser("tuning-diff", help="markdown table: before/after tune-kernel.sh apply")
    s.add_argument("before")
    s.add_argument("after")
    s.add_argument("--applied", help="file with tune-kernel.sh apply's output")
    s.set_defaults(func=cmd_tuning_diff)
    s = sub.add_parser("scaling", help="scaling table and SVG plot from DIR/w<N>/<scenario>/")
    s.add_argument("dir")
    s.set_defaults(func=cmd_scaling)
    s = sub.add_parser("headline", help="regenerate RESULTS/README.md")
    s.add_argument("results")
    s.add_argument("--readme", help="also refresh the block between headline markers in this file")
    s.set_defaults(func=cmd_headline)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
