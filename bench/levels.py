"""Concurrency sweep of the gateway benchmark: throughput and tail latency per level, direct and gateway alternated.

For each mode (non-streaming, streaming) and each concurrency level, :func:`run_levels` runs a closed-loop
throughput job of ``duration_s`` seconds against the direct target, then each gateway (e.g. a tuned and a baseline
one), then again for each extra round (so slow drifts of the shared machine hit both sides alike), merges the rounds per side and turns them into
one row with :func:`level_row`:

``{mode, concurrency, rps, p50_ms, p99_ms, p999_ms, added_p50_ms, added_p99_ms, errors, samples, direct: {...}}``

where the top-level figures are the gateway's and ``added_*`` is gateway minus direct at the same level.
:func:`format_levels` prints them as a table. What it leaves out: open-loop (fixed arrival rate) load; p99.9 of a
short level rests on few samples (``samples`` says how many), lengthen with ``--level-duration``.
"""

from __future__ import annotations

import sys
from typing import Any

from bench.loadgen import Job, JobResult, LoadgenPool, Target, summarize

MODES = ("nonstream", "stream")


def side_figures(r: JobResult) -> dict[str, float]:
    """Requests/s and latency percentiles of one side's merged rounds."""
    lat = summarize(r.latencies_ms)
    rps = r.ok / r.elapsed_s if r.elapsed_s > 0 else float("nan")
    return {"rps": rps, "p50_ms": lat["p50"], "p99_ms": lat["p99"], "p999_ms": lat["p999"]}


def level_row(mode: str, concurrency: int, direct: JobResult, gateway: JobResult) -> dict[str, Any]:
    """One level: the gateway's figures, what it adds over direct at the same level, and direct's own figures."""
    d, g = side_figures(direct), side_figures(gateway)
    return {
        "mode": mode, "concurrency": concurrency, **g,
        "added_p50_ms": g["p50_ms"] - d["p50_ms"], "added_p99_ms": g["p99_ms"] - d["p99_ms"],
        "errors": gateway.errors, "samples": len(gateway.latencies_ms),
        "direct": {**d, "errors": direct.errors, "samples": len(direct.latencies_ms)},
    }


def _sum(results: list[JobResult]) -> JobResult:
    """Rounds of one side as one result: samples pooled, elapsed seconds added (so rps is the pooled rate)."""
    out = JobResult()
    for r in results:
        out = JobResult(out.latencies_ms + r.latencies_ms, out.ttfb_ms + r.ttfb_ms, out.ok + r.ok,
                        out.errors + r.errors, out.first_error or r.first_error, out.elapsed_s + r.elapsed_s)
    return out


def run_levels(pool: LoadgenPool, direct: Target, gateways: dict[str, Target], levels: list[int],
               duration_s: float, rounds: int = 1, max_tokens: int = 16, modes: tuple[str, ...] = MODES
               ) -> dict[str, list[dict[str, Any]]]:
    """Every (mode, level): ``rounds`` × (direct, then each gateway in turn) throughput jobs of ``duration_s`` s;
    per gateway name, one row per (mode, level), each against the direct runs of the same level."""
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in gateways}
    sides = {"direct": direct, **gateways}
    for mode in modes:
        stream = mode == "stream"
        for c in levels:
            got: dict[str, list[JobResult]] = {name: [] for name in sides}
            for _ in range(max(1, rounds)):
                for name, t in sides.items():
                    r = pool.throughput(Job("throughput", t, stream, c, max_tokens, duration_s=duration_s))
                    if r.errors:
                        print(f"  ! level {mode} c={c} {name}: {r.errors} failed, first: {r.first_error}",
                              file=sys.stderr)
                    got[name].append(r)
            d = _sum(got["direct"])
            for name in gateways:
                out[name].append(level_row(mode, c, d, _sum(got[name])))
    return out


def format_levels(rows: list[dict[str, Any]]) -> str:
    """A table: per level, direct and gateway req/s, p50/p99/p99.9, and the gateway's p99/p50 ratio."""
    head = (f"{'mode':10}{'conns':>6}{'direct/s':>10}{'gw/s':>9}{'d p50':>8}{'d p99':>8}{'gw p50':>8}{'gw p99':>8}"
            f"{'gw p99.9':>9}{'p99/p50':>8}{'+p50':>7}{'+p99':>7}")
    lines = [head]
    for r in rows:
        d = r["direct"]
        tail = r["p99_ms"] / r["p50_ms"] if r["p50_ms"] else float("nan")
        lines.append(f"{r['mode']:10}{r['concurrency']:6d}{d['rps']:10.0f}{r['rps']:9.0f}{d['p50_ms']:8.2f}"
                     f"{d['p99_ms']:8.2f}{r['p50_ms']:8.2f}{r['p99_ms']:8.2f}{r['p999_ms']:9.2f}{tail:8.1f}"
                     f"{r['added_p50_ms']:7.2f}{r['added_p99_ms']:7.2f}")
    return "\n".join(lines)
