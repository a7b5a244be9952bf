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
- `LinearHeads`: the same logits as `head_logits` on the stacked rows, computed per block with numpy (a single
  decision without scipy / sklearn overhead).
- `KnnScores` / `blend`: kNN score estimates (k nearest training prompts by embedding) averaged with the heads'
  probabilities (weight `knn_weight`); a leave-one-out version stands in for out-of-fold estimates on training rows.
- `gain_targets` / `with_gains`: gain heads against the cheapest model (the reference): for every other model j, two
  more heads (same features, same C search) predict the pair's outcome directly — P(j passes and the reference
  fails) and the reverse — so their difference estimates j's expected score gain E[s_j − s_ref] over the reference.
  Per-model heads estimate that gain as the difference of two noisy probabilities; `with_gains` keeps the
  reference's P(pass) and moves each other model's toward p_ref + gain_j by `gain_weight` (`GAIN_WEIGHT`).
- `category_costs`: the expected cost of each model on a query = predicted category probabilities × per-category
  mean training costs (a code answer costs several times a multiple-choice letter), so the utility rule trades score
  against the cost this query is likely to have (`query_costs=False`: mean cost per model, which suits a metric
  counted in calls, such as APGR's strong-call share).
- `BlendedHeads`: all of the above as one component that glider and logreg own (`BlendedHeadsRouter`): the features,
  per-model heads, category costs, kNN part and gain heads, fit together and read together (`pass_probs`,
  `expected_costs`). Artifacts from before the component (its parts set on the router) are mapped into it when
  unpickled (`BlendedHeads.from_unversioned`).
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

from routers.base import ArtifactError, Prepared, RouteQuery, ScoreRouter, TrainingTable, lambda_grid
from routers.baselines import knn_predict
from routers.embedder import EMBED_DIM
from routers.features import N_HASH_FEATURES, Tfidf, hand_matrix, hashed_counts

C_GRID = (0.1, 0.3, 1.0, 3.0)
# Scale of the standardised hand-feature block: small enough that its dense columns do not outweigh the sparse text
# blocks on RouterBench (cost for 95 % of the best model must not rise), large enough to help on word problems (GSM8K
# APGR). Chosen among 1.0 / 0.3 / 0.1 by `tandem eval replay --data ../shared/data/routerbench/*_train.csv --routers
# glider,logreg` and `tandem eval replay --data ../shared/data/routellm/gsm8k_responses.csv --routers glider,logreg`
# (`OMP_NUM_THREADS=1`, `--json`); the README has the numbers.
HAND_WEIGHT = 0.1
# Weight of the gain heads' estimate (`with_gains`); 0 turns them off. Kept where it raises APGR on RouteLLM GSM8K and
# MMLU against `--router-option gain_weight=0` over split seeds 0 / 1 / 2 without lowering RouterBench AIQ:
# `tandem eval replay --data ../shared/data/routellm/gsm8k_responses.csv --routers glider,logreg --seed S
# [--router-option gain_weight=W]` (MMLU: `--data ../shared/data/routellm/mmlu --router-option query_costs=false`;
# RouterBench: the three `../shared/data/routerbench/*_train.csv`). 0.5 (an even average of the two estimates) was
# chosen over 1.0 and over a weight picked per fit from the training rows; the README has the numbers.
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

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unversioned artifacts may predate some blocks: a missing one is off, as the code that wrote them had it
        (no predicted category, no hand block, every hashed column kept before ``min_df``)."""
        if "columns" not in state:
            state = {**state, "min_df": 1, "columns": np.arange(N_HASH_FEATURES if state.get("tfidf") else 0)}
        self.__dict__.update({"predict_category": False, "seed": 0, "use_hand": False, "hand_weight": HAND_WEIGHT,
                              "hand_mean": None, "hand_scale": None, "cat_head": None, "_train_cat": None, **state})

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
        if self.cat_head is not None:
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
        return 0 if self.hand_mean is None else len(self.hand_mean)

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
    its logit is ``x · w + b``, computed here directly (sklearn's ``decision_function`` validates its input on every
    call, which would dominate a single decision's time: `python bench/router_latency.py --routers logreg`)."""
    n = x.shape[0]
    cols = [np.full(n, float(np.log(h / (1 - h)))) if isinstance(h, float)
            else np.asarray(x @ h.coef_[0]).ravel() + float(h.intercept_[0]) for h in heads]  # fmt: skip
    return np.stack(cols, axis=1) if cols else np.zeros((n, 0))


def category_costs(features: RichFeatures, queries: Sequence[RouteQuery], table: TrainingTable) -> np.ndarray | None:
    """[C, m] mean cost of each model on the training rows of each category (the model's mean where a category has
    none); None without a predicted category block."""
    if features.cat_head is None:
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


class LinearHeads:
    """The fitted heads of `fit_heads` on `RichFeatures` rows, as one weight matrix per feature block, so logits are
    computed without building the stacked sparse feature rows (what scipy / sklearn spend most of a single query's time
    on: `python bench/router_latency.py --routers glider,logreg`): TF-IDF of a query is computed from its cached hashed counts with numpy (sublinear tf × idf, L2 norm over
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


class BlendedHeads:
    """The P(pass) estimate glider and logreg share, as one component the router owns: `fit` on training rows, then
    `pass_probs` (and `expected_costs`) for queries.

    Configuration: ``use_tfidf``, ``c_grid`` and ``inner_folds`` (the heads' features and C search), ``knn_weight`` /
    ``knn_k`` (the kNN part; weight 0: none), ``gain_weight`` (the gain heads; 0: none). Fitted:
    ``features`` (TF-IDF ⊕ embedding ⊕ predicted category ⊕ hand block), per-model ``heads``, ``cat_costs``
    (`category_costs`), ``knn`` (`KnnScores` or None), ``gain_heads`` against ``gain_ref``, the cheapest model (None
    with one model or ``gain_weight`` 0). The `LinearHeads` fast path is derived from the heads: never pickled,
    rebuilt on first use.
    """

    def __init__(self, use_tfidf: bool = True, c_grid: Sequence[float] = C_GRID, inner_folds: int = 3,
                 knn_weight: float = 0.5, knn_k: int = 50, gain_weight: float = GAIN_WEIGHT) -> None:
        self.use_tfidf, self.c_grid, self.inner_folds = use_tfidf, tuple(c_grid), inner_folds
        self.knn_weight, self.knn_k, self.gain_weight = knn_weight, knn_k, gain_weight
        self.features: RichFeatures | None = None
        self.heads: list[Any] = []
        self.cat_costs: np.ndarray | None = None
        self.knn: KnnScores | None = None
        self.gain_heads: list[Any] | None = None
        self.gain_ref = 0
        self._linear: LinearHeads | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_linear": None}

    def fit(self, queries: Sequence[RouteQuery], table: TrainingTable,
            embed: Callable[[Sequence[RouteQuery]], np.ndarray], seed: int = 0) -> tuple[np.ndarray, list[float]]:
        """Fit every part on the training rows (``seed``: the inner folds' and the category head's); returns their
        out-of-fold P(pass), blended and moved as `pass_probs` does, and the per-model heads' chosen Cs."""
        self.features = RichFeatures(use_tfidf=self.use_tfidf, predict_category=True, use_hand=True,
                                     seed=seed).fit(queries, embed)
        x = self.features.transform(queries, embed, train=True)
        self.heads, oof, cs = fit_heads(x, table.scores, self.c_grid, self.inner_folds, seed)
        self.cat_costs = category_costs(self.features, queries, table)
        self.knn = KnnScores(embed(queries), table.scores, self.knn_k) if self.knn_weight > 0 else None
        p = blend(oof, self.knn.loo() if self.knn is not None else None, self.knn_weight)
        self.gain_heads, self.gain_ref = None, int(np.argmin(table.model_costs))
        if table.scores.shape[1] >= 2 and self.gain_weight > 0:
            targets = gain_targets(table.scores, self.gain_ref)
            self.gain_heads, gain_oof, _ = fit_heads(x, targets, self.c_grid, self.inner_folds, seed)
            p = with_gains(p, gain_oof, self.gain_ref, self.gain_weight)
        self._linear = None
        return p, cs

    def _fitted_features(self) -> RichFeatures:
        if self.features is None:
            raise RuntimeError("the blended heads are not fitted")
        return self.features

    def logits(self, queries: Sequence[RouteQuery], embed: Callable[[Sequence[RouteQuery]], np.ndarray]) -> np.ndarray:
        """`head_logits(heads + gain_heads, features.transform(queries, embed))` through the `LinearHeads` fast path:
        the per-model heads' logits, then the gain heads' (when there are any)."""
        if self._linear is None:
            self._linear = LinearHeads(self._fitted_features(), list(self.heads) + list(self.gain_heads or []))
        return self._linear.logits(queries, embed)

    def pass_probs(self, queries: Sequence[RouteQuery],
                   embed: Callable[[Sequence[RouteQuery]], np.ndarray]) -> np.ndarray:
        """[n, m] P(pass): the heads' probabilities blended with the kNN estimate, then moved toward the gain heads'
        estimate (`with_gains`) when there are gain heads."""
        z = self.logits(queries, embed)
        m = len(self.heads)
        p = 1.0 / (1.0 + np.exp(-z[:, :m]))
        p = blend(p, self.knn.predict(embed(queries)) if self.knn is not None else None, self.knn_weight)
        if self.gain_heads:
            p = with_gains(p, 1.0 / (1.0 + np.exp(-z[:, m:])), self.gain_ref, self.gain_weight)
        return p

    def expected_costs(self, queries: Sequence[RouteQuery],
                       embed: Callable[[Sequence[RouteQuery]], np.ndarray]) -> np.ndarray | None:
        """[n, m] expected cost per query and model: the predicted category probabilities times the per-category mean
        costs (calls on a long-answer task such as code cost several times more); None without a category head
        (then the mean cost per model applies)."""
        if self.cat_costs is None:
            return None
        feats = self._fitted_features()
        return feats.category_matrix(queries, embed) / feats.cat_weight @ self.cat_costs

    @classmethod
    def from_unversioned(cls, state: dict[str, Any]) -> BlendedHeads:
        """The component of a glider / logreg router pickled before it existed (an unversioned artifact), built from
        the attributes that router held itself — its configuration (`UNVERSIONED_CONFIG`) and fitted parts
        (`UNVERSIONED_PARTS`), both popped from ``state``. Parts an older artifact lacks are absent (no kNN part,
        no category costs, no gain heads) and a weight it lacks is 0, as the old code read them."""
        config = {k: state.pop(k) for k in UNVERSIONED_CONFIG if k in state}
        fitted = {k: state.pop(k) for k in UNVERSIONED_PARTS if k in state}
        if fitted.get("gain_heads") and "gain_ref" not in fitted:
            raise ArtifactError("an unversioned router artifact has gain heads without a reference model (written by "
                                "a tandem that paired two models another way): retrain it")
        if state.get("models") and "heads" not in fitted:
            raise ArtifactError("an unversioned router artifact is fitted but holds no heads: retrain it")
        heads = cls(**{"knn_weight": 0.0, "gain_weight": 0.0, **config})
        heads.features = fitted.get("features")
        heads.heads = list(fitted.get("heads") or [])
        heads.cat_costs = fitted.get("cat_costs")
        heads.knn = fitted.get("knn")
        heads.gain_heads = fitted.get("gain_heads") or None
        heads.gain_ref = int(fitted.get("gain_ref", 0))
        return heads


# what a glider / logreg router held itself before `BlendedHeads`: the component's configuration and its fitted parts
UNVERSIONED_CONFIG = ("use_tfidf", "c_grid", "inner_folds", "knn_weight", "knn_k", "gain_weight")
UNVERSIONED_PARTS = ("features", "heads", "cat_costs", "knn", "gain_heads", "gain_ref")


def knob_grid_with_top(costs: np.ndarray, n: int = 40) -> list[float]:
    """`lambda_grid` plus one negative λ at which the most expensive model wins every row (Δscore ≤ 1)."""
    grid = lambda_grid(costs, n)
    c = np.unique(np.asarray(costs, dtype=float))
    if len(c) < 2:
        return grid
    gap = float(np.diff(c)[np.diff(c) > 0].min())
    return [-(2.0 / gap)] + grid


class BlendedHeadsRouter(ScoreRouter):
    """A score router whose P(pass) per model comes from the `BlendedHeads` it owns (``blended_heads``); glider and
    logreg. ``query_costs``: the utility rule uses the cost each model is expected to have on the query
    (`BlendedHeads.expected_costs`); False: the mean cost per model (which suits a metric counted in calls, such as
    APGR's strong-call share)."""

    def __init__(self, blended_heads: BlendedHeads, query_costs: bool = True, **kw: Any) -> None:
        super().__init__(**kw)
        self.blended_heads = blended_heads
        self.query_costs = query_costs

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "blended_heads" not in state:  # unversioned artifact: the heads' parts sat on the router itself
            state = dict(state)
            state["blended_heads"] = BlendedHeads.from_unversioned(state)
            state.setdefault("query_costs", True)  # before the switch existed, expected costs were always used
        super().__setstate__(state)

    def expected_costs(self, queries: Sequence[RouteQuery]) -> np.ndarray | None:
        """[n, m] expected costs for the utility rule, or None for the mean cost per model (see the class)."""
        return self.blended_heads.expected_costs(queries, self.embed) if self.query_costs else None

    def knob_grid(self) -> list[float]:
        return knob_grid_with_top(self.model_costs, KNOB_POINTS)


class CalibratedRouter(BlendedHeadsRouter):
    """Per-model calibrated logistic heads on TF-IDF ⊕ embedding ⊕ category, blended (`BlendedHeads`); utility rule
    p̂ − λ·cost."""

    name = "logreg"

    def __init__(self, inner_folds: int = 3, c_grid: Sequence[float] = C_GRID, use_tfidf: bool = True,
                 knn_weight: float = 0.5, knn_k: int = 50, query_costs: bool = True, gain_weight: float = GAIN_WEIGHT,
                 **kw: Any):
        super().__init__(BlendedHeads(use_tfidf, c_grid, inner_folds, knn_weight, knn_k, gain_weight), query_costs,
                         **kw)

    def fit(self, data: Any, queries: Sequence[RouteQuery] | None = None) -> CalibratedRouter:
        table, qs = self._table_and_queries(data, queries)
        oof, cs = self.blended_heads.fit(qs, table, self.embed, self.seed)
        self.metadata["chosen_C"] = dict(zip(self.models, cs, strict=True))
        have = np.isfinite(table.scores) & np.isfinite(oof)
        if have.any():
            self.metadata["oof_log_loss"] = log_loss(oof[have], (table.scores[have] >= 0.5).astype(int))
        self._calibrate_share(np.nan_to_num(oof, nan=0.0))
        return self

    def predict(self, queries: Sequence[RouteQuery]) -> np.ndarray:
        return self.blended_heads.pass_probs(queries, self.embed)

    def prepare(self, queries: Sequence[RouteQuery]) -> Prepared:
        return Prepared(self.predict(queries), self.expected_costs(queries))
