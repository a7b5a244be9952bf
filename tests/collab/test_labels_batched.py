"""Batched labelling: ``HFModel.greedy_batch`` writes the tokens of one greedy ``complete_ids`` call per prompt (shared
prefix, ragged prompts, per-row budgets, stop tokens), and ``r2r_labels`` gives the same samples batched and one call
at a time; the continuation budget rule with ``slack``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from collab.inproc import HFModel
from collab.labels import BatchGreedy, _cont_budget, greedy_many, r2r_labels, r2r_labels_along
from evals.zoo.tokenizer import END_ID, encode


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory, zoo_tokenizer_dir: Path) -> HFModel:
    from evals.zoo.llama import make_llama

    d = make_llama(tmp_path_factory.mktemp("large"), layers=3, hidden=128, heads=4, seed=1,
                   tokenizer_dir=zoo_tokenizer_dir)
    return HFModel("large", d)


def _one_by_one(model: HFModel, prompts: list[list[int]], budgets: list[int], stops: list[int]) -> list[list[int]]:
    return [asyncio.run(model.complete_ids(p, b, stop_ids=stops)).token_ids for p, b in zip(prompts, budgets)]


def test_greedy_batch_equals_one_call_per_prompt(large: HFModel) -> None:
    base = encode("12+34=")
    prompts = [base, base + encode("4"), base + encode("46;"), encode("9*9="), base + encode("x")]
    budgets = [7, 3, 12, 5, 0]
    got = large.greedy_batch(prompts, budgets, [END_ID])
    assert got == _one_by_one(large, prompts, [max(b, 0) for b in budgets], [END_ID])[:4] + [[]]
    assert [len(g) <= b for g, b in zip(got, budgets)] == [True] * 5
    # a shared prefix that covers a whole prompt still leaves that row one token of its own
    same = [base, base, base + encode("5")]
    assert large.greedy_batch(same, [6, 6, 6]) == _one_by_one(large, same, [6, 6, 6], [])


def test_greedy_batch_stops_at_a_stop_token_and_keeps_it(large: HFModel) -> None:
    prompt = encode("3+4=")
    free = large.greedy_batch([prompt], [10])[0]
    stop = free[2]  # the third token it writes, made a stop token
    got = large.greedy_batch([prompt, encode("5+5=")], [10, 10], [stop])
    assert got[0] == free[: free.index(stop) + 1]
    assert got == _one_by_one(large, [prompt, encode("5+5=")], [10, 10], [stop])


def test_greedy_many_falls_back_to_complete_ids(large: HFModel) -> None:
    class CallsOnly:  # a model without greedy_batch (e.g. a remote one)
        name = "large"

        async def complete_ids(self, ids, max_tokens, **kw):
            return await large.complete_ids(ids, max_tokens, **kw)

    assert isinstance(large, BatchGreedy) and not isinstance(CallsOnly(), BatchGreedy)
    prompts, budgets = [encode("1+2="), encode("7-1=")], [6, 4]
    assert asyncio.run(greedy_many(CallsOnly(), prompts, budgets, [END_ID])) == \
        asyncio.run(greedy_many(large, prompts, budgets, [END_ID], batch=8))


def test_r2r_labels_batched_equal_one_call_at_a_time(tiny_model_dir: Path, large: HFModel) -> None:
    small = HFModel("small", tiny_model_dir)
    examples = [{"prompt": p} for p in ("1+1=", "9-3=", "12*2=", "7+8=")]
    prompts = [encode(e["prompt"]) for e in examples]

    def outcome(ex, ids):
        return tuple(ids[:6])

    def run(batch: int, slack: int | None = None):
        return asyncio.run(r2r_labels(examples, prompts, small, large, outcome=outcome, max_tokens=10,
                                      stop_ids=[END_ID], batch=batch, slack=slack))

    one, many = run(1), run(3)
    assert [(s.example, s.position, s.label, s.signals.token_id) for s in one] == \
        [(s.example, s.position, s.label, s.signals.token_id) for s in many]
    for a, b in zip(one, many):
        assert torch.allclose(a.signals.top, b.signals.top) and a.signals.entropy == pytest.approx(b.signals.entropy)
    assert any(s.label for s in one)
    # slack 0: a continuation stops where the large model's own answer stopped (here the tiny models' answers
    # run to the budget, so the budgets and the labels stay the same)
    assert [s.label for s in run(3, slack=0)] == [s.label for s in one]


def test_labels_along_the_large_models_own_answers_are_its_labels(tiny_model_dir: Path, large: HFModel) -> None:
    small = HFModel("small", tiny_model_dir)
    examples = [{"prompt": p} for p in ("3+5=", "8-2=", "11*3=")]
    prompts = [encode(e["prompt"]) for e in examples]

    def outcome(ex, ids):
        return tuple(ids[:5])

    kw = {"outcome": outcome, "max_tokens": 9, "stop_ids": [END_ID], "batch": 4, "slack": 2}
    own = asyncio.run(r2r_labels(examples, prompts, small, large, **kw))
    answers = [asyncio.run(large.complete_ids(p, 9, stop_ids=[END_ID])).token_ids for p in prompts]
    along = asyncio.run(r2r_labels_along(examples, prompts, answers, small, large, **kw))
    assert [(s.example, s.position, s.label) for s in along] == [(s.example, s.position, s.label) for s in own]
    assert any(s.label for s in own)
    # along another answer (the small model's own) the large model's branch is continued too: positions where
    # the two models pick the same token are 0, and every label is the outcome test of both branches
    mine = [asyncio.run(small.complete_ids(p, 9, stop_ids=[END_ID])).token_ids for p in prompts]
    got = asyncio.run(r2r_labels_along(examples, prompts, mine, small, large, **kw))
    assert [(s.example, s.position) for s in got] == [(e, i) for e, a in enumerate(mine) for i in range(len(a))]
    compared = 0
    for s in got:
        answer = mine[s.example]
        prefix = prompts[s.example] + answer[:s.position]
        l_tok = int(torch.argmax(large.next_logits(prefix)))
        if s.signals.token_id == l_tok:
            assert s.label == 0
            continue
        budget = _cont_budget(9, len(answer), s.position, 2)
        ends = [outcome(None, answer[:s.position] + [tok] + ([] if tok == END_ID else asyncio.run(
            large.complete_ids(prefix + [tok], budget, stop_ids=[END_ID])).token_ids))
            for tok in (s.signals.token_id, l_tok)]
        assert s.label == int(ends[0] != ends[1])
        compared += 1
    assert compared


def test_continuation_budget() -> None:
    assert _cont_budget(10, 10, 3, None) == 6  # the rest of the answer budget
    assert _cont_budget(48, 9, 3, 8) == 13  # the large answer's remaining 5 tokens + slack 8
    assert _cont_budget(10, 4, 9, 8) == 1  # never below one token
    assert _cont_budget(48, 40, 3, 100) == 44  # never above the budget


def test_different_labels_mark_every_top_token_difference_and_call_no_outcome(tiny_model_dir: Path,
                                                                               large: HFModel) -> None:
    small = HFModel("small", tiny_model_dir)
    examples = [{"prompt": p} for p in ("2+6=", "9-4=", "10*3=")]
    prompts = [encode(e["prompt"]) for e in examples]

    def outcome(ex, ids):
        raise AssertionError("label='different' judges no outcome")

    kw = {"outcome": outcome, "max_tokens": 9, "stop_ids": [END_ID], "batch": 2, "label": "different"}
    own = asyncio.run(r2r_labels(examples, prompts, small, large, **kw))
    answers = [asyncio.run(large.complete_ids(p, 9, stop_ids=[END_ID])).token_ids for p in prompts]
    assert [(s.example, s.position) for s in own] == [(e, i) for e, a in enumerate(answers) for i in range(len(a))]
    for s in own:  # 1 exactly where the small model's top token after the large answer's prefix is not the answer's
        prefix = prompts[s.example] + answers[s.example][:s.position]
        assert s.label == int(int(torch.argmax(small.next_logits(prefix))) != answers[s.example][s.position])
    assert any(s.label for s in own)
    # the large model as its own small model never differs from itself
    assert not any(s.label for s in asyncio.run(r2r_labels(examples, prompts, large, large, **kw)))
    # along the large model's own answers the along-pipeline gives the same labels
    along = asyncio.run(r2r_labels_along(examples, prompts, answers, small, large, **kw))
    assert [(s.example, s.position, s.label) for s in along] == [(s.example, s.position, s.label) for s in own]
    with pytest.raises(ValueError, match="label must be one of"):
        asyncio.run(r2r_labels(examples, prompts, small, large, **(kw | {"label": "same"})))
