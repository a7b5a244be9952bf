"""Saving and loading a small trained router module (R2R's token router, Arbitrage's step router) as one file.

A :class:`SavedModule` keeps its constructor arguments in ``self.config``; ``save`` writes them with the weights and
any metadata (threshold, metrics, models) under the subclass's ``kind``, and ``load`` rebuilds it in eval mode and
refuses a file of another kind. What it leaves out: training (``evals.collab_train``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn


class SavedModule(nn.Module):
    kind: str = ""
    config: dict[str, Any]

    def save(self, path: str | Path, **extra: Any) -> None:
        torch.save({"kind": self.kind, "config": self.config, "state": self.state_dict(), **extra}, str(path))

    @classmethod
    def load(cls, path: str | Path) -> tuple[Any, dict[str, Any]]:
        """The module (in eval mode) and the whole saved blob (its metadata)."""
        blob = torch.load(str(path), weights_only=False)
        if blob.get("kind") != cls.kind:
            raise ValueError(f"{path} is not a {cls.kind} router (kind={blob.get('kind')!r})")
        module = cls(**blob["config"])
        module.load_state_dict(blob["state"])
        return module.eval(), blob
