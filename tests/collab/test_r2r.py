"""R2R: τ=0 is large-only, τ=1 is small-only; chunked (remote-style) drafting equals the in-process path; labels,
class weights, τ for recall and the router file round-trip."""

from __future__ import annotations

import asyncio
import math
import random
from pathlib import Path

import pytest
import torch

from collab.features import Signals, signals_from_logits, signals_from_top
from collab.inproc import HFModel
from collab.labels import R2RSample, r2r_labels
from collab.protocol import IdCompletion
from collab.r2r import R2RRouter, R2RStrategy, average_activated_params
from collab.session import Session
from evals.collab_train import choose_tau, positive_weight, train_r2r
from evals.zoo.tokenizer import END_ID, decode, encode

PROMPT = encode("7*8=")


@pytest.fixture(scope="module")
def large_dir(tmp_path_factory: pytest.TempPathFactory, zoo_tokenizer_dir: Path) -> Path:
    from evals.zoo.llama import make_llama

    return make_llama(tmp_path_factory.mktemp("large"), layers=3, hidden=128, heads=4, seed=1,
                      tokenizer_dir=zoo_tokenizer_dir)


class RemoteOnly:
    """Only ``complete_ids`` of a model (what a remote server offers): the session must draft in chunks."""

    def __init__(self, inner: HFModel):
        self.name, self.inner = inner.name, inner

    async def complete_ids(self, ids: list[int], max_tokens: int, **kw) -> IdCompletion:
        return await self.inner.complete_ids(ids, max_tokens, **kw)


class TokenRule(R2RRouter):
    def prob(self, signals: Signals) -> float:
        return 1.0 if signals.token_id % 3 == 0 else 0.0


async def reference(model_dir: Path, n: int) -> list[int]:
    out = await HFModel("ref", model_dir).complete_ids(PROMPT, n, stop_ids=[END_ID])
    return out.token_ids


def run(models, strat: R2RStrategy, n: int = 20):
    return asyncio.run(strat.run(Session(models, PROMPT, stop_ids=[END_ID], decode=decode), n))


def test_tau_zero_is_large_only_and_tau_one_is_small_only(tiny_model_dir: Path, large_dir: Path) -> None:
    small, large = HFModel("small", tiny_model_dir), HFModel("large", large_dir)
    g0 = run([small, large], R2RStrategy("small", "large", tau=0.0))
    assert g0.output == asyncio.run(reference(large_dir, 20)) and set(g0.provenance) == {"large"}
    g1 = run([small, large], R2RStrategy("small", "large", tau=1.0))
    assert g1.output == asyncio.run(reference(tiny_model_dir, 20)) and set(g1.provenance) == {"small"}
    assert g1.usage["large"].calls == 0
    assert g0.output != g1.output  # the two models really differ, so the checks above mean something


def test_gateway_local_backend_as_large(tiny_model_dir: Path, large_dir: Path) -> None:
    from gateway.backends.local import LocalBackend

    large = LocalBackend("large", path=str(large_dir), device="cpu")
    g = run([HFModel("small", tiny_model_dir), large], R2RStrategy("small", "large", tau=0.0))
    assert g.output == asyncio.run(reference(large_dir, 20))


def test_chunked_drafting_equals_in_process(tiny_model_dir: Path, large_dir: Path) -> None:
    small, large = HFModel("small", tiny_model_dir), HFModel("large", large_dir)
    g_in = run([small, large], R2RStrategy("small", "large", router=TokenRule(128), tau=0.5))
    g_rem = run([RemoteOnly(small), RemoteOnly(large)], R2RStrategy("small", "large", router=TokenRule(128),
                                                                     tau=0.5, chunk=5))
    assert g_in.output == g_rem.output and g_in.provenance == g_rem.provenance
    assert "large" in g_rem.provenance
    # drafted-but-cut tokens are billed: the remote small model decoded at least what it wrote
    assert g_rem.usage["small"].completion_tokens >= g_rem.usage["small"].written_tokens
    assert g_rem.usage["large"].calls == g_rem.provenance.count("large")


def test_average_activated_params(tiny_model_dir: Path, large_dir: Path) -> None:
    small, large = HFModel("small", tiny_model_dir), HFModel("large", large_dir)
    g = run([small, large], R2RStrategy("small", "large", router=TokenRule(128), tau=0.5))
    share = g.share("large")
    got = average_activated_params(g.usage, len(g.output), {"small": 10, "large": 100})
    assert math.isclose(got, 10 + 100 * share)


