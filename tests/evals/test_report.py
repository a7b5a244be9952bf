"""Report: numbers from a synthetic run against reference computations, a self-contained HTML page, and the page
drawn in headless Chromium (DOM after load + a screenshot that is not blank)."""

from __future__ import annotations

import math
import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from evals import report
from evals.cli import main as cli_main
from evals.run_store import append_result, load_run, write_meta
from evals.svg import PALETTE

ROUTES = ["small", "large", "router", "collab"]


def make_run(root: Path, n: int = 30, seed: int = 0) -> Path:
    """A run folder with two backends, a router choosing between them and a collaboration with provenance."""
    rng = random.Random(seed)
    d = root / "synthetic"
    write_meta(d, {"run_id": "synthetic", "routes": ROUTES, "suite": "arithmetic"})
    for i in range(n):
        cat = f"ops{2 + 2 * (i % 3)}"
        for rt in ROUTES:
            model = {"small": "small", "large": "large", "collab": None}.get(rt)
            if rt == "router":
                model = "large" if rng.random() < 0.4 else "small"
            p, c = {"small": (0.5, 1e-5), "large": (0.9, 1e-3), None: (0.8, 2e-4)}[model]
            if model is None:
                prov = [["small", "3 * 4 = 12\n"], ["large", "12 + 5"], ["small", " = 17\nanswer: 17"]]
                tokens = {"small": {"prompt": 20, "completion": 12}, "large": {"prompt": 20, "completion": 4}}
            else:
                prov, tokens = None, {model: {"prompt": 20, "completion": 10}}
            row = {"run_id": "synthetic", "route": rt, "item_id": f"it{i:03d}", "suite": "arithmetic", "category": cat,
                   "score": float(rng.random() < p), "cost_usd": c * rng.uniform(0.5, 1.5),
                   "latency_s": rng.uniform(0.1, 1.0), "ttft_s": 0.05, "tokens": tokens, "request_id": f"{rt}{i}",
                   "decision": {"route": rt, "backend": model or "small"}, "prompt": "q", "output": "answer: 17",
                   "provenance": prov, "error": None}
            append_result(d, row)
    append_result(d, {**row, "route": "small", "item_id": "it000", "error": "boom", "score": None})  # older success wins
    return d


@pytest.fixture
def run_dir(tmp_path):
    return make_run(tmp_path)


def test_summary_numbers(run_dir):
    run = load_run(run_dir)
    s = report.summarize(run, n_boot=200)
    assert [r.route for r in s.routes] == ROUTES and s.n_items == 30
    rows = [r for r in run.rows if r.get("error") is None]
    for r in s.routes:
        mine = [x for x in rows if x["route"] == r.route]
        acc = sum(x["score"] for x in mine) / len(mine)
        cost = sum(x["cost_usd"] for x in mine) / len(mine)
        assert r.n == len(mine) == 30
        assert r.accuracy == pytest.approx(acc)
        assert r.cost_per_1k == pytest.approx(1000 * cost)
        assert r.cost_of_pass == pytest.approx(cost / acc)
        assert r.accuracy_ci[0] <= acc <= r.accuracy_ci[1]
        assert r.cost_of_pass_ci[0] <= cost / acc <= r.cost_of_pass_ci[1]
    # Pareto flags: a route is on the frontier iff no other route is cheaper-or-equal and at least as accurate
    pts = {r.route: (r.mean_cost, r.accuracy) for r in s.routes}
    for r in s.routes:
        dominated = any(o != r.route and c <= pts[r.route][0] and a >= pts[r.route][1] and (c, a) != pts[r.route]
                        for o, (c, a) in pts.items())
        assert r.on_frontier == (not dominated)
    # frontier cost-of-pass: per item the cheapest passing route's cost, averaged over items some route solves
    per_item = []
    for it in run.items:
        vals = [x["cost_usd"] / x["score"] for x in rows if x["item_id"] == it and x["score"] > 0]
        if vals:
            per_item.append(min(vals))
    assert s.frontier_cop_solved == pytest.approx(np.mean(per_item))
    assert s.unsolved == 30 - len(per_item)
    # routing mix: the router's shares are the counts of each backend it chose
    chosen = [x["decision"]["backend"] for x in rows if x["route"] == "router"]
    assert s.mix["router"]["all"]["large"] == pytest.approx(chosen.count("large") / len(chosen))
    assert s.mix["collab"]["all"]["large"] == pytest.approx(4 / 16)  # completion-token share
    assert list(s.samples) == ["collab"] and len(s.samples["collab"]) == report.MAX_SAMPLES


