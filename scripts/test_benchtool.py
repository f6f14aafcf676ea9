#!/usr/bin/env python3
"""Tests for scripts/benchtool.py against report.json files shaped like loadgen compare's.

Run: python3 scripts/test_benchtool.py (stdlib unittest; scripts/ci-smoke.sh runs it).
"""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.dont_write_bytecode = True  # keep scripts/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchtool  # noqa: E402


def run_result(rps, p99, cpu=None, errors=0, saturated=False, bytes_per_s=None, machine=None):
    return {
        "requests": int(rps * 10),
        "duration_s": 10.0,
        "rps": rps,
        "bytes_per_s": bytes_per_s if bytes_per_s is not None else rps * 1200,
        "errors": {"reset": errors} if errors else {},
        "errors_total": errors,
        "latency_us": {"p50": p99 / 4, "p99": p99, "p999": p99 * 2},
        "server_cpu_us_per_request": cpu,
        "machine_cpu": {"us_per_request": machine} if machine is not None else None,
        "generator_cpu": {"saturated": saturated},
        "settings": {"connections": 4},
        "warnings": ["the generator was saturated"] if saturated else [],
    }


def target(name, rounds):
    def agg(f):
        keys = {
            "rps": lambda r: r["rps"],
            "p50_us": lambda r: r["latency_us"]["p50"],
            "p99_us": lambda r: r["latency_us"]["p99"],
            "p999_us": lambda r: r["latency_us"]["p999"],
            "server_cpu_us_per_request": lambda r: r["server_cpu_us_per_request"],
            "machine_cpu_us_per_request": lambda r: (r["machine_cpu"] or {}).get("us_per_request"),
            "errors": lambda r: r["errors_total"],
        }
        out = {}
        for k, get in keys.items():
            vals = [get(r) for r in rounds if get(r) is not None]
            if vals:
                out[k] = f(vals)
        return out

    return {
        "name": name,
        "url": f"http://127.0.0.1:1/{name}",
        "median": agg(lambda v: sorted(v)[len(v) // 2]),
        "min": agg(min),
        "max": agg(max),
        "ratio_vs_baseline": {},
        "runs": rounds,
    }


def write_scenario(d, targets, files=("report.md", "report.html")):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "report.json"), "w") as f:
        json.dump({"title": "t", "baseline": "nginx", "targets": targets}, f)
    for name in files:
        with open(os.path.join(d, name), "w") as f:
            f.write("x\n")


