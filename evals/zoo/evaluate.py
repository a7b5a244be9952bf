"""Measure the zoo: batched greedy decoding with a KV cache, accuracy per model per suite on the test split.

:func:`greedy_batch` decodes many prompts at once: prompts are left-padded with an attention mask, positions count
real tokens only (as ``generate`` does), and each step feeds one new token per row through the model's cache. A row
stops at ``<|end|>``; it yields the same tokens as one-by-one greedy ``generate`` (tested). :func:`evaluate_zoo`
loads every model folder named in a zoo's ``zoo.json`` (or every subfolder with a ``config.json``), runs each suite's
test examples through the chat format, scores the outputs with the suite's own checker (``suite.check``) and returns
``{"models": {name: {suite: accuracy}}}``. :func:`check_criteria` states the zoo's requirements (size matters, experts
pay off) against measured accuracies and FLOPs/token.

What it leaves out: sampling (greedy only), serving (the gateway's backends) and training (:mod:`evals.zoo.train`).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from evals.zoo.tokenizer import END_ID, PAD_ID, decode
from evals.zoo.train import chat_prompt_ids, encode_text

EQUAL_TOLERANCE = 0.02  # "equal accuracy": within two points


def cache_keyword(model: Any) -> str:
    """The forward argument that takes the KV cache: ``cache`` in newer transformers, ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def greedy_batch(model: Any, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, eos_id: int = END_ID,
                 pad_id: int = PAD_ID) -> list[list[int]]:
    """Greedy continuations (without the EOS) of each prompt, decoded together with a KV cache."""
    import torch
    from transformers import DynamicCache

    if not prompts:
        return []
    width = max(len(p) for p in prompts)
    n = len(prompts)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if len(p):
            ids[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
            mask[i, width - len(p):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    outputs: list[list[int]] = [[] for _ in range(n)]
    done = torch.zeros(n, dtype=torch.bool)
    cache = DynamicCache(config=model.config)
    kw = cache_keyword(model)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **{kw: cache})
        for _ in range(max_new_tokens):
            nxt = out.logits[:, -1, :].argmax(-1)
            for i in range(n):
                if not done[i]:
                    t = int(nxt[i])
                    if t == eos_id:
                        done[i] = True
                    else:
                        outputs[i].append(t)
            if bool(done.all()):
                break
            nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
            mask = torch.cat([mask, torch.ones((n, 1), dtype=torch.long)], dim=1)
            positions = positions[:, -1:] + 1
            out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=positions, use_cache=True,
                        **{kw: cache})  # the cache object fills in place
    return outputs


