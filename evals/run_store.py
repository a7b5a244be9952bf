"""A live eval run on disk, and the same run read back from the gateway's request log.

A run folder ``<out>/<run_id>/`` holds:

- ``meta.json`` — ``{"run_id", "routes": [...], "suite", "split", "n", "gateway", "created_at", "resumed_at": [...],
  "concurrency", "max_tokens"}``;
- ``results.jsonl`` — one JSON object per finished (route, item), appended as it finishes::

      {"run_id", "route", "item_id", "suite", "category",
       "score": 0..1 | null (error), "cost_usd", "latency_s", "ttft_s",
       "usage": [{"model", "prompt_tokens", "cached_tokens", "completion_tokens", "cost_usd", "seconds"}],
       "tokens": {model: {"prompt": n, "completion": n}},
       "request_id", "decision": {...} | null, "output": "text",
       "provenance": [[model, text], ...] | null   # only when the stream said which model wrote each piece
       "error": null | "message", "finished_at": unix seconds}

A truncated last line (the process was killed mid-write) is ignored. When a (route, item) appears more than once
(an error, then a retry on resume) the last successful row wins.

``load_run`` turns a folder into :class:`RunData` — per-route arrays aligned on one item order, ready for
``evals.metrics``; ``load_run_from_log`` builds the same from the SQL request log (rows tagged with the run's
``eval_run`` id, scores from the feedback the live runner attached, item ids from the feedback label), so a report
can be checked against a replay of the log. ``to_replay_jsonl`` writes a run in the replay format of
``evals.replay_data.load_jsonl``.

What it leaves out: running requests (``evals.live``) and drawing (``evals.report``).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "RunData",
    "append_result",
    "done_keys",
    "latest_rows",
    "load_run",
    "load_run_from_log",
    "read_meta",
    "read_results",
    "resolve_run_dir",
    "to_replay_jsonl",
    "write_meta",
]

META = "meta.json"
RESULTS = "results.jsonl"


def default_runs_dir() -> Path:
    return Path(os.environ.get("TANDEM_RUNS_DIR", "~/.tandem/runs")).expanduser()


def resolve_run_dir(run: str | os.PathLike[str]) -> Path:
    """A run folder from a path, or from a run id under ``$TANDEM_RUNS_DIR`` (default ``~/.tandem/runs``)."""
    p = Path(run).expanduser()
    if (p / RESULTS).exists() or (p / META).exists():
        return p
    q = default_runs_dir() / str(run)
    if (q / RESULTS).exists() or (q / META).exists():
        return q
    raise FileNotFoundError(f"no run folder at {p} or {q}")


# ----------------------------------------------------------------------------------------------- files


def write_meta(run_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Write ``meta.json``; a run started again keeps its ``created_at`` and gets a ``resumed_at`` entry."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / META
    merged = dict(meta)
    if path.exists():
        old = read_meta(run_dir)
        merged["created_at"] = old.get("created_at", merged.get("created_at"))
        merged["resumed_at"] = [*old.get("resumed_at", []), time.time()]
        merged["routes"] = list(dict.fromkeys([*old.get("routes", []), *merged.get("routes", [])]))
    merged.setdefault("created_at", time.time())
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(merged, indent=2, sort_keys=True))
    tmp.replace(path)
    return merged


def read_meta(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / META
    return json.loads(path.read_text()) if path.exists() else {}


def append_result(run_dir: Path, row: dict[str, Any]) -> None:
    """Append one result line and flush it to the OS (it survives the process being killed)."""
    with open(Path(run_dir) / RESULTS, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False, allow_nan=False, default=_json_default) + "\n")
        f.flush()


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def read_results(run_dir: Path) -> list[dict[str, Any]]:
    """Every complete line of ``results.jsonl`` (a torn last line is skipped)."""
    path = Path(run_dir) / RESULTS
    if not path.exists():
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # torn write
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def latest_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (route, item): the last successful one, else the last one; in first-seen order."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        key = (r["route"], r["item_id"])
        if key not in best or r.get("error") is None or best[key].get("error") is not None:
            best[key] = r
    return list(best.values())


def done_keys(run_dir: Path) -> set[tuple[str, str]]:
    """(route, item id) pairs finished without error — skipped when the run is started again."""
    return {(r["route"], r["item_id"]) for r in read_results(run_dir) if r.get("error") is None}


# ----------------------------------------------------------------------------------------------- arrays


@dataclass
class RunData:
    """A run as arrays: ``costs[route][i]`` / ``scores[route][i]`` / ``latency[route][i]`` for item ``items[i]``
    (NaN where the route has no successful result for that item)."""

    run_id: str
    routes: list[str]
    items: list[str]
    categories: list[str]
    costs: dict[str, np.ndarray]
    scores: dict[str, np.ndarray]
    latency: dict[str, np.ndarray]
    rows: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def route_rows(self, route: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["route"] == route]


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def build_run(run_id: str, rows: list[dict[str, Any]], routes: list[str] | None = None,
              meta: dict[str, Any] | None = None) -> RunData:
    """Arrays from result rows (already one per (route, item)); errors count as missing, not as 0."""
    routes = list(dict.fromkeys([*(routes or []), *(r["route"] for r in rows)]))
    items = list(dict.fromkeys(r["item_id"] for r in rows))
    index = {it: i for i, it in enumerate(items)}
    cats = ["all"] * len(items)
    costs = {rt: np.full(len(items), np.nan) for rt in routes}
    scores = {rt: np.full(len(items), np.nan) for rt in routes}
    latency = {rt: np.full(len(items), np.nan) for rt in routes}
    for r in rows:
        i = index[r["item_id"]]
        if r.get("category"):
            cats[i] = str(r["category"])
        if r.get("error") is not None:
            continue
        costs[r["route"]][i] = _num(r.get("cost_usd"))
        scores[r["route"]][i] = _num(r.get("score"))
        latency[r["route"]][i] = _num(r.get("latency_s"))
    return RunData(run_id, routes, items, cats, costs, scores, latency, rows, meta or {})


def load_run(run: str | os.PathLike[str]) -> RunData:
    """A run folder (or a run id under the default runs folder) as :class:`RunData`."""
    run_dir = resolve_run_dir(run)
    meta = read_meta(run_dir)
    rows = latest_rows(read_results(run_dir))
    return build_run(str(meta.get("run_id", run_dir.name)), rows, meta.get("routes"), meta)


def load_run_from_log(database_url: str, eval_run: str) -> RunData:
    """The run as the gateway logged it: rows with ``eval_run`` = the run id, joined with their latest feedback.

    Route = the ``route`` column (what the client asked for), cost = ``cost_usd``, latency = ``latency_ms``/1000,
    score = the feedback score, item id = the feedback label (rows without feedback are left out: they are
    requests whose answer was never scored, e.g. failures). Only successful requests count."""
    from gateway.storage.db import make_engine
    from gateway.storage.request_log import RequestLog

    engine = make_engine(database_url)
    try:
        log = RequestLog(engine, spool_dir=os.devnull)
        rows: list[dict[str, Any]] = []
        for rec in log.records(eval_run=eval_run, with_feedback_only=True):
            if rec.get("status") != "ok" or not rec.get("feedback_label"):
                continue
            lat = rec.get("latency_ms")
            rows.append({"route": rec["route"], "item_id": rec["feedback_label"], "score": rec["feedback_score"],
                         "cost_usd": rec["cost_usd"], "latency_s": None if lat is None else lat / 1000.0,
                         "request_id": rec["id"], "decision": rec.get("decision"), "usage": rec.get("usage"),
                         "output": rec.get("response"), "error": None})
    finally:
        engine.dispose()
    return build_run(eval_run, latest_rows(rows))


def to_replay_jsonl(run: RunData, path: str | os.PathLike[str]) -> int:
    """Write the run in the replay format (``evals.replay_data.load_jsonl``): one line per item with every route's
    score and cost (null where missing). Returns the number of lines."""
    prompts = {r["item_id"]: r.get("prompt") for r in run.rows}
    with open(path, "w", encoding="utf-8") as f:
        for i, item in enumerate(run.items):
            models = {}
            for rt in run.routes:
                s, c = run.scores[rt][i], run.costs[rt][i]
                models[rt] = {"score": None if math.isnan(s) else float(s), "cost": None if math.isnan(c) else float(c)}
            f.write(json.dumps({"id": item, "prompt": prompts.get(item) or item, "category": run.categories[i],
                                "models": models}) + "\n")
    return len(run.items)
