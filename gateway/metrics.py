"""Prometheus metrics of one gateway process, on a registry of its own (no global state).

Counts requests by route and status, latency and gateway overhead, tokens and dollars per model, and the garbage
collector's pauses (``gateway.runtime_policy``). With ``tandem serve --workers N`` every worker's values live in files of
one shared folder (prometheus_client's multiprocess mode, set up by ``gateway.workers``); ``render`` then sums
them, so ``/metrics`` on any worker shows the totals of all. What it leaves out: aggregation across replicas
(Prometheus scrapes each replica).
"""

from __future__ import annotations

import os
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.usage import Usage

_LAT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_OVH_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)
_GC_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own switch to multiprocess mode


class GatewayMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tandem_requests", "Requests by route and outcome", ["route", "status"], registry=r)
        self.latency = Histogram("tandem_request_seconds", "Request latency", ["route"], buckets=_LAT_BUCKETS,
                                 registry=r)
        self.overhead = Histogram("tandem_overhead_seconds", "Time spent in the gateway itself",
                                  buckets=_OVH_BUCKETS, registry=r)
        self.tokens = Counter("tandem_tokens", "Tokens by model and kind", ["model", "kind"], registry=r)
        self.cost = Counter("tandem_cost_usd", "Dollars by model", ["model"], registry=r)
        self.log_spooled = Counter("tandem_log_rows_spooled", "Request-log rows kept for a later write", registry=r)
        self.gc_pause = Histogram("tandem_gc_pause_seconds", "Pauses of the cyclic garbage collector",
                                  ["generation"], buckets=_GC_BUCKETS, registry=r)
        # Filled from gc.callbacks, which may fire inside a prometheus_client lock (they are not reentrant):
        # the callback only appends here, and request-time code moves the pauses into the histogram.
        self._gc_pending: deque[tuple[int, float]] = deque(maxlen=10_000)

    def observe(self, route: str, status: str, seconds: float, overhead_s: float, usage: Usage) -> None:
        if self._gc_pending:
            self.drain_gc()
        self.requests.labels(route, status).inc()
        self.latency.labels(route).observe(seconds)
        self.overhead.observe(max(overhead_s, 0.0))
        for m in usage.models:
            if m.prompt_tokens:
                self.tokens.labels(m.model, "prompt").inc(m.prompt_tokens)
            if m.completion_tokens:
                self.tokens.labels(m.model, "completion").inc(m.completion_tokens)
            if m.cost_usd:
                self.cost.labels(m.model).inc(m.cost_usd)

    def observe_gc(self, generation: int, seconds: float) -> None:
        """Note one collection's pause; safe to call from a ``gc.callbacks`` callback (takes no lock)."""
        self._gc_pending.append((generation, seconds))

    def drain_gc(self) -> None:
        """Move noted collector pauses into the histogram (never from inside a GC callback)."""
        while self._gc_pending:
            try:
                gen, s = self._gc_pending.popleft()
            except IndexError:
                return
            self.gc_pause.labels(str(gen)).observe(s)

    def render(self) -> bytes:
        """The text exposition: this process's registry, or with workers the sum over every worker's files."""
        self.drain_gc()
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self.multiprocess_dir)
        return generate_latest(merged)
