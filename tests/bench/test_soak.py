"""bench/soak.py: its statistics against reference twins, and a short real soak (stub upstream + ``tandem serve``)."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import numpy as np
import pytest

from bench.soak import Sample, bucketize, error_rate, slope_per_minute, summarize_samples


def test_slope_matches_numpy_polyfit():
    rng = random.Random(0)
    pts = [(t, 100 + 0.05 * t + rng.gauss(0, 1)) for t in range(0, 120, 1)]
    ref = np.polyfit([t for t, _ in pts], [y for _, y in pts], 1)[0] * 60
    assert slope_per_minute(pts) == pytest.approx(ref, rel=1e-9)
    assert slope_per_minute([(1.0, 5.0)]) is None and slope_per_minute([(1.0, 5.0), (1.0, 6.0)]) is None


def test_bucketize_and_error_rate_against_a_direct_count():
    rng = random.Random(1)
    samples = [Sample(rng.uniform(0, 30), rng.random() > 0.1, rng.uniform(5, 500), rng.uniform(1, 5))
               for _ in range(500)]
    rss = [(t + 0.5, 100.0 + t) for t in range(30)]
    buckets = bucketize(samples, rss, 10.0, 30.0)
    assert [b["start_s"] for b in buckets] == [0.0, 10.0, 20.0]
    for b in buckets:
        inside = [s for s in samples if b["start_s"] <= s.t < b["start_s"] + 10]
        assert b["requests"] == len(inside)
        assert b["error_rate"] == pytest.approx(sum(not s.ok for s in inside) / len(inside))
        ok = [s.latency_ms for s in inside if s.ok]
        assert b["p50_ms"] == pytest.approx(float(np.percentile(ok, 50)))
        assert b["p99_ms"] == pytest.approx(float(np.percentile(ok, 99)))
        assert b["rss_mib"] == pytest.approx(np.mean([m for t, m in rss if b["start_s"] <= t < b["start_s"] + 10]))
    assert sum(b["requests"] for b in buckets) == len(samples)
    assert error_rate([]) == 0.0 and summarize_samples([])["p50_ms"] is None


def test_short_soak_reports_json():
    out = subprocess.run([sys.executable, "-m", "bench.soak", "--duration", "4", "--rate", "5", "--interval", "2",
                          "--json"], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    rep = json.loads(out.stdout)
    assert rep["overall"]["requests"] == 20 and rep["overall"]["error_rate"] == 0.0
    assert len(rep["intervals"]) == 2 and rep["rss_start_mib"] > 10
    assert rep["overall"]["p50_ms"] > 0
