"""The multi-step English suite: one question family per item, one answer per line, scored per step."""

from __future__ import annotations

from evals.suites import get_suite
from evals.suites.base import split_of
from evals.suites.english import FAMILIES


def test_splits_balance_and_determinism() -> None:
    suite = get_suite("english-steps")
    test = suite.examples("test", 120)
    train = {ex.prompt for ex in suite.examples("train", 2000)}
    assert not {ex.prompt for ex in test} & train and all(split_of(ex.prompt) == "test" for ex in test)
    assert [ex.prompt for ex in test] == [ex.prompt for ex in get_suite("english-steps").examples("test", 120)]
    assert {len(ex.steps) for ex in test} == {2, 3}
    assert [ex.meta["category"] for ex in test[:10]] == list(FAMILIES) * 2  # families in turn
    for ex in test:
        assert len({q["subject"] for q in ex.meta["questions"]}) == len(ex.steps) or ex.meta["category"] in (
            "sum", "passage")
        assert len(set(ex.final.split("; "))) == len(ex.steps)  # no two questions share an answer


def test_reference_and_step_scores() -> None:
    suite = get_suite("english-steps")
    for ex in suite.examples("test", 120):
        res = suite.check(ex, ex.answer)
        assert res.score == 1.0 and res.step_scores == [1.0] * len(ex.steps), ex
    ex = next(e for e in suite.examples("test", 60) if len(e.steps) == 3 and e.meta["category"] == "capital")
    lines = list(ex.steps)
    lines[1] = "2. I do not know."
    res = suite.check(ex, "\n".join(lines))
    assert res.step_scores == [1.0, 0.0, 1.0] and abs(res.score - 2 / 3) < 1e-9
    assert suite.check(ex, ex.steps[0]).step_scores == [1.0, 0.0, 0.0]
    swapped = "\n".join([ex.steps[1].replace("2.", "1."), ex.steps[0].replace("1.", "2."), ex.steps[2]])
    assert suite.check(ex, swapped).step_scores == [0.0, 0.0, 1.0]  # right facts for the wrong questions
    merged = ex.steps[0].rstrip(".") + ", and " + ex.steps[1].split(". ", 1)[1][0].lower() + ex.steps[1].split(". ", 1)[1][1:]
    assert suite.check(ex, f"{merged}\n{ex.steps[2]}").step_scores == [1.0, 1.0, 1.0]  # two answers on one line
    assert suite.check_step(ex, [merged], ex.steps[2]) == 1.0 and suite.check_step(ex, [merged], ex.steps[1]) == 0.0


def test_echoes_and_blank_lines_are_skipped() -> None:
    suite = get_suite("english-steps")
    ex = next(e for e in suite.examples("test", 60) if len(e.steps) == 2)
    q1 = ex.prompt.split("\n")[-2]
    reply = f"{q1}\n\n{ex.steps[0]}\n\n{ex.steps[1]}\nSo that is all."
    assert suite.check(ex, reply).step_scores == [1.0, 1.0]
    assert suite.check_step(ex, [], q1) == 0.0
    assert suite.check_step(ex, [q1, "", ex.steps[0]], ex.steps[1]) == 1.0
    assert suite.check_step(ex, [ex.steps[0]], ex.steps[0]) == 0.0
    assert suite.check_step(ex, [ex.steps[0], ex.steps[1]], ex.steps[1]) == 0.0  # past the last question


def test_enumeration_is_not_an_answer() -> None:
    suite = get_suite("english-steps")
    ex = next(e for e in suite.examples("test", 60) if e.meta["category"] == "sum" and e.final.split("; ")[0] != "1")
    value = ex.final.split("; ")[0]
    assert suite.check_step(ex, [], "1.") == 0.0
    assert suite.check_step(ex, [], f"1. {value}") == 1.0


def test_never_raises() -> None:
    suite = get_suite("english-steps")
    ex = suite.examples("test", 1)[0]
    for junk in (None, 7, "", "\n\n", "answer: x"):
        res = suite.check(ex, junk)  # type: ignore[arg-type]
        assert res.score == 0.0 and res.step_scores == [0.0] * len(ex.steps)
    assert suite.check_step(ex, None, None) == 0.0  # type: ignore[arg-type]
