"""Fused CPU path of the dense logit combination: one streaming pass over the vocabulary in cache-sized tiles.

For each vocabulary tile ``[B, C]`` it accumulates ``Σ_m w·x`` into one float32 buffer in place (the input dtype is
cast inside the kernel, no ``[M, B, V]`` temporaries), adds the bias, applies the temperature only where the mode
needs it, adds Gumbel noise when sampling, and keeps a running (max, argmax) and — when logprobs are wanted — an
online log-sum-exp per row. Every tile stays in cache, so the logits are read once from memory.

Same answer as ``kernels.reference`` (up to float rounding; see ``kernels.common`` for the definition). What it
leaves out: threading policy (it uses torch's intra-op threads as configured by the caller) and sparse inputs.
"""

from __future__ import annotations

import math

import torch

from kernels.common import CombineResult, check_dense, check_mode, gumbel_from_keys, row_keys, weights_matrix

TILE_ELEMS = 1 << 20  # float32 elements per tile buffer (4 MiB): stays in the last-level cache


def _tile_cols(b: int, v: int) -> int:
    cols = max(256, TILE_ELEMS // max(b, 1))
    return min(v, cols)


def combine_cpu(
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
    """Fused ``combine`` on dense CPU logits ``[M, B, V]``; see ``kernels.combine`` for the arguments."""
    check_mode(mode, temperature, targets)
    m, b, v = check_dense(logits, bias, targets)
    w = weights_matrix(weights, m, b)
    need_lse = return_logprobs or mode == "logprobs"
    sample = mode == "sample"
    scale_t = need_lse or sample  # greedy's argmax does not depend on T
    per_row = not bool((w == w[0:1]).all())
    if per_row:
        wcols = [w[:, i : i + 1].contiguous() for i in range(m)]
        active = [i for i in range(m) if bool((w[:, i] != 0).any())]
        zero_rows = [bool((w[:, i] == 0).any()) for i in range(m)]
    else:
        zero_rows = [False] * m
        scal = [float(w[0, i]) for i in range(m)]
        active = [i for i in range(m) if scal[i] != 0.0]

    cols = _tile_cols(b, v)
    acc_buf = torch.empty(b, cols, dtype=torch.float32)
    tmp_buf = torch.empty(b, cols, dtype=torch.float32) if (need_lse or sample) else None
    term_buf = torch.empty(b, cols, dtype=torch.float32) if per_row and any(zero_rows) else acc_buf
    best_val = torch.full((b,), float("-inf"))
    best_idx = torch.full((b,), -1, dtype=torch.int64)
    run_max = torch.full((b,), float("-inf")) if need_lse else None
    run_sum = torch.zeros(b) if need_lse else None
    keys = row_keys(seed, torch.arange(b))[:, None] if sample else None
    col_ids = torch.arange(v, dtype=torch.int64) if sample else None

    for c0 in range(0, v, cols):
        c1 = min(c0 + cols, v)
        n = c1 - c0
        acc = acc_buf[:, :n]
        if not active:
            acc.zero_()
        for j, i in enumerate(active):
            xt = logits[i, :, c0:c1]
            if per_row:
                if not zero_rows[i]:
                    if j == 0:
                        torch.mul(xt, wcols[i], out=acc)
                    else:
                        acc.addcmul_(xt, wcols[i])
                else:  # rows with weight 0: 0 · (−inf) must contribute 0, not NaN
                    term = acc if j == 0 else term_buf[:, :n]
                    torch.mul(xt, wcols[i], out=term)
                    term.nan_to_num_(nan=0.0, posinf=math.inf, neginf=-math.inf)
                    if j > 0:
                        acc.add_(term)
            elif j == 0:
                torch.mul(xt, scal[i], out=acc)
            else:
                acc.add_(xt, alpha=scal[i])
        if bias is not None:
            acc.add_(bias[:, c0:c1])
        if scale_t and temperature != 1.0:
            acc.div_(temperature)
        if sample:
            assert tmp_buf is not None and keys is not None and col_ids is not None
            scored = tmp_buf[:, :n]
            torch.add(acc, gumbel_from_keys(keys, col_ids[None, c0:c1]), out=scored)
        else:
            scored = acc
        vals, idx = scored.max(dim=1)
        better = vals > best_val
        best_val = torch.where(better, vals, best_val)
        best_idx = torch.where(better, idx + c0, best_idx)
        if need_lse:
            assert run_max is not None and run_sum is not None and tmp_buf is not None
            tmax = vals if not sample else acc.amax(dim=1)
            new_max = torch.maximum(run_max, tmax)
            safe = torch.where(torch.isneginf(new_max), torch.zeros_like(new_max), new_max)
            e = tmp_buf[:, :n]
            torch.sub(acc, safe[:, None], out=e)
            e.exp_()
            run_sum = run_sum * torch.exp(run_max - safe) + e.sum(dim=1)
            run_max = new_max

    if mode == "logprobs":
        assert targets is not None
        ids = targets.to(torch.int64).clone()
    else:
        ids = torch.where(torch.isneginf(best_val), torch.full_like(best_idx, -1), best_idx)
    if not need_lse:
        return CombineResult(ids)
    assert run_max is not None and run_sum is not None
    lse = run_max + torch.log(run_sum)
    chosen = _scores_at(logits, w, active, bias, temperature, ids.clamp(min=0))
    lp = chosen - lse
    lp = torch.where((ids < 0) | torch.isneginf(run_max), torch.full_like(lp, float("-inf")), lp)
    return CombineResult(ids, lp)


def _scores_at(
    logits: torch.Tensor,
    w: torch.Tensor,
    active: list[int],
    bias: torch.Tensor | None,
    temperature: float,
    ids: torch.Tensor,
) -> torch.Tensor:
    """``y[b, ids[b]]`` computed the same way as the tiles (same operation order), float32 ``[B]``."""
    b = ids.shape[0]
    rows = torch.arange(b)
    acc = torch.zeros(b)
    for j, i in enumerate(active):
        x = logits[i, rows, ids].float()
        term = torch.where(w[:, i] == 0, torch.zeros_like(x), x * w[:, i])
        acc = term if j == 0 else acc + term
    if bias is not None:
        acc = acc + bias[rows, ids].float()
    if temperature != 1.0:
        acc = acc / temperature
    return acc
