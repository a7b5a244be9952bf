"""Shared router types: `Decision`, `RouteQuery` (and its routing text), `Record`, the `Router` ABC and the utility
rule, and the router artifact's file format.

A router picks one candidate route for a query. It is trained from `Record`s (prompt, candidate, score in [0, 1],
cost) or directly from a replay `ScoreMatrix`, and never calls a model itself. Every router has one calibration
knob (`knob`): a willingness-to-pay λ for the score-predicting routers (maximise p̂ − λ·cost), a quality target
for the complexity routers; `knob_grid()` gives the values, calibrated from training data, that a replay sweeps to
draw the cost/quality curve. Thresholds are never hard-coded.

Routers split a decision into `prepare(queries)` (everything that does not depend on the knob: features, predicted
scores, class probabilities) and `choose(prepared, knob, mask)` (a cheap pure step), so a replay prepares a test
fold once and sweeps the knob for free. `decide` is `prepare` + `choose` for one query.

`routing_text(prompt)` is the text every feature and embedding looks at: RouterBench prompts are the string form of
a Python list of turns and ARC / Winogrande prompts start with a long few-shot block, so it is the last turn's last
block (`RouteQuery.text`, cached on the query).

Artifacts (`Router.save` / `Router.load`): a pickled header ``{"format": "tandem-router", "version": N}`` followed by
the pickled router. `load` reads versions 1..`ARTIFACT_VERSION`, and unversioned files (a bare pickled router, written
before the header existed), whose objects upgrade their old attribute layout as they are unpickled (`__setstate__`);
any other version raises `ArtifactVersionError` before the router itself is unpickled.

Left out: gateway integration (HTTP headers, logging) and LLM-driven routers (TCAR).
"""

from __future__ import annotations

import ast
import json
import pickle
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from routers.embedder import Embedder, embeddings

ARTIFACT_FORMAT = "tandem-router"
ARTIFACT_VERSION = 1  # raise it when a router's pickled layout changes, and teach `__setstate__` the old one
_LONG_PROMPT = 2000


class ArtifactError(ValueError):
    """A router artifact this tandem cannot load (its message says why and what to do)."""


class ArtifactVersionError(ArtifactError):
    """A router artifact written in a format version this tandem does not read."""

# ----------------------------------------------------------------------------------------------------- data types


@dataclass
class Decision:
    """What a router chose: the route, a score per candidate, a one-line reason, and free-form extras."""

    route: str
    scores: dict[str, float]
    reason: str
    candidates: list[str]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "scores": {k: float(v) for k, v in self.scores.items()},
            "reason": self.reason,
            "candidates": list(self.candidates),
            "extra": _jsonable(self.extra),
        }


def routing_text(prompt: str) -> str:
    """The part of a prompt worth routing on (the question), see the module docstring."""
    text = prompt
    s = prompt.lstrip()
    if s.startswith("[") and s.rstrip().endswith("]"):
        try:
            turns = ast.literal_eval(s)
            if isinstance(turns, (list, tuple)) and turns:
                last = turns[-1]
                text = last.get("content", "") if isinstance(last, dict) else str(last)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            pass
    if len(text) > _LONG_PROMPT:
        blocks = [b for b in text.split("\n\n") if b.strip()]
        if len(blocks) > 1:
            text = blocks[-1]
    return text.strip()


@dataclass
class RouteQuery:
    """One request as a router sees it. `features` caches per-query features (shared by every router)."""

    prompt: str
    messages: list[dict[str, Any]] | None = None
    category: str | None = None
    features: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """`routing_text` of the prompt (cached in `features`)."""
        t = self.features.get("text")
        if t is None:
            t = self.features["text"] = routing_text(self.prompt)
        return t

    @classmethod
    def from_messages(cls, messages: list[dict[str, Any]], category: str | None = None) -> RouteQuery:
        """The last user turn is the prompt routers look at."""
        text = ""
        for m in reversed(messages):
            if m.get("role") == "user":
                content = m.get("content")
                if isinstance(content, list):  # OpenAI content parts
                    content = " ".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
                text = str(content or "")
                break
        return cls(prompt=text, messages=messages, category=category)


@dataclass
class Record:
    """One training example: a candidate's score (in [0, 1]) and cost on a prompt."""

    prompt: str
    candidate: str
    score: float
    cost: float
    conversation: list[dict[str, Any]] | None = None
    category: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainingTable:
    """Records pivoted to a dense prompt × candidate table (NaN where a candidate has no record)."""

    prompts: list[str]
    models: list[str]
    scores: np.ndarray  # [n, m], NaN = missing
    costs: np.ndarray  # [n, m], NaN = missing
    categories: list[str | None]

    @property
    def model_costs(self) -> np.ndarray:
        """Mean cost per model over the rows where it has one (the price a router assumes at decision time)."""
        with np.errstate(invalid="ignore"):
            c = np.nanmean(np.where(np.isfinite(self.costs), self.costs, np.nan), axis=0)
        return np.nan_to_num(c, nan=0.0)


