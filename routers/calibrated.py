"""Per-model calibrated classifiers on rich query features, and the router built on them.

- `RichFeatures`: TF-IDF (hashed uni+bigrams seen in ≥ 2 training queries, IDF fit on the training queries) ⊕
  sentence embedding ⊕ a category block scaled by `cat_weight` so a linear model can learn per-category priors
  cheaply: a one-hot of the query's label by default, or (`predict_category`) the probabilities of a category head
  trained on the labels (RouterBench's dataset, MMLU's subject) and predicted from the prompt, which is what a live,
  unlabelled request gets ⊕ (`use_hand`, on for glider and logreg) the hand features standardised on the training
  queries and scaled by `HAND_WEIGHT`: size, keywords, the numbers a word problem states — what embeddings blur.
- `fit_heads`: one logistic regression per model predicting P(score ≥ 0.5); its C is picked from a grid by
  log-loss on an inner K-fold split *of the training rows only* (never the evaluated fold), then refit on all of them.
  A model with one class in training gets a constant probability. Returns the heads and their out-of-fold
  predictions (used by callers to calibrate further knobs without touching the evaluated fold).
- `LinearHeads` / `fast_head_logits`: the same logits as `head_logits` on the stacked rows, computed per block with
  numpy (a single decision without scipy / sklearn overhead).
- `KnnScores` / `blend`: kNN score estimates (k nearest training prompts by embedding) averaged with the heads'
  probabilities (weight `knn_weight`); a leave-one-out version stands in for out-of-fold estimates on training rows.
- `gain_targets` / `with_gains`: gain heads against the cheapest model (the reference): for every other model j, two
  more heads (same features, same C search) predict the pair's outcome directly — P(j passes and the reference
  fails) and the reverse — so their difference estimates j's expected score gain E[s_j − s_ref] over the reference.
  Per-model heads estimate that gain as the difference of two noisy probabilities; `with_gains` keeps the
  reference's P(pass) and moves each other model's toward p_ref + gain_j by `gain_weight` (measured: `GAIN_WEIGHT`).
- `category_costs` / `expected_costs`: the expected cost of each model on a query = predicted category
  probabilities × per-category mean training costs (a code answer costs several times a multiple-choice letter), so
  the utility rule trades score against the cost this query is likely to have (`query_costs=False`: mean cost per
  model, which suits a metric counted in calls, such as APGR's strong-call share).
- `CalibratedRouter` (`logreg`): the utility rule argmax p̂ − λ·cost over the blended estimates. Its knob grid
  (`KNOB_POINTS` values) runs from λ = 0 (the best *predicted* model) up to the λ where everything goes to the
  cheapest model, plus one negative λ large enough that the top-cost model wins every row (so the curve reaches the
  best single model).

Left out: non-linear heads (gradient boosting), probability recalibration beyond the logistic link, gain heads for
pairs that do not include the reference (they would grow as m²).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from routers.base import Prepared, RouteQuery, ScoreRouter, TrainingTable, lambda_grid
from routers.features import EMBED_DIM, N_HASH_FEATURES, Tfidf, hand_matrix, hashed_counts

C_GRID = (0.1, 0.3, 1.0, 3.0)
# Scale of the standardised hand-feature block. 1.0 let these 15 dense columns outweigh the sparse text blocks on
# RouterBench (cost share for 95 % of the best model 19.5 % -> 21.4 %); 0.1 kept RouterBench level and still raised
# RouteLLM APGR (GSM8K 0.653 -> 0.675 for glider). Chosen among 1.0 / 0.3 / 0.1 on the replay data.
HAND_WEIGHT = 0.1
# Weight of the gain heads' estimate (`with_gains`); 0 turns them off. Against 0, over replay split seeds 0 / 1 / 2:
# logreg APGR GSM8K 0.685 / 0.666 / 0.671 -> 0.692 / 0.671 / 0.677, MMLU 0.697 / 0.697 / 0.694 -> 0.701 / 0.701 /
# 0.697; RouterBench AIQ 0.8531 / 0.8493 / 0.8508 -> 0.8515 / 0.8507 / 0.8518. On GSM8K 0.5 (an even average of the
# two estimates) beat 1.0 and a weight picked per fit by the training rows' out-of-fold ranking.
GAIN_WEIGHT = 0.5
KNOB_POINTS = 200  # λ values a replay sweeps (choosing is cheap; a finer sweep traces the cost/quality hull closer)


class RichFeatures:
    """TF-IDF ⊕ embedding ⊕ category block ⊕ standardised hand features; fit on training queries, then a pure
    transform.

    The category block is a one-hot of ``query.category`` by default. With ``predict_category`` it is instead the
    probabilities of a category head — multinomial logistic regression on the sentence embedding, trained on the
    training queries' category labels — so a query without a label (a live request) gets the same block as a
    labelled one. The training rows' block is the head's out-of-fold prediction (``transform(..., train=True)``), so
    models fit on it see the head's real mistakes.
    """

    def __init__(
        self, use_tfidf: bool = True, use_emb: bool = True, cat_weight: float = 1.0, min_df: int = 2,
        predict_category: bool = False, seed: int = 0, use_hand: bool = False, hand_weight: float = HAND_WEIGHT,
    ) -> None:
        self.use_tfidf, self.use_emb, self.cat_weight, self.min_df = use_tfidf, use_emb, cat_weight, min_df
        self.predict_category, self.seed = predict_category, seed
        self.use_hand, self.hand_weight = use_hand, hand_weight
        self.hand_mean: np.ndarray | None = None
        self.hand_scale: np.ndarray | None = None
        self.categories: list[str] = []
        self.tfidf: Tfidf | None = None
        self.columns = np.zeros(0, dtype=int)
        self.cat_head: Any = None
        self._train_cat: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_train_cat": None}  # training-only cache, not part of an artifact

    def fit(self, queries: Sequence[RouteQuery],
            embed: Callable[[Sequence[RouteQuery]], np.ndarray] | None = None) -> RichFeatures:
        cats = {q.category for q in queries if q.category is not None}
        self.categories = sorted(cats) if len(cats) >= 2 else []
        self.tfidf = None
        if self.use_tfidf and queries:
            self.tfidf = Tfidf().fit(queries)
            df = np.bincount(hashed_counts(queries).indices, minlength=N_HASH_FEATURES)
            self.columns = np.flatnonzero(df >= self.min_df)  # hashed n-grams seen in ≥ min_df training queries
        self.hand_mean = self.hand_scale = None
        if self.use_hand and queries:
            h = hand_matrix(queries)
            self.hand_mean, sd = h.mean(axis=0), h.std(axis=0)
            self.hand_scale = np.where(sd > 0, sd, 1.0)
        self.cat_head, self._train_cat = None, None
        if self.predict_category and self.categories:
            if embed is None:
                raise ValueError("predict_category needs `embed`")
            self._fit_category_head(queries, embed(queries))
        return self

    def _fit_category_head(self, queries: Sequence[RouteQuery], x: np.ndarray) -> None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold

        labelled = np.array([q.category in self.categories for q in queries])
        y = np.array([self.categories.index(q.category) if ok else -1 for q, ok in zip(queries, labelled, strict=True)])
        xl, yl = x[labelled], y[labelled]
        oof = np.zeros((len(queries), len(self.categories)))
        counts = np.bincount(yl, minlength=len(self.categories))
        folds = min(3, int(counts[counts > 0].min()))
        if folds >= 2:
            rows = np.flatnonzero(labelled)
            for tr, te in StratifiedKFold(folds, shuffle=True, random_state=self.seed).split(xl, yl):
                clf = LogisticRegression(C=3.0, max_iter=300).fit(xl[tr], yl[tr])
                oof[np.ix_(rows[te], clf.classes_)] = clf.predict_proba(xl[te])
        self.cat_head = LogisticRegression(C=3.0, max_iter=300).fit(xl, yl)
        if folds < 2:
            oof[np.ix_(np.flatnonzero(labelled), self.cat_head.classes_)] = self.cat_head.predict_proba(xl)
        oof[~labelled] = self._head_proba(x[~labelled])
        self._train_cat = oof

    def _head_proba(self, x: np.ndarray) -> np.ndarray:
        out = np.zeros((len(x), len(self.categories)))
        if len(x):
            h = self.cat_head  # softmax of x·Wᵀ + b, without sklearn's per-call input validation
            z = np.asarray(x, dtype=np.float64) @ h.coef_.T + h.intercept_
            if z.shape[1] == 1:  # binary: sklearn keeps one column of log-odds
                z = np.c_[-z, z] / 2
            z = np.exp(z - z.max(axis=1, keepdims=True))
            out[:, h.classes_] = z / z.sum(axis=1, keepdims=True)
        return out

    def category_matrix(self, queries: Sequence[RouteQuery],
                        embed: Callable[[Sequence[RouteQuery]], np.ndarray] | None = None,
                        train: bool = False) -> np.ndarray:
        """[n, C]: the category block (see the class docstring); ``train`` gives the fit rows' out-of-fold block."""
        if getattr(self, "cat_head", None) is not None:
            if train and self._train_cat is not None and len(self._train_cat) == len(queries):
                return self._train_cat * self.cat_weight
            if embed is None:
                raise ValueError("the category block is predicted from sentence embeddings: pass `embed`")
            return self._head_proba(embed(queries)) * self.cat_weight
        out = np.zeros((len(queries), len(self.categories)))
        index = {c: k for k, c in enumerate(self.categories)}
        for i, q in enumerate(queries):
            k = index.get(q.category) if q.category is not None else None
            if k is not None:
                out[i, k] = self.cat_weight
        return out

    def hand_block_size(self) -> int:
        return 0 if getattr(self, "hand_mean", None) is None else len(self.hand_mean)  # older artifacts have none

    def hand_block(self, queries: Sequence[RouteQuery]) -> np.ndarray:
        """[n, len(HAND_FEATURE_NAMES)]: hand features standardised by the training queries' mean and spread."""
        return (hand_matrix(queries) - self.hand_mean) / self.hand_scale * self.hand_weight

    def transform(self, queries: Sequence[RouteQuery],
                  embed: Callable[[Sequence[RouteQuery]], np.ndarray] | None = None,
                  train: bool = False) -> sp.csr_matrix:
        """The feature rows; ``embed`` (e.g. a router's ``embed``) gives the sentence embeddings when ``use_emb``
        (and for a predicted category block); ``train`` marks the rows ``fit`` saw (out-of-fold category block)."""
        blocks: list[Any] = []
        if self.tfidf is not None:
            blocks.append(self.tfidf.transform(queries)[:, self.columns])
        if self.use_emb:
            if embed is None:
                raise ValueError("these features include sentence embeddings: pass `embed`")
            blocks.append(sp.csr_matrix(embed(queries)))
        if self.categories:
            blocks.append(sp.csr_matrix(self.category_matrix(queries, embed, train)))
        if self.hand_block_size():
            blocks.append(sp.csr_matrix(self.hand_block(queries)))
        if not blocks:
            return sp.csr_matrix((len(queries), 0))
        return sp.hstack(blocks).tocsr()


