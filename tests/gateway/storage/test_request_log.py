"""The request log on SQLite and a real PostgreSQL server: every row written exactly once, through outages too."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from gateway.errors import InvalidRequest
from gateway.storage.request_log import LogRow, RequestLog, json_safe
from gateway.storage.tables import feedback, requests
from gateway.usage import Price, Usage
from tests.gateway.storage import Db, db, migrated  # noqa: F401


def count(engine: Engine) -> tuple[int, int]:
    """(rows, distinct ids) in ``requests``."""
    with engine.connect() as c:
        return (c.execute(select(func.count()).select_from(requests)).scalar_one(),
                c.execute(select(func.count(requests.c.id.distinct()))).scalar_one())


def row(i: int | str, **kw: object) -> LogRow:
    u = Usage()
    u.add("small", Price.per_million(0.1, 0.4), prompt_tokens=10, completion_tokens=3, seconds=0.01)
    base: dict[str, object] = dict(id=f"req-{i}", route="auto", model_chosen="small", key_id="k1",
                                   decision={"route": "small", "scores": {"small": 0.7}, "reason": "short"},
                                   usage=u.to_list(), prompt_tokens=10, completion_tokens=3, cost_usd=u.cost_usd,
                                   latency_ms=12.5, ttft_ms=3.0, prompt=[{"role": "user", "content": f"q{i}"}],
                                   response=f"a{i}")
    base.update(kw)
    return LogRow(**base)  # type: ignore[arg-type]


async def wait_for(pred, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    t = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < t, "condition not reached in time"
        await asyncio.sleep(0.05)


def test_json_safe() -> None:
    assert json_safe({"a": (1, 2.5, float("nan")), 3: "x\x00y", "b": None, "c": True}) == {
        "a": [1, 2.5, None], "3": "xy", "b": None, "c": True}
    assert json_safe([float("inf"), -float("inf"), Path("/p")]) == [None, None, "/p"]
    p = LogRow(id="r", cost_usd=math.nan, latency_ms=math.inf, error="e\x00").to_params()
    assert (p["cost_usd"], p["latency_ms"], p["error"]) == (0.0, None, "e")
    json.dumps(p, allow_nan=False)  # spoolable as strict JSON
    assert LogRow.from_dict({**p, "unknown": 1}).to_params() == p


def test_thousand_concurrent_rows_written_exactly_once(db: Db, migrated: Engine, tmp_path: Path) -> None:  # noqa: F811
    async def main() -> RequestLog:
        log = RequestLog(migrated, tmp_path / "spool", max_batch=200)
        await log.start()

        async def client(c: int) -> None:
            for j in range(20):
                log.submit(row(f"{c}-{j}", key_id=f"k{c % 3}"))
                await asyncio.sleep(0)

        def thread_client(c: int) -> None:  # submit is safe from other threads too
            for j in range(20):
                log.submit(row(f"t{c}-{j}"))

        threads = [threading.Thread(target=thread_client, args=(c,)) for c in range(10)]
        for t in threads:
            t.start()
        await asyncio.gather(*(client(c) for c in range(40)))
        for t in threads:
            t.join()
        log.submit(row("0-0"))  # a duplicate id is ignored, not an error
        await log.flush()
        assert log.queued == 0
        await log.close()
        return log

    log = asyncio.run(main())
    assert count(migrated) == (1000, 1000)
    assert log.stats.spooled == 0 and log.stats.rejected == 0 and log.stats.written == 1001
    assert log.spool_files(include_parts=True) == []
    got = asyncio.run(log.get("req-7-3"))
    assert got is not None
    assert got["usage"] == row(0).usage and got["decision"]["scores"] == {"small": 0.7}
    assert got["prompt"] == [{"role": "user", "content": "q7-3"}] and got["response"] == "a7-3"
    assert got["key_id"] == "k1" and got["status"] == "ok" and got["stream"] is False and got["feedback"] == []


def test_hiccup_is_retried_without_spooling(db: Db, migrated: Engine, tmp_path: Path) -> None:  # noqa: F811
    async def main() -> RequestLog:
        log = RequestLog(migrated, tmp_path / "spool", retry_delays_s=(0.2, 0.5, 1.0, 2.0, 4.0))
        await log.start()
        db.down()
        for i in range(50):
            log.submit(row(i))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(db.up)
        await log.flush()
        await log.close()
        return log

    log = asyncio.run(main())
    assert log.stats.retries >= 1
    assert log.stats.spooled == 0
    assert count(migrated) == (50, 50)


def test_outage_spools_rows_and_replays_them_once(db: Db, migrated: Engine, tmp_path: Path) -> None:  # noqa: F811
    spool = tmp_path / "spool"

    async def during_outage() -> RequestLog:
        log = RequestLog(migrated, spool, retry_delays_s=(0.05, 0.05), replay_interval_s=0.3)
        await log.start()
        for i in range(150):
            log.submit(row(i))
        await log.flush()
        assert log.stats.spooled == 150 and log.spool_files(include_parts=True)
        for i in range(150, 300):  # still down: spooled without waiting for retries
            log.submit(row(i))
        await log.flush()
        await log.close()
        log.submit(row(300))  # after close: straight to the spool
        return log

    db.down()
    first = asyncio.run(during_outage())
    assert first.stats.spooled == 301 and first.stats.written == 0
    lines = sum(len(p.read_text().splitlines()) for p in first.spool_files(include_parts=True))
    assert lines == 301
    db.up()
    assert count(migrated) == (0, 0)

    async def after_outage() -> RequestLog:
        # a new process: replays the spool at start, then keeps writing; an overlapping live row is not duplicated
        log = RequestLog(migrated, spool, replay_interval_s=0.2, stale_part_s=0.0)
        log.submit(row(5))
        log.submit(row(400))
        await log.start()
        await wait_for(lambda: not log.spool_files(include_parts=True))
        await log.flush()
        await log.close()
        return log

    second = asyncio.run(after_outage())
    assert second.stats.replayed == 301
    assert count(migrated) == (302, 302)
    assert asyncio.run(second.replay_spool()) == 0
    assert count(migrated) == (302, 302)


def test_outage_mid_run_recovers_in_the_same_process(db: Db, migrated: Engine, tmp_path: Path) -> None:  # noqa: F811
    async def main() -> RequestLog:
        log = RequestLog(migrated, tmp_path / "spool", retry_delays_s=(0.05,), replay_interval_s=0.3)
        await log.start()
        for i in range(100):
            log.submit(row(i))
        await log.flush()
        await asyncio.to_thread(db.down)
        for i in range(100, 200):
            log.submit(row(i))
        await log.flush()
        assert log.stats.spooled == 100
        await asyncio.to_thread(db.up)
        for i in range(200, 300):
            log.submit(row(i))
        await wait_for(lambda: count(migrated)[0] == 300 and not log.spool_files(include_parts=True))
        await log.close()
        return log

    log = asyncio.run(main())
    assert count(migrated) == (300, 300)
    # rows that arrive while the database is known to be down go straight to the spool, so >= 100 were replayed
    assert log.stats.replayed == log.stats.spooled >= 100
    assert log.stats.written + log.stats.replayed == 300


def test_a_row_the_database_refuses_does_not_block_the_batch(migrated: Engine, tmp_path: Path) -> None:  # noqa: F811
    async def main() -> RequestLog:
        log = RequestLog(migrated, tmp_path / "spool")
        for i in range(10):
            log.submit(row(i))
        log.submit(row("bad", prompt_tokens=2**70))  # out of range for an integer column
        log.submit(None)  # type: ignore[arg-type]  # not even a row: kept aside, never raised
        await log.start()
        await log.flush()
        await log.close()
        return log

    log = asyncio.run(main())
    assert count(migrated) == (10, 10)
    assert log.stats.rejected == 2 and log.stats.spooled == 0
    rejected = [json.loads(x) for x in (tmp_path / "spool" / "rejected.jsonl").read_text().splitlines()]
    assert {r["row"]["id"] for r in rejected} == {"req-bad", "None"}


def test_feedback_ownership_and_latest_wins(migrated: Engine, tmp_path: Path) -> None:  # noqa: F811
    async def main() -> RequestLog:
        log = RequestLog(migrated, tmp_path / "spool")
        await log.start()
        log.submit(row("a", key_id="ka", route="auto", created_at=100.0))
        log.submit(row("b", key_id="kb", route="large", created_at=200.0))
        log.submit(row("anon", key_id=None, route="auto", created_at=300.0))
        # feedback right after submit: the row is written first
        assert await log.add_feedback("req-a", 0.2, "wrong", key_id="ka") is True
        assert await log.add_feedback("req-a", 0.9, "right", key_id="ka") is True
        assert await log.add_feedback("req-a", 1.0, key_id="kb") is False  # another key's request
        assert await log.add_feedback("req-anon", 1.0, key_id="kb") is False
        assert await log.add_feedback("req-b", 0.0, key_id=None) is True  # admin
        assert await log.add_feedback("req-missing", 0.5, key_id=None) is False
        for bad in (1.5, -0.1, float("nan"), "x"):
            with pytest.raises(InvalidRequest):
                await log.add_feedback("req-a", bad, key_id="ka")  # type: ignore[arg-type]
        got = await log.get("req-a")
        assert got is not None and [f["score"] for f in got["feedback"]] == [0.2, 0.9]
        assert await log.get("req-missing") is None
        await log.close()
        return log

    log = asyncio.run(main())
    with migrated.connect() as c:
        assert c.execute(select(func.count()).select_from(feedback)).scalar_one() == 3
    recs = {r["id"]: r for r in log.records()}
    assert [r["id"] for r in log.records()] == ["req-a", "req-b", "req-anon"]
    assert (recs["req-a"]["feedback_score"], recs["req-a"]["feedback_label"]) == (0.9, "right")
    assert recs["req-b"]["feedback_score"] == 0.0 and recs["req-anon"]["feedback_score"] is None
    assert [r["id"] for r in log.records(route="auto")] == ["req-a", "req-anon"]
    assert [r["id"] for r in log.records(since=150.0)] == ["req-b", "req-anon"]
    assert [r["id"] for r in log.records(with_feedback_only=True)] == ["req-a", "req-b"]


def test_prompt_logging_off_and_eval_run(migrated: Engine, tmp_path: Path) -> None:  # noqa: F811
    async def main() -> RequestLog:
        log = RequestLog(migrated, tmp_path / "spool", log_prompts=False)
        await log.start()
        log.submit(row(1, eval_run="run-1"))
        log.submit(row(2, status="error", http_status=502, error="upstream down", stream=True))
        await log.close()
        return log

    log = asyncio.run(main())
    recs = {r["id"]: r for r in log.records()}
    assert all(r["prompt"] is None and r["response"] is None for r in recs.values())
    assert recs["req-2"]["status"] == "error" and recs["req-2"]["http_status"] == 502 and recs["req-2"]["stream"]
    assert [r["id"] for r in log.records(eval_run="run-1")] == ["req-1"]


def test_sqlite_batch_insert_reads_back_like_sqlalchemys_insert(tmp_path: Path) -> None:
    """The SQLite fast path (driver-level executemany, orjson) against SQLAlchemy's own insert as the reference."""
    from sqlalchemy import insert

    from gateway.storage.db import make_engine, migrate
    from gateway.storage.request_log import write_rows

    rows = [row(1), row(2, decision=None, usage=None, prompt=None, response=None, stream=True, ttft_ms=None),
            row(3, prompt=[{"role": "user", "content": "héllo \u2603 \"q\" \\ \n"}], decision={"n": [1, 2.5, None]},
                key_id=None, error="boom", http_status=502, status="error", eval_run="run-1")]
    params = [r.to_params() for r in rows]
    fast, ref = make_engine(f"sqlite:///{tmp_path / 'fast.db'}"), make_engine(f"sqlite:///{tmp_path / 'ref.db'}")
    for e in (fast, ref):
        migrate(e)
    write_rows(fast, params)
    write_rows(fast, params[:1])  # an id already there is skipped, not an error
    with ref.begin() as c:
        c.execute(insert(requests), params)

    def read(e: Engine) -> list[dict[str, object]]:
        with e.connect() as c:
            return [dict(r._mapping) for r in c.execute(select(requests).order_by(requests.c.id))]

    def nulls(e: Engine) -> tuple[int, int]:
        with e.connect() as c:  # SQL NULL, not the JSON text 'null'
            return c.exec_driver_sql("select count(*) from requests where decision is null").one()[0], \
                c.exec_driver_sql("select count(*) from requests where prompt is null").one()[0]

    assert read(fast) == read(ref) and len(read(fast)) == 3
    assert nulls(fast) == nulls(ref) == (1, 1)
    fast.dispose()
    ref.dispose()
