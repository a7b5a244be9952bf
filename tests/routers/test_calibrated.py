"""Rich features, calibrated per-model heads and the `logreg` router (routers/calibrated.py)."""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
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


def _cluster_embed(queries):
    """Deterministic stand-in embedding: 'code' prompts near e0, others near e1, plus a per-text wobble."""
    out = []
    for q in queries:
        rng = np.random.default_rng(sum(map(ord, q.prompt)))
        v = np.zeros(384)
        v[0 if "python" in q.prompt else 1] = 1.0
        v += 0.3 * rng.standard_normal(384) / np.sqrt(384)
        out.append(v / np.linalg.norm(v))
    return np.array(out, dtype=np.float32)


def _labelled(n: int = 40) -> list[RouteQuery]:
    return [RouteQuery(prompt=f"write python code number {i}" if i % 2 else f"what is {i} plus {i}?",
                       category="code" if i % 2 else "math") for i in range(n)]


def test_predicted_category_block_ignores_the_label_and_finds_the_category() -> None:
    qs = _labelled()
    f = RichFeatures(use_tfidf=False, use_emb=False, predict_category=True).fit(qs, _cluster_embed)
    test = [RouteQuery(prompt="write python code to sort"), RouteQuery(prompt="what is 7 plus 9?")]
    labelled_wrong = [RouteQuery(prompt=q.prompt, category="math") for q in test]
    a, b = f.category_matrix(test, _cluster_embed), f.category_matrix(labelled_wrong, _cluster_embed)
    assert np.allclose(a, b)  # the label of a query is never an input
    assert [f.categories[k] for k in a.argmax(axis=1)] == ["code", "math"]
    assert np.allclose(a.sum(axis=1), 1.0)
    oof = f.category_matrix(qs, _cluster_embed, train=True)  # out-of-fold block for the fitted rows
    assert oof.shape == (len(qs), 2) and np.allclose(oof.sum(axis=1), 1.0)
    assert np.mean([f.categories[k] == q.category for k, q in zip(oof.argmax(axis=1), qs, strict=True)]) > 0.9


def test_linear_heads_match_the_stacked_feature_logits() -> None:
    from routers.calibrated import LinearHeads

    qs = _labelled(60)
    f = RichFeatures(predict_category=True, use_hand=True).fit(qs, _cluster_embed)
    rng = np.random.default_rng(1)
    is_code = np.array([q.category == "code" for q in qs])
    scores = np.stack([is_code & (rng.random(60) < 0.9), rng.random(60) < 0.5, np.ones(60, bool)], 1).astype(float)
    heads, _, _ = fit_heads(f.transform(qs, _cluster_embed, train=True), scores, folds=3)
    assert isinstance(heads[2], float)  # one class only: a constant head
    test = [RouteQuery(prompt=t) for t in ("write python code number 7 now", "what is 3 plus 3?", "zzz unseen")]
    ref = head_logits(heads, f.transform(test, _cluster_embed))
    lin = LinearHeads(f, heads)
    assert np.allclose(lin.logits(test, _cluster_embed), ref, atol=1e-10)
    assert np.allclose(np.vstack([lin.logits([q], _cluster_embed) for q in test]), ref, atol=1e-10)


