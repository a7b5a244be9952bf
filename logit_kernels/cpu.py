"""Fused CPU path of the dense logit combination: one streaming pass over the vocabulary in small tiles.

For each vocabulary tile ``[B, C]`` it accumulates ``Σ_m w·x`` into one float32 buffer in place (the input dtype is
cast inside the kernel, no ``[M, B, V]`` temporaries), adds the bias, applies the temperature only where the mode
needs it, adds Gumbel noise when sampling, and keeps a running (max, argmax) and — when logprobs are wanted — an
online log-sum-exp per row (one ``exp`` per element, no per-model log-softmax). Every tile stays in cache, so the
logits are read once from memory.

Threads: a tile holds at most ``TILE_ELEMS`` elements, below torch's intra-op grain size, so every torch op runs on
the calling thread (no OpenMP barrier per op, which costs whole scheduler slices on a busy machine). Parallelism is
coarse instead: the vocabulary is cut into ``min(2, torch.get_num_threads())`` contiguous spans scanned by worker
threads (torch and numpy release the GIL), whose partials are merged (ties → the smaller index, as in the reference).

Sampling (``logit_kernels.common.neg_gumbel_block`` computes the noise in uint32 arithmetic) prunes exactly: a token whose
``y`` is below ``best − G_BOUND`` (``best`` = a score already seen in that row) cannot win or tie, because every
finite noise value is ≤ ``GUMBEL_MAX_FINITE`` (``prune_threshold``); when under a quarter of a tile's tokens pass,
noise is computed only for those.

One model, greedy, no bias (a collaboration's per-token pick from one model) is just that model's argmax: a short
path with no tiling (a tiny vocabulary's call then costs microseconds, not the scan's set-up).

Same answer as ``logit_kernels.reference`` (up to float rounding; see ``logit_kernels.common`` for the definition). What it leaves
out: sparse inputs; thread count beyond 2.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from logit_kernels.common import (
    GUMBEL_MAX_FINITE,
    CombineResult,
    check_dense,
    check_mode,
    neg_gumbel_block,
    row_keys,
    weights_matrix,
)

TILE_ELEMS = 32767  # elements per tile: under torch's grain size (32768), so ops stay on the calling thread
MIN_PARALLEL_ELEMS = 1 << 18  # below this many B·V elements one thread does it all
MAX_WORKERS = 2


def prune_threshold(best: torch.Tensor) -> torch.Tensor:
    """Per row, the score ``y`` below which a token can neither win nor tie against a seen score ``best`` (``[B]``).

    Every finite noise value is ≤ ``GUMBEL_MAX_FINITE``, so ``y < best − GUMBEL_MAX_FINITE − δ`` gives
    ``y + g < best − δ``, and with ``δ = 1e-3 + 1e-5·|best|`` (far above float32 rounding of ``y + g``) the rounded
    score stays below ``best``. ``best = −inf`` → −inf (nothing pruned); ``+inf`` (row decided) → +inf (all pruned).
    """
    margin = 1e-3 + 1e-5 * best.abs().clamp(max=1e30)
    return best - GUMBEL_MAX_FINITE - margin


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="combine-cpu")
    return _POOL


@dataclass
class _Job:
    """Everything a span scan needs (read-only, shared by the workers)."""

    logits: torch.Tensor
    bias: torch.Tensor | None
    active: list[int]
    scal: list[float] | None  # one weight per model when all rows share them
    wcols: list[torch.Tensor] | None  # [B, 1] weight columns otherwise
    zero_rows: list[bool]
    temperature: float
    scale_t: bool
    need_lse: bool
    want_best: bool
    sample: bool
    keys: np.ndarray | None  # [B, 1] uint32 row keys


@dataclass
class _Partial:
    best_val: torch.Tensor
    best_idx: torch.Tensor
    lse: torch.Tensor | None


def _tile_cols(b: int, v: int) -> int:
    return min(v, max(64, TILE_ELEMS // max(b, 1)))


def _fill_tile(job: _Job, acc: torch.Tensor, term: torch.Tensor, c0: int, c1: int) -> None:
    """``acc ← Σ_m w·x (+ bias) (/ T)`` for columns ``[c0, c1)``, in float32."""
    x = job.logits
    if not job.active:
        acc.zero_()
    for j, i in enumerate(job.active):
        xt = x[i, :, c0:c1]
        if job.scal is not None:
            wt = job.scal[i]
            if j == 0:  # upcast first, then scale in float32 (as the reference does)
                acc.copy_(xt)
                if wt != 1.0:
                    acc.mul_(wt)
            else:
                acc.add_(xt, alpha=wt)
            continue
        assert job.wcols is not None
        if not job.zero_rows[i]:
            if j == 0:
                torch.mul(xt, job.wcols[i], out=acc)
            else:
                acc.addcmul_(xt, job.wcols[i])
        else:  # rows with weight 0: 0 · (−inf) must contribute 0, not NaN
            dst = acc if j == 0 else term
            torch.mul(xt, job.wcols[i], out=dst)
            dst.nan_to_num_(nan=0.0, posinf=math.inf, neginf=-math.inf)
            if j > 0:
                acc.add_(term)
    if job.bias is not None:
        acc.add_(job.bias[:, c0:c1])
    if job.scale_t and job.temperature != 1.0:
        acc.div_(job.temperature)


def _scan(job: _Job, start: int, end: int) -> _Partial:
    """Stream columns ``[start, end)``: per-tile (best score, its index) and log-sum-exp, reduced over tiles at the end."""
    b = job.logits.shape[1]
    cols = _tile_cols(b, end - start)
    n_tiles = -(-(end - start) // cols)
    acc_buf = torch.empty(b, cols)
    term_buf = torch.empty(b, cols)
    tile_val = torch.full((n_tiles, b), -math.inf)
    tile_idx = torch.zeros((n_tiles, b), dtype=torch.int64)
    tile_lse = torch.empty((n_tiles, b)) if job.need_lse else None
    best_val = torch.full((b,), -math.inf)  # running lower bound of the best score (sampling's pruning)
    noise_np = np.empty((b, cols), dtype=np.float32)
    hash_np = np.empty((b, cols), dtype=np.uint32)
    hash_tmp = np.empty((b, cols), dtype=np.uint32)
    col_ids = np.arange(start, end, dtype=np.uint32)

    for t in range(n_tiles):
        c0 = start + t * cols
        c1 = min(c0 + cols, end)
        n = c1 - c0
        acc = acc_buf[:, :n] if n == cols else torch.empty(b, n)
        _fill_tile(job, acc, term_buf[:, :n], c0, c1)
        if job.sample:
            assert job.keys is not None
            tile_cols = col_ids[c0 - start : c1 - start]
            cand = acc >= prune_threshold(best_val)[:, None]  # the only tokens that can win or tie
            k = int(cand.sum())
            if 4 * k > b * n:  # dense: noise for the whole tile
                g = neg_gumbel_block(job.keys, tile_cols[None, :], noise_np[:, :n], hash_np[:, :n], hash_tmp[:, :n])
                torch.max(torch.sub(acc, g, out=g), dim=1, out=(tile_val[t], tile_idx[t]))  # y + g = y − (−g)
            elif k:  # sparse: noise only at the candidates
                r, c = cand.nonzero(as_tuple=True)
                rn, cn = r.numpy(), c.numpy()
                g = neg_gumbel_block(job.keys[rn, 0], tile_cols[cn], noise_np.reshape(-1)[:k], hash_np.reshape(-1)[:k],
                                     hash_tmp.reshape(-1)[:k])  # fmt: skip
                s = acc[r, c] - g
                row_best = torch.full((b,), -math.inf).scatter_reduce_(0, r, s, "amax")
                hit = s == row_best[r]
                first = torch.full((b,), n, dtype=torch.int64).scatter_reduce_(0, r[hit], c[hit], "amin")
                tile_val[t] = row_best
                tile_idx[t] = first.clamp_(max=n - 1)
            torch.maximum(best_val, tile_val[t], out=best_val)
        elif job.want_best:
            torch.max(acc, dim=1, out=(tile_val[t], tile_idx[t]))
        if tile_lse is not None:
            torch.logsumexp(acc, dim=1, out=tile_lse[t])
    offsets = torch.arange(start, end, cols, dtype=torch.int64)[:, None]
    tile = tile_val.argmax(dim=0)  # first maximum → the earliest tile; within a tile max() gave the first index
    rows_all = torch.arange(b)
    best = tile_val[tile, rows_all]
    idx = tile_idx[tile, rows_all] + offsets[tile, 0]
    lse = torch.logsumexp(tile_lse, dim=0) if tile_lse is not None else None
    return _Partial(best, idx, lse)


def _merge(parts: list[_Partial]) -> _Partial:
    """Merge span partials in vocabulary order (a later span wins only when strictly better)."""
    out = parts[0]
    for p in parts[1:]:
        better = p.best_val > out.best_val
        lse = None
        if out.lse is not None and p.lse is not None:
            lse = torch.logaddexp(out.lse, p.lse)
        out = _Partial(torch.where(better, p.best_val, out.best_val), torch.where(better, p.best_idx, out.best_idx), lse)
    return out


def _spans(b: int, v: int) -> list[tuple[int, int]]:
    n = min(MAX_WORKERS, torch.get_num_threads())
    if n < 2 or b * v < MIN_PARALLEL_ELEMS:
        return [(0, v)]
    cols = _tile_cols(b, v)
    mid = min(v, -(-(v // 2) // cols) * cols)  # cut on a tile boundary
    return [(0, mid), (mid, v)] if 0 < mid < v else [(0, v)]


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
    """Fused ``combine`` on dense CPU logits ``[M, B, V]``; see ``logit_kernels.combine`` for the arguments."""
    check_mode(mode, temperature, targets)
    m, b, v = check_dense(logits, bias, targets)
    if m == 1 and mode == "greedy" and not return_logprobs and bias is None and _one_positive(weights):
        return CombineResult(_argmax_rows(logits[0]))  # one model, greedy: its argmax (the decode loop's usual call)
    w = weights_matrix(weights, m, b)
    need_lse = return_logprobs or mode == "logprobs"
    sample = mode == "sample"
    per_row = not bool((w == w[0:1]).all())
    if per_row:
        wcols: list[torch.Tensor] | None = [w[:, i : i + 1].contiguous() for i in range(m)]
        active = [i for i in range(m) if bool((w[:, i] != 0).any())]
        zero_rows = [bool((w[:, i] == 0).any()) for i in range(m)]
        scal = None
    else:
        wcols = None
        zero_rows = [False] * m
        scal = [float(w[0, i]) for i in range(m)]
        active = [i for i in range(m) if scal[i] != 0.0]

    keys_np = row_keys(seed, torch.arange(b)).numpy().astype(np.uint32)[:, None] if sample else None
    job = _Job(logits, bias, active, scal, wcols, zero_rows, float(temperature), need_lse or sample, need_lse,
               mode != "logprobs", sample, keys_np)  # fmt: skip

    spans = _spans(b, v)
    if len(spans) == 1:
        part = _scan(job, *spans[0])
    else:
        futures = [_pool().submit(_scan, job, s0, s1) for s0, s1 in spans]
        part = _merge([f.result() for f in futures])

    best_val, best_idx = part.best_val, part.best_idx
    if mode == "logprobs":
        assert targets is not None
        ids = targets.to(torch.int64).clone()
    else:
        ids = torch.where(torch.isneginf(best_val), torch.full_like(best_idx, -1), best_idx)
    if not need_lse:
        return CombineResult(ids)
    assert part.lse is not None
    chosen = _scores_at(logits, w, active, bias, temperature, ids.clamp(min=0)[:, None])[:, 0]
    lp = chosen - part.lse
    lp = torch.where((ids < 0) | torch.isneginf(part.lse), torch.full_like(lp, float("-inf")), lp)
    return CombineResult(ids, lp)



def _one_positive(weights: torch.Tensor | list[float] | tuple[float, ...]) -> bool:
    """True for a one-entry weight list/tuple (or ``[1]`` tensor) holding a positive number."""
    if isinstance(weights, torch.Tensor):
        return weights.shape == (1,) and bool(weights[0] > 0)
    return len(weights) == 1 and float(weights[0]) > 0


def _argmax_rows(x: torch.Tensor) -> torch.Tensor:
    """Per row of ``[B, V]``, the first index of the maximum, −1 where the whole row is −inf."""
    idx = x.argmax(dim=1)  # torch returns the first maximal index
    best = x.gather(1, idx[:, None])[:, 0]
    return torch.where(torch.isneginf(best), torch.full_like(idx, -1), idx)


def _scores_at(
    logits: torch.Tensor,
    w: torch.Tensor,
    active: list[int],
    bias: torch.Tensor | None,
    temperature: float,
    ids: torch.Tensor,
) -> torch.Tensor:
    """``y[b, ids[b, k]]`` for ids ``[B, K]``, computed the same way as the tiles (same operation order), float32."""
    b = ids.shape[0]
    rows = torch.arange(b)[:, None]
    acc = torch.zeros(ids.shape)
    for j, i in enumerate(active):
        x = logits[i, rows, ids].float()
        wi = w[:, i : i + 1]
        term = torch.where(wi == 0, torch.zeros_like(x), x * wi)
        acc = term if j == 0 else acc + term
    if bias is not None:
        acc = acc + bias[rows, ids].float()
    if temperature != 1.0:
        acc = acc / temperature
    return acc
