"""Triton kernel of the dense logit combination for CUDA tensors: split vocabulary, then a small reduction.

Pass 1 (grid ``B × S``): each program streams one row's vocabulary slice in ``BLOCK``-wide chunks, accumulating
``Σ_m w·x (+ bias)`` in registers, optionally ``/ T`` and + Gumbel noise (the same integer hash as
``logit_kernels.common``), and keeps per-lane running (max, argmax) and an online log-sum-exp. It writes one partial per
(row, split). ``S`` is chosen so that ``B × S`` fills the GPU even at B = 1. Pass 2 (grid ``B``): merges the ``S``
partials (ties → the smallest index), recomputes ``y`` at the chosen (or target) token and writes token and logprob.

Same answer as ``logit_kernels.reference`` up to float rounding (Triton's ``log``/division may differ from torch's by an
ulp, so near-ties can break differently). What it leaves out: non-CUDA devices and sparse inputs. Importing this
module without Triton is fine; ``available()`` says whether the kernel can run.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from logit_kernels.common import CombineResult, check_dense, check_mode, lowbias32_int

try:  # Triton is optional (CPU-only installs have none)
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except ImportError:  # pragma: no cover - depends on the install
    HAVE_TRITON = False

# Chosen by ``bench/kernel_combine.py --sweep`` on an H100 (V=151,936, M=3; B=32/64; bf16 and fp32): the best or
# within 0.01 of the best fraction of copy bandwidth for greedy and logprobs in all four cases (sampling, bound by
# its two logs per element, is within 0.03).
BLOCK = 1024
NUM_WARPS = 4
PROGRAMS_PER_SM = 8


@dataclass(frozen=True)
class LaunchConfig:
    """Launch shape of pass 1: vocabulary chunk per loop step, warps per program, programs wanted per SM."""

    block: int = BLOCK
    num_warps: int = NUM_WARPS
    programs_per_sm: int = PROGRAMS_PER_SM


def available() -> bool:
    """True when Triton is importable and a CUDA device is present."""
    return HAVE_TRITON and torch.cuda.is_available()


if HAVE_TRITON:

    @triton.jit
    def _hash(x):
        x = x ^ (x >> 16)
        x = x * tl.full([], 0x7FEB352D, tl.uint32)
        x = x ^ (x >> 15)
        x = x * tl.full([], 0x846CA68B, tl.uint32)
        return x ^ (x >> 16)

    @triton.jit
    def _partial_kernel(
        X,
        stride_xm,
        stride_xb,
        W,
        stride_w,
        BIAS,
        stride_bias,
        seed_key,
        P_BEST,
        P_IDX,
        P_MAX,
        P_SUM,
        M,
        V,
        S,
        split_len,
        temperature,
        HAS_BIAS: tl.constexpr,
        SAMPLE: tl.constexpr,
        NEED_LSE: tl.constexpr,
        SCALE_T: tl.constexpr,
        BLOCK_V: tl.constexpr,
    ):
        b = tl.program_id(0)
        s = tl.program_id(1)
        offs = tl.arange(0, BLOCK_V)
        start = s * split_len
        end = tl.minimum(start + split_len, V)
        best = tl.full([BLOCK_V], float("-inf"), tl.float32)
        best_i = tl.zeros([BLOCK_V], tl.int32)
        run_m = tl.full([BLOCK_V], float("-inf"), tl.float32)
        run_s = tl.zeros([BLOCK_V], tl.float32)
        key = _hash((seed_key ^ b).to(tl.uint32))
        x_row = X + b.to(tl.int64) * stride_xb
        for c in range(start, end, BLOCK_V):
            cols = c + offs
            mask = cols < end
            acc = tl.zeros([BLOCK_V], tl.float32)
            for m in range(M):
                w = tl.load(W + b * stride_w + m)
                x = tl.load(x_row + m * stride_xm + cols, mask=mask, other=0.0).to(tl.float32)
                acc += tl.where(w == 0.0, 0.0, x * w)
            if HAS_BIAS:
                acc += tl.load(BIAS + b.to(tl.int64) * stride_bias + cols, mask=mask, other=0.0).to(tl.float32)
            if SCALE_T:
                acc = acc / temperature
            acc = tl.where(mask, acc, float("-inf"))
            if SAMPLE:
                h = _hash(key ^ cols.to(tl.uint32))
                u = ((h >> 9).to(tl.float32) + 0.5) * (1.0 / 8388608.0)  # logit_kernels.common: 23 bits
                sc = acc - tl.log(-tl.log(u))
            else:
                sc = acc
            upd = sc > best
            best = tl.where(upd, sc, best)
            best_i = tl.where(upd, cols, best_i)
            if NEED_LSE:
                new_m = tl.maximum(run_m, acc)
                safe = tl.where(new_m == float("-inf"), 0.0, new_m)
                run_s = run_s * tl.exp(run_m - safe) + tl.exp(acc - safe)
                run_m = new_m
        bmax = tl.max(best, axis=0)
        bidx = tl.min(tl.where(best == bmax, best_i, 2147483647), axis=0)
        tl.store(P_BEST + b * S + s, bmax)
        tl.store(P_IDX + b * S + s, bidx)
        if NEED_LSE:
            pm = tl.max(run_m, axis=0)
            psafe = tl.where(pm == float("-inf"), 0.0, pm)
            tl.store(P_MAX + b * S + s, pm)
            tl.store(P_SUM + b * S + s, tl.sum(run_s * tl.exp(run_m - psafe), axis=0))

    @triton.jit
    def _reduce_kernel(
        X,
        stride_xm,
        stride_xb,
        W,
        stride_w,
        BIAS,
        stride_bias,
        TARGETS,
        P_BEST,
        P_IDX,
        P_MAX,
        P_SUM,
        OUT_IDS,
        OUT_LP,
        M,
        S,
        temperature,
        HAS_BIAS: tl.constexpr,
        HAS_TARGETS: tl.constexpr,
        NEED_LSE: tl.constexpr,
        SCALE_T: tl.constexpr,
        BLOCK_S: tl.constexpr,
    ):
        b = tl.program_id(0)
        offs = tl.arange(0, BLOCK_S)
        mask = offs < S
        best = tl.load(P_BEST + b * S + offs, mask=mask, other=float("-inf"))
        idx = tl.load(P_IDX + b * S + offs, mask=mask, other=2147483647)
        bmax = tl.max(best, axis=0)
        tok = tl.min(tl.where(best == bmax, idx, 2147483647), axis=0)
        tok = tl.where(bmax == float("-inf"), -1, tok)
        if HAS_TARGETS:
            tok = tl.load(TARGETS + b).to(tl.int32)
        tl.store(OUT_IDS + b, tok.to(tl.int64))
        if NEED_LSE:
            pm = tl.load(P_MAX + b * S + offs, mask=mask, other=float("-inf"))
            ps = tl.load(P_SUM + b * S + offs, mask=mask, other=0.0)
            gm = tl.max(pm, axis=0)
            gsafe = tl.where(gm == float("-inf"), 0.0, gm)
            lse = gsafe + tl.log(tl.sum(ps * tl.exp(pm - gsafe), axis=0))
            t = tl.maximum(tok, 0)
            y = 0.0
            x_row = X + b.to(tl.int64) * stride_xb
            for m in range(M):
                w = tl.load(W + b * stride_w + m)
                x = tl.load(x_row + m * stride_xm + t).to(tl.float32)
                y += tl.where(w == 0.0, 0.0, x * w)
            if HAS_BIAS:
                y += tl.load(BIAS + b.to(tl.int64) * stride_bias + t).to(tl.float32)
            if SCALE_T:
                y = y / temperature
            lp = tl.where((tok < 0) | (gm == float("-inf")), float("-inf"), y - lse)
            tl.store(OUT_LP + b, lp)


@functools.lru_cache(maxsize=16)
def _sm_count(dev: torch.device) -> int:
    # (CPU tensors only reach here under TRITON_INTERPRET=1, Triton's interpreter)
    return torch.cuda.get_device_properties(dev).multi_processor_count if dev.type == "cuda" else 4


_WEIGHTS: dict[tuple[tuple[float, ...], torch.device], torch.Tensor] = {}


def _device_weights(weights: torch.Tensor | list[float] | tuple[float, ...], m: int, b: int, dev: torch.device):
    """Weights as float32 on ``dev`` with their row stride (0 for ``[M]``); lists are cached (no copy per call)."""
    if isinstance(weights, torch.Tensor):
        w = weights.to(device=dev, dtype=torch.float32)
    else:
        key = (tuple(float(x) for x in weights), dev)
        w = _WEIGHTS.get(key)  # type: ignore[assignment]
        if w is None:
            if len(_WEIGHTS) > 256:
                _WEIGHTS.clear()
            w = _WEIGHTS[key] = torch.tensor(key[0], dtype=torch.float32, device=dev)
    if w.dim() == 1:
        if w.shape[0] != m:
            raise ValueError(f"weights [M] must have M={m} entries, got {tuple(w.shape)}")
        return w.contiguous(), 0
    if tuple(w.shape) != (b, m):
        raise ValueError(f"weights [B, M] must have shape {(b, m)}, got {tuple(w.shape)}")
    w = w.contiguous()
    return w, m


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def num_splits(b: int, v: int, sms: int, block: int = BLOCK, programs_per_sm: int = PROGRAMS_PER_SM) -> int:
    """Vocabulary splits per row: enough programs for ``programs_per_sm`` per multiprocessor, at least one block per
    split."""
    want = max(1, _cdiv(programs_per_sm * sms, b))
    return max(1, min(want, _cdiv(v, block)))


def combine_triton(
    logits: torch.Tensor,
    weights: torch.Tensor | list[float] | tuple[float, ...],
    *,
    bias: torch.Tensor | None = None,
    temperature: float = 1.0,
    mode: str = "greedy",
    seed: int = 0,
    targets: torch.Tensor | None = None,
    return_logprobs: bool = False,
    launch: LaunchConfig | None = None,
) -> CombineResult:
    """``combine`` on dense CUDA logits ``[M, B, V]`` with the Triton kernels; see ``logit_kernels.combine``.
    ``launch`` overrides the launch shape (``bench/kernel_combine.py --sweep`` compares shapes)."""
    if not HAVE_TRITON:
        raise RuntimeError("Triton is not installed")
    check_mode(mode, temperature, targets)
    m, b, v = check_dense(logits, bias, targets)
    dev = logits.device
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    if bias is not None and bias.stride(-1) != 1:
        bias = bias.contiguous()
    w, stride_w = _device_weights(weights, m, b, dev)
    need_lse = return_logprobs or mode == "logprobs"
    sample = mode == "sample"
    scale_t = (need_lse or sample) and temperature != 1.0
    cfg = launch or LaunchConfig()
    s = num_splits(b, v, _sm_count(dev), cfg.block, cfg.programs_per_sm)
    split_len = _cdiv(_cdiv(v, s), cfg.block) * cfg.block
    s = _cdiv(v, split_len)
    seed_key = lowbias32_int(seed) if sample else 0
    work = torch.empty(4 if need_lse else 2, b, s, dtype=torch.float32, device=dev)
    p_best, p_idx = work[0], work[1].view(torch.int32)
    p_max, p_sum = (work[2], work[3]) if need_lse else (p_best, p_best)
    bias_t = bias if bias is not None else w
    stride_bias = bias.stride(0) if bias is not None else 0
    _partial_kernel[(b, s)](
        logits, logits.stride(0), logits.stride(1), w, stride_w, bias_t, stride_bias, seed_key,
        p_best, p_idx, p_max, p_sum, m, v, s, split_len, float(temperature),
        HAS_BIAS=bias is not None, SAMPLE=sample, NEED_LSE=need_lse, SCALE_T=scale_t,
        BLOCK_V=cfg.block, num_warps=cfg.num_warps,
    )  # fmt: skip
    ids = torch.empty(b, dtype=torch.int64, device=dev)
    lp = torch.empty(b, dtype=torch.float32, device=dev) if need_lse else p_best
    tgt = targets.to(device=dev, dtype=torch.int64) if targets is not None else ids
    _reduce_kernel[(b,)](
        logits, logits.stride(0), logits.stride(1), w, stride_w, bias_t, stride_bias, tgt,
        p_best, p_idx, p_max, p_sum, ids, lp, m, s, float(temperature),
        HAS_BIAS=bias is not None, HAS_TARGETS=mode == "logprobs", NEED_LSE=need_lse, SCALE_T=scale_t,
        BLOCK_S=max(16, triton.next_power_of_2(s)), num_warps=1,
    )  # fmt: skip
    return CombineResult(ids, lp if need_lse else None)
