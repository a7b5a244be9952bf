"""HTTP load generator for chat-completion benchmarks: raw asyncio keep-alive client in worker processes.

The client is an ``asyncio.Protocol`` over uvloop (when installed) with httptools parsing the responses; each
request is prebuilt bytes, so the client spends a few microseconds a request. (A client built on httpx or aiohttp
costs far more a request in Python; that cost would be measured as latency and would cap throughput below what a
gateway can do.) ``install_uvloop`` is the one place that switches the event loop, for the workers and the stub.
Workers run in their own processes (``multiprocessing`` spawn) so that they share no GIL with what they measure.

Two kinds of job:

- **latency**: ``n`` requests on ``concurrency`` keep-alive connections (1: strictly sequential); every request's
  total time and time to first body byte (for SSE: the first chunk) is returned.
- **throughput**: ``concurrency`` connections (split over the workers) send back-to-back requests for ``duration``
  seconds; completed requests / elapsed seconds is the rate, with every request's latency under load.

A request counts as failed when its status is not 200, its body does not look like a chat completion (non-stream:
``"choices"`` in the body; stream: ``[DONE]`` at its end), the connection breaks or it times out.
:func:`percentile` and :func:`summarize` are the pure statistics used on the samples.

What it leaves out: HTTPS, HTTP/2, redirects, proxies, open-loop (fixed arrival rate) load; ``wrk`` is not used.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, cast
from urllib.parse import urlsplit

import httptools
import orjson

# ---------------------------------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100) with linear interpolation between closest ranks (numpy's default method)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(values_ms: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99, p99.9 (``p999``), mean, min and max of latencies in milliseconds (NaN for all when there are
    none)."""
    if not values_ms:
        nan = float("nan")
        return {"p50": nan, "p90": nan, "p99": nan, "p999": nan, "mean": nan, "min": nan, "max": nan}
    return {
        "p50": percentile(values_ms, 50),
        "p90": percentile(values_ms, 90),
        "p99": percentile(values_ms, 99),
        "p999": percentile(values_ms, 99.9),
        "mean": sum(values_ms) / len(values_ms),
        "min": min(values_ms),
        "max": max(values_ms),
    }


# ---------------------------------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Target:
    """Where chat completions are sent: host, port, the full path, the model name and an optional bearer key."""

    host: str
    port: int
    path: str
    model: str
    api_key: str | None = None


def parse_target(base_url: str, model: str, api_key: str | None = None) -> Target:
    """``http://host:port`` or ``http://host:port/v1`` (OpenAI base URL) → the chat-completions target."""
    u = urlsplit(base_url)
    if u.scheme != "http" or not u.hostname:
        raise ValueError(f"need an http:// URL, got {base_url!r}")
    path = u.path.rstrip("/")
    if not path.endswith("/v1"):
        path += "/v1"
    return Target(u.hostname, u.port or 80, path + "/chat/completions", model, api_key)


