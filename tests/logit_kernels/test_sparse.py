"""Sparse top-k combination equals a plain-Python twin: union of ids, floor for missing tokens, modes."""

from __future__ import annotations

import math

import pytest
import torch

from logit_kernels import TopK, combine
from logit_kernels.common import gumbel_noise
from logit_kernels.sparse import combine_sparse


def twin(topk, w, floor, temperature, mode, seed, targets):
    """Row by row with dicts: the definition in logit_kernels.sparse, written the slow obvious way."""
    b = topk[0].ids.shape[0]
    ids_out, lps = [], []
    for r in range(b):
        maps = [{int(i): float(v) for i, v in zip(tk.ids[r], tk.logprobs[r], strict=True) if int(i) >= 0} for tk in topk]
        fl = [min(mp.values()) if floor == "min" else floor for mp in maps]
        union = sorted(set().union(*maps) | ({int(targets[r])} if mode == "logprobs" else set()))
        y = {t: sum(0.0 if w[i] == 0 else w[i] * maps[i].get(t, fl[i]) for i in range(len(maps))) / temperature
             for t in union}  # fmt: skip
        if mode == "sample":
            s = {t: y[t] + float(gumbel_noise(seed, torch.tensor([r]), torch.tensor([t]))[0, 0]) for t in union}
        else:
            s = y
        t = int(targets[r]) if mode == "logprobs" else max(union, key=lambda k: (s[k], -k))
        lse = math.log(sum(math.exp(v - max(y.values())) for v in y.values())) + max(y.values())
        ids_out.append(t)
        lps.append(y[t] - lse)
    return ids_out, lps


def make_topk(b: int, ks: list[int], vocab: int, seed: int) -> list[TopK]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in ks:
        ids = torch.stack([torch.randperm(vocab, generator=g)[:k] for _ in range(b)])
        lp = torch.log_softmax(torch.randn(b, vocab, generator=g), dim=1).gather(1, ids)
        out.append(TopK(ids, lp))
    return out


@pytest.mark.parametrize("mode", ["greedy", "sample", "logprobs"])
@pytest.mark.parametrize("floor", ["min", -30.0])
def test_sparse_equals_twin(mode: str, floor) -> None:
    topk = make_topk(6, [5, 8, 3], vocab=40, seed=1)  # small vocabulary: many overlaps between models
    w = [1.0, 0.5, 0.0]
    targets = torch.tensor([0, 3, 7, 39, 12, 5])
    res = combine(topk, w, floor=floor, temperature=0.7, mode=mode, seed=4, targets=targets, return_logprobs=True)
    ids, lps = twin(topk, w, floor, 0.7, mode, 4, targets)
    assert res.token_ids.tolist() == ids
    assert res.logprobs is not None
    assert torch.allclose(res.logprobs.double(), torch.tensor(lps, dtype=torch.float64), atol=1e-5)


def test_sparse_union_and_floor_by_hand() -> None:
    a = TopK(torch.tensor([[10, 20]]), torch.tensor([[-0.1, -3.0]]))
    b = TopK(torch.tensor([[20, 30]]), torch.tensor([[-0.2, -2.0]]))
    # union {10, 20, 30}: 10 → -0.1 + floor_b(-2.0) = -2.1; 20 → -3.2; 30 → floor_a(-3.0) - 2.0 = -5.0
    res = combine_sparse([a, b], [1.0, 1.0], return_logprobs=True)
    assert res.token_ids.tolist() == [10]
    assert res.logprobs is not None
    expect = -2.1 - math.log(math.exp(-2.1) + math.exp(-3.2) + math.exp(-5.0))
    assert abs(float(res.logprobs[0]) - expect) < 1e-5
    # with a very low constant floor, the token both models report wins
    assert combine_sparse([a, b], [1.0, 1.0], floor=-100.0).token_ids.tolist() == [20]


def test_sparse_empty_slots_and_bias() -> None:
    a = TopK(torch.tensor([[5, -1, 7]]), torch.tensor([[-0.5, 0.0, -1.0]]))
    bias = torch.zeros(1, 10)
    bias[0, 5] = float("-inf")  # ban the best token
    assert combine_sparse([a], [1.0], bias=bias).token_ids.tolist() == [7]
