"""EllieSQL-style complexity routing on real text-to-SQL questions, scored against real complexity labels.

Labels: BIRD mini-dev's `difficulty` (simple / moderate / challenging) and Spider dev's hardness computed from the
gold SQL by Spider's rules (`evals.spider_hardness.spider_hardness`: easy / medium / hard / extra). The router sees only
what it would see at request time — the question (plus BIRD's evidence text) and the dataset name — never the SQL.
It is a multinomial logistic regression on TF-IDF ⊕ sentence embedding (`routers.calibrated.RichFeatures`) ⊕ the
standardised hand features of `routers.features.hand_features` (lengths, digits, keyword counts) — or on the hand
features alone: the feature set and C are chosen together by inner cross-validation on the training split only. Each dataset is split once (seeded, stratified) into train and
held-out parts; reported per dataset on the held-out part: accuracy, macro-F1, accuracy within one level, and the
majority-class and question-length baselines.

    python -m evals.sql_complexity [--data ../shared/data] [--test-share 0.2] [--seed 0] [--json]

Left out: execution-based tier labels (which tier's SQL runs correctly) — no tier runs are recorded here, so TEP
(`evals.metrics.tep`) is not computed by this script.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evals.spider_hardness import LEVELS, spider_hardness
from gateway.paths import cache_dir
from routers.base import RouteQuery
from routers.calibrated import C_GRID, RichFeatures
from routers.embedder import Embedder, embeddings
from routers.features import hand_matrix

BIRD_LEVELS = ("simple", "moderate", "challenging")


def load_spider(data: Path) -> tuple[list[str], list[int]]:
    rows = json.loads((data / "spider" / "dev.json").read_text())
    return [r["question"] for r in rows], [LEVELS.index(spider_hardness(r["query"])) for r in rows]


def load_bird(data: Path) -> tuple[list[str], list[int]]:
    rows = json.loads((data / "bird_minidev" / "mini_dev_sqlite.json").read_text())
    texts = [f"{r['question']}\nEvidence: {r.get('evidence') or ''}" for r in rows]
    return texts, [BIRD_LEVELS.index(r["difficulty"]) for r in rows]


def within_one(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.abs(pred - y) <= 1))


def macro_f1(pred: np.ndarray, y: np.ndarray, k: int) -> float:
    f1s = []
    for c in range(k):
        tp = np.sum((pred == c) & (y == c))
        p, r = np.sum(pred == c), np.sum(y == c)
        if r == 0:
            continue
        f1s.append(0.0 if tp == 0 else 2 * tp / (p + r))
    return float(np.mean(f1s)) if f1s else 0.0


def fit_classifier(xs: dict[str, Any], y: np.ndarray, seed: int, folds: int = 3) -> tuple[Any, str, float]:
    """Multinomial LR; the feature set (a key of `xs`) and C by inner-CV accuracy on the training split only."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    cv = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    best: tuple[float, str, float] = (-1.0, next(iter(xs)), C_GRID[0])
    for name, x in xs.items():
        for c in C_GRID:
            acc = float(np.mean([np.mean(LogisticRegression(C=c, max_iter=500).fit(x[tr], y[tr]).predict(x[te])
                                         == y[te]) for tr, te in cv]))
            if acc > best[0]:
                best = (acc, name, c)
    _, name, c = best
    return LogisticRegression(C=c, max_iter=500).fit(xs[name], y), name, c


def evaluate(texts: Sequence[str], y: Sequence[int], levels: Sequence[str], test_share: float, seed: int
             ) -> dict[str, Any]:
    from sklearn.model_selection import train_test_split

    yy = np.asarray(y)
    idx = np.arange(len(yy))
    tr, te = train_test_split(idx, test_size=test_share, random_state=seed, stratify=yy)
    qs = [RouteQuery(prompt=t) for t in texts]
    import scipy.sparse as sp

    feats = RichFeatures().fit([qs[i] for i in tr])
    embedder = Embedder(cache_dir=cache_dir())
    hand = hand_matrix(qs)
    mu, sd = hand[tr].mean(axis=0), hand[tr].std(axis=0) + 1e-9
    z = (hand - mu) / sd

    def x_of(rows: np.ndarray) -> dict[str, Any]:
        return {"rich": sp.hstack([feats.transform([qs[i] for i in rows], lambda q: embeddings(q, embedder)), sp.csr_matrix(z[rows])]).tocsr(),
                "hand": z[rows]}

    clf, fset, c = fit_classifier(x_of(tr), yy[tr], seed)
    pred = clf.predict(x_of(te)[fset])
    majority = int(np.bincount(yy[tr]).argmax())
    # length baseline: thresholds on question length that reproduce the training label shares
    lens = np.array([len(t) for t in texts], dtype=float)
    cdf = np.cumsum(np.bincount(yy[tr], minlength=len(levels)))[:-1] / len(tr)
    cuts = np.quantile(lens[tr], cdf)
    len_pred = np.searchsorted(cuts, lens[te], side="left")
    return {
        "n_train": len(tr), "n_test": len(te), "levels": list(levels), "C": c, "features": fset,
        "label_share_test": (np.bincount(yy[te], minlength=len(levels)) / len(te)).round(3).tolist(),
        "accuracy": float(np.mean(pred == yy[te])), "macro_f1": macro_f1(pred, yy[te], len(levels)),
        "within_one": within_one(pred, yy[te]),
        "majority_accuracy": float(np.mean(yy[te] == majority)),
        "length_accuracy": float(np.mean(len_pred == yy[te])),
        "length_macro_f1": macro_f1(len_pred, yy[te], len(levels)),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evals.sql_complexity", description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--test-share", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    data = Path(args.data)
    out = {}
    for name, loader, levels in (("spider", load_spider, LEVELS), ("bird", load_bird, BIRD_LEVELS)):
        texts, y = loader(data)
        out[name] = evaluate(texts, y, levels, args.test_share, args.seed)
        r = out[name]
        print(f"{name:<7} n={r['n_train']}+{r['n_test']}  acc {r['accuracy']:.3f}  macro-F1 {r['macro_f1']:.3f}  "
              f"within-1 {r['within_one']:.3f}  | majority acc {r['majority_accuracy']:.3f}  "
              f"length acc {r['length_accuracy']:.3f} (F1 {r['length_macro_f1']:.3f})  features={r['features']} C={r['C']}")
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
