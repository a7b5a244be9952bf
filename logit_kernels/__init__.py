"""Fused logit combination: reference, CPU path, Triton kernel, dispatch.

``combine(logits [M, B, V] | per-model top-k, weights [M] | [B, M], bias?, temperature, mode)`` picks one token per
row from the renormalised weighted product of the models' distributions (definition in ``logit_kernels.common``). The
collaboration runtime calls this and nothing else. What the package leaves out: model calls and token bookkeeping.
"""

from logit_kernels.common import CombineResult
from logit_kernels.dispatch import combine, pick_backend
from logit_kernels.sparse import TopK

__all__ = ["CombineResult", "TopK", "combine", "pick_backend"]
