"""Cross-validation folds that keep near-duplicate prompts together, for replay and for calibration at train time.

`near_duplicate_groups` links prompts that are the same text, or one category's texts that differ in a word or two
(Winogrande's twin sentences), and `folds_for` deals whole groups to folds, so a router is never scored on the twin of
a prompt it was fitted on. What it leaves out: fitting and scoring (``evals.replay``, ``evals.router_training``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np


def near_duplicate_groups(texts: Sequence[str], categories: Sequence[str] | None = None,
                          threshold: float = 0.6, common_df: float = 0.3) -> np.ndarray:
    """Group id per text: identical texts (after lower-casing and collapsing whitespace) share a group, and so do
    texts of one category whose word sets have Jaccard similarity ≥ `threshold` once the category's template words
    (in more than `common_df` of its texts, e.g. Winogrande's answer instructions) are removed — Winogrande's twin
    sentences differ by one word. Groups are the connected components of those links."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    n = len(texts)
    norm = [" ".join(t.lower().split()) for t in texts]
    cats = list(categories) if categories is not None else [""] * n
    rows: list[int] = []
    cols: list[int] = []
    first: dict[str, int] = {}
    for i, t in enumerate(norm):
        j = first.setdefault(t, i)
        if j != i:
            rows.append(i), cols.append(j)
    for cat in dict.fromkeys(cats):
        idx = [i for i, c in enumerate(cats) if c == cat]
        words = [set(re.findall(r"\w+", norm[i])) for i in idx]
        df: dict[str, int] = {}
        for ws in words:
            for w in ws:
                df[w] = df.get(w, 0) + 1
        kept = [w for w, d in df.items() if d <= max(2, common_df * len(idx))]  # a pair's words always count
        vocab = {w: k for k, w in enumerate(kept)}
        data = [(r, vocab[w]) for r, ws in enumerate(words) for w in ws if w in vocab]
        if not data:
            continue
        r_, c_ = zip(*data, strict=True)
        x = sp.csr_matrix((np.ones(len(data)), (r_, c_)), shape=(len(idx), len(vocab)))
        size = np.asarray(x.sum(axis=1)).ravel()
        inter = (x @ x.T).tocoo()
        union = size[inter.row] + size[inter.col] - inter.data
        hit = (inter.row < inter.col) & (inter.data >= threshold * np.maximum(union, 1))
        rows += [idx[a] for a in inter.row[hit]]
        cols += [idx[b] for b in inter.col[hit]]
    graph = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def folds_for(n: int, k: int, seed: int, groups: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled k folds (seeded); with `groups`, every group lies in one fold (groups dealt round-robin in a
    seeded random order, so fold sizes stay within a group's size of each other)."""
    from sklearn.model_selection import KFold

    if groups is None:
        return [(tr, te) for tr, te in KFold(k, shuffle=True, random_state=seed).split(np.arange(n))]
    uniq, inv = np.unique(np.asarray(groups), return_inverse=True)
    rank = np.empty(len(uniq), dtype=int)
    rank[np.random.default_rng(seed).permutation(len(uniq))] = np.arange(len(uniq))
    fold = rank[inv] % k
    return [(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in range(k)]
