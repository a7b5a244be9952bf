"""`tandem train ROUTER`: train a router from the request log, replay files or an eval run, calibrate, save.

    tandem train ROUTER (--from-db URL [--since T] [--route NAME] | --from-replay FILE... | --from-eval RUN...)
                 --out FILE [--accuracy-share S | --willingness-to-pay λ | --expensive-share s]
                 [--calibration-folds 5] [--holdout 0.2] [--seed 0]

Sources, each turned into `Record`s (prompt, candidate, score, cost, category):
- `--from-db`: the gateway's SQL request log, read with SQLAlchemy Core by table and column names only (`requests`
  joined to each request's latest `feedback` row; successful requests with feedback). The prompt is the last user
  turn of the logged messages; the candidate is `model_chosen` (or the route with `--candidate route`).
- `--from-replay`: RouterBench / RouteLLM CSVs and the project's JSONL (`evals.replay_data.load_any`).
- `--from-eval`: run folders of `evals.run_store` (`results.jsonl`: route = candidate, item id, category, score,
  cost); the prompt is the row's `prompt` when present, else the item id (runs do not store the text).
Then: a held-out share of prompts (seeded) is set aside; the router is fitted on the rest and its knob is set by the
stated rule. `--accuracy-share S` (the default, S = 0.95, when no rule is given): the cheapest knob whose accuracy
reaches S of the best candidate's, read from an out-of-fold curve of the training rows (K more fits, each row
decided by a router fitted without it; `routers.base.knob_for_accuracy_share`); the artifact keeps the rule and the
accuracy and cost that curve expects there. `--willingness-to-pay` sets λ for score routers, otherwise picks the knob
maximising mean(score − λ·cost); `--expensive-share` picks λ / the knob whose share of calls to the most expensive
candidate on training rows is ≤ s. Held-out metrics (accuracy and cost where the chosen model has a
recorded score, coverage, share of expensive calls, log-loss of predicted scores for score routers) and the data
window go into the artifact's metadata (`FILE` + `.json`).

Left out: incremental training, pairwise (A/B) feedback, reading the gateway's spool files.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from evals.folds import folds_for, near_duplicate_groups
from gateway.paths import cache_dir
from routers.base import (
    Record,
    RouteQuery,
    Router,
    ScoreRouter,
    TrainingTable,
    knob_for_accuracy_share,
    lambda_for_share,
    queries_from_table,
    records_to_table,
)
from routers.embedder import Embedder
from routers.registry import default_router_registry

DEFAULT_ACCURACY_SHARE = 0.95
"""The knob rule `tandem train` deploys with when no target is given: 95 % of the best candidate's accuracy."""

# ----------------------------------------------------------------------------------------------------- sources