def test_html_is_self_contained(run_dir, tmp_path):
    html, md = report.write_report(load_run(run_dir), tmp_path / "out")
    text = html.read_text()
    assert text.startswith("<!DOCTYPE html>")
    assert not re.search(r"https?://|//cdn|src=|href=|@import|url\(", text), "external reference in the report"
    for section in ("Cost vs accuracy", "Cost-of-pass", "Routing mix per category", "Latency", "who wrote"):
        assert section in text
    assert text.count("<svg") == 3
    assert '<span style="background:' in text and 'title="large"' in text  # coloured tokens
    summary = md.read_text()
    assert "| collab |" in summary and "Frontier cost-of-pass" in summary


def test_cli_report(run_dir, tmp_path):
    assert cli_main(["report", str(run_dir), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report.html").exists() and (tmp_path / "r" / "summary.md").exists()
    assert cli_main(["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "r2")]) == 2


def _chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.environ.get("CI", "").lower() == "true":
        pytest.fail("chromium is required in CI (apt-get install chromium)")
    if found is None:
        pytest.skip("chromium not installed")
    return found


def _chrome(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1200,2000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


@pytest.mark.timeout(240)
def test_plots_drawn_in_chromium(run_dir, tmp_path):
    binary = _chromium()
    html, _ = report.write_report(load_run(run_dir), tmp_path / "out")
    url = html.resolve().as_uri()
    dom = _chrome(binary, tmp_path / "p1", "--virtual-time-budget=3000", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    m = re.search(r'data-plots-drawn="(\d+)"', dom.stdout)
    assert m and int(m.group(1)) == 3, "the page script did not see three laid-out plots"
    scatter = dom.stdout[dom.stdout.index('id="scatter"'):]
    scatter = scatter[: scatter.index("</svg>")]
    assert scatter.count("<circle") == len(ROUTES)
    assert "frontier" in scatter and "hull" in scatter
    rect = re.search(r'id="scatter"[^>]*data-rect="(\d+),(\d+),(\d+),(\d+)"', dom.stdout) or re.search(
        r'data-rect="(\d+),(\d+),(\d+),(\d+)"[^>]*id="scatter"', dom.stdout)
    assert rect, "no layout box for the scatter plot"
    x0, y0, w, h = (int(v) for v in rect.groups())
    assert w > 500 and h > 250

    shot = tmp_path / "shot.png"
    res = _chrome(binary, tmp_path / "p2", f"--screenshot={shot}", url)
    assert shot.exists(), res.stderr[-2000:]
    from PIL import Image

    page = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert page.shape[0] >= 1000 and page.shape[1] == 1200
    non_white = (page.min(axis=2) < 240).mean()
    assert 0.05 < non_white < 0.9 and not math.isnan(non_white)
    # inside the scatter's box: every route's point colour, and the dark frontier line
    img = page[y0:y0 + h, x0:x0 + w]
    for hex_colour in PALETTE[: len(ROUTES)]:
        rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
        hits = (np.abs(img - rgb).sum(axis=2) < 12).sum()
        assert hits > 60, f"point colour {hex_colour} barely drawn in the scatter ({hits} pixels)"
    dark = (img.max(axis=2) < 60).sum()
    assert dark > 300, f"frontier line and labels not drawn ({dark} dark pixels)"