def binary_targets(col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows with a score, 0/1 pass labels on them)."""
    have = np.flatnonzero(np.isfinite(col))
    return have, (col[have] >= 0.5).astype(int)


def gain_targets(scores: np.ndarray, ref: int) -> np.ndarray:
    """[n, 2(m − 1)] from scores [n, m]: for each model j ≠ ``ref`` in order, (j passes and ref fails, ref passes and
    j fails) as 0/1, NaN where either score is missing. Pass = score ≥ 0.5."""
    passes = scores >= 0.5
    cols = []
    for j in range(scores.shape[1]):
        if j == ref:
            continue
        t = np.stack([passes[:, j] & ~passes[:, ref], passes[:, ref] & ~passes[:, j]], axis=1).astype(float)
        t[~(np.isfinite(scores[:, j]) & np.isfinite(scores[:, ref]))] = np.nan
        cols.append(t)
    return np.concatenate(cols, axis=1) if cols else np.zeros((len(scores), 0))


def with_gains(p: np.ndarray, gain_probs: np.ndarray, ref: int, weight: float) -> np.ndarray:
    """P(pass) [n, m] moved toward the gain heads' estimate: ``gain_probs`` [n, 2(m − 1)] are the heads' probabilities
    of the `gain_targets` columns, so gain_j = P(j only) − P(ref only); p_ref is kept and, for every j ≠ ref,
    p_j ← clip(p_ref + (1 − weight)·(p_j − p_ref) + weight·gain_j, 0, 1). NaN gains leave p_j as it is."""
    out = p.copy()
    others = [j for j in range(p.shape[1]) if j != ref]
    for k, j in enumerate(others):
        gain = gain_probs[:, 2 * k] - gain_probs[:, 2 * k + 1]
        moved = p[:, ref] + (1.0 - weight) * (p[:, j] - p[:, ref]) + weight * np.nan_to_num(gain)
        out[:, j] = np.where(np.isfinite(gain), np.clip(moved, 0.0, 1.0), p[:, j])
    return out


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


def category_costs(features: RichFeatures, queries: Sequence[RouteQuery], table: TrainingTable) -> np.ndarray | None:
    """[C, m] mean cost of each model on the training rows of each category (the model's mean where a category has
    none); None without a predicted category block."""
    if getattr(features, "cat_head", None) is None:
        return None
    out = np.tile(table.model_costs, (len(features.categories), 1))
    cats = np.array([q.category for q in queries], dtype=object)
    for k, c in enumerate(features.categories):
        rows = table.costs[cats == c]
        with np.errstate(invalid="ignore"):
            mean = np.nanmean(rows, axis=0) if len(rows) else np.full(rows.shape[1], np.nan)
        out[k] = np.where(np.isfinite(mean), mean, out[k])
    return out


class KnnScores:
    """kNN score estimates to blend with the logistic heads: the mean recorded score of the k most cosine-similar
    training prompts per model (k ≤ a tenth of the training rows) (`routers.baselines.knn_predict`); `loo()` gives
    each training row's estimate from its k nearest *other* rows (for fitting further knobs on out-of-sample
    estimates)."""

    def __init__(self, emb: np.ndarray, scores: np.ndarray, k: int = 50) -> None:
        with np.errstate(invalid="ignore"):
            self.fallback = np.nan_to_num(np.nanmean(scores, axis=0), nan=0.0)
        # at most a tenth of the rows: with k near n every estimate would be the global mean
        self.emb, self.scores = emb.astype(np.float32), scores.astype(np.float32)
        self.k = max(1, min(k, len(emb) // 10))

    def predict(self, emb: np.ndarray) -> np.ndarray:
        from routers.baselines import knn_predict

        return knn_predict(self.emb, self.scores, np.asarray(emb, dtype=np.float32), self.k, self.fallback)

    def loo(self, chunk: int = 2048) -> np.ndarray:
        n = len(self.emb)
        k = max(1, min(self.k, n - 1))
        out = np.zeros((n, self.scores.shape[1]))
        for lo in range(0, n, chunk):
            sims = self.emb[lo : lo + chunk] @ self.emb.T
            sims[np.arange(len(sims)), np.arange(lo, lo + len(sims))] = -np.inf
            idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            neigh = self.scores[idx]
            with np.errstate(invalid="ignore"):
                cnt = np.sum(np.isfinite(neigh), axis=1)
                mean = np.nansum(neigh, axis=1) / np.maximum(cnt, 1)
            out[lo : lo + chunk] = np.where(cnt > 0, mean, self.fallback[None, :])
        return out


def blend(p_heads: np.ndarray, p_knn: np.ndarray | None, weight: float) -> np.ndarray:
    """(1 − weight)·heads + weight·kNN (the heads alone without a kNN part)."""
    return p_heads if p_knn is None or weight <= 0 else (1.0 - weight) * p_heads + weight * p_knn


def expected_costs(router: ScoreRouter, queries: Sequence[RouteQuery]) -> np.ndarray | None:
    """[n, m] expected cost per query and model: the predicted category probabilities times the per-category mean
    costs (calls on a long-answer task such as code cost several times more); None when the router has no category
    head (then the mean cost per model applies)."""
    cat_costs = getattr(router, "cat_costs", None)
    feats = getattr(router, "features", None)
    if cat_costs is None or feats is None or not getattr(router, "query_costs", True):
        return None
    return feats.category_matrix(queries, router.embed) / feats.cat_weight @ cat_costs


class LinearHeads:
    """The fitted heads of `fit_heads` on `RichFeatures` rows, as one weight matrix per feature block, so logits are
    computed without building the stacked sparse feature rows (scipy / sklearn spend ~1 ms per single query on
    that): TF-IDF of a query is computed from its cached hashed counts with numpy (sublinear tf × idf, L2 norm over
    all hashed columns, then the kept columns — what `Tfidf.transform` and the column selection give)."""

    def __init__(self, features: RichFeatures, heads: Sequence[Any]) -> None:
        n_tf = len(features.columns) if features.tfidf is not None else 0
        n_emb = EMBED_DIM if features.use_emb else 0
        n_cat = len(features.categories)
        n_hand = features.hand_block_size()
        w = np.zeros((n_tf + n_emb + n_cat + n_hand, len(heads)))
        b = np.zeros(len(heads))
        for j, h in enumerate(heads):
            if isinstance(h, float):
                b[j] = float(np.log(h / (1 - h)))
            else:
                w[:, j], b[j] = h.coef_[0], float(h.intercept_[0])
        self.features, self.b = features, b
        self.w_tf, self.w_emb = w[:n_tf], w[n_tf : n_tf + n_emb]
        self.w_cat, self.w_hand = w[n_tf + n_emb : n_tf + n_emb + n_cat], w[n_tf + n_emb + n_cat :]
        self.idf = features.tfidf._t.idf_ if features.tfidf is not None else None

    def _tfidf_logits(self, queries: Sequence[RouteQuery]) -> np.ndarray:
        out = np.zeros((len(queries), len(self.b)))
        cols = self.features.columns
        counts = hashed_counts(queries)
        for i in range(len(queries)):
            lo, hi = counts.indptr[i], counts.indptr[i + 1]
            idx, tf = counts.indices[lo:hi], counts.data[lo:hi]
            if len(idx) == 0:
                continue
            v = (1.0 + np.log(tf)) * self.idf[idx]
            v /= np.linalg.norm(v) or 1.0
            pos = np.minimum(np.searchsorted(cols, idx), len(cols) - 1)
            keep = cols[pos] == idx
            out[i] = v[keep] @ self.w_tf[pos[keep]]
        return out

    def logits(self, queries: Sequence[RouteQuery], embed: Callable[[Sequence[RouteQuery]], np.ndarray]) -> np.ndarray:
        z = np.tile(self.b, (len(queries), 1))
        if self.idf is not None and len(self.w_tf):
            z += self._tfidf_logits(queries)
        if len(self.w_emb):
            z += np.asarray(embed(queries), dtype=np.float64) @ self.w_emb
        if len(self.w_cat):
            z += self.features.category_matrix(queries, embed) @ self.w_cat
        if len(self.w_hand):
            z += self.features.hand_block(queries) @ self.w_hand
        return z


def fast_head_logits(router: Any, queries: Sequence[RouteQuery]) -> np.ndarray:
    """`head_logits(router.heads + router.gain_heads, router.features.transform(queries, router.embed))` through a
    `LinearHeads` made once per router (kept off the artifact; rebuilt after loading): the per-model heads' logits,
    then the gain heads' (when the router has them)."""
    lin = router.__dict__.get("_fast_heads")
    if lin is None or lin.features is not router.features:
        heads = list(router.heads) + list(getattr(router, "gain_heads", None) or [])
        lin = router._fast_heads = LinearHeads(router.features, heads)
    return lin.logits(queries, router.embed)


