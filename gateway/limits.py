"""Per-key rate limits and budgets: reserve before a model call, settle after it with the real cost.

Three limits per key (:class:`KeyLimits`), all optional:

* ``rpm`` — requests per fixed 60-second window (window id ``floor(now / 60)``), counted at reserve;
* ``tpm`` — tokens per fixed 60-second window: reserve adds the estimate, settle corrects it to the actual count;
* ``budget_usd`` — lifetime dollars per key: a request fits when ``spent + reserved + estimate <= budget``.

:meth:`LimitStore.reserve` checks all three and applies them in one atomic step (all or nothing), raising
:class:`~gateway.errors.RateLimited` (``retry_after`` = seconds to the window's end) or
:class:`~gateway.errors.BudgetExceeded` (``retry_after`` 1 when requests in flight hold reservations whose release
could make room, else 3600). :meth:`LimitStore.settle` releases the reservation, adds the real cost to ``spent`` and
corrects the window's token count; it is idempotent per reservation id. :meth:`LimitStore.release` is a settle with
no cost (the call failed before anything was spent).

Two stores with the same semantics:

* :class:`RedisLimitStore` — one Lua script per operation (EVALSHA), so reserve and settle are each one atomic round
  trip and hold across gateway replicas. Money is integer nano-dollars (exact; Lua's doubles keep it exact up to
  about $9M per key). Keys share a ``{key_id}`` hash tag (Redis Cluster safe). Windows carry TTLs; open reservations
  live in a hash (``id -> "nanos:deadline_ms"`` plus a ``_total`` field) so a settle is HDEL-guarded, a retried
  reserve is a no-op, and reservations of a crashed replica are swept after :data:`RESERVATION_TTL_S`. A ``done``
  marker (SET NX) makes a repeated settle a no-op.
* :class:`MemoryLimitStore` — the same bookkeeping in dicts, for a single process (no await between check and update,
  so it is atomic under asyncio).

A key with no limits costs nothing at reserve (no round trip); its settle still adds the real cost to ``spent`` so a
budget set later counts earlier spending.

What it leaves out: sliding windows and token buckets (fixed windows only), per-route limits, budget periods (budgets
are lifetime; reset by an admin), resetting or editing spent (admin API), and where limits come from (key storage).
The real cost of a call may exceed its estimate, so ``spent`` can end above the budget by that difference — it is
recorded, never hidden.
"""

from __future__ import annotations

import math
import time
import uuid
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from gateway.errors import BudgetExceeded, LimitStoreUnavailable, RateLimited

WINDOW_S = 60
"""Length of an rpm/tpm window in seconds."""
NANOS_PER_USD = 1_000_000_000
RESERVATION_TTL_S = 900
"""An open reservation older than this is presumed lost (its replica died) and may be swept."""
SETTLED_TTL_S = 2 * RESERVATION_TTL_S
"""How long a settled reservation id is remembered (a repeated settle within this time is a no-op)."""
SWEEP_AT = 4096
"""Sweep expired reservations whenever a key has more open ones than this (besides when the budget is short)."""
RETRY_SOON_S = 1.0
"""retry-after when in-flight reservations may free room in the budget."""
RETRY_LATER_S = 3600.0
"""retry-after when the budget cannot fit the request even after everything in flight is released."""

OK, DENY_RPM, DENY_TPM, DENY_BUDGET = 0, 1, 2, 3


# ---------------------------------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class KeyLimits:
    """A key's limits; ``None`` means unlimited."""

    budget_usd: float | None = None
    rpm: int | None = None
    tpm: int | None = None

    @property
    def unlimited(self) -> bool:
        return self.budget_usd is None and self.rpm is None and self.tpm is None


@dataclass(frozen=True)
class Reservation:
    """What :meth:`LimitStore.reserve` took; hand it back to ``settle`` or ``release``."""

    id: str
    key_id: str
    cost_usd: float
    """Estimated cost reserved against the budget (0 in effect when the key has no budget)."""
    tokens: int
    """Estimated tokens added to the window's count."""
    window: int
    """Window id (``floor(now / 60)``) the request was counted in."""
    cost_nanos: int = 0
    limited: bool = True
    """False when the key had no limits: nothing was written at reserve."""
    created_at: float = field(default_factory=time.time)


# ---------------------------------------------------------------------------------------------------- pure helpers


