"""Garbage-collector policy of a serving process, and the collector's pauses as a metric.

CPython's cyclic collector stops the whole process while it runs. A full (generation 2) collection walks every
tracked object: after start-up that is the whole import graph (FastAPI, pydantic, SQLAlchemy, routers…), so each
one stalls the event loop, and every request in flight waits it out; with many connections open that is the p99.
``tuned`` (the default of ``tandem serve``) therefore, once start-up is over:

1. collects once and ``gc.freeze()`` s what is left: the start-up heap moves to the permanent generation, which later
   collections never walk (it is not freed either: it lives as long as the process anyway);
2. raises the generation-0 threshold (``RuntimePolicy.thresholds``): request garbage is freed by reference
   counting, so collections of the young generation find little, and fewer of them cost less in all.

``default`` leaves CPython's settings alone (for comparison: ``python -m bench.gateway_overhead --baseline-serve-args
"--runtime default"`` measures both in one run). A shorter GIL switch interval (against the request log's writer
thread) was measured the same way and gained nothing, so it is not part of ``tuned``. :class:`GcPauses` times every collection through ``gc.callbacks`` and
records it in a histogram by generation (``tandem_gc_pause_seconds``), so a stall shows up on ``/metrics``.

What it leaves out: reference cycles created per request are still collected (less often); memory of objects frozen
after start-up is never returned; the interpreter's own allocator.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

POLICIES = ("tuned", "default")


@dataclass(frozen=True)
class RuntimePolicy:
    """What to do with the collector once start-up is over."""

    freeze: bool = True
    """Collect once, then move every surviving object to the permanent generation (``gc.freeze``)."""
    thresholds: tuple[int, int, int] | None = (20_000, 20, 10)
    """``gc.set_threshold`` values (generation 0 allocations, then collections of the younger generation before the
    next one is collected); None keeps CPython's. Measured with ``python -m bench.gateway_overhead``."""


def policy_named(name: str) -> RuntimePolicy:
    """``tuned``: freeze and a higher young threshold; ``default``: CPython's collector untouched."""
    if name == "tuned":
        return RuntimePolicy()
    if name == "default":
        return RuntimePolicy(freeze=False, thresholds=None)
    raise ValueError(f"unknown runtime policy {name!r}; choose one of {', '.join(POLICIES)}")


def apply_after_startup(policy: RuntimePolicy) -> int:
    """Apply ``policy`` now (call it once start-up has built everything long-lived). Returns the objects frozen."""
    frozen = 0
    if policy.freeze:
        gc.collect()
        gc.freeze()
        frozen = gc.get_freeze_count()
    if policy.thresholds is not None:
        gc.set_threshold(*policy.thresholds)
    return frozen


class GcPauses:
    """Times each collection (``gc.callbacks``) and hands ``(generation, seconds)`` to ``observe``."""

    def __init__(self, observe: Callable[[int, float], None]):
        self._observe = observe
        self._t0 = 0.0
        self._installed = False

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        elif self._t0:
            self._observe(int(info.get("generation", 0)), time.perf_counter() - self._t0)
            self._t0 = 0.0

    def install(self) -> None:
        if not self._installed:
            gc.callbacks.append(self._callback)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            gc.callbacks.remove(self._callback)
            self._installed = False