def quiet(fn, *args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = fn(*args)
    return rc, out.getvalue(), err.getvalue()


class Base(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="benchtool-test.")

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def small_run(self, run_dir, ringd_rps=(9000, 10000, 11000), nginx_rps=(5000, 5000, 6000)):
        write_scenario(
            os.path.join(run_dir, "small"),
            [
                target("ringd-uring", [run_result(r, 800, cpu=40, machine=90) for r in ringd_rps]),
                target("nginx", [run_result(r, 1600, cpu=80, machine=60) for r in nginx_rps]),
            ],
        )
        with open(os.path.join(run_dir, "scenarios.tsv"), "a") as f:
            f.write("small\tringd-uring,nginx\tsmall: test\n")
        with open(os.path.join(run_dir, "env.txt"), "w") as f:
            f.write("# env\nhost:          testhost\ncpu:           Test CPU\ngit commit:    abc123 (x)\n\n## tool versions\nrustc: 1\n")


class TargetStats(Base):
    def test_medians_ranges_and_sums_come_from_the_report(self):
        self.small_run(self.tmp)
        st = benchtool.target_stats(benchtool.load_report(os.path.join(self.tmp, "small")))
        self.assertEqual(list(st), ["ringd-uring", "nginx"])
        r = st["ringd-uring"]
        self.assertEqual(r["rps"], 10000)
        self.assertEqual((r["rps_min"], r["rps_max"]), (9000, 11000))
        self.assertEqual(r["requests"], 300000)
        self.assertEqual(r["rounds"], 3)
        self.assertEqual(r["cpu_us"], 40)
        self.assertEqual(r["machine_cpu_us"], 90)
        self.assertEqual(r["p99_us"], 800)
        self.assertEqual(r["bytes_per_s"], 10000 * 1200)
        self.assertFalse(r["saturated"])

    def test_missing_targets_is_an_error(self):
        with self.assertRaises(ValueError):
            benchtool.target_stats({"title": "no targets"})

    def test_saturation_is_flagged(self):
        d = os.path.join(self.tmp, "s")
        write_scenario(d, [target("nginx", [run_result(100, 10), run_result(100, 10, saturated=True)])])
        st = benchtool.target_stats(benchtool.load_report(d))["nginx"]
        self.assertTrue(st["saturated"])
        self.assertIn("⚠", benchtool.fmt_rps(st))


class MaxRps(Base):
    def test_slowest_named_target_wins(self):
        self.small_run(self.tmp)
        rc, out, _ = quiet(benchtool.main, ["max-rps", os.path.join(self.tmp, "small"), "ringd-uring", "nginx"])
        self.assertEqual(rc, 0)
        self.assertEqual(out.strip(), "5000")

    def test_unknown_target_fails(self):
        self.small_run(self.tmp)
        rc, _, err = quiet(benchtool.main, ["max-rps", os.path.join(self.tmp, "small"), "gunicorn"])
        self.assertEqual(rc, 1)
        self.assertIn("gunicorn", err)


class Check(Base):
    def test_passes_when_every_target_answered(self):
        self.small_run(self.tmp)
        rc, out, _ = quiet(benchtool.main, ["check", self.tmp])
        self.assertEqual(rc, 0, out)

    def test_fails_on_a_missing_report_file(self):
        self.small_run(self.tmp)
        os.remove(os.path.join(self.tmp, "small", "report.html"))
        rc, _, err = quiet(benchtool.main, ["check", self.tmp])
        self.assertEqual(rc, 1)
        self.assertIn("report.html missing", err)

    def test_fails_when_a_target_served_nothing(self):
        write_scenario(os.path.join(self.tmp, "hello"), [target("nginx", [run_result(0, 0)])])
        with open(os.path.join(self.tmp, "scenarios.tsv"), "w") as f:
            f.write("hello\tnginx\thello\n")
        rc, _, err = quiet(benchtool.main, ["check", self.tmp])
        self.assertEqual(rc, 1)
        self.assertIn("answered no request", err)

    def test_fails_when_errors_dominate(self):
        # 10 responses, 4 connections: 50 errors is a failing target.
        write_scenario(os.path.join(self.tmp, "hello"), [target("nginx", [run_result(1, 10, errors=50)])])
        with open(os.path.join(self.tmp, "scenarios.tsv"), "w") as f:
            f.write("hello\tnginx\thello\n")
        rc, _, err = quiet(benchtool.main, ["check", self.tmp])
        self.assertEqual(rc, 1)
        self.assertIn("50 errors, more than its 10 responses", err)

    def test_one_error_per_connection_is_tolerated(self):
        # 10 responses, 4 connections over 3 rounds: 12 errors cut off at the ends is not a failure.
        rounds = [run_result(1 / 3, 10, errors=4) for _ in range(3)]
        write_scenario(os.path.join(self.tmp, "large"), [target("gunicorn", rounds)])
        with open(os.path.join(self.tmp, "scenarios.tsv"), "w") as f:
            f.write("large\tgunicorn\tlarge\n")
        rc, out, err = quiet(benchtool.main, ["check", self.tmp])
        self.assertEqual(rc, 0, out + err)

    def test_fails_when_a_target_is_absent(self):
        self.small_run(self.tmp)
        with open(os.path.join(self.tmp, "scenarios.tsv"), "w") as f:
            f.write("small\tringd-uring,nginx,gunicorn\tsmall\n")
        rc, _, err = quiet(benchtool.main, ["check", self.tmp])
        self.assertEqual(rc, 1)
        self.assertIn("gunicorn missing", err)


class Headline(Base):
    def test_readme_is_generated_from_the_newest_run(self):
        results = os.path.join(self.tmp, "results")
        self.small_run(os.path.join(results, "2020-01-01-old"), ringd_rps=(1, 1, 1))
        self.small_run(os.path.join(results, "2020-02-01-new"))
        os.makedirs(os.path.join(results, "2020-02-01-new", "wrk-check"))
        with open(os.path.join(results, "2020-02-01-new", "wrk-check", "summary.md"), "w") as f:
            f.write("# wrk check\n")
        readme = os.path.join(self.tmp, "README.md")
        with open(readme, "w") as f:
            f.write(f"intro\n{benchtool.HEADLINE_START}\nstale\n{benchtool.HEADLINE_END}\nend\n")
        rc, _, _ = quiet(benchtool.main, ["headline", results, "--readme", readme])
        self.assertEqual(rc, 0)
        with open(os.path.join(results, "README.md")) as f:
            text = f.read()
        self.assertIn("## Headline: [2020-02-01-new]", text)
        # ringd 10,000 req/s against nginx 5,000: 2.00×; CPU 40 against 80: 0.50×.
        self.assertRegex(text, r"\| ringd-uring \| 10,000 \| 9,000–11,000 \| 12\.0 \| 40\.0 \| 800 µs \| 2\.00× \| 0\.50× \|")
        # Whole-machine CPU beside it: 90 against 60 µs/req is 1.50×.
        self.assertRegex(text, r"\| ringd-uring \| .* \| 0\.50× \| 90\.0 \| 1\.50× \|")
        self.assertIn("[2020-01-01-old](2020-01-01-old/)", text)
        self.assertIn("[wrk-check](2020-02-01-new/wrk-check/summary.md)", text)
        with open(readme) as f:
            top = f.read()
        self.assertNotIn("stale", top)
        self.assertTrue(top.startswith("intro\n") and top.endswith("end\n"))
        self.assertIn("results/2020-02-01-new/small/report.md", top)

    def test_a_run_with_only_a_wrk_check_is_listed_but_not_the_headline(self):
        results = os.path.join(self.tmp, "results")
        self.small_run(os.path.join(results, "2020-02-01-bench"))
        only = os.path.join(results, "2020-02-02-wrk", "wrk-check")
        os.makedirs(only)
        with open(os.path.join(only, "summary.md"), "w") as f:
            f.write("# wrk check\n")
        with open(os.path.join(only, "env.txt"), "w") as f:
            f.write("# env\nhost:          wrkhost\ngit commit:    abcdef0123456789 (uncommitted changes: 0 files)\n")
        rc, _, err = quiet(benchtool.main, ["headline", results])
        self.assertEqual(rc, 0, err)
        with open(os.path.join(results, "README.md")) as f:
            text = f.read()
        self.assertIn("## Headline: [2020-02-01-bench]", text)
        self.assertIn("| [2020-02-02-wrk](2020-02-02-wrk/) | wrkhost |", text)
        self.assertIn("| abcdef0123 | [wrk-check](2020-02-02-wrk/wrk-check/summary.md) |", text)

    def test_a_sites_only_run_is_listed_but_not_the_headline(self):
        results = os.path.join(self.tmp, "results")
        self.small_run(os.path.join(results, "2020-02-01-bench"))
        side = os.path.join(results, "2020-02-02-host-sites")
        write_scenario(os.path.join(side, "sites"), [target("ringd-flags", [run_result(1, 1, cpu=1)]),
                                                     target("ringd-config", [run_result(1, 1, cpu=1)])])
        with open(os.path.join(side, "sites", "summary.md"), "w") as f:
            f.write("# sites\n")
        with open(os.path.join(side, "scenarios.tsv"), "w") as f:
            f.write("sites\tringd-flags,ringd-config\tsites: test\n")
        with open(os.path.join(side, "env.txt"), "w") as f:
            f.write("# env\nhost:          sitehost\n")
        rc, _, err = quiet(benchtool.main, ["headline", results])
        self.assertEqual(rc, 0, err)
        with open(os.path.join(results, "README.md")) as f:
            text = f.read()
        self.assertIn("## Headline: [2020-02-01-bench]", text)
        self.assertIn("[sites](2020-02-02-host-sites/sites/report.md) · [sites verdict](2020-02-02-host-sites/sites/summary.md)", text)

    def test_newest_is_by_the_date_in_env_txt_not_the_file_times(self):
        results = os.path.join(self.tmp, "results")
        for name, when in (("2020-02-01-host-2", "2020-02-01T09:00:00Z"), ("2020-02-01-host", "2020-02-01T08:00:00Z")):
            self.small_run(os.path.join(results, name))
            with open(os.path.join(results, name, "env.txt")) as f:
                text = f.read()
            with open(os.path.join(results, name, "env.txt"), "w") as f:
                f.write(text.replace("# env\n", f"# env\ndate:          {when}\n"))
        # The older run written last (as a checkout may): still not the headline.
        rc, _, err = quiet(benchtool.main, ["headline", results])
        self.assertEqual(rc, 0, err)
        with open(os.path.join(results, "README.md")) as f:
            self.assertIn("## Headline: [2020-02-01-host-2]", f.read())

    def test_no_runs_yet(self):
        results = os.path.join(self.tmp, "results")
        os.makedirs(results)
        rc, _, _ = quiet(benchtool.main, ["headline", results])
        self.assertEqual(rc, 0)
        with open(os.path.join(results, "README.md")) as f:
            self.assertIn("No run with scenario reports yet", f.read())


try:
    import tomllib
except ImportError:  # Python < 3.11: the structural checks below are skipped
    tomllib = None


class SitesConfig(Base):
    def config(self, **kw):
        www, sites_dir = os.path.join(self.tmp, "www"), os.path.join(self.tmp, "sites")
        text, files = benchtool.sites_config(www, sites_dir, **kw)
        return www, sites_dir, text, files

    def test_ten_sites_of_twenty_routes(self):
        _, _, text, files = self.config()
        self.assertEqual(text.count("\n[[sites]]\n"), 10)
        self.assertEqual(text.count("[[sites.routes]]"), 200)
        # Every site but the last gets its own root with files; the last serves the bench root.
        self.assertEqual(len(files), 9)
        self.assertTrue(all("index.html" in f for f in files.values()))

    @unittest.skipIf(tomllib is None, "needs tomllib (Python 3.11+)")
    def test_only_the_last_sites_last_route_matches_the_request(self):
        www, _, text, _ = self.config()
        conf = tomllib.loads(text)
        sites = conf["sites"]
        hosts = [h for s in sites for h in s["hosts"]]
        self.assertEqual(len(hosts), len(set(hosts)), "every site has its own hosts")
        last = sites[-1]
        self.assertEqual(last["hosts"][0], benchtool.sites_host(10))
        self.assertEqual(last["root"], www)
        routes = last["routes"]
        self.assertEqual(len(routes), 20)
        matching = [
            i for i, r in enumerate(routes)
            if benchtool.route_matches(r.get("path") or r.get("regex"), "regex" in r, benchtool.SITES_PATH)
        ]
        self.assertEqual(matching, [19])
        final = routes[-1]
        name, value = benchtool.SITES_MATCH_HEADER
        self.assertEqual(final["headers"]["set"][name], value)
        self.assertEqual(final["root"], www)
        # No other route of any site sets the header bench.sh checks for.
        for s in sites:
            for r in s["routes"][:-1]:
                self.assertNotEqual(r.get("headers", {}).get("set", {}).get(name), value)
        # A realistic mix in every site: header modifiers, respond, rewrite (regex too), redirects.
        for s in sites:
            kinds = {k for r in s["routes"] for k in ("headers", "respond", "rewrite", "redirect", "regex", "try_files", "root") if k in r}
            self.assertEqual(kinds, {"headers", "respond", "rewrite", "redirect", "regex", "try_files", "root"})
            self.assertTrue(any("regex" in r and "rewrite" in r for r in s["routes"]))

    def test_route_matching_rules(self):
        self.assertTrue(benchtool.route_matches("/*", False, "/small.bin"))
        self.assertTrue(benchtool.route_matches("/static/*", False, "/static/"))
        self.assertFalse(benchtool.route_matches("/static/*", False, "/static"))
        self.assertFalse(benchtool.route_matches("/healthz", False, "/healthz/"))
        self.assertTrue(benchtool.route_matches(r"^/u/([0-9]+)$", True, "/u/12"))

    def test_fewer_routes_keep_the_matching_one_last(self):
        _, _, text, _ = self.config(n_sites=2, n_routes=1)
        self.assertEqual(text.count("[[sites.routes]]"), 2)
        self.assertIn('path = "/*"', text)
        with self.assertRaises(ValueError):
            self.config(n_routes=99)

    def test_command_writes_roots_and_prints_host_and_header(self):
        out = os.path.join(self.tmp, "run", "sites.toml")
        www = os.path.join(self.tmp, "www")
        rc, stdout, _ = quiet(benchtool.main, ["sites-config", out, "--www", www, "--sites-dir", os.path.join(self.tmp, "s")])
        self.assertEqual(rc, 0)
        self.assertEqual(stdout.splitlines(), ["site10.bench.test", "Cache-Control: public, max-age=300"])
        self.assertTrue(os.path.isfile(os.path.join(self.tmp, "s", "site01", "app", "index.html")))
        with open(out) as f:
            self.assertIn(f'root = "{www}"', f.read())


class SitesSummary(Base):
    def scenario(self, flags_cpu, config_cpu):
        d = os.path.join(self.tmp, "sites")
        write_scenario(
            d,
            [
                target("ringd-flags", [run_result(100000, 500, cpu=c, machine=c * 2) for c in flags_cpu]),
                target("ringd-config", [run_result(95000, 500, cpu=c, machine=c * 2) for c in config_cpu]),
            ],
        )
        return d

    def test_ratio_of_medians_and_per_round_spread(self):
        d = self.scenario((10.0, 9.0, 11.0), (10.5, 9.9, 11.0))
        md, ok, ratio = benchtool.sites_summary(d)
        self.assertTrue(ok)
        self.assertAlmostEqual(ratio, 10.5 / 10.0)
        self.assertIn("**PASS** server CPU per request: ringd-config 10.50 µs vs ringd-flags 10.00 µs = 1.05× (bar ≤ 1.10×)", md)
        # Round by round: 1.05, 1.10, 1.00.
        self.assertIn("per-round ratios: 1.000×, 1.050×, 1.100× (median 1.050×, spread 0.100)", md)
        self.assertIn("| 2 | 100,000 | 9.000 | 95,000 | 9.900 | 1.100× | 1.100× |", md)

    def test_over_the_bar_fails(self):
        d = self.scenario((10.0, 10.0, 10.0), (11.5, 11.2, 11.8))
        rc, out, _ = quiet(benchtool.main, ["sites", d])
        self.assertEqual(rc, 0)
        self.assertIn("**FAIL** server CPU per request", out)
        with open(os.path.join(d, "summary.md")) as f:
            self.assertEqual(f.read(), out)

    def test_missing_target_is_an_error(self):
        d = os.path.join(self.tmp, "sites")
        write_scenario(d, [target("ringd-flags", [run_result(1, 1, cpu=1)])])
        rc, _, err = quiet(benchtool.main, ["sites", d])
        self.assertEqual(rc, 1)
        self.assertIn("lacks ringd-flags or ringd-config", err)


class ProxySummary(Base):
    """benchtool.py proxy: issue 12's ratios per round and verdicts on their median."""

    def scenario(self, name, targets, meta=None):
        d = os.path.join(self.tmp, name)
        write_scenario(d, targets)
        if meta is not None:
            path = os.path.join(d, "report.json")
            with open(path) as f:
                doc = json.load(f)
            doc["meta"] = meta
            with open(path, "w") as f:
                json.dump(doc, f)
        return d

    def small(self, ringd_rps=(95000, 96000, 97000)):
        return self.scenario("proxy-small", [
            target("ringd", [run_result(r, 900, cpu=10.0) for r in ringd_rps]),
            target("nginx", [run_result(60000, 1500, cpu=c) for c in (24.0, 25.0, 26.0)]),
            target("haproxy", [run_result(70000, 1200, cpu=15.0) for _ in range(3)]),
            target("caddy", [run_result(30000, 3000, cpu=40.0) for _ in range(3)]),
        ], meta={"loadavg": "2.50 2.10 1.90", "server_cpus": "0"})

    def test_small_passes_every_bar_with_per_round_ratios(self):
        md, checks = benchtool.proxy_summary(self.small(), "small")
        self.assertEqual(checks, {"cpu_vs_nginx": True, "cpu_vs_haproxy": True, "rps": True})
        self.assertIn("rounds 0.42×, 0.40×, 0.38×", md)
        self.assertIn("Load average at the start: 2.50 2.10 1.90", md)
        self.assertIn("| 1 | caddy | 30,000 |", md)

    def test_small_reports_the_relay_as_the_floor(self):
        d = self.scenario("proxy-small", [
            target("ringd", [run_result(95000, 900, cpu=c) for c in (20.0, 21.0, 22.0)]),
            target("nginx", [run_result(60000, 1500, cpu=25.0) for _ in range(3)]),
            target("relay", [run_result(99000, 800, cpu=c) for c in (15.0, 16.0, 17.0)]),
        ])
        md, checks = benchtool.proxy_summary(d, "small")
        self.assertNotIn("relay", checks)
        self.assertIn("- reported: the floor: the TCP relay's CPU per request (relay) against nginx's", md)
        self.assertIn("relay 16.00 µs vs nginx 25.00 µs: median of the rounds' ratios 0.64×; "
                      "rounds 0.60×, 0.64×, 0.68×", md)
        self.assertIn("ringd 21.00 µs vs relay 16.00 µs: median of the rounds' ratios 1.31×", md)
        self.assertIn("| 3 | relay | 99,000 |", md)

    def test_small_rps_bar_does_not_apply_when_ringd_was_not_the_limit(self):
        # 10 µs/req at 20,000 req/s is 20% of a core: the upstream's core set the pace.
        md, checks = benchtool.proxy_summary(self.small(ringd_rps=(20000, 20000, 20000)), "small")
        self.assertIsNone(checks["rps"])
        self.assertIn("not the limit in any round (it used 20%, 20%, 20% of its core", md)
        self.assertTrue(checks["cpu_vs_nginx"])

    def test_small_cpu_bar_fails_above_half_of_nginx(self):
        d = self.scenario("proxy-small", [
            target("ringd", [run_result(95000, 900, cpu=15.0)]),
            target("nginx", [run_result(60000, 1500, cpu=25.0)]),
        ])
        md, checks = benchtool.proxy_summary(d, "small")
        self.assertFalse(checks["cpu_vs_nginx"])
        self.assertNotIn("cpu_vs_haproxy", checks)
        self.assertIn("**FAIL** proxy CPU per request against nginx", md)

    def test_small_flags_a_proxy_that_opened_connections(self):
        def with_tcp(r, opens_1k):
            r["tcp"] = {"other_opens_per_1k": opens_1k, "segs_per_request": 4.0}
            return r
        d = self.scenario("proxy-small", [
            target("ringd", [with_tcp(run_result(95000, 900, cpu=10.0), 0.0)]),
            target("nginx", [with_tcp(run_result(60000, 1500, cpu=25.0), 262.9)]),
            target("haproxy", [with_tcp(run_result(70000, 1200, cpu=15.0), 0.4)]),
        ])
        md, _ = benchtool.proxy_summary(d, "small")
        self.assertIn("| 1 | nginx | 60,000 |", md)
        self.assertIn("| 262.90 | 4.00 |", md)
        self.assertIn("⚠ opened connections during the measured run: nginx (up to 262.9 per 1000 responses)", md)
        self.assertNotIn("haproxy (up to", md)
        # Runs from before loadgen recorded the counters: no columns' figures, no warning.
        md, _ = benchtool.proxy_summary(self.small(), "small")
        self.assertNotIn("⚠ opened connections", md)
        self.assertIn("| – | – |", md)

    def test_large_bytes_and_cpu_per_byte(self):
        mib = 10 * 1048576
        d = self.scenario("proxy-large", [
            target("ringd", [run_result(100, 5000, cpu=2000.0, bytes_per_s=100 * mib)]),
            target("nginx", [run_result(80, 6000, cpu=3000.0, bytes_per_s=80 * mib)]),
        ])
        md, checks = benchtool.proxy_summary(d, "large")
        self.assertEqual(checks, {"bps": True, "cpu_per_byte": True})
        # 2000 µs per 10 MiB response = 200 µs/MiB.
        self.assertIn("ringd 200 µs/MiB vs nginx 300 µs/MiB", md)

    def test_gunicorn_slow_clients_p99_ratio(self):
        d = self.scenario("proxy-gunicorn-sync", [
            target("ringd", [run_result(3000, 1000, cpu=20.0) for _ in range(3)]),
            target("nginx", [run_result(2500, 1000, cpu=30.0) for _ in range(3)]),
        ])
        write_scenario(os.path.join(d, "slow-ringd"), [target("ringd", [run_result(2900, p, cpu=20.0) for p in (1500, 1800, 2500)])])
        write_scenario(os.path.join(d, "slow-nginx"), [target("nginx", [run_result(2000, p, cpu=30.0) for p in (3000, 3000, 3000)])])
        md, checks = benchtool.proxy_summary(d, "gunicorn")
        self.assertEqual(checks, {"rps": True, "slow_p99": True})
        self.assertIn("rounds 1.50×, 1.80×, 2.50× (spread 1.00)", md)
        # nginx's is reported, not a verdict.
        self.assertIn("- reported (outside the bar): nginx's p99 with the slow clients", md)
        self.assertIn("| 3 | ringd | 2,900 | 1.00 ms | 2.50 ms | 2.50× | 0 |", md)

    def test_gunicorn_lists_the_upstream_spread(self):
        d = self.scenario("proxy-gunicorn-gthread", [
            target("ringd", [run_result(2000, 1000, cpu=20.0)]),
            target("nginx", [run_result(2500, 1000, cpu=30.0)]),
        ])
        log = os.path.join(d, "upstream-spread.log")
        with open(log, "w") as f:
            f.write("# upstream-spread: test\n"
                    "11:00:01 ringd:100=5 ringd:200=59 nginx:100=64\n"
                    "11:00:03 ringd:100=5 ringd:200=59 nginx:100=64\n"
                    "11:00:05 ringd:200=64 nginx:100=63 nginx:200=1\n"
                    "11:00:07\n")
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "upstream-spread.sh")
        summary = subprocess.run(["bash", script, "--summarize", log], check=True,
                                 capture_output=True, text=True).stdout
        with open(log, "a") as f:
            f.write(summary)
        md, _ = benchtool.proxy_summary(d, "gunicorn")
        self.assertIn("## Upstream connections per gunicorn worker", md)
        self.assertIn("- nginx: 64/0, 63/1", md)
        self.assertIn("- ringd: 59/5, 64/0", md)

    def test_gunicorn_without_slow_runs_has_no_slow_verdict(self):
        d = self.scenario("proxy-gunicorn-gthread", [
            target("ringd", [run_result(2000, 1000, cpu=20.0)]),
            target("nginx", [run_result(2500, 1000, cpu=30.0)]),
        ])
        md, checks = benchtool.proxy_summary(d, "gunicorn")
        self.assertEqual(checks, {"rps": False, "slow_p99": None})
        self.assertIn("no slow-ringd/report.json", md)

    def test_cli_writes_summary_and_fails_without_ringd(self):
        d = self.small()
        rc, out, _ = quiet(benchtool.main, ["proxy", d, "--kind", "small"])
        self.assertEqual(rc, 0)
        with open(os.path.join(d, "summary.md")) as f:
            self.assertEqual(f.read(), out)
        bad = self.scenario("proxy-bad", [target("nginx", [run_result(1, 1, cpu=1.0)])])
        rc, _, err = quiet(benchtool.main, ["proxy", bad, "--kind", "small"])
        self.assertEqual(rc, 1)
        self.assertIn("lacks ringd or nginx", err)

    def test_a_proxy_only_run_is_listed_but_not_the_headline(self):
        results = os.path.join(self.tmp, "results")
        self.small_run(os.path.join(results, "2020-01-01-host"))
        side = os.path.join(results, "2020-03-03-host-proxy")
        write_scenario(os.path.join(side, "proxy-small"), [target("ringd", [run_result(1, 1, cpu=1)]),
                                                            target("nginx", [run_result(1, 1, cpu=1)])])
        with open(os.path.join(side, "proxy-small", "summary.md"), "w") as f:
            f.write("# proxy-small\n")
        with open(os.path.join(side, "scenarios.tsv"), "w") as f:
            f.write("proxy-small\tringd,nginx\tproxy-small: test\n")
        with open(os.path.join(side, "env.txt"), "w") as f:
            f.write("date: 2020-03-03T00:00:00Z\nhost: host\n")
        rc, _, _ = quiet(benchtool.main, ["headline", results])
        self.assertEqual(rc, 0)
        with open(os.path.join(results, "README.md")) as f:
            text = f.read()
        self.assertIn("## Headline: [2020-01-01-host]", text)
        self.assertIn("[proxy-small verdicts](2020-03-03-host-proxy/proxy-small/summary.md)", text)