def fit_blended_heads(router: Any, qs: Sequence[RouteQuery], table: TrainingTable, use_tfidf: bool,
                      c_grid: Sequence[float], inner_folds: int) -> tuple[np.ndarray, list[float]]:
    """What glider and logreg fit alike, set on ``router``: ``features`` (TF-IDF ⊕ embedding ⊕ predicted category ⊕
    hand block), per-model ``heads``, ``cat_costs``, the ``knn`` part (``router.knn_weight``, ``router.knn_k``) and,
    with ``router.gain_weight`` > 0, the ``gain_heads`` against ``gain_ref``, the cheapest model (else None). Returns
    the training rows' out-of-fold P(pass), blended and moved as `blended_pass_probs` does, and the per-model heads'
    chosen Cs."""
    router.features = RichFeatures(use_tfidf=use_tfidf, predict_category=True, use_hand=True,
                                   seed=router.seed).fit(qs, router.embed)
    x = router.features.transform(qs, router.embed, train=True)
    router.heads, oof, cs = fit_heads(x, table.scores, c_grid, inner_folds, router.seed)
    router.cat_costs = category_costs(router.features, qs, table)
    router.knn = KnnScores(router.embed(qs), table.scores, router.knn_k) if router.knn_weight > 0 else None
    p = blend(oof, router.knn.loo() if router.knn is not None else None, router.knn_weight)
    router.gain_heads, router.gain_ref = None, int(np.argmin(table.model_costs))
    if table.scores.shape[1] >= 2 and router.gain_weight > 0:
        targets = gain_targets(table.scores, router.gain_ref)
        router.gain_heads, gain_oof, _ = fit_heads(x, targets, c_grid, inner_folds, router.seed)
        p = with_gains(p, gain_oof, router.gain_ref, router.gain_weight)
    return p, cs


