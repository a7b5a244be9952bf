"""The reference against a float64 brute force of the definition, plus the shared comparison helpers."""

from __future__ import annotations

import math

import pytest
import torch

from logit_kernels.common import CombineResult, gumbel_noise, lowbias32, lowbias32_int
from logit_kernels.reference import combine_reference, combined_scores

# Inputs are upcast exactly to float32, so a dtype changes only how far apart near-equal scores may be: the
# tolerance (relative to the row's largest |score|) covers float32 accumulation order and the per-model LSE shift.
TOL = {torch.float32: 2e-6, torch.bfloat16: 2e-6, torch.float16: 2e-6}


def scores_for(x, w, bias, temperature, mode, seed) -> torch.Tensor:
    """The reference's per-token selection scores (y, plus Gumbel noise when sampling)."""
    y = combined_scores(x, w, bias, temperature)
    if mode == "sample":
        y = y + gumbel_noise(seed, torch.arange(y.shape[0]), torch.arange(y.shape[1]))
    return y


def assert_same_choice(scores: torch.Tensor, ref: CombineResult, got: CombineResult, rtol: float) -> None:
    """Token ids equal the reference's, except near-ties: then the chosen score is within tolerance of the best."""
    ref_ids, got_ids = ref.token_ids.cpu(), got.token_ids.cpu()
    assert got_ids.shape == ref_ids.shape and got_ids.dtype == torch.int64
    assert ((ref_ids < 0) == (got_ids < 0)).all()
    diff = (ref_ids != got_ids).nonzero().flatten().tolist()
    for b in diff:
        row = scores[b]
        scale = float(row[torch.isfinite(row)].abs().max()) + 1.0
        assert float(row[ref_ids[b]] - row[got_ids[b]]) <= rtol * scale * 10, f"row {b}: {ref_ids[b]} vs {got_ids[b]}"
    assert len(diff) <= max(1, len(ref_ids) // 20), f"too many near-ties: {diff}"


def assert_close_logprobs(ref: CombineResult, got: CombineResult, scores: torch.Tensor, rtol: float) -> None:
    assert ref.logprobs is not None and got.logprobs is not None
    same = ref.token_ids.cpu() == got.token_ids.cpu()
    r, g = ref.logprobs.cpu()[same], got.logprobs.cpu()[same]
    assert (torch.isneginf(r) == torch.isneginf(g)).all()
    fin = torch.isfinite(r)
    finite_scores = scores[torch.isfinite(scores)]
    scale = float(finite_scores.abs().max()) + 1.0 if finite_scores.numel() else 1.0
    assert torch.allclose(r[fin], g[fin], rtol=0, atol=rtol * scale * 50), (r[fin] - g[fin]).abs().max()


def brute_force(x, w, bias, temperature, mode, seed, targets):
    """float64, one row at a time, straight from the definition (Σ w·log_softmax, renormalised)."""
    m, b, v = x.shape
    w2 = torch.as_tensor(w, dtype=torch.float64)
    w2 = w2[None].expand(b, m) if w2.dim() == 1 else w2
    ids, lps = [], []
    for r in range(b):
        y = torch.zeros(v, dtype=torch.float64)
        for i in range(m):
            if w2[r, i] == 0:
                continue
            y = y + w2[r, i] * torch.log_softmax(x[i, r].double(), dim=0)
        if bias is not None:
            y = y + bias[r].double()
        y = torch.nan_to_num(y, nan=-math.inf) / temperature
        s = y + gumbel_noise(seed, torch.tensor([r]), torch.arange(v))[0].double() if mode == "sample" else y
        t = int(targets[r]) if mode == "logprobs" else (int(s.argmax()) if torch.isfinite(s.max()) else -1)
        ids.append(t)
        lps.append(float(y[t] - torch.logsumexp(y, 0)) if t >= 0 and torch.isfinite(y.max()) else -math.inf)
    return torch.tensor(ids), torch.tensor(lps, dtype=torch.float64)


@pytest.mark.parametrize("mode", ["greedy", "sample", "logprobs"])
@pytest.mark.parametrize("temperature", [1.0, 0.6, 1e-3])
def test_reference_matches_brute_force(mode: str, temperature: float) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5, 1271, generator=g) * 3
    x[1, 2, :600] = float("-inf")  # partly masked row
    x[:, 4, :] = float("-inf")  # a fully masked row
    w = torch.tensor([[0.0, 1.0, 0.5]] * 5)
    bias = torch.randn(5, 1271, generator=g)
    targets = torch.randint(0, 1271, (5,), generator=g)
    ref = combine_reference(x, w, bias=bias, temperature=temperature, mode=mode, seed=9, targets=targets,
                            return_logprobs=True)  # fmt: skip
    ids, lps = brute_force(x, w, bias, temperature, mode, 9, targets)
    assert ref.token_ids[:4].tolist() == ids[:4].tolist()
    assert ref.token_ids[4] == (targets[4] if mode == "logprobs" else -1)
    assert ref.logprobs is not None and torch.isneginf(ref.logprobs[4])
    assert torch.allclose(ref.logprobs[:4].double(), lps[:4], atol=1e-3 * max(1.0, 1 / temperature), rtol=1e-5)


def test_hash_torch_equals_python_and_noise_is_a_pure_function() -> None:
    xs = [0, 1, 2, 12345, 2**31, 2**32 - 1]
    assert lowbias32(torch.tensor(xs)).tolist() == [lowbias32_int(x) for x in xs]
    a = gumbel_noise(7, torch.arange(4), torch.arange(100))
    b = gumbel_noise(7, torch.tensor([2, 3]), torch.arange(50, 100))
    assert torch.equal(a[2:, 50:], b)
    assert not torch.equal(a, gumbel_noise(8, torch.arange(4), torch.arange(100)))
    assert torch.isfinite(a).all()


def test_bad_arguments_raise() -> None:
    x = torch.randn(2, 3, 10)
    with pytest.raises(ValueError):
        combine_reference(x, [1.0])
    with pytest.raises(ValueError):
        combine_reference(x, [1.0, 1.0], mode="beam")
    with pytest.raises(ValueError):
        combine_reference(x, [1.0, 1.0], temperature=0.0)
    with pytest.raises(ValueError):
        combine_reference(x, [1.0, 1.0], mode="logprobs")
