"""Zoo training: chat encoding equals the tokenizer's template, the schedule, batches, sampling, a real tiny run."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from evals.zoo.llama import make_llama
from evals.zoo.spec import ZOO_SPECS, ModelSpec, flops_per_token, param_count, spec_by_name
from evals.zoo.tokenizer import PAD_ID, build_tokenizer
from evals.zoo.train import (
    IGNORE,
    BatchSampler,
    Encoded,
    chat_example_ids,
    encode_examples,
    lr_at,
    make_batch,
    train_model,
)


@dataclass(frozen=True)
class Ex:
    id: str
    suite: str
    prompt: str
    answer: str
    final: str
    steps: tuple = ()
    meta: dict = field(default_factory=dict)


@dataclass
class Verdict:
    score: float
    step_scores: list | None
    detail: str


class AdditionSuite:
    """A stand-in suite: two-digit additions, answer ``answer: <sum>``; exact-match checker."""

    name = "add"

    def examples(self, split: str, n: int | None = None) -> list[Ex]:
        rng = random.Random(f"add/{split}")
        out = []
        for i in range(n or 200):
            a, b = rng.randrange(10, 100), rng.randrange(10, 100)
            out.append(Ex(f"add/{split}/{i}", "add", f"{a}+{b}=?", f"answer: {a + b}", str(a + b)))
        return out

    def check(self, example: Ex, output: str) -> Verdict:
        ok = output.strip() == example.answer
        return Verdict(float(ok), None, "ok" if ok else "wrong final")


def get_standin(name: str) -> AdditionSuite:
    assert name == "add"
    return AdditionSuite()


TINY = ModelSpec(name="tiny", layers=1, hidden=64, heads=2, steps=40, batch=16, lr=5e-3, suites={"add": 1.0},
                 warmup=5, max_len=64, seed=3)


def test_chat_encoding_matches_the_tokenizer_template(tmp_path: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(build_tokenizer(tmp_path / "tok"))
    prompt, answer = "What is 12+7?\nShow steps.", "12+7=19\nanswer: 19"
    ids, n_prompt = chat_example_ids(prompt, answer)
    head = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True)
    full = tok.apply_chat_template([{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
                                   tokenize=True)
    head, full = list(getattr(head, "input_ids", head)), list(getattr(full, "input_ids", full))
    assert ids[:n_prompt] == head
    assert full == ids + tok.encode("\n", add_special_tokens=False)  # the template closes each turn with a newline
    assert tok.decode(ids[n_prompt:], skip_special_tokens=True) == answer


def lr_reference(step: int, total: int, peak: float, warmup: int, min_ratio: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup - 1)
    return min_ratio * peak + (peak - min_ratio * peak) * (1 + math.cos(math.pi * min(t, 1.0))) / 2


def test_schedule_warms_up_then_decays_to_the_floor():
    total, peak, warmup, floor = 200, 1e-3, 20, 0.1
    lrs = [lr_at(s, total=total, peak=peak, warmup=warmup, min_ratio=floor) for s in range(total)]
    assert lrs == pytest.approx([lr_reference(s, total, peak, warmup, floor) for s in range(total)])
    assert lrs[warmup - 1] == pytest.approx(peak) and lrs[warmup] == pytest.approx(peak)
    assert lrs[-1] == pytest.approx(floor * peak)
    assert all(a <= b for a, b in zip(lrs[:warmup], lrs[1:warmup]))
    assert all(a >= b for a, b in zip(lrs[warmup:], lrs[warmup + 1:]))


def test_batch_masks_prompt_and_padding():
    rows = [Encoded([5, 6, 7, 8], 2), Encoded([9, 10, 11], 1)]
    ids, labels = make_batch(rows)
    assert ids.tolist() == [[5, 6, 7, 8], [9, 10, 11, PAD_ID]]
    assert labels.tolist() == [[IGNORE, IGNORE, 7, 8], [IGNORE, 10, 11, IGNORE]]


def test_encode_examples_truncates_and_drops():
    exs = [Ex("a", "s", "1+1", "answer: 2", "2"), Ex("b", "s", "x" * 100, "answer: 1", "1")]
    enc = encode_examples(exs, max_len=12)
    assert len(enc) == 1 and len(enc[0].ids) == 12


def test_sampler_is_seeded_and_follows_the_mixture():
    pools = {"a": [Encoded([1], 0)], "b": [Encoded([2], 0)], "c": [Encoded([3], 0)]}
    s1 = BatchSampler(pools, {"a": 3.0, "b": 1.0, "c": 0.0}, seed=7)
    s2 = BatchSampler(pools, {"a": 3.0, "b": 1.0, "c": 0.0}, seed=7)
    draw1 = [r.ids[0] for _ in range(50) for r in s1.sample(40)]
    assert draw1 == [r.ids[0] for _ in range(50) for r in s2.sample(40)]
    assert 3 not in draw1
    share_a = draw1.count(1) / len(draw1)
    assert 0.70 < share_a < 0.80
    with pytest.raises(ValueError):
        BatchSampler({"a": []}, {"a": 1.0}, seed=0)


def test_param_count_and_flops_match_the_real_models(tmp_path: Path):
    from transformers import AutoModelForCausalLM

    for spec in (spec_by_name("small"), TINY):
        folder = make_llama(tmp_path / spec.name, layers=spec.layers, hidden=spec.hidden, heads=spec.heads)
        model = AutoModelForCausalLM.from_pretrained(folder)
        assert param_count(spec) == sum(p.numel() for p in model.parameters())
    assert flops_per_token(spec_by_name("large")) >= 5 * flops_per_token(spec_by_name("small"))
    assert all(s.head_dim >= 32 for s in ZOO_SPECS)


def test_training_learns_and_is_deterministic(tmp_path: Path):
    pools = {"add": encode_examples(AdditionSuite().examples("train", 300), TINY.max_len)}
    runs = []
    for name in ("a", "b"):
        folder = make_llama(tmp_path / name, layers=TINY.layers, hidden=TINY.hidden, heads=TINY.heads, seed=TINY.seed)
        result = train_model(TINY, folder, pools, progress=False)
        runs.append((folder, result))
    (fa, ra), (fb, rb) = runs
    assert ra.steps == 40 and ra.tokens > 0
    assert ra.final_loss < 2.5  # starts near ln(128) = 4.85
    assert ra.final_loss == rb.final_loss
    wa = sorted(fa.glob("*.safetensors"))
    assert wa and [p.read_bytes() for p in wa] == [p.read_bytes() for p in sorted(fb.glob("*.safetensors"))]


def test_micro_batches_keep_every_row_under_the_budget():
    from evals.zoo.train import micro_batches

    rows = [Encoded(list(range(n)), 1) for n in (5, 50, 7, 30, 31, 2, 49)]
    chunks = micro_batches(rows, max_tokens=64)
    assert sorted(len(r.ids) for c in chunks for r in c) == sorted(len(r.ids) for r in rows)
    assert all(len(c) * max(len(r.ids) for r in c) <= 64 or len(c) == 1 for c in chunks)
    assert micro_batches([Encoded([1] * 100, 1)], max_tokens=10) == [[Encoded([1] * 100, 1)]]
