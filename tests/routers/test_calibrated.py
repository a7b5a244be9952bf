"""Rich features, calibrated per-model heads and the `logreg` router (routers/calibrated.py)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from routers.base import RouteQuery, utility_argmax
from routers.calibrated import (
    RichFeatures,
    fit_heads,
    head_logits,
    knob_grid_with_top,
    log_loss,
    predict_heads,
)


def test_category_block_one_hot_and_unknown_zero() -> None:
    qs = [RouteQuery(prompt="a", category="x"), RouteQuery(prompt="b", category="y"), RouteQuery(prompt="c")]
    f = RichFeatures(use_tfidf=False, use_emb=False, cat_weight=2.0).fit(qs)
    m = f.category_matrix(qs + [RouteQuery(prompt="d", category="z")])
    assert m.tolist() == [[2.0, 0.0], [0.0, 2.0], [0.0, 0.0], [0.0, 0.0]]


def test_tfidf_keeps_only_ngrams_seen_twice() -> None:
    qs = [RouteQuery(prompt=t) for t in ["red apple", "red pear", "green kiwi"]]
    f = RichFeatures(use_emb=False).fit(qs)
    x = f.transform([RouteQuery(prompt="red kiwi")])
    assert x.shape[1] == len(f.columns) == 1 and x.nnz == 1  # only "red" is in two training queries


def test_log_loss_reference() -> None:
    from sklearn.metrics import log_loss as ref

    rng = np.random.default_rng(0)
    p, y = rng.random(50), rng.integers(0, 2, 50)
    assert abs(log_loss(p, y) - ref(y, p, labels=[0, 1])) < 1e-9


def test_heads_learn_a_separable_rule_and_choose_c_inside_training() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5))
    scores = np.stack([(x[:, 0] > 0).astype(float), np.ones(120), np.full(120, np.nan)], axis=1)
    scores[:10, 0] = np.nan
    heads, oof, cs = fit_heads(sp.csr_matrix(x), scores, c_grid=(0.01, 10.0), folds=3)
    assert isinstance(heads[1], float) and isinstance(heads[2], float)  # one class / no data → constants
    assert cs[0] == 10.0  # the separable column prefers weak regularisation on inner-CV log-loss
    assert np.all(np.isnan(oof[:10, 0])) and np.all(np.isfinite(oof[10:, 0]))
    p = predict_heads(heads, sp.csr_matrix(x))
    assert np.mean((p[:, 0] > 0.5) == (x[:, 0] > 0)) > 0.95
    # the direct linear form equals sklearn's own (the reference twin), sparse and dense
    np.testing.assert_allclose(head_logits(heads, sp.csr_matrix(x))[:, 0], heads[0].decision_function(x), rtol=1e-12)
    np.testing.assert_allclose(predict_heads(heads, x)[:, 0], heads[0].predict_proba(x)[:, 1], rtol=1e-9)
    np.testing.assert_allclose(predict_heads(heads, x)[:, 1], heads[1], rtol=1e-12)


def test_grid_reaches_the_top_cost_model_and_the_cheapest() -> None:
    costs = np.array([0.001, 0.004, 0.02])
    pred = np.array([[0.9, 0.95, 0.1], [0.2, 0.3, 0.99]])
    grid = knob_grid_with_top(costs)
    assert utility_argmax(pred, costs, grid[0]).tolist() == [2, 2]  # forced top-cost model
    assert utility_argmax(pred, costs, 0.0).tolist() == [1, 2]  # best predicted
    assert utility_argmax(pred, costs, grid[-1]).tolist() == [0, 0]  # cheapest
