"""Prometheus metrics of one gateway process, on a registry of its own (no global state).

Counts requests by route and status, latency and gateway overhead, tokens and dollars per model. What it leaves
out: aggregation across replicas (Prometheus scrapes each replica).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gateway.usage import Usage

_LAT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_OVH_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)


class GatewayMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
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

    def observe(self, route: str, status: str, seconds: float, overhead_s: float, usage: Usage) -> None:
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

    def render(self) -> bytes:
        return generate_latest(self.registry)
