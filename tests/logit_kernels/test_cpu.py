"""The fused CPU path equals the reference (real vocabulary sizes, dtypes, masks, zero weights, tiny temperatures);
the uint32 noise equals the torch definition; the sampling pruning bound holds and prunes; two spans equal one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import logit_kernels.cpu as cpu_mod
from logit_kernels.common import (
    GUMBEL_MAX_FINITE,
    INV_2_23,
    NOISE_SHIFT,
    gumbel_from_keys,
    hash_block,
    lowbias32,
    neg_gumbel_block,
    row_keys,
)
from logit_kernels.cpu import combine_cpu
from logit_kernels.reference import combine_reference
from tests.logit_kernels.test_reference import TOL, assert_close_logprobs, assert_same_choice, scores_for

# (V, M, B): every vocabulary size, every M and B, kept to a few seconds in all
SHAPES = [(1271, 1, 1), (1271, 4, 64), (49152, 2, 7), (49152, 4, 1), (49152, 1, 64), (151936, 4, 7),
          (262144, 2, 1), (262144, 1, 7)]  # fmt: skip
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def make_inputs(v: int, m: int, b: int, dtype: torch.dtype, seed: int = 0, per_row: bool = False):
    """Random logits with −inf patches, a fully masked row (when B > 2), weights with 0 and 1, and a bias."""
    g = torch.Generator().manual_seed(seed + v + 31 * m + 7 * b)
    x = (torch.randn(m, b, v, generator=g) * 4).to(dtype)
    x[0, 0, : v // 3] = float("-inf")
    if b > 2:
        x[:, 2, :] = float("-inf")
    if per_row:
        w = torch.rand(b, m, generator=g)
        w[0, :] = 1.0
        w[b // 2, 0] = 0.0
    else:
        w = torch.tensor(([1.0, 0.0, 0.5, 0.25])[:m]) if m > 1 else torch.tensor([1.0])
    bias = torch.randn(b, v, generator=g).to(dtype)
    bias[:, -1] = float("-inf")
    return x, w, bias


def check(x, w, bias, temperature, mode, seed=3, fn=combine_cpu, device="cpu", rtol=None):
    b = x.shape[1]
    targets = torch.randint(0, x.shape[2], (b,), generator=torch.Generator().manual_seed(5))
    kw = dict(bias=bias, temperature=temperature, mode=mode, seed=seed, targets=targets, return_logprobs=True)
    ref = combine_reference(x, w, **kw)
    dev_kw = dict(kw, bias=None if bias is None else bias.to(device), targets=targets.to(device))
    got = fn(x.to(device), w.to(device) if isinstance(w, torch.Tensor) else w, **dev_kw)
    scores = scores_for(x, w, bias, temperature, mode, seed)
    tol = rtol if rtol is not None else TOL[x.dtype]
    assert_same_choice(scores, ref, got, tol)
    assert_close_logprobs(ref, got, combined := scores_for(x, w, bias, temperature, "greedy", seed), tol)
    del combined
    return ref, got


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("v,m,b", SHAPES)
def test_cpu_equals_reference(v: int, m: int, b: int, dtype: torch.dtype) -> None:
    x, w, bias = make_inputs(v, m, b, dtype)
    for mode, temperature in [("greedy", 1.0), ("sample", 0.8), ("logprobs", 1.0)]:
        check(x, w, bias if mode != "greedy" else None, temperature, mode)


@pytest.mark.parametrize("temperature", [1e-4, 0.05, 2.5])
@pytest.mark.parametrize("mode", ["greedy", "sample"])
def test_cpu_per_row_weights_and_temperatures(temperature: float, mode: str) -> None:
    x, w, bias = make_inputs(49152, 3, 7, torch.float32, per_row=True)
    ref, got = check(x, w, bias, temperature, mode)
    assert (ref.token_ids[2] == -1) and (got.token_ids[2] == -1)  # the fully masked row


def test_cpu_near_zero_temperature_sampling_is_greedy() -> None:
    x, w, bias = make_inputs(1271, 2, 7, torch.float32)
    greedy = combine_cpu(x, w, bias=bias)
    cold = combine_cpu(x, w, bias=bias, mode="sample", temperature=1e-5, seed=11, return_logprobs=True)
    assert torch.equal(greedy.token_ids, cold.token_ids)
    assert cold.logprobs is not None
    live = cold.token_ids >= 0
    assert torch.allclose(cold.logprobs[live], torch.zeros(int(live.sum())), atol=1e-4)


def test_cpu_weight_zero_model_is_ignored_even_with_inf() -> None:
    x = torch.randn(2, 3, 300)
    x[1] = float("-inf")  # the second model masks everything, but has weight 0
    res = combine_cpu(x, [1.0, 0.0], return_logprobs=True)
    assert torch.equal(res.token_ids, x[0].argmax(dim=1))
    assert res.logprobs is not None
    assert torch.allclose(res.logprobs, torch.log_softmax(x[0], dim=1).amax(dim=1), atol=1e-5)


def test_cpu_seeded_sampling_is_deterministic() -> None:
    x, w, _ = make_inputs(151936, 2, 7, torch.bfloat16)
    a = combine_cpu(x, w, mode="sample", seed=42).token_ids
    b = combine_cpu(x, w, mode="sample", seed=42).token_ids
    c = combine_cpu(x, w, mode="sample", seed=43).token_ids
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


# --- the fast noise and the exact sampling pruning (logit_kernels.common / logit_kernels.cpu) ---


def test_gumbel_noise_is_finite_and_bounded_for_every_hash_value() -> None:
    """All 2**32 hash values map onto 2**23 values of q; through the torch formula each gives a finite noise value
    (no forced token), ≤ the pruning bound, and the bound is tight."""
    q = torch.arange(1 << 23, dtype=torch.int64)
    h = q << NOISE_SHIFT  # the smallest hash with each q
    u = ((h >> NOISE_SHIFT).to(torch.float32) + 0.5) * INV_2_23
    assert float(u.min()) > 0.0 and float(u.max()) < 1.0
    g = -torch.log(-torch.log(u))
    assert torch.isfinite(g).all()
    top = float(g.max())
    assert top <= GUMBEL_MAX_FINITE < top + 1e-3  # the bound is tight


def test_uint32_noise_equals_the_torch_definition() -> None:
    g = torch.Generator().manual_seed(0)
    keys = row_keys(17, torch.arange(9))
    cols = torch.randint(0, 262144, (3000,), generator=g)
    ref = gumbel_from_keys(keys[:, None], cols[None, :])
    shape = (9, 3000)
    out, hb, tmp = np.empty(shape, np.float32), np.empty(shape, np.uint32), np.empty(shape, np.uint32)
    h = hash_block(keys.numpy().astype(np.uint32)[:, None], cols.numpy().astype(np.uint32), hb, tmp)
    assert h.astype(np.int64).tolist() == lowbias32(keys[:, None] ^ cols[None, :]).tolist()
    neg = neg_gumbel_block(keys.numpy().astype(np.uint32)[:, None], cols.numpy().astype(np.uint32), out, hb, tmp)
    assert torch.isfinite(ref).all()
    assert torch.equal(-neg, ref)



def _peaked(v: int, b: int, m: int, seed: int) -> torch.Tensor:
    """LM-like logits: a bulk around 0 and a few tokens 15–30 above it."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, b, v, generator=g) * 2
    top = torch.randint(0, v, (b, 40), generator=g)
    for i in range(m):
        x[i].scatter_(1, top, 15 + 15 * torch.rand(b, 40, generator=g))
    return x


