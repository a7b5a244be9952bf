"""Replay evaluation of query-level routers on recorded per-model scores and costs (no model runs).

`main(argv)` backs `tandem eval replay --data FILE... --routers a,b,c [--test FILE...] [--folds 5] [--json]`:
1. Load the score matrices (`evals.replay_data.load_any`, several files are concatenated) and drop rows where a
   model has no score (a replayed call needs the chosen model's recorded score).
2. k-fold cross-validation (shuffled, seeded; near-duplicate prompts such as Winogrande's twin sentences are kept
   in one fold, `near_duplicate_groups`), or train on --data and evaluate on --test. Training queries carry the
   data's category (a label routers may learn to predict); evaluated queries carry none, as a live request has none.
3. Per router and fold: fit on the training rows, prepare the test rows once, sweep the router's calibration knob
   (`knob_grid()`, calibrated from the training rows) and record each knob value's (mean cost, accuracy) point and,
   for two-model data, its share of calls to the expensive model.
4. Pool the folds: the router's curve is the row-weighted mean of the per-fold upper hulls (each fold's router can
   mix its own knob settings), evaluated on a common cost grid; AIQ is RouterBench's (`evals.metrics.aiq`): the area
   under it from its cheapest point to the dearest single model's cost, divided by that cost. APGR (two models) is
   the mean of the per-fold APGRs.
Reported per router: AIQ (and the per-fold spread), accuracy / cost / cost-of-pass at its default point (the
knob `tandem train`'s accuracy-share rule picks, chosen per fold without that fold's labels: `cross_fitted_knobs`),
the best accuracy on the curve, the curve's cost span, the cost of reaching 95% of the best single model's
accuracy (as a share of that model's cost), and APGR. Also every single model, the oracle and the zero router
(upper hull of the single models). Progress goes to stderr; a table to stdout; with --json the last line is one
JSON object keyed by router; with --report DIR, DIR/replay.html draws the curves (`evals.replay_report`).

Left out: live runs through the gateway, bootstrap intervals on the curve.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evals.folds import folds_for, near_duplicate_groups
from evals.metrics import aiq, apgr, cost_of_pass, hull_value, pgr_points, upper_hull
from evals.replay_data import ScoreMatrix, load_any
from evals.router_training import calibrate_accuracy_share
from gateway.paths import cache_dir
from routers.base import RouteQuery, Router, TrainingTable, knob_for_accuracy_share
from routers.embedder import Embedder
from routers.registry import RouterRegistry, default_router_registry

Point = tuple[float, float]
TARGET_SHARE_OF_BEST = 0.95
SHARE_GRID = np.linspace(0.0, 1.0, 101)  # strong-call shares a two-model PGR curve is reported at

# ----------------------------------------------------------------------------------------------- pure helpers


def outcome(sm: ScoreMatrix, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the recorded score and cost of the chosen model."""
    rows = np.arange(sm.n)
    return sm.scores[rows, chosen], sm.costs[rows, chosen]


