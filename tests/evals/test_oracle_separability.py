"""``evals.oracle_separability``: the large model's teacher-forced margins against a position-by-position reference,
out-of-fold scores that never see their own item's labels, the ranking summary against a pairwise AUC, and the
whole measurement along the oracle's answers on the committed char-level zoo pair."""

from __future__ import annotations

import asyncio
import itertools

import pytest
import torch

from collab.features import signals_from_logits
from collab.labels import R2RSample
from collab.oracle import r2r_oracle
from collab.r2r import R2RStrategy
from evals import collab_tasks as tasks
from evals.collab_defaults import default_artifact
from evals.collab_train import prompt_ids
from evals.metrics import share_at_recall
from evals.oracle_separability import large_argmax_and_margin, out_of_fold, rank_summary, separability


@pytest.fixture(scope="module")
def sql_oracle(committed_zoo_pair):
    slm, llm = committed_zoo_pair
    examples = tasks.task_examples("sql", "test", 12)
    tok = slm.tokenizer
    prompts = [prompt_ids(tok, ex.prompt) for ex in examples]
    stops = sorted(slm.eos_ids | llm.eos_ids)

    def score(i: int, ids: list[int]) -> float:
        return tasks.check(examples[i], tok.decode(ids, skip_special_tokens=True))

    answers = asyncio.run(r2r_oracle(prompts, slm, llm, score=score, max_tokens=40, stop_ids=stops))
    return slm, llm, prompts, answers


def test_large_margin_equals_one_position_at_a_time(sql_oracle) -> None:
    _, llm, prompts, answers = sql_oracle
    for prompt, a in zip(prompts[:3], answers[:3], strict=True):
        top, margin = large_argmax_and_margin(llm, prompt, a)
        assert len(top) == len(margin) == len(a.ids) > 0
        for pos, sig in enumerate(a.signals):
            lps = torch.log_softmax(llm.next_logits(prompt + a.ids[:pos]), -1)
            assert top[pos] == int(lps.argmax())
            assert margin[pos] == pytest.approx(float(lps.max() - lps[sig.token_id]), abs=1e-4)
            assert margin[pos] >= 0.0


def _samples(seed: int, items: int = 10, per_item: int = 40) -> list[R2RSample]:
    """Synthetic positions whose label is the small model's doubt (top-1 logprob below log ½)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for ex, pos in itertools.product(range(items), range(per_item)):
        logits = torch.randn(32, generator=g) * float(torch.rand(1, generator=g) * 6)
        sig = signals_from_logits(logits, int(logits.argmax()))
        out.append(R2RSample(sig, int(float(sig.top[0]) < -0.69), ex, pos))
    return out


def test_out_of_fold_scores_learn_and_never_see_their_own_item() -> None:
    samples = _samples(0)
    vectors = torch.randn(32, 8, generator=torch.Generator().manual_seed(1))
    probs = out_of_fold(samples, 32, vectors, folds=5, epochs=40)
    labels = [s.label for s in samples]
    assert 0 < sum(labels) < len(labels)
    assert rank_summary(probs, labels)["auc"] > 0.9  # the rule is learnable from the other items
    # flipping one item's labels changes the routers of the other folds, never the one that scores that item
    flipped = [R2RSample(s.signals, 1 - s.label, s.example, s.position) if s.example == 3 else s for s in samples]
    again = out_of_fold(flipped, 32, vectors, folds=5, epochs=40)
    mine = [i for i, s in enumerate(samples) if s.example == 3]
    assert [again[i] for i in mine] == pytest.approx([probs[i] for i in mine])
    assert again != pytest.approx(probs)


def test_rank_summary_auc_is_the_pairwise_rate() -> None:
    scores = [0.9, 0.8, 0.8, 0.3, 0.2, 0.2, 0.1]
    labels = [1, 0, 1, 0, 1, 0, 0]
    pairs = [(p, n) for p, y in zip(scores, labels, strict=True) if y for n, z in zip(scores, labels, strict=True)
             if not z]
    pairwise = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    got = rank_summary(scores, labels)
    assert got["auc"] == pytest.approx(pairwise)
    assert got["share_at_recall_0.9"] == share_at_recall(scores, labels, 0.9)


def test_separability_along_the_oracle(sql_oracle) -> None:
    slm, llm, prompts, answers = sql_oracle
    router, _ = R2RStrategy.load_artifact(default_artifact("r2r", "sql"))
    got = separability(answers, prompts, llm, router, slm.model.get_input_embeddings().weight, folds=2)
    writers = [w for a in answers for w in a.writers]
    assert got["positions"] == len(writers)
    assert got["hand_over_share"] == writers.count("large") / len(writers) > 0
    assert 0.0 <= got["harmless_difference_share"] <= 1.0 - got["hand_over_share"]
    assert set(got["scores"]) == {"router", "router_refit", "router_refit_hidden", "small_confidence", "large_margin"}
    for row in got["scores"].values():
        assert 0.0 <= row["auc"] <= 1.0
        # catching more of the hand-overs never routes fewer positions, and never fewer than the hand-overs
        shares = [row[f"share_at_recall_{r:g}"] for r in (0.8, 0.9, 0.95)]
        assert shares == sorted(shares) and shares[-1] >= 0.95 * got["hand_over_share"] - 1e-9
    # a hand-over is a position where the large model's top token is not the small model's: its margin is > 0
    assert got["scores"]["large_margin"]["auc"] > 0.5


def test_separability_needs_both_kinds_of_position(sql_oracle) -> None:
    slm, llm, prompts, answers = sql_oracle
    router, _ = R2RStrategy.load_artifact(default_artifact("r2r", "sql"))
    kept = [(p, a) for p, a in zip(prompts, answers, strict=True) if "large" not in a.writers]
    assert kept
    with pytest.raises(ValueError, match="both"):
        separability([a for _, a in kept], [p for p, _ in kept], llm, router,
                     slm.model.get_input_embeddings().weight)
