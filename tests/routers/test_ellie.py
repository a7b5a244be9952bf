"""Pure rules of the complexity routers (routers/ellie.py) against hand-made and loop reference cases."""

from __future__ import annotations

import numpy as np

from routers.base import RouteQuery
from routers.ellie import (
    EllieHeuristicRouter,
    cascade_pick,
    mask_tiers,
    precision_threshold,
    preference_pairs,
    quantile_tier,
    tier_labels,
)
from tests.routers.test_roundtrip import small_matrix


def test_tier_labels_cheapest_passing_else_top() -> None:
    s = np.array([[0, 1, 1], [1, 0, 0], [0, 0, 0], [np.nan, 0, 1]], dtype=float)
    assert tier_labels(s).tolist() == [1, 0, 2, 2]


def test_quantile_tier() -> None:
    p = np.array([[0.5, 0.3, 0.2], [0.0, 0.0, 1.0]])
    assert quantile_tier(p, 0.0).tolist() == [0, 0]
    assert quantile_tier(p, 0.5).tolist() == [0, 2]
    assert quantile_tier(p, 0.6).tolist() == [1, 2]
    assert quantile_tier(p, 0.81).tolist() == [2, 2]
    assert quantile_tier(p, 1.0).tolist() == [2, 2]


def test_cascade_pick_first_tier_over_threshold() -> None:
    p = np.array([[0.9, 0.9], [0.5, 0.8], [0.1, 0.2]])
    assert cascade_pick(p, np.array([0.7, 0.7])).tolist() == [0, 1, 2]
    assert cascade_pick(p, np.array([0.0, 1.0])).tolist() == [0, 0, 0]
    assert cascade_pick(p, np.array([np.inf, np.inf])).tolist() == [2, 2, 2]


def _precision_reference(p: np.ndarray, y: np.ndarray, target: float) -> float:
    if target <= 0:
        return 0.0
    for v in sorted(set(p.tolist())):
        keep = p >= v
        if y[keep].mean() >= target - 1e-12:
            return float(v)
    return float("inf")


def test_precision_threshold_matches_reference_and_is_monotone() -> None:
    rng = np.random.default_rng(0)
    p = np.round(rng.random(300), 2)
    y = (rng.random(300) < p).astype(int)
    taus = []
    for target in np.linspace(0, 1, 21):
        t = precision_threshold(p, y, float(target))
        assert t == _precision_reference(p, y, float(target))
        taus.append(t)
    assert all(a <= b for a, b in zip(taus, taus[1:], strict=False))


def test_mask_tiers_moves_up_then_down() -> None:
    allowed = np.array([False, True, False, True, False])
    assert mask_tiers(np.array([0, 1, 2, 3, 4]), allowed).tolist() == [1, 1, 3, 3, 3]


def test_preference_pairs_reference() -> None:
    s = np.array([[0, 1, 1], [0, 0, 0]], dtype=float)
    pairs = preference_pairs(s)
    # row 0: tier 1 ≻ 0, 1 ≻ 2 (cheaper passing), 2 ≻ 0
    assert {(a, b) for a in range(3) for b in range(3) if pairs[0, a, b]} == {(1, 0), (1, 2), (2, 0)}
    # row 1 (unsolved): top tier ≻ the others
    assert {(a, b) for a in range(3) for b in range(3) if pairs[1, a, b]} == {(2, 0), (2, 1)}


def test_pareto_tiers_drop_dominated_models() -> None:
    from routers.ellie import pareto_tiers

    means = np.array([0.5, 0.4, 0.7, 0.6, 0.9, np.nan])
    costs = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 0.5])
    # model 1 (dearer, worse than 0), model 3 (dearer, worse than 2) and model 5 (no data) are dominated
    assert pareto_tiers(means, costs).tolist() == [0, 2, 4]
    assert pareto_tiers(np.array([0.5, 0.5]), np.array([1.0, 1.0])).tolist() == [0]


def test_pass_table_reference() -> None:
    from routers.ellie import pass_table

    rng = np.random.default_rng(3)
    scores = (rng.random((60, 3)) < [0.3, 0.6, 0.9]).astype(float)
    scores[rng.random((60, 3)) < 0.1] = np.nan
    groups = rng.integers(0, 3, 60)
    groups[groups == 2] = 1  # group 2 is empty → overall pass rates
    got = pass_table(groups, scores, 3)
    for t in range(3):
        ok = np.isfinite(scores[:, t])
        overall = np.mean(scores[ok, t] >= 0.5)
        for g in range(3):
            rows = ok & (groups == g)
            want = np.mean(scores[rows, t] >= 0.5) if rows.any() else overall
            assert abs(got[g, t] - want) < 1e-12


def test_heuristic_scores_a_request_alike_with_or_without_its_category() -> None:
    """A live request carries no category, so the heuristic must not learn from one: a score fit on category one-hots
    that are always zero at request time is skewed (it fell below the zero router on RouterBench)."""
    sm = small_matrix()
    router = EllieHeuristicRouter().fit(sm)
    labelled = [RouteQuery(prompt=p, category=c) for p, c in zip(sm.prompts, sm.categories, strict=True)]
    bare = [RouteQuery(prompt=p) for p in sm.prompts]
    np.testing.assert_array_equal(router.complexity(labelled), router.complexity(bare))
    assert len(set(np.round(router.complexity(bare), 9))) > 1  # the score still tells prompts apart
