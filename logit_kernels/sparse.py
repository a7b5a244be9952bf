"""Logit combination over per-model sparse top-k logprobs (remote models that report only their top-k).

Each model m reports, per row, ``K_m`` token ids with their logprobs (``TopK``; id −1 marks an empty slot). The
candidates of a row are the union of all models' ids (plus the targets in ``logprobs`` mode). A token that model m
did not report gets model m's *floor*: by default the smallest logprob m reported in that row (an upper bound on the
missing value), or a given constant. Then, over the union only, exactly the dense definition of ``logit_kernels.common``:

    y[b, u] = (Σ_m w[b, m] · x̂[m, b, u] + bias[b, id_u]) / T,   p = softmax over the union's tokens,

with greedy (ties → smallest token id), Gumbel-max sampling whose noise is the same pure function of
(seed, row, **token id**) as the dense paths, and logprobs renormalised over the union. Plain torch, any device; the
union is at most Σ K_m wide, so no fused kernel is needed. What it leaves out: dense logits (see ``logit_kernels.cpu`` /
``logit_kernels.triton_combine``) and estimating the mass outside the union.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from logit_kernels.common import CombineResult, check_mode, gumbel_from_keys, row_keys, weights_matrix


@dataclass
class TopK:
    """One model's top-k per row: ``ids`` ``[B, K]`` int64 (−1 = empty slot), ``logprobs`` ``[B, K]`` float."""

    ids: torch.Tensor
    logprobs: torch.Tensor


def _floors(tk: TopK, floor: float | str) -> torch.Tensor:
    vals = tk.logprobs.float()
    if isinstance(floor, str):
        if floor != "min":
            raise ValueError(f"floor must be 'min' or a number, got {floor!r}")
        masked = torch.where(tk.ids >= 0, vals, torch.full_like(vals, float("inf")))
        f = masked.amin(dim=1)
        return torch.where(torch.isinf(f) & (f > 0), torch.full_like(f, float("-inf")), f)  # empty row → -inf
    return torch.full((vals.shape[0],), float(floor), device=vals.device)


def combine_sparse(
    topk: Sequence[TopK],
    weights: torch.Tensor | list[float] | tuple[float, ...],
    *,
    floor: float | str | Sequence[float | str] = "min",
    bias: torch.Tensor | None = None,
    temperature: float = 1.0,
    mode: str = "greedy",
    seed: int = 0,
    targets: torch.Tensor | None = None,
    return_logprobs: bool = False,
) -> CombineResult:
    """``combine`` over the union of the models' top-k; ``floor`` is one value/"min" or one per model."""
    check_mode(mode, temperature, targets)
    m = len(topk)
    if m < 1:
        raise ValueError("need at least one model's top-k")
    b = topk[0].ids.shape[0]
    for tk in topk:
        if tk.ids.dim() != 2 or tk.ids.shape != tk.logprobs.shape or tk.ids.shape[0] != b:
            raise ValueError("each TopK needs ids and logprobs of the same shape [B, K]")
    dev = topk[0].ids.device
    w = weights_matrix(weights, m, b).to(dev)
    floors = list(floor) if isinstance(floor, (list, tuple)) else [floor] * m
    if len(floors) != m:
        raise ValueError(f"need one floor per model ({m}), got {len(floors)}")

    cols = [tk.ids.to(torch.int64) for tk in topk]
    if targets is not None and tuple(targets.shape) != (b,):
        raise ValueError(f"targets must be [B] = {(b,)}, got {tuple(targets.shape)}")
    if mode == "logprobs":
        assert targets is not None
        cols.append(targets.to(device=dev, dtype=torch.int64)[:, None])
    union, _ = torch.cat(cols, dim=1).sort(dim=1)  # [B, S]
    dup = torch.zeros_like(union, dtype=torch.bool)
    dup[:, 1:] = union[:, 1:] == union[:, :-1]
    valid = (union >= 0) & ~dup

    y = torch.zeros(union.shape, dtype=torch.float32, device=dev)
    for i, tk in enumerate(topk):
        ids = tk.ids.to(torch.int64)
        eq = (union[:, :, None] == ids[:, None, :]) & (ids[:, None, :] >= 0)  # [B, S, K]
        vals = tk.logprobs.float()[:, None, :].expand_as(eq)
        got = torch.where(eq, vals, torch.full_like(vals, float("-inf"))).amax(dim=-1)
        x = torch.where(eq.any(dim=-1), got, _floors(tk, floors[i])[:, None].expand_as(got))
        wi = w[:, i : i + 1]
        y = y + torch.where(wi == 0, torch.zeros_like(x), x * wi)
    if bias is not None:
        y = y + bias.float().gather(1, union.clamp(min=0))
    y = torch.where(valid, y, torch.full_like(y, float("-inf")))
    y = y / temperature

    row_max = y.amax(dim=1)
    rows = torch.arange(b, device=dev)
    if mode == "logprobs":
        assert targets is not None
        ids_out = targets.to(device=dev, dtype=torch.int64)
        pos = ((union == ids_out[:, None]) & valid).to(torch.int64).argmax(dim=1)
    else:
        scores = y
        if mode == "sample":
            scores = y + gumbel_from_keys(row_keys(seed, rows)[:, None], union.clamp(min=0))
        pos = scores.argmax(dim=1)  # union is sorted, so the first maximum is the smallest token id
        ids_out = torch.where(torch.isneginf(row_max), torch.full_like(pos, -1), union[rows, pos])
    if not (return_logprobs or mode == "logprobs"):
        return CombineResult(ids_out)
    lse = torch.logsumexp(y, dim=1)
    lp = y[rows, pos] - lse
    lp = torch.where(torch.isneginf(row_max) | (ids_out < 0), torch.full_like(lp, float("-inf")), lp)
    return CombineResult(ids_out, lp)