def oracle_choice(scores: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """Per row: the cheapest model among those with the best score."""
    best = np.nanmax(scores, axis=1, keepdims=True)
    c = np.where(scores >= best - 1e-12, costs, np.inf)
    return np.argmin(c, axis=1)


def pooled_curve(fold_points: Sequence[Sequence[Point]], weights: Sequence[float]) -> list[Point]:
    """Row-weighted mean of the per-fold upper hulls, on the union of the folds' hull costs."""
    hulls = [upper_hull(p) for p in fold_points]
    grid = sorted({c for h in hulls for c, _ in h})
    w = np.asarray(weights, dtype=float) / np.sum(weights)
    return [(c, float(sum(wi * hull_value(h, c, "zero") for wi, h in zip(w, hulls, strict=True)))) for c in grid]


def cost_to_reach(curve: Sequence[Point], target_acc: float) -> float:
    """Smallest cost at which the upper hull of `curve` reaches `target_acc` (inf when it never does)."""
    hull = upper_hull(curve)
    for k, (c, a) in enumerate(hull):
        if a >= target_acc:
            if k == 0:
                return c
            c0, a0 = hull[k - 1]
            return c0 + (target_acc - a0) * (c - c0) / (a - a0)
    return math.inf


# ---------------------------------------------------------------------------------------------------- running


@dataclass
class RouterResult:
    name: str
    fold_points: list[list[Point]] = field(default_factory=list)
    fold_weights: list[float] = field(default_factory=list)
    fold_aiq: list[float] = field(default_factory=list)
    fold_apgr: list[float] = field(default_factory=list)
    fold_pgr: list[np.ndarray] = field(default_factory=list)  # PGR at SHARE_GRID, per fold
    default_scores: list[np.ndarray] = field(default_factory=list)
    default_costs: list[np.ndarray] = field(default_factory=list)
    default_knobs: list[float | None] = field(default_factory=list)
    fitted: list[FittedFold] = field(default_factory=list)  # kept until the default points are chosen
    seconds: float = 0.0


@dataclass
class FittedFold:
    """One fold's fitted router, its prepared test rows and those rows' scores: enough to choose again at any knob."""

    router: Router
    prepared: Any
    test: ScoreMatrix

    def point(self, knob: float | None) -> tuple[float, float, int]:
        """(score sum, cost sum, rows) of this fold's test rows decided at `knob`."""
        s, c = outcome(self.test, self.router.choose(self.prepared, knob))
        return float(np.sum(s)), float(np.sum(c)), self.test.n


def cross_fitted_knobs(folds: Sequence[FittedFold], share: float) -> list[float | None]:
    """The knob each fold deploys with under the accuracy-share rule (`routers.base.knob_for_accuracy_share`), read
    from the other folds' test rows only: fold f's candidates are its own router's knob grid, each scored by pooling
    the other folds' routers at that knob against the best single model's accuracy on those rows. No fold's own
    labels pick its knob. One fold alone keeps its router's default knob."""
    if len(folds) < 2:
        return [f.router.default_knob() for f in folds]
    out: list[float | None] = []
    for f, fold in enumerate(folds):
        others = [g for k, g in enumerate(folds) if k != f]
        knobs = list(fold.router.knob_grid())
        costs, accs = [], []
        for knob in knobs:
            sums = np.array([g.point(knob) for g in others])
            accs.append(sums[:, 0].sum() / sums[:, 2].sum())
            costs.append(sums[:, 1].sum() / sums[:, 2].sum())
        rows = np.concatenate([g.test.scores for g in others])
        best = float(np.max(np.mean(rows, axis=0)))
        out.append(knobs[knob_for_accuracy_share(knobs, costs, accs, best, share)])
    return out


def choose_default_points(res: RouterResult, knobs: Sequence[float | None]) -> None:
    """Fill the default point of every fold (its knob's decisions on the fold's own rows) and let go of the fitted
    routers."""
    for fold, knob in zip(res.fitted, knobs, strict=True):
        s, c = outcome(fold.test, fold.router.choose(fold.prepared, knob))
        res.default_scores.append(s)
        res.default_costs.append(c)
        res.default_knobs.append(knob)
    res.fitted.clear()


def evaluate_router(
    router_factory: Any,
    name: str,
    train: ScoreMatrix,
    train_q: list[RouteQuery],
    test: ScoreMatrix,
    test_q: list[RouteQuery],
    res: RouterResult,
) -> None:
    """Fit on train, sweep the knob on test, append this fold's numbers to `res`."""
    t0 = time.perf_counter()
    router: Router = router_factory(name)
    router.fit(train, queries=train_q)
    prepared = router.prepare(test_q)
    two = test.m == 2
    if two:
        strong = int(np.argmax(np.nanmean(train.costs, axis=0)))
        weak_acc = float(np.mean(test.scores[:, 1 - strong]))
        strong_acc = float(np.mean(test.scores[:, strong]))
    points: list[Point] = []
    shares: list[Point] = []
    for knob in router.knob_grid():
        chosen = router.choose(prepared, knob)
        s, c = outcome(test, chosen)
        points.append((float(np.mean(c)), float(np.mean(s))))
        if two:
            shares.append((float(np.mean(chosen == strong)), float(np.mean(s))))
    res.fitted.append(FittedFold(router, prepared, test))
    c_hi = dearest_cost(test)
    res.fold_points.append(points)
    res.fold_weights.append(test.n)
    res.fold_aiq.append(aiq(points, c_hi))
    if two:
        res.fold_apgr.append(apgr(shares, weak_acc, strong_acc))
        if strong_acc != weak_acc:
            res.fold_pgr.append(np.interp(SHARE_GRID, *pgr_points(shares, weak_acc, strong_acc)))
    res.seconds += time.perf_counter() - t0


def dearest_cost(sm: ScoreMatrix) -> float:
    """The dearest single model's mean cost: the c_max every AIQ of one replay shares (RouterBench's convention)."""
    return max(c for c, _ in sm.model_points())


def summarize(res: RouterResult, data: ScoreMatrix, accuracy_share: float = TARGET_SHARE_OF_BEST) -> dict[str, Any]:
    c_hi = dearest_cost(data)
    pts = data.model_points()
    best_j = int(np.argmax([a for _, a in pts]))
    best_cost, best_acc = pts[best_j]
    curve = pooled_curve(res.fold_points, res.fold_weights)
    s, c = np.concatenate(res.default_scores), np.concatenate(res.default_costs)
    reach = cost_to_reach(curve, TARGET_SHARE_OF_BEST * best_acc)
    raw = [p for f in res.fold_points for p in f]
    return {
        "aiq": aiq(curve, c_hi),
        "aiq_fold_std": float(np.std(res.fold_aiq)) if len(res.fold_aiq) > 1 else None,
        "accuracy": float(np.mean(s)),
        "cost_per_1k": float(np.mean(c) * 1000),
        "default_rule": {"accuracy_share": accuracy_share},
        "default_knobs": list(res.default_knobs),
        "default_accuracy_share": float(np.mean(s)) / best_acc if best_acc > 0 else math.nan,
        "default_cost_share": float(np.mean(c)) / c_hi if c_hi > 0 else math.nan,
        "cost_of_pass": cost_of_pass(c, s),
        "max_accuracy": max(a for _, a in curve),
        "curve_cost_min_per_1k": min(p[0] for p in raw) * 1000,
        "curve_cost_max_per_1k": max(p[0] for p in raw) * 1000,
        "cost_share_for_95pct_best": reach / best_cost if best_cost > 0 else math.nan,
        "apgr": float(np.mean(res.fold_apgr)) if res.fold_apgr else None,
        "curve": [[c * 1000, a] for c, a in curve],
        "pgr_curve": ([[float(x), float(y)] for x, y in zip(SHARE_GRID, np.mean(res.fold_pgr, axis=0), strict=True)]
                      if res.fold_pgr else None),
        "seconds": res.seconds,
    }


def reference_rows(data: ScoreMatrix) -> dict[str, dict[str, Any]]:
    """Single models, the oracle and the zero router, on the whole (pooled) data."""
    c_hi = dearest_cost(data)
    pts = data.model_points()
    best_acc = max(a for _, a in pts)
    best_cost = pts[int(np.argmax([a for _, a in pts]))][0]
    out: dict[str, dict[str, Any]] = {}
    for j, m in enumerate(data.models):
        s, c = data.scores[:, j], data.costs[:, j]
        out[f"single:{m}"] = {
            "accuracy": float(np.mean(s)),
            "cost_per_1k": float(np.mean(c) * 1000),
            "cost_of_pass": cost_of_pass(c, s),
            "aiq": aiq([pts[j]], c_hi),
        }
    s, c = outcome(data, oracle_choice(data.scores, data.costs))
    oracle_point = (float(np.mean(c)), float(np.mean(s)))
    # the oracle can also send everything to one model, so its curve is the hull of its point and the single models'
    # (one point alone would score 0 for every budget below its cost)
    out["oracle"] = {"accuracy": oracle_point[1], "cost_per_1k": oracle_point[0] * 1000,
                     "cost_of_pass": cost_of_pass(c, s), "aiq": aiq([*pts, oracle_point], c_hi)}
    reach = cost_to_reach(pts, TARGET_SHARE_OF_BEST * best_acc)
    out["zero"] = {
        "aiq": aiq(pts, c_hi),
        "max_accuracy": best_acc,
        "cost_share_for_95pct_best": reach / best_cost if best_cost > 0 else math.nan,
        "apgr": 0.5 if data.m == 2 else None,
    }
    return out


def run_replay(
    data: ScoreMatrix,
    routers: Sequence[str],
    folds: int = 5,
    seed: int = 0,
    test: ScoreMatrix | None = None,
    registry: RouterRegistry | None = None,
    progress: bool = True,
    options: dict[str, Any] | None = None,
    accuracy_share: float = TARGET_SHARE_OF_BEST,
) -> dict[str, dict[str, Any]]:
    """All the numbers of a replay run, keyed by router (plus single models, oracle, zero). `options` are
    constructor arguments given to every router whose class names them (`router_options`). Each router's default
    point is where it deploys under `tandem train`'s rule, the cheapest knob reaching `accuracy_share` of the best
    single model's accuracy, chosen per fold without that fold's labels (`cross_fitted_knobs`; with `test`, an
    out-of-fold curve of the training data)."""
    from tqdm import tqdm

    reg = registry or default_router_registry()
    embedder = Embedder(cache_dir=cache_dir())  # one model and cache (memory and disk) for every router of the run

    def factory(name: str) -> Router:
        router = reg.create(name, seed=seed, **router_options(reg.get(name), options or {}))
        router.embedder = embedder
        return router

    # training queries carry the data's category as a label; the evaluated queries carry none (a live request has
    # no dataset label), sharing the cached features of the same prompt
    queries = [RouteQuery(prompt=p, category=c) for p, c in zip(data.prompts, data.categories, strict=True)]
    bare = [RouteQuery(prompt=q.prompt, features=q.features) for q in queries]
    if test is None:
        groups = near_duplicate_groups(data.prompts, data.categories)
        splits = [(data.subset(tr), [queries[i] for i in tr], data.subset(te), [bare[i] for i in te])
                  for tr, te in folds_for(data.n, folds, seed, groups)]
        evaluated = data
    else:
        test = test.select_models(data.models)
        tq = [RouteQuery(prompt=p) for p in test.prompts]
        splits = [(data, queries, test, tq)]
        evaluated = test
    results = {name: RouterResult(name) for name in routers}
    bar = tqdm(total=len(routers) * len(splits), desc="replay", file=sys.stderr, disable=not progress)
    for tr, trq, te, teq in splits:
        for name in routers:
            bar.set_postfix_str(name)
            evaluate_router(factory, name, tr, trq, te, teq, results[name])
            bar.update(1)
    bar.close()
    for name, res in results.items():
        if test is None:
            knobs = cross_fitted_knobs(res.fitted, accuracy_share)
        else:  # one split: the rule reads an out-of-fold curve of the training file, as `tandem train` does
            table = TrainingTable(list(data.prompts), list(data.models), data.scores, data.costs,
                                  list(data.categories))
            cal = calibrate_accuracy_share(factory(name), lambda name=name: factory(name), table, accuracy_share,
                                           folds, seed, progress=False)
            knobs = [cal["knob"]]
        choose_default_points(res, knobs)
    out = {name: summarize(res, evaluated, accuracy_share) for name, res in results.items()}
    out.update(reference_rows(evaluated))
    return out


# --------------------------------------------------------------------------------------------------------- CLI


def router_options(cls: type, options: dict[str, Any]) -> dict[str, Any]:
    """The subset of `options` that `cls.__init__` takes as named parameters."""
    import inspect

    names = set(inspect.signature(cls.__init__).parameters)
    return {k: v for k, v in options.items() if k in names}


def parse_options(items: Sequence[str] | None) -> dict[str, Any]:
    """KEY=VALUE strings → dict; VALUE is read as JSON where it parses (numbers, true / false), else a string."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--router-option wants KEY=VALUE, not {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _load(paths: Sequence[str]) -> ScoreMatrix:
    parts = [load_any(p) for p in paths]
    sm = parts[0] if len(parts) == 1 else ScoreMatrix.concat(parts)
    before = sm.n
    sm = sm.dropna("any")
    if sm.n < before:
        print(f"{', '.join(paths)}: dropped {before - sm.n} of {before} rows with a missing score", file=sys.stderr)
    return sm


def _fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return format(v, spec)


def render_table(results: dict[str, dict[str, Any]]) -> str:
    """The results as a text table, with the notes a reader needs to read its columns."""
    head = f"{'router':<44} {'AIQ':>7} {'±':>6} {'acc':>6} {'acc/best':>8} {'$/1k':>9} {'cost/dear':>9} " \
           f"{'$/pass':>9} {'maxacc':>6} {'span $/1k':>17} {'95%best':>8} {'APGR':>6}"
    lines = [head, "-" * len(head)]
    rule = next((r["default_rule"] for r in results.values() if "default_rule" in r), None)
    for name, r in results.items():
        span = "-"
        if "curve_cost_min_per_1k" in r:
            span = f"{r['curve_cost_min_per_1k']:.4f}–{r['curve_cost_max_per_1k']:.4f}"
        lines.append(
            f"{name[:44]:<44} {_fmt(r.get('aiq'), '.4f'):>7} {_fmt(r.get('aiq_fold_std'), '.4f'):>6} "
            f"{_fmt(r.get('accuracy'), '.4f'):>6} {_fmt(r.get('default_accuracy_share'), '.3f'):>8} "
            f"{_fmt(r.get('cost_per_1k'), '.4f'):>9} {_fmt(r.get('default_cost_share'), '.3f'):>9} "
            f"{_fmt(r.get('cost_of_pass'), '.6f'):>9} {_fmt(r.get('max_accuracy'), '.4f'):>6} {span:>17} "
            f"{_fmt(r.get('cost_share_for_95pct_best'), '.3f'):>8} {_fmt(r.get('apgr'), '.3f'):>6}"
        )
    lines += [
        "",
        "AIQ: RouterBench's — the area under the cost/accuracy hull from its cheapest point to the dearest model's cost, "
        "divided by that cost;",
        "  a single model at cost c scores acc·(1 − c/dearest), so the dearest model's AIQ is 0. ±: spread over folds "
        "(- with one split).",
    ]
    if rule:
        lines.append(f"acc, $/1k, $/pass: each router at its default point — the cheapest knob reaching "
                     f"{rule['accuracy_share']:g} of the best single model's accuracy, chosen without the scored "
                     f"fold's labels;")
        lines.append("  acc/best and cost/dear: that point as shares of the best model's accuracy and the dearest "
                     "model's cost. 95%best: the curve's cost to reach 95 % of the best, as a share of its cost.")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tandem eval replay", description="Replay-evaluate query-level routers.")
    p.add_argument("--data", nargs="+", required=True, help="score files (RouterBench CSV, RouteLLM, JSONL, dirs)")
    p.add_argument("--routers", default=None, help="comma-separated router names (default: all registered)")
    p.add_argument("--test", nargs="+", default=None, help="evaluate on these files instead of cross-validating")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-rows", type=int, default=None, help="random subsample of the data (quick runs)")
    p.add_argument("--json", action="store_true", help="print one JSON object (keyed by router) as the last line")
    p.add_argument("--no-curve", action="store_true", help="leave the curves out of the JSON")
    p.add_argument("--report", default=None, metavar="DIR", help="also write DIR/replay.html: curves, AIQ bars, table")
    p.add_argument("--accuracy-share", type=float, default=TARGET_SHARE_OF_BEST, metavar="S",
                   help="the rule of each router's default point, as tandem train's: the cheapest knob reaching S of "
                        "the best single model's accuracy (default %(default)s)")
    p.add_argument("--router-option", action="append", default=None, metavar="KEY=VALUE",
                   help="constructor argument for every router that takes it, e.g. query_costs=false (repeatable)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    reg = default_router_registry()
    names = [n.strip() for n in args.routers.split(",")] if args.routers else reg.names()
    unknown = [n for n in names if n not in reg]
    if unknown:
        print(f"unknown router(s): {', '.join(unknown)}; known: {', '.join(reg.names())}", file=sys.stderr)
        return 2
    try:
        options = parse_options(args.router_option)
    except ValueError as e:
        print(str(e), file=sys.stderr)
        return 2
    unused = [k for k in options if not any(router_options(reg.get(n), {k: 1}) for n in names)]
    if unused:
        print(f"no selected router takes option(s): {', '.join(unused)}", file=sys.stderr)
        return 2
    data = _load(args.data)
    if args.max_rows and data.n > args.max_rows:
        rows = np.sort(np.random.default_rng(args.seed).choice(data.n, args.max_rows, replace=False))
        data = data.subset(rows)
    test = _load(args.test) if args.test else None
    print(f"data: {data.source} ({data.n} rows, {data.m} models)" + (f"; test: {test.n} rows" if test else
          f"; {args.folds}-fold cross-validation"), file=sys.stderr)
    if not 0.0 <= args.accuracy_share <= 1.0:
        print("--accuracy-share must be in [0, 1]", file=sys.stderr)
        return 2
    results = run_replay(data, names, folds=args.folds, seed=args.seed, test=test, registry=reg, options=options,
                         accuracy_share=args.accuracy_share)
    print(render_table(results))
    if args.report:
        from evals.replay_report import write_replay_report

        meta = {"source": data.source, "rows": data.n, "models": data.models, "seed": args.seed,
                "folds": None if test else args.folds, "test_rows": test.n if test else None,
                "command": "tandem eval replay " + shlex.join(sys.argv[1:] if argv is None else argv)}
        print(f"report: {write_replay_report(results, meta, args.report)}", file=sys.stderr)
    if args.json:
        if args.no_curve:
            for r in results.values():
                r.pop("curve", None)
                r.pop("pgr_curve", None)
        print(json.dumps(_finite(results), default=_json_default))
    return 0


def _finite(x: Any) -> Any:
    """NaN / ±inf → None, so the line is strict JSON."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    raise TypeError(type(x))


if __name__ == "__main__":
    raise SystemExit(main())
