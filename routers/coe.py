"""Composition of Experts (CoE): a category classifier, then a category → expert map.

1. Categories come from the data's labels (≥ 2 distinct ones) or, when there are none, from k-means clusters of the
   prompt embeddings. A multinomial logistic regression on embeddings predicts them.
2. The map is chosen from held-out scores: training rows are grouped by their *out-of-fold* predicted category (so
   the map sees the classifier's mistakes), and per category the expert is the cheapest model whose mean score is
   within ε of the category's best (ε = 0: the best expert), optionally under a mean-cost budget.
3. Low confidence (the classifier's max probability below a threshold) sends the query to a generalist: a
   configured model, else the expert the same rule picks on all training rows. The threshold is calibrated on the
   out-of-fold predictions: the largest max-probability below which the classifier's accuracy is at most
   `low_confidence_accuracy`.
The knob is ε; its grid is the set of score gaps that change the map.

Left out: entropy-based confidence (max probability only), hierarchical categories.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from routers.base import RouteQuery, Router

# --------------------------------------------------------------------------------------------------- pure rules


def coe_expert_map(
    means: np.ndarray,
    costs: np.ndarray,
    eps: float,
    budget: float | None = None,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Expert per category: the cheapest model with mean score ≥ best − eps (ties to the better score).

    `means` is [C, m] (NaN = no data), `costs` [m]. With `budget`, while the weighted mean cost of the map exceeds it,
    the category whose move to its next cheaper model loses the least score per dollar saved is moved down.
    """
    means = np.nan_to_num(np.asarray(means, dtype=float), nan=-np.inf)
    costs = np.asarray(costs, dtype=float)
    n_cat, m = means.shape
    experts = np.zeros(n_cat, dtype=int)
    for c in range(n_cat):
        ok = np.flatnonzero(means[c] >= means[c].max() - eps - 1e-12)
        experts[c] = ok[np.lexsort((-means[c, ok], costs[ok]))[0]]
    if budget is None:
        return experts
    w = np.ones(n_cat) / n_cat if weights is None else np.asarray(weights, dtype=float) / np.sum(weights)
    while float(np.dot(w, costs[experts])) > budget + 1e-15:
        best: tuple[float, int, int] | None = None
        for c in range(n_cat):
            cheaper = np.flatnonzero(costs < costs[experts[c]])
            if len(cheaper) == 0:
                continue
            j = cheaper[np.argmax(means[c, cheaper])]  # best of the cheaper models
            loss = (means[c, experts[c]] - means[c, j]) / (w[c] * (costs[experts[c]] - costs[j]) + 1e-18)
            if best is None or loss < best[0]:
                best = (loss, c, int(j))
        if best is None:
            break
        experts[best[1]] = best[2]
    return experts


def confidence_threshold(max_prob: np.ndarray, correct: np.ndarray, low_accuracy: float) -> float:
    """Largest t among the max probabilities such that the rows with max_prob < t have accuracy ≤ low_accuracy.

    0.0 (never fall back) when even the least confident row is right more often than that.
    """
    order = np.argsort(max_prob, kind="stable")
    mp, ok = max_prob[order], correct[order].astype(float)
    acc_below = np.cumsum(ok) / np.arange(1, len(ok) + 1)  # accuracy of rows [0..i]
    good = np.flatnonzero(acc_below <= low_accuracy)
    if len(good) == 0:
        return 0.0
    i = good[-1]
    return float(mp[i + 1]) if i + 1 < len(mp) else float(mp[i]) + 1e-9


# ------------------------------------------------------------------------------------------------------- router


