"""Collaboration router files: one ``torch.save`` dict per file, tagged with the router's ``kind`` and a format version.

:func:`write_artifact` and :func:`read_artifact` are the one place the file layout is written and checked: a file
that is not a torch file, holds no tagged dict, is of another kind, or was written in a newer format is refused with
a ``ValueError`` naming the file and what was wrong. Files written before the format version existed read as format
1 (the layout has not changed since). :class:`SavedModule` (R2R's token router, Arbitrage's step router) keeps its
constructor arguments in ``self.config``; ``save`` writes them with the weights and any metadata (threshold, metrics,
models) under the subclass's ``kind``, and ``load`` rebuilds it in eval mode. FusionRoute's file
(``collab.fusionroute.save_fusionroute``) uses the same two functions. What it leaves out: training
(``evals.collab_train``).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = 1  # bump when the layout of a router file changes; read_artifact refuses a newer one


def write_artifact(path: str | Path, kind: str, **fields: Any) -> None:
    """Save ``fields`` as a ``kind`` router file of the current :data:`FORMAT`."""
    torch.save({"kind": kind, "format": FORMAT, **fields}, str(path))


def read_artifact(path: str | Path, kind: str) -> dict[str, Any]:
    """The saved dict of a ``kind`` router file (see the module docstring for what is refused)."""
    try:
        blob = torch.load(str(path), weights_only=False)
    except (pickle.UnpicklingError, EOFError, RuntimeError) as e:
        raise ValueError(f"{path} is not a collaboration router file (not a torch file: {e})") from e
    if not isinstance(blob, dict) or "kind" not in blob:
        raise ValueError(f"{path} is not a collaboration router file (no 'kind' in it; expected a {kind} router)")
    if blob["kind"] != kind:
        raise ValueError(f"{path} is not a {kind} router (kind={blob['kind']!r})")
    fmt = blob.get("format", 1)
    if not isinstance(fmt, int) or fmt > FORMAT:
        raise ValueError(f"{path}: {kind} router file of format {fmt!r}, this version reads formats up to {FORMAT} "
                         "(written by a newer tandem?)")
    return blob


class SavedModule(nn.Module):
    kind: str = ""
    config: dict[str, Any]

    def save(self, path: str | Path, **extra: Any) -> None:
        write_artifact(path, self.kind, config=self.config, state=self.state_dict(), **extra)

    @classmethod
    def load(cls, path: str | Path) -> tuple[Any, dict[str, Any]]:
        """The module (in eval mode) and the whole saved blob (its metadata)."""
        blob = read_artifact(path, cls.kind)
        module = cls(**blob["config"])
        module.load_state_dict(blob["state"])
        return module.eval(), blob
