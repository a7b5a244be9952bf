"""GLIDER-style router: a global semantic score per expert plus a learned local score.

- Global: cosine similarity between the query's instruction embedding (the query itself stands in for an
  LLM-written instruction) and each expert's instruction embedding — the normalised mean embedding of the
  training prompts the expert is best at (passes, ranked by how much it beats the row's mean score; at most
  `n_instruction` of them), centred across experts.
- Local: the router's `routers.calibrated.BlendedHeads` — a per-expert calibrated logistic head (TF-IDF ⊕ embedding
  ⊕ predicted category probabilities ⊕ hand features, C by inner CV) predicting that the expert passes, averaged with
  the kNN estimate (`knn_weight`; leave-one-out on the training rows) and moved toward the gain heads' estimate of
  each expert's gain over the cheapest (`gain_weight`) — as a logit.
- `logits = local + α·global`; α is chosen from a grid by the log-loss of sigmoid(out-of-fold local + α·global) on
  the training rows (α = 0 allowed). Softmax gives the routing distribution, `glider_select` the top-k / top-p
  experts (k = 1 for replay). As a score-predicting router, sigmoid(logits) is the predicted score per expert and the
  decision is the shared utility rule argmax (p̂ − λ·cost), with the cost each model is expected to have on this
  query (`BlendedHeads.expected_costs`; `query_costs=False`: mean cost per model); the knob grid includes a
  point forcing the top-cost model.

Left out: combining k > 1 experts' outputs (token-level fusion lives in collab/); the LLM that writes the instruction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from routers.base import Prepared, RouteQuery
from routers.calibrated import C_GRID, GAIN_WEIGHT, BlendedHeads, BlendedHeadsRouter, log_loss

ALPHA_GRID = (0.0, 0.5, 1.0, 2.0, 5.0)

# --------------------------------------------------------------------------------------------------- pure rules


def glider_logits(local: np.ndarray, global_: np.ndarray, alpha: float) -> np.ndarray:
    """logits = local + α·global (same shape, [n, m])."""
    return np.asarray(local, dtype=float) + alpha * np.asarray(global_, dtype=float)


def softmax(x: np.ndarray) -> np.ndarray:
    z = x - np.max(x, axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def glider_select(logits: np.ndarray, k: int = 1, top_p: float | None = None) -> list[int]:
    """Experts for one query: the top-k by probability, or (with top_p) the smallest prefix whose mass ≥ top_p."""
    p = softmax(np.asarray(logits, dtype=float))
    order = np.argsort(-p, kind="stable")
    if top_p is not None:
        n = int(np.searchsorted(np.cumsum(p[order]), top_p - 1e-12) + 1)
        return [int(i) for i in order[: min(n, len(order))]]
    return [int(i) for i in order[:k]]


def instruction_rows(scores: np.ndarray, j: int, n_max: int) -> np.ndarray:
    """Rows expert j is best at: it passes, sorted by its margin over the row's mean score (NaN skipped)."""
    s = scores[:, j]
    with np.errstate(invalid="ignore"):
        margin = s - np.nanmean(scores, axis=1)
    ok = np.flatnonzero(np.nan_to_num(s, nan=0.0) >= 0.5)
    ok = ok[np.argsort(-np.nan_to_num(margin[ok], nan=0.0), kind="stable")]
    return ok[:n_max]


# ------------------------------------------------------------------------------------------------------- router


class GliderRouter(BlendedHeadsRouter):
    name = "glider"

    def __init__(
        self, alpha: float | None = None, n_instruction: int = 50, inner_folds: int = 3, top_k: int = 1,
        knn_weight: float = 0.5, knn_k: int = 50, query_costs: bool = True, gain_weight: float = GAIN_WEIGHT,
        **kw: Any
    ) -> None:
        super().__init__(BlendedHeads(True, C_GRID, inner_folds, knn_weight, knn_k, gain_weight), query_costs, **kw)
        self.alpha, self.n_instruction, self.top_k = alpha, n_instruction, top_k

    def fit(self, data: Any, queries: Sequence[RouteQuery] | None = None) -> GliderRouter:
        table, qs = self._table_and_queries(data, queries)
        x = self.embed(qs)
        m = len(self.models)
        inst = np.zeros((m, x.shape[1]), dtype=np.float32)
        for j in range(m):
            rows = instruction_rows(table.scores, j, self.n_instruction)
            if len(rows):
                v = x[rows].mean(axis=0)
                inst[j] = v / (np.linalg.norm(v) + 1e-12)
        self.instructions = inst
        oof, _ = self.blended_heads.fit(qs, table, self.embed, self.seed)
        glob = self._global(x)
        have = np.isfinite(table.scores) & np.isfinite(oof)
        y = (table.scores[have] >= 0.5).astype(int)
        with np.errstate(divide="ignore"):
            local_oof = np.log(np.clip(oof, 1e-6, 1 - 1e-6)) - np.log(np.clip(1 - oof, 1e-6, 1))
        if self.alpha is None:  # α from the training rows' out-of-fold local logits
            losses = {a: log_loss(1 / (1 + np.exp(-glider_logits(local_oof, glob, a)[have])), y) for a in ALPHA_GRID}
            self.alpha = min(losses, key=lambda a: losses[a])
            self.metadata["alpha_log_loss"] = {str(a): v for a, v in losses.items()}
        self.metadata["alpha"] = self.alpha
        self._calibrate_share(1 / (1 + np.exp(-glider_logits(np.nan_to_num(local_oof), glob, self.alpha))))
        return self

    def _global(self, x: np.ndarray) -> np.ndarray:
        glob = x @ self.instructions.T
        return glob - glob.mean(axis=1, keepdims=True)

    def local_logits(self, queries: Sequence[RouteQuery]) -> np.ndarray:
        """The learned local score: logit of the heads' P(pass), blended with the kNN estimate and moved toward the
        gain heads' when the router has them."""
        p = np.clip(self.blended_heads.pass_probs(queries, self.embed), 1e-6, 1 - 1e-6)
        return np.log(p) - np.log1p(-p)

    def logits(self, queries: Sequence[RouteQuery]) -> np.ndarray:
        local = self.local_logits(queries)
        return glider_logits(local, self._global(self.embed(queries)), float(self.alpha or 0.0))

    def prepare(self, queries: Sequence[RouteQuery]) -> Prepared:
        """Logits [n, m] (the knob-free part), with the expected cost per query and model when the router predicts
        categories; `choose` applies the utility rule to sigmoid(logits)."""
        return Prepared(self.logits(queries), self.expected_costs(queries))

    def predict(self, queries: Sequence[RouteQuery]) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits(queries)))

    def choose(self, prepared: Prepared, knob: float | None = None, mask: np.ndarray | None = None) -> np.ndarray:
        return super().choose(Prepared(1.0 / (1.0 + np.exp(-prepared.values)), prepared.costs), knob, mask)

    def row_scores(self, prepared: Prepared, i: int) -> dict[str, float]:
        return {m: float(1.0 / (1.0 + np.exp(-prepared.values[i, j]))) for j, m in enumerate(self.models)}

    def decision_extra(self, prepared: Prepared, known: Sequence[str]) -> dict[str, Any]:
        """The softmax routing distribution over the known candidates and GLIDER's top-k experts among them."""
        keep = [j for j, m in enumerate(self.models) if m in known]
        logits = prepared.values[0, keep]
        probs = softmax(logits)
        return {"softmax": {self.models[j]: float(p) for j, p in zip(keep, probs, strict=True)},
                "top_k": [self.models[keep[i]] for i in glider_select(logits, self.top_k)]}
