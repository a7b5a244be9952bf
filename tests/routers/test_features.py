"""Routing text extraction, hand features, hashed TF-IDF and cached embeddings (routers/features.py)."""

from __future__ import annotations

import numpy as np
import pytest

from routers.base import RouteQuery
from routers.features import Embedder, Tfidf, hand_features, resolve_precision, routing_text


def test_routing_text_parses_turn_lists_and_cuts_few_shot_blocks() -> None:
    shots = "\n\n".join(f"Question {i}: what is {i}?\nAnswer: {i}" for i in range(100))
    prompt = repr([shots + "\n\nWhich gas do plants absorb?\nA) O2\nB) CO2\nAnswer:"])
    assert routing_text(prompt) == "Which gas do plants absorb?\nA) O2\nB) CO2\nAnswer:"
    assert routing_text("short question?") == "short question?"
    assert routing_text("[not a list") == "[not a list"


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


def test_embedder_caches_to_disk(tmp_path) -> None:
    e = Embedder(cache_path=tmp_path / "emb.sqlite")
    a = e.embed(["hello world", "a different sentence"])
    assert a.shape == (2, 384) and np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    fresh = Embedder(cache_path=tmp_path / "emb.sqlite")
    b = fresh.embed(["a different sentence"])
    assert fresh._model is None  # served from the disk cache
    assert np.allclose(b[0], a[1])


def test_single_query_misses_stay_in_memory_until_a_bulk_flush(tmp_path) -> None:
    import sqlite3

    path = tmp_path / "emb.sqlite"
    e = Embedder(cache_path=path, flush_every=1000)
    v = e.embed_one("only in memory for now")
    assert v.shape == (384,) and e.stats["misses"] == 1
    assert not path.exists()  # no SQLite per query
    assert e.embed_one("only in memory for now") is v and e.stats["hits"] == 1
    assert e.flush() == 1 and e.flush() == 0
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT count(*) FROM emb").fetchone()[0] == 1
    # the batch path and the single path give the same vector (padding does not change the mean pool)
    batch = Embedder(cache_path=tmp_path / "other.sqlite").embed(["only in memory for now", "a longer second text"])
    assert np.allclose(batch[0], v, atol=1e-5)


def test_lru_evicts_oldest(tmp_path) -> None:
    e = Embedder(cache_path=tmp_path / "emb.sqlite", capacity=2)
    e.embed_one("one")
    e.embed_one("two")
    e.embed_one("one")  # refresh "one"
    e.embed_one("three")  # evicts "two"
    before = e.stats["misses"]
    e.embed_one("one")
    assert e.stats["misses"] == before
    e.embed_one("two")
    assert e.stats["misses"] == before + 1


def test_precision_names_the_cache_file_and_bf16_stays_close_to_fp32(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TANDEM_CACHE", str(tmp_path))
    with pytest.raises(ValueError):
        resolve_precision("int4")
    assert resolve_precision("auto") in ("float32", "bfloat16")
    fp32, bf16 = Embedder(precision="float32"), Embedder(precision="bfloat16")
    assert fp32.cache_path != bf16.cache_path and "bfloat16" in bf16.cache_path.name
    texts = ["Which gas do plants absorb from the air?", "Write a python function that reverses a linked list."]
    a, b = fp32.embed(texts), bf16.embed(texts)
    assert b.dtype == np.float32 and np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert float((a * b).sum(1).min()) > 0.999
    assert float(a[0] @ b[1]) < 0.9  # different texts stay apart


def test_single_text_path_is_traced_and_matches_the_eager_model(tmp_path) -> None:
    e = Embedder(cache_path=tmp_path / "emb.sqlite", precision="float32")
    texts = ["short", "Which metal conducts heat best?\nA) iron\nB) copper", "Write a python function. " * 60]
    single = np.stack([e._encode_single(t) for t in texts])
    assert e._traced  # the TorchScript copy was built and used
    eager = np.stack([e._encode([t])[0] for t in texts])  # batches of one: no padding either
    assert np.abs(single - eager).max() < 1e-5
    assert np.allclose(np.linalg.norm(single, axis=1), 1.0, atol=1e-5)