def parse_since(value: str | None) -> float | None:
    """Unix seconds, or an ISO-8601 date / datetime (UTC when no zone is given)."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        from datetime import timezone

        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def prompt_text(prompt: Any) -> str:
    """The last user turn of logged messages (a list of {role, content}), or the prompt itself as text."""
    if isinstance(prompt, str):
        try:
            prompt = json.loads(prompt)
        except (ValueError, TypeError):
            return prompt
    if isinstance(prompt, dict) and "messages" in prompt:
        prompt = prompt["messages"]
    if isinstance(prompt, list):
        for m in reversed(prompt):
            if isinstance(m, dict) and m.get("role", "user") == "user":
                c = m.get("content")
                if isinstance(c, list):
                    c = " ".join(p.get("text", "") for p in c if isinstance(p, dict))
                return str(c or "")
        return ""
    return "" if prompt is None else str(prompt)


def records_from_db(
    url: str, since: float | None = None, route: str | None = None, candidate: str = "model"
) -> tuple[list[Record], dict[str, Any]]:
    """Records from the request log (`requests` + latest `feedback`); returns them and the data window."""
    from sqlalchemy import create_engine, text

    sql = (
        "SELECT r.id, r.created_at, r.route, r.model_chosen, r.cost_usd, r.prompt, f.score, f.label "
        "FROM requests r JOIN feedback f ON f.request_id = r.id "
        "WHERE f.id = (SELECT MAX(f2.id) FROM feedback f2 WHERE f2.request_id = r.id) AND r.status = 'ok'"
    )
    params: dict[str, Any] = {}
    if since is not None:
        sql += " AND r.created_at >= :since"
        params["since"] = since
    if route is not None:
        sql += " AND r.route = :route"
        params["route"] = route
    sql += " ORDER BY r.created_at, r.id"
    engine = create_engine(url)
    out: list[Record] = []
    times: list[float] = []
    try:
        with engine.connect() as conn:
            for row in conn.execute(text(sql), params).mappings():
                cand = row["route"] if candidate == "route" else (row["model_chosen"] or row["route"])
                text_ = prompt_text(row["prompt"])
                if cand is None or not text_:
                    continue
                out.append(Record(prompt=text_, candidate=str(cand), score=float(row["score"]),
                                  cost=float(row["cost_usd"] or 0.0), meta={"request_id": row["id"]}))
                times.append(float(row["created_at"]))
    finally:
        engine.dispose()
    window = {"source": "db", "since": since, "route": route,
              "first": min(times) if times else None, "last": max(times) if times else None}
    return out, window


def records_from_replay(paths: Sequence[str]) -> tuple[list[Record], dict[str, Any]]:
    from evals.replay_data import load_any

    out: list[Record] = []
    for p in paths:
        sm = load_any(p)
        for i in range(sm.n):
            for j, m in enumerate(sm.models):
                s, c = sm.scores[i, j], sm.costs[i, j]
                if np.isfinite(s):
                    out.append(Record(prompt=sm.prompts[i], candidate=m, score=float(s),
                                      cost=float(c) if np.isfinite(c) else 0.0, category=sm.categories[i]))
    return out, {"source": "replay", "files": [str(p) for p in paths]}


def records_from_eval(runs: Sequence[str]) -> tuple[list[Record], dict[str, Any]]:
    from evals.run_store import latest_rows, read_results, resolve_run_dir

    out: list[Record] = []
    times: list[float] = []
    for run in runs:
        for r in latest_rows(read_results(resolve_run_dir(run))):
            if r.get("score") is None or r.get("error") is not None:
                continue
            text_ = str(r.get("prompt") or r.get("item_id"))
            cost = r.get("cost_usd")
            out.append(Record(prompt=text_, candidate=str(r["route"]), score=float(r["score"]),
                              cost=float(cost) if cost is not None else 0.0, category=r.get("category")))
            if r.get("finished_at") is not None:
                times.append(float(r["finished_at"]))
    return out, {"source": "eval", "runs": [str(r) for r in runs],
                 "first": min(times) if times else None, "last": max(times) if times else None}


# ------------------------------------------------------------------------------------------------- calibration


def expensive_share(chosen: np.ndarray, costs: np.ndarray) -> float:
    """Share of decisions that go to the most expensive candidate."""
    return float(np.mean(chosen == int(np.argmax(costs)))) if len(chosen) else 0.0


def covered_outcome(table: TrainingTable, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(covered mask, score, cost) of each row's chosen model; covered = the chosen model has a recorded score."""
    rows = np.arange(len(chosen))
    s, c = table.scores[rows, chosen], table.costs[rows, chosen]
    ok = np.isfinite(s)
    return ok, s, np.nan_to_num(c, nan=0.0)


def calibrate(router: Router, table: TrainingTable, wtp: float | None, share: float | None) -> dict[str, Any]:
    """Set `router.knob` for a willingness-to-pay or expensive-share target on the training rows; returns what was
    done (the accuracy-share rule is `calibrate_accuracy_share`)."""
    if wtp is None and share is None:
        return {"target": None, "knob": router.knob}
    qs = queries_from_table(table)
    prepared = router.prepare(qs)
    if isinstance(router, ScoreRouter):
        if wtp is not None:
            router.knob = float(wtp)
        else:
            router.knob = lambda_for_share(router.predict(qs), router.model_costs, float(share))  # type: ignore[arg-type]
        chosen = router.choose(prepared, router.knob)
    else:
        best: tuple[float, float] | None = None
        for k in router.knob_grid():
            ch = router.choose(prepared, k)
            if share is not None:
                val = expensive_share(ch, router.model_costs)
                key = val if val <= share else -1.0 - val  # the highest share not above the target, else the lowest
            else:
                ok, s, c = covered_outcome(table, ch)
                key = float(np.mean(s[ok] - float(wtp) * c[ok])) if ok.any() else -math.inf  # type: ignore[arg-type]
            if best is None or key > best[0]:
                best = (key, k)
        assert best is not None
        router.knob = best[1]
        chosen = router.choose(prepared, router.knob)
    target = {"willingness_to_pay": wtp} if wtp is not None else {"expensive_share": share}
    return {"target": target, "knob": router.knob,
            "train_expensive_share": expensive_share(chosen, router.model_costs)}


