"""The step-lines drill pool: encoding (loss on the result only), the mixture weights, the spec's JSON, and a build
that trains on it (with a stand-in suite whose examples carry step lines)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from evals.zoo.build import build, load_pools
from evals.zoo.spec import ModelSpec
from evals.zoo.tokenizer import END_ID
from evals.zoo.train import (
    BatchSampler,
    chat_prompt_ids,
    encode_step_lines,
    encode_text,
    lines_pool_name,
    make_batch,
    mixture,
)
from tests.evals.zoo.test_train import TINY, Ex


class StepSuite:
    """A stand-in suite whose answers are written steps ``a+b=c`` then ``answer: c``."""

    name = "steps"

    def examples(self, split: str, n: int | None = None) -> list[Ex]:
        out = []
        for i in range(n or 60):
            a, b = 10 + i % 37, 20 + (i * 7) % 53
            line = f"{a}+{b}={a + b}"
            out.append(Ex(f"steps/{split}/{i}", "steps", f"{a} and {b}?", f"{line}\nanswer: {a + b}", str(a + b),
                          steps=(line,)))
        return out


def test_step_lines_carry_loss_on_the_result_only():
    exs = [Ex("x", "s", "p", "12*3=36\nbad\nanswer: 36", "36", steps=("12*3=36", "no equals", "a=b=c", "7+1="))]
    rows = encode_step_lines(exs, max_len=64)
    assert len(rows) == 1  # lines without exactly one "=" or with nothing after it are skipped
    head = chat_prompt_ids("")
    assert rows[0].ids == head + encode_text("12*3=36") + [END_ID]
    _, labels = make_batch(rows)
    kept = [t for t in labels[0].tolist() if t >= 0]
    assert kept == encode_text("36") + [END_ID]
    assert encode_step_lines(exs, max_len=len(head) + 3) == []


def test_mixture_shares_the_drill_weight_by_suite_weight():
    spec = replace(TINY, suites={"a": 3.0, "b": 1.0, "c": 0.0}, aux_lines=2.0)
    w = mixture(spec)
    assert w == {"a": 3.0, "b": 1.0, lines_pool_name("a"): 1.5, lines_pool_name("b"): 0.5}
    assert mixture(replace(spec, aux_lines=0.0)) == {"a": 3.0, "b": 1.0}


def test_spec_json_names_aux_lines_only_when_used():
    assert "aux_lines" not in TINY.to_json()
    assert replace(TINY, aux_lines=1.5).to_json()["aux_lines"] == 1.5


def test_load_pools_adds_lines_pools_only_where_asked():
    pools = load_pools(["steps"], lambda name: StepSuite(), max_len=64, train_n=20, lines=["steps"])
    assert set(pools) == {"steps", lines_pool_name("steps")}
    assert len(pools[lines_pool_name("steps")]) == 20
    sampler = BatchSampler(pools, {"steps": 1.0, lines_pool_name("steps"): 3.0}, seed=1)
    rows = [r for _ in range(20) for r in sampler.sample(20)]
    short = sum(len(r.ids) < 15 for r in rows) / len(rows)  # a drill row is ~12 tokens, a full example more
    assert 0.65 < short < 0.85
    assert set(load_pools(["steps"], lambda name: StepSuite(), max_len=64, train_n=5)) == {"steps"}


def test_build_trains_with_the_drill_and_records_the_spec(tmp_path: Path):
    spec = ModelSpec(name="drill", layers=1, hidden=64, heads=2, steps=3, batch=8, lr=5e-3, suites={"steps": 1.0},
                     warmup=1, max_len=64, seed=5, aux_lines=1.0)
    manifest = build(tmp_path, specs=[spec], get_suite=lambda name: StepSuite(), progress=False, log=None,
                     train_n=30)
    entry = manifest["models"][0]
    assert entry["spec"]["aux_lines"] == 1.0 and entry["steps"] == 3 and entry["train_tokens"] > 0
