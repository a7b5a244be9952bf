"""The provenance runs' pure rules, against a character-by-character reference: every character of the answer is
credited to one model, and the runs are those characters grouped by neighbours of one model."""

from __future__ import annotations

import random

import pytest

from gateway.provenance import cut_runs, merged_runs, runs_for, runs_from_pieces


def _reference(owners: list[str], text: str) -> list[dict[str, str]] | None:
    """Runs built one character at a time."""
    out: list[dict[str, str]] = []
    for model, ch in zip(owners, text, strict=True):
        if out and out[-1]["model"] == model:
            out[-1]["text"] += ch
        else:
            out.append({"model": model, "text": ch})
    return out or None


def _random_stream(rng: random.Random) -> tuple[list[str], list[tuple[int, str]], str]:
    models = ["small", "large", "expert"][: rng.randint(1, 3)]
    pieces = ["".join(rng.choice("ab <>&\n\u2603") for _ in range(rng.randint(0, 4))) for _ in range(rng.randint(0, 12))]
    writers = [(i, rng.choice(models)) for i in range(len(pieces)) if rng.random() < 0.8]
    return pieces, writers, "chosen"


@pytest.mark.parametrize("seed", range(200))
def test_stream_runs_match_the_character_reference(seed: int) -> None:
    rng = random.Random(seed)
    pieces, writers, fallback = _random_stream(rng)
    got = runs_from_pieces(pieces, writers, fallback)
    if not writers:
        assert got is None
        return
    named = dict(writers)
    owners = [named.get(i, fallback) for i, p in enumerate(pieces) for _ in p]
    text = "".join(pieces)
    assert got == _reference(owners, text)
    if got is not None:
        assert "".join(r["text"] for r in got) == text
        assert all(a["model"] != b["model"] for a, b in zip(got, got[1:]))  # merged
        assert runs_for(text, got) == got

    for cap in (0, 1, 3, len(text), len(text) + 5):
        cut = cut_runs(got, cap)
        assert cut == _reference(owners[:cap], text[:cap])


def test_merged_runs_merges_neighbours_and_refuses_malformed_runs() -> None:
    assert merged_runs([{"model": "a", "text": "x"}, {"model": "a", "text": "y"}, {"model": "b", "text": ""},
                        {"model": "b", "text": "z"}]) == [{"model": "a", "text": "xy"}, {"model": "b", "text": "z"}]
    for bad in (None, [], "runs", [{"model": "a"}], [{"model": 1, "text": "x"}], [["a", "x"]],
                [{"model": "a", "text": ""}]):
        assert merged_runs(bad) is None, bad


def test_runs_for_keeps_only_runs_of_that_text() -> None:
    runs = [{"model": "a", "text": "he"}, {"model": "b", "text": "llo"}]
    assert runs_for("hello", runs) == runs
    assert runs_for("hello!", runs) is None  # runs of some other text are not kept
    assert runs_for(None, runs) is None and runs_for("", runs) is None
    assert runs_for("hello", None) is None
