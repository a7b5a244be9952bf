"""Replay evaluation (evals/replay.py): pooling, oracle, cost-to-reach, and a real RouterBench check."""

from __future__ import annotations

import dataclasses
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
    assert res["oracle"]["aiq"] >= res["zero"]["aiq"]


def test_near_duplicates_share_a_group_and_a_fold() -> None:
    from evals.folds import folds_for, near_duplicate_groups

    tail = "\nA) {a}\nB) {b}\nPrint only a single choice from A or B. Answer:"
    texts = [
        "The trophy did not fit in the suitcase because the _ was too big." + tail.format(a="trophy", b="suitcase"),
        "The trophy did not fit in the suitcase because the _ was too small." + tail.format(a="trophy", b="suitcase"),
        "Sam paid Alex back because _ had borrowed money last week." + tail.format(a="Sam", b="Alex"),
        "The cat chased the dog across the yard until _ got tired and slept." + tail.format(a="cat", b="dog"),
        "Maria thanked Lucy for the gift because _ was very generous all year." + tail.format(a="Maria", b="Lucy"),
        "What is 2 plus 2?",
        "what is   2 PLUS 2?",  # the same text up to case and spaces, in another category
    ]
    cats = ["wino"] * 5 + ["math", "other"]
    g = near_duplicate_groups(texts, cats)
    assert g[0] == g[1] and g[5] == g[6]
    assert len({g[0], g[2], g[3], g[4], g[5]}) == 5  # shared answer instructions alone do not link prompts
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 40, 200)
    folds = folds_for(200, 5, seed=3, groups=groups)
    seen = np.concatenate([te for _, te in folds])
    assert sorted(seen.tolist()) == list(range(200))
    for tr, te in folds:
        assert not set(groups[tr]) & set(groups[te])


def test_replay_gives_labels_to_training_queries_only() -> None:
    from routers.baselines import BestRouter
    from routers.registry import RouterRegistry

    seen: dict[str, list] = {"fit": [], "prepare": []}

    class Spy(BestRouter):
        name = "spy"

        def fit(self, data, queries=None):
            seen["fit"] += [q.category for q in queries]
            return super().fit(data, queries)

        def prepare(self, queries):
            seen["prepare"] += [q.category for q in queries]
            return super().prepare(queries)

    reg = RouterRegistry()
    reg.register("spy", Spy)
    sm = load_any(DATA / "routerbench" / "mbpp_train.csv").dropna("any")
    run_replay(sm.subset(np.arange(60)), ["spy"], folds=3, registry=reg, progress=False)
    assert seen["fit"] and all(c == "mbpp" for c in seen["fit"])
    assert len(seen["prepare"]) == 60 and all(c is None for c in seen["prepare"])


def test_router_options_reach_only_routers_that_take_them(capsys) -> None:
    from evals.replay import parse_options, router_options
    from routers.baselines import KnnRouter
    from routers.calibrated import CalibratedRouter

    opts = parse_options(["query_costs=false", "knn_k=7", "name=x y"])
    assert opts == {"query_costs": False, "knn_k": 7, "name": "x y"}
    assert router_options(CalibratedRouter, opts) == {"query_costs": False, "knn_k": 7}
    assert router_options(KnnRouter, opts) == {}
    rc = main(["--data", str(DATA / "routellm" / "gsm8k_responses.csv"), "--routers", "knn",
               "--router-option", "query_costs=false"])
    assert rc == 2 and "query_costs" in capsys.readouterr().err


def test_default_point_knob_is_chosen_without_the_scored_folds_labels(routerbench_sample) -> None:
    from evals.folds import folds_for
    from evals.replay import FittedFold, cross_fitted_knobs
    from routers.base import RouteQuery
    from routers.registry import default_router_registry

    sm = routerbench_sample
    reg = default_router_registry()
    fitted = []
    for tr, te in folds_for(sm.n, 3, seed=0):
        train, test = sm.subset(tr), sm.subset(te)
        router = reg.create("logreg", seed=0)
        router.fit(train, queries=[RouteQuery(prompt=p, category=c) for p, c in zip(train.prompts,
                                                                                      train.categories, strict=True)])
        fitted.append(FittedFold(router, router.prepare([RouteQuery(prompt=p) for p in test.prompts]), test))
    knobs = cross_fitted_knobs(fitted, 0.95)
    assert len(knobs) == 3 and all(k in f.router.knob_grid() for k, f in zip(knobs, fitted, strict=True))
    # scramble fold 0's labels: its own knob stays (the other folds' knobs may move: they read fold 0's rows)
    f0 = fitted[0]
    flat = np.random.default_rng(1).permutation(f0.test.scores.ravel())
    scrambled = dataclasses.replace(f0.test, scores=flat.reshape(f0.test.scores.shape))
    again = cross_fitted_knobs([FittedFold(f0.router, f0.prepared, scrambled), *fitted[1:]], 0.95)
    assert again[0] == knobs[0]


def test_cli_default_point_and_notes(capsys) -> None:
    rc = main(["--data", str(DATA / "routellm" / "gsm8k_responses.csv"), "--routers", "knn",
               "--folds", "3", "--max-rows", "300", "--json", "--no-curve", "--accuracy-share", "0.9"])
    assert rc == 0
    out = capsys.readouterr().out
    res = json.loads(out.strip().splitlines()[-1])
    knn = res["knn"]
    assert knn["default_rule"] == {"accuracy_share": 0.9} and len(knn["default_knobs"]) == 3
    best = max(r["accuracy"] for k, r in res.items() if k.startswith("single:"))
    assert knn["default_accuracy_share"] == pytest.approx(knn["accuracy"] / best)
    assert "the dearest model's AIQ is 0" in out and "chosen without the scored" in out