class CoERouter(Router):
    name = "coe"

    def __init__(
        self,
        knob: float | None = 0.0,
        seed: int = 0,
        n_clusters: int = 8,
        budget: float | None = None,
        generalist: str | None = None,
        low_confidence_accuracy: float = 0.5,
        c: float = 1.0,
        inner_folds: int = 3,
    ) -> None:
        super().__init__(knob=knob, seed=seed)
        self.n_clusters, self.budget, self.generalist = n_clusters, budget, generalist
        self.low_confidence_accuracy, self.c, self.inner_folds = low_confidence_accuracy, c, inner_folds

    def fit(self, data: Any, queries: Sequence[RouteQuery] | None = None) -> CoERouter:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        table, qs = self._table_and_queries(data, queries)
        x = self.embed(qs)
        labels = [c for c in table.categories if c is not None]
        if len(labels) == len(qs) and len(set(labels)) >= 2:
            self.categories = sorted(set(labels))
            y = np.array([self.categories.index(c) for c in labels])
            self.metadata["categories_from"] = "labels"
        else:
            from sklearn.cluster import KMeans

            k = max(1, min(self.n_clusters, len(qs) // 10))
            y = KMeans(n_clusters=k, n_init=4, random_state=self.seed).fit_predict(x)
            self.categories = [f"cluster-{i}" for i in range(k)]
            self.metadata["categories_from"] = "kmeans"
        n_cat = len(self.categories)
        counts = np.bincount(y, minlength=n_cat)
        self.clf = None
        if n_cat > 1:
            clf = LogisticRegression(C=self.c, max_iter=500)
            folds = min(self.inner_folds, int(counts[counts > 0].min()))
            if folds >= 2:
                cv = StratifiedKFold(folds, shuffle=True, random_state=self.seed)
                oof = np.zeros((len(y), n_cat))
                oof[:, np.unique(y)] = cross_val_predict(clf, x, y, cv=cv, method="predict_proba")
            else:
                oof = None
            self.clf = clf.fit(x, y)
            if oof is None:
                oof = np.zeros((len(y), n_cat))
                oof[:, self.clf.classes_] = self.clf.predict_proba(x)
            pred = oof.argmax(axis=1)
            self.tau = confidence_threshold(oof.max(axis=1), pred == y, self.low_confidence_accuracy)
            self.metadata["oof_category_accuracy"] = float(np.mean(pred == y))
        else:
            pred, self.tau = y, 0.0
        self.metadata["confidence_threshold"] = self.tau
        with np.errstate(invalid="ignore"):
            self.means = np.stack(
                [
                    np.nanmean(table.scores[pred == c], axis=0) if np.any(pred == c) else np.full(len(self.models), np.nan)
                    for c in range(n_cat)
                ]
            )
            self.pooled = np.nanmean(table.scores, axis=0)[None, :]
        self.weights = np.bincount(pred, minlength=n_cat).astype(float) + 1e-9
        return self

    def prepare(self, queries: Sequence[RouteQuery]) -> np.ndarray:
        probs = np.zeros((len(queries), len(self.categories)))
        if self.clf is None:
            probs[:, 0] = 1.0
        else:
            probs[:, self.clf.classes_] = self.clf.predict_proba(self.embed(queries))
        return probs

    def choose(self, prepared: Any, knob: float | None = None, mask: np.ndarray | None = None) -> np.ndarray:
        eps = float(knob if knob is not None else self.knob)
        means, pooled, costs = self.means, self.pooled, self.model_costs
        if mask is not None:
            allowed = np.asarray(mask, dtype=bool)
            means = np.where(allowed[None, :], means, np.nan)
            pooled = np.where(allowed[None, :], pooled, np.nan)
        experts = coe_expert_map(means, costs, eps, self.budget, self.weights)
        if self.generalist is not None and self.generalist in self.models and (
            mask is None or mask[self.models.index(self.generalist)]
        ):
            general = self.models.index(self.generalist)
        else:
            general = int(coe_expert_map(pooled, costs, eps)[0])
        out = experts[prepared.argmax(axis=1)]
        return np.where(prepared.max(axis=1) < self.tau, general, out)

    def knob_grid(self) -> list[float]:
        import warnings

        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN category row (no data) is expected
            table = np.vstack([self.means, self.pooled])
            gaps = np.nanmax(table, axis=1, keepdims=True) - table
        g = np.unique(np.r_[0.0, gaps[np.isfinite(gaps)].ravel()])
        if len(g) > 41:
            g = np.unique(np.quantile(g, np.linspace(0, 1, 41)))
        return [float(v) for v in g]

    def row_scores(self, prepared: Any, i: int) -> dict[str, float]:
        return {c: float(prepared[i, k]) for k, c in enumerate(self.categories)}
