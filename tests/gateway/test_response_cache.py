"""The response cache: its pure rules (which requests may be cached, the normalised key, expiry, the closest
paraphrase), and end to end through ``tandem serve`` processes in front of an upstream that counts its calls —
a repeat is answered with no backend call, keys do not see each other's entries unless the route is shared, a key
over budget gets 429 even when the answer is cached, sampled requests without a seed are never cached, a cached
stream parses like a live one with the official ``openai`` client, entries expire, and the Redis-backed cache is
shared by two gateway processes."""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
import openai
import pytest
import redis
from sqlalchemy import create_engine, text

from gateway.backends.base import ChatRequest, CompletionRequest, StreamEvent
from gateway.config import RouteCacheConfig
from gateway.response_cache import (
    CachedAnswer,
    MemoryAnswerStore,
    StreamRecorder,
    answer_events,
    cacheable,
    fingerprint,
    scope_of,
)
from gateway.semantic_cache import MemorySemanticIndex, best_match
from gateway.storage.db import make_engine, migrate
from gateway.storage.keys import KeyStore
from tests.fixtures.counting_upstream import CountingUpstream

PER_TOKEN = 1000 / 1e6  # the priced backend's output price: $0.001 a token (input free)


# ---------------------------------------------------------------------------------------------------- pure rules


@pytest.mark.parametrize("temperature, seed, ok", [(0.0, None, True), (None, None, False), (0.7, None, False),
                                                    (0.7, 3, True), (None, 0, True), (1e-9, None, False)])
def test_only_greedy_or_seeded_requests_are_cacheable(temperature, seed, ok):
    assert cacheable(temperature, seed) is ok
    req = ChatRequest(messages=[{"role": "user", "content": "q"}], temperature=temperature, seed=seed)
    assert (fingerprint("chat", "r", "k", req) is not None) is ok


def _chat(content, **kw):
    return ChatRequest(messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": content}],
                       max_tokens=8, temperature=0.0, **kw)


def test_key_is_normalised_and_separates_what_changes_the_answer():
    base = fingerprint("chat", "r", "k", _chat("hello"))
    parts = ChatRequest(messages=[{"content": "be brief", "role": "system", "name": None},
                                  {"role": "user", "content": [{"type": "text", "text": "hello"}]}],
                        max_tokens=8, temperature=0.0)
    assert fingerprint("chat", "r", "k", parts) == base  # key order, None fields, one text part: the same request
    different = [fingerprint("chat", "r", "k", _chat("hello!")), fingerprint("chat", "r2", "k", _chat("hello")),
                 fingerprint("chat", "r", "k2", _chat("hello")), fingerprint("completions", "r", "k", _chat("hello")),
                 fingerprint("chat", "r", "k", _chat("hello", stop=["\n"])),
                 fingerprint("chat", "r", "k", _chat("hello", tools=[{"type": "function", "function": {"name": "f"}}])),
                 fingerprint("chat", "r", "k", _chat("hello", extra={"ignore_eos": True})),
                 fingerprint("chat", "r", "k", _chat("hello", n=2)), fingerprint("chat", "r", "k", _chat("hello", seed=1))]
    assert len({base.exact, *(f.exact for f in different)}) == len(different) + 1
    # semantic matching compares the last user message; everything else is in the group, matched exactly
    assert fingerprint("chat", "r", "k", _chat("hi there")).group == base.group and base.text == "hello"
    assert fingerprint("chat", "r", "k", _chat("hello", stop=["\n"])).group != base.group
    comp = fingerprint("completions", "r", "k", CompletionRequest(prompt="2+2=", temperature=0.0))
    assert comp.text == "2+2=" and comp.exact != fingerprint(
        "completions", "r", "k", CompletionRequest(prompt="2+3=", temperature=0.0)).exact


def test_scope_is_the_key_unless_shared():
    private, shared = RouteCacheConfig(ttl_s=5), RouteCacheConfig(ttl_s=5, shared=True)
    assert scope_of(private, "k1") != scope_of(private, "k2") and scope_of(private, None) != scope_of(private, "k1")
    assert scope_of(shared, "k1") == scope_of(shared, "k2") == scope_of(shared, None)


def test_memory_store_expires_and_drops_least_recently_used():
    now = [100.0]
    store = MemoryAnswerStore(clock=lambda: now[0])

    async def run():
        await store.put("r", "a", b"A", 10, 2)
        await store.put("r", "b", b"B", 10, 2)
        assert await store.get("r", "a") == b"A"  # a is now the most recently used
        await store.put("r", "c", b"C", 10, 2)
        assert await store.get("r", "b") is None and await store.get("r", "a") == b"A"
        await store.put("other", "z", b"Z", 10, 1)  # another route's bound is its own
        assert store.size("r") == 2
        now[0] += 10.0
        assert await store.get("r", "a") is None and await store.get("other", "z") is None

    asyncio.run(run())


