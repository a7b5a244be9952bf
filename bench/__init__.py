"""Benchmarks (not tests): gateway overhead, router latency, collaboration speed, kernel bandwidth. Run from the repo
root as ``python -m bench.<name>``."""
