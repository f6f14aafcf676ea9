#!/usr/bin/env python3
"""Tests for scripts/benchtool.py against report.json files shaped like loadgen compare's.

Run: python3 scripts/test_benchtool.py (stdlib unittest; scripts/ci-smoke.sh runs it).
"""

import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import unittest

sys.dont_write_bytecode = True  # keep scripts/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchtool  # noqa: E402


def run_result(rps, p99, cpu=None, errors=0, saturated=False, bytes_per_s=None):
    return {
        "requests": int(rps * 10),
        "duration_s": 10.0,
        "rps": rps,
        "bytes_per_s": bytes_per_s if bytes_per_s is not None else rps * 1200,
        "errors": {"reset": errors} if errors else {},
        "errors_total": errors,
        "latency_us": {"p50": p99 / 4, "p99": p99, "p999": p99 * 2},
        "server_cpu_us_per_request": cpu,
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
                target("ringd-uring", [run_result(r, 800, cpu=40) for r in ringd_rps]),
                target("nginx", [run_result(r, 1600, cpu=80) for r in nginx_rps]),
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
        self.assertIn("[2020-01-01-old](2020-01-01-old/)", text)
        with open(readme) as f:
            top = f.read()
        self.assertNotIn("stale", top)
        self.assertTrue(top.startswith("intro\n") and top.endswith("end\n"))
        self.assertIn("results/2020-02-01-new/small/report.md", top)

    def test_no_runs_yet(self):
        results = os.path.join(self.tmp, "results")
        os.makedirs(results)
        rc, _, _ = quiet(benchtool.main, ["headline", results])
        self.assertEqual(rc, 0)
        with open(os.path.join(results, "README.md")) as f:
            self.assertIn("No run with scenario reports yet", f.read())


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
        self.assertEqual(sizes, {"small.bin": 1000, "medium.bin": 102400, "large.bin": 10485760, "hello.txt": 13})
        with open(os.path.join(d, "hello.txt"), "rb") as f:
            self.assertEqual(f.read(), b"Hello, world!")
        with open(os.path.join(d, "small.bin"), "rb") as f:
            first = f.read()
        self.assertEqual(first, benchtool.deterministic_bytes("small.bin", 1000))
        rc, out, _ = quiet(benchtool.main, ["mkdata", d])
        self.assertEqual((rc, out), (0, ""))  # nothing rewritten the second time


if __name__ == "__main__":
    unittest.main()