def window_id(now: float) -> int:
    """The fixed 60-second window holding ``now`` (seconds since the epoch)."""
    return int(now // WINDOW_S)


def window_retry_after(now: float) -> float:
    """Seconds from ``now`` to the end of its window (in (0, 60])."""
    return (window_id(now) + 1) * WINDOW_S - now


def usd_to_nanos(usd: float) -> int:
    """Dollars to integer nano-dollars (rounded to nearest)."""
    return int(round(usd * NANOS_PER_USD))


def nanos_to_usd(nanos: int) -> float:
    return nanos / NANOS_PER_USD


def budget_retry_after(spent: int, reserved: int, est: int, budget: int) -> float | None:
    """The budget rule. ``None`` when ``spent + reserved + est <= budget`` (the request fits); otherwise the
    retry-after: :data:`RETRY_SOON_S` when releasing what is in flight could make room (``reserved > 0`` and
    ``spent + est <= budget``), else :data:`RETRY_LATER_S`."""
    if spent + reserved + est <= budget:
        return None
    if reserved > 0 and spent + est <= budget:
        return RETRY_SOON_S
    return RETRY_LATER_S


def decide(
    budget: int | None, rpm: int | None, tpm: int | None,
    requests: int, tokens: int, spent: int, reserved: int, est_nanos: int, est_tokens: int,
) -> int:
    """Which limit (if any) refuses a request, checked in the order rpm, tpm, budget. Money in nano-dollars.
    Returns :data:`OK`, :data:`DENY_RPM`, :data:`DENY_TPM` or :data:`DENY_BUDGET`. The Lua script mirrors this."""
    if rpm is not None and requests + 1 > rpm:
        return DENY_RPM
    if tpm is not None and tokens + est_tokens > tpm:
        return DENY_TPM
    if budget is not None and budget_retry_after(spent, reserved, est_nanos, budget) is not None:
        return DENY_BUDGET
    return OK


def denial_error(
    verdict: int, limits: KeyLimits, now: float, requests: int, tokens: int,
    spent: int, reserved: int, est_nanos: int, est_tokens: int,
) -> RateLimited:
    """The client-facing error for a refusal from :func:`decide`."""
    if verdict == DENY_RPM:
        return RateLimited(
            f"Rate limit reached: {requests} of {limits.rpm} requests per minute used; "
            f"retry in {window_retry_after(now):.0f}s.", retry_after=window_retry_after(now), limit="rpm")
    if verdict == DENY_TPM:
        assert limits.tpm is not None
        if est_tokens > limits.tpm:
            msg = (f"This request may use up to {est_tokens} tokens, more than the key's limit of {limits.tpm} "
                   f"tokens per minute; lower max_tokens.")
        else:
            msg = (f"Rate limit reached: {tokens} of {limits.tpm} tokens per minute used and this request may use "
                   f"up to {est_tokens}; retry in {window_retry_after(now):.0f}s.")
        return RateLimited(msg, retry_after=window_retry_after(now), limit="tpm")
    assert verdict == DENY_BUDGET and limits.budget_usd is not None
    budget = usd_to_nanos(limits.budget_usd)
    retry = budget_retry_after(spent, reserved, est_nanos, budget) or RETRY_LATER_S
    money = (f"budget ${limits.budget_usd:.6g}, spent ${nanos_to_usd(spent):.6g}, "
             f"reserved by requests in flight ${nanos_to_usd(reserved):.6g}, "
             f"this request needs up to ${nanos_to_usd(est_nanos):.6g}")
    if retry == RETRY_SOON_S:
        msg = f"Budget is held by requests in flight; retry shortly ({money})."
    else:
        msg = f"Budget exhausted for this key ({money})."
    return BudgetExceeded(msg, retry_after=retry)


def _est(est_cost_usd: float, est_tokens: int) -> tuple[int, int]:
    return max(0, usd_to_nanos(est_cost_usd)), max(0, int(est_tokens))


# ---------------------------------------------------------------------------------------------------- interface


class LimitStore(ABC):
    """Where limits are counted. Both implementations share the semantics described in the module docstring."""

    @abstractmethod
    async def reserve(
        self, key_id: str, limits: KeyLimits, est_cost_usd: float, est_tokens: int, now: float | None = None
    ) -> Reservation:
        """Check and apply all limits atomically; raise RateLimited / BudgetExceeded when one refuses."""

    @abstractmethod
    async def settle(self, reservation: Reservation, actual_cost_usd: float, actual_tokens: int) -> None:
        """Release the reservation, add the real cost to spent and correct the window's tokens (idempotent)."""

    async def release(self, reservation: Reservation) -> None:
        """The call failed before any cost: release the reservation and return its tokens to the window."""
        await self.settle(reservation, 0.0, 0)

    @abstractmethod
    async def usage(self, key_id: str, now: float | None = None) -> dict[str, Any]:
        """``spent_usd``, ``reserved_usd``, ``requests_this_minute``, ``tokens_this_minute``, ``open_reservations``."""

    @abstractmethod
    async def ping(self) -> bool:
        """True when the store answers."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    @property
    def shared_redis(self) -> Any | None:
        """The ``redis.asyncio.Redis`` client this store counts in, for other state every replica must share
        (backend cooldowns, ``gateway.cooldown``); None for a store that lives in this process only."""
        return None

    @property
    @abstractmethod
    def description(self) -> str:
        """One line for the start-up log."""


def _unlimited_reservation(key_id: str, est_cost_usd: float, est_tokens: int, now: float) -> Reservation:
    return Reservation(uuid.uuid4().hex, key_id, est_cost_usd, est_tokens, window_id(now), 0, limited=False)


# ---------------------------------------------------------------------------------------------------- memory store


@dataclass
class _KeyState:
    spent: int = 0
    reserved: int = 0
    open: dict[str, tuple[int, float]] = field(default_factory=dict)  # id -> (nanos, deadline)
    windows: dict[int, list[int]] = field(default_factory=dict)  # window id -> [requests, tokens]

    def sweep(self, now: float) -> None:
        for rid, (amount, deadline) in list(self.open.items()):
            if deadline < now:
                del self.open[rid]
                self.reserved -= amount


class MemoryLimitStore(LimitStore):
    """Limits held in this process only (one gateway replica)."""

    def __init__(self) -> None:
        self._keys: dict[str, _KeyState] = {}
        self._done: OrderedDict[str, float] = OrderedDict()  # settled id -> forget-after (monotonic)

    @property
    def description(self) -> str:
        return "in-process store: limits hold for this process only"

    async def reserve(
        self, key_id: str, limits: KeyLimits, est_cost_usd: float, est_tokens: int, now: float | None = None
    ) -> Reservation:
        now = time.time() if now is None else now
        if limits.unlimited:
            return _unlimited_reservation(key_id, est_cost_usd, est_tokens, now)
        est_n, est_t = _est(est_cost_usd, est_tokens)
        st = self._keys.setdefault(key_id, _KeyState())
        wid = window_id(now)
        for old in [w for w in st.windows if w < wid - 1]:
            del st.windows[old]
        win = st.windows.get(wid, [0, 0])
        budget = usd_to_nanos(limits.budget_usd) if limits.budget_usd is not None else None
        if len(st.open) > SWEEP_AT or (
            budget is not None and st.reserved > 0 and budget_retry_after(st.spent, st.reserved, est_n, budget)
        ):
            st.sweep(now)
        verdict = decide(budget, limits.rpm, limits.tpm, win[0], win[1], st.spent, st.reserved, est_n, est_t)
        if verdict != OK:
            raise denial_error(verdict, limits, now, win[0], win[1], st.spent, st.reserved, est_n, est_t)
        amount = est_n if budget is not None else 0
        win[0] += 1
        win[1] += est_t
        st.windows[wid] = win
        rid = uuid.uuid4().hex
        st.open[rid] = (amount, now + RESERVATION_TTL_S)
        st.reserved += amount
        return Reservation(rid, key_id, est_cost_usd, est_t, wid, amount)

    async def settle(self, reservation: Reservation, actual_cost_usd: float, actual_tokens: int) -> None:
        mono = time.monotonic()
        while self._done and next(iter(self._done.values())) < mono:
            self._done.popitem(last=False)
        if reservation.id in self._done:
            return
        self._done[reservation.id] = mono + SETTLED_TTL_S
        st = self._keys.setdefault(reservation.key_id, _KeyState())
        held = st.open.pop(reservation.id, None)
        if held is not None:
            st.reserved -= held[0]
        st.spent += max(0, usd_to_nanos(actual_cost_usd))
        win = st.windows.get(reservation.window)
        if win is not None and reservation.limited:
            win[1] += max(0, int(actual_tokens)) - reservation.tokens

    async def usage(self, key_id: str, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        st = self._keys.get(key_id, _KeyState())
        win = st.windows.get(window_id(now), [0, 0])
        return {
            "key_id": key_id, "spent_usd": nanos_to_usd(st.spent), "reserved_usd": nanos_to_usd(st.reserved),
            "requests_this_minute": win[0], "tokens_this_minute": win[1], "open_reservations": len(st.open),
        }

    async def ping(self) -> bool:
        return True


# ---------------------------------------------------------------------------------------------------- redis store

_SWEEP_LUA = """
local function sweep(open, now)
  local all = redis.call('HGETALL', open)
  local freed = 0
  for i = 1, #all, 2 do
    if all[i] ~= '_total' then
      local v = all[i + 1]
      local sep = string.find(v, ':', 1, true)
      if tonumber(string.sub(v, sep + 1)) < now then
        redis.call('HDEL', open, all[i])
        freed = freed + tonumber(string.sub(v, 1, sep - 1))
      end
    end
  end
  if freed ~= 0 then redis.call('HINCRBY', open, '_total', -freed) end
end
"""

# KEYS: spent, open, window. ARGV: budget (-1: none), rpm (-1), tpm (-1), est_nanos, est_tokens, id, now_ms,
# "nanos:deadline_ms", window_ttl_s, open_ttl_s, sweep_at. Returns {verdict, requests, tokens, spent, reserved}.
_RESERVE_LUA = _SWEEP_LUA + """
local budget, rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local est, est_tok, now = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[7])
if redis.call('HEXISTS', KEYS[2], ARGV[6]) == 1 then return {0, 0, 0, 0, 0} end
local req = tonumber(redis.call('HGET', KEYS[3], 'r') or '0')
local tok = tonumber(redis.call('HGET', KEYS[3], 't') or '0')
if rpm >= 0 and req + 1 > rpm then return {1, req, tok, 0, 0} end
if tpm >= 0 and tok + est_tok > tpm then return {2, req, tok, 0, 0} end
local spent, reserved, amount = 0, 0, '0'
if redis.call('HLEN', KEYS[2]) > tonumber(ARGV[11]) then sweep(KEYS[2], now) end
if budget >= 0 then
  spent = tonumber(redis.call('GET', KEYS[1]) or '0')
  reserved = tonumber(redis.call('HGET', KEYS[2], '_total') or '0')
  if spent + reserved + est > budget and reserved > 0 then
    sweep(KEYS[2], now)
    reserved = tonumber(redis.call('HGET', KEYS[2], '_total') or '0')
  end
  if spent + reserved + est > budget then return {3, req, tok, spent, reserved} end
  amount = ARGV[4]
