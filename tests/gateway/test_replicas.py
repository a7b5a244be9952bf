"""Scale-out: three ``tandem serve`` replicas sharing one real Redis and one real PostgreSQL on loopback.

A key with a budget for exactly N requests gets 3·N concurrent requests spread round-robin over the replicas
(streamed and not): exactly N are served, the rest are refused with 429 ``insufficient_quota``, the spend recorded
in the request log is N requests' cost (never above the budget), and the log holds exactly one row per request sent
(every response's ``x-request-id``, none lost, none twice). A key with an rpm limit of M gets 2·M requests: exactly M
pass across the replicas within one minute window. The upstream is ``bench.upstream_stub`` answering exactly
``max_tokens`` tokens, priced so that a request's cost equals its reservation.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from sqlalchemy import create_engine, text

from bench.soak import start_stub, stop_process
from gateway.storage.keys import KeyStore

TOKENS = 4
PER_TOKEN = 1000 / 1e6  # $0.001 per output token, input free: a request costs exactly TOKENS * PER_TOKEN
N = 20


@pytest.fixture(scope="module")
def stub():
    proc, url = start_stub(tokens=TOKENS, chunk_delay_ms=2.0)
    yield url
    stop_process(proc)


@pytest.fixture(scope="module")
def replicas(stub, redis_server, postgres_server, tmp_path_factory):
    from tests.fixtures.gateway_proc import start_gateway

    redis_server.start()
    redis_server.flush()
    db = postgres_server.new_database("replicas")
    cfg = {"auth": {"require_keys": True},
           "storage": {"redis_url": redis_server.url, "database_url": db},
           "backends": [{"name": "stub", "kind": "openai", "base_url": stub,
                         "price": {"input_per_mtok": 0, "output_per_mtok": 1000}}]}
    gws = []
    try:
        for i in range(3):  # one after another: each migrates the shared database at start
            gws.append(start_gateway(cfg, tmp_path_factory.mktemp(f"replica{i}")))
        yield gws, db
    finally:
        for g in gws:
            g.stop()


def _body(stream: bool) -> dict:
    return {"model": "stub", "messages": [{"role": "user", "content": "hello"}], "max_tokens": TOKENS,
            "stream": stream}


async def _send(bases: list[str], key: str, n: int) -> list[tuple[int, str, str]]:
    """``n`` concurrent requests, request i to replica i % 3 and streamed when i is odd: (status, request id, body)."""
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=500)) as c:
        async def one(i: int) -> tuple[int, str, str]:
            url = bases[i % len(bases)] + "/v1/chat/completions"
            async with c.stream("POST", url, json=_body(i % 2 == 1),
                                headers={"authorization": f"Bearer {key}"}) as r:
                raw = (await r.aread()).decode()
                return r.status_code, r.headers.get("x-request-id", ""), raw

        return await asyncio.gather(*(one(i) for i in range(n)))


def _wait_rows(db: str, key_id: str, want: int, timeout: float = 20.0) -> list:
    eng = create_engine(db)
    try:
        deadline = time.monotonic() + timeout
        while True:
            with eng.connect() as conn:
                rows = list(conn.execute(text("select id, status, http_status, cost_usd from requests "
                                              "where key_id = :k"), {"k": key_id}))
            if len(rows) >= want or time.monotonic() > deadline:
                return rows
            time.sleep(0.2)
    finally:
        eng.dispose()


def test_budget_holds_exactly_across_three_replicas(replicas):
    gws, db = replicas
    per_request = TOKENS * PER_TOKEN
    eng = create_engine(db)
    plaintext, key = KeyStore(eng).create(name="replicas-budget", budget_usd=N * per_request)
    eng.dispose()
    results = asyncio.run(_send([g.base for g in gws], plaintext, 3 * N))

    served = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 429]
    assert len(served) + len(refused) == 3 * N, [r[:2] for r in results if r[0] not in (200, 429)]
    assert len(served) == N
    assert all("insufficient_quota" in r[2] for r in refused)
    assert all("data: [DONE]" in r[2] for r in served if r[2].startswith("data:"))

    ids = [r[1] for r in results]
    assert len(set(ids)) == len(ids) == 3 * N and all(ids)
    rows = _wait_rows(db, key.id, 3 * N)
    time.sleep(0.5)  # a late duplicate would show up now
    rows = _wait_rows(db, key.id, 3 * N, timeout=0)
    assert sorted(r.id for r in rows) == sorted(ids)  # one row per request: none lost, none duplicated
    assert sum(r.status == "ok" for r in rows) == N
    spent = sum(r.cost_usd for r in rows)
    assert spent == pytest.approx(N * per_request, abs=1e-12)
    assert spent <= N * per_request + 1e-12


def test_rpm_limit_holds_across_three_replicas(replicas):
    gws, db = replicas
    m = 12
    eng = create_engine(db)
    plaintext, key = KeyStore(eng).create(name="replicas-rpm", rpm=m)
    eng.dispose()
    if 60 - time.time() % 60 < 10:  # keep the burst inside one fixed 60-second window
        time.sleep(60 - time.time() % 60 + 0.5)
    results = asyncio.run(_send([g.base for g in gws], plaintext, 2 * m))
    statuses = sorted(r[0] for r in results)
    assert statuses.count(200) == m and statuses.count(429) == m
    assert all("rate_limit_exceeded" in r[2] for r in results if r[0] == 429)
    rows = _wait_rows(db, key.id, 2 * m)
    assert len(rows) == 2 * m and len({r.id for r in rows}) == 2 * m
