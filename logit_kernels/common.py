"""Shared pieces of the logit-combination kernels: the result type, argument checks and the seeded Gumbel noise.

The combined distribution (every path — reference, fused CPU, Triton, sparse — computes exactly this):

    y[b, v] = (Σ_m w[b, m] · x[m, b, v] + bias[b, v]) / T        (terms with w[b, m] == 0 are skipped)
    p[b, :] = softmax(y[b, :])

Because Σ_m w_m·log_softmax(x_m) differs from Σ_m w_m·x_m only by a constant per row, ``p`` is the renormalised
weighted product of the models' distributions (a product of experts), sharpened or flattened by the temperature
``T``. Greedy picks ``argmax_v y`` (ties → the smallest index; independent of ``T``), sampling picks
``argmax_v y + g(seed, b, v)`` with Gumbel noise ``g`` (Gumbel-max, i.e. an exact draw from ``p``), and the logprob of
a token ``t`` is ``y[b, t] − logsumexp_v y[b, v]``.

Gumbel noise is a pure function of (seed, row, vocabulary index): a 32-bit integer hash (``lowbias32``, three
rounds chained over seed → row → index) gives 23 uniform bits ``q = h >> 9``, ``u = (q + 0.5) / 2**23``,
``g = −log(−log u)``. With 23 bits, ``q + 0.5`` and ``u`` are exact in float32 and ``u`` lies in
``[2**-24, 1 − 2**-24]``, so every noise value is finite and bounded (``GUMBEL_MAX_FINITE``): no token is forced by an
infinite draw (a 24-bit ``u`` rounds its top value to 1.0, which gave ~1 % of rows at V=152k a forced token).
The same integer arithmetic is written for torch here and for Triton in ``triton_combine``.

Conventions: logits may hold −inf (a masked token), never +inf or NaN; weights are finite and ≥ 0; a row whose
combined scores are all −inf yields token −1 and logprob −inf. What this module leaves out: the combining itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

Mode = Literal["greedy", "sample", "logprobs"]
MODES: tuple[str, ...] = ("greedy", "sample", "logprobs")
MASK32 = 0xFFFFFFFF
_M1 = 0x7FEB352D
_M2 = 0x846CA68B


@dataclass
class CombineResult:
    """Chosen token per row (``[B]`` int64, −1 for a fully masked row) and, when asked, its logprob (``[B]`` float32)."""

    token_ids: torch.Tensor
    logprobs: torch.Tensor | None = None


def lowbias32_int(x: int) -> int:
    """The ``lowbias32`` integer hash (Chris Wellons) on a Python int, 32-bit wrap-around."""
    x &= MASK32
    x ^= x >> 16
    x = (x * _M1) & MASK32
    x ^= x >> 15
    x = (x * _M2) & MASK32
    x ^= x >> 16
    return x


def lowbias32(x: torch.Tensor) -> torch.Tensor:
    """``lowbias32`` on an int64 tensor holding values in [0, 2**32); returns the same range."""
    x = x ^ (x >> 16)
    x = (x * _M1) & MASK32
    x = x ^ (x >> 15)
    x = (x * _M2) & MASK32
    return x ^ (x >> 16)


def row_keys(seed: int, rows: torch.Tensor) -> torch.Tensor:
    """Per-row hash keys ``lowbias32(lowbias32(seed) ^ row)`` as int64 in [0, 2**32)."""
    s = lowbias32_int(seed)
    return lowbias32(rows.to(torch.int64) ^ s)


def gumbel_from_keys(keys: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Gumbel noise (float32) for row keys ``[R, 1]`` and vocabulary indices ``[1, C]`` (broadcast to ``[R, C]``)."""
    h = lowbias32(keys ^ cols.to(torch.int64))
    u = ((h >> NOISE_SHIFT).to(torch.float32) + 0.5) * INV_2_23
    return -torch.log(-torch.log(u))


NOISE_SHIFT = 9  # q = h >> 9: 23 uniform bits
INV_2_23 = 1.0 / 8388608.0
# Largest noise value, at q = 2**23 − 1: u = 1 − 2**-24, g = −log(−log u) ≈ 24·ln 2 + ... ≈ 16.64.
# tests/logit_kernels/test_cpu.py checks this bound against the torch formula on all 2**23 values of q.
GUMBEL_MAX_FINITE = 16.636


