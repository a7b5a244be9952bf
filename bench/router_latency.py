"""Decision latency per router: p50 / p99 of `decide()` on single queries (a benchmark, not a test).

Each router is fitted on a RouterBench sample; then every timed query is a fresh `RouteQuery` (no cached
features), so the time includes feature extraction — the sentence embedding for routers that use one (the
embedding cache is disabled for the timed queries by giving each a unique suffix). Targets on 2 cores:
≤ 1 ms p50 without embeddings, ≤ 15 ms with.

Usage: python bench/router_latency.py [--data ../shared/data/routerbench] [--routers a,b] [--n 200] [--train 500]
Left out: batching, concurrency, gateway overhead.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from evals.replay_data import load_any
from routers.base import RouteQuery
from routers.registry import default_router_registry

EMBEDDING_FREE = {"random", "cheapest", "best", "ellie-heuristic"}
DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "routerbench"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--routers", default=None)
    p.add_argument("--n", type=int, default=200, help="timed decisions per router")
    p.add_argument("--train", type=int, default=500, help="training rows")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    reg = default_router_registry()
    names = args.routers.split(",") if args.routers else reg.names()
    sm = load_any(args.data).dropna("any")
    rng = np.random.default_rng(0)
    rows = rng.permutation(sm.n)
    train = sm.subset(rows[: args.train])
    test_prompts = [sm.prompts[i] for i in rows[args.train : args.train + args.n]]
    out = {}
    for name in names:
        router = reg.create(name, seed=0).fit(train)
        router.decide(RouteQuery(prompt="warm-up query"))
        times = []
        for k, text in enumerate(test_prompts):
            q = RouteQuery(prompt=f"{text} [{name}-{k}-{time.time_ns()}]")  # unique → no embedding cache hit
            t0 = time.perf_counter()
            router.decide(q)
            times.append((time.perf_counter() - t0) * 1000)
        t = np.array(times)
        target = 1.0 if name in EMBEDDING_FREE else 15.0
        out[name] = {"p50_ms": float(np.percentile(t, 50)), "p99_ms": float(np.percentile(t, 99)), "target_p50_ms": target}
        print(f"{name:<18} p50 {out[name]['p50_ms']:7.3f} ms  p99 {out[name]['p99_ms']:7.3f} ms  "
              f"(target p50 ≤ {target:g} ms){'' if out[name]['p50_ms'] <= target else '  MISSED'}", file=sys.stderr)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