def brute_tau(probs: list[float], labels: list[int], recall: float) -> float:
    best = None
    for t in sorted(set(probs)):
        flagged = [p >= t for p in probs]
        pos = sum(labels)
        if sum(f and y for f, y in zip(flagged, labels, strict=True)) / pos >= recall:
            best = t
    return best


@pytest.mark.parametrize("seed", range(5))
def test_choose_tau_matches_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    probs = [rng.random() for _ in range(200)]
    labels = [int(rng.random() < 0.2 + 0.5 * p) for p in probs]
    for r in (0.5, 0.9, 0.95, 1.0):
        assert choose_tau(probs, labels, r) == brute_tau(probs, labels, r)
    assert choose_tau(probs, [0] * 200) == 1.0
    assert positive_weight([1, 0, 0, 0]) == 3.0


def test_r2r_labels(tiny_model_dir: Path, large_dir: Path) -> None:
    small, large = HFModel("small", tiny_model_dir), HFModel("large", large_dir)
    examples = [{"prompt": "1+1="}, {"prompt": "9-3="}]
    prompts = [encode(e["prompt"]) for e in examples]
    # outcome: the answer's first 6 tokens (a stand-in for a task checker's verdict)
    samples = asyncio.run(r2r_labels(examples, prompts, small, large, outcome=lambda ex, ids: tuple(ids[:6]),
                                     max_tokens=10, stop_ids=[END_ID]))
    assert len(samples) == 20
    for s in samples:
        resp = asyncio.run(large.complete_ids(prompts[s.example], 10, stop_ids=[END_ID])).token_ids
        logits = small.next_logits(prompts[s.example] + resp[: s.position])
        agree = int(torch.argmax(logits)) == resp[s.position]
        if agree:
            assert s.label == 0
        if s.position >= 6:
            assert s.label == 0  # a change after the 6th character cannot change the outcome
    assert any(s.label for s in samples) and samples[0].signals.hidden is not None


