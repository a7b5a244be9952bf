"""Faults under a running gateway: flaky, hanging and trickling upstreams; Redis and PostgreSQL restarted under load.

A scripted upstream (one real HTTP server; the first path segment of a backend's ``base_url`` picks its behaviour)
fails with 5xx a set number of times, always fails, hangs without answering, trickles a stream slower than the
timeout, dies before/after its first chunk, or fails for a while. Expected: retries and fallbacks as configured (and
never a fallback once a stream has started), a backend that keeps failing skipped while it cools down and tried
again after, a timeout answered as 504 or an SSE error event within the configured time, never a
hung request; with Redis restarted mid-load every request ends (200, or 503 while the limit store is away) and the
gateway recovers; with PostgreSQL stopped mid-load no request fails and no log row is lost or duplicated once it is
back (the log spools and replays).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler

import httpx
import pytest
from sqlalchemy import create_engine, text

from bench.soak import start_stub, stop_process
from tests.fixtures.counting_upstream import LoopbackUpstream, reply_json

TIMEOUT_S = 1.5


def _chunk(i: int) -> bytes:
    body = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "s",
            "choices": [{"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


ANSWER = {"id": "x", "object": "chat.completion", "created": 0, "model": "s",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}}


class ScriptedUpstream(LoopbackUpstream):
    """Behaviour by the first path segment: ``ok``, ``fail<N>`` (5xx for the first N calls, then ok), ``down``
    (always 503), ``flaky`` (500 while in ``broken``, else ok), ``hang`` (never answers), ``trickle`` (a chunk every
    0.5 s, 20 chunks), ``die0`` (a stream that closes before any chunk), ``die3`` (closes after 3 chunks). ``calls``
    counts POSTs per segment."""

    def __init__(self) -> None:
        self.broken: set[str] = set()  # modes answering 500 for now (``flaky``)
        super().__init__()

    def answer(self, handler: BaseHTTPRequestHandler, body: dict, mode: str, n: int) -> None:
        if mode.startswith("fail") and n <= int(mode[4:]) or mode == "down" or mode in self.broken:
            return reply_json(handler, 500 if mode != "down" else 503, {"error": {"message": "upstream broke"}})
        if mode == "hang":
            time.sleep(30)
            return None
        if not body.get("stream"):
            return reply_json(handler, 200, ANSWER)
        handler.send_response(200)
        handler.send_header("content-type", "text/event-stream")
        handler.end_headers()
        chunks = {"trickle": 20, "die0": 0, "die3": 3}.get(mode, 3)
        try:
            for i in range(chunks):
                handler.wfile.write(_chunk(i))
                handler.wfile.flush()
                if mode == "trickle":
                    time.sleep(0.5)
            if not mode.startswith("die"):
                handler.wfile.write(b"data: [DONE]\n\n")
        except OSError:
            pass
        return None


@pytest.fixture(scope="module")
def upstream():
    up = ScriptedUpstream()
    yield up
    up.close()


@pytest.fixture(scope="module")
def gw(upstream, tmp_path_factory):
    from tests.fixtures.gateway_proc import start_gateway

    modes = {m: m for m in ["ok", "fail2", "fail9", "down", "hang", "trickle", "die0", "die3", "flaky"]}
    modes["hang2"] = "hang"  # its own backend, so that its cooldown is its own
    modes["down3"] = "down"  # the router tests' failing candidate, cooling on its own
    backends = [{"name": name, "kind": "openai", "base_url": upstream.url(m), "timeout_s": TIMEOUT_S,
                 "connect_timeout_s": 1.0} for name, m in modes.items()]
    routes = [{"name": "retry2", "backend": "fail2", "retries": 2},
              {"name": "retry1", "backend": "fail9", "retries": 1},
              {"name": "down-then-ok", "backend": "down", "retries": 1, "fallbacks": ["ok"]},
              {"name": "hang-then-ok", "backend": "hang", "retries": 0, "fallbacks": ["ok"]},
              {"name": "hang-only", "backend": "hang2", "retries": 1},
              {"name": "flaky-then-ok", "backend": "flaky", "retries": 0, "fallbacks": ["ok"]},
              {"name": "trickle-then-ok", "backend": "trickle", "retries": 0, "fallbacks": ["ok"]},
              {"name": "die0-then-ok", "backend": "die0", "retries": 0, "fallbacks": ["ok"]},
              {"name": "die3-then-ok", "backend": "die3", "retries": 0, "fallbacks": ["ok"]}]
    # a router that always picks the failing candidate: what happens after that is the gateway's doing
    artifact = _best_router_preferring("down-cand", "ok-cand", tmp_path_factory.mktemp("router"))
    router = {"kind": "router", "router": "best", "artifact": artifact, "candidates": ["down-cand", "ok-cand"]}
    routes += [{"name": "down-cand", "backend": "down3", "retries": 0},
               {"name": "ok-cand", "backend": "ok"},
               {"name": "router-falls-back", **router},
               {"name": "router-strict", **router, "candidate_fallback": False},
               {"name": "router-strict-with-fallback", **router, "candidate_fallback": False, "fallbacks": ["ok-cand"]}]
    g = start_gateway({"backends": backends, "routes": routes}, tmp_path_factory.mktemp("gw-resilience"))
    yield g
    g.stop()


def _best_router_preferring(good: str, other: str, folder) -> str:
    from routers.base import Record
    from routers.registry import default_router_registry

    records = [Record(prompt=f"q{i}", candidate=c, score=float(c == good), cost=0.01 if c == good else 0.001)
               for i in range(10) for c in (good, other)]
    path = folder / "best.pkl"
    default_router_registry().create("best").fit(records).save(path)
    return str(path)


def _chat(gw, model: str, stream: bool = False, timeout: float = 30) -> tuple[httpx.Response, str, float]:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "stream": stream}
    t0 = time.monotonic()
    with httpx.stream("POST", gw.url + "/chat/completions", json=body, timeout=timeout) as r:
        raw = r.read().decode()
    return r, raw, time.monotonic() - t0


def test_5xx_is_retried_until_it_works(gw, upstream):
    before = upstream.calls["fail2"]
    r, raw, _ = _chat(gw, "retry2")
    assert r.status_code == 200, raw
    assert upstream.calls["fail2"] - before == 3  # two failures, then the answer
    assert json.loads(raw)["tandem"]["decision"]["reason"] == "retry 2 of route retry2"


def test_retries_are_bounded_then_502(gw, upstream):
    before = upstream.calls["fail9"]
    r, raw, _ = _chat(gw, "retry1")
    assert r.status_code == 502 and json.loads(raw)["error"]["code"] == "upstream_error"
    assert upstream.calls["fail9"] - before == 2  # the call and one retry, no more


@pytest.mark.parametrize("stream", [False, True])
def test_failing_backend_falls_back(gw, stream):
    r, raw, _ = _chat(gw, "down-then-ok", stream)
    assert r.status_code == 200, raw
    assert r.headers["x-tandem-route"] == "ok"
    if stream:
        assert raw.rstrip().endswith("data: [DONE]")


@pytest.mark.parametrize("stream", [False, True])
def test_hanging_backend_times_out_and_falls_back(gw, stream):
    r, raw, secs = _chat(gw, "hang-then-ok", stream)
    assert r.status_code == 200, raw
    assert r.headers["x-tandem-route"] == "ok"
    assert secs < TIMEOUT_S + 3.0


def test_hanging_backend_without_fallback_is_504_within_its_timeouts(gw):
    r, raw, secs = _chat(gw, "hang-only")
    assert r.status_code == 504 and json.loads(raw)["error"]["code"] == "timeout"
    assert 2 * TIMEOUT_S - 0.2 <= secs < 2 * TIMEOUT_S + 3.0  # the call and one retry, each cut at its timeout


def test_stream_that_dies_before_its_first_chunk_falls_back(gw):
    r, raw, _ = _chat(gw, "die0-then-ok", stream=True)
    assert r.status_code == 200 and r.headers["x-tandem-route"] == "ok"
    assert raw.rstrip().endswith("data: [DONE]") and "event: error" not in raw


def test_stream_that_dies_midway_does_not_fall_back(gw, upstream):
    before = upstream.calls["ok"]
    r, raw, _ = _chat(gw, "die3-then-ok", stream=True)
    assert r.status_code == 200 and r.headers["x-tandem-route"] == "die3-then-ok"
    assert "t2 " in raw and "event: error" in raw and "data: [DONE]" not in raw
    assert upstream.calls["ok"] == before  # nothing was sent twice


def test_slow_trickle_ends_with_an_error_event_by_the_timeout(gw):
    r, raw, secs = _chat(gw, "trickle-then-ok", stream=True)
    assert r.status_code == 200 and r.headers["x-tandem-route"] == "trickle-then-ok"
    assert "t0 " in raw and "event: error" in raw and "data: [DONE]" not in raw
    err = json.loads(raw.split("event: error\ndata: ", 1)[1].split("\n\n", 1)[0])
    assert err["error"]["code"] == "timeout"
    assert secs < TIMEOUT_S + 3.0  # not the 10 s the trickle would take


def test_cooldown_skips_a_failing_backend_then_recovers(gw, upstream):
    """Default policy: 3 retryable failures within 30 s cool a backend for 15 s; then it is tried again."""
    from gateway.cooldown import CooldownPolicy

    policy = CooldownPolicy()
    upstream.broken.add("flaky")
    try:
        for _ in range(policy.failures):
            r, raw, _ = _chat(gw, "flaky-then-ok")
            assert r.status_code == 200 and json.loads(raw)["tandem"]["decision"]["backend"] == "ok"
        cooled_at = time.monotonic()
        assert upstream.calls["flaky"] == policy.failures
        upstream.broken.discard("flaky")  # healthy again, but still cooling: not called
        r, raw, _ = _chat(gw, "flaky-then-ok")
        decision = json.loads(raw)["tandem"]["decision"]
        assert decision["backend"] == "ok" and "cooling down" in " ".join(decision["failures"])
        assert upstream.calls["flaky"] == policy.failures
    finally:
        upstream.broken.discard("flaky")
    time.sleep(max(0.0, cooled_at + policy.cooldown_s + 0.5 - time.monotonic()))
    r, raw, _ = _chat(gw, "flaky-then-ok")
    assert r.status_code == 200 and json.loads(raw)["tandem"]["decision"]["backend"] == "flaky"  # recovered
    assert upstream.calls["flaky"] == policy.failures + 1


@pytest.mark.parametrize("stream", [False, True])
def test_router_falls_back_to_its_next_candidate(gw, stream):
    r, raw, _ = _chat(gw, "router-falls-back", stream)
    assert r.status_code == 200, raw
    assert r.headers["x-tandem-route"] == "ok-cand"
    tail = raw if not stream else raw.rsplit("data: {", 1)[1].split("\n\n", 1)[0]
    decision = json.loads(raw if not stream else "{" + tail)["tandem"]["decision"]
    assert decision["routers"][0]["chosen"] == "down-cand" and decision["routers"][0]["fallbacks"] == ["ok-cand"]
    assert decision["chosen"] == "ok-cand" and "fallback to ok-cand" in decision["reason"]


def test_router_without_candidate_fallback_uses_only_its_own_fallbacks(gw, upstream):
    before = upstream.calls["ok"]
    r, raw, _ = _chat(gw, "router-strict")
    assert r.status_code in (502, 503) and json.loads(raw)["error"]["code"]
    assert upstream.calls["ok"] == before  # the other candidate was not tried
    r, raw, _ = _chat(gw, "router-strict-with-fallback")
    assert r.status_code == 200 and r.headers["x-tandem-route"] == "ok-cand"


def test_no_request_hangs_under_mixed_faults(gw):
    models = ["retry1", "down-then-ok", "hang-then-ok", "hang-only", "trickle-then-ok", "die3-then-ok", "ok"]

    async def run() -> list[tuple[int, float]]:
        async with httpx.AsyncClient(timeout=60) as c:
            async def one(i: int) -> tuple[int, float]:
                t0 = time.monotonic()
                body = {"model": models[i % len(models)], "messages": [{"role": "user", "content": "x"}],
                        "stream": i % 2 == 0}
                r = await c.post(gw.url + "/chat/completions", json=body)
                return r.status_code, time.monotonic() - t0

            return await asyncio.gather(*(one(i) for i in range(28)))

    results = asyncio.run(run())
    assert all(s in (200, 502, 504) for s, _ in results), results
    assert max(secs for _, secs in results) < 2 * TIMEOUT_S + 5.0


# ---------------------------------------------------------------------------------------------------- Redis, Postgres


async def _load(base: str, n: int, rate: float, key: str | None = None, during=None, at: float = 0.3
                ) -> list[tuple[int, str]]:
    """``n`` requests started at ``rate``/s; ``during()`` runs in a thread once ``at`` of them were started."""
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(timeout=30) as c:
        async def one(i: int) -> tuple[int, str]:
            body = {"model": "stub", "messages": [{"role": "user", "content": "x"}], "max_tokens": 4,
                    "stream": i % 2 == 1}
            try:
                r = await c.post(base + "/v1/chat/completions", json=body, headers=headers)
            except httpx.HTTPError as e:
                return -1, type(e).__name__
            return r.status_code, r.headers.get("x-request-id", "")

        tasks, side = [], None
        for i in range(n):
            if during is not None and side is None and i >= at * n:
                side = asyncio.create_task(asyncio.to_thread(during))
            tasks.append(asyncio.create_task(one(i)))
            await asyncio.sleep(1 / rate)
        out = await asyncio.gather(*tasks)
        if side is not None:
            await side
        return out


@pytest.fixture(scope="module")
def stub():
    proc, url = start_stub(tokens=4, chunk_delay_ms=5)
    yield url
    stop_process(proc)


def test_redis_restarted_under_load(stub, redis_server, tmp_path_factory):
    from gateway.storage.keys import KeyStore
    from tests.fixtures.gateway_proc import start_gateway

    redis_server.start()
    cfg = {"auth": {"require_keys": True}, "storage": {"redis_url": redis_server.url},
           "backends": [{"name": "stub", "kind": "openai", "base_url": stub,
                         "price": {"input_per_mtok": 1, "output_per_mtok": 1}}]}
    g = start_gateway(cfg, tmp_path_factory.mktemp("gw-redis"))
    try:
        eng = create_engine(g.db_url)
        key, _ = KeyStore(eng).create(name="redis-restart", budget_usd=100.0, rpm=100_000)
        eng.dispose()
        results = asyncio.run(_load(g.base, 120, 40, key, during=redis_server.restart))
        statuses = Counter(s for s, _ in results)
        assert set(statuses) <= {200, 503}, statuses  # never a 500, never a hang
        assert statuses[200] >= 60, statuses
        after = asyncio.run(_load(g.base, 10, 20, key))  # recovered: a fresh Redis, reconnected
        assert [s for s, _ in after] == [200] * 10
    finally:
        g.stop()
        redis_server.start()


def test_postgres_stopped_under_load_loses_no_log_row(stub, postgres_server, tmp_path_factory):
    from tests.fixtures.gateway_proc import start_gateway

    db = postgres_server.new_database("resilience")
    cfg = {"storage": {"database_url": db},
           "backends": [{"name": "stub", "kind": "openai", "base_url": stub}]}
    g = start_gateway(cfg, tmp_path_factory.mktemp("gw-pg"))
    try:
        def outage() -> None:
            postgres_server.stop()
            time.sleep(2.0)
            postgres_server.start()

        results = asyncio.run(_load(g.base, 100, 25, during=outage))
        assert [s for s, _ in results] == [200] * 100  # the log is not in the request path
        ids = sorted(rid for _, rid in results)
        eng = create_engine(db)
        deadline = time.monotonic() + 30
        while True:  # spooled rows are replayed every few seconds
            with eng.connect() as c:
                rows = [r.id for r in c.execute(text("select id from requests"))]
            if len(rows) >= 100 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        time.sleep(1.0)
        with eng.connect() as c:
            rows = [r.id for r in c.execute(text("select id from requests"))]
        eng.dispose()
        assert sorted(rows) == ids  # every request once: none lost, none duplicated
    finally:
        g.stop()
        if not postgres_server.is_running():
            postgres_server.start()
