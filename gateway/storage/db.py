"""Engines and migrations: one SQLAlchemy engine per database URL, and Alembic ``upgrade head`` from code.

SQLite (the default) gets its parent folder created, ``~`` expanded, WAL journaling (``synchronous=NORMAL``: safe
against a process crash, the last commits may be lost on power loss), a busy timeout and foreign keys on; Postgres URLs (``postgres://``, ``postgresql://``) are pointed at psycopg 3. The migration scripts live inside
this package (``gateway/storage/migrations``), so no ``alembic.ini`` is needed at run time.

What it leaves out: the schema itself (``tables`` and the migration scripts) and what is written (``request_log``,
``keys``).
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any 64-bit number: replicas starting together take this Postgres advisory lock so only one migrates at a time.
_MIGRATION_LOCK_ID = 0x74616E64656D  # "tandem"


def normalize_url(url: str | URL) -> URL:
    """The URL to connect to: psycopg 3 for Postgres, ``~`` expanded in SQLite file paths."""
    u = make_url(url) if isinstance(url, str) else url
    if u.drivername in ("postgres", "postgresql"):
        u = u.set(drivername="postgresql+psycopg")
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:" and not u.database.startswith(
        "file:"
    ):
        u = u.set(database=os.path.expanduser(u.database))
    return u


def make_engine(url: str | URL, *, busy_timeout_ms: int = 5000, **kwargs: Any) -> Engine:
    """An engine for ``url`` with a pre-ping pool; SQLite files get WAL, ``busy_timeout_ms`` and foreign keys."""
    u = normalize_url(url)
    sqlite = u.get_backend_name() == "sqlite"
    if sqlite and u.database and u.database != ":memory:" and not u.database.startswith("file:"):
        Path(u.database).parent.mkdir(parents=True, exist_ok=True)
    kwargs.setdefault("pool_pre_ping", True)
    engine = create_engine(u, **kwargs)
    if sqlite:
        memory = not u.database or u.database == ":memory:"

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            try:
                # busy_timeout first: switching a new file to WAL needs the write lock, which another process or
                # thread may hold at that moment (concurrent first migrations).
                cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
                if not memory:
                    _set_wal(cur)
                    cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA foreign_keys=ON")
            finally:
                cur.close()

    return engine


def _set_wal(cur: Any, attempts: int = 50) -> None:
    """Switch a SQLite file to WAL. The switch needs an exclusive lock and can answer "database is locked" at once,
    without waiting on the busy timeout, while another connection is creating the same new file: retry briefly."""
    for attempt in range(attempts):
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or attempt == attempts - 1:
                raise
            time.sleep(0.1)


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic config built in code, pointing at the migrations shipped in this package."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        u = normalize_url(url)
        cfg.set_main_option("sqlalchemy.url", u.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def migrate(url_or_engine: str | URL | Engine, revision: str = "head") -> None:
    """Bring the database to ``revision`` (default: the newest). Safe to call on every start and from replicas."""
    engine = url_or_engine if isinstance(url_or_engine, Engine) else make_engine(url_or_engine)
    try:
        cfg = alembic_config()
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_ID})
            elif conn.dialect.name == "sqlite":  # take the write lock before alembic reads its version table
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        if engine is not url_or_engine:
            engine.dispose()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None: never migrated)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def ping(engine: Engine) -> bool:
    """True when the database answers ``SELECT 1``."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
