"""Alembic environment for tandem's storage: runs on the connection ``gateway.storage.db.migrate`` hands over.

Online with ``config.attributes["connection"]`` (the normal path), online from ``sqlalchemy.url``, or offline
(``--sql``) emitting SQL for a DBA. What it leaves out: the migrations themselves (``versions/``).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from gateway.storage.tables import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from gateway.storage.db import make_engine

    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


def run_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
