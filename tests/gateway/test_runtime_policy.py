"""The serving process's runtime policy (``gateway.runtime_policy``) and the GC-pause metric.

Policies are applied in a fresh interpreter (they change process-wide settings); the pause recorder is checked on a
real ``gc.collect()``. What it leaves out: the effect on latency (``python -m bench.gateway_overhead
--baseline-serve-args "--runtime default"`` measures it).
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import threading

import pytest

from gateway.metrics import GatewayMetrics
from gateway.runtime_policy import GcPauses, RuntimePolicy, policy_named

PROBE = ("import gc, json, sys; import gateway.app; from gateway.runtime_policy import apply_after_startup, "
         "policy_named; n = apply_after_startup(policy_named(sys.argv[1])); "
         "print(json.dumps([n, gc.get_freeze_count(), list(gc.get_threshold())]))")


def _probe(name: str) -> list:
    out = subprocess.run([sys.executable, "-c", PROBE, name], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_tuned_freezes_the_startup_heap_and_sets_thresholds() -> None:
    frozen, count, thresholds = _probe("tuned")
    assert frozen > 10_000 and abs(count - frozen) < 100  # the imported app is frozen out of the collector
    assert tuple(thresholds) == RuntimePolicy().thresholds


def test_default_leaves_the_collector_alone() -> None:
    frozen, count, thresholds = _probe("default")
    assert frozen == count == 0 and thresholds == [700, 10, 10]
    with pytest.raises(ValueError, match="tuned"):
        policy_named("fast")


def _count(text: str, gen: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'tandem_gc_pause_seconds_count{{generation="{gen}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_collector_pauses_reach_the_histogram() -> None:
    m = GatewayMetrics()
    pauses = GcPauses(m.observe_gc)
    pauses.install()
    try:
        gc.collect()
        gc.collect(0)
    finally:
        pauses.uninstall()
    gc.collect()  # not recorded any more
    text = m.render().decode()
    assert _count(text, "2") >= 1 and _count(text, "0") >= 1
    total = _count(text, "0") + _count(text, "1") + _count(text, "2")
    gc.collect()
    assert _count(m.render().decode(), "2") + _count(m.render().decode(), "0") <= total  # uninstalled


def test_noting_a_pause_takes_no_metric_lock() -> None:
    """A GC callback can fire while this thread holds a prometheus_client lock (they are not reentrant)."""
    m = GatewayMetrics()
    done = threading.Event()

    def inside_lock() -> None:
        with m.gc_pause._lock:
            m.observe_gc(2, 0.01)
        done.set()

    t = threading.Thread(target=inside_lock, daemon=True)
    t.start()
    t.join(5)
    assert done.is_set()
    assert _count(m.render().decode(), "2") == 1
