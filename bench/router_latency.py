"""Decision latency per router: p50 / p99 of `decide()` on single queries (a benchmark, not a test).

Each router is fitted on a RouterBench sample; then every timed query is a fresh `RouteQuery` (no cached
features), so the time includes feature extraction — the sentence embedding for routers that use one (the
embedding cache is disabled for the timed queries by giving each a unique suffix), and a miss costs one forward
pass of the embedding model (TorchScript-traced for single texts, built by the warm-up miss) — no SQLite (misses
are persisted in bulk later). Targets on 2 cores: ≤ 1 ms p50
without embeddings, ≤ 15 ms with. Reported: wall-clock p50 / p99 and the process CPU time per decision (p50), which
stays meaningful when the machine is shared (wall time then includes waiting for a core). A cache-hit p50 (the same
queries again) is reported too.

Threads: one intra-op torch thread by default (`--threads`). A single query's matmuls are too small to split well,
and on a shared machine a second OpenMP thread waiting for a busy core slows them down many times over (compare
`--threads 1` with `--threads 2`).

Usage: python bench/router_latency.py [--data ../shared/data/routerbench] [--routers a,b] [--n 200] [--train 500]
       [--router-option KEY=VALUE ...]
Left out: batching, concurrency, gateway overhead.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from evals.replay import parse_options, router_options
from evals.replay_data import load_any
from gateway.paths import cache_dir
from routers.base import RouteQuery
from routers.embedder import Embedder
from routers.registry import default_router_registry

EMBEDDING_FREE = {"random", "cheapest", "best", "ellie-heuristic"}
DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "routerbench"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--routers", default=None)
    p.add_argument("--n", type=int, default=200, help="timed decisions per router")
    p.add_argument("--train", type=int, default=500, help="training rows")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--router-option", action="append", metavar="KEY=VALUE",
                   help="constructor argument for every router that takes it (as `tandem eval replay`)")
    args = p.parse_args(argv)
    options = parse_options(args.router_option)
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
    embedder = Embedder(cache_dir=cache_dir())  # shared, as the gateway's route table shares one
    for name in names:
        router = reg.create(name, seed=0, **router_options(reg.get(name), options))
        router.embedder = embedder
        router.fit(train)
        router.decide(RouteQuery(prompt=f"warm-up query {time.time_ns()}"))  # a miss: builds the traced embedder
        times, cpu, hits = [], [], []
        texts = [f"{text} [{name}-{k}-{time.time_ns()}]" for k, text in enumerate(test_prompts)]  # unique: misses
        for text in texts:
            q = RouteQuery(prompt=text)
            t0, c0 = time.perf_counter(), time.process_time()
            router.decide(q)
            times.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
        for text in texts:  # the same texts again: in-memory cache hits
            q = RouteQuery(prompt=text)
            t0 = time.perf_counter()
            router.decide(q)
            hits.append((time.perf_counter() - t0) * 1000)
        t = np.array(times)
        target = 1.0 if name in EMBEDDING_FREE else 15.0
        out[name] = {"p50_ms": float(np.percentile(t, 50)), "p99_ms": float(np.percentile(t, 99)),
                     "cpu_p50_ms": float(np.percentile(cpu, 50)), "hit_p50_ms": float(np.percentile(hits, 50)),
                     "target_p50_ms": target}
        r = out[name]
        print(f"{name:<18} p50 {r['p50_ms']:8.3f} ms  p99 {r['p99_ms']:8.3f} ms  cpu p50 {r['cpu_p50_ms']:8.3f} ms  "
              f"cache-hit p50 {r['hit_p50_ms']:7.3f} ms  (target p50 ≤ {target:g} ms)"
              f"{'' if r['p50_ms'] <= target else '  MISSED'}", file=sys.stderr)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
