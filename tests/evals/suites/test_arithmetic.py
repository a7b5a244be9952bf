"""Arithmetic suite: final checker, exact process checker, and a reference twin that re-solves each story."""

from __future__ import annotations

import re

import pytest

from evals.suites.arithmetic import MAX_VALUE, TIER_WEIGHTS, ArithmeticSuite, parse_step


@pytest.fixture(scope="module")
def suite() -> ArithmeticSuite:
    return ArithmeticSuite()


def solve_story(prompt: str) -> int:
    """Reference twin: read the story sentence by sentence and compute the answer (no use of the generator)."""
    value = 0
    for sentence in re.split(r"(?<=[.?])\s+", prompt):
        if m := re.fullmatch(r"\w+ has (\d+) \w+ of (\d+) \w+\.", sentence):
            value = int(m[1]) * int(m[2])
        elif m := re.fullmatch(r"\w+ has (\d+) \w+\.", sentence):
            value = int(m[1])
        elif m := re.fullmatch(r"\w+ (buys|sells) (\d+) \w+ of (\d+)( more)?\.", sentence):
            value += (1 if m[1] == "buys" else -1) * int(m[2]) * int(m[3])
        elif m := re.fullmatch(r"\w+ buys (\d+) more\.", sentence):
            value += int(m[1])
        elif m := re.fullmatch(r"\w+ sells (\d+)\.", sentence):
            value -= int(m[1])
        elif m := re.fullmatch(r"\w+ gets (\d+) times as many\.", sentence):
            value *= int(m[1])
        elif m := re.fullmatch(r"\w+ splits them into (\d+) equal piles and keeps one\.", sentence):
            assert value % int(m[1]) == 0
            value //= int(m[1])
        else:
            assert sentence.startswith("How many"), sentence
    return value


def test_reference_twin_agrees_and_steps_are_exact(suite):
    for e in suite.examples("train", 2000):
        assert str(solve_story(e.prompt)) == e.final, e
        assert 2 <= e.meta["tier"] <= 6 and e.meta["n_steps"] == len(e.steps) >= e.meta["tier"]
        for line in e.steps:
            a, op, b, c = parse_step(line)
            assert {"+": a + b, "-": a - b, "*": a * b, "/": a // b if a % b == 0 else None}[op] == c
            assert 0 <= c <= MAX_VALUE


def test_steps_are_labelled_with_their_clause_of_the_story(suite):
    for e in suite.examples("train", 300):
        clauses = [line.split(": ")[0] for line in e.steps if ": " in line]
        # Every operation's sentence is quoted, in story order (a pack's product line carries the label, its sum not).
        assert len(clauses) == len(e.meta["ops"])
        at = 0
        for c in clauses:  # found in order, each after the previous one
            at = e.prompt.index(f"{e.prompt.split()[0]} {c}.", at) + 1


def test_tiers_follow_their_weights(suite):
    tiers = [e.meta["tier"] for e in suite.examples("train", 4000)]
    for tier, weight in TIER_WEIGHTS.items():
        assert abs(tiers.count(tier) / len(tiers) - weight) < 0.03, tier


EX_PROMPT = "Ann has 48 boxes of 7 pens. Ann sells 35. How many pens does Ann have?"


def example(suite):
    from evals.suites.base import candidate

    steps = ["has 48 boxes of 7 pens: 48*7=336", "sells 35: 336-35=301"]
    return candidate("arithmetic", EX_PROMPT, steps, "301", {"tier": 2, "category": "ops2"})


def test_right_wrong_malformed(suite):
    e = example(suite)
    assert suite.check(e, e.answer).score == 1.0
    r = suite.check(e, "7*48=336\n336-35=301\nanswer: 301")  # unlabelled, operands swapped: still valid
    assert (r.score, r.step_scores, r.detail) == (1.0, [1.0, 1.0], "ok")
    r = suite.check(e, "has 48 boxes: 48*7=336\nsells 35: 336-35=311\nanswer: 311")
    assert (r.score, r.step_scores, r.detail) == (0.0, [1.0, 0.0], "wrong final")
    r = suite.check(e, "48*7=336\n336-35=301")
    assert r.score == 0.0 and r.detail.startswith("malformed") and r.step_scores == [1.0, 1.0]
    assert suite.check(e, "answer: three hundred one").detail.startswith("malformed")
    assert suite.check(e, "  answer:  301  ").score == 1.0  # whitespace tolerated, steps optional for the final


def test_process_checker_localises_an_injected_error(suite):
    e = example(suite)
    for i in range(len(e.steps)):
        steps = list(e.steps)
        a, op, b, c = parse_step(steps[i])
        steps[i] = f"{steps[i].split(': ')[0]}: {a}{op}{b}={c + 10}"
        scores = [suite.check_step(e, steps[:j], steps[j]) for j in range(len(steps))]
        assert scores[i] == 0.0 and all(s == 1.0 for s in scores[:i]), (i, scores)
        assert suite.check(e, "\n".join(steps) + f"\nanswer: {e.final}").step_scores == scores


def test_process_checker_requires_available_operands(suite):
    e = example(suite)
    assert suite.check_step(e, [], "has 48 boxes of 7 pens: 48*7=336") == 1.0
    assert suite.check_step(e, [], "50*7=350") == 0.0  # 50 is not in the problem
    assert suite.check_step(e, [], "sells 35: 336-35=301") == 0.0  # 336 not written yet
    assert suite.check_step(e, ["has 48 boxes of 7 pens: 48*7=336"], "sells 35: 336-35=301") == 1.0
    assert suite.check_step(e, [], "35/0=0") == 0.0
    assert suite.check_step(e, [], "the answer is easy") == 0.0
    assert suite.check_step(e, [], "sells: 35") == 0.0
    assert suite.check_step(e, ["x"], "answer: 301") == 1.0
    assert suite.check_step(e, [], "answer: 302") == 0.0


def test_every_reference_step_passes_the_process_checker(suite):
    for e in suite.examples("test", 200):
        assert [suite.check_step(e, list(e.steps[:j]), e.steps[j]) for j in range(len(e.steps))] == [1.0] * len(
            e.steps)
