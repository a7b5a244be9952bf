"""Where tandem keeps files it makes on a machine: the one reading of ``$TANDEM_CACHE``.

The cache folder holds converted packaged models (SmolLM2's GGUF as an HF folder) and the sentence-embedding cache.
Libraries below the gateway (``routers``) take the folder as an argument; the gateway and the command line pass this
one. :func:`write_folder_once` is the one way a folder is written there. What it leaves out: the request log and run folders (``~/.tandem``, named in the config and by evals).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_dir() -> Path:
    """``$TANDEM_CACHE`` when set and not empty, else ``~/.cache/tandem``."""
    return Path(os.environ.get("TANDEM_CACHE") or Path.home() / ".cache" / "tandem").expanduser()


def write_folder_once(dest: Path, fill: Callable[[Path], None]) -> Path:
    """Write a folder that others may be writing at the same time: ``fill`` writes into a temporary sibling, which is
    renamed to ``dest``, so readers see it whole or not at all. If another process renamed its copy first, that one
    is kept (a folder counts as complete when it has a ``config.json``). Returns ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{dest.name}-", dir=dest.parent))
    try:
        fill(tmp)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not (dest / "config.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # lost a race: the other folder is complete
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
