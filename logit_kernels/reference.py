"""Pure-torch reference of the dense logit combination: the definition every fast path is tested against.

It follows the definition in ``logit_kernels.common`` literally, in float32, with full-size temporaries (per-model
log-softmax, weighted sum, bias, temperature, noise, argmax, log-sum-exp). Clarity over speed; it leaves out any
tiling or fusion — that is ``logit_kernels.cpu`` and ``logit_kernels.triton_combine``.
"""

from __future__ import annotations

import torch

from logit_kernels.common import CombineResult, check_dense, check_mode, gumbel_noise, weights_matrix


def combined_scores(
    logits: torch.Tensor,
    weights: torch.Tensor | list[float] | tuple[float, ...],
    bias: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """``(Σ_m w_m·log_softmax(x_m) + bias) / T`` as float32 ``[B, V]`` (terms with ``w == 0`` skipped).

    This differs from the ``y`` of the definition by a constant per row (``Σ_m w_m·LSE_m / T``), which changes no
    argmax, no Gumbel-max draw and no renormalised logprob — the fast paths never compute the per-model LSEs.
    A model whose row is all −inf makes the combined row all −inf (when its weight is not 0).
    """
    m, b, _ = check_dense(logits, bias, None)
    w = weights_matrix(weights, m, b).to(logits.device).T[:, :, None]  # [M, B, 1]
    x = logits.float()
    logp = torch.log_softmax(x, dim=-1)  # NaN on an all -inf row
    dead = torch.isneginf(x.amax(dim=-1, keepdim=True))
    logp = torch.where(dead, torch.full_like(logp, float("-inf")), logp)
    terms = torch.where(w == 0, torch.zeros((), device=x.device), w * logp)
    y = terms.sum(dim=0)
    if bias is not None:
        y = y + bias.float()
    return y / temperature


def combine_reference(
    logits: torch.Tensor,
    weights: torch.Tensor | list[float] | tuple[float, ...],
    *,
    bias: torch.Tensor | None = None,
    temperature: float = 1.0,
    mode: str = "greedy",
    seed: int = 0,
    targets: torch.Tensor | None = None,
    return_logprobs: bool = False,
) -> CombineResult:
    """Reference ``combine`` on dense logits ``[M, B, V]``; see ``logit_kernels.combine`` for the arguments."""
    check_mode(mode, temperature, targets)
    y = combined_scores(logits, weights, bias, temperature)
    b, v = y.shape
    row_max = y.amax(dim=-1)
    if mode == "logprobs":
        assert targets is not None
        ids = targets.to(device=y.device, dtype=torch.int64)
    else:
        scores = y
        if mode == "sample":
            rows = torch.arange(b, device=y.device)
            cols = torch.arange(v, device=y.device)
            scores = y + gumbel_noise(seed, rows, cols)
            scores = torch.where(torch.isneginf(y), y, scores)  # +inf noise on a masked token must not make NaN
        ids = scores.argmax(dim=-1)
        ids = torch.where(torch.isneginf(row_max), torch.full_like(ids, -1), ids)
    if not (return_logprobs or mode == "logprobs"):
        return CombineResult(ids)
    lse = torch.logsumexp(y, dim=-1)
    chosen = y.gather(1, ids.clamp(min=0)[:, None])[:, 0]
    lp = torch.where(ids < 0, torch.full_like(chosen, float("-inf")), chosen - lse)
    lp = torch.where(torch.isneginf(row_max), torch.full_like(lp, float("-inf")), lp)
    return CombineResult(ids, lp)