end
redis.call('HINCRBY', KEYS[3], 'r', 1)
redis.call('HINCRBY', KEYS[3], 't', ARGV[5])
redis.call('EXPIRE', KEYS[3], ARGV[9])
if amount == '0' then
  redis.call('HSET', KEYS[2], ARGV[6], '0:' .. string.sub(ARGV[8], string.find(ARGV[8], ':', 1, true) + 1))
else
  redis.call('HSET', KEYS[2], ARGV[6], ARGV[8])
  redis.call('HINCRBY', KEYS[2], '_total', amount)
end
redis.call('EXPIRE', KEYS[2], ARGV[10])
return {0, req + 1, tok + est_tok, spent, reserved + tonumber(amount)}
"""

# KEYS: spent, open, window, done. ARGV: id, actual_nanos, token_delta, done_ttl_s. Returns 1 if applied, 0 if repeat.
_SETTLE_LUA = """
if not redis.call('SET', KEYS[4], '1', 'NX', 'EX', ARGV[4]) then return 0 end
local v = redis.call('HGET', KEYS[2], ARGV[1])
if v then
  local amount = tonumber(string.sub(v, 1, string.find(v, ':', 1, true) - 1))
  redis.call('HDEL', KEYS[2], ARGV[1])
  if amount ~= 0 then redis.call('HINCRBY', KEYS[2], '_total', -amount) end
