"""Where a collaboration's wall time goes: one :class:`CallTiming` per remote model call, and the pure arithmetic
that splits a request's wall time from them.

A :class:`collab.session.Member` records a :class:`CallTiming` for every ``complete_ids`` call and every stream it
opens (start, first token, end, tokens received, whether it was cancelled). :func:`wall_split` turns a session's
timings into: per model the time it had a call in flight (the union of its intervals), the time both (any two) had
one in flight at once (the overlap that running calls side by side buys), and the time no model call was in flight
— the gateway's own gaps (routing, bookkeeping, event-loop hops) between calls. Times are ``time.perf_counter()``
seconds.

What it leaves out: the time inside a server (queueing, prefill, decode: the server's own metrics say that), and
the client's side (the caller measures its own wall time around the request).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class CallTiming:
    """One model call as the gateway saw it: ``kind`` is ``"call"`` (one request, whole answer) or ``"stream"``."""

    model: str
    start: float
    prompt_tokens: int = 0
    kind: str = "call"
    first: float | None = None  # first token received (streams)
    end: float | None = None
    tokens: int = 0  # tokens received
    cancelled: bool = False  # a stream closed before the server finished it


def union_length(intervals: Iterable[tuple[float, float]]) -> float:
    """Total length covered by closed intervals ``(a, b)`` (overlaps counted once; empty or reversed ones skipped)."""
    total, cur_a, cur_b = 0.0, None, None
    for a, b in sorted((a, b) for a, b in intervals if b > a):
        if cur_b is None or a > cur_b:
            if cur_b is not None and cur_a is not None:
                total += cur_b - cur_a
            cur_a, cur_b = a, b
        elif b > cur_b:
            cur_b = b
    if cur_a is not None and cur_b is not None:
        total += cur_b - cur_a
    return total


def _clip(calls: Sequence[CallTiming], t0: float, t1: float) -> list[tuple[str, float, float]]:
    out = []
    for c in calls:
        end = c.end if c.end is not None else t1
        a, b = max(c.start, t0), min(end, t1)
        if b > a:
            out.append((c.model, a, b))
    return out


def overlap_length(intervals: Sequence[tuple[str, float, float]]) -> float:
    """Time during which calls of at least two different models were in flight at once."""
    events: list[tuple[float, int, str]] = []
    for m, a, b in intervals:
        events += [(a, 1, m), (b, -1, m)]
    events.sort(key=lambda e: (e[0], e[1]))  # ends before starts at the same instant
    live: dict[str, int] = {}
    total, last = 0.0, None
    for t, d, m in events:
        if last is not None and sum(1 for v in live.values() if v > 0) >= 2:
            total += t - last
        live[m] = live.get(m, 0) + d
        last = t
    return total


def wall_split(calls: Sequence[CallTiming], t0: float, t1: float) -> dict[str, Any]:
    """Split the wall time ``[t0, t1]`` of one request by its model calls: ``wall_s``; ``busy_s`` per model (time it
    had a call in flight); ``any_model_s`` (some call in flight); ``overlap_s`` (two models at once); ``gaps_s``
    (no call in flight: the gateway's own time); ``calls`` and ``cancelled`` per model."""
    iv = _clip(calls, t0, t1)
    models = sorted({c.model for c in calls})
    busy = {m: union_length((a, b) for mm, a, b in iv if mm == m) for m in models}
    anyc = union_length((a, b) for _, a, b in iv)
    wall = max(t1 - t0, 0.0)
    return {"wall_s": wall, "busy_s": busy, "any_model_s": anyc, "overlap_s": overlap_length(iv),
            "gaps_s": max(wall - anyc, 0.0),
            "calls": {m: sum(1 for c in calls if c.model == m) for m in models},
            "cancelled": {m: sum(1 for c in calls if c.model == m and c.cancelled) for m in models}}


def add_splits(total: dict[str, Any], one: dict[str, Any]) -> dict[str, Any]:
    """Sum two :func:`wall_split` results (or a running total and one result; ``{}`` is the empty total)."""
    out: dict[str, Any] = {}
    for k in set(total) | set(one):
        a, b = total.get(k), one.get(k)
        if isinstance(a, dict) or isinstance(b, dict):
            a, b = a or {}, b or {}
            out[k] = {m: a.get(m, 0) + b.get(m, 0) for m in sorted(set(a) | set(b))}
        else:
            out[k] = (a or 0) + (b or 0)
    return out
