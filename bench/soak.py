"""Soak test of the gateway: a fixed request rate of streamed chats for a set time, reported over time.

``python -m bench.soak [--duration 60] [--rate 20] [--json]`` starts the OpenAI-compatible upstream stub
(``bench.upstream_stub``, paced like a model with ``--chunk-delay-ms``) and one ``tandem serve`` process in front of
it (SQLite request log in a temp folder), unless ``--gateway-url`` names a running gateway (then ``--gateway-pid``
names its process for memory samples). Requests are sent **open loop**: request *i* starts at ``t0 + i / rate``
whatever happened to earlier ones, so a slow gateway shows up as latency and errors, not as a lower rate.

A request succeeds when it answers 200 and its stream ends with ``data: [DONE]``. The report has, per interval of
``--interval`` seconds: requests started, error rate, latency p50/p90/p99, time to first chunk p50, and the gateway's
resident memory (VmRSS from ``/proc``, sampled every second); overall the same numbers plus memory growth (last
interval's RSS minus the first's) and the least-squares RSS slope in MiB per minute.

The statistics (:func:`bucketize`, :func:`slope_per_minute`, :func:`error_rate`) are pure functions tested against
reference twins. :func:`start_stub` and :func:`start_gateway_process` are reused by tests that need a fast upstream.

``--replicas N`` (N ≥ 2) starts N stubs behind one ``deployments`` route (``--strategy``, default ``weighted``),
so the soak goes through the balancer; the report then counts the requests each replica answered
(``x-tandem-replica``).

What it leaves out: non-streamed requests, several gateway replicas, CPU usage, and pass/fail thresholds (the caller
judges the numbers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.loadgen import percentile
from bench.upstream_stub import start_stub
from evals.gateway_process import start_gateway, stop_process

# ---------------------------------------------------------------------------------------------------- processes


def start_gateway_process(cfg: dict[str, Any], workdir: Path, timeout: float = 120.0
                          ) -> tuple[subprocess.Popen, str]:
    """``tandem serve --config`` on a free loopback port; returns (process, root URL) once ``/health/live`` answers."""
    g = start_gateway(cfg, workdir, timeout=timeout)
    return g.proc, g.base


def rss_mib(pid: int) -> float | None:
    """Resident memory of a process in MiB (``VmRSS`` from ``/proc``); None when it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


# ---------------------------------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Sample:
    """One request: when it started (seconds since the soak began), whether it succeeded, and its timings."""

    t: float
    ok: bool
    latency_ms: float
    ttft_ms: float | None = None
    replica: str | None = None


def error_rate(samples: Sequence[Sample]) -> float:
    """Share of failed requests (0.0 when there are none)."""
    return sum(not s.ok for s in samples) / len(samples) if samples else 0.0


def _pct(values: Sequence[float], q: float) -> float | None:
    return percentile(values, q) if values else None


def summarize_samples(samples: Sequence[Sample]) -> dict[str, Any]:
    """Count, error rate and latency percentiles of successful requests (ms)."""
    lat = [s.latency_ms for s in samples if s.ok]
    ttft = [s.ttft_ms for s in samples if s.ok and s.ttft_ms is not None]
    return {"requests": len(samples), "errors": sum(not s.ok for s in samples), "error_rate": error_rate(samples),
            "p50_ms": _pct(lat, 50), "p90_ms": _pct(lat, 90), "p99_ms": _pct(lat, 99), "ttft_p50_ms": _pct(ttft, 50)}


def bucketize(samples: Sequence[Sample], rss: Sequence[tuple[float, float]], interval_s: float, duration_s: float
              ) -> list[dict[str, Any]]:
    """Per interval ``[k·interval, (k+1)·interval)``: the summary of requests started in it and the mean RSS of the
    memory samples ``(t, MiB)`` taken in it (None without samples)."""
    n = max(1, math.ceil(duration_s / interval_s))
    out = []
    for k in range(n):
        lo, hi = k * interval_s, (k + 1) * interval_s
        if k == n - 1:
            hi = math.inf
        in_b = [s for s in samples if lo <= s.t < hi]
        mem = [m for t, m in rss if lo <= t < hi]
        out.append({"start_s": lo, **summarize_samples(in_b), "rss_mib": sum(mem) / len(mem) if mem else None})
    return out