def blended_pass_probs(router: Any, queries: Sequence[RouteQuery]) -> np.ndarray:
    """[n, m] P(pass): the heads' probabilities blended with the kNN estimate (heads alone for artifacts saved
    before the kNN blend), then moved toward the gain heads' estimate (`with_gains`) when the router has them."""
    z = fast_head_logits(router, queries)
    m = len(router.heads)
    p = 1.0 / (1.0 + np.exp(-z[:, :m]))
    knn = getattr(router, "knn", None)
    p = blend(p, knn.predict(router.embed(queries)) if knn is not None else None, getattr(router, "knn_weight", 0))
    if getattr(router, "gain_heads", None):
        p = with_gains(p, 1.0 / (1.0 + np.exp(-z[:, m:])), router.gain_ref, router.gain_weight)
    return p


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

    def __init__(self, inner_folds: int = 3, c_grid: Sequence[float] = C_GRID, use_tfidf: bool = True,
                 knn_weight: float = 0.5, knn_k: int = 50, query_costs: bool = True, gain_weight: float = GAIN_WEIGHT,
                 **kw: Any):
        super().__init__(**kw)
        self.inner_folds, self.c_grid, self.use_tfidf = inner_folds, tuple(c_grid), use_tfidf
        self.knn_weight, self.knn_k, self.query_costs = knn_weight, knn_k, query_costs
        self.gain_weight = gain_weight

    def fit(self, data: Any, queries: Sequence[RouteQuery] | None = None) -> CalibratedRouter:
        table, qs = self._table_and_queries(data, queries)
        oof, cs = fit_blended_heads(self, qs, table, self.use_tfidf, self.c_grid, self.inner_folds)
        self.metadata["chosen_C"] = dict(zip(self.models, cs, strict=True))
        have = np.isfinite(table.scores) & np.isfinite(oof)
        if have.any():
            self.metadata["oof_log_loss"] = log_loss(oof[have], (table.scores[have] >= 0.5).astype(int))
        self._calibrate_share(np.nan_to_num(oof, nan=0.0))
        return self

    def predict(self, queries: Sequence[RouteQuery]) -> np.ndarray:
        return blended_pass_probs(self, queries)

    def prepare(self, queries: Sequence[RouteQuery]) -> Prepared:
        return Prepared(self.predict(queries), expected_costs(self, queries))

    def knob_grid(self) -> list[float]:
        return knob_grid_with_top(self.model_costs, KNOB_POINTS)
