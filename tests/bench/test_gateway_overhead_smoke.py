"""Smoke test of bench/gateway_overhead.py: a short run against the upstream stub, with a second stub standing in
for the gateway (``--gateway-url``), checks the JSON line; plus the statistics against numpy.

What it leaves out: the real ``tandem serve`` path (the benchmark itself exercises it) and any performance target.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.gateway_overhead import compare, level_targets, start_stub
from bench.levels import level_row
from bench.loadgen import JobResult, parse_target, percentile, summarize

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 99, 100])
def test_percentile_matches_numpy(q: float) -> None:
    rng = random.Random(q)
    for n in (1, 2, 7, 100, 1001):
        xs = [rng.expovariate(1.0) for _ in range(n)]
        assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)), rel=1e-12, abs=1e-12)


def test_summarize_and_errors() -> None:
    s = summarize([3.0, 1.0, 2.0])
    assert (s["p50"], s["min"], s["max"], s["mean"]) == (2.0, 1.0, 3.0, 2.0)
    assert math.isnan(summarize([])["p50"])
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_parse_target_accepts_both_base_url_forms() -> None:
    assert parse_target("http://127.0.0.1:9/v1", "m").path == "/v1/chat/completions"
    assert parse_target("http://127.0.0.1:9/", "m").path == "/v1/chat/completions"
    assert parse_target("http://h/proxy/v1/", "m").port == 80
    with pytest.raises(ValueError):
        parse_target("https://h/v1", "m")


def test_compare_computes_added_and_ratios() -> None:
    keys = ["p50_ms", "p99_ms", "stream_p50_ms", "stream_p99_ms", "ttft_p50_ms", "ttft_p99_ms", "rps", "stream_rps"]
    direct = {k: 1.0 + i for i, k in enumerate(keys)}
    gateway = {k: 2.0 * (1.0 + i) for i, k in enumerate(keys)}
    r = compare(direct, gateway)
    assert r["added_p50_ms"] == 1.0 and r["added_p99_ms"] == 2.0
    assert r["ratio_rps"] == 2.0 and r["gateway_rps"] == 14.0 and r["direct_rps"] == 7.0


def test_level_row_is_the_gateway_against_direct_at_the_same_level() -> None:
    rng = random.Random(7)
    d = [rng.expovariate(10.0) for _ in range(5000)]
    g = [x + 0.5 + rng.expovariate(2.0) for x in d]
    row = level_row("nonstream", 16, JobResult(d, d, ok=5000, elapsed_s=2.0), JobResult(g, g, ok=4000, errors=3,
                                                                                       elapsed_s=2.0))
    assert (row["mode"], row["concurrency"], row["rps"], row["direct"]["rps"]) == ("nonstream", 16, 2000.0, 2500.0)
    for k, q in (("p50_ms", 50), ("p99_ms", 99), ("p999_ms", 99.9)):
        assert row[k] == pytest.approx(float(np.percentile(g, q)))
        assert row["direct"][k] == pytest.approx(float(np.percentile(d, q)))
    assert row["added_p50_ms"] == pytest.approx(row["p50_ms"] - row["direct"]["p50_ms"])
    assert row["added_p99_ms"] == pytest.approx(row["p99_ms"] - row["direct"]["p99_ms"])
    assert row["errors"] == 3 and row["samples"] == 5000


def test_level_targets() -> None:
    ok = {"mode": "nonstream", "concurrency": 16, "p50_ms": 5.0, "p99_ms": 15.0, "p999_ms": 25.0, "rps": 2000.0}
    c1 = {"mode": "nonstream", "concurrency": 1, "added_p99_ms": 2.5}
    assert level_targets([ok, c1]) == {"c16_p99_le_3x_p50": True, "c16_p999_le_5x_p50": True,
                                       "c16_rps_ge_2000": True, "c1_added_p99_le_2ms": False}
    assert level_targets([{**ok, "p99_ms": 15.1, "p999_ms": 25.1, "rps": 1999.0}]) == {
        "c16_p99_le_3x_p50": False, "c16_p999_le_5x_p50": False, "c16_rps_ge_2000": False}
    assert level_targets([]) == {}


@pytest.mark.slow
def test_benchmark_json_against_a_second_stub() -> None:
    proc, gw_url = start_stub(tokens=8, chunk_delay_ms=0.0)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "bench.gateway_overhead", "--gateway-url", gw_url, "--requests", "200",
             "--warmup", "20", "--duration", "0.4", "--concurrency", "8", "--max-tokens", "8", "--levels", "1,4",
             "--level-duration", "0.3", "--json"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )
    finally:
        proc.terminate()
        proc.wait(5)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("added_p50_ms", "added_p99_ms", "gateway_rps", "direct_rps", "added_ttft_p50_ms",
                "gateway_ttft_p50_ms", "direct_stream_rps", "gateway_stream_rps"):
        assert isinstance(report[key], float) and math.isfinite(report[key]), key
    for key in ("gateway_rps", "direct_rps", "gateway_stream_rps", "direct_stream_rps", "gateway_p50_ms",
                "direct_p50_ms", "gateway_p99_ms", "direct_ttft_p99_ms"):
        assert report[key] > 0, key
    assert report["gateway_p99_ms"] >= report["gateway_p50_ms"]
    assert report["errors"] == 0
    assert report["added_p50_ms"] == pytest.approx(report["gateway_p50_ms"] - report["direct_p50_ms"])
    levels = report["levels"]
    assert [(r["mode"], r["concurrency"]) for r in levels] == [("nonstream", 1), ("nonstream", 4), ("stream", 1),
                                                               ("stream", 4)]
    for r in levels:
        assert r["rps"] > 0 and r["direct"]["rps"] > 0 and r["errors"] == 0
        assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["p999_ms"]
        assert r["added_p99_ms"] == pytest.approx(r["p99_ms"] - r["direct"]["p99_ms"])
