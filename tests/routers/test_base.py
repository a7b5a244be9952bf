"""The utility rule, λ calibration, Decision serialisation, record pivoting, routing text and the artifact format
(routers/base.py)."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from routers.base import (
    ARTIFACT_VERSION,
    ArtifactVersionError,
    Decision,
    Record,
    RouteQuery,
    Router,
    lambda_for_share,
    lambda_grid,
    records_to_table,
    routing_text,
    to_table,
    utility_argmax,
)

DATA = Path(__file__).parent / "data"
SHIPPED = Path(__file__).resolve().parents[2] / "routers" / "artifacts" / "zoo-knn.pkl"


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
    from routers.embedder import Embedder

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


def test_routing_text_parses_turn_lists_and_cuts_few_shot_blocks() -> None:
    shots = "\n\n".join(f"Question {i}: what is {i}?\nAnswer: {i}" for i in range(100))
    prompt = repr([shots + "\n\nWhich gas do plants absorb?\nA) O2\nB) CO2\nAnswer:"])
    assert routing_text(prompt) == "Which gas do plants absorb?\nA) O2\nB) CO2\nAnswer:"
    assert routing_text("short question?") == "short question?"
    assert routing_text("[not a list") == "[not a list"
    q = RouteQuery(prompt=prompt)
    assert q.text == routing_text(prompt) and q.features["text"] == q.text  # cached on the query


def test_a_score_table_and_records_give_the_same_training_table() -> None:
    from evals.replay_data import ScoreMatrix

    sm = ScoreMatrix(["p1", "p2"], ["a", "b"], np.array([[1.0, 0.0], [0.5, 1.0]]), np.array([[0.1, 0.2], [0.1, 0.3]]),
                     ["x", "y"], ["1", "2"])
    t = to_table(sm)
    assert t.prompts == ["p1", "p2"] and t.models == ["a", "b"] and t.categories == ["x", "y"]
    recs = [Record(p, m, float(sm.scores[i, j]), float(sm.costs[i, j]), category=sm.categories[i])
            for i, p in enumerate(sm.prompts) for j, m in enumerate(sm.models)]
    r = to_table(recs)
    assert np.array_equal(r.scores, t.scores) and np.array_equal(r.costs, t.costs) and r.categories == t.categories


def _fitted_cheapest() -> Router:
    from routers.baselines import CheapestRouter

    return CheapestRouter().fit([Record("p", "a", 1.0, 0.1), Record("p", "b", 1.0, 0.2)])


def test_an_artifact_carries_its_format_version(tmp_path) -> None:
    path = tmp_path / "r.pkl"
    _fitted_cheapest().save(path)
    with open(path, "rb") as f:
        assert pickle.load(f) == {"format": "tandem-router", "version": ARTIFACT_VERSION}
    assert json.loads((tmp_path / "r.pkl.json").read_text())["artifact_version"] == ARTIFACT_VERSION
    assert Router.load(path).decide("q").route == "a"


@pytest.mark.parametrize("version", [ARTIFACT_VERSION + 1, 0, "1"])
def test_an_unknown_format_version_fails_clearly_before_the_router_is_read(tmp_path, version) -> None:
    path = tmp_path / "r.pkl"
    with open(path, "wb") as f:
        pickle.dump({"format": "tandem-router", "version": version}, f)
        f.write(b"not a pickle at all")  # never read: the header alone decides
    with pytest.raises(ArtifactVersionError, match=rf"router artifact .*r\.pkl has format version {version!r}; "
                                                   rf"this tandem reads versions 1\.\.{ARTIFACT_VERSION}"):
        Router.load(path)


def test_an_unversioned_artifact_loads(tmp_path) -> None:
    path = tmp_path / "old.pkl"
    router = _fitted_cheapest()
    state = {k: v for k, v in router.__dict__.items() if k != "embedder"}  # from before routers held an embedder
    old = type(router).__new__(type(router))
    old.__dict__.update(state)
    path.write_bytes(pickle.dumps(old))  # a bare pickle, as `save` wrote before the header
    back = Router.load(path)
    assert back.embedder is None and back.decide("q").route == "a"
    (tmp_path / "junk.pkl").write_bytes(pickle.dumps({"not": "a router"}))
    with pytest.raises(TypeError, match="does not hold a Router"):
        Router.load(tmp_path / "junk.pkl")


def test_the_shipped_artifact_loads_and_decides_as_the_code_that_wrote_it() -> None:
    from routers.embedder import Embedder

    with open(SHIPPED, "rb") as f:
        assert isinstance(pickle.load(f), Router)  # unversioned: written before the header
    expected = json.loads((DATA / "unversioned.json").read_text())
    router = Router.load(SHIPPED)
    router.embedder = Embedder(precision="float32")
    for q, route, scores in zip(expected["zoo_queries"], expected["zoo-knn"]["routes"], expected["zoo-knn"]["scores"],
                                strict=True):
        d = router.decide(q)
        assert d.route == route
        assert d.scores == pytest.approx(scores, abs=1e-6)


def _rule_reference(knobs, costs, accs, best, share):
    """Brute force: every knob reaching the target, cheapest first (then more accurate, then earlier); else the most
    accurate (then cheaper, then earlier)."""
    idx = range(len(knobs))
    ok = [i for i in idx if accs[i] >= share * best - 1e-12]
    if ok:
        return min(ok, key=lambda i: (costs[i], -accs[i], i))
    return min(idx, key=lambda i: (-accs[i], costs[i], i))


def test_knob_for_accuracy_share_matches_brute_force() -> None:
    from routers.base import knob_for_accuracy_share

    rng = np.random.default_rng(3)
    for _ in range(300):
        n = int(rng.integers(1, 12))
        knobs = list(rng.uniform(0, 5, n))
        costs = list(np.round(rng.uniform(0, 1, n), 1))  # rounded: ties happen
        accs = list(np.round(rng.uniform(0, 1, n), 1))
        best, share = float(rng.uniform(0.3, 1.0)), float(rng.choice([0.0, 0.5, 0.9, 0.95, 1.0]))
        assert knob_for_accuracy_share(knobs, costs, accs, best, share) == _rule_reference(knobs, costs, accs, best,
                                                                                           share)
    # hand-checked: 95 % of 0.8 is 0.76; knob 1 (cost 0.3) is the cheapest reaching it
    assert knob_for_accuracy_share([0, 1, 2], [0.9, 0.3, 0.1], [0.8, 0.77, 0.6], 0.8, 0.95) == 1
    with pytest.raises(ValueError):
        knob_for_accuracy_share([], [], [], 1.0, 0.9)
    with pytest.raises(ValueError):
        knob_for_accuracy_share([0], [0], [0], 1.0, 1.5)
