"""Tests of gateway.storage; the fixtures here run each test on SQLite and on a real PostgreSQL server.

Test modules import ``db`` (and ``migrated``) from here: ``db`` is a fresh, empty database of one kind with
``down()`` / ``up()`` to take it away and bring it back (SQLite: an exclusive lock held by another connection;
Postgres: the server stopped and restarted).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import Engine

from gateway.storage.db import make_engine, migrate


@dataclass
class Db:
    kind: str
    url: str
    down: Callable[[], None]
    up: Callable[[], None]
    engines: list[Engine] = field(default_factory=list)

    def engine(self, **kw: object) -> Engine:
        if self.kind == "sqlite":
            kw.setdefault("busy_timeout_ms", 50)
        e = make_engine(self.url, **kw)  # type: ignore[arg-type]
        self.engines.append(e)
        return e


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    if request.param == "sqlite":
        path = tmp_path / "db" / "tandem.db"
        holder: dict[str, sqlite3.Connection] = {}

        def down() -> None:
            c = sqlite3.connect(path, isolation_level=None, timeout=5, check_same_thread=False)
            c.execute("BEGIN EXCLUSIVE")
            holder["c"] = c

        def up() -> None:
            c = holder.pop("c", None)
            if c is not None:
                c.execute("ROLLBACK")
                c.close()

        d = Db("sqlite", f"sqlite:///{path}", down, up)
    else:
        server = request.getfixturevalue("postgres_server")
        d = Db("postgres", server.new_database(), server.stop, server.start)
        up = server.start
    try:
        yield d
    finally:
        if d.kind == "sqlite":
            d.up()
        elif not server.is_running():
            up()
        for e in d.engines:
            e.dispose()


@pytest.fixture
def migrated(db: Db) -> Engine:
    e = db.engine()
    migrate(e)
    return e
