"""The request log: one SQL row per request, written in the background so a request never waits on the database.

``RequestLog.submit`` puts a :class:`LogRow` on an in-memory queue and returns at once (it never raises). A
background asyncio task takes batches (up to ``max_batch`` rows) and writes each in ONE transaction inside a worker
thread. A failure the database may recover from (connection refused, locked file, server gone) is retried with
backoff; a batch that still cannot be written goes to a JSONL spool file in ``spool_dir`` and is replayed at start
and every ``replay_interval_s``. Every insert ignores ids already present (``ON CONFLICT DO NOTHING`` on SQLite and
Postgres), so a replay after an unacknowledged commit writes no duplicates. A row the database rejects for its
content is isolated row by row and kept in ``rejected.jsonl`` instead of blocking the others.

Also here: feedback (an outcome score in [0, 1] attached to a request, only by the key that made it or by an
admin), reading one request back, and ``records`` - requests joined with their latest feedback, for router
training.

What it leaves out: rows still in memory when the process is killed (they are lost; ``close`` flushes them), the
schema (``tables``), and HTTP. A spool ``.part`` file idle for ``stale_part_s`` is taken over by whichever replica
replays next.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import JSON, Engine, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from gateway.errors import InvalidRequest
from gateway.storage.tables import feedback, requests

log = logging.getLogger("tandem.storage")

# --------------------------------------------------------------------------------------------------- rows


def clean_text(s: str | None) -> str | None:
    """Text a database accepts: Postgres refuses NUL characters, so they are dropped."""
    return None if s is None else str(s).replace("\x00", "")


def json_safe(obj: Any) -> Any:
    """``obj`` as plain JSON both databases accept: non-finite floats become None, NULs are dropped from strings,
    tuples become lists, keys become strings, and anything else becomes its ``str``."""
    if obj is None or isinstance(obj, bool | int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, str):
        return obj.replace("\x00", "")
    if isinstance(obj, dict):
        return {clean_text(str(k)): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return clean_text(str(obj))


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


@dataclass
class LogRow:
    """One request as logged. ``usage`` is ``gateway.usage.Usage.to_list()``; ``decision`` the router's decision;
    ``provenance`` which model wrote which part of ``response`` (None: ``model_chosen`` wrote it all), kept and dropped
    with the prompt and response text."""

    id: str
    route: str | None = None
    created_at: float = field(default_factory=time.time)
    key_id: str | None = None
    model_chosen: str | None = None
    decision: dict[str, Any] | None = None
    usage: list[dict[str, Any]] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float | None = None
    ttft_ms: float | None = None
    status: str = "ok"
    http_status: int | None = 200
    error: str | None = None
    stream: bool = False
    prompt: Any = None
    response: str | None = None
    eval_run: str | None = None
    provenance: list[dict[str, str]] | None = None  # the response's [{"model", "text"}] runs (gateway.provenance)

    def to_params(self) -> dict[str, Any]:
        """Column values ready to insert (JSON made safe, NULs dropped, non-finite numbers nulled)."""
        return {
            "id": str(self.id),
            "created_at": float(self.created_at),
            "key_id": self.key_id,
            "route": clean_text(self.route),
            "model_chosen": clean_text(self.model_chosen),
            "decision": json_safe(self.decision),
            "usage": json_safe(self.usage),
            "prompt_tokens": int(self.prompt_tokens or 0),
            "completion_tokens": int(self.completion_tokens or 0),
            "cost_usd": _finite(self.cost_usd) or 0.0,
            "latency_ms": _finite(self.latency_ms),
            "ttft_ms": _finite(self.ttft_ms),
            "status": self.status,
            "http_status": self.http_status,
            "error": clean_text(self.error),
            "stream": bool(self.stream),
            "prompt": json_safe(self.prompt),
            "response": clean_text(self.response),
            "eval_run": self.eval_run,
            "provenance": json_safe(self.provenance),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LogRow:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def is_transient(exc: BaseException) -> bool:
    """True for failures the database may recover from (down, locked, connection lost, schema not migrated yet);
    False for rows the database refuses for their content."""
    if isinstance(exc, OperationalError | InterfaceError | ProgrammingError | DisconnectionError | PoolTimeout | OSError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def insert_ignoring_duplicates(dialect_name: str) -> Any:
    """An INSERT into ``requests`` that skips ids already there (None: the dialect has no such clause)."""
    if dialect_name == "sqlite":
        return sqlite.insert(requests).on_conflict_do_nothing(index_elements=["id"])
    if dialect_name == "postgresql":
        return postgresql.insert(requests).on_conflict_do_nothing(index_elements=["id"])
    return None


_COLUMNS = tuple(c.name for c in requests.c)
_JSON_COLUMNS = frozenset(c.name for c in requests.c if isinstance(c.type, JSON))
# One statement for a whole SQLite batch, run by the driver itself: SQLAlchemy's per-row parameter processing
# and json.dumps held the GIL twice as long per row, stalling the event loop while the writer thread ran
# (measured by `python -m bench.gateway_overhead`, levels at 1 and 16 connections).
_SQLITE_INSERT = (f"INSERT INTO requests ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)}) "
                  "ON CONFLICT (id) DO NOTHING")


def _sqlite_tuples(params: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Rows as the driver's positional parameters, JSON columns serialised with orjson (None stays NULL)."""
    out = []
    for p in params:
        out.append(tuple(
            (None if p.get(c) is None else orjson.dumps(p[c]).decode()) if c in _JSON_COLUMNS else p.get(c)
            for c in _COLUMNS))
    return out


