"""The English answer judge (tolerant of wording, strict about facts) and the fact-level split."""

from __future__ import annotations

import pytest

from evals.suites import english_facts as F
from evals.suites.english import opposite_pool, sum_pool

Q = F.Question


@pytest.mark.parametrize("line", [
    "Paris", "paris!", "1. Paris", "The capital of France is Paris.", "Paris is the capital of France.",
    "2. The capital of France is Paris, France.", "France: Paris", "The capital of France is Paris (a big city).",
    "The capital of France is Paris, and the capital of Italy is Rome.",
])
def test_capital_right(line: str) -> None:
    assert F.judge_line(line, Q("capital", "France", ("Paris",)))


@pytest.mark.parametrize("line", [
    "Lyon", "The capital of France is Lyon.", "The capital of Spain is Paris.", "Paris or Rome", "France",
    "The capital of France is France.", "1. France", "", "Rome is the capital of France.",
    "The capital of Italy is Rome, and the capital of France is Madrid.",
])
def test_capital_wrong(line: str) -> None:
    assert not F.judge_line(line, Q("capital", "France", ("Paris",)))


def test_multiword_and_alternatives() -> None:
    q = Q("capital", "India", ("New Delhi", "Delhi"))
    assert F.judge_line("The capital of India is New Delhi.", q) and F.judge_line("Delhi", q)
    q = Q("capital", "the Netherlands", ("Amsterdam",))
    assert F.judge_line("The capital of Netherlands is Amsterdam.", q)
    assert F.judge_line("The capital of the Netherlands is Amsterdam.", q)
    assert not F.judge_line("The capital of the Netherlands is Brussels.", q)


def test_opposites_catch_a_restated_wrong_question() -> None:
    q = Q("opposite", "left", ("right",))
    assert F.judge_line('The opposite of "left" is "right".', q)
    assert F.judge_line("Right.", q) and F.judge_line("3. right", q)
    assert not F.judge_line('The opposite of "right" is "left".', q)
    assert not F.judge_line("left", q) and not F.judge_line("The opposite of left is left.", q)
    q = Q("opposite", "hot", ("cold",))
    assert F.judge_line('The opposite of "hot" is "cold" in terms of temperature.', q)
    assert not F.judge_line('The opposite of "hot" is "warm".', q)


def test_words_and_sums() -> None:
    q = Q("plural", "mouse", ("mice",))
    assert F.judge_line('The plural of "mouse" is "mice".', q) and F.judge_line("mice", q)
    assert not F.judge_line('The plural of "mouse" is "mouses".', q) and not F.judge_line("mouse", q)
    assert not F.judge_line('The plural of "goose" is "mice".', q)
    q = Q("sum", "", ("12",))
    for ok in ("12", "7 + 5 = 12", "The answer is 12.", "1. 7 + 5 = 12", "12 (7 + 5)"):
        assert F.judge_line(ok, q), ok
    for bad in ("13", "7 + 5 = 13", "1.", "12 - 1 = 11", "none"):
        assert not F.judge_line(bad, q), bad


def test_passage_pairs_people_with_their_facts() -> None:
    q = Q("passage-pet", "Anna", ("dog",))
    assert F.judge_line("Anna has a red dog.", q)
    assert F.judge_line("Ben lives in Oakdale and has a cat, and Anna has a dog.", q)
    assert F.judge_line("dog", q)
    assert not F.judge_line("Anna has a red cat.", q) and not F.judge_line("Ben has a dog.", q)
    assert not F.judge_line("A dog or a cat.", q)
    q = Q("passage-age", "Anna", ("12",))
    assert F.judge_line("Anna is 12 years old.", q) and not F.judge_line("Anna is 21.", q)


def test_never_raises() -> None:
    for junk in (None, 3, b"x", "\x00" * 10, "(", "a" * 100_000):
        assert F.judge_line(junk, Q("capital", "France", ("Paris",))) is False  # type: ignore[arg-type]


def test_fact_split_is_stable_and_every_family_has_held_out_facts() -> None:
    assert F.fact_split("capital:france") == F.fact_split("capital:france")
    for pairs, family in ((F.CAPITALS, "capital"), (F.PLURALS, "plural")):
        splits = {s: F.facts_of(pairs, family, s) for s in ("train", "validation", "test")}
        assert sum(len(v) for v in splits.values()) == len(pairs)
        assert len(splits["test"]) >= 5 and len(splits["validation"]) >= 5, family
    for split in ("train", "validation", "test"):
        assert opposite_pool(split) and sum_pool(split)
    assert not {frozenset(p) for p in opposite_pool("test")} & {frozenset(p) for p in opposite_pool("train")}
    assert not {frozenset(p) for p in sum_pool("test")} & {frozenset(p) for p in sum_pool("train")}


def test_word_lists_keep_subjects_and_values_apart() -> None:
    """A word that is both a subject and a value of one family would make a line ambiguous to the judge."""
    for pairs in (F.CAPITALS, F.PLURALS):
        subjects, values = {a.lower() for a, _ in pairs}, {b.lower() for _, b in pairs}
        assert not subjects & values
        assert len({a for a, _ in pairs}) == len(pairs)
    opposite_words = [w for pair in F.OPPOSITES for w in pair]
    assert len(set(opposite_words)) == len(opposite_words)  # a word in two pairs would be one fact in two splits
