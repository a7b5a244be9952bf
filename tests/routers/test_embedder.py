"""Sentence embeddings: the model, its precision, the memory and disk caches, the per-query helper
(routers/embedder.py)."""

from __future__ import annotations

import numpy as np
import pytest

from routers.base import RouteQuery
from routers.embedder import EMBED_DIM, EmbeddableQuery, Embedder, default_cache_name, embeddings, resolve_precision


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


def test_precision_names_the_cache_file_and_bf16_stays_close_to_fp32(tmp_path) -> None:
    with pytest.raises(ValueError):
        resolve_precision("int4")
    assert resolve_precision("auto") in ("float32", "bfloat16")
    fp32, bf16 = Embedder(precision="float32", cache_dir=tmp_path), Embedder(precision="bfloat16", cache_dir=tmp_path)
    assert fp32.cache_path == tmp_path / default_cache_name("float32")
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


def test_without_a_cache_folder_nothing_touches_the_disk(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TANDEM_CACHE", str(tmp_path / "env-cache"))  # the package reads no environment
    e = Embedder(flush_every=1)
    assert e.cache_path is None
    v = e.embed_one("kept in memory only")
    assert e.embed(["kept in memory only", "and a second text"]).shape == (2, EMBED_DIM)
    assert e.flush() == 0 and e.stats["flushes"] == 0
    assert e.embed_one("kept in memory only") is v
    assert list(tmp_path.iterdir()) == []
    # an explicit path wins over the folder
    assert Embedder(cache_path=tmp_path / "x.sqlite", cache_dir=tmp_path / "dir").cache_path == tmp_path / "x.sqlite"


def test_embeddings_cache_the_vector_on_each_query() -> None:
    e = Embedder()
    qs = [RouteQuery(prompt=repr(["earlier turn", "Which gas do plants absorb?"])), RouteQuery(prompt="hello")]
    assert all(isinstance(q, EmbeddableQuery) for q in qs)
    a = embeddings(qs, e)
    assert a.shape == (2, EMBED_DIM) and qs[0].features["text"] == "Which gas do plants absorb?"
    assert np.allclose(a[0], e.embed_one("Which gas do plants absorb?"))  # the routing text is what is embedded
    hits = e.stats["hits"]
    assert np.array_equal(embeddings(qs, e), a) and e.stats["hits"] == hits  # from the queries, not the embedder
    assert embeddings([], e).shape == (0, EMBED_DIM)
