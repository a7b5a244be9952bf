"""Backend cooldowns: a backend that keeps failing is skipped for a while, then tried again.

The rule (:class:`CooldownPolicy`, pure functions :func:`record_failure`, :func:`record_success`,
:func:`is_cooling`): each retryable failure of a backend is remembered for ``window_s`` seconds; when ``failures`` of
them fall within the window the backend **cools** for ``cooldown_s`` seconds (its failure list is cleared). While it
cools, dispatch skips it and goes to the route's fallbacks (unless every candidate cools: then they are tried
anyway, so a request never fails for cooldowns alone). When the cool-down ends the backend is tried again; a success
clears its failures, ``failures`` new failures cool it again.

Two stores with the same semantics:

* :class:`MemoryCooldownStore` — one process.
* :class:`RedisCooldownStore` — shared by all replicas through the limit store's Redis: failures are a sorted set of
  timestamps per backend and the cool-down is a ``cool_until`` value with a TTL, both changed by one Lua script, so
  replicas see the same state. Cooldowns are an optimization: if Redis fails, the store says "not cooling" and
  forgets the failure (fail open), unlike limits (which fail closed).

What it leaves out: per-error-type policies, exponential cool-down growth, health probing of cooled backends (the
next real request after the cool-down is the probe), and wiring into dispatch (``gateway.dispatch``).
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any

from gateway.limits import LimitStore

log = logging.getLogger("tandem")


@dataclass(frozen=True)
class CooldownPolicy:
    """When a backend cools, and for how long."""

    failures: int = 3
    """Retryable failures within ``window_s`` that cool a backend."""
    window_s: float = 30.0
    """How long a failure counts."""
    cooldown_s: float = 15.0
    """How long a cooled backend is skipped."""


@dataclass(frozen=True)
class BackendHealth:
    """One backend's state: times of its recent failures and when its cool-down ends (0: not cooling)."""

    failures: tuple[float, ...] = field(default_factory=tuple)
    cool_until: float = 0.0


# ---------------------------------------------------------------------------------------------------- pure rule


def is_cooling(state: BackendHealth, now: float) -> bool:
    """True while the cool-down lasts."""
    return now < state.cool_until


def record_failure(state: BackendHealth, now: float, policy: CooldownPolicy) -> BackendHealth:
    """The state after a failure at ``now``: failures older than the window are forgotten; reaching
    ``policy.failures`` starts a cool-down of ``policy.cooldown_s`` and clears the failures."""
    recent = tuple(t for t in state.failures if t > now - policy.window_s) + (now,)
    if len(recent) >= policy.failures:
        return BackendHealth((), now + policy.cooldown_s)
    return replace(state, failures=recent)


def record_success(state: BackendHealth) -> BackendHealth:
    """A success clears the failures (a cool-down in progress is left alone: it ends by itself)."""
    return replace(state, failures=())


# ---------------------------------------------------------------------------------------------------- stores


class CooldownStore(ABC):
    """Where backend health lives. ``now`` defaults to the wall clock (seconds since the epoch)."""

    def __init__(self, policy: CooldownPolicy | None = None):
        self.policy = policy or CooldownPolicy()

    @abstractmethod
    async def failure(self, backend: str, now: float | None = None) -> bool:
        """Record a retryable failure; True when the backend now cools."""

    @abstractmethod
    async def success(self, backend: str) -> None:
        """Record a success (clears the failures)."""

    @abstractmethod
    async def cooling(self, backends: list[str], now: float | None = None) -> set[str]:
        """The backends among ``backends`` that cool at ``now``."""

    @property
    @abstractmethod
    def description(self) -> str:
        """One line for the start-up log."""


