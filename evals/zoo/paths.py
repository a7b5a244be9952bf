"""Where the zoo lives: the committed models ship inside the package, so an installed ``tandem`` finds them.

``ZOO_DIR`` is ``evals/zoo/models/`` (one HF folder per model plus ``zoo.json``); the ``TANDEM_ZOO_DIR`` environment
variable points elsewhere (a locally rebuilt zoo, say). :func:`model_dir` names one model's folder.

What it leaves out: building (:mod:`evals.zoo.build`) and loading (the gateway's backends) the models.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGED_ZOO_DIR = Path(__file__).resolve().parent / "models"
MANIFEST = "zoo.json"


def zoo_dir() -> Path:
    """The zoo folder in use: ``$TANDEM_ZOO_DIR`` when set, else the packaged ``evals/zoo/models``."""
    env = os.environ.get("TANDEM_ZOO_DIR")
    return Path(env) if env else PACKAGED_ZOO_DIR


def model_dir(name: str, root: str | Path | None = None) -> Path:
    """The HF folder of zoo model ``name`` (``small``, ``large``, ``expert-sql``, ...)."""
    return Path(root) / name if root is not None else zoo_dir() / name
