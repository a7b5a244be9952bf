"""Deployments behind one route: the config (validated, errors naming the field), the route it builds, and a gateway
process over real upstream processes (``bench.upstream_stub``, ``tests.fixtures.dying_upstream``).

Through ``tandem serve``: the decision (body, ``x-tandem-replica``, log row) names the replica that answered and the
usage prices that replica's backend; a prompt goes to the same replica on every request and from a second gateway
too (``prefix``); a failed call is retried on the other replica before the route's fallbacks and feeds that
replica's cooldown; with one replica killed (between requests and under load) requests still succeed on the other,
streams already under way end with an SSE error, and no log row is lost.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from sqlalchemy import create_engine, text

from bench.soak import start_stub, stop_process
from gateway.balancer import Balancer
from gateway.config import parse_config
from gateway.dispatch import BackendRoute
from gateway.errors import ConfigError
from gateway.route_kinds import build_routes
from tests.fixtures.dying_upstream import DyingUpstream
from tests.gateway.test_route_kinds import Silent  # a backend that is never called

LOCAL = [{"name": "a", "kind": "local", "path": "/x"}, {"name": "b", "kind": "local", "path": "/y"}]
TOKENS = 4
PRICES = {"qwen-a": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
          "qwen-b": {"input_per_mtok": 3.0, "output_per_mtok": 5.0}}


# ---------------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize("route,message", [
    ({"name": "r"}, "routes.0.backend: Field required (name a 'backend', or list 'deployments')"),
    ({"name": "r", "backend": "a", "deployments": [{"backend": "b"}]},
     "routes.0.backend: set either 'backend' or 'deployments', not both"),
    ({"name": "r", "deployments": []}, "routes.0.deployments: List should have at least 1 item"),
    ({"name": "r", "deployments": [{"backend": "a"}, {"backend": "b", "weight": 0}]},
     "routes.0.deployments.1.weight: Input should be greater than 0"),
    ({"name": "r", "deployments": [{"backend": "a"}, {"backend": "zz"}]},
     "routes.0.deployments.1.backend: unknown backend 'zz'"),
    ({"name": "r", "deployments": [{"backend": "a"}, {"backend": "a"}]},
     "routes.0.deployments: backends listed more than once: ['a']"),
    ({"name": "r", "deployments": [{"weight": 2}]}, "routes.0.deployments.0.backend: Field required"),
    ({"name": "r", "deployments": [{"backend": "a"}], "strategy": "round-robin"},
     "routes.0.strategy: Input should be 'weighted', 'least-inflight', 'latency' or 'prefix'"),
    ({"name": "r", "backend": "a", "strategy": "prefix"},
     "routes.0.strategy: 'strategy' applies to 'deployments' only"),
    ({"name": "r", "deployments": [{"backend": "a"}], "load_factor": 0.5},
     "routes.0.load_factor: Input should be greater than or equal to 1"),
])
def test_deployment_config_errors_name_the_field(route, message):
    with pytest.raises(ConfigError) as e:
        parse_config({"backends": LOCAL, "routes": [route]})
    assert e.value.message.startswith(f"invalid config: {message}"), e.value.message


def test_a_deployments_route_builds_a_balancer_and_one_view_per_replica():
    cfg = parse_config({"backends": LOCAL, "routes": [
        {"name": "m", "deployments": [{"backend": "a", "weight": 2}, {"backend": "b"}], "strategy": "prefix",
         "prefix_chars": 64, "load_factor": 2.0, "fallbacks": ["plain"], "retries": 0},
        {"name": "plain", "backend": "a"}]})
    table = build_routes(cfg, {"a": Silent("a"), "b": Silent("b")})
    m, plain = table.routes["m"], table.routes["plain"]
    assert isinstance(m, BackendRoute) and m.balancer is not None
    assert [(r.name, r.weight) for r in m.balancer.replicas] == [("a", 2.0), ("b", 1.0)]
    assert (m.balancer.strategy, m.balancer.prefix_chars, m.balancer.load_factor) == ("prefix", 64, 2.0)
    assert [(v.name, v.backend.name, v.fallbacks, v.replica) for v in m.replicas] == [
        ("m", "a", ["plain"], m.balancer.replicas[0]), ("m", "b", ["plain"], m.balancer.replicas[1])]
    assert m.describe()["deployments"] == ["a", "b"] and m.describe()["strategy"] == "prefix"
    assert m.target == "2 deployments (prefix): a, b"
    assert isinstance(plain, BackendRoute) and plain.balancer is None and plain.replicas == ()  # no balancer at all
    assert "deployments" not in plain.describe()


# ---------------------------------------------------------------------------------------------------- real processes


def _backend(name: str, url: str, **kw) -> dict:
    return {"name": name, "kind": "vllm", "base_url": url, "model": f"model-{name}", "timeout_s": 10,
            "connect_timeout_s": 1.0, "price": PRICES.get(name, {}), **kw}


def _body(prompt: str, stream: bool) -> dict:
    return {"model": "qwen", "stream": stream, "max_tokens": TOKENS,
            "messages": [{"role": "system", "content": prompt}, {"role": "user", "content": "go"}]}


def _decision(raw: str, stream: bool) -> dict:
    if not stream:
        return json.loads(raw)["tandem"]["decision"]
    if "event: error" in raw:
        return json.loads(raw.split("event: error\ndata: ", 1)[1].split("\n\n", 1)[0])["tandem"]["decision"]
    last = [ln for ln in raw.split("\n\n") if ln.startswith("data: {")][-1]
    return json.loads(last[len("data: "):])["tandem"]["decision"]


async def _send(base: str, bodies: list[dict], spacing_s: float = 0.0) -> list[tuple[int, dict, str, dict]]:
    """All at once, or one started every ``spacing_s``: (status, headers, raw body, decision or {})."""
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=200)) as c:
        async def one(i: int, b: dict) -> tuple[int, dict, str, dict]:
            await asyncio.sleep(i * spacing_s)
            async with c.stream("POST", base + "/v1/chat/completions", json=b) as r:
                raw = (await r.aread()).decode()
            d = _decision(raw, b["stream"]) if r.status_code == 200 else {}
            return r.status_code, dict(r.headers), raw, d

        return await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))


def _rows(db: str, want: int, timeout: float = 20.0) -> list:
    eng = create_engine(db)
    try:
        deadline = time.monotonic() + timeout
        while True:
            with eng.connect() as conn:
                rows = list(conn.execute(text("select id, model_chosen, decision, usage, status, stream from requests")))
            if len(rows) >= want or time.monotonic() > deadline:
                return rows
            time.sleep(0.2)
    finally:
        eng.dispose()


@pytest.fixture(scope="module")
def stubs():
    procs = [start_stub(tokens=TOKENS, chunk_delay_ms=1.0) for _ in range(2)]
    yield [url for _, url in procs]
    for p, _ in procs:
        stop_process(p)


@pytest.fixture(scope="module")
def prefix_cfg(stubs):
    return {"backends": [_backend("qwen-a", stubs[0]), _backend("qwen-b", stubs[1])],
            "routes": [{"name": "qwen", "deployments": [{"backend": "qwen-a"}, {"backend": "qwen-b"}],
                        "strategy": "prefix"}]}


@pytest.fixture(scope="module")
def prefix_gw(prefix_cfg, tmp_path_factory):
    from tests.fixtures.gateway_proc import start_gateway

    g = start_gateway(prefix_cfg, tmp_path_factory.mktemp("gw-prefix"))
    yield g
    g.stop()


@pytest.mark.parametrize("stream", [False, True])
def test_the_replica_that_answered_is_named_and_priced(prefix_gw, stream):
    prompts = [f"few-shot prefix {i} " * 20 for i in range(16)]
    results = asyncio.run(_send(prefix_gw.base, [_body(p, stream) for p in prompts]))
    seen = set()
    for status, headers, raw, d in results:
        assert status == 200, raw
        replica = d["replica"]
        seen.add(replica)
        assert d["strategy"] == "prefix" and d["backend"] == replica and d["reason"] == "direct route"
        assert d["replica_reason"] == "prefix owner" or d["replica_reason"].startswith("prefix owner qwen-")
        assert headers["x-tandem-replica"] == replica and headers["x-tandem-route"] == "qwen"
        if stream:
            assert raw.rstrip().endswith("data: [DONE]")
        else:
            body = json.loads(raw)
            assert body["model"] == replica
            (usage,) = body["tandem"]["usage"]
            price = PRICES[replica]
            assert usage["model"] == replica and usage["completion_tokens"] == TOKENS
            assert usage["cost_usd"] == pytest.approx((usage["prompt_tokens"] * price["input_per_mtok"]
                                                       + TOKENS * price["output_per_mtok"]) / 1e6)
    assert seen == {"qwen-a", "qwen-b"}  # sixteen prefixes spread over both


def test_prefix_affinity_holds_across_requests_and_gateways(prefix_gw, prefix_cfg, gateway_factory):
    prompts = [f"shared system prompt number {i}. " * 12 for i in range(12)]
    bodies = [_body(p, i % 2 == 1) for i in range(4) for p in prompts]  # every prompt four times, streamed or not

    async def one_by_one(base: str, some: list[dict]) -> list[str]:
        """One request at a time, so no replica is ever at its load bound."""
        out = []
        for b in some:
            (_, _, _, d), = await _send(base, [b])
            assert d["replica_reason"] == "prefix owner"
            out.append(d["replica"])
        return out

    first = asyncio.run(one_by_one(prefix_gw.base, bodies))
    by_prompt = {}
    for b, replica in zip(bodies, first, strict=True):
        by_prompt.setdefault(b["messages"][0]["content"], set()).add(replica)
    assert all(len(s) == 1 for s in by_prompt.values()), by_prompt
    assert {r for s in by_prompt.values() for r in s} == {"qwen-a", "qwen-b"}
    other = gateway_factory(prefix_cfg, name="gw-prefix-2")
    second = asyncio.run(one_by_one(other.base, bodies[: len(prompts)]))
    assert second == first[: len(prompts)]  # the same replica from another gateway process


def test_a_hot_prefix_spills_over_at_its_load_bound(prefix_gw):
    """Many concurrent requests of one prefix: the owner takes its bound's worth, the rest go to the other replica
    (and say why)."""
    results = asyncio.run(_send(prefix_gw.base, [_body("one hot few-shot prefix " * 30, True) for _ in range(40)]))
    reasons = [d["replica_reason"] for _, _, _, d in results]
    owners = {d["replica"] for _, _, _, d in results if d["replica_reason"] == "prefix owner"}
    assert len(owners) == 1 and reasons.count("prefix owner") >= 1
    spilled = [d for _, _, _, d in results if d["replica_reason"] != "prefix owner"]
    assert spilled, reasons  # forty streams at once: the owner reached its bound
    assert all(d["replica"] not in owners and d["replica_reason"].startswith(f"prefix owner {next(iter(owners))} at "
                                                                              "its load bound") for d in spilled)


def test_rows_name_the_replica(prefix_gw):
    results = asyncio.run(_send(prefix_gw.base, [_body(f"row check {i}", i % 2 == 0) for i in range(6)]))
    ids = {h["x-request-id"]: d["replica"] for _, h, _, d in results}
    rows = {r.id: r for r in _rows(prefix_gw.db_url, 0)}
    deadline = time.monotonic() + 20
    while not set(ids) <= set(rows) and time.monotonic() < deadline:
        time.sleep(0.2)
        rows = {r.id: r for r in _rows(prefix_gw.db_url, 0)}
    for rid, replica in ids.items():
        row = rows[rid]
        decision = row.decision if isinstance(row.decision, dict) else json.loads(row.decision)
        assert row.model_chosen == replica and decision["replica"] == replica and decision["strategy"] == "prefix"


def _owned_by(names: list[str], owner: str, n: int, tag: str) -> list[str]:
    """``n`` prompts whose ``prefix`` owner among ``names`` is ``owner`` (the ranking is a function of the request)."""
    b = Balancer([(x, 1.0) for x in names], "prefix")
    out, i = [], 0
    while len(out) < n:
        p = f"{tag} {i}"
        if b.replicas[b.choose(b.request_key(_body(p, False)["messages"], None))[0]].name == owner:
            out.append(p)
        i += 1
    return out


def test_a_failing_replica_is_retried_on_the_other_then_cools(stubs, gateway_factory):
    """A replica answering 500 (non-streamed) is retried on the other replica even with ``retries: 0``; after three
    failures it cools and is skipped; a stream that dies midway on it ends with an SSE error (never retried)."""
    from gateway.cooldown import CooldownPolicy

    dying = DyingUpstream(chunks=2)
    try:
        g = gateway_factory({"backends": [_backend("qwen-a", dying.url), _backend("qwen-b", stubs[1])],
                             "routes": [{"name": "qwen", "deployments": [{"backend": "qwen-a"}, {"backend": "qwen-b"}],
                                         "strategy": "prefix", "retries": 0}]}, name="gw-dying")
        prompts = _owned_by(["qwen-a", "qwen-b"], "qwen-a", 5, "owned by the dying one")
        r = httpx.post(g.url + "/chat/completions", json=_body(prompts[0], True), timeout=30)
        assert r.status_code == 200 and "event: error" in r.text and "data: [DONE]" not in r.text
        assert "tok0 " in r.text and _decision(r.text, True)["replica"] == "qwen-a"
        for p in prompts[1: 1 + CooldownPolicy().failures]:
            r = httpx.post(g.url + "/chat/completions", json=_body(p, False), timeout=30)
            d = r.json()["tandem"]["decision"]
            assert r.status_code == 200 and r.headers["x-tandem-replica"] == "qwen-b" == d["replica"]
            assert d["reason"] == "retry on replica qwen-b after qwen-a failed"
            assert d["failures"][0].startswith("qwen: replica qwen-a: ") and r.json()["model"] == "qwen-b"
        r = httpx.post(g.url + "/chat/completions", json=_body(prompts[-1], False), timeout=30)
        d = r.json()["tandem"]["decision"]
        assert r.status_code == 200 and d["replica"] == "qwen-b" and d["reason"] == "direct route"
        assert d["failures"] == ["qwen: replica qwen-a: cooling down after repeated failures"]
        rows = _rows(g.db_url, 2 + CooldownPolicy().failures)
        assert len(rows) == 2 + CooldownPolicy().failures
        assert sorted(r.model_chosen for r in rows) == ["qwen-a"] + ["qwen-b"] * (1 + CooldownPolicy().failures)
    finally:
        dying.close()


def test_replicas_are_tried_before_the_routes_fallbacks(stubs, gateway_factory):
    dying = [DyingUpstream(), DyingUpstream()]
    try:
        g = gateway_factory({"backends": [_backend("qwen-a", dying[0].url), _backend("qwen-b", dying[1].url),
                                          _backend("spare", stubs[0])],
                             "routes": [{"name": "qwen", "deployments": [{"backend": "qwen-a"}, {"backend": "qwen-b"}],
                                         "strategy": "least-inflight", "fallbacks": ["spare"]}]}, name="gw-both-dying")
        r = httpx.post(g.url + "/chat/completions", json=_body("anything", False), timeout=30)
        d = r.json()["tandem"]["decision"]
        assert r.status_code == 200 and d["backend"] == "spare" and d["reason"] == "fallback to spare"
        assert sorted(f.split(":")[1].strip() for f in d["failures"]) == ["replica qwen-a", "replica qwen-b"]
        assert r.headers["x-tandem-route"] == "spare" and "x-tandem-replica" not in r.headers
    finally:
        for u in dying:
            u.close()


@pytest.mark.parametrize("strategy", ["weighted", "least-inflight", "latency"])
def test_a_killed_replica_leaves_the_route_serving(strategy, gateway_factory):
    """Kill one of two stubs under load: every non-streamed request succeeds (on the survivor when the killed one
    was chosen), a stream already under way on the killed one ends with an SSE error, every request has its row;
    after the kill every request (streamed or not) is answered by the survivor."""
    a, b = start_stub(tokens=16, chunk_delay_ms=10.0), start_stub(tokens=TOKENS, chunk_delay_ms=1.0)
    try:
        g = gateway_factory({"backends": [_backend("qwen-a", a[1]), _backend("qwen-b", b[1])],
                             "routes": [{"name": "qwen", "strategy": strategy,
                                         "deployments": [{"backend": "qwen-a"}, {"backend": "qwen-b"}]}]},
                            name=f"gw-kill-{strategy}")
        bodies = [{**_body(f"load {i}", i % 2 == 1), "max_tokens": 16} for i in range(80)]

        async def load_then_kill():
            task = asyncio.ensure_future(_send(g.base, bodies, spacing_s=0.02))  # 80 requests over 1.6 s
            await asyncio.sleep(0.8)
            a[0].kill()  # SIGKILL: no goodbye to open connections
            await asyncio.to_thread(a[0].wait, 5)
            during = await task
            after = await _send(g.base, [_body(f"after {i}", i % 2 == 1) for i in range(20)])
            return during, after

        during, after = asyncio.run(load_then_kill())
        for (status, _, raw, d), body in zip(during, bodies, strict=True):
            assert status == 200, raw
            if not body["stream"]:
                assert d["replica"] in ("qwen-a", "qwen-b") and json.loads(raw)["choices"][0]["message"]["content"]
            else:
                assert raw.rstrip().endswith("data: [DONE]") or ("event: error" in raw and d["replica"] == "qwen-a")
        assert any(d["replica"] == "qwen-a" for _, _, _, d in during)  # the kill hit a replica that was serving
        for status, headers, raw, d in after:
            assert status == 200 and raw.rstrip().endswith(("data: [DONE]", "}")), raw
            assert d["replica"] == "qwen-b" == headers["x-tandem-replica"]
        ids = [h["x-request-id"] for _, h, _, _ in during + after]
        rows = _rows(g.db_url, len(ids))
        time.sleep(0.3)
        rows = _rows(g.db_url, len(ids), timeout=0)
        assert sorted(r.id for r in rows) == sorted(ids)  # none lost, none twice
    finally:
        stop_process(a[0], 5.0)
        stop_process(b[0], 5.0)
