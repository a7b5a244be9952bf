"""CoE's category → expert map (ε, budget) and confidence threshold (routers/coe.py)."""

from __future__ import annotations

import numpy as np

from routers.coe import coe_expert_map, confidence_threshold

MEANS = np.array([[0.50, 0.70, 0.72], [0.80, 0.60, 0.90]])
COSTS = np.array([1.0, 2.0, 10.0])


def test_expert_map_best_and_eps() -> None:
    assert coe_expert_map(MEANS, COSTS, 0.0).tolist() == [2, 2]
    assert coe_expert_map(MEANS, COSTS, 0.05).tolist() == [1, 2]
    assert coe_expert_map(MEANS, COSTS, 0.1).tolist() == [1, 0]
    assert coe_expert_map(MEANS, COSTS, 1.0).tolist() == [0, 0]


def test_expert_map_budget_downgrades_cheapest_loss_first() -> None:
    # eps 0: [2, 2] costs 10. Budget 6: moving cat 0 from 2→1 loses 0.02 for 8 saved; cat 1 2→0 loses 0.1 for 9.
    assert coe_expert_map(MEANS, COSTS, 0.0, budget=6.0).tolist() == [1, 2]
    assert coe_expert_map(MEANS, COSTS, 0.0, budget=3.0).tolist() == [1, 0]
    assert coe_expert_map(MEANS, COSTS, 0.0, budget=0.5).tolist() == [0, 0]  # as low as it goes
    w = np.array([1.0, 3.0])
    got = coe_expert_map(MEANS, COSTS, 0.0, budget=6.0, weights=w)
    assert float(np.dot(w / w.sum(), COSTS[got])) <= 6.0


def test_expert_map_skips_missing_models() -> None:
    means = np.array([[np.nan, 0.7, 0.72]])
    assert coe_expert_map(means, COSTS, 1.0).tolist() == [1]


def test_confidence_threshold() -> None:
    mp = np.array([0.2, 0.3, 0.4, 0.9, 0.95])
    ok = np.array([0, 1, 0, 1, 1])
    # accuracy of the lowest rows: [0, .5, .33, .5, .6] → last index with ≤ 0.5 is 3 → threshold = mp[4]
    assert confidence_threshold(mp, ok, 0.5) == 0.95
    assert confidence_threshold(mp, ok, 0.4) == 0.9  # index 2 (acc .33) → threshold mp[3]
    assert confidence_threshold(mp, np.ones(5), 0.5) == 0.0
