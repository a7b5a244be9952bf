"""Engines and migrations on SQLite and a real PostgreSQL server."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from gateway.storage.db import (
    MIGRATIONS_DIR,
    alembic_config,
    current_revision,
    make_engine,
    migrate,
    normalize_url,
    ping,
)
from gateway.storage.tables import metadata
from tests.fixtures.postgres_server import free_port
from tests.gateway.storage import Db, db, migrated  # noqa: F401


def test_normalize_url_points_postgres_at_psycopg3_and_expands_home(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert normalize_url("postgres://u:p@h:5/d").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql://u@h/d").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg://u@h/d").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:///~/x/t.db").database == str(tmp_path / "x" / "t.db")
    assert normalize_url("sqlite://").database is None


def test_sqlite_engine_creates_parent_dirs_and_sets_pragmas(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    e = make_engine("sqlite:///~/deep/er/tandem.db", busy_timeout_ms=1234)
    try:
        with e.connect() as c:
            assert c.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert c.execute(text("PRAGMA busy_timeout")).scalar() == 1234
            assert c.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert (tmp_path / "deep" / "er" / "tandem.db").exists()
    finally:
        e.dispose()


def test_migrations_are_shipped_in_the_package_with_one_head() -> None:
    assert (MIGRATIONS_DIR / "env.py").exists()
    assert not (MIGRATIONS_DIR / "alembic.ini").exists()
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert heads == ["0004"]


def test_migrate_creates_the_schema_of_tables_py(db: Db) -> None:  # noqa: F811
    e = db.engine()
    assert current_revision(e) is None
    migrate(e)
    migrate(e)  # idempotent
    assert current_revision(e) == "0004"
    names = set(inspect(e).get_table_names())
    assert {"requests", "feedback", "api_keys", "alembic_version"} <= names
    cols = {c["name"] for c in inspect(e).get_columns("requests")}
    assert {"id", "created_at", "key_id", "route", "model_chosen", "decision", "usage", "cost_usd", "latency_ms",
            "ttft_ms", "status", "http_status", "error", "stream", "prompt", "response", "eval_run"} <= cols
    indexed = {tuple(ix["column_names"]) for ix in inspect(e).get_indexes("requests")}
    assert ("eval_run",) in indexed and ("created_at",) in indexed
    with e.connect() as c:  # the migration script and tables.py describe the same schema
        diff = compare_metadata(MigrationContext.configure(c, opts={"compare_type": True}), metadata)
    assert diff == []


def test_migrate_from_a_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a' / 'b.db'}"
    migrate(url)
    e = make_engine(url)
    try:
        assert current_revision(e) == "0004"
    finally:
        e.dispose()


def test_concurrent_migrations_do_not_collide(db: Db) -> None:  # noqa: F811
    errors: list[BaseException] = []

    def run() -> None:
        try:
            migrate(db.url)
        except BaseException as ex:  # noqa: BLE001
            errors.append(ex)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert current_revision(db.engine()) == "0004"


def test_ping(db: Db) -> None:  # noqa: F811
    assert ping(db.engine())
    dead = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x", connect_args={"connect_timeout": 2})
    try:
        assert not ping(dead)
    finally:
        dead.dispose()
