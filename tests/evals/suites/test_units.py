"""Units suite: a float reference twin re-derives every answer; checker on right, wrong and malformed answers."""

from __future__ import annotations

import re
from fractions import Fraction

import pytest

from evals.suites.units import UnitsSuite, fmt, parse_number

# Reference twin: size of each unit in a base unit (m, g, s, l), independent of the generator's ladders.
SIZE = {"mm": 1e-3, "cm": 1e-2, "m": 1.0, "km": 1e3, "in": 0.0254, "ft": 0.3048, "yd": 0.9144, "mi": 1609.344,
        "mg": 1e-3, "g": 1.0, "kg": 1e3, "t": 1e6, "s": 1.0, "min": 60.0, "h": 3600.0, "day": 86400.0,
        "week": 604800.0, "ml": 1e-3, "l": 1.0, "kl": 1e3}


def convert(prompt: str) -> float:
    if m := re.fullmatch(r"convert (-?[\d.]+) C to F", prompt):
        return float(m[1]) * 9 / 5 + 32
    if m := re.fullmatch(r"convert (-?[\d.]+) F to C", prompt):
        return (float(m[1]) - 32) * 5 / 9
    if m := re.fullmatch(r"convert ([\d.]+) km/h to m/s", prompt):
        return float(m[1]) / 3.6
    if m := re.fullmatch(r"convert (\d+) (\w+) (\d+) (\w+) to (\w+)", prompt):
        return (int(m[1]) * SIZE[m[2]] + int(m[3]) * SIZE[m[4]]) / SIZE[m[5]]
    m = re.fullmatch(r"convert ([\d.]+) (\w+) to (\w+)", prompt)
    assert m, prompt
    return float(m[1]) * SIZE[m[2]] / SIZE[m[3]]


@pytest.fixture(scope="module")
def suite() -> UnitsSuite:
    return UnitsSuite()


def test_reference_twin_agrees(suite):
    for e in suite.examples("train", 3000):
        expected = convert(e.prompt)
        assert abs(float(e.final) - expected) <= 1e-9 * max(1.0, abs(expected)), e
        assert 1 <= e.meta["tier"] <= 5


def test_fmt_and_parse():
    assert [fmt(Fraction(x)) for x in ("7/2", "-1/4", "5", "1/1000", "-40")] == ["3.5", "-0.25", "5", "0.001", "-40"]
    with pytest.raises(ValueError):
        fmt(Fraction(1, 3))
    assert parse_number("3500.0") == 3500 and parse_number(".5") == Fraction(1, 2) and parse_number("1e3") is None


def test_right_wrong_malformed(suite):
    e = next(x for x in suite.examples("test", 100) if x.meta["category"] == "two_hop")
    assert suite.check(e, e.answer).score == 1.0
    assert suite.check(e, f"answer: {e.final}.000").score == 1.0
    assert suite.check(e, f"answer: {e.final} {e.prompt.split()[-1]}").score == 1.0  # trailing unit allowed
    r = suite.check(e, "\n".join(e.steps) + f"\nanswer: {fmt(Fraction(e.final) + 1)}")
    assert (r.score, r.detail, r.step_scores) == (0.0, "wrong final", [1.0] * len(e.steps))
    r = suite.check(e, "\n".join(e.steps))
    assert r.score == 0.0 and r.detail.startswith("malformed")
    assert suite.check(e, "answer: lots").detail.startswith("malformed")


def test_step_checker_matches_reference_steps(suite):
    e = next(x for x in suite.examples("test", 100) if x.meta["category"] == "temperature")
    steps = list(e.steps)
    assert [suite.check_step(e, steps[:j], steps[j]) for j in range(3)] == [1.0, 1.0, 1.0]
    assert suite.check_step(e, steps[:1], " ".join(steps[1])) == 1.0  # whitespace ignored
    bad = steps[1].rsplit("=", 1)[0] + "=12345"
    assert suite.check_step(e, steps[:1], bad) == 0.0
    assert suite.check_step(e, steps, "extra=line") == 0.0
    assert suite.check_step(e, steps, f"answer: {e.final}") == 1.0
    r = suite.check(e, "\n".join([steps[0], bad, steps[2]]) + f"\nanswer: {e.final}")
    assert r.step_scores == [1.0, 0.0, 1.0] and r.score == 1.0
