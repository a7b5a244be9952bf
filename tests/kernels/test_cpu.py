"""The fused CPU path equals the reference: real vocabulary sizes, dtypes, masks, zero weights, tiny temperatures."""

from __future__ import annotations

import pytest
import torch

from kernels.cpu import combine_cpu
from kernels.reference import combine_reference
from tests.kernels.test_reference import TOL, assert_close_logprobs, assert_same_choice, scores_for

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
