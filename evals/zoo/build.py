"""Build the zoo: write and train every spec'd model into ``out_dir/<name>/`` and record a ``zoo.json`` manifest.

:func:`build` builds the zoo tokenizer once, reads each suite's train split once (chat-encoded), then for each spec
(in order, or only the named ones; with its step-lines drill pool when ``spec.aux_lines`` > 0) writes a seeded
random Llama (:func:`evals.zoo.llama.make_llama`), trains it by step count (:func:`evals.zoo.train.train_model`, one
torch thread) and records in the manifest: the spec, steps actually run, seed, parameter count, forward FLOPs/token,
train time, final loss and the folder's size. ``jobs`` > 1 trains that many models at once, one process each (on two
cores, two one-thread processes beat one two-thread process: these matmuls are too small to split well); a model's
weights do not depend on ``jobs``. ``steps`` overrides every spec's step count (CI smoke builds); ``steps_scale``
multiplies them. Building only some models keeps the other entries of an existing manifest.

What it leaves out: evaluating the models (:mod:`evals.zoo.evaluate`) and the command line (:mod:`evals.zoo.cli`).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from evals.zoo.llama import make_llama
from evals.zoo.paths import MANIFEST
from evals.zoo.spec import ZOO_SPECS, ModelSpec, flops_per_token, param_count
from evals.zoo.tokenizer import VOCAB_SIZE, build_tokenizer
from evals.zoo.train import Encoded, encode_examples, encode_step_lines, lines_pool_name, mixture, train_model


def default_get_suite(name: str) -> Any:
    from evals.suites import get_suite

    return get_suite(name)


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def select_specs(specs: Sequence[ModelSpec], only: Sequence[str] | None) -> list[ModelSpec]:
    if not only:
        return list(specs)
    known = {s.name for s in specs}
    unknown = [n for n in only if n not in known]
    if unknown:
        raise KeyError(f"unknown zoo model(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return [s for s in specs if s.name in only]


def load_pools(suites: Sequence[str], get_suite: Callable[[str], Any], max_len: int,
               train_n: int | None = None, lines: Sequence[str] = ()) -> dict[str, list[Encoded]]:
    """Suite → chat-encoded train examples, plus ``<suite>/lines`` → its step lines for each suite in ``lines``."""
    pools: dict[str, list[Encoded]] = {}
    for s in suites:
        examples = get_suite(s).examples("train", n=train_n)
        pools[s] = encode_examples(examples, max_len)
        if s in lines:
            pools[lines_pool_name(s)] = encode_step_lines(examples, max_len)
    return pools


def _train_one(spec: ModelSpec, run_spec: ModelSpec, folder: Path, pools: dict[str, list[Encoded]], tok_dir: Path,
               progress: bool, log: Callable[[str], None] | None) -> dict:
    """Write the seeded random model for ``spec`` into ``folder``, train it and return its manifest entry."""
    if folder.exists():
        for f in folder.iterdir():
            if f.is_file():
                f.unlink()
    make_llama(folder, layers=spec.layers, hidden=spec.hidden, heads=spec.heads,
               intermediate=spec.intermediate, seed=spec.seed, tokenizer_dir=tok_dir)
    spec_pools = {s: [Encoded(e.ids[:spec.max_len], e.n_prompt) for e in pools[s] if e.n_prompt < spec.max_len]
                  for s in mixture(spec)}
    result = train_model(run_spec, folder, spec_pools, progress=progress, log=log)
    if log:
        log(f"{spec.name}: {result.steps} steps in {result.seconds:.0f}s, loss {result.mean_loss_last:.4f}, "
            f"{param_count(spec) / 1e6:.2f}M params, {flops_per_token(spec) / 1e6:.2f}M FLOPs/token")
    return {
        "name": spec.name,
        "role": spec.role,
        "spec": spec.to_json(),
        "steps": result.steps,
        "seed": spec.seed,
        "params": param_count(spec),
        "flops_per_token": flops_per_token(spec),
        "train_seconds": round(result.seconds, 1),
        "train_tokens": result.tokens,
        "final_loss": round(result.final_loss, 4),
        "mean_loss_last50": round(result.mean_loss_last, 4),
        "bytes": folder_bytes(folder),
    }


def _log_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build(out_dir: str | Path, *, steps: int | None = None, steps_scale: float = 1.0, only: Sequence[str] | None = None,
          specs: Sequence[ModelSpec] = ZOO_SPECS, get_suite: Callable[[str], Any] = default_get_suite,
          train_n: int | None = None, progress: bool = True, log: Callable[[str], None] | None = print,
          jobs: int = 1) -> dict:
    """Train the selected specs into ``out_dir``; return (and write) the manifest. ``jobs`` > 1 trains that many
    models at once, one process each (longest run first; log lines instead of progress bars)."""
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chosen = select_specs(specs, only)
    suites = sorted({s for spec in chosen for s, w in spec.suites.items() if w > 0})
    max_len = max((spec.max_len for spec in chosen), default=0)
    lines = sorted({s for spec in chosen if spec.aux_lines > 0 for s, w in spec.suites.items() if w > 0})
    pools = load_pools(suites, get_suite, max_len, train_n, lines=lines)
    if log:
        log("train examples: " + ", ".join(f"{s} {len(p)}" for s, p in pools.items()))
    manifest_path = out / MANIFEST
    old = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"models": []}
    entries = {m["name"]: m for m in old.get("models", [])}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tok_dir = build_tokenizer(Path(tmp) / "tokenizer")
        runs = []
        for spec in chosen:
            n_steps = steps if steps is not None else max(1, round(spec.steps * steps_scale))
            spec_pools = {s: pools[s] for s in mixture(spec)}
            runs.append((spec, spec.scaled(n_steps), out / spec.name, spec_pools))
        if jobs > 1 and len(runs) > 1:
            # Longest first (steps × FLOPs/token) so the last model to start is a short one.
            runs.sort(key=lambda r: -r[1].steps * flops_per_token(r[0]))
            with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = [pool.submit(_train_one, *run, tok_dir, False, _log_stderr if log else None)
                           for run in runs]
                for fut in futures:
                    entry = fut.result()
                    entries[entry["name"]] = entry
        else:
            for run in runs:
                entry = _train_one(*run, tok_dir, progress, log)
                entries[entry["name"]] = entry
    order = [s.name for s in specs if s.name in entries] + [n for n in entries if n not in {s.name for s in specs}]
    manifest = {
        "tokenizer": {"kind": "zoo-char", "vocab_size": VOCAB_SIZE},
        "torch": torch.__version__,
        "python": platform.python_version(),
        "build_seconds": round(time.perf_counter() - t_all, 1),
        "built_on": f"{os.cpu_count()}-CPU {platform.machine()} host, {max(1, min(jobs, len(chosen)))} model(s) at once, "
                    "one torch thread each",
        "models": [entries[n] for n in order],
        "total_bytes": sum(entries[n]["bytes"] for n in order),
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
