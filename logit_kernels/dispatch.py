"""``combine``: the one entry point of the fused logit combination, dispatched by input kind and device.

Sparse per-model top-k → ``logit_kernels.sparse``; dense CUDA logits with Triton present → ``logit_kernels.triton_combine``;
dense CPU logits → ``logit_kernels.cpu``; anything else (another device, or CUDA without Triton) → ``logit_kernels.reference``.
``backend`` forces one path (tests and benchmarks use it). What it leaves out: the math (see ``logit_kernels.common``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from logit_kernels import triton_combine
from logit_kernels.common import CombineResult
from logit_kernels.cpu import combine_cpu
from logit_kernels.reference import combine_reference
from logit_kernels.sparse import TopK, combine_sparse

Backend = Literal["auto", "reference", "cpu", "triton"]


def pick_backend(logits: torch.Tensor) -> str:
    """The path ``combine`` takes for dense ``logits`` with ``backend='auto'``."""
    if logits.device.type == "cuda" and triton_combine.available():
        return "triton"
    if logits.device.type == "cpu":
        return "cpu"
    return "reference"


def combine(
    logits: torch.Tensor | Sequence[TopK],
    weights: torch.Tensor | list[float] | tuple[float, ...],
    *,
    bias: torch.Tensor | None = None,
    temperature: float = 1.0,
    mode: str = "greedy",
    seed: int = 0,
    targets: torch.Tensor | None = None,
    return_logprobs: bool = False,
    floor: float | str | Sequence[float | str] = "min",
    backend: Backend = "auto",
) -> CombineResult:
    """Combine M models' next-token scores and pick one token per row.

    Args:
        logits: dense ``[M, B, V]`` (float32 / bfloat16 / float16, −inf allowed) or a list of M ``TopK``.
        weights: ``[M]`` or ``[B, M]``, finite, ≥ 0; a weight of 0 drops that model (even where it has −inf).
        bias: optional ``[B, V]`` added to the weighted sum (e.g. −inf to ban tokens).
        temperature: ``T > 0``; divides the combined scores (greedy ignores it).
        mode: ``greedy`` (argmax, ties → smallest id), ``sample`` (seeded Gumbel-max, deterministic per
            (seed, row, token id)), or ``logprobs`` (score the given ``targets``).
        return_logprobs: also return the logprob of the chosen token under the combined distribution.
        floor: sparse only — the value for a token a model did not report ("min" = its smallest reported logprob).
        backend: ``auto`` or a forced path.

    Returns:
        ``CombineResult(token_ids [B] int64 (−1 for a fully masked row), logprobs [B] float32 or None)``.
    """
    kw = dict(bias=bias, temperature=temperature, mode=mode, seed=seed, targets=targets,
              return_logprobs=return_logprobs)  # fmt: skip
    if not isinstance(logits, torch.Tensor):
        return combine_sparse(list(logits), weights, floor=floor, **kw)  # type: ignore[arg-type]
    path = pick_backend(logits) if backend == "auto" else backend
    if path == "triton":
        return triton_combine.combine_triton(logits, weights, **kw)  # type: ignore[arg-type]
    if path == "cpu":
        if logits.device.type != "cpu":
            raise ValueError("backend='cpu' needs CPU tensors")
        return combine_cpu(logits, weights, **kw)  # type: ignore[arg-type]
    if path == "reference":
        return combine_reference(logits, weights, **kw)  # type: ignore[arg-type]
    raise ValueError(f"unknown backend {backend!r}")
