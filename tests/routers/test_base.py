"""The utility rule, λ calibration, Decision serialisation and record pivoting (routers/base.py)."""

from __future__ import annotations

import math

import numpy as np

from routers.base import (
    Decision,
    Record,
    lambda_for_share,
    lambda_grid,
    records_to_table,
    utility_argmax,
)


def _utility_reference(pred: np.ndarray, costs: np.ndarray, lam: float, mask: np.ndarray | None) -> list[int]:
    out = []
    for row in pred:
        best, best_u = -1, -math.inf
        for j in sorted(range(len(costs)), key=lambda j: (costs[j], j)):
            if mask is not None and not mask[j]:
                continue
            u = row[j] - lam * costs[j]
            if u > best_u:
                best, best_u = j, u
        out.append(best)
    return out


def test_utility_argmax_matches_reference() -> None:
    rng = np.random.default_rng(0)
    pred = rng.random((200, 5))
    costs = np.array([0.3, 0.1, 2.0, 0.5, 1.0])
    mask = np.array([True, True, False, True, True])
    for lam in [0.0, 0.1, 0.5, 2.0, 100.0]:
        for m in (None, mask):
            assert utility_argmax(pred, costs, lam, m).tolist() == _utility_reference(pred, costs, lam, m)


def test_utility_hand_case_and_ties_go_cheaper() -> None:
    costs = np.array([1.0, 10.0])
    pred = np.array([[0.5, 0.9]])
    assert utility_argmax(pred, costs, 0.0)[0] == 1
    assert utility_argmax(pred, costs, 0.04)[0] == 1  # 0.9 - 0.4 = 0.5 > 0.5 - 0.04
    assert utility_argmax(pred, costs, 0.05)[0] == 0  # 0.45 < 0.45? tie → cheaper
    assert utility_argmax(np.array([[0.7, 0.7]]), costs, 0.0)[0] == 0


def test_cost_is_monotone_in_lambda_and_grid_spans_cheapest_to_best() -> None:
    rng = np.random.default_rng(1)
    pred = rng.random((300, 4))
    costs = np.array([0.2, 1.0, 3.0, 0.05])
    grid = lambda_grid(costs)
    spent = [costs[utility_argmax(pred, costs, lam)].mean() for lam in grid]
    assert all(a >= b - 1e-12 for a, b in zip(spent, spent[1:], strict=False))
    assert utility_argmax(pred, costs, grid[-1]).tolist() == [3] * 300  # the cheapest everywhere
    assert (utility_argmax(pred, costs, 0.0) == pred.argmax(axis=1)).all()


def test_lambda_for_share_hits_target() -> None:
    rng = np.random.default_rng(2)
    pred = rng.random((1000, 2))
    costs = np.array([1.0, 5.0])
    at_zero = np.mean(utility_argmax(pred, costs, 0.0) == 1)  # the most λ ≥ 0 can reach
    for share in [0.1, 0.3, 0.7]:
        lam = lambda_for_share(pred, costs, share)
        got = np.mean(utility_argmax(pred, costs, lam) == 1)
        assert got <= share + 1e-9
        assert got >= min(share, at_zero) - 0.01  # continuous predictions: reachable almost exactly


def test_decision_to_dict_is_json_ready() -> None:
    d = Decision(route="a", scores={"a": np.float64(0.5)}, reason="r", candidates=["a", "b"], extra={"x": np.arange(2)})
    assert d.to_dict() == {"route": "a", "scores": {"a": 0.5}, "reason": "r", "candidates": ["a", "b"],
                           "extra": {"x": [0, 1]}}


def test_records_to_table_pivots_and_averages() -> None:
    recs = [
        Record("p1", "m1", 1.0, 0.1, category="c"),
        Record("p1", "m2", 0.0, 1.0),
        Record("p2", "m1", 0.0, 0.3),
        Record("p2", "m1", 1.0, 0.1),
    ]
    t = records_to_table(recs)
    assert t.prompts == ["p1", "p2"] and t.models == ["m1", "m2"]
    assert t.scores[0].tolist() == [1.0, 0.0]
    assert t.scores[1, 0] == 0.5 and math.isnan(t.scores[1, 1])
    assert t.categories == ["c", None]
    assert np.allclose(t.model_costs, [(0.1 + 0.2) / 2, 1.0])


def test_a_router_uses_the_embedder_it_is_given_and_never_pickles_it(tmp_path) -> None:
    from routers.baselines import KnnRouter
    from routers.features import Embedder

    table = records_to_table([
        Record(prompt=p, candidate=m, score=s, cost=c)
        for p in ("add two numbers", "name a colour", "sum of digits", "a red fruit")
        for m, s, c in (("cheap", float("sum" in p or "add" in p), 0.001), ("dear", 1.0, 0.01))
    ])
    shared = Embedder(cache_path=tmp_path / "emb.sqlite")
    router = KnnRouter(k=1)
    router.embedder = shared
    router.fit(table)
    assert router.embedder is shared and shared._model is not None  # the fit's embeddings came from `shared`
    path = tmp_path / "knn.pkl"
    router.save(path)
    loaded = type(router).load(path)
    assert loaded.embedder is None  # the artifact holds no model and no cache
    loaded.embedder = shared
    assert loaded.decide("what is the sum of 3 and 4").route == router.decide("what is the sum of 3 and 4").route


def test_utility_argmax_with_costs_per_query_matches_a_row_loop() -> None:
    rng = np.random.default_rng(5)
    pred, costs = rng.random((50, 4)), rng.random((50, 4)) * 0.1
    mask = np.array([True, False, True, True])
    for lam in (0.0, 2.0, 30.0):
        got = utility_argmax(pred, costs, lam, mask)
        for i in range(50):
            u = np.where(mask, pred[i] - lam * costs[i], -np.inf)
            assert got[i] == int(np.argmax(u))
    # the same cost on every row gives the rule with one cost vector
    assert (utility_argmax(pred, np.tile(costs[0], (50, 1)), 3.0) == utility_argmax(pred, costs[0], 3.0)).all()
