"""Complexity labels and scoring helpers of the SQL complexity evaluation (evals/sql_complexity.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evals.sql_complexity import load_bird, load_spider, macro_f1, within_one

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def test_macro_f1_matches_sklearn() -> None:
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(1)
    y, p = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    assert abs(macro_f1(p, y, 4) - f1_score(y, p, average="macro")) < 1e-12


def test_within_one() -> None:
    assert within_one(np.array([0, 2, 3]), np.array([1, 0, 3])) == pytest.approx(2 / 3)


@pytest.mark.skipif(not (DATA / "spider").exists(), reason="shared data not present")
def test_labels_come_from_the_data() -> None:
    q, y = load_spider(DATA)
    assert len(q) == len(y) == 1034 and np.bincount(y).tolist() == [248, 446, 174, 166]
    q, y = load_bird(DATA)
    assert len(q) == 500 and set(y) == {0, 1, 2} and "Evidence:" in q[0]
