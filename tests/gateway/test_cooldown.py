"""gateway/cooldown.py: the pure rule against a reference twin, the in-process store against the rule, and the Redis
store shared by two clients (two replicas) on a real Redis server, recovering after the cool-down; fail open."""

from __future__ import annotations

import asyncio
import random

from gateway.cooldown import (
    BackendHealth,
    CooldownPolicy,
    MemoryCooldownStore,
    RedisCooldownStore,
    is_cooling,
    record_failure,
    record_success,
)

POLICY = CooldownPolicy(failures=3, window_s=10.0, cooldown_s=5.0)


def twin_cooling(events: list[tuple[float, str]], at: float, p: CooldownPolicy) -> bool:
    """Reference: replay events in order; a failure cools when, counting back from it, ``p.failures`` failures since
    the last success or cool-down start lie within the window."""
    cool_starts: list[float] = []
    since: list[float] = []
    for t, kind in events:
        if t > at:
            break
        if kind == "ok":
            since = []
            continue
        since.append(t)
        if len([x for x in since if x > t - p.window_s]) >= p.failures:
            cool_starts.append(t)
            since = []
    return any(c <= at < c + p.cooldown_s for c in cool_starts)


def test_pure_rule_matches_the_twin():
    rng = random.Random(0)
    for _ in range(300):
        t, events = 0.0, []
        for _ in range(rng.randint(1, 12)):
            t += rng.uniform(0, 6)
            events.append((t, "fail" if rng.random() < 0.75 else "ok"))
        state = BackendHealth()
        for i, (te, kind) in enumerate(events):
            state = record_failure(state, te, POLICY) if kind == "fail" else record_success(state)
            probe = te + rng.uniform(0, 7)
            if i + 1 < len(events) and probe >= events[i + 1][0]:
                probe = te
            assert is_cooling(state, probe) == twin_cooling(events[: i + 1], probe, POLICY), (events, probe)


def test_cools_after_n_failures_and_recovers():
    s = BackendHealth()
    s = record_failure(s, 0.0, POLICY)
    s = record_failure(s, 1.0, POLICY)
    assert not is_cooling(s, 1.0)
    s = record_failure(s, 2.0, POLICY)
    assert is_cooling(s, 2.0) and is_cooling(s, 6.9) and not is_cooling(s, 7.0)
    old = record_failure(record_failure(BackendHealth(), 0.0, POLICY), 1.0, POLICY)
    assert not is_cooling(record_failure(old, 11.5, POLICY), 11.5)  # the first two fell out of the window


def test_memory_store_follows_the_rule():
    async def run():
        st = MemoryCooldownStore(POLICY)
        assert not await st.failure("a", 0.0)
        assert not await st.failure("a", 1.0)
        await st.success("a")
        assert not await st.failure("a", 2.0)
        assert not await st.failure("a", 3.0)
        assert await st.failure("a", 4.0)
        assert await st.cooling(["a", "b"], 8.9) == {"a"}
        assert await st.cooling(["a", "b"], 9.0) == set()

    asyncio.run(run())


def test_redis_store_is_shared_between_replicas_and_recovers(redis_flush):
    import redis.asyncio as aioredis

    async def run():
        c1, c2 = aioredis.Redis.from_url(redis_flush), aioredis.Redis.from_url(redis_flush)
        r1, r2 = RedisCooldownStore(c1, POLICY), RedisCooldownStore(c2, POLICY)
        try:
            now = 1_000_000.0
            assert not await r1.failure("b", now)
            assert not await r2.failure("b", now)  # the same instant on another replica still counts
            assert await r1.cooling(["b"], now) == set()
            assert await r2.failure("b", now + 1)
            assert await r1.cooling(["b", "c"], now + 1) == {"b"}  # replica 1 sees replica 2's cool-down
            assert await r1.cooling(["b"], now + 5.9) == {"b"}
            assert await r1.cooling(["b"], now + 6.0) == set()  # recovered
            assert not await r1.failure("b", now + 7)  # failures were cleared at the cool-down
            await r1.success("b")
            assert not await r2.failure("b", now + 8)
            assert not await r2.failure("b", now + 9)  # the success cleared the one before
        finally:
            await c1.aclose()
            await c2.aclose()

    asyncio.run(run())


def test_redis_store_fails_open():
    import redis.asyncio as aioredis

    async def run():
        client = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
        st = RedisCooldownStore(client, POLICY)
        assert not await st.failure("x")
        assert await st.cooling(["x"]) == set()
        await client.aclose()

    asyncio.run(run())



def test_cooldowns_share_the_limit_stores_redis_when_it_has_one():
    from gateway.cooldown import make_cooldown_store
    from gateway.limits import MemoryLimitStore, RedisLimitStore

    assert MemoryLimitStore().shared_redis is None
    assert isinstance(make_cooldown_store(MemoryLimitStore()), MemoryCooldownStore)
    limits = RedisLimitStore("redis://127.0.0.1:1/0")  # never connected: building a store opens no connection
    shared = make_cooldown_store(limits, POLICY)
    assert isinstance(shared, RedisCooldownStore) and shared._redis is limits.shared_redis
    asyncio.run(limits.aclose())
