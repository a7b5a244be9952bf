"""Train one zoo model on chat-formatted task examples, by step count, with a fixed seed, on one CPU thread.

Each training example is one chat turn rendered exactly as the zoo tokenizer's chat template renders it::

    <|user|>{prompt}<|end|>\\n<|assistant|>{answer}<|end|>

and the loss is the next-token cross-entropy on the assistant part only (the answer and its closing ``<|end|>``).
Batches are drawn with a seeded generator: a suite by the spec's mixture weights, then an example of that suite's
train split. A step's rows are sorted by length and cut into micro-batches (:func:`micro_batches`; gradients add up,
the loss is normalised by the step's answer tokens), each right-padded (so no attention mask is needed: a causal model
never looks right). The optimiser
is AdamW with linear warmup and cosine decay (:func:`lr_at`). The run length is ``spec.steps`` — never wall time —
so the same spec and seed give the same weights on the same torch build.

An expert may add a drill to its mixture (``spec.aux_lines`` > 0): the pool ``<suite>/lines`` holds every step line
``a op b=c`` of the suite's train examples (the same train split, so nothing of validation/test leaks), each as one
chat turn with an empty prompt, ``<|user|><|end|>\n<|assistant|>a op b=c<|end|>``, with the loss on ``c<|end|>`` only
(:func:`encode_step_lines`). :func:`mixture` gives the pool weights, the lines pools sharing ``aux_lines``. Weights are saved with ``save_pretrained``
(safetensors, sharded below 8 MB) in the spec's dtype, beside the zoo tokenizer.

What it leaves out: choosing the specs (:mod:`evals.zoo.spec`), the whole-zoo build and manifest
(:mod:`evals.zoo.build`) and evaluation (:mod:`evals.zoo.evaluate`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals.zoo.spec import ModelSpec
from evals.zoo.tokenizer import ASSISTANT_ID, CHARS, END_ID, FIRST_CHAR_ID, PAD_ID, UNK_ID, USER_ID

THREADS = 1  # one thread per model: the same weights however many models train at once
MAX_SHARD = "8MB"
MICRO_TOKENS = 4096  # padded tokens per forward pass
IGNORE = -100
_CHAR_ID = {ch: FIRST_CHAR_ID + i for i, ch in enumerate(CHARS)}


def encode_text(text: str) -> list[int]:
    """Characters → ids (same as the zoo tokenizer on text without special-token strings)."""
    return [_CHAR_ID.get(ch, UNK_ID) for ch in text]


def chat_prompt_ids(prompt: str) -> list[int]:
    """``<|user|>{prompt}<|end|>\\n<|assistant|>``: the chat template with ``add_generation_prompt``."""
    return [USER_ID, *encode_text(prompt), END_ID, *encode_text("\n"), ASSISTANT_ID]


def chat_example_ids(prompt: str, answer: str) -> tuple[list[int], int]:
    """(token ids of prompt turn + answer + ``<|end|>``, number of leading prompt tokens that carry no loss)."""
    head = chat_prompt_ids(prompt)
    return head + encode_text(answer) + [END_ID], len(head)


def lr_at(step: int, *, total: int, peak: float, warmup: int, min_ratio: float) -> float:
    """Learning rate for 0-based ``step``: linear warmup to ``peak`` over ``warmup`` steps, then cosine to
    ``min_ratio × peak`` at the last step."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    span = max(1, total - warmup - 1)
    progress = min(1.0, (step - warmup) / span)
    return peak * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    n_prompt: int


def encode_examples(examples: Sequence[Any], max_len: int) -> list[Encoded]:
    """Chat-encode examples (anything with ``.prompt`` and ``.answer``), truncated to ``max_len`` tokens; examples
    whose answer would be cut off entirely are dropped."""
    out = []
    for ex in examples:
        ids, n_prompt = chat_example_ids(ex.prompt, ex.answer)
        if n_prompt < max_len:
            out.append(Encoded(ids[:max_len], n_prompt))
    return out


def make_batch(rows: Sequence[Encoded]) -> tuple[Any, Any]:
    """Right-padded ``input_ids`` and ``labels`` (prompt and padding positions are ``IGNORE``) as torch tensors."""
    import torch

    width = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for i, r in enumerate(rows):
        t = torch.tensor(r.ids, dtype=torch.long)
        ids[i, : len(r.ids)] = t
        labels[i, r.n_prompt: len(r.ids)] = t[r.n_prompt:]
    return ids, labels


def micro_batches(rows: Sequence[Encoded], max_tokens: int) -> list[list[Encoded]]:
    """Rows sorted by length and cut into chunks whose padded size (rows × longest) stays ≤ ``max_tokens`` (a chunk
    has at least one row): far less padding than one batch padded to its longest row, same gradient."""
    chunks: list[list[Encoded]] = []
    current: list[Encoded] = []
    for r in sorted(rows, key=lambda r: len(r.ids)):
        if current and (len(current) + 1) * len(r.ids) > max_tokens:
            chunks.append(current)
            current = []
        current.append(r)
    if current:
        chunks.append(current)
    return chunks