class Scaling(Base):
    def test_table_and_svg(self):
        for w, rps in ((1, 1000), (2, 1900)):
            write_scenario(
                os.path.join(self.tmp, f"w{w}", "small"),
                [target("ringd-uring", [run_result(rps, 100)]), target("nginx", [run_result(rps / 2, 200)])],
            )
        rc, _, _ = quiet(benchtool.main, ["scaling", self.tmp])
        self.assertEqual(rc, 0)
        with open(os.path.join(self.tmp, "scaling.svg")) as f:
            svg = f.read()
        self.assertTrue(svg.startswith("<svg") and svg.rstrip().endswith("</svg>"))
        self.assertEqual(svg.count("<polyline"), 4)  # 2 targets × (measured + linear reference)
        with open(os.path.join(self.tmp, "README.md")) as f:
            md = f.read()
        self.assertIn("| small | ringd-uring | 2 | 1,900 |", md)
        self.assertIn("| 950 |", md)  # req/s per worker

    def test_nothing_to_plot_fails(self):
        rc, _, _ = quiet(benchtool.main, ["scaling", self.tmp])
        self.assertEqual(rc, 1)


class TuningDiff(Base):
    def test_before_after_change(self):
        write_scenario(os.path.join(self.tmp, "before", "connect"), [target("nginx", [run_result(1000, 900)])])
        write_scenario(os.path.join(self.tmp, "after", "connect"), [target("nginx", [run_result(1500, 600)])])
        rc, out, _ = quiet(benchtool.main, ["tuning-diff", os.path.join(self.tmp, "before"), os.path.join(self.tmp, "after")])
        self.assertEqual(rc, 0)
        self.assertIn("| connect | nginx | 1,000 | 1,500 | +50.0% | 900 µs | 600 µs | 0 | 0 |", out)