def records_to_table(records: Sequence[Record]) -> TrainingTable:
    """Pivot records on (prompt, candidate); repeated pairs are averaged."""
    prompts: dict[str, int] = {}
    models: dict[str, int] = {}
    cats: dict[str, str | None] = {}
    for r in records:
        prompts.setdefault(r.prompt, len(prompts))
        models.setdefault(r.candidate, len(models))
        if r.category is not None:
            cats[r.prompt] = r.category
    n, m = len(prompts), len(models)
    s_sum, c_sum, cnt = np.zeros((n, m)), np.zeros((n, m)), np.zeros((n, m))
    for r in records:
        i, j = prompts[r.prompt], models[r.candidate]
        s_sum[i, j] += float(r.score)
        c_sum[i, j] += float(r.cost)
        cnt[i, j] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(cnt > 0, s_sum / np.maximum(cnt, 1), np.nan)
        costs = np.where(cnt > 0, c_sum / np.maximum(cnt, 1), np.nan)
    plist = list(prompts)
    return TrainingTable(plist, list(models), scores, costs, [cats.get(p) for p in plist])


@runtime_checkable
class ScoreTable(Protocol):
    """A dense prompt × model table a router can train on directly (`evals.replay_data.ScoreMatrix` is one)."""

    prompts: Sequence[str]
    models: Sequence[str]
    scores: np.ndarray
    costs: np.ndarray
    categories: Sequence[str | None]


def to_table(data: ScoreTable | Sequence[Record]) -> TrainingTable:
    """Accept records or a `ScoreTable` (prompts, models, scores, costs, categories)."""
    if isinstance(data, TrainingTable):
        return data
    if isinstance(data, ScoreTable):
        return TrainingTable(
            prompts=[str(p) for p in data.prompts],
            models=[str(m) for m in data.models],
            scores=np.asarray(data.scores, dtype=float),
            costs=np.asarray(data.costs, dtype=float),
            categories=list(data.categories),
        )
    return records_to_table(list(data))


def queries_from_table(table: TrainingTable) -> list[RouteQuery]:
    return [RouteQuery(prompt=p, category=c) for p, c in zip(table.prompts, table.categories, strict=True)]


# ----------------------------------------------------------------------------------------------- the utility rule


def utility_argmax(pred: np.ndarray, costs: np.ndarray, lam: float, mask: np.ndarray | None = None) -> np.ndarray:
    """Per row, argmax_m (pred[m] − lam·costs[m]) over allowed candidates; ties go to the cheaper model.

    `pred` is [n, m] (or [m]); `costs` is [m], or [n, m] for a cost expected per query and model (ties then go to
    the model cheaper on average); `mask` is a boolean [m] of allowed candidates.
    """
    pred = np.atleast_2d(np.asarray(pred, dtype=float))
    costs = np.asarray(costs, dtype=float)
    u = pred - lam * (costs if costs.ndim == 2 else costs[None, :])
    if costs.ndim == 2:
        costs = costs.mean(axis=0)
    if mask is not None:
        u = np.where(np.asarray(mask, dtype=bool)[None, :], u, -np.inf)
    # tie-break towards the cheaper model: order columns by cost, take the first maximum
    order = np.argsort(costs, kind="stable")
    best = np.argmax(u[:, order], axis=1)
    return order[best]


def lambda_grid(costs: np.ndarray, n: int = 40) -> list[float]:
    """λ values from 0 (quality only) to a value past which every decision is the cheapest model.

    A switch between two models happens at λ = Δscore / Δcost with Δscore ≤ 1, so the grid runs geometrically from
    1e-3 / (cost range) to 1 / (smallest cost gap between models); both come from the training costs.
    """
    c = np.unique(np.asarray(costs, dtype=float))
    if len(c) < 2:
        return [0.0]
    gaps = np.diff(c)
    hi = 1.0 / max(float(gaps[gaps > 0].min()), 1e-12)
    lo = 1e-3 / float(c[-1] - c[0])
    return [0.0] + [float(x) for x in np.geomspace(lo, hi * 1.01, n - 1)]


