"""Tests for evals/metrics.py: hand-computed small cases, and brute-force reference twins on random points."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evals.metrics import (
    accuracy,
    aiq,
    apgr,
    bootstrap_ci,
    cost_of_pass,
    cost_per_1k_requests,
    frontier_cost_of_pass,
    hull_value,
    latency_percentiles,
    pareto_frontier,
    pgr,
    pgr_points,
    recall_threshold,
    share_at_recall,
    task_cost_of_pass,
    tep,
    upper_hull,
)

# ---------------------------------------------------------------- reference twins (brute force)


def ref_pareto(points: list[tuple[float, float]]) -> list[int]:
    keep = []
    for i, (c, a) in enumerate(points):
        dominated = any(
            (c2 <= c and a2 >= a and (c2 < c or a2 > a)) or ((c2, a2) == (c, a) and j < i)
            for j, (c2, a2) in enumerate(points)
            if j != i
        )
        if not dominated:
            keep.append(i)
    return sorted(keep, key=lambda i: points[i][0])


def ref_zero_router(points: list[tuple[float, float]], cost: float) -> float:
    """Best accuracy reachable at spend ≤ cost by mixing any two points (or one point), by brute force."""
    best = 0.0
    for c1, a1 in points:
        if c1 <= cost:
            best = max(best, a1)
        for c2, a2 in points:
            if c1 <= cost <= c2 and c2 > c1:
                lam = (cost - c1) / (c2 - c1)
                best = max(best, (1 - lam) * a1 + lam * a2)
    return best


# ---------------------------------------------------------------- accuracy, cost


def test_accuracy_ignores_nan() -> None:
    assert accuracy([1, 0, np.nan, 1]) == pytest.approx(2 / 3)
    assert math.isnan(accuracy([np.nan]))
    assert cost_per_1k_requests([0.001, 0.003, np.nan]) == pytest.approx(2.0)


def test_cost_of_pass_single_and_repeated() -> None:
    # 4 attempts costing 1,2,3,2 (mean 2), 2 passes of 4 (mean 0.5) → 4
    assert cost_of_pass([1, 2, 3, 2], [1, 0, 1, 0]) == pytest.approx(4.0)
    assert cost_of_pass([0.5], [1.0]) == pytest.approx(0.5)
    assert cost_of_pass([0.5, 0.5], [0, 0]) == math.inf
    # NaN-scored attempt drops out with its cost: mean cost (1+3)/2 = 2, pass rate 1/2 → 4
    assert cost_of_pass([1, 100, 3], [1, np.nan, 0]) == pytest.approx(4.0)
    assert math.isnan(cost_of_pass([1.0], [np.nan]))


def test_task_cost_of_pass_mean_and_ratio() -> None:
    costs = np.array([[1.0, 1.0], [2.0, 4.0]])
    scores = np.array([[1.0, 0.0], [1.0, 1.0]])
    # per problem: 1/0.5 = 2 ; 3/1 = 3 → mean 2.5
    assert task_cost_of_pass(costs, scores) == pytest.approx(2.5)
    # ratio: total cost 8 / total passes 3
    assert task_cost_of_pass(costs, scores, aggregate="ratio") == pytest.approx(8 / 3)
    # one never-passed problem makes the mean infinite but not the ratio
    scores2 = np.array([[0.0, 0.0], [1.0, 1.0]])
    assert task_cost_of_pass(costs, scores2) == math.inf
    assert task_cost_of_pass(costs, scores2, aggregate="ratio") == pytest.approx(4.0)
    # 1-D: one attempt per problem
    assert task_cost_of_pass([1.0, 3.0], [1.0, 1.0]) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        task_cost_of_pass([1.0], [1.0], aggregate="median")


def test_frontier_cost_of_pass_min_over_routes_human_and_exclude() -> None:
    costs = {"small": np.array([1.0, 1.0, 1.0]), "large": np.array([10.0, 10.0, 10.0])}
    scores = {"small": np.array([1.0, 0.0, 0.0]), "large": np.array([1.0, 1.0, 0.0])}
    # problem 3 solved by nobody → inf without a human
    assert frontier_cost_of_pass(costs, scores) == math.inf
    # human at 50: per problem min(1, 10, 50)=1, min(inf, 10, 50)=10, min(inf, inf, 50)=50 → 61/3
    assert frontier_cost_of_pass(costs, scores, human_price=50.0) == pytest.approx(61 / 3)
    # without "small": 10, 10, 50 → 70/3
    assert frontier_cost_of_pass(costs, scores, human_price=50.0, exclude=["small"]) == pytest.approx(70 / 3)
    # per-problem human prices
    assert frontier_cost_of_pass(costs, scores, human_price=[0.5, 20.0, 30.0]) == pytest.approx((0.5 + 10 + 30) / 3)
    # NaN score: the route does not compete on that problem
    scores_nan = {"small": np.array([np.nan, 1.0]), "large": np.array([1.0, 1.0])}
    costs2 = {"small": np.array([1.0, 1.0]), "large": np.array([10.0, 10.0])}
    assert frontier_cost_of_pass(costs2, scores_nan) == pytest.approx((10 + 1) / 2)


# ---------------------------------------------------------------- bootstrap, latency


def test_bootstrap_ci_contains_mean_and_is_deterministic() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(5.0, 1.0, size=200)
    lo, hi = bootstrap_ci(x, seed=3)
    assert lo < x.mean() < hi
    # the half-width is near 1.96 · sd / sqrt(n) ≈ 0.139
    assert 0.08 < (hi - lo) / 2 < 0.2
    assert bootstrap_ci(x, seed=3) == (lo, hi)
    assert bootstrap_ci(x, seed=4) != (lo, hi)
    # a generic statistic takes the same path
    assert bootstrap_ci(x, stat=lambda v: float(np.mean(v)), seed=3) == pytest.approx((lo, hi))


def test_bootstrap_ci_with_inf_and_pairs() -> None:
    # half the values infinite → most resample means are inf; the upper bound is inf, lower finite
    lo, hi = bootstrap_ci([1.0, 2.0, math.inf, math.inf], seed=0)
    assert hi == math.inf
    assert math.isfinite(lo)
    assert all(math.isnan(b) for b in bootstrap_ci([], seed=0))
    # paired rows: ratio statistic on (cost, score) columns
    pairs = np.c_[np.full(50, 2.0), np.r_[np.ones(25), np.zeros(25)]]
    lo, hi = bootstrap_ci(pairs, stat=lambda v: v[:, 0].sum() / v[:, 1].sum(), seed=0)
    assert lo < 4.0 < hi


def test_latency_percentiles() -> None:
    v = np.arange(1, 101, dtype=float)  # 1..100
    out = latency_percentiles(v, ps=(50, 90, 99.9))
    assert out["p50"] == pytest.approx(50.5)
    assert out["p90"] == pytest.approx(90.1)
    assert set(out) == {"p50", "p90", "p99.9"}
    assert math.isnan(latency_percentiles([])["p50"])


# ---------------------------------------------------------------- frontier, hull, AIQ


def test_pareto_frontier_hand_case() -> None:
    pts = [(1.0, 0.5), (2.0, 0.4), (3.0, 0.9), (3.0, 0.7), (0.5, 0.5), (4.0, 0.9)]
    # (1, .5) dominated by (0.5, .5); (2, .4) and (3, .7) dominated; (4, .9) dominated by (3, .9)
    assert pareto_frontier(pts) == [4, 2]


def test_pareto_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        pts = [(float(c), float(a)) for c, a in rng.integers(0, 6, size=(8, 2))]
        assert pareto_frontier(pts) == ref_pareto(pts)


def test_upper_hull_drops_dominated_and_concave_breaking_points() -> None:
    # (2, 0.6) lies below the chord (1, .5)–(3, .9) which passes (2, .7); (4, .8) is dominated
    pts = [(1.0, 0.5), (2.0, 0.6), (3.0, 0.9), (4.0, 0.8)]
    assert upper_hull(pts) == [(1.0, 0.5), (3.0, 0.9)]
    # a point above the chord stays
    assert upper_hull([(1.0, 0.5), (2.0, 0.8), (3.0, 0.9)]) == [(1.0, 0.5), (2.0, 0.8), (3.0, 0.9)]


def test_hull_value_matches_brute_force_zero_router() -> None:
    rng = np.random.default_rng(2)
    for _ in range(30):
        pts = [(float(c), float(a)) for c, a in zip(rng.uniform(0, 10, 6), rng.uniform(0, 1, 6), strict=True)]
        hull = upper_hull(pts)
        for cost in rng.uniform(min(c for c, _ in pts), 12, 20):
            assert hull_value(hull, float(cost)) == pytest.approx(ref_zero_router(pts, float(cost)), abs=1e-12)


def routerbench_aiq(points: list[tuple[float, float]], max_x: float) -> float:
    """Reference twin of RouterBench's AIQ, step by step as its evaluation code does it (evaluation/AIQ.py,
    get_non_descreasing_convex_hull_of + calc_AIQ), for points with distinct costs (it needs at least three):
    1. sort by cost; at every point strictly between two others take the best of its own accuracy and every chord
       spanning it; 2. put the cheapest point first, and the dearest last if it is not below the last value;
    3. drop each value below its predecessor in that list; 4. append (max_x, last accuracy) and integrate with the
    trapezoid rule; 5. divide by max_x."""
    pts = sorted(points)
    env = []
    for x, y in pts:
        chords = [np.interp(x, [pts[i][0], pts[j][0]], [pts[i][1], pts[j][1]])
                  for i in range(len(pts)) for j in range(i, len(pts)) if pts[i][0] < x < pts[j][0]]
        if chords:
            env.append((x, max([y, *chords])))
    if pts[-1][1] >= env[-1][1]:
        env.append(pts[-1])
    env = [pts[0], *env]
    kept = [env[0]] + [env[i] for i in range(1, len(env)) if env[i][1] >= env[i - 1][1]]
    kept.append((max_x, kept[-1][1]))
    xs, ys = np.array([p[0] for p in kept]), np.array([p[1] for p in kept])
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2) / max_x)


def test_aiq_hand_checked_hulls() -> None:
    # trapezoid (1,.5)–(3,.9): area 1.4 over [1,3]; the span [0,1] counts as zero; ÷ the dearest cost 3
    assert aiq([(1.0, 0.5), (3.0, 0.9)]) == pytest.approx(1.4 / 3)
    # a dearer c_max extends the last vertex flat: 1.4 + 0.9·2 = 3.2, ÷ 5
    assert aiq([(1.0, 0.5), (3.0, 0.9)], c_max=5.0) == pytest.approx(0.64)
    # a dominated point changes nothing; a point below the chord neither
    assert aiq([(1.0, 0.5), (2.0, 0.6), (3.0, 0.9)]) == pytest.approx(1.4 / 3)
    # a dearer but worse point ends the hull at the best one and sets c_max: 1.4 + 0.9·1, ÷ 4
    assert aiq([(1.0, 0.5), (3.0, 0.9), (4.0, 0.7)]) == pytest.approx(2.3 / 4)
    # a single point: acc·(1 − c/c_max); the dearest model scores 0
    assert aiq([(2.0, 0.42)], c_max=4.0) == pytest.approx(0.21)
    assert aiq([(2.0, 0.42)]) == 0.0
    # a hull past c_max is cut there: [1,2] under the chord from (1,.5) to (3,.9) is 0.5 + 0.1 = 0.6, ÷ 2
    assert aiq([(1.0, 0.5), (3.0, 0.9)], c_max=2.0) == pytest.approx(0.3)
    assert math.isnan(aiq([]))
    assert math.isnan(aiq([(0.0, 0.5)]))


def test_aiq_matches_routerbench_reference_on_random_points() -> None:
    rng = np.random.default_rng(5)
    for trial in range(300):
        n = int(rng.integers(3, 12))
        costs = rng.choice(np.arange(1, 1000), size=n, replace=False) / 100.0  # distinct costs, as the reference needs
        pts = [(float(c), float(a)) for c, a in zip(costs, rng.uniform(0, 1, n), strict=True)]
        max_x = max(costs) * (1.0 if trial % 2 else float(rng.uniform(1.0, 2.0)))  # alone, or beside a dearer router
        assert aiq(pts, c_max=max_x) == pytest.approx(routerbench_aiq(pts, max_x), abs=1e-12)


def test_aiq_equals_dense_integration_from_zero() -> None:
    rng = np.random.default_rng(7)
    for _ in range(10):
        pts = [(float(c), float(a)) for c, a in zip(rng.uniform(1, 10, 5), rng.uniform(0, 1, 5), strict=True)]
        c_max = 11.0
        grid = np.linspace(0.0, c_max, 40001)
        vals = np.array([ref_zero_router(pts, float(c)) for c in grid])  # 0 below the cheapest point
        ref = float(np.sum((grid[1:] - grid[:-1]) * (vals[1:] + vals[:-1]) / 2) / c_max)
        assert aiq(pts, c_max) == pytest.approx(ref, abs=2e-3)


# ---------------------------------------------------------------- PGR, APGR, TEP


def test_pgr_and_apgr() -> None:
    assert pgr(0.75, 0.5, 1.0) == pytest.approx(0.5)
    # straight line weak→strong: 0.5 (endpoints added)
    assert apgr([], 0.6, 0.8) == pytest.approx(0.5)
    assert apgr([(0.25, 0.65), (0.5, 0.7)], 0.6, 0.8) == pytest.approx(0.5)
    # reaching the strong accuracy at 50% share: PGR 0→1 on [0,.5] (area .25), then 1 (area .5) → 0.75
    assert apgr([(0.5, 0.8)], 0.6, 0.8) == pytest.approx(0.75)
    # the curve's own endpoints are used when present
    assert apgr([(0.0, 0.7), (1.0, 0.7)], 0.6, 0.8) == pytest.approx(0.5)
    assert math.isnan(apgr([(0.5, 0.5)], 0.5, 0.5))
    with pytest.raises(ValueError):
        apgr([(1.5, 0.7)], 0.6, 0.8)


def test_pgr_points_sorted_with_endpoints_added_once() -> None:
    xs, ys = pgr_points([(0.5, 0.8), (0.25, 0.7)], 0.6, 0.8)
    assert xs.tolist() == [0.0, 0.25, 0.5, 1.0]
    assert ys == pytest.approx([0.0, 0.5, 1.0, 1.0])
    xs, _ = pgr_points([(0.0, 0.7), (1.0, 0.7)], 0.6, 0.8)
    assert xs.tolist() == [0.0, 1.0]  # the curve's own endpoints, nothing added


def test_tep() -> None:
    # accuracy 0.5 → 0.6 (+20%), tokens 100 → 150 (+50%) → 0.4
    assert tep(0.5, 0.6, 100, 150) == pytest.approx(0.4)
    assert tep(0.5, 0.6, 100, 100) == math.inf
    assert math.isnan(tep(0.0, 0.6, 100, 150))
    assert tep(0.5, 0.45, 100, 200) == pytest.approx(-0.1)


def _share_at_recall_reference(scores: list[float], labels: list[int], recall: float) -> float:
    """Every threshold tried: the smallest routed share (score ≥ t) whose recall of the positives is ≥ ``recall``."""
    n_pos = sum(labels)
    best = math.inf
    for t in set(scores):
        routed = [s >= t for s in scores]
        caught = sum(r and y for r, y in zip(routed, labels, strict=True))
        if caught >= recall * n_pos - 1e-9:
            best = min(best, sum(routed) / len(scores))
    return best


def test_share_at_recall_matches_every_threshold_tried() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(2, 40))
        scores = [float(v) for v in rng.integers(0, 8, n)]  # few values: ties at the threshold
        labels = [int(v) for v in rng.integers(0, 2, n)]
        if not any(labels):
            labels[0] = 1
        for recall in (0.5, 0.8, 0.95, 1.0):
            assert share_at_recall(scores, labels, recall) == pytest.approx(
                _share_at_recall_reference(scores, labels, recall))


def test_share_at_recall_hand_case_and_bad_input() -> None:
    # positives at 0.9 and 0.4: recall 0.5 needs t = 0.9 (1 of 4 routed), recall 1 needs t = 0.4 (3 of 4)
    assert share_at_recall([0.9, 0.7, 0.4, 0.1], [1, 0, 1, 0], 0.5) == 0.25
    assert share_at_recall([0.9, 0.7, 0.4, 0.1], [1, 0, 1, 0], 1.0) == 0.75
    assert recall_threshold([0.9, 0.7, 0.4, 0.1], [1, 0, 1, 0], 0.5) == 0.9
    assert math.isnan(share_at_recall([0.3, 0.2], [0, 0], 0.9))
    assert math.isnan(recall_threshold([0.3, 0.2], [0, 0], 0.9))
    with pytest.raises(ValueError):
        share_at_recall([0.3], [1], 0.0)
    with pytest.raises(ValueError):
        share_at_recall([0.3, 0.1], [1], 0.9)