def slope_per_minute(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(t seconds, y)`` in y per minute (None with fewer than two distinct times)."""
    if len(points) < 2:
        return None
    mt = sum(t for t, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    den = sum((t - mt) ** 2 for t, _ in points)
    if den == 0:
        return None
    return 60.0 * sum((t - mt) * (y - my) for t, y in points) / den


# ---------------------------------------------------------------------------------------------------- the soak


async def _one(client: httpx.AsyncClient, url: str, body: dict[str, Any], t0: float, timeout_s: float) -> Sample:
    start = time.perf_counter()
    ttft: float | None = None
    ok = False
    replica: str | None = None
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream("POST", url, json=body) as r:
                tail = b""
                async for chunk in r.aiter_bytes():
                    if ttft is None:
                        ttft = (time.perf_counter() - start) * 1000.0
                    tail = (tail + chunk)[-64:]
                ok = r.status_code == 200 and tail.rstrip().endswith(b"data: [DONE]")
                replica = r.headers.get("x-tandem-replica")
    except (httpx.HTTPError, TimeoutError):
        ok = False
    return Sample(start - t0, ok, (time.perf_counter() - start) * 1000.0, ttft, replica)


async def run_soak(base: str, pid: int | None, duration_s: float, rate: float, interval_s: float,
                   max_tokens: int = 16, timeout_s: float = 30.0, model: str = "stub") -> dict[str, Any]:
    """Drive ``base`` (gateway root URL) at ``rate`` streamed requests a second for ``duration_s``; the report."""
    url = base + "/v1/chat/completions"
    body = {"model": model, "messages": [{"role": "user", "content": "soak"}], "max_tokens": max_tokens,
            "stream": True}
    rss: list[tuple[float, float]] = []
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:
        t0 = time.perf_counter()
        stop = asyncio.Event()

        async def sample_memory() -> None:
            while not stop.is_set():
                if pid is not None and (m := rss_mib(pid)) is not None:
                    rss.append((time.perf_counter() - t0, m))
                try:
                    await asyncio.wait_for(stop.wait(), 1.0)
                except TimeoutError:
                    pass

        mem_task = asyncio.create_task(sample_memory())
        tasks = []
        n = int(duration_s * rate)
        for i in range(n):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_one(client, url, body, t0, timeout_s)))
        samples = await asyncio.gather(*tasks)
        stop.set()
        await mem_task
        elapsed = time.perf_counter() - t0
    buckets = bucketize(samples, rss, interval_s, duration_s)
    mems = [b["rss_mib"] for b in buckets if b["rss_mib"] is not None]
    return {
        "duration_s": duration_s, "rate_rps": rate, "achieved_rps": len(samples) / elapsed if elapsed else 0.0,
        "interval_s": interval_s, "overall": summarize_samples(samples), "intervals": buckets,
        "rss_start_mib": mems[0] if mems else None, "rss_end_mib": mems[-1] if mems else None,
        "rss_growth_mib": (mems[-1] - mems[0]) if len(mems) >= 2 else None,
        "rss_slope_mib_per_min": slope_per_minute(rss), "per_replica": per_replica(samples),
    }


def per_replica(samples: Sequence[Sample]) -> dict[str, int]:
    """Requests answered per replica (``x-tandem-replica``); empty for a route without deployments."""
    out: dict[str, int] = {}
    for s in samples:
        if s.replica is not None:
            out[s.replica] = out.get(s.replica, 0) + 1
    return dict(sorted(out.items()))


def _fmt(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def render(report: dict[str, Any]) -> str:
    lines = [f"soak: {report['duration_s']:.0f}s at {report['rate_rps']:g} req/s (achieved "
             f"{report['achieved_rps']:.2f}), streamed", "  start_s  reqs  err%    p50ms    p90ms    p99ms  ttft50  rssMiB"]
    for b in report["intervals"]:
        lines.append(f"  {b['start_s']:7.0f} {b['requests']:5d} {100 * b['error_rate']:5.1f} {_fmt(b['p50_ms']):>8} "
                     f"{_fmt(b['p90_ms']):>8} {_fmt(b['p99_ms']):>8} {_fmt(b['ttft_p50_ms']):>7} "
                     f"{_fmt(b['rss_mib']):>7}")
    o = report["overall"]
    lines.append(f"overall: {o['requests']} requests, error rate {100 * o['error_rate']:.2f}%, p50 {_fmt(o['p50_ms'])}"
                 f" ms, p99 {_fmt(o['p99_ms'])} ms; gateway RSS {_fmt(report['rss_start_mib'])} -> "
                 f"{_fmt(report['rss_end_mib'])} MiB (growth {_fmt(report['rss_growth_mib'])} MiB, slope "
                 f"{_fmt(report['rss_slope_mib_per_min'], '.2f')} MiB/min)")
    if report.get("per_replica"):
        lines.append("per replica: " + ", ".join(f"{k} {v}" for k, v in report["per_replica"].items()))
    return "\n".join(lines)


def _started(procs: list[subprocess.Popen], tokens: int, chunk_delay_ms: float) -> str:
    stub, url = start_stub(tokens, chunk_delay_ms)
    procs.append(stub)
    return url


def soak_config(urls: Sequence[str], strategy: str = "weighted") -> dict[str, Any]:
    """The gateway config: one backend ``stub`` for one URL; for several, backends ``stub-0``… behind one
    deployments route ``stub`` with ``strategy``."""
    price = {"input_per_mtok": 1, "output_per_mtok": 2}
    if len(urls) == 1:
        return {"backends": [{"name": "stub", "kind": "openai", "base_url": urls[0], "price": price}]}
    names = [f"stub-{i}" for i in range(len(urls))]
    return {"backends": [{"name": n, "kind": "openai", "base_url": u, "price": price} for n, u in zip(names, urls)],
            "routes": [{"name": "stub", "deployments": [{"backend": n} for n in names], "strategy": strategy}]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    p.add_argument("--rate", type=float, default=20.0, help="requests started per second (open loop)")
    p.add_argument("--interval", type=float, default=10.0, help="seconds per reported interval")
    p.add_argument("--tokens", type=int, default=16, help="tokens per streamed answer (stub and max_tokens)")
    p.add_argument("--chunk-delay-ms", type=float, default=5.0, help="stub's pause between streamed chunks")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds")
    p.add_argument("--gateway-url", help="soak a running gateway (root URL) instead of starting one")
    p.add_argument("--gateway-pid", type=int, help="its process id, for memory samples")
    p.add_argument("--model", default="stub", help="model to request (with --gateway-url)")
    p.add_argument("--replicas", type=int, default=1, help="stubs behind one deployments route (1: a plain route)")
    p.add_argument("--strategy", default="weighted", help="the deployments route's strategy (with --replicas ≥ 2)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    a = p.parse_args(argv)
    procs: list[subprocess.Popen] = []
    try:
        if a.gateway_url:
            base, pid = a.gateway_url.rstrip("/"), a.gateway_pid
        else:
            work = Path(tempfile.mkdtemp(prefix="tandem-soak-"))
            cfg = soak_config([_started(procs, a.tokens, a.chunk_delay_ms) for _ in range(max(1, a.replicas))],
                              a.strategy)
            gw, base = start_gateway_process(cfg, work)
            procs.append(gw)
            pid = gw.pid
        report = asyncio.run(run_soak(base, pid, a.duration, a.rate, a.interval, a.tokens, a.timeout, a.model))
    finally:
        for proc in reversed(procs):
            stop_process(proc)
    print(json.dumps(report, indent=2) if a.json else render(report))
    return 0


__all__ = ["Sample", "bucketize", "error_rate", "per_replica", "rss_mib", "slope_per_minute", "soak_config",
           "start_gateway_process", "start_stub", "stop_process", "summarize_samples"]

if __name__ == "__main__":
    sys.exit(main())
