"""SVG primitives (evals/svg.py): round ticks, linear and log scales, the cost axis choice, label placement."""

from __future__ import annotations

import pytest

from evals import svg


def test_nice_ticks_and_axis():
    assert svg.nice_ticks(0, 1, 5) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    t = svg.nice_ticks(0.013, 0.97)
    assert t[0] >= 0.013 and t[-1] <= 0.97 and len(t) >= 3
    ax = svg.Axis(1e-3, 10.0, 0, 400, log=True)
    assert ax(1e-3) == pytest.approx(0) and ax(10) == pytest.approx(400) and ax(0.1) == pytest.approx(200)
    assert all(1e-3 <= v <= 10 for v in ax.ticks())


def test_cost_axis_goes_log_only_for_a_wide_positive_span():
    assert svg.cost_axis([0.01, 1.0], 0, 100).log
    lin = svg.cost_axis([0.0, 1.0], 0, 100)
    assert not lin.log and lin.lo == 0.0 and lin.hi == pytest.approx(1.15)
    assert not svg.cost_axis([1.0, 10.0], 0, 100).log


def test_points_attr_and_label_placement():
    x, y = svg.Axis(0.0, 1.0, 0, 100), svg.Axis(0.0, 1.0, 100, 0)
    assert svg.points_attr([(0.0, 0.0), (0.5, 1.0)], x, y) == "0.0,100.0 50.0,0.0"
    boxes: list[tuple[float, float, float, float]] = []
    area = (0.0, 0.0, 400.0, 400.0)
    first = svg.label_position(200, 200, 40, [(200, 200)], boxes, area)
    assert first == (212, 192, "start") and len(boxes) == 1
    # a second point just right of the first: its label may overlap neither the first label nor a point
    second = svg.label_position(230, 200, 40, [(200, 200), (230, 200)], boxes, area)
    assert second != first and len(boxes) == 2
    (a0, a1, a2, a3), (b0, b1, b2, b3) = boxes
    assert not (a0 < b2 and b0 < a2 and a1 < b3 and b1 < a3)


def test_escaping_and_formats():
    assert svg.esc('<a href="x">&') == "&lt;a href=&quot;x&quot;&gt;&amp;"
    assert svg.fmt_money(0.00123) == "$0.00123" and svg.fmt_money(float("inf")) == "∞"
    assert svg.fmt_pct(0.5) == "50.0%" and svg.fmt_s(0.25) == "250 ms"
    assert svg.colours(["a", "b"]) == {"a": svg.PALETTE[0], "b": svg.PALETTE[1]}
