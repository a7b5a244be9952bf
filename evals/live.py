"""Live eval runner: send every (route, item) through the gateway, score the answer, and keep everything.

``run_live(base_url, routes, suite_items, run_id, out_dir, concurrency)`` streams each chat completion with the
official ``openai`` client (header ``x-tandem-eval-run: RUN_ID``, so the gateway logs every request under the run),
scores the text with the item's checker, attaches the score to the logged request as feedback (label = item id:
the run is router training data), and appends one line to ``out_dir/RUN_ID/results.jsonl`` as each finishes
(format in ``evals.run_store``). At most ``concurrency`` requests are in flight; a tqdm bar shows progress and the
running accuracy. Started again with the same run id, it skips (route, item) pairs already finished without error —
so an interrupted run resumes where it stopped and failed requests are retried.

From the stream it keeps: the text, time to first token, per-chunk ``tandem.model`` (which model wrote each piece,
for collaborations) merged into ``[[model, text], ...]`` segments, and the final ``tandem`` object (request id,
decision, per-model usage, cost).

What it leaves out: starting the gateway (``evals.cli`` does for the demo), several samples per item, and judges.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from openai import APIError, AsyncOpenAI
from tqdm import tqdm

from evals import datasets
from evals.datasets import Item
from evals.run_store import append_result, done_keys, write_meta

__all__ = ["LiveSummary", "StreamResult", "merge_provenance", "run_live", "run_live_sync"]

EVAL_RUN_HEADER = "x-tandem-eval-run"


@dataclass
class LiveSummary:
    run_id: str
    run_dir: Path
    total: int  # (route, item) pairs in the run
    skipped: int  # already done before this start
    finished: int  # done now without error
    failed: int  # ended with an error this time (retried on the next start)
    seconds: float = 0.0


@dataclass
class StreamResult:
    text: str = ""
    ttft_s: float | None = None
    latency_s: float = 0.0
    tandem: dict[str, Any] | None = None
    provenance: list[list[str]] | None = None
    error: str | None = None
    pieces: list[tuple[str | None, str]] = field(default_factory=list)


def merge_provenance(pieces: Sequence[tuple[str | None, str]]) -> list[list[str]] | None:
    """``[(model, text), ...]`` per chunk → consecutive pieces of one model merged; None when no piece names a model.
    Pieces without a model keep the previous piece's model."""
    if not any(m for m, _ in pieces):
        return None
    out: list[list[str]] = []
    current: str | None = None
    for model, text in pieces:
        current = model or current
        name = current or "?"
        if out and out[-1][0] == name:
            out[-1][1] += text
        else:
            out.append([name, text])
    return out


def _extra(obj: Any, key: str) -> Any:
    extra = getattr(obj, "model_extra", None) or {}
    return extra.get(key)


async def stream_one(client: AsyncOpenAI, route: str, item: Item, max_tokens: int, temperature: float) -> StreamResult:
    """One streamed chat completion; never raises for API errors (they go into ``error``)."""
    res = StreamResult()
    t0 = time.perf_counter()
    try:
        stream = await client.chat.completions.create(
            model=route, messages=item.messages(), max_tokens=max_tokens, temperature=temperature, stream=True,
            stream_options={"include_usage": True})
        async for chunk in stream:
            tan = _extra(chunk, "tandem")
            for choice in chunk.choices or []:
                piece = choice.delta.content if choice.delta else None
                if piece:
                    if res.ttft_s is None:
                        res.ttft_s = time.perf_counter() - t0
                    ctan = _extra(choice, "tandem") or _extra(choice.delta, "tandem") or tan
                    model = ctan.get("model") if isinstance(ctan, dict) else None
                    res.pieces.append((model, piece))
            if isinstance(tan, dict) and "request_id" in tan:
                res.tandem = tan
    except APIError as e:
        body = e.body if isinstance(e.body, dict) else {}
        res.tandem = body.get("tandem") if isinstance(body.get("tandem"), dict) else res.tandem
        res.error = f"{type(e).__name__}: {e.message}"[:500]
    except (httpx.HTTPError, OSError) as e:
        res.error = f"{type(e).__name__}: {e}"[:500]
    res.latency_s = time.perf_counter() - t0
    res.text = "".join(p for _, p in res.pieces)
    res.provenance = merge_provenance(res.pieces)
    if res.error is None and res.tandem is None:
        res.error = "stream ended without the final tandem object"
    return res


def _tokens(usage: list[dict[str, Any]] | None) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for u in usage or []:
        t = out.setdefault(str(u.get("model")), {"prompt": 0, "completion": 0})
        t["prompt"] += int(u.get("prompt_tokens") or 0)
        t["completion"] += int(u.get("completion_tokens") or 0)
    return out


