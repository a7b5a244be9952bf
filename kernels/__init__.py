"""Fused logit combination: reference, CPU path, Triton kernel, dispatch."""
