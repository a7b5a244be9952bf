"""Semantic response cache: how often a paraphrase is served, and how often a different question is (false hits).

The data (``tests/gateway/data/paraphrases.jsonl``, one ``{"a", "b", "same_answer"}`` per line) holds pairs of
questions: paraphrases with the same answer ("What is the capital of France?" / "Which city is the capital of
France?") and near-duplicates whose answers differ ("… of France?" / "… of Germany?", "17 times 23" / "17 times 24",
"ascending" / "descending"). Every question is embedded exactly as the gateway embeds a request's last user message
(``routers.embedder.Embedder.embed_one``, all-MiniLM-L6-v2), and for each threshold it reports:

* **pairwise** — the false-hit rate (different-answer pairs whose cosine reaches the threshold: the cache would
  serve one's answer to the other) and the hit rate (same-answer pairs that reach it);
* **as a cache** — every ``a`` question stored in one group, every ``b`` asked: the share of ``b`` answered from the
  cache (:func:`gateway.semantic_cache.best_match`, the gateway's rule) and the share answered with another
  question's answer. Answers are identified by joining same-answer pairs (a question never paired keeps its own).

Run from the repository root: ``python -m bench.semantic_cache [--json]``. What it leaves out: conversations (the
gateway matches everything before the last user message exactly), latency (``bench/router_latency.py`` times the
embedder), and any data but this hand-written set of short English questions.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.paths import cache_dir  # noqa: E402
from gateway.semantic_cache import best_match  # noqa: E402
from routers.embedder import Embedder  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA = REPO_ROOT / "tests" / "gateway" / "data" / "paraphrases.jsonl"
THRESHOLDS = (0.80, 0.85, 0.90, 0.925, 0.95, 0.975)


def load_pairs(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def answer_ids(pairs: list[dict[str, Any]]) -> dict[str, int]:
    """Question → answer id: same-answer pairs joined (union-find), every other question its own."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for p in pairs:
        find(p["a"]), find(p["b"])
        if p["same_answer"]:
            parent[find(p["a"])] = find(p["b"])
    roots = sorted({find(q) for q in parent})
    index = {r: i for i, r in enumerate(roots)}
    return {q: index[find(q)] for q in parent}


def measure(pairs: list[dict[str, Any]], vec: dict[str, np.ndarray], thresholds=THRESHOLDS) -> list[dict[str, Any]]:
    """The figures of the module docstring, one row per threshold."""
    ids = answer_ids(pairs)
    same = [p for p in pairs if p["same_answer"]]
    diff = [p for p in pairs if not p["same_answer"]]
    cos = {id(p): float(vec[p["a"]] @ vec[p["b"]]) for p in pairs}
    stored = sorted({p["a"] for p in pairs})
    matrix = np.stack([vec[q] for q in stored])
    rows = []
    for t in thresholds:
        row: dict[str, Any] = {"threshold": t,
                               "pair_false_hit_rate": sum(cos[id(p)] >= t for p in diff) / len(diff),
                               "pair_hit_rate": sum(cos[id(p)] >= t for p in same) / len(same),
                               "pairs_different": len(diff), "pairs_same": len(same)}
        for name, group in (("same", same), ("different", diff)):
            served = wrong = 0
            for p in group:
                found = best_match(vec[p["b"]], matrix, t)
                if found is not None:
                    served += 1
                    wrong += ids[stored[found[0]]] != ids[p["b"]]
            row[f"cache_{name}_served"] = served / len(group)
            row[f"cache_{name}_wrong"] = wrong / len(group)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DATA, help="paraphrase pairs (JSONL)")
    p.add_argument("--thresholds", type=float, nargs="+", default=list(THRESHOLDS))
    p.add_argument("--json", action="store_true", help="end with one JSON line of all figures")
    a = p.parse_args(argv)
    pairs = load_pairs(a.data)
    embedder = Embedder(cache_dir=cache_dir())
    texts = sorted({q for pr in pairs for q in (pr["a"], pr["b"])})
    vec = {q: embedder.embed_one(q) for q in texts}  # one at a time, as the gateway embeds a request
    rows = measure(pairs, vec, a.thresholds)
    print(f"{len(pairs)} pairs ({rows[0]['pairs_same']} same answer, {rows[0]['pairs_different']} different), "
          f"{len(texts)} questions; model all-MiniLM-L6-v2 ({embedder.precision})")
    print(f"{'threshold':>9} | {'pairs: false hits':>17} {'paraphrase hits':>15} | "
          f"{'cache: paraphrase served':>24} {'wrong':>6} | {'different served':>16} {'wrong':>6}")
    for r in rows:
        print(f"{r['threshold']:>9.3f} | {r['pair_false_hit_rate']:>17.1%} {r['pair_hit_rate']:>15.1%} | "
              f"{r['cache_same_served']:>24.1%} {r['cache_same_wrong']:>6.1%} | "
              f"{r['cache_different_served']:>16.1%} {r['cache_different_wrong']:>6.1%}")
    if a.json:
        print(json.dumps({"rows": rows, "pairs": len(pairs), "questions": len(texts),
                          "precision": embedder.precision}))


if __name__ == "__main__":
    main()
