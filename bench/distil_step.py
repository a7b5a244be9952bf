"""Seconds per distillation step of the real pair's draft, float32 against bf16 autocast (a benchmark, not a test).

``tandem zoo build --only smollm2-draft`` trains SmolLM2 cut to its first 2 layers with
:func:`evals.zoo.smol_draft.distil`; this runs that same loop for ``--steps`` steps on synthetic replies of the
build's shape (``--batch`` replies of a ``--prompt``-token prompt and a ``--reply``-token reply, the teacher's top-32
at each reply position), first in float32, then under bf16 autocast, after one warm-up step each, and prints the
seconds per step of both and their ratio, with whether oneDNN runs bf16 on this CPU
(:func:`routers.embedder.cpu_has_fast_bf16`, which decides the build's choice). Both runs are in the same process, so
the ratio is measured under the same load.

Usage: python -m bench.distil_step [--steps 3] [--threads 2] [--json]
Left out: the teacher's replies (cached by the build), real prompts (the step's cost depends on their lengths only).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time


def synthetic_records(batch: int, prompt: int, reply: int, top_k: int, vocab: int, seed: int = 0) -> list[dict]:
    import torch

    g = torch.Generator().manual_seed(seed)
    return [{"ids": torch.randint(0, vocab, (prompt + reply,), generator=g), "n_prompt": prompt,
             "topk_ids": torch.randint(0, vocab, (reply, top_k), generator=g),
             "topk_logits": torch.randn(reply, top_k, generator=g)} for _ in range(batch)]


def seconds_per_step(records: list[dict], spec, pad: int, steps: int) -> float:
    from evals.zoo.smol_draft import cut_student, distil
    from gateway.backends.local_model import SMOLLM2_PACKAGE, resolve_model_folder

    model = cut_student(resolve_model_folder(None, SMOLLM2_PACKAGE)[0], spec.layers)
    distil(model, records, dataclasses.replace(spec, steps=1), pad_id=pad)  # warm-up
    t0 = time.perf_counter()
    distil(model, records, dataclasses.replace(spec, steps=steps), pad_id=pad)
    return (time.perf_counter() - t0) / steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prompt", type=int, default=60)
    p.add_argument("--reply", type=int, default=40)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    import torch

    from evals.zoo.smol_draft import DraftSpec
    from routers.embedder import cpu_has_fast_bf16

    torch.set_num_threads(args.threads)
    spec = DraftSpec(batch=args.batch)
    records = synthetic_records(args.batch, args.prompt, args.reply, spec.top_k, 49152)
    fp32 = seconds_per_step(records, dataclasses.replace(spec, autocast_bf16=False), 0, args.steps)
    bf16 = seconds_per_step(records, dataclasses.replace(spec, autocast_bf16=True), 0, args.steps)
    result = {"cpu_has_fast_bf16": cpu_has_fast_bf16(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "threads": args.threads, "steps": args.steps, "float32_s_per_step": round(fp32, 3),
              "bf16_autocast_s_per_step": round(bf16, 3), "bf16_over_float32": round(bf16 / fp32, 2)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['cpu_capability']}, oneDNN bf16: {result['cpu_has_fast_bf16']}; float32 {fp32:.2f} s/step, "
              f"bf16 autocast {bf16:.2f} s/step ({bf16 / fp32:.1f}x float32's)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
