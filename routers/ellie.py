"""EllieSQL-style complexity-aware routers over ordered tiers (cheap → expensive).

Tiers are the Pareto-efficient candidates on the training data (no cheaper model has an equal or better mean score),
ordered by mean training cost; a dominated model is never a tier (it would only be a dearer way to do worse). A
query's label is the cheapest tier whose answer passes (score ≥ 0.5); unsolved queries are labelled with the top
tier. The embedding routers see the query's category (dataset / subject) when the training data has labels: the
probabilities of a category head predicted from the prompt (`RichFeatures(predict_category=True)`; a live request
carries no label), the kNN router ranking same-category neighbours first. `ellie-heuristic` (embedding-free) sees no
category at all: a request carries none, so a score fit on category one-hots would meet only zeros at request
time. Routers:
- `ellie-heuristic`: a least-squares complexity score from size and keyword counts (`SIZE_KEYWORD_NAMES`);
  tier thresholds are the score quantiles that reproduce the training label distribution; knob = shift of the
  score in standard deviations.
- `ellie-knn`: tier distribution of the k nearest training prompts (embeddings, same category first), smoothed;
  k is chosen from a grid by leave-one-out log-likelihood of the training labels.
- `ellie-classifier`: multinomial logistic regression on TF-IDF ⊕ embedding ⊕ category → tier distribution, C chosen
  by inner CV on the training rows.
- `ellie-preference`: a linear ranker per tier trained on pairs (a passing tier ≻ a failing one, a cheaper passing
  tier ≻ a dearer passing one); softmax of the ranking scores is the tier distribution.
- `ellie-cascade`: one binary "tier t suffices" classifier per tier below the top (`routers.calibrated.fit_heads` on
  TF-IDF ⊕ embedding ⊕ category); go to the first tier with
  p_t ≥ τ_t. τ_t is calibrated on out-of-fold training predictions as the smallest threshold whose precision
  reaches the knob κ (a target pass rate for the calls a tier keeps).
The distribution routers (knn, classifier, preference, heuristic) turn their distribution over labels into a
predicted pass probability per tier — p̂_t = Σ_l P(label = l | query) · P(tier t passes | label = l), the second
factor counted on the training rows (tiers are not nested: a cheaper tier passing does not mean a dearer one does) —
and apply the utility rule argmax_t p̂_t − λ·cost_t; the knob is λ (grid from λ = 0, the best predicted tier, to
the cheapest tier, plus a point forcing the top tier). `rule="quantile"` keeps EllieSQL's original rule instead:
the smallest tier whose cumulative label probability reaches the knob q ∈ [0, 1]. The heuristic router's
"distribution" is a one-hot of the tier bin its complexity score falls in, and its pass table is counted per bin.

Left out: pipelines as tiers (self-consistency with execution voting) — a tier is any candidate route, so a
pipeline appears here only through its recorded scores and costs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from routers.base import RouteQuery, Router, TrainingTable, utility_argmax
from routers.calibrated import (
    C_GRID,
    KNOB_POINTS,
    RichFeatures,
    fit_heads,
    knob_grid_with_top,
    log_loss,
    predict_heads,
)
from routers.features import SIZE_KEYWORD_NAMES, hand_matrix

PASS = 0.5

# --------------------------------------------------------------------------------------------------- pure rules


def tier_labels(scores_by_tier: np.ndarray, threshold: float = PASS) -> np.ndarray:
    """Cheapest tier (column, cheap → expensive) whose score passes; the top tier when none does. NaN = fail."""
    passed = np.nan_to_num(scores_by_tier, nan=0.0) >= threshold
    first = np.argmax(passed, axis=1)
    return np.where(passed.any(axis=1), first, scores_by_tier.shape[1] - 1)


def quantile_tier(probs: np.ndarray, q: float) -> np.ndarray:
    """Smallest tier whose cumulative probability reaches q (q ≤ 0 → tier 0, q ≥ 1 → top tier)."""
    n_tiers = probs.shape[1]
    if q <= 0:
        return np.zeros(len(probs), dtype=int)
    if q >= 1:
        return np.full(len(probs), n_tiers - 1, dtype=int)
    cdf = np.cumsum(probs, axis=1)
    cdf[:, -1] = np.inf
    return np.argmax(cdf >= q - 1e-12, axis=1)


def cascade_pick(p_suffices: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """First tier t with p_suffices[:, t] ≥ taus[t]; the top tier (index = number of columns) when none."""
    ok = p_suffices >= np.asarray(taus)[None, :]
    return np.where(ok.any(axis=1), np.argmax(ok, axis=1), p_suffices.shape[1])


def precision_threshold(p: np.ndarray, y: np.ndarray, target: float) -> float:
    """Smallest threshold v (among the p values) with precision(y | p ≥ v) ≥ target; +inf when none reaches it."""
    if target <= 0:
        return 0.0
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order].astype(float)
    prec = np.cumsum(ys) / np.arange(1, len(ys) + 1)
    # a threshold v keeps every row with p ≥ v: evaluate precision at the last index of each distinct value
    last = np.r_[ps[1:] != ps[:-1], True]
    ok = (prec >= target - 1e-12) & last
    if not ok.any():
        return float("inf")
    return float(ps[np.flatnonzero(ok)[-1]])


def pareto_tiers(mean_scores: np.ndarray, mean_costs: np.ndarray) -> np.ndarray:
    """Model indices, cheap → dear, of the models no cheaper (or equally cheap and better) model dominates."""
    order = np.lexsort((-np.nan_to_num(mean_scores, nan=-np.inf), mean_costs))
    out: list[int] = []
    best = -np.inf
    for j in order:
        s = float(np.nan_to_num(mean_scores[j], nan=-np.inf))
        if s > best + 1e-12:
            out.append(int(j))
            best = s
    return np.array(out, dtype=int)


def pass_table(groups: np.ndarray, scores_by_tier: np.ndarray, n_groups: int, threshold: float = PASS) -> np.ndarray:
    """[G, T]: per group (label or bin) the training pass rate of each tier; a group with no rows (or a tier with no
    score in it) gets the tier's overall pass rate. NaN scores are skipped."""
    passed = np.where(np.isfinite(scores_by_tier), (np.nan_to_num(scores_by_tier) >= threshold).astype(float), np.nan)
    with np.errstate(invalid="ignore"):
        overall = np.nan_to_num(np.nanmean(passed, axis=0), nan=0.0) if len(passed) else np.zeros(passed.shape[1])
        out = np.tile(overall, (n_groups, 1))
        for g in range(n_groups):
            rows = passed[groups == g]
            if len(rows):
                m = np.nanmean(rows, axis=0)
                out[g] = np.where(np.isfinite(m), m, overall)
    return out


