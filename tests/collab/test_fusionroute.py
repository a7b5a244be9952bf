"""FusionRoute: decoding equals argmax(log π_router + log π_I) computed by hand with fresh forward passes; a remote
expert reporting its whole vocabulary as top-k gives the same tokens; training on disagreement positions lowers loss;
the batched labels equal the per-position reference."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from collab.fusionroute import FusionRouteStrategy, RoutingHead, load_fusionroute, save_fusionroute
from collab.inproc import HFModel
from collab.labels import fusion_examples
from collab.protocol import IdCompletion
from collab.session import Session
from evals.collab_train import train_fusionroute
from evals.zoo.tokenizer import END_ID, VOCAB_SIZE, decode, encode

PROMPT = encode("3+4=")


def _make(tmp_path_factory: pytest.TempPathFactory, tok: Path, name: str, layers: int, seed: int) -> Path:
    from evals.zoo.llama import make_llama

    return make_llama(tmp_path_factory.mktemp(name), layers=layers, hidden=128, heads=4, seed=seed, tokenizer_dir=tok)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory, zoo_tokenizer_dir: Path, tiny_model_dir: Path) -> dict[str, Path]:
    return {"a": tiny_model_dir, "b": _make(tmp_path_factory, zoo_tokenizer_dir, "b", 3, 1),
            "router": _make(tmp_path_factory, zoo_tokenizer_dir, "router", 2, 2)}


def seeded_head(seed: int = 0) -> RoutingHead:
    torch.manual_seed(seed)
    head = RoutingHead(128, 2)
    with torch.no_grad():
        head.proj.weight.mul_(50.0)  # make the choice vary along the answer
    return head


def by_hand(dirs: dict[str, Path], head: RoutingHead, n: int) -> tuple[list[int], list[str]]:
    models = {k: HFModel(k, v) for k, v in dirs.items()}
    ids, who = list(PROMPT), []
    with torch.no_grad():
        for _ in range(n):
            out = models["router"].model(input_ids=torch.tensor([ids]), output_hidden_states=True)
            z_r, h = out.logits[0, -1], out.hidden_states[-1][0, -1]
            name = ["a", "b"][int(torch.argmax(head(h)))]
            z_e = models[name].model(input_ids=torch.tensor([ids])).logits[0, -1]
            tok = int(torch.argmax(torch.log_softmax(z_r, -1) + torch.log_softmax(z_e, -1)))
            ids.append(tok)
            who.append(name)
            if tok == END_ID:
                break
    return ids[len(PROMPT):], who


class RemoteOnly:
    def __init__(self, inner: HFModel):
        self.name, self.inner = inner.name, inner

    async def complete_ids(self, ids: list[int], max_tokens: int, **kw) -> IdCompletion:
        return await self.inner.complete_ids(ids, max_tokens, **kw)


def test_decoding_equals_hand_reference(dirs: dict[str, Path]) -> None:
    head = seeded_head()
    want, who = by_hand(dirs, head, 16)
    assert set(who) == {"a", "b"}  # both experts chosen somewhere
    models = [HFModel(k, v) for k, v in dirs.items()]
    g = asyncio.run(FusionRouteStrategy("router", ["a", "b"], head).run(Session(models, PROMPT, stop_ids=[END_ID]), 16))
    assert g.output == want and g.provenance == who
    assert g.usage["router"].calls == len(want)
    assert g.usage["a"].calls + g.usage["b"].calls == len(want)


def test_remote_expert_full_topk_equals_dense(dirs: dict[str, Path]) -> None:
    head = seeded_head()
    want, who = by_hand(dirs, head, 12)
    models = [HFModel("router", dirs["router"]), RemoteOnly(HFModel("a", dirs["a"])), RemoteOnly(HFModel("b", dirs["b"]))]
    strat = FusionRouteStrategy("router", ["a", "b"], head, k=VOCAB_SIZE)
    g = asyncio.run(strat.run(Session(models, PROMPT, stop_ids=[END_ID]), 12))
    assert g.output == want and g.provenance == who


def test_training_lowers_loss_and_roundtrips(dirs: dict[str, Path], tmp_path: Path) -> None:
    experts = [HFModel("a", dirs["a"]), HFModel("b", dirs["b"])]
    seqs = [(encode(f"{i}+{i}="), encode(f"{2 * i}")) for i in range(10, 18)]
    samples = asyncio.run(fusion_examples(seqs, experts))
    assert samples and all(len(s.positions) == s.expert_logprobs.shape[0] for s in samples)
    for s in samples:  # every kept position is a real disagreement
        tops = s.expert_logprobs.argmax(-1)
        assert bool((tops != tops[:, :1]).any(-1).all())
    router = HFModel("router", dirs["router"])
    head, m = train_fusionroute(router.model, samples, 2, epochs=4, lr=1e-2, lm_lr=1e-3)
    assert m["last_epoch_loss"] < m["first_epoch_loss"]
    save_fusionroute(tmp_path / "f.pt", head, ["a", "b"], router.model.state_dict())
    fresh = HFModel("router", dirs["router"])
    head2, names, _ = load_fusionroute(tmp_path / "f.pt", fresh.model)
    assert names == ["a", "b"]
    h = torch.randn(128)
    assert head2.choose(h) == head.choose(h)
    torch.testing.assert_close(fresh.next_logits(PROMPT), router.next_logits(PROMPT))
    assert decode(PROMPT) == "3+4="


def test_batched_labels_equal_the_per_position_reference(dirs: dict[str, Path]) -> None:
    experts = [HFModel("a", dirs["a"]), HFModel("b", dirs["b"])]
    seqs = [(encode(f"{i}*3="), encode(f"{3 * i}") + [END_ID]) for i in range(20, 26)]
    want = asyncio.run(fusion_examples(seqs, experts, one_pass=False))
    got = asyncio.run(fusion_examples(seqs, experts))
    assert want and len(got) == len(want)
    for w, g in zip(want, got, strict=True):
        assert (g.ids, g.positions, g.targets) == (w.ids, w.positions, w.targets)
        torch.testing.assert_close(g.expert_logprobs, w.expert_logprobs, atol=1e-4, rtol=1e-4)