class MkData(Base):
    def test_sizes_and_determinism(self):
        d = os.path.join(self.tmp, "www")
        quiet(benchtool.main, ["mkdata", d])
        sizes = {n: os.path.getsize(os.path.join(d, n)) for n in os.listdir(d)}
        self.assertEqual(sizes, {"small.bin": 1000, "medium.bin": 102400, "large.bin": 10485760, "1mib.bin": 1048576, "hello.txt": 13, "page.html": 102400})
        with open(os.path.join(d, "hello.txt"), "rb") as f:
            self.assertEqual(f.read(), b"Hello, world!")
        with open(os.path.join(d, "small.bin"), "rb") as f:
            first = f.read()
        self.assertEqual(first, benchtool.deterministic_bytes("small.bin", 1000))
        rc, out, _ = quiet(benchtool.main, ["mkdata", d])
        self.assertEqual((rc, out), (0, ""))  # nothing rewritten the second time


WRK_SMALL = """Running 5s test @ http://127.0.0.1:1/small.bin
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   171.89us  189.17us   4.35ms   98.97%
    Req/Sec   211.80k     4.82k  215.97k    90.00%
  {req} requests in 5.00s, 246.75MB read
{extra}Requests/sec: {rps}
Transfer/sec:    246.55MB
"""


