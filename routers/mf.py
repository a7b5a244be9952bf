"""RouteLLM-style matrix-factorisation router.

The predicted score of model m on query q is sigmoid(⟨v_m, W·e_q⟩ + b_m): e_q is the query's sentence embedding
(with a one-hot of its category appended when the data has categories — a per-category prior per model) projected by W into a small latent space shared with one learned vector v_m per model (RouteLLM's MF router
learns the same bilinear form on pairwise win labels; here the label is each model's own score, which for two
models carries the win-rate information and for many models needs no pairing). Trained full-batch with Adam on
binary cross-entropy over the non-missing scores, fixed seed and step count. Decision: the utility rule; the knob
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
        self, dim: int = 32, steps: int = 300, lr: float = 0.01, weight_decay: float = 1e-4, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.dim, self.steps, self.lr, self.weight_decay = dim, steps, lr, weight_decay

    def fit(self, data: Any, queries: Sequence[RouteQuery] | None = None) -> MFRouter:
        table, qs = self._table_and_queries(data, queries)
        self.features = RichFeatures(use_tfidf=False).fit(qs)
        x = torch.tensor(self.features.transform(qs).toarray(), dtype=torch.float32)
        y = torch.tensor(np.nan_to_num(table.scores, nan=0.0), dtype=torch.float32)
        w = torch.tensor(np.isfinite(table.scores), dtype=torch.float32)
        g = torch.Generator().manual_seed(self.seed)
        d, m = x.shape[1], y.shape[1]
        proj = torch.nn.Parameter(torch.randn(d, self.dim, generator=g) / d**0.5)
        vecs = torch.nn.Parameter(torch.randn(m, self.dim, generator=g) * 0.1)
        with np.errstate(invalid="ignore"):
            p0 = np.clip(np.nan_to_num(np.nanmean(table.scores, axis=0), nan=0.5), 0.02, 0.98)
        bias = torch.nn.Parameter(torch.tensor(np.log(p0 / (1 - p0)), dtype=torch.float32))
        opt = torch.optim.Adam([proj, vecs, bias], lr=self.lr, weight_decay=self.weight_decay)
        loss_fn = torch.nn.BCEWithLogitsLoss(weight=w, reduction="sum")
        for _ in range(self.steps):
            opt.zero_grad()
            logits = (x @ proj) @ vecs.T + bias
            loss = loss_fn(logits, y) / w.sum().clamp(min=1)
            loss.backward()
            opt.step()
        self.proj = proj.detach().numpy()
        self.vecs = vecs.detach().numpy()
        self.bias = bias.detach().numpy()
        self.metadata["train_loss"] = float(loss.item())
        self._calibrate_share(self.predict(qs))
        return self

    def predict(self, queries: Sequence[RouteQuery]) -> np.ndarray:
        logits = (self.features.transform(queries).toarray() @ self.proj) @ self.vecs.T + self.bias
        return 1.0 / (1.0 + np.exp(-logits))

    def knob_grid(self) -> list[float]:
        return knob_grid_with_top(self.model_costs)
