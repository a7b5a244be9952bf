"""Tests for gateway.limits: the pure rules against reference twins, then both stores (a real Redis server and the
in-process store) through the same behaviour tests — concurrency with no overspend (also across 3 processes sharing
one Redis), rpm/tpm windows with retry-after, token correction, idempotent settle, release, budget messages.

Time is driven with ``now=``; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing as mp
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gateway.errors import BudgetExceeded, RateLimited
from gateway.limits import (
    DENY_BUDGET,
    DENY_RPM,
    DENY_TPM,
    OK,
    RESERVATION_TTL_S,
    RETRY_LATER_S,
    RETRY_SOON_S,
    KeyLimits,
    LimitStore,
    LimitStoreUnavailable,
    MemoryLimitStore,
    RedisLimitStore,
    Reservation,
    budget_retry_after,
    decide,
    make_limit_store,
    redis_location,
    usd_to_nanos,
    window_id,
    window_retry_after,
)

T0 = 60.0 * 29_000_000 + 50.0  # 50 s into a window: 10 s to its end
COST = 0.01


# ---------------------------------------------------------------------------------------------------- pure rules


def _ref_budget(spent: int, reserved: int, est: int, budget: int) -> float | None:
    """Reference twin: headroom arithmetic, and 'could releasing every in-flight reservation make room?'."""
    headroom = budget - spent - reserved
    if est <= headroom:
        return None
    best_case_headroom = budget - spent  # all in-flight reservations released with no cost
    return 1.0 if reserved and est <= best_case_headroom else 3600.0


def test_budget_rule_matches_reference() -> None:
    for spent, reserved, est, budget in itertools.product(range(6), range(4), range(5), range(7)):
        assert budget_retry_after(spent, reserved, est, budget) == _ref_budget(spent, reserved, est, budget)
    assert (RETRY_SOON_S, RETRY_LATER_S) == (1.0, 3600.0)


def _ref_decide(budget, rpm, tpm, requests, tokens, spent, reserved, est, est_tok) -> int:  # noqa: ANN001
    reasons = []
    if rpm is not None and requests >= rpm:
        reasons.append(DENY_RPM)
    if tpm is not None and tokens + est_tok > tpm:
        reasons.append(DENY_TPM)
    if budget is not None and _ref_budget(spent, reserved, est, budget) is not None:
        reasons.append(DENY_BUDGET)
    return min(reasons) if reasons else OK


def test_decide_matches_reference() -> None:
    rng = random.Random(0)
    for _ in range(3000):
        args = (rng.choice([None, 0, 3, 10]), rng.choice([None, 0, 2, 5]), rng.choice([None, 0, 8, 20]),
                rng.randrange(7), rng.randrange(25), rng.randrange(12), rng.randrange(5), rng.randrange(6),
                rng.randrange(10))
        assert decide(*args) == _ref_decide(*args), args


def test_windows_and_money() -> None:
    assert window_id(0.0) == 0 and window_id(59.999) == 0 and window_id(60.0) == 1
    assert window_retry_after(T0) == pytest.approx(10.0)
    assert window_retry_after(120.0) == 60.0
    for now in (0.5, 61.25, T0, 1e9 + 0.1):
        assert 0 < window_retry_after(now) <= 60
        assert window_id(now + window_retry_after(now)) == window_id(now) + 1
    assert usd_to_nanos(0.01) == 10_000_000 and usd_to_nanos(1e-9) == 1
    assert sum(usd_to_nanos(0.1) for _ in range(10)) == usd_to_nanos(1.0)  # integers: no float drift
    assert redis_location("redis://user:secret@db.example:6380/2") == "db.example:6380/2"


# ---------------------------------------------------------------------------------------------------- both stores

StoreFactory = Callable[[], LimitStore]


@pytest.fixture(params=["redis", "memory"])
def make_store(request: pytest.FixtureRequest) -> StoreFactory:
    """A factory (stores are bound to the event loop that uses them): Redis on a flushed real server, or memory."""
    if request.param == "redis":
        url = request.getfixturevalue("redis_flush")
        return lambda: RedisLimitStore(url)
    return MemoryLimitStore


def run(make_store: StoreFactory, body: Callable[[LimitStore], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        store = make_store()
        try:
            return await body(store)
        finally:
            await store.aclose()

    return asyncio.run(main())


async def _try_reserve(store: LimitStore, *args: Any, **kw: Any) -> Reservation | RateLimited:
    try:
        return await store.reserve(*args, **kw)
    except RateLimited as e:
        return e


def test_200_concurrent_on_budget_for_100(make_store: StoreFactory) -> None:
    limits = KeyLimits(budget_usd=100 * COST)
    budget_n = usd_to_nanos(limits.budget_usd)

    async def body(store: LimitStore) -> None:
        results = await asyncio.gather(*[_try_reserve(store, "k", limits, COST, 50, now=T0) for _ in range(200)])
        won = [r for r in results if isinstance(r, Reservation)]
        lost = [r for r in results if not isinstance(r, Reservation)]
        assert len(won) == 100 and len(lost) == 100
        assert all(isinstance(e, BudgetExceeded) and e.retry_after == 1 for e in lost)
        u = await store.usage("k", now=T0)
        assert usd_to_nanos(u["reserved_usd"]) == budget_n and u["spent_usd"] == 0 and u["open_reservations"] == 100

        seen: list[int] = []

        async def watch() -> None:  # committed money must never pass the budget while settles run
            for _ in range(30):
                u = await store.usage("k", now=T0)
                seen.append(usd_to_nanos(u["spent_usd"]) + usd_to_nanos(u["reserved_usd"]))
                await asyncio.sleep(0)

        random.Random(1).shuffle(won)
        late = await asyncio.gather(
            watch(), *[store.settle(r, COST, 40) for r in won],
            *[_try_reserve(store, "k", limits, COST, 50, now=T0) for _ in range(50)],
        )
        assert not any(isinstance(r, Reservation) for r in late)
        assert seen and max(seen) <= budget_n
        u = await store.usage("k", now=T0)
        assert usd_to_nanos(u["spent_usd"]) == 100 * usd_to_nanos(COST) == budget_n
        assert u["reserved_usd"] == 0 and u["open_reservations"] == 0 and u["tokens_this_minute"] == 100 * 40
        final = await _try_reserve(store, "k", limits, COST, 50, now=T0)
        assert isinstance(final, BudgetExceeded) and final.retry_after == 3600

    run(make_store, body)


def _process_worker(url: str, n: int, barrier: Any, out: Any) -> None:
    async def main() -> tuple[int, int]:
        store = RedisLimitStore(url)
        try:
            await store.ping()
            barrier.wait()
            results = await asyncio.gather(
                *[_try_reserve(store, "shared", KeyLimits(budget_usd=100 * COST), COST, 10, now=T0) for _ in range(n)]
            )
            won = [r for r in results if isinstance(r, Reservation)]
            await asyncio.gather(*[store.settle(r, COST, 10) for r in won])
            return len(won), sum(isinstance(r, BudgetExceeded) for r in results)
        finally:
            await store.aclose()

    out.put(asyncio.run(main()))


def test_three_processes_share_one_redis(redis_flush: str) -> None:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_process_worker, args=(redis_flush, n, barrier, out)) for n in (67, 67, 66)]
    for p in procs:
        p.start()
    counts = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert sum(won for won, _ in counts) == 100
    assert sum(refused for _, refused in counts) == 100

    async def body(store: LimitStore) -> dict[str, Any]:
        return await store.usage("shared", now=T0)

    u = run(lambda: RedisLimitStore(redis_flush), body)
    assert usd_to_nanos(u["spent_usd"]) == 100 * usd_to_nanos(COST) and u["reserved_usd"] == 0
    assert u["requests_this_minute"] == 100


def test_rpm_window_and_retry_after(make_store: StoreFactory) -> None:
    limits = KeyLimits(rpm=3)

    async def body(store: LimitStore) -> None:
        for _ in range(3):
            await store.reserve("k", limits, 0.0, 0, now=T0)
        with pytest.raises(RateLimited) as exc:
            await store.reserve("k", limits, 0.0, 0, now=T0 + 5)
        assert not isinstance(exc.value, BudgetExceeded)
        assert exc.value.retry_after == 5 and exc.value.code == "rate_limit_exceeded" and exc.value.extra["limit"] == "rpm" and exc.value.status == 429
        assert exc.value.headers() == {"retry-after": "5"}
        assert (await store.usage("k", now=T0))["requests_this_minute"] == 3  # the refusal was not counted
        await store.reserve("k", limits, 0.0, 0, now=T0 + 10)  # next window
        assert (await store.usage("k", now=T0 + 10))["requests_this_minute"] == 1

    run(make_store, body)


def test_tpm_window_and_settle_corrects_tokens(make_store: StoreFactory) -> None:
    limits = KeyLimits(tpm=100)

    async def body(store: LimitStore) -> None:
        first = await store.reserve("k", limits, 0.0, 60, now=T0)
        with pytest.raises(RateLimited) as exc:
            await store.reserve("k", limits, 0.0, 50, now=T0 + 2.5)
        assert exc.value.retry_after == 8 and exc.value.code == "rate_limit_exceeded" and exc.value.extra["limit"] == "tpm"
        await store.settle(first, 0.0, 20)  # used 20 of the 60 estimated
        assert (await store.usage("k", now=T0))["tokens_this_minute"] == 20
        second = await store.reserve("k", limits, 0.0, 50, now=T0 + 3)
        await store.settle(second, 0.0, 80)  # more than estimated: counted as used
        assert (await store.usage("k", now=T0))["tokens_this_minute"] == 100
        with pytest.raises(RateLimited, match="lower max_tokens"):
            await store.reserve("k", limits, 0.0, 101, now=T0 + 20)

    run(make_store, body)


def test_settle_is_idempotent(make_store: StoreFactory) -> None:
    async def body(store: LimitStore) -> None:
        r = await store.reserve("k", KeyLimits(budget_usd=1.0, tpm=1000), 0.3, 100, now=T0)
        await asyncio.gather(*[store.settle(r, 0.25, 70) for _ in range(5)])
        await store.settle(r, 0.25, 70)
        await store.release(r)
        u = await store.usage("k", now=T0)
        assert u["spent_usd"] == 0.25 and u["reserved_usd"] == 0 and u["tokens_this_minute"] == 70

    run(make_store, body)


def test_release_returns_reservation_and_tokens(make_store: StoreFactory) -> None:
    async def body(store: LimitStore) -> None:
        limits = KeyLimits(budget_usd=1.0, rpm=10, tpm=1000)
        r = await store.reserve("k", limits, 0.8, 300, now=T0)
        with pytest.raises(BudgetExceeded):
            await store.reserve("k", limits, 0.8, 300, now=T0)
        await store.release(r)
        u = await store.usage("k", now=T0)
        assert u == {"key_id": "k", "spent_usd": 0.0, "reserved_usd": 0.0, "requests_this_minute": 1,
                     "tokens_this_minute": 0, "open_reservations": 0}
        await store.settle(r, 0.8, 300)  # after a release the reservation is closed: no-op
        assert (await store.usage("k", now=T0))["spent_usd"] == 0
        await store.reserve("k", limits, 0.8, 300, now=T0)

    run(make_store, body)


def test_budget_refusal_messages_and_retry_after(make_store: StoreFactory) -> None:
    limits = KeyLimits(budget_usd=1.0, rpm=100)

    async def body(store: LimitStore) -> None:
        a = await store.reserve("k", limits, 0.6, 0, now=T0)
        with pytest.raises(BudgetExceeded, match="in flight; retry shortly") as soon:
            await store.reserve("k", limits, 0.6, 0, now=T0)
        assert soon.value.retry_after == 1 and soon.value.code == "insufficient_quota" and soon.value.status == 429
        with pytest.raises(BudgetExceeded, match="exhausted") as never:
            await store.reserve("k", limits, 1.2, 0, now=T0)  # even with nothing in flight it could not fit
        assert never.value.retry_after == 3600
        await store.settle(a, 0.6, 0)
        with pytest.raises(BudgetExceeded, match=r"exhausted.*spent \$0\.6") as later:
            await store.reserve("k", limits, 0.6, 0, now=T0)
        assert later.value.retry_after == 3600
        await store.reserve("k", limits, 0.4, 0, now=T0)  # exactly fits
        u = await store.usage("k", now=T0)
        assert u["requests_this_minute"] == 2  # refusals were not counted: all or nothing

    run(make_store, body)


def test_unlimited_key_writes_nothing_at_reserve(make_store: StoreFactory) -> None:
    async def body(store: LimitStore) -> None:
        rs = [await store.reserve("free", KeyLimits(), 5.0, 10_000, now=T0) for _ in range(3)]
        assert all(not r.limited for r in rs)
        u = await store.usage("free", now=T0)
        assert u["requests_this_minute"] == 0 and u["reserved_usd"] == 0
        for r in rs:
            await store.settle(r, 0.5, 100)
            await store.settle(r, 0.5, 100)
        assert (await store.usage("free", now=T0))["spent_usd"] == 1.5  # spending still counts toward a later budget
        with pytest.raises(BudgetExceeded):
            await store.reserve("free", KeyLimits(budget_usd=2.0), 0.6, 0, now=T0)

    run(make_store, body)


def test_lost_reservations_are_swept(make_store: StoreFactory) -> None:
    limits = KeyLimits(budget_usd=1.0)

    async def body(store: LimitStore) -> None:
        lost = await store.reserve("k", limits, 0.7, 0, now=T0)  # its replica "dies": never settled
        with pytest.raises(BudgetExceeded):
            await store.reserve("k", limits, 0.7, 0, now=T0 + RESERVATION_TTL_S - 1)
        later = await store.reserve("k", limits, 0.7, 0, now=T0 + RESERVATION_TTL_S + 1)
        u = await store.usage("k", now=T0)
        assert usd_to_nanos(u["reserved_usd"]) == usd_to_nanos(0.7) and u["open_reservations"] == 1
        await store.settle(lost, 0.1, 0)  # a late settle still records the cost, without double-releasing
        await store.settle(later, 0.7, 0)
        u = await store.usage("k", now=T0)
        assert usd_to_nanos(u["spent_usd"]) == usd_to_nanos(0.8) and u["reserved_usd"] == 0

    run(make_store, body)


def test_descriptions_and_factory(redis_url: str) -> None:
    assert make_limit_store(None).description == "in-process store: limits hold for this process only"
    store = make_limit_store(redis_url)
    assert isinstance(store, RedisLimitStore) and store.description == f"redis at {redis_url[len('redis://'):]}"
    assert asyncio.run(_ping_and_close(store)) is True


async def _ping_and_close(store: LimitStore) -> bool:
    try:
        return await store.ping()
    finally:
        await store.aclose()


def test_redis_down_fails_closed_then_recovers(redis_server: Any, redis_flush: str) -> None:
    limits = KeyLimits(budget_usd=1.0)

    async def body() -> None:
        store = RedisLimitStore(redis_flush, timeout=2.0)
        try:
            await store.reserve("k", limits, 0.1, 0, now=T0)
            redis_server.stop()
            assert await store.ping() is False
            with pytest.raises(LimitStoreUnavailable) as exc:
                await store.reserve("k", limits, 0.1, 0, now=T0)
            assert exc.value.status == 503
            redis_server.start()  # a fresh server: scripts must be reloaded (NOSCRIPT) and connections remade
            r = await store.reserve("k", limits, 0.1, 0, now=T0)
            await store.settle(r, 0.1, 0)
            assert (await store.usage("k", now=T0))["spent_usd"] == 0.1
        finally:
            redis_server.start()
            await store.aclose()

    asyncio.run(body())
