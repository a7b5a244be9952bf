"""Per-model calibrated classifiers on rich query features, and the router built on them.

- `RichFeatures`: TF-IDF (hashed uni+bigrams seen in ≥ 2 training queries, IDF fit on the training queries) ⊕ sentence embedding ⊕ a one-hot of
  the query's category (RouterBench's dataset, MMLU's subject; unknown / missing → all zeros), the category block
  scaled by `cat_weight` so a linear model can learn per-category priors cheaply.
- `fit_heads`: one logistic regression per model predicting P(score ≥ 0.5); its C is picked from a grid by
  log-loss on an inner K-fold split *of the training rows only* (never the evaluated fold), then refit on all of them.
  A model with one class in training gets a constant probability. Returns the heads and their out-of-fold
  predictions (used by callers to calibrate further knobs without touching the evaluated fold).
- `CalibratedRouter` (`logreg`): the utility rule argmax p̂ − λ·cost over those heads. Its knob grid runs from λ = 0
  (the best *predicted* model) up to the λ where everything goes to the cheapest model, plus one negative λ large
  enough that the top-cost model wins every row (so the curve reaches the best single model).

Left out: non-linear heads (gradient boosting), probability recalibration beyond the logistic link.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from routers.base import RouteQuery, ScoreRouter, lambda_grid
from routers.features import N_HASH_FEATURES, Tfidf, hashed_counts

C_GRID = (0.1, 0.3, 1.0, 3.0)


class RichFeatures:
    """TF-IDF ⊕ embedding ⊕ category one-hot; fit on training queries, then a pure transform."""

    def __init__(
        self, use_tfidf: bool = True, use_emb: bool = True, cat_weight: float = 1.0, min_df: int = 2
    ) -> None:
        self.use_tfidf, self.use_emb, self.cat_weight, self.min_df = use_tfidf, use_emb, cat_weight, min_df
        self.categories: list[str] = []
        self.tfidf: Tfidf | None = None
        self.columns = np.zeros(0, dtype=int)

    def fit(self, queries: Sequence[RouteQuery]) -> RichFeatures:
        cats = {q.category for q in queries if q.category is not None}
        self.categories = sorted(cats) if len(cats) >= 2 else []
        self.tfidf = None
        if self.use_tfidf and queries:
            self.tfidf = Tfidf().fit(queries)
            df = np.bincount(hashed_counts(queries).indices, minlength=N_HASH_FEATURES)
            self.columns = np.flatnonzero(df >= self.min_df)  # hashed n-grams seen in ≥ min_df training queries
        return self

    def category_matrix(self, queries: Sequence[RouteQuery]) -> np.ndarray:
        out = np.zeros((len(queries), len(self.categories)))
        index = {c: k for k, c in enumerate(self.categories)}
        for i, q in enumerate(queries):
            k = index.get(q.category) if q.category is not None else None
            if k is not None:
                out[i, k] = self.cat_weight
        return out

    def transform(self, queries: Sequence[RouteQuery],
                  embed: Callable[[Sequence[RouteQuery]], np.ndarray] | None = None) -> sp.csr_matrix:
        """The feature rows; ``embed`` (e.g. a router's ``embed``) gives the sentence embeddings when ``use_emb``."""
        blocks: list[Any] = []
        if self.tfidf is not None:
            blocks.append(self.tfidf.transform(queries)[:, self.columns])
        if self.use_emb:
            if embed is None:
                raise ValueError("these features include sentence embeddings: pass `embed`")
            blocks.append(sp.csr_matrix(embed(queries)))
        if self.categories:
            blocks.append(sp.csr_matrix(self.category_matrix(queries)))
        if not blocks:
            return sp.csr_matrix((len(queries), 0))
        return sp.hstack(blocks).tocsr()


def binary_targets(col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows with a score, 0/1 pass labels on them)."""
    have = np.flatnonzero(np.isfinite(col))
    return have, (col[have] >= 0.5).astype(int)


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def fit_heads(
    x: Any, scores: np.ndarray, c_grid: Sequence[float] = C_GRID, folds: int = 3, seed: int = 0
) -> tuple[list[Any], np.ndarray, list[float]]:
    """Per model: logistic regression with C chosen by inner-CV log-loss. Returns (heads, OOF P[n, m], chosen Cs).

    A head is a fitted classifier or a float (constant probability). OOF entries are NaN where a score is missing.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    n, m = scores.shape
    heads: list[Any] = []
    oof = np.full((n, m), np.nan)
    chosen: list[float] = []
    for j in range(m):
        have, y = binary_targets(scores[:, j])
        if len(y) == 0 or y.min() == y.max() or np.bincount(y).min() < folds:
            p = float(np.clip(y.mean() if len(y) else 0.5, 0.01, 0.99))
            heads.append(p)
            oof[have, j] = p
            chosen.append(float("nan"))
            continue
        xj = x[have]
        cv = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
        best: tuple[float, float, np.ndarray] | None = None
        for c in c_grid:
            pred = np.zeros(len(y))
            for tr, te in cv:
                clf = LogisticRegression(C=c, max_iter=300, solver="liblinear").fit(xj[tr], y[tr])
                pred[te] = clf.predict_proba(xj[te])[:, 1]
            loss = log_loss(pred, y)
            if best is None or loss < best[0]:
                best = (loss, c, pred)
        assert best is not None
        heads.append(LogisticRegression(C=best[1], max_iter=300, solver="liblinear").fit(xj, y))
        oof[have, j] = best[2]
        chosen.append(best[1])
    return heads, oof, chosen


def predict_heads(heads: Sequence[Any], x: Any) -> np.ndarray:
    """P(pass) [n, m] from `fit_heads` heads."""
    return 1.0 / (1.0 + np.exp(-head_logits(heads, x)))


def head_logits(heads: Sequence[Any], x: Any) -> np.ndarray:
    """Logits [n, m] of the heads (constant heads → their log-odds). A fitted head is binary logistic regression, so
    its logit is ``x · w + b``, computed here directly (sklearn's ``decision_function`` spends ~0.4 ms per call
    validating its input, which was most of a single decision's time)."""
    n = x.shape[0]
    cols = [np.full(n, float(np.log(h / (1 - h)))) if isinstance(h, float)
            else np.asarray(x @ h.coef_[0]).ravel() + float(h.intercept_[0]) for h in heads]  # fmt: skip
    return np.stack(cols, axis=1) if cols else np.zeros((n, 0))


def knob_grid_with_top(costs: np.ndarray, n: int = 40) -> list[float]:
    """`lambda_grid` plus one negative λ at which the most expensive model wins every row (Δscore ≤ 1)."""
    grid = lambda_grid(costs, n)
    c = np.unique(np.asarray(costs, dtype=float))
    if len(c) < 2:
        return grid
    gap = float(np.diff(c)[np.diff(c) > 0].min())
    return [-(2.0 / gap)] + grid


class CalibratedRouter(ScoreRouter):
    """Per-model calibrated logistic heads on TF-IDF ⊕ embedding ⊕ category; utility rule p̂ − λ·cost."""

    name = "logreg"

    def __init__(self, inner_folds: int = 3, c_grid: Sequence[float] = C_GRID, use_tfidf: bool = True, **kw: Any):
        super().__init__(**kw)
        self.inner_folds, self.c_grid, self.use_tfidf = inner_folds, tuple(c_grid), use_tfidf

    def fit(self, data: Any, queries: Sequence[RouteQuery] | None = None) -> CalibratedRouter:
        table, qs = self._table_and_queries(data, queries)
        self.features = RichFeatures(use_tfidf=self.use_tfidf).fit(qs)
        x = self.features.transform(qs, self.embed)
        self.heads, oof, cs = fit_heads(x, table.scores, self.c_grid, self.inner_folds, self.seed)
        self.metadata["chosen_C"] = dict(zip(self.models, cs, strict=True))
        have = np.isfinite(table.scores) & np.isfinite(oof)
        if have.any():
            self.metadata["oof_log_loss"] = log_loss(oof[have], (table.scores[have] >= 0.5).astype(int))
        self._calibrate_share(np.nan_to_num(oof, nan=0.0))
        return self

    def predict(self, queries: Sequence[RouteQuery]) -> np.ndarray:
        return predict_heads(self.heads, self.features.transform(queries, self.embed))

    def knob_grid(self) -> list[float]:
        return knob_grid_with_top(self.model_costs)
