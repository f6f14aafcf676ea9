#!/usr/bin/env python3
"""Benchmark helpers for scripts/bench.sh (python3 stdlib only).

Subcommands:
  mkdata DIR                 create the served root (small/medium/large.bin, hello.txt)
  sites-config OUT --www DIR --sites-dir DIR
                             write the sites scenario's config (10 sites x 20 routes)
  sites DIR                  summary.md of the sites scenario: CPU/req ratio per round, verdict
  cache DIR --kind K         summary.md of the cache-hit (K: hit) or compress scenario (issue 14)
  proxy DIR --kind K         summary.md of a proxy scenario (K: small, large, gunicorn): issue
                             12's ratios per round and verdicts
  max-rps DIR TARGET...      closed-loop req/s of the slowest TARGET in DIR/report.json
  check DIR SCENARIO=T1,T2.. smoke check: report files exist, each target answered
  tuning-diff BEFORE AFTER   markdown table of before/after `tune-kernel.sh apply`
  scaling DIR                table + SVG of req/s against server cores from DIR/w*/
  headline RESULTS           regenerate RESULTS/README.md (index + headline table)
  wrk-check DIR              summary.md of scripts/wrk-check.sh (wrk/loadgen runs, server CPU)
  soak DIR                   summary.md of scripts/soak.sh (RSS growth, fd leak check)

Every figure comes from loadgen's report.json files (wrk-check and soak: from the raw files
those scripts record); nothing here is typed by hand.
"""

import argparse
import csv
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
    # The slow clients' response in the proxy-gunicorn scenario.
    "1mib.bin": 1024 * 1024,
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


# The compress scenario's page (issue 14): 100 KiB of HTML.
PAGE_HTML_SIZE = 100 * 1024
PAGE_WORDS = ("the server cache answers request response worker origin fresh stale header body "
              "proxy route compress stream client table value index content latency bytes").split()


def page_html(size=PAGE_HTML_SIZE):
    """Deterministic HTML of `size` bytes: paragraphs of words chosen by SHA-256, so it compresses
    like text (neither random bytes nor one repeated line)."""
    head = b"<!doctype html>\n<html><head><title>ringd cache bench</title></head><body>\n"
    tail = b"</body></html>\n"
    out = bytearray(head)
    counter = 0
    while len(out) < size - len(tail):
        h = hashlib.sha256(b"page" + counter.to_bytes(8, "little")).digest()
        words = " ".join(PAGE_WORDS[b % len(PAGE_WORDS)] for b in h[:24])
        out += f"<p class=\"p{h[24] % 7}\">{words}.</p>\n".encode()
        counter += 1
    out = out[:size - len(tail)] + tail
    return bytes(out)


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
    files["page.html"] = page_html()
    changed = [n for n, data in files.items() if write_if_changed(os.path.join(args.dir, n), data)]
    if changed:
        print(f"mkdata: wrote {', '.join(changed)} in {args.dir}")
    return 0


# ---------------------------------------------------------------------------- sites-config
#
# bench.sh's `sites` scenario (issue 11's speed bar): ringd with a config of many sites and
# routes against the same ringd flag-only, on the same 1000-byte file. The config is written
# here so that the scenario, its test and `ringd check` all see the same one.

SITES_DOMAIN = "bench.test"
# The file the benchmark request asks for, from the served root (mkdata's small.bin).
SITES_PATH = "/small.bin"
# Set by the matched (last) route only: bench.sh checks the response carries it, so a config
# that answers the request from another route is caught before anything is measured.
SITES_MATCH_HEADER = ("Cache-Control", "public, max-age=300")
# Issue 11: the config target costs at most this many times the flag-only server CPU per request.
SITES_BAR = 1.10


def _q(s):
    """A TOML basic string (JSON's escapes are TOML's for the ASCII used here)."""
    return json.dumps(s)


def _lit(s):
    """A TOML literal string (regexes: no escaping)."""
    if "'" in s or "\n" in s:
        raise ValueError(f"not a TOML literal string: {s!r}")
    return f"'{s}'"


def sites_host(i):
    """The first host name of site i (1-based)."""
    return f"site{i:02d}.{SITES_DOMAIN}"


def site_routes(i, root):
    """The routes of site i before its last one: a mix of kinds, none matching SITES_PATH.

    Each entry is (path or None, regex or None, [`key = value` lines]).
    """
    h = sites_host(i)
    return [
        ("/old/*", None, ['redirect = { to = "/new/{*}", status = 301 }']),
        ("/assets/*", None, [f'headers = {{ set = {{ "Cache-Control" = "public, max-age=31536000, immutable" }}, remove = ["X-Powered-By"] }}']),
        (None, r"^/blog/(\d{4})/(\d{2})/([a-z0-9-]+)$", ['rewrite = "/blog/{1}-{2}-{3}.html"']),
        ("/healthz", None, ['methods = ["GET", "HEAD"]', 'respond = { status = 200, body = "ok\\n", headers = { "Content-Type" = "text/plain" } }']),
        ("/api/*", None, [f'headers = {{ set = {{ "Cache-Control" = "no-store", "X-Site" = {_q(h)} }} }}']),
        ("/api/v1/status", None, ['respond = { status = 200, body = "{\\"status\\":\\"ok\\"}\\n", headers = { "Content-Type" = "application/json" } }']),
        ("/app/*", None, ['try_files = ["{path}", "{path}/index.html", "/app/index.html"]']),
        ("/login", None, [f'redirect = {{ to = {_q("https://" + h + "/login")}, status = 308 }}']),
        (None, r"^/u/(?P<id>[0-9]+)$", ['redirect = { to = "/users/{id}", status = 302 }']),
        ("/teapot", None, ['methods = ["GET", "HEAD"]', 'respond = { status = 418, body = "short and stout\\n" }']),
        ("/admin/*", None, ['respond = { status = 403, body = "forbidden\\n" }']),
        ("/docs/*", None, ['headers = { set = { "X-Frame-Options" = "DENY" } }']),
        ("/downloads/*", None, [f"root = {_q(root)}", "browse = true"]),
        ("/legacy/*", None, ['redirect = { to = "/{*}", status = 308 }']),
        ("/favicon.ico", None, ['respond = { status = 204 }']),
        ("/.well-known/security.txt", None, [f'respond = {{ body = {_q("Contact: mailto:security@" + h + chr(10))}, headers = {{ "Content-Type" = "text/plain" }} }}']),
        ("/images/*", None, ['headers = { set = { "Cache-Control" = "public, max-age=86400" } }']),
        ("/search", None, ['methods = ["GET"]', 'rewrite = "/search.html?{query}"']),
        ("/static/*", None, ['headers = { set = { "Cache-Control" = "public, max-age=3600" } }', f"root = {_q(root)}"]),
    ]


def sites_config(www, sites_dir, n_sites=10, n_routes=20):
    """(TOML text, {site root: {file: bytes}}) for n_sites sites of n_routes routes each.

    Sites 1..n-1 serve their own folder under sites_dir; the last site serves `www` (the root
    the flag-only ringd serves), and its last route, `/*` with a headers modifier and `root`
    as its handler, is the only one of its routes that matches SITES_PATH.
    """
    if n_sites < 1:
        raise ValueError("at least one site")
    pool = len(site_routes(1, "/"))
    if not 1 <= n_routes <= pool + 1:
        raise ValueError(f"routes per site: 1 to {pool + 1}")
    lines = [
        f"# {n_sites} sites x {n_routes} routes, written by scripts/benchtool.py sites-config for",
        "# bench.sh's `sites` scenario. The benchmark request (GET "
        + SITES_PATH + ", Host: " + sites_host(n_sites) + ")",
        "# is matched by the last site's last route. Top-level settings come from flags.",
    ]
    files = {}
    for i in range(1, n_sites + 1):
        last = i == n_sites
        root = www if last else os.path.join(sites_dir, f"site{i:02d}")
        if not last:
            files[root] = {
                "index.html": f"<h1>site {i}</h1>\n".encode(),
                "404.html": f"<p>site {i}: not found</p>\n".encode(),
                "app/index.html": f"<p>site {i}: app</p>\n".encode(),
            }
        h = sites_host(i)
        lines += ["", "[[sites]]", f"hosts = [{_q(h)}, {_q('www.' + h)}, {_q('*.cdn.' + h)}]", f"root = {_q(root)}"]
        if not last:
            lines.append('errors = { 404 = "/404.html" }')
        if i % 3 == 0:
            lines.append('index = ["index.html", "index.htm"]')
        routes = site_routes(i, root)[: n_routes - 1]
        routes.append(("/*", None, [f"headers = {{ set = {{ {_q(SITES_MATCH_HEADER[0])} = {_q(SITES_MATCH_HEADER[1])}, "
                                    '"X-Content-Type-Options" = "nosniff" } }', f"root = {_q(root)}"]))
        for path, rx, body in routes:
            lines += ["", "  [[sites.routes]]"]
            lines.append(f"  path = {_q(path)}" if path is not None else f"  regex = {_lit(rx)}")
            lines += ["  " + b for b in body]
    return "\n".join(lines) + "\n", files


def route_matches(path_or_regex, is_regex, req_path):
    """Whether a route pattern matches a request path, as ringd's router does (prefix `/x/*`
    by bytes, exact otherwise, regexes searched unanchored)."""
    if is_regex:
        return re.search(path_or_regex, req_path) is not None
    if path_or_regex.endswith("*"):
        return req_path.startswith(path_or_regex[:-1])
    return req_path == path_or_regex


