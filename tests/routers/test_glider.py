"""GLIDER's pure rules: logits combination, softmax top-k / top-p, instruction rows (routers/glider.py)."""

from __future__ import annotations

import numpy as np

from routers.glider import glider_logits, glider_select, instruction_rows, softmax


def test_logits_combine() -> None:
    local = np.array([[1.0, 0.0, -1.0]])
    glob = np.array([[0.1, 0.5, -0.6]])
    assert np.allclose(glider_logits(local, glob, 2.0), [[1.2, 1.0, -2.2]])
    assert np.allclose(glider_logits(local, glob, 0.0), local)


def test_softmax_and_select() -> None:
    logits = np.log(np.array([0.5, 0.3, 0.2]))
    assert np.allclose(softmax(logits), [0.5, 0.3, 0.2])
    assert glider_select(logits, k=1) == [0]
    assert glider_select(logits, k=2) == [0, 1]
    assert glider_select(logits, top_p=0.5) == [0]
    assert glider_select(logits, top_p=0.75) == [0, 1]
    assert glider_select(logits, top_p=1.0) == [0, 1, 2]


def test_instruction_rows_rank_by_margin() -> None:
    s = np.array([[1, 1, 1], [1, 0, 0], [0, 1, 1], [1, 0, np.nan]], dtype=float)
    # model 0 passes rows 0, 1, 3; margins 0, 2/3, 1/2
    assert instruction_rows(s, 0, 10).tolist() == [1, 3, 0]
    assert instruction_rows(s, 0, 2).tolist() == [1, 3]
