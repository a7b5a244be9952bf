"""Seeded Gumbel-max sampling draws from the combined distribution: chi-square on a small vocabulary."""

from __future__ import annotations

import pytest
import torch

from logit_kernels import combine
from logit_kernels.reference import combine_reference, combined_scores
from logit_kernels.triton_combine import available as triton_available

# chi-square critical values at alpha = 0.001 for df = 7
CHI2_CRIT_DF7 = 24.322


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


TRITON = pytest.param("triton", marks=pytest.mark.skipif(not triton_available(), reason="needs CUDA and Triton"))


@pytest.mark.parametrize("backend", ["reference", "cpu", TRITON])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sample_distribution_matches_combined_softmax(backend: str, temperature: float) -> None:
    v, rows = 8, 20000
    base = torch.tensor([[1.0, 0.5, 0.0, -0.5, 2.0, -1.0, 0.3, 0.9], [0.2, 1.5, -0.3, 0.1, 0.4, 0.0, -2.0, 1.1]])
    x = base[:, None, :].expand(2, rows, v).contiguous()
    w = [0.7, 0.6]
    probs = torch.softmax(combined_scores(x[:, :1], w, None, temperature)[0].double(), dim=0)
    xd = x.cuda() if backend == "triton" else x
    ids = combine(xd, w, temperature=temperature, mode="sample", seed=123, backend=backend).token_ids.cpu()
    counts = torch.bincount(ids, minlength=v).double()
    assert chi_square(counts, probs) < CHI2_CRIT_DF7
    # and a wrong distribution (uniform, or the first model alone) is rejected by the same statistic
    assert chi_square(counts, torch.full((v,), 1.0 / v, dtype=torch.float64)) > CHI2_CRIT_DF7
    alone = torch.softmax(combined_scores(x[:1, :1], [1.0], None, temperature)[0].double(), dim=0)
    assert chi_square(counts, alone) > CHI2_CRIT_DF7


def test_cpu_and_reference_draw_identical_tokens() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 64, 5003, generator=g)
    for seed in range(5):
        ref = combine_reference(x, [0.2, 0.3, 0.5], mode="sample", seed=seed)
        got = combine(x, [0.2, 0.3, 0.5], mode="sample", seed=seed, backend="cpu")
        assert torch.equal(ref.token_ids, got.token_ids)