def mask_tiers(tiers: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Move each tier up to the next allowed tier (down to the highest allowed one when none is above)."""
    ok = np.flatnonzero(allowed)
    pos = np.searchsorted(ok, tiers)
    return ok[np.minimum(pos, len(ok) - 1)]


# ------------------------------------------------------------------------------------------------------ routers


class TierRouter(Router):
    """Common parts: tier order, labels, knob → tier → model index."""

    def __init__(self, knob: float | None = 0.9, seed: int = 0) -> None:
        super().__init__(knob=knob, seed=seed)

    def _tiers(self, table: TrainingTable) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            means = np.nanmean(table.scores, axis=0)
        self.tier_order = pareto_tiers(means, self.model_costs)  # tier index → model index
        self.n_tiers = len(self.tier_order)
        self.metadata["tiers"] = [self.models[j] for j in self.tier_order]
        labels = tier_labels(table.scores[:, self.tier_order])
        self.metadata["label_share"] = np.bincount(labels, minlength=self.n_tiers).tolist()
        return labels

    def _to_models(self, tiers: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        if mask is not None:
            allowed = np.asarray(mask, dtype=bool)
            if not allowed[self.tier_order].any():  # no tier allowed: the cheapest allowed candidate
                ok = np.flatnonzero(allowed)
                return np.full(len(tiers), ok[np.argmin(self.model_costs[ok])], dtype=int)
            tiers = mask_tiers(tiers, allowed[self.tier_order])
        return self.tier_order[tiers]

    def knob_grid(self) -> list[float]:
        # as fine as the score routers' λ sweep: the cascade's one precision target moves every tier's threshold,
        # so a coarse grid leaves gaps in its hull and lowers its AIQ (compare `KNOB_POINTS` values with `tandem eval
        # replay --data ../shared/data/routerbench/*_train.csv --routers ellie-cascade --seed S` for S = 0, 1, 2)
        return [float(x) for x in np.linspace(0.0, 1.0, KNOB_POINTS + 1)]


class DistributionTierRouter(TierRouter):
    """prepare → distribution over labels [n, T]; choose → utility rule on expected pass (or the quantile rule)."""

    def __init__(self, knob: float | None = None, seed: int = 0, rule: str = "utility") -> None:
        if rule not in ("utility", "quantile"):
            raise ValueError("rule must be 'utility' or 'quantile'")
        super().__init__(knob=knob if knob is not None else (0.0 if rule == "utility" else 0.9), seed=seed)
        self.rule = rule

    def _fit_pass_table(self, table: TrainingTable, groups: np.ndarray) -> None:
        self.pass_table = pass_table(groups, table.scores[:, self.tier_order], self.n_tiers)
        self.tier_costs = self.model_costs[self.tier_order]

    def expected_pass(self, prepared: np.ndarray) -> np.ndarray:
        return prepared @ self.pass_table

    def choose(self, prepared: Any, knob: float | None = None, mask: np.ndarray | None = None) -> np.ndarray:
        k = float(knob if knob is not None else self.knob)
        if self.rule == "quantile":
            return self._to_models(quantile_tier(prepared, k), mask)
        tier_mask = None if mask is None else np.asarray(mask, dtype=bool)[self.tier_order]
        if tier_mask is not None and not tier_mask.any():
            return self._to_models(np.zeros(len(prepared), dtype=int), mask)
        return self.tier_order[utility_argmax(self.expected_pass(prepared), self.tier_costs, k, tier_mask)]

    def knob_grid(self) -> list[float]:
        if self.rule == "quantile":
            return super().knob_grid()
        return knob_grid_with_top(self.tier_costs)

    def row_scores(self, prepared: Any, i: int) -> dict[str, float]:
        return {self.models[self.tier_order[t]]: float(prepared[i, t]) for t in range(self.n_tiers)}


class EllieKnnRouter(DistributionTierRouter):
    name = "ellie-knn"

    K_GRID = (10, 20, 50, 100, 200)

    def __init__(self, k: int | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.k = k

    def fit(self, data: Any, queries: Sequence[RouteQuery] | None = None) -> EllieKnnRouter:
        table, qs = self._table_and_queries(data, queries)
        self.labels = self._tiers(table)
        self._fit_pass_table(table, self.labels)
        self.train_emb = self.embed(qs).astype(np.float32)
        self.features = RichFeatures(use_tfidf=False, use_emb=False, cat_weight=2.0, predict_category=True,
                                     seed=self.seed).fit(qs, self.embed)
        self.train_cat = self.features.category_matrix(qs, self.embed, train=True)
        if self.k is None:  # leave-one-out on the training rows
            sims = self._sims(self.train_emb, self.train_cat)
            np.fill_diagonal(sims, -np.inf)
            ll = {}
            for k in self.K_GRID:
                if k < len(self.labels):
                    p = self._distribution(sims, k)
                    ll[k] = float(np.mean(np.log(p[np.arange(len(self.labels)), self.labels])))
            self.k = max(ll, key=lambda k: ll[k]) if ll else max(1, len(self.labels) - 1)
            self.metadata["loo_log_likelihood"] = {str(k): v for k, v in ll.items()}
        self.metadata["k"] = self.k
        return self

    def _sims(self, emb: np.ndarray, cat: np.ndarray) -> np.ndarray:
        sims = emb @ self.train_emb.T
        if self.train_cat.shape[1]:  # cosine ≤ 1, so a +2 bonus ranks same-category neighbours first
            sims = sims + cat @ self.train_cat.T / 2.0
        return sims

    def _distribution(self, sims: np.ndarray, k: int) -> np.ndarray:
        """Label shares of the k nearest rows, add-½ smoothed."""
        k = min(k, sims.shape[1])
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        counts = np.zeros((len(sims), self.n_tiers))
        for j in range(k):
            np.add.at(counts, (np.arange(len(sims)), self.labels[idx[:, j]]), 1.0)
        return (counts + 0.5) / (k + 0.5 * self.n_tiers)

    def prepare(self, queries: Sequence[RouteQuery]) -> np.ndarray:
        sims = self._sims(self.embed(queries), self.features.category_matrix(queries, self.embed))
        return self._distribution(sims, int(self.k or 1))


class EllieClassifierRouter(DistributionTierRouter):
    name = "ellie-classifier"

    def __init__(self, c: float = 1.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.c = c

    def fit(self, data: Any, queries: Sequence[RouteQuery] | None = None) -> EllieClassifierRouter:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold

        table, qs = self._table_and_queries(data, queries)
        labels = self._tiers(table)
        self._fit_pass_table(table, labels)
        self.classes = np.unique(labels)
        self.features = RichFeatures(predict_category=True, seed=self.seed).fit(qs, self.embed)
        x = self.features.transform(qs, self.embed, train=True)
        self.clf = None
        if len(self.classes) > 1:
            counts = np.bincount(labels)
            folds = min(3, int(counts[counts > 0].min()))
            best_c, best_loss = self.c, np.inf
            if folds >= 2:  # C by inner-CV log-loss on the training rows
                cv = list(StratifiedKFold(folds, shuffle=True, random_state=self.seed).split(x, labels))
                for c in C_GRID:
                    p = np.zeros(len(labels))
                    for tr, te in cv:
                        clf = LogisticRegression(C=c, max_iter=300).fit(x[tr], labels[tr])
                        proba = clf.predict_proba(x[te])
                        col = {k: i for i, k in enumerate(clf.classes_)}
                        p[te] = [proba[r, col[y]] if y in col else 1e-6 for r, y in enumerate(labels[te])]
                    loss = log_loss(p, np.ones(len(p)))
                    if loss < best_loss:
                        best_c, best_loss = c, loss
            self.metadata["chosen_C"] = best_c
            self.clf = LogisticRegression(C=best_c, max_iter=300).fit(x, labels)
        return self

    def prepare(self, queries: Sequence[RouteQuery]) -> np.ndarray:
        probs = np.zeros((len(queries), self.n_tiers))
        if self.clf is None:
            probs[:, self.classes[0]] = 1.0
        else:
            probs[:, self.clf.classes_] = self.clf.predict_proba(self.features.transform(queries, self.embed))
        return probs


def size_keyword_matrix(queries: Sequence[RouteQuery]) -> np.ndarray:
    """The heuristic's inputs: the size and keyword columns of the hand features (`SIZE_KEYWORD_NAMES`)."""
    return hand_matrix(queries)[:, : len(SIZE_KEYWORD_NAMES)]


class EllieHeuristicRouter(DistributionTierRouter):
    name = "ellie-heuristic"

    def fit(self, data: Any, queries: Sequence[RouteQuery] | None = None) -> EllieHeuristicRouter:
        table, qs = self._table_and_queries(data, queries)
        labels = self._tiers(table)
        x = size_keyword_matrix(qs)
        self.mu, self.sd = x.mean(axis=0), x.std(axis=0) + 1e-9
        z = np.c_[np.ones(len(x)), (x - self.mu) / self.sd]
        self.w, *_ = np.linalg.lstsq(z, labels.astype(float), rcond=None)
        s = z @ self.w
        cdf = np.cumsum(np.bincount(labels, minlength=self.n_tiers)) / len(labels)
        self.thresholds = np.quantile(s, np.clip(cdf[:-1], 0.0, 1.0))  # bin t ⇔ θ_{t-1} < s ≤ θ_t
        self._fit_pass_table(table, self._bins(s))
        return self

    def _bins(self, s: np.ndarray) -> np.ndarray:
        return np.minimum(np.searchsorted(self.thresholds, s, side="left"), self.n_tiers - 1)

    def complexity(self, queries: Sequence[RouteQuery]) -> np.ndarray:
        x = size_keyword_matrix(queries)
        return np.c_[np.ones(len(x)), (x - self.mu) / self.sd] @ self.w

    def prepare(self, queries: Sequence[RouteQuery]) -> np.ndarray:
        """One-hot of the complexity bin [n, T]."""
        bins = self._bins(self.complexity(queries))
        out = np.zeros((len(bins), self.n_tiers))
        out[np.arange(len(bins)), bins] = 1.0
        return out


class EllieCascadeRouter(TierRouter):
    name = "ellie-cascade"

    def __init__(self, c: float = 1.0, inner_folds: int = 3, **kw: Any) -> None:
        super().__init__(**kw)
        self.c, self.inner_folds = c, inner_folds

    def fit(self, data: Any, queries: Sequence[RouteQuery] | None = None) -> EllieCascadeRouter:

        table, qs = self._table_and_queries(data, queries)
        self._tiers(table)
        self.features = RichFeatures(predict_category=True, seed=self.seed).fit(qs, self.embed)
        x = self.features.transform(qs, self.embed, train=True)
        below = table.scores[:, self.tier_order[:-1]]
        self.heads, oof, _ = fit_heads(x, below, C_GRID, self.inner_folds, self.seed)
        self.oof = []  # per tier below the top: (out-of-fold P(tier suffices), label) on rows with a score
        for t in range(below.shape[1]):
            have = np.isfinite(below[:, t])
            self.oof.append((oof[have, t], (below[have, t] >= PASS).astype(int)))
        return self

    def taus(self, kappa: float) -> np.ndarray:
        """Per-tier thresholds for a target precision κ, from the out-of-fold training predictions."""
        return np.array([precision_threshold(p, y, kappa) for p, y in self.oof])

    def prepare(self, queries: Sequence[RouteQuery]) -> np.ndarray:
        return predict_heads(self.heads, self.features.transform(queries, self.embed))

    def choose(self, prepared: Any, knob: float | None = None, mask: np.ndarray | None = None) -> np.ndarray:
        kappa = float(knob if knob is not None else self.knob)
        p = prepared
        if mask is not None:  # a disallowed tier never suffices
            p = np.where(np.asarray(mask, dtype=bool)[self.tier_order][None, :-1], p, -1.0)
        return self._to_models(cascade_pick(p, self.taus(kappa)), mask)

    def row_scores(self, prepared: Any, i: int) -> dict[str, float]:
        return {self.models[self.tier_order[t]]: float(prepared[i, t]) for t in range(prepared.shape[1])}


class ElliePreferenceRouter(DistributionTierRouter):
    name = "ellie-preference"

    def __init__(self, steps: int = 300, lr: float = 0.05, weight_decay: float = 1e-4, **kw: Any) -> None:
        super().__init__(**kw)
        self.steps, self.lr, self.weight_decay = steps, lr, weight_decay

    def fit(self, data: Any, queries: Sequence[RouteQuery] | None = None) -> ElliePreferenceRouter:
        table, qs = self._table_and_queries(data, queries)
        self._fit_pass_table(table, self._tiers(table))
        pairs = preference_pairs(table.scores[:, self.tier_order])  # [n, T, T] a ≻ b
        self.features = RichFeatures(use_tfidf=False, predict_category=True, seed=self.seed).fit(qs, self.embed)
        x = torch.tensor(self.features.transform(qs, self.embed, train=True).toarray(), dtype=torch.float32)
        pm = torch.tensor(pairs, dtype=torch.float32)
        g = torch.Generator().manual_seed(self.seed)
        w = torch.nn.Parameter(torch.randn(self.n_tiers, x.shape[1], generator=g) * 0.01)
        b = torch.nn.Parameter(torch.zeros(self.n_tiers))
        opt = torch.optim.Adam([w, b], lr=self.lr, weight_decay=self.weight_decay)
        denom = pm.sum().clamp(min=1)
        for _ in range(self.steps):
            opt.zero_grad()
            f = x @ w.T + b
            diff = f[:, :, None] - f[:, None, :]
            loss = (pm * torch.nn.functional.softplus(-diff)).sum() / denom
            loss.backward()
            opt.step()
        self.w, self.b = w.detach().numpy(), b.detach().numpy()
        self.metadata["train_loss"] = float(loss.item())
        return self

    def prepare(self, queries: Sequence[RouteQuery]) -> np.ndarray:
        f = self.features.transform(queries, self.embed).toarray() @ self.w.T + self.b
        f = f - f.max(axis=1, keepdims=True)
        e = np.exp(f)
        return e / e.sum(axis=1, keepdims=True)


def preference_pairs(scores_by_tier: np.ndarray, threshold: float = PASS) -> np.ndarray:
    """pairs[i, a, b] = 1 when tier a ≻ tier b for row i: a passes and (b fails, or both pass and a is cheaper).

    Rows where no tier passes prefer the top tier to every other (matching the "unsolved → top" label).
    """
    passed = np.nan_to_num(scores_by_tier, nan=0.0) >= threshold
    n, t = passed.shape
    a_pass, b_pass = passed[:, :, None], passed[:, None, :]
    cheaper = np.arange(t)[:, None] < np.arange(t)[None, :]
    pairs = a_pass & (~b_pass | cheaper[None])
    none = ~passed.any(axis=1)
    pairs[none, t - 1, : t - 1] = True
    return pairs.astype(np.float32)