def lambda_for_share(
    pred: np.ndarray, costs: np.ndarray, share: float, expensive: np.ndarray | None = None, iters: int = 60
) -> float:
    """Smallest λ whose share of calls to the expensive set is ≤ `share` (bisection; the share falls as λ grows).

    `expensive` is a boolean [m] (default: the most expensive model).
    """
    costs = np.asarray(costs, dtype=float)
    if expensive is None:
        expensive = costs == costs.max()
    grid = lambda_grid(costs, 60)
    lo, hi = 0.0, grid[-1] * 10 + 1.0

    def frac(lam: float) -> float:
        return float(np.mean(expensive[utility_argmax(pred, costs, lam)]))

    if frac(lo) <= share:
        return lo
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if frac(mid) <= share:
            hi = mid
        else:
            lo = mid
    return hi


def knob_for_accuracy_share(knobs: Sequence[float], costs: Sequence[float], accuracies: Sequence[float],
                            best_accuracy: float, share: float) -> int:
    """Index of the knob a router deploys with under the rule "the cheapest point reaching ``share`` of the best
    candidate's accuracy": among the knobs whose (held-out) accuracy is ≥ share · best_accuracy, the one of least
    mean cost (ties: higher accuracy, then the earlier knob). When no knob reaches it, the most accurate one (ties:
    cheaper). ``costs`` and ``accuracies`` are the curve measured at each knob on data the router was not fitted on.
    """
    if not len(knobs) or len(knobs) != len(costs) or len(knobs) != len(accuracies):
        raise ValueError("knobs, costs and accuracies must be non-empty and of one length")
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"accuracy share must be in [0, 1], got {share}")
    c = np.asarray(costs, dtype=float)
    a = np.asarray(accuracies, dtype=float)
    order = np.lexsort((np.arange(len(c)), -a, c))  # by cost, then accuracy (descending), then position
    target = share * float(best_accuracy)
    reach = [int(i) for i in order if a[i] >= target - 1e-12]
    if reach:
        return reach[0]
    return int(np.lexsort((np.arange(len(c)), c, -a))[0])


# ------------------------------------------------------------------------------------------------------ the ABC


