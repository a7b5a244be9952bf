"""The wall-time split of a collaboration's calls (collab.timeline) against hand-worked intervals."""

from __future__ import annotations

import pytest

from collab.timeline import CallTiming, add_splits, overlap_length, union_length, wall_split


def test_union_length() -> None:
    assert union_length([]) == 0.0
    assert union_length([(0, 1), (0.5, 2), (3, 4), (3.5, 3.6)]) == pytest.approx(3.0)
    assert union_length([(2, 1), (1, 1)]) == 0.0  # empty and reversed intervals count nothing


def test_overlap_length_counts_two_models_at_once_only() -> None:
    iv = [("a", 0.0, 2.0), ("a", 1.0, 3.0), ("b", 2.5, 5.0), ("b", 4.0, 4.5)]
    assert overlap_length(iv) == pytest.approx(0.5)  # a and b both in flight on [2.5, 3]


def test_wall_split() -> None:
    calls = [CallTiming("small", 0.0, end=1.0), CallTiming("large", 0.5, end=1.5, kind="stream", cancelled=True),
             CallTiming("small", 2.0, end=2.5), CallTiming("large", 4.0)]  # still open at t1
    s = wall_split(calls, -1.0, 5.0)
    assert s["wall_s"] == 6.0
    assert s["busy_s"] == pytest.approx({"large": 2.0, "small": 1.5})
    assert s["any_model_s"] == pytest.approx(3.0) and s["overlap_s"] == pytest.approx(0.5)
    assert s["gaps_s"] == pytest.approx(3.0)
    assert s["calls"] == {"large": 2, "small": 2} and s["cancelled"] == {"large": 1, "small": 0}
    assert wall_split(calls, 0.25, 0.75)["busy_s"] == pytest.approx({"large": 0.25, "small": 0.5})  # clipped


def test_add_splits() -> None:
    one = wall_split([CallTiming("m", 0.0, end=1.0)], 0.0, 2.0)
    tot = add_splits(add_splits({}, one), one)
    assert tot["wall_s"] == 4.0 and tot["gaps_s"] == 2.0 and tot["busy_s"] == {"m": 2.0} and tot["calls"] == {"m": 2}
