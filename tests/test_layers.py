"""The import contracts in pyproject.toml (``[tool.importlinter]``, checked by ``lint-imports`` in scripts/test) catch
what they promise: on a tree of stand-in packages with the project's names, each planted import — at module level,
inside a function, under ``if TYPE_CHECKING:``, through a third module, or closing a circle — breaks its contract.

What it leaves out: the project's own imports (``lint-imports`` itself checks those).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gateway", "routers", "collab", "logit_kernels", "evals", "bench")
LINT = Path(sys.executable).with_name("lint-imports")

# contract names, as in pyproject.toml
KERNELS = "logit_kernels imports no other package of the project"
LIBRARIES = "routers and collab import neither gateway nor evals nor bench"
GATEWAY = "gateway imports neither evals nor bench"
BENCH = "nothing imports bench"
LAYERS = "layers: bench > evals > gateway > routers | collab > logit_kernels"
CYCLES = "no import cycles between the modules (or subpackages) of any package"

# a tree that keeps every contract: each package imports only what its layer may
CLEAN = {
    "logit_kernels/fused.py": "",
    "routers/base.py": "",
    "routers/features.py": "from routers import base\n",
    "collab/strategy.py": "import logit_kernels.fused\n",
    "collab/registry.py": "from collab import strategy\n",
    "gateway/http_io.py": "",
    "gateway/agents_api.py": "from gateway import http_io\n",
    "gateway/app.py": "import routers.features\nimport collab.registry\nfrom gateway import agents_api\n",
    "evals/report.py": "import gateway.app\n",
    "bench/loadgen.py": "import evals.report\n",
}

PLANTED = {
    # collab imports logit_kernels, so collab now reaches gateway too
    "logit_kernels-function-level": ({"logit_kernels/fused.py": "def f():\n    import gateway.app\n"},
                               {KERNELS, LIBRARIES, LAYERS}),
    "routers-type-checking": ({"routers/base.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                                  "    from gateway import app\n"}, {LIBRARIES, LAYERS}),
    "collab-to-evals": ({"collab/registry.py": "from collab import strategy\nimport evals.report\n"},
                        {LIBRARIES, GATEWAY, LAYERS}),  # gateway imports collab.registry
    "gateway-to-evals-through-routers": ({"routers/features.py": "from routers import base\nimport evals.report\n"},
                                         {LIBRARIES, GATEWAY, LAYERS}),
    "evals-to-bench": ({"evals/report.py": "import gateway.app\ndef f():\n    import bench.loadgen\n"},
                       {BENCH, LAYERS}),
    "collab-to-routers": ({"collab/strategy.py": "import logit_kernels.fused\nimport routers.base\n"}, {LAYERS}),
    "circle-inside-a-package": ({"routers/base.py": "def f():\n    from routers import features\n"}, {CYCLES}),
    "circle-through-a-third": ({"gateway/http_io.py": "from gateway.app import main\n"}, {CYCLES}),
}


def _lint(tmp: Path, files: dict[str, str]) -> tuple[int, dict[str, str]]:
    for pkg in PACKAGES:
        (tmp / pkg).mkdir(parents=True, exist_ok=True)
        (tmp / pkg / "__init__.py").write_text("")
    for rel, text in files.items():
        (tmp / rel).write_text(text)
    shutil.copy(ROOT / "pyproject.toml", tmp / "pyproject.toml")
    res = subprocess.run([str(LINT), "--no-cache", "--no-logo"], cwd=tmp, capture_output=True, text=True, timeout=60)
    verdicts = {}
    for line in res.stdout.splitlines():
        for word in ("KEPT", "BROKEN"):
            if line.endswith(" " + word):
                verdicts[line.removesuffix(" " + word)] = word
    return res.returncode, verdicts


@pytest.fixture(scope="module")
def lint() -> Path:
    if not LINT.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    return LINT


def test_a_clean_tree_keeps_every_contract(lint: Path, tmp_path: Path) -> None:
    rc, verdicts = _lint(tmp_path, CLEAN)
    assert verdicts == dict.fromkeys((KERNELS, LIBRARIES, GATEWAY, BENCH, LAYERS, CYCLES), "KEPT") and rc == 0


@pytest.mark.parametrize("case", list(PLANTED))
def test_a_planted_import_breaks_its_contract(lint: Path, tmp_path: Path, case: str) -> None:
    change, broken = PLANTED[case]
    rc, verdicts = _lint(tmp_path, {**CLEAN, **change})
    assert rc != 0
    assert {name for name, v in verdicts.items() if v == "BROKEN"} == broken
