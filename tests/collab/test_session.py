"""Runtime: provenance and usage add up, lazy catch-up equals a fresh forward pass, seeded sampling is reproducible."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from collab.features import Signals
from collab.inproc import HFModel
from collab.r2r import R2RRouter, R2RStrategy
from collab.session import Session
from collab.single import SingleModel
from evals.zoo.tokenizer import END_ID, decode, encode

PROMPT = encode("12+34=")


@pytest.fixture(scope="module")
def large_dir(tmp_path_factory: pytest.TempPathFactory, zoo_tokenizer_dir: Path) -> Path:
    from evals.zoo.llama import make_llama

    return make_llama(tmp_path_factory.mktemp("large"), layers=3, hidden=128, heads=4, seed=1,
                      tokenizer_dir=zoo_tokenizer_dir)


class EveryThirdToken(R2RRouter):
    """A router whose verdict is a fixed function of the small model's token (routes ids divisible by 3)."""

    def prob(self, signals: Signals) -> float:
        return 1.0 if signals.token_id % 3 == 0 else 0.0


def fresh_logits(model_dir: Path, ids: list[int]) -> torch.Tensor:
    m = HFModel("fresh", model_dir)
    with torch.no_grad():
        return m.model(input_ids=torch.tensor([ids])).logits[0, -1].float()


def test_provenance_and_usage_add_up(tiny_model_dir: Path, large_dir: Path) -> None:
    small, large = HFModel("small", tiny_model_dir), HFModel("large", large_dir)
    strat = R2RStrategy("small", "large", router=EveryThirdToken(128), tau=0.5)
    sess = Session([small, large], PROMPT, stop_ids=[END_ID], decode=decode)
    gen = asyncio.run(strat.run(sess, 24))
    n = len(gen.output)
    assert n == 24 and gen.finish_reason == "length"
    assert set(gen.provenance) == {"small", "large"}  # both wrote
    u = gen.usage
    assert u["small"].written_tokens + u["large"].written_tokens == n
    assert u["large"].written_tokens == gen.provenance.count("large") == strat.routed
    # the small model decodes every position; the large one only the routed ones
    assert u["small"].completion_tokens == u["small"].calls == n
    assert u["large"].completion_tokens == u["large"].calls == gen.provenance.count("large")
    # each model ran every token of its contexts exactly once: prefill = last context length
    assert u["small"].prefill_tokens == len(PROMPT) + n - 1 == small.forward_tokens
    last_large = max(i for i, w in enumerate(gen.provenance) if w == "large")
    assert u["large"].prefill_tokens == len(PROMPT) + last_large == large.forward_tokens
    assert gen.text == decode(gen.output)


def test_stream_pieces_join_to_text(tiny_model_dir: Path) -> None:
    small = HFModel("small", tiny_model_dir)

    async def collect() -> list:
        sess = Session([small], PROMPT, stop_ids=[END_ID], decode=decode)
        return [e async for e in SingleModel("small").generate(sess, 10)]

    events = asyncio.run(collect())
    assert len(events) == 10 and all(e.model == "small" for e in events)
    assert "".join(e.text for e in events) == decode([e.token_id for e in events])


def test_lazy_catch_up_matches_fresh_forward(tiny_model_dir: Path) -> None:
    ids = encode("hello world, 12+34=46")
    m = HFModel("m", tiny_model_dir)
    m.next_logits(ids[:5])
    before = m.forward_tokens
    got = m.next_logits(ids)  # skipped len(ids) - 5 tokens
    assert m.forward_tokens - before == len(ids) - 5
    torch.testing.assert_close(got, fresh_logits(tiny_model_dir, ids), atol=1e-4, rtol=1e-4)
    # a diverging prefix crops the cache back to the common part
    other = ids[:8] + encode("xyz")
    torch.testing.assert_close(m.next_logits(other), fresh_logits(tiny_model_dir, other), atol=1e-4, rtol=1e-4)


def test_lazy_catch_up_gateway_local_backend(tiny_model_dir: Path) -> None:
    from gateway.backends.local import LocalBackend

    ids = encode("the cat sat on the mat")
    b = LocalBackend("tiny", path=str(tiny_model_dir), device="cpu")
    b.next_logits(ids[:4])
    got = b.next_logits(ids)
    torch.testing.assert_close(got.cpu(), fresh_logits(tiny_model_dir, ids), atol=1e-4, rtol=1e-4)


def test_seeded_sampling_is_reproducible(tiny_model_dir: Path) -> None:
    small = HFModel("small", tiny_model_dir)

    def run(seed: int) -> list[int]:
        sess = Session([small], PROMPT, temperature=1.0, seed=seed)
        return asyncio.run(SingleModel("small").run(sess, 16)).output

    a, b, c = run(1), run(1), run(2)
    assert a == b
    assert a != c


def test_session_rejects_unknown_model(tiny_model_dir: Path) -> None:
    sess = Session([HFModel("small", tiny_model_dir)], PROMPT)
    with pytest.raises(KeyError):
        sess.member("large")




def test_state_sync_equals_state_and_counts_the_same(tiny_model_dir: Path) -> None:
    a, b = HFModel("a", tiny_model_dir), HFModel("b", tiny_model_dir)
    s_async, s_sync = Session([a], PROMPT), Session([b], PROMPT)
    for extra in ([], [5], [5, 6, 7], [5, 9]):  # extend, catch up, then diverge
        ids = PROMPT + extra
        la, ha = asyncio.run(s_async.state("a", ids))
        lb, hb = s_sync.state_sync("b", ids)
        assert torch.equal(la, lb) and torch.equal(ha, hb)
    assert s_async.member("a").usage == s_sync.member("b").usage
    assert s_sync.member("b").usage.cached_tokens > 0