def test_train_r2r_learns_a_separable_rule_and_roundtrips(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    samples = []
    for i in range(600):
        logits = torch.randn(128, generator=g) * 3
        tok = int(torch.argmax(logits))
        sig = signals_from_logits(logits, tok)
        samples.append(R2RSample(sig, int(sig.entropy > 3.0), i // 10, i % 10))
    router, tau, m = train_r2r(samples, 128, epochs=60)
    assert m["val_recall"] >= 0.95
    assert m["val_routed_share"] < 0.9  # it did not just route everything
    router.save(tmp_path / "r.pt", tau=tau)
    again, blob = R2RRouter.load(tmp_path / "r.pt")
    assert blob["tau"] == tau
    assert again.prob(samples[0].signals) == pytest.approx(router.prob(samples[0].signals))


def test_token_vectors_carry_a_token_rule_to_tokens_no_label_saw(tmp_path: Path) -> None:
    # a position is divergent iff its chosen token belongs to a group that the token vectors' first coordinate
    # marks; the labels show only tokens 0-79, the check is on tokens 80-127
    g = torch.Generator().manual_seed(3)
    vectors = torch.randn(128, 8, generator=g)
    member = vectors[:, 0] > 0

    def sample(tok: int, i: int) -> R2RSample:
        logits = torch.randn(128, generator=g)
        logits[tok] = 8.0  # the chosen token is the confident top: the logprobs say nothing about the group
        return R2RSample(signals_from_logits(logits, tok), int(member[tok]), i // 10, i % 10)

    seen = [sample(i % 80, i) for i in range(1600)]
    unseen = [sample(80 + i % 48, i) for i in range(480)]
    y = torch.tensor([s.label for s in unseen], dtype=torch.bool)

    def accuracy(router: R2RRouter) -> float:
        with torch.no_grad():
            p = torch.sigmoid(router(*router.batch([s.signals for s in unseen])))
        return float(((p >= 0.5) == y).float().mean())

    free, _, _ = train_r2r(seen, 128, epochs=20)
    projected, tau, _ = train_r2r(seen, 128, epochs=20, token_vectors=vectors)
    assert accuracy(projected) >= 0.9
    assert accuracy(free) <= 0.7  # a free table's rows for tokens 80-127 kept their random start
    # the projection is baked into the table: a saved router needs no vectors to score
    projected.save(tmp_path / "r.pt", tau=tau)
    again, _ = R2RRouter.load(tmp_path / "r.pt")
    assert again.prob(unseen[0].signals) == pytest.approx(projected.prob(unseen[0].signals))
    with pytest.raises(ValueError, match="rows for a vocabulary"):
        train_r2r(seen, 128, token_vectors=vectors[:100])


def test_a_topk_entropy_router_scores_a_position_alike_in_process_and_remote() -> None:
    # the same position as an in-process model gives it (full logits) and as a server gives it (top-8 logprobs)
    g = torch.Generator().manual_seed(5)
    torch.manual_seed(5)
    routers = {e: R2RRouter(128, entropy=e).eval() for e in ("signals", "topk")}
    routers["topk"].load_state_dict(routers["signals"].state_dict())
    gaps = {"signals": 0.0, "topk": 0.0}
    for _ in range(50):
        logits = torch.randn(128, generator=g) * 2
        tok = int(torch.argmax(logits))
        local = signals_from_logits(logits, tok)
        lps = torch.log_softmax(logits, -1)
        v, i = torch.topk(lps, 8)
        remote = signals_from_top(list(zip(i.tolist(), v.tolist())), tok, float(lps[tok]))
        for e, router in routers.items():
            gaps[e] = max(gaps[e], abs(router.prob(local) - router.prob(remote)))
    assert gaps["topk"] < 1e-5 < gaps["signals"]  # the exact entropy is not what a server's top-8 give
    with pytest.raises(ValueError, match="entropy must be one of"):
        R2RRouter(128, entropy="exact")


def test_a_router_file_from_before_the_entropy_option_loads_with_the_signals_entropy(tmp_path: Path) -> None:
    router = R2RRouter(64).eval()
    router.config.pop("entropy")  # what files written before the option hold
    router.save(tmp_path / "old.pt", tau=0.5)
    again, _ = R2RRouter.load(tmp_path / "old.pt")
    assert again.entropy == "signals"


@pytest.mark.parametrize("hidden_size", [0, 12])
def test_router_prob_is_forward_on_one_row(hidden_size: int) -> None:
    torch.manual_seed(hidden_size)
    router = R2RRouter(128, hidden_size=hidden_size).eval()
    g = torch.Generator().manual_seed(1)
    for i in range(100):
        logits = torch.randn(128, generator=g) * 4
        hidden = torch.randn(hidden_size, generator=g) if hidden_size and i % 2 else None
        sig = signals_from_logits(logits, int(torch.randint(0, 128, (1,), generator=g)), router.k, hidden)
        with torch.no_grad():
            want = float(torch.sigmoid(router(*router.batch([sig])))[0])
        assert router.prob(sig) == want  # same ops, same numbers
        assert router.probs([sig, sig]) == pytest.approx([want, want])


class Recorder(R2RStrategy):
    """Records the writers of the tokens each ``advance`` appended."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.writers: list[set[str]] = []

    async def advance(self, session: Session, budget: int) -> None:
        before = len(session.provenance)
        await super().advance(session, budget)
        self.writers.append(set(session.provenance[before:]))


@pytest.mark.parametrize("remote", [False, True])
def test_chunks_equal_one_position_at_a_time_and_have_one_writer(tiny_model_dir: Path, large_dir: Path,
                                                                 remote: bool) -> None:
    def models():
        small, large = HFModel("small", tiny_model_dir), HFModel("large", large_dir)
        return [RemoteOnly(small), RemoteOnly(large)] if remote else [small, large]

    one = Recorder("small", "large", router=TokenRule(128), tau=0.5, chunk=1)
    many = Recorder("small", "large", router=TokenRule(128), tau=0.5, chunk=6)
    g1, g6 = run(models(), one, 30), run(models(), many, 30)
    assert g1.output == g6.output and g1.provenance == g6.provenance
    assert {"small", "large"} <= set(g6.provenance)
    assert all(len(w) == 1 for w in many.writers)  # each streamed piece belongs to one model
    assert any(len(w) > 1 for w in [set(g6.provenance[i:i + 6]) for i in range(0, 30, 6)])  # the test means something
    assert len(many.writers) < len(one.writers)  # fewer advance calls (thread hops / draft calls) with chunks
    if not remote:
        assert g1.usage == g6.usage  # the same model calls