def sub_table(table: TrainingTable, idx: np.ndarray) -> TrainingTable:
    """The rows `idx` of a table (same candidates)."""
    return TrainingTable([table.prompts[i] for i in idx], list(table.models), table.scores[idx], table.costs[idx],
                         [table.categories[i] for i in idx])


def chosen_outcome(router: Router, table: TrainingTable, chosen_r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of `table`: the recorded (score, cost) of the router's choice (NaN where the table has no record of
    that candidate, or no such candidate)."""
    lookup = {j: table.models.index(m) for j, m in enumerate(router.models) if m in table.models}
    chosen = np.array([lookup.get(int(j), -1) for j in chosen_r], dtype=int)
    s = np.full(len(chosen), np.nan)
    c = np.full(len(chosen), np.nan)
    rows = np.flatnonzero(chosen >= 0)
    s[rows], c[rows] = table.scores[rows, chosen[rows]], table.costs[rows, chosen[rows]]
    return s, c


def out_of_fold_curve(new_router: Callable[[], Router], table: TrainingTable, knobs: Sequence[float], folds: int,
                      seed: int, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(mean cost, accuracy) at each knob over the training rows, each row decided by a router fitted without it:
    `folds`-fold, near-duplicate prompts kept in one fold (`evals.folds.folds_for`), the evaluated queries bare (no
    category label, as a live request). Rows whose chosen candidate has no record are left out of both means."""
    groups = near_duplicate_groups(table.prompts, [c or "" for c in table.categories])
    k = max(2, min(folds, len(set(groups.tolist()))))
    score_sum = np.zeros(len(knobs))
    cost_sum = np.zeros(len(knobs))
    count = np.zeros(len(knobs))
    for f, (tr, te) in enumerate(folds_for(len(table.prompts), k, seed, groups)):
        if progress:
            print(f"calibrating: fold {f + 1}/{k}", file=sys.stderr, flush=True)
        router = new_router()
        router.fit(sub_table(table, tr))
        held = sub_table(table, te)
        prepared = router.prepare([RouteQuery(prompt=p) for p in held.prompts])
        for i, knob in enumerate(knobs):
            s, c = chosen_outcome(router, held, router.choose(prepared, knob))
            ok = np.isfinite(s)
            score_sum[i] += float(np.sum(s[ok]))
            cost_sum[i] += float(np.sum(np.nan_to_num(c[ok], nan=0.0)))
            count[i] += int(ok.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return cost_sum / count, score_sum / count


def best_candidate_accuracy(table: TrainingTable) -> tuple[str, float]:
    """The candidate with the highest mean score over the rows where it has one."""
    with np.errstate(invalid="ignore"):
        means = np.nanmean(table.scores, axis=0)
    j = int(np.nanargmax(means))
    return table.models[j], float(means[j])


def calibrate_accuracy_share(router: Router, new_router: Callable[[], Router], table: TrainingTable, share: float,
                             folds: int, seed: int, progress: bool = True) -> dict[str, Any]:
    """Set `router.knob` (fitted on `table`) by the rule "the cheapest point reaching `share` of the best candidate's
    accuracy" (`routers.base.knob_for_accuracy_share`) on the out-of-fold curve of `table`; returns the rule, the
    knob, and the accuracy and mean cost the curve expects there."""
    knobs = list(router.knob_grid())
    costs, accs = out_of_fold_curve(new_router, table, knobs, folds, seed, progress)
    best_model, best_acc = best_candidate_accuracy(table)
    i = knob_for_accuracy_share(knobs, np.nan_to_num(costs, nan=np.inf), np.nan_to_num(accs, nan=-np.inf), best_acc,
                                share)
    router.knob = knobs[i]
    dear = float(np.max(table.model_costs))
    return {"target": {"accuracy_share": share}, "knob": router.knob, "folds": folds,
            "best_candidate": {"model": best_model, "accuracy": best_acc},
            "expected": {"accuracy": float(accs[i]), "mean_cost": float(costs[i]),
                         "accuracy_share_of_best": float(accs[i]) / best_acc if best_acc > 0 else None,
                         "cost_share_of_dearest": float(costs[i]) / dear if dear > 0 else None}}


def heldout_metrics(router: Router, table: TrainingTable) -> dict[str, Any]:
    """Decisions at the calibrated knob on held-out prompts, scored where the chosen model has a record."""
    if not table.prompts:
        return {}
    qs = [RouteQuery(prompt=p) for p in table.prompts]  # held-out requests carry no category label, as live ones
    prepared = router.prepare(qs)
    cols = [router.models.index(m) if m in router.models else -1 for m in table.models]
    chosen_r = router.choose(prepared, router.knob)
    s, c = chosen_outcome(router, table, chosen_r)
    have = np.isfinite(s)
    out: dict[str, Any] = {
        "n_prompts": len(table.prompts),
        "coverage": float(np.mean(have)),
        "accuracy": float(np.mean(s[have])) if have.any() else None,
        "mean_cost": float(np.nanmean(c[have])) if have.any() else None,
        "expensive_share": expensive_share(chosen_r, router.model_costs),
    }
    with np.errstate(invalid="ignore"):
        means = np.nanmean(table.scores, axis=0)
    if np.isfinite(means).any():
        out["best_single"] = {"model": table.models[int(np.nanargmax(means))], "accuracy": float(np.nanmax(means))}
    if isinstance(router, ScoreRouter):
        pred = router.predict(qs)
        pairs = [(pred[:, j], table.scores[:, k]) for k, j in enumerate(cols) if j >= 0]
        p = np.concatenate([a for a, _ in pairs]) if pairs else np.zeros(0)
        y = np.concatenate([b for _, b in pairs]) if pairs else np.zeros(0)
        m = np.isfinite(y)
        if m.any():
            pc = np.clip(p[m], 1e-6, 1 - 1e-6)
            yy = (y[m] >= 0.5).astype(float)
            out["log_loss"] = float(-np.mean(yy * np.log(pc) + (1 - yy) * np.log(1 - pc)))
            out["brier"] = float(np.mean((p[m] - y[m]) ** 2))
    return out


def split_table(table: TrainingTable, holdout: float, seed: int) -> tuple[TrainingTable, TrainingTable]:
    """Prompts split at random (seeded) into train / held-out tables (no held-out rows under 10 prompts)."""
    n = len(table.prompts)
    n_test = int(round(n * holdout)) if n >= 10 else 0
    perm = np.random.default_rng(seed).permutation(n)
    te, tr = np.sort(perm[:n_test]), np.sort(perm[n_test:])

    return sub_table(table, tr), sub_table(table, te)


def describe_calibration(cal: dict[str, Any], heldout: dict[str, Any]) -> str:
    """One line a person reads: the rule, the knob, and the accuracy and cost expected and measured there."""
    target = cal.get("target") or {}
    rule = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in target.items()) or "the router's own default"
    line = f"knob {cal.get('knob')!r} by {rule}"
    exp = cal.get("expected")
    if exp:
        best = cal["best_candidate"]
        line += (f"; expected (out-of-fold on training rows): accuracy {exp['accuracy']:.4f} "
                 f"({(exp['accuracy_share_of_best'] or 0) * 100:.1f} % of {best['model']}'s {best['accuracy']:.4f}) at "
                 f"mean cost {exp['mean_cost']:.6g} ({(exp['cost_share_of_dearest'] or 0) * 100:.1f} % of the dearest "
                 f"candidate's)")
    if heldout.get("accuracy") is not None:
        line += (f"; held out ({heldout['n_prompts']} prompts): accuracy {heldout['accuracy']:.4f} at mean cost "
                 f"{heldout['mean_cost']:.6g}")
    return line