def test_pruned_sampling_is_exact_and_prunes(monkeypatch: pytest.MonkeyPatch) -> None:
    x = _peaked(151936, 6, 2, seed=1)
    seen = [0]
    real = cpu_mod.neg_gumbel_block

    def counting(keys, cols, *rest):
        seen[0] += np.broadcast(keys, cols).size
        return real(keys, cols, *rest)

    monkeypatch.setattr(cpu_mod, "neg_gumbel_block", counting)
    for seed in range(4):
        for temperature in (1.0, 0.7):
            ref = combine_reference(x, [0.6, 0.4], mode="sample", seed=seed, temperature=temperature)
            got = combine_cpu(x, [0.6, 0.4], mode="sample", seed=seed, temperature=temperature)
            assert torch.equal(ref.token_ids, got.token_ids)
    assert 0 < seen[0] < 0.2 * 8 * 6 * 151936  # noise computed for under a fifth of the tokens


def test_a_near_certain_token_is_always_drawn() -> None:
    """A token 40 nats above the rest has probability 1 − 151,935·e^-40 ≈ 1: no seed and row may draw another one
    (a noise definition with a +inf value would force a random token in ~1 % of rows at this vocabulary)."""
    v, b = 151936, 64
    x = torch.randn(1, b, v, generator=torch.Generator().manual_seed(9))
    top = torch.randint(0, v, (b,), generator=torch.Generator().manual_seed(10))
    x[0, torch.arange(b), top] = 40.0
    for seed in range(20):
        assert torch.equal(combine_cpu(x, [1.0], mode="sample", seed=seed).token_ids, top)
        assert torch.equal(combine_reference(x, [1.0], mode="sample", seed=seed).token_ids, top)


@pytest.mark.parametrize("seed", range(4))
def test_one_model_greedy_short_path_equals_the_reference_on_ties_and_masks(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-3, 4, (1, 50, 37), generator=g).float()  # small integers: many ties
    x[torch.rand(1, 50, 37, generator=g) < 0.3] = float("-inf")
    x[0, 7] = float("-inf")  # one fully masked row
    for w in ([1.0], [0.3], torch.tensor([2.0])):
        got = combine_cpu(x, w, mode="greedy").token_ids
        assert torch.equal(got, combine_reference(x, w, mode="greedy").token_ids)
        assert int(got[7]) == -1
