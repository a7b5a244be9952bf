"""Hand features and hashed TF-IDF of the routing text (routers/features.py)."""

from __future__ import annotations

import numpy as np

from routers.base import RouteQuery
from routers.features import Tfidf, hand_features


def test_hand_features_count_things() -> None:
    v = hand_features("Write a python function. How many items? 12345")
    assert v[2] == np.log1p(5) and v[3] >= 2 and v[4] >= 1 and v[6] == 1


def test_hand_features_read_the_numbers_a_problem_states() -> None:
    from routers.features import HAND_FEATURE_NAMES

    text = "Ann buys 12 pens at $1.50 each. She gives 3/4 of them away. How many pens are left? She had 12."
    v = dict(zip(HAND_FEATURE_NAMES, hand_features(text), strict=True))
    assert len(v) == len(hand_features("x"))
    assert v["numbers"] == 5 and v["distinct_numbers"] == 4  # 12, 1.50, 3, 4 and 12 again
    assert v["longest_number"] == 3 and v["decimals"] == 1 and v["fractions"] == 1
    assert v["quantity_words"] == 2 and v["sentences"] == 4  # '$', 'each'
    assert hand_features("no numbers here")[HAND_FEATURE_NAMES.index("numbers")] == 0


def test_tfidf_fit_transform() -> None:
    train = [RouteQuery(prompt=t) for t in ["sum of numbers", "python code", "sum of code"]]
    t = Tfidf().fit(train)
    x = t.transform([RouteQuery(prompt="sum python")])
    assert x.shape[0] == 1 and abs(np.linalg.norm(x.toarray()) - 1.0) < 1e-9