def test_best_match_agrees_with_a_brute_force_reference():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(0, 8))
        vecs = rng.normal(size=(n, 16)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True) + 1e-12
        q = rng.normal(size=16).astype(np.float32)
        q /= np.linalg.norm(q)
        t = float(rng.uniform(-0.5, 0.9))
        ref = None
        for i in range(n):
            s = float(sum(float(a) * float(b) for a, b in zip(vecs[i], q)))
            if s >= t and (ref is None or s > ref[1] + 1e-6):
                ref = (i, s)
        got = best_match(q, vecs, t)
        assert (got is None) == (ref is None)
        if got is not None:
            assert got[1] == pytest.approx(ref[1], abs=1e-5)


def test_memory_semantic_index_expires_groups():
    now = [0.0]
    idx = MemorySemanticIndex(clock=lambda: now[0])

    async def run():
        await idx.add("g", "k1", np.ones(4, np.float32) / 2, ttl_s=5, max_entries=2)
        await idx.add("g", "k2", np.ones(4, np.float32) / 2, ttl_s=5, max_entries=2)
        await idx.add("g", "k3", np.ones(4, np.float32) / 2, ttl_s=5, max_entries=2)
        keys, vecs = await idx.candidates("g")
        assert keys == ["k2", "k3"] and vecs.shape == (2, 4)
        now[0] = 6.0
        assert (await idx.candidates("g"))[0] == []

    asyncio.run(run())


def test_recorded_stream_replays_into_the_same_answer():
    live = [StreamEvent(delta={"role": "assistant", "content": ""}), StreamEvent(delta={"content": "two "}, model="a"),
            StreamEvent(delta={"content": "words"}, model="b"), StreamEvent(delta={}, finish_reason="stop")]
    rec = StreamRecorder("chat")
    for ev in live:
        rec.add(ev)
    answer = rec.answer("m", "route", [{"model": "a", "prompt_tokens": 3, "completion_tokens": 2}], "req1")
    assert answer.choices[0]["message"]["content"] == "two words" and answer.provenance == [
        {"model": "a", "text": "two "}, {"model": "b", "text": "words"}]
    again = StreamRecorder("chat")
    for ev in answer_events(CachedAnswer.loads(answer.dumps())):
        again.add(ev)
    assert again.answer("m", "route", answer.usage, "req1").choices == answer.choices
    broken = StreamRecorder("chat")
    broken.add(StreamEvent(delta={"content": "cut"}))
    assert broken.answer("m", "route", [], "x") is None  # no finish reason: never stored


# ---------------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def upstream():
    up = CountingUpstream()
    yield up
    up.close()


def _config(upstream: CountingUpstream, tag: str, storage: dict | None = None) -> dict:
    return {
        "auth": {"require_keys": True},
        "storage": storage or {},
        "backends": [{"name": "up", "kind": "openai", "base_url": upstream.url(f"{tag}-up")},
                     {"name": "priced", "kind": "openai", "base_url": upstream.url(f"{tag}-priced"),
                      "price": {"input_per_mtok": 0, "output_per_mtok": 1000}}],
        "routes": [{"name": "private", "backend": "up", "cache": {"ttl_s": 60}},
                   {"name": "shared", "backend": "up", "cache": {"ttl_s": 60, "shared": True}},
                   {"name": "short", "backend": "up", "cache": {"ttl_s": 1}},
                   {"name": "plain", "backend": "up"},
                   {"name": "budgeted", "backend": "priced", "cache": {"ttl_s": 60, "shared": True}}],
    }


@pytest.fixture(scope="module")
def gw(upstream, tmp_path_factory):
    from tests.fixtures.gateway_proc import start_gateway

    g = start_gateway(_config(upstream, "mem"), tmp_path_factory.mktemp("gw-cache"))
    yield g
    g.stop()


@pytest.fixture(scope="module")
def keys(gw):
    engine = make_engine(gw.db_url)
    migrate(engine)
    store = KeyStore(engine)
    made = {name: store.create(name=name)[0] for name in ("a", "b", "unlimited")}
    made["poor"] = store.create(name="poor", budget_usd=5 * PER_TOKEN)[0]  # one 4-token request fits, not two
    engine.dispose()
    return made


def _ask(gw, key, route="private", content="what is 2+2?", **body):
    body = {"model": route, "messages": [{"role": "user", "content": content}], "max_tokens": 4,
            "temperature": 0, **body}
    return httpx.post(gw.url + "/chat/completions", json=body, headers={"authorization": f"Bearer {key}"} if key else {},
                      timeout=30)


