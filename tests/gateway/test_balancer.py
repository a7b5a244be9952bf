"""Deployment strategies (gateway/balancer.py) as pure functions: each against a reference or a property —
weights followed over many seeded draws, the idle replica and the fastest one picked, prefix affinity that is a
function of the request (same in another process), spreads keys, moves only ~1/n of them when a replica is added,
and diverts a hot prefix at its load bound; a held stream gives its in-flight count back however it ends."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from gateway.balancer import (
    DEFAULT_LOAD_FACTOR,
    LATENCY_ALPHA,
    Balancer,
    HeldStream,
    ReplicaState,
    hash64,
    load_bound,
    pick_latency,
    pick_least_inflight,
    pick_prefix,
    pick_weighted,
    prompt_prefix,
    rendezvous_order,
)

REPO = Path(__file__).resolve().parents[2]


def _reps(*weights: float, names: str = "abcdefghij") -> list[ReplicaState]:
    return [ReplicaState.of(f"qwen-{names[i]}", w) for i, w in enumerate(weights)]


# ---------------------------------------------------------------------------------------------------- weighted


def test_weighted_matches_the_cumulative_weights_reference():
    reps = _reps(2.0, 1.0, 0.5, 3.0)
    cum = list(itertools.accumulate(r.weight for r in reps))
    for k in range(1000):
        u = k / 1000
        assert pick_weighted(reps, (), u) == bisect.bisect_right(cum, u * cum[-1])


def test_weighted_follows_the_weights_over_many_seeded_draws():
    reps = _reps(2.0, 1.0, 1.0)
    rng = random.Random(7)
    n = 40_000
    counts = Counter(pick_weighted(reps, (), rng.random()) for _ in range(n))
    for i, share in enumerate([0.5, 0.25, 0.25]):
        assert counts[i] / n == pytest.approx(share, abs=0.01)
    # excluded replicas are never drawn; the rest keep their relative weights
    counts = Counter(pick_weighted(reps, {0}, rng.random()) for _ in range(n))
    assert set(counts) == {1, 2} and counts[1] / n == pytest.approx(0.5, abs=0.015)
    assert pick_weighted(reps, {0, 1, 2}, 0.3) == -1


def test_seeded_balancers_draw_the_same_sequence():
    a = Balancer([("x", 1.0), ("y", 1.0), ("z", 2.0)], "weighted", seed=3)
    b = Balancer([("x", 1.0), ("y", 1.0), ("z", 2.0)], "weighted", seed=3)
    seq_a = [a.choose(0) for _ in range(50)]
    assert seq_a == [b.choose(0) for _ in range(50)]
    assert len({i for i, _ in seq_a}) == 3 and seq_a[0][1].startswith("weighted random (weight ")


# ---------------------------------------------------------------------------------------------------- least in flight


def test_least_inflight_picks_the_idle_one_and_breaks_ties_by_weight():
    reps = _reps(1.0, 1.0, 1.0)
    for r, n in zip(reps, (3, 0, 2), strict=True):
        r.inflight = n
    assert all(pick_least_inflight(reps, (), u / 10) == 1 for u in range(10))
    assert pick_least_inflight(reps, {1}, 0.5) == 2  # the idle one excluded (failed): the next fewest
    tied = _reps(3.0, 1.0)  # both idle: weighted random between them
    rng = random.Random(1)
    counts = Counter(pick_least_inflight(tied, (), rng.random()) for _ in range(20_000))
    assert counts[0] / 20_000 == pytest.approx(0.75, abs=0.015)
    assert pick_least_inflight(tied, {0, 1}, 0.1) == -1


# ---------------------------------------------------------------------------------------------------- latency


def test_latency_tries_unmeasured_replicas_first_then_the_fastest():
    reps = _reps(1.0, 1.0, 1.0)
    reps[0].observe(0.050)
    reps[2].observe(0.010)
    assert all(pick_latency(reps, (), u / 10) == 1 for u in range(10))  # never measured
    reps[1].observe(0.030)
    assert pick_latency(reps, (), 0.9) == 2  # the fastest
    assert pick_latency(reps, {2}, 0.9) == 1
    assert pick_latency(reps, {0, 1, 2}, 0.9) == -1


def test_latency_is_an_ewma_of_the_measurements():
    r = ReplicaState.of("a")
    xs = [0.1, 0.3, 0.2, 0.05, 0.4]
    for x in xs:
        r.observe(x)
    ref = xs[0]
    for x in xs[1:]:
        ref = (1 - LATENCY_ALPHA) * ref + LATENCY_ALPHA * x
    assert r.latency_s == pytest.approx(ref)
    reps = [ReplicaState.of("slow"), ReplicaState.of("fast")]
    for _ in range(5):
        reps[0].observe(0.2)
        reps[1].observe(0.02)
    reps[1].observe(0.5)  # one slow answer does not make the fast one the slower at once
    assert pick_latency(reps, (), 0.0) == 1


# ---------------------------------------------------------------------------------------------------- prefix


def _keys(n: int) -> list[int]:
    return [hash64(f"system: you are assistant #{i}\x1euser: ...") for i in range(n)]


def _owners(reps: list[ReplicaState], keys: list[int]) -> list[str]:
    return [reps[pick_prefix(reps, (), k)[0]].name for k in keys]


def test_rendezvous_order_matches_the_reference_formula():
    reps = _reps(1.0, 2.0, 0.5, 1.0)
    for key in _keys(200):
        def ref_score(r: ReplicaState, key: int = key) -> float:
            z = key ^ r.key
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 % 2**64
            z = (z ^ (z >> 27)) * 0x94D049BB133111EB % 2**64
            z ^= z >> 31
            return r.weight / -math.log(((z >> 11) + 0.5) / 2**53)

        assert rendezvous_order(reps, key, range(4)) == sorted(range(4), key=lambda i: -ref_score(reps[i]))


def test_same_prefix_goes_to_the_same_replica_and_different_prefixes_spread():
    reps = _reps(1.0, 1.0, 1.0, 1.0)
    keys = _keys(8000)
    first = _owners(reps, keys)
    assert first == _owners(_reps(1.0, 1.0, 1.0, 1.0), keys)  # another balancer (gateway) with the same names
    shares = Counter(first)
    assert all(c / len(keys) == pytest.approx(0.25, abs=0.02) for c in shares.values()) and len(shares) == 4
    weighted = Counter(_owners(_reps(2.0, 1.0), keys))  # weights set the share of keys owned
    assert weighted["qwen-a"] / len(keys) == pytest.approx(2 / 3, abs=0.02)


def test_prefix_choice_is_the_same_in_another_process():
    """Affinity holds across gateway replicas: the key and ranking never use Python's per-process salted hash."""
    texts = [f"shared few-shot prefix {i}" for i in range(50)]
    code = ("from gateway.balancer import Balancer\n"
            "b = Balancer([('qwen-a', 1.0), ('qwen-b', 1.0), ('qwen-c', 1.0)], 'prefix')\n"
            f"for t in {texts!r}:\n"
            "    print(b.choose(b.request_key([{'role': 'user', 'content': t}], None))[0])\n")
    here = Balancer([("qwen-a", 1.0), ("qwen-b", 1.0), ("qwen-c", 1.0)], "prefix")
    mine = [str(here.choose(here.request_key([{"role": "user", "content": t}], None))[0]) for t in texts]
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True,
                             env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"}, timeout=60)
        assert out.stdout.split() == mine
    assert len(set(mine)) == 3


