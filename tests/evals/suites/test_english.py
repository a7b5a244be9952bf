"""The English suite: balanced families, fact-disjoint splits, and a phrasing-lenient checker that never raises."""

from __future__ import annotations

import pytest

from evals.suites import get_suite
from evals.suites.base import SPLITS, split_of
from evals.suites.english import FAMILIES
from evals.suites.english_facts import Question


@pytest.fixture(scope="module")
def suite():
    return get_suite("english")


def _facts(ex) -> set[str]:
    q = Question.from_meta(ex.meta["question"])
    if q.family == "sum":
        return {f"sum:{sorted(int(x) for x in ex.steps[0].split(' = ')[0].split(' + '))}"}
    if q.family.startswith("passage"):
        return set()
    return {f"{q.family}:{q.subject.lower()}", f"{q.family}:{q.accepted[0].lower()}"}


def test_splits_disjoint_by_fact_and_balanced(suite) -> None:
    sets = {s: suite.examples(s, 120) for s in SPLITS}
    assert all(split_of(ex.prompt) == s for s, exs in sets.items() for ex in exs)
    train_facts = set().union(*(_facts(ex) for ex in suite.examples("train", 3000)))
    for s in ("validation", "test"):
        held = set().union(*(_facts(ex) for ex in sets[s]))
        assert held and not held & train_facts, s  # no held-out fact is asked in train, in any wording
    counts = {f: sum(ex.meta["category"] == f for ex in sets["test"]) for f in FAMILIES}
    assert min(counts.values()) >= 15, counts  # families in turn: a 120-item prefix holds each ~20 times
    assert [ex.prompt for ex in get_suite("english").examples("test", 120)] == [ex.prompt for ex in sets["test"]]


def test_reference_answers_score_one(suite) -> None:
    for ex in suite.examples("test", 200):
        assert suite.check(ex, ex.answer).score == 1.0, ex
        assert suite.check(ex, ex.steps[0]).score == 1.0, ex
        assert suite.check(ex, ex.final).score == 1.0, ex


def _first(suite, family: str):
    return next(ex for ex in suite.examples("test", 60) if ex.meta["category"] == family)


def test_reply_shapes(suite) -> None:
    ex = _first(suite, "capital")
    q = Question.from_meta(ex.meta["question"])
    city = q.accepted[0]
    assert suite.check(ex, f"{city}!").score == 1.0
    assert suite.check(ex, f"Sure.\n\nThe capital of {q.subject} is {city}. It is a big city.").score == 1.0
    assert suite.check(ex, f"The capital of {q.subject} is Lyon.").score == 0.0
    assert suite.check(ex, f"{city} or Lyon or Rome").score == 0.0
    ex = _first(suite, "sum")
    value = int(ex.final)
    assert suite.check(ex, f"The answer is {value}.").score == 1.0
    assert suite.check(ex, f"The answer is {value + 1}.\nanswer: {value + 1}").score == 0.0


def test_passage_answers_come_from_the_text(suite) -> None:
    ex = next(e for e in suite.examples("test", 100) if e.meta["question"]["family"] == "passage-town")
    town = ex.final
    other = "Oakdale" if town != "Oakdale" else "Milltown"
    assert town in ex.prompt and ex.prompt.count(" lives in ") == 1
    assert suite.check(ex, f"They live in {town}.").score == 1.0
    assert suite.check(ex, f"Either {town} or {other}.").score == 0.0
    assert suite.check(ex, other).score == 0.0


def test_never_raises(suite) -> None:
    ex = suite.examples("test", 1)[0]
    for junk in (None, 3, b"x", "\x00" * 10, "answer:", "a" * 100_000):
        res = suite.check(ex, junk)  # type: ignore[arg-type]
        assert res.score in (0.0, 1.0) and res.step_scores is None


def test_hand_written_items_find_their_question(suite) -> None:
    ex = suite._make("What is the capital of France?", "The capital of France is Paris.", "Paris", "capital")
    assert suite.check(ex, "Paris.").score == 1.0 and suite.check(ex, "The capital of Spain is Paris.").score == 0.0
    ex = suite._make('What is the opposite of "hot"?', "cold", "cold", "opposite")
    assert suite.check(ex, 'The opposite of "hot" is "cold".').score == 1.0
    with pytest.raises(KeyError):
        suite._make("Where does Anna live?", "Oakdale", "Oakdale", "passage")
