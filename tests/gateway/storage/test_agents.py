"""AgentStore on a migrated SQLite file: ownership rules for listing and deleting, soft deletes."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.storage.agents import AgentStore
from gateway.storage.db import make_engine, migrate
from gateway.storage.tables import agents


@pytest.fixture
def store(tmp_path: Path):
    e = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    migrate(e)
    yield AgentStore(e)
    e.dispose()


def names(xs) -> list[str]:
    return [x.name for x in xs]


def test_keys_see_their_own_and_global_agents_admin_sees_all(store: AgentStore) -> None:
    g = store.create("g", "global agent", "r1", None)
    a = store.create("a", "A's agent", "r2", "key_a")
    store.create("b", "B's agent", "r3", "key_b")
    assert names(store.list("key_a")) == ["g", "a"]
    assert names(store.list("key_b")) == ["g", "b"]
    assert names(store.list(None)) == ["g"]
    assert names(store.list(None, admin=True)) == ["g", "a", "b"]
    assert store.get(a.id, "key_b") is None and store.get(a.id, "key_a") == a
    assert store.get(g.id, "key_b") == g and g.to_json()["owner"] == "global" and a.to_json()["owner"] == "key"


def test_delete_follows_ownership_and_is_soft(store: AgentStore) -> None:
    g = store.create("g", "global agent", "r1", None)
    a = store.create("a", "A's agent", "r2", "key_a")
    assert store.delete(a.id, "key_b") == "not_found"  # invisible to B: B cannot tell it exists
    assert store.delete(g.id, "key_a") == "forbidden"  # visible, not owned
    assert store.delete(a.id, "key_a") == "deleted"
    assert store.delete(a.id, "key_a") == "not_found"
    assert names(store.list("key_a")) == ["g"]
    assert store.delete(g.id, None, admin=True) == "deleted"
    assert store.list(None, admin=True) == []
    with store.engine.connect() as c:  # rows stay, marked deleted, so logged decisions keep their meaning
        assert sorted(tuple(r) for r in c.execute(select(agents.c.name, agents.c.deleted))) == [
            ("a", True), ("g", True)]
