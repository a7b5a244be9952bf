"""fit / decide / save / load round trips for every registered router on a small ScoreMatrix."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evals.replay_data import ScoreMatrix
from routers.base import Decision, Record, RouteQuery, Router
from routers.registry import RouterRegistry, default_router_registry

MATH = [f"What is {a} plus {b} times {a + b}? Compute the total." for a in range(3, 13) for b in (2, 7)]
CODE = [f"Write a python function that returns the {w} of a list of integers." for w in
        ("sum", "maximum", "minimum", "median", "mode", "length", "reverse", "sorted copy", "product", "mean",
         "second largest", "unique items", "running total", "last element", "first element", "count of zeros",
         "range", "variance", "standard deviation", "count of evens")]
MODELS = ["cheap", "mid", "dear"]


def small_matrix() -> ScoreMatrix:
    rng = np.random.default_rng(0)
    prompts = MATH + CODE
    n = len(prompts)
    is_math = np.array([i < len(MATH) for i in range(n)])
    # cheap solves code, mid solves math, dear solves (almost) all
    scores = np.stack([~is_math & (rng.random(n) < 0.9), is_math & (rng.random(n) < 0.9), rng.random(n) < 0.95], 1)
    costs = np.tile([0.001, 0.01, 0.1], (n, 1)) * (1 + 0.1 * rng.random((n, 3)))
    cats = ["math" if m else "code" for m in is_math]
    return ScoreMatrix(prompts, MODELS, scores.astype(float), costs, cats, [str(i) for i in range(n)], "test")


@pytest.fixture(scope="module")
def sm() -> ScoreMatrix:
    return small_matrix()


@pytest.mark.parametrize("name", default_router_registry().names())
def test_fit_decide_save_load(name: str, sm: ScoreMatrix, tmp_path) -> None:
    router = default_router_registry().create(name, seed=0)
    assert router.fit(sm) is router
    q = RouteQuery(prompt="Write a python function that returns the sum of squares of a list.")
    d = router.decide(q)
    assert isinstance(d, Decision) and d.route in MODELS and d.candidates == MODELS
    json.dumps(d.to_dict())
    only = router.decide(q, candidates=["cheap", "dear"])
    assert only.route in ("cheap", "dear")
    path = tmp_path / f"{name}.pkl"
    router.save(path)
    meta = json.loads((tmp_path / f"{name}.pkl.json").read_text())
    assert meta["router"] == name and meta["models"] == MODELS
    back = Router.load(path)
    assert back.decide(q).route == d.route
    queries = [RouteQuery(prompt=p) for p in sm.prompts]
    for knob in router.knob_grid()[:: max(1, len(router.knob_grid()) // 5)]:
        assert (back.choose(back.prepare(queries), knob) == router.choose(router.prepare(queries), knob)).all()


@pytest.mark.parametrize("name", ["knn", "mf", "ellie-classifier", "ellie-cascade", "coe", "glider"])
def test_learned_routers_beat_a_coin_on_training_prompts(name: str, sm: ScoreMatrix) -> None:
    """With λ / knob at the quality end, a learned router finds the category structure of the small matrix."""
    router = default_router_registry().create(name, seed=0).fit(sm)
    queries = [RouteQuery(prompt=p, category=c) for p, c in zip(sm.prompts, sm.categories, strict=True)]
    grid = router.knob_grid()
    accs = []
    for knob in grid:
        idx = router.choose(router.prepare(queries), knob)
        accs.append(float(np.mean(sm.scores[np.arange(sm.n), idx])))
    mean_single = float(np.mean(sm.scores))
    assert max(accs) > mean_single


def test_fit_from_records_equals_fit_from_matrix(sm: ScoreMatrix) -> None:
    recs = [
        Record(prompt=p, candidate=m, score=float(sm.scores[i, j]), cost=float(sm.costs[i, j]), category=sm.categories[i])
        for i, p in enumerate(sm.prompts)
        for j, m in enumerate(sm.models)
    ]
    a = default_router_registry().create("knn").fit(sm)
    b = default_router_registry().create("knn").fit(recs)
    qs = [RouteQuery(prompt=p) for p in sm.prompts[:10]]
    assert np.allclose(a.predict(qs), b.predict(qs))


def test_registry_rejects_duplicates_and_unknown() -> None:
    reg = RouterRegistry()
    from routers.baselines import RandomRouter

    reg.register("random", RandomRouter)
    with pytest.raises(ValueError):
        reg.register("random", RandomRouter)
    with pytest.raises(KeyError):
        reg.get("nope")
    assert "random" in reg and default_router_registry() is not default_router_registry()