def write_wrk_check_run(d, rows):
    """rows: (section, file, size, round, target, tool, content, time_line, ticks)."""
    os.makedirs(os.path.join(d, "raw"), exist_ok=True)
    lines = ["\t".join(benchtool.RUNS_COLUMNS)]
    for i, (section, fname, size, rnd, tgt, tool, content, time_line, ticks) in enumerate(rows):
        raw = f"raw/{i}.{'json' if tool == 'loadgen' else 'txt'}"
        with open(os.path.join(d, raw), "w") as f:
            f.write(content if isinstance(content, str) else json.dumps(content))
        with open(os.path.join(d, f"raw/{i}.time.txt"), "w") as f:
            f.write(time_line + "\n")
        lines.append("\t".join([section, fname, str(size), str(rnd), tgt, tool, raw, f"raw/{i}.time.txt", str(ticks), "100"]))
    with open(os.path.join(d, "runs.tsv"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(d, "env.txt"), "w") as f:
        f.write("# env\nhost:          testhost\nserver cpu:    0\ngenerator cpu: 1\nrounds:        3\n")


def wrk_text(req, rps, extra=""):
    return WRK_SMALL.format(req=req, rps=rps, extra=extra)


class WrkCheck(Base):
    def test_parse_wrk(self):
        text = wrk_text(1000, "200.00", "  Socket errors: connect 1, read 2, write 3, timeout 4\n  Non-2xx or 3xx responses: 5\n")
        w = benchtool.parse_wrk(text)
        self.assertEqual(w["requests"], 1000)
        self.assertEqual(w["rps"], 200.0)
        self.assertAlmostEqual(w["duration_s"], 5.0)  # requests / Requests/sec
        self.assertAlmostEqual(w["transfer_bps"], 246.55 * 1024 * 1024)
        self.assertEqual((w["socket_errors"], w["non2xx"]), (10, 5))
        self.assertIsNone(benchtool.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")["rps"])

    def test_parse_gnu_time(self):
        self.assertEqual(benchtool.parse_gnu_time("5.01 0.10 0.90\n"), (5.01, 0.10, 0.90))
        self.assertEqual(benchtool.parse_gnu_time("Command terminated by signal 15\n5.01 0.10 0.90\n"), (5.01, 0.10, 0.90))
        self.assertIsNone(benchtool.parse_gnu_time(""))

    def test_summary_medians_ratios_and_verdicts(self):
        large = 10 * 1024 * 1024
        rows = []
        # 1000-byte: ringd 150k/s at 4 s of CPU per 5 s (5.33 µs/req); nginx 100k/s, 5 s (10 µs/req).
        for rnd, (rr, nr) in enumerate([(150000, 100000), (140000, 90000), (160000, 110000)], 1):
            rows.append(("server", "small.bin", 1000, rnd, "ringd-uring", "wrk", wrk_text(rr * 5, f"{rr}.00"), "5.00 0.50 4.00", 400))
            rows.append(("server", "small.bin", 1000, rnd, "nginx", "wrk", wrk_text(nr * 5, f"{nr}.00"), "5.00 0.50 4.00", 500))
        # 10 MiB: ringd 200 req/s with 2 s of CPU, nginx 250 req/s with 3 s: bytes/s fails, CPU/byte passes.
        for rnd in (1, 2, 3):
            rows.append(("server", "large.bin", large, rnd, "ringd-uring", "wrk", wrk_text(1000, "200.00"), "5.00 4.90 0.05", 200))
            rows.append(("server", "large.bin", large, rnd, "nginx", "wrk", wrk_text(1250, "250.00"), "5.00 4.00 0.05", 300))
        for rnd in (1, 2, 3):
            rows.append(("generator", "small.bin", 1000, rnd, "ringd-uring", "wrk", wrk_text(1000000, "200000.00"), "5.00 1.00 4.00", 400))
            rows.append(("generator", "small.bin", 1000, rnd, "ringd-uring", "loadgen",
                         {"requests": 1500000, "rps": 300000.0, "duration_s": 5.0, "status": {"200": 1500000}, "errors_total": 0}, "5.00 0.50 3.50", 450))
            rows.append(("generator", "small.bin", 1000, rnd, "nginx", "wrk", wrk_text(500000, "100000.00"), "5.00 0.50 2.00", 500))
            rows.append(("generator", "small.bin", 1000, rnd, "nginx", "loadgen",
                         {"requests": 400000, "rps": 80000.0, "duration_s": 5.0, "status": {"200": 400000}, "errors_total": 0}, "5.00 0.50 2.00", 500))
        rows.append(("pipeline", "small.bin", 1000, 1, "ringd-uring", "loadgen",
                     {"requests": 5000000, "rps": 1000000.0, "duration_s": 5.0, "status": {"200": 5000000}, "errors_total": 0}, "5.00 0.50 3.00", 500))
        write_wrk_check_run(self.tmp, rows)
        rc, out, err = quiet(benchtool.main, ["wrk-check", self.tmp])
        self.assertEqual(rc, 0, err)
        with open(os.path.join(self.tmp, "summary.md")) as f:
            md = f.read()
        self.assertEqual(md, out)
        # Medians: ringd 150,000 vs nginx 100,000 = 1.50×; CPU 4 s / 750,000 = 5.33 µs vs 10.00 µs = 0.53×.
        self.assertIn("**PASS** 1,000-byte file: req/s: ringd-uring 150,000 vs nginx 100,000 = 1.50× (bar ≥ 1.30×)", md)
        self.assertIn("**PASS** 1,000-byte file: server CPU per request: ringd-uring 5.33 µs vs nginx 10.00 µs = 0.53× (bar ≤ 0.70×)", md)
        self.assertIn("| ringd-uring | 150,000 | 150.0 | 5.33 | 5.333 | 1.50× |", md)
        # Every round is in the table, with the raw file linked.
        self.assertIn("| 2 | nginx | 450,000 | 90,000 | 90.0 | 5.00 | 100% | 11.11 |", md)
        # 10 MiB: 200 vs 250 req/s = 0.80× bytes/s (FAIL); CPU/byte 2 s/(1000 × 10 MiB) vs 3 s/(1250 × 10 MiB) = 0.83×.
        self.assertIn("**FAIL** 10 MiB file: bytes/s: ringd-uring 2,097.2 MB/s vs nginx 2,621.4 MB/s = 0.80× (bar ≥ 1.00×)", md)
        self.assertIn("**PASS** 10 MiB file: server CPU per byte: ringd-uring 0.191 ns vs nginx 0.229 ns = 0.83× (bar ≤ 1.00×)", md)
        # ringd's 10 MiB wrk used 99% of its core: flagged.
        self.assertIn("generator saturated", md)
        self.assertIn("⚠ wrk used ≥ 95% of its core in some rounds against ringd-uring", md)
        # Issue 3: loadgen 300,000 vs wrk 200,000 (PASS); CPU 4 s/1.5M = 2.67 µs vs 5 s/1M = 5.00 µs (PASS);
        # against nginx 80,000 vs 100,000 (FAIL), CPU 2.5/400k = 6.25 µs vs 2.5/500k = 5.00 µs (FAIL).
        self.assertIn("**PASS** against ringd-uring: req/s: loadgen 300,000 vs wrk 200,000 = 1.50×", md)
        self.assertIn("**PASS** against ringd-uring: generator CPU per request: loadgen 2.67 µs vs wrk 5.00 µs = 0.53×", md)
        self.assertIn("**FAIL** against nginx: req/s: loadgen 80,000 vs wrk 100,000 = 0.80×", md)
        self.assertIn("**FAIL** against nginx: generator CPU per request: loadgen 6.25 µs vs wrk 5.00 µs = 1.25×", md)
        self.assertIn("**FAIL** `--pipeline 16` against ringd-uring: 1,000,000 req/s (bar ≥ 1,500,000)", md)
        # The pipelined run's server used 5 s of CPU in 5 s: flagged as the limit.
        self.assertIn("the server, not loadgen, was the limit", md)

    def test_busy_poll_row_is_explained_from_its_figures(self):
        rows = []
        for rnd in (1, 2, 3):
            rows.append(("server", "small.bin", 1000, rnd, "ringd-uring", "wrk", wrk_text(1000000, "200000.00"), "5.00 0.50 4.50", 400))
            rows.append(("server", "small.bin", 1000, rnd, "nginx", "wrk", wrk_text(800000, "160000.00"), "5.00 0.50 4.00", 500))
            rows.append(("server", "small.bin", 1000, rnd, "ringd-uring-busy-poll", "wrk", wrk_text(1050000, "210000.00"), "5.00 0.50 4.40", 500))
        write_wrk_check_run(self.tmp, rows)
        md, verdicts = benchtool.wrk_check_report(self.tmp)
        # 210,000 / 160,000 = 1.31×; wrk 4.9 s of 5 s = 98%; CPU 5 s / 1.05M = 4.76 µs vs 6.25 µs = 0.76×.
        self.assertIn("Against it wrk reached 210,000 req/s (1.31× nginx's median) with its own core 98% busy", md)
        self.assertIn("(4.76 µs, 0.76× nginx's) includes the polling", md)
        # The verdicts stay about ringd-uring (200,000 vs 160,000 = 1.25×).
        self.assertIn("ringd-uring 200,000 vs nginx 160,000 = 1.25×", "\n".join(line for _, line in verdicts))

    def test_invalid_runs_are_left_out_of_medians(self):
        rows = [
            ("server", "small.bin", 1000, 1, "ringd-uring", "wrk", wrk_text(1000, "200.00"), "5.00 0.1 0.1", 100),
            ("server", "small.bin", 1000, 2, "ringd-uring", "wrk", wrk_text(1000, "100.00", "  Non-2xx or 3xx responses: 2000\n"), "5.00 0.1 0.1", 100),
            ("server", "small.bin", 1000, 1, "nginx", "wrk", "unable to connect\n", "", ""),
        ]
        write_wrk_check_run(self.tmp, rows)
        md, _ = benchtool.wrk_check_report(self.tmp)
        self.assertIn("INVALID", md)
        self.assertIn("| ringd-uring | 200 |", md)  # the median is round 1's alone
        self.assertIn("**n/a** 1,000-byte file: req/s: ringd-uring 200 vs nginx – = –", md)

    def test_bad_runs_tsv_fails(self):
        with open(os.path.join(self.tmp, "runs.tsv"), "w") as f:
            f.write("not\ta\theader\n")
        rc, _, err = quiet(benchtool.main, ["wrk-check", self.tmp])
        self.assertEqual(rc, 1)
        self.assertIn("header", err)


def write_soak_run(d, rss_rows, before, after, duration_s=600):
    with open(os.path.join(d, "rss.csv"), "w") as f:
        f.write("t_s,loadgen_rss_kib,loadgen_hwm_kib,ringd_rss_kib,ringd_hwm_kib,ringd_fds\n")
        for r in rss_rows:
            f.write(",".join(str(x) for x in r) + "\n")
    for name, fds in (("fds-before.txt", before), ("fds-after.txt", after)):
        if fds is not None:
            with open(os.path.join(d, name), "w") as f:
                f.write("".join(line + "\n" for line in fds))
    with open(os.path.join(d, "env.txt"), "w") as f:
        f.write(f"# env\nhost:          testhost\nrate:          20000 req/s\nduration seconds: {duration_s}\n")
    with open(os.path.join(d, "loadgen.json"), "w") as f:
        json.dump({"requests": 100, "duration_s": 600.0, "target_rps": 20000, "achieved_rps": 19999.0, "rps": 19999.0,
                   "errors_total": 0, "status": {"200": 100}, "latency_us": {"p50": 50, "p99": 120, "p999": 400, "max": 900},
                   "warnings": ["a test warning"]}, f)


class Soak(Base):
    FDS = ["0 -> /dev/null", "3 -> anon_inode:[io_uring]", "4 -> socket:[1]"]

    def test_growth_from_the_30s_sample_passes_under_1_mib(self):
        rows = [(0.0, 4000, 4000, 9000, 9000, 10), (10.01, 6000, 6000, 9100, 9100, 74), (30.01, 6100, 6100, 9200, 9200, 74),
                (599.5, 7000, 7000, 9300, 9300, 74)]
        write_soak_run(self.tmp, rows, self.FDS, self.FDS)
        rc, out, err = quiet(benchtool.main, ["soak", self.tmp])
        self.assertEqual(rc, 0, err)
        self.assertIn("**PASS** loadgen VmRSS growth from the 30 s sample to the last (600 s): 900 KiB (bar < 1024 KiB = 1 MiB)", out)
        self.assertIn("**PASS** ringd open fds before the run 3, after it (connections closed) 3", out)
        self.assertIn("ringd VmRSS growth over the same span (for information): 100 KiB", out)
        self.assertIn("loadgen warning: a test warning", out)
        self.assertNotIn("lasted", out)
        with open(os.path.join(self.tmp, "summary.md")) as f:
            self.assertEqual(f.read(), out)

    def test_growth_of_1_mib_fails_and_leaked_fds_are_listed(self):
        rows = [(0.0, 4000, 4000, 9000, 9000, 10), (30.0, 5000, 5000, 9000, 9000, 74), (39.5, 6024, 6024, 9000, 9000, 75)]
        write_soak_run(self.tmp, rows, self.FDS, self.FDS + ["9 -> socket:[77]"], duration_s=40)
        md, _ = benchtool.soak_report(self.tmp)
        self.assertIn("**FAIL** loadgen VmRSS growth from the 30 s sample to the last (40 s): 1,024 KiB", md)
        self.assertIn("**FAIL** ringd open fds before the run 3, after it (connections closed) 4", md)
        self.assertIn("9 -> socket:[77]", md)
        self.assertIn("this run lasted 40 s", md)

    def test_no_sample_after_30s_is_no_verdict(self):
        write_soak_run(self.tmp, [(0.0, 1, 1, 1, 1, 1), (10.0, 1, 1, 1, 1, 1)], self.FDS, None)
        md, _ = benchtool.soak_report(self.tmp)
        self.assertIn("**n/a** loadgen VmRSS growth: – KiB", md)
        self.assertIn("**n/a** ringd open fds", md)


if __name__ == "__main__":
    unittest.main()