def _log_row(gw, request_id: str) -> dict:
    engine = create_engine(gw.db_url)
    deadline = time.monotonic() + 10
    try:
        while time.monotonic() < deadline:
            with engine.connect() as c:
                row = c.execute(text("select * from requests where id = :i"), {"i": request_id}).mappings().first()
            if row is not None:
                return dict(row)
            time.sleep(0.1)
    finally:
        engine.dispose()
    raise AssertionError(f"no log row for {request_id}")


def test_repeat_is_answered_from_the_cache_with_no_backend_call(gw, keys, upstream):
    first = _ask(gw, keys["a"], content="repeat me")
    calls = upstream.calls["mem-up"]
    second = _ask(gw, keys["a"], content="repeat me")
    assert first.status_code == second.status_code == 200
    assert upstream.calls["mem-up"] == calls  # no backend call
    assert first.headers["x-tandem-cache"] == "miss" and second.headers["x-tandem-cache"] == "hit"
    a, b = first.json(), second.json()
    assert b["choices"][0]["message"] == a["choices"][0]["message"] and b["usage"] == a["usage"]
    assert a["tandem"]["cost_usd"] >= 0 and b["tandem"]["cost_usd"] == 0.0
    assert b["tandem"]["decision"]["cache"] == "hit" and a["tandem"]["decision"]["cache"] == "miss"
    assert a["tandem"]["request_id"] in b["tandem"]["decision"]["reason"]
    row = _log_row(gw, b["tandem"]["request_id"])
    decision = row["decision"] if isinstance(row["decision"], dict) else __import__("json").loads(row["decision"])
    assert decision["cache"] == "hit" and row["cost_usd"] == 0.0 and row["status"] == "ok"
    assert _ask(gw, keys["a"], route="plain", content="repeat me").headers.get("x-tandem-cache") is None


def test_another_key_does_not_see_the_entry_unless_the_route_is_shared(gw, keys, upstream):
    _ask(gw, keys["a"], content="mine")
    calls = upstream.calls["mem-up"]
    other = _ask(gw, keys["b"], content="mine")
    assert other.headers["x-tandem-cache"] == "miss" and upstream.calls["mem-up"] == calls + 1
    assert "answer-" in other.json()["choices"][0]["message"]["content"]

    first = _ask(gw, keys["a"], route="shared", content="ours")
    calls = upstream.calls["mem-up"]
    shared = _ask(gw, keys["b"], route="shared", content="ours")
    assert shared.headers["x-tandem-cache"] == "hit" and upstream.calls["mem-up"] == calls
    assert shared.json()["choices"][0]["message"] == first.json()["choices"][0]["message"]


def test_sampled_requests_without_a_seed_are_never_cached(gw, keys, upstream):
    for body in ({"temperature": 0.8}, {"temperature": None}):
        calls = upstream.calls["mem-up"]
        r1, r2 = (_ask(gw, keys["a"], content="sample", **body) for _ in range(2))
        assert r1.headers["x-tandem-cache"] == r2.headers["x-tandem-cache"] == "bypass"
        assert upstream.calls["mem-up"] == calls + 2
        assert r2.json()["tandem"]["decision"]["cache"] == "bypass"
    _ask(gw, keys["a"], content="seeded", temperature=0.8, seed=7)
    calls = upstream.calls["mem-up"]
    assert _ask(gw, keys["a"], content="seeded", temperature=0.8, seed=7).headers["x-tandem-cache"] == "hit"
    assert upstream.calls["mem-up"] == calls


def test_a_key_over_budget_gets_429_even_when_the_answer_is_cached(gw, keys, upstream):
    stored = _ask(gw, keys["unlimited"], route="budgeted", content="cached for all")
    assert stored.status_code == 200 and stored.json()["tandem"]["cost_usd"] == pytest.approx(4 * PER_TOKEN)
    spend = _ask(gw, keys["poor"], route="budgeted", content="something else")  # spends 4 of its 5 tokens' budget
    assert spend.status_code == 200 and spend.headers["x-tandem-cache"] == "miss"
    calls = upstream.calls["mem-priced"]
    refused = _ask(gw, keys["poor"], route="budgeted", content="cached for all")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "insufficient_quota"
    hit = _ask(gw, keys["unlimited"], route="budgeted", content="cached for all")
    assert hit.headers["x-tandem-cache"] == "hit" and hit.json()["tandem"]["cost_usd"] == 0.0
    assert upstream.calls["mem-priced"] == calls