def build_request(target: Target, stream: bool, max_tokens: int, prompt: str = "Say hello.") -> bytes:
    """The raw HTTP/1.1 request bytes of one chat completion (keep-alive)."""
    body: dict[str, Any] = {
        "model": target.model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    data = orjson.dumps(body)
    auth = f"Authorization: Bearer {target.api_key}\r\n" if target.api_key else ""
    head = (
        f"POST {target.path} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\nUser-Agent: tandem-bench\r\n"
        f"Accept: */*\r\nContent-Type: application/json\r\n{auth}Content-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


class RequestFailed(Exception):
    """A request that did not produce a valid answer."""


class _ClientConn(asyncio.Protocol):
    """One keep-alive client connection; ``send`` one request at a time."""

    def __init__(self, stream: bool, timeout_s: float) -> None:
        self.stream = stream
        self.timeout_s = timeout_s
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[float, float]] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.t_first = 0.0
        self.body: list[bytes] = []
        self.alive = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.alive = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        self._fail(RequestFailed(f"connection lost: {exc or 'closed by peer'}"))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(RequestFailed(f"bad HTTP response: {e}"))
            self.close()

    def on_body(self, body: bytes) -> None:
        if not self.t_first:
            self.t_first = time.perf_counter()
        self.body.append(body)

    def on_message_complete(self) -> None:
        t_done = time.perf_counter()
        status = self.parser.get_status_code()
        if not self.parser.should_keep_alive():
            self.close()
        w = self.waiter
        if w is None or w.done():
            return
        self._cancel_timer()
        if status != 200:
            w.set_exception(RequestFailed(f"HTTP {status}: {b''.join(self.body)[:200]!r}"))
        elif self.stream and not b"".join(self.body[-3:]).rstrip().endswith(b"[DONE]"):
            w.set_exception(RequestFailed("stream did not end with data: [DONE]"))
        elif not self.stream and b'"choices"' not in b"".join(self.body):
            w.set_exception(RequestFailed(f"not a chat completion: {b''.join(self.body)[:200]!r}"))
        else:
            w.set_result((self.t_first or t_done, t_done))

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _fail(self, exc: Exception) -> None:
        self._cancel_timer()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    def _timeout(self) -> None:
        self._fail(RequestFailed(f"timed out after {self.timeout_s} s"))
        self.close()

    def close(self) -> None:
        self.alive = False
        if self.transport is not None:
            self.transport.close()

    async def send(self, raw: bytes) -> tuple[float, float, float]:
        """Send one request; return (start, first body byte, done) perf_counter times, or raise RequestFailed."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        self.body = []
        self.t_first = 0.0
        self.timer = loop.call_later(self.timeout_s, self._timeout)
        t0 = time.perf_counter()
        self.transport.write(raw)
        t_first, t_done = await self.waiter
        return t0, t_first, t_done


class _Client:
    """A connection that reopens itself after a failure."""

    def __init__(self, target: Target, stream: bool, timeout_s: float) -> None:
        self.target = target
        self.stream = stream
        self.timeout_s = timeout_s
        self.conn: _ClientConn | None = None

    async def send(self, raw: bytes) -> tuple[float, float, float]:
        if self.conn is None or not self.conn.alive:
            loop = asyncio.get_running_loop()
            try:
                _, proto = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: _ClientConn(self.stream, self.timeout_s), self.target.host, self.target.port
                    ),
                    self.timeout_s,
                )
            except (OSError, asyncio.TimeoutError) as e:
                raise RequestFailed(f"connect to {self.target.host}:{self.target.port}: {e}") from e
            self.conn = proto
        return await self.conn.send(raw)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


# ---------------------------------------------------------------------------------------------------- jobs


@dataclass
class Job:
    """One measurement: latency (``n`` requests) or throughput (``duration_s`` seconds)."""

    kind: str  # "latency" | "throughput"
    target: Target
    stream: bool
    concurrency: int
    max_tokens: int = 16
    n: int = 0
    duration_s: float = 0.0
    timeout_s: float = 30.0


@dataclass
class JobResult:
    """What a job measured: per-request latencies and first-byte times (ms), completions, failures, elapsed s."""

    latencies_ms: list[float] = field(default_factory=list)
    ttfb_ms: list[float] = field(default_factory=list)
    ok: int = 0
    errors: int = 0
    first_error: str | None = None
    elapsed_s: float = 0.0

    def merge(self, other: JobResult) -> JobResult:
        return JobResult(
            self.latencies_ms + other.latencies_ms,
            self.ttfb_ms + other.ttfb_ms,
            self.ok + other.ok,
            self.errors + other.errors,
            self.first_error or other.first_error,
            max(self.elapsed_s, other.elapsed_s),
        )


async def run_job(job: Job) -> JobResult:
    """Run one job in the current event loop."""
    raw = build_request(job.target, job.stream, job.max_tokens)
    res = JobResult()
    clients = [_Client(job.target, job.stream, job.timeout_s) for _ in range(max(1, job.concurrency))]
    remaining = job.n
    deadline = 0.0
    consecutive_errors = 0

    def more() -> bool:
        nonlocal remaining
        if job.kind == "latency":
            remaining -= 1
            return remaining >= 0
        return time.perf_counter() < deadline

    async def loop_one(c: _Client) -> None:
        nonlocal consecutive_errors
        while more():
            try:
                t0, t_first, t_done = await c.send(raw)
            except RequestFailed as e:
                res.errors += 1
                consecutive_errors += 1
                res.first_error = res.first_error or str(e)
                if consecutive_errors > 50:  # the server is down or refuses everything: stop early
                    return
                await asyncio.sleep(0.01)
                continue
            consecutive_errors = 0
            res.ok += 1
            res.latencies_ms.append((t_done - t0) * 1000.0)
            res.ttfb_ms.append((t_first - t0) * 1000.0)

    start = time.perf_counter()
    deadline = start + job.duration_s
    try:
        await asyncio.gather(*(loop_one(c) for c in clients))
    finally:
        for c in clients:
            c.close()
    res.elapsed_s = time.perf_counter() - start
    return res


def install_uvloop() -> bool:
    """Use uvloop's event loop when it is installed; say whether it is."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def _worker_main(pipe: Connection, use_uvloop: bool) -> None:
    """Worker process: run jobs received on the pipe until it sends None."""
    if use_uvloop:
        install_uvloop()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    while True:
        job = pipe.recv()
        if job is None:
            break
        try:
            pipe.send(loop.run_until_complete(run_job(job)))
        except Exception as e:  # report, do not die silently
            pipe.send(JobResult(errors=1, first_error=f"worker crashed: {e!r}"))
    loop.close()


class LoadgenPool:
    """Worker processes that run jobs; latency jobs go to one worker, throughput jobs are split over all."""

    def __init__(self, workers: int = 1, use_uvloop: bool = True) -> None:
        ctx = mp.get_context("spawn")
        self._pipes: list[Connection] = []
        self._procs: list[Any] = []
        for _ in range(max(1, workers)):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker_main, args=(child, use_uvloop), daemon=True)
            p.start()
            child.close()
            self._pipes.append(parent)
            self._procs.append(p)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def _collect(self, pipes: list[Connection], limit_s: float) -> JobResult:
        out = JobResult()
        for pipe in pipes:
            if not pipe.poll(limit_s):
                raise TimeoutError(f"load generator gave no result within {limit_s:.0f} s")
            try:
                out = out.merge(pipe.recv())
            except (EOFError, OSError) as e:
                raise RuntimeError(f"load generator worker died: {e!r}") from e
        return out

    def latency(self, job: Job) -> JobResult:
        self._pipes[0].send(job)
        return self._collect(self._pipes[:1], job.n * job.timeout_s + 60)

    def throughput(self, job: Job) -> JobResult:
        k = min(len(self._pipes), job.concurrency)
        per = [job.concurrency // k + (1 if i < job.concurrency % k else 0) for i in range(k)]
        for pipe, c in zip(self._pipes[:k], per, strict=True):
            pipe.send(Job(**{**job.__dict__, "concurrency": c}))
        return self._collect(self._pipes[:k], job.duration_s + job.timeout_s + 60)

    def close(self) -> None:
        for pipe in self._pipes:
            try:
                pipe.send(None)
            except OSError:
                pass
        for p in self._procs:
            p.join(5)
            if p.is_alive():
                p.kill()

    def __enter__(self) -> LoadgenPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
