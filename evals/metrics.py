"""Evaluation metrics for routes and routers: pure numpy functions, no I/O.

What is here (each function's docstring gives its exact formula):
- accuracy, $ per 1k requests, latency percentiles;
- cost-of-pass (Erol et al., 2025): per problem E[cost] / P(pass), task-level average or ratio estimate, and the
  frontier cost-of-pass over a set of routes (optionally with a human-expert price), with routes excluded for the
  counterfactual frontier;
- percentile bootstrap confidence intervals that tolerate infinite statistics;
- the Pareto frontier and the non-decreasing concave upper hull of (cost, accuracy) points — the "zero router"
  (random mixing of the given routes) that every router must beat;
- AIQ (RouterBench), PGR / APGR (RouteLLM), and TEP (EllieSQL's token elasticity of performance);
- a position router's routed share at a recall (how much a threshold on its scores must route to catch a share of
  the positives).

What it leaves out: loading data (evals/replay_data.py), running routers (evals/replay.py), plotting and reports.
NaN always means "missing" and is ignored where a formula says so; it is never treated as a score of 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

__all__ = [
    "accuracy",
    "aiq",
    "apgr",
    "bootstrap_ci",
    "cost_of_pass",
    "cost_per_1k_requests",
    "frontier_cost_of_pass",
    "hull_value",
    "latency_percentiles",
    "pareto_frontier",
    "pgr",
    "recall_threshold",
    "share_at_recall",
    "task_cost_of_pass",
    "tep",
    "upper_hull",
]

Point = tuple[float, float]


def _as_float(a: object) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


# ---------------------------------------------------------------- accuracy and cost


def accuracy(scores: Sequence[float] | np.ndarray) -> float:
    """Mean score, NaN ignored: ``sum(s_i for s_i not NaN) / #{s_i not NaN}``; NaN when nothing is present."""
    s = _as_float(scores).ravel()
    s = s[~np.isnan(s)]
    return float(s.mean()) if s.size else math.nan


def cost_per_1k_requests(costs: Sequence[float] | np.ndarray) -> float:
    """Dollars per 1,000 requests: ``1000 · mean(cost)``, NaN ignored; NaN when empty."""
    c = _as_float(costs).ravel()
    c = c[~np.isnan(c)]
    return float(1000.0 * c.mean()) if c.size else math.nan


