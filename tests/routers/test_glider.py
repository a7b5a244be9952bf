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


def test_decision_reports_softmax_and_top_k_over_the_candidates() -> None:
    from routers.base import RouteQuery
    from routers.glider import GliderRouter
    from tests.routers.test_roundtrip import MODELS, small_matrix

    router = GliderRouter(seed=0, top_k=2).fit(small_matrix())
    q = RouteQuery(prompt="What is 4 plus 7 times 11? Compute the total.")
    d = router.decide(q)
    logits = router.logits([q])[0]
    assert list(d.extra["softmax"]) == MODELS
    assert np.allclose(list(d.extra["softmax"].values()), softmax(logits))
    assert d.extra["top_k"] == [MODELS[j] for j in np.argsort(-logits, kind="stable")[:2]]
    assert d.extra["knob"] == router.default_knob()
    # restricted to two candidates: the distribution and top-k are over those two alone, in the router's order
    only = router.decide(q, candidates=["dear", "cheap"])
    assert list(only.extra["softmax"]) == ["cheap", "dear"]
    assert np.allclose(list(only.extra["softmax"].values()), softmax(logits[[0, 2]]))
    assert set(only.extra["top_k"]) == {"cheap", "dear"} and only.route in ("cheap", "dear")