def test_a_cached_stream_parses_like_the_live_one(gw, keys, upstream):
    client = openai.OpenAI(base_url=gw.url, api_key=keys["a"], max_retries=0)
    kw = dict(model="private", messages=[{"role": "user", "content": "stream me"}], max_tokens=5, temperature=0,
              stream=True, stream_options={"include_usage": True})

    def shape(chunks):
        return [(c.object, c.model, [(ch.index, ch.delta.role, ch.delta.content, ch.finish_reason) for ch in c.choices],
                 c.usage.model_dump() if c.usage else None) for c in chunks]

    live = list(client.chat.completions.create(**kw))
    calls = upstream.calls["mem-up"]
    cached = list(client.chat.completions.create(**kw))
    assert upstream.calls["mem-up"] == calls
    assert shape(cached) == shape(live) and len(live) >= 7  # role, 5 pieces, finish, usage
    assert live[-1].model_extra["tandem"]["decision"]["cache"] == "miss"
    final = cached[-1].model_extra["tandem"]
    assert final["decision"]["cache"] == "hit" and final["cost_usd"] == 0.0
    assert {c.id for c in cached} != {c.id for c in live}  # a new request, with its own id
    whole = client.chat.completions.create(**{**kw, "stream": False, "stream_options": None})  # stream is no key
    assert whole.choices[0].message.content == "".join(c.choices[0].delta.content or "" for c in live if c.choices)
    assert upstream.calls["mem-up"] == calls
    with client.chat.completions.with_streaming_response.create(**kw) as raw:
        assert raw.headers["x-tandem-cache"] == "hit"


def test_completions_are_cached_too(gw, keys, upstream):
    body = {"model": "private", "prompt": "once upon", "max_tokens": 3, "temperature": 0}
    h = {"authorization": f"Bearer {keys['a']}"}
    first = httpx.post(gw.url + "/completions", json=body, headers=h, timeout=30)
    calls = upstream.calls["mem-up"]
    second = httpx.post(gw.url + "/completions", json=body, headers=h, timeout=30)
    assert second.headers["x-tandem-cache"] == "hit" and upstream.calls["mem-up"] == calls
    assert second.json()["choices"][0]["text"] == first.json()["choices"][0]["text"]
    assert second.json()["object"] == "text_completion"


def test_entries_expire_after_the_ttl(gw, keys, upstream):
    _ask(gw, keys["a"], route="short", content="brief")
    assert _ask(gw, keys["a"], route="short", content="brief").headers["x-tandem-cache"] == "hit"
    time.sleep(1.3)
    calls = upstream.calls["mem-up"]
    assert _ask(gw, keys["a"], route="short", content="brief").headers["x-tandem-cache"] == "miss"
    assert upstream.calls["mem-up"] == calls + 1


def test_redis_cache_is_shared_by_gateway_processes_and_expires(upstream, redis_flush, gateway_factory):
    cfg = _config(upstream, "red", {"redis_url": redis_flush})
    cfg["auth"] = {"require_keys": False}
    one, two = gateway_factory(cfg, name="gw-red1"), gateway_factory(cfg, name="gw-red2")
    first = _ask(one, "", route="shared", content="across replicas")
    calls = upstream.calls["red-up"]
    other = _ask(two, "", route="shared", content="across replicas")
    assert first.headers["x-tandem-cache"] == "miss" and other.headers["x-tandem-cache"] == "hit"
    assert upstream.calls["red-up"] == calls
    assert other.json()["choices"][0]["message"] == first.json()["choices"][0]["message"]
    r = redis.Redis.from_url(redis_flush)
    stored = r.keys("tandem:rc:*")
    assert stored and all(0 < r.pttl(k) <= 60_000 for k in stored)
    _ask(one, "", route="short", content="fleeting")
    assert _ask(two, "", route="short", content="fleeting").headers["x-tandem-cache"] == "hit"
    time.sleep(1.3)
    assert _ask(two, "", route="short", content="fleeting").headers["x-tandem-cache"] == "miss"
    r.close()


def test_semantic_matching_serves_a_paraphrase_and_not_another_question(upstream, gateway_factory):
    cfg = _config(upstream, "sem")
    cfg["auth"] = {"require_keys": False}
    cfg["routes"] = [{"name": "semantic", "backend": "up", "cache": {"ttl_s": 60, "semantic_threshold": 0.9}}]
    g = gateway_factory(cfg, name="gw-sem")
    first = _ask(g, "", route="semantic", content="What is the capital city of France?")
    calls = upstream.calls["sem-up"]
    para = _ask(g, "", route="semantic", content="what's the capital city of France")
    assert para.headers["x-tandem-cache"] == "hit" and upstream.calls["sem-up"] == calls
    assert para.json()["choices"][0]["message"] == first.json()["choices"][0]["message"]
    other = _ask(g, "", route="semantic", content="How long should I boil an egg?")
    assert other.headers["x-tandem-cache"] == "miss" and upstream.calls["sem-up"] == calls + 1
    longer = _ask(g, "", route="semantic", content="what's the capital city of France", max_tokens=5)
    assert longer.headers["x-tandem-cache"] == "miss"  # other fields must match exactly