def hash_block(keys: np.ndarray, cols: np.ndarray, out: np.ndarray, tmp: np.ndarray) -> np.ndarray:
    """``lowbias32(keys ^ cols)`` in uint32 (no int64 temporaries); keys and cols broadcast to out/tmp's shape."""
    np.bitwise_xor(keys, cols, out=out)
    np.right_shift(out, 16, out=tmp)
    np.bitwise_xor(out, tmp, out=out)
    np.multiply(out, np.uint32(_M1), out=out)
    np.right_shift(out, 15, out=tmp)
    np.bitwise_xor(out, tmp, out=out)
    np.multiply(out, np.uint32(_M2), out=out)
    np.right_shift(out, 16, out=tmp)
    np.bitwise_xor(out, tmp, out=out)
    return out


def neg_gumbel_block(
    keys: np.ndarray, cols: np.ndarray, out: np.ndarray, hbuf: np.ndarray, tmp: np.ndarray
) -> torch.Tensor:
    """``−g`` = ``log(−log u)`` as a float32 tensor viewing ``out``, the same float32 ops as ``gumbel_from_keys``
    (keys and cols broadcast to ``out``'s shape)."""
    h = hash_block(keys, cols, hbuf, tmp)
    np.right_shift(h, NOISE_SHIFT, out=h)
    np.add(h, np.float32(0.5), out=out, dtype=np.float32, casting="unsafe")  # exact cast, then a float32 add
    np.multiply(out, np.float32(INV_2_23), out=out)
    t = torch.from_numpy(out)
    torch.log(t, out=t)
    t.neg_()
    return torch.log(t, out=t)



def gumbel_noise(seed: int, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Gumbel noise ``[len(rows), len(cols)]`` as a pure function of (seed, row index, vocabulary index)."""
    return gumbel_from_keys(row_keys(seed, rows)[:, None], cols[None, :])


def check_mode(mode: str, temperature: float, targets: torch.Tensor | None) -> None:
    """Reject an unknown mode, a non-positive temperature, or a ``logprobs`` call without targets."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not temperature > 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if mode == "logprobs" and targets is None:
        raise ValueError("mode='logprobs' needs targets (the tokens whose logprobs are wanted)")


def weights_matrix(weights: torch.Tensor | list[float] | tuple[float, ...], m: int, b: int) -> torch.Tensor:
    """Weights as float32 ``[B, M]`` on the CPU or the weights' device (``[M]`` is broadcast over rows)."""
    w = torch.as_tensor(weights, dtype=torch.float32)
    if w.dim() == 1:
        if w.shape[0] != m:
            raise ValueError(f"weights [M] must have M={m} entries, got {tuple(w.shape)}")
        w = w[None, :].expand(b, m)
    elif w.dim() == 2:
        if tuple(w.shape) != (b, m):
            raise ValueError(f"weights [B, M] must have shape {(b, m)}, got {tuple(w.shape)}")
    else:
        raise ValueError(f"weights must be [M] or [B, M], got {tuple(w.shape)}")
    return w


def check_dense(logits: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor | None) -> tuple[int, int, int]:
    """Shapes of dense logits ``[M, B, V]`` (also accepted: ``[B, V]`` as M=1 — callers reshape); returns (M, B, V)."""
    if logits.dim() != 3:
        raise ValueError(f"logits must be [M, B, V], got {tuple(logits.shape)}")
    m, b, v = logits.shape
    if m < 1 or b < 1 or v < 1:
        raise ValueError(f"logits must be non-empty, got {tuple(logits.shape)}")
    if bias is not None and tuple(bias.shape) != (b, v):
        raise ValueError(f"bias must be [B, V] = {(b, v)}, got {tuple(bias.shape)}")
    if targets is not None and tuple(targets.shape) != (b,):
        raise ValueError(f"targets must be [B] = {(b,)}, got {tuple(targets.shape)}")
    return m, b, v