async def _feedback(http: httpx.AsyncClient, request_id: str, score: float, label: str) -> str | None:
    try:
        r = await http.post("feedback", json={"request_id": request_id, "score": score, "label": label[:200]})
    except httpx.HTTPError as e:
        return f"{type(e).__name__}: {e}"
    return None if r.status_code == 200 else f"HTTP {r.status_code}: {r.text[:200]}"


async def run_live(
    base_url: str,
    routes: Sequence[str],
    suite_items: Sequence[Item],
    run_id: str,
    out_dir: str | os.PathLike[str],
    concurrency: int = 4,
    api_key: str | None = None,
    *,
    max_tokens: int = 256,
    temperature: float = 0.0,
    check: Callable[[Item, str], float] = datasets.check,
    send_feedback: bool = True,
    progress: bool = True,
    request_timeout_s: float = 600.0,
    meta: dict[str, Any] | None = None,
) -> LiveSummary:
    """Run ``routes`` × ``suite_items`` through the gateway at ``base_url`` (…/v1); see the module docstring."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    run_dir = Path(out_dir).expanduser() / run_id
    suites = sorted({it.suite for it in suite_items})
    write_meta(run_dir, {"run_id": run_id, "routes": list(routes), "suite": ",".join(suites), "n": len(suite_items),
                         "gateway": base_url, "concurrency": concurrency, "max_tokens": max_tokens,
                         "temperature": temperature, **(meta or {})})
    done = done_keys(run_dir)
    todo = [(rt, it) for it in suite_items for rt in routes if (rt, it.id) not in done]
    total = len(routes) * len(suite_items)
    summary = LiveSummary(run_id, run_dir, total, total - len(todo), 0, 0)
    headers = {EVAL_RUN_HEADER: run_id}
    key = api_key or os.environ.get("TANDEM_API_KEY") or "none"
    client = AsyncOpenAI(base_url=base_url, api_key=key, default_headers=headers, max_retries=2,
                         timeout=request_timeout_s)
    http = httpx.AsyncClient(base_url=base_url.rstrip("/") + "/", headers={**headers, "authorization": f"Bearer {key}"},
                             timeout=60.0)
    queue: asyncio.Queue[tuple[str, Item]] = asyncio.Queue()
    for task in todo:
        queue.put_nowait(task)
    bar = tqdm(total=total, initial=summary.skipped, desc=f"eval {run_id}", unit="req", disable=not progress,
               dynamic_ncols=True)
    passed = [0.0, 0]
    t_start = time.perf_counter()

    async def work(route: str, item: Item) -> None:
        res = await stream_one(client, route, item, max_tokens, temperature)
        tan = res.tandem or {}
        score: float | None = None
        fb_error = None
        if res.error is None:
            score = float(await asyncio.to_thread(check, item, res.text))
            if not math.isfinite(score):
                score = 0.0
            if send_feedback and tan.get("request_id"):
                fb_error = await _feedback(http, tan["request_id"], min(max(score, 0.0), 1.0), item.id)
        row = {
            "run_id": run_id, "route": route, "item_id": item.id, "suite": item.suite, "category": item.category,
            "score": score, "cost_usd": tan.get("cost_usd"), "latency_s": round(res.latency_s, 6),
            "ttft_s": None if res.ttft_s is None else round(res.ttft_s, 6), "usage": tan.get("usage"),
            "tokens": _tokens(tan.get("usage")), "request_id": tan.get("request_id"), "decision": tan.get("decision"),
            "prompt": item.prompt, "output": res.text, "provenance": res.provenance, "error": res.error,
            "feedback_error": fb_error, "finished_at": time.time(),
        }
        append_result(run_dir, row)
        if res.error is None:
            summary.finished += 1
            passed[0] += score or 0.0
            passed[1] += 1
        else:
            summary.failed += 1
        bar.update(1)
        bar.set_postfix(acc=f"{passed[0] / max(passed[1], 1):.3f}", failed=summary.failed, refresh=False)

    async def worker() -> None:
        while True:
            try:
                route, item = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await work(route, item)

    try:
        await asyncio.gather(*(worker() for _ in range(min(concurrency, max(len(todo), 1)))))
    finally:
        bar.close()
        await client.close()
        await http.aclose()
    summary.seconds = time.perf_counter() - t_start
    return summary


def run_live_sync(*args: Any, **kwargs: Any) -> LiveSummary:
    """``run_live`` from synchronous code."""
    return asyncio.run(run_live(*args, **kwargs))
