"""Replay evaluation (evals/replay.py): pooling, oracle, cost-to-reach, and a real RouterBench check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evals.metrics import aiq, upper_hull
from evals.replay import cost_to_reach, main, oracle_choice, pooled_curve, run_replay
from evals.replay_data import load_any

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def test_oracle_choice_cheapest_best() -> None:
    s = np.array([[1, 1, 0], [0, 0, 0], [0, 1, 1]], dtype=float)
    c = np.array([[3, 1, 2], [3, 1, 2], [1, 5, 4]], dtype=float)
    assert oracle_choice(s, c).tolist() == [1, 1, 2]


def test_cost_to_reach_interpolates_on_the_hull() -> None:
    pts = [(1.0, 0.5), (3.0, 0.9), (2.0, 0.4)]
    assert cost_to_reach(pts, 0.5) == 1.0
    assert abs(cost_to_reach(pts, 0.7) - 2.0) < 1e-12
    assert cost_to_reach(pts, 0.95) == float("inf")


def test_pooled_curve_one_fold_is_its_hull_and_weights_average() -> None:
    a = [(1.0, 0.5), (2.0, 0.8), (3.0, 0.7)]
    assert pooled_curve([a], [10]) == upper_hull(a)
    b = [(1.0, 0.3), (2.0, 0.6)]
    got = dict(pooled_curve([a, b], [1, 3]))
    assert abs(got[1.0] - (0.5 + 3 * 0.3) / 4) < 1e-12
    assert abs(got[2.0] - (0.8 + 3 * 0.6) / 4) < 1e-12


@pytest.fixture(scope="module")
def routerbench_sample():
    sm = load_any(DATA / "routerbench").dropna("any")
    rows = np.sort(np.random.default_rng(0).choice(sm.n, 600, replace=False))
    return sm.subset(rows)


def test_learned_router_beats_zero_router_on_held_out_folds(routerbench_sample) -> None:
    res = run_replay(routerbench_sample, ["coe", "knn"], folds=3, seed=0, progress=False)
    zero = res["zero"]["aiq"]
    assert zero == aiq(routerbench_sample.model_points())
    assert res["coe"]["aiq"] >= zero
    # the sweep spans the single models' cost range
    lo = min(c for c, _ in routerbench_sample.model_points()) * 1000
    assert res["coe"]["curve_cost_min_per_1k"] <= lo * 1.5


def test_main_json_last_line(tmp_path, capsys) -> None:
    rc = main(["--data", str(DATA / "routellm" / "gsm8k_responses.csv"), "--routers", "cheapest,best,knn",
               "--folds", "2", "--max-rows", "200", "--json", "--no-curve"])
    assert rc == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    res = json.loads(last)
    assert {"cheapest", "best", "knn", "oracle", "zero"} <= set(res)
    assert res["zero"]["apgr"] == 0.5 and 0.0 <= res["best"]["accuracy"] <= 1.0
    assert res["oracle"]["accuracy"] >= max(r["accuracy"] for k, r in res.items() if k.startswith("single:"))