def test_knn_scores_leave_one_out_matches_brute_force() -> None:
    from routers.calibrated import KnnScores, blend

    rng = np.random.default_rng(2)
    emb = rng.standard_normal((30, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    scores = (rng.random((30, 3)) < 0.5).astype(float)
    scores[3, 1] = np.nan
    knn = KnnScores(emb, scores, k=50)  # capped at a tenth of the 30 rows: k = 3
    assert knn.k == 3
    loo = knn.loo(chunk=7)
    for i in range(30):
        sims = emb @ emb[i]
        sims[i] = -np.inf
        nn = np.argsort(-sims)[:3]
        assert np.allclose(loo[i], np.nanmean(scores[nn], axis=0))
    p = rng.random((4, 3))
    assert np.allclose(blend(p, knn.predict(emb[:4]), 0.25), 0.75 * p + 0.25 * knn.predict(emb[:4]))
    assert blend(p, None, 0.5) is p


def test_hand_block_is_standardised_on_the_training_queries_and_optional() -> None:
    qs = _labelled(40)
    f = RichFeatures(use_tfidf=False, use_emb=False, use_hand=True).fit(qs)
    block = f.hand_block(qs)
    spread = block.std(axis=0)
    assert np.allclose(block.mean(axis=0), 0.0, atol=1e-9)
    assert np.allclose(spread[spread > 0], f.hand_weight)
    assert f.transform(qs).shape == (len(qs), f.hand_block_size() + len(f.categories))
    plain = RichFeatures(use_tfidf=False, use_emb=False).fit(qs)  # off unless asked for
    assert plain.transform(qs).shape[1] == len(plain.categories)
    # an unversioned artifact saved before the block (and the predicted category) existed transforms without them
    old = RichFeatures.__new__(RichFeatures)
    old.__setstate__({k: v for k, v in f.__dict__.items()
                      if k not in ("hand_mean", "hand_scale", "use_hand", "hand_weight", "cat_head", "_train_cat")})
    assert old.hand_block_size() == 0 and old.cat_head is None
    assert old.transform(qs).shape[1] == len(f.categories)


def test_gain_targets_mark_which_of_each_pair_alone_passes() -> None:
    from routers.calibrated import gain_targets

    s = np.array([[0, 1, 1], [1, 0, 0], [1, 1, 0], [0, 0, 1], [0.4, 0.6, 0.2], [np.nan, 1, 1]], dtype=float)
    t = gain_targets(s, ref=0)  # columns: (1 only, 0 only) then (2 only, 0 only)
    assert t[:5].tolist() == [[1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 0, 1], [0, 0, 1, 0], [1, 0, 0, 0]]
    assert np.isnan(t[5]).all()
    assert gain_targets(s, ref=1)[3].tolist() == [0, 0, 1, 0]  # model 0 vs 1, then model 2 vs 1
    assert gain_targets(s[:, :1], ref=0).shape == (6, 0)


def test_with_gains_keeps_the_reference_and_moves_the_others() -> None:
    from routers.calibrated import with_gains

    p = np.array([[0.6, 0.2, 0.5], [0.5, 0.5, 0.5], [0.95, 0.9, 0.1], [0.3, 0.4, 0.2]])
    # gain probabilities per row: (0 only, 1 only) then (2 only, 1 only); reference = model 1
    g = np.array([[0.5, 0.1, 0.3, 0.2], [0.1, 0.3, 0.0, 0.0], [0.7, 0.0, 0.1, 0.2], [np.nan, 0.2, 0.3, 0.1]])
    out = with_gains(p, g, ref=1, weight=0.5)
    for i in range(4):
        assert out[i, 1] == p[i, 1]
        for k, j in enumerate((0, 2)):
            gain = g[i, 2 * k] - g[i, 2 * k + 1]
            ref = p[i, j] if np.isnan(gain) else np.clip(p[i, 1] + 0.5 * (p[i, j] - p[i, 1]) + 0.5 * gain, 0, 1)
            assert np.isclose(out[i, j], ref)
    assert np.isclose(out[0, 0], 0.2 + 0.2 + 0.2) and out[2, 0] == 1.0  # 0.9 + 0.025 + 0.35, clipped at 1
    assert np.allclose(with_gains(p, g, ref=1, weight=0.0), p)  # weight 0: the heads alone


def _two_model_matrix():
    from evals.replay_data import ScoreMatrix
    from tests.routers.test_roundtrip import small_matrix

    sm = small_matrix()
    keep = [0, 2]  # cheap (solves code) and dear (solves almost all)
    return ScoreMatrix(sm.prompts, [sm.models[j] for j in keep], sm.scores[:, keep], sm.costs[:, keep],
                       sm.categories, sm.ids, sm.source)


def _reference_pass_probs(router, qs):
    """The stacked feature rows through `predict_heads` (sklearn's logits), the kNN blend, then the pairing."""
    from routers.calibrated import blend, with_gains

    bh = router.blended_heads
    x = bh.features.transform(qs, router.embed)
    p = blend(predict_heads(bh.heads, x), bh.knn.predict(router.embed(qs)), bh.knn_weight)
    if bh.gain_heads is None:
        return p
    return with_gains(p, predict_heads(bh.gain_heads, x), bh.gain_ref, bh.gain_weight)


TWO_QUERIES = [RouteQuery(prompt=t) for t in ("What is 5 plus 2 times 7? Compute the total.",
                                              "Write a python function that returns the sum of a list of integers.")]


def test_two_model_logreg_pairs_its_heads_with_gain_heads_and_the_fast_path_agrees() -> None:
    from routers.calibrated import CalibratedRouter

    sm = _two_model_matrix()
    router = CalibratedRouter(seed=0).fit(sm)
    bh = router.blended_heads
    assert bh.gain_heads is not None and len(bh.gain_heads) == 2 and bh.gain_ref == 0  # cheap
    assert np.allclose(router.predict(TWO_QUERIES), _reference_pass_probs(router, TWO_QUERIES), atol=1e-9)
    off = CalibratedRouter(seed=0, gain_weight=0.0).fit(sm)
    assert off.blended_heads.gain_heads is None
    assert np.allclose(off.predict(TWO_QUERIES), _reference_pass_probs(off, TWO_QUERIES), atol=1e-9)
    assert not np.allclose(off.predict(TWO_QUERIES), router.predict(TWO_QUERIES))


def test_gain_heads_pair_every_model_with_the_cheapest_in_logreg_and_glider() -> None:
    from routers.calibrated import CalibratedRouter
    from routers.glider import GliderRouter
    from tests.routers.test_roundtrip import small_matrix

    three = CalibratedRouter(seed=0).fit(small_matrix())
    assert len(three.blended_heads.gain_heads) == 4 and three.blended_heads.gain_ref == 0
    assert np.allclose(three.predict(TWO_QUERIES), _reference_pass_probs(three, TWO_QUERIES), atol=1e-9)
    glider = GliderRouter(seed=0).fit(_two_model_matrix())
    assert glider.blended_heads.gain_heads is not None
    local = 1 / (1 + np.exp(-glider.local_logits(TWO_QUERIES)))
    assert np.allclose(local, np.clip(_reference_pass_probs(glider, TWO_QUERIES), 1e-6, 1 - 1e-6), atol=1e-9)


# ------------------------------------------------------------------------- artifacts from before `BlendedHeads`

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("name", ["glider", "logreg"])
def test_an_unversioned_artifact_of_the_old_layout_loads_and_predicts_as_the_code_that_wrote_it(name, tmp_path) -> None:
    from routers.base import Router
    from routers.calibrated import BlendedHeads
    from routers.embedder import Embedder

    path = tmp_path / f"{name}.pkl"  # written by tests/routers/data/make_unversioned.py with the old code
    path.write_bytes(gzip.decompress((DATA / f"unversioned-{name}.pkl.gz").read_bytes()))
    expected = json.loads((DATA / "unversioned.json").read_text())
    router = Router.load(path)
    assert isinstance(router.blended_heads, BlendedHeads) and router.blended_heads.gain_heads
    assert not {"heads", "features", "knn", "gain_heads", "gain_ref", "cat_costs", "knn_weight"} & set(vars(router))
    router.embedder = Embedder(precision="float32")
    qs = [RouteQuery(prompt=q) for q in expected["queries"]]
    np.testing.assert_allclose(router.predict(qs), expected[name]["predict"], atol=1e-6)
    assert [router.decide(q).route for q in expected["queries"]] == expected[name]["routes"]
    router.save(tmp_path / "again.pkl")  # saved again: the current layout, versioned
    np.testing.assert_allclose(Router.load(tmp_path / "again.pkl").predict(qs), router.predict(qs), atol=1e-12)


def _as_unversioned(router, drop=()):
    """The router's state in the layout before `BlendedHeads`: its parts and configuration on the router itself."""
    state = dict(router.__getstate__())
    bh = state.pop("blended_heads")
    state.update({k: getattr(bh, k) for k in ("features", "heads", "cat_costs", "knn", "gain_heads", "gain_ref",
                                               "knn_weight", "knn_k", "gain_weight", "inner_folds")})
    if type(router).__name__ == "CalibratedRouter":
        state.update(c_grid=bh.c_grid, use_tfidf=bh.use_tfidf)
    for k in drop:
        state.pop(k)
    old = type(router).__new__(type(router))
    old.__dict__.update(state)
    return pickle.loads(pickle.dumps(old))


def test_older_unversioned_layouts_upgrade_as_the_old_code_read_them() -> None:
    from routers.base import ArtifactError
    from routers.calibrated import CalibratedRouter, blend

    router = CalibratedRouter(seed=0).fit(_two_model_matrix())
    bh = router.blended_heads
    same = _as_unversioned(router)
    assert np.allclose(same.predict(TWO_QUERIES), router.predict(TWO_QUERIES), atol=1e-12)
    assert same.blended_heads.c_grid == bh.c_grid and same.query_costs
    # before gain heads and the kNN blend: the per-model heads alone
    plain = _as_unversioned(router, drop=("gain_heads", "gain_ref", "gain_weight", "knn", "knn_weight", "knn_k"))
    x = bh.features.transform(TWO_QUERIES, router.embed)
    assert np.allclose(plain.predict(TWO_QUERIES), predict_heads(bh.heads, x), atol=1e-9)
    assert plain.blended_heads.knn is None and plain.blended_heads.gain_heads is None
    # before category costs: the mean cost per model
    no_costs = _as_unversioned(router, drop=("cat_costs", "query_costs"))
    assert no_costs.prepare(TWO_QUERIES).costs is None and router.prepare(TWO_QUERIES).costs is not None
    # the kNN part without its weight: the old code read weight 0
    no_weight = _as_unversioned(router, drop=("knn_weight", "gain_heads"))
    assert np.allclose(no_weight.predict(TWO_QUERIES), blend(predict_heads(bh.heads, x), None, 0.0), atol=1e-9)
    with pytest.raises(ArtifactError, match="gain heads without a reference model"):
        _as_unversioned(router, drop=("gain_ref",))
    with pytest.raises(ArtifactError, match="holds no heads"):
        _as_unversioned(router, drop=("heads",))