def write_rows(engine: Engine, params: Sequence[dict[str, Any]]) -> None:
    """Insert ``params`` in one transaction, skipping ids already present."""
    if not params:
        return
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            try:
                rows = _sqlite_tuples(params)
            except (TypeError, orjson.JSONEncodeError):  # e.g. an integer beyond 64 bits: the general path below
                rows = None
            if rows is not None:
                conn.exec_driver_sql(_SQLITE_INSERT, rows)
                return
        stmt = insert_ignoring_duplicates(conn.dialect.name)
        if stmt is None:  # other databases: look up which ids exist, insert the rest
            ids = [p["id"] for p in params]
            have = set(conn.execute(select(requests.c.id).where(requests.c.id.in_(ids))).scalars())
            params = [p for p in params if p["id"] not in have]
            stmt = insert(requests)
        if params:
            conn.execute(stmt, list(params))


@dataclass
class LogStats:
    """Counters since start (for metrics and tests)."""

    written: int = 0
    retries: int = 0
    spooled: int = 0
    replayed: int = 0
    rejected: int = 0


# --------------------------------------------------------------------------------------------------- the log


class RequestLog:
    """Background writer of :class:`LogRow` s with retry, spool and replay; plus feedback and reads."""

    def __init__(self, engine: Engine, spool_dir: str | os.PathLike[str], flush_interval_s: float = 0.05,
                 max_batch: int = 500, retry_delays_s: Sequence[float] = (0.1, 0.5, 2.0),
                 replay_interval_s: float = 5.0, log_prompts: bool = True, stale_part_s: float = 60.0):
        self.engine = engine
        self.spool_dir = Path(os.path.expanduser(os.fspath(spool_dir)))
        self.flush_interval_s = flush_interval_s
        self.max_batch = max_batch
        self.retry_delays_s = tuple(retry_delays_s)
        self.replay_interval_s = replay_interval_s
        self.log_prompts = log_prompts
        self.stale_part_s = stale_part_s
        self.stats = LogStats()
        self._queue: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._submitted = 0
        self._done = 0
        self._pending: dict[str, int] = {}
        self._part = self.spool_dir / f"spool-{os.getpid()}-{uuid.uuid4().hex}.part"
        self._down_until = 0.0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._progress = asyncio.Condition()
        self._spool_lock = asyncio.Lock()
        self._file_lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # asyncio primitives belong to one loop
            self._loop = loop
            self._wake, self._progress, self._spool_lock = asyncio.Event(), asyncio.Condition(), asyncio.Lock()

    async def start(self) -> None:
        """Start the background writer; it first replays anything left in the spool."""
        self._bind_loop()
        if self._task is not None and not self._task.done():
            return
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._stopping = self._closed = False
        self._task = asyncio.create_task(self._run(), name="tandem-request-log")

    async def close(self) -> None:
        """Stop the writer after writing (or spooling) every row submitted so far."""
        self._bind_loop()
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._drain()
        self._closed = True

    async def _run(self) -> None:
        next_replay = 0.0  # replay at once on start
        while not self._stopping:
            try:
                if time.monotonic() >= next_replay:
                    next_replay = time.monotonic() + self.replay_interval_s
                    if self.spool_files(include_parts=True):
                        await self.replay_spool()
                try:
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
                except asyncio.TimeoutError:
                    pass
                self._wake.clear()
                await self._drain()
            except Exception:  # the writer must outlive any surprise
                log.exception("request log writer: unexpected error")
                await asyncio.sleep(self.flush_interval_s)

    # ------------------------------------------------------------------ submit / flush

    def submit(self, row: LogRow) -> None:
        """Queue ``row`` for writing. Never blocks on the database and never raises."""
        try:
            if not self.log_prompts:
                row = replace(row, prompt=None, response=None, provenance=None)
            params = row.to_params()  # fail here, on this row only, rather than inside a batch
        except Exception as e:
            log.exception("request log: unusable row %r", getattr(row, "id", row))
            try:
                self._reject({"id": str(getattr(row, "id", None)), "repr": repr(row)[:10000]}, e)
            except Exception:
                pass
            return
        try:
            if self._closed:  # after close: straight to the spool (a small local append)
                self._spool_sync([params])
                return
            with self._lock:
                self._queue.append(params)
                self._submitted += 1
                self._pending[params["id"]] = self._pending.get(params["id"], 0) + 1
        except Exception:
            log.exception("request log: could not queue row %s", params["id"])

    @property
    def queued(self) -> int:
        """Rows submitted but not yet written or spooled."""
        return self._submitted - self._done

    async def flush(self) -> None:
        """Wait until every row submitted so far is written or spooled."""
        self._bind_loop()
        target = self._submitted
        if self._task is None or self._task.done():
            await self._drain()
            return
        async with self._progress:
            while self._done < target and self._task is not None and not self._task.done():
                self._wake.set()
                try:
                    await asyncio.wait_for(self._progress.wait(), max(self.flush_interval_s, 0.01) * 4)
                except asyncio.TimeoutError:
                    pass
        if self._done < target:  # the writer stopped meanwhile
            await self._drain()

    async def _drain(self) -> None:
        while True:
            with self._lock:
                batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            if not batch:
                return
            try:
                await self._write_or_spool(batch)
            finally:
                with self._lock:
                    self._done += len(batch)
                    for p in batch:
                        n = self._pending.get(p["id"], 0) - 1
                        if n > 0:
                            self._pending[p["id"]] = n
                        else:
                            self._pending.pop(p["id"], None)
                async with self._progress:
                    self._progress.notify_all()

    async def _write_or_spool(self, params: list[dict[str, Any]]) -> None:
        if time.monotonic() < self._down_until:  # known outage: spool at once, replay will catch up
            await self._spool(params)
            return
        for attempt, delay in enumerate((0.0, *self.retry_delays_s)):
            if delay:
                await asyncio.sleep(delay)
            try:
                await asyncio.to_thread(write_rows, self.engine, params)
                self.stats.written += len(params)
                self._down_until = 0.0
                return
            except Exception as e:
                if not is_transient(e):
                    await asyncio.to_thread(self._write_one_by_one, params)
                    return
                if attempt < len(self.retry_delays_s):
                    self.stats.retries += 1
                log.warning("request log: write of %d rows failed (attempt %d): %s", len(params), attempt + 1,
                            str(e).splitlines()[0] if str(e) else type(e).__name__)
        self._down_until = time.monotonic() + self.replay_interval_s
        await self._spool(params)

    def _write_one_by_one(self, params: list[dict[str, Any]]) -> None:
        """Isolate rows the database refuses: write each alone, reject the bad, spool the rest on an outage."""
        for i, p in enumerate(params):
            try:
                write_rows(self.engine, [p])
                self.stats.written += 1
            except Exception as e:
                if is_transient(e):
                    self._spool_sync(params[i:])
                    return
                self._reject(p, e)

    # ------------------------------------------------------------------ spool

    def spool_files(self, include_parts: bool = False) -> list[Path]:
        """Spool files waiting for replay, oldest first (``.part``: still being appended to)."""
        if not self.spool_dir.is_dir():
            return []
        pats = ["spool-*.jsonl", "spool-*.part"] if include_parts else ["spool-*.jsonl"]
        files = [p for pat in pats for p in self.spool_dir.glob(pat)]
        return sorted(files, key=lambda p: (p.stat().st_mtime if p.exists() else 0.0, p.name))

    async def _spool(self, params: list[dict[str, Any]]) -> None:
        await asyncio.to_thread(self._spool_sync, params)

    def _spool_sync(self, params: Sequence[dict[str, Any]]) -> None:
        data = "".join(json.dumps(p, allow_nan=False) + "\n" for p in params)
        with self._file_lock:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
            with open(self._part, "a", encoding="utf-8") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        self.stats.spooled += len(params)
        log.warning("request log: %d rows spooled to %s", len(params), self._part)

    def _reject(self, p: dict[str, Any], e: BaseException) -> None:
        log.error("request log: row %s rejected by the database: %s", p.get("id"), e)
        with self._file_lock:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
            with open(self.spool_dir / "rejected.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps({"row": p, "error": str(e)[:2000]}, allow_nan=False) + "\n")
        self.stats.rejected += 1

    async def replay_spool(self) -> int:
        """Write spooled rows to the database; returns how many rows were replayed (0 while it is still down)."""
        self._bind_loop()
        async with self._spool_lock:
            return await asyncio.to_thread(self._replay_sync)

    def _seal_parts(self) -> None:
        """Turn our own ``.part`` and other replicas' stale ones into ``.jsonl`` files ready for replay."""
        now = time.time()
        with self._file_lock:
            for part in self.spool_dir.glob("spool-*.part"):
                try:
                    if part == self._part or now - part.stat().st_mtime > self.stale_part_s:
                        # a fresh name each time: sealing must never overwrite an earlier sealed file
                        part.rename(part.with_name(f"{part.stem}-{time.time_ns()}-{uuid.uuid4().hex[:8]}.jsonl"))
                except FileNotFoundError:
                    continue

    def _replay_sync(self) -> int:
        if not self.spool_dir.is_dir():
            return 0
        self._seal_parts()
        total = 0
        for path in self.spool_files():
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except FileNotFoundError:  # another replica replayed it
                continue
            params = []
            for n, line in enumerate(lines):
                try:
                    params.append(LogRow.from_dict(json.loads(line)).to_params())
                except (ValueError, TypeError) as e:  # a line cut short by a crash
                    log.error("request log: skipping unreadable spool line %s:%d: %s", path, n + 1, e)
            for i in range(0, len(params), self.max_batch):
                chunk = params[i:i + self.max_batch]
                try:
                    write_rows(self.engine, chunk)
                except Exception as e:
                    if is_transient(e):
                        self._down_until = time.monotonic() + self.replay_interval_s
                        log.warning("request log: replay of %s deferred: %s", path.name, str(e).splitlines()[0])
                        self.stats.replayed += total
                        return total  # keep the file; rows already written are skipped next time
                    self._write_one_by_one(chunk)
                total += len(chunk)
            path.unlink(missing_ok=True)
        self.stats.replayed += total
        if total:
            self._down_until = 0.0
            log.info("request log: replayed %d spooled rows", total)
        return total

    # ------------------------------------------------------------------ feedback and reads

    async def _settle(self, request_id: str) -> None:
        if request_id in self._pending:  # its row is still queued: write it first
            await self.flush()

    async def add_feedback(self, request_id: str, score: float, label: str | None = None,
                           key_id: str | None = None) -> bool:
        """Attach an outcome to a request. False when it does not exist or belongs to another key
        (``key_id=None``: admin, any request). Raises InvalidRequest for a score outside [0, 1]."""
        try:
            s = float(score)
        except (TypeError, ValueError):
            raise InvalidRequest("score must be a number in [0, 1]", param="score") from None
        if not (0.0 <= s <= 1.0):
            raise InvalidRequest(f"score must be in [0, 1], got {score}", param="score")
        if label is not None and len(label) > 200:
            raise InvalidRequest("label must be at most 200 characters", param="label")
        await self._settle(request_id)

        def _do() -> bool:
            with self.engine.begin() as conn:
                row = conn.execute(select(requests.c.key_id).where(requests.c.id == request_id)).first()
                if row is None or (key_id is not None and row.key_id != key_id):
                    return False
                conn.execute(insert(feedback).values(request_id=request_id, score=s, label=clean_text(label),
                                                     key_id=key_id, created_at=time.time()))
                return True

        return await asyncio.to_thread(_do)

    async def get(self, request_id: str) -> dict[str, Any] | None:
        """One request as a dict, with ``feedback``: its feedback rows, oldest first."""
        await self._settle(request_id)

        def _do() -> dict[str, Any] | None:
            with self.engine.connect() as conn:
                row = conn.execute(select(requests).where(requests.c.id == request_id)).first()
                if row is None:
                    return None
                out = dict(row._mapping)
                fb = conn.execute(select(feedback.c.score, feedback.c.label, feedback.c.key_id,
                                         feedback.c.created_at)
                                  .where(feedback.c.request_id == request_id).order_by(feedback.c.id))
                out["feedback"] = [dict(r._mapping) for r in fb]
                return out

        return await asyncio.to_thread(_do)

    def records(self, since: float | datetime | None = None, route: str | None = None,
                eval_run: str | None = None, with_feedback_only: bool = False) -> Iterator[dict[str, Any]]:
        """Requests (oldest first) with their latest feedback as ``feedback_score``, ``feedback_label`` and
        ``feedback_at`` (None without feedback). Synchronous and streamed: for training, not the event loop."""
        latest = (select(feedback.c.request_id, func.max(feedback.c.id).label("fid"))
                  .group_by(feedback.c.request_id).subquery("latest"))
        fb = feedback.alias("fb")
        q = (select(requests, fb.c.score.label("feedback_score"), fb.c.label.label("feedback_label"),
                    fb.c.created_at.label("feedback_at"))
             .select_from(requests.outerjoin(latest, latest.c.request_id == requests.c.id)
                          .outerjoin(fb, fb.c.id == latest.c.fid))
             .order_by(requests.c.created_at, requests.c.id))
        if since is not None:
            q = q.where(requests.c.created_at >= (since.timestamp() if isinstance(since, datetime) else since))
        if route is not None:
            q = q.where(requests.c.route == route)
        if eval_run is not None:
            q = q.where(requests.c.eval_run == eval_run)
        if with_feedback_only:
            q = q.where(fb.c.id.is_not(None))
        with self.engine.connect() as conn:
            for row in conn.execution_options(yield_per=1000).execute(q):
                yield dict(row._mapping)


__all__ = ["LogRow", "LogStats", "RequestLog", "clean_text", "insert_ignoring_duplicates", "is_transient",
           "json_safe", "write_rows"]