LINES_SUFFIX = "/lines"


def lines_pool_name(suite: str) -> str:
    return suite + LINES_SUFFIX


def encode_step_lines(examples: Sequence[Any], max_len: int) -> list[Encoded]:
    """Every step line with exactly one ``=`` (``.steps`` of each example) as an empty-prompt chat turn whose loss
    covers the text after ``=`` and the closing ``<|end|>``; lines longer than ``max_len`` tokens are dropped."""
    head = chat_prompt_ids("")
    out = []
    for ex in examples:
        for line in getattr(ex, "steps", ()):
            if line.count("=") != 1 or line.endswith("="):
                continue
            ids = head + encode_text(line) + [END_ID]
            if len(ids) <= max_len:
                out.append(Encoded(ids, len(head) + line.index("=") + 1))
    return out


def mixture(spec: ModelSpec) -> dict[str, float]:
    """Pool name → sampling weight: the spec's suites, plus ``<suite>/lines`` pools sharing ``spec.aux_lines`` in
    proportion to the suites' weights."""
    weights = {s: w for s, w in spec.suites.items() if w > 0}
    if spec.aux_lines > 0:
        total = sum(weights.values())
        weights.update({lines_pool_name(s): spec.aux_lines * w / total for s, w in list(weights.items())})
    return weights


class BatchSampler:
    """Seeded batches: per row, a suite by mixture weight, then a uniform example of it."""

    def __init__(self, pools: dict[str, list[Encoded]], weights: dict[str, float], seed: int):
        import numpy as np

        self.names = [n for n in weights if weights[n] > 0]
        if not self.names:
            raise ValueError("the suite mixture has no positive weight")
        for n in self.names:
            if not pools.get(n):
                raise ValueError(f"no training examples for suite {n!r}")
        w = np.array([weights[n] for n in self.names], dtype=float)
        self.p = w / w.sum()
        self.pools = pools
        self.rng = np.random.default_rng(seed)

    def sample(self, batch: int) -> list[Encoded]:
        which = self.rng.choice(len(self.names), size=batch, p=self.p)
        rows = []
        for k in which:
            pool = self.pools[self.names[int(k)]]
            rows.append(pool[int(self.rng.integers(len(pool)))])
        return rows


@dataclass
class TrainResult:
    steps: int
    seconds: float
    final_loss: float
    mean_loss_last: float
    tokens: int


def train_model(spec: ModelSpec, model_dir: str | Path, pools: dict[str, list[Encoded]], *, steps: int | None = None,
                progress: bool = True, log: Callable[[str], None] | None = None) -> TrainResult:
    """Train the (already written, randomly initialised) model in ``model_dir`` for ``steps`` (default
    ``spec.steps``) on ``pools`` (suite → encoded train examples) and save it back in place."""
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM

    total = spec.steps if steps is None else steps
    torch.set_num_threads(THREADS)
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": spec.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=spec.lr, betas=(0.9, 0.98), eps=1e-8)
    sampler = BatchSampler(pools, mixture(spec), spec.seed)
    warmup = min(spec.warmup, max(1, total // 10))
    losses: list[float] = []
    tokens = 0
    t0 = time.perf_counter()
    bar = tqdm(range(total), desc=f"train {spec.name}", disable=not progress, mininterval=2.0, unit="step")
    for step in bar:
        lr = lr_at(step, total=total, peak=spec.lr, warmup=warmup, min_ratio=spec.min_lr_ratio)
        for g in opt.param_groups:
            g["lr"] = lr
        rows = sampler.sample(spec.batch)
        n_target = sum(len(r.ids) - r.n_prompt for r in rows)
        opt.zero_grad(set_to_none=True)
        step_loss = 0.0
        for chunk in micro_batches(rows, MICRO_TOKENS):
            ids, labels = make_batch(chunk)
            logits = model(input_ids=ids, use_cache=False).logits
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                     labels[:, 1:].reshape(-1), ignore_index=IGNORE,
                                                     reduction="sum") / n_target
            loss.backward()
            step_loss += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(step_loss)
        tokens += n_target
        if step % 20 == 0 or step == total - 1:
            bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{lr:.1e}")
        if log is not None and (step % 100 == 0 or step == total - 1):
            log(f"{spec.name} step {step + 1}/{total} loss {losses[-1]:.4f} ({time.perf_counter() - t0:.0f}s)")
    seconds = time.perf_counter() - t0
    model.eval()
    save_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[spec.dtype]
    model.to(save_dtype)
    model.config.dtype = spec.dtype
    model.save_pretrained(model_dir, max_shard_size=MAX_SHARD)
    tail = losses[-max(1, min(50, len(losses))):] if losses else [float("nan")]
    return TrainResult(steps=total, seconds=seconds, final_loss=losses[-1] if losses else float("nan"),
                       mean_loss_last=sum(tail) / len(tail), tokens=tokens)
