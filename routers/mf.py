"""RouteLLM-style matrix-factorisation router.

The predicted score of model m on query q is sigmoid(⟨v_m, W·e_q⟩ + b_m): e_q is the query's sentence embedding
projected by W into a small latent space shared with one learned vector v_m per model (RouteLLM's MF router
learns the same bilinear form on pairwise win labels; when the data has categories a per-(category, model) bias
c_qᵀB_m is added — a per-category prior, c_q the category probabilities predicted from the prompt; here the label is each model's own score, which for two
models carries the win-rate information and for many models needs no pairing). Trained full-batch with Adam on
binary cross-entropy over the non-missing scores, fixed seed; the step count (≤ `steps`) is the one with the lowest
loss on a validation fifth of the training rows, then the model is retrained on all of them. Decision: the utility rule; the knob
grid includes a point forcing the top-cost model.

Left out: training on pairwise preference data (arena battles) — only per-model scores are used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from routers.base import RouteQuery, ScoreRouter
from routers.calibrated import RichFeatures, knob_grid_with_top


class MFRouter(ScoreRouter):
    name = "mf"

    def __init__(
        self, dim: int = 32, steps: int = 500, lr: float = 0.01, weight_decay: float = 1e-4, select_steps: bool = True,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.dim, self.steps, self.lr, self.weight_decay = dim, steps, lr, weight_decay
        self.select_steps = select_steps

    def fit(self, data: Any, queries: Sequence[RouteQuery] | None = None) -> MFRouter:
        table, qs = self._table_and_queries(data, queries)
        self.features = RichFeatures(use_tfidf=False, use_emb=False, predict_category=True,
                                     seed=self.seed).fit(qs, self.embed)
        x = torch.tensor(self.embed(qs), dtype=torch.float32)
        cat = torch.tensor(self.features.category_matrix(qs, self.embed, train=True), dtype=torch.float32)
        y = torch.tensor(np.nan_to_num(table.scores, nan=0.0), dtype=torch.float32)
        w = torch.tensor(np.isfinite(table.scores), dtype=torch.float32)
        with np.errstate(invalid="ignore"):
            p0 = np.clip(np.nan_to_num(np.nanmean(table.scores, axis=0), nan=0.5), 0.02, 0.98)
        n = x.shape[0]
        if self.select_steps and n >= 20:  # step count by validation loss on 20% of the training rows
            perm = np.random.default_rng(self.seed).permutation(n)
            va, tr = perm[: n // 5], perm[n // 5 :]
            curve = self._train(x[tr], cat[tr], y[tr], w[tr], p0, self.steps, (x[va], cat[va], y[va], w[va]))[1]
            self.steps_used = int(np.argmin(curve) + 1)
            self.metadata["validation_loss"] = float(np.min(curve))
        else:
            self.steps_used = self.steps
        self.metadata["steps"] = self.steps_used
        params, _ = self._train(x, cat, y, w, p0, self.steps_used, None)
        self.proj, self.vecs, self.bias, self.cat_bias = (t.detach().numpy() for t in params)
        self._calibrate_share(self.predict(qs))
        return self

    def _train(self, x: Any, cat: Any, y: Any, w: Any, p0: np.ndarray, steps: int, val: Any) -> tuple[list[Any], list[float]]:
        """Full-batch Adam on weighted BCE; with `val`, the validation loss after every step."""
        g = torch.Generator().manual_seed(self.seed)
        d, m = x.shape[1], y.shape[1]
        proj = torch.nn.Parameter(torch.randn(d, self.dim, generator=g) / d**0.5)
        vecs = torch.nn.Parameter(torch.randn(m, self.dim, generator=g) * 0.1)
        bias = torch.nn.Parameter(torch.tensor(np.log(p0 / (1 - p0)), dtype=torch.float32))
        cat_bias = torch.nn.Parameter(torch.zeros(cat.shape[1], m))
        opt = torch.optim.Adam([proj, vecs, bias, cat_bias], lr=self.lr, weight_decay=self.weight_decay)
        loss_fn = torch.nn.BCEWithLogitsLoss(weight=w, reduction="sum")
        curve: list[float] = []
        for _ in range(steps):
            opt.zero_grad()
            logits = (x @ proj) @ vecs.T + bias + cat @ cat_bias
            loss = loss_fn(logits, y) / w.sum().clamp(min=1)
            loss.backward()
            opt.step()
            if val is not None:
                xv, cv, yv, wv = val
                with torch.no_grad():
                    lv = torch.nn.functional.binary_cross_entropy_with_logits(
                        (xv @ proj) @ vecs.T + bias + cv @ cat_bias, yv, weight=wv, reduction="sum")
                curve.append(float(lv / wv.sum().clamp(min=1)))
        return [proj, vecs, bias, cat_bias], curve

    def predict(self, queries: Sequence[RouteQuery]) -> np.ndarray:
        logits = (self.embed(queries) @ self.proj) @ self.vecs.T + self.bias
        logits = logits + self.features.category_matrix(queries, self.embed) @ self.cat_bias
        return 1.0 / (1.0 + np.exp(-logits))

    def knob_grid(self) -> list[float]:
        return knob_grid_with_top(self.model_costs)
