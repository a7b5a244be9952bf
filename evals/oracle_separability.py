"""How well a router's signals find R2R's oracle hand-overs: the ranking a router must reach to meet its mark.

Along the oracle's answers (``collab.oracle.r2r_oracle``) every position is a hand-over (the large model wrote it: the
small model's token would have lowered the checker's score) or not — and of the others, some are *harmless
differences* (the small model's top token is not the large model's, yet it stood). A router of R2R routes the
positions whose score passes τ; this module asks, of a few scores, how many positions τ must route to catch a given
share of the hand-overs (:func:`evals.metrics.share_at_recall`) and the ranking AUC. The scores:

- ``router``: the router file's p (the committed one by default), as it decodes with it;
- ``router_refit``: a router of the same kind (:func:`evals.collab_train.train_r2r`, token table from the small
  model's input embeddings, top-k entropy) trained on these very labels, scored out of fold (items split into
  ``folds``): the same features with labels from the same distribution, no shift;
- ``router_refit_hidden``: the same with the small model's last hidden state as well (R2R's own router input;
  where the small model gives one, i.e. in process);
- ``small_confidence``: minus the small model's top-1 logprob (the simplest router);
- ``large_margin``: the large model's top logprob minus its logprob of the small model's token, teacher-forced along
  the answer — what a router that saw the large model's logits at every position (every token verified) would have.

With the oracle's large share as the floor, the gap between it and ``share_at_recall`` is what the signals cost.
What it leaves out: decoding with the scores (``tandem eval collab`` measures routers end to end) and the Arbitrage
oracle (its steps are few; ``evals.collab_oracle.arbitrage_oracle`` counts them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from sklearn.metrics import roc_auc_score

from collab.labels import R2RSample
from collab.oracle import OracleAnswer, oracle_labels
from collab.protocol import SequenceScorer
from collab.r2r import R2RRouter
from evals.collab_train import train_r2r
from evals.metrics import share_at_recall

RECALLS = (0.8, 0.9, 0.95)


def large_argmax_and_margin(large: SequenceScorer, prompt: list[int], answer: OracleAnswer
                            ) -> tuple[list[int], list[float]]:
    """Teacher-forced along ``prompt + answer.ids``: the large model's top token at each answer position and its
    logprob margin over the small model's token there (0 where they agree)."""
    if not answer.ids:
        return [], []
    ids = list(prompt) + answer.ids
    logits = large.forward_all(torch.tensor([ids[:-1]]))[0][0]
    lps = torch.log_softmax(logits[len(prompt) - 1:].float(), -1)
    drafts = torch.tensor([s.token_id for s in answer.signals])
    top = lps.max(-1)
    margin = top.values - lps.gather(1, drafts[:, None]).squeeze(1)
    return top.indices.tolist(), margin.tolist()


def out_of_fold(samples: Sequence[R2RSample], vocab_size: int, token_vectors: torch.Tensor, *, folds: int = 5,
                seed: int = 0, epochs: int = 30, hidden_size: int = 0) -> list[float]:
    """Each sample's p from a router trained on the other folds' items (items dealt round-robin after a seeded
    shuffle, so an item's positions stay in one fold); ``hidden_size`` > 0 feeds the signals' hidden states too."""
    items = sorted({s.example for s in samples})
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed)).tolist()
    fold_of = {items[j]: n % folds for n, j in enumerate(order)}
    probs = [0.0] * len(samples)
    for f in range(folds):
        held = [i for i, s in enumerate(samples) if fold_of[s.example] == f]
        train = [s for s in samples if fold_of[s.example] != f]
        if not held or not any(s.label for s in train):
            continue
        router, _, _ = train_r2r(train, vocab_size, token_vectors=token_vectors, entropy="topk", epochs=epochs,
                                 val_frac=0.0, seed=seed, hidden_size=hidden_size)
        for i, v in zip(held, router.probs([samples[i].signals for i in held]), strict=True):
            probs[i] = v
    return probs


def rank_summary(scores: Sequence[float], labels: Sequence[int], recalls: Sequence[float] = RECALLS
                 ) -> dict[str, float]:
    """The ranking AUC of ``scores`` for ``labels`` and the share of positions routed at each recall."""
    out = {"auc": float(roc_auc_score(list(labels), list(scores)))}
    for r in recalls:
        out[f"share_at_recall_{r:g}"] = share_at_recall(scores, labels, r)
    return out


def separability(answers: Sequence[OracleAnswer], prompts: Sequence[list[int]], large: SequenceScorer,
                 router: R2RRouter, token_vectors: torch.Tensor, *, folds: int = 5, seed: int = 0
                 ) -> dict[str, Any]:
    """The module docstring's scores along the oracle's ``answers`` (one per prompt): position counts and, per
    score, :func:`rank_summary` for the hand-overs."""
    samples = oracle_labels(answers)
    labels = [s.label for s in samples]
    if not samples or len(set(labels)) < 2:
        raise ValueError("the oracle's answers need both hand-overs and kept positions to rank them")
    differs, margins = [], []
    for prompt, a in zip(prompts, answers, strict=True):
        top, margin = large_argmax_and_margin(large, prompt, a)
        differs += [t != s.token_id for t, s in zip(top, a.signals, strict=True)]
        margins += margin
    vocab = router.config["vocab_size"]
    scores = {"router": router.probs([s.signals for s in samples]),
              "router_refit": out_of_fold(samples, vocab, token_vectors, folds=folds, seed=seed)}
    hidden = samples[0].signals.hidden
    if hidden is not None:
        scores["router_refit_hidden"] = out_of_fold(samples, vocab, token_vectors, folds=folds, seed=seed,
                                                    hidden_size=hidden.numel())
    scores |= {"small_confidence": [-float(s.signals.top[0]) for s in samples], "large_margin": margins}
    n = len(samples)
    return {"positions": n, "hand_over_share": sum(labels) / n,
            "harmless_difference_share": sum(d and not y for d, y in zip(differs, labels, strict=True)) / n,
            "scores": {name: rank_summary(v, labels) for name, v in scores.items()}}