def test_adding_a_replica_moves_about_one_nth_of_the_keys_all_to_it():
    keys = _keys(10_000)
    four = _owners(_reps(1.0, 1.0, 1.0, 1.0), keys)
    five = _owners(_reps(1.0, 1.0, 1.0, 1.0, 1.0), keys)
    moved = [(a, b) for a, b in zip(four, five, strict=True) if a != b]
    assert len(moved) / len(keys) == pytest.approx(1 / 5, abs=0.02)
    assert {b for _, b in moved} == {"qwen-e"}  # nothing moves between the old replicas
    # removing one (excluding it) moves only its own keys
    reps = _reps(1.0, 1.0, 1.0, 1.0)
    without_c = [reps[pick_prefix(reps, {2}, k)[0]].name for k in keys]
    assert all(a == b for a, b in zip(four, without_c, strict=True) if a != "qwen-c")


def test_load_bound_matches_its_formula():
    reps = _reps(1.0, 1.0, 2.0)
    for r, n in zip(reps, (4, 1, 3), strict=True):
        r.inflight = n
    for i in range(3):
        assert load_bound(reps, i, [0, 1, 2], 1.25) == math.ceil(1.25 * 9 * reps[i].weight / 4)
    assert load_bound(reps, 0, [0, 1], 1.25) == math.ceil(1.25 * 6 / 2)
    idle = _reps(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    assert all(load_bound(idle, i, range(10), DEFAULT_LOAD_FACTOR) >= 1 for i in range(10))  # idle ones take it


def test_bounded_load_diverts_a_hot_prefix():
    reps = _reps(1.0, 1.0, 1.0, 1.0)
    hot = _keys(1)[0]
    owner = pick_prefix(reps, (), hot)[0]
    ring = rendezvous_order(reps, hot, range(4))
    assert ring[0] == owner
    placed = []
    for t in range(200):  # 200 concurrent requests of one prefix, none finished
        i, o = pick_prefix(reps, (), hot)
        assert o == owner
        assert reps[i].inflight + 1 <= math.ceil(DEFAULT_LOAD_FACTOR * (t + 1) / 4)  # never above its bound
        reps[i].inflight += 1
        placed.append(i)
    # the owner first; with four replicas and one request in flight it is at its bound: the next on the ring
    assert placed[:2] == ring[:2]
    assert max(r.inflight for r in reps) <= math.ceil(DEFAULT_LOAD_FACTOR * 200 / 4)
    assert min(r.inflight for r in reps) > 0  # spread over every replica
    assert reps[owner].inflight == max(r.inflight for r in reps)  # the owner keeps the most
    # once the load drains, the prefix goes back to its owner
    for r in reps:
        r.inflight = 0
    assert pick_prefix(reps, (), hot) == (owner, owner)
    # the diverted request goes to the next replica on the key's ranking
    reps[owner].inflight = 5
    assert pick_prefix(reps, (), hot)[0] == ring[1]


def test_balancer_reasons_say_why():
    b = Balancer([("qwen-a", 1.0), ("qwen-b", 1.0)], "prefix")
    key = b.request_key([{"role": "user", "content": "hello"}], None)
    i, why = b.choose(key)
    assert why == "prefix owner"
    b.replicas[i].inflight = 3
    j, why = b.choose(key)
    assert j != i and why.startswith(f"prefix owner {b.replicas[i].name} at its load bound (3 in flight)")
    assert b.choose(key, {0, 1}) is None
    lat = Balancer([("a", 1.0), ("b", 1.0)], "latency", seed=0)
    assert lat.choose(0)[1] == "not measured yet"
    lat.replicas[0].observe(0.012)
    lat.replicas[1].observe(0.030)
    assert lat.choose(0) == (0, "lowest recent latency (12.0 ms)")
    least = Balancer([("a", 1.0), ("b", 1.0)], "least-inflight", seed=0)
    least.replicas[0].inflight = 2
    assert least.choose(0) == (1, "fewest in flight (0)")
    assert Balancer([("a", 1.0)], "weighted").request_key([{"role": "user", "content": "x"}], None) == 0
    with pytest.raises(ValueError, match="unknown strategy"):
        Balancer([("a", 1.0)], "roundrobin")  # type: ignore[arg-type]


def test_prompt_prefix_is_roles_and_texts_in_order_cut_at_n():
    msgs = [{"role": "system", "content": "S" * 10},
            {"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "image_url"}, {"text": "there"}]},
            {"role": "user", "content": "Z" * 1000}]
    full = "system\x1f" + "S" * 10 + "\x1euser\x1fhi there\x1euser\x1f" + "Z" * 1000 + "\x1e"
    for n in (1, 17, 30, 100, 5000):
        assert prompt_prefix(msgs, None, n) == full[:n]
    assert prompt_prefix(None, "abcdef", 4) == "abcd"
    assert prompt_prefix(None, [1, 22, 333], 5) == "1,22,"
    # a shared prefix longer than n: one key whatever follows; shorter: the rest counts
    a = [{"role": "system", "content": "F" * 300}, {"role": "user", "content": "q1"}]
    b = [{"role": "system", "content": "F" * 300}, {"role": "user", "content": "q2"}]
    assert prompt_prefix(a, None, 256) == prompt_prefix(b, None, 256)
    assert prompt_prefix(a, None, 400) != prompt_prefix(b, None, 400)


# ---------------------------------------------------------------------------------------------------- held streams


async def _events(n: int, fail_at: int | None = None):
    for i in range(n):
        if i == fail_at:
            raise RuntimeError("broke")
        yield i


def test_a_held_stream_gives_its_inflight_count_back_however_it_ends():
    async def run() -> None:
        st = ReplicaState.of("a")

        def held(gen) -> HeldStream:
            st.inflight += 1
            return HeldStream(gen, st)

        s = held(_events(3))
        assert [x async for x in s] == [0, 1, 2] and st.inflight == 0  # ran to its end
        s = held(_events(3, fail_at=1))
        with pytest.raises(RuntimeError):
            async for _ in s:
                pass
        assert st.inflight == 0  # failed midway
        s = held(_events(3))
        assert await s.__anext__() == 0 and st.inflight == 1
        await s.aclose()
        await s.aclose()
        assert st.inflight == 0  # closed early, once
        s = held(_events(3))
        await s.aclose()
        assert st.inflight == 0  # closed before it started
        s = held(_events(3))
        del s
        assert st.inflight == 0  # dropped unclosed

    asyncio.run(run())
