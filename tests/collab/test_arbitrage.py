"""Arbitrage: a threshold that never escalates makes no target call and equals draft-only; one that always
escalates equals target-only; RSD and oracle modes; a process reward bound once per session, and a PRM name refused
(the route builder resolves it); step labels, training and the threshold sweep against a reference computation."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest
import torch

from collab.arbitrage import ArbitrageStrategy, StepRouter
from collab.inproc import HFModel
from collab.labels import arbitrage_labels
from collab.protocol import ProcessReward
from collab.session import Session
from evals.collab_train import baselines, sweep_steps, train_arbitrage
from evals.zoo.tokenizer import END_ID, decode, encode

PROMPT = encode("Q: 5*6? ")


@pytest.fixture(scope="module")
def target_dir(tmp_path_factory: pytest.TempPathFactory, zoo_tokenizer_dir: Path) -> Path:
    from evals.zoo.llama import make_llama

    return make_llama(tmp_path_factory.mktemp("target"), layers=3, hidden=128, heads=4, seed=1,
                      tokenizer_dir=zoo_tokenizer_dir)


@pytest.fixture(scope="module")
def delimiter(tiny_model_dir: Path) -> list[int]:
    """A token the draft writes often, so answers have several steps."""
    out = asyncio.run(HFModel("d", tiny_model_dir).complete_ids(PROMPT, 30)).token_ids
    return [max(set(out), key=out.count)]


def gen(tiny: Path, target: Path, strat: ArbitrageStrategy, n: int = 30):
    models = [HFModel("draft", tiny), HFModel("target", target)]
    return asyncio.run(strat.run(Session(models, PROMPT, stop_ids=[END_ID], decode=decode), n))


def test_never_escalate_makes_no_target_call(tiny_model_dir: Path, target_dir: Path, delimiter: list[int]) -> None:
    router = StepRouter()
    kw = dict(delimiter=delimiter, max_step_tokens=8)
    g = gen(tiny_model_dir, target_dir, ArbitrageStrategy("draft", "target", router=router, tau=math.inf, **kw))
    d = gen(tiny_model_dir, target_dir, ArbitrageStrategy("draft", "target", mode="draft", **kw))
    assert g.usage["target"].calls == 0 and g.usage["target"].prompt_tokens == 0
    assert g.output == d.output and set(g.provenance) == {"draft"}
    assert len(g.output) == 30


def test_always_escalate_equals_target_only(tiny_model_dir: Path, target_dir: Path, delimiter: list[int]) -> None:
    kw = dict(delimiter=delimiter, max_step_tokens=8)
    g = gen(tiny_model_dir, target_dir, ArbitrageStrategy("draft", "target", router=StepRouter(), tau=-math.inf,
                                                          **kw))
    t = gen(tiny_model_dir, target_dir, ArbitrageStrategy("draft", "target", mode="target", **kw))
    assert g.output == t.output and set(g.provenance) == {"target"}
    assert g.output != gen(tiny_model_dir, target_dir, ArbitrageStrategy("draft", "target", mode="draft", **kw)).output


def test_rsd_and_oracle(tiny_model_dir: Path, target_dir: Path, delimiter: list[int]) -> None:
    kw = dict(delimiter=delimiter, max_step_tokens=8)
    keep = gen(tiny_model_dir, target_dir, ArbitrageStrategy("draft", "target", mode="rsd", prm=lambda p, s: 1.0,
                                                             delta=0.5, **kw))
    assert keep.usage["target"].calls == 0
    digits = lambda p, s: sum(c.isdigit() for c in s) / max(len(s), 1)  # noqa: E731
    orc = gen(tiny_model_dir, target_dir, ArbitrageStrategy("draft", "target", mode="oracle", prm=digits, **kw))
    assert orc.usage["target"].calls > 0 and orc.usage["draft"].calls > 0


class PromptBound:
    """A ProcessReward: records the prompts it is bound to and scores with ``score``."""

    def __init__(self, score):
        self.score, self.prompts = score, []

    def scorer(self, prompt_text: str):
        self.prompts.append(prompt_text)
        return self.score


def test_process_reward_is_bound_once_per_session(tiny_model_dir: Path, target_dir: Path,
                                                  delimiter: list[int]) -> None:
    kw = dict(delimiter=delimiter, max_step_tokens=8)
    digits = lambda p, s: sum(c.isdigit() for c in s) / max(len(s), 1)  # noqa: E731
    prm = PromptBound(digits)
    assert isinstance(prm, ProcessReward)
    strat = ArbitrageStrategy("draft", "target", mode="oracle", prm=prm, **kw)
    bound = gen(tiny_model_dir, target_dir, strat)
    plain = gen(tiny_model_dir, target_dir, ArbitrageStrategy("draft", "target", mode="oracle", prm=digits, **kw))
    assert prm.prompts == [decode(PROMPT)]  # one binding for the whole answer, to the decoded prompt
    assert bound.output == plain.output and bound.provenance == plain.provenance
    gen(tiny_model_dir, target_dir, strat, n=8)
    assert prm.prompts == [decode(PROMPT)] * 2  # a new session binds again


def test_a_prm_name_or_a_non_scorer_is_refused() -> None:
    with pytest.raises(ValueError, match="resolve 'suite:…' when building the route"):
        ArbitrageStrategy("draft", "target", mode="rsd", prm="suite:units")
    with pytest.raises(TypeError, match="step scorer"):
        ArbitrageStrategy("draft", "target", mode="rsd", prm=0.5)
    with pytest.raises(ValueError, match="needs a step scorer"):
        ArbitrageStrategy("draft", "target", mode="oracle")


def test_suite_prm_is_a_process_reward() -> None:
    from evals.collab_tasks import SuitePRM, check_step, parse_prm

    prm = parse_prm("suite:units")
    assert isinstance(prm, SuitePRM) and isinstance(prm, ProcessReward)
    ex = next(iter(prm.by_prompt.values()))
    score = prm.scorer(f"<user>\n{ex.prompt}\n<assistant>")
    assert score(["a"], " b ") == check_step(ex, ["a"], "b")
    strat = ArbitrageStrategy("draft", "target", mode="rsd", prm=prm, delimiter="\n")
    assert strat.prm is prm


def test_labels_train_and_sweep(tiny_model_dir: Path, target_dir: Path, delimiter: list[int], tmp_path: Path) -> None:
    def score(ex: dict, prefix: list[str], step: str) -> float:
        return sum(c in ex["good"] for c in step) / max(len(step), 1)

    examples = [{"good": "0123456789"}, {"good": "aeiou "}, {"good": "+-*/="}]
    prompts = [encode(f"Q{i}: ") for i in range(3)]
    samples = asyncio.run(arbitrage_labels(examples, prompts, HFModel("d", tiny_model_dir), HFModel("t", target_dir),
                                           step_score=score, decode=decode, delimiter=delimiter, max_steps=4,
                                           max_step_tokens=6))
    assert len(samples) >= 3
    for s in samples:
        assert s.advantage == pytest.approx(s.target_score - s.draft_score)
    router, m = train_arbitrage(samples, epochs=50, val_frac=0.0)
    assert m["sweep"][-1]["escalation"] == 0.0  # τ = +inf never escalates
    router.save(tmp_path / "a.pt")
    again, _ = StepRouter.load(tmp_path / "a.pt")
    assert again.predict(samples[0].features) == pytest.approx(router.predict(samples[0].features))


def test_sweep_and_baselines_reference() -> None:
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(50, generator=g).tolist()
    d = torch.rand(50, generator=g).tolist()
    t = torch.rand(50, generator=g).tolist()
    for row in sweep_steps(pred, d, t, [-1.0, 0.0, 0.5]):
        chosen = [t[i] if pred[i] >= row["tau"] else d[i] for i in range(50)]
        assert row["score"] == pytest.approx(sum(chosen) / 50)
        assert row["escalation"] == pytest.approx(sum(p >= row["tau"] for p in pred) / 50)
    b = baselines(d, t, deltas=[0.3])
    assert b["oracle"] >= max(b["draft"], b["target"])
    assert b["rsd"][0]["escalation"] == pytest.approx(sum(x < 0.3 for x in d) / 50)


def test_rollout_value_and_rollout_labels(tiny_model_dir: Path, target_dir: Path, delimiter: list[int]) -> None:
    from collab.labels import rollout_value

    target = HFModel("t", target_dir)
    prompt = encode("Q0: ")
    cont = asyncio.run(target.complete_ids(prompt, 5)).token_ids
    seen: list[str] = []

    def outcome(ex: dict, text: str) -> float:
        seen.append(text)
        return float(text == ex["want"])

    # the greedy completion of the target is what the outcome sees (and the answer starts after the prompt)
    assert asyncio.run(rollout_value(target, prompt, {"want": decode(cont)}, outcome, decode, len(prompt), 5)) == 1.0
    assert asyncio.run(rollout_value(target, prompt, {"want": "x"}, outcome, decode, len(prompt), 5)) == 0.0
    assert asyncio.run(rollout_value(target, prompt + cont[:2], {"want": decode(cont[:2])}, outcome, decode,
                                     len(prompt), 0)) == 1.0  # no budget left: no rollout

    def zero(ex: dict, prefix: list[str], step: str) -> float:
        return 0.0

    def digits(ex: dict, text: str) -> float:
        return float(any(c.isdigit() for c in text))

    kw = dict(step_score=zero, decode=decode, delimiter=delimiter, max_steps=3, max_step_tokens=6)
    plain = asyncio.run(arbitrage_labels([{}], [prompt], HFModel("d", tiny_model_dir), target, **kw))
    rolled = asyncio.run(arbitrage_labels([{}], [prompt], HFModel("d", tiny_model_dir), target, **kw,
                                          rollout=target, outcome=digits, max_tokens=30))
    assert all(s.draft_score == 0.0 and s.target_score == 0.0 for s in plain)
    assert len(rolled) >= 1
    for s in rolled:
        assert s.advantage == pytest.approx(s.target_score - s.draft_score)
        assert s.draft_score in (0.0, 1.0) and s.target_score in (0.0, 1.0)
    with pytest.raises(ValueError):
        asyncio.run(arbitrage_labels([{}], [prompt], HFModel("d", tiny_model_dir), target, **kw, rollout=target))
