"""Per-route totals of what a collaboration's protocol did, from the decision the gateway returns with each answer
(``tandem.decision.routers[…]["collab"]``, written by ``gateway.backends.collab_backend.collab_decision``) and the
client's own wall time per request.

:class:`ProtocolStats` sums, over a route's requests: answer tokens, model calls per member (→ calls per answer
token), the strategy's counts, and the wall time split three ways — **servers** (some member call in flight), the
**gateway** (its collaboration loop with no member call in flight, plus the pipeline's own ``overhead_ms``), and the
**client** (the rest of the client's wall time: HTTP, SSE parsing, the ``openai`` client) — with the gateway
process's CPU seconds beside them. :meth:`ProtocolStats.summary` is what ``tandem eval collab`` puts under each
collaboration route's ``protocol`` key.

What it leaves out: time inside each server (queueing vs. prefill vs. decode; the servers' own metrics say that).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def collab_decision(tandem: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The collaboration's decision in a final chunk's ``tandem`` object (None when there is none)."""
    routers = ((tandem or {}).get("decision") or {}).get("routers") or []
    for r in reversed(routers):
        if isinstance(r, Mapping) and "collab" in r:
            return dict(r["collab"])
    return None


def latency_means(stats: Mapping[str, int]) -> dict[str, float]:
    """Mean latencies from summed counts: ``{"large_first_token": …}`` from ``large_first_token_ms_sum`` and
    ``large_first_token_n``."""
    out = {}
    for k, v in stats.items():
        if k.endswith("_ms_sum"):
            base = k[: -len("_ms_sum")]
            n = stats.get(f"{base}_n", 0)
            if n:
                out[base] = v / n
    return dict(sorted(out.items()))


@dataclass
class ProtocolStats:
    """Totals over one collaboration route's requests."""

    requests: int = 0
    tokens: int = 0
    calls: dict[str, int] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)
    client_s: float = 0.0  # the client's wall time
    collab_s: float = 0.0  # the collaboration's own wall time in the gateway
    servers_s: float = 0.0  # some member call in flight
    overlap_s: float = 0.0  # two members' calls in flight at once
    busy_s: dict[str, float] = field(default_factory=dict)
    gaps_s: float = 0.0  # in the collaboration, no member call in flight
    overhead_s: float = 0.0  # the gateway pipeline's own time around the backend
    cpu_s: float = 0.0  # the gateway process's CPU time during the collaborations

    def add(self, decision: Mapping[str, Any] | None, client_s: float, overhead_ms: float = 0.0) -> None:
        if not decision:
            return
        self.requests += 1
        self.tokens += int(decision.get("tokens") or 0)
        for m, c in (decision.get("calls") or {}).items():
            self.calls[m] = self.calls.get(m, 0) + int(c)
        for k, v in (decision.get("stats") or {}).items():
            self.stats[k] = self.stats.get(k, 0) + int(v)
        t = decision.get("timing") or {}
        self.client_s += client_s
        self.collab_s += float(t.get("wall_s") or 0.0)
        self.servers_s += float(t.get("any_model_s") or 0.0)
        self.overlap_s += float(t.get("overlap_s") or 0.0)
        self.gaps_s += float(t.get("gaps_s") or 0.0)
        self.cpu_s += float(t.get("cpu_s") or 0.0)
        for m, v in (t.get("busy_s") or {}).items():
            self.busy_s[m] = self.busy_s.get(m, 0.0) + float(v)
        self.overhead_s += overhead_ms / 1000.0

    def summary(self) -> dict[str, Any]:
        """Calls per answer token (in all and per member) and the wall-time split (seconds and shares of the
        client's wall time)."""
        calls = sum(self.calls.values())
        gateway = self.gaps_s + self.overhead_s
        client = max(self.client_s - self.collab_s - self.overhead_s, 0.0)
        wall = self.client_s or 1.0
        return {
            "requests": self.requests, "tokens": self.tokens,
            "calls_per_token": calls / self.tokens if self.tokens else 0.0,
            "calls_per_token_by_model": {m: c / self.tokens for m, c in sorted(self.calls.items())}
            if self.tokens else {},
            "stats": dict(sorted(self.stats.items())),
            "latency_ms": latency_means(self.stats),
            "wall_s": {"client_total": self.client_s, "servers": self.servers_s, "gateway": gateway,
                       "client": client, "overlap": self.overlap_s, "busy": dict(sorted(self.busy_s.items())),
                       "gateway_cpu": self.cpu_s},
            "wall_share": {"servers": self.servers_s / wall, "gateway": gateway / wall, "client": client / wall},
        }


def format_protocol(routes: Mapping[str, Mapping[str, Any]]) -> str:
    """One line per collaboration route with protocol totals: calls per answer token and the wall-time split."""
    lines = []
    for name, r in routes.items():
        p = r.get("protocol")
        if not p:
            continue
        per = ", ".join(f"{m} {v:.3f}" for m, v in p["calls_per_token_by_model"].items())
        sh = p["wall_share"]
        lines.append(f"{name}: {p['calls_per_token']:.3f} calls per answer token ({per}); wall time: servers "
                     f"{sh['servers']:.0%}, gateway {sh['gateway']:.0%}, client {sh['client']:.0%}; gateway CPU "
                     f"{p['wall_s']['gateway_cpu']:.1f} s of {p['wall_s']['client_total']:.1f} s")
    return "\n".join(lines)