def cost_of_pass(costs: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Cost-of-pass of one problem from its attempts (one or more).

    ``v = mean_k(cost_k) / mean_k(score_k)`` over the attempts k whose score is present (not NaN).
    ``math.inf`` when ``mean(score) == 0`` (never solved); NaN when no attempt has a score.
    Scores may be fractional (a partial-credit score acts as a pass probability).
    """
    c = _as_float(costs).ravel()
    s = _as_float(scores).ravel()
    if c.shape != s.shape:
        raise ValueError(f"costs {c.shape} and scores {s.shape} differ in shape")
    ok = ~np.isnan(s)
    if not ok.any():
        return math.nan
    p = float(s[ok].mean())
    cost = float(c[ok].mean())
    if p <= 0.0:
        return math.inf
    return cost / p


def _per_problem_cost_of_pass(costs: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Vectorised cost_of_pass over rows: [n] or [n, attempts] → [n] (inf where never passed, NaN where no score)."""
    c = _as_float(costs)
    s = _as_float(scores)
    if c.shape != s.shape:
        raise ValueError(f"costs {c.shape} and scores {s.shape} differ in shape")
    if c.ndim == 1:
        c = c[:, None]
        s = s[:, None]
    if c.ndim != 2:
        raise ValueError("expected arrays of shape [n] or [n, attempts]")
    ok = ~np.isnan(s)
    k = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_s = np.where(ok, s, 0.0).sum(axis=1) / k
        mean_c = np.where(ok, c, 0.0).sum(axis=1) / k
        out = np.where(mean_s > 0, mean_c / np.where(mean_s > 0, mean_s, 1.0), math.inf)
    out[k == 0] = math.nan
    return out


def task_cost_of_pass(
    costs: Sequence[float] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    aggregate: str = "mean",
) -> float:
    """Cost-of-pass of a route on a task; arrays of shape [n_problems] or [n_problems, attempts].

    ``aggregate="mean"`` (the definition in DESIGN.md): ``(1/N) Σ_i v_i`` with ``v_i = cost_of_pass(costs[i],
    scores[i])`` over the N problems that have a score. It is ``inf`` as soon as one problem is never passed — with
    one binary attempt per problem that is any wrong answer, so use it with several attempts, or use the frontier
    with a human-expert price, or the ratio below.

    ``aggregate="ratio"`` (the common task-level estimate): ``Σ cost / Σ score`` over entries whose score is present,
    i.e. mean cost per attempt over mean pass rate; ``inf`` only when nothing ever passes.

    NaN when no problem has a score.
    """
    if aggregate == "mean":
        v = _per_problem_cost_of_pass(_as_float(costs), _as_float(scores))
        v = v[~np.isnan(v)]
        if not v.size:
            return math.nan
        return math.inf if np.isinf(v).any() else float(v.mean())
    if aggregate == "ratio":
        c = _as_float(costs).ravel()
        s = _as_float(scores).ravel()
        if c.shape != s.shape:
            raise ValueError(f"costs {c.shape} and scores {s.shape} differ in shape")
        return cost_of_pass(c, s)
    raise ValueError(f"aggregate must be 'mean' or 'ratio', not {aggregate!r}")


def frontier_cost_of_pass(
    costs: Mapping[str, Sequence[float] | np.ndarray],
    scores: Mapping[str, Sequence[float] | np.ndarray],
    human_price: float | Sequence[float] | np.ndarray | None = None,
    exclude: Sequence[str] | None = None,
) -> float:
    """Frontier cost-of-pass of a task over a set of routes.

    For each problem i: ``V_i = min( min_r v_{r,i}, h_i )`` where ``v_{r,i}`` is route r's cost-of-pass on problem i
    (``cost_of_pass`` over its attempts; arrays [n] or [n, attempts]) and ``h_i`` the human-expert price for the
    problem (a scalar for all problems, an array [n], or None for no human option; the expert is assumed always
    correct). The result is ``(1/N) Σ_i V_i`` over the N problems where at least one option has a value; ``inf`` when
    some problem is passed by no route and there is no human price. Routes in ``exclude`` are removed first
    (the counterfactual frontier without them); a route whose score on a problem is NaN does not compete there.
    """
    skip = set(exclude or ())
    names = [r for r in costs if r not in skip]
    if set(scores) != set(costs):
        raise ValueError("costs and scores must name the same routes")
    per_route = [_per_problem_cost_of_pass(_as_float(costs[r]), _as_float(scores[r])) for r in names]
    n = None
    if per_route:
        n = per_route[0].shape[0]
        if any(v.shape[0] != n for v in per_route):
            raise ValueError("all routes must cover the same problems")
    if human_price is not None:
        h = _as_float(human_price)
        if h.ndim == 0:
            if n is None:
                return float(h)
            h = np.full(n, float(h))
        if n is not None and h.shape[0] != n:
            raise ValueError("human_price array must have one price per problem")
        per_route.append(h)
    if not per_route:
        return math.nan
    stack = np.vstack(per_route)  # [routes(+human), n]
    present = ~np.isnan(stack)
    has_any = present.any(axis=0)
    if not has_any.any():
        return math.nan
    best = np.where(present, stack, math.inf).min(axis=0)[has_any]
    return math.inf if np.isinf(best).any() else float(best.mean())


# ---------------------------------------------------------------- uncertainty


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    stat: Callable[[np.ndarray], float] = np.mean,
    n: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval ``(lo, hi)`` of ``stat`` at level ``1 − alpha``.

    Rows of ``values`` (axis 0; 1-D values or a 2-D array of paired columns, e.g. ``np.c_[costs, scores]`` with a
    ``stat`` that computes a ratio) are resampled with replacement ``n`` times with ``np.random.default_rng(seed)``.
    The bounds are order statistics of the sorted resampled statistics ``t_(1) ≤ … ≤ t_(n)``:
    ``lo = t_(⌊n·alpha/2⌋+1)``, ``hi = t_(⌈n·(1−alpha/2)⌉)``. Order statistics (no interpolation) keep infinite
    statistics meaningful: if more than ``alpha/2`` of the resamples are ``inf``, ``hi`` is ``inf``. For 1-D input,
    NaN rows are dropped first; NaN statistics from a resample sort last (as +inf would). Returns
    ``(nan, nan)`` for empty input. Deterministic for a given seed.
    """
    v = _as_float(values)
    if v.ndim == 1:
        v = v[~np.isnan(v)]
    if v.shape[0] == 0 or n <= 0:
        return (math.nan, math.nan)
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be in (0, 1)")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.shape[0], size=(n, v.shape[0]))
    if v.ndim == 1 and stat in (np.mean, np.nanmean):
        with np.errstate(invalid="ignore"):
            stats = v[idx].mean(axis=1)
    else:
        stats = np.array([float(stat(v[i])) for i in idx], dtype=np.float64)
    stats = np.sort(stats)  # NaN sorts to the end
    lo_i = int(math.floor(n * alpha / 2.0))
    hi_i = max(int(math.ceil(n * (1.0 - alpha / 2.0))) - 1, lo_i)
    return (float(stats[lo_i]), float(stats[min(hi_i, n - 1)]))


def latency_percentiles(values: Sequence[float] | np.ndarray, ps: Sequence[float] = (50, 90, 99)) -> dict[str, float]:
    """Percentiles of latencies, NaN ignored: ``{"p50": …, "p90": …, "p99": …}`` (numpy's linear interpolation).

    Keys are ``f"p{p:g}"`` (99.9 → ``"p99.9"``); values NaN when there is no latency.
    """
    v = _as_float(values).ravel()
    v = v[~np.isnan(v)]
    out: dict[str, float] = {}
    for p in ps:
        out[f"p{p:g}"] = float(np.percentile(v, p)) if v.size else math.nan
    return out


# ---------------------------------------------------------------- cost / quality frontier


def pareto_frontier(points: Sequence[Point]) -> list[int]:
    """Indices of the non-dominated (cost, accuracy) points, sorted by cost ascending.

    Point j dominates i when ``cost_j ≤ cost_i`` and ``acc_j ≥ acc_i`` with one inequality strict. Of exactly equal
    points only the first index is kept. Points with a NaN coordinate are ignored. Along the returned list both cost
    and accuracy strictly increase.
    """
    order = sorted(
        (i for i, (c, a) in enumerate(points) if not (math.isnan(c) or math.isnan(a))),
        key=lambda i: (points[i][0], -points[i][1], i),
    )
    out: list[int] = []
    best = -math.inf
    for i in order:
        if points[i][1] > best:
            out.append(i)
            best = points[i][1]
    return out


def upper_hull(points: Sequence[Point]) -> list[Point]:
    """The non-decreasing concave upper hull of (cost, accuracy) points — the "zero router".

    Mixing routes at random (route A with probability λ, B with 1−λ) reaches every point on the segment between
    them, so the best accuracy reachable at cost c by random mixing is the concave upper envelope of the points; only
    its non-decreasing part matters (spending more never has to lower accuracy). Computed as the upper convex hull
    (monotone chain) of the Pareto points: it starts at the cheapest point (best accuracy at that cost) and ends at
    the cheapest point of maximal accuracy. Returned as vertices sorted by cost; slopes are positive and decreasing.
    """
    front = [(float(points[i][0]), float(points[i][1])) for i in pareto_frontier(points)]
    hull: list[Point] = []
    for p in front:
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            # drop the middle vertex when it lies on or below the chord from hull[-2] to p
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) >= 0:
                hull.pop()
            else:
                break
        hull.append(p)
    return hull


def hull_value(hull: Sequence[Point], cost: float, left: str = "zero") -> float:
    """Accuracy of the zero router at a cost budget: the hull (from ``upper_hull``) evaluated at ``cost``.

    Linear between vertices, flat (last vertex's accuracy) beyond the most expensive vertex; below the cheapest vertex
    ``left="zero"`` gives 0 (that cost is not reachable) and ``left="flat"`` gives the cheapest vertex's accuracy.
    NaN for an empty hull.
    """
    if not hull:
        return math.nan
    xs = np.array([p[0] for p in hull])
    ys = np.array([p[1] for p in hull])
    if cost < xs[0]:
        if left == "zero":
            return 0.0
        if left == "flat":
            return float(ys[0])
        raise ValueError("left must be 'zero' or 'flat'")
    return float(np.interp(cost, xs, ys))


def aiq(points: Sequence[Point], c_max: float | None = None) -> float:
    """AIQ (RouterBench's Average Improvement in Quality) of a set of (cost, accuracy) points, as RouterBench's
    evaluation code computes it (withmartian/routerbench, ``evaluation/AIQ.py``).

    ``AIQ = (1 / c_max) ∫_{c₀}^{c_max} R(c) dc``: R is the non-decreasing upper convex hull of the points
    (``upper_hull``; RouterBench's "non-decreasing convex hull"), linear between its vertices and flat at its last
    vertex's accuracy out to ``c_max``; c₀ is the cheapest point's cost. The span from 0 to c₀ counts as zero (a
    budget below c₀ cannot be met), and the area is divided by ``c_max``, not by ``c_max − c₀``. ``c_max`` is the
    dearest cost of everything compared (RouterBench takes the largest cost over the routers of one evaluation; a
    replay passes the dearest single model's, so every router shares it); unset, the dearest of these points. A
    hull past ``c_max`` is cut there. A single point at cost c scores acc·(1 − c / c_max): 0 for the dearest model.
    Where two points share a cost the better one counts. NaN when there is no valid point or ``c_max`` is 0.
    """
    hull = upper_hull(points)
    if not hull:
        return math.nan
    if c_max is None:
        hi = max(float(c) for c, a in points if not (math.isnan(c) or math.isnan(a)))
    else:
        hi = float(c_max)
    if not hi > 0:
        return math.nan
    x0 = hull[0][0]
    if x0 >= hi:
        return 0.0
    xs = [x0] + [x for x, _ in hull if x0 < x < hi] + [hi]
    ys = [hull_value(hull, x) for x in xs]
    area = sum((xs[k + 1] - xs[k]) * (ys[k + 1] + ys[k]) / 2.0 for k in range(len(xs) - 1))
    return area / hi


# ---------------------------------------------------------------- RouteLLM and EllieSQL


def pgr(acc: float, weak_acc: float, strong_acc: float) -> float:
    """Performance gap recovered: ``PGR = (acc − weak) / (strong − weak)``; NaN when strong == weak."""
    gap = strong_acc - weak_acc
    if gap == 0:
        return math.nan
    return (acc - weak_acc) / gap


def apgr(curve: Sequence[Point], weak_acc: float, strong_acc: float) -> float:
    """Average performance gap recovered (RouteLLM): ``APGR = ∫₀¹ PGR(x) dx`` over the strong-call share x.

    ``curve`` holds (strong_share ∈ [0, 1], accuracy) points of a router swept over its threshold. The endpoints
    (0, weak_acc) and (1, strong_acc) — all-weak and all-strong routing — are added when the curve has no point at
    share 0 / 1. Points are sorted by share (ties keep their order, i.e. a vertical step) and PGR is integrated with
    the trapezoid rule over the piecewise-linear interpolation. A straight line from weak to strong gives 0.5.
    NaN when strong == weak.
    """
    if strong_acc == weak_acc:
        return math.nan
    xs, ys = pgr_points(curve, weak_acc, strong_acc)
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))


def pgr_points(curve: Sequence[Point], weak_acc: float, strong_acc: float) -> tuple[np.ndarray, np.ndarray]:
    """(shares, PGR) of a router's (strong_share, accuracy) points as `apgr` integrates them: sorted by share, with the
    all-weak and all-strong endpoints added where missing. Raises on a share outside [0, 1]."""
    pts = [(float(x), float(a)) for x, a in curve]
    if any(not 0.0 <= x <= 1.0 for x, _ in pts):
        raise ValueError("strong-call shares must lie in [0, 1]")
    if not any(x == 0.0 for x, _ in pts):
        pts.append((0.0, float(weak_acc)))
    if not any(x == 1.0 for x, _ in pts):
        pts.append((1.0, float(strong_acc)))
    pts.sort(key=lambda p: p[0])
    return np.array([x for x, _ in pts]), np.array([pgr(a, weak_acc, strong_acc) for _, a in pts])


def tep(ex_base: float, ex_new: float, tokens_base: float, tokens_new: float) -> float:
    """Token Elasticity of Performance: ``TEP = (ΔEX / EX_base) / (ΔT / T_base)``.

    ``ΔEX = ex_new − ex_base`` (execution accuracy), ``ΔT = tokens_new − tokens_base``. The relative gain in accuracy
    per relative increase in tokens. NaN when ``ex_base`` or ``tokens_base`` is not positive, or when nothing changes;
    ``±inf`` when tokens are unchanged but accuracy moves.
    """
    if ex_base <= 0 or tokens_base <= 0:
        return math.nan
    rel_ex = (ex_new - ex_base) / ex_base
    rel_t = (tokens_new - tokens_base) / tokens_base
    if rel_t == 0:
        if rel_ex == 0:
            return math.nan
        return math.copysign(math.inf, rel_ex)
    return rel_ex / rel_t


# ---------------------------------------------------------------- position routers


def recall_threshold(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray, recall: float) -> float:
    """The highest threshold ``t`` with recall(score ≥ t) ≥ ``recall`` over the positives: the ⌈recall·P⌉-th largest
    positive score. NaN without positives; ``recall`` in (0, 1]."""
    if not 0.0 < recall <= 1.0:
        raise ValueError(f"recall must be in (0, 1], got {recall}")
    s, y = _as_float(scores), np.asarray(labels).astype(bool)
    if s.shape != y.shape:
        raise ValueError("one label per score")
    pos = np.sort(s[y])[::-1]
    if pos.size == 0:
        return math.nan
    return float(pos[max(1, math.ceil(recall * pos.size - 1e-9)) - 1])


def share_at_recall(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray, recall: float) -> float:
    """The share of all items routed (score ≥ t, ties at ``t`` included) at :func:`recall_threshold`'s ``t``: how
    much a threshold must route to catch ``recall`` of the positives. NaN without positives."""
    t = recall_threshold(scores, labels, recall)
    return math.nan if math.isnan(t) else float(np.mean(_as_float(scores) >= t))
