"""TCAR agents in the ``agents`` table: create, list and delete with ownership rules.

An agent is a route (the one that answers for it) with a name and a natural-language description. It belongs to the
key that created it (``key_id``), or to nobody (``key_id`` NULL: a global agent, created by the admin). A key sees
its own agents and the global ones and deletes only its own; the admin sees and deletes every agent. Deleting is
soft (``deleted``), so request-log decisions that name an agent id keep meaning something.

What it leaves out: checking that the route exists and who the caller is (``gateway.agents_api``), routing
(``gateway.tcar_route``). The methods are synchronous: call them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Engine, insert, or_, select, update

from gateway.storage.tables import agents

DeleteOutcome = Literal["deleted", "not_found", "forbidden"]


@dataclass(frozen=True)
class Agent:
    """One stored agent."""

    id: str
    name: str
    description: str
    route: str
    key_id: str | None
    created_at: float

    @classmethod
    def from_row(cls, row: Any) -> Agent:
        m = row._mapping
        return cls(m["id"], m["name"], m["description"], m["route"], m["key_id"], m["created_at"])

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "object": "agent", "name": self.name, "description": self.description,
                "route": self.route, "owner": "global" if self.key_id is None else "key", "key_id": self.key_id,
                "created_at": self.created_at}


class AgentStore:
    """Agents in a migrated database."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def create(self, name: str, description: str, route: str, key_id: str | None) -> Agent:
        """Store a new agent owned by ``key_id`` (None: global)."""
        agent = Agent("agt_" + secrets.token_hex(6), name, description, route, key_id, time.time())
        with self.engine.begin() as conn:
            conn.execute(insert(agents).values(id=agent.id, name=name, description=description, route=route,
                                               key_id=key_id, created_at=agent.created_at, deleted=False))
        return agent

    def list(self, key_id: str | None, *, admin: bool = False) -> list[Agent]:
        """Live agents the caller sees, oldest first: every one for the admin, else the key's own and the global
        ones (``key_id`` None: the global ones only)."""
        q = select(agents).where(agents.c.deleted.is_(False)).order_by(agents.c.created_at, agents.c.id)
        if not admin:
            q = q.where(agents.c.key_id.is_(None) if key_id is None else or_(agents.c.key_id.is_(None),
                                                                             agents.c.key_id == key_id))
        with self.engine.connect() as conn:
            return [Agent.from_row(r) for r in conn.execute(q)]

    def get(self, agent_id: str, key_id: str | None, *, admin: bool = False) -> Agent | None:
        """The live agent with this id if the caller sees it."""
        return next((a for a in self.list(key_id, admin=admin) if a.id == agent_id), None)

    def delete(self, agent_id: str, key_id: str | None, *, admin: bool = False) -> DeleteOutcome:
        """Soft-delete: ``not_found`` when the caller does not see it, ``forbidden`` when it sees but does not own
        it (a global agent, for a key)."""
        agent = self.get(agent_id, key_id, admin=admin)
        if agent is None:
            return "not_found"
        if not admin and agent.key_id != key_id:
            return "forbidden"
        with self.engine.begin() as conn:
            n = conn.execute(update(agents).where(agents.c.id == agent_id, agents.c.deleted.is_(False))
                             .values(deleted=True)).rowcount
        return "deleted" if n else "not_found"
