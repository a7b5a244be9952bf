"""Time per token of the real pair's draft against SmolLM2-135M-Instruct in transformers (a benchmark, not a test).

Both models decode 64 new tokens greedily with ``generate`` (``min_new_tokens`` = ``max_new_tokens``, so neither
stops early) from the same chat prompt, one torch thread, in float32 and in bfloat16. Rounds alternate the two models
(draft, SmolLM2, draft, ...) so that load from other processes falls on both alike; reported per model and dtype:
the median wall time per token and the median process CPU time per token (meaningful when the machine is shared:
wall time then includes waiting for a core), and the ratios SmolLM2 / draft of both. The issue's rule: the draft's
time per token is at most a third of SmolLM2's.

Usage: python bench/draft_speed.py [--rounds 3] [--tokens 64] [--dtypes float32,bfloat16] [--layers FILE] [--json]
Left out: vLLM (``tandem eval collab --vllm``), batching, prompt processing (timed only as part of the first token).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

PROMPT = "What is the capital of France? Answer in one sentence, then explain why it is famous."


def decode_seconds(model, ids, tokens: int) -> tuple[float, float]:
    """(wall, process CPU) seconds of one greedy ``generate`` of exactly ``tokens`` new tokens."""
    import torch

    with torch.no_grad():
        w0, c0 = time.perf_counter(), time.process_time()
        out = model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    assert out.shape[1] - ids.shape[1] == tokens
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--layers", type=Path, help="layers file (default: the zoo's smollm2-draft)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evals.zoo.real_pair_eval import draft_folder, draft_layers, smollm2_folder
    from gateway.backends.local_model import SMOLLM2_PACKAGE, resolve_model_folder

    torch.set_num_threads(1)
    large = smollm2_folder()
    small = (resolve_model_folder(None, SMOLLM2_PACKAGE, layers=str(args.layers))[0] if args.layers
             else draft_folder())
    tok = AutoTokenizer.from_pretrained(str(large))
    ids = tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    result: dict = {"layers_file": str(args.layers or draft_layers()), "tokens": args.tokens, "rounds": args.rounds,
                    "threads": 1, "dtypes": {}}
    for dtype in args.dtypes.split(","):
        models = {name: AutoModelForCausalLM.from_pretrained(str(folder), dtype=getattr(torch, dtype)).eval()
                  for name, folder in (("draft", small), ("smollm2", large))}
        for m in models.values():
            m.generation_config.pad_token_id = tok.pad_token_id
            decode_seconds(m, ids, 4)  # warm-up
        times: dict[str, list[tuple[float, float]]] = {n: [] for n in models}
        for _ in range(args.rounds):
            for name, m in models.items():
                times[name].append(decode_seconds(m, ids, args.tokens))
        per = {n: {"wall_ms_per_token": 1000 * statistics.median(w for w, _ in t) / args.tokens,
                   "cpu_ms_per_token": 1000 * statistics.median(c for _, c in t) / args.tokens}
               for n, t in times.items()}
        per["ratio_wall"] = per["smollm2"]["wall_ms_per_token"] / per["draft"]["wall_ms_per_token"]
        per["ratio_cpu"] = per["smollm2"]["cpu_ms_per_token"] / per["draft"]["cpu_ms_per_token"]
        result["dtypes"][dtype] = per
        print(f"{dtype}: SmolLM2 {per['smollm2']['wall_ms_per_token']:.1f} ms/token "
              f"({per['smollm2']['cpu_ms_per_token']:.1f} CPU), draft {per['draft']['wall_ms_per_token']:.1f} "
              f"({per['draft']['cpu_ms_per_token']:.1f} CPU): SmolLM2/draft {per['ratio_wall']:.2f}x wall, "
              f"{per['ratio_cpu']:.2f}x CPU", flush=True)
        del models
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
