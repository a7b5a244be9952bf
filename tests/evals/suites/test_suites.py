"""Properties every suite shares: deterministic, disjoint splits; short ASCII examples; checkers that never raise."""

from __future__ import annotations

import pytest

from evals.suites import SUITE_NAMES, get_suite
from evals.suites.base import split_of

JUNK = ["", "   \n\n", "garbage !!! ###", "answer:", "answer: ", "answer: abc", "\u00e9\u4e2d\u6587 answer: \u2603",
        "x" * 200_000, "1+1=2\n" * 5000 + "answer: 2", "answer: " + "9" * 5000, "\x00\x01\x02", None, 12345,
        "SELECT", "a*b=c\nanswer: 1e999", "99999999999999999999*9=1\nanswer: -0"]


@pytest.fixture(scope="module", params=SUITE_NAMES)
def suite(request):
    return get_suite(request.param)


def test_unknown_suite_and_split():
    with pytest.raises(KeyError):
        get_suite("nope")
    with pytest.raises(ValueError):
        get_suite("units").examples("dev", 3)


def test_splits_are_deterministic(suite):
    a = suite.examples("test", 50)
    b = get_suite(suite.name).examples("test", 80)[:50]  # a fresh suite; also a prefix of a longer draw
    assert [(e.id, e.prompt, e.answer) for e in a] == [(e.id, e.prompt, e.answer) for e in b]
    assert suite.examples("train", 30) == suite.examples("train", 30)
    assert a[7].id == f"{suite.name}/test/00007"


def test_splits_are_disjoint_by_prompt(suite):
    train = {e.prompt for e in suite.examples("train", 20_000)}
    validation = suite.examples("validation")
    test = suite.examples("test")
    assert len(validation) == 300 and len(test) == 300
    val_p, test_p = {e.prompt for e in validation}, {e.prompt for e in test}
    assert len(val_p) == len(validation) and len(test_p) == len(test)  # de-duplicated
    assert not train & test_p and not train & val_p and not val_p & test_p
    assert all(split_of(p) == "test" for p in test_p)


def test_examples_are_short_ascii_with_meta(suite):
    for e in suite.examples("train", 3000):
        text = e.prompt + e.answer
        assert text.isascii() and len(text) <= 360, e  # + chat markers < the zoo models' 384-token context
        assert "tier" in e.meta and "category" in e.meta
        assert e.suite == suite.name
        if suite.name == "sql":
            assert e.steps == () and e.answer == e.final and "\n" not in e.answer
        else:
            assert e.answer == "\n".join([*e.steps, f"answer: {e.final}"])
    tiers = {e.meta["tier"] for e in suite.examples("train", 2000)}
    assert len(tiers) == 5


def test_reference_answers_score_one(suite):
    for e in suite.examples("validation", 150):
        r = suite.check(e, e.answer)
        assert r.score == 1.0 and r.detail == "ok", (e, r)
        if r.step_scores is not None:
            assert r.step_scores == [1.0] * len(e.steps)


def test_other_examples_answers_score_zero(suite):
    exs = suite.examples("test", 120)
    wrong = sum(suite.check(e, exs[(i + 1) % len(exs)].answer).score for i, e in enumerate(exs))
    assert wrong <= 0.05 * len(exs)  # another problem's answer is (almost) never right


@pytest.mark.parametrize("junk", JUNK, ids=range(len(JUNK)))
def test_malformed_outputs_score_zero_without_raising(suite, junk):
    e = suite.examples("test", 1)[0]
    r = suite.check(e, junk)
    assert r.score == 0.0 and isinstance(r.detail, str) and r.detail
    assert suite.check_step(e, [], junk if isinstance(junk, str) else "") in (0.0, 1.0)