# --------------------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tandem train", description="Train a query-level router and save it.")
    p.add_argument("router", help="router name (see routers.registry)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-db", metavar="URL", help="SQLAlchemy URL of the gateway's request log")
    src.add_argument("--from-replay", nargs="+", metavar="FILE", help="RouterBench / RouteLLM CSV or JSONL files")
    src.add_argument("--from-eval", nargs="+", metavar="RUN", help="eval run folders (evals.run_store)")
    p.add_argument("--since", default=None, help="with --from-db: unix seconds or ISO date")
    p.add_argument("--route", default=None, help="with --from-db: only requests on this route")
    p.add_argument("--candidate", choices=("model", "route"), default="model", help="with --from-db")
    p.add_argument("--out", required=True, help="artifact path (metadata goes to OUT.json)")
    tgt = p.add_mutually_exclusive_group()
    tgt.add_argument("--willingness-to-pay", type=float, default=None, metavar="LAMBDA",
                     help="score units per dollar: maximise score − λ·cost")
    tgt.add_argument("--expensive-share", type=float, default=None, metavar="S",
                     help="target share of calls to the most expensive candidate")
    tgt.add_argument("--accuracy-share", type=float, default=None, metavar="S",
                     help=f"the cheapest knob reaching S of the best candidate's accuracy on out-of-fold training "
                          f"rows (the default, at {DEFAULT_ACCURACY_SHARE}, when no target is given)")
    p.add_argument("--calibration-folds", type=int, default=5, metavar="K",
                   help="folds of the out-of-fold curve the accuracy-share rule reads (K extra fits)")
    p.add_argument("--holdout", type=float, default=0.2, help="share of prompts held out for the reported metrics")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    reg = default_router_registry()
    if args.router not in reg:
        print(f"unknown router {args.router!r}; known: {', '.join(reg.names())}", file=sys.stderr)
        return 2
    for flag, value in (("--expensive-share", args.expensive_share), ("--accuracy-share", args.accuracy_share)):
        if value is not None and not 0.0 <= value <= 1.0:
            print(f"{flag} must be in [0, 1]", file=sys.stderr)
            return 2
    if args.calibration_folds < 2:
        print("--calibration-folds must be at least 2", file=sys.stderr)
        return 2
    accuracy_share = args.accuracy_share
    if accuracy_share is None and args.willingness_to_pay is None and args.expensive_share is None:
        accuracy_share = DEFAULT_ACCURACY_SHARE
    if args.from_db:
        records, window = records_from_db(args.from_db, parse_since(args.since), args.route, args.candidate)
    elif args.from_replay:
        records, window = records_from_replay(args.from_replay)
    else:
        records, window = records_from_eval(args.from_eval)
    table = records_to_table(records)
    if len(table.models) < 2 or len(table.prompts) < 2:
        print(f"not enough data: {len(records)} records, {len(table.models)} candidates, "
              f"{len(table.prompts)} prompts", file=sys.stderr)
        return 1
    train, test = split_table(table, args.holdout, args.seed)
    t0 = time.perf_counter()
    embedder = Embedder(cache_dir=cache_dir())  # the disk cache serves retraining on the same prompts

    def new_router() -> Router:
        r = reg.create(args.router, seed=args.seed)
        r.embedder = embedder
        return r

    router = new_router()
    router.fit(train)
    if accuracy_share is not None:
        cal = calibrate_accuracy_share(router, new_router, train, accuracy_share, args.calibration_folds, args.seed)
    else:
        cal = calibrate(router, train, args.willingness_to_pay, args.expensive_share)
    metrics = heldout_metrics(router, test)
    router.metadata.update({
        "trained_at": time.time(), "fit_seconds": time.perf_counter() - t0, "data_window": window,
        "n_records": len(records), "n_prompts": len(table.prompts), "n_train_prompts": len(train.prompts),
        "n_heldout_prompts": len(test.prompts), "candidates": list(table.models), "calibration": cal,
        "heldout": metrics,
    })
    out = Path(args.out)
    router.save(out)
    print(describe_calibration(cal, metrics), file=sys.stderr)
    print(json.dumps({"out": str(out), "router": args.router, "n_records": len(records), "calibration": cal,
                      "heldout": metrics}, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
