"""GLIDER-style router: a global semantic score per expert plus a learned local score.

- Global: cosine similarity between the query's instruction embedding (the query itself stands in for an
  LLM-written instruction) and each expert's instruction embedding — the normalised mean embedding of the
  training prompts the expert is best at (passes, ranked by how much it beats the row's mean score; at most
  `n_instruction` of them), centred across experts.
- Local: a per-expert logistic head on the query embedding predicting that the expert passes (its logit).
- `logits = local + α·global`; softmax gives the routing distribution, `glider_select` the top-k / top-p experts
  (k = 1 for replay). As a score-predicting router, sigmoid(logits) is the predicted score per expert and the
  decision is the shared utility rule argmax (p̂ − λ·cost).

Left out: combining k > 1 experts' outputs (token-level fusion lives in collab/); the LLM that writes the instruction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from routers.base import Decision, RouteQuery, ScoreRouter
from routers.features import embeddings

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


class GliderRouter(ScoreRouter):
    name = "glider"

    def __init__(self, alpha: float = 5.0, n_instruction: int = 50, c: float = 1.0, top_k: int = 1, **kw: Any) -> None:
        super().__init__(**kw)
        self.alpha, self.n_instruction, self.c, self.top_k = alpha, n_instruction, c, top_k

    def fit(self, data: Any, queries: Sequence[RouteQuery] | None = None) -> GliderRouter:
        from sklearn.linear_model import LogisticRegression

        table, qs = self._table_and_queries(data, queries)
        x = embeddings(qs)
        m = len(self.models)
        inst = np.zeros((m, x.shape[1]), dtype=np.float32)
        self.heads: list[Any] = []
        for j in range(m):
            rows = instruction_rows(table.scores, j, self.n_instruction)
            if len(rows):
                v = x[rows].mean(axis=0)
                inst[j] = v / (np.linalg.norm(v) + 1e-12)
            col = table.scores[:, j]
            have = np.isfinite(col)
            y = (col[have] >= 0.5).astype(int)
            if len(y) == 0 or y.min() == y.max():
                p = float(np.clip(y.mean() if len(y) else 0.5, 0.01, 0.99))
                self.heads.append(float(np.log(p / (1 - p))))
            else:
                self.heads.append(LogisticRegression(C=self.c, max_iter=500).fit(x[have], y))
        self.instructions = inst
        self._calibrate_share(self.predict(qs))
        return self

    def logits(self, queries: Sequence[RouteQuery]) -> np.ndarray:
        x = embeddings(queries)
        local = np.stack(
            [np.full(len(x), h) if isinstance(h, float) else h.decision_function(x) for h in self.heads], axis=1
        )
        glob = x @ self.instructions.T
        glob = glob - glob.mean(axis=1, keepdims=True)
        return glider_logits(local, glob, self.alpha)

    def predict(self, queries: Sequence[RouteQuery]) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits(queries)))

    def decide(self, query: RouteQuery | str, candidates: Sequence[str] | None = None) -> Decision:
        d = super().decide(query, candidates)
        q = RouteQuery(prompt=query) if isinstance(query, str) else query
        logits = self.logits([q])[0]
        keep = [j for j, m in enumerate(self.models) if m in d.candidates]
        probs = softmax(logits[keep])
        d.extra["softmax"] = {self.models[j]: float(p) for j, p in zip(keep, probs, strict=True)}
        d.extra["top_k"] = [self.models[keep[i]] for i in glider_select(logits[keep], self.top_k)]
        return d
