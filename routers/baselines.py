"""Baseline routers every comparison reports: random, always-cheapest, always-best, kNN.

- `random`: uniform over the allowed candidates (seeded by the prompt, so a replay is reproducible).
- `cheapest` / `best`: a single model — the cheapest by mean training cost / the best by mean training score
  (ties to the cheaper).
- `knn`: the k nearest training prompts (cosine on sentence embeddings) give each model's predicted score (mean of
  the neighbours' recorded scores, missing ones skipped, the model's training mean where none), then the utility
  rule argmax (p̂ − λ·cost).

Left out: learned neighbourhood sizes (k is configuration).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from routers.base import RouteQuery, Router, ScoreRouter


def column_means(scores: np.ndarray) -> np.ndarray:
    """Mean score per model over its non-missing rows (0 where a model has none)."""
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(np.nanmean(scores, axis=0), nan=0.0)


class RandomRouter(Router):
    name = "random"

    def fit(self, data: Any, queries: Sequence[RouteQuery] | None = None) -> RandomRouter:
        self._table_and_queries(data, queries)
        return self

    def prepare(self, queries: Sequence[RouteQuery]) -> np.ndarray:
        seeds = [int(hashlib.sha1(f"{self.seed}:{q.text}".encode()).hexdigest()[:8], 16) for q in queries]
        return np.array([np.random.default_rng(s).random() for s in seeds])

    def choose(self, prepared: Any, knob: float | None = None, mask: np.ndarray | None = None) -> np.ndarray:
        allowed = np.flatnonzero(mask) if mask is not None else np.arange(len(self.models))
        return allowed[np.minimum((prepared * len(allowed)).astype(int), len(allowed) - 1)]


class _FixedRouter(Router):
    """Always the same model order: the first allowed model in `self.order`."""

    order: np.ndarray

    def prepare(self, queries: Sequence[RouteQuery]) -> int:
        return len(queries)

    def choose(self, prepared: Any, knob: float | None = None, mask: np.ndarray | None = None) -> np.ndarray:
        allowed = self.order if mask is None else [j for j in self.order if mask[j]]
        return np.full(int(prepared), int(allowed[0]), dtype=int)


class CheapestRouter(_FixedRouter):
    name = "cheapest"

    def fit(self, data: Any, queries: Sequence[RouteQuery] | None = None) -> CheapestRouter:
        table, _ = self._table_and_queries(data, queries)
        self.order = np.argsort(self.model_costs, kind="stable")
        return self


class BestRouter(_FixedRouter):
    name = "best"

    def fit(self, data: Any, queries: Sequence[RouteQuery] | None = None) -> BestRouter:
        table, _ = self._table_and_queries(data, queries)
        means = column_means(table.scores)
        self.order = np.lexsort((self.model_costs, -means))  # best mean first, ties to the cheaper
        self.metadata["train_means"] = dict(zip(self.models, means.tolist(), strict=True))
        return self


def knn_predict(
    train_emb: np.ndarray, train_scores: np.ndarray, query_emb: np.ndarray, k: int, fallback: np.ndarray
) -> np.ndarray:
    """Mean recorded score of the k most cosine-similar training rows, per model (NaN-aware)."""
    sims = query_emb @ train_emb.T  # rows are L2-normalised
    k = min(k, train_emb.shape[0])
    idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    neigh = train_scores[idx]  # [n, k, m]
    with np.errstate(invalid="ignore"):
        cnt = np.sum(np.isfinite(neigh), axis=1)
        mean = np.nansum(neigh, axis=1) / np.maximum(cnt, 1)
    return np.where(cnt > 0, mean, fallback[None, :])


class KnnRouter(ScoreRouter):
    name = "knn"

    def __init__(self, k: int = 20, **kw: Any) -> None:
        super().__init__(**kw)
        self.k = k

    def fit(self, data: Any, queries: Sequence[RouteQuery] | None = None) -> KnnRouter:
        table, qs = self._table_and_queries(data, queries)
        self.train_emb = self.embed(qs).astype(np.float32)
        self.train_scores = table.scores.astype(np.float32)
        self.fallback = column_means(table.scores)
        self._calibrate_share(self.predict(qs))
        return self

    def predict(self, queries: Sequence[RouteQuery]) -> np.ndarray:
        return knn_predict(self.train_emb, self.train_scores, self.embed(queries), self.k, self.fallback)
