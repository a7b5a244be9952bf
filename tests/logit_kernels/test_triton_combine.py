"""The Triton kernel equals the reference on a CUDA device (skipped without a GPU and Triton)."""

from __future__ import annotations

import pytest
import torch

from logit_kernels import combine, pick_backend
from logit_kernels.triton_combine import available, combine_triton, num_splits
from tests.logit_kernels.test_cpu import DTYPES, check, make_inputs

needs_gpu = pytest.mark.skipif(not available(), reason="needs a CUDA device and Triton")

SHAPES = [(1271, 1, 1), (1271, 4, 64), (49152, 2, 7), (151936, 4, 1), (151936, 2, 64), (262144, 1, 7),
          (262144, 4, 16)]  # fmt: skip
# Triton's division and log may differ from torch's by an ulp: a little more room than the CPU path
TRITON_RTOL = 1e-5


def test_num_splits_fills_the_gpu_at_small_batch() -> None:
    assert num_splits(1, 151936, 132, block=2048, programs_per_sm=4) == 75  # capped by blocks of the vocabulary
    assert num_splits(1, 262144 * 8, 132, block=2048, programs_per_sm=4) == 528
    assert num_splits(64, 151936, 132, block=2048, programs_per_sm=4) == 9
    assert num_splits(1024, 1271, 132, block=2048) == 1
    assert num_splits(64, 151936, 132) == 17  # the default shape: 8 programs per SM


@needs_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("v,m,b", SHAPES)
def test_triton_equals_reference(v: int, m: int, b: int, dtype: torch.dtype) -> None:
    x, w, bias = make_inputs(v, m, b, dtype)
    for mode, temperature in [("greedy", 1.0), ("sample", 0.8), ("logprobs", 1.0)]:
        check(x, w, bias if mode != "greedy" else None, temperature, mode, fn=combine_triton, device="cuda",
              rtol=TRITON_RTOL)  # fmt: skip


@needs_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("temperature", [1e-4, 0.05, 2.5])
@pytest.mark.parametrize("mode", ["greedy", "sample"])
def test_triton_per_row_weights_and_temperatures(temperature: float, mode: str) -> None:
    x, w, bias = make_inputs(49152, 3, 7, torch.float32, per_row=True)
    ref, got = check(x, w, bias, temperature, mode, fn=combine_triton, device="cuda", rtol=TRITON_RTOL)
    assert int(got.token_ids[2]) == -1


@needs_gpu
@pytest.mark.gpu
def test_triton_dispatch_and_seeded_determinism() -> None:
    x, w, _ = make_inputs(151936, 2, 7, torch.bfloat16)
    xc = x.cuda()
    assert pick_backend(xc) == "triton"
    a = combine(xc, w, mode="sample", seed=42).token_ids
    assert torch.equal(a, combine(xc, w, mode="sample", seed=42).token_ids)
    assert not torch.equal(a, combine(xc, w, mode="sample", seed=43).token_ids)
    assert torch.equal(a.cpu(), combine(x, w, mode="sample", seed=42).token_ids)


@needs_gpu
def test_triton_draws_a_near_certain_token_in_every_row() -> None:
    """No forced draws: a token 40 nats above the rest wins in all 64 rows × 20 seeds (see logit_kernels.common)."""
    v, b = 151936, 64
    x = torch.randn(1, b, v, device="cuda")
    top = torch.randint(0, v, (b,), device="cuda")
    x[0, torch.arange(b, device="cuda"), top] = 40.0
    for seed in range(20):
        assert torch.equal(combine_triton(x, [1.0], mode="sample", seed=seed).token_ids, top)
