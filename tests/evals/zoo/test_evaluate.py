"""Batched greedy decoding equals one-by-one greedy ``generate``; the criteria check and table read real numbers."""

from __future__ import annotations

import pytest

from evals.zoo.evaluate import check_criteria, format_table, greedy_batch
from evals.zoo.llama import make_llama
from evals.zoo.tokenizer import END_ID, PAD_ID
from evals.zoo.train import chat_prompt_ids


@pytest.fixture(scope="module")
def sharp_model(tmp_path_factory):
    """A random 2-layer model with large weights, so its greedy choices are decisive (no near-ties)."""
    import torch
    from transformers import AutoModelForCausalLM

    folder = make_llama(tmp_path_factory.mktemp("m") / "m", layers=2, hidden=64, heads=2, seed=5)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight"):
                p.mul_(40.0)
    return model.eval()


def test_batched_greedy_equals_generate_one_by_one(sharp_model):
    import torch

    torch.set_num_threads(2)
    prompts = [chat_prompt_ids(p) for p in ("1+1", "What is 23 * 47? Show your work.", "km to m: 3.5", "x")]
    batched = greedy_batch(sharp_model, prompts, max_new_tokens=12)
    for p, got in zip(prompts, batched):
        ref = sharp_model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                   max_new_tokens=12, do_sample=False, eos_token_id=END_ID, pad_token_id=PAD_ID)
        want = ref[0, len(p):].tolist()
        if END_ID in want:
            want = want[: want.index(END_ID)]
        assert got == want
    assert any(len(g) > 0 for g in batched)


def test_stops_at_eos_per_row(sharp_model):
    import torch

    prompt = chat_prompt_ids("stop test")
    with torch.no_grad():
        first = int(sharp_model(torch.tensor([prompt])).logits[0, -1].argmax())
    # Whatever the first greedy token is, declaring it the EOS ends that row at once.
    assert greedy_batch(sharp_model, [prompt, chat_prompt_ids("another")], max_new_tokens=5, eos_id=first)[0] == []


def test_criteria_and_table_use_the_numbers():
    acc = {"small": {"a": 0.2, "b": 0.1, "c": 0.5}, "large": {"a": 0.6, "b": 0.5, "c": 0.55},
           "expert-a": {"a": 0.62, "b": 0.0, "c": 0.0}, "expert-c": {"a": 0.0, "b": 0.0, "c": 0.4}}
    flops = {"small": 10, "large": 80, "expert-a": 20, "expert-c": 20}
    verdicts = dict(check_criteria(acc, flops, suites=["a", "b", "c"]))
    assert [holds for _, holds in check_criteria(acc, flops, suites=["a", "b", "c"])] == [True, True, True, True,
                                                                                        False, True]
    assert any("expert-c on c: 0.40 vs large 0.55" in k for k in verdicts)
    # Where large is near zero too, "clearly worse" means zero: 0.00 passes, 0.03 does not.
    near_zero = {"large": {"a": 0.6, "b": 0.04}, "expert-a": {"a": 0.7, "b": 0.0}, "expert-b": {"a": 0.0, "b": 0.5}}
    flops3 = {"large": 80, "expert-a": 20, "expert-b": 20}
    assert dict(check_criteria(near_zero, flops3, suites=["a", "b"]))["expert-a clearly worse outside a (b 0.00)"]
    near_zero["expert-a"]["b"] = 0.03
    assert not dict(check_criteria(near_zero, flops3, suites=["a", "b"]))["expert-a clearly worse outside a (b 0.03)"]
    table = format_table(acc, flops, ["a", "b", "c"])
    assert "| large | 60.0 | 50.0 | 55.0 |" in table and table.count("\n") == 5


def test_empty_prompt_list(sharp_model):
    assert greedy_batch(sharp_model, [], max_new_tokens=3) == []
