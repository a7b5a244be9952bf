"""Semantic matching for the response cache: a stored answer also serves a request that says the same thing in
other words.

The rule (:func:`best_match`, pure): among the stored requests of one *group* — same route, same cache scope (key or
shared), same sampling fields and the same conversation up to its last user message, all matched exactly — take
the one whose last user message's MiniLM embedding (``routers.embedder.Embedder``, L2-normalised, so the dot product
is the cosine) is closest to the request's; it is a hit when that cosine is at least the route's
``cache.semantic_threshold``. The index only maps groups to (exact key, vector) pairs; the answers themselves stay in
the exact cache under their exact keys, so an answer that expired there is not served from here (its vector is
dropped when found).

Two indexes with the same semantics: :class:`MemorySemanticIndex` (one process; at most ``max_entries`` vectors per
group, oldest dropped first) and :class:`RedisSemanticIndex` (one Redis hash per group, field = exact key, value =
float32 bytes, expiring with the group's newest answer; trimmed at random beyond ``max_entries``). A Redis failure
is a miss (the cache is an optimisation; it fails open).

The false-hit rate — requests matched to a stored one whose answer differs — depends on the threshold: measure it
with ``python -m bench.semantic_cache`` (paraphrase pairs in ``tests/gateway/data/paraphrases.jsonl``).

What it leaves out: approximate nearest-neighbour search (a group is scanned in full: groups are small, per route
and key), embeddings of whole conversations (only the last user message is compared; everything before it must match
exactly), and any model other than all-MiniLM-L6-v2.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from typing import Any

import numpy as np

log = logging.getLogger("tandem")


def best_match(query: np.ndarray, vectors: np.ndarray, threshold: float) -> tuple[int, float] | None:
    """Index and cosine of the row of ``vectors`` ([n, d], L2-normalised) closest to ``query`` ([d], normalised), or
    None when none reaches ``threshold`` (ties: the first row)."""
    if vectors.shape[0] == 0:
        return None
    sims = vectors @ query
    i = int(np.argmax(sims))
    s = float(sims[i])
    return (i, s) if s >= threshold else None


class SemanticIndex(ABC):
    """Group → stored (exact key, vector) pairs."""

    @abstractmethod
    async def candidates(self, group: str) -> tuple[list[str], np.ndarray]:
        """The exact keys of a group and their vectors ([n, d]; n may be 0)."""

    @abstractmethod
    async def add(self, group: str, exact_key: str, vector: np.ndarray, ttl_s: float, max_entries: int) -> None:
        """Remember ``vector`` for ``exact_key`` in ``group`` (for ``ttl_s`` seconds at least)."""

    @abstractmethod
    async def drop(self, group: str, exact_key: str) -> None:
        """Forget one key (its answer expired)."""


class MemorySemanticIndex(SemanticIndex):
    """Vectors in this process: per group an insertion-ordered map, expired with the group's newest entry."""

    def __init__(self, clock=time.monotonic, max_groups: int = 10_000) -> None:
        self.clock = clock
        self.max_groups = max_groups
        self._groups: OrderedDict[str, tuple[float, OrderedDict[str, np.ndarray]]] = OrderedDict()

    async def candidates(self, group: str) -> tuple[list[str], np.ndarray]:
        entry = self._groups.get(group)
        if entry is None or entry[0] <= self.clock():
            self._groups.pop(group, None)
            return [], np.zeros((0, 0), np.float32)
        keys = list(entry[1])
        return keys, np.stack([entry[1][k] for k in keys])

    async def add(self, group: str, exact_key: str, vector: np.ndarray, ttl_s: float, max_entries: int) -> None:
        entry = self._groups.get(group)
        now = self.clock()
        vecs = entry[1] if entry is not None and entry[0] > now else OrderedDict()
        vecs.pop(exact_key, None)
        vecs[exact_key] = np.asarray(vector, np.float32)
        while len(vecs) > max_entries:
            vecs.popitem(last=False)
        self._groups[group] = (now + ttl_s, vecs)
        self._groups.move_to_end(group)
        while len(self._groups) > self.max_groups:
            self._groups.popitem(last=False)

    async def drop(self, group: str, exact_key: str) -> None:
        entry = self._groups.get(group)
        if entry is not None:
            entry[1].pop(exact_key, None)


class RedisSemanticIndex(SemanticIndex):
    """Vectors in a shared Redis (the limit store's client), one hash per group."""

    def __init__(self, redis: Any, prefix: str = "tandem:rc:sem") -> None:
        self.redis = redis
        self.prefix = prefix

    async def candidates(self, group: str) -> tuple[list[str], np.ndarray]:
        try:
            found = await self.redis.hgetall(f"{self.prefix}:{group}")
        except Exception as e:  # noqa: BLE001 - the cache fails open: a Redis outage is a miss
            log.warning("semantic cache read failed: %s", e)
            return [], np.zeros((0, 0), np.float32)
        if not found:
            return [], np.zeros((0, 0), np.float32)
        keys = [k.decode() if isinstance(k, bytes) else k for k in found]
        return keys, np.stack([np.frombuffer(v, np.float32) for v in found.values()])

    async def add(self, group: str, exact_key: str, vector: np.ndarray, ttl_s: float, max_entries: int) -> None:
        name = f"{self.prefix}:{group}"
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(name, exact_key, np.asarray(vector, np.float32).tobytes())
                pipe.pexpire(name, max(1, int(ttl_s * 1000)))
                pipe.hlen(name)
                _, _, n = await pipe.execute()
            if n > max_entries:
                extra = await self.redis.hrandfield(name, n - max_entries)
                if extra:
                    await self.redis.hdel(name, *[k for k in extra if k != exact_key.encode()])
        except Exception as e:  # noqa: BLE001 - the cache fails open
            log.warning("semantic cache write failed: %s", e)

    async def drop(self, group: str, exact_key: str) -> None:
        try:
            await self.redis.hdel(f"{self.prefix}:{group}", exact_key)
        except Exception as e:  # noqa: BLE001 - the cache fails open
            log.warning("semantic cache write failed: %s", e)
