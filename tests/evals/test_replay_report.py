"""Replay report (evals/replay_report.py) drawn from a real replay run, and `tandem eval replay --report`."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from evals.replay import main, run_replay
from evals.replay_data import load_any
from evals.replay_report import render_replay_html, router_names, swept_routers

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
ROUTERS = ["ellie-heuristic", "knn", "cheapest", "random"]  # two with a knob, two that make one point each


@pytest.fixture(scope="module")
def gsm8k_results() -> dict:
    sm = load_any(DATA / "routellm" / "gsm8k_responses.csv").dropna("any")
    rows = np.sort(np.random.default_rng(0).choice(sm.n, 300, replace=False))
    return run_replay(sm.subset(rows), ROUTERS, folds=3, seed=0, progress=False)


def _svg(page: str, svg_id: str) -> str:
    m = re.search(rf'<svg[^>]*id="{svg_id}".*?</svg>', page, re.S)
    assert m, f"no #{svg_id} plot"
    return m.group(0)


def test_pgr_curve_integrates_to_the_reported_apgr(gsm8k_results) -> None:
    for name in ROUTERS:
        r = gsm8k_results[name]
        xs, ys = np.array(r["pgr_curve"]).T
        assert xs[0] == 0.0 and xs[-1] == 1.0
        area = float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2))
        assert area == pytest.approx(r["apgr"], abs=0.01), name


def test_page_draws_every_router_and_reports_its_numbers(gsm8k_results) -> None:
    page = render_replay_html(gsm8k_results, {"source": "gsm8k", "rows": 300, "models": ["a", "b"], "folds": 3})
    names = router_names(gsm8k_results)
    assert set(names) == set(ROUTERS)
    aiqs = [gsm8k_results[n]["aiq"] for n in names]
    assert aiqs == sorted(aiqs, reverse=True)
    curves, pgr, bars = _svg(page, "curves"), _svg(page, "pgr"), _svg(page, "aiq")
    assert swept_routers(gsm8k_results) == [n for n in names if n in ("ellie-heuristic", "knn")]
    for name in names:
        drawn = name in ("ellie-heuristic", "knn")
        assert (f"<title>{name}: AIQ {gsm8k_results[name]['aiq']:.4f}</title>" in curves) == drawn
        assert (f"<title>{name}: APGR {gsm8k_results[name]['apgr']:.3f}</title>" in pgr) == drawn
        assert (f"<title>{name}: AIQ {gsm8k_results[name]['aiq']:.4f}</title>" in bars) == drawn
    assert f"zero router {gsm8k_results['zero']['aiq']:.4f}" in bars
    assert curves.count('class="pt"') == 2  # one dot per single model
    assert curves.count('class="default-point"') == 2  # where each swept router deploys
    for name in ("ellie-heuristic", "knn"):
        assert f"<title>{name} deploys here (the cheapest knob reaching 0.95 of the best model)" in curves
    table = page[page.index("<table>"):]
    order = [table.index(f"{n}</td>") for n in names]
    assert order == sorted(order)
    assert f"<td>{gsm8k_results['oracle']['aiq']:.4f}</td>" in table


def test_cli_writes_the_report_without_a_pgr_plot_for_many_models(tmp_path, capsys) -> None:
    rc = main(["--data", str(DATA / "routerbench" / "mbpp_train.csv"), "--routers", "ellie-heuristic,cheapest",
               "--folds", "2", "--report", str(tmp_path / "rep")])
    assert rc == 0
    page = (tmp_path / "rep" / "replay.html").read_text()
    assert "report: " in capsys.readouterr().err
    assert 'id="curves"' in page and 'id="aiq"' in page and 'id="pgr"' not in page  # 11 models: no strong/weak
    assert "--report" in page  # the command that made it


@pytest.mark.timeout(240)
def test_curves_drawn_in_chromium(gsm8k_results, tmp_path) -> None:
    from PIL import Image

    from evals.replay_report import write_replay_report
    from evals.svg import colours
    from tests.evals.test_report import _chrome, _chromium

    binary = _chromium()
    page = write_replay_report(gsm8k_results, {"source": "gsm8k", "rows": 300, "folds": 3}, tmp_path / "rep")
    shot = tmp_path / "shot.png"
    res = _chrome(binary, tmp_path / "profile", f"--screenshot={shot}", page.resolve().as_uri())
    assert shot.exists(), res.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    for name, hex_colour in colours(swept_routers(gsm8k_results)).items():
        rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
        hits = (np.abs(img - rgb).sum(axis=2) < 12).sum()
        assert hits > 200, f"{name}'s colour {hex_colour} barely drawn ({hits} pixels)"
