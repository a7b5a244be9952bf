"""bench/replicas.py and bench/schemathesis_load.py: their pure parts (workload, statistics, SSE parsing, argument
checks, configs) against direct counts — no vLLM, no timing. ``bench/soak.py``'s two-replica config goes through
``parse_config`` here too."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from bench.replicas import (
    REPLICAS,
    Result,
    cached_share,
    gateway_config,
    kill_bodies,
    kill_report,
    parse_args,
    parse_stream,
    per_replica,
    replica_specs,
    strategy_line,
    summarize,
    workload,
)
from bench.schemathesis_load import status_class
from bench.soak import soak_config
from evals.vllm_pair import server_command
from gateway.balancer import Balancer
from gateway.config import parse_config


def test_workload_shares_prefixes_and_each_strategy_gets_its_own():
    jobs = workload("prefix", prefixes=3, per_prefix=4, unique=2, prefix_chars=300, max_tokens=8, seed=0,
                    model="prefix")
    assert len(jobs) == 14
    systems: dict[str, set[str]] = {}
    for j in jobs:
        systems.setdefault(j.group, set()).add(j.body["messages"][0]["content"])
        assert j.body["model"] == "prefix" and j.body["max_tokens"] == 8
        assert all(32 <= ord(ch) < 127 or ch == "\n" for ch in j.body["messages"][0]["content"])  # zoo alphabet
    assert [len(systems[str(i)]) for i in range(3)] == [1, 1, 1] and len(systems["unique"]) == 2
    assert all(len(s) == 300 for g in systems.values() for s in g)
    assert len({j.body["messages"][1]["content"] for j in jobs}) > 1
    # Another strategy's prefixes differ from the first character on: no shared 128-token cache block.
    other = workload("weighted", 3, 4, 2, 300, 8, 0, "weighted")
    mine = {j.body["messages"][0]["content"][:128] for j in jobs}
    assert mine.isdisjoint({j.body["messages"][0]["content"][:128] for j in other})
    assert [j.body for j in workload("prefix", 3, 4, 2, 300, 8, 0, "prefix")] == [j.body for j in jobs]


def test_a_shared_prefix_maps_to_one_replica_under_the_prefix_strategy():
    b = Balancer([(n, 1.0) for n in REPLICAS], "prefix")
    owners: dict[str, set[int]] = {}
    for j in workload("prefix", 6, 3, 0, 640, 8, 1, "prefix"):
        owners.setdefault(j.group, set()).add(b.choose(b.request_key(j.body["messages"], None))[0])
    assert all(len(s) == 1 for s in owners.values())


def test_statistics_against_a_direct_count():
    rng = random.Random(3)
    results = [Result(rng.random() > 0.1, rng.uniform(10, 500), rng.choice(REPLICAS + (None,)),
                      rng.randrange(100, 800), 0, f"r{i}", rng.random() < 0.5) for i in range(300)]
    results = [Result(r.ok, r.latency_ms, r.replica, r.prompt_tokens, rng.randrange(0, r.prompt_tokens), r.request_id,
                      r.stream, "ok" if r.ok else rng.choice(["sse_error", "truncated", "http_502"]))
               for r in results]
    ok = [r for r in results if r.ok]
    assert cached_share(results) == pytest.approx(sum(r.cached_tokens for r in ok) / sum(r.prompt_tokens for r in ok))
    assert cached_share([]) == 0.0
    split = per_replica(results)
    assert split == {n: sum(r.replica == n for r in ok) for n in REPLICAS}
    s = summarize(results)
    lat = sorted(r.latency_ms for r in ok)
    assert s["p50_ms"] == pytest.approx(float(np.percentile(lat, 50)))
    assert s["errors"] == len(results) - len(ok) and s["requests"] == len(results)
    assert set(strategy_line({"prefix": s})["prefix"]) == {"cached_share", "p50_ms", "p99_ms", "per_replica"}

    logged = [r.request_id for r in results[5:]] + ["r7"]  # five lost, one twice
    k = kill_report(results, logged, "replica-1")
    plain = [r for r in results if not r.stream]
    streams = [r for r in results if r.stream]
    assert k["nonstream_failed"] == sum(not r.ok for r in plain)
    assert k["stream_sse_errors"] == sum(r.outcome == "sse_error" for r in streams)
    assert k["stream_sse_errors_on_killed"] == sum(r.outcome == "sse_error" and r.replica == "replica-1"
                                                   for r in streams)
    assert k["streams_cut"] == sum(r.outcome in ("truncated", "http_502") for r in streams)
    assert k["log_rows_lost"] == 5 and k["log_rows_twice"] == 1


def test_parse_stream_endings():
    d = '{"tandem": {"decision": {"replica": "replica-0"}}, "usage": {"prompt_tokens": 9}}'
    assert parse_stream(f"data: {{}}\n\ndata: {d}\n\ndata: [DONE]\n\n") == (
        "ok", {"replica": "replica-0"}, {"prompt_tokens": 9})
    err = 'event: error\ndata: {"error": {"message": "x"}, "tandem": {"decision": {"replica": "replica-1"}}}\n\n'
    assert parse_stream("data: {}\n\n" + err)[:2] == ("sse_error", {"replica": "replica-1"})
    assert parse_stream("data: {}\n\n")[0] == "truncated"


def test_arguments_and_commands():
    a = parse_args(["--strategies", "prefix,weighted", "--kv-blocks", "40", "--json"])
    assert a.strategies == ["prefix", "weighted"] and a.kv_blocks == 40 and a.json
    for bad in (["--strategies", "round-robin"], ["--per-prefix", "0"], ["--prefixes", "0", "--unique", "0"]):
        with pytest.raises(SystemExit):
            parse_args(bad)
    specs = replica_specs(Path("/m"), 1024, 40)
    assert [(s.core, s.pin_all, s.name) for s in specs] == [(0, True, "zoo-large"), (1, True, "zoo-large")]
    cmd = server_command(Path("py"), specs[1], 8000)
    assert "--enable-prompt-tokens-details" in cmd and cmd[cmd.index("--block-size") + 1] == "128"
    assert cmd[cmd.index("--num-gpu-blocks-override") + 1] == "40"
    assert "--num-gpu-blocks-override" not in server_command(Path("py"), replica_specs(Path("/m"), 1024, None)[0], 1)
    bodies = kill_bodies(30, 300, 16, 0)
    assert len(bodies) == 30 and [b["stream"] for b in bodies[:4]] == [False, True, False, True]
    assert all(b["model"] == "prefix" and b["ignore_eos"] for b in bodies)


def test_configs_parse():
    class S:
        def __init__(self, port: int) -> None:
            self.base_url = f"http://127.0.0.1:{port}/v1"

    cfg = parse_config(gateway_config([S(1), S(2)], ["weighted", "prefix"]))
    assert [r.name for r in cfg.routes] == ["weighted", "prefix"]
    assert [d.backend for d in cfg.routes[1].deployments] == list(REPLICAS)
    soak = parse_config(soak_config(["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"], "least-inflight"))
    assert soak.routes[0].name == "stub" and soak.routes[0].strategy == "least-inflight"
    assert parse_config(soak_config(["http://127.0.0.1:1/v1"])).backends[0].name == "stub"


def test_status_classes():
    assert [status_class(s) for s in (200, 201, 302, 400, 429, 500, 503, 99, 600)] == [
        "2xx", "2xx", "3xx", "4xx", "4xx", "5xx", "5xx", "other", "other"]