end
if ARGV[2] ~= '0' then redis.call('INCRBY', KEYS[1], ARGV[2]) end
if ARGV[3] ~= '0' and redis.call('EXISTS', KEYS[3]) == 1 then redis.call('HINCRBY', KEYS[3], 't', ARGV[3]) end
return 1
"""


def redis_location(url: str) -> str:
    """``host:port/db`` of a Redis URL, without credentials (for logs)."""
    parts = urlsplit(url)
    db = parts.path.lstrip("/") or "0"
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}/{db}"


class RedisLimitStore(LimitStore):
    """Limits in a shared Redis: correct across any number of gateway replicas."""

    def __init__(self, url: str, *, prefix: str = "tandem:lim", max_connections: int = 50, timeout: float = 5.0):
        import redis.asyncio as aioredis

        self.url = url
        self.prefix = prefix
        # A blocking pool: a burst of requests waits (up to ``timeout``) for one of ``max_connections`` connections.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout, socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        self._redis = aioredis.Redis.from_pool(pool)
        self._reserve = self._redis.register_script(_RESERVE_LUA)
        self._settle = self._redis.register_script(_SETTLE_LUA)

    @property
    def description(self) -> str:
        return f"redis at {redis_location(self.url)}"

    @property
    def shared_redis(self) -> Any:
        return self._redis

    def _keys(self, key_id: str, wid: int) -> list[str]:
        base = f"{self.prefix}:{{{key_id}}}"
        return [f"{base}:spent", f"{base}:open", f"{base}:w:{wid}"]

    async def reserve(
        self, key_id: str, limits: KeyLimits, est_cost_usd: float, est_tokens: int, now: float | None = None
    ) -> Reservation:
        import redis.exceptions

        now = time.time() if now is None else now
        if limits.unlimited:
            return _unlimited_reservation(key_id, est_cost_usd, est_tokens, now)
        est_n, est_t = _est(est_cost_usd, est_tokens)
        wid = window_id(now)
        rid = uuid.uuid4().hex
        budget = usd_to_nanos(limits.budget_usd) if limits.budget_usd is not None else None
        deadline_ms = int((now + RESERVATION_TTL_S) * 1000)
        args = [
            -1 if budget is None else budget, -1 if limits.rpm is None else limits.rpm,
            -1 if limits.tpm is None else limits.tpm, est_n, est_t, rid, int(now * 1000), f"{est_n}:{deadline_ms}",
            math.ceil(window_retry_after(now)) + WINDOW_S, RESERVATION_TTL_S + WINDOW_S, SWEEP_AT,
        ]
        try:
            verdict, req, tok, spent, reserved = await self._reserve(keys=self._keys(key_id, wid), args=args)
        except redis.exceptions.RedisError as e:
            raise LimitStoreUnavailable(f"Rate-limit store unreachable ({self.description}): {e}") from e
        if verdict != OK:
            raise denial_error(int(verdict), limits, now, int(req), int(tok), int(spent), int(reserved), est_n, est_t)
        return Reservation(rid, key_id, est_cost_usd, est_t, wid, est_n if budget is not None else 0)

    async def settle(self, reservation: Reservation, actual_cost_usd: float, actual_tokens: int) -> None:
        import redis.exceptions

        delta = max(0, int(actual_tokens)) - reservation.tokens if reservation.limited else 0
        keys = self._keys(reservation.key_id, reservation.window)
        keys.append(f"{self.prefix}:{{{reservation.key_id}}}:done:{reservation.id}")
        args = [reservation.id, max(0, usd_to_nanos(actual_cost_usd)), delta, SETTLED_TTL_S]
        try:
            await self._settle(keys=keys, args=args)
        except redis.exceptions.RedisError as e:
            raise LimitStoreUnavailable(f"Rate-limit store unreachable ({self.description}): {e}") from e

    async def usage(self, key_id: str, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        spent_k, open_k, win_k = self._keys(key_id, window_id(now))
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(spent_k).hget(open_k, "_total").hlen(open_k).hmget(win_k, ["r", "t"])
            spent, reserved, n_open, (req, tok) = await pipe.execute()
        return {
            "key_id": key_id, "spent_usd": nanos_to_usd(int(spent or 0)),
            "reserved_usd": nanos_to_usd(int(reserved or 0)), "requests_this_minute": int(req or 0),
            "tokens_this_minute": int(tok or 0), "open_reservations": max(0, int(n_open) - (reserved is not None)),
        }

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except Exception:
            return False

    async def aclose(self) -> None:
        await self._redis.aclose()


def make_limit_store(redis_url: str | None) -> LimitStore:
    """Redis when a URL is configured, else the in-process store; log ``store.description`` at start-up."""
    return RedisLimitStore(redis_url) if redis_url else MemoryLimitStore()
