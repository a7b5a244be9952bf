"""The semantic-cache measurement: its figures on hand-made vectors, and the paraphrase set it reads."""

from __future__ import annotations

import numpy as np
import pytest

from bench.semantic_cache import DATA, answer_ids, load_pairs, measure


def _unit(*xs: float) -> np.ndarray:
    v = np.array(xs, np.float32)
    return v / np.linalg.norm(v)


def test_figures_on_known_vectors():
    pairs = [{"a": "q1", "b": "q1'", "same_answer": True}, {"a": "q2", "b": "q2'", "same_answer": True},
             {"a": "q1", "b": "r1", "same_answer": False}, {"a": "q3", "b": "r3", "same_answer": False}]
    vec = {"q1": _unit(1, 0, 0), "q1'": _unit(1, 0.1, 0), "q2": _unit(0, 1, 0), "q2'": _unit(0, 1, 1),
           "r1": _unit(1, 0.05, 0), "q3": _unit(0, 0, 1), "r3": _unit(1, 1, 0)}
    [row] = measure(pairs, vec, [0.9])
    assert row["pair_hit_rate"] == 0.5  # q1' reaches q1; q2' (cosine 0.71) does not reach q2
    assert row["pair_false_hit_rate"] == 0.5  # r1 reaches q1; r3 reaches nothing
    assert row["cache_same_served"] == 0.5 and row["cache_same_wrong"] == 0.0
    assert row["cache_different_served"] == 0.5 and row["cache_different_wrong"] == 0.5  # r1 gets q1's answer


def test_answer_ids_join_paraphrases_only():
    ids = answer_ids([{"a": "x", "b": "y", "same_answer": True}, {"a": "y", "b": "z", "same_answer": True},
                      {"a": "x", "b": "w", "same_answer": False}])
    assert ids["x"] == ids["y"] == ids["z"] != ids["w"]


def test_the_paraphrase_set_has_both_kinds_and_no_repeats():
    pairs = load_pairs(DATA)
    same = [p for p in pairs if p["same_answer"]]
    assert len(same) >= 100 and len(pairs) - len(same) >= 100
    assert len({(p["a"], p["b"]) for p in pairs}) == len(pairs)
    assert all(p["a"] != p["b"] for p in pairs)


@pytest.mark.parametrize("field", ["a", "b"])
def test_questions_are_text(field):
    assert all(isinstance(p[field], str) and p[field].strip() for p in load_pairs(DATA))