def cmd_sites_config(args):
    www = os.path.abspath(args.www)
    sites_dir = os.path.abspath(args.sites_dir)
    try:
        text, files = sites_config(www, sites_dir, args.sites, args.routes)
    except ValueError as e:
        print(f"sites-config: {e}", file=sys.stderr)
        return 2
    for root, content in files.items():
        os.makedirs(root, exist_ok=True)
        for name, data in content.items():
            os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
            write_if_changed(os.path.join(root, name), data)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_if_changed(args.out, text.encode())
    # What bench.sh sends and checks: the last site's host, and the header its last route sets.
    print(sites_host(args.sites))
    print(f"{SITES_MATCH_HEADER[0]}: {SITES_MATCH_HEADER[1]}")
    return 0


def _run_cpu(run):
    return _num(run.get("server_cpu_us_per_request"))


def _run_machine_cpu(run):
    return _num((run.get("machine_cpu") or {}).get("us_per_request"))


def sites_summary(scenario_dir, flags="ringd-flags", config="ringd-config", bar=SITES_BAR):
    """(markdown, verdict ok or None, ratio of the medians) for the sites scenario.

    The verdict divides the config target's median server CPU µs/req by the flag-only one's
    (the medians loadgen compare reports); the rounds are interleaved, so round i of one ran
    beside round i of the other, and each round's own ratio is listed to show the spread.
    """
    report = load_report(scenario_dir)
    by_name = {t.get("name"): t for t in report.get("targets", [])}
    if flags not in by_name or config not in by_name:
        raise ValueError(f"{scenario_dir}/report.json lacks {flags} or {config}")
    stats = target_stats(report)
    f_st, c_st = stats[flags], stats[config]
    ratio = _div(c_st["cpu_us"], f_st["cpu_us"])
    ok = None if ratio is None else ratio <= bar
    f_runs = [r for r in by_name[flags].get("runs", []) if isinstance(r, dict)]
    c_runs = [r for r in by_name[config].get("runs", []) if isinstance(r, dict)]
    rows = []
    for i, (fr, cr) in enumerate(zip(f_runs, c_runs), 1):
        rows.append((i, fr, cr, _div(_run_cpu(cr), _run_cpu(fr)), _div(_run_machine_cpu(cr), _run_machine_cpu(fr))))
    per_round = sorted(r[3] for r in rows if r[3] is not None)
    meta = report.get("meta") or {}
    lines = [
        "# sites: 10 sites × 20 routes against flag-only (issue 11's speed bar)",
        "",
        "Generated by `scripts/benchtool.py sites` from `report.json` (one `loadgen compare` run, "
        "interleaved rounds); nothing here is typed by hand. The config is "
        "[ringd-sites.toml](ringd-sites.toml); machine and commands: `env.txt` of the run.",
        "",
        f"`{flags}` serves the root from flags alone; `{config}` loads the config with `--config` and "
        "answers through the last site's last route (Host of the last site, `/*` with a headers "
        "modifier and `root`). Same binary, backend, workers and CPUs; the same request bytes go to both.",
        "",
        "## Verdict",
        "",
        _ratio_check("server CPU per request", c_st["cpu_us"], f_st["cpu_us"], bar, False, config, flags,
                     lambda x: _fmt2(x) + " µs")[1],
    ]
    if per_round:
        lines.append(f"- per-round ratios: {', '.join(f'{x:.3f}×' for x in per_round)} "
                     f"(median {_median(per_round):.3f}×, spread {per_round[-1] - per_round[0]:.3f})")
    lines += [
        "",
        "## Rounds",
        "",
        f"| round | {flags} req/s | {flags} CPU µs/req | {config} req/s | {config} CPU µs/req | CPU/req ratio | machine CPU/req ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, fr, cr, r_cpu, r_mach in rows:
        lines.append(
            f"| {i} | {fmt_num(_num(fr.get('rps')))} | {_fmt3(_run_cpu(fr))} | {fmt_num(_num(cr.get('rps')))} | "
            f"{_fmt3(_run_cpu(cr))} | {'–' if r_cpu is None else f'{r_cpu:.3f}×'} | {'–' if r_mach is None else f'{r_mach:.3f}×'} |"
        )
    lines += [
        f"| median | {fmt_num(f_st['rps'])} | {_fmt3(f_st['cpu_us'])} | {fmt_num(c_st['rps'])} | {_fmt3(c_st['cpu_us'])} | "
        f"{'–' if ratio is None else f'{ratio:.3f}×'} | {fmt_ratio(c_st['machine_cpu_us'], f_st['machine_cpu_us'])} |",
        "",
    ]
    warn = [t for t, st in ((flags, f_st), (config, c_st)) if st["saturated"]]
    if warn:
        lines += [f"⚠ the generator was saturated in some round against {', '.join(warn)}: req/s may be the "
                  "generator's limit, but CPU µs/req is the server's own time per response either way.", ""]
    keys = [k for k in ("host", "workers", "server_cpus", "loadgen_cpus", "commit", "profile") if k in meta]
    if keys:
        lines += ["Settings: " + ", ".join(f"{k} {meta[k]}" for k in keys) + ".", ""]
    return "\n".join(lines), ok, ratio


def cmd_sites(args):
    try:
        text, _ok, _ratio = sites_summary(args.dir, bar=args.bar)
    except (OSError, ValueError) as e:
        print(f"sites: {e}", file=sys.stderr)
        return 1
    with open(os.path.join(args.dir, "summary.md"), "w", encoding="utf-8") as f:
        f.write(text)
    print(text, end="")
    return 0


# ---------------------------------------------------------------------------- proxy (issue 12)
#
# bench.sh's proxy-small, proxy-large and proxy-gunicorn-{sync,gthread}: one `loadgen compare`
# run with the proxies as targets (ringd, nginx, haproxy, caddy), each on one core in front of
# the same upstream; the server CPU loadgen records is the proxy process's own. proxy-gunicorn's
# directory also holds slow-ringd/ and slow-nginx/: the same load against one proxy while a
# second loadgen's slow clients read 1 MiB responses through it.

PROXY_BARS = {
    "small_cpu_vs_nginx": 0.5,     # ringd's proxy CPU/req at most 0.5x nginx's
    "small_cpu_vs_haproxy": 1.0,   # ... and at most HAProxy's
    "small_rps": 1.3,              # req/s at least 1.3x nginx's where ringd is the limit
    "large_bps": 1.0,              # bytes/s at least nginx's
    "large_cpu_per_byte": 1.0,     # at no more proxy CPU per byte
    "gunicorn_rps": 1.0,           # req/s at least nginx's
    "slow_p99": 2.0,               # p99 with the slow clients at most 2x without them
}
PROXY_TARGETS = ("ringd", "nginx", "haproxy", "caddy", "relay", "relay-uring")
# A proxy that used this share of its one core was the limit of its run.
PROXY_LIMIT_UTIL = 0.90


def _runs(report, name):
    for t in report.get("targets", []):
        if t.get("name") == name:
            return [r for r in t.get("runs", []) if isinstance(r, dict)]
    return []


def _run_p99(run):
    return _num((run.get("latency_us") or {}).get("p99"))


def _run_util(run):
    """The proxy process's share of one core over the run (server CPU time / duration)."""
    u = _num(run.get("server_cpu_utilization"))
    if u is None:
        cpu, rps = _run_cpu(run), _num(run.get("rps"))
        u = None if cpu is None or rps is None else cpu * rps / 1e6
    return u


def _run_bytes_per_response(run):
    bps, rps = _num(run.get("bytes_per_s")), _num(run.get("rps"))
    return _div(bps, rps)


def _run_cpu_per_mib(run):
    """Proxy CPU µs per MiB received by the client (body and heads)."""
    per = _run_bytes_per_response(run)
    cpu = _run_cpu(run)
    return None if cpu is None or not per else cpu / per * 1048576


def _run_busiest_other_core(run, proxy_cpu):
    """The busiest core other than the proxy's (the upstream's and generator's), 0..1."""
    cores = ((run.get("machine_cpu") or {}).get("per_core")) or []
    vals = [_num(c.get("busy")) for c in cores if str(c.get("cpu")) != str(proxy_cpu)]
    vals = [v for v in vals if v is not None]
    return max(vals) if vals else None


def _per_round(a_runs, b_runs, get):
    """[(round, value a, value b, a/b)] for interleaved rounds i of a and b."""
    out = []
    for i, (ra, rb) in enumerate(zip(a_runs, b_runs), 1):
        va, vb = get(ra), get(rb)
        out.append((i, va, vb, _div(va, vb)))
    return out


def _ratio_line(label, per_round, bar, higher, unit_fmt, num="ringd", den="nginx", reported=False):
    """A verdict line on the median of the per-round ratios, with their spread (bar None: a
    reported figure with no bar)."""
    ratios = sorted(r[3] for r in per_round if r[3] is not None)
    med = _median(ratios)
    ok = None if med is None or bar is None else (med >= bar if higher else med <= bar)
    sign = "≥" if higher else "≤"
    a = _median(sorted(r[1] for r in per_round if r[1] is not None))
    b = _median(sorted(r[2] for r in per_round if r[2] is not None))
    spread = ""
    if ratios:
        spread = (f"; rounds {', '.join(f'{x:.2f}×' for x in (r[3] for r in per_round) if x is not None)}"
                  f" (spread {ratios[-1] - ratios[0]:.2f})")
    bar_text = "" if bar is None else f" (bar {sign} {bar:.2f}×)"
    text = (f"{label}: {num} {unit_fmt(a)} vs {den} {unit_fmt(b)}: median of the rounds' ratios "
            f"{'–' if med is None else f'{med:.2f}×'}{bar_text}{spread}")
    if bar is None:
        return None, f"- reported: {text}"
    if reported:
        return ok, f"- reported ({'within' if ok else 'outside' if ok is not None else 'n/a'} the bar): {text}"
    return ok, _verdict(ok, text)


def _fmt_util(x):
    return "–" if x is None else f"{x * 100:.0f}%"


# Connections opened per 1000 responses past which a proxy run is flagged as churning upstream
# connections (a few opens in a 10 s run are the pool warming up).
PROXY_CHURN_PER_1K = 1.0


def _run_tcp(r, key):
    """A run's /proc/net/snmp figure (loadgen's `tcp`), None in runs from before it was recorded."""
    return _num((r.get("tcp") or {}).get(key))


def proxy_summary(scenario_dir, kind, bars=PROXY_BARS):
    """(markdown, {check: ok or None}) for one proxy scenario directory."""
    report = load_report(scenario_dir)
    names = [t.get("name") for t in report.get("targets", [])]
    if "ringd" not in names or "nginx" not in names:
        raise ValueError(f"{scenario_dir}/report.json lacks ringd or nginx")
    meta = report.get("meta") or {}
    proxy_cpu = meta.get("server_cpus", "0")
    runs = {n: _runs(report, n) for n in names}
    title = report.get("title") or os.path.basename(scenario_dir)
    lines = [
        f"# {os.path.basename(os.path.normpath(scenario_dir))}: issue 12's bars",
        "",
        f"{title}.",
        "",
        "Generated by `scripts/benchtool.py proxy` from `report.json` (one `loadgen compare` run, "
        "interleaved rounds; round i of every target ran back to back) and, for the slow clients, "
        "`slow-*/report.json`; nothing here is typed by hand. Proxy CPU is the proxy process's own "
        "(user+system from /proc, its threads and workers), never the upstream's; machine and "
        "commands: `env.txt` of the run. Each verdict is on the median of the per-round ratios.",
        "",
        f"Load average at the start: {meta.get('loadavg', 'not recorded')} (2 shared cores: other work "
        "on the machine shows as noise between rounds).",
        "",
        "## Verdicts",
        "",
    ]
    checks = {}
    r_runs, n_runs = runs["ringd"], runs["nginx"]
    us = lambda x: "–" if x is None else f"{x:,.2f} µs"  # noqa: E731
    rps_fmt = lambda x: "–" if x is None else f"{x:,.0f} req/s"  # noqa: E731
    if kind == "small":
        ok, line = _ratio_line("proxy CPU per request against nginx", _per_round(r_runs, n_runs, _run_cpu),
                               bars["small_cpu_vs_nginx"], False, us)
        checks["cpu_vs_nginx"] = ok
        lines.append(line)
        if runs.get("haproxy"):
            ok, line = _ratio_line("proxy CPU per request against HAProxy",
                                   _per_round(r_runs, runs["haproxy"], _run_cpu),
                                   bars["small_cpu_vs_haproxy"], False, us, den="haproxy")
            checks["cpu_vs_haproxy"] = ok
            lines.append(line)
        # req/s: only rounds in which ringd's proxy was the limit (it used PROXY_LIMIT_UTIL of its
        # core); in the others the upstream's and generator's core set the pace for both.
        pr = _per_round(r_runs, n_runs, lambda r: _num(r.get("rps")))
        limited = [row for row, rr in zip(pr, r_runs) if (_run_util(rr) or 0) >= PROXY_LIMIT_UTIL]
        if limited:
            ok, line = _ratio_line(f"req/s against nginx in the {len(limited)} of {len(pr)} rounds where "
                                   f"ringd was the limit (≥ {PROXY_LIMIT_UTIL:.0%} of its core)",
                                   limited, bars["small_rps"], True, rps_fmt)
        else:
            ok = None
            utils = ", ".join(_fmt_util(_run_util(r)) for r in r_runs)
            others = ", ".join(_fmt_util(_run_busiest_other_core(r, proxy_cpu)) for r in r_runs)
            line = _verdict(None, f"req/s against nginx (bar ≥ {bars['small_rps']:.2f}×): ringd's proxy was "
                            f"not the limit in any round (it used {utils} of its core; the upstream's and "
                            f"generator's core was {others} busy), so the bar does not apply; the ratios "
                            "are in the table below")
        checks["rps"] = ok
        lines.append(line)
        for relay in ("relay", "relay-uring"):
            if not runs.get(relay):
                continue
            # A TCP relay (loadgen's relay binary; -uring: on io_uring): no HTTP, one upstream
            # connection per client. What the kernel alone charges a proxy per request.
            _, line = _ratio_line(f"the floor: the TCP relay's CPU per request ({relay}) against nginx's",
                                  _per_round(runs[relay], n_runs, _run_cpu), None, False, us, num=relay)
            lines.append(line)
            _, line = _ratio_line(f"ringd's CPU per request against {relay}'s (what ringd's HTTP work adds to "
                                  "that floor)", _per_round(r_runs, runs[relay], _run_cpu), None, False, us,
                                  den=relay)
            lines.append(line)
    elif kind == "large":
        ok, line = _ratio_line("bytes/s against nginx", _per_round(r_runs, n_runs, lambda r: _num(r.get("bytes_per_s"))),
                               bars["large_bps"], True, lambda x: fmt_mbps(x) + " MB/s")
        checks["bps"] = ok
        lines.append(line)
        ok, line = _ratio_line("proxy CPU per byte against nginx", _per_round(r_runs, n_runs, _run_cpu_per_mib),
                               bars["large_cpu_per_byte"], False, lambda x: "–" if x is None else f"{x:,.0f} µs/MiB")
        checks["cpu_per_byte"] = ok
        lines.append(line)
        if runs.get("ringd-copy"):
            # The same ringd with --proxy-splice-min 0: what splicing changes, round by round.
            c_runs = runs["ringd-copy"]
            _, line = _ratio_line("splice against copy, bytes/s", _per_round(r_runs, c_runs, lambda r: _num(r.get("bytes_per_s"))),
                                  1.0, True, lambda x: fmt_mbps(x) + " MB/s", den="ringd-copy", reported=True)
            lines.append(line)
            _, line = _ratio_line("splice against copy, proxy CPU per byte", _per_round(r_runs, c_runs, _run_cpu_per_mib),
                                  1.0, False, lambda x: "–" if x is None else f"{x:,.0f} µs/MiB",
                                  den="ringd-copy", reported=True)
            lines.append(line)
    elif kind == "gunicorn":
        ok, line = _ratio_line("req/s against nginx", _per_round(r_runs, n_runs, lambda r: _num(r.get("rps"))),
                               bars["gunicorn_rps"], True, rps_fmt)
        checks["rps"] = ok
        lines.append(line)
        for name in ("ringd", "nginx"):
            sdir = os.path.join(scenario_dir, f"slow-{name}")
            if not os.path.exists(os.path.join(sdir, "report.json")):
                lines.append(_verdict(None, f"p99 with slow clients ({name}): no slow-{name}/report.json"))
                if name == "ringd":
                    checks["slow_p99"] = None
                continue
            with_runs = _runs(load_report(sdir), name)
            ok, line = _ratio_line(f"{name}'s p99 with the slow clients against without them",
                                   _per_round(with_runs, runs[name], _run_p99), bars["slow_p99"], False,
                                   fmt_us, num="with", den="without", reported=(name != "ringd"))
            if name == "ringd":
                checks["slow_p99"] = ok
            lines.append(line)
    else:
        raise ValueError(f"unknown proxy scenario kind {kind!r} (small, large, gunicorn)")

    # Every round of every target.
    large = kind == "large"
    lines += [
        "",
        "## Rounds",
        "",
        "Proxy busy: the proxy process's CPU time over the run (1 core = 100%); other core: the busiest "
        "core other than the proxy's (upstream, generator and anything else on the machine). Opens/1k: "
        "connections opened on the machine during the run per 1000 responses, the generator's own "
        "subtracted (a proxy that keeps its upstream connections alive opens none); segs/req: TCP "
        "segments every socket sent per response (/proc/net/snmp).",
        "",
        "| round | target | req/s | " + ("MB/s | CPU µs/MiB | " if large else "")
        + "proxy CPU µs/req | proxy busy | other core | p99 | errors | req/s vs nginx | CPU/req vs nginx | machine CPU µs/req | opens/1k | segs/req |",
        "|---:|---|---:|" + ("---:|---:|" if large else "") + "---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    order = [n for n in PROXY_TARGETS if n in runs] + [n for n in names if n not in PROXY_TARGETS]
    for i in range(max(len(v) for v in runs.values())):
        base = n_runs[i] if i < len(n_runs) else {}
        for n in order:
            if i >= len(runs[n]):
                continue
            r = runs[n][i]
            extra = f"{fmt_mbps(_num(r.get('bytes_per_s')))} | {fmt_num(_run_cpu_per_mib(r))} | " if large else ""
            lines.append(
                f"| {i + 1} | {n} | {fmt_num(_num(r.get('rps')))} | {extra}{_fmt2(_run_cpu(r))} | "
                f"{_fmt_util(_run_util(r))} | {_fmt_util(_run_busiest_other_core(r, proxy_cpu))} | "
                f"{fmt_us(_run_p99(r))} | {fmt_num(_num(r.get('errors_total')))} | "
                f"{fmt_ratio(_num(r.get('rps')), _num(base.get('rps')))} | {fmt_ratio(_run_cpu(r), _run_cpu(base))} | "
                f"{_fmt2(_run_machine_cpu(r))} | {_fmt2(_run_tcp(r, 'other_opens_per_1k'))} | "
                f"{_fmt2(_run_tcp(r, 'segs_per_request'))} |"
            )
    if kind == "gunicorn":
        lines += ["", "## Slow clients", "",
                  "`slow-NAME/`: the same hello load against one proxy while a second loadgen (started first, "
                  "stopped after; its output in `slow-NAME/slow-clients.log`) keeps slow clients reading 1 MiB "
                  "responses through it. p99 without them: the round of the same index above.", "",
                  "| round | proxy | req/s with | p99 without | p99 with | with/without | errors with |",
                  "|---:|---|---:|---:|---:|---:|---:|"]
        for name in ("ringd", "nginx"):
            sdir = os.path.join(scenario_dir, f"slow-{name}")
            if not os.path.exists(os.path.join(sdir, "report.json")):
                continue
            srep = load_report(sdir)
            for i, (rw, ro) in enumerate(zip(_runs(srep, name), runs[name]), 1):
                lines.append(f"| {i} | {name} | {fmt_num(_num(rw.get('rps')))} | {fmt_us(_run_p99(ro))} | "
                             f"{fmt_us(_run_p99(rw))} | {fmt_ratio(_run_p99(rw), _run_p99(ro))} | "
                             f"{fmt_num(_num(rw.get('errors_total')))} |")
            if (srep.get("meta") or {}).get("loadavg"):
                lines.append(f"|  | {name}: load average at its start {srep['meta']['loadavg']} | | | | | |")
        spread = os.path.join(scenario_dir, "upstream-spread.log")
        if os.path.exists(spread):
            with open(spread, encoding="utf-8") as f:
                tail = f.read().split("# summary:", 1)
            if len(tail) == 2:
                rows = [ln for ln in tail[1].splitlines()[1:] if ln.strip()]
                lines += ["", "## Upstream connections per gunicorn worker", "",
                          "Sampled every 2 s by `scripts/upstream-spread.sh` during the rounds above "
                          "(`upstream-spread.log`): each proxy's established connections per gunicorn "
                          "worker, busiest worker first, the distinct splits in time order. Which worker "
                          "accepts a connection is luck; a lopsided split queues most requests behind one "
                          "worker and widens that proxy's latency spread in those rounds.", ""]
                lines += [f"- {ln}" for ln in rows]
    churn = [(n, max(_run_tcp(r, "other_opens_per_1k") or 0 for r in runs[n])) for n in order]
    churn = [(n, v) for n, v in churn if v >= PROXY_CHURN_PER_1K]
    if churn:
        lines += ["", "⚠ opened connections during the measured run: "
                  + ", ".join(f"{n} (up to {v:,.1f} per 1000 responses)" for n, v in churn)
                  + ": upstream keep-alive did not hold for them, and their CPU per request includes TCP "
                  "handshakes the others did not pay (raise the proxies' `keepalive`, PROXY_KEEPALIVE)."]
    sat = [n for n in order if any((r.get("generator_cpu") or {}).get("saturated") for r in runs[n])]
    if sat:
        lines += ["", f"⚠ the generator was saturated in some round against {', '.join(sat)}: req/s there may be "
                  "the generator's limit; CPU µs/req is the proxy's own time per response either way."]
    errs = [n for n in order if any(_num(r.get("errors_total")) for r in runs[n])]
    if errs:
        lines += ["", f"⚠ errors in some round against {', '.join(errs)} (see report.md for the kinds)."]
    keys = [k for k in ("host", "workers", "server_cpus", "loadgen_cpus", "commit", "profile") if k in meta]
    if keys:
        lines += ["", "Settings: " + ", ".join(f"{k} {meta[k]}" for k in keys) + "."]
    lines.append("")
    return "\n".join(lines), checks


# Issue 14's bars for the cache-hit scenario.
CACHE_BARS = {
    "hit_rps_vs_static": 0.9,   # a cached proxied response: req/s >= 0.9x ringd serving the file
    "hit_rps_vs_nginx": 1.3,    # ... >= 1.3x nginx with proxy_cache
    "hit_cpu_vs_nginx": 0.6,    # ... at <= 0.6x nginx's CPU per request
}


def cache_summary(scenario_dir, kind, bars=CACHE_BARS):
    """(markdown, {check: ok or None}) for bench.sh's cache-hit or compress scenario."""
    report = load_report(scenario_dir)
    names = [t.get("name") for t in report.get("targets", [])]
    if "ringd-cache" not in names or "nginx" not in names:
        raise ValueError(f"{scenario_dir}/report.json lacks ringd-cache or nginx")
    meta = report.get("meta") or {}
    runs = {n: _runs(report, n) for n in names}
    title = report.get("title") or os.path.basename(scenario_dir)
    lines = [
        f"# {os.path.basename(os.path.normpath(scenario_dir))}: issue 14",
        "",
        f"{title}.",
        "",
        "Generated by `scripts/benchtool.py cache` from `report.json` (one `loadgen compare` run, "
        "interleaved rounds). CPU is the server process's own (user+system from /proc), never the "
        "origin's. Each verdict is on the median of the per-round ratios.",
        "",
        f"Load average at the start: {meta.get('loadavg', 'not recorded')} (2 shared cores: other work "
        "on the machine shows as noise between rounds).",
        "",
        "## Verdicts",
        "",
    ]
    checks = {}
    c_runs, n_runs = runs["ringd-cache"], runs["nginx"]
    us = lambda x: "–" if x is None else f"{x:,.2f} µs"  # noqa: E731
    rps_fmt = lambda x: "–" if x is None else f"{x:,.0f} req/s"  # noqa: E731
    rps = lambda r: _num(r.get("rps"))  # noqa: E731

    def per_resp(r):
        b, q = _num(r.get("bytes_per_s")), _num(r.get("rps"))
        return b / q if b is not None and q else None

    if kind == "hit":
        if runs.get("ringd-static"):
            ok, line = _ratio_line("req/s against ringd serving the same file statically",
                                   _per_round(c_runs, runs["ringd-static"], rps), bars["hit_rps_vs_static"],
                                   True, rps_fmt, num="ringd-cache", den="ringd-static")
            checks["rps_vs_static"] = ok
            lines.append(line)
        ok, line = _ratio_line("req/s against nginx proxy_cache", _per_round(c_runs, n_runs, rps),
                               bars["hit_rps_vs_nginx"], True, rps_fmt, num="ringd-cache")
        checks["rps_vs_nginx"] = ok
        lines.append(line)
        ok, line = _ratio_line("CPU per request against nginx proxy_cache", _per_round(c_runs, n_runs, _run_cpu),
                               bars["hit_cpu_vs_nginx"], False, us, num="ringd-cache")
        checks["cpu_vs_nginx"] = ok
        lines.append(line)
    elif kind == "compress":
        ok, line = _ratio_line("req/s against nginx (gzip on + proxy_cache)", _per_round(c_runs, n_runs, rps),
                               1.0, True, rps_fmt, num="ringd-cache", reported=True)
        checks["rps"] = ok
        lines.append(line)
        ok, line = _ratio_line("bytes on the wire per response against nginx", _per_round(c_runs, n_runs, per_resp),
                               1.0, False, lambda x: "–" if x is None else f"{x:,.0f} B", num="ringd-cache",
                               reported=True)
        checks["bytes"] = ok
        lines.append(line)
    else:
        raise ValueError(f"unknown cache scenario kind {kind!r} (hit, compress)")
    lines += [
        "",
        "## Rounds",
        "",
        "| round | target | req/s | bytes/response | CPU µs/req | busy | p99 | errors | req/s vs nginx | CPU/req vs nginx |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i in range(max(len(v) for v in runs.values())):
        base = n_runs[i] if i < len(n_runs) else {}
        for n in names:
            if i >= len(runs[n]):
                continue
            r = runs[n][i]
            lines.append(
                f"| {i + 1} | {n} | {fmt_num(rps(r))} | {fmt_num(per_resp(r))} | {_fmt2(_run_cpu(r))} | "
                f"{_fmt_util(_run_util(r))} | {fmt_us(_run_p99(r))} | {fmt_num(_num(r.get('errors_total')))} | "
                f"{fmt_ratio(rps(r), rps(base))} | {fmt_ratio(_run_cpu(r), _run_cpu(base))} |"
            )
    keys = [k for k in ("host", "workers", "server_cpus", "loadgen_cpus", "commit", "profile") if k in meta]
    if keys:
        lines += ["", "Settings: " + ", ".join(f"{k} {meta[k]}" for k in keys) + "."]
    lines.append("")
    return "\n".join(lines), checks


def _summary_cmd(label, build):
    """A subcommand that writes DIR/summary.md from build(args) -> (markdown, checks) and prints
    it; 1 on a missing or malformed report."""

    def cmd(args):
        try:
            text, _checks = build(args)
        except (OSError, ValueError) as e:
            print(f"{label}: {e}", file=sys.stderr)
            return 1
        with open(os.path.join(args.dir, "summary.md"), "w", encoding="utf-8") as f:
            f.write(text)
        print(text, end="")
        return 0

    return cmd


cmd_cache = _summary_cmd("cache", lambda a: cache_summary(a.dir, a.kind))


# Issue 13's bars for wsgi-hello: against Granian (req/s, server CPU/req) and gunicorn sync.
WSGI_BARS = {"granian_rps": 1.3, "granian_cpu": 0.75, "sync_rps": 10.0}


def wsgi_summary(scenario_dir, bars=WSGI_BARS):
    """summary.md of a wsgi-* scenario: ringd-wsgi against Granian and gunicorn, per round."""
    report = load_report(scenario_dir)
    ringd, granian = _runs(report, "ringd"), _runs(report, "granian")
    sync, gthread = _runs(report, "gunicorn-sync"), _runs(report, "gunicorn-gthread")
    if not ringd or not granian:
        raise ValueError(f"{scenario_dir}: no ringd or granian runs in report.json")
    rps = lambda r: _num(r.get("rps"))  # noqa: E731
    name = os.path.basename(os.path.normpath(scenario_dir))
    bars_apply = name == "wsgi-hello"
    meta = report.get("meta") or {}
    lines = [f"# {name}: ringd-wsgi against Granian and gunicorn (issue 13)", ""]
    lines.append(f"Load average when it started: {meta.get('loadavg', '?')}; commit {meta.get('commit', '?')}.")
    lines.append("")
    checks = [
        _ratio_line("req/s", _per_round(ringd, granian, rps), bars["granian_rps"], True,
                    lambda x: "–" if x is None else f"{x:,.0f}", den="granian", reported=not bars_apply),
        _ratio_line("server CPU/req", _per_round(ringd, granian, _run_cpu), bars["granian_cpu"], False,
                    lambda x: "–" if x is None else f"{x:.1f}µs", den="granian", reported=not bars_apply),
    ]
    if sync:
        checks.append(_ratio_line("req/s", _per_round(ringd, sync, rps), bars["sync_rps"], True,
                                  lambda x: "–" if x is None else f"{x:,.0f}", den="gunicorn sync",
                                  reported=not bars_apply))
    lines += [c[1] for c in checks]
    lines += ["", "| round | target | req/s | server CPU µs/req | machine CPU µs/req | p99 |",
              "|--:|---|--:|--:|--:|--:|"]
    for tname, runs in (("ringd", ringd), ("granian", granian), ("gunicorn-sync", sync),
                        ("gunicorn-gthread", gthread)):
        for i, r in enumerate(runs, 1):
            p99 = _run_p99(r)
            lines.append(f"| {i} | {tname} | {fmt_num(rps(r))} | {fmt_num(_run_cpu(r), 1)} | "
                         f"{fmt_num(_run_machine_cpu(r), 1)} | {'–' if p99 is None else fmt_us(p99)} |")
    return "\n".join(lines) + "\n", checks


cmd_wsgi = _summary_cmd("wsgi", lambda a: wsgi_summary(a.dir))


cmd_proxy = _summary_cmd("proxy", lambda a: proxy_summary(a.dir, a.kind))


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
    bytes_per_s (median), cpu_us (server CPU µs per response, median, or None), machine_cpu_us
    (the whole machine's busy CPU µs per response from /proc/stat, median, or None), p50_us, p99_us,
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
            "machine_cpu_us": _num(med.get("machine_cpu_us_per_request")),
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

SCENARIO_ORDER = ["small", "pipelined", "medium", "large", "connect", "latency-50", "latency-80", "hello", "sites"]
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
# Scenarios that compare ringd with itself, not with nginx: they do not make a run the headline.
SIDE_SCENARIOS = ("sites",)
# Proxy, WSGI, TLS, cache, CGI and stack scenarios are side scenarios too: their targets are not
# the static-file servers over plain HTTP that the headline compares with nginx.
SIDE_PREFIXES = ("proxy-", "wsgi-", "tls-", "cache-", "compress", "cgi-", "stack-")


def is_side_scenario(rel):
    return rel in SIDE_SCENARIOS or rel.startswith(SIDE_PREFIXES)
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


def side_runs(run_dir):
    """The wrk-check*/soak* runs (each with its own env.txt and summary.md) inside a run dir."""
    if not os.path.isdir(run_dir):
        return []
    return [
        sub for sub in sorted(os.listdir(run_dir))
        if sub.startswith(("wrk-check", "soak")) and os.path.exists(os.path.join(run_dir, sub, "summary.md"))
    ]


def run_dirs(results):
    """Run directories (those with an env.txt, or holding only wrk-check/soak runs), oldest
    first by name (names start with the date)."""
    runs = []
    for d in sorted(os.listdir(results)):
        p = os.path.join(results, d)
        if os.path.isdir(p) and (os.path.exists(os.path.join(p, "env.txt")) or side_runs(p)):
            runs.append(d)
    return runs


def scenario_rows(run_dir):
    """[(rel, targets, title)] for the run's top-level scenarios (not tuning/ or scaling/)."""
    rows = [r for r in read_manifest(run_dir) if "/" not in r[0]]
    return [r for r in rows if os.path.exists(os.path.join(run_dir, r[0], "report.json"))]


def headline_table(run_dir, link_prefix):
    lines = [
        "| scenario | target | req/s | rounds' range | MB/s | CPU µs/req | p99 | req/s vs nginx | CPU/req vs nginx "
        "| machine CPU µs/req | machine CPU/req vs nginx |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
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
                f"{fmt_ratio(st['rps'], base.get('rps'))} | {fmt_ratio(st['cpu_us'], base.get('cpu_us'))} | "
                f"{fmt_num(st['machine_cpu_us'], 1)} | {fmt_ratio(st['machine_cpu_us'], base.get('machine_cpu_us'))} |"
            )
    return lines


def env_summary(env):
    keys = ["cpu", "cores online", "kernel", "workers", "server cpus", "loadgen cpus", "rounds", "duration", "connections", "git commit", "build profile"]
    return [f"- {k}: {env[k]}" for k in keys if k in env]


def cmd_headline(args):
    results = args.results
    runs = run_dirs(results)
    # A run of only side scenarios (sites: ringd against itself, no nginx) is listed, never the headline.
    with_scenarios = [
        r for r in runs if any(not is_side_scenario(rel) for rel, _t, _ in scenario_rows(os.path.join(results, r)))
    ]
    # Newest by the start time env.txt records (a fresh clone gives every file the same mtime),
    # then by the name's date and the file's mtime.
    newest = max(with_scenarios, key=lambda r: (
        read_env(os.path.join(results, r)).get("date") or r[:10],
        os.path.getmtime(os.path.join(results, r, "env.txt")),
    )) if with_scenarios else None
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
            "Machine CPU µs/req is every core's busy time (user, system, softirq from /proc/stat: "
            "server, generator and kernel together) per response; on one machine the kernel bills "
            "loopback TCP work to whichever side runs it, so compare servers' cost by machine "
            "CPU/req and read CPU µs/req as the server's own share (– in runs recorded before it existed). "
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
        if not env and side_runs(rd):
            # Only wrk-check/soak runs here: describe the machine from the first one's env.txt.
            env = read_env(os.path.join(rd, side_runs(rd)[0]))
        links = [f"[{rel}]({r}/{rel}/report.md)" for rel, _t, _ in scenario_rows(rd)]
        if os.path.exists(os.path.join(rd, "sites", "summary.md")):
            links.append(f"[sites verdict]({r}/sites/summary.md)")
        for rel, _t, _ in scenario_rows(rd):
            if rel.startswith(SIDE_PREFIXES) and os.path.exists(os.path.join(rd, rel, "summary.md")):
                links.append(f"[{rel} verdicts]({r}/{rel}/summary.md)")
        if os.path.exists(os.path.join(rd, "tuning", "README.md")):
            links.append(f"[tuning]({r}/tuning/README.md)")
        if os.path.exists(os.path.join(rd, "scaling", "README.md")):
            links.append(f"[scaling]({r}/scaling/README.md)")
        # Runs of scripts/wrk-check.sh and scripts/soak.sh kept inside the run directory.
        links += [f"[{sub}]({r}/{sub}/summary.md)" for sub in side_runs(rd)]
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


# ---------------------------------------------------------------------------- wrk-check
#
# scripts/wrk-check.sh runs wrk and loadgen with the servers and the generator pinned to one core
# each, records one line per run in DIR/runs.tsv (the raw wrk output or loadgen JSON, GNU time's
# "%e %U %S" for the generator, and the server's utime+stime clock ticks over the run), and this
# turns those raw files into DIR/summary.md. Nothing in the summary is typed by hand.

RUNS_COLUMNS = ("section", "file", "size", "round", "target", "tool", "raw", "time", "server_ticks", "clk_tck")
ISSUE2_BARS = {"small_rps": 1.3, "small_cpu": 0.7, "large_bps": 1.0, "large_cpu": 1.0}
PIPELINE_BAR = 1_500_000
SATURATED = 0.95  # a process that used this share of its core was (nearly) the limit

_BINARY_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}
_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_wrk(text):
    """The figures of one wrk run: requests, rps, duration_s, transfer_bps (wrk's Transfer/sec,
    headers included, in bytes), socket_errors (sum of connect/read/write/timeout) and non2xx."""
    out = {"requests": None, "rps": None, "duration_s": None, "transfer_bps": None, "socket_errors": 0, "non2xx": 0}
    m = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),", text, re.M)
    if m:
        out["requests"] = int(m.group(1))
        out["duration_s"] = float(m.group(2)) * _TIME_UNITS[m.group(3)]
    m = re.search(r"^Requests/sec:\s*([\d.]+)", text, re.M)
    if m:
        out["rps"] = float(m.group(1))
        # wrk prints the run time with two decimals but computes Requests/sec from microseconds.
        if out["requests"] and out["rps"]:
            out["duration_s"] = out["requests"] / out["rps"]
    m = re.search(r"^Transfer/sec:\s*([\d.]+)([KMGTP]?)B", text, re.M)
    if m:
        out["transfer_bps"] = float(m.group(1)) * _BINARY_UNITS[m.group(2)]
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        out["socket_errors"] = sum(int(g) for g in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        out["non2xx"] = int(m.group(1))
    return out


def parse_loadgen(doc):
    """The same figures from a `loadgen --json` document."""
    status = doc.get("status") or {}
    non2xx = sum(n for code, n in status.items() if not str(code).startswith(("2", "3")))
    return {
        "requests": _num(doc.get("requests")),
        "rps": _num(doc.get("rps")),
        "duration_s": _num(doc.get("duration_s")),
        "transfer_bps": _num(doc.get("bytes_per_s")),
        "socket_errors": _num(doc.get("errors_total")) or 0,
        "non2xx": non2xx,
        "saturated": bool((doc.get("generator_cpu") or {}).get("saturated")),
        "warnings": list(doc.get("warnings") or []),
    }


def parse_gnu_time(text):
    """GNU time's `-f '%e %U %S'` line (the last line; a killed child adds one before it):
    (elapsed, user, sys) in seconds, or None."""
    for line in reversed(text.strip().splitlines()):
        parts = line.split()
        if len(parts) == 3:
            try:
                return tuple(float(p) for p in parts)
            except ValueError:
                continue
    return None


def _read_text(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _div(a, b):
    return a / b if a is not None and b else None


def wrk_check_rows(run_dir):
    """Every run of DIR/runs.tsv with its figures computed from the raw files."""
    rows = []
    with open(os.path.join(run_dir, "runs.tsv"), encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f if line.strip()]
    if not lines or lines[0].split("\t") != list(RUNS_COLUMNS):
        raise ValueError(f"{run_dir}/runs.tsv: header is not {' '.join(RUNS_COLUMNS)}")
    for line in lines[1:]:
        parts = line.split("\t")
        if len(parts) != len(RUNS_COLUMNS):
            raise ValueError(f"{run_dir}/runs.tsv: bad line {line!r}")
        r = dict(zip(RUNS_COLUMNS, parts))
        r["size"], r["round"] = int(r["size"]), int(r["round"])
        raw = _read_text(os.path.join(run_dir, r["raw"]))
        if raw is None:
            fig = {"requests": None, "rps": None, "duration_s": None, "transfer_bps": None, "socket_errors": 0, "non2xx": 0}
        elif r["tool"] == "loadgen":
            try:
                fig = parse_loadgen(json.loads(raw))
            except ValueError:
                fig = parse_loadgen({})
        else:
            fig = parse_wrk(raw)
        r.update(fig)
        r.setdefault("saturated", False)
        r.setdefault("warnings", [])
        req = r["requests"] or 0
        r["body_bps"] = r["rps"] * r["size"] if r["rps"] is not None else None
        ticks, hz = r.pop("server_ticks"), r.pop("clk_tck")
        r["server_cpu_s"] = int(ticks) / int(hz) if ticks.isdigit() and hz.isdigit() and int(hz) else None
        r["server_us_per_req"] = _div(r["server_cpu_s"] * 1e6 if r["server_cpu_s"] is not None else None, req)
        r["server_ns_per_byte"] = _div(r["server_cpu_s"] * 1e9 if r["server_cpu_s"] is not None else None, req * r["size"])
        r["server_util"] = _div(r["server_cpu_s"], r["duration_s"])
        t = parse_gnu_time(_read_text(os.path.join(run_dir, r["time"])) or "") if r["time"] else None
        if t:
            r["gen_elapsed_s"], gen = t[0], t[1] + t[2]
            r["gen_cpu_s"] = gen
            r["gen_us_per_req"] = _div(gen * 1e6, req)
            r["gen_util"] = _div(gen, t[0])
        else:
            r["gen_elapsed_s"] = r["gen_cpu_s"] = r["gen_us_per_req"] = r["gen_util"] = None
        r["errors"] = (r["socket_errors"] or 0) + (r["non2xx"] or 0)
        r["valid"] = bool(req) and r["errors"] <= req
        rows.append(r)
    return rows


def _med(rows, key):
    return _median(sorted(r[key] for r in rows if r.get(key) is not None and r.get("valid")))


def _pct_util(x):
    return "–" if x is None else f"{x * 100:.0f}%"


def _verdict(ok, text):
    return f"- **{'n/a' if ok is None else ('PASS' if ok else 'FAIL')}** {text}"


def _ratio_check(label, num, den, bar, higher, num_name, den_name, fmt):
    ratio = _div(num, den)
    ok = None if ratio is None else (ratio >= bar if higher else ratio <= bar)
    sign = "≥" if higher else "≤"
    rtxt = "–" if ratio is None else f"{ratio:.2f}×"
    return ok, _verdict(ok, f"{label}: {num_name} {fmt(num)} vs {den_name} {fmt(den)} = {rtxt} (bar {sign} {bar:.2f}×)")


def _fmt2(x):
    return fmt_num(x, 2)


def _fmt3(x):
    return fmt_num(x, 3)


# wrk-check's extra target: ringd --backend uring --busy-poll D.
BUSY_POLL_TARGET = "ringd-uring-busy-poll"


def wrk_check_report(run_dir):
    rows = wrk_check_rows(run_dir)
    env = read_env(run_dir)
    verdicts = []
    body = []

    def flag(r, gen_key="gen_util"):
        notes = []
        if not r["valid"]:
            notes.append("INVALID")
        elif r["errors"]:
            notes.append(f"{r['errors']} errors")
        if (r.get(gen_key) or 0) >= SATURATED or r.get("saturated"):
            notes.append("generator saturated")
        return ", ".join(notes)

    # Issue 2: ringd against nginx, the server's CPU per request and per byte.
    server = [r for r in rows if r["section"] == "server"]
    files = []
    for r in server:
        if r["file"] not in files:
            files.append(r["file"])
    for fname in files:
        frows = [r for r in server if r["file"] == fname]
        size = frows[0]["size"]
        large = size >= 1024 * 1024
        targets = []
        for r in frows:
            if r["target"] not in targets:
                targets.append(r["target"])
        title = "10 MiB file" if size == 10 * 1024 * 1024 else f"{size:,}-byte file"
        body += [
            f"### {title} (`{fname}`, {size:,} bytes)",
            "",
            "| round | target | requests | req/s | body MB/s | server CPU s | server core busy | CPU µs/req | CPU ns/byte | generator core busy | notes | raw |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
        ]
        for r in frows:
            body.append(
                f"| {r['round']} | {r['target']} | {fmt_num(r['requests'])} | {fmt_num(r['rps'])} | {fmt_mbps(r['body_bps'])} | "
                f"{_fmt2(r['server_cpu_s'])} | {_pct_util(r['server_util'])} | {_fmt2(r['server_us_per_req'])} | "
                f"{_fmt3(r['server_ns_per_byte'])} | {_pct_util(r['gen_util'])} | {flag(r)} | [{os.path.basename(r['raw'])}]({r['raw']}) |"
            )
        med = {t: {k: _med([r for r in frows if r["target"] == t], k) for k in ("rps", "body_bps", "server_us_per_req", "server_ns_per_byte")} for t in targets}
        base = med.get("nginx", {})
        body += [
            "",
            "Medians over the rounds (ratios divide by nginx's median):",
            "",
            "| target | req/s | body MB/s | CPU µs/req | CPU ns/byte | req/s vs nginx | bytes/s vs nginx | CPU/req vs nginx | CPU/byte vs nginx |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for t in targets:
            m = med[t]
            body.append(
                f"| {t} | {fmt_num(m['rps'])} | {fmt_mbps(m['body_bps'])} | {_fmt2(m['server_us_per_req'])} | {_fmt3(m['server_ns_per_byte'])} | "
                f"{fmt_ratio(m['rps'], base.get('rps'))} | {fmt_ratio(m['body_bps'], base.get('body_bps'))} | "
                f"{fmt_ratio(m['server_us_per_req'], base.get('server_us_per_req'))} | {fmt_ratio(m['server_ns_per_byte'], base.get('server_ns_per_byte'))} |"
            )
        body.append("")
        bp = med.get(BUSY_POLL_TARGET)
        if bp is not None and not large:
            gen_busy = _med([r for r in frows if r["target"] == BUSY_POLL_TARGET], "gen_util")
            body += [
                f"`{BUSY_POLL_TARGET}` is ringd with `--busy-poll`: its worker polls the ring instead of sleeping, so "
                f"wrk never pays to wake it. Against it wrk reached {fmt_num(bp['rps'])} req/s "
                f"({fmt_ratio(bp['rps'], base.get('rps'))} nginx's median) with its own core {_pct_util(gen_busy)} busy: "
                "about the most `wrk -t1` gets from a server that is always ready on this machine. Its CPU per request "
                f"({_fmt2(bp['server_us_per_req'])} µs, {fmt_ratio(bp['server_us_per_req'], base.get('server_us_per_req'))} "
                "nginx's) includes the polling.",
                "",
            ]
        ringd = med.get("ringd-uring", {})
        if large:
            checks = [
                _ratio_check(f"{title}: bytes/s", ringd.get("body_bps"), base.get("body_bps"), ISSUE2_BARS["large_bps"], True, "ringd-uring", "nginx", lambda x: fmt_mbps(x) + " MB/s"),
                _ratio_check(f"{title}: server CPU per byte", ringd.get("server_ns_per_byte"), base.get("server_ns_per_byte"), ISSUE2_BARS["large_cpu"], False, "ringd-uring", "nginx", lambda x: _fmt3(x) + " ns"),
            ]
        else:
            checks = [
                _ratio_check(f"{title}: req/s", ringd.get("rps"), base.get("rps"), ISSUE2_BARS["small_rps"], True, "ringd-uring", "nginx", fmt_num),
                _ratio_check(f"{title}: server CPU per request", ringd.get("server_us_per_req"), base.get("server_us_per_req"), ISSUE2_BARS["small_cpu"], False, "ringd-uring", "nginx", lambda x: _fmt2(x) + " µs"),
            ]
        verdicts += [("issue 2", line) for _, line in checks]
        sat = sorted({r["target"] for r in frows if (r["gen_util"] or 0) >= SATURATED})
        if sat:
            body += [f"⚠ wrk used ≥ {SATURATED * 100:.0f}% of its core in some rounds against {', '.join(sat)}: there the generator, not the server, may have been the limit.", ""]

    # Issue 3: loadgen against wrk on the same target, the generator's own CPU per request.
    gen = [r for r in rows if r["section"] == "generator"]
    gen_body = []
    if gen:
        gen_body += [
            "| round | target | generator | requests | req/s | generator CPU s | generator core busy | generator CPU µs/req | server core busy | server CPU µs/req | notes | raw |",
            "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
        ]
        for r in gen:
            gen_body.append(
                f"| {r['round']} | {r['target']} | {r['tool']} | {fmt_num(r['requests'])} | {fmt_num(r['rps'])} | {_fmt2(r['gen_cpu_s'])} | "
                f"{_pct_util(r['gen_util'])} | {_fmt2(r['gen_us_per_req'])} | {_pct_util(r['server_util'])} | {_fmt2(r['server_us_per_req'])} | {flag(r)} | [{os.path.basename(r['raw'])}]({r['raw']}) |"
            )
        gen_body += [
            "",
            "Medians over the rounds:",
            "",
            "| target | wrk req/s | loadgen req/s | loadgen/wrk req/s | wrk CPU µs/req | loadgen CPU µs/req | loadgen/wrk CPU/req |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        targets = []
        for r in gen:
            if r["target"] not in targets:
                targets.append(r["target"])
        for t in targets:
            w = [r for r in gen if r["target"] == t and r["tool"] == "wrk"]
            lg = [r for r in gen if r["target"] == t and r["tool"] == "loadgen"]
            wr, lr = _med(w, "rps"), _med(lg, "rps")
            wc, lc = _med(w, "gen_us_per_req"), _med(lg, "gen_us_per_req")
            gen_body.append(f"| {t} | {fmt_num(wr)} | {fmt_num(lr)} | {fmt_ratio(lr, wr)} | {_fmt2(wc)} | {_fmt2(lc)} | {fmt_ratio(lc, wc)} |")
            verdicts.append(("issue 3", _ratio_check(f"against {t}: req/s", lr, wr, 1.0, True, "loadgen", "wrk", fmt_num)[1]))
            verdicts.append(("issue 3", _ratio_check(f"against {t}: generator CPU per request", lc, wc, 1.0, False, "loadgen", "wrk", lambda x: _fmt2(x) + " µs")[1]))
        gen_body.append("")
    pipe = [r for r in rows if r["section"] == "pipeline"]
    for r in pipe:
        ok = None if not r["valid"] or r["rps"] is None else r["rps"] >= PIPELINE_BAR
        verdicts.append(("issue 3", _verdict(ok, f"`--pipeline 16` against {r['target']}: {fmt_num(r['rps'])} req/s (bar ≥ {PIPELINE_BAR:,})")))
        gen_body += [
            f"`loadgen --pipeline 16 -t 1 -c 64` against {r['target']}: {fmt_num(r['requests'])} requests, **{fmt_num(r['rps'])} req/s**, "
            f"generator core {_pct_util(r['gen_util'])} busy ({_fmt2(r['gen_us_per_req'])} µs/req), server core {_pct_util(r['server_util'])} busy "
            f"({_fmt2(r['server_us_per_req'])} µs/req){'; ' + flag(r) if flag(r) else ''}. Raw: [{os.path.basename(r['raw'])}]({r['raw']}).",
            "",
        ]
        if (r["server_util"] or 0) >= SATURATED:
            gen_body += [
                f"⚠ the server used ≥ {SATURATED * 100:.0f}% of its one core: here the server, not loadgen, was the limit "
                "(the bar asks for a server that can take it).",
                "",
            ]

    keys = ["host", "cpu", "cores online", "kernel", "server cpu", "generator cpu", "rounds", "duration", "git commit", "wrk", "nginx", "rustc"]
    lines = [
        "# wrk check: ringd against nginx (issue 2) and loadgen against wrk (issue 3)",
        "",
        "Generated by `scripts/benchtool.py wrk-check` from `runs.tsv` and the raw wrk outputs, loadgen "
        "JSON files and GNU time outputs in `raw/` (run by `scripts/wrk-check.sh`); no figure here is typed "
        "by hand. Machine, versions and every command: [env.txt](env.txt).",
        "",
    ]
    lines += [f"- {k}: {env[k]}" for k in keys if k in env]
    lines += [
        "",
        "Server CPU is utime+stime of every server thread (ringd) or of nginx's master and worker processes, "
        "read from /proc/PID/stat just before and after each generator run; per request it divides by the "
        "responses the generator counted, per byte by responses × file size; body MB/s is req/s × file size "
        "(10^6 bytes; wrk's own Transfer/sec, headers included, is in the raw outputs). Generator CPU is the generator "
        "process's user+sys time from GNU time. \"core busy\" is CPU time over the run's duration. Medians "
        "leave out invalid runs (no responses, or more errors than responses).",
        "",
        "## Verdicts",
        "",
    ]
    lines += [line.replace("- ", f"- {issue}: ", 1) for issue, line in verdicts] or ["- (no runs)"]
    lines += ["", "## Issue 2: ringd against nginx (`wrk -t1 -c64`, 10 MiB file `-c8`)", ""]
    lines += body
    if gen_body:
        lines += ["## Issue 3: loadgen against wrk (`-t1 -c64`, 1000-byte file)", ""]
        lines += gen_body
    return "\n".join(lines).rstrip() + "\n", verdicts


def cmd_wrk_check(args):
    try:
        text, verdicts = wrk_check_report(args.dir)
    except (OSError, ValueError) as e:
        print(f"wrk-check: {e}", file=sys.stderr)
        return 1
    with open(os.path.join(args.dir, "summary.md"), "w", encoding="utf-8") as f:
        f.write(text)
    print(text, end="")
    return 0


# ---------------------------------------------------------------------------- soak
#
# scripts/soak.sh samples loadgen's and ringd's VmRSS every few seconds during a long open-loop
# run into DIR/rss.csv and lists ringd's open fds before and after (fds-before.txt,
# fds-after.txt); this writes DIR/summary.md with the growth and the verdicts.

SOAK_BAR_KIB = 1024  # issue 3: "a 10-minute run grows its memory by less than 1 MiB"
SOAK_BASE_S = 30


def read_rss_csv(path):
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip()]
    if not lines:
        raise ValueError(f"{path} is empty")
    head = lines[0].split(",")
    rows = []
    for line in lines[1:]:
        vals = line.split(",")
        if len(vals) != len(head):
            raise ValueError(f"{path}: bad line {line!r}")
        rows.append({k: (float(v) if v not in ("", "-") else None) for k, v in zip(head, vals)})
    return rows


def read_fd_list(path):
    """fd listing (`N -> target` per line) → list of lines, or None when the file is missing."""
    text = _read_text(path)
    return None if text is None else [line for line in text.splitlines() if line.strip()]


def soak_report(run_dir):
    rows = read_rss_csv(os.path.join(run_dir, "rss.csv"))
    env = read_env(run_dir)
    base = next((r for r in rows if r["t_s"] is not None and r["t_s"] >= SOAK_BASE_S - 0.5), None)
    last = rows[-1] if rows else None
    verdicts = []

    def growth(key):
        if base is None or last is None or base is last or base.get(key) is None or last.get(key) is None:
            return None
        return last[key] - base[key]

    lg = growth("loadgen_rss_kib")
    ok = None if lg is None else lg < SOAK_BAR_KIB
    span = "" if base is None or base is last else f" from the {base['t_s']:.0f} s sample to the last ({last['t_s']:.0f} s)"
    verdicts.append(_verdict(ok, f"loadgen VmRSS growth{span}: {fmt_num(lg)} KiB (bar < {SOAK_BAR_KIB} KiB = 1 MiB)"))
    before, after = read_fd_list(os.path.join(run_dir, "fds-before.txt")), read_fd_list(os.path.join(run_dir, "fds-after.txt"))
    fd_ok = None if before is None or after is None else len(after) <= len(before)
    verdicts.append(_verdict(fd_ok, f"ringd open fds before the run {fmt_num(None if before is None else len(before))}, "
                                    f"after it (connections closed) {fmt_num(None if after is None else len(after))}"))
    lines = [
        "# Soak: loadgen's memory over a long open-loop run (issue 3)",
        "",
        "Generated by `scripts/benchtool.py soak` from `rss.csv`, `fds-before.txt`, `fds-after.txt` and "
        "`loadgen.json` (run by `scripts/soak.sh`); nothing here is typed by hand. Machine, versions and "
        "commands: [env.txt](env.txt).",
        "",
    ]
    keys = ["host", "cpu", "kernel", "server cpu", "generator cpu", "duration", "rate", "connections", "url", "git commit"]
    lines += [f"- {k}: {env[k]}" for k in keys if k in env]
    dur = env.get("duration seconds")
    if dur and dur.replace(".", "", 1).isdigit() and float(dur) < 600:
        lines += ["", f"Note: this run lasted {float(dur):.0f} s; issue 3's bar is for a 10-minute run."]
    lines += ["", "## Verdicts", ""] + verdicts
    lines += ["", f"ringd VmRSS growth over the same span (for information): {fmt_num(growth('ringd_rss_kib'))} KiB.", ""]
    doc = None
    text = _read_text(os.path.join(run_dir, "loadgen.json"))
    if text:
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
    if doc:
        lat = doc.get("latency_us") or {}
        lines += [
            "## The run (loadgen.json)",
            "",
            f"- requests {fmt_num(_num(doc.get('requests')))} in {fmt_num(_num(doc.get('duration_s')), 1)} s; target rate "
            f"{fmt_num(_num(doc.get('target_rps')))} req/s, achieved {fmt_num(_num(doc.get('achieved_rps')))} req/s, "
            f"responses {fmt_num(_num(doc.get('rps')))} /s",
            f"- errors {fmt_num(_num(doc.get('errors_total')))}, status {json.dumps(doc.get('status') or {})}",
            f"- latency (corrected) p50 {fmt_us(_num(lat.get('p50')))}, p99 {fmt_us(_num(lat.get('p99')))}, "
            f"p99.9 {fmt_us(_num(lat.get('p999')))}, max {fmt_us(_num(lat.get('max')))}",
        ]
        for w in doc.get("warnings") or []:
            lines.append(f"- loadgen warning: {w}")
        lines.append("")
    if before is not None and after is not None and len(after) > len(before):
        extra = [x for x in after if x not in before]
        lines += ["## fds open after the run that were not open before", "", "```"] + extra + ["```", ""]
    lines += [
        "## Samples (rss.csv)",
        "",
        "| t (s) | loadgen VmRSS KiB | loadgen VmHWM KiB | ringd VmRSS KiB | ringd VmHWM KiB | ringd fds |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {fmt_num(r.get('t_s'), 1)} | {fmt_num(r.get('loadgen_rss_kib'))} | {fmt_num(r.get('loadgen_hwm_kib'))} | "
            f"{fmt_num(r.get('ringd_rss_kib'))} | {fmt_num(r.get('ringd_hwm_kib'))} | {fmt_num(r.get('ringd_fds'))} |"
        )
    return "\n".join(lines) + "\n", verdicts


cmd_soak = _summary_cmd("soak", lambda a: soak_report(a.dir))


# Issue 16's soak bars: after warm-up (the first two minutes), RSS grows by less than this and
# the fd count by at most this many.
SOAK_MIXED_RSS_MIB = 4.0
SOAK_MIXED_FDS = 2


def soak_mixed_report(d):
    """(markdown, ok) for a scripts/soak-mixed.sh run: one row per minute, and the verdicts."""
    with open(os.path.join(d, "minutes.csv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    samples = {int(r["minute"]): (int(r["rss_kib"]), int(r["fds"])) for r in rows}
    env = ""
    if os.path.exists(os.path.join(d, "env.txt")):
        with open(os.path.join(d, "env.txt"), encoding="utf-8") as f:
            env = f.read()
    minutes = []
    # The TLS streams of the minute (minute-N-tls.json: the mix over TLS, keep-alive;
    # minute-N-hs.json: a new connection and full handshake per request), where the run had them.
    tls_minutes = []
    m = 1
    while os.path.exists(os.path.join(d, f"minute-{m}.json")):
        with open(os.path.join(d, f"minute-{m}.json"), encoding="utf-8") as f:
            minutes.append(json.load(f))
        extra = {}
        for stream in ("tls", "hs"):
            path = os.path.join(d, f"minute-{m}-{stream}.json")
            if os.path.exists(path):
                with open(path, encoding="utf-8") as f:
                    extra[stream] = json.load(f)
        tls_minutes.append(extra)
        m += 1
    if not minutes:
        raise ValueError(f"{d}: no minute-N.json")
    has_tls = any(tls_minutes)
    lines = [
        "# Mixed soak (issue 16)",
        "",
        "Generated by `scripts/benchtool.py soak-mixed` from the run's `minute-N.json` (one open-loop",
        "loadgen run per minute, so each minute's percentiles come from its own full histogram) and",
        "`minutes.csv` (ringd's RSS, master and workers, and the workers' open fds after each minute).",
        "Nothing here is typed by hand.",
        "",
        "```",
        env.strip(),
        "```",
        "",
        "| minute | requests | achieved req/s | errors | 2xx | 4xx | 5xx | p50 | p99 | p99.9 | max | RSS MiB | fds |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    if has_tls:
        lines[-3:-3] = [
            "The first table is the plain stream; the second, the TLS streams of the same minutes",
            "(`tls`: the mix over TLS 1.3, keep-alive; `hs`: a new connection and a full handshake",
            "per request). Errors and 5xx count all three.",
            "",
        ]
    total_err = 0
    total_5xx = 0
    ms = lambda us: "–" if us is None else (f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs")  # noqa: E731
    for i, r in enumerate(minutes, start=1):
        st = r.get("status") or {}
        cls = lambda c: sum(v for k, v in st.items() if str(k).startswith(c))  # noqa: E731
        err = int(r.get("errors_total") or 0)
        total_err += err
        total_5xx += cls("5")
        lat = r.get("latency_us") or {}
        rss, fd = samples.get(i, (None, None))
        lines.append(
            f"| {i} | {r.get('requests', 0):,} | {r.get('achieved_rps') or r.get('rps') or 0:,.0f} | {err} | "
            f"{cls('2'):,} | {cls('4'):,} | {cls('5'):,} | {ms(lat.get('p50'))} | {ms(lat.get('p99'))} | "
            f"{ms(lat.get('p999'))} | {ms(lat.get('max'))} | "
            f"{'–' if rss is None else f'{rss / 1024:.1f}'} | {'–' if fd is None else fd} |"
        )
    tls_reqs = 0
    if has_tls:
        lines += [
            "",
            "| minute | tls requests | tls req/s | tls errors | tls 5xx | tls p99 | tls p99.9 | hs requests | hs errors | hs 5xx | hs p99 | hs p99.9 |",
            "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for i, extra in enumerate(tls_minutes, start=1):
            cells = [str(i)]
            for stream in ("tls", "hs"):
                r = extra.get(stream)
                if r is None:
                    cells += ["–"] * (5 if stream == "hs" else 6)
                    continue
                st = r.get("status") or {}
                five = sum(v for k, v in st.items() if str(k).startswith("5"))
                err = int(r.get("errors_total") or 0)
                total_err += err
                total_5xx += five
                tls_reqs += int(r.get("requests") or 0)
                lat = r.get("latency_us") or {}
                cells.append(f"{r.get('requests', 0):,}")
                if stream == "tls":
                    cells.append(f"{r.get('achieved_rps') or r.get('rps') or 0:,.0f}")
                cells += [str(err), f"{five:,}", ms(lat.get("p99")), ms(lat.get("p999"))]
            lines.append("| " + " | ".join(cells) + " |")
    after = [samples[k] for k in sorted(samples) if k >= 2]
    ok = True
    lines += ["", "## Verdicts", ""]
    v = total_err == 0 and total_5xx == 0
    ok &= v
    lines.append(f"- **{'PASS' if v else 'FAIL'}** errors: {total_err} transport errors and {total_5xx} "
                 "5xx responses in all (bar: none)")
    if has_tls:
        v = tls_reqs > 0
        ok &= v
        lines.append(f"- **{'PASS' if v else 'FAIL'}** TLS served: {tls_reqs:,} requests over TLS in the "
                     "`tls` and `hs` streams")
    if len(after) >= 2:
        growth = (after[-1][0] - after[0][0]) / 1024
        v = growth < SOAK_MIXED_RSS_MIB
        ok &= v
        lines.append(f"- **{'PASS' if v else 'FAIL'}** RSS after warm-up (minute 2 to {len(minutes)}): "
                     f"{after[0][0] / 1024:.1f} → {after[-1][0] / 1024:.1f} MiB, growth {growth:+.1f} MiB "
                     f"(bar < {SOAK_MIXED_RSS_MIB:.0f} MiB)")
        spread = max(f for _, f in after) - min(f for _, f in after)
        v = spread <= SOAK_MIXED_FDS
        ok &= v
        lines.append(f"- **{'PASS' if v else 'FAIL'}** open fds after warm-up: {min(f for _, f in after)}"
                     f"–{max(f for _, f in after)} (bar: within {SOAK_MIXED_FDS})")
    else:
        lines.append("- RSS and fds: too few minutes after warm-up to judge (run at least 3)")
    return "\n".join(lines) + "\n", ok


def cmd_soak_mixed(args):
    try:
        text, ok = soak_mixed_report(args.dir)
    except (OSError, ValueError, KeyError) as e:
        print(f"soak-mixed: {e}", file=sys.stderr)
        return 1
    print(text, end="")
    return 0 if ok else 2


# ---------------------------------------------------------------------------- main


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("mkdata", help="create the served root")
    s.add_argument("dir")
    s.set_defaults(func=cmd_mkdata)
    s = sub.add_parser("sites-config", help="write the sites scenario's config (N sites x M routes); prints the last site's host and the header its last route sets")
    s.add_argument("out", help="the TOML file to write")
    s.add_argument("--www", required=True, help="the served root (the last site's root)")
    s.add_argument("--sites-dir", required=True, help="where the other sites' roots go")
    s.add_argument("--sites", type=int, default=10)
    s.add_argument("--routes", type=int, default=20, help="routes per site, the matching one last")
    s.set_defaults(func=cmd_sites_config)
    s = sub.add_parser("sites", help="summary.md of the sites scenario (config vs flag-only CPU/req)")
    s.add_argument("dir")
    s.add_argument("--bar", type=float, default=SITES_BAR, help="highest passing CPU/req ratio")
    s.set_defaults(func=cmd_sites)
    s = sub.add_parser("proxy", help="summary.md of a proxy scenario (issue 12's ratios and verdicts)")
    s.add_argument("dir")
    s.add_argument("--kind", required=True, choices=("small", "large", "gunicorn"))
    s.set_defaults(func=cmd_proxy)
    s = sub.add_parser("cache", help="summary.md of the cache-hit or compress scenario (issue 14's bars)")
    s.add_argument("dir")
    s.add_argument("--kind", required=True, choices=("hit", "compress"))
    s.set_defaults(func=cmd_cache)
    s = sub.add_parser("wsgi", help="summary.md of a wsgi-* scenario (issue 13's ratios and verdicts)")
    s.add_argument("dir")
    s.set_defaults(func=cmd_wsgi)
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
    s = sub.add_parser("wrk-check", help="summary.md of a scripts/wrk-check.sh run from DIR/runs.tsv")
    s.add_argument("dir")
    s.set_defaults(func=cmd_wrk_check)
    s = sub.add_parser("soak", help="summary.md of a scripts/soak.sh run from DIR/rss.csv")
    s.add_argument("dir")
    s.set_defaults(func=cmd_soak)
    s = sub.add_parser("soak-mixed", help="summary of a scripts/soak-mixed.sh run (printed; the script saves it)")
    s.add_argument("dir")
    s.set_defaults(func=cmd_soak_mixed)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
