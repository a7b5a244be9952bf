"""Where tandem keeps files it makes on a machine: the one reading of ``$TANDEM_CACHE``.

The cache folder holds converted packaged models (SmolLM2's GGUF as an HF folder) and the sentence-embedding cache.
Libraries below the gateway (``routers``) take the folder as an argument; the gateway and the command line pass this
one. What it leaves out: the request log and run folders (``~/.tandem``, named in the config and by evals).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$TANDEM_CACHE`` when set and not empty, else ``~/.cache/tandem``."""
    return Path(os.environ.get("TANDEM_CACHE") or Path.home() / ".cache" / "tandem").expanduser()
