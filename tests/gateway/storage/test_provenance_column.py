"""``requests.provenance`` on SQLite and a real PostgreSQL server: the runs of a logged response written by the
background writer (the SQLite executemany fast path included), read back as written, dropped with the prompt when
prompts are not logged, kept through the spool; and migration 0004 adding the column to a log that already holds
rows of revision 0003 (and taking it away again)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from sqlalchemy import Engine, MetaData, Table, insert, inspect, select

from gateway.storage import log_stats
from gateway.storage.db import alembic_config, current_revision, migrate
from gateway.storage.request_log import LogRow, RequestLog, write_rows
from gateway.storage.tables import requests
from tests.gateway.storage import Db, db, migrated  # noqa: F401

RUNS = [{"model": "small", "text": "SELECT <b>"}, {"model": "large", "text": " count(*)\n\u2603 \U0001f600"},
        {"model": "small", "text": " FROM t;"}]


def _row(i: int, runs: list[dict[str, str]] | None = RUNS, **kw: object) -> LogRow:
    response = "".join(r["text"] for r in runs) if runs else f"plain answer {i}"
    base: dict[str, object] = dict(id=f"req-{i}", route="duo", model_chosen="duo", created_at=1000.0 + i,
                                   usage=[{"model": "small", "prompt_tokens": 3, "completion_tokens": 4}],
                                   prompt=[{"role": "user", "content": f"q{i}"}], response=response, provenance=runs)
    base.update(kw)
    return LogRow(**base)  # type: ignore[arg-type]


def _provenance(engine: Engine) -> dict[str, object]:
    with engine.connect() as c:
        return {r.id: r.provenance for r in c.execute(select(requests.c.id, requests.c.provenance))}


def _sql_nulls(engine: Engine) -> int:
    with engine.connect() as c:  # SQL NULL, not the JSON text 'null'
        return c.exec_driver_sql("select count(*) from requests where provenance is null").one()[0]


def test_runs_round_trip_through_the_writer(db: Db, migrated: Engine, tmp_path: Path) -> None:  # noqa: F811
    nul = [{"model": "small", "text": "a\x00b"}, {"model": "large", "text": "c"}]

    async def main() -> RequestLog:
        log = RequestLog(migrated, tmp_path / "spool", max_batch=50)
        await log.start()
        for i in range(20):  # one batch: the SQLite fast path writes them in one executemany
            log.submit(_row(i, RUNS if i % 2 else None))
        log.submit(_row(20, nul, response="abc"))
        await log.flush()
        await log.close()
        return log

    log = asyncio.run(main())
    assert log.stats.written == 21 and log.stats.rejected == 0
    got = _provenance(migrated)
    assert {k: v for k, v in got.items() if k != "req-20"} == {f"req-{i}": RUNS if i % 2 else None for i in range(20)}
    assert got["req-20"] == [{"model": "small", "text": "ab"}, {"model": "large", "text": "c"}]  # NUL dropped
    assert _sql_nulls(migrated) == 10
    one = asyncio.run(log.get("req-1"))
    assert one is not None and one["provenance"] == RUNS
    assert "".join(r["text"] for r in one["provenance"]) == one["response"]
    page = log_stats.recent(migrated, limit=5)  # what /ui/api/requests reads
    assert [r["id"] for r in page] == ["req-20", "req-19", "req-18", "req-17", "req-16"]
    assert page[1]["provenance"] == RUNS and page[2]["provenance"] is None


def test_runs_are_not_logged_when_prompts_are_not(migrated: Engine, tmp_path: Path) -> None:  # noqa: F811
    async def main() -> None:
        log = RequestLog(migrated, tmp_path / "spool", log_prompts=False)
        await log.start()
        log.submit(_row(1))
        await log.close()

    asyncio.run(main())
    with migrated.connect() as c:
        r = c.execute(select(requests.c.response, requests.c.provenance, requests.c.usage)).one()
    assert r.response is None and r.provenance is None and r.usage is not None


def test_sqlite_fast_path_writes_runs_like_sqlalchemys_insert(tmp_path: Path) -> None:
    from gateway.storage.db import make_engine

    params = [_row(1).to_params(), _row(2, None).to_params(), _row(3, [{"model": "m", "text": "\"q\" \\ \n"}],
                                                                     response="\"q\" \\ \n").to_params()]
    fast, ref = make_engine(f"sqlite:///{tmp_path / 'fast.db'}"), make_engine(f"sqlite:///{tmp_path / 'ref.db'}")
    try:
        for e in (fast, ref):
            migrate(e)
        write_rows(fast, params)
        with ref.begin() as c:
            c.execute(insert(requests), params)
        assert _provenance(fast) == _provenance(ref) and len(_provenance(fast)) == 3
        assert _sql_nulls(fast) == _sql_nulls(ref) == 1
    finally:
        fast.dispose()
        ref.dispose()


def test_spooled_rows_keep_their_runs(db: Db, migrated: Engine, tmp_path: Path) -> None:  # noqa: F811
    spool = tmp_path / "spool"

    async def during_outage() -> RequestLog:
        log = RequestLog(migrated, spool, retry_delays_s=(0.05,), replay_interval_s=60)
        await log.start()
        for i in range(5):
            log.submit(_row(i))
        await log.flush()
        await log.close()
        return log

    db.down()
    first = asyncio.run(during_outage())
    assert first.stats.spooled == 5 and first.stats.written == 0
    db.up()
    later = RequestLog(migrated, spool, stale_part_s=0.0)
    assert asyncio.run(later.replay_spool()) == 5
    assert _provenance(migrated) == {f"req-{i}": RUNS for i in range(5)}


def _alembic(engine: Engine, fn: str, revision: str) -> None:
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, fn)(cfg, revision)


def test_migration_0004_adds_the_column_to_a_log_with_rows(db: Db) -> None:  # noqa: F811
    e = db.engine()
    migrate(e, "0003")
    assert current_revision(e) == "0003"
    assert "provenance" not in {c["name"] for c in inspect(e).get_columns("requests")}
    with e.begin() as c:  # rows written by a gateway of revision 0003, through that schema as the database has it
        old = Table("requests", MetaData(), autoload_with=c)
        old_rows = [{k: v for k, v in _row(i).to_params().items() if k != "provenance"} for i in range(3)]
        c.execute(insert(old), old_rows)

    migrate(e)
    assert current_revision(e) == "0004"
    with e.connect() as c:
        kept = [dict(r._mapping) for r in c.execute(select(requests).order_by(requests.c.id))]
    assert [{k: v for k, v in r.items() if k != "provenance"} for r in kept] == old_rows
    assert all(r["provenance"] is None for r in kept)
    write_rows(e, [_row(9).to_params()])  # the new column takes runs
    assert _provenance(e)["req-9"] == RUNS

    _alembic(e, "downgrade", "0003")  # and back: the rows stay, the column goes
    assert current_revision(e) == "0003"
    assert "provenance" not in {c["name"] for c in inspect(e).get_columns("requests")}
    with e.connect() as c:
        assert c.exec_driver_sql("select count(*) from requests").one()[0] == 4
    migrate(e)
    assert current_revision(e) == "0004" and _sql_nulls(e) == 4