class Router(ABC):
    """Base class. Subclasses implement `fit`, `prepare`, `choose` and `knob_grid`."""

    name: str = "router"

    def __init__(self, knob: float | None = None, seed: int = 0) -> None:
        self.knob = knob
        self.seed = seed
        self.models: list[str] = []
        self.model_costs: np.ndarray = np.zeros(0)
        self.metadata: dict[str, Any] = {}
        # shared sentence embedder (not pickled), set by whoever runs the router; without one, an in-memory one is
        # made on first use
        self.embedder: Embedder | None = None

    def embed(self, queries: Sequence[RouteQuery]) -> np.ndarray:
        """Sentence embeddings of ``queries`` (cached on each query) by this router's ``embedder``."""
        if self.embedder is None:
            self.embedder = Embedder()
        return embeddings(queries, self.embedder)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "embedder": None}  # the embedder is the caller's, never part of the artifact

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("embedder", None)  # unversioned artifacts saved before routers held an embedder

    # --- training -------------------------------------------------------------------------------------------
    @abstractmethod
    def fit(self, data: Any, queries: Sequence[RouteQuery] | None = None) -> Router:
        """Train on `Record`s or a `ScoreMatrix`; returns self.

        `queries` (optional) are the rows' `RouteQuery`s with cached features, aligned with the data's prompts.
        """

    def _table_and_queries(
        self, data: Any, queries: Sequence[RouteQuery] | None
    ) -> tuple[TrainingTable, list[RouteQuery]]:
        table = to_table(data)
        qs = list(queries) if queries is not None else queries_from_table(table)
        if len(qs) != len(table.prompts):
            raise ValueError("queries must align with the training prompts")
        self._fit_common(table)
        return table, qs

    def _fit_common(self, table: TrainingTable) -> None:
        self.models = list(table.models)
        self.model_costs = table.model_costs
        self.metadata.setdefault("n_train", len(table.prompts))
        self.metadata.setdefault("models", self.models)

    # --- deciding -------------------------------------------------------------------------------------------
    @abstractmethod
    def prepare(self, queries: Sequence[RouteQuery]) -> Any:
        """Knob-independent work for a batch of queries."""

    @abstractmethod
    def choose(self, prepared: Any, knob: float | None = None, mask: np.ndarray | None = None) -> np.ndarray:
        """Model indices (into `self.models`) for a prepared batch at a knob value."""

    def knob_grid(self) -> list[float]:
        """Knob values a replay sweeps; single-point routers return [current knob]."""
        return [self.knob if self.knob is not None else 0.0]

    def default_knob(self) -> float | None:
        return self.knob

    def row_scores(self, prepared: Any, i: int) -> dict[str, float]:
        """Per-candidate scores for row i of a prepared batch (for `Decision.scores`)."""
        return {}

    def decision_extra(self, prepared: Any, known: Sequence[str]) -> dict[str, Any]:
        """Router-specific fields for `Decision.extra` (beside the knob), from row 0 of a prepared batch restricted
        to the `known` candidates."""
        return {}

    def decide(self, query: RouteQuery | str, candidates: Sequence[str] | None = None) -> Decision:
        if isinstance(query, str):
            query = RouteQuery(prompt=query)
        if not self.models:
            raise RuntimeError(f"router {self.name!r} is not fitted")
        cands = list(candidates) if candidates else list(self.models)
        known = [c for c in cands if c in self.models]
        if not known:
            raise ValueError(f"none of the candidates {cands} is known to router {self.name!r}")
        mask = np.array([m in known for m in self.models])
        prepared = self.prepare([query])
        knob = self.default_knob()
        idx = int(self.choose(prepared, knob, mask)[0])
        scores = {k: v for k, v in self.row_scores(prepared, 0).items() if k in known}
        route = self.models[idx]
        reason = f"{self.name}: {route}" + (f" (knob={knob:.4g})" if knob is not None else "")
        extra = {"knob": knob, **self.decision_extra(prepared, known)}
        return Decision(route=route, scores=scores, reason=reason, candidates=known, extra=extra)

    # --- persistence ----------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the artifact (the versioned header, then the pickled router) to `path` and its JSON metadata to
        `path` + '.json'."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            pickle.dump({"format": ARTIFACT_FORMAT, "version": ARTIFACT_VERSION}, f, protocol=pickle.HIGHEST_PROTOCOL)
            pickle.dump(self, f, protocol=pickle.HIGHEST_PROTOCOL)
        meta = {"router": self.name, "class": type(self).__name__, "knob": self.knob,
                "artifact_version": ARTIFACT_VERSION, **self.metadata}
        Path(str(path) + ".json").write_text(json.dumps(_jsonable(meta), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> Router:
        """A router written by `save` (any version 1..`ARTIFACT_VERSION`) or an unversioned one (a bare pickle)."""
        with open(path, "rb") as f:
            head = pickle.load(f)
            if isinstance(head, dict) and head.get("format") == ARTIFACT_FORMAT:
                version = head.get("version")
                if not isinstance(version, int) or not 1 <= version <= ARTIFACT_VERSION:
                    raise ArtifactVersionError(
                        f"router artifact {path} has format version {version!r}; this tandem reads versions "
                        f"1..{ARTIFACT_VERSION} (and unversioned artifacts): retrain it with this tandem or use the "
                        "tandem that wrote it")
                obj = pickle.load(f)
            else:
                obj = head  # unversioned: the pickled router itself, its old layout upgraded by `__setstate__`
        if not isinstance(obj, Router):
            raise TypeError(f"{path} does not hold a Router")
        return obj


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if is_dataclass(x) and not isinstance(x, type):
        return _jsonable(asdict(x))
    return x


@dataclass
class Prepared:
    """A score router's prepared batch: `values` [n, m] (predicted scores, or the router's logits) and, when the
    router predicts them, `costs` [n, m], the expected cost of each model on each query (None: each model's mean
    training cost applies)."""

    values: np.ndarray
    costs: np.ndarray | None = None


class ScoreRouter(Router):
    """A router that predicts a score per model and picks argmax (p̂ − λ·cost); the knob is λ.

    Subclasses implement `fit` and `predict(queries) -> [n, m]`. With `target_expensive_share` set, `fit`
    subclasses may call `_calibrate_share(train_pred)` to turn the share into λ on training predictions.
    """

    def __init__(self, knob: float | None = 0.0, seed: int = 0, target_expensive_share: float | None = None) -> None:
        super().__init__(knob=knob, seed=seed)
        self.target_expensive_share = target_expensive_share

    @abstractmethod
    def predict(self, queries: Sequence[RouteQuery]) -> np.ndarray:
        """Predicted score in [0, 1] per (query, model)."""

    def prepare(self, queries: Sequence[RouteQuery]) -> Prepared:
        return Prepared(self.predict(queries))

    def choose(self, prepared: Prepared, knob: float | None = None, mask: np.ndarray | None = None) -> np.ndarray:
        lam = float(knob if knob is not None else (self.knob or 0.0))
        costs = self.model_costs if prepared.costs is None else prepared.costs
        return utility_argmax(prepared.values, costs, lam, mask)

    def knob_grid(self) -> list[float]:
        return lambda_grid(self.model_costs)

    def row_scores(self, prepared: Prepared, i: int) -> dict[str, float]:
        return {m: float(prepared.values[i, j]) for j, m in enumerate(self.models)}

    def _calibrate_share(self, train_pred: np.ndarray) -> None:
        if self.target_expensive_share is not None:
            self.knob = lambda_for_share(train_pred, self.model_costs, self.target_expensive_share)
            self.metadata["calibration"] = {
                "target_expensive_share": self.target_expensive_share,
                "lambda": self.knob,
            }
