"""``collab.oracle``: the rule, the lockstep batched oracle against a one-item-at-a-time reference written out here,
the bounds it must keep and its labels, on the committed char-level zoo pair (small / large, sql test items)."""

from __future__ import annotations

import asyncio

import pytest
import torch

from collab.inproc import HFModel
from collab.oracle import oracle_labels, plan_step, r2r_oracle
from evals import collab_tasks as tasks
from evals.collab_oracle import r2r_summary
from evals.zoo.tokenizer import END_ID, decode, encode

N, BUDGET = 8, 60


@pytest.fixture(scope="module")
def items() -> tuple[list, list[list[int]]]:
    examples = tasks.task_examples("sql", "test", N)
    return examples, [encode(ex.prompt) for ex in examples]


def test_plan_step_rule() -> None:
    assert plan_step([5, 6, 7], 1.0, 5, None, None) == (5, "small", [6, 7], 1.0)
    assert plan_step([5, 6], 0.0, 9, [4], 0.0) == (9, "small", [4], 0.0)  # ties keep the draft's token
    assert plan_step([5, 6], 0.0, 9, [4], 1.0) == (9, "small", [4], 1.0)
    assert plan_step([5, 6], 1.0, 9, [4], 0.5) == (5, "large", [6], 1.0)
    with pytest.raises(ValueError, match="continuation"):
        plan_step([5], 1.0, 9, None, None)


def reference(prompt: list[int], slm: HFModel, llm: HFModel, score, budget: int) -> tuple[list[int], list[str]]:
    """The oracle for one prompt, one complete_ids call per continuation, no batching."""

    def greedy(ids: list[int], n: int) -> list[int]:
        return asyncio.run(llm.complete_ids(ids, n, stop_ids=[END_ID])).token_ids if n > 0 else []

    ids: list[int] = []
    writers: list[str] = []
    plan = greedy(prompt, budget)
    while plan:
        d = int(torch.argmax(slm.next_logits(prompt + ids)))
        if d == plan[0]:
            ids, writers, plan = ids + [d], writers + ["small"], plan[1:]
        else:
            cont = greedy(prompt + ids + [d], budget - len(ids) - 1) if d != END_ID else []
            if score(ids + [d] + cont) >= score(ids + plan):
                ids, writers, plan = ids + [d], writers + ["small"], cont
            else:
                ids, writers, plan = ids + [plan[0]], writers + ["large"], plan[1:]
        if ids[-1] == END_ID or len(ids) >= budget:
            break
    return ids, writers


def test_lockstep_oracle_matches_the_reference_and_keeps_the_large_models_score(committed_zoo_pair, items) -> None:
    slm, llm = committed_zoo_pair
    examples, prompts = items

    def score(i: int, ids: list[int]) -> float:
        return tasks.check(examples[i], decode(ids))

    got = asyncio.run(r2r_oracle(prompts, slm, llm, score=score, max_tokens=BUDGET, stop_ids=[END_ID], batch=4))
    for i, answer in enumerate(got):
        one = reference(prompts[i], slm, llm, lambda ids, i=i: score(i, ids), BUDGET)
        assert (answer.ids, answer.writers) == one
        assert answer.score == score(i, answer.ids) >= answer.large_score
    samples = oracle_labels(got)
    assert len(samples) == sum(len(a.ids) for a in got)
    for s in samples:
        answer = got[s.example]
        assert s.label == (answer.writers[s.position] == "large")
        assert (s.signals.token_id == answer.ids[s.position]) == (s.label == 0)  # the draft's token stood or not
    first = got[0]  # the small model's hidden state rides with its signals (a router with --hidden reads it)
    for pos in (0, len(first.ids) - 1):
        hidden = slm.next_state(prompts[0] + first.ids[:pos])[1]
        assert torch.allclose(first.signals[pos].hidden, hidden, atol=1e-5)
    summary = r2r_summary(got, [END_ID])
    assert summary["accuracy"] >= summary["large_accuracy"]
    assert summary["tokens"] == sum(len([t for t in a.ids if t != END_ID]) for a in got)


def test_exact_match_score_reproduces_the_large_answer_handing_over_every_difference(committed_zoo_pair, items) -> None:
    """When only the large model's own answer scores, the oracle writes that answer, and the large model writes
    exactly the positions where the small model's teacher-forced top token differs (R2R's ``different`` label)."""
    slm, llm = committed_zoo_pair
    _, prompts = items
    own = [asyncio.run(llm.complete_ids(p, BUDGET, stop_ids=[END_ID])).token_ids for p in prompts]
    got = asyncio.run(r2r_oracle(prompts, slm, llm, score=lambda i, ids: float(ids == own[i]), max_tokens=BUDGET,
                                 stop_ids=[END_ID]))
    differ = 0
    for p, answer, mine in zip(prompts, got, own, strict=True):
        assert answer.ids == mine
        flags = [int(torch.argmax(slm.next_logits(p + mine[:j]))) != mine[j] for j in range(len(mine))]
        assert answer.writers == ["large" if f else "small" for f in flags]
        differ += sum(flags)
    assert differ > 0  # the pair differs somewhere, so the check above saw both writers