def generate_answers(model: Any, prompts: Sequence[str], *, max_new_tokens: int, batch: int = 64) -> list[str]:
    """Chat-format each prompt, decode greedily in length-sorted batches, return the reply texts in input order."""
    encoded = [chat_prompt_ids(p) for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    texts: list[str] = [""] * len(encoded)
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        room = max(1, model.config.max_position_embeddings - max(len(encoded[i]) for i in idx))
        outs = greedy_batch(model, [encoded[i] for i in idx], max_new_tokens=min(max_new_tokens, room))
        for i, toks in zip(idx, outs):
            texts[i] = decode(toks)
    return texts


def answer_budget(suite: Any, *, sample: int = 500, slack: int = 32) -> int:
    """Max new tokens for a suite: the longest reference answer among ``sample`` train examples, plus ``slack``."""
    longest = max((len(encode_text(ex.answer)) for ex in suite.examples("train", n=sample)), default=64)
    return longest + slack


def model_dirs(zoo_dir: str | Path) -> dict[str, Path]:
    """Model name → folder: the manifest's order when ``zoo.json`` exists, else every subfolder with a config."""
    zoo = Path(zoo_dir)
    manifest = zoo / "zoo.json"
    if manifest.exists():
        names = [m["name"] for m in json.loads(manifest.read_text())["models"]]
        return {n: zoo / n for n in names if (zoo / n / "config.json").exists()}
    return {p.name: p for p in sorted(zoo.iterdir()) if (p / "config.json").exists()}


def evaluate_zoo(zoo_dir: str | Path, *, suites: Sequence[str], get_suite: Callable[[str], Any], n: int | None = None,
                 only: Sequence[str] | None = None, batch: int = 64, max_new_tokens: int | None = None,
                 progress: bool = True) -> dict:
    """``{"models": {model: {suite: accuracy on the test split}}}`` (mean checker score over ``n`` examples)."""
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(min(2, torch.get_num_threads()))
    loaded = {s: get_suite(s) for s in suites}
    tests = {s: loaded[s].examples("test", n=n) for s in suites}
    budgets = {s: answer_budget(loaded[s]) for s in suites}
    if max_new_tokens is not None:
        budgets = {s: min(b, max_new_tokens) for s, b in budgets.items()}
    results: dict[str, dict[str, float]] = {}
    for name, path in model_dirs(zoo_dir).items():
        if only and name not in only:
            continue
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        model.eval()
        results[name] = {}
        for s in tqdm(suites, desc=f"eval {name}", disable=not progress):
            examples = tests[s]
            outputs = generate_answers(model, [ex.prompt for ex in examples], max_new_tokens=budgets[s], batch=batch)
            scores = [float(loaded[s].check(ex, out).score) for ex, out in zip(examples, outputs)]
            results[name][s] = round(sum(scores) / len(scores), 4) if scores else 0.0
    return {"models": results}


def check_criteria(acc: dict[str, dict[str, float]], flops: dict[str, int], *, suites: Sequence[str],
                   min_gap: float = 0.20) -> list[tuple[str, bool]]:
    """The zoo's requirements as (statement, holds) pairs, from accuracies and FLOPs/token."""
    out: list[tuple[str, bool]] = []
    if "small" in acc and "large" in acc:
        gaps = {s: acc["large"].get(s, 0.0) - acc["small"].get(s, 0.0) for s in suites}
        wide = [s for s, g in gaps.items() if g >= min_gap]
        out.append((f"large - small >= {min_gap:.0%} on >= 2 suites (gaps: "
                    + ", ".join(f"{s} {g:+.2f}" for s, g in gaps.items()) + ")", len(wide) >= 2))
        if flops.get("small"):
            ratio = flops["large"] / flops["small"]
            out.append((f"large costs >= 5x small per token ({ratio:.1f}x)", ratio >= 5))
    for name in acc:
        if not name.startswith("expert-") or "large" not in acc:
            continue
        own = name.removeprefix("expert-")
        if own not in acc[name]:
            continue
        e, big = acc[name][own], acc["large"].get(own, 0.0)
        ratio = flops["large"] / flops[name] if flops.get(name) else 0.0
        beats = e > big
        cheaper = ratio >= 3 and e >= big - EQUAL_TOLERANCE
        out.append((f"{name} on {own}: {e:.2f} vs large {big:.2f}, {ratio:.1f}x cheaper", beats or cheaper))
        others = [s for s in suites if s != own and s in acc[name]]
        # 10 points below both its own score and large's there; where large itself is within 10 points of zero, 0.
        worse = all(acc[name][s] <= max(0.0, min(e, acc["large"].get(s, 0.0)) - 0.10) for s in others)
        out.append((f"{name} clearly worse outside {own} ("
                    + ", ".join(f"{s} {acc[name][s]:.2f}" for s in others) + ")", worse))
    return out


def format_table(acc: dict[str, dict[str, float]], flops: dict[str, int], suites: Sequence[str]) -> str:
    """A Markdown table: one row per model, accuracy per suite (percent) and forward FLOPs/token."""
    head = "| model | " + " | ".join(suites) + " | FLOPs/token |"
    sep = "|---|" + "---:|" * (len(suites) + 1)
    rows = [head, sep]
    for name, per in acc.items():
        cells = [f"{100 * per[s]:.1f}" if s in per else "-" for s in suites]
        f = flops.get(name)
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {f / 1e6:.2f}M |" if f else f"| {name} | "
                    + " | ".join(cells) + " | - |")
    return "\n".join(rows)