class MemoryCooldownStore(CooldownStore):
    """Backend health in this process only."""

    def __init__(self, policy: CooldownPolicy | None = None):
        super().__init__(policy)
        self._state: dict[str, BackendHealth] = {}

    @property
    def description(self) -> str:
        return "in-process backend cooldowns"

    async def failure(self, backend: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        st = record_failure(self._state.get(backend, BackendHealth()), now, self.policy)
        self._state[backend] = st
        return is_cooling(st, now)

    async def success(self, backend: str) -> None:
        st = self._state.get(backend)
        if st is not None and st.failures:
            self._state[backend] = record_success(st)

    async def cooling(self, backends: list[str], now: float | None = None) -> set[str]:
        now = time.time() if now is None else now
        return {b for b in backends if b in self._state and is_cooling(self._state[b], now)}


# KEYS: failures zset, cool key. ARGV: now_ms, window_ms, failures, cooldown_ms, member. Returns 1 when cooling now.
_FAILURE_LUA = """
local now, window, need, cool = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZADD', KEYS[1], now, ARGV[5])
if redis.call('ZCARD', KEYS[1]) >= need then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], now + cool, 'PX', cool + 1000)
  return 1
end
redis.call('PEXPIRE', KEYS[1], window + 1000)
return 0
"""


class RedisCooldownStore(CooldownStore):
    """Backend health shared by every replica through Redis (an ``redis.asyncio.Redis`` client, e.g. the limit
    store's). Errors are logged and ignored: a Redis outage means no cooldowns, never a failed request."""

    def __init__(self, client: Any, policy: CooldownPolicy | None = None, prefix: str = "tandem:cool",
                 cache_s: float = 0.25):
        super().__init__(policy)
        self._redis = client
        self.cache_s = cache_s
        self._cache: dict[tuple[str, ...], tuple[float, set[str]]] = {}  # answers reused for cache_s (monotonic)
        self.prefix = prefix
        self._failure = client.register_script(_FAILURE_LUA)
        self._seq = 0
        self._dirty: set[str] = set()  # backends this process saw fail: only these need a clearing write

    @property
    def description(self) -> str:
        return "backend cooldowns shared through redis"

    def _keys(self, backend: str) -> list[str]:
        return [f"{self.prefix}:{{{backend}}}:failures", f"{self.prefix}:{{{backend}}}:until"]

    async def failure(self, backend: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        self._seq += 1
        member = f"{now:.6f}:{id(self)}:{self._seq}"  # unique per failure, so two at the same instant both count
        p = self.policy
        try:
            cooling = await self._failure(keys=self._keys(backend), args=[
                int(now * 1000), int(p.window_s * 1000), p.failures, int(p.cooldown_s * 1000), member])
        except Exception as e:  # noqa: BLE001 - fail open
            log.warning("cooldown store: recording a failure of %s failed: %s", backend, e)
            return False
        self._dirty.add(backend)
        if cooling:
            self._cache.clear()  # this replica skips it at once
        return bool(cooling)

    async def success(self, backend: str) -> None:
        if backend not in self._dirty:
            return
        try:
            await self._redis.delete(self._keys(backend)[0])
            self._dirty.discard(backend)
        except Exception as e:  # noqa: BLE001 - fail open
            log.warning("cooldown store: clearing failures of %s failed: %s", backend, e)

    async def cooling(self, backends: list[str], now: float | None = None) -> set[str]:
        """One MGET; with ``now`` unset the answer is reused for ``cache_s`` (a round trip per request is too many)."""
        if not backends:
            return set()
        key, mono = tuple(backends), time.monotonic()
        if now is None and (hit := self._cache.get(key)) is not None and hit[0] > mono:
            return hit[1]
        now_ms = int((time.time() if now is None else now) * 1000)
        try:
            vals = await self._redis.mget([self._keys(b)[1] for b in backends])
        except Exception as e:  # noqa: BLE001 - fail open
            log.warning("cooldown store: reading cooldowns failed: %s", e)
            return set()
        out = {b for b, v in zip(backends, vals, strict=True) if v is not None and now_ms < int(v)}
        if now is None:
            if len(self._cache) > 1024:
                self._cache.clear()
            self._cache[key] = (mono + self.cache_s, out)
        return out


def make_cooldown_store(limits: LimitStore, policy: CooldownPolicy | None = None) -> CooldownStore:
    """Shared through the limit store's Redis client (:attr:`LimitStore.shared_redis`) when it has one, else
    in-process."""
    client = limits.shared_redis
    return RedisCooldownStore(client, policy) if client is not None else MemoryCooldownStore(policy)
